//! Printing results as text or JSON lines, each with its trace id and Grafana link.

use serde_json::{Value, json};

use crate::links::trace_url;

/// Where and how results are printed.
#[derive(Debug)]
pub(crate) struct Output {
    json: bool,
    grafana: String,
}

impl Output {
    pub(crate) fn new(json: bool, grafana: &str) -> Self {
        Self { json, grafana: grafana.to_owned() }
    }

    /// Prints one result: `text` for humans, `fields` plus trace id and link for scripts.
    pub(crate) fn result(&self, text: &str, trace_id: &str, mut fields: Value) {
        let url = trace_url(&self.grafana, trace_id);
        if self.json {
            fields["trace_id"] = json!(trace_id);
            fields["trace_url"] = json!(url);
            println!("{fields}");
        } else {
            println!("{text} trace_id={trace_id}\n  {url}");
        }
    }

    /// Prints a line without a trace (e.g. one history entry in text mode).
    pub(crate) fn line(&self, text: &str, fields: &Value) {
        if self.json {
            println!("{fields}");
        } else {
            println!("{text}");
        }
    }

    pub(crate) fn grafana(&self) -> &str {
        &self.grafana
    }
}

//! `chat-cli trace <trace-id>`: a trace as a tree in the terminal, read from Tempo's
//! `GET /api/v2/traces/<id>` (no NATS connection needed).
//!
//! Each line: the span's name, service, kind, offset from the trace's start and duration,
//! `ERROR` with its message, `redelivered` for a redelivery, and the span's events
//! (`ack`, `nak`, `term`, `exception`, the NATS hop's steps) on the lines below it.
//! Everything that came from the trace is printed escaped (`output::printable`): span
//! names and messages can carry another user's input.
//!
//! Tempo's answer (checked against Tempo 3.0.3): `{"trace":{"resourceSpans":[...]}}`, or
//! `{"trace":{}}` while it does not know the id yet (the command polls until `--wait`);
//! ids are base64, kinds `SPAN_KIND_*`, times decimal strings.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use data_encoding::BASE64;
use serde_json::{Value, json};

use crate::CliError;
use crate::output::printable;

/// `chat-cli trace` arguments.
#[derive(Debug, clap::Args)]
pub struct TraceArgs {
    /// The trace id (32 hex characters), as `send`, `history` and `tail` print it.
    pub trace_id: String,
    /// Tempo's HTTP API.
    #[arg(long, env = "TEMPO_URL", default_value = "http://localhost:3200")]
    pub tempo_url: String,
    /// How long to wait for the trace to reach Tempo (spans arrive seconds after the work).
    #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
    pub wait: Duration,
}

/// One span, as much of it as the tree shows.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Span {
    pub(crate) span_id: String,
    pub(crate) parent_id: Option<String>,
    pub(crate) name: String,
    pub(crate) service: String,
    pub(crate) kind: String,
    pub(crate) start_ns: u64,
    pub(crate) end_ns: u64,
    pub(crate) error: Option<String>,
    pub(crate) redelivered: bool,
    /// Every attribute, its value as text, in the order Tempo gave them.
    pub(crate) attributes: Vec<(String, String)>,
    pub(crate) events: Vec<Event>,
}

/// One span event (`ack`, `nak`, `term`, `exception`, a NATS hop step).
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Event {
    pub(crate) name: String,
    pub(crate) at_ns: u64,
    pub(crate) attributes: Vec<(String, String)>,
}

impl Span {
    /// An attribute's value as text.
    pub(crate) fn attribute(&self, key: &str) -> Option<&str> {
        self.attributes.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
    }
}

/// Prints the trace `args.trace_id` from Tempo.
pub(crate) async fn trace(args: &TraceArgs, json_output: bool) -> Result<(), CliError> {
    let id = args.trace_id.trim().to_ascii_lowercase();
    if id.len() != 32 || !id.bytes().all(|b| b.is_ascii_hexdigit()) || id.bytes().all(|b| b == b'0') {
        return Err(CliError::Invalid(format!("not a trace id (32 hex characters): {}", printable(&args.trace_id))));
    }
    let url = format!("{}/api/v2/traces/{id}", args.tempo_url.trim_end_matches('/'));
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .map_err(|e| CliError::Http(format!("HTTP client: {e}")))?;
    let deadline = Instant::now() + args.wait;
    let spans = loop {
        let spans = fetch(&http, &url).await?;
        if !spans.is_empty() || Instant::now() >= deadline {
            break spans;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    if spans.is_empty() {
        return Err(CliError::Timeout(format!("trace {id} in Tempo at {}", args.tempo_url), args.wait));
    }
    for line in render(&spans, json_output) {
        println!("{line}");
    }
    Ok(())
}

/// The spans Tempo has for the trace at `url` (`.../api/v2/traces/<id>`); none while it
/// does not know the id.
pub(crate) async fn fetch(http: &reqwest::Client, url: &str) -> Result<Vec<Span>, CliError> {
    let unreachable = |e: reqwest::Error| CliError::Http(format!("cannot read {url}: {e} (is Tempo running?)"));
    let response = http.get(url).send().await.map_err(unreachable)?;
    let status = response.status();
    if status == reqwest::StatusCode::NOT_FOUND {
        return Ok(Vec::new());
    }
    let body: Value = response.json().await.map_err(unreachable)?;
    if !status.is_success() {
        return Err(CliError::Http(format!("Tempo answered {status} for {url}")));
    }
    Ok(decode(&body))
}

/// The spans of a Tempo v2 trace answer (v1's `batches` too).
pub(crate) fn decode(body: &Value) -> Vec<Span> {
    let resources = body["trace"]["resourceSpans"].as_array().or_else(|| body["batches"].as_array());
    let mut spans = Vec::new();
    for resource in resources.into_iter().flatten() {
        let service = attribute(&resource["resource"]["attributes"], "service.name").unwrap_or_default();
        let scopes = resource["scopeSpans"].as_array().or_else(|| resource["instrumentationLibrarySpans"].as_array());
        for span in scopes.into_iter().flatten().flat_map(|s| s["spans"].as_array().into_iter().flatten()) {
            let Some(span_id) = hex(&span["spanId"]) else { continue };
            let error = (span["status"]["code"] == "STATUS_CODE_ERROR")
                .then(|| span["status"]["message"].as_str().unwrap_or("error").to_owned());
            spans.push(Span {
                span_id,
                parent_id: hex(&span["parentSpanId"]),
                name: span["name"].as_str().unwrap_or_default().to_owned(),
                service: service.clone(),
                kind: span["kind"].as_str().unwrap_or_default().trim_start_matches("SPAN_KIND_").to_lowercase(),
                start_ns: number(&span["startTimeUnixNano"]),
                end_ns: number(&span["endTimeUnixNano"]),
                error,
                redelivered: attribute(&span["attributes"], "messaging.message_redelivered").as_deref() == Some("true"),
                attributes: attributes(&span["attributes"]),
                events: span["events"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|e| Event {
                        name: e["name"].as_str().unwrap_or_default().to_owned(),
                        at_ns: number(&e["timeUnixNano"]),
                        attributes: attributes(&e["attributes"]),
                    })
                    .collect(),
            });
        }
    }
    spans
}

/// The spans depth-first, as (index into `spans`, depth), children by start time. A
/// span whose parent is not in the trace (the caller's, or not arrived yet) is a root.
pub(crate) fn tree_order(spans: &[Span]) -> Vec<(usize, usize)> {
    let known: std::collections::BTreeSet<&str> = spans.iter().map(|s| s.span_id.as_str()).collect();
    let mut children: BTreeMap<Option<&str>, Vec<usize>> = BTreeMap::new();
    for (i, span) in spans.iter().enumerate() {
        let parent = span.parent_id.as_deref().filter(|p| known.contains(p));
        children.entry(parent).or_default().push(i);
    }
    for list in children.values_mut() {
        list.sort_by_key(|&i| (spans[i].start_ns, spans[i].end_ns));
    }
    let mut order = Vec::with_capacity(spans.len());
    let mut stack: Vec<(usize, usize)> = children.get(&None).into_iter().flatten().rev().map(|&i| (i, 0)).collect();
    while let Some((i, depth)) = stack.pop() {
        order.push((i, depth));
        if let Some(list) = children.get(&Some(spans[i].span_id.as_str())) {
            stack.extend(list.iter().rev().map(|&child| (child, depth + 1)));
        }
    }
    order
}

/// The tree, one line per span and event ([`tree_order`]).
pub(crate) fn render(spans: &[Span], json_output: bool) -> Vec<String> {
    let origin = spans.iter().map(|s| s.start_ns).min().unwrap_or_default();
    let mut lines = Vec::new();
    for (i, depth) in tree_order(spans) {
        let span = &spans[i];
        lines.push(if json_output { json_line(span, depth, origin) } else { text_line(span, depth, origin) });
        if !json_output {
            let indent = "  ".repeat(depth + 1);
            for event in &span.events {
                lines.push(format!(
                    "{indent}· {} +{}",
                    printable(&event.name),
                    millis(event.at_ns.saturating_sub(origin))
                ));
            }
        }
    }
    lines
}

fn text_line(span: &Span, depth: usize, origin: u64) -> String {
    let mut line = format!(
        "{}{} [{}] {} +{} {}",
        "  ".repeat(depth),
        printable(&span.name),
        printable(&span.service),
        span.kind,
        millis(span.start_ns.saturating_sub(origin)),
        millis(span.end_ns.saturating_sub(span.start_ns)),
    );
    if span.redelivered {
        line.push_str(" redelivered");
    }
    if let Some(message) = &span.error {
        line.push_str(&format!(" ERROR {}", printable(message)));
    }
    line
}

fn json_line(span: &Span, depth: usize, origin: u64) -> String {
    json!({
        "depth": depth,
        "span_id": span.span_id,
        "parent_span_id": span.parent_id,
        "name": span.name,
        "service": span.service,
        "kind": span.kind,
        "start_offset_ms": (span.start_ns.saturating_sub(origin)) as f64 / 1e6,
        "duration_ms": (span.end_ns.saturating_sub(span.start_ns)) as f64 / 1e6,
        "error": span.error,
        "redelivered": span.redelivered,
        "events": span.events.iter().map(|e| &e.name).collect::<Vec<_>>(),
    })
    .to_string()
}

pub(crate) fn millis(ns: u64) -> String {
    format!("{:.1}ms", ns as f64 / 1e6)
}

fn hex(value: &Value) -> Option<String> {
    let bytes = BASE64.decode(value.as_str().filter(|s| !s.is_empty())?.as_bytes()).ok()?;
    (!bytes.iter().all(|b| *b == 0)).then(|| bytes.iter().map(|b| format!("{b:02x}")).collect())
}

fn number(value: &Value) -> u64 {
    value.as_u64().or_else(|| value.as_str().and_then(|s| s.parse().ok())).unwrap_or_default()
}

/// An attribute's value as text (`stringValue`, `boolValue`, `intValue`, `doubleValue`).
fn attribute(list: &Value, key: &str) -> Option<String> {
    value_text(&list.as_array()?.iter().find(|kv| kv["key"] == key)?["value"])
}

/// Every attribute of an OTLP JSON list whose value is a scalar, as text.
fn attributes(list: &Value) -> Vec<(String, String)> {
    let pairs = list.as_array().into_iter().flatten();
    pairs.filter_map(|kv| Some((kv["key"].as_str()?.to_owned(), value_text(&kv["value"])?))).collect()
}

fn value_text(value: &Value) -> Option<String> {
    ["stringValue", "boolValue", "intValue", "doubleValue"].iter().find_map(|kind| match &value[*kind] {
        Value::String(s) => Some(s.clone()),
        Value::Null => None,
        other => Some(other.to_string()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn span(id: u8, parent: Option<u8>, name: &str, start: u64) -> Value {
        let b64 = |n: u8| BASE64.encode(&[0, 0, 0, 0, 0, 0, 0, n]);
        json!({
            "spanId": b64(id), "parentSpanId": parent.map(b64).unwrap_or_default(), "name": name,
            "kind": "SPAN_KIND_CONSUMER", "startTimeUnixNano": (start * 1_000_000).to_string(),
            "endTimeUnixNano": ((start + 2) * 1_000_000).to_string(),
            "status": if name.contains("bad") { json!({"code": "STATUS_CODE_ERROR", "message": "Timeout"}) } else { json!({}) },
            "attributes": [{"key": "messaging.message_redelivered", "value": {"boolValue": name.contains("again")}}],
            "events": [{"name": "ack", "timeUnixNano": ((start + 1) * 1_000_000).to_string()}],
        })
    }

    #[test]
    fn children_follow_their_parent_in_start_order_and_orphans_are_roots() {
        let body = json!({"trace": {"resourceSpans": [{
            "resource": {"attributes": [{"key": "service.name", "value": {"stringValue": "persist-worker"}}]},
            "scopeSpans": [{"spans": [
                span(3, Some(1), "process again", 20), span(2, Some(1), "process bad", 10),
                span(1, None, "publish", 0), span(9, Some(7), "orphan\u{1b}[2J", 30),
            ]}],
        }]}});
        let spans = decode(&body);
        assert_eq!(spans.len(), 4);
        let lines = render(&spans, false);
        let spans_only: Vec<&str> =
            lines.iter().filter(|l| !l.trim_start().starts_with('·')).map(|l| l.as_str()).collect();
        assert!(spans_only[0].starts_with("publish [persist-worker] consumer +0.0ms 2.0ms"), "{lines:#?}");
        assert!(spans_only[1].starts_with("  process bad") && spans_only[1].ends_with("ERROR Timeout"), "{lines:#?}");
        assert!(spans_only[2].starts_with("  process again") && spans_only[2].contains("redelivered"), "{lines:#?}");
        assert!(spans_only[3].starts_with("orphan\\u{1b}[2J"), "escaped, and a root: {lines:#?}");
        assert!(lines[1].starts_with("  · ack +1.0ms"), "{lines:#?}");
    }

    #[test]
    fn an_unknown_trace_decodes_to_nothing() {
        assert!(decode(&json!({"trace": {}, "metrics": {}})).is_empty());
    }
}

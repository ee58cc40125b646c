//! What the TUI asks Tempo: recent traces for a TraceQL query (`GET /api/search`) and one
//! trace's spans (`GET /api/v2/traces/<id>`, shared with `chat-cli trace`).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::Value;

use crate::links::percent_encode;
use crate::trace::{self, Span};

/// One search result: a trace's root and its length.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct TraceSummary {
    pub(crate) trace_id: String,
    pub(crate) root_service: String,
    pub(crate) root_name: String,
    pub(crate) start_unix_ns: u64,
    pub(crate) duration_ms: u64,
}

/// Tempo's HTTP API at `url`.
#[derive(Debug, Clone)]
pub(crate) struct Tempo {
    http: reqwest::Client,
    url: String,
}

impl Tempo {
    pub(crate) fn new(url: &str) -> Self {
        let http = reqwest::Client::builder().timeout(Duration::from_secs(5)).build().unwrap_or_default();
        Self { http, url: url.trim_end_matches('/').to_owned() }
    }

    /// The newest traces of the last `window` that match `traceql`, at most `limit`.
    pub(crate) async fn search(
        &self,
        traceql: &str,
        window: Duration,
        limit: u32,
    ) -> Result<Vec<TraceSummary>, String> {
        let end = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default().as_secs();
        let start = end.saturating_sub(window.as_secs());
        let q = percent_encode(traceql);
        let response = self
            .http
            .get(format!("{}/api/search?q={q}&limit={limit}&start={start}&end={end}", self.url))
            .send()
            .await
            .map_err(|e| format!("Tempo at {} unreachable: {e}", self.url))?;
        let status = response.status();
        let body: Value = response.json().await.map_err(|e| format!("Tempo answered {status}: {e}"))?;
        if !status.is_success() {
            let message = body["error"].as_str().or(body["message"].as_str()).unwrap_or_default().to_owned();
            return Err(format!("Tempo answered {status} {message}"));
        }
        let mut traces = summaries(&body);
        traces.sort_by_key(|t| std::cmp::Reverse(t.start_unix_ns));
        Ok(traces)
    }

    /// The trace's spans (none while Tempo does not know the id).
    pub(crate) async fn trace(&self, trace_id: &str) -> Result<Vec<Span>, String> {
        let url = format!("{}/api/v2/traces/{trace_id}", self.url);
        trace::fetch(&self.http, &url).await.map_err(|e| e.to_string())
    }
}

/// A one-row search result for a trace read whole (the `Ctrl+T` filter): its root is the
/// span without a parent in the trace.
pub(crate) fn summary_of(trace_id: &str, spans: &[Span]) -> Option<TraceSummary> {
    let start = spans.iter().map(|s| s.start_ns).min()?;
    let end = spans.iter().map(|s| s.end_ns).max()?;
    let root = spans.iter().find(|s| !spans.iter().any(|p| Some(&p.span_id) == s.parent_id.as_ref()))?;
    Some(TraceSummary {
        trace_id: trace_id.to_owned(),
        root_service: root.service.clone(),
        root_name: root.name.clone(),
        start_unix_ns: start,
        duration_ms: end.saturating_sub(start) / 1_000_000,
    })
}

/// The search answer's traces. Tempo prints trace ids without their leading zeros.
pub(crate) fn summaries(body: &Value) -> Vec<TraceSummary> {
    let number = |v: &Value| v.as_u64().or_else(|| v.as_str().and_then(|s| s.parse().ok())).unwrap_or_default();
    let traces = body["traces"].as_array().into_iter().flatten();
    traces
        .filter_map(|t| {
            let id = t["traceID"].as_str().filter(|id| id.len() <= 32 && id.bytes().all(|b| b.is_ascii_hexdigit()))?;
            Some(TraceSummary {
                trace_id: format!("{:0>32}", id.to_ascii_lowercase()),
                root_service: t["rootServiceName"].as_str().unwrap_or("<root not yet received>").to_owned(),
                root_name: t["rootTraceName"].as_str().unwrap_or_default().to_owned(),
                start_unix_ns: number(&t["startTimeUnixNano"]),
                duration_ms: number(&t["durationMs"]),
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn search_results_keep_their_ids_whole_and_drop_what_is_not_an_id() {
        let body = json!({"traces": [
            {"traceID": "2f3e0cee77ae5dc9c17ade3689eb2e54", "rootServiceName": "chat-cli",
             "rootTraceName": "publish chat.msg.*.*", "startTimeUnixNano": "1700000000000000000", "durationMs": 12},
            {"traceID": "f3e0cee77ae5dc9c17ade3689eb2e5", "startTimeUnixNano": "1700000001000000000"},
            {"traceID": "<script>"},
        ]});
        let traces = summaries(&body);
        assert_eq!(traces.len(), 2);
        assert_eq!(traces[0].root_name, "publish chat.msg.*.*");
        assert_eq!(traces[0].duration_ms, 12);
        assert_eq!(traces[1].trace_id, "00f3e0cee77ae5dc9c17ade3689eb2e5");
        assert_eq!(traces[1].root_service, "<root not yet received>");
    }
}

//! A stand-in for Tempo's trace-by-id API in the native tier: `GET /api/v2/traces/<id>`
//! answers the spans the test's OTLP receiver captured, encoded as Tempo 3.0.3 encodes
//! them ([`tempo_v2_json`]; `{"trace":{}}` while none are known, as Tempo does). The
//! full-stack tier reads real Tempo instead.

use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, State};
use data_encoding::BASE64;
use serde_json::{Value, json};

use crate::HarnessResult;
use crate::model::{AttrValue, Attributes, SpanKind, SpanRecord, StatusCode};

/// The spans of one trace, by trace id.
pub type SpansOf = Arc<dyn Fn(&str) -> Vec<SpanRecord> + Send + Sync>;

/// A running stand-in; stops when dropped.
#[derive(Debug)]
pub struct TempoStub {
    url: String,
    server: tokio::task::JoinHandle<()>,
}

impl TempoStub {
    /// Serves `spans_of` on a free loopback port.
    pub async fn start(spans_of: SpansOf) -> HarnessResult<Self> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.map_err(|e| format!("bind: {e}"))?;
        let url = format!("http://{}", listener.local_addr().map_err(|e| e.to_string())?);
        let app = axum::Router::new().route("/api/v2/traces/{id}", axum::routing::get(trace)).with_state(spans_of);
        let server = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Ok(Self { url, server })
    }

    /// `http://127.0.0.1:<port>`, for `chat-cli trace --tempo-url`.
    pub fn url(&self) -> &str {
        &self.url
    }
}

impl Drop for TempoStub {
    fn drop(&mut self) {
        self.server.abort();
    }
}

async fn trace(State(spans_of): State<SpansOf>, Path(id): Path<String>) -> Json<Value> {
    Json(tempo_v2_json(&spans_of(&id)))
}

/// Spans as Tempo's `GET /api/v2/traces/<id>` returns them: grouped by service, base64
/// ids, `SPAN_KIND_*` / `STATUS_CODE_*`, decimal-string times and int64s (event times are
/// not captured: the span's start stands in).
pub fn tempo_v2_json(spans: &[SpanRecord]) -> Value {
    if spans.is_empty() {
        return json!({"trace": {}, "metrics": {}});
    }
    let mut services: Vec<&str> = spans.iter().map(|s| s.service_name.as_str()).collect();
    services.sort_unstable();
    services.dedup();
    let resource_spans: Vec<Value> = services
        .iter()
        .map(|service| {
            let encoded: Vec<Value> = spans.iter().filter(|s| s.service_name == *service).map(span_json).collect();
            json!({
                "resource": {"attributes": [{"key": "service.name", "value": {"stringValue": service}}]},
                "scopeSpans": [{"scope": {"name": service}, "spans": encoded}],
            })
        })
        .collect();
    json!({"trace": {"resourceSpans": resource_spans}, "metrics": {}})
}

fn span_json(span: &SpanRecord) -> Value {
    let kind = match span.kind {
        SpanKind::Internal => "SPAN_KIND_INTERNAL",
        SpanKind::Server => "SPAN_KIND_SERVER",
        SpanKind::Client => "SPAN_KIND_CLIENT",
        SpanKind::Producer => "SPAN_KIND_PRODUCER",
        SpanKind::Consumer => "SPAN_KIND_CONSUMER",
        SpanKind::Unspecified => "SPAN_KIND_UNSPECIFIED",
    };
    let status = match span.status {
        StatusCode::Error => json!({"code": "STATUS_CODE_ERROR", "message": span.status_message}),
        StatusCode::Ok => json!({"code": "STATUS_CODE_OK"}),
        StatusCode::Unset => json!({}),
    };
    let mut encoded = json!({
        "traceId": b64(&span.trace_id),
        "spanId": b64(&span.span_id),
        "name": span.name,
        "kind": kind,
        "startTimeUnixNano": span.start_unix_nano.to_string(),
        "endTimeUnixNano": span.end_unix_nano.to_string(),
        "attributes": attributes(&span.attributes),
        "status": status,
        "events": span.events.iter().map(|e| json!({
            "timeUnixNano": span.start_unix_nano.to_string(),
            "name": e.name,
            "attributes": attributes(&e.attributes),
        })).collect::<Vec<_>>(),
    });
    if let Some(parent) = &span.parent_span_id {
        encoded["parentSpanId"] = json!(b64(parent));
    }
    encoded
}

fn b64(hex: &str) -> String {
    let bytes: Vec<u8> =
        (0..hex.len() / 2).filter_map(|i| u8::from_str_radix(hex.get(2 * i..2 * i + 2)?, 16).ok()).collect();
    BASE64.encode(&bytes)
}

fn attributes(attributes: &Attributes) -> Vec<Value> {
    attributes
        .iter()
        .map(|(key, value)| {
            let value = match value {
                AttrValue::Str(s) | AttrValue::Other(s) => json!({"stringValue": s}),
                AttrValue::Bool(b) => json!({"boolValue": b}),
                AttrValue::Int(i) => json!({"intValue": i.to_string()}),
                AttrValue::Double(d) => json!({"doubleValue": d}),
            };
            json!({"key": key, "value": value})
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backends::tempo_trace;
    use crate::model::SpanEvent;

    #[test]
    fn tempos_decoder_reads_back_what_the_stub_encodes() {
        let span = SpanRecord {
            service_name: "persist-worker".into(),
            trace_id: "4bf92f3577b34da6a3ce929d0e0e4736".into(),
            span_id: "00f067aa0ba902b7".into(),
            parent_span_id: Some("b7ad6b7169203331".into()),
            name: "process chat.msg.*.*".into(),
            kind: SpanKind::Consumer,
            status: StatusCode::Error,
            status_message: "Timeout".into(),
            attributes: [("messaging.message_redelivered".to_owned(), AttrValue::Bool(true))].into(),
            events: vec![SpanEvent { name: "nak".into(), attributes: Attributes::new() }],
            links: vec![],
            start_unix_nano: 1_795_257_051_360_877_271,
            end_unix_nano: 1_795_257_051_370_877_271,
        };
        let decoded = tempo_trace(&tempo_v2_json(std::slice::from_ref(&span))).expect("decodes");
        assert_eq!(decoded, vec![span]);
        assert_eq!(tempo_trace(&tempo_v2_json(&[])).expect("empty"), vec![]);
    }
}

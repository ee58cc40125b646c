//! Decoders for what Tempo, Loki and Prometheus answer over HTTP, into the same [`model`]
//! types the OTLP receiver produces, so one set of trace assertions serves both tiers.
//!
//! Shapes (checked against Tempo 3.0.3 and Loki 3.7.6, see the stack reference):
//! - Tempo `GET /api/v2/traces/<id>`: `{"trace":{"resourceSpans":[...]}}` (`{"trace":{}}`
//!   when unknown); v1 `/api/traces/<id>`: `{"batches":[...]}`. Ids are **base64**, kinds
//!   `SPAN_KIND_*`, status codes `STATUS_CODE_*`, int64 values and timestamps are strings.
//! - Loki `query_range`: `data.result[].stream` (labels incl. `service_name`, `trace_id`,
//!   `span_id`) and `values: [[ns, line]]`.
//! - Prometheus `query`: `data.result[].{metric, value: [ts, "v"]}`; `query_exemplars`:
//!   `data[].exemplars[].labels`.
//!
//! [`model`]: crate::model

use std::collections::BTreeMap;

use data_encoding::BASE64;
use serde_json::Value;

use crate::model::{AttrValue, Attributes, LogRecord, SpanEvent, SpanKind, SpanLink, SpanRecord, StatusCode};

/// Why a response could not be decoded.
pub type DecodeResult<T> = Result<T, String>;

fn b64_hex(value: &Value) -> Option<String> {
    let text = value.as_str().filter(|s| !s.is_empty())?;
    let bytes = BASE64.decode(text.as_bytes()).ok()?;
    (!bytes.iter().all(|b| *b == 0)).then(|| bytes.iter().map(|b| format!("{b:02x}")).collect())
}

fn number(value: &Value) -> Option<u64> {
    value.as_u64().or_else(|| value.as_str().and_then(|s| s.parse().ok()))
}

fn attr(value: &Value) -> AttrValue {
    if let Some(s) = value["stringValue"].as_str() {
        AttrValue::Str(s.to_owned())
    } else if let Some(b) = value["boolValue"].as_bool() {
        AttrValue::Bool(b)
    } else if let Some(i) =
        value["intValue"].as_i64().or_else(|| value["intValue"].as_str().and_then(|s| s.parse().ok()))
    {
        AttrValue::Int(i)
    } else if let Some(d) =
        value["doubleValue"].as_f64().or_else(|| value["doubleValue"].as_str().and_then(|s| s.parse().ok()))
    {
        AttrValue::Double(d)
    } else {
        AttrValue::Other(value.to_string())
    }
}

fn attributes(list: &Value) -> Attributes {
    list.as_array()
        .into_iter()
        .flatten()
        .filter_map(|kv| Some((kv["key"].as_str()?.to_owned(), attr(&kv["value"]))))
        .collect()
}

fn kind(value: &Value) -> SpanKind {
    match value.as_str().unwrap_or_default() {
        "SPAN_KIND_INTERNAL" => SpanKind::Internal,
        "SPAN_KIND_SERVER" => SpanKind::Server,
        "SPAN_KIND_CLIENT" => SpanKind::Client,
        "SPAN_KIND_PRODUCER" => SpanKind::Producer,
        "SPAN_KIND_CONSUMER" => SpanKind::Consumer,
        _ => SpanKind::Unspecified,
    }
}

/// The spans of a Tempo trace-by-id answer (v2 `trace.resourceSpans` or v1 `batches`).
/// An unknown trace is an empty list.
pub fn tempo_trace(body: &Value) -> DecodeResult<Vec<SpanRecord>> {
    let resource_spans = body["trace"]["resourceSpans"].as_array().or_else(|| body["batches"].as_array());
    let Some(resource_spans) = resource_spans else {
        return if body["trace"].is_object() || body.is_object() {
            Ok(Vec::new())
        } else {
            Err(format!("not a Tempo trace: {body}"))
        };
    };
    let mut spans = Vec::new();
    for rs in resource_spans {
        let resource = attributes(&rs["resource"]["attributes"]);
        let service = resource.get("service.name").map(AttrValue::to_text).unwrap_or_default();
        let scopes = rs["scopeSpans"].as_array().or_else(|| rs["instrumentationLibrarySpans"].as_array());
        for scope in scopes.into_iter().flatten() {
            for s in scope["spans"].as_array().into_iter().flatten() {
                let status = &s["status"];
                spans.push(SpanRecord {
                    service_name: service.clone(),
                    trace_id: b64_hex(&s["traceId"]).ok_or_else(|| format!("span without traceId: {s}"))?,
                    span_id: b64_hex(&s["spanId"]).ok_or_else(|| format!("span without spanId: {s}"))?,
                    parent_span_id: b64_hex(&s["parentSpanId"]),
                    name: s["name"].as_str().unwrap_or_default().to_owned(),
                    kind: kind(&s["kind"]),
                    status: match status["code"].as_str() {
                        Some("STATUS_CODE_ERROR") => StatusCode::Error,
                        Some("STATUS_CODE_OK") => StatusCode::Ok,
                        _ => StatusCode::Unset,
                    },
                    status_message: status["message"].as_str().unwrap_or_default().to_owned(),
                    attributes: attributes(&s["attributes"]),
                    events: s["events"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .map(|e| SpanEvent {
                            name: e["name"].as_str().unwrap_or_default().to_owned(),
                            attributes: attributes(&e["attributes"]),
                        })
                        .collect(),
                    links: s["links"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .filter_map(|l| {
                            Some(SpanLink { trace_id: b64_hex(&l["traceId"])?, span_id: b64_hex(&l["spanId"])? })
                        })
                        .collect(),
                    start_unix_nano: number(&s["startTimeUnixNano"]).unwrap_or_default(),
                    end_unix_nano: number(&s["endTimeUnixNano"]).unwrap_or_default(),
                });
            }
        }
    }
    Ok(spans)
}

/// The log lines of a Loki `query_range` answer.
pub fn loki_logs(body: &Value) -> DecodeResult<Vec<LogRecord>> {
    if body["status"] != "success" {
        return Err(format!("Loki answered: {body}"));
    }
    let mut logs = Vec::new();
    for stream in body["data"]["result"].as_array().into_iter().flatten() {
        let labels: BTreeMap<String, String> = stream["stream"]
            .as_object()
            .into_iter()
            .flatten()
            .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_owned())))
            .collect();
        for value in stream["values"].as_array().into_iter().flatten() {
            logs.push(LogRecord {
                service_name: labels.get("service_name").cloned().unwrap_or_default(),
                trace_id: labels.get("trace_id").cloned(),
                span_id: labels.get("span_id").cloned(),
                severity_text: labels.get("severity_text").cloned().unwrap_or_default(),
                body: value[1].as_str().unwrap_or_default().to_owned(),
                attributes: labels.iter().map(|(k, v)| (k.clone(), AttrValue::Str(v.clone()))).collect(),
            });
        }
    }
    Ok(logs)
}

/// The series of a Prometheus instant-query answer: labels and value.
pub fn prometheus_vector(body: &Value) -> DecodeResult<Vec<(BTreeMap<String, String>, f64)>> {
    if body["status"] != "success" {
        return Err(format!("Prometheus answered: {body}"));
    }
    Ok(body["data"]["result"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|series| {
            let labels = series["metric"]
                .as_object()?
                .iter()
                .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_owned())))
                .collect();
            let value = series["value"][1].as_str()?.parse().ok()?;
            Some((labels, value))
        })
        .collect())
}

/// The trace ids of a Prometheus `query_exemplars` answer (label `trace_id` or `traceID`).
pub fn prometheus_exemplar_trace_ids(body: &Value) -> DecodeResult<Vec<String>> {
    if body["status"] != "success" {
        return Err(format!("Prometheus answered: {body}"));
    }
    Ok(body["data"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|series| series["exemplars"].as_array().into_iter().flatten())
        .filter_map(|e| e["labels"]["trace_id"].as_str().or_else(|| e["labels"]["traceID"].as_str()).map(str::to_owned))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::AttributesExt as _;
    use crate::trace::{Trace, assert_error};
    use serde_json::json;

    fn b64(hex: &str) -> String {
        let bytes: Vec<u8> =
            (0..hex.len()).step_by(2).map(|i| u8::from_str_radix(&hex[i..i + 2], 16).expect("hex")).collect();
        BASE64.encode(&bytes)
    }

    const TRACE: &str = "5b8efff798038103d269b633813fc60c";

    fn span(id: &str, parent: Option<&str>, name: &str, kind: &str, extra: &Value) -> Value {
        let mut s = json!({
            "traceId": b64(TRACE), "spanId": b64(id), "name": name, "kind": kind,
            "startTimeUnixNano": "1795257051360877271", "endTimeUnixNano": "1795257051370877271",
            "attributes": [{"key": "messaging.nats.delivery_count", "value": {"intValue": "2"}},
                           {"key": "messaging.message_redelivered", "value": {"boolValue": true}}],
            "status": {}
        });
        if let Some(p) = parent {
            s["parentSpanId"] = json!(b64(p));
        }
        for (k, v) in extra.as_object().into_iter().flatten() {
            s[k] = v.clone();
        }
        s
    }

    fn resource_spans() -> Value {
        json!([
            {"resource": {"attributes": [{"key": "service.name", "value": {"stringValue": "chat-cli"}}]},
             "scopeSpans": [{"scope": {"name": "chat-cli"}, "spans": [span("1111111111111111", None, "publish chat.msg.*.*", "SPAN_KIND_PRODUCER", &json!({}))]}]},
            {"resource": {"attributes": [{"key": "service.name", "value": {"stringValue": "persist-worker"}}]},
             "scopeSpans": [{"scope": {"name": "persist-worker"}, "spans": [span("2222222222222222", Some("1111111111111111"), "process chat.msg.*.*", "SPAN_KIND_CONSUMER",
                &json!({"status": {"message": "Timeout", "code": "STATUS_CODE_ERROR"},
                       "events": [{"name": "exception", "attributes": [{"key": "exception.type", "value": {"stringValue": "Timeout"}}]}]}))]}]}
        ])
    }

    #[test]
    fn tempo_v2_and_v1_decode_to_the_same_spans() {
        let v2 = tempo_trace(&json!({"trace": {"resourceSpans": resource_spans()}, "metrics": {}})).expect("v2");
        let v1 = tempo_trace(&json!({"batches": resource_spans()})).expect("v1");
        assert_eq!(v1, v2);
        let trace = Trace::new(v2);
        let producer = trace.one("publish chat.msg.*.*");
        let consumer = trace.one("process chat.msg.*.*");
        trace.assert_child_of(consumer, producer);
        assert_eq!(producer.trace_id, TRACE, "base64 ids become hex");
        assert_eq!((producer.kind, consumer.kind), (SpanKind::Producer, SpanKind::Consumer));
        assert_eq!(consumer.service_name, "persist-worker");
        assert_error(consumer, "Timeout");
        assert_eq!(consumer.attributes.int("messaging.nats.delivery_count"), Some(2), "int64 arrives as a string");
        assert_eq!(consumer.attributes.bool("messaging.message_redelivered"), Some(true));
        assert_eq!(consumer.start_unix_nano, 1_795_257_051_360_877_271);
    }

    #[test]
    fn an_unknown_tempo_trace_is_empty_not_an_error() {
        assert_eq!(tempo_trace(&json!({"trace": {}, "metrics": {}})).expect("empty"), Vec::new());
    }

    #[test]
    fn loki_streams_decode_with_trace_ids() {
        let body = json!({"status": "success", "data": {"resultType": "streams", "result": [
            {"stream": {"service_name": "persist-worker", "trace_id": TRACE, "span_id": "2222222222222222",
                        "severity_text": "INFO", "detected_level": "info"},
             "values": [["1795257051360877271", "will be redelivered"]]}]}});
        let logs = loki_logs(&body).expect("logs");
        assert_eq!(logs.len(), 1);
        assert_eq!((logs[0].service_name.as_str(), logs[0].trace_id.as_deref()), ("persist-worker", Some(TRACE)));
        assert_eq!(logs[0].body, "will be redelivered");
        assert!(loki_logs(&json!({"status": "error", "error": "parse error"})).is_err());
    }

    #[test]
    fn prometheus_vectors_and_exemplars_decode() {
        let vector = json!({"status": "success", "data": {"resultType": "vector", "result": [
            {"metric": {"__name__": "messages_persisted_total", "job": "persist-worker"}, "value": [1795257051.1, "42"]}]}});
        let series = prometheus_vector(&vector).expect("vector");
        assert_eq!(series[0].0["job"], "persist-worker");
        assert_eq!(series[0].1, 42.0);
        let exemplars = json!({"status": "success", "data": [
            {"seriesLabels": {"__name__": "traces_span_metrics_duration_milliseconds_bucket"},
             "exemplars": [{"labels": {"trace_id": TRACE}, "value": "12", "timestamp": 1795257051.1},
                           {"labels": {"traceID": "abc"}, "value": "3", "timestamp": 1795257052.1}]}]});
        assert_eq!(prometheus_exemplar_trace_ids(&exemplars).expect("exemplars"), [TRACE, "abc"]);
    }
}

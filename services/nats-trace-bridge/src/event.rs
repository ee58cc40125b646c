//! One NATS trace event (JSON, as nats-server 2.12 publishes it) -> one span.
//!
//! ```json
//! {"server":{"name":"chat-nats","id":"N…","ver":"2.12.8",…},
//!  "request":{"header":{"traceparent":["00-…-01"]},"msgsize":94},
//!  "events":[{"type":"in","ts":"…Z","kind":0,"cid":16,"name":"chat-cli","acc":"CHAT","subj":"chat.msg.general.alice"},
//!            {"type":"js","ts":"…Z","stream":"CHAT","subject":"chat.msg.general.alice"},
//!            {"type":"eg","ts":"…Z","kind":0,"cid":16,"name":"chat-cli","sub":"chat.msg.general.*"}]}
//! ```

use std::str::FromStr as _;
use std::time::SystemTime;

use async_nats::HeaderMap;
use async_nats::header::{HeaderName, HeaderValue};
use chat_protocol::{DLQ_TEMPLATE, HISTORY_TEMPLATE, MESSAGE_TEMPLATE, parse_history_subject, parse_message_subject};
use opentelemetry::global::BoxedTracer;
use opentelemetry::trace::{Span as _, SpanKind, Status, TraceContextExt as _, Tracer as _};
use opentelemetry::{Context, KeyValue};
use serde_json::Value;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

/// Who received the message in an egress step: the client's kind (`client`, `router`,
/// `gateway`, `system`, `leaf`, `jetstream`, `account`, as nats-server numbers them), its
/// name (the kind when the client gave none), its subscription and its account (the server
/// omits `acc` when it is the publisher's, `ingress_account`).
fn egress_attributes(step: &Value, ingress_account: &str) -> Vec<KeyValue> {
    const KINDS: [&str; 7] = ["client", "router", "gateway", "system", "leaf", "jetstream", "account"];
    let kind = step["kind"].as_u64().and_then(|k| KINDS.get(k as usize)).copied().unwrap_or("unknown");
    let name = Some(text(&step["name"])).filter(|n| !n.is_empty()).unwrap_or_else(|| kind.to_owned());
    let account = Some(text(&step["acc"])).filter(|a| !a.is_empty()).unwrap_or_else(|| ingress_account.to_owned());
    vec![
        KeyValue::new("nats.client.kind", kind),
        KeyValue::new("nats.client.id", step["cid"].as_i64().unwrap_or_default()),
        KeyValue::new("nats.client.name", name),
        KeyValue::new("nats.subscription", text(&step["sub"])),
        KeyValue::new("nats.queue", text(&step["queue"])),
        KeyValue::new("nats.account", account),
    ]
}

/// What became of one event; the `result` attribute of the counter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// A span was exported.
    Bridged,
    /// No valid, sampled trace context: nothing to attach a span to.
    Untraced,
    /// Not a trace event.
    Malformed,
}

impl Outcome {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Self::Bridged => "bridged",
            Self::Untraced => "untraced",
            Self::Malformed => "malformed",
        }
    }
}

/// Longest raw event kept on a span event of an unknown type.
const MAX_RAW_EVENT: usize = 1024;

fn text(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

fn timestamp(value: &Value) -> Option<SystemTime> {
    OffsetDateTime::parse(value.as_str()?, &Rfc3339).ok().map(SystemTime::from)
}

/// The low-cardinality template of a subject (span names must not carry room or user).
fn template(subject: &str) -> &'static str {
    if parse_message_subject(subject).is_ok() {
        MESSAGE_TEMPLATE
    } else if parse_history_subject(subject).is_ok() {
        HISTORY_TEMPLATE
    } else if subject.starts_with("chat.dlq.") {
        DLQ_TEMPLATE
    } else {
        "other"
    }
}

/// The producer's context from the headers the server copied into the event. Invalid
/// names or values are skipped, never passed to code that could panic on them.
fn parent(header: &Value) -> Context {
    let mut headers = HeaderMap::new();
    for (name, values) in header.as_object().into_iter().flatten() {
        let Ok(name) = HeaderName::from_str(name) else { continue };
        for value in values.as_array().into_iter().flatten().filter_map(Value::as_str) {
            if let Ok(value) = HeaderValue::from_str(value) {
                headers.append(name.clone(), value);
            }
        }
    }
    telemetry::extract_context(Some(&headers))
}

/// Turns one event into a span; never panics on any input.
pub(crate) fn bridge(tracer: &BoxedTracer, payload: &[u8]) -> Outcome {
    let Ok(event) = serde_json::from_slice::<Value>(payload) else {
        tracing::warn!(bytes = payload.len(), "trace event is not JSON; skipped");
        return Outcome::Malformed;
    };
    let Some(steps) = event["events"].as_array().filter(|_| event["server"].is_object()) else {
        tracing::warn!("trace event without server or events; skipped");
        return Outcome::Malformed;
    };
    let parent = parent(&event["request"]["header"]);
    if !parent.span().span_context().is_sampled() {
        return Outcome::Untraced;
    }
    let ingress = steps.iter().find(|s| s["type"] == "in").unwrap_or(&Value::Null);
    let subject = text(&ingress["subj"]);
    let times: Vec<SystemTime> = steps.iter().filter_map(|s| timestamp(&s["ts"])).collect();
    let start = timestamp(&ingress["ts"]).or_else(|| times.iter().min().copied()).unwrap_or_else(SystemTime::now);
    let end = times.iter().max().copied().unwrap_or(start).max(start);
    let server = &event["server"];
    let mut attributes = vec![
        KeyValue::new("messaging.system", "nats"),
        KeyValue::new("messaging.operation.name", "ingress"),
        KeyValue::new("messaging.destination.name", subject.clone()),
        KeyValue::new("messaging.destination.template", template(&subject)),
        KeyValue::new("nats.server.name", text(&server["name"])),
        KeyValue::new("nats.server.id", text(&server["id"])),
        KeyValue::new("nats.server.version", text(&server["ver"])),
        KeyValue::new("nats.account", text(&ingress["acc"])),
        KeyValue::new("nats.client.id", ingress["cid"].as_i64().unwrap_or_default()),
        KeyValue::new("nats.client.name", text(&ingress["name"])),
    ];
    if let Some(size) = event["request"]["msgsize"].as_i64() {
        attributes.push(KeyValue::new("messaging.message.body.size", size));
    }
    if let Some(hops) = event["hops"].as_i64() {
        attributes.push(KeyValue::new("nats.hops", hops));
    }
    let mut span = tracer
        .span_builder(format!("nats ingress {}", template(&subject)))
        .with_kind(SpanKind::Internal)
        .with_start_time(start)
        .with_attributes(attributes)
        .start_with_context(tracer, &parent);
    let account = text(&ingress["acc"]);
    let mut errors = Vec::new();
    for step in steps {
        let at = timestamp(&step["ts"]).unwrap_or(start);
        let kind = step["type"].as_str().unwrap_or_default();
        let (name, attrs) = match kind {
            "in" => ("ingress".to_owned(), vec![KeyValue::new("nats.client.name", text(&step["name"]))]),
            "js" => (
                "jetstream.store".to_owned(),
                vec![
                    KeyValue::new("nats.stream", text(&step["stream"])),
                    KeyValue::new("nats.subject", text(&step["subject"])),
                ],
            ),
            "eg" => ("egress".to_owned(), egress_attributes(step, &account)),
            "sm" => ("subject.mapping".to_owned(), vec![KeyValue::new("nats.mapped_to", text(&step["to"]))]),
            "se" => ("stream.export".to_owned(), vec![KeyValue::new("nats.account", text(&step["acc"]))]),
            "si" => ("service.import".to_owned(), vec![KeyValue::new("nats.account", text(&step["acc"]))]),
            other => {
                let raw: String = step.to_string().chars().take(MAX_RAW_EVENT).collect();
                (format!("nats.{other}"), vec![KeyValue::new("nats.event", raw)])
            }
        };
        if let Some(error) = step["error"].as_str().filter(|e| !e.is_empty()) {
            errors.push(format!("{name}: {error}"));
        }
        span.add_event_with_timestamp(name, at, attrs);
    }
    if !errors.is_empty() {
        span.set_attribute(KeyValue::new("error.type", "nats_error"));
        span.set_status(Status::error(errors.join("; ")));
    }
    span.end_with_timestamp(end);
    Outcome::Bridged
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tracer() -> BoxedTracer {
        opentelemetry::global::tracer("test")
    }

    #[test]
    fn garbage_is_malformed_and_never_panics() {
        for payload in [&b"not json"[..], b"{}", b"[]", b"null", br#"{"server":{},"events":"x"}"#, &[0xff, 0xfe][..]] {
            assert_eq!(bridge(&tracer(), payload), Outcome::Malformed, "{:?}", String::from_utf8_lossy(payload));
        }
    }

    #[test]
    fn events_without_a_sampled_parent_make_no_span() {
        for header in [
            r#"{}"#,
            r#"{"traceparent":["00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00"]}"#,
            r#"{"traceparent":["00-not-valid-01"]}"#,
            r#"{"bad name:":["x"],"traceparent":["00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01"]}"#,
        ] {
            let event = format!(r#"{{"server":{{"name":"n"}},"request":{{"header":{header}}},"events":[]}}"#);
            assert_eq!(bridge(&tracer(), event.as_bytes()), Outcome::Untraced, "{header}");
        }
    }

    #[test]
    fn subjects_become_templates() {
        assert_eq!(template("chat.msg.general.alice"), MESSAGE_TEMPLATE);
        assert_eq!(template("chat.history.general.carol"), HISTORY_TEMPLATE);
        assert_eq!(template("chat.dlq.general"), DLQ_TEMPLATE);
        assert_eq!(template("orders.created"), "other");
    }
}

//! One NATS trace event (JSON, as nats-server 2.12 publishes it) -> one span.
//!
//! ```json
//! {"server":{"name":"chat-nats","id":"N…","ver":"2.12.8",…},
//!  "request":{"header":{"traceparent":["00-…-01"]},"msgsize":94},
//!  "events":[{"type":"in","ts":"…Z","kind":0,"cid":16,"name":"chat-cli","acc":"CHAT","subj":"chat.msg.general.alice"},
//!            {"type":"js","ts":"…Z","stream":"CHAT","subject":"chat.msg.general.alice"},
//!            {"type":"eg","ts":"…Z","kind":0,"cid":16,"name":"chat-cli","sub":"chat.msg.general.*"}]}
//! ```

use std::collections::BTreeMap;
use std::str::FromStr as _;
use std::time::SystemTime;

use async_nats::HeaderMap;
use async_nats::header::{HeaderName, HeaderValue};
use chat_protocol::{DLQ_TEMPLATE, HISTORY_TEMPLATE, MESSAGE_TEMPLATE, parse_history_subject, parse_message_subject};
use opentelemetry::global::BoxedTracer;
use opentelemetry::trace::{Span as _, SpanKind, Status, TraceContextExt as _, Tracer as _};
use opentelemetry::{Context, KeyValue};
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

/// A trace event as nats-server publishes it (the fields the span uses).
#[derive(Debug, Deserialize)]
struct TraceEvent {
    server: Server,
    #[serde(default)]
    request: Request,
    events: Vec<Step>,
    #[serde(default)]
    hops: Option<i64>,
}

/// The server that traced the message.
#[derive(Debug, Default, Deserialize)]
struct Server {
    #[serde(default)]
    name: String,
    #[serde(default)]
    id: String,
    #[serde(default)]
    ver: String,
}

/// The traced message: its headers (the producer's trace context) and size.
#[derive(Debug, Default, Deserialize)]
struct Request {
    #[serde(default)]
    header: BTreeMap<String, Vec<String>>,
    #[serde(default)]
    msgsize: Option<i64>,
}

/// One step of the message through the server: `in` (ingress), `js` (JetStream store),
/// `eg` (egress), `sm` (subject mapping), `se` (stream export), `si` (service import);
/// which fields are set depends on the type. Fields of types this bridge does not know
/// are kept, to be shown raw.
#[derive(Debug, Default, Deserialize, Serialize)]
struct Step {
    #[serde(rename = "type", default)]
    kind: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    ts: Option<String>,
    /// The client's kind as nats-server numbers it (egress and ingress).
    #[serde(rename = "kind", default, skip_serializing_if = "Option::is_none")]
    client_kind: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    cid: Option<i64>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    name: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    acc: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    subj: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    sub: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    queue: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    stream: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    subject: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    to: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    error: String,
    #[serde(flatten)]
    other: BTreeMap<String, serde_json::Value>,
}

impl Step {
    fn at(&self) -> Option<SystemTime> {
        OffsetDateTime::parse(self.ts.as_deref()?, &Rfc3339).ok().map(SystemTime::from)
    }

    /// The span event for this step: its name and attributes.
    fn span_event(&self, ingress_account: &str) -> (String, Vec<KeyValue>) {
        match self.kind.as_str() {
            "in" => ("ingress".to_owned(), vec![KeyValue::new("nats.client.name", self.name.clone())]),
            "js" => (
                "jetstream.store".to_owned(),
                vec![
                    KeyValue::new("nats.stream", self.stream.clone()),
                    KeyValue::new("nats.subject", self.subject.clone()),
                ],
            ),
            "eg" => ("egress".to_owned(), self.egress_attributes(ingress_account)),
            "sm" => ("subject.mapping".to_owned(), vec![KeyValue::new("nats.mapped_to", self.to.clone())]),
            "se" => ("stream.export".to_owned(), vec![KeyValue::new("nats.account", self.acc.clone())]),
            "si" => ("service.import".to_owned(), vec![KeyValue::new("nats.account", self.acc.clone())]),
            other => {
                let raw = serde_json::to_string(self).unwrap_or_default();
                let raw: String = raw.chars().take(MAX_RAW_EVENT).collect();
                (format!("nats.{other}"), vec![KeyValue::new("nats.event", raw)])
            }
        }
    }

    /// Who received the message in an egress step: the client's kind (`client`, `router`,
    /// `gateway`, `system`, `leaf`, `jetstream`, `account`, as nats-server numbers them),
    /// its name (the kind when the client gave none), its subscription and its account
    /// (the server omits `acc` when it is the publisher's, `ingress_account`).
    fn egress_attributes(&self, ingress_account: &str) -> Vec<KeyValue> {
        const KINDS: [&str; 7] = ["client", "router", "gateway", "system", "leaf", "jetstream", "account"];
        let kind = self.client_kind.and_then(|k| KINDS.get(k as usize)).copied().unwrap_or("unknown");
        let or = |value: &str, default: &str| if value.is_empty() { default.to_owned() } else { value.to_owned() };
        vec![
            KeyValue::new("nats.client.kind", kind),
            KeyValue::new("nats.client.id", self.cid.unwrap_or_default()),
            KeyValue::new("nats.client.name", or(&self.name, kind)),
            KeyValue::new("nats.subscription", self.sub.clone()),
            KeyValue::new("nats.queue", self.queue.clone()),
            KeyValue::new("nats.account", or(&self.acc, ingress_account)),
        ]
    }
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
fn parent(header: &BTreeMap<String, Vec<String>>) -> Context {
    let mut headers = HeaderMap::new();
    for (name, values) in header {
        let Ok(name) = HeaderName::from_str(name) else { continue };
        for value in values {
            if let Ok(value) = HeaderValue::from_str(value) {
                headers.append(name.clone(), value);
            }
        }
    }
    telemetry::propagation::extract_context(Some(&headers))
}

/// Turns one event into a span; never panics on any input.
pub(crate) fn bridge(tracer: &BoxedTracer, payload: &[u8]) -> Outcome {
    let event = match serde_json::from_slice::<TraceEvent>(payload) {
        Ok(event) => event,
        Err(error) => {
            // The error names a position and a type, never the payload.
            tracing::warn!(bytes = payload.len(), %error, "not a NATS trace event; skipped");
            return Outcome::Malformed;
        }
    };
    let parent = parent(&event.request.header);
    if !parent.span().span_context().is_sampled() {
        return Outcome::Untraced;
    }
    let mut span = build_span(tracer, &event, &parent);
    let ingress_account = event.events.iter().find(|s| s.kind == "in").map(|s| s.acc.as_str()).unwrap_or_default();
    let mut errors = Vec::new();
    for step in &event.events {
        let (name, attributes) = step.span_event(ingress_account);
        if !step.error.is_empty() {
            errors.push(format!("{name}: {}", step.error));
        }
        span.add_event_with_timestamp(name, step.at().unwrap_or(span_start(&event)), attributes);
    }
    if !errors.is_empty() {
        span.set_attribute(KeyValue::new("error.type", "nats_error"));
        span.set_status(Status::error(errors.join("; ")));
    }
    span.end_with_timestamp(span_end(&event));
    Outcome::Bridged
}

/// When the server received the message (or its first step, or now).
fn span_start(event: &TraceEvent) -> SystemTime {
    let ingress = event.events.iter().find(|s| s.kind == "in");
    ingress
        .and_then(Step::at)
        .or_else(|| event.events.iter().filter_map(Step::at).min())
        .unwrap_or_else(SystemTime::now)
}

/// The last step, never before the start.
fn span_end(event: &TraceEvent) -> SystemTime {
    let start = span_start(event);
    event.events.iter().filter_map(Step::at).max().unwrap_or(start).max(start)
}

/// The span `nats ingress <template>` of service nats-server, child of the producer's
/// span, from the server's receipt of the message to its last step.
fn build_span(tracer: &BoxedTracer, event: &TraceEvent, parent: &Context) -> opentelemetry::global::BoxedSpan {
    let no_ingress = Step::default();
    let ingress = event.events.iter().find(|s| s.kind == "in").unwrap_or(&no_ingress);
    let mut attributes = vec![
        KeyValue::new("messaging.system", "nats"),
        KeyValue::new("messaging.operation.name", "ingress"),
        KeyValue::new("messaging.destination.name", ingress.subj.clone()),
        KeyValue::new("messaging.destination.template", template(&ingress.subj)),
        KeyValue::new("nats.server.name", event.server.name.clone()),
        KeyValue::new("nats.server.id", event.server.id.clone()),
        KeyValue::new("nats.server.version", event.server.ver.clone()),
        KeyValue::new("nats.account", ingress.acc.clone()),
        KeyValue::new("nats.client.id", ingress.cid.unwrap_or_default()),
        KeyValue::new("nats.client.name", ingress.name.clone()),
    ];
    if let Some(size) = event.request.msgsize {
        attributes.push(KeyValue::new("messaging.message.body.size", size));
    }
    if let Some(hops) = event.hops {
        attributes.push(KeyValue::new("nats.hops", hops));
    }
    tracer
        .span_builder(format!("nats ingress {}", template(&ingress.subj)))
        .with_kind(SpanKind::Internal)
        .with_start_time(span_start(event))
        .with_attributes(attributes)
        .start_with_context(tracer, parent)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The global tracer, with the W3C propagator installed (as `telemetry::init` does),
    /// so that a sampled `traceparent` is read as one.
    fn tracer() -> BoxedTracer {
        opentelemetry::global::set_text_map_propagator(opentelemetry_sdk::propagation::TraceContextPropagator::new());
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
    fn a_sampled_event_with_steps_of_unknown_types_and_no_ingress_is_bridged() {
        let event = r#"{"server":{"name":"n"},"request":{"header":{"traceparent":
            ["00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"]}},
            "events":[{"type":"zz","ts":"2026-12-03T00:00:00Z","extra":{"deep":[1,2]}},{"type":"eg","kind":99}]}"#;
        assert_eq!(bridge(&tracer(), event.as_bytes()), Outcome::Bridged);
        let step: Step = serde_json::from_str(r#"{"type":"zz","extra":{"deep":[1,2]}}"#).expect("a step");
        let (name, attributes) = step.span_event("CHAT");
        assert_eq!(name, "nats.zz");
        assert!(attributes[0].value.as_str().contains(r#""extra":{"deep":[1,2]}"#), "{attributes:?}");
        let egress: Step = serde_json::from_str(r#"{"type":"eg","kind":5}"#).expect("a step");
        let names: Vec<String> =
            egress.egress_attributes("CHAT").iter().map(|kv| kv.value.as_str().into_owned()).collect();
        assert_eq!(names[0], "jetstream");
        assert_eq!(
            (names[2].as_str(), names[5].as_str()),
            ("jetstream", "CHAT"),
            "no name: the kind; no account: ingress's"
        );
    }

    #[test]
    fn subjects_become_templates() {
        assert_eq!(template("chat.msg.general.alice"), MESSAGE_TEMPLATE);
        assert_eq!(template("chat.history.general.carol"), HISTORY_TEMPLATE);
        assert_eq!(template("chat.dlq.general"), DLQ_TEMPLATE);
        assert_eq!(template("orders.created"), "other");
    }
}

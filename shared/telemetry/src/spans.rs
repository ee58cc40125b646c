//! Spans for NATS messaging, named and attributed as DESIGN.md 5.2 and the OpenTelemetry
//! messaging conventions ask.
//!
//! Owns: span names (`{operation} {subject template}`, never a raw subject), kinds,
//! `messaging.*` / `server.*` attributes, parenting from message headers, and how a
//! failure or a missed deadline is recorded on a span.
//!
//! Every helper returns a [`tracing::Span`] that has **not** been entered yet. Consumer
//! and server spans get their parent from the message headers before anything can
//! enter them (tracing-opentelemetry refuses `set_parent` once a span has started).

use std::future::Future;
use std::time::Duration;

use async_nats::HeaderMap;
use opentelemetry::KeyValue;
use opentelemetry::trace::Status;
use tracing::Span;
use tracing::field::Empty;
use tracing::instrument::Instrument;
use tracing_opentelemetry::OpenTelemetrySpanExt;

use crate::propagation::{extract_context, inject_context};

/// The message a span is about. Only the template goes into the span name.
#[derive(Debug, Clone, Copy)]
pub struct MessageRef<'a> {
    /// The real subject, e.g. `chat.msg.general.alice` (`messaging.destination.name`).
    pub subject: &'a str,
    /// Its low-cardinality template, e.g. `chat.msg.*.*` (`messaging.destination.template`).
    pub template: &'a str,
    /// `Nats-Msg-Id`, when the message has one (`messaging.message.id`).
    pub message_id: Option<&'a str>,
    /// Payload size in bytes (`messaging.message.body.size`).
    pub body_size: usize,
}

/// The NATS server a client talks to (`server.address`, `server.port`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Peer {
    /// Host name or address.
    pub address: String,
    /// TCP port.
    pub port: u16,
}

impl Peer {
    /// The first server of a NATS URL list such as `nats://nats:4222,nats://b:4222`.
    /// Credentials in the URL are dropped; the port defaults to 4222.
    pub fn from_url(url: &str) -> Self {
        let first = url.split(',').next().unwrap_or_default().trim();
        let without_scheme = first.split_once("://").map_or(first, |(_, rest)| rest);
        let host_port = without_scheme.rsplit_once('@').map_or(without_scheme, |(_, hp)| hp);
        let host_port = host_port.split('/').next().unwrap_or_default();
        match host_port.rsplit_once(':') {
            Some((host, port)) if !host.ends_with(':') => {
                Self { address: host.trim_matches(['[', ']']).to_owned(), port: port.parse().unwrap_or(4222) }
            }
            _ => Self { address: host_port.to_owned(), port: 4222 },
        }
    }
}

/// JetStream delivery facts for a consumer span.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Delivery {
    /// Stream sequence (`messaging.nats.stream.sequence`).
    pub stream_sequence: u64,
    /// 1 on first delivery (`messaging.nats.delivery_count`).
    pub delivery_count: u64,
    /// Time between the server storing the message and this delivery, in seconds.
    pub queue_wait_seconds: f64,
}

impl Delivery {
    /// Reads the delivery facts from a JetStream message's reply-subject metadata.
    pub fn from_info(info: &async_nats::jetstream::message::Info<'_>) -> Self {
        let waited = time::OffsetDateTime::now_utc() - info.published;
        Self {
            stream_sequence: info.stream_sequence,
            delivery_count: u64::try_from(info.delivered).unwrap_or(1),
            queue_wait_seconds: waited.as_seconds_f64().max(0.0),
        }
    }

    /// A delivery after the first one.
    pub fn is_redelivery(&self) -> bool {
        self.delivery_count > 1
    }
}

/// How a JetStream delivery was settled; the operation name of the settle span.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Settlement {
    /// Processed; never redelivered.
    Ack,
    /// Failed for now; redelivered after a delay.
    Nak,
    /// Will never succeed; not redelivered.
    Term,
    /// Still working; extends the ack deadline.
    Progress,
}

impl Settlement {
    /// `ack`, `nak`, `term` or `progress`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Ack => "ack",
            Self::Nak => "nak",
            Self::Term => "term",
            Self::Progress => "progress",
        }
    }
}

/// tracing-opentelemetry 0.34 exports unsigned integers as strings (its span visitor has
/// no `record_u64`), so integer attributes are always recorded as `i64`.
fn as_i64(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

/// One span shape for every messaging operation; fields not set stay off the span.
/// Every value is given at creation (`None` leaves the attribute off): a later
/// `record` is another trip through the subscriber, and this runs once per message.
fn messaging_span(
    kind: &'static str,
    operation: &'static str,
    op_type: &'static str,
    msg: &MessageRef<'_>,
    peer: &Peer,
    group: Option<&str>,
    delivery: Option<&Delivery>,
) -> Span {
    tracing::info_span!(
        "messaging",
        otel.name = %format_args!("{operation} {}", msg.template),
        otel.kind = kind,
        otel.status_code = Empty,
        otel.status_description = Empty,
        error.type = Empty,
        messaging.system = "nats",
        messaging.operation.name = operation,
        messaging.operation.type = op_type,
        messaging.destination.name = msg.subject,
        messaging.destination.template = msg.template,
        messaging.message.id = msg.message_id,
        messaging.message.body.size = as_i64(msg.body_size as u64),
        messaging.consumer.group.name = group,
        messaging.message_redelivered = delivery.map(Delivery::is_redelivery),
        messaging.nats.delivery_count = delivery.map(|d| as_i64(d.delivery_count)),
        messaging.nats.stream.sequence = delivery.map(|d| as_i64(d.stream_sequence)),
        messaging.nats.queue_wait = delivery.map(|d| d.queue_wait_seconds),
        server.address = %peer.address,
        server.port = i64::from(peer.port),
        enduser.id = Empty,
    )
}

/// PRODUCER span `publish <template>`, child of the current span (or a new root).
/// Inject its context with [`inject_span`] before publishing.
pub fn publish_span(msg: &MessageRef<'_>, peer: &Peer) -> Span {
    messaging_span("producer", "publish", "send", msg, peer, None, None)
}

/// CLIENT span `request <template>` for a request/reply call, child of the current span.
pub fn request_span(msg: &MessageRef<'_>, peer: &Peer) -> Span {
    messaging_span("client", "request", "send", msg, peer, None, None)
}

/// SERVER span `process <template>` for answering a request, parented to the
/// requester's span from `headers` (a new root if they carry none or a bad one).
pub fn server_span(msg: &MessageRef<'_>, headers: Option<&HeaderMap>, group: &str, peer: &Peer) -> Span {
    let span = messaging_span("server", "process", "process", msg, peer, Some(group), None);
    set_remote_parent(&span, headers);
    span
}

/// CONSUMER span `process <template>` for one delivery, parented to the producer span
/// from `headers` (a new root if they carry none or a bad one).
pub fn process_span(
    msg: &MessageRef<'_>,
    headers: Option<&HeaderMap>,
    delivery: Option<&Delivery>,
    group: &str,
    peer: &Peer,
) -> Span {
    let span = messaging_span("consumer", "process", "process", msg, peer, Some(group), delivery);
    set_remote_parent(&span, headers);
    span
}

/// CLIENT span `ack <template>` (`nak`, `term`, `progress`), child of the current span.
pub fn settle_span(settlement: Settlement, msg: &MessageRef<'_>, peer: &Peer) -> Span {
    messaging_span("client", settlement.as_str(), "settle", msg, peer, None, None)
}

/// Injects `span`'s context into `headers` (starting the span if it had not started).
pub fn inject_span(span: &Span, headers: &mut HeaderMap) {
    inject_context(&span.context(), headers);
}

fn set_remote_parent(span: &Span, headers: Option<&HeaderMap>) {
    // An empty context makes the span a root instead of a child of whatever span happens
    // to be current in the consumer loop. Errors only mean tracing is off for this span.
    let _ = span.set_parent(extract_context(headers));
}

/// Marks `span` failed: status `ERROR` with `description`, attribute `error.type` and
/// an `exception` event. The description must not contain secrets or message bodies.
pub fn record_failure(span: &Span, error_type: &str, description: &str) {
    span.record("error.type", error_type);
    span.add_event(
        "exception",
        vec![
            KeyValue::new("exception.type", error_type.to_owned()),
            KeyValue::new("exception.message", description.to_owned()),
        ],
    );
    span.set_status(Status::error(description.to_owned()));
}

/// The unit of work did not finish within its deadline.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("processing did not finish within {0:?}")]
pub struct DeadlineExceeded(pub Duration);

/// Runs `work` inside `span` and gives up after `deadline`. A missed deadline ends the
/// span with status `ERROR` / `Timeout`, `error.type = "timeout"` and an `exception`
/// event (seed 000, scenario 4); `work` is dropped, so it must be cancel-safe.
pub async fn run_with_deadline<F: Future>(
    span: &Span,
    deadline: Duration,
    work: F,
) -> Result<F::Output, DeadlineExceeded> {
    match tokio::time::timeout(deadline, work.instrument(span.clone())).await {
        Ok(output) => Ok(output),
        Err(_) => {
            let error = DeadlineExceeded(deadline);
            span.record("error.type", "timeout");
            span.add_event(
                "exception",
                vec![KeyValue::new("exception.type", "Timeout"), KeyValue::new("exception.message", error.to_string())],
            );
            span.set_status(Status::error("Timeout"));
            span.in_scope(|| tracing::warn!(deadline_ms = deadline.as_millis() as u64, "processing timed out"));
            Err(error)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peer_from_urls() {
        let cases = [
            ("nats://nats:4222", "nats", 4222),
            ("nats://127.0.0.1:14222,nats://b:4222", "127.0.0.1", 14222),
            ("localhost", "localhost", 4222),
            ("nats://user:pass@host:5222", "host", 5222),
            ("tls://[::1]:4443", "::1", 4443),
        ];
        for (url, address, port) in cases {
            assert_eq!(Peer::from_url(url), Peer { address: address.to_owned(), port }, "{url}");
        }
    }

    #[test]
    fn first_delivery_is_not_a_redelivery() {
        let d = Delivery { stream_sequence: 7, delivery_count: 1, queue_wait_seconds: 0.0 };
        assert!(!d.is_redelivery());
        assert!(Delivery { delivery_count: 2, ..d }.is_redelivery());
    }
}

//! What the NATS client tells a service about its connection and about the messages it
//! could not read in full.
//!
//! - [`unreadable`]: any publisher can send a header block, a subject or a reply subject
//!   that the client cannot read (a bare CR, invalid UTF-8, a line without a colon). The
//!   workspace's async-nats (patched, see `patches/README.md`) delivers such a message
//!   without headers and says why in its description, instead of dropping or panicking
//!   the connection. Each consumer decides what that message becomes (the worker
//!   dead-letters it, history ignores it, `tail` shows it with a note).
//! - [`ConnectionEvents`]: counts disconnects and client errors, so a connection
//!   that keeps dropping is an alert rather than a silence.
//! - [`export_over`]: the connection the `nats` exporters publish telemetry on
//!   (`OTEL_TRACES_EXPORTER=nats`, ...).

use async_nats::Event;
use opentelemetry::KeyValue;
use opentelemetry::metrics::Counter;

/// Why the client could not read `message` as it was sent, if it could not: its header
/// block (`invalid header block: ...`), or its subject or reply subject (not UTF-8, read
/// lossily). A description without a status is only ever set for that reason.
pub fn unreadable(message: &async_nats::Message) -> Option<&str> {
    match (&message.status, &message.description) {
        (None, Some(reason)) => Some(reason),
        _ => None,
    }
}

/// Publishes the telemetry of the signals whose exporter is `nats` on `client` (as
/// `telemetry.<signal>.<service>` to the stream `TELEMETRY`); until this is called, their
/// batches are dropped and counted. The first connection of the process wins. Call inside
/// the Tokio runtime, once the service has its connection (service-kit's `connect`
/// does).
pub fn export_over(client: &async_nats::Client) {
    crate::otlp::nats::attach(client);
}

/// The connection events a service counts as `nats.client.events`, by `event`.
#[derive(Debug, Clone)]
pub struct ConnectionEvents {
    events: Counter<u64>,
}

impl Default for ConnectionEvents {
    fn default() -> Self {
        Self::new()
    }
}

impl ConnectionEvents {
    /// The counter, from the global meter (call after telemetry is set up).
    pub fn new() -> Self {
        let events = opentelemetry::global::meter("telemetry")
            .u64_counter("nats.client.events")
            .with_unit("{event}")
            .with_description("NATS client connection events: disconnected, reconnected, client and server errors")
            .build();
        // At 0 from the start, so that Prometheus' increase() sees the first one.
        for event in ["disconnected", "client_error"] {
            events.add(0, &[KeyValue::new("event", event)]);
        }
        Self { events }
    }

    /// Counts `event` (and logs the ones an operator should see).
    pub fn record(&self, event: &Event) {
        let name = match event {
            Event::Connected => "connected",
            Event::Disconnected => "disconnected",
            Event::LameDuckMode => "lame_duck_mode",
            Event::Draining => "draining",
            Event::Closed => "closed",
            Event::SlowConsumer(_) => "slow_consumer",
            Event::ServerError(_) => "server_error",
            Event::ClientError(_) => "client_error",
        };
        match event {
            Event::Connected => tracing::info!("NATS connected"),
            Event::Disconnected | Event::Closed => tracing::warn!(event = name, "NATS connection lost"),
            Event::ServerError(error) => tracing::warn!(%error, "NATS server error"),
            Event::ClientError(error) => tracing::warn!(%error, "NATS client error"),
            Event::SlowConsumer(sid) => tracing::warn!(sid, "NATS slow consumer: messages dropped by the client"),
            Event::LameDuckMode | Event::Draining => tracing::info!(event = name, "NATS server going away"),
        }
        self.events.add(1, &[KeyValue::new("event", name)]);
    }
}

#[cfg(test)]
mod tests {
    use super::unreadable;

    fn message(status: Option<async_nats::StatusCode>, description: Option<&str>) -> async_nats::Message {
        async_nats::Message {
            subject: "chat.msg.general.alice".into(),
            reply: None,
            payload: bytes::Bytes::new(),
            headers: None,
            status,
            description: description.map(str::to_owned),
            length: 0,
        }
    }

    #[test]
    fn only_a_description_without_status_means_unreadable() {
        let reason = "invalid header block: invalid header value";
        assert_eq!(unreadable(&message(None, Some(reason))), Some(reason));
        assert_eq!(unreadable(&message(None, None)), None);
        let timeout = message(Some(async_nats::StatusCode::TIMEOUT), Some("Request Timeout"));
        assert_eq!(unreadable(&timeout), None);
    }
}

//! The streams and the consumer: `TELEMETRY` (what services publish with
//! `OTEL_<SIGNAL>S_EXPORTER=nats`), `TELEMETRY_DLQ` (batches the endpoint kept refusing)
//! and the durable pull consumer `otlp-bridge`. The setup step creates or updates them
//! (as the NATS user `setup`); the bridge only finds them.

use std::time::Duration;

use async_nats::jetstream::consumer::pull::Config as PullConfig;
use async_nats::jetstream::consumer::{AckPolicy, PullConsumer};
use async_nats::jetstream::stream::{Config as StreamConfig, DiscardPolicy, StorageType};
use async_nats::jetstream::{self, Context};

/// The stream of telemetry batches.
pub const STREAM: &str = "TELEMETRY";
/// The stream of dead-lettered batches.
pub const DLQ_STREAM: &str = "TELEMETRY_DLQ";
/// The durable consumer (seed 004).
pub const CONSUMER: &str = "otlp-bridge";
/// How long the server waits for an ack before redelivering (the bridge sends progress
/// acks while it holds a batch for an endpoint that is away).
pub const ACK_WAIT: Duration = Duration::from_secs(30);

/// The signal of a subject `telemetry.<signal>.<service>`, and its OTLP/HTTP path.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Signal {
    /// `telemetry.spans.*` -> `/v1/traces`.
    Spans,
    /// `telemetry.logs.*` -> `/v1/logs`.
    Logs,
    /// `telemetry.metrics.*` -> `/v1/metrics`.
    Metrics,
}

impl Signal {
    /// The signal a subject is routed by (its second token); `None` for anything else.
    pub fn of(subject: &str) -> Option<Self> {
        match subject.split('.').nth(1) {
            Some("spans") => Some(Self::Spans),
            Some("logs") => Some(Self::Logs),
            Some("metrics") => Some(Self::Metrics),
            _ => None,
        }
    }

    /// The metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Spans => "spans",
            Self::Logs => "logs",
            Self::Metrics => "metrics",
        }
    }

    /// The OTLP/HTTP path.
    pub fn path(self) -> &'static str {
        match self {
            Self::Spans => "/v1/traces",
            Self::Logs => "/v1/logs",
            Self::Metrics => "/v1/metrics",
        }
    }

    /// Where a batch of this signal is dead-lettered.
    pub fn dlq_subject(self) -> String {
        format!("telemetry.dlq.{}", self.as_str())
    }
}

/// How the setup step makes the streams.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// `TELEMETRY_MAX_AGE`: the buffering TTL.
    pub max_age: Duration,
    /// `TELEMETRY_MAX_BYTES`.
    pub max_bytes: i64,
    /// `TELEMETRY_REPLICAS`.
    pub replicas: usize,
}

/// `TELEMETRY`: file storage, kept `max_age` (the buffering TTL) or up to `max_bytes`,
/// the oldest dropped first.
pub fn stream_config(limits: Limits) -> StreamConfig {
    let Limits { max_age, max_bytes, replicas } = limits;
    StreamConfig {
        name: STREAM.to_owned(),
        subjects: vec!["telemetry.spans.*".into(), "telemetry.logs.*".into(), "telemetry.metrics.*".into()],
        storage: StorageType::File,
        max_age,
        max_bytes,
        discard: DiscardPolicy::Old,
        num_replicas: replicas,
        ..Default::default()
    }
}

/// `TELEMETRY_DLQ`: a week of dead letters, at most 256 MiB.
pub fn dlq_config(replicas: usize) -> StreamConfig {
    StreamConfig {
        name: DLQ_STREAM.to_owned(),
        subjects: vec!["telemetry.dlq.*".into()],
        storage: StorageType::File,
        max_age: Duration::from_secs(7 * 24 * 3600),
        max_bytes: 256 << 20,
        discard: DiscardPolicy::Old,
        num_replicas: replicas,
        ..Default::default()
    }
}

/// The bridge's consumer: explicit acks; the server's redelivery limit off (the bridge
/// dead-letters after `max_deliver` refusals itself, so nothing is dropped silently).
pub fn consumer_config() -> PullConfig {
    PullConfig {
        durable_name: Some(CONSUMER.to_owned()),
        ack_policy: AckPolicy::Explicit,
        ack_wait: ACK_WAIT,
        max_deliver: -1,
        max_ack_pending: 1000,
        ..Default::default()
    }
}

/// Why the setup step or the bridge could not get the streams.
#[derive(Debug, thiserror::Error)]
pub enum StreamError {
    /// Creating or updating a stream failed.
    #[error("stream {name}: {source}")]
    Stream {
        /// The stream.
        name: &'static str,
        /// What JetStream said.
        source: async_nats::jetstream::context::CreateStreamError,
    },
    /// Finding a stream failed.
    #[error("stream {name} not found (run the setup step): {source}")]
    Missing {
        /// The stream.
        name: &'static str,
        /// What JetStream said.
        source: async_nats::jetstream::context::GetStreamError,
    },
    /// Creating or finding the consumer failed.
    #[error("consumer {CONSUMER}: {0}")]
    Consumer(String),
}

/// Creates or updates both streams and the consumer (the setup step).
pub async fn ensure(js: &Context, limits: Limits) -> Result<(), StreamError> {
    for (name, config) in [(STREAM, stream_config(limits)), (DLQ_STREAM, dlq_config(limits.replicas))] {
        js.create_or_update_stream(config).await.map_err(|source| StreamError::Stream { name, source })?;
    }
    let stream = js.get_stream(STREAM).await.map_err(|source| StreamError::Missing { name: STREAM, source })?;
    stream.create_consumer(consumer_config()).await.map_err(|e| StreamError::Consumer(e.to_string()))?;
    Ok(())
}

/// The consumer as the setup step left it (the bridge's user may not create it).
pub async fn open(js: &Context) -> Result<PullConsumer, StreamError> {
    let stream = js.get_stream(STREAM).await.map_err(|source| StreamError::Missing { name: STREAM, source })?;
    stream.get_consumer::<PullConfig>(CONSUMER).await.map_err(|e| StreamError::Consumer(e.to_string()))
}

/// A JetStream context on `client`.
pub fn context(client: async_nats::Client) -> Context {
    jetstream::new(client)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subjects_route_by_their_signal_token() {
        assert_eq!(Signal::of("telemetry.spans.persist-worker"), Some(Signal::Spans));
        assert_eq!(Signal::of("telemetry.logs.x").map(Signal::path), Some("/v1/logs"));
        assert_eq!(Signal::of("telemetry.metrics.x").map(Signal::path), Some("/v1/metrics"));
        assert_eq!(Signal::of("telemetry.profiles.x"), None);
        assert_eq!(Signal::Spans.dlq_subject(), "telemetry.dlq.spans");
    }

    #[test]
    fn dead_letters_are_not_captured_by_the_telemetry_stream() {
        let limits = Limits { max_age: Duration::from_secs(60), max_bytes: 1 << 20, replicas: 3 };
        let subjects = stream_config(limits).subjects;
        assert!(subjects.iter().all(|s| !s.starts_with("telemetry.dlq")), "{subjects:?}");
        assert_eq!(dlq_config(3).subjects, ["telemetry.dlq.*"]);
        assert_eq!((stream_config(limits).num_replicas, dlq_config(3).num_replicas), (3, 3));
    }
}

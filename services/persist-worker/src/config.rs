//! Settings, from flags or environment variables (`persist-worker --help` lists them).

use std::time::Duration;

use service_kit::{DbArgs, NatsArgs};

use crate::fate::RetryPolicy;
use service_kit::health::HealthArgs;

#[derive(Debug, Clone, clap::Args)]
pub struct Config {
    /// NATS connection (the `persist` service user bypasses the auth callout).
    #[command(flatten)]
    pub nats: NatsArgs,
    /// PostgreSQL (this service owns and migrates `chat.messages`).
    #[command(flatten)]
    pub db: DbArgs,
    /// How long the server waits for an ack before redelivering.
    #[arg(long, env = "ACK_WAIT", default_value = "30s", value_parser = humantime::parse_duration)]
    pub ack_wait: Duration,
    /// Deliveries per message before a transient failure dead-letters it (the worker
    /// decides; the server's own limit is off, so it never drops a message).
    #[arg(long, env = "MAX_DELIVER", default_value_t = 5)]
    pub max_deliver: u64,
    /// Server-side redelivery delays after ack-wait timeouts, comma separated (e.g.
    /// "1s,5s,30s"); empty: every timeout waits ACK_WAIT. Overrides ACK_WAIT with its first value.
    #[arg(long, env = "BACKOFF", value_delimiter = ',', value_parser = humantime::parse_duration)]
    pub backoff: Vec<Duration>,
    /// Delay of the first nak; doubles per delivery, capped at NAK_DELAY_MAX.
    #[arg(long, env = "NAK_DELAY", default_value = "1s", value_parser = humantime::parse_duration)]
    pub nak_delay: Duration,
    /// Longest nak delay.
    #[arg(long, env = "NAK_DELAY_MAX", default_value = "60s", value_parser = humantime::parse_duration)]
    pub nak_delay_max: Duration,
    /// Messages per insert statement, at most 1,025 (the INSERT span links each other
    /// delivery of its batch: `telemetry::LINKS_PER_SPAN`).
    #[arg(long, env = "BATCH_SIZE", default_value_t = 256)]
    pub batch_size: usize,
    /// How long to wait for a batch to fill once its first message arrived.
    #[arg(long, env = "BATCH_WAIT", default_value = "5ms", value_parser = humantime::parse_duration)]
    pub batch_wait: Duration,
    /// Batches processed concurrently (hides commit latency).
    #[arg(long, env = "IN_FLIGHT_BATCHES", default_value_t = 2)]
    pub in_flight_batches: usize,
    /// Deadline of one processing attempt; past it the attempt ends `ERROR`/`Timeout` and is nak'd.
    #[arg(long, env = "PROCESSING_DEADLINE", default_value = "10s", value_parser = humantime::parse_duration)]
    pub processing_deadline: Duration,
    /// How long `CHAT` keeps a message (the stream is a buffer before PostgreSQL, not
    /// the archive): longer than any worker outage you want to ride out.
    #[arg(long, env = "STREAM_MAX_AGE", default_value = "7d", value_parser = humantime::parse_duration)]
    pub stream_max_age: Duration,
    /// Copies of `CHAT` and `CHAT_DLQ` kept by a NATS cluster (JetStream RAFT): 1 on a
    /// single server, 3 on the three-node cluster of `make up-cluster` (survives one node).
    /// A running stream is scaled to this number when the worker starts.
    #[arg(long, env = "STREAM_REPLICAS", default_value_t = 1, value_parser = clap::value_parser!(u8).range(1..=5))]
    pub stream_replicas: u8,
    /// Settlements (ack, nak, term) as CLIENT spans `ack chat.msg.*.*` instead of events on
    /// the process span (the default: they are publishes of microseconds).
    #[arg(long, env = "SETTLE_SPANS", default_value_t = false, action = clap::ArgAction::Set)]
    pub settle_spans: bool,
    /// Honour per-message demo fault requests (fail_once, slow, poison, crash_after_commit).
    #[arg(long, env = "DEMO_FAULTS", default_value_t = false, action = clap::ArgAction::Set)]
    pub demo_faults: bool,
    /// Health endpoints.
    #[command(flatten)]
    pub health: HealthArgs,
}

/// The largest batch: its first delivery's span is the INSERT span's parent, each of the
/// others a link, and a span keeps `telemetry::LINKS_PER_SPAN` links.
pub const MAX_BATCH_SIZE: usize = telemetry::LINKS_PER_SPAN as usize + 1;

/// Settings that contradict each other or the server's rules.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ConfigError {
    /// The server rejects a consumer whose backoff list is longer than `max_deliver`.
    #[error("BACKOFF has {len} entries; it may have at most MAX_DELIVER ({max_deliver})")]
    BackoffTooLong {
        /// Entries given.
        len: usize,
        /// The limit.
        max_deliver: u64,
    },
    /// A batch whose INSERT span could not link all its other deliveries.
    #[error("BATCH_SIZE {0} is more than {MAX_BATCH_SIZE}: a batch's INSERT span links each of its other deliveries")]
    BatchTooLarge(usize),
    /// A count that must be positive.
    #[error("{0} must be at least 1")]
    NotPositive(&'static str),
}

impl Config {
    /// Checks the settings before anything connects.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.max_deliver < 1 {
            return Err(ConfigError::NotPositive("MAX_DELIVER"));
        }
        if self.batch_size == 0 {
            return Err(ConfigError::NotPositive("BATCH_SIZE"));
        }
        if self.batch_size > MAX_BATCH_SIZE {
            return Err(ConfigError::BatchTooLarge(self.batch_size));
        }
        if self.in_flight_batches == 0 {
            return Err(ConfigError::NotPositive("IN_FLIGHT_BATCHES"));
        }
        if self.backoff.len() as u64 > self.max_deliver {
            return Err(ConfigError::BackoffTooLong { len: self.backoff.len(), max_deliver: self.max_deliver });
        }
        Ok(())
    }

    /// Retries as [`crate::fate`] applies them.
    pub(crate) fn retry_policy(&self) -> RetryPolicy {
        RetryPolicy { max_deliver: self.max_deliver, nak_delay: self.nak_delay, nak_delay_max: self.nak_delay_max }
    }
}

impl service_kit::ServiceConfig for Config {
    fn health(&self) -> &HealthArgs {
        &self.health
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(args: &[&str]) -> Config {
        service_kit::parse_config(&[&["persist-worker"], args].concat()).expect("parses")
    }

    #[test]
    fn defaults_are_valid() {
        assert_eq!(config(&[]).validate(), Ok(()));
    }

    #[test]
    fn backoff_longer_than_max_deliver_is_refused() {
        let c = config(&["--max-deliver", "2", "--backoff", "1s,2s,3s"]);
        assert_eq!(c.validate(), Err(ConfigError::BackoffTooLong { len: 3, max_deliver: 2 }));
    }

    #[test]
    fn a_batch_its_insert_span_cannot_link_whole_is_refused() {
        assert_eq!(config(&["--batch-size", "1025"]).validate(), Ok(()));
        assert_eq!(config(&["--batch-size", "1026"]).validate(), Err(ConfigError::BatchTooLarge(1026)));
        assert_eq!(config(&["--batch-size", "0"]).validate(), Err(ConfigError::NotPositive("BATCH_SIZE")));
    }

    #[test]
    fn nak_delay_doubles_and_is_capped() {
        let c = config(&["--nak-delay", "100ms", "--nak-delay-max", "1s"]).retry_policy();
        let delays: Vec<_> = (1..=6).map(|d| c.delay(d).as_millis()).collect();
        assert_eq!(delays, [100, 200, 400, 800, 1000, 1000]);
    }

    #[test]
    fn the_database_url_never_prints() {
        let c = config(&["--database-url", "postgres://u:hunter2@db/chat"]);
        assert!(!format!("{c:?}").contains("hunter2"));
    }
}

//! Settings, from flags or environment variables (`otlp-bridge --help`), with seed 004's
//! defaults.

use std::time::Duration;

use service_kit::NatsArgs;
use service_kit::health::HealthArgs;

/// The bridge's settings.
#[derive(Debug, Clone, clap::Args)]
pub struct Config {
    /// NATS connection (the `otlp-bridge` service user of account CHAT; `setup` as the
    /// `setup` user).
    #[command(flatten)]
    pub nats: NatsArgs,
    /// OTLP/HTTP base URL the batches are posted to (`/v1/traces`, `/v1/logs`,
    /// `/v1/metrics` appended). Unset: `OTEL_EXPORTER_OTLP_ENDPOINT`, where the bridge's
    /// own telemetry goes too (then give it `OTEL_EXPORTER_OTLP_PROTOCOL=http/protobuf`),
    /// else `http://localhost:4318`.
    #[arg(long, env = "BRIDGE_ENDPOINT")]
    pub endpoint: Option<String>,
    /// Extra request headers, `key=value` comma separated (a backend's token).
    #[arg(long = "header", env = "OTEL_EXPORTER_OTLP_HEADERS", value_delimiter = ',', hide_env_values = true)]
    pub headers: Vec<String>,
    /// Messages fetched per batch.
    #[arg(long, env = "BRIDGE_BATCH_SIZE", default_value_t = 100)]
    pub batch_size: usize,
    /// Longest wait for a batch to fill: a flush at least this often.
    #[arg(long, env = "BRIDGE_FLUSH_INTERVAL", default_value = "5s", value_parser = humantime::parse_duration)]
    pub flush_interval: Duration,
    /// Deliveries of a message the endpoint keeps refusing before it is dead-lettered.
    #[arg(long, env = "BRIDGE_MAX_DELIVER", default_value_t = 4)]
    pub max_deliver: u64,
    /// Delay of the nak after a refused message.
    #[arg(long, env = "BRIDGE_NAK_DELAY", default_value = "10s", value_parser = humantime::parse_duration)]
    pub nak_delay: Duration,
    /// Longest pause between probes of an endpoint that is away (from 1 s, doubling).
    #[arg(long, env = "BRIDGE_PROBE_MAX", default_value = "10s", value_parser = humantime::parse_duration)]
    pub probe_max: Duration,
    /// How long one POST may take.
    #[arg(long, env = "BRIDGE_EXPORT_TIMEOUT", default_value = "10s", value_parser = humantime::parse_duration)]
    pub export_timeout: Duration,
    /// How long TELEMETRY keeps a batch nobody forwarded (the buffering TTL; `setup`).
    #[arg(long, env = "TELEMETRY_MAX_AGE", default_value = "24h", value_parser = humantime::parse_duration)]
    pub max_age: Duration,
    /// Most bytes TELEMETRY keeps; beyond, the oldest batches go (`setup`).
    #[arg(long, env = "TELEMETRY_MAX_BYTES", default_value_t = 1 << 30)]
    pub max_bytes: i64,
    /// Copies of TELEMETRY and TELEMETRY_DLQ in a NATS cluster (`setup`; 3 in the
    /// cluster profile).
    #[arg(long, env = "TELEMETRY_REPLICAS", default_value_t = 1)]
    pub replicas: usize,
    /// Health endpoints.
    #[command(flatten)]
    pub health: HealthArgs,
}

/// Settings that cannot work.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// The bridge's own telemetry would be published to the stream it forwards.
    #[error("{0}=nats would send the bridge's own telemetry through itself; use otlp (the default)")]
    Loop(&'static str),
    /// A header that is not `key=value` (its text is not shown: it may be a secret).
    #[error("OTEL_EXPORTER_OTLP_HEADERS: header {0} is not key=value")]
    Header(usize),
    /// Zero where at least one is needed.
    #[error("{0} must be at least 1")]
    Zero(&'static str),
}

impl Config {
    /// Where the batches go: `--endpoint`, else `OTEL_EXPORTER_OTLP_ENDPOINT`, else
    /// `http://localhost:4318`.
    pub fn endpoint(&self) -> String {
        let from_env = std::env::var("OTEL_EXPORTER_OTLP_ENDPOINT").ok().filter(|e| !e.trim().is_empty());
        self.endpoint.clone().or(from_env).unwrap_or_else(|| "http://localhost:4318".to_owned())
    }

    /// Refuses settings that would loop or cannot work.
    pub fn validate(&self) -> Result<(), ConfigError> {
        for var in ["OTEL_TRACES_EXPORTER", "OTEL_METRICS_EXPORTER", "OTEL_LOGS_EXPORTER"] {
            if std::env::var(var).is_ok_and(|v| v.trim() == "nats") {
                return Err(ConfigError::Loop(var));
            }
        }
        if self.batch_size == 0 {
            return Err(ConfigError::Zero("BRIDGE_BATCH_SIZE"));
        }
        if self.max_deliver == 0 {
            return Err(ConfigError::Zero("BRIDGE_MAX_DELIVER"));
        }
        self.header_pairs().map(|_| ())
    }

    /// The extra headers as pairs (values percent-decoded as the OTLP exporters do for `%20`).
    pub fn header_pairs(&self) -> Result<Vec<(String, String)>, ConfigError> {
        self.headers
            .iter()
            .filter(|h| !h.trim().is_empty())
            .enumerate()
            .map(|(i, h)| {
                let (key, value) = h.split_once('=').ok_or(ConfigError::Header(i + 1))?;
                Ok((key.trim().to_owned(), value.trim().replace("%20", " ")))
            })
            .collect()
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
        service_kit::parse_config(&[&["otlp-bridge"], args].concat()).expect("parses")
    }

    #[test]
    fn seed_004s_defaults() {
        let c = config(&[]);
        assert_eq!((c.batch_size, c.flush_interval, c.max_deliver), (100, Duration::from_secs(5), 4));
        assert_eq!(c.validate(), Ok(()));
    }

    #[test]
    fn headers_are_pairs_and_a_bad_one_is_numbered_never_shown() {
        let c = config(&["--header", "authorization=Bearer%20s3cret", "--header", "x-tenant=chat"]);
        let pairs = c.header_pairs().expect("pairs");
        assert_eq!(pairs[0], ("authorization".to_owned(), "Bearer s3cret".to_owned()));
        let bad = config(&["--header", "x-tenant=chat", "--header", "tokens3cret"]);
        let error = bad.validate().expect_err("no =").to_string();
        assert!(error.contains("header 2") && !error.contains("s3cret"), "{error}");
        assert_eq!(config(&["--batch-size", "0"]).validate(), Err(ConfigError::Zero("BRIDGE_BATCH_SIZE")));
    }
}

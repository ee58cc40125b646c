//! Settings, from flags or environment variables (`nats-trace-bridge --help`).

use service_kit::NatsArgs;
use telemetry::HealthArgs;

#[derive(Debug, Clone, clap::Args)]
pub struct Config {
    /// NATS connection (the `tracer` service user of account CHAT).
    #[command(flatten)]
    pub nats: NatsArgs,
    /// Health endpoints.
    #[command(flatten)]
    pub health: HealthArgs,
}

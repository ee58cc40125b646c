//! Settings, from flags or environment variables (`nats-trace-bridge --help`).

use service_kit::NatsArgs;
use telemetry::HealthArgs;

/// Command line.
#[derive(Debug, clap::Parser)]
#[command(name = "nats-trace-bridge", version, about = "NATS message-tracing events -> OpenTelemetry spans")]
pub struct Cli {
    /// What to do (default: bridge).
    #[command(subcommand)]
    pub command: Option<Command>,
    /// Settings.
    #[command(flatten)]
    pub config: Config,
}

/// Subcommands.
#[derive(Debug, Clone, clap::Subcommand)]
pub enum Command {
    /// Probe a running bridge's /readyz (exit 0 when ready); for container healthchecks.
    Healthcheck,
}

/// Settings.
#[derive(Debug, Clone, clap::Args)]
pub struct Config {
    /// NATS connection (the `tracer` service user of account CHAT).
    #[command(flatten)]
    pub nats: NatsArgs,
    /// Health endpoints.
    #[command(flatten)]
    pub health: HealthArgs,
}

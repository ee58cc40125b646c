//! Settings, from flags or environment variables (`history-service --help` lists them).

use service_kit::{DbArgs, NatsArgs};
use telemetry::HealthArgs;

/// Command line.
#[derive(Debug, clap::Parser)]
#[command(name = "history-service", version, about = "Answers chat history requests from PostgreSQL")]
pub struct Cli {
    /// What to do (default: serve).
    #[command(subcommand)]
    pub command: Option<Command>,
    /// Service settings.
    #[command(flatten)]
    pub config: Config,
}

/// Subcommands.
#[derive(Debug, Clone, clap::Subcommand)]
pub enum Command {
    /// Probe a running service's /readyz (exit 0 when ready); for container healthchecks.
    Healthcheck,
}

/// Service settings.
#[derive(Debug, Clone, clap::Args)]
pub struct Config {
    /// NATS connection (the `history` service user bypasses the auth callout).
    #[command(flatten)]
    pub nats: NatsArgs,
    /// PostgreSQL (the table is owned and migrated by persist-worker).
    #[command(flatten)]
    pub db: DbArgs,
    /// Health endpoints.
    #[command(flatten)]
    pub health: HealthArgs,
}

//! Settings, from flags or environment variables (`history-service --help` lists them).

use telemetry::{HealthArgs, Secret};

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
    /// NATS server URL(s), comma separated.
    #[arg(long, env = "NATS_URL", default_value = "nats://127.0.0.1:4222")]
    pub nats_url: String,
    /// NATS user (the `history` service user bypasses the auth callout).
    #[arg(long, env = "NATS_USER")]
    pub nats_user: Option<String>,
    /// NATS password.
    #[arg(long, env = "NATS_PASSWORD", hide_env_values = true)]
    pub nats_password: Option<Secret>,
    /// PostgreSQL URL (the table is owned and migrated by persist-worker).
    #[arg(long, env = "DATABASE_URL", hide_env_values = true, default_value = "postgres://chat@127.0.0.1:5432/chat")]
    pub database_url: Secret,
    /// Database connections.
    #[arg(long, env = "DB_POOL_SIZE", default_value_t = 4)]
    pub db_pool_size: u32,
    /// Health endpoints.
    #[command(flatten)]
    pub health: HealthArgs,
}

//! Settings, from flags or environment variables (`history-service --help` lists them).

use service_kit::health::HealthArgs;
use service_kit::{DbArgs, NatsArgs};

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

impl service_kit::ServiceConfig for Config {
    fn health(&self) -> &HealthArgs {
        &self.health
    }
}

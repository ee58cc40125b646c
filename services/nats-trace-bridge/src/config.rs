//! Settings, from flags or environment variables (`nats-trace-bridge --help`).

use service_kit::NatsArgs;
use service_kit::health::HealthArgs;

#[derive(Debug, Clone, clap::Args)]
pub struct Config {
    /// NATS connection (the `tracer` service user of account CHAT).
    #[command(flatten)]
    pub nats: NatsArgs,
    /// nats-server monitoring endpoints (`http://nats:8222`; a cluster's nodes, comma
    /// separated) whose `/jsz` gives the JetStream gauges; none: no gauges.
    #[arg(long, env = "NATS_MONITOR_URL", value_delimiter = ',')]
    pub monitor_url: Vec<String>,
    /// Health endpoints.
    #[command(flatten)]
    pub health: HealthArgs,
}

impl service_kit::ServiceConfig for Config {
    fn health(&self) -> &HealthArgs {
        &self.health
    }
}

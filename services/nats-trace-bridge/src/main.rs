//! nats-trace-bridge: NATS message-tracing events -> spans. See the library docs.

use std::process::ExitCode;

use clap::Parser;
use nats_trace_bridge::{Cli, Command};

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Some(Command::Healthcheck) = cli.command {
        return telemetry::healthcheck(cli.config.health.health_addr).await;
    }
    // The spans describe the broker: service.name is nats-server unless OTEL_SERVICE_NAME says otherwise.
    let service = telemetry::ServiceInfo { name: "nats-server", ..telemetry::service_info!() };
    telemetry::run_service(service, |shutdown| nats_trace_bridge::run(cli.config, shutdown)).await
}

//! persist-worker: stores chat messages from JetStream in PostgreSQL. See the library docs.

use std::process::ExitCode;

use persist_worker::Config;
use service_kit::{ServiceCli, ServiceCommand};

#[tokio::main]
async fn main() -> ExitCode {
    let cli = ServiceCli::<Config>::parse_for(
        env!("CARGO_PKG_NAME"),
        env!("CARGO_PKG_VERSION"),
        "Stores chat messages from JetStream in PostgreSQL",
    );
    if let Some(ServiceCommand::Healthcheck) = cli.command {
        return telemetry::healthcheck(cli.config.health.health_addr).await;
    }
    telemetry::run_service(telemetry::service_info!(), |shutdown| persist_worker::run(cli.config, shutdown)).await
}

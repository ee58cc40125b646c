//! history-service: answers `chat.history.<room>` from PostgreSQL. See the library docs.

use std::process::ExitCode;

use clap::Parser;
use history_service::{Cli, Command};

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Some(Command::Healthcheck) = cli.command {
        return telemetry::healthcheck(cli.config.health.health_addr).await;
    }
    telemetry::run_service(telemetry::service_info!(), |shutdown| history_service::run(cli.config, shutdown)).await
}

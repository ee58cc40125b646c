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
    let guard = match telemetry::init(telemetry::service_info!()) {
        Ok(guard) => guard,
        Err(error) => {
            eprintln!("history-service: {error}");
            return ExitCode::FAILURE;
        }
    };
    let result = history_service::run(cli.config, telemetry::shutdown_signal()).await;
    if let Err(error) = &result {
        tracing::error!(%error, "history-service stopped");
    }
    guard.shutdown().await;
    if result.is_ok() { ExitCode::SUCCESS } else { ExitCode::FAILURE }
}

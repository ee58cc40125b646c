//! auth-service: the NATS auth callout. See the library docs.

use std::process::ExitCode;

use auth_service::{Cli, Command};
use clap::Parser;

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Some(Command::Healthcheck) => return telemetry::healthcheck(cli.config.health.health_addr).await,
        Some(Command::Keygen) => {
            print!("{}", auth_service::keygen::env_file());
            return ExitCode::SUCCESS;
        }
        None => {}
    }
    let guard = match telemetry::init(telemetry::service_info!()) {
        Ok(guard) => guard,
        Err(error) => {
            eprintln!("auth-service: {error}");
            return ExitCode::FAILURE;
        }
    };
    let result = auth_service::run(cli.config, telemetry::shutdown_signal()).await;
    if let Err(error) = &result {
        tracing::error!(%error, "auth-service stopped");
    }
    guard.shutdown().await;
    if result.is_ok() { ExitCode::SUCCESS } else { ExitCode::FAILURE }
}

//! auth-service: the NATS auth callout. See the library docs.

use std::process::ExitCode;

use auth_service::{Cli, Command};
use clap::Parser;

// See persist-worker's main: spans are freed on another thread than the one that made them.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Some(Command::Healthcheck) => telemetry::healthcheck(cli.config.health.health_addr).await,
        Some(Command::Keygen) => {
            print!("{}", auth_service::keygen::env_file());
            ExitCode::SUCCESS
        }
        None => {
            telemetry::run_service(telemetry::service_info!(), |shutdown| auth_service::run(cli.config, shutdown)).await
        }
    }
}

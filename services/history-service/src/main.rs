//! history-service: answers `chat.history.<room>` from PostgreSQL. See the library docs.

use std::process::ExitCode;

use history_service::Config;
use service_kit::{ServiceCli, ServiceCommand};

// See persist-worker's main: spans are freed on another thread than the one that made them.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> ExitCode {
    let cli = ServiceCli::<Config>::parse_for(
        env!("CARGO_PKG_NAME"),
        env!("CARGO_PKG_VERSION"),
        "Answers chat history requests from PostgreSQL",
    );
    if let Some(ServiceCommand::Healthcheck) = cli.command {
        return telemetry::healthcheck(cli.config.health.health_addr).await;
    }
    telemetry::run_service(telemetry::service_info!(), |shutdown| history_service::run(cli.config, shutdown)).await
}

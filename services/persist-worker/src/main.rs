//! persist-worker: stores chat messages from JetStream in PostgreSQL. See the library docs.

use std::process::ExitCode;

use persist_worker::Config;
use service_kit::{ServiceCli, ServiceCommand};

// Spans are allocated on the worker threads and freed on the export thread; glibc malloc
// serialises that on its arena locks: the per-message instrumentation cost 16.5 µs of CPU
// with glibc, 7 µs with mimalloc (`cargo bench -p telemetry --bench per_message`).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

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

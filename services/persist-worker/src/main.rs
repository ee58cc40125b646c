//! persist-worker: stores chat messages from JetStream in PostgreSQL. See the library docs.

use std::process::ExitCode;

use clap::Parser as _;
use persist_worker::{Cli, Command};

// Spans are allocated on the worker threads and freed on the export thread; glibc malloc
// serialises that on its arena locks: the per-message instrumentation cost 16.5 µs of CPU
// with glibc, 7 µs with mimalloc (`cargo bench -p telemetry --bench per_message`).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Some(Command::Healthcheck) => telemetry::healthcheck(cli.config.health.health_addr).await,
        Some(Command::Setup) => {
            // A one-shot step: no process metrics (it would look like a service gone).
            let info = telemetry::ServiceInfo { process_metrics: false, ..telemetry::service_info!() };
            telemetry::run_service(info, |_shutdown| persist_worker::set_up(cli.config)).await
        }
        None => {
            telemetry::run_service(telemetry::service_info!(), |shutdown| persist_worker::run(cli.config, shutdown))
                .await
        }
    }
}

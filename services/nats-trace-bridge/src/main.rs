//! nats-trace-bridge: NATS message-tracing events -> spans. See the library docs.

use std::process::ExitCode;

use nats_trace_bridge::Config;
use service_kit::{ServiceCli, ServiceCommand};

// See persist-worker's main: spans are freed on another thread than the one that made them.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> ExitCode {
    let cli = ServiceCli::<Config>::parse_for(
        env!("CARGO_PKG_NAME"),
        env!("CARGO_PKG_VERSION"),
        "NATS message-tracing events -> OpenTelemetry spans",
    );
    if let Some(ServiceCommand::Healthcheck) = cli.command {
        return telemetry::healthcheck(cli.config.health.health_addr).await;
    }
    // The spans describe the broker: service.name is nats-server unless OTEL_SERVICE_NAME says otherwise.
    telemetry::run_service(telemetry::ServiceInfo { name: "nats-server", ..telemetry::service_info!() }, |shutdown| {
        nats_trace_bridge::run(cli.config, shutdown)
    })
    .await
}

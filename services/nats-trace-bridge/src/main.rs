//! nats-trace-bridge: NATS message-tracing events -> spans. See the library docs.

use std::process::ExitCode;

// See persist-worker's main: spans are freed on another thread than the one that made them.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> ExitCode {
    let mut binary = service_kit::binary!("NATS message-tracing events -> OpenTelemetry spans");
    // The spans describe the broker: service.name is nats-server unless OTEL_SERVICE_NAME says otherwise.
    binary.service.name = "nats-server";
    service_kit::main(binary, nats_trace_bridge::run).await
}

//! otlp-bridge: TELEMETRY stream -> OTLP/HTTP. See the library docs.

use std::process::ExitCode;

use otlp_bridge::Command;

// See persist-worker's main: spans are freed on another thread than the one that made them.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> ExitCode {
    let binary = service_kit::binary!("Forwards the OTLP batches of the TELEMETRY stream to an OTLP/HTTP endpoint");
    service_kit::main_with(binary, otlp_bridge::run, async |Command::Setup, config| {
        service_kit::one_shot(binary, async || otlp_bridge::set_up(config).await).await
    })
    .await
}

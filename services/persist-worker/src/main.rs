//! persist-worker: stores chat messages from JetStream in PostgreSQL. See the library docs.

use std::process::ExitCode;

use persist_worker::Command;

// Spans are allocated on the worker threads and freed on the export thread; glibc malloc
// serialises that on its arena locks: the per-message instrumentation cost 16.5 µs of CPU
// with glibc, 7 µs with mimalloc (`cargo bench -p telemetry --bench per_message`).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> ExitCode {
    let binary = service_kit::binary!("Stores chat messages from JetStream in PostgreSQL");
    service_kit::main_with(binary, persist_worker::run, async |Command::Setup, config| {
        service_kit::one_shot(binary, async || persist_worker::set_up(config).await).await
    })
    .await
}

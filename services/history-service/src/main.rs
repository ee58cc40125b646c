//! history-service: answers `chat.history.<room>` from PostgreSQL. See the library docs.

use std::process::ExitCode;

// See persist-worker's main: spans are freed on another thread than the one that made them.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> ExitCode {
    service_kit::main(service_kit::binary!("Answers chat history requests from PostgreSQL"), history_service::run).await
}

//! auth-service: the NATS auth callout. See the library docs.

use std::process::ExitCode;

use auth_service::Command;

// See persist-worker's main: spans are freed on another thread than the one that made them.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> ExitCode {
    let binary = service_kit::binary!("NATS auth callout: OIDC access token -> NATS user JWT");
    service_kit::main_with(binary, auth_service::run, async |Command::Keygen, _config| {
        print!("{}", auth_service::keygen::env_file());
        ExitCode::SUCCESS
    })
    .await
}

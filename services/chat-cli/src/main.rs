//! chat-cli: the demo chat client. See the library docs.

use std::process::ExitCode;

use clap::Parser;

// See persist-worker's main: spans are freed on another thread than the one that made them.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> ExitCode {
    let cli = chat_cli::Cli::parse();
    // stdout carries the results (and --json); log lines go to stderr, or nowhere while
    // the terminal UI owns the screen (they still go over OTLP).
    let log_lines = if cli.is_tui() { telemetry::LogLines::Off } else { telemetry::LogLines::Stderr };
    let service = telemetry::ServiceInfo {
        default_log_filter: "warn",
        log_lines,
        process_metrics: false,
        ..telemetry::service_info!()
    };
    let guard = match telemetry::init(service) {
        Ok(guard) => guard,
        Err(error) => {
            eprintln!("chat-cli: {error}");
            return ExitCode::FAILURE;
        }
    };
    let result = chat_cli::run(cli).await;
    guard.shutdown().await;
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("chat-cli: {error}");
            ExitCode::from(error.exit_code())
        }
    }
}

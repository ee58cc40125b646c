//! The body of every service binary's `main`, so that each `main.rs` is one call: parse
//! the command line (the service's settings, `healthcheck`, and any subcommand of its
//! own), answer `healthcheck` without telemetry, or set up telemetry, run the service
//! until SIGTERM or Ctrl-C, log its error, flush, and turn the outcome into the exit code.

use std::fmt::Display;
use std::future::Future;
use std::pin::Pin;
use std::process::ExitCode;

use telemetry::ServiceInfo;

use crate::health::{self, HealthArgs};

/// Resolves when the service is asked to stop (SIGTERM, how containers are stopped, or Ctrl-C).
pub type Shutdown = Pin<Box<dyn Future<Output = ()> + Send>>;

/// A service's settings: flattened into its command line; `healthcheck` probes where
/// its health endpoints listen.
pub trait ServiceConfig: clap::Args {
    /// The health endpoints' settings.
    fn health(&self) -> &HealthArgs;
}

/// What `--help` and `--version` show, and what telemetry reports; build it with
/// [`binary!`](crate::binary).
#[derive(Debug, Clone, Copy)]
pub struct Binary {
    /// The binary's name (the calling crate's).
    pub name: &'static str,
    /// Its version.
    pub version: &'static str,
    /// One line for `--help`.
    pub about: &'static str,
    /// Telemetry's view of it: `service.name` defaults to the binary's name.
    pub service: ServiceInfo,
}

/// The calling crate's [`Binary`], described by `about`.
#[macro_export]
macro_rules! binary {
    ($about:expr) => {
        $crate::Binary::new(env!("CARGO_PKG_NAME"), env!("CARGO_PKG_VERSION"), $about)
    };
}

impl Binary {
    /// A long-running service named `name` (logs at `info` on stdout, process metrics on).
    pub const fn new(name: &'static str, version: &'static str, about: &'static str) -> Self {
        let service = ServiceInfo {
            name,
            version,
            default_log_filter: "info",
            log_lines: telemetry::LogLines::Stdout,
            process_metrics: true,
        };
        Self { name, version, about, service }
    }
}

/// The command line of a service with its own subcommands `X` (none: [`NoCommand`]).
#[derive(Debug, clap::Parser)]
struct Cli<C: clap::Args, X: clap::Subcommand> {
    /// What to do (default: run the service).
    #[command(subcommand)]
    command: Option<Command<X>>,
    #[command(flatten)]
    config: C,
}

#[derive(Debug, clap::Subcommand)]
enum Command<X: clap::Subcommand> {
    /// Probe a running instance's /readyz (exit 0 when ready); for container healthchecks.
    Healthcheck,
    #[command(flatten)]
    Own(X),
}

/// No subcommand besides `healthcheck`.
#[derive(Debug, Clone, Copy, clap::Subcommand)]
pub enum NoCommand {}

/// `main` of a service without subcommands of its own: see [`main_with`].
pub async fn main<C, E>(binary: Binary, serve: impl AsyncFnOnce(C, Shutdown) -> Result<(), E>) -> ExitCode
where
    C: ServiceConfig,
    E: Display,
{
    main_with(binary, serve, async |never: NoCommand, _: C| match never {}).await
}

/// `main` of a service: `healthcheck` probes `/readyz` (exit 0 when ready); a subcommand
/// of its own runs `own` (which sets up telemetry if it wants it, e.g. with
/// [`with_telemetry`]); no subcommand runs `serve` with telemetry. Bad arguments exit
/// with clap's message and code 2.
pub async fn main_with<C, X, E>(
    binary: Binary,
    serve: impl AsyncFnOnce(C, Shutdown) -> Result<(), E>,
    own: impl AsyncFnOnce(X, C) -> ExitCode,
) -> ExitCode
where
    C: ServiceConfig,
    X: clap::Subcommand,
    E: Display,
{
    use clap::{CommandFactory as _, FromArgMatches as _};
    let matches = Cli::<C, X>::command().name(binary.name).version(binary.version).about(binary.about).get_matches();
    let cli = Cli::<C, X>::from_arg_matches(&matches).unwrap_or_else(|e| e.exit());
    match cli.command {
        Some(Command::Healthcheck) => health::healthcheck(cli.config.health().health_addr).await,
        Some(Command::Own(command)) => own(command, cli.config).await,
        None => with_telemetry(binary.service, async |shutdown| serve(cli.config, shutdown).await).await,
    }
}

/// Sets up telemetry as `service`, runs `run` with a [`Shutdown`], logs its error if
/// any, flushes telemetry, and turns the outcome into the exit code.
pub async fn with_telemetry<E: Display>(
    service: ServiceInfo,
    run: impl AsyncFnOnce(Shutdown) -> Result<(), E>,
) -> ExitCode {
    let guard = match telemetry::init(service) {
        Ok(guard) => guard,
        Err(error) => {
            eprintln!("{}: {error}", service.name);
            return ExitCode::FAILURE;
        }
    };
    let result = run(Box::pin(health::shutdown_signal())).await;
    if let Err(error) = &result {
        tracing::error!(%error, "{} stopped", service.name);
    }
    guard.shutdown().await;
    if result.is_ok() { ExitCode::SUCCESS } else { ExitCode::FAILURE }
}

/// A one-shot step of a service binary (a setup subcommand): run with telemetry as the
/// binary's service, but without process metrics (an ended step would look like a
/// service gone to the `ServiceDown` alert).
pub async fn one_shot<E: Display>(binary: Binary, step: impl AsyncFnOnce() -> Result<(), E>) -> ExitCode {
    let service = ServiceInfo { process_metrics: false, ..binary.service };
    with_telemetry(service, async |_shutdown| step().await).await
}

/// Parses `args` (the first is the binary's name) as service `C`'s command line: for tests.
pub fn parse_config<C: ServiceConfig>(args: &[&str]) -> Result<C, clap::Error> {
    use clap::Parser as _;
    Cli::<C, NoCommand>::try_parse_from(args).map(|cli| cli.config)
}

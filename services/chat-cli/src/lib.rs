//! chat-cli plays the chat front end: every command starts (or continues) a trace,
//! prints its trace id with a Grafana link, and exits non-zero on failure.
//!
//! Layout: `error` (what went wrong, exit codes), `connect` (NATS connection), `send` (JetStream publish with trace
//! context), `history` (traced request/reply), `links` (Grafana URLs), `output`, `trace`
//! (a trace from Tempo as a tree), `tui` (the terminal trace explorer).

mod connect;
mod error;
mod history;
mod links;
mod load;
mod login;
mod output;
mod send;
mod tail;
mod trace;
mod tui;

use std::time::Duration;

use telemetry::policy::Secret;

pub use error::CliError;

/// For `benches/tui.rs` only: not part of the CLI's interface.
#[doc(hidden)]
pub mod bench {
    pub use crate::tui::bench::waterfall_frame;
}

/// Command line.
#[derive(Debug, clap::Parser)]
#[command(name = "chat-cli", version, about = "Demo chat client: send, read history; every command is traced")]
pub struct Cli {
    /// NATS server URL(s), comma separated (in a cluster, every node).
    #[arg(long, global = true, env = "NATS_URL", default_value = "nats://127.0.0.1:4222")]
    pub nats_url: String,
    /// Connect token (an OIDC access token, checked by the auth callout).
    #[arg(long, global = true, env = "CHAT_TOKEN", hide_env_values = true)]
    pub token: Option<Secret>,
    /// Password for a login (OIDC password grant) before connecting.
    #[arg(long, global = true, env = "CHAT_PASSWORD", hide_env_values = true)]
    pub password: Option<Secret>,
    /// Keycloak token endpoint for `login`.
    #[arg(
        long,
        global = true,
        env = "CHAT_OIDC_TOKEN_URL",
        default_value = "http://localhost:8080/realms/chat/protocol/openid-connect/token"
    )]
    pub oidc_token_url: String,
    /// Your user name (also the login name): messages go to chat.msg.<room>.<user>.
    #[arg(long, global = true, env = "CHAT_USER", default_value = "alice")]
    pub user: String,
    /// Grafana base URL for trace links.
    #[arg(long, global = true, env = "GRAFANA_URL", default_value = "http://localhost:3001")]
    pub grafana_url: String,
    /// Print JSON lines instead of text.
    #[arg(long, global = true)]
    pub json: bool,
    /// How long to wait for NATS to answer.
    #[arg(long, global = true, default_value = "5s", value_parser = humantime::parse_duration)]
    pub timeout: Duration,
    /// The command.
    #[command(subcommand)]
    pub command: Command,
}

/// Commands.
#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Publish a message to chat.msg.<room>.<user> (stored by persist-worker).
    Send(send::SendArgs),
    /// Read the newest messages of a room, each with the trace it was sent in.
    History(history::HistoryArgs),
    /// Log in to Keycloak (password grant) and cache the access token.
    Login(login::LoginArgs),
    /// Print live messages of a room, each with the trace it was sent in.
    Tail(tail::TailArgs),
    /// Send at a steady rate for a while, with demo faults, and print a summary.
    Load(load::LoadArgs),
    /// Print a trace as a tree, read from Tempo (no NATS needed).
    Trace(trace::TraceArgs),
    /// Terminal trace explorer: a room's live messages with their fate, recent traces
    /// (TraceQL), a live waterfall.
    ///
    /// Keys: q (or Esc) quit; T messages <-> traces; j/k or arrows move; Enter open the
    /// trace as a waterfall; s the selected span's attributes and events; r related (the
    /// trace's messages, attempts and dead letter); t copy the trace id (OSC 52); o open
    /// it in Grafana; / type a TraceQL query; Ctrl+T filter by a trace id; e errors only;
    /// f cycle the service; d cycle "slower than"; c clear the filters. Esc closes the
    /// waterfall or a prompt.
    Tui(tui::TuiArgs),
}

impl Cli {
    /// The terminal UI owns the screen: no log lines on it.
    pub fn is_tui(&self) -> bool {
        matches!(self.command, Command::Tui(_))
    }
}

/// Runs one command.
pub async fn run(cli: Cli) -> Result<(), CliError> {
    match &cli.command {
        Command::Login(args) => return login::login(&cli, args).await,
        Command::Trace(args) => return trace::trace(args, cli.json).await,
        _ => {}
    }
    let tokens = login::TokenSource::new(&cli).await;
    if let Command::Tui(args) = &cli.command {
        // Without NATS the TUI still explores traces: the status line says why.
        let connection = async { connect::connect(&cli, tokens?).await.map(|(client, _)| client) };
        return tui::tui(connection.await, &cli, args).await;
    }
    let (client, server_errors) = connect::connect(&cli, tokens?).await?;
    let out = output::Output::new(cli.json, &cli.grafana_url);
    let result = match &cli.command {
        Command::Send(args) => send::send(&client, &cli, args, &out).await,
        Command::History(args) => history::history(&client, &cli, args, &out).await,
        Command::Tail(args) => tail::tail(&client, &cli, args, &out).await,
        Command::Load(args) => load::load(&client, &cli, args).await,
        Command::Login(_) | Command::Trace(_) | Command::Tui(_) => Ok(()),
    };
    let _ = client.flush().await;
    // A refused publish or subscribe only shows up as a timeout; say what really happened.
    match (result, server_errors.permission_violation()) {
        (Err(CliError::Timeout(..) | CliError::NoResponders(..)), Some(violation)) => {
            Err(CliError::PermissionDenied(violation))
        }
        (result, _) => result,
    }
}

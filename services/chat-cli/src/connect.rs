//! The NATS connection of the CLI, and how its failures read.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_nats::ConnectErrorKind;

use crate::Cli;
use crate::error::CliError;
use crate::login::TokenSource;

/// Errors the server sent asynchronously (e.g. a permissions violation on publish).
#[derive(Debug, Clone, Default)]
pub(crate) struct ServerErrors(Arc<Mutex<Vec<String>>>);

impl ServerErrors {
    /// The first permissions violation the server reported, if any.
    pub(crate) fn permission_violation(&self) -> Option<String> {
        let errors = self.0.lock().ok()?;
        errors.iter().find(|e| e.to_lowercase().contains("permissions violation")).cloned()
    }
}

/// Connects with a token from `tokens`, asked again for every reconnect (a session
/// outlives its first token). A refused login is tried once more after a second: a
/// token signed by a key the callout has not fetched yet is refused at once and
/// accepted once the callout's background refresh has it.
pub(crate) async fn connect(cli: &Cli, tokens: TokenSource) -> Result<(async_nats::Client, ServerErrors), CliError> {
    match connect_once(cli, tokens.clone()).await {
        Err(CliError::AuthRefused(_)) => {
            tokio::time::sleep(Duration::from_secs(1)).await;
            connect_once(cli, tokens).await
        }
        result => result,
    }
}

async fn connect_once(cli: &Cli, tokens: TokenSource) -> Result<(async_nats::Client, ServerErrors), CliError> {
    let errors = ServerErrors::default();
    let sink = errors.clone();
    // Replies come to the user's own inbox: the auth callout lets a chat user subscribe
    // to `_INBOX.chat.<user>.>` and to no one else's.
    let user = chat_protocol::validate_name("user", &cli.user).map_err(|e| CliError::Invalid(e.to_string()))?;
    let has_token = tokens.current().await?.is_some();
    let options = if has_token {
        // The callback's future must be Sync: the token request runs on its own task.
        async_nats::ConnectOptions::with_auth_callback(move |_nonce| {
            let tokens = tokens.clone();
            async move {
                let token = tokio::spawn(async move { tokens.current().await })
                    .await
                    .map_err(async_nats::AuthError::new)?
                    .map_err(async_nats::AuthError::new)?;
                let mut auth = async_nats::Auth::new();
                auth.token = token.map(|t| t.expose().to_owned());
                Ok(auth)
            }
        })
    } else {
        async_nats::ConnectOptions::new()
    };
    // A cluster's nodes, comma separated (async-nats takes one string as one address).
    let servers: Vec<&str> = cli.nats_url.split(',').map(str::trim).collect();
    let options = options
        .name("chat-cli")
        .custom_inbox_prefix(chat_protocol::chat_inbox_prefix(user))
        .connection_timeout(cli.timeout)
        .request_timeout(Some(cli.timeout))
        // A few attempts per listed server: a node that goes away is replaced by another.
        .max_reconnects(3 * servers.len())
        .event_callback(move |event| {
            let sink = sink.clone();
            async move {
                if let async_nats::Event::ServerError(error) = event
                    && let Ok(mut errors) = sink.0.lock()
                {
                    errors.push(error.to_string());
                }
            }
        });
    let client = options.connect(servers).await.map_err(|e| match e.kind() {
        ConnectErrorKind::AuthorizationViolation | ConnectErrorKind::Authentication => {
            CliError::AuthRefused(e.to_string())
        }
        _ => CliError::Unreachable { url: telemetry::policy::redact_url(&cli.nats_url), reason: e.to_string() },
    })?;
    Ok((client, errors))
}

//! The NATS connection of the CLI, and the CLI's errors with their exit codes.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_nats::ConnectErrorKind;

use crate::Cli;
use crate::login::TokenSource;

/// What went wrong, in words a user can act on.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// NATS is not reachable.
    #[error("cannot reach NATS at {url}: {reason} (is it running? `make up` starts it)")]
    Unreachable {
        /// The URL tried.
        url: String,
        /// What the client saw.
        reason: String,
    },
    /// Keycloak refused the user name and password (or the refresh token).
    #[error("Keycloak refused the login of {user} ({status}): wrong user name or password?")]
    LoginRefused {
        /// The login name.
        user: String,
        /// Keycloak's HTTP status.
        status: String,
    },
    /// The server (or its auth callout) refused the credentials.
    #[error("NATS refused the login: {0} (is your token valid and not expired? try `chat-cli login`)")]
    AuthRefused(String),
    /// Invalid room or user name, or other bad input.
    #[error("{0}")]
    Invalid(String),
    /// The server refused a publish or subscribe (permissions).
    #[error("permission denied: {0}")]
    PermissionDenied(String),
    /// Nobody serves the subject.
    #[error("no service answers {0} (is history-service running?)")]
    NoResponders(String),
    /// No answer in time.
    #[error("{0} timed out after {1:?}")]
    Timeout(String, Duration),
    /// The service answered with an error.
    #[error("{service} answered {code}: {message}")]
    Service {
        /// Which request.
        service: String,
        /// `Nats-Service-Error-Code`.
        code: String,
        /// `Nats-Service-Error`.
        message: String,
    },
    /// The stream already held a message with this `Nats-Msg-Id` when this one first
    /// arrived, so it dropped this one as a duplicate: not stored.
    #[error("{0}: not stored, the stream already holds a message with Nats-Msg-Id {1:?}")]
    Duplicate(String, String),
    /// Any other NATS or JetStream failure.
    #[error("{0}")]
    Nats(String),
}

impl CliError {
    /// 1 for failures of the operation, 2 for bad input, 3 for refused credentials or permissions.
    pub fn exit_code(&self) -> u8 {
        match self {
            Self::Invalid(_) => 2,
            Self::AuthRefused(_) | Self::LoginRefused { .. } | Self::PermissionDenied(_) => 3,
            _ => 1,
        }
    }
}

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
        _ => CliError::Unreachable { url: telemetry::redact_url(&cli.nats_url), reason: e.to_string() },
    })?;
    Ok((client, errors))
}

//! The CLI's errors, each in words a user can act on, and their exit codes.

use std::time::Duration;

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
    /// An HTTP exchange (Keycloak's token endpoint, Tempo) failed or answered nonsense.
    #[error("{0}")]
    Http(String),
    /// A local file could not be written.
    #[error("cannot write {path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
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

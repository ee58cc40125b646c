//! Getting and keeping an access token: OIDC password grant against Keycloak (realm
//! `chat`, public client `chat-cli`), cached with its refresh token in the user's cache
//! dir with owner-only permissions, and refreshed for long sessions.
//!
//! A token given with `--token`/`CHAT_TOKEN` always wins and is used as it is. Otherwise
//! [`TokenSource::current`] hands out the token for every (re)connect: when it expires
//! within [`REFRESH_MARGIN`] it is refreshed first (refresh-token grant, else the password
//! grant when a password is given). NATS closes a connection when its user JWT expires
//! (the callout gives the JWT the token's `exp`); the client reconnects with the fresh
//! token and its subscriptions resume, so `tail` and `load` outlive their first token.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use telemetry::policy::Secret;

use crate::{Cli, CliError};

/// A token expiring sooner than this is refreshed before it is used.
pub(crate) const REFRESH_MARGIN: Duration = Duration::from_secs(30);

/// Arguments of `login`.
#[derive(Debug, clap::Args)]
pub struct LoginArgs {
    /// Print the token to stdout as well (for scripts; it is a credential).
    #[arg(long)]
    pub print: bool,
}

/// What the token endpoint answers, and what the cache holds.
#[derive(Clone, Serialize, Deserialize)]
struct Tokens {
    access_token: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    refresh_token: Option<String>,
}

/// `$XDG_CACHE_HOME/chat-cli/token` (or `~/.cache/chat-cli/token`).
fn cache_path() -> Option<PathBuf> {
    let base = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))?;
    Some(base.join("chat-cli").join("token"))
}

/// The cached tokens: JSON, or a bare access token (older caches).
fn read_cache() -> Option<Tokens> {
    let text = std::fs::read_to_string(cache_path()?).ok()?;
    let text = text.trim();
    serde_json::from_str(text)
        .ok()
        .or_else(|| (!text.is_empty()).then(|| Tokens { access_token: text.to_owned(), refresh_token: None }))
}

fn write_cache(tokens: &Tokens) -> Result<PathBuf, CliError> {
    let path =
        cache_path().ok_or_else(|| CliError::Invalid("no cache directory (set HOME or XDG_CACHE_HOME)".into()))?;
    let text = serde_json::to_string(tokens).map_err(|e| CliError::Invalid(e.to_string()))?;
    write_private(&path, &text).map_err(|source| CliError::Io { path: path.display().to_string(), source })?;
    Ok(path)
}

/// Where tokens come from for a session.
#[derive(Clone)]
pub(crate) struct TokenSource {
    inner: Arc<Inner>,
}

struct Inner {
    endpoint: Endpoint,
    password: Option<Secret>,
    /// `--token`: used as given, never refreshed.
    fixed: bool,
    /// Whether the tokens came from (and go back to) the cache.
    cached: bool,
    tokens: Mutex<Option<Tokens>>,
}

/// The token endpoint and who logs in.
#[derive(Clone)]
struct Endpoint {
    url: String,
    user: String,
    timeout: Duration,
}

impl std::fmt::Debug for TokenSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenSource").field("fixed", &self.inner.fixed).finish_non_exhaustive()
    }
}

impl TokenSource {
    /// `--token`, else a fresh login when a password is given, else the cached tokens.
    pub(crate) async fn new(cli: &Cli) -> Result<Self, CliError> {
        let endpoint = Endpoint { url: cli.oidc_token_url.clone(), user: cli.user.clone(), timeout: cli.timeout };
        let (tokens, fixed, cached) = if let Some(token) = &cli.token {
            (Some(Tokens { access_token: token.expose().to_owned(), refresh_token: None }), true, false)
        } else if let Some(password) = &cli.password {
            (Some(endpoint.password_grant(password).await?), false, false)
        } else {
            (read_cache(), false, true)
        };
        let inner = Inner { endpoint, password: cli.password.clone(), fixed, cached, tokens: Mutex::new(tokens) };
        Ok(Self { inner: Arc::new(inner) })
    }

    /// The token to connect with now (refreshed first if it is about to expire); `None`
    /// when there is none at all.
    pub(crate) async fn current(&self) -> Result<Option<Secret>, CliError> {
        let tokens = self.inner.tokens.lock().ok().and_then(|t| t.clone());
        let Some(tokens) = tokens else { return Ok(None) };
        if self.inner.fixed || !expires_within(&tokens.access_token, REFRESH_MARGIN) {
            return Ok(Some(Secret::from(tokens.access_token)));
        }
        let fresh = match (&tokens.refresh_token, &self.inner.password) {
            (Some(refresh), _) => self.inner.endpoint.refresh_grant(refresh).await,
            (None, Some(password)) => self.inner.endpoint.password_grant(password).await,
            (None, None) => return Ok(Some(Secret::from(tokens.access_token))),
        };
        let fresh = match (fresh, &self.inner.password) {
            (Ok(fresh), _) => fresh,
            // An expired refresh token: log in again if we can.
            (Err(_), Some(password)) => self.inner.endpoint.password_grant(password).await?,
            (Err(error), None) => return Err(error),
        };
        if self.inner.cached {
            let _ = write_cache(&fresh);
        }
        if let Ok(mut current) = self.inner.tokens.lock() {
            *current = Some(fresh.clone());
        }
        Ok(Some(Secret::from(fresh.access_token)))
    }
}

impl Endpoint {
    async fn password_grant(&self, password: &Secret) -> Result<Tokens, CliError> {
        let form = [
            ("grant_type", "password"),
            ("client_id", "chat-cli"),
            ("username", self.user.as_str()),
            ("password", password.expose()),
        ];
        self.post(&form).await
    }

    async fn refresh_grant(&self, refresh_token: &str) -> Result<Tokens, CliError> {
        let form = [("grant_type", "refresh_token"), ("client_id", "chat-cli"), ("refresh_token", refresh_token)];
        self.post(&form).await
    }

    async fn post(&self, form: &[(&str, &str)]) -> Result<Tokens, CliError> {
        let shown = telemetry::policy::redact_url(&self.url);
        let response = reqwest::Client::new()
            .post(&self.url)
            .form(form)
            .timeout(self.timeout)
            .send()
            .await
            .map_err(|e| CliError::Unreachable { url: shown, reason: e.without_url().to_string() })?;
        if !response.status().is_success() {
            return Err(CliError::LoginRefused { user: self.user.clone(), status: response.status().to_string() });
        }
        response.json().await.map_err(|e| CliError::Http(format!("unreadable token response: {}", e.without_url())))
    }
}

/// Whether the token's `exp` (read without verifying: the server verifies) is within
/// `margin`; a token whose `exp` cannot be read counts as not expiring.
fn expires_within(token: &str, margin: Duration) -> bool {
    let exp = token
        .split('.')
        .nth(1)
        .and_then(|payload| data_encoding::BASE64URL_NOPAD.decode(payload.trim_end_matches('=').as_bytes()).ok())
        .and_then(|bytes| serde_json::from_slice::<serde_json::Value>(&bytes).ok())
        .and_then(|claims| claims["exp"].as_u64());
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_secs();
    exp.is_some_and(|exp| exp <= now + margin.as_secs())
}

/// `chat-cli login`: fetch and cache a token (and its refresh token).
pub(crate) async fn login(cli: &Cli, args: &LoginArgs) -> Result<(), CliError> {
    let password = cli
        .password
        .as_ref()
        .ok_or_else(|| CliError::Invalid("no password: set CHAT_PASSWORD or --password".into()))?;
    let endpoint = Endpoint { url: cli.oidc_token_url.clone(), user: cli.user.clone(), timeout: cli.timeout };
    let tokens = endpoint.password_grant(password).await?;
    let path = write_cache(&tokens)?;
    eprintln!("logged in as {}; token cached in {}", cli.user, path.display());
    if args.print {
        println!("{}", tokens.access_token);
    }
    Ok(())
}

fn write_private(path: &std::path::Path, content: &str) -> std::io::Result<()> {
    use std::io::Write as _;
    #[cfg(unix)]
    use std::os::unix::fs::OpenOptionsExt as _;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    options.mode(0o600);
    options.open(path)?.write_all(content.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn token_expiring_in(seconds: i64) -> String {
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_secs();
        let claims = serde_json::json!({ "exp": now as i64 + seconds });
        let payload = data_encoding::BASE64URL_NOPAD.encode(claims.to_string().as_bytes());
        format!("eyJhbGciOiJSUzI1NiJ9.{payload}.sig")
    }

    #[test]
    fn tokens_near_their_exp_are_refreshed_and_unreadable_ones_are_left_alone() {
        assert!(expires_within(&token_expiring_in(10), REFRESH_MARGIN));
        assert!(expires_within(&token_expiring_in(-10), REFRESH_MARGIN));
        assert!(!expires_within(&token_expiring_in(3600), REFRESH_MARGIN));
        assert!(!expires_within("not-a-jwt", REFRESH_MARGIN));
    }
}

//! Getting an access token: OIDC password grant against Keycloak (realm `chat`, public
//! client `chat-cli`), cached in the user's cache dir with owner-only permissions.
//! A token given with `--token`/`CHAT_TOKEN` always wins over the cache.

use std::path::PathBuf;

use serde::Deserialize;
use telemetry::Secret;

use crate::{Cli, CliError};

/// Arguments of `login`.
#[derive(Debug, clap::Args)]
pub struct LoginArgs {
    /// Print the token to stdout as well (for scripts; it is a credential).
    #[arg(long)]
    pub print: bool,
}

#[derive(Deserialize)]
struct TokenResponse {
    access_token: String,
}

/// `$XDG_CACHE_HOME/chat-cli/token` (or `~/.cache/chat-cli/token`).
fn cache_path() -> Option<PathBuf> {
    let base = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))?;
    Some(base.join("chat-cli").join("token"))
}

/// Password grant for `cli.user` with `cli.password`.
pub(crate) async fn fetch_token(cli: &Cli) -> Result<Secret, CliError> {
    let password = cli
        .password
        .as_ref()
        .ok_or_else(|| CliError::Invalid("no password: set CHAT_PASSWORD or --password".into()))?;
    let form = [
        ("grant_type", "password"),
        ("client_id", "chat-cli"),
        ("username", cli.user.as_str()),
        ("password", password.expose()),
    ];
    let response =
        reqwest::Client::new().post(&cli.oidc_token_url).form(&form).timeout(cli.timeout).send().await.map_err(
            |e| CliError::Unreachable { url: cli.oidc_token_url.clone(), reason: e.without_url().to_string() },
        )?;
    if !response.status().is_success() {
        return Err(CliError::AuthRefused(format!(
            "Keycloak answered {} to the login of {}",
            response.status(),
            cli.user
        )));
    }
    let token: TokenResponse =
        response.json().await.map_err(|e| CliError::Nats(format!("unreadable token response: {e}")))?;
    Ok(Secret::from(token.access_token))
}

/// `chat-cli login`: fetch and cache a token.
pub(crate) async fn login(cli: &Cli, args: &LoginArgs) -> Result<(), CliError> {
    let token = fetch_token(cli).await?;
    let path =
        cache_path().ok_or_else(|| CliError::Invalid("no cache directory (set HOME or XDG_CACHE_HOME)".into()))?;
    write_private(&path, token.expose())
        .map_err(|e| CliError::Invalid(format!("cannot cache the token in {}: {e}", path.display())))?;
    eprintln!("logged in as {}; token cached in {}", cli.user, path.display());
    if args.print {
        println!("{}", token.expose());
    }
    Ok(())
}

/// The token to connect with: `--token`, else a fresh login when a password is given,
/// else the cached one.
pub(crate) async fn connect_token(cli: &Cli) -> Result<Option<Secret>, CliError> {
    if let Some(token) = &cli.token {
        return Ok(Some(token.clone()));
    }
    if cli.password.is_some() {
        return fetch_token(cli).await.map(Some);
    }
    Ok(cache_path().and_then(|p| std::fs::read_to_string(p).ok()).map(|t| Secret::from(t.trim().to_owned())))
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

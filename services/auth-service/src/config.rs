//! Settings, from flags or environment variables (`auth-service --help` lists them).

use std::path::PathBuf;
use std::time::Duration;

use service_kit::NatsArgs;
use service_kit::health::HealthArgs;
use telemetry::policy::Secret;

/// auth-service's own subcommand (besides `healthcheck`).
#[derive(Debug, Clone, Copy, clap::Subcommand)]
pub enum Command {
    /// Print fresh key material and passwords as .env lines (used by `make keys`).
    Keygen,
}

/// Service settings.
#[derive(Debug, Clone, clap::Args)]
pub struct Config {
    /// NATS connection (as the `auth` user, listed in auth_callout.auth_users).
    #[command(flatten)]
    pub nats: NatsArgs,
    /// Seed of the account key that signs user JWTs (its public key is auth_callout.issuer).
    #[arg(long, env = "AUTH_ACCOUNT_SEED", hide_env_values = true)]
    pub account_seed: Option<Secret>,
    /// Seed of the curve key the server encrypts requests to (auth_callout.xkey); optional.
    #[arg(long, env = "AUTH_XKEY_SEED", hide_env_values = true)]
    pub xkey_seed: Option<Secret>,
    /// Accepted token issuers (`iss`), comma separated; the first is used for discovery.
    #[arg(long, env = "OIDC_ISSUER", value_delimiter = ',', default_value = "http://localhost:8080/realms/chat")]
    pub oidc_issuer: Vec<String>,
    /// Required token audience (`aud`).
    #[arg(long, env = "OIDC_AUDIENCE", default_value = "chat-nats")]
    pub oidc_audience: String,
    /// JWKS URL; default: discovered from the first issuer's openid-configuration.
    #[arg(long, env = "OIDC_JWKS_URL")]
    pub oidc_jwks_url: Option<String>,
    /// Clock skew tolerated on nbf (a token is never accepted past its exp: the user JWT
    /// would already be expired).
    #[arg(long, env = "TOKEN_LEEWAY", default_value = "30s", value_parser = humantime::parse_duration)]
    pub token_leeway: Duration,
    /// Least time between two JWKS fetches (a login with an unknown kid asks for one in
    /// the background, and is refused at once).
    #[arg(long, env = "JWKS_MIN_REFRESH", default_value = "2s", value_parser = humantime::parse_duration)]
    pub jwks_min_refresh: Duration,
    /// Longest time between two JWKS fetches: keys the issuer removed stop being trusted
    /// within this time (or the response's Cache-Control max-age, if shorter).
    #[arg(long, env = "JWKS_REFRESH_INTERVAL", default_value = "5m", value_parser = humantime::parse_duration)]
    pub jwks_refresh_interval: Duration,
    /// HTTP timeout of one JWKS fetch (in the background; never on a login's path).
    #[arg(long, env = "JWKS_FETCH_TIMEOUT", default_value = "2s", value_parser = humantime::parse_duration)]
    pub jwks_fetch_timeout: Duration,
    /// Role -> permission map (JSON); default: the built-in permissions.json.
    #[arg(long, env = "PERMISSIONS_FILE")]
    pub permissions_file: Option<PathBuf>,
    /// Account the users are placed in.
    #[arg(long, env = "TARGET_ACCOUNT", default_value = "CHAT")]
    pub target_account: String,
    /// Health endpoints.
    #[command(flatten)]
    pub health: HealthArgs,
}

impl service_kit::ServiceConfig for Config {
    fn health(&self) -> &HealthArgs {
        &self.health
    }
}

//! OIDC access-token validation: signature from the issuer's JWKS (cached, refetched
//! once on an unknown `kid` and never more often than `JWKS_MIN_REFRESH`), `iss`, `aud`,
//! `exp`/`nbf` with leeway. Only asymmetric algorithms are accepted (`none` and HMAC
//! are refused: a public key must never be usable as a shared secret).

use std::collections::HashMap;
use std::time::{Duration, Instant};

use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;
use telemetry::record_failure;
use tokio::sync::{Mutex, RwLock};
use tracing::Instrument as _;
use tracing::field::Empty;

/// Why a token was refused; [`Denial::reason`] is the low-cardinality metric label and
/// the message the NATS server logs. Never contains the token.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub(crate) enum Denial {
    #[error("no token")]
    MissingToken,
    #[error("malformed token")]
    Malformed,
    #[error("unsupported token algorithm")]
    UnsupportedAlgorithm,
    #[error("unknown signing key")]
    UnknownKey,
    #[error("bad token signature")]
    BadSignature,
    #[error("token expired")]
    Expired,
    #[error("token not yet valid")]
    NotYetValid,
    #[error("wrong token issuer")]
    WrongIssuer,
    #[error("wrong token audience")]
    WrongAudience,
    #[error("no role grants chat access")]
    NoRole,
    #[error("user name is not a valid subject token")]
    InvalidUser,
    #[error("signing keys unavailable")]
    KeysUnavailable,
}

impl Denial {
    pub(crate) fn reason(self) -> &'static str {
        match self {
            Self::MissingToken => "missing_token",
            Self::Malformed => "malformed_token",
            Self::UnsupportedAlgorithm => "unsupported_alg",
            Self::UnknownKey => "unknown_kid",
            Self::BadSignature => "bad_signature",
            Self::Expired => "expired",
            Self::NotYetValid => "not_yet_valid",
            Self::WrongIssuer => "wrong_issuer",
            Self::WrongAudience => "wrong_audience",
            Self::NoRole => "no_role",
            Self::InvalidUser => "invalid_user",
            Self::KeysUnavailable => "jwks_unavailable",
        }
    }

    /// `error` for failures of ours, `denied` for the client's.
    pub(crate) fn result(self) -> &'static str {
        match self {
            Self::KeysUnavailable => "error",
            _ => "denied",
        }
    }
}

/// The claims we use from a Keycloak access token.
#[derive(Debug, Clone, Deserialize)]
pub(crate) struct AccessClaims {
    pub(crate) exp: u64,
    #[serde(default)]
    pub(crate) preferred_username: Option<String>,
    #[serde(default)]
    pub(crate) realm_access: RealmAccess,
}

/// `realm_access.roles`.
#[derive(Debug, Clone, Default, Deserialize)]
pub(crate) struct RealmAccess {
    #[serde(default)]
    pub(crate) roles: Vec<String>,
}

/// Where the keys come from and what a token must say.
#[derive(Debug, Clone)]
pub(crate) struct OidcSettings {
    pub(crate) issuers: Vec<String>,
    pub(crate) audience: String,
    pub(crate) jwks_url: Option<String>,
    pub(crate) leeway: Duration,
    pub(crate) min_refresh: Duration,
}

#[derive(Debug, Default)]
struct Keys {
    by_kid: HashMap<String, (DecodingKey, Algorithm)>,
    fetched_at: Option<Instant>,
}

/// Validates access tokens; shared by all requests.
#[derive(Debug)]
pub(crate) struct Validator {
    settings: OidcSettings,
    http: reqwest::Client,
    keys: RwLock<Keys>,
    refresh: Mutex<()>,
}

const ACCEPTED: &[Algorithm] = &[
    Algorithm::RS256,
    Algorithm::RS384,
    Algorithm::RS512,
    Algorithm::PS256,
    Algorithm::PS384,
    Algorithm::PS512,
    Algorithm::ES256,
    Algorithm::ES384,
];

impl Validator {
    pub(crate) fn new(settings: OidcSettings) -> Self {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(5))
            .build()
            .unwrap_or_else(|_| reqwest::Client::new());
        Self { settings, http, keys: RwLock::default(), refresh: Mutex::new(()) }
    }

    /// Whether the JWKS has been loaded at least once (readiness).
    pub(crate) async fn is_loaded(&self) -> bool {
        self.keys.read().await.fetched_at.is_some()
    }

    /// Loads the JWKS now (startup and readiness).
    pub(crate) async fn load(&self) -> Result<(), String> {
        self.refresh_keys(true).await
    }

    pub(crate) async fn validate(&self, token: &str) -> Result<AccessClaims, Denial> {
        if token.trim().is_empty() {
            return Err(Denial::MissingToken);
        }
        let header = jsonwebtoken::decode_header(token).map_err(|_| {
            // `alg: none` and other unknown algorithms fail header decoding.
            if token_alg(token).is_some_and(|alg| !alg.is_empty()) {
                Denial::UnsupportedAlgorithm
            } else {
                Denial::Malformed
            }
        })?;
        if !ACCEPTED.contains(&header.alg) {
            return Err(Denial::UnsupportedAlgorithm);
        }
        let kid = header.kid.ok_or(Denial::Malformed)?;
        let key = match self.key(&kid).await {
            Some(key) => key,
            None => {
                // Unknown kid: maybe the issuer rotated its keys. One refetch, rate limited.
                if self.refresh_keys(false).await.is_err() && !self.is_loaded().await {
                    return Err(Denial::KeysUnavailable);
                }
                self.key(&kid).await.ok_or(Denial::UnknownKey)?
            }
        };
        if key.1 != header.alg {
            return Err(Denial::UnsupportedAlgorithm);
        }
        let mut validation = Validation::new(header.alg);
        validation.set_issuer(&self.settings.issuers);
        validation.set_audience(&[&self.settings.audience]);
        validation.leeway = self.settings.leeway.as_secs();
        validation.validate_nbf = true;
        validation.set_required_spec_claims(&["exp", "iss", "aud"]);
        jsonwebtoken::decode::<AccessClaims>(token, &key.0, &validation).map(|data| data.claims).map_err(|e| {
            use jsonwebtoken::errors::ErrorKind;
            match e.kind() {
                ErrorKind::ExpiredSignature => Denial::Expired,
                ErrorKind::ImmatureSignature => Denial::NotYetValid,
                ErrorKind::InvalidIssuer => Denial::WrongIssuer,
                ErrorKind::InvalidAudience => Denial::WrongAudience,
                ErrorKind::InvalidSignature => Denial::BadSignature,
                _ => Denial::Malformed,
            }
        })
    }

    async fn key(&self, kid: &str) -> Option<(DecodingKey, Algorithm)> {
        self.keys.read().await.by_kid.get(kid).cloned()
    }

    /// Fetches the JWKS unless it was fetched less than `min_refresh` ago (`force` skips
    /// that check). Concurrent callers wait for one fetch.
    async fn refresh_keys(&self, force: bool) -> Result<(), String> {
        let _one_at_a_time = self.refresh.lock().await;
        let recent = self.keys.read().await.fetched_at.is_some_and(|at| at.elapsed() < self.settings.min_refresh);
        if recent && !force {
            return Ok(());
        }
        let url = self.jwks_url().await?;
        let set: JwkSet = self.get_json(&url).await?;
        let mut by_kid = HashMap::new();
        for jwk in &set.keys {
            let (Some(kid), Ok(key)) = (jwk.common.key_id.clone(), DecodingKey::from_jwk(jwk)) else { continue };
            let alg = jwk
                .common
                .key_algorithm
                .and_then(|a| a.to_string().parse::<Algorithm>().ok())
                .unwrap_or(Algorithm::RS256);
            by_kid.insert(kid, (key, alg));
        }
        tracing::info!(keys = by_kid.len(), "JWKS loaded");
        *self.keys.write().await = Keys { by_kid, fetched_at: Some(Instant::now()) };
        Ok(())
    }

    async fn jwks_url(&self) -> Result<String, String> {
        if let Some(url) = &self.settings.jwks_url {
            return Ok(url.clone());
        }
        #[derive(Deserialize)]
        struct Discovery {
            jwks_uri: String,
        }
        let issuer = self.settings.issuers.first().ok_or("no OIDC issuer configured")?;
        let url = format!("{}/.well-known/openid-configuration", issuer.trim_end_matches('/'));
        Ok(self.get_json::<Discovery>(&url).await?.jwks_uri)
    }

    /// GET with an HTTP CLIENT span (`GET`), as the HTTP semantic conventions name it.
    async fn get_json<T: serde::de::DeserializeOwned>(&self, url: &str) -> Result<T, String> {
        let parsed = reqwest::Url::parse(url).map_err(|e| format!("bad URL {url}: {e}"))?;
        let span = tracing::info_span!(
            "http",
            otel.name = "GET",
            otel.kind = "client",
            otel.status_code = Empty,
            otel.status_description = Empty,
            error.type = Empty,
            http.request.method = "GET",
            url.full = url,
            server.address = parsed.host_str().unwrap_or_default(),
            server.port = i64::from(parsed.port_or_known_default().unwrap_or_default()),
            http.response.status_code = Empty,
        );
        let result = async {
            let response = self.http.get(parsed).send().await.map_err(|e| ("transport", e.to_string()))?;
            tracing::Span::current().record("http.response.status_code", i64::from(response.status().as_u16()));
            let response = response.error_for_status().map_err(|e| ("http_status", e.to_string()))?;
            response.json::<T>().await.map_err(|e| ("decode", e.to_string()))
        }
        .instrument(span.clone())
        .await;
        result.map_err(|(error_type, message)| {
            record_failure(&span, error_type, &message);
            format!("GET {url}: {message}")
        })
    }
}

/// The `alg` of a token's header, if the header is readable JSON at all.
fn token_alg(token: &str) -> Option<String> {
    let header = token.split('.').next()?;
    let bytes = data_encoding::BASE64URL_NOPAD.decode(header.trim_end_matches('=').as_bytes()).ok()?;
    let value: serde_json::Value = serde_json::from_slice(&bytes).ok()?;
    value["alg"].as_str().map(str::to_owned)
}

//! OIDC access-token validation: signature from the issuer's keys (the [`KeySet`] kept
//! fresh in the background; a login never waits for a fetch), `iss`, `aud`, `nbf` with
//! leeway and `exp` without. Only asymmetric algorithms are accepted (`none` and HMAC
//! are refused: a public key must never be usable as a shared secret).

use std::sync::Arc;
use std::time::Duration;

use jsonwebtoken::{Algorithm, Validation};
use serde::Deserialize;

use crate::denial::Denial;
use crate::jwks::KeySet;
use crate::nats_jwt::now;

/// The claims we use from a Keycloak access token.
#[derive(Debug, Clone, Deserialize)]
pub(crate) struct AccessClaims {
    pub(crate) exp: u64,
    /// When it was issued: a token issued in the future (past the leeway) is refused.
    #[serde(default)]
    pub(crate) iat: Option<u64>,
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

/// What a token must say.
#[derive(Debug, Clone)]
pub(crate) struct OidcSettings {
    pub(crate) issuers: Vec<String>,
    pub(crate) audience: String,
    /// Clock skew tolerated on `nbf` (never on `exp`: see [`Validator::validate`]).
    pub(crate) leeway: Duration,
}

/// Validates access tokens against the issuer's keys; shared by all requests.
#[derive(Debug)]
pub(crate) struct Validator {
    settings: OidcSettings,
    keys: Arc<KeySet>,
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
    pub(crate) fn new(settings: OidcSettings, keys: Arc<KeySet>) -> Self {
        Self { settings, keys }
    }

    /// Whether the JWKS has been loaded at least once (readiness).
    pub(crate) fn is_loaded(&self) -> bool {
        self.keys.is_loaded()
    }

    /// Checks a token without waiting on anything: an unknown `kid` is refused at once
    /// and asks for a JWKS refresh in the background. A token is accepted only before its
    /// `exp`, with no leeway: the user JWT expires when the token does, and NATS refuses a
    /// user JWT that is already expired.
    pub(crate) fn validate(&self, token: &str) -> Result<AccessClaims, Denial> {
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
        let Some((key, alg)) = self.keys.get(&kid) else {
            // Maybe the issuer rotated its keys: refresh in the background, refuse now.
            self.keys.request_refresh();
            return Err(if self.keys.is_loaded() { Denial::UnknownKey } else { Denial::KeysUnavailable });
        };
        if alg != header.alg {
            return Err(Denial::UnsupportedAlgorithm);
        }
        let mut validation = Validation::new(header.alg);
        validation.set_issuer(&self.settings.issuers);
        validation.set_audience(&[&self.settings.audience]);
        validation.leeway = self.settings.leeway.as_secs();
        validation.validate_nbf = true;
        validation.validate_exp = false;
        validation.set_required_spec_claims(&["exp", "iss", "aud"]);
        let claims =
            jsonwebtoken::decode::<AccessClaims>(token, &key, &validation).map(|data| data.claims).map_err(|e| {
                use jsonwebtoken::errors::ErrorKind;
                match e.kind() {
                    ErrorKind::ImmatureSignature => Denial::NotYetValid,
                    ErrorKind::InvalidIssuer => Denial::WrongIssuer,
                    ErrorKind::InvalidAudience => Denial::WrongAudience,
                    ErrorKind::InvalidSignature => Denial::BadSignature,
                    _ => Denial::Malformed,
                }
            })?;
        if claims.exp <= now() {
            return Err(Denial::Expired);
        }
        if claims.iat.is_some_and(|iat| iat > now() + self.settings.leeway.as_secs()) {
            return Err(Denial::NotYetValid);
        }
        Ok(claims)
    }
}

/// The `alg` of a token's header, if the header is readable JSON at all.
fn token_alg(token: &str) -> Option<String> {
    let header = token.split('.').next()?;
    let bytes = data_encoding::BASE64URL_NOPAD.decode(header.trim_end_matches('=').as_bytes()).ok()?;
    let value: serde_json::Value = serde_json::from_slice(&bytes).ok()?;
    value["alg"].as_str().map(str::to_owned)
}

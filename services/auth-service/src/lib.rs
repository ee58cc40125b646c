//! auth-service: the NATS auth callout. The server sends every client connection (except
//! the service users in `auth_users`) to `$SYS.REQ.USER.AUTH`; this service validates the
//! connect token as an OIDC access token, maps the user's realm roles to NATS
//! permissions and answers with a user JWT signed by the callout account key.
//!
//! Layout: [`config`], [`keygen`] (fresh keys for `.env`), `nats_jwt` (NATS JWT signing
//! and verification), `jwks` (the issuer's keys, refreshed in the background), `oidc`
//! (token validation), `denial` (why a login is refused), `permissions` (role map),
//! `callout` (one request, traced).

pub mod config;
pub mod keygen;

mod callout;
mod denial;
mod jwks;
mod nats_jwt;
mod oidc;
mod permissions;

pub use config::{Command, Config};
pub use permissions::PermissionsError;

use std::future::Future;
use std::sync::Arc;

use futures::StreamExt as _;
use nkeys::{KeyPair, XKey};

/// Why the service stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A key seed is missing or not a seed of the right kind (the seed is not repeated).
    #[error("{0} is missing or not a valid seed (run `make keys`)")]
    Key(&'static str),
    /// The permissions file is unusable.
    #[error(transparent)]
    Permissions(#[from] PermissionsError),
    /// Could not start (NATS, health endpoints).
    #[error(transparent)]
    Serve(#[from] service_kit::ServeError),
    /// Could not subscribe to the callout subject.
    #[error("cannot subscribe to the callout subject: {0}")]
    Subscribe(#[from] async_nats::SubscribeError),
}

/// Requests answered at the same time (a JWKS refetch must not stall other clients).
const CONCURRENT_REQUESTS: usize = 32;

/// Serves the callout until `shutdown` completes.
pub async fn run(config: Config, shutdown: impl Future<Output = ()> + Send + 'static) -> Result<(), Error> {
    let account = config
        .account_seed
        .as_ref()
        .and_then(|s| KeyPair::from_seed(s.expose()).ok())
        .filter(|k| k.public_key().starts_with('A'))
        .ok_or(Error::Key("AUTH_ACCOUNT_SEED"))?;
    let xkey = match &config.xkey_seed {
        Some(seed) => Some(XKey::from_seed(seed.expose()).map_err(|_| Error::Key("AUTH_XKEY_SEED"))?),
        None => None,
    };
    let permissions = permissions::Permissions::load(config.permissions_file.as_deref())?;
    let keys = Arc::new(jwks::KeySet::default());
    let validator = Arc::new(oidc::Validator::new(
        oidc::OidcSettings {
            issuers: config.oidc_issuer.clone(),
            audience: config.oidc_audience.clone(),
            leeway: config.token_leeway,
        },
        Arc::clone(&keys),
    ));
    // Loads the keys now (the issuer may start after us: retried with backoff) and keeps
    // them fresh; readiness waits for the first set.
    let refresher = tokio::spawn(jwks::refresh_forever(
        keys,
        jwks::JwksSettings {
            url: config.oidc_jwks_url.clone(),
            issuer: config.oidc_issuer.first().cloned().unwrap_or_default(),
            min_refresh: config.jwks_min_refresh,
            interval: config.jwks_refresh_interval,
            fetch_timeout: config.jwks_fetch_timeout,
        },
    ));

    let checks = {
        let validator = Arc::clone(&validator);
        move |health: service_kit::health::Health| {
            health.with_check("jwks", move || {
                let loaded = validator.is_loaded();
                async move { if loaded { Ok(()) } else { Err("JWKS not loaded yet".to_owned()) } }
            })
        }
    };
    let spans = telemetry::messaging::Messaging::new("auth-service", &config.nats.peer());
    let result =
        service_kit::serve("auth-service", &config.nats, config.health.health_addr, checks, |client| async move {
            // A queue group: with several instances, each request goes to one of them.
            let requests = client.queue_subscribe(callout::AUTH_SUBJECT, callout::QUEUE_GROUP.into()).await?;
            let callout = Arc::new(callout::Callout::new(
                client,
                account,
                xkey,
                validator,
                permissions,
                config.target_account.clone(),
                spans,
            ));
            let issuers: Vec<String> = config.oidc_issuer.iter().map(|i| telemetry::policy::redact_url(i)).collect();
            tracing::info!(subject = callout::AUTH_SUBJECT, ?issuers, "answering the auth callout");
            requests
                .take_until(shutdown)
                .for_each_concurrent(CONCURRENT_REQUESTS, |message| {
                    let callout = Arc::clone(&callout);
                    async move { callout.handle(message).await }
                })
                .await;
            Ok(())
        })
        .await;
    refresher.abort();
    result
}

/// Entry points for the fuzz targets in `tests/fuzz` (not an API): what the service reads
/// from the outside, without a network.
#[doc(hidden)]
pub mod fuzzing {
    use std::sync::{Arc, OnceLock};

    use nkeys::{KeyPair, XKey};

    struct Keys {
        account: KeyPair,
        service_xkey: XKey,
        server_xkey: String,
        validator: crate::oidc::Validator,
    }

    fn keys() -> &'static Keys {
        static KEYS: OnceLock<Keys> = OnceLock::new();
        KEYS.get_or_init(|| Keys {
            account: KeyPair::new_account(),
            service_xkey: XKey::new(),
            server_xkey: XKey::new().public_key(),
            validator: crate::oidc::Validator::new(
                crate::oidc::OidcSettings {
                    issuers: vec!["http://issuer".to_owned()],
                    audience: "chat-nats".to_owned(),
                    leeway: std::time::Duration::from_secs(30),
                },
                Arc::new(crate::jwks::KeySet::default()),
            ),
        })
    }

    /// Reads an authorization request as the server would send it (sealed to the
    /// service's curve key by a server's, when `sealed`); `true` when it was accepted.
    pub fn callout_request(payload: &[u8], sealed: bool) -> bool {
        let keys = keys();
        let mut headers = async_nats::HeaderMap::new();
        if sealed {
            headers.insert("Nats-Server-Xkey", keys.server_xkey.as_str());
        }
        let message = async_nats::Message {
            subject: "$SYS.REQ.USER.AUTH".into(),
            reply: Some("$SYS._INBOX.fuzz.1".into()),
            payload: bytes::Bytes::copy_from_slice(payload),
            headers: Some(headers),
            status: None,
            description: None,
            length: payload.len(),
        };
        crate::callout::read_request(&message, &keys.account.public_key(), Some(&keys.service_xkey)).is_ok()
    }

    /// Checks a connect token (no keys are loaded: every token is refused, after parsing).
    pub fn access_token(token: &str) -> bool {
        keys().validator.validate(token).is_ok()
    }
}

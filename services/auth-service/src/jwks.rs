//! The issuer's signing keys, kept fresh in the background: a login never waits on the
//! network. Owns the key set, the refresher task and the JWKS HTTP GET.
//!
//! - A token with an unknown `kid` is refused at once ([`KeySet::get`] is a map lookup)
//!   and asks the refresher for a fetch ([`KeySet::request_refresh`]); requests made
//!   while one is pending become that one fetch (single flight).
//! - Fetches are at least `JWKS_MIN_REFRESH` apart, and after failures back off from 1 s
//!   doubling to 60 s: junk `kid`s cannot make the service hammer the issuer.
//! - Every fetch replaces the whole set, so a key the issuer removed stops being
//!   trusted; without a fetch the set is refreshed every `JWKS_REFRESH_INTERVAL` (or the
//!   response's `Cache-Control: max-age`, if shorter, never below `JWKS_MIN_REFRESH`).
//! - A failed fetch keeps the keys in use (logins go on while the issuer is down) and is
//!   counted in `auth.jwks.refreshes{result="error"}`.
//! - The issuer's answer is read up to [`MAX_JWKS_BYTES`]. A key is used only if it is
//!   for signatures (no `use: enc`), RSA keys have at least 2048 bits, its algorithm is
//!   stated or follows from its curve, and no other key has its `kid` (two keys with one
//!   `kid` are both refused: which one signed is ambiguous).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk, JwkSet, PublicKeyUse};
use jsonwebtoken::{Algorithm, DecodingKey};
use opentelemetry::global::BoxedTracer;
use opentelemetry::trace::{Link, SpanContext, SpanKind, TraceContextExt as _, Tracer as _};
use opentelemetry::{Context, KeyValue};
use serde::Deserialize;
use telemetry::messaging::{Traced, record_failure};
use telemetry::policy::redact_url;
use tokio::sync::Notify;
use tokio::time::Instant;
use tracing_opentelemetry::OpenTelemetrySpanExt as _;

/// Where the keys come from and how often.
#[derive(Debug, Clone)]
pub(crate) struct JwksSettings {
    /// The JWKS URL; `None`: discovered from `issuer`'s openid-configuration.
    pub(crate) url: Option<String>,
    /// The issuer used for discovery.
    pub(crate) issuer: String,
    /// Least time between two fetches.
    pub(crate) min_refresh: Duration,
    /// Longest time between two fetches.
    pub(crate) interval: Duration,
    /// HTTP timeout of one fetch.
    pub(crate) fetch_timeout: Duration,
}

type Key = (DecodingKey, Algorithm);

/// Largest JWKS (or discovery) document read: a realm's keys take a few KB.
pub(crate) const MAX_JWKS_BYTES: usize = 256 * 1024;
/// Smallest RSA modulus accepted, in bytes (2048 bits).
const MIN_RSA_MODULUS_BYTES: usize = 256;

/// The keys in use, shared by every request and the refresher.
#[derive(Default)]
pub(crate) struct KeySet {
    keys: RwLock<Option<HashMap<String, Key>>>,
    wake: Notify,
    /// The span of the step whose unknown `kid` asked for the pending fetch (linked).
    asked_by: Mutex<Option<SpanContext>>,
}

impl std::fmt::Debug for KeySet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeySet").field("loaded", &self.is_loaded()).finish_non_exhaustive()
    }
}

impl KeySet {
    /// The key named `kid`, if the issuer publishes it.
    pub(crate) fn get(&self, kid: &str) -> Option<Key> {
        self.keys.read().ok()?.as_ref()?.get(kid).cloned()
    }

    /// Whether a key set was loaded at least once (readiness).
    pub(crate) fn is_loaded(&self) -> bool {
        self.keys.read().is_ok_and(|k| k.is_some())
    }

    /// Asks the refresher for a fetch soon (returns at once).
    pub(crate) fn request_refresh(&self) {
        let asking = Context::current().span().span_context().clone();
        let asking =
            if asking.is_valid() { asking } else { tracing::Span::current().context().span().span_context().clone() };
        if let Ok(mut asked_by) = self.asked_by.lock() {
            asked_by.get_or_insert(asking);
        }
        self.wake.notify_one();
    }

    fn install(&self, keys: HashMap<String, Key>) {
        if let Ok(mut current) = self.keys.write() {
            *current = Some(keys);
        }
    }
}

/// Pause after `failures` failed fetches in a row: 1 s doubling to 60 s.
fn backoff(failures: u32) -> Duration {
    match failures {
        0 => Duration::ZERO,
        n => Duration::from_secs(1u64 << (n - 1).min(6)).min(Duration::from_secs(60)),
    }
}

/// The next periodic fetch after a success: `max-age` if the issuer said so and it is
/// shorter than the interval, never sooner than the minimum.
fn next_refresh(settings: &JwksSettings, max_age: Option<Duration>) -> Duration {
    max_age.map_or(settings.interval, |age| age.min(settings.interval)).max(settings.min_refresh)
}

/// Fetches the JWKS now and whenever asked or due, until aborted.
pub(crate) async fn refresh_forever(keys: Arc<KeySet>, settings: JwksSettings) {
    let fetcher = Fetcher::new(&settings);
    let refreshes = opentelemetry::global::meter("auth-service")
        .u64_counter("auth.jwks.refreshes")
        .with_unit("{refresh}")
        .with_description("JWKS fetches, by result (ok, error)")
        .build();
    for result in ["ok", "error"] {
        refreshes.add(0, &[KeyValue::new("result", result)]);
    }
    let (mut failures, mut last_fetch, mut due) = (0u32, None::<Instant>, Instant::now());
    loop {
        tokio::select! {
            () = tokio::time::sleep_until(due) => {}
            () = keys.wake.notified() => {}
        }
        let pause = settings.min_refresh.max(backoff(failures));
        if let Some(earliest) = last_fetch.map(|at| at + pause) {
            tokio::time::sleep_until(earliest).await;
        }
        last_fetch = Some(Instant::now());
        let asked_by = keys.asked_by.lock().ok().and_then(|mut a| a.take());
        match fetcher.fetch(asked_by).await {
            Ok((set, max_age)) => {
                tracing::info!(keys = set.len(), "JWKS loaded");
                keys.install(set);
                refreshes.add(1, &[KeyValue::new("result", "ok")]);
                failures = 0;
                due = Instant::now() + next_refresh(&settings, max_age);
            }
            Err(error) => {
                failures += 1;
                refreshes.add(1, &[KeyValue::new("result", "error")]);
                let retry_in = backoff(failures).max(settings.min_refresh);
                tracing::warn!(%error, retry_in_ms = retry_in.as_millis() as u64, "JWKS not refreshed; keeping the keys in use");
                due = Instant::now() + retry_in;
            }
        }
    }
}

/// One JWKS fetch, traced: a `jwks.refresh` root span (linked to the step that asked for
/// it) with the HTTP `GET` CLIENT span(s) inside.
struct Fetcher {
    http: reqwest::Client,
    url: Option<String>,
    issuer: String,
    tracer: BoxedTracer,
}

impl Fetcher {
    fn new(settings: &JwksSettings) -> Self {
        let http = reqwest::Client::builder()
            .timeout(settings.fetch_timeout)
            .connect_timeout(settings.fetch_timeout.min(Duration::from_secs(1)))
            .build()
            .unwrap_or_else(|_| reqwest::Client::new());
        Self {
            http,
            url: settings.url.clone(),
            issuer: settings.issuer.clone(),
            tracer: opentelemetry::global::tracer("auth-service"),
        }
    }

    async fn fetch(&self, asked_by: Option<SpanContext>) -> Result<(HashMap<String, Key>, Option<Duration>), String> {
        let links = asked_by.filter(SpanContext::is_valid).map(|cx| vec![Link::with_context(cx)]).unwrap_or_default();
        let root = self
            .tracer
            .span_builder("jwks.refresh")
            .with_kind(SpanKind::Internal)
            .with_links(links)
            .start_with_context(&self.tracer, &Context::new());
        let span = Traced::from_context(Context::new().with_span(root));
        let result = span
            .scope(async {
                let url = match &self.url {
                    Some(url) => url.clone(),
                    None => self.discover().await?,
                };
                let (set, max_age): (JwkSet, _) = self.get_json(&url).await?;
                Ok::<_, String>((keys_of(&set), max_age))
            })
            .await;
        if let Err(error) = &result {
            record_failure(&span, "jwks_refresh_failed", error);
        }
        span.end();
        result
    }

    async fn discover(&self) -> Result<String, String> {
        #[derive(Deserialize)]
        struct Discovery {
            jwks_uri: String,
        }
        let url = format!("{}/.well-known/openid-configuration", self.issuer.trim_end_matches('/'));
        Ok(self.get_json::<Discovery>(&url).await?.0.jwks_uri)
    }

    /// GET with an HTTP CLIENT span (`GET`), as the HTTP semantic conventions name it;
    /// credentials in the URL never reach the span, a log line or the error.
    async fn get_json<T: serde::de::DeserializeOwned>(&self, url: &str) -> Result<(T, Option<Duration>), String> {
        let shown = redact_url(url);
        let parsed = reqwest::Url::parse(url).map_err(|e| format!("bad URL {shown}: {e}"))?;
        let attributes = vec![
            KeyValue::new("http.request.method", "GET"),
            KeyValue::new("url.full", shown.clone()),
            KeyValue::new("server.address", parsed.host_str().unwrap_or_default().to_owned()),
            KeyValue::new("server.port", i64::from(parsed.port_or_known_default().unwrap_or_default())),
        ];
        let parent = Context::current();
        let get = self
            .tracer
            .span_builder("GET")
            .with_kind(SpanKind::Client)
            .with_attributes(attributes)
            .start_with_context(&self.tracer, &parent);
        let span = Traced::from_context(parent.with_span(get));
        let result = span
            .scope(async {
                let response =
                    self.http.get(parsed).send().await.map_err(|e| ("transport", e.without_url().to_string()))?;
                Context::current()
                    .span()
                    .set_attribute(KeyValue::new("http.response.status_code", i64::from(response.status().as_u16())));
                let response = response.error_for_status().map_err(|e| ("http_status", e.without_url().to_string()))?;
                let max_age = response
                    .headers()
                    .get(reqwest::header::CACHE_CONTROL)
                    .and_then(|v| v.to_str().ok())
                    .and_then(max_age);
                let body = read_limited(response).await?;
                let body = serde_json::from_slice::<T>(&body).map_err(|e| ("decode", e.to_string()))?;
                Ok((body, max_age))
            })
            .await;
        let result = result.map_err(|(error_type, message)| {
            record_failure(&span, error_type, &message);
            format!("GET {shown}: {message}")
        });
        span.end();
        result
    }
}

/// The body, refused past [`MAX_JWKS_BYTES`] without reading further.
async fn read_limited(mut response: reqwest::Response) -> Result<Vec<u8>, (&'static str, String)> {
    let too_large = || ("too_large", format!("answer larger than {MAX_JWKS_BYTES} bytes"));
    if response.content_length().is_some_and(|n| n > MAX_JWKS_BYTES as u64) {
        return Err(too_large());
    }
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(|e| ("transport", e.without_url().to_string()))? {
        if body.len() + chunk.len() > MAX_JWKS_BYTES {
            return Err(too_large());
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// `max-age` of a `Cache-Control` header.
fn max_age(cache_control: &str) -> Option<Duration> {
    cache_control.split(',').find_map(|directive| {
        let (name, value) = directive.trim().split_once('=')?;
        name.trim()
            .eq_ignore_ascii_case("max-age")
            .then(|| value.trim().parse().ok())
            .flatten()
            .map(Duration::from_secs)
    })
}

/// Usable keys by `kid` (see the module docs); the others are skipped with a warning.
fn keys_of(set: &JwkSet) -> HashMap<String, Key> {
    let mut keys = HashMap::new();
    let mut ambiguous = Vec::new();
    for jwk in &set.keys {
        let Some(kid) = jwk.common.key_id.clone() else { continue };
        let key = match usable(jwk) {
            Ok(key) => key,
            Err(reason) => {
                tracing::warn!(kid, reason, "JWKS key not used");
                continue;
            }
        };
        if keys.insert(kid.clone(), key).is_some() {
            ambiguous.push(kid);
        }
    }
    for kid in ambiguous {
        tracing::warn!(kid, "JWKS has several keys with this kid: none of them is used");
        keys.remove(&kid);
    }
    keys
}

/// The key and its algorithm, if the issuer may sign tokens with it.
fn usable(jwk: &Jwk) -> Result<Key, &'static str> {
    if matches!(jwk.common.public_key_use, Some(PublicKeyUse::Encryption | PublicKeyUse::Other(_))) {
        return Err("not a signing key (use)");
    }
    let implied = match &jwk.algorithm {
        AlgorithmParameters::RSA(rsa) => {
            let n = data_encoding::BASE64URL_NOPAD.decode(rsa.n.trim_end_matches('=').as_bytes()).unwrap_or_default();
            let modulus_bytes = n.iter().skip_while(|b| **b == 0).count();
            if modulus_bytes < MIN_RSA_MODULUS_BYTES {
                return Err("RSA key shorter than 2048 bits");
            }
            None
        }
        AlgorithmParameters::EllipticCurve(ec) => match ec.curve {
            EllipticCurve::P256 => Some(Algorithm::ES256),
            EllipticCurve::P384 => Some(Algorithm::ES384),
            _ => return Err("unsupported curve"),
        },
        AlgorithmParameters::OctetKeyPair(okp) if okp.curve == EllipticCurve::Ed25519 => Some(Algorithm::EdDSA),
        _ => return Err("unsupported key type"),
    };
    let stated = jwk.common.key_algorithm.and_then(|a| a.to_string().parse::<Algorithm>().ok());
    let alg = match (stated, implied) {
        (Some(stated), Some(implied)) if stated != implied => return Err("algorithm does not match the curve"),
        (Some(alg), _) | (None, Some(alg)) => alg,
        // An RSA key without `alg`: RS256, what OpenID Connect issuers sign with by default.
        (None, None) => Algorithm::RS256,
    };
    let key = DecodingKey::from_jwk(jwk).map_err(|_| "unreadable key")?;
    Ok((key, alg))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> JwksSettings {
        JwksSettings {
            url: None,
            issuer: String::new(),
            min_refresh: Duration::from_secs(2),
            interval: Duration::from_secs(300),
            fetch_timeout: Duration::from_secs(2),
        }
    }

    /// RFC 7517, appendix A.1: a 2048-bit RSA key and a P-256 key.
    const RSA_N: &str = "0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6tSoc_BJECPebWKRXjBZCiFV4n3oknjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v-65YGjQR0_FDW2QvzqY368QQMicAtaSqzs8KJZgnYb9c7d0zgdAZHzu6qMQvRL5hajrn1n91CbOpbISD08qNLyrdkt-bFTWhAI4vMQFh6WeZu0fM4lFd2NcRwr3XPksINHaQ-G_xBniIqbw0Ls1jF44-csFCur-kEgU8awapJzKnqDKgw";
    const EC_X: &str = "MKBCTNIcKUSDii11ySs3526iDZ8AiTo7Tu6KPAqv7D4";
    const EC_Y: &str = "4Etl6SRW2YilurN5XMvM3Ky-kGMtuHX5R5aEdNIqW_Y";

    fn set(keys: &serde_json::Value) -> JwkSet {
        serde_json::from_value(serde_json::json!({ "keys": keys })).expect("a JWKS")
    }

    fn rsa(kid: &str, n: &str) -> serde_json::Value {
        serde_json::json!({ "kty": "RSA", "kid": kid, "n": n, "e": "AQAB" })
    }

    #[test]
    fn only_signing_keys_of_sound_size_and_algorithm_are_used() {
        let keys = keys_of(&set(&serde_json::json!([
            rsa("rsa-2048", RSA_N),
            rsa("rsa-1024", &RSA_N[..171]),
            { "kty": "RSA", "kid": "enc", "use": "enc", "n": RSA_N, "e": "AQAB" },
            { "kty": "RSA", "kid": "sig", "use": "sig", "alg": "RS384", "n": RSA_N, "e": "AQAB" },
            { "kty": "EC", "kid": "ec-no-alg", "crv": "P-256", "x": EC_X, "y": EC_Y },
            { "kty": "EC", "kid": "ec-wrong-alg", "crv": "P-256", "alg": "ES384", "x": EC_X, "y": EC_Y },
        ])));
        let mut usable: Vec<(&str, Algorithm)> = keys.iter().map(|(kid, (_, alg))| (kid.as_str(), *alg)).collect();
        usable.sort_by_key(|(kid, _)| *kid);
        assert_eq!(
            usable,
            [("ec-no-alg", Algorithm::ES256), ("rsa-2048", Algorithm::RS256), ("sig", Algorithm::RS384)]
        );
    }

    #[test]
    fn two_keys_with_one_kid_are_both_refused() {
        let keys = keys_of(&set(&serde_json::json!([rsa("twice", RSA_N), rsa("twice", RSA_N), rsa("once", RSA_N)])));
        assert_eq!(keys.keys().collect::<Vec<_>>(), ["once"]);
    }

    #[tokio::test]
    async fn an_answer_over_the_limit_is_refused() {
        let body = |n: usize| reqwest::Response::from(http::Response::new(vec![b' '; n]));
        assert_eq!(read_limited(body(MAX_JWKS_BYTES)).await.map(|b| b.len()), Ok(MAX_JWKS_BYTES));
        let refused = read_limited(body(MAX_JWKS_BYTES + 1)).await;
        assert!(matches!(refused, Err(("too_large", _))), "{refused:?}");
    }

    #[test]
    fn failures_back_off_up_to_a_minute() {
        let pauses: Vec<u64> = (0..9).map(|f| backoff(f).as_secs()).collect();
        assert_eq!(pauses, [0, 1, 2, 4, 8, 16, 32, 60, 60]);
        assert_eq!(backoff(u32::MAX), Duration::from_secs(60));
    }

    #[test]
    fn cache_headers_shorten_the_interval_but_never_below_the_minimum() {
        assert_eq!(max_age("no-cache"), None);
        assert_eq!(max_age("public, max-age=60"), Some(Duration::from_secs(60)));
        assert_eq!(max_age("Max-Age=x"), None);
        let s = settings();
        assert_eq!(next_refresh(&s, None), Duration::from_secs(300));
        assert_eq!(next_refresh(&s, Some(Duration::from_secs(60))), Duration::from_secs(60));
        assert_eq!(next_refresh(&s, Some(Duration::from_secs(3600))), Duration::from_secs(300));
        assert_eq!(next_refresh(&s, Some(Duration::ZERO)), Duration::from_secs(2));
    }
}

//! A test OIDC issuer standing in for Keycloak: RSA keys made in the test, discovery
//! (`/.well-known/openid-configuration`) and JWKS over HTTP, tokens minted on demand,
//! and key rotation.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use axum::Json;
use axum::extract::State;
use axum::routing::get;
use data_encoding::BASE64URL_NOPAD;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use rsa::pkcs1::EncodeRsaPrivateKey as _;
use rsa::traits::PublicKeyParts as _;
use serde_json::{Value, json};

use crate::HarnessResult;

/// The audience auth-service expects by default.
pub const AUDIENCE: &str = "chat-nats";
/// The password the token endpoint accepts for every user (demo users get `chat-user`).
pub const PASSWORD: &str = "test-password";

#[derive(Clone)]
struct SigningKey {
    kid: String,
    encoding: EncodingKey,
    jwk: Value,
}

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SigningKey").field("kid", &self.kid).finish_non_exhaustive()
    }
}

fn new_key(kid: &str) -> SigningKey {
    let private = rsa::RsaPrivateKey::new(&mut rand::thread_rng(), 2048).unwrap_or_else(|e| panic!("RSA key: {e}"));
    let pem = private.to_pkcs1_pem(rsa::pkcs1::LineEnding::LF).unwrap_or_else(|e| panic!("PEM: {e}"));
    let encoding = EncodingKey::from_rsa_pem(pem.as_bytes()).unwrap_or_else(|e| panic!("encoding key: {e}"));
    let jwk = json!({
        "kty": "RSA", "use": "sig", "alg": "RS256", "kid": kid,
        "n": BASE64URL_NOPAD.encode(&private.n().to_bytes_be()),
        "e": BASE64URL_NOPAD.encode(&private.e().to_bytes_be()),
    });
    SigningKey { kid: kid.to_owned(), encoding, jwk }
}

/// How the JWKS endpoint behaves (a hostile or broken issuer).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JwksMode {
    /// Serves the current key.
    Serve,
    /// Answers 500.
    Fail,
    /// Never answers (holds the request for a minute).
    Hang,
}

#[derive(Debug)]
struct Shared {
    issuer: String,
    current: Mutex<SigningKey>,
    jwks_fetches: AtomicUsize,
    mode: Mutex<JwksMode>,
    cache_control: Mutex<Option<String>>,
    /// Lifetime of tokens from the token endpoint, in seconds.
    token_lifetime: AtomicUsize,
    /// Refresh tokens handed out, with their user.
    refresh_tokens: Mutex<std::collections::HashMap<String, String>>,
    token_requests: AtomicUsize,
}

/// The issuer; its HTTP server stops when dropped.
#[derive(Debug)]
pub struct TestIssuer {
    shared: Arc<Shared>,
    foreign: SigningKey,
    task: tokio::task::JoinHandle<()>,
}

impl TestIssuer {
    /// Starts on a free port with one signing key (`kid` = `key-1`).
    pub async fn start() -> HarnessResult<Self> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.map_err(|e| format!("bind issuer: {e}"))?;
        let port = listener.local_addr().map_err(|e| e.to_string())?.port();
        let shared = Arc::new(Shared {
            issuer: format!("http://127.0.0.1:{port}/realms/chat"),
            current: Mutex::new(new_key("key-1")),
            jwks_fetches: AtomicUsize::new(0),
            mode: Mutex::new(JwksMode::Serve),
            cache_control: Mutex::new(None),
            token_lifetime: AtomicUsize::new(300),
            refresh_tokens: Mutex::new(std::collections::HashMap::new()),
            token_requests: AtomicUsize::new(0),
        });
        let app = axum::Router::new()
            .route("/realms/chat/.well-known/openid-configuration", get(discovery))
            .route("/realms/chat/protocol/openid-connect/certs", get(jwks))
            .route("/realms/chat/protocol/openid-connect/token", axum::routing::post(token_endpoint))
            .with_state(Arc::clone(&shared));
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Ok(Self { shared, foreign: new_key("key-1"), task })
    }

    /// The `iss` of its tokens (also the discovery base).
    pub fn issuer(&self) -> &str {
        &self.shared.issuer
    }

    /// The token endpoint (password grant, client `chat-cli`).
    pub fn token_url(&self) -> String {
        format!("{}/protocol/openid-connect/token", self.issuer())
    }

    /// How many times the JWKS was fetched.
    pub fn jwks_fetches(&self) -> usize {
        self.shared.jwks_fetches.load(Ordering::SeqCst)
    }

    /// Lifetime of the tokens the token endpoint issues from now on (default 300 s).
    pub fn set_token_lifetime(&self, lifetime: std::time::Duration) {
        self.shared.token_lifetime.store(lifetime.as_secs() as usize, Ordering::SeqCst);
    }

    /// How many token requests (password or refresh grant) were answered with a token.
    pub fn token_requests(&self) -> usize {
        self.shared.token_requests.load(Ordering::SeqCst)
    }

    /// How the JWKS endpoint answers from now on.
    pub fn set_jwks_mode(&self, mode: JwksMode) {
        if let Ok(mut current) = self.shared.mode.lock() {
            *current = mode;
        }
    }

    /// A `Cache-Control` header on JWKS answers (e.g. `max-age=1`).
    pub fn set_cache_control(&self, value: Option<&str>) {
        if let Ok(mut current) = self.shared.cache_control.lock() {
            *current = value.map(str::to_owned);
        }
    }

    /// Replaces the signing key with a new one (new `kid`); the JWKS serves only the new key.
    pub fn rotate(&self, kid: &str) {
        if let Ok(mut current) = self.shared.current.lock() {
            *current = new_key(kid);
        }
    }

    /// Access-token claims as Keycloak issues them: valid for 5 minutes, for `user` with `roles`.
    pub fn claims(&self, user: &str, roles: &[&str]) -> Value {
        let now = now();
        json!({
            "iss": self.issuer(), "aud": AUDIENCE, "sub": format!("id-{user}"),
            "iat": now, "nbf": now, "exp": now + 300,
            "preferred_username": user, "realm_access": { "roles": roles },
        })
    }

    /// A token signed with the current key.
    pub fn token(&self, claims: &Value) -> String {
        let key = self.current();
        sign(claims, &key.encoding, Some(&key.kid))
    }

    /// A token signed with the current key but naming another `kid`.
    pub fn token_with_kid(&self, claims: &Value, kid: &str) -> String {
        sign(claims, &self.current().encoding, Some(kid))
    }

    /// A token naming the current `kid` but signed with a key the issuer never published.
    pub fn forged_token(&self, claims: &Value) -> String {
        sign(claims, &self.foreign.encoding, Some(&self.current().kid))
    }

    /// An unsigned token (`alg: none`).
    pub fn unsigned_token(&self, claims: &Value) -> String {
        let header = BASE64URL_NOPAD
            .encode(format!(r#"{{"alg":"none","typ":"JWT","kid":"{}"}}"#, self.current().kid).as_bytes());
        format!("{header}.{}.", BASE64URL_NOPAD.encode(claims.to_string().as_bytes()))
    }

    fn current(&self) -> SigningKey {
        self.shared.current.lock().map(|k| k.clone()).unwrap_or_else(|e| e.into_inner().clone())
    }
}

impl Drop for TestIssuer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn sign(claims: &Value, key: &EncodingKey, kid: Option<&str>) -> String {
    let mut header = Header::new(Algorithm::RS256);
    header.kid = kid.map(str::to_owned);
    jsonwebtoken::encode(&header, claims, key).unwrap_or_else(|e| panic!("sign token: {e}"))
}

/// Seconds since the Unix epoch.
pub fn now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or_default()
}

async fn discovery(State(shared): State<Arc<Shared>>) -> Json<Value> {
    Json(json!({
        "issuer": shared.issuer,
        "jwks_uri": format!("{}/protocol/openid-connect/certs", shared.issuer),
    }))
}

/// Password grant: any user with [`PASSWORD`] gets a `chat-user` token and a refresh
/// token; refresh-token grant: a refresh token handed out before gets a new pair.
async fn token_endpoint(
    State(shared): State<Arc<Shared>>,
    axum::Form(form): axum::Form<std::collections::HashMap<String, String>>,
) -> Result<Json<Value>, axum::http::StatusCode> {
    let field = |k: &str| form.get(k).map(String::as_str);
    let unauthorized = axum::http::StatusCode::UNAUTHORIZED;
    if field("client_id") != Some("chat-cli") {
        return Err(unauthorized);
    }
    let user = match field("grant_type") {
        Some("password") if field("password") == Some(PASSWORD) => field("username").unwrap_or_default().to_owned(),
        Some("refresh_token") => {
            let known = shared.refresh_tokens.lock().map_err(|_| unauthorized)?;
            known.get(field("refresh_token").unwrap_or_default()).cloned().ok_or(unauthorized)?
        }
        _ => return Err(unauthorized),
    };
    let now = now();
    let lifetime = shared.token_lifetime.load(Ordering::SeqCst) as u64;
    let claims = json!({
        "iss": shared.issuer, "aud": AUDIENCE, "sub": format!("id-{user}"), "iat": now, "nbf": now,
        "exp": now + lifetime, "preferred_username": user, "realm_access": { "roles": ["chat-user"] },
    });
    let key = shared.current.lock().map(|k| k.clone()).map_err(|_| axum::http::StatusCode::INTERNAL_SERVER_ERROR)?;
    let refresh = format!("rt-{:032x}", rand::random::<u128>());
    if let Ok(mut known) = shared.refresh_tokens.lock() {
        known.insert(refresh.clone(), user);
    }
    shared.token_requests.fetch_add(1, Ordering::SeqCst);
    Ok(Json(json!({
        "access_token": sign(&claims, &key.encoding, Some(&key.kid)), "token_type": "Bearer",
        "expires_in": lifetime, "refresh_token": refresh,
    })))
}

async fn jwks(State(shared): State<Arc<Shared>>) -> axum::response::Response {
    use axum::response::IntoResponse as _;
    shared.jwks_fetches.fetch_add(1, Ordering::SeqCst);
    let mode = shared.mode.lock().map(|m| *m).unwrap_or(JwksMode::Serve);
    match mode {
        JwksMode::Fail => return axum::http::StatusCode::INTERNAL_SERVER_ERROR.into_response(),
        JwksMode::Hang => tokio::time::sleep(std::time::Duration::from_secs(60)).await,
        JwksMode::Serve => {}
    }
    let jwk = shared.current.lock().map(|k| k.jwk.clone()).unwrap_or_default();
    let mut response = Json(json!({ "keys": [jwk] })).into_response();
    let cache_control = shared.cache_control.lock().ok().and_then(|c| c.clone());
    if let Some(value) = cache_control.and_then(|v| axum::http::HeaderValue::from_str(&v).ok()) {
        response.headers_mut().insert(axum::http::header::CACHE_CONTROL, value);
    }
    response
}

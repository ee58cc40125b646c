//! Logging in through the real Keycloak (issue 21): chat-cli -> Keycloak password grant
//! -> NATS CONNECT with the access token -> auth callout -> JWKS from Keycloak -> NATS
//! user JWT with the role's permissions, against the real nats-server running the
//! project's `nats.conf`, the real services and the realm file compose imports
//! (`keycloak/chat-realm.json`). Then the realm's key rotated through the admin API while
//! a user stays connected, and a short token lifetime during `chat-cli tail`.
//!
//! Needs the Keycloak distribution (`scripts/test-deps.sh` unpacks it into `.tools/`, or
//! `KEYCLOAK_HOME`); without it the test prints "skipped" and passes. One test function:
//! one Keycloak start (about 10-20 s on the project's machine), the cases in sequence.

use std::time::{Duration, Instant};

use futures::StreamExt as _;
use reqwest::Method;
use serde_json::json;
use stack_checks::keycloak::{self, Keycloak, VERSION};
use test_harness::otlp::latest_sum;
use test_harness::{ChatStack, CliRun};

const WAIT: Duration = Duration::from_secs(30);

struct Tier {
    stack: ChatStack,
    keycloak: Keycloak,
    demo_password: String,
}

impl Tier {
    /// `chat-cli --json <args>` logging in as `user` with `password` at the real Keycloak.
    async fn cli(&self, user: &str, password: &str, args: &[&str]) -> CliRun {
        let token_url = self.keycloak.token_url();
        let base =
            ["--json", "--user", user, "--password", password, "--oidc-token-url", &token_url, "--timeout", "5s"];
        self.stack.cli(&[&base[..], args].concat()).await.expect("chat-cli")
    }

    async fn cli_ok(&self, user: &str, args: &[&str]) -> Vec<serde_json::Value> {
        let run = self.cli(user, &self.demo_password, args).await;
        assert_eq!(run.code, Some(0), "{user} {args:?}:\n{}\n{}", run.stdout, run.stderr);
        run.json_lines()
    }

    /// A NATS connection as `user` with an access token, as chat-cli makes it.
    async fn connect(&self, user: &str, token: &str) -> Result<async_nats::Client, async_nats::ConnectError> {
        async_nats::ConnectOptions::with_token(token.to_owned())
            .custom_inbox_prefix(chat_protocol::chat_inbox_prefix(user))
            .connect(self.stack.nats.url())
            .await
    }

    async fn token(&self, user: &str) -> String {
        let grant = self.keycloak.password_grant(user, &self.demo_password).await.expect("password grant");
        grant["access_token"].as_str().expect("access token").to_owned()
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn logins_go_through_the_real_keycloak_from_password_grant_to_nats_permissions() {
    let Some(home) = keycloak::home() else {
        println!("skipped: no Keycloak {VERSION} distribution (scripts/test-deps.sh, or KEYCLOAK_HOME)");
        return;
    };
    let stack = ChatStack::start_secured().await.expect("secured stack");
    let demo_password = stack.secrets["CHAT_DEMO_PASSWORD"].clone();
    let keycloak =
        Keycloak::start(&home, &stack.secrets["KEYCLOAK_ADMIN_PASSWORD"], &demo_password).await.expect("keycloak");
    let java = std::process::Command::new("java").arg("-version").output().map(|o| o.stderr).unwrap_or_default();
    let java = String::from_utf8_lossy(&java).lines().next().unwrap_or_default().to_owned();
    println!("Keycloak {VERSION} ready in {:.1} s ({java})", keycloak.started_in.as_secs_f64());
    let issuer = keycloak.issuer();
    let auth_env = [("OIDC_ISSUER", issuer.as_str()), ("JWKS_REFRESH_INTERVAL", "5s"), ("JWKS_MIN_REFRESH", "1s")];
    let _auth = stack.spawn_service("auth-service", &auth_env).await.expect("auth-service loads Keycloak's JWKS");
    let _worker = stack.spawn_service("persist-worker", &[]).await.expect("worker");
    let _history = stack.spawn_service("history-service", &[]).await.expect("history");
    let tier = Tier { stack, keycloak, demo_password };

    logins_and_permissions(&tier).await;
    key_rotation(&tier).await;
    token_lifetime(&tier).await;
}

/// alice and bob send and read; carol reads and is refused on publish; a wrong password
/// and an unknown user get a clear error and no NATS connection.
async fn logins_and_permissions(tier: &Tier) {
    // What Keycloak puts in the token is what the callout expects.
    let grant = tier.keycloak.password_grant("alice", &tier.demo_password).await.expect("alice logs in");
    let claims = token_claims(grant["access_token"].as_str().unwrap_or_default());
    assert_eq!(claims["iss"], tier.keycloak.issuer().as_str(), "the issuer auth-service is given");
    assert_eq!(claims["aud"], "chat-nats");
    assert_eq!(claims["realm_access"]["roles"], json!(["chat-user"]));

    for (user, text) in [("alice", "hello from alice"), ("bob", "hello from bob")] {
        let sent = tier.cli_ok(user, &["send", "general", text]).await;
        assert_eq!(sent.len(), 1, "{user}: {sent:?}");
        println!("login {user} (chat-user): send ok");
    }
    let deadline = Instant::now() + WAIT;
    loop {
        let lines = tier.cli_ok("bob", &["history", "general"]).await;
        if lines.len() == 3 {
            println!("login bob (chat-user): history ok, 2 messages");
            break;
        }
        assert!(Instant::now() < deadline, "history never held both messages: {lines:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let read = tier.cli_ok("carol", &["history", "general"]).await;
    assert_eq!(read.len(), 3, "carol (chat-readonly) reads history: {read:?}");
    let refused = tier.cli("carol", &tier.demo_password, &["send", "general", "carol writes"]).await;
    assert_eq!(refused.code, Some(3), "{}", refused.stderr);
    assert!(refused.stderr.contains("permission denied"), "a clear refusal: {}", refused.stderr);
    println!("login carol (chat-readonly): history ok, send refused: {}", refused.stderr.trim());

    for (user, password, what) in [("alice", "not-her-password", "wrong password"), ("mallory", "x", "unknown user")] {
        let run = tier.cli(user, password, &["send", "general", "nope"]).await;
        assert_eq!(run.code, Some(3), "{what}: {}", run.stderr);
        assert!(run.stderr.contains("Keycloak refused the login"), "{what}: {}", run.stderr);
        assert!(!run.stderr.contains("NATS"), "{what}: the refusal is Keycloak's, not NATS's: {}", run.stderr);
        println!("login {user} ({what}): refused by Keycloak: {}", run.stderr.trim());
    }
    let connz = format!("http://127.0.0.1:{}/connz?auth=true", tier.stack.nats.monitor_port());
    let connz = reqwest::get(connz).await.expect("connz").text().await.expect("connz");
    assert!(!connz.contains("mallory"), "no NATS connection for a failed login");

    let fetched = tier.stack.otlp.wait_for(WAIT, "JWKS fetched from Keycloak", |c| {
        latest_sum(&c.metrics, "auth.jwks.refreshes", &[("result", "ok")]).filter(|n| *n >= 1.0)
    });
    fetched.await.expect("auth-service fetched Keycloak's JWKS");
}

/// A new realm key (higher priority) and the old one disabled through the admin API,
/// while alice stays connected: new logins use the new `kid` at once, tokens of the old
/// key are refused once auth-service's JWKS cache has refreshed, nobody is locked out.
async fn key_rotation(tier: &Tier) {
    let old_kid = keycloak::kid(&tier.token("alice").await).expect("kid");
    let old_token = tier.token("bob").await;
    let alice = tier.connect("alice", &tier.token("alice").await).await.expect("alice connected before the rotation");
    let mut inbox = alice.subscribe("chat.msg.rotation.*").await.expect("subscribe");
    alice.flush().await.expect("flush");

    let realm = tier.keycloak.admin(Method::GET, "", None).await.expect("realm");
    let started = Instant::now();
    let component = json!({
        "name": "rotated-rsa", "providerId": "rsa-generated", "providerType": "org.keycloak.keys.KeyProvider",
        "parentId": realm["id"], "config": { "priority": ["500"], "keySize": ["2048"], "algorithm": ["RS256"] },
    });
    tier.keycloak.admin(Method::POST, "/components", Some(component)).await.expect("a new key");
    let new_token = tier.token("alice").await;
    let new_kid = keycloak::kid(&new_token).expect("kid");
    assert_ne!(new_kid, old_kid, "new logins sign with the new key");
    // auth-service has not seen the new kid: it refuses once and refetches; chat-cli retries.
    let sent = tier.cli_ok("alice", &["send", "rotation", "after the new key"]).await;
    assert_eq!(sent.len(), 1);
    println!("rotation +{:.1} s: new key {new_kid}: chat-cli login and send ok", started.elapsed().as_secs_f64());

    let keys = tier.keycloak.admin(Method::GET, "/keys", None).await.expect("keys");
    let old_provider = keys["keys"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|k| k["kid"] == old_kid.as_str())
        .and_then(|k| k["providerId"].as_str())
        .expect("the old key's component")
        .to_owned();
    let mut old = tier.keycloak.admin(Method::GET, &format!("/components/{old_provider}"), None).await.expect("old");
    old["config"]["enabled"] = json!(["false"]);
    old["config"]["active"] = json!(["false"]);
    let put = tier.keycloak.admin(Method::PUT, &format!("/components/{old_provider}"), Some(old)).await;
    put.expect("the old key disabled");
    let disabled_at = Instant::now();
    println!("rotation +{:.1} s: old key {old_kid} disabled", started.elapsed().as_secs_f64());

    // Tokens of the removed key stop working once the JWKS cache refreshes (5 s here).
    let refused_after = loop {
        match tier.connect("bob", &old_token).await {
            Err(_) => break disabled_at.elapsed(),
            Ok(client) => drop(client),
        }
        assert!(disabled_at.elapsed() < WAIT, "a token of the removed key is still accepted");
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    println!(
        "rotation +{:.1} s: token of the old key refused ({:.1} s after disabling it)",
        started.elapsed().as_secs_f64(),
        refused_after.as_secs_f64()
    );
    // Nobody locked out: a fresh login works, and alice's session carried on throughout.
    tier.cli_ok("bob", &["send", "rotation", "bob after the rotation"]).await;
    let seen = tokio::time::timeout(WAIT, inbox.next()).await.expect("alice, connected all along, gets messages");
    assert!(seen.is_some());
    assert_eq!(alice.connection_state(), async_nats::connection::State::Connected);
    println!("rotation +{:.1} s: alice's connection from before stayed up", started.elapsed().as_secs_f64());
}

/// Access tokens of 40 s (set through the admin API, not in the shipped realm file):
/// `chat-cli tail` outlives its token; NATS ends the session at the token's `exp`, and
/// chat-cli reconnects with a token from the refresh grant, so the tail goes on.
async fn token_lifetime(tier: &Tier) {
    let mut realm = tier.keycloak.admin(Method::GET, "", None).await.expect("realm");
    realm["accessTokenLifespan"] = json!(40);
    tier.keycloak.admin(Method::PUT, "", Some(realm)).await.expect("short tokens");
    let token_url = tier.keycloak.token_url();
    let args = [
        "--json",
        "--user",
        "carol",
        "--password",
        &tier.demo_password,
        "--oidc-token-url",
        &token_url,
        "tail",
        "lifetime",
        "--count",
        "2",
    ];
    let mut tail = tier.stack.cli_command(&args);
    let tail = tail.stdout(std::process::Stdio::piped()).stderr(std::process::Stdio::piped()).spawn().expect("tail");
    tokio::time::sleep(Duration::from_secs(3)).await;
    tier.cli_ok("alice", &["send", "lifetime", "before the token expires"]).await;
    // Past carol's token's exp (40 s) and her reconnect with a refreshed token.
    tokio::time::sleep(Duration::from_secs(45)).await;
    tier.cli_ok("alice", &["send", "lifetime", "after the token expired"]).await;
    let output = tokio::time::timeout(WAIT, tail.wait_with_output()).await.expect("tail ends").expect("tail ran");
    let (stdout, stderr) = (String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    assert_eq!(output.status.code(), Some(0), "stdout:\n{stdout}\nstderr:\n{stderr}");
    assert!(stdout.contains("after the token expired"), "the tail went on with a refreshed token:\n{stdout}");
    println!("token lifetime 40 s: tail got both messages, across its session's expiry");
}

fn token_claims(token: &str) -> serde_json::Value {
    let payload = token.split('.').nth(1).unwrap_or_default();
    let bytes = data_encoding::BASE64URL_NOPAD.decode(payload.trim_end_matches('=').as_bytes()).unwrap_or_default();
    serde_json::from_slice(&bytes).unwrap_or_default()
}

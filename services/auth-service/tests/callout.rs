//! The auth callout against a real nats-server 2.12 running the project's nats.conf, with
//! a test OIDC issuer (RSA keys made here) in place of Keycloak.

use std::time::Duration;

use async_nats::ConnectErrorKind;
use serde_json::json;
use test_harness::model::{AttributesExt as _, SpanKind, StatusCode};
use test_harness::oidc::{JwksMode, TestIssuer, now};
use test_harness::otlp::latest_sum;
use test_harness::{ChatStack, Service};

const WAIT: Duration = Duration::from_secs(30);
const CALLOUT: &str = "process $SYS.REQ.USER.AUTH";

struct TestApp {
    stack: ChatStack,
    issuer: TestIssuer,
    auth: Service,
}

impl TestApp {
    async fn spawn() -> Self {
        let stack = ChatStack::start_secured().await.expect("secured stack");
        let issuer = TestIssuer::start().await.expect("issuer");
        let auth = Self::auth_service(&stack, &issuer).await;
        Self { stack, issuer, auth }
    }

    async fn auth_service(stack: &ChatStack, issuer: &TestIssuer) -> Service {
        let env = [("OIDC_ISSUER", issuer.issuer()), ("JWKS_MIN_REFRESH", "300ms")];
        stack.spawn_service("auth-service", &env).await.expect("auth-service ready")
    }

    /// Connects with `token` as the connect token.
    async fn connect(&self, token: &str) -> Result<async_nats::Client, async_nats::ConnectError> {
        async_nats::ConnectOptions::with_token(token.to_owned())
            .connection_timeout(Duration::from_secs(5))
            .connect(self.stack.nats.url())
            .await
    }

    async fn cli(&self, token: &str, user: &str, args: &[&str]) -> test_harness::CliRun {
        let base = ["--token", token, "--user", user, "--timeout", "2s"];
        self.stack.cli(&[&base[..], args].concat()).await.expect("chat-cli")
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_valid_token_connects_and_may_publish_only_as_its_own_user() {
    let app = TestApp::spawn().await;
    let _worker = app.stack.spawn_service("persist-worker", &[]).await.expect("worker as service user");
    let _history = app.stack.spawn_service("history-service", &[]).await.expect("history as service user");
    let token = app.issuer.token(&app.issuer.claims("alice", &["chat-user"]));

    let sent = app.cli(&token, "alice", &["send", "general", "hi from alice"]).await;
    assert_eq!(sent.code, Some(0), "{}\n{}", sent.stdout, sent.stderr);
    let history = app.cli(&token, "alice", &["history", "general"]).await;
    assert_eq!(history.code, Some(0), "{}", history.stderr);

    let impersonation = app.cli(&token, "bob", &["send", "general", "i am bob"]).await;
    assert_eq!(impersonation.code, Some(3), "{}\n{}", impersonation.stdout, impersonation.stderr);
    assert!(impersonation.stderr.contains("permission denied"), "{}", impersonation.stderr);
    // Refused by the server: bob's inbox (subscribe) or bob's subject (publish).
    assert!(impersonation.stderr.contains("bob"), "{}", impersonation.stderr);

    // A read-only user reads but cannot write.
    let carol = app.issuer.token(&app.issuer.claims("carol", &["chat-readonly"]));
    assert_eq!(app.cli(&carol, "carol", &["history", "general"]).await.code, Some(0));
    assert_eq!(app.cli(&carol, "carol", &["send", "general", "x"]).await.code, Some(3));
}

#[tokio::test(flavor = "multi_thread")]
async fn every_bad_token_is_refused_and_counted_with_its_reason() {
    let app = TestApp::spawn().await;
    let good = app.issuer.claims("alice", &["chat-user"]);
    let with = |patch: serde_json::Value| {
        let mut claims = good.clone();
        for (k, v) in patch.as_object().into_iter().flatten() {
            claims[k] = v.clone();
        }
        claims
    };
    let t = now();
    let cases = [
        ("expired", app.issuer.token(&with(json!({"exp": t - 600})))),
        ("not_yet_valid", app.issuer.token(&with(json!({"nbf": t + 600})))),
        ("wrong_issuer", app.issuer.token(&with(json!({"iss": "http://evil.example/realms/chat"})))),
        ("wrong_audience", app.issuer.token(&with(json!({"aud": "someone-else"})))),
        ("bad_signature", app.issuer.forged_token(&good)),
        ("unknown_kid", app.issuer.token_with_kid(&good, "never-published")),
        ("unsupported_alg", app.issuer.unsigned_token(&good)),
        ("malformed_token", "garbage.not.a-jwt".to_owned()),
        ("missing_token", String::new()),
        ("no_role", app.issuer.token(&app.issuer.claims("dave", &["default-roles-chat"]))),
        ("invalid_user", app.issuer.token(&app.issuer.claims("Eve.Evil", &["chat-user"]))),
    ];
    for (reason, token) in &cases {
        let err = app.connect(token).await.expect_err(reason);
        assert_eq!(err.kind(), ConnectErrorKind::AuthorizationViolation, "{reason}: {err}");
    }
    let metrics = app
        .stack
        .otlp
        .wait_for(WAIT, "a denial counted for every reason", |c| {
            cases
                .iter()
                .all(|(reason, _)| {
                    latest_sum(&c.metrics, "auth.requests", &[("result", "denied"), ("reason", reason)]) == Some(1.0)
                })
                .then(|| c.metrics.clone())
        })
        .await
        .expect("denials counted");
    assert_eq!(latest_sum(&metrics, "auth.requests", &[("result", "allowed")]), None);
    assert_eq!(app.auth.readyz().await, Some(200), "still healthy after all that");
    let good_token = app.issuer.token(&good);
    app.connect(&good_token).await.expect("a good token still works");
}

#[tokio::test(flavor = "multi_thread")]
async fn every_denial_reason_exists_at_zero_before_its_first_denial() {
    let app = TestApp::spawn().await;
    let reasons = [
        "missing_token",
        "malformed_token",
        "unsupported_alg",
        "unknown_kid",
        "bad_signature",
        "expired",
        "not_yet_valid",
        "wrong_issuer",
        "wrong_audience",
        "no_role",
        "invalid_user",
    ];
    let zero = |c: &test_harness::otlp::Captured, result: &str, reason: &str| {
        latest_sum(&c.metrics, "auth.requests", &[("result", result), ("reason", reason)]) == Some(0.0)
    };
    app.stack
        .otlp
        .wait_for(WAIT, "every denial series at 0 with no login yet", |c| {
            (reasons.iter().all(|r| zero(c, "denied", r)) && zero(c, "error", "jwks_unavailable")).then_some(())
        })
        .await
        .expect("denials at 0 from start-up");
    // The first denial is then an increase from 0 (what rate() and increase() need).
    let mut claims = app.issuer.claims("alice", &["chat-user"]);
    claims["exp"] = json!(now() - 60);
    let expired = app.issuer.token(&claims);
    app.connect(&expired).await.expect_err("expired");
    app.stack
        .otlp
        .wait_for(WAIT, "the first denial counted", |c| {
            (latest_sum(&c.metrics, "auth.requests", &[("result", "denied"), ("reason", "expired")]) == Some(1.0))
                .then_some(())
        })
        .await
        .expect("first denial");
}

/// Connects until `token` is accepted (bounded), returning how long it took.
async fn accepted_within(app: &TestApp, token: &str, limit: Duration) -> Duration {
    let started = std::time::Instant::now();
    loop {
        if app.connect(token).await.is_ok() {
            return started.elapsed();
        }
        assert!(started.elapsed() < limit, "not accepted within {limit:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_rotated_key_is_refused_at_once_then_accepted_after_one_background_refetch() {
    let app = TestApp::spawn().await;
    let claims = app.issuer.claims("alice", &["chat-user"]);
    app.connect(&app.issuer.token(&claims)).await.expect("before rotation");
    tokio::time::sleep(Duration::from_millis(400)).await; // past JWKS_MIN_REFRESH
    let fetches = app.issuer.jwks_fetches();
    app.issuer.rotate("key-2");
    let token = app.issuer.token(&claims);
    // The callout never waits for the issuer: the first login with the new kid is refused
    // now and asks for a fetch in the background.
    let started = std::time::Instant::now();
    let refused = app.connect(&token).await.expect_err("unknown kid refused at once");
    assert_eq!(refused.kind(), ConnectErrorKind::AuthorizationViolation);
    assert!(started.elapsed() < Duration::from_secs(1), "refused in {:?}", started.elapsed());
    accepted_within(&app, &token, Duration::from_secs(3)).await;
    assert_eq!(app.issuer.jwks_fetches(), fetches + 1, "exactly one refetch");
    app.connect(&token).await.expect("cached now");
    assert_eq!(app.issuer.jwks_fetches(), fetches + 1, "no refetch for a known kid");
}

/// A JWKS endpoint that hangs, then fails, while junk kids pour in: every valid login
/// still gets through well within the server's callout timeout, and the issuer sees a
/// bounded number of fetches (single flight, minimum interval, backoff on failure).
#[tokio::test(flavor = "multi_thread")]
async fn logins_go_on_while_the_jwks_endpoint_hangs_or_fails_and_junk_kids_cause_no_fetch_storm() {
    let app = TestApp::spawn().await;
    let good = app.issuer.token(&app.issuer.claims("alice", &["chat-user"]));
    app.connect(&good).await.expect("keys loaded");
    // More junk connects than the callout answers at once (32).
    let junk: Vec<String> = (0..40)
        .map(|i| app.issuer.token_with_kid(&app.issuer.claims("mallory", &["chat-user"]), &format!("junk-{i}")))
        .collect();
    for mode in [JwksMode::Hang, JwksMode::Fail] {
        app.issuer.set_jwks_mode(mode);
        let fetches = app.issuer.jwks_fetches();
        let started = std::time::Instant::now();
        let attacks = futures::future::join_all(junk.iter().map(|t| app.connect(t)));
        let logins = async {
            let mut slowest = Duration::ZERO;
            for _ in 0..10 {
                let login = std::time::Instant::now();
                app.connect(&good).await.expect("a valid login is never blocked by the issuer");
                slowest = slowest.max(login.elapsed());
            }
            slowest
        };
        let (attacks, slowest) = tokio::join!(attacks, logins);
        assert!(attacks.iter().all(Result::is_err), "{mode:?}: junk kids are refused");
        assert!(slowest < Duration::from_millis(500), "{mode:?}: a valid login took {slowest:?}");
        // JWKS_MIN_REFRESH is 300 ms here: at most one fetch per 300 ms, plus the one in flight.
        let elapsed = started.elapsed().as_millis() as usize;
        let made = app.issuer.jwks_fetches() - fetches;
        assert!(made <= 2 + elapsed / 300, "{mode:?}: {made} fetches in {elapsed} ms");
    }
    let failures = app.stack.otlp.wait_for(WAIT, "failed refreshes counted", |c| {
        latest_sum(&c.metrics, "auth.jwks.refreshes", &[("result", "error")]).filter(|n| *n >= 1.0)
    });
    failures.await.expect("counted");
    assert_eq!(app.auth.readyz().await, Some(200), "the keys in use stay loaded");
}

/// Keys the issuer stops publishing stop being trusted at the next periodic refresh.
#[tokio::test(flavor = "multi_thread")]
async fn a_key_removed_from_the_jwks_stops_being_trusted() {
    let stack = ChatStack::start_secured().await.expect("secured stack");
    let issuer = TestIssuer::start().await.expect("issuer");
    let env = [("OIDC_ISSUER", issuer.issuer()), ("JWKS_MIN_REFRESH", "300ms"), ("JWKS_REFRESH_INTERVAL", "1s")];
    let auth = stack.spawn_service("auth-service", &env).await.expect("auth-service");
    let app = TestApp { stack, issuer, auth };
    let old = app.issuer.token(&app.issuer.claims("alice", &["chat-user"]));
    app.connect(&old).await.expect("key-1 trusted");
    app.issuer.rotate("key-2");
    let started = std::time::Instant::now();
    loop {
        if app.connect(&old).await.is_err() {
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(5), "key-1 still trusted after it was removed");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    app.connect(&app.issuer.token(&app.issuer.claims("alice", &["chat-user"]))).await.expect("key-2 trusted");
}

/// A token a few seconds past its `exp` was accepted with the 30 s leeway and then got
/// a user JWT that NATS refuses as already expired: now it is refused as expired.
#[tokio::test(flavor = "multi_thread")]
async fn a_token_past_its_exp_is_refused_whatever_the_leeway() {
    let app = TestApp::spawn().await;
    let mut claims = app.issuer.claims("alice", &["chat-user"]);
    claims["exp"] = json!(now() - 5);
    let err = app.connect(&app.issuer.token(&claims)).await.expect_err("expired");
    assert_eq!(err.kind(), ConnectErrorKind::AuthorizationViolation);
    let counted = app.stack.otlp.wait_for(WAIT, "counted as expired", |c| {
        latest_sum(&c.metrics, "auth.requests", &[("result", "denied"), ("reason", "expired")])
    });
    counted.await.expect("expired, not an error of ours");
}

#[tokio::test(flavor = "multi_thread")]
async fn without_the_callout_service_clients_are_refused_and_service_users_carry_on() {
    let mut app = TestApp::spawn().await;
    let mut worker = app.stack.spawn_service("persist-worker", &[]).await.expect("worker");
    let token = app.issuer.token(&app.issuer.claims("alice", &["chat-user"]));
    app.connect(&token).await.expect("with the callout");

    app.auth.process.kill();
    let refused = app.connect(&token).await.expect_err("nobody answers the callout");
    assert_eq!(refused.kind(), ConnectErrorKind::AuthorizationViolation, "{refused}");
    worker.wait_readyz(200, WAIT).await.expect("the service user is unaffected");

    app.auth = TestApp::auth_service(&app.stack, &app.issuer).await;
    app.connect(&token).await.expect("back in once the callout is back");
}

#[tokio::test(flavor = "multi_thread")]
async fn callouts_are_traced_step_by_step_and_leak_no_secret() {
    let app = TestApp::spawn().await;
    let token = app.issuer.token(&app.issuer.claims("alice", &["chat-user"]));
    let mut expired_claims = app.issuer.claims("bob", &["chat-user"]);
    expired_claims["exp"] = json!(now() - 600);
    let expired = app.issuer.token(&expired_claims);
    let no_role = app.issuer.token(&app.issuer.claims("dave", &[]));
    app.connect(&token).await.expect("allowed");
    let _ = app.connect(&expired).await.expect_err("expired");
    let _ = app.connect(&no_role).await.expect_err("no role");

    let callouts = app
        .stack
        .otlp
        .wait_for(WAIT, "three callout traces with their steps", |c| {
            let roots: Vec<_> = c.spans.iter().filter(|s| s.name == CALLOUT).cloned().collect();
            let responds = c.spans.iter().filter(|s| s.name == "respond").count();
            (roots.len() == 3 && responds == 3).then_some(roots)
        })
        .await
        .expect("callout spans");
    let trace_of =
        |user_ok: StatusCode| callouts.iter().filter(move |s| s.status == user_ok).cloned().collect::<Vec<_>>();
    let allowed = &trace_of(StatusCode::Unset)[0];
    assert_eq!(allowed.kind, SpanKind::Server);
    assert_eq!(allowed.parent_span_id, None, "each callout is its own trace");
    assert_eq!(allowed.attributes.str("enduser.id"), Some("alice"));
    let trace = app.stack.otlp.trace(&allowed.trace_id);
    for step in ["xkey.decrypt", "jwt.validate", "permissions.map", "respond"] {
        let span = trace.one(step);
        trace.assert_child_of(span, allowed);
        assert_eq!(span.kind, SpanKind::Internal);
        assert_ne!(span.status, StatusCode::Error, "{step}");
    }
    let denied = trace_of(StatusCode::Error);
    assert_eq!(denied.len(), 2);
    let failed_steps: Vec<(String, Option<String>)> = denied
        .iter()
        .flat_map(|root| app.stack.otlp.trace(&root.trace_id).spans().to_vec())
        .filter(|s| s.status == StatusCode::Error && s.name != CALLOUT)
        .map(|s| (s.name.clone(), s.attributes.str("error.type").map(str::to_owned)))
        .collect();
    assert!(failed_steps.contains(&("jwt.validate".to_owned(), Some("expired".to_owned()))), "{failed_steps:?}");
    assert!(failed_steps.contains(&("permissions.map".to_owned(), Some("no_role".to_owned()))), "{failed_steps:?}");

    // No token, seed, password or JWT anywhere: exports, service output, server output.
    let captured = format!("{:?}", app.stack.otlp.captured());
    let outputs = [captured, app.auth.process.output(), app.stack.nats.output()];
    let secrets: Vec<&str> = [token.as_str(), expired.as_str(), no_role.as_str()]
        .into_iter()
        .chain(app.stack.secrets.iter().filter(|(k, _)| !k.ends_with("PUBLIC_KEY")).map(|(_, v)| v.as_str()))
        .collect();
    for (i, text) in outputs.iter().enumerate() {
        for secret in &secrets {
            assert!(!text.contains(secret), "a secret leaked into output #{i}");
        }
        assert!(!text.contains("eyJ"), "something JWT-shaped leaked into output #{i}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn chat_cli_logs_in_with_a_password_and_gets_through_the_callout() {
    let app = TestApp::spawn().await;
    let _worker = app.stack.spawn_service("persist-worker", &[]).await.expect("worker");
    let token_url = app.issuer.token_url();
    let base = ["--user", "alice", "--oidc-token-url", token_url.as_str(), "--timeout", "2s"];
    let ok = app
        .stack
        .cli(&[&base[..], &["--password", test_harness::oidc::PASSWORD, "send", "general", "hi"]].concat())
        .await
        .expect("chat-cli");
    assert_eq!(ok.code, Some(0), "{}\n{}", ok.stdout, ok.stderr);
    let refused = app
        .stack
        .cli(&[&base[..], &["--password", "bad-pw-7f3c", "send", "general", "hi"]].concat())
        .await
        .expect("chat-cli");
    assert_eq!(refused.code.expect("exit code"), 3, "{}", refused.stderr);
    assert!(refused.stderr.contains("Keycloak refused the login of alice (401"), "{}", refused.stderr);
    assert!(!refused.stderr.contains("bad-pw-7f3c"), "the password is never echoed");
}

/// nats.conf turns on message tracing for CHAT, and NATS 2.12 then stores `traceparent`
/// as `Xraceparent`: the consumer must still continue the producer's trace.
#[tokio::test(flavor = "multi_thread")]
async fn with_the_project_config_a_consumer_still_continues_the_producers_trace() {
    let app = TestApp::spawn().await;
    let _worker = app.stack.spawn_service("persist-worker", &[]).await.expect("worker");
    let token = app.issuer.token(&app.issuer.claims("alice", &["chat-user"]));
    let sent =
        app.stack.cli_ok(&["--token", &token, "--user", "alice", "send", "general", "traced"]).await.expect("send");
    let trace_id = sent[0]["trace_id"].as_str().expect("trace id").to_owned();
    let trace =
        app.stack.otlp.wait_for_spans_in_trace(&trace_id, "process chat.msg.*.*", 1, WAIT).await.expect("consumer");
    trace.assert_child_of(trace.one("process chat.msg.*.*"), trace.one("publish chat.msg.*.*"));
}

#[tokio::test(flavor = "multi_thread")]
async fn login_caches_the_token_for_the_owner_only_and_later_commands_use_it() {
    use std::os::unix::fs::PermissionsExt as _;
    let app = TestApp::spawn().await;
    let _worker = app.stack.spawn_service("persist-worker", &[]).await.expect("worker");
    let cache = tempfile::tempdir().expect("cache dir");
    let run = |args: Vec<String>| {
        let mut cmd = tokio::process::Command::new(test_harness::cargo_bin("chat-cli"));
        cmd.args(["--nats-url", &app.stack.nats.url(), "--user", "alice", "--timeout", "2s"])
            .args(args)
            .env("XDG_CACHE_HOME", cache.path())
            .env("OTEL_SDK_DISABLED", "true");
        async move { cmd.output().await.expect("chat-cli") }
    };
    let token_url = app.issuer.token_url();
    let login = run(vec![
        "--oidc-token-url".into(),
        token_url,
        "--password".into(),
        test_harness::oidc::PASSWORD.into(),
        "login".into(),
    ])
    .await;
    assert!(login.status.success(), "{}", String::from_utf8_lossy(&login.stderr));
    let file = cache.path().join("chat-cli/token");
    let mode = std::fs::metadata(&file).expect("cached token").permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "only the owner may read the token");
    assert!(!String::from_utf8_lossy(&login.stdout).contains("eyJ"), "the token is not printed unless asked");
    let send = run(vec!["send".into(), "general".into(), "with the cached token".into()]).await;
    assert!(send.status.success(), "{}", String::from_utf8_lossy(&send.stderr));
}

/// NATS closes a connection when its user JWT expires (the callout gives it the token's
/// `exp`): a long `chat-cli tail` refreshes its token (refresh-token grant) and carries on.
#[tokio::test(flavor = "multi_thread")]
async fn a_tail_session_outlives_its_token() {
    let app = TestApp::spawn().await;
    let _worker = app.stack.spawn_service("persist-worker", &[]).await.expect("worker");
    app.issuer.set_token_lifetime(Duration::from_secs(5));
    let cache = tempfile::tempdir().expect("cache dir");
    let chat_cli = |args: &[&str]| {
        let mut cmd = tokio::process::Command::new(test_harness::cargo_bin("chat-cli"));
        cmd.args(["--nats-url", &app.stack.nats.url(), "--user", "alice", "--timeout", "2s"])
            .args(["--oidc-token-url", &app.issuer.token_url()])
            .args(args)
            .env("XDG_CACHE_HOME", cache.path())
            .env("OTEL_SDK_DISABLED", "true")
            .kill_on_drop(true);
        cmd
    };
    let login = chat_cli(&["--password", test_harness::oidc::PASSWORD, "login"]).output().await.expect("login");
    assert!(login.status.success(), "{}", String::from_utf8_lossy(&login.stderr));
    let tail = chat_cli(&["--json", "tail", "general", "--count", "2"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("tail");
    tokio::time::sleep(Duration::from_secs(1)).await;
    let app = &app;
    let send = |text: &'static str| async move {
        let token = app.issuer.token(&app.issuer.claims("alice", &["chat-user"]));
        app.cli(&token, "alice", &["send", "general", text]).await
    };
    assert_eq!(send("before expiry").await.code, Some(0));
    tokio::time::sleep(Duration::from_secs(7)).await; // the tail's first token has expired
    assert_eq!(send("after expiry").await.code, Some(0));
    let out = tokio::time::timeout(Duration::from_secs(20), tail.wait_with_output())
        .await
        .expect("tail got both messages")
        .expect("tail");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("before expiry") && stdout.contains("after expiry"), "{stdout}");
    assert!(app.issuer.token_requests() >= 2, "the login and at least one refresh");
}

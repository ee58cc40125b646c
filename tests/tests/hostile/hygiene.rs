//! Input that must not reach a terminal, a span or a log as it came.

use test_harness::model::AttributesExt as _;

use crate::app::{App, Options, WAIT};

/// A message that would move the cursor, retitle the terminal and fake a line from bob.
#[tokio::test(flavor = "multi_thread")]
async fn terminal_control_sequences_in_a_message_are_printed_escaped() {
    let app = App::spawn(Options { history: true, ..Options::default() }).await;
    let hostile = "hi\n#9 2026-01-01T00:00:00Z bob: send me your password\u{1b}]0;pwned\u{7}\u{202e}";
    let sent = app.cli_as("alice", &["send", "general", hostile]).await;
    assert_eq!(sent.code, Some(0), "{}", sent.stderr);
    app.wait_rows("stored as sent", |rows| rows.iter().any(|r| r.2 == hostile)).await;
    let token = app.token("carol", &["chat-user"]);
    let history = app.stack.cli(&["--token", &token, "--user", "carol", "history", "general"]).await.expect("cli");
    assert_eq!(history.code, Some(0), "{}", history.stderr);
    let out = &history.stdout;
    assert!(!out.contains('\u{1b}') && !out.contains('\u{7}') && !out.contains('\u{202e}'), "{out:?}");
    assert!(!out.lines().any(|l| l.starts_with("#9 ")), "a line faked as bob's: {out}");
    assert!(out.contains("hi\\u{a}#9") && out.contains("\\u{1b}]0;pwned"), "{out}");
}

/// Credentials in the JWKS URL reach neither a span nor a log line nor the output.
#[tokio::test(flavor = "multi_thread")]
async fn credentials_in_the_jwks_url_are_redacted_everywhere() {
    let issuer = test_harness::oidc::TestIssuer::start().await.expect("issuer");
    let with_credentials =
        format!("{}/protocol/openid-connect/certs", issuer.issuer()).replace("http://", "http://jwks-user:s3cr3t-pw@");
    drop(issuer);
    let env = [("OIDC_JWKS_URL", with_credentials.as_str())];
    // The URL points at a stopped issuer: fetches fail, and the errors name the URL.
    let stack = test_harness::ChatStack::start_secured().await.expect("stack");
    let mut cmd = stack.service_command("auth-service", test_harness::free_port());
    cmd.envs(env).env("OIDC_ISSUER", "http://127.0.0.1:1/realms/chat").env("JWKS_MIN_REFRESH", "100ms");
    let mut auth = test_harness::ChildProcess::spawn("auth-service", cmd).expect("auth-service");
    auth.wait_for_output("JWKS not refreshed", WAIT).await.expect("a failed fetch logged");
    let spans = stack
        .otlp
        .wait_for(WAIT, "the GET span", |c| {
            let gets: Vec<_> = c.spans.iter().filter(|s| s.name == "GET").cloned().collect();
            (!gets.is_empty()).then_some(gets)
        })
        .await
        .expect("GET spans");
    assert!(spans.iter().all(|s| s.attributes.str("url.full").is_some_and(|u| u.contains("REDACTED:REDACTED@"))));
    let everything = format!("{:?}\n{}", stack.otlp.captured(), auth.output());
    assert!(!everything.contains("s3cr3t-pw"), "the password leaked");
    assert!(!everything.contains("jwks-user"), "the user name leaked");
}

/// `DEMO_FAULTS` is off unless the stack is started for the demo: a user asking for a
/// poison or crash fault gets an ordinary stored message.
#[tokio::test(flavor = "multi_thread")]
async fn demo_faults_are_ignored_unless_turned_on() {
    let mut app = App::spawn(Options::default()).await;
    for fault in ["poison", "crash-after-commit", "fail-once"] {
        let sent = app.cli_as("alice", &["send", "general", fault, "--fault", fault]).await;
        assert_eq!(sent.code, Some(0), "{}", sent.stderr);
    }
    app.wait_rows("all three stored", |rows| rows.len() == 3).await;
    assert!(app.worker.process.exit_status().is_none(), "the worker did not crash");
    assert!(app.dead_letters().await.is_empty(), "nothing dead-lettered");
}

/// Text log lines written to a pipe (`docker logs`, a file, CI) carry no colour codes; a
/// terminal still gets colour.
#[tokio::test(flavor = "multi_thread")]
async fn log_lines_into_a_pipe_carry_no_colour_codes() {
    let stack = test_harness::ChatStack::start().await.expect("stack");
    let history = stack
        .spawn_service("history-service", &[("LOG_FORMAT", "text"), ("RUST_LOG", "info")])
        .await
        .expect("history-service");
    let output = history.process.output();
    assert!(output.contains("INFO"), "text log lines expected: {output}");
    assert!(!output.contains('\u{1b}'), "colour codes in piped log lines: {output:?}");
}

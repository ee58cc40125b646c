//! `chat-cli trace` prints the right tree for each seed scenario, read from a stand-in
//! for Tempo's trace API that serves the spans the services really exported, in Tempo's
//! v2 JSON shape (the full-stack tier does the same against real Tempo).

use std::time::Duration;

use stack_checks::scenarios::{assert_cli_traces, send_seed_scenarios_as};
use test_harness::ChatStack;
use test_harness::oidc::TestIssuer;
use test_harness::tempo_stub::TempoStub;

const WAIT: Duration = Duration::from_secs(30);

#[tokio::test(flavor = "multi_thread")]
async fn chat_cli_trace_prints_each_seed_scenario_as_its_tree() {
    let stack = ChatStack::start_secured().await.expect("secured stack");
    let issuer = TestIssuer::start().await.expect("issuer");
    let _auth = stack.spawn_service("auth-service", &[("OIDC_ISSUER", issuer.issuer())]).await.expect("auth");
    let worker_env = [("DEMO_FAULTS", "true"), ("NAK_DELAY", "200ms"), ("PROCESSING_DEADLINE", "1s")];
    let _worker = stack.spawn_service("persist-worker", &worker_env).await.expect("worker");
    let _history = stack.spawn_service("history-service", &[]).await.expect("history");
    let token = issuer.token(&issuer.claims("alice", &["chat-user"]));
    let stack = &stack;
    let sent = send_seed_scenarios_as(stack, &token).await;
    for (id, name, count) in [
        (&sent.plain, "process chat.msg.*.*", 1),
        (&sent.retried, "process chat.msg.*.*", 2),
        (&sent.slow, "process chat.msg.*.*", 2),
        (&sent.poison, "publish chat.dlq.*", 1),
    ] {
        stack.otlp.wait_for_spans_in_trace(id, name, count, WAIT).await.expect("the scenario's spans");
    }

    let tempo = TempoStub::start(stack.otlp.spans_of()).await.expect("Tempo stand-in");
    let tempo_url = tempo.url().to_owned();
    let spans_of = stack.otlp.spans_of();
    assert_cli_traces(&sent, stack, &tempo_url, |id| {
        let spans = spans_of(&id);
        async move { spans }
    })
    .await;

    // Bad input: a clear error and exit code 2, nothing fetched.
    let run = stack.cli(&["trace", "../../etc/passwd", "--tempo-url", &tempo_url]).await.expect("chat-cli");
    assert_eq!(run.code, Some(2), "{}", run.stderr);
    assert!(run.stderr.contains("not a trace id"), "{}", run.stderr);
    // An id Tempo does not know: waits, then says so.
    let unknown = "0123456789abcdef0123456789abcdef";
    let run = stack.cli(&["trace", unknown, "--tempo-url", &tempo_url, "--wait", "1s"]).await.expect("chat-cli");
    assert_eq!(run.code, Some(1), "{}", run.stderr);
    assert!(run.stderr.contains(unknown) && run.stderr.contains("timed out"), "{}", run.stderr);
}

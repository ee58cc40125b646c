//! chat-cli against a real nats-server and the real services: live tail, load, and the
//! exit codes of each failure.

use std::time::Duration;

use test_harness::ChatStack;
use test_harness::model::SpanKind;

const WAIT: Duration = Duration::from_secs(30);

#[tokio::test(flavor = "multi_thread")]
async fn tail_prints_live_messages_with_the_senders_trace() {
    let stack = ChatStack::start().await.expect("stack");
    let _worker = stack.spawn_service("persist-worker", &[]).await.expect("worker");
    let mut cmd = std::process::Command::new(test_harness::cargo_bin("chat-cli"));
    cmd.args(["--json", "--nats-url", &stack.nats.url(), "tail", "general", "--count", "2"])
        .envs(stack.otlp.env())
        .env("OTEL_SERVICE_NAME", "chat-cli-tail");
    let mut tail = test_harness::ChildProcess::spawn("chat-cli tail", cmd).expect("tail");
    // Printed once the server has confirmed the subscription.
    tail.wait_for_output("tailing chat.msg.general.*", WAIT).await.expect("subscribed");
    let sent = stack.cli_ok(&["send", "general", "live", "--count", "2"]).await.expect("send");
    let status = tail.wait_exit(WAIT).await.expect("tail exits after two messages");
    assert!(status.success(), "{}", tail.output());
    let printed: Vec<serde_json::Value> = tail.output().lines().filter_map(|l| serde_json::from_str(l).ok()).collect();
    let mut printed_traces: Vec<&str> = printed.iter().filter_map(|l| l["trace_id"].as_str()).collect();
    let mut sent_traces: Vec<&str> = sent.iter().filter_map(|l| l["trace_id"].as_str()).collect();
    printed_traces.sort();
    sent_traces.sort();
    assert_eq!(printed_traces, sent_traces, "tail shows each message's own trace");
    assert!(printed.iter().all(|l| l["text"] == "live" && l["user"] == "alice"));

    let trace =
        stack.otlp.wait_for_spans_in_trace(sent_traces[0], "process chat.msg.*.*", 2, WAIT).await.expect("spans");
    let live = trace.spans().iter().find(|s| s.service_name == "chat-cli-tail").expect("the tail's consumer span");
    assert_eq!(live.kind, SpanKind::Consumer);
    trace.assert_child_of(live, trace.one("publish chat.msg.*.*"));
}

#[tokio::test(flavor = "multi_thread")]
async fn load_sends_at_a_rate_with_faults_and_summarizes() {
    let stack = ChatStack::start().await.expect("stack");
    let _worker = stack
        .spawn_service("persist-worker", &[("DEMO_FAULTS", "true"), ("NAK_DELAY", "100ms")])
        .await
        .expect("worker");
    let summary = stack
        .cli_ok(&[
            "load",
            "--rate",
            "100",
            "--duration",
            "1s",
            "--rooms",
            "general,random",
            "--fail-once",
            "0.1",
            "--poison",
            "0.1",
        ])
        .await
        .expect("load");
    let summary = &summary[0];
    let sent = summary["sent"].as_u64().expect("sent");
    assert!((80..=110).contains(&sent), "about 100 messages in one second at 100/s, got {sent}");
    assert_eq!(summary["acked"], sent, "{summary}");
    assert_eq!(summary["errors"], 0);
    assert!(summary["ack_latency_ms"]["p99"].as_f64().is_some_and(|p| p > 0.0));
    let dead = stack
        .otlp
        .wait_for(WAIT, "the poison messages dead-lettered", |c| {
            test_harness::otlp::latest_sum(&c.metrics, "messages.dead_lettered", &[])
                .filter(|n| *n >= (sent / 10) as f64)
        })
        .await;
    dead.expect("poison share dead-lettered");
}

#[tokio::test(flavor = "multi_thread")]
async fn failures_give_clear_messages_and_exit_codes() {
    let stack = ChatStack::start().await.expect("stack");
    let unreachable = format!("nats://127.0.0.1:{}", test_harness::free_port());
    let run = stack.cli(&["--nats-url", &unreachable, "--timeout", "1s", "send", "general", "x"]).await.expect("cli");
    assert_eq!(run.code, Some(1));
    assert!(run.stderr.contains("cannot reach NATS"), "{}", run.stderr);

    let run = stack.cli(&["send", "Bad Room", "x"]).await.expect("cli");
    assert_eq!(run.code, Some(2));
    assert!(run.stderr.contains("invalid room name"), "{}", run.stderr);

    let run = stack.cli(&["--timeout", "1s", "history", "general"]).await.expect("cli");
    assert_eq!(run.code, Some(1));
    assert!(run.stderr.contains("no service answers chat.history.general.alice"), "{}", run.stderr);

    let run = stack.cli(&["--timeout", "1s", "send", "general", "x"]).await.expect("cli");
    assert_eq!(run.code, Some(1), "no stream yet: {}", run.stderr);
    assert!(run.stderr.contains("no stream stores it") || run.stderr.contains("timed out"), "{}", run.stderr);
}

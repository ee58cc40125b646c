//! `chat-cli tui` in a real terminal (tmux), against real NATS and real Tempo: the seed
//! scenarios sent while it watches the room, then each view and action driven with keys
//! and read off the screen. Tempo 3.0.3 (`TEMPO_BIN`, as the full-stack tier) takes the
//! services' spans directly; the NATS hop comes from nats-trace-bridge.

use std::time::Duration;

use stack_checks::real_backends::{TempoOnly, binaries};
use stack_checks::scenarios::send_seed_scenarios_as;
use stack_checks::tmux::Tmux;
use test_harness::ChatStack;
use test_harness::oidc::TestIssuer;

const WAIT: Duration = Duration::from_secs(60);

#[tokio::test(flavor = "multi_thread")]
async fn the_tui_shows_each_message_with_its_fate_its_waterfall_and_copies_its_trace_id() {
    let Some((tempo_bin, _)) = binaries() else {
        println!("skipped: set TEMPO_BIN and LOKI_BIN (real Tempo 3.0.3 and Loki 3.7.6 binaries) to run this tier");
        return;
    };
    let tempo = TempoOnly::start(&tempo_bin).await.expect("Tempo");
    let mut stack = ChatStack::start_secured().await.expect("secured stack");
    let export = tempo.export_env();
    stack.export_to(&export.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect::<Vec<_>>());
    let issuer = TestIssuer::start().await.expect("issuer");
    let _auth = stack.spawn_service("auth-service", &[("OIDC_ISSUER", issuer.issuer())]).await.expect("auth");
    let worker_env = [("DEMO_FAULTS", "true"), ("NAK_DELAY", "200ms"), ("PROCESSING_DEADLINE", "2s")];
    let _worker = stack.spawn_service("persist-worker", &worker_env).await.expect("worker");
    let _history = stack.spawn_service("history-service", &[]).await.expect("history");
    let _hop = stack.spawn_service("nats-trace-bridge", &[("OTEL_SERVICE_NAME", "nats-server")]).await.expect("hop");
    let token = issuer.token(&issuer.claims("bob", &["chat-user"]));

    let tempo_url = tempo.tempo.url();
    let command = stack.cli_command(&["--token", &token, "--user", "bob", "tui", "general", "--tempo-url", &tempo_url]);
    let command = command.as_std();
    let envs = command.get_envs().filter_map(|(k, v)| Some((k, v?)));
    let tui = Tmux::start(160, 48, command.get_program(), command.get_args(), envs).expect("tmux");
    tui.wait_for("the empty room", WAIT, |s| s.contains("waiting for messages")).await.expect("started");

    // 1. The messages pane: each seed scenario's message arrives live, then its fate.
    let sent = send_seed_scenarios_as(&stack, &issuer.token(&issuer.claims("alice", &["chat-user"]))).await;
    let fates = [
        ("e2e plain", sent.plain.as_str(), "stored "),
        ("e2e fail once", &sent.retried, "stored after 1 retry "),
        ("e2e slow", &sent.slow, "stored after 1 retry (1 timed out)"),
        ("e2e poison", &sent.poison, "dead-lettered after 1 attempt"),
    ];
    let screen = tui
        .wait_for("every message with its fate", WAIT, |s| {
            fates
                .iter()
                .all(|(text, id, fate)| s.lines().any(|l| l.contains(text) && l.contains(fate) && l.contains(id)))
        })
        .await
        .expect("messages");
    println!("{screen}");

    // 2. Ctrl+T the retried message's trace, Enter: its waterfall, the NATS hop and the
    // INSERT tagged, two attempts (the second a redelivery), the settlements as ticks.
    tui.keys(&["C-t"]).expect("keys");
    tui.type_text(&sent.retried).expect("type");
    tui.keys(&["Enter", "Enter"]).expect("keys");
    let waterfall = tui
        .wait_for("the retried message's waterfall", WAIT, |s| {
            s.contains(&format!("trace {}", sent.retried))
                && s.contains("[nats] nats ingress chat.msg.*.*")
                && s.contains("✗ process chat.msg.*.*")
                && s.contains("↻ process chat.msg.*.*")
                && s.contains("[db] INSERT chat.messages")
                && s.contains('↺')
                && s.contains('✓')
        })
        .await
        .expect("waterfall");
    println!("{waterfall}");

    // 3. j, s: the selected span's details (the second row: the sender's publish span,
    // under its `send message` command span).
    tui.keys(&["j", "s"]).expect("keys");
    let details = tui
        .wait_for("span details", WAIT, |s| {
            s.contains("span details") && s.contains("messaging.destination.name = chat.msg.general.alice")
        })
        .await
        .expect("details");
    println!("{details}");

    // 4. t: the trace id through OSC 52 into tmux's buffer, and said on the status line.
    tui.keys(&["s", "t"]).expect("keys");
    tui.wait_for("the copy notice", WAIT, |s| s.contains(&format!("copied {} (OSC 52)", sent.retried)))
        .await
        .expect("notice");
    assert_eq!(tui.copied().as_deref(), Some(sent.retried.as_str()), "OSC 52 carried the trace id");

    // 5. The poison message: r shows its attempt and its dead letter.
    tui.keys(&["Escape", "c", "C-t"]).expect("keys");
    tui.type_text(&sent.poison).expect("type");
    tui.keys(&["Enter", "r"]).expect("keys");
    let related = tui
        .wait_for("the poison message's related pane", WAIT, |s| {
            s.contains("attempt 1 (delivery 1): ERROR") && s.contains("dead letter → chat.dlq.")
        })
        .await
        .expect("related");
    println!("{related}");

    // 6. T: the traces view from Tempo's search; e keeps errors only.
    tui.keys(&["Escape", "c", "T", "e"]).expect("keys");
    let traces = tui
        .wait_for("error traces from Tempo's search", WAIT, |s| {
            s.contains("{ status = error }")
                && [&sent.retried, &sent.slow, &sent.poison].iter().all(|id| s.contains(id.as_str()))
                && !s.contains(&sent.plain)
        })
        .await
        .expect("traces");
    println!("{traces}");

    // 7. q: the program ends (exit 0) and gives the terminal back.
    tui.keys(&["q"]).expect("keys");
    tui.wait_for("exit", Duration::from_secs(10), |_| tui.exited()).await.expect("exited");
    let last = tui.screen().expect("screen");
    assert!(!last.contains("chat-cli tui #general"), "the alternate screen is gone:\n{last}");
}

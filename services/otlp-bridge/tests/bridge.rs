//! The OTLP bridge against the real thing: nats-server with the project's accounts (every
//! service user's permissions), services exporting their spans with
//! `OTEL_TRACES_EXPORTER=nats`, and the test's OTLP receiver behind a gate the test opens,
//! closes and makes refuse.

mod common;

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use async_nats::jetstream;
use axum::body::Bytes;
use common::{Gate, REFUSE, collections_received, logs_received, received, roundtrip};
use test_harness::oidc::TestIssuer;
use test_harness::{ChatStack, ChildProcess, free_port};

const WAIT: Duration = Duration::from_secs(30);

/// `(pending, ack pending, redelivered)` of the bridge's consumer.
async fn consumer_state(js: &jetstream::Context) -> (u64, usize, usize) {
    let stream = js.get_stream("TELEMETRY").await.expect("TELEMETRY");
    let mut consumer: jetstream::consumer::PullConsumer = stream.get_consumer("otlp-bridge").await.expect("consumer");
    let info = consumer.info().await.expect("consumer info");
    (info.num_pending, info.num_ack_pending, info.num_redelivered)
}

async fn until<F: AsyncFn() -> bool>(what: &str, check: F) {
    let deadline = Instant::now() + WAIT;
    while !check().await {
        assert!(Instant::now() < deadline, "{what}: not within {WAIT:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn spans_held_while_the_collector_is_away_join_the_producers_trace_and_refused_ones_are_dead_lettered() {
    let stack = ChatStack::start_secured().await.expect("stack");
    let issuer = TestIssuer::start().await.expect("issuer");
    let over_nats = [("OTEL_TRACES_EXPORTER", "nats")];
    let _auth = stack
        .spawn_service("auth-service", &[("OIDC_ISSUER", issuer.issuer()), over_nats[0]])
        .await
        .expect("auth-service exporting its spans over NATS");
    let _worker = stack.spawn_service("persist-worker", &over_nats).await.expect("worker exporting over NATS");
    let gate = Gate::closed();
    let settings = [
        ("BRIDGE_ENDPOINT", gate.url()),
        ("BRIDGE_FLUSH_INTERVAL", "300ms".to_owned()),
        ("BRIDGE_NAK_DELAY", "200ms".to_owned()),
        ("BRIDGE_PROBE_MAX", "1s".to_owned()),
    ];
    let settings: Vec<(&str, &str)> = settings.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let _bridge = stack.spawn_service("otlp-bridge", &settings).await.expect("bridge");
    let admin = stack.admin().await.expect("admin");
    let js = jetstream::new(admin);

    // The collector is away (nothing listens on the gate's port): a message is sent,
    // chat-cli's spans arrive directly, the worker's and the callout's wait in TELEMETRY.
    let token = issuer.token(&issuer.claims("alice", &["chat-user"]));
    let sent =
        stack.cli_ok(&["--token", &token, "--user", "alice", "send", "general", "while away"]).await.expect("send");
    let trace_id = sent[0]["trace_id"].as_str().expect("trace id").to_owned();
    // Held: fetched, not settled; what came after waits in the stream (no fetch while open).
    until("the worker's spans are in TELEMETRY and held by the bridge", async || consumer_state(&js).await.1 > 0).await;
    tokio::time::sleep(Duration::from_secs(2)).await; // probes fail meanwhile
    let early = stack.otlp.trace(&trace_id);
    assert!(early.spans().iter().all(|s| s.service_name != "persist-worker"), "nothing passed the closed gate");
    assert_eq!(consumer_state(&js).await.2, 0, "held messages are not naked: no delivery spent");

    // The collector is back: the held spans arrive, in the producer's trace.
    gate.open(stack.otlp.http_endpoint()).await;
    stack
        .otlp
        .wait_for_spans_in_trace(&trace_id, "process chat.msg.*.*", 1, WAIT)
        .await
        .expect("the worker's span, through NATS and the bridge, in chat-cli's trace");
    let trace = stack.otlp.trace(&trace_id);
    let (producer, consumer) = (trace.one("publish chat.msg.*.*"), trace.one("process chat.msg.*.*"));
    assert_eq!(producer.service_name, "chat-cli", "sent directly over OTLP");
    assert_eq!(consumer.service_name, "persist-worker", "sent through TELEMETRY and the bridge");
    trace.assert_child_of(consumer, producer);
    until("the callout's spans arrive from account AUTH", async || {
        stack.otlp.captured().spans.iter().any(|s| s.service_name == "auth-service")
    })
    .await;
    until("TELEMETRY drained", async || {
        let (pending, ack_pending, _) = consumer_state(&js).await;
        pending == 0 && ack_pending == 0
    })
    .await;
    assert_eq!(consumer_state(&js).await.2, 0, "no redelivery: the breaker held the batch");
    until("exported and failed posts counted", async || {
        let exported = stack.otlp.counter_value("otlp_bridge.messages", &[("signal", "spans"), ("result", "exported")]);
        let away = stack.otlp.counter_value("otlp_bridge.export.failures", &[("reason", "unavailable")]);
        exported.is_some_and(|n| n >= 1.0) && away.is_some_and(|n| n >= 1.0)
    })
    .await;

    // The collector refuses what the worker sends next: after 4 deliveries it is a dead
    // letter with its reason, and TELEMETRY is empty again.
    gate.mode.store(REFUSE, Ordering::Relaxed);
    stack.cli_ok(&["--token", &token, "--user", "alice", "send", "general", "refused"]).await.expect("send");
    until("a dead letter in TELEMETRY_DLQ", async || match js.get_stream("TELEMETRY_DLQ").await {
        Ok(mut dlq) => dlq.info().await.is_ok_and(|info| info.state.messages > 0),
        Err(_) => false,
    })
    .await;
    let dlq = js.get_stream("TELEMETRY_DLQ").await.expect("DLQ");
    let letter = dlq.get_last_raw_message_by_subject("telemetry.dlq.spans").await.expect("a spans dead letter");
    let header = |name: &str| letter.headers.get(name).map(|v| v.as_str().to_owned());
    assert_eq!(header("Telemetry-Dlq-Reason").as_deref(), Some("http_400"));
    assert_eq!(header("Telemetry-Dlq-Deliveries").as_deref(), Some("4"));
    assert!(header("Telemetry-Dlq-Subject").is_some_and(|s| s.starts_with("telemetry.spans.")));
    until("TELEMETRY drained after the dead letter", async || {
        let (pending, ack_pending, _) = consumer_state(&js).await;
        pending == 0 && ack_pending == 0
    })
    .await;
}

#[tokio::test]
async fn the_bridge_refuses_to_send_its_own_telemetry_through_itself() {
    let mut cmd = std::process::Command::new(test_harness::cargo_bin("otlp-bridge"));
    cmd.env("OTEL_TRACES_EXPORTER", "nats").env("OTEL_METRICS_EXPORTER", "none").env("OTEL_LOGS_EXPORTER", "none");
    cmd.env("NATS_URL", "nats://127.0.0.1:1").env("HEALTH_ADDR", format!("127.0.0.1:{}", free_port()));
    let mut bridge = ChildProcess::spawn("otlp-bridge", cmd).expect("spawn");
    let status = bridge.wait_exit(WAIT).await.expect("exits");
    assert!(!status.success());
    assert!(bridge.output().contains("OTEL_TRACES_EXPORTER=nats would send the bridge's own telemetry through itself"));
}

/// The point of the feature: with the collector away while a service works and then
/// stops, its spans on the direct OTLP path are lost; through NATS every one arrives.
#[tokio::test(flavor = "multi_thread")]
async fn a_collector_outage_loses_the_direct_paths_spans_and_none_of_those_sent_through_nats() {
    let stack = ChatStack::start().await.expect("stack");
    let gate = Gate::closed();
    let bridge_env = [("BRIDGE_ENDPOINT", gate.url()), ("BRIDGE_PROBE_MAX", "1s".to_owned())];
    let bridge_env: Vec<(&str, &str)> = bridge_env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let _bridge = stack.spawn_service("otlp-bridge", &bridge_env).await.expect("bridge");
    let direct_env =
        [("OTEL_EXPORTER_OTLP_ENDPOINT", gate.url()), ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf".into())];
    let direct_env: Vec<(&str, &str)> = direct_env.iter().map(|(k, v)| (*k, v.as_str())).collect();

    // The collector is away while both run, publish 200 messages each, and exit.
    let direct = roundtrip(&stack, "direct", 200, None, &direct_env).await;
    let via_nats = roundtrip(&stack, "via-nats", 200, None, &[("OTEL_TRACES_EXPORTER", "nats")]).await;
    gate.open(stack.otlp.http_endpoint()).await;
    until("every trace sent through NATS arrives whole", async || received(&stack, "via-nats", &via_nats).0 == 200)
        .await;
    let (direct_complete, direct_spans, _) = received(&stack, "direct", &direct);
    let (nats_complete, nats_spans, duplicates) = received(&stack, "via-nats", &via_nats);
    println!(
        "collector away for the whole run of 200 messages: direct OTLP kept {direct_complete} traces \
         ({direct_spans} spans); through NATS {nats_complete} ({nats_spans} spans, {duplicates} received twice)"
    );
    assert_eq!(direct_complete, 0, "the direct path cannot keep what it could not send");
}

/// A bridge killed mid-batch, twice, while batches flow: every span arrives; a batch
/// posted and then redelivered because its ack was lost arrives twice (at least once).
#[tokio::test(flavor = "multi_thread")]
async fn a_bridge_killed_twice_mid_batch_loses_nothing() {
    let stack = ChatStack::start().await.expect("stack");
    let receiver = stack.otlp.http_endpoint();
    let env = [("BRIDGE_ENDPOINT", receiver.as_str()), ("BRIDGE_BATCH_SIZE", "5")];
    let mut bridge = stack.spawn_service("otlp-bridge", &env).await.expect("bridge");
    // Many small batches (20 spans each), so that the kills land between a post and its ack.
    let small = [("OTEL_TRACES_EXPORTER", "nats"), ("OTEL_BSP_MAX_EXPORT_BATCH_SIZE", "20")];
    let producer = {
        let stack = &stack;
        async move { roundtrip(stack, "via-nats", 400, None, &small).await }
    };
    let (stack_ref, env_ref) = (&stack, &env);
    let killer = async move {
        let mut forwarded = 0;
        for _ in 0..2 {
            until("the bridge forwards", async || received(stack_ref, "via-nats", &[]).1 > forwarded).await;
            forwarded = received(stack_ref, "via-nats", &[]).1;
            tokio::time::sleep(Duration::from_millis(300)).await;
            bridge.process.kill();
            bridge = stack_ref.spawn_service("otlp-bridge", env_ref).await.expect("bridge again");
        }
        bridge
    };
    let (traces, _bridge) = tokio::join!(producer, killer);
    until("every trace arrives whole after two kills", async || received(&stack, "via-nats", &traces).0 == 400).await;
    let (_, spans, duplicates) = received(&stack, "via-nats", &traces);
    println!("bridge SIGKILLed twice: 400 of 400 traces whole, {spans} distinct spans, {duplicates} received twice");
}

/// A payload the collector can never read is dead-lettered after its 4th delivery; the
/// batches around it still arrive, and the bridge keeps running.
#[tokio::test(flavor = "multi_thread")]
async fn a_malformed_batch_is_dead_lettered_and_the_rest_flows() {
    let stack = ChatStack::start().await.expect("stack");
    let receiver = stack.otlp.http_endpoint();
    let env = [("BRIDGE_ENDPOINT", receiver.as_str()), ("BRIDGE_NAK_DELAY", "200ms")];
    let mut bridge = stack.spawn_service("otlp-bridge", &env).await.expect("bridge");
    let client = async_nats::connect(stack.nats_url()).await.expect("client");
    let js = jetstream::new(client);
    js.publish("telemetry.spans.mallory", Bytes::from_static(&[0xff, 0xff, 0xff, 0x07]))
        .await
        .expect("publish")
        .await
        .expect("stored");
    let traces = roundtrip(&stack, "via-nats", 20, None, &[("OTEL_TRACES_EXPORTER", "nats")]).await;
    until("the good batches arrive", async || received(&stack, "via-nats", &traces).0 == 20).await;
    until("the malformed one is a dead letter", async || match js.get_stream("TELEMETRY_DLQ").await {
        Ok(mut dlq) => dlq.info().await.is_ok_and(|info| info.state.messages == 1),
        Err(_) => false,
    })
    .await;
    let letter = js
        .get_stream("TELEMETRY_DLQ")
        .await
        .expect("DLQ")
        .get_last_raw_message_by_subject("telemetry.dlq.spans")
        .await
        .expect("the dead letter");
    assert_eq!(letter.headers.get("Telemetry-Dlq-Subject").map(|v| v.as_str()), Some("telemetry.spans.mallory"));
    assert_eq!(bridge.readyz().await, Some(200), "the bridge keeps running");
    assert!(bridge.process.exit_status().is_none());
}

/// Seed 004's scenario at full scale: both roads at once, each at 1,000 msg/s for 150 s,
/// every signal exported (spans, a log record per message, a metric collection a
/// second), the collector down for 2 minutes in the middle. Through NATS every span, log
/// record and collection arrives once it is back; the direct road's losses are counted.
/// The services' real queue sizes, not the harness's test settings.
#[tokio::test(flavor = "multi_thread")]
async fn a_two_minute_collector_outage_at_1000_messages_a_second_loses_nothing_sent_through_nats() {
    const RATE: u32 = 1000;
    const SECONDS: u32 = 150;
    let stack = ChatStack::start().await.expect("stack");
    let gate = Gate::closed();
    gate.open(stack.otlp.http_endpoint()).await;
    let bridge_env = [("BRIDGE_ENDPOINT", gate.url()), ("BRIDGE_PROBE_MAX", "2s".to_owned())];
    let bridge_env: Vec<(&str, &str)> = bridge_env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let _bridge = stack.spawn_service("otlp-bridge", &bridge_env).await.expect("bridge");
    let service = [
        ("OTEL_BSP_MAX_QUEUE_SIZE", "16384"),
        ("OTEL_BSP_SCHEDULE_DELAY", "5000"),
        ("OTEL_BLRP_MAX_QUEUE_SIZE", "2048"),
        ("OTEL_BLRP_SCHEDULE_DELAY", "1000"),
        ("OTEL_METRIC_EXPORT_INTERVAL", "1000"),
    ];
    let (endpoint, otlp) = (gate.url(), "otlp");
    let direct = [
        ("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint.as_str()),
        ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf"),
        ("OTEL_LOGS_EXPORTER", otlp),
        ("OTEL_METRICS_EXPORTER", otlp),
    ];
    let nats = [("OTEL_TRACES_EXPORTER", "nats"), ("OTEL_LOGS_EXPORTER", "nats"), ("OTEL_METRICS_EXPORTER", "nats")];
    let (direct, nats) = ([&service[..], &direct].concat(), [&service[..], &nats].concat());
    let count = (RATE * SECONDS) as usize;
    let started = Instant::now();
    let outage = async {
        tokio::time::sleep(Duration::from_secs(15)).await;
        gate.close().await;
        tokio::time::sleep(Duration::from_secs(120)).await;
        gate.open(stack.otlp.http_endpoint()).await;
    };
    let (direct_traces, nats_traces, ()) = tokio::join!(
        roundtrip(&stack, "direct", count, Some(RATE), &direct),
        roundtrip(&stack, "via-nats", count, Some(RATE), &nats),
        outage
    );
    let seconds = started.elapsed().as_secs();
    println!("both roads: {count} messages each in {seconds} s ({} msg/s each)", count as u64 / seconds.max(1));
    // The bridge drains the outage's backlog (~16,900 spans/s here; a slower machine
    // takes longer): a deadline for a hang, not a speed test.
    let deadline = Instant::now() + Duration::from_secs(300);
    while received(&stack, "via-nats", &nats_traces).0 < count || logs_received(&stack, "via-nats").0 < count {
        assert!(
            Instant::now() < deadline,
            "through NATS: {:?} traces, {:?} logs",
            received(&stack, "via-nats", &nats_traces),
            logs_received(&stack, "via-nats")
        );
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    tokio::time::sleep(Duration::from_secs(5)).await;
    let report = |name: &str, traces: &[String]| {
        let (complete, spans, twice) = received(&stack, name, traces);
        let (logs, logs_twice) = logs_received(&stack, name);
        let collections = collections_received(&stack, name);
        println!(
            "{name:8}: {complete} of {count} traces whole ({spans} spans, {twice} twice), {logs} of {count} log records \
             ({logs_twice} twice), {collections} metric collections in a {seconds} s run"
        );
        (complete, logs, collections)
    };
    let (nats_complete, nats_logs, nats_collections) = report("via-nats", &nats_traces);
    let (direct_complete, direct_logs, direct_collections) = report("direct", &direct_traces);
    assert_eq!((nats_complete, nats_logs), (count, count), "through NATS: every trace and log record");
    // One collection a second, carried through the outage (slack for a starved reader).
    assert!(nats_collections as u64 + 10 >= seconds, "through NATS: {nats_collections} collections in {seconds} s");
    assert!(direct_complete < count && direct_logs < count, "the direct road cannot keep 2 minutes of telemetry");
    assert!(direct_collections + 100 < nats_collections, "the direct road loses the outage's collections");
}

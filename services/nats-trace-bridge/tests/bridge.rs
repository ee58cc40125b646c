//! The NATS hop in real traces: nats-server 2.12 with the project's nats.conf (msg_trace on
//! CHAT), chat-cli through the auth callout, the worker, and the bridge.

use std::time::Duration;

use chat_protocol::{DLQ_STREAM, STREAM};
use test_harness::model::{AttributesExt as _, SpanKind, SpanRecord};
use test_harness::oidc::TestIssuer;
use test_harness::otlp::latest_sum;
use test_harness::service_graph::{ConnectionType, Edge, ServiceGraph};
use test_harness::trace::Trace;
use test_harness::{ChatStack, ChildProcess, Service};

const WAIT: Duration = Duration::from_secs(30);
const NATS_SPAN: &str = "nats ingress chat.msg.*.*";
const PRODUCER: &str = "publish chat.msg.*.*";

struct TestApp {
    stack: ChatStack,
    token: String,
    bridge: Service,
    _issuer: TestIssuer,
    _services: Vec<Service>,
}

impl TestApp {
    async fn spawn() -> Self {
        let stack = ChatStack::start_secured().await.expect("stack");
        let issuer = TestIssuer::start().await.expect("issuer");
        let auth = stack.spawn_service("auth-service", &[("OIDC_ISSUER", issuer.issuer())]).await.expect("auth");
        let worker = stack.spawn_service("persist-worker", &[]).await.expect("worker");
        let history = stack.spawn_service("history-service", &[]).await.expect("history");
        let bridge =
            stack.spawn_service("nats-trace-bridge", &[("OTEL_SERVICE_NAME", "nats-server")]).await.expect("bridge");
        let token = issuer.token(&issuer.claims("alice", &["chat-user"]));
        Self { stack, token, bridge, _issuer: issuer, _services: vec![auth, worker, history] }
    }

    /// `chat-cli send general <text> <args>` as alice: (stream sequence, trace id).
    async fn send(&self, text: &str, args: &[&str]) -> (u64, String) {
        let base = ["--token", self.token.as_str(), "--user", "alice", "send", "general", text];
        let sent = self.stack.cli_ok(&[&base[..], args].concat()).await.expect("send");
        (sent[0]["seq"].as_u64().expect("seq"), sent[0]["trace_id"].as_str().expect("trace id").to_owned())
    }

    /// The trace of a sent message once its NATS hop and the consumer's insert arrived.
    async fn hop_trace(&self, trace_id: &str) -> Trace {
        let otlp = &self.stack.otlp;
        for name in [NATS_SPAN, "process chat.msg.*.*", "INSERT chat.messages"] {
            otlp.wait_for_spans_in_trace(trace_id, name, 1, WAIT).await.unwrap_or_else(|e| panic!("{name}: {e}"));
        }
        otlp.trace(trace_id)
    }

    /// The test-only admin: raw publishes and stored-message reads no service user may do.
    async fn service_user(&self) -> async_nats::Client {
        self.stack.admin().await.expect("test admin")
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn the_nats_hop_sits_between_producer_and_consumer_with_storage_and_egress() {
    let app = TestApp::spawn().await;
    // A live subscriber: its delivery is an egress step of the NATS hop.
    let mut cmd = std::process::Command::new(test_harness::cargo_bin("chat-cli"));
    cmd.args([
        "--nats-url",
        &app.stack.nats.url(),
        "--token",
        &app.token,
        "--user",
        "alice",
        "tail",
        "general",
        "--count",
        "1",
    ])
    .env("OTEL_SDK_DISABLED", "true");
    let mut tail = ChildProcess::spawn("tail", cmd).expect("tail");
    tail.wait_for_output("tailing chat.msg.general.*", WAIT).await.expect("subscribed");

    let (_, trace_id) = app.send("through nats", &[]).await;
    let trace = app.hop_trace(&trace_id).await;
    let hop = assert_hop_between_producer_and_consumer(&trace);
    assert!(trace.parent_of(trace.one(PRODUCER)).is_some(), "scenario 1: the producer has a caller");
    let egress = hop.events.iter().find(|e| e.name == "egress").expect("the live subscriber's delivery");
    assert_eq!(egress.attributes.str("nats.subscription"), Some("chat.msg.general.*"));
    // Who received it: the receiving client's kind and name, and its account (the server
    // omits `acc` on an egress in the publisher's own account).
    assert_eq!(egress.attributes.str("nats.client.kind"), Some("client"));
    assert_eq!(egress.attributes.str("nats.client.name"), Some("chat-cli"));
    assert_eq!(egress.attributes.str("nats.account"), Some("CHAT"));
    assert_eq!(tail.wait_exit(WAIT).await.map(|s| s.success()), Ok(true));

    // The service map: the hop is INTERNAL, so it takes no edge from the consumer (Tempo
    // keys an edge by the producer span; a second server-side child would lose one).
    let graph = ServiceGraph::of(trace.spans());
    assert!(graph.conflicts.is_empty(), "{:?}\n{}", graph.conflicts, trace.tree());
    let consumer_edge = Edge::new("chat-cli", "persist-worker", ConnectionType::MessagingSystem);
    assert_eq!(graph.edges.get(&consumer_edge), Some(&1), "{graph:?}");
    assert!(graph.edges.keys().any(|e| e.client == "persist-worker" && e.connection_type == ConnectionType::Database));
    assert!(!graph.touches("nats-server"), "{graph:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn scenario_2_has_the_hop_and_the_servers_trace_header_never_becomes_data() {
    let app = TestApp::spawn().await;
    let (seq, trace_id) = app.send("no caller", &["--no-caller-span"]).await;
    let trace = app.hop_trace(&trace_id).await;
    assert_hop_between_producer_and_consumer(&trace);
    assert_eq!(trace.one(PRODUCER).parent_span_id, None, "scenario 2: the producer is the root");

    // The server marks the stored message so that it is not traced again: 2.11-2.13 rename
    // `traceparent` to `Xraceparent` (what 2.12 does here), 2.14+ add `Nats-Trace-Dest:
    // trace disabled` instead.
    let client = app.service_user().await;
    let js = async_nats::jetstream::new(client.clone());
    let stored = js.get_stream(STREAM).await.expect("stream").get_raw_message(seq).await.expect("stored message");
    let renamed = stored.headers.get("Xraceparent").is_some() && stored.headers.get("traceparent").is_none();
    let disabled = stored.headers.get("Nats-Trace-Dest").is_some_and(|v| v.as_str() == "trace disabled");
    assert!(renamed || disabled, "stored message not marked: {:?}", stored.headers);

    // A message stored the 2.14+ way is processed like any other: the marker is no data.
    let marked_id = "5b8efff798038103d269b633813fc60c";
    let parent = format!("00-{marked_id}-eee19b7ec3c1b174-01");
    let mut headers = async_nats::HeaderMap::new();
    headers.insert("traceparent", parent.as_str());
    headers.insert("Nats-Trace-Dest", "trace disabled");
    js.publish_with_headers("chat.msg.general.alice", headers, r#"{"text":"stored the 2.14 way"}"#.into())
        .await
        .expect("publish")
        .await
        .expect("stored");
    for name in ["process chat.msg.*.*", "INSERT chat.messages"] {
        let arrived = app.stack.otlp.wait_for_spans_in_trace(marked_id, name, 1, WAIT).await;
        arrived.unwrap_or_else(|e| panic!("the marked message is processed in its trace: {name}: {e}"));
    }
    let marked = app.stack.otlp.trace(marked_id);

    // Both are stored as sent, once, without a retry or a dead letter.
    let history = app.stack.cli_ok(&["--token", &app.token, "--user", "alice", "history", "general"]).await;
    let history = history.expect("history");
    let mut texts: Vec<_> = history.iter().filter_map(|l| l["text"].as_str()).collect();
    texts.sort_unstable();
    assert_eq!(texts, ["no caller", "stored the 2.14 way"], "{history:?}");
    for trace in [&trace, &marked] {
        let attempts = trace.named("process chat.msg.*.*");
        assert_eq!(attempts.len(), 1, "{}", trace.tree());
        assert_eq!(attempts[0].attributes.int("messaging.nats.delivery_count"), Some(1));
    }
    let dead_letters = js.get_stream(DLQ_STREAM).await.expect("dlq").info().await.expect("dlq info").state.messages;
    assert_eq!(dead_letters, 0);
}

/// The hop of a traced message: INTERNAL, service nats-server, child of the producer,
/// between producer and consumer in time, with the JetStream store recorded.
fn assert_hop_between_producer_and_consumer(trace: &Trace) -> &SpanRecord {
    let producer = trace.one(PRODUCER);
    let hop = trace.one(NATS_SPAN);
    let consumer = trace.one("process chat.msg.*.*");
    trace.assert_child_of(hop, producer);
    trace.assert_child_of(consumer, producer);
    assert_eq!(hop.service_name, "nats-server");
    assert_eq!(hop.kind, SpanKind::Internal);
    assert!(
        producer.start_unix_nano <= hop.start_unix_nano && hop.start_unix_nano <= consumer.start_unix_nano,
        "{}",
        trace.tree()
    );
    let a = &hop.attributes;
    assert_eq!(a.str("messaging.destination.name"), Some("chat.msg.general.alice"));
    assert_eq!(a.str("nats.account"), Some("CHAT"));
    assert_eq!(a.str("nats.client.name"), Some("chat-cli"));
    assert!(a.str("nats.server.version").is_some_and(|v| v.starts_with("2.1")), "{a:?}");
    let store = hop.event("jetstream.store").expect("the JetStream store step");
    assert_eq!(store.attributes.str("nats.stream"), Some(STREAM));
    hop
}

#[tokio::test(flavor = "multi_thread")]
async fn unsampled_hostile_and_garbage_events_make_no_span_and_break_nothing() {
    let app = TestApp::spawn().await;
    let client = app.service_user().await;
    let js = async_nats::jetstream::new(client.clone());
    let unsampled = "4bf92f3577b34da6a3ce929d0e0e4736";
    for traceparent in [format!("00-{unsampled}-00f067aa0ba902b7-00"), "00-not-valid-01".to_owned()] {
        let mut headers = async_nats::HeaderMap::new();
        headers.insert("traceparent", traceparent.as_str());
        js.publish_with_headers("chat.msg.general.bob", headers, r#"{"text":"x"}"#.into())
            .await
            .expect("pub")
            .await
            .expect("ack");
    }
    for garbage in ["not json", "{\"server\":{}}", "[1,2,3]"] {
        client.publish("nats.trace.events", garbage.into()).await.expect("garbage");
    }
    client.flush().await.expect("flush");

    // A sampled message afterwards is still bridged.
    let (_, marker) = app.send("marker", &[]).await;
    app.stack.otlp.wait_for_spans_in_trace(&marker, NATS_SPAN, 1, WAIT).await.expect("bridge still works");
    let counted = app.stack.otlp.wait_for(WAIT, "garbage counted", |c| {
        latest_sum(&c.metrics, "nats.trace_events", &[("result", "malformed")]).filter(|n| *n >= 3.0)
    });
    counted.await.expect("malformed events counted");
    let nats_spans: Vec<_> = app.stack.otlp.captured().spans.into_iter().filter(|s| s.name == NATS_SPAN).collect();
    assert_eq!(nats_spans.len(), 1, "only the sampled marker has a NATS span: {nats_spans:?}");
    assert_eq!(nats_spans[0].trace_id, marker);
    assert_eq!(app.bridge.readyz().await, Some(200));
}

/// The latest value of gauge `name` of service nats-server with these attributes.
fn server_gauge(c: &test_harness::otlp::Captured, name: &str, attrs: &[(&str, &str)]) -> Option<f64> {
    c.metrics.iter().rev().filter(|m| m.name == name && m.service_name == "nats-server").find_map(|m| {
        m.points.iter().find_map(|p| {
            let matches = attrs.iter().all(|(k, v)| p.attributes.str(k) == Some(*v));
            match (matches, &p.value) {
                (true, test_harness::model::MetricValue::Gauge(v)) => Some(*v),
                _ => None,
            }
        })
    })
}

/// Issue 20: the lag was the worker's own gauge, so it read 0 while the worker was down
/// and 1,500 messages waited. The bridge reads it from the server: with no worker
/// running, the messages sent show as pending; a worker started drains them to 0.
#[tokio::test(flavor = "multi_thread")]
async fn the_consumer_lag_is_seen_from_the_server_while_no_worker_runs() {
    let stack = ChatStack::start_secured().await.expect("stack");
    stack.set_up_streams(&[]).await.expect("streams and consumer, no worker");
    let admin = stack.admin().await.expect("test admin");
    let js = async_nats::jetstream::new(admin);
    const SENT: u64 = 150;
    for i in 0..SENT {
        let body = format!(r#"{{"room":"general","user":"alice","text":"waiting {i}"}}"#);
        js.publish("chat.msg.general.alice", body.into()).await.expect("publish").await.expect("stored");
    }
    // The harness gives the bridge NATS_MONITOR_URL, as compose does.
    let _bridge =
        stack.spawn_service("nats-trace-bridge", &[("OTEL_SERVICE_NAME", "nats-server")]).await.expect("bridge");
    let consumer = [("stream", STREAM), ("consumer", chat_protocol::CONSUMER)];
    let pending = stack
        .otlp
        .wait_for(WAIT, "the pending messages, with no worker", |c| {
            server_gauge(c, "nats.consumer.pending", &consumer).filter(|v| *v > 0.0)
        })
        .await
        .expect("nats.consumer.pending from the server");
    assert_eq!(pending, SENT as f64, "every message sent waits for the worker");
    let c = stack.otlp.captured();
    assert_eq!(server_gauge(&c, "nats.stream.messages", &[("stream", STREAM)]), Some(SENT as f64));
    assert_eq!(server_gauge(&c, "nats.stream.messages", &[("stream", DLQ_STREAM)]), Some(0.0));
    assert_eq!(server_gauge(&c, "nats.consumer.ack_pending", &consumer), Some(0.0));

    let _worker = stack.spawn_service("persist-worker", &[]).await.expect("worker");
    stack
        .otlp
        .wait_for(Duration::from_secs(60), "the lag back at 0 once a worker runs", |c| {
            let drained = server_gauge(c, "nats.consumer.pending", &consumer) == Some(0.0)
                && server_gauge(c, "nats.consumer.ack_pending", &consumer) == Some(0.0);
            drained.then_some(())
        })
        .await
        .expect("drained");
    let worker_gauges: Vec<_> = stack
        .otlp
        .captured()
        .metrics
        .iter()
        .filter(|m| m.service_name == "persist-worker" && m.name.starts_with("nats.consumer"))
        .map(|m| m.name.clone())
        .collect();
    assert!(worker_gauges.is_empty(), "one source of the lag, the server: {worker_gauges:?}");
}

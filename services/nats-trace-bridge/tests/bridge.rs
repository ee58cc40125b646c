//! The NATS hop in real traces: nats-server 2.12 with the project's nats.conf (msg_trace on
//! CHAT), chat-cli through the auth callout, the worker, and the bridge.

use std::time::Duration;

use test_harness::model::{AttributesExt as _, SpanKind};
use test_harness::oidc::TestIssuer;
use test_harness::otlp::latest_sum;
use test_harness::service_graph::{ConnectionType, Edge, ServiceGraph};
use test_harness::{ChatStack, ChildProcess, Service};

const WAIT: Duration = Duration::from_secs(30);
const NATS_SPAN: &str = "nats ingress chat.msg.*.*";

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
        let bridge =
            stack.spawn_service("nats-trace-bridge", &[("OTEL_SERVICE_NAME", "nats-server")]).await.expect("bridge");
        let token = issuer.token(&issuer.claims("alice", &["chat-user"]));
        Self { stack, token, bridge, _issuer: issuer, _services: vec![auth, worker] }
    }

    async fn send(&self, text: &str) -> String {
        let sent = self
            .stack
            .cli_ok(&["--token", &self.token, "--user", "alice", "send", "general", text])
            .await
            .expect("send");
        sent[0]["trace_id"].as_str().expect("trace id").to_owned()
    }

    async fn service_user(&self) -> async_nats::Client {
        let password = self.stack.secrets["NATS_PERSIST_PASSWORD"].clone();
        async_nats::ConnectOptions::with_user_and_password("persist".into(), password)
            .connect(self.stack.nats.url())
            .await
            .expect("persist user")
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

    let trace_id = app.send("through nats").await;
    let trace = app.stack.otlp.wait_for_spans_in_trace(&trace_id, NATS_SPAN, 1, WAIT).await.expect("nats span");
    let trace = app
        .stack
        .otlp
        .wait_for_spans_in_trace(&trace_id, "INSERT chat.messages", 1, WAIT)
        .await
        .map(|_| trace)
        .expect("the consumer's insert");
    let trace = app.stack.otlp.trace(&trace.spans()[0].trace_id);
    let producer = trace.one("publish chat.msg.*.*");
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
    assert_eq!(store.attributes.str("nats.stream"), Some("CHAT"));
    let egress = hop.events.iter().find(|e| e.name == "egress").expect("the live subscriber's delivery");
    assert_eq!(egress.attributes.str("nats.subscription"), Some("chat.msg.general.*"));
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
    let marker = app.send("marker").await;
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

//! The telemetry crate through a real nats-server 2.12, read back from the OTLP receiver
//! after real export by the `nats-roundtrip` example program.

use std::process::Command;
use std::time::Duration;

use test_harness::model::{AttributesExt as _, SpanKind, StatusCode};
use test_harness::otlp::latest_sum;
use test_harness::trace::{assert_error, assert_kind};
use test_harness::{ChildProcess, NatsServer, OtlpReceiver, free_port};

const WAIT: Duration = Duration::from_secs(20);
const PROCESS: &str = "process chat.msg.*.*";
const PUBLISH: &str = "publish chat.msg.*.*";
const SERVICE: &str = "roundtrip-test";

struct TestApp {
    nats: NatsServer,
    otlp: OtlpReceiver,
}

impl TestApp {
    async fn spawn() -> Self {
        let nats = NatsServer::start().await.expect("nats-server");
        let otlp = OtlpReceiver::start().await.expect("OTLP receiver");
        Self { nats, otlp }
    }

    /// Runs the example to completion with the receiver's env plus `env`; returns its output.
    async fn run(&self, args: &[&str], env: &[(&str, &str)]) -> String {
        let mut cmd = Command::new(test_harness::cargo_example("nats-roundtrip"));
        cmd.args(["--nats-url", &self.nats.url()])
            .args(args)
            .envs(self.otlp.env())
            .env("OTEL_SERVICE_NAME", SERVICE)
            .env("RUST_LOG", "info")
            .envs(env.iter().copied());
        let mut child = ChildProcess::spawn("nats-roundtrip", cmd).expect("spawn");
        let status = child.wait_exit(Duration::from_secs(60)).await.expect("exits");
        let output = child.output();
        assert!(status.success(), "nats-roundtrip failed ({status}):\n{output}");
        output
    }
}

fn published_trace_id(output: &str, message_id: &str) -> String {
    output
        .lines()
        .find(|l| l.ends_with(&format!("message_id={message_id}")))
        .and_then(|l| l.split("trace_id=").nth(1))
        .and_then(|rest| rest.split_whitespace().next())
        .unwrap_or_else(|| panic!("no published line for {message_id}:\n{output}"))
        .to_owned()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_publish_with_an_active_span_and_its_consumer_form_one_trace() {
    let app = TestApp::spawn().await;
    let output = app.run(&["--count", "1"], &[]).await;
    let trace_id = published_trace_id(&output, "msg-0");

    let trace = app.otlp.wait_for_spans_in_trace(&trace_id, PROCESS, 1, WAIT).await.expect("consumer span");
    let caller = trace.one("send message");
    let producer = trace.one(PUBLISH);
    let consumer = trace.one(PROCESS);
    assert_eq!(caller.parent_span_id, None, "the caller span is the root:\n{}", trace.tree());
    trace.assert_child_of(producer, caller);
    trace.assert_child_of(consumer, producer);
    assert_kind(producer, SpanKind::Producer);
    assert_kind(consumer, SpanKind::Consumer);
    assert_eq!(consumer.service_name, SERVICE);

    let port = i64::from(app.nats.port());
    for (span, op, op_type) in [(producer, "publish", "send"), (consumer, "process", "process")] {
        let a = &span.attributes;
        assert_eq!(a.str("messaging.system"), Some("nats"));
        assert_eq!(a.str("messaging.operation.name"), Some(op));
        assert_eq!(a.str("messaging.operation.type"), Some(op_type));
        assert_eq!(a.str("messaging.destination.name"), Some("chat.msg.general.alice"));
        assert_eq!(a.str("messaging.destination.template"), Some("chat.msg.*.*"));
        assert_eq!(a.str("messaging.message.id"), Some("msg-0"));
        assert_eq!(a.int("messaging.message.body.size"), Some(16), "{a:?}");
        assert_eq!(a.str("server.address"), Some("127.0.0.1"));
        assert_eq!(a.int("server.port"), Some(port));
    }
    assert_eq!(consumer.attributes.str("messaging.consumer.group.name"), Some("roundtrip"));
    assert_eq!(consumer.status, StatusCode::Unset);

    let resource = app.otlp.captured().resources.into_iter().next().expect("a resource");
    assert_eq!(resource.str("service.name"), Some(SERVICE));
    assert_eq!(resource.str("service.version"), Some(env!("CARGO_PKG_VERSION")));
    assert!(resource.str("service.instance.id").is_some_and(|id| id.len() == 36), "{resource:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_publish_without_context_starts_a_new_root_with_the_same_linkage() {
    let app = TestApp::spawn().await;
    let output = app.run(&["--count", "1", "--root"], &[]).await;
    let trace_id = published_trace_id(&output, "msg-0");

    let trace = app.otlp.wait_for_spans_in_trace(&trace_id, PROCESS, 1, WAIT).await.expect("consumer span");
    let producer = trace.one(PUBLISH);
    assert_eq!(producer.parent_span_id, None, "the producer is the root:\n{}", trace.tree());
    trace.assert_child_of(trace.one(PROCESS), producer);
    assert!(trace.named("send message").is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn hostile_trace_headers_start_new_roots_warn_and_are_counted() {
    let app = TestApp::spawn().await;
    let oversized = format!("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-{}", "a".repeat(300));
    let parents = [
        ("not-a-traceparent", "malformed_traceparent"),
        ("ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", "malformed_traceparent"),
        ("00-4bf92f3577b34da6a3ce929d0e0e47-00f067aa0ba902b7-01", "malformed_traceparent"),
        ("00-4BF92F3577B34DA6A3CE929D0E0E4736-00F067AA0BA902B7-01", "malformed_traceparent"),
        ("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902bg-01", "malformed_traceparent"),
        ("00-00000000000000000000000000000000-00f067aa0ba902b7-01", "zero_id"),
        ("00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01", "zero_id"),
        (oversized.as_str(), "oversized"),
    ];
    let states = [("novalue", "malformed_tracestate"), (&*"k=v,".repeat(200), "oversized")];
    let mut args = vec!["--count", "0"];
    for (value, _) in parents {
        args.extend(["--raw-traceparent", value]);
    }
    for (value, _) in states {
        args.extend(["--raw-tracestate", value]);
    }
    let output = app.run(&args, &[]).await;
    let n = parents.len() + states.len();
    assert!(output.contains(&format!("received {n} messages")), "{output}");
    let warnings = output.lines().filter(|l| l.contains("trace context not propagated")).count();
    assert_eq!(warnings, n, "one warning per hostile message:\n{output}");

    let spans = app
        .otlp
        .wait_for(WAIT, "a consumer span per hostile message", |c| {
            let spans: Vec<_> = c.spans.iter().filter(|s| s.name == PROCESS).cloned().collect();
            (spans.len() == n).then_some(spans)
        })
        .await
        .expect("consumer spans");
    for span in &spans {
        assert_eq!(span.parent_span_id, None, "{:?} must be a new root", span.attributes.str("messaging.message.id"));
        assert_ne!(span.trace_id, "4bf92f3577b34da6a3ce929d0e0e4736", "the hostile trace id must not be continued");
    }
    let metrics = app
        .otlp
        .wait_for(WAIT, "the propagation failure counter", |c| {
            let total = latest_sum(&c.metrics, "trace_context.propagation.failures", &[("direction", "extract")])?;
            (total as usize == n).then(|| c.metrics.clone())
        })
        .await
        .expect("counter");
    for (_, reason) in parents.iter().chain(&states) {
        let expected = parents.iter().chain(&states).filter(|(_, r)| r == reason).count() as f64;
        let counted = latest_sum(&metrics, "trace_context.propagation.failures", &[("reason", reason)]);
        assert_eq!(counted, Some(expected), "reason {reason}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn logs_inside_a_span_carry_its_ids_and_logs_outside_carry_none() {
    let app = TestApp::spawn().await;
    app.run(&["--count", "1"], &[]).await;
    let consumer = app
        .otlp
        .wait_for(WAIT, "the consumer span", |c| c.spans.iter().find(|s| s.name == PROCESS).cloned())
        .await
        .expect("span");
    let logs = app
        .otlp
        .wait_for(WAIT, "both log records", |c| {
            let find = |body: &str| c.logs.iter().find(|l| l.body == body).cloned();
            Some((find("processing message")?, find("roundtrip started")?))
        })
        .await
        .expect("logs");
    let (inside, outside) = logs;
    assert_eq!(inside.trace_id.as_deref(), Some(consumer.trace_id.as_str()));
    assert_eq!(inside.span_id.as_deref(), Some(consumer.span_id.as_str()));
    assert_eq!(inside.service_name, SERVICE);
    assert_eq!((outside.trace_id, outside.span_id), (None, None));
    let transport_noise = app.otlp.captured().logs.into_iter().find(|l| {
        ["h2", "hyper", "tonic", "tower", "opentelemetry"]
            .iter()
            .any(|t| l.attributes.str("target").is_some_and(|x| x.starts_with(t)))
    });
    assert_eq!(transport_noise, None, "telemetry about telemetry must not be exported");
}

#[tokio::test(flavor = "multi_thread")]
async fn sdk_disabled_exports_nothing_and_the_app_still_works() {
    let app = TestApp::spawn().await;
    let output = app.run(&["--count", "3"], &[("OTEL_SDK_DISABLED", "true")]).await;
    assert!(output.contains("received 3 messages"), "{output}");
    // The process has exited, so anything it would have exported has been sent.
    let captured = app.otlp.captured();
    assert_eq!((captured.grpc_requests, captured.http_requests), (0, 0), "{captured:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn http_protobuf_reaches_the_receivers_http_port() {
    let app = TestApp::spawn().await;
    let endpoint = app.otlp.http_endpoint();
    let env = [("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf"), ("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint.as_str())];
    app.run(&["--count", "1"], &env).await;
    app.otlp.wait_for_trace_with(PROCESS, WAIT).await.expect("spans over HTTP");
    let captured = app.otlp.captured();
    assert!(captured.http_requests > 0);
    assert_eq!(captured.grpc_requests, 0);
    assert!(captured.logs.iter().any(|l| l.body == "processing message"), "logs over HTTP too");
}

#[tokio::test(flavor = "multi_thread")]
async fn an_unreachable_collector_does_not_block_the_message_path() {
    let app = TestApp::spawn().await;
    let dead = format!("http://127.0.0.1:{}", free_port());
    let output = app.run(&["--count", "200"], &[("OTEL_EXPORTER_OTLP_ENDPOINT", dead.as_str())]).await;
    assert!(output.contains("received 200 messages"), "{output}");
    let export_errors = output.lines().filter(|l| l.contains("opentelemetry")).count();
    assert!(export_errors <= 12, "SDK diagnostics are throttled, got {export_errors} lines:\n{output}");
}

#[tokio::test(flavor = "multi_thread")]
async fn the_attribute_policy_keeps_a_token_out_of_every_export() {
    let app = TestApp::spawn().await;
    let secret = "tok-5ecr3t-c0nnect-value";
    app.run(&["--count", "1", "--secret", secret], &[]).await;
    let (span, log) = app
        .otlp
        .wait_for(WAIT, "the consumer span and its log record", |c| {
            let span = c.spans.iter().find(|s| s.name == PROCESS)?.clone();
            let log = c.logs.iter().find(|l| l.body == "processing message")?.clone();
            Some((span, log))
        })
        .await
        .expect("exports");
    assert_eq!(span.attributes.str("auth.token"), Some(telemetry::policy::REDACTED));
    assert_eq!(log.attributes.str("auth.token"), Some(telemetry::policy::REDACTED));
    let everything = format!("{:?}", app.otlp.captured());
    assert!(!everything.contains(secret), "the secret reached an export");
    for format in ["text", "json"] {
        let stdout = app.run(&["--count", "1", "--secret", secret], &[("LOG_FORMAT", format)]).await;
        assert!(stdout.contains("processing message"), "{stdout}");
        assert!(!stdout.contains(secret), "the secret reached stdout ({format}):\n{stdout}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn json_log_lines_carry_the_trace_id_inside_spans() {
    let app = TestApp::spawn().await;
    let output = app.run(&["--count", "1"], &[("LOG_FORMAT", "json")]).await;
    let consumer = app
        .otlp
        .wait_for(WAIT, "the consumer span", |c| c.spans.iter().find(|s| s.name == PROCESS).cloned())
        .await
        .expect("span");
    let line = output
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find(|v| v["message"] == "processing message")
        .unwrap_or_else(|| panic!("no JSON line for the consumer's log:\n{output}"));
    assert_eq!(line["trace_id"], consumer.trace_id.as_str());
    assert_eq!(line["span_id"], consumer.span_id.as_str());
    assert_eq!(line["level"], "INFO");
}

#[tokio::test(flavor = "multi_thread")]
async fn work_past_its_deadline_ends_the_span_with_timeout() {
    let app = TestApp::spawn().await;
    app.run(&["--count", "1", "--work-ms", "400", "--deadline-ms", "50"], &[]).await;
    let trace = app.otlp.wait_for_trace_with(PROCESS, WAIT).await.expect("trace");
    let consumer = trace.one(PROCESS);
    assert_error(consumer, "Timeout");
    assert_eq!(consumer.attributes.str("error.type"), Some("timeout"));
    let exception = consumer.event("exception").expect("exception event");
    assert_eq!(exception.attributes.str("exception.type"), Some("Timeout"));
}

#[tokio::test(flavor = "multi_thread")]
async fn shutdown_flushes_the_last_batch_on_both_runtime_flavours() {
    for flavour in [&["--current-thread"][..], &[]] {
        let app = TestApp::spawn().await;
        // A one-minute schedule: only the guard's shutdown can export these spans in time.
        let env = [("OTEL_BSP_SCHEDULE_DELAY", "60000"), ("OTEL_BLRP_SCHEDULE_DELAY", "60000")];
        let output = app.run(&[&["--count", "2"], flavour].concat(), &env).await;
        assert!(!output.contains("shutdown incomplete"), "{output}");
        let captured = app.otlp.captured();
        let consumers = captured.spans.iter().filter(|s| s.name == PROCESS).count();
        assert_eq!(consumers, 2, "flavour {flavour:?}: spans lost at shutdown:\n{output}");
        assert!(captured.logs.iter().any(|l| l.body == "roundtrip finished"), "last log record lost ({flavour:?})");
    }
}

//! What the bridge's tests put where the collector would be.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use std::time::Duration;

use test_harness::{ChatStack, ChildProcess, free_port};

/// What the gate in front of the receiver does with a request.
pub(crate) const FORWARD: u8 = 0;
pub(crate) const REFUSE: u8 = 1;

/// An OTLP/HTTP endpoint on a port of the test's choosing: nothing listens until
/// [`Gate::open`]; then it forwards to the receiver, or refuses with 400.
pub(crate) struct Gate {
    port: u16,
    pub(crate) mode: Arc<AtomicU8>,
    /// The running server's shutdown signal.
    server: Mutex<Option<(tokio::sync::oneshot::Sender<()>, tokio::task::JoinHandle<()>)>>,
}

impl Gate {
    pub(crate) fn closed() -> Self {
        Self { port: free_port(), mode: Arc::new(AtomicU8::new(FORWARD)), server: Mutex::new(None) }
    }

    pub(crate) fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub(crate) async fn open(&self, receiver: String) {
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", self.port)).await.expect("gate port");
        let state = (Arc::clone(&self.mode), receiver, reqwest::Client::new());
        let app = axum::Router::new().route("/v1/{signal}", axum::routing::post(pass)).with_state(state);
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(async move {
            let _ = axum::serve(listener, app).with_graceful_shutdown(async move { drop(stopped.await) }).await;
        });
        *self.server.lock().expect("gate") = Some((stop, server));
    }

    /// The collector goes down: no new connection is accepted, and the open ones close
    /// once their request is answered.
    pub(crate) async fn close(&self) {
        let running = self.server.lock().expect("gate").take();
        if let Some((stop, server)) = running {
            let _ = stop.send(());
            let _ = server.await;
        }
    }
}

async fn pass(
    State((mode, receiver, http)): State<(Arc<AtomicU8>, String, reqwest::Client)>,
    Path(signal): Path<String>,
    body: Bytes,
) -> StatusCode {
    if mode.load(Ordering::Relaxed) == REFUSE {
        return StatusCode::BAD_REQUEST;
    }
    let forwarded = http
        .post(format!("{receiver}/v1/{signal}"))
        .header("content-type", "application/x-protobuf")
        .body(body)
        .send()
        .await;
    forwarded.map_or(StatusCode::BAD_GATEWAY, |r| StatusCode::from_u16(r.status().as_u16()).unwrap_or(StatusCode::OK))
}

/// The example program publishing and consuming `count` traced messages as service
/// `name` (at `rate` per second if given), its spans exported with `env`: the trace ids
/// it printed.
pub(crate) async fn roundtrip(
    stack: &ChatStack,
    name: &str,
    count: usize,
    rate: Option<u32>,
    env: &[(&str, &str)],
) -> Vec<String> {
    let mut cmd = std::process::Command::new(test_harness::cargo_example("nats-roundtrip"));
    // Each run its own subject: runs at the same time do not consume each other's messages.
    cmd.args(["--nats-url", &stack.nats_url(), "--count", &count.to_string(), "--user", name])
        .args(rate.map(|r| format!("--rate={r}")))
        .envs(stack.otlp.env())
        .env("OTEL_SERVICE_NAME", name)
        .env("OTEL_METRICS_EXPORTER", "none")
        .env("OTEL_LOGS_EXPORTER", "none")
        .envs(env.iter().copied());
    let mut run = ChildProcess::spawn(name, cmd).expect("spawn the example");
    // Paced runs take count / rate seconds where the machine keeps the rate; a slower one
    // (two runs at 1,000 msg/s reached 675 each on this 2-core box with CI beside them)
    // takes longer: three times the paced duration before calling it hung.
    let run_for = rate.map_or(0, |r| count as u64 / u64::from(r.max(1)));
    let status = run.wait_exit(Duration::from_secs(120 + 3 * run_for)).await.expect("the example ends");
    assert!(status.success(), "{name}: {}", run.output());
    let ids: Vec<String> = run
        .output()
        .lines()
        .filter_map(|l| l.split("trace_id=").nth(1))
        .filter_map(|rest| rest.split_whitespace().next().map(str::to_owned))
        .collect();
    assert_eq!(ids.len(), count, "{name} printed a trace id per message");
    ids
}

/// `(traces complete, distinct spans, spans received more than once)` of service `name`
/// for the given traces: complete = its publish and process span both arrived.
pub(crate) fn received(stack: &ChatStack, name: &str, traces: &[String]) -> (usize, usize, usize) {
    stack.otlp.inspect(|captured| {
        let mut seen = HashMap::<&str, usize>::new();
        // Per trace: (publish arrived, process arrived).
        let mut parts = HashMap::<&str, (bool, bool)>::new();
        for span in captured.spans.iter().filter(|s| s.service_name == name) {
            *seen.entry(&span.span_id).or_default() += 1;
            let part = parts.entry(&span.trace_id).or_default();
            part.0 |= span.name == "publish chat.msg.*.*";
            part.1 |= span.name == "process chat.msg.*.*";
        }
        let complete = traces.iter().filter(|t| parts.get(t.as_str()) == Some(&(true, true))).count();
        (complete, seen.len(), seen.values().filter(|n| **n > 1).count())
    })
}

/// `(distinct traces with a "processing message" log record, records received more than
/// once)` of service `name`: the example logs one per message, inside its span.
pub(crate) fn logs_received(stack: &ChatStack, name: &str) -> (usize, usize) {
    stack.otlp.inspect(|captured| {
        let mut seen = HashMap::<&str, usize>::new();
        let records = captured.logs.iter().filter(|l| l.service_name == name && l.body == "processing message");
        for record in records {
            *seen.entry(record.trace_id.as_deref().unwrap_or_default()).or_default() += 1;
        }
        (seen.len(), seen.values().filter(|n| **n > 1).count())
    })
}

/// How many metric collections of service `name` arrived (its `otel.sdk.span.started`
/// counter is in every one).
pub(crate) fn collections_received(stack: &ChatStack, name: &str) -> usize {
    stack
        .otlp
        .inspect(|c| c.metrics.iter().filter(|m| m.service_name == name && m.name == "otel.sdk.span.started").count())
}

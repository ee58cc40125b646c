//! An OTLP receiver inside the test process: OTLP/gRPC and OTLP/HTTP (protobuf) on free
//! loopback ports, keeping every span, log record and metric it receives.
//!
//! Waits are bounded and event-driven (woken on each export), never fixed sleeps.

mod decode;
mod raw_traces;
mod server;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use tokio::sync::Notify;

use crate::HarnessResult;
use crate::model::{LogRecord, MetricRecord, MetricValue, SpanRecord};
use crate::trace::Trace;

/// Everything received so far.
#[derive(Debug, Default, Clone)]
pub struct Captured {
    /// Spans, in arrival order.
    pub spans: Vec<SpanRecord>,
    /// Log records, in arrival order.
    pub logs: Vec<LogRecord>,
    /// Metric collections, in arrival order (cumulative metrics repeat).
    pub metrics: Vec<MetricRecord>,
    /// Distinct resources seen (attributes of each exporting resource).
    pub resources: Vec<crate::model::Attributes>,
    /// Export requests received over gRPC.
    pub grpc_requests: usize,
    /// Export requests received over HTTP.
    pub http_requests: usize,
}

/// What the servers received: span export requests are kept as they arrived, their spans
/// undecoded (`raw_traces`), and turned into [`SpanRecord`]s when something reads them.
/// The receiver shares the machine's cores with the services under test; decoding every
/// span as it arrived cost about as much CPU as the traced persist worker spends per
/// message (drain bench: 9-14 µs per message; ~3 µs when only the records were made
/// later), so a run that reads the spans afterwards pays for that after it is measured.
#[derive(Debug, Default)]
pub(crate) struct Store {
    state: Mutex<State>,
    changed: Notify,
}

#[derive(Debug, Default)]
struct State {
    captured: Captured,
    /// Span export requests not yet in `captured.spans`, in arrival order.
    traces: Vec<raw_traces::RawTraceRequest>,
}

impl Store {
    /// Adds a log export request's records, decoded.
    pub(crate) fn add_logs(&self, request: &ExportLogsServiceRequest, count: impl FnOnce(&mut Captured)) {
        let logs = decode::logs(request);
        self.record(|state| {
            count(&mut state.captured);
            state.captured.logs.extend(logs);
        });
    }

    /// Adds a metric export request's points, decoded.
    pub(crate) fn add_metrics(&self, request: &ExportMetricsServiceRequest, count: impl FnOnce(&mut Captured)) {
        let metrics = decode::metrics(request);
        self.record(|state| {
            count(&mut state.captured);
            state.captured.metrics.extend(metrics);
        });
    }

    /// Keeps a span export request for the next read.
    pub(crate) fn add_traces(&self, request: raw_traces::RawTraceRequest, count: impl FnOnce(&mut Captured)) {
        self.record(|state| {
            count(&mut state.captured);
            state.traces.push(request);
        });
    }

    fn record(&self, f: impl FnOnce(&mut State)) {
        f(&mut self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner));
        self.changed.notify_waiters();
    }

    /// `look` at everything received so far, the kept span requests decoded first.
    fn read<T>(&self, look: impl FnOnce(&Captured) -> T) -> T {
        let mut state = self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let State { captured, traces } = &mut *state;
        for request in traces.drain(..).map(|raw| raw.decode_whole()) {
            captured.spans.extend(decode::spans(&request));
            for resource in decode::resources(&request) {
                if !captured.resources.contains(&resource) {
                    captured.resources.push(resource);
                }
            }
        }
        look(captured)
    }
}

/// The receiver; its servers stop when it is dropped.
#[derive(Debug)]
pub struct OtlpReceiver {
    store: Arc<Store>,
    grpc_port: u16,
    http_port: u16,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl OtlpReceiver {
    /// Starts both servers on free loopback ports.
    pub async fn start() -> HarnessResult<Self> {
        let store = Arc::new(Store::default());
        let (grpc_port, grpc) = server::grpc(Arc::clone(&store)).await?;
        let (http_port, http) = server::http(Arc::clone(&store)).await?;
        Ok(Self { store, grpc_port, http_port, tasks: vec![grpc, http] })
    }

    /// `http://127.0.0.1:<grpc port>`.
    pub fn grpc_endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.grpc_port)
    }

    /// `http://127.0.0.1:<http port>` (paths `/v1/traces`, `/v1/metrics`, `/v1/logs`).
    pub fn http_endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.http_port)
    }

    /// Environment for a service exporting here over gRPC, with short export intervals so
    /// tests see data quickly. Add `OTEL_SERVICE_NAME` yourself.
    pub fn env(&self) -> Vec<(String, String)> {
        [
            ("OTEL_EXPORTER_OTLP_ENDPOINT", self.grpc_endpoint().as_str()),
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc"),
            ("OTEL_BSP_SCHEDULE_DELAY", "100"),
            // Tests count every span: a queue that never overflows.
            ("OTEL_BSP_MAX_QUEUE_SIZE", "65536"),
            ("OTEL_BLRP_MAX_QUEUE_SIZE", "65536"),
            ("OTEL_BLRP_SCHEDULE_DELAY", "100"),
            ("OTEL_METRIC_EXPORT_INTERVAL", "500"),
            ("OTEL_TRACES_SAMPLER", "parentbased_always_on"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
    }

    /// `look` at everything received so far, without copying it (for runs too large to
    /// copy at every poll).
    pub fn inspect<T>(&self, look: impl FnOnce(&Captured) -> T) -> T {
        self.store.read(look)
    }

    /// A copy of everything received so far.
    pub fn captured(&self) -> Captured {
        self.store.read(Captured::clone)
    }

    /// Waits until `check` returns `Some` for what has been received, up to `timeout`.
    /// The error lists what did arrive.
    pub async fn wait_for<T>(
        &self,
        timeout: Duration,
        what: &str,
        mut check: impl FnMut(&Captured) -> Option<T>,
    ) -> HarnessResult<T> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let changed = self.store.changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            // Checked in place, under the store's lock: no copy of everything received on
            // every wake-up (`check` only reads, and never calls the receiver).
            if let Some(found) = self.store.read(&mut check) {
                return Ok(found);
            }
            if tokio::time::timeout_at(deadline, changed).await.is_err() {
                let received = self.store.read(summary);
                return Err(format!("timed out after {timeout:?} waiting for {what}; received:\n{received}"));
            }
        }
    }

    /// Waits for a span named `name` and returns its trace as received so far.
    pub async fn wait_for_trace_with(&self, name: &str, timeout: Duration) -> HarnessResult<Trace> {
        let trace_id = self
            .wait_for(timeout, &format!("a span named {name:?}"), |c| {
                c.spans.iter().find(|s| s.name == name).map(|s| s.trace_id.clone())
            })
            .await?;
        Ok(self.trace(&trace_id))
    }

    /// Waits until trace `trace_id` has at least `count` spans named `name`.
    pub async fn wait_for_spans_in_trace(
        &self,
        trace_id: &str,
        name: &str,
        count: usize,
        timeout: Duration,
    ) -> HarnessResult<Trace> {
        self.wait_for(timeout, &format!("{count} span(s) {name:?} in trace {trace_id}"), |c| {
            let n = c.spans.iter().filter(|s| s.trace_id == trace_id && s.name == name).count();
            (n >= count).then_some(())
        })
        .await?;
        Ok(self.trace(trace_id))
    }

    /// The captured spans of a trace, as a function other tasks can call (what
    /// [`crate::tempo_stub::TempoStub`] serves).
    pub fn spans_of(&self) -> crate::tempo_stub::SpansOf {
        let store = Arc::clone(&self.store);
        Arc::new(move |trace_id: &str| {
            store.read(|c| c.spans.iter().filter(|s| s.trace_id == trace_id).cloned().collect())
        })
    }

    /// The spans received so far for `trace_id`.
    pub fn trace(&self, trace_id: &str) -> Trace {
        Trace::new(self.captured().spans.into_iter().filter(|s| s.trace_id == trace_id).collect())
    }

    /// The sum of the latest exported value of counter `name` across points whose
    /// attributes include all of `filter`.
    pub fn counter_value(&self, name: &str, filter: &[(&str, &str)]) -> Option<f64> {
        latest_sum(&self.captured().metrics, name, filter)
    }
}

impl Drop for OtlpReceiver {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

/// Latest value of a cumulative sum per service and attribute set, added up over the
/// points that match `filter`.
pub fn latest_sum(metrics: &[MetricRecord], name: &str, filter: &[(&str, &str)]) -> Option<f64> {
    let mut latest = std::collections::BTreeMap::new();
    for m in metrics.iter().filter(|m| m.name == name) {
        for p in &m.points {
            let matches = filter.iter().all(|(k, v)| p.attributes.get(*k).is_some_and(|a| a.to_text() == *v));
            if let (true, MetricValue::Sum(v)) = (matches, &p.value) {
                latest.insert((m.service_name.clone(), format!("{:?}", p.attributes)), *v);
            }
        }
    }
    (!latest.is_empty()).then(|| latest.values().sum())
}

fn summary(c: &Captured) -> String {
    let mut names: Vec<String> =
        c.spans.iter().map(|s| format!("{} ({}, trace {})", s.name, s.service_name, s.trace_id)).collect();
    names.dedup();
    let metrics: std::collections::BTreeSet<&str> = c.metrics.iter().map(|m| m.name.as_str()).collect();
    format!(
        "  {} spans: {names:?}\n  {} log records\n  metrics: {metrics:?}\n  requests: {} grpc, {} http",
        c.spans.len(),
        c.logs.len(),
        c.grpc_requests,
        c.http_requests
    )
}

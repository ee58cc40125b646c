//! The bridge's own metrics: messages by signal and result, export failures by reason,
//! and whether the breaker is open. The backlog of `TELEMETRY` is nats-trace-bridge's
//! `nats.consumer.pending{stream="TELEMETRY"}` (it must show while the bridge is down).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use opentelemetry::metrics::Counter;
use opentelemetry::{KeyValue, global};

use crate::stream::Signal;

/// Counters, cheap to clone.
#[derive(Debug, Clone)]
pub(crate) struct Metrics {
    messages: Counter<u64>,
    failures: Counter<u64>,
    breaker_open: Arc<AtomicU64>,
}

/// What became of a message.
pub(crate) const RESULTS: [&str; 3] = ["exported", "retried", "dead_lettered"];

impl Metrics {
    pub(crate) fn new() -> Self {
        let meter = global::meter("otlp-bridge");
        let messages = meter
            .u64_counter("otlp_bridge.messages")
            .with_unit("{message}")
            .with_description("TELEMETRY messages by signal and result (exported, retried, dead_lettered)")
            .build();
        let failures = meter
            .u64_counter("otlp_bridge.export.failures")
            .with_unit("{request}")
            .with_description("OTLP/HTTP posts not accepted, by signal and reason (unavailable, http_<status>)")
            .build();
        // At 0 from the start, so that increase() sees the first one.
        for signal in [Signal::Spans, Signal::Logs, Signal::Metrics] {
            for result in RESULTS {
                messages.add(0, &[KeyValue::new("signal", signal.as_str()), KeyValue::new("result", result)]);
            }
            failures.add(0, &[KeyValue::new("signal", signal.as_str()), KeyValue::new("reason", "unavailable")]);
        }
        let breaker_open = Arc::new(AtomicU64::new(0));
        let observed = Arc::clone(&breaker_open);
        let _gauge = meter
            .u64_observable_gauge("otlp_bridge.breaker.open")
            .with_description("1 while the OTLP endpoint is away and the bridge probes instead of fetching")
            .with_callback(move |observer| observer.observe(observed.load(Ordering::Relaxed), &[]))
            .build();
        Self { messages, failures, breaker_open }
    }

    pub(crate) fn messages(&self, signal: Signal, result: &'static str, count: usize) {
        self.messages.add(count as u64, &[KeyValue::new("signal", signal.as_str()), KeyValue::new("result", result)]);
    }

    pub(crate) fn failure(&self, signal: Signal, reason: String) {
        self.failures.add(1, &[KeyValue::new("signal", signal.as_str()), KeyValue::new("reason", reason)]);
    }

    pub(crate) fn breaker(&self, open: bool) {
        self.breaker_open.store(u64::from(open), Ordering::Relaxed);
    }
}

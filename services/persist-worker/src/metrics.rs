//! The worker's instruments (DESIGN.md 5.4), created once on the global meter.

use opentelemetry::metrics::{Counter, Histogram};
use opentelemetry::{KeyValue, global};

/// Counters and the queue-wait histogram.
#[derive(Debug, Clone)]
pub(crate) struct Metrics {
    persisted: Counter<u64>,
    errors: Counter<u64>,
    redelivered: Counter<u64>,
    dead_lettered: Counter<u64>,
    queue_wait: Histogram<f64>,
}

impl Metrics {
    pub(crate) fn new() -> Self {
        let meter = global::meter("persist-worker");
        Self {
            persisted: meter
                .u64_counter("messages.persisted")
                .with_unit("{message}")
                .with_description("Messages stored in PostgreSQL (duplicates skipped are not counted)")
                .build(),
            errors: meter
                .u64_counter("messages.persist.errors")
                .with_unit("{error}")
                .with_description("Failed processing attempts, by error.type")
                .build(),
            redelivered: meter
                .u64_counter("messages.redelivered")
                .with_unit("{message}")
                .with_description("Deliveries after the first one")
                .build(),
            dead_lettered: meter
                .u64_counter("messages.dead_lettered")
                .with_unit("{message}")
                .with_description("Messages published to the dead-letter stream")
                .build(),
            queue_wait: meter
                .f64_histogram("messaging.nats.queue_wait")
                .with_unit("s")
                .with_description("Time between the stream storing a message and its delivery")
                .with_boundaries(vec![0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0])
                .build(),
        }
    }

    pub(crate) fn persisted(&self, n: u64) {
        self.persisted.add(n, &[]);
    }

    pub(crate) fn error(&self, error_type: &'static str) {
        self.errors.add(1, &[KeyValue::new("error.type", error_type)]);
    }

    pub(crate) fn delivered(&self, delivery: &telemetry::Delivery) {
        self.queue_wait.record(delivery.queue_wait_seconds, &[]);
        if delivery.is_redelivery() {
            self.redelivered.add(1, &[]);
        }
    }

    pub(crate) fn dead_lettered(&self, reason: &'static str) {
        self.dead_lettered.add(1, &[KeyValue::new("reason", reason)]);
    }
}

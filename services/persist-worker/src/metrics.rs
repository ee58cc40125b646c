//! The worker's instruments (DESIGN.md 5.4), created once on the global meter.

use opentelemetry::metrics::{Counter, Histogram};
use opentelemetry::{KeyValue, global};

/// `error.type` values of `messages.persist.errors`.
const ERROR_TYPES: &[&str] = &["db_unavailable", "db_error", "timeout", "injected_failure", "id_conflict"];
/// `reason` values of `messages.dead_lettered` and `messages.dead_letter.failures`.
const DEAD_LETTER_REASONS: &[&str] = &[
    "malformed",
    "malformed_headers",
    "invalid_message_id",
    "too_large",
    "bad_text",
    "invalid_subject",
    "demo_poison",
    "db_rejected",
    "id_conflict",
    "retries_exhausted",
    "deliveries_exhausted",
];

/// Counters and the queue-wait histogram.
#[derive(Debug, Clone)]
pub(crate) struct Metrics {
    persisted: Counter<u64>,
    duplicates: Counter<u64>,
    errors: Counter<u64>,
    redelivered: Counter<u64>,
    dead_lettered: Counter<u64>,
    dead_letter_failures: Counter<u64>,
    queue_wait: Histogram<f64>,
}

impl Metrics {
    pub(crate) fn new() -> Self {
        let meter = global::meter("persist-worker");
        let metrics = Self {
            persisted: meter
                .u64_counter("messages.persisted")
                .with_unit("{message}")
                .with_description("Messages stored in PostgreSQL (duplicates skipped are not counted)")
                .build(),
            duplicates: meter
                .u64_counter("messages.persist.duplicates")
                .with_unit("{message}")
                .with_description("Deliveries of messages already stored, identical (redeliveries, publisher retries)")
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
            dead_letter_failures: meter
                .u64_counter("messages.dead_letter.failures")
                .with_unit("{failure}")
                .with_description("Dead letters that could not be published (retried later; alert on any)")
                .build(),
            queue_wait: meter
                .f64_histogram("messaging.nats.queue_wait")
                .with_unit("s")
                .with_description("Time between the stream storing a message and its delivery")
                .with_boundaries(vec![0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0])
                .build(),
        };
        metrics.start_at_zero();
        metrics
    }

    /// Rare events are counted from 0 for every known label value, so that the first one
    /// shows in `rate()` / `increase()` (a series that appears at 1 has no increase).
    fn start_at_zero(&self) {
        for counter in [&self.persisted, &self.duplicates, &self.redelivered] {
            counter.add(0, &[]);
        }
        for error_type in ERROR_TYPES {
            self.errors.add(0, &[KeyValue::new("error.type", *error_type)]);
        }
        for reason in DEAD_LETTER_REASONS {
            self.dead_lettered.add(0, &[KeyValue::new("reason", *reason)]);
            self.dead_letter_failures.add(0, &[KeyValue::new("reason", *reason)]);
        }
    }

    pub(crate) fn persisted(&self, n: u64) {
        self.persisted.add(n, &[]);
    }

    pub(crate) fn error(&self, error_type: &'static str) {
        self.errors.add(1, &[KeyValue::new("error.type", error_type)]);
    }

    pub(crate) fn delivered(&self, delivery: &telemetry::messaging::DeliveryFacts) {
        self.queue_wait.record(delivery.queue_wait_seconds, &[]);
        if delivery.is_redelivery() {
            self.redelivered.add(1, &[]);
        }
    }

    pub(crate) fn dead_lettered(&self, reason: &'static str) {
        self.dead_lettered.add(1, &[KeyValue::new("reason", reason)]);
    }

    pub(crate) fn dead_letter_failed(&self, reason: &'static str) {
        self.dead_letter_failures.add(1, &[KeyValue::new("reason", reason)]);
    }

    pub(crate) fn duplicates(&self, n: u64) {
        self.duplicates.add(n, &[]);
    }
}

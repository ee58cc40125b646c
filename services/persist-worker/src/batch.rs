//! A batch of deliveries: decide each, insert the valid ones in one statement, then
//! settle every delivery (ack, nak with delay, or dead letter + term), each in its span.

use std::sync::Arc;

use async_nats::HeaderMap;
use async_nats::jetstream::{self, AckKind};
use chat_protocol::{DLQ_REASON_HEADER, DLQ_TEMPLATE, dlq_subject};
use futures::future::join_all;
use telemetry::{MessageRef, Peer, Settlement, inject_span, publish_span, record_failure, settle_span};
use tracing::Instrument as _;

use crate::Config;
use crate::delivery::{Delivery, Outcome};
use crate::metrics::Metrics;
use crate::store::{Row, Store, StoreError};

/// Headers of the original message that the dead letter does not copy.
const NOT_COPIED: &[&str] =
    &["traceparent", "xraceparent", "tracestate", "nats-msg-id", "nats-trace-dest", "nats-expected-stream"];

/// Processes batches; cheap to clone into each batch task.
#[derive(Debug, Clone)]
pub(crate) struct Processor {
    js: jetstream::Context,
    store: Store,
    config: Arc<Config>,
    peer: Peer,
    metrics: Metrics,
}

impl Processor {
    pub(crate) fn new(js: jetstream::Context, store: Store, config: Arc<Config>, peer: Peer) -> Self {
        Self { js, store, config, peer, metrics: Metrics::new() }
    }

    /// Processes one batch to the end, sending progress acks while it takes long.
    pub(crate) async fn process(&self, messages: Vec<jetstream::Message>) {
        let deliveries: Vec<Delivery> = messages.into_iter().map(|m| Delivery::open(m, &self.peer)).collect();
        for d in &deliveries {
            self.metrics.delivered(&d.facts);
        }
        let work = self.process_deliveries(&deliveries);
        tokio::pin!(work);
        // Keeps the server from redelivering while a slow batch is still being worked on.
        let mut progress = tokio::time::interval(self.config.ack_wait / 2);
        progress.tick().await;
        loop {
            tokio::select! {
                () = &mut work => break,
                _ = progress.tick() => {
                    for d in &deliveries {
                        let _ = d.message.ack_with(AckKind::Progress).await;
                    }
                }
            }
        }
    }

    async fn process_deliveries(&self, deliveries: &[Delivery]) {
        let outcomes = join_all(deliveries.iter().map(|d| d.decide(&self.config))).await;
        let mut to_store = Vec::new();
        for (delivery, outcome) in deliveries.iter().zip(outcomes) {
            match outcome {
                Outcome::Store { row, crash } => to_store.push((delivery, row, crash)),
                Outcome::Retry { error_type } => self.retry(delivery, error_type).await,
                Outcome::Poison { reason } => self.dead_letter(delivery, reason).await,
            }
        }
        if to_store.is_empty() {
            return;
        }
        let crash = to_store.iter().any(|(_, _, crash)| *crash);
        let to_store: Vec<_> = to_store.into_iter().map(|(d, row, _)| (d, row)).collect();
        match self.insert(&to_store).await {
            Ok(n) => {
                self.metrics.persisted(n);
                if crash {
                    tracing::warn!("demo fault: aborting after commit, before ack");
                    std::process::abort();
                }
                for (delivery, _) in &to_store {
                    self.settle(delivery, Settlement::Ack, AckKind::Ack).await;
                }
            }
            Err(error) if error.is_unavailable() => {
                tracing::warn!(%error, rows = to_store.len(), "database unavailable; naking the batch");
                for (delivery, _) in &to_store {
                    record_failure(&delivery.span, error.error_type(), &error.to_string());
                    self.retry(delivery, error.error_type()).await;
                }
            }
            // The database rejected the batch: find the row(s) it rejects, store the rest.
            Err(error) => {
                tracing::warn!(%error, rows = to_store.len(), "batch rejected; inserting row by row");
                for one in to_store.chunks(1) {
                    self.store_alone(&one[0]).await;
                }
            }
        }
    }

    /// One INSERT for the batch: a child of the first delivery's span, linked to the
    /// others. A statement that outlives the deadline counts as unavailability.
    async fn insert(&self, to_store: &[(&Delivery, Row)]) -> Result<u64, StoreError> {
        let rows: Vec<Row> = to_store.iter().map(|(_, row)| row.clone()).collect();
        let links = to_store[1..].iter().map(|(d, _)| d.span_context.clone()).collect();
        let insert = self.store.insert_batch(&rows, links).instrument(to_store[0].0.span.clone());
        tokio::time::timeout(self.config.processing_deadline, insert).await.unwrap_or(Err(StoreError::Timeout))
    }

    /// Stores one delivery on its own (after its batch was rejected): ack, retry, or
    /// dead-letter the row the database refuses.
    async fn store_alone(&self, entry: &(&Delivery, Row)) {
        let delivery = entry.0;
        match self.insert(std::slice::from_ref(entry)).await {
            Ok(n) => {
                self.metrics.persisted(n);
                self.settle(delivery, Settlement::Ack, AckKind::Ack).await;
            }
            Err(error) => {
                record_failure(&delivery.span, error.error_type(), &error.to_string());
                if error.is_unavailable() {
                    self.retry(delivery, error.error_type()).await;
                } else {
                    self.metrics.error(error.error_type());
                    self.dead_letter(delivery, "db_rejected").await;
                }
            }
        }
    }

    /// A transient failure: nak with a growing delay, or dead-letter after the last delivery.
    async fn retry(&self, delivery: &Delivery, error_type: &'static str) {
        self.metrics.error(error_type);
        if i64::try_from(delivery.facts.delivery_count).unwrap_or(i64::MAX) >= self.config.max_deliver {
            self.dead_letter(delivery, "retries_exhausted").await;
            return;
        }
        let delay = self.config.nak_delay_for(delivery.facts.delivery_count);
        delivery
            .span
            .in_scope(|| tracing::info!(delay_ms = delay.as_millis() as u64, error_type, "will be redelivered"));
        self.settle(delivery, Settlement::Nak, AckKind::Nak(Some(delay))).await;
    }

    /// Publishes the message to `chat.dlq.<room>` in the same trace, then terms it. If the
    /// dead letter cannot be published, naks instead so the message is not lost.
    async fn dead_letter(&self, delivery: &Delivery, reason: &'static str) {
        let subject = dlq_subject(delivery.room());
        let payload = delivery.message.payload.clone();
        let msg_id = format!("dlq-{}", delivery.facts.stream_sequence);
        let span = delivery.span.in_scope(|| {
            publish_span(
                &MessageRef {
                    subject: &subject,
                    template: DLQ_TEMPLATE,
                    message_id: Some(&msg_id),
                    body_size: payload.len(),
                },
                &self.peer,
            )
        });
        let mut headers = HeaderMap::new();
        if let Some(original) = &delivery.message.headers {
            for (name, values) in original.iter() {
                let lower = AsRef::<str>::as_ref(name).to_ascii_lowercase();
                if !NOT_COPIED.contains(&lower.as_str()) {
                    for value in values {
                        headers.append(name.clone(), value.clone());
                    }
                }
            }
        }
        headers.insert(async_nats::header::NATS_MESSAGE_ID, msg_id.as_str());
        headers.insert(DLQ_REASON_HEADER, reason);
        headers.insert("Chat-Dlq-Subject", delivery.message.subject.as_str());
        headers.insert("Chat-Dlq-Stream-Seq", delivery.facts.stream_sequence.to_string().as_str());
        headers.insert("Chat-Dlq-Deliveries", delivery.facts.delivery_count.to_string().as_str());
        inject_span(&span, &mut headers);
        let published = async {
            self.js.publish_with_headers(subject.clone(), headers, payload).await?.await?;
            Ok::<_, async_nats::jetstream::context::PublishError>(())
        }
        .instrument(span.clone())
        .await;
        match published {
            Ok(()) => {
                self.metrics.dead_lettered(reason);
                delivery.span.in_scope(|| tracing::warn!(reason, dlq = %subject, "message dead-lettered"));
                self.settle(delivery, Settlement::Term, AckKind::Term).await;
            }
            Err(error) => {
                record_failure(&span, "dlq_publish_failed", &error.to_string());
                let delay = self.config.nak_delay_for(delivery.facts.delivery_count);
                delivery.span.in_scope(|| tracing::error!(%error, "dead letter not published; naking"));
                self.settle(delivery, Settlement::Nak, AckKind::Nak(Some(delay))).await;
            }
        }
    }

    /// Sends the ack/nak/term inside a CLIENT span that is a child of the delivery's span.
    async fn settle(&self, delivery: &Delivery, settlement: Settlement, kind: AckKind) {
        let span = delivery.span.in_scope(|| settle_span(settlement, &delivery.message_ref(), &self.peer));
        if let Err(error) = delivery.message.ack_with(kind).instrument(span.clone()).await {
            // Not settled: the server redelivers after ack_wait; the insert is idempotent.
            record_failure(&span, "settle_failed", &error.to_string());
        }
    }
}

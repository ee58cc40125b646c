//! A batch of deliveries: check each, insert the valid ones in one statement, then carry
//! out each delivery's [fate](crate::fate) (ack, nak with delay, or dead letter + term),
//! each settlement in its span.

use std::sync::Arc;

use async_nats::jetstream::context::PublishErrorKind;
use async_nats::jetstream::{self, AckKind};
use chat_protocol::{DLQ_TEMPLATE, dlq_subject};
use futures::future::join_all;
use telemetry::messaging::{MessageRef, Messaging, Settlement, record_failure};

use crate::Config;
use crate::dead_letter;
use crate::delivery::Delivery;
use crate::demo;
use crate::fate::{Fate, Found, RetryPolicy, fate};
use crate::metrics::Metrics;
use crate::store::{Inserted, Row, Store, StoreError};

/// Processes batches; cheap to clone into each batch task.
#[derive(Debug, Clone)]
pub(crate) struct Processor {
    js: jetstream::Context,
    store: Store,
    config: Arc<Config>,
    policy: RetryPolicy,
    spans: Messaging,
    metrics: Metrics,
}

/// A delivery with a row to store.
type Valid<'a> = (&'a Delivery, Row);

impl Processor {
    pub(crate) fn new(js: jetstream::Context, store: Store, config: Arc<Config>, spans: Messaging) -> Self {
        let policy = config.retry_policy();
        Self { js, store, config, policy, spans, metrics: Metrics::new() }
    }

    /// Processes one batch to the end, sending progress acks while it takes long.
    pub(crate) async fn process(&self, deliveries: Vec<Delivery>) {
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
        let (exhausted, to_check): (Vec<&Delivery>, Vec<&Delivery>) =
            deliveries.iter().partition(|d| self.policy.exhausted(d.facts.delivery_count));
        for d in exhausted {
            self.follow(d, Found::Exhausted).await;
        }
        let checked = join_all(to_check.iter().map(|d| d.check(&self.config))).await;
        let mut valid: Vec<Valid<'_>> = Vec::new();
        for (delivery, checked) in to_check.into_iter().zip(checked) {
            match checked {
                Ok(row) => valid.push((delivery, row)),
                Err(found) => self.follow(delivery, found).await,
            }
        }
        if valid.is_empty() {
            return;
        }
        match self.insert(&valid).await {
            Ok(inserted) => {
                if valid.iter().any(|(d, _)| d.crashes_after_commit()) {
                    demo::crash();
                }
                self.settle_inserted(&valid, &inserted).await;
            }
            Err(error) if error.is_unavailable() => {
                tracing::warn!(%error, rows = valid.len(), "database unavailable; retrying the batch later");
                for (delivery, _) in &valid {
                    record_failure(&delivery.span, error.error_type(), &error.to_string());
                    self.follow(delivery, Found::Transient(error.error_type())).await;
                }
            }
            // The database rejected the batch: find the row(s) it rejects, store the rest.
            Err(error) => {
                tracing::warn!(%error, rows = valid.len(), "batch rejected; inserting row by row");
                for one in valid.chunks(1) {
                    self.store_alone(&one[0]).await;
                }
            }
        }
    }

    /// One INSERT for the batch: a child of the first delivery's span, linked to the
    /// others. A statement that outlives the deadline counts as unavailability.
    async fn insert(&self, valid: &[Valid<'_>]) -> Result<Inserted, StoreError> {
        let rows: Vec<Row> = valid.iter().map(|(_, row)| row.clone()).collect();
        let links = valid[1..].iter().map(|(d, _)| d.span_context.clone()).collect();
        let insert = valid[0].0.span.scope(self.store.insert_batch(&rows, links));
        tokio::time::timeout(self.config.processing_deadline, insert).await.unwrap_or(Err(StoreError::Timeout))
    }

    /// Acks what is stored (now or before, identical); dead-letters what conflicts.
    async fn settle_inserted(&self, valid: &[Valid<'_>], inserted: &Inserted) {
        self.metrics.persisted(inserted.new);
        if inserted.duplicates > 0 {
            self.metrics.duplicates(inserted.duplicates);
            valid[0].0.span.in_scope(|| {
                tracing::info!(duplicates = inserted.duplicates, "already stored; acking the duplicates");
            });
        }
        for (i, (delivery, _)) in valid.iter().enumerate() {
            if inserted.conflicts.contains(&i) {
                let message = "a different message is stored under this message's key";
                record_failure(&delivery.span, "id_conflict", message);
                delivery.span.in_scope(|| tracing::error!("{message}; dead-lettering it"));
                self.metrics.error("id_conflict");
                self.follow(delivery, Found::Conflict).await;
            } else {
                self.settle(delivery, Settlement::Ack).await;
            }
        }
    }

    /// Stores one delivery on its own (after its batch was rejected).
    async fn store_alone(&self, entry: &Valid<'_>) {
        let delivery = entry.0;
        match self.insert(std::slice::from_ref(entry)).await {
            Ok(inserted) => self.settle_inserted(std::slice::from_ref(entry), &inserted).await,
            Err(error) => {
                record_failure(&delivery.span, error.error_type(), &error.to_string());
                let found = if error.is_unavailable() {
                    Found::Transient(error.error_type())
                } else {
                    Found::Poison("db_rejected")
                };
                self.follow(delivery, found).await;
            }
        }
    }

    /// Carries out the fate of `found` (anything but storing).
    async fn follow(&self, delivery: &Delivery, found: Found) {
        if let Found::Transient(error_type) = found {
            self.metrics.error(error_type);
        }
        match fate(delivery.facts.delivery_count, found, &self.policy) {
            Fate::Retry(delay) => {
                delivery.span.in_scope(|| {
                    tracing::info!(delay_ms = delay.as_millis() as u64, "will be redelivered");
                });
                self.settle(delivery, Settlement::Nak(delay)).await;
            }
            Fate::DeadLetter(reason) => Box::pin(self.dead_letter(delivery, reason)).await,
        }
    }

    /// Publishes the message to `chat.dlq.<room>` in the same trace, then terms it. A
    /// dead letter that cannot be published is retried later (nak), counted and logged
    /// as an error each time: never dropped.
    async fn dead_letter(&self, delivery: &Delivery, reason: &'static str) {
        let subject = dlq_subject(delivery.room());
        let payload = delivery.message.payload.clone();
        let facts = dead_letter::Facts {
            reason,
            subject: &delivery.message.subject,
            stream_created: delivery.stream_created,
            stream_sequence: delivery.facts.stream_sequence,
            deliveries: delivery.facts.delivery_count,
        };
        let msg_id = facts.message_id();
        let span = delivery.span.in_scope(|| {
            self.spans.publish(&MessageRef {
                subject: &subject,
                template: DLQ_TEMPLATE,
                message_id: Some(&msg_id),
                body_size: payload.len(),
            })
        });
        let mut headers = dead_letter::headers(delivery.message.headers.as_ref(), &facts);
        span.inject(&mut headers);
        let published = span
            .scope(async {
                self.js.publish_with_headers(subject.clone(), headers, payload).await?.await?;
                Ok::<_, async_nats::jetstream::context::PublishError>(())
            })
            .await;
        match published {
            Ok(()) => {
                span.end();
                self.metrics.dead_lettered(reason);
                delivery.span.in_scope(|| tracing::warn!(reason, dlq = %subject, "message dead-lettered"));
                self.settle(delivery, Settlement::Term).await;
            }
            Err(error) => {
                record_failure(&span, "dlq_publish_failed", &error.to_string());
                span.end();
                self.metrics.dead_letter_failed(reason);
                delivery.span.in_scope(|| tracing::error!(%error, reason, "dead letter not published; will retry"));
                if error.kind() == PublishErrorKind::StreamNotFound {
                    // Retried until the setup step has created the stream again.
                    tracing::error!("the dead-letter stream is missing: run the setup step (make up)");
                }
                self.follow(delivery, Found::DeadLetterFailed).await;
            }
        }
    }

    /// Sends the ack/nak/term: an event on the delivery's span (or, with `SETTLE_SPANS`,
    /// a CLIENT span child of it), then ends the delivery's span.
    async fn settle(&self, delivery: &Delivery, settlement: Settlement) {
        let settle_span = self
            .config
            .settle_spans
            .then(|| self.spans.settle_span(&delivery.span, settlement, &delivery.message_ref()));
        if settle_span.is_none() {
            delivery.span.add_settlement(settlement);
        }
        let span = settle_span.as_ref().unwrap_or(&delivery.span);
        if let Err(error) = span.scope(delivery.message.ack_with(settlement.ack_kind())).await {
            // Not settled: the server redelivers after ack_wait; the insert is idempotent.
            record_failure(span, "settle_failed", &error.to_string());
        }
        if let Some(settle_span) = settle_span {
            settle_span.end();
        }
        delivery.span.end();
    }
}

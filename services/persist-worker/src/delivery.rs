//! One JetStream delivery: its CONSUMER span (parented to the producer), its delivery
//! facts, and its row, or what [stands in the way](Found) of one.

use async_nats::jetstream;
use std::sync::atomic::{AtomicBool, Ordering};

use chat_protocol::{ChatMessage, DemoFault, MESSAGE_TEMPLATE, parse_message_subject};
use opentelemetry::trace::SpanContext;
use telemetry::messaging::{DeliveryFacts, MessageRef, Messaging, Traced, record_failure, run_with_deadline};
use time::OffsetDateTime;

use crate::Config;
use crate::demo;
use crate::fate::Found;
use crate::store::Row;

/// Longest `Nats-Msg-Id` stored (chat-cli's are 32 characters).
pub(crate) const MAX_MESSAGE_ID_BYTES: usize = 256;

/// A delivery being processed; its span ends when this is dropped (after settling).
#[derive(Debug)]
pub(crate) struct Delivery {
    pub(crate) message: jetstream::Message,
    pub(crate) span: Traced,
    pub(crate) facts: DeliveryFacts,
    pub(crate) message_id: Option<String>,
    /// The span's context, read once (the row's trace id, the batch INSERT's links).
    pub(crate) span_context: SpanContext,
    /// Identity of the stream the message is stored in (its creation time).
    pub(crate) stream_created: OffsetDateTime,
    /// The demo fault `crash_after_commit`, set by [`Delivery::check`].
    crash_after_commit: AtomicBool,
}

impl Delivery {
    /// Opens the CONSUMER span, parented to the producer span named by the headers.
    /// `None` for a message that is not a JetStream delivery (no ack metadata in its
    /// reply subject): it cannot be settled, and its reply subject is not the server's.
    pub(crate) fn open(message: jetstream::Message, spans: &Messaging, stream_created: OffsetDateTime) -> Option<Self> {
        let facts = DeliveryFacts::from_info(&message.info().ok()?);
        let message_id = message
            .headers
            .as_ref()
            .and_then(|h| h.get(async_nats::header::NATS_MESSAGE_ID))
            .map(|v| v.as_str().to_owned());
        let span = spans.process(
            &MessageRef {
                subject: &message.subject,
                template: MESSAGE_TEMPLATE,
                message_id: message_id.as_deref(),
                body_size: message.payload.len(),
            },
            message.headers.as_ref(),
            Some(&facts),
            chat_protocol::CONSUMER,
        );
        let span_context = span.span_context();
        Some(Self {
            message,
            span,
            facts,
            message_id,
            span_context,
            stream_created,
            crash_after_commit: AtomicBool::new(false),
        })
    }

    /// The room named by the subject, if valid (for the dead-letter subject).
    pub(crate) fn room(&self) -> Option<&str> {
        parse_message_subject(&self.message.subject).ok().map(|(room, _)| room)
    }

    /// A [`MessageRef`] for spans about this delivery (settle spans).
    pub(crate) fn message_ref(&self) -> MessageRef<'_> {
        MessageRef {
            subject: &self.message.subject,
            template: MESSAGE_TEMPLATE,
            message_id: self.message_id.as_deref(),
            body_size: self.message.payload.len(),
        }
    }

    /// Decodes the delivery's row and acts out its demo fault, within the processing
    /// deadline; what stands in the way of a row has marked the span `ERROR` (a missed
    /// deadline as `Timeout`).
    pub(crate) async fn check(&self, config: &Config) -> Result<Row, Found> {
        let work = async {
            let checked = self.row_after_demo_fault(config).await;
            match checked {
                Err(Found::Poison(reason)) => record_failure(&self.span, reason, &format!("poison message: {reason}")),
                Err(Found::Transient(error_type)) => {
                    record_failure(&self.span, error_type, "injected transient failure")
                }
                _ => {}
            }
            checked
        };
        run_with_deadline(&self.span, config.processing_deadline, work)
            .await
            .unwrap_or(Err(Found::Transient("timeout")))
    }

    async fn row_after_demo_fault(&self, config: &Config) -> Result<Row, Found> {
        let (row, fault) = self.decode_row()?;
        let fault = fault.filter(|_| config.demo_faults);
        let first_delivery = !self.facts.is_redelivery();
        demo::before_store(fault, first_delivery, config.processing_deadline).await?;
        self.crash_after_commit.store(demo::crashes_after_commit(fault, first_delivery), Ordering::Relaxed);
        Ok(row)
    }

    /// Whether this delivery's demo fault aborts the worker after its commit.
    pub(crate) fn crashes_after_commit(&self) -> bool {
        self.crash_after_commit.load(Ordering::Relaxed)
    }

    /// The row to store, and the demo fault the message asks for; or why there is none.
    fn decode_row(&self) -> Result<(Row, Option<DemoFault>), Found> {
        // A header block (or subject) the client could not read: delivered without its
        // headers (see `telemetry::nats`). It cannot be stored as sent: dead letter.
        if let Some(reason) = telemetry::nats::unreadable(&self.message) {
            tracing::warn!(reason, "message the NATS client could not read in full");
            return Err(Found::Poison("malformed_headers"));
        }
        // The id is the sender's choice and part of a unique index: PostgreSQL refuses
        // index rows over ~2.7 KB, which would fail the whole batch.
        if self.message_id.as_ref().is_some_and(|id| id.len() > MAX_MESSAGE_ID_BYTES) {
            tracing::warn!("Nats-Msg-Id longer than {MAX_MESSAGE_ID_BYTES} bytes");
            return Err(Found::Poison("invalid_message_id"));
        }
        // Also refuses literal `*` and `>` tokens, which NATS lets a publisher use.
        let Ok((room, user)) = parse_message_subject(&self.message.subject) else {
            tracing::warn!("message subject has invalid room or user names");
            return Err(Found::Poison("invalid_subject"));
        };
        let chat = ChatMessage::decode(&self.message.payload).map_err(|error| {
            // The error text never quotes the payload.
            tracing::warn!(%error, "undecodable chat message");
            Found::Poison(error.reason())
        })?;
        let sent_at = chat
            .sent_at_ms
            .and_then(|ms| OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000).ok())
            .unwrap_or(self.facts.published);
        let trace_id = self.span_context.trace_id();
        tracing::debug!(stream_sequence = self.facts.stream_sequence, "message valid");
        let row = Row {
            stream_created: self.stream_created,
            stream_seq: i64::try_from(self.facts.stream_sequence).unwrap_or(i64::MAX),
            room: room.to_owned(),
            user: user.to_owned(),
            text: chat.text,
            sent_at,
            trace_id: (trace_id != opentelemetry::trace::TraceId::INVALID).then(|| trace_id.to_string()),
            msg_id: self.message_id.clone(),
        };
        Ok((row, chat.demo_fault))
    }
}

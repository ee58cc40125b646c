//! One JetStream delivery: its CONSUMER span (parented to the producer), its delivery
//! facts, and the decision what to do with it.

use async_nats::jetstream;
use chat_protocol::{ChatMessage, DemoFault, MESSAGE_TEMPLATE, parse_message_subject};
use opentelemetry::trace::{SpanContext, TraceContextExt as _};
use telemetry::{MessageRef, Peer, process_span, record_failure, run_with_deadline};
use time::OffsetDateTime;
use tracing::Span;
use tracing_opentelemetry::OpenTelemetrySpanExt as _;

use crate::Config;
use crate::store::Row;

/// What the batch does with a delivery.
#[derive(Debug)]
pub(crate) enum Outcome {
    /// Insert this row, then ack. `crash` is the demo fault `crash_after_commit`.
    Store { row: Row, crash: bool },
    /// A transient failure: nak with delay (or dead-letter on the last delivery).
    Retry { error_type: &'static str },
    /// Can never succeed: dead-letter, then term.
    Poison { reason: &'static str },
}

/// A delivery being processed; its span ends when this is dropped (after settling).
#[derive(Debug)]
pub(crate) struct Delivery {
    pub(crate) message: jetstream::Message,
    pub(crate) span: Span,
    pub(crate) facts: telemetry::Delivery,
    pub(crate) message_id: Option<String>,
    /// The span's context, read once (the row's trace id, the batch INSERT's links).
    pub(crate) span_context: SpanContext,
}

impl Delivery {
    /// Opens the CONSUMER span, parented to the producer span named by the headers.
    pub(crate) fn open(message: jetstream::Message, peer: &Peer) -> Self {
        let facts = match message.info() {
            Ok(info) => telemetry::Delivery::from_info(&info),
            // Only JetStream deliveries reach us; without metadata treat it as a first delivery.
            Err(_) => telemetry::Delivery { stream_sequence: 0, delivery_count: 1, queue_wait_seconds: 0.0 },
        };
        let message_id = message
            .headers
            .as_ref()
            .and_then(|h| h.get(async_nats::header::NATS_MESSAGE_ID))
            .map(|v| v.as_str().to_owned());
        let span = process_span(
            &MessageRef {
                subject: &message.subject,
                template: MESSAGE_TEMPLATE,
                message_id: message_id.as_deref(),
                body_size: message.payload.len(),
            },
            message.headers.as_ref(),
            Some(&facts),
            chat_protocol::CONSUMER,
            peer,
        );
        let span_context = span.context().span().span_context().clone();
        Self { message, span, facts, message_id, span_context }
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

    /// Validates the delivery and acts out demo faults, within the processing deadline.
    /// A missed deadline has already marked the span `ERROR`/`Timeout`.
    pub(crate) async fn decide(&self, config: &Config) -> Outcome {
        let work = async {
            let outcome = self.validate(config).await;
            match &outcome {
                Outcome::Poison { reason } => record_failure(&self.span, reason, &format!("poison message: {reason}")),
                Outcome::Retry { error_type } => record_failure(&self.span, error_type, "injected transient failure"),
                Outcome::Store { .. } => {}
            }
            outcome
        };
        run_with_deadline(&self.span, config.processing_deadline, work)
            .await
            .unwrap_or(Outcome::Retry { error_type: "timeout" })
    }

    async fn validate(&self, config: &Config) -> Outcome {
        let Ok((room, user)) = parse_message_subject(&self.message.subject) else {
            tracing::warn!("message subject has invalid room or user names");
            return Outcome::Poison { reason: "invalid_subject" };
        };
        let chat = match ChatMessage::decode(&self.message.payload) {
            Ok(chat) => chat,
            Err(error) => {
                // The error text never quotes the payload.
                tracing::warn!(%error, "undecodable chat message");
                return Outcome::Poison { reason: error.reason() };
            }
        };
        let first_delivery = !self.facts.is_redelivery();
        let fault = if config.demo_faults { chat.demo_fault } else { None };
        match fault {
            Some(DemoFault::Poison) => return Outcome::Poison { reason: "demo_poison" },
            Some(DemoFault::FailOnce) if first_delivery => return Outcome::Retry { error_type: "injected_failure" },
            Some(DemoFault::Slow) if first_delivery => {
                tracing::info!("demo fault: working past the processing deadline");
                tokio::time::sleep(config.processing_deadline * 2).await;
            }
            _ => {}
        }
        let published =
            OffsetDateTime::now_utc() - time::Duration::seconds_f64(self.facts.queue_wait_seconds.clamp(0.0, 1e9));
        let sent_at = chat
            .sent_at_ms
            .and_then(|ms| OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000).ok())
            .unwrap_or(published);
        let trace_id = self.span_context.trace_id();
        tracing::debug!(stream_sequence = self.facts.stream_sequence, "message valid");
        Outcome::Store {
            row: Row {
                stream_seq: i64::try_from(self.facts.stream_sequence).unwrap_or(i64::MAX),
                room: room.to_owned(),
                user: user.to_owned(),
                text: chat.text,
                sent_at,
                trace_id: (trace_id != opentelemetry::trace::TraceId::INVALID).then(|| trace_id.to_string()),
                msg_id: self.message_id.clone(),
            },
            crash: first_delivery && fault == Some(DemoFault::CrashAfterCommit),
        }
    }
}

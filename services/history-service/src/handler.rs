//! One history request: SERVER span (parent from the request headers), validation,
//! query, reply; errors as NATS service errors (`Nats-Service-Error[-Code]`).

use std::time::Instant;

use async_nats::service::Request;
use async_nats::service::error::Error as ServiceError;
use chat_protocol::{
    DEFAULT_HISTORY_LIMIT, HISTORY_QUEUE_GROUP, HISTORY_TEMPLATE, HistoryReply, HistoryRequest, MAX_HISTORY_LIMIT,
    chat_inbox_user, history_requester, parse_history_subject,
};
use opentelemetry::metrics::{Counter, Histogram};
use opentelemetry::{KeyValue, global};
use telemetry::messaging::{MessageRef, Messaging, record_failure};

use crate::query::History;

/// Handles requests; shared by all concurrent requests.
#[derive(Debug)]
pub(crate) struct Handler {
    history: History,
    spans: Messaging,
    requests: Counter<u64>,
    duration: Histogram<f64>,
}

/// Every value of `history.requests`' `result` attribute.
const RESULTS: [&str; 5] = ["ok", "bad_request", "error", "refused_reply_subject", "unreadable"];

/// A request that cannot be answered with messages.
#[derive(Debug)]
struct Failure {
    code: usize,
    result: &'static str,
    message: String,
}

impl Handler {
    pub(crate) fn new(history: History, spans: Messaging) -> Self {
        let meter = global::meter("history-service");
        let requests = meter
            .u64_counter("history.requests")
            .with_unit("{request}")
            .with_description("History requests, by result")
            .build();
        // At 0 from start-up, so the first request of each result shows in rate() and
        // increase() (a series created by its first event has no earlier sample).
        for result in RESULTS {
            requests.add(0, &[KeyValue::new("result", result)]);
        }
        Self {
            history,
            spans,
            requests,
            duration: meter
                .f64_histogram("history.request.duration")
                .with_unit("s")
                .with_description("Time to answer a history request")
                .with_boundaries(vec![0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5])
                .build(),
        }
    }

    pub(crate) async fn handle(&self, request: Request) {
        let started = Instant::now();
        let message = &request.message;
        let span = self.spans.server(
            &MessageRef {
                subject: &message.subject,
                template: HISTORY_TEMPLATE,
                message_id: None,
                body_size: message.payload.len(),
            },
            message.headers.as_ref(),
            HISTORY_QUEUE_GROUP,
        );
        // Headers or a reply subject the NATS client could not read (see
        // `telemetry::nats`): no client of ours sends them, and the reply subject may not
        // be what was sent. Not answered.
        if let Some(reason) = telemetry::nats::unreadable(message) {
            record_failure(&span, "unreadable", "request the NATS client could not read in full; not answered");
            span.in_scope(|| tracing::warn!(reason, "history request the NATS client could not read in full; ignored"));
            self.requests.add(1, &[KeyValue::new("result", "unreadable")]);
            span.end();
            return;
        }
        // The reply subject is the requester's choice: answering anything but the
        // requester's own inbox would publish there with this service's permissions, or
        // pour history into another user's connection. The requester is the user in the
        // subject, which the auth callout lets each user request only with its own name.
        let requester = history_requester(&message.subject);
        if requester.is_none() || message.reply.as_deref().and_then(chat_inbox_user) != requester {
            record_failure(&span, "refused_reply_subject", "reply subject is not the requester's inbox; not answered");
            span.in_scope(|| {
                tracing::warn!("history request whose reply subject is not the requester's inbox; ignored");
            });
            self.requests.add(1, &[KeyValue::new("result", "refused_reply_subject")]);
            span.end();
            return;
        }
        let answer = span.scope(self.answer(message)).await;
        let result = match answer {
            Ok(reply) => {
                let body = serde_json::to_vec(&reply).unwrap_or_default();
                if let Err(error) = span.scope(request.respond(Ok(body.into()))).await {
                    span.in_scope(|| tracing::warn!(%error, "reply not sent"));
                }
                "ok"
            }
            Err(failure) => {
                record_failure(&span, failure.result, &failure.message);
                span.in_scope(
                    || tracing::info!(code = failure.code, reason = %failure.message, "history request refused"),
                );
                let error = ServiceError { status: failure.message, code: failure.code };
                if let Err(error) = span.scope(request.respond(Err(error))).await {
                    span.in_scope(|| tracing::warn!(%error, "error reply not sent"));
                }
                failure.result
            }
        };
        span.end();
        let attributes = [KeyValue::new("result", result)];
        self.requests.add(1, &attributes);
        self.duration.record(started.elapsed().as_secs_f64(), &attributes);
    }

    async fn answer(&self, message: &async_nats::Message) -> Result<HistoryReply, Failure> {
        let bad_request = |message: String| Failure { code: 400, result: "bad_request", message };
        let (room, _) = parse_history_subject(&message.subject).map_err(|e| bad_request(e.to_string()))?;
        let request: HistoryRequest = if message.payload.iter().all(u8::is_ascii_whitespace) {
            HistoryRequest::default()
        } else {
            serde_json::from_slice(&message.payload)
                .map_err(|e| bad_request(format!("request is not a history request: {:?} error", e.classify())))?
        };
        let limit = request.limit.unwrap_or(DEFAULT_HISTORY_LIMIT);
        if !(1..=MAX_HISTORY_LIMIT).contains(&limit) {
            return Err(bad_request(format!("limit must be between 1 and {MAX_HISTORY_LIMIT}")));
        }
        let messages = self.history.newest(room, request.before, limit).await.map_err(|error| {
            tracing::warn!(%error, "history query failed");
            Failure { code: 503, result: "error", message: "history is unavailable, try again".to_owned() }
        })?;
        // Never more than the request asked for, and never more than a reply can carry.
        Ok(HistoryReply::within_limit(room.to_owned(), messages))
    }
}

//! `chat-cli send`: publish messages with a PRODUCER span each, trace context in the
//! headers, a `Nats-Msg-Id` for JetStream de-duplication, and wait for the stream's ack.

use std::time::Duration;

use async_nats::HeaderMap;
use async_nats::jetstream::context::{PublishError, PublishErrorKind};
use async_nats::jetstream::publish::PublishAck;
use chat_protocol::{ChatMessage, DemoFault, MESSAGE_TEMPLATE, message_subject};
use futures::StreamExt as _;
use serde_json::json;
use telemetry::messaging::{MessageRef, Messaging, Peer, Traced, record_failure};
use telemetry::propagation::extract_context;
use tracing_opentelemetry::OpenTelemetrySpanExt as _;

use crate::output::Output;
use crate::{Cli, CliError};

/// Arguments of `send`.
#[derive(Debug, clap::Args)]
pub struct SendArgs {
    /// Room name.
    pub room: String,
    /// Message text.
    pub text: String,
    /// How many copies to send (each its own trace).
    #[arg(long, default_value_t = 1)]
    pub count: usize,
    /// Publishes in flight at once.
    #[arg(long, default_value_t = 64)]
    pub concurrency: usize,
    /// Ask the worker to act out a fault (honoured only with DEMO_FAULTS=true).
    #[arg(long, value_enum)]
    pub fault: Option<FaultArg>,
    /// Nats-Msg-Id (with --count, "-<n>" is appended; default: a random id per message).
    /// An id the stream already holds is not stored again, and the send fails.
    #[arg(long)]
    pub msg_id: Option<String>,
    /// Continue this W3C trace instead of starting a new one.
    #[arg(long)]
    pub traceparent: Option<String>,
    /// Publish without a caller span: the publish span itself is the trace root.
    #[arg(long)]
    pub no_caller_span: bool,
}

/// Demo faults, as flags.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum FaultArg {
    /// First delivery fails, redelivery succeeds.
    FailOnce,
    /// First delivery outlives the processing deadline.
    Slow,
    /// Never succeeds: dead-lettered.
    Poison,
    /// The worker aborts after commit, before ack.
    CrashAfterCommit,
}

impl From<FaultArg> for DemoFault {
    fn from(f: FaultArg) -> Self {
        match f {
            FaultArg::FailOnce => Self::FailOnce,
            FaultArg::Slow => Self::Slow,
            FaultArg::Poison => Self::Poison,
            FaultArg::CrashAfterCommit => Self::CrashAfterCommit,
        }
    }
}

pub(crate) async fn send(
    client: &async_nats::Client,
    cli: &Cli,
    args: &SendArgs,
    out: &Output,
) -> Result<(), CliError> {
    let subject = message_subject(&args.room, &cli.user).map_err(|e| CliError::Invalid(e.to_string()))?;
    let js = async_nats::jetstream::new(client.clone());
    let spans = Messaging::new("chat-cli", &Peer::from_url(&cli.nats_url));
    let body = serde_json::to_vec(&ChatMessage {
        text: args.text.clone(),
        sent_at_ms: Some(now_ms()),
        demo_fault: args.fault.map(DemoFault::from),
    })
    .map_err(|e| CliError::Invalid(e.to_string()))?;
    let ids: Vec<String> = (0..args.count)
        .map(|i| match (&args.msg_id, args.count) {
            (Some(id), 1) => id.clone(),
            (Some(id), _) => format!("{id}-{i}"),
            (None, _) => new_message_id(),
        })
        .collect();
    let options = PublishOptions {
        caller_span: !args.no_caller_span,
        traceparent: args.traceparent.clone(),
        timeout: cli.timeout,
    };
    let publishes = futures::stream::iter(ids).map(|id| publish_one(&js, &spans, &subject, id, &body, &options));
    let mut results = publishes.buffer_unordered(args.concurrency.max(1));
    let mut failures = Vec::new();
    while let Some(result) = results.next().await {
        match result {
            Ok(sent) => out.result(
                &format!("sent {subject} seq={}", sent.seq),
                &sent.trace_id,
                json!({ "subject": subject, "seq": sent.seq, "msg_id": sent.msg_id }),
            ),
            Err(error) => failures.push(error),
        }
    }
    match failures.into_iter().next() {
        Some(error) => Err(error),
        None => Ok(()),
    }
}

/// A publish the stream acknowledged and stored.
pub(crate) struct Sent {
    pub(crate) seq: u64,
    pub(crate) msg_id: String,
    pub(crate) trace_id: String,
}

/// A `Nats-Msg-Id` nobody can guess: 122 random bits. JetStream de-duplicates by this id
/// across the whole stream, whoever publishes: an id another user could predict would
/// let them publish it first and have this message dropped as a duplicate.
pub(crate) fn new_message_id() -> String {
    uuid::Uuid::new_v4().simple().to_string()
}

/// How one message is published.
pub(crate) struct PublishOptions {
    /// Start a `send message` span around the publish (the seed's "producer with an active trace").
    pub(crate) caller_span: bool,
    /// Continue this W3C trace.
    pub(crate) traceparent: Option<String>,
    /// How long to wait for the stream's ack.
    pub(crate) timeout: std::time::Duration,
}

/// Publishes one message with its PRODUCER span and waits for the stream's ack.
pub(crate) async fn publish_one(
    js: &async_nats::jetstream::Context,
    spans: &Messaging,
    subject: &str,
    msg_id: String,
    body: &[u8],
    options: &PublishOptions,
) -> Result<Sent, CliError> {
    let caller = if options.caller_span { tracing::info_span!("send message") } else { tracing::Span::none() };
    if let Some(traceparent) = &options.traceparent {
        let mut headers = HeaderMap::new();
        let value = traceparent
            .parse::<async_nats::HeaderValue>()
            .map_err(|_| CliError::Invalid("bad --traceparent".into()))?;
        headers.insert(telemetry::propagation::TRACEPARENT, value);
        let _ = caller.set_parent(extract_context(Some(&headers)));
    }
    let span = caller.in_scope(|| {
        spans.publish(&MessageRef {
            subject,
            template: MESSAGE_TEMPLATE,
            message_id: Some(&msg_id),
            body_size: body.len(),
        })
    });
    let mut headers = HeaderMap::new();
    headers.insert(async_nats::header::NATS_MESSAGE_ID, msg_id.as_str());
    span.inject(&mut headers);
    let trace_id = span.span_context().trace_id().to_string();
    let result = span.scope(publish_until_acked(js, subject, headers, body, options.timeout, &span)).await;
    match &result {
        // The first copy was already a duplicate: the id was taken before this message
        // existed, so this message was dropped, not stored. (A duplicate after a retry
        // is this message's own earlier copy: stored.)
        Ok((ack, 1)) if ack.duplicate => {
            let error = CliError::Duplicate(format!("publish to {subject}"), msg_id.clone());
            record_failure(&span, "duplicate_id", &error.to_string());
            span.end();
            return Err(error);
        }
        _ => span.end(),
    }
    match result {
        Ok((ack, _)) => Ok(Sent { seq: ack.sequence, msg_id, trace_id }),
        Err(error) => {
            record_failure(&span, "publish_failed", &error.to_string());
            Err(match error.kind() {
                PublishErrorKind::TimedOut => CliError::Timeout(format!("publish to {subject}"), options.timeout),
                PublishErrorKind::StreamNotFound => {
                    CliError::NoResponders(format!("{subject} (no stream stores it; is persist-worker set up?)"))
                }
                _ => CliError::Nats(format!("publish to {subject} failed: {error}")),
            })
        }
    }
}

/// How long one attempt waits for the stream's ack before the publish is sent again.
const ATTEMPT_WAIT: Duration = Duration::from_millis(1500);

/// Publishes until the stream acknowledges, within `timeout` in all. A publish whose ack
/// did not come (timed out, the connection dropped, no stream leader answered while a
/// cluster elects one) is sent again with the same headers: the same `Nats-Msg-Id`, so
/// the stream stores it once however many copies arrive (its duplicate window is 2 min),
/// and the same trace context. Each retry is an event on the PRODUCER span. Errors that
/// another copy cannot fix (too large, refused by permissions) return at once. The ack
/// comes with the number of the attempt it answered.
async fn publish_until_acked(
    js: &async_nats::jetstream::Context,
    subject: &str,
    headers: HeaderMap,
    body: &[u8],
    timeout: Duration,
    span: &Traced,
) -> Result<(PublishAck, i64), PublishError> {
    let deadline = tokio::time::Instant::now() + timeout;
    let (mut pause, mut attempt) = (Duration::from_millis(100), 1i64);
    loop {
        let wait = ATTEMPT_WAIT.min(deadline.saturating_duration_since(tokio::time::Instant::now()));
        let error = match js.publish_with_headers(subject.to_owned(), headers.clone(), body.to_vec().into()).await {
            Ok(ack) => match tokio::time::timeout(wait, ack).await {
                Ok(Ok(ack)) => return Ok((ack, attempt)),
                Ok(Err(error)) => error,
                Err(_) => PublishError::from(PublishErrorKind::TimedOut),
            },
            Err(error) => error,
        };
        if !is_transient(&error) || tokio::time::Instant::now() + pause >= deadline {
            return Err(error);
        }
        span.add_event(
            "publish retry",
            vec![
                opentelemetry::KeyValue::new("messaging.publish.attempt", attempt),
                opentelemetry::KeyValue::new("error.type", error.kind().to_string()),
            ],
        );
        tokio::time::sleep(pause).await;
        (pause, attempt) = ((pause * 2).min(Duration::from_secs(1)), attempt + 1);
    }
}

/// Whether a copy of the same publish may succeed later: the ack was lost, the connection
/// is being replaced, or the stream has no leader for a moment (no responders, or the
/// server's 503 "JetStream system temporarily unavailable" during an election).
fn is_transient(error: &PublishError) -> bool {
    match error.kind() {
        PublishErrorKind::TimedOut | PublishErrorKind::BrokenPipe | PublishErrorKind::StreamNotFound => true,
        PublishErrorKind::Other => std::error::Error::source(error)
            .and_then(|source| source.downcast_ref::<async_nats::jetstream::Error>())
            .is_some_and(|api| api.code() == 503),
        _ => false,
    }
}

pub(crate) fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or_default()
}

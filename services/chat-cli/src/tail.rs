//! `chat-cli tail <room>`: live messages of a room. Each delivery is a CONSUMER span
//! (`process chat.msg.*.*`) parented to the sender's PRODUCER span, and prints the
//! sender's trace id, so a live message leads to its trace like a stored one does.

use chat_protocol::{ChatMessage, MESSAGE_TEMPLATE, parse_message_subject, validate_name};
use futures::StreamExt as _;
use serde_json::json;
use telemetry::messaging::{MessageRef, Messaging, Peer};

use crate::output::{Output, printable};
use crate::{Cli, CliError};

/// Arguments of `tail`.
#[derive(Debug, clap::Args)]
pub struct TailArgs {
    /// Room name.
    pub room: String,
    /// Stop after this many messages (default: until Ctrl-C).
    #[arg(long)]
    pub count: Option<usize>,
}

pub(crate) async fn tail(
    client: &async_nats::Client,
    cli: &Cli,
    args: &TailArgs,
    out: &Output,
) -> Result<(), CliError> {
    let room = validate_name("room", &args.room).map_err(|e| CliError::Invalid(e.to_string()))?;
    let subject = format!("chat.msg.{room}.*");
    let mut messages =
        client.subscribe(subject.clone()).await.map_err(|e| CliError::Nats(format!("subscribe {subject}: {e}")))?;
    // A refused subscription only shows as silence: make sure the server accepted it.
    client.flush().await.map_err(|e| CliError::Nats(e.to_string()))?;
    eprintln!("tailing {subject} (Ctrl-C to stop)");
    let spans = Messaging::new("chat-cli", &Peer::from_url(&cli.nats_url));
    let mut seen = 0;
    let stop = service_kit::health::shutdown_signal();
    tokio::pin!(stop);
    while args.count.is_none_or(|n| seen < n) {
        let message = tokio::select! {
            () = &mut stop => break,
            next = messages.next() => match next { Some(m) => m, None => break },
        };
        let Some(received) = receive(&spans, &message) else { continue };
        seen += 1;
        let Received { user, text, trace_id, span } = received;
        span.in_scope(|| {
            out.result(
                &format!("{user}: {}", printable(&text)),
                &trace_id,
                json!({ "room": room, "user": user, "text": text }),
            );
        });
        span.end();
    }
    Ok(())
}

/// A chat message as `tail` and the TUI show it, with its open CONSUMER span.
pub(crate) struct Received {
    pub(crate) user: String,
    /// The text as sent (print it with `printable`), or `<why it is unreadable>`.
    pub(crate) text: String,
    /// The sender's trace id.
    pub(crate) trace_id: String,
    /// `process chat.msg.*.*`, parented to the sender's span; the caller ends it.
    pub(crate) span: telemetry::messaging::Traced,
}

/// Reads one delivery of `chat.msg.<room>.*`. A publisher may use literal `*` or `>` as
/// its room or user token: not a chat message, ignored (`None`; the worker dead-letters
/// it). Headers the NATS client could not read: the message arrives without them (no
/// trace context), said on stderr.
pub(crate) fn receive(spans: &Messaging, message: &async_nats::Message) -> Option<Received> {
    let Ok((_, user)) = parse_message_subject(&message.subject) else {
        tracing::warn!("ignored a message on an invalid subject");
        return None;
    };
    if let Some(reason) = telemetry::nats::unreadable(message) {
        tracing::warn!(%reason, "a message had headers that could not be read; shown without them");
    }
    let span = spans.process(
        &MessageRef {
            subject: &message.subject,
            template: MESSAGE_TEMPLATE,
            message_id: None,
            body_size: message.payload.len(),
        },
        message.headers.as_ref(),
        None,
        "chat-cli",
    );
    let trace_id = span.span_context().trace_id().to_string();
    let text = ChatMessage::decode(&message.payload).map(|m| m.text).unwrap_or_else(|e| format!("<{}>", e.reason()));
    Some(Received { user: user.to_owned(), text, trace_id, span })
}

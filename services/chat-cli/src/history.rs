//! `chat-cli history`: a traced request (CLIENT span) to `chat.history.<room>.<user>`; prints
//! each message with the trace it was sent in, so a stored message leads to its trace.

use async_nats::HeaderMap;
use chat_protocol::{HISTORY_TEMPLATE, HistoryReply, HistoryRequest, history_subject};
use serde_json::json;
use telemetry::messaging::{MessageRef, Messaging, Peer, record_failure};

use crate::links::trace_url;
use crate::output::{Output, printable};
use crate::{Cli, CliError};

/// Arguments of `history`.
#[derive(Debug, clap::Args)]
pub struct HistoryArgs {
    /// Room name.
    pub room: String,
    /// How many messages (1 to 500, default 50).
    #[arg(long)]
    pub limit: Option<u32>,
    /// Only messages with a stream sequence below this one.
    #[arg(long)]
    pub before: Option<i64>,
}

pub(crate) async fn history(
    client: &async_nats::Client,
    cli: &Cli,
    args: &HistoryArgs,
    out: &Output,
) -> Result<(), CliError> {
    let subject = history_subject(&args.room, &cli.user).map_err(|e| CliError::Invalid(e.to_string()))?;
    let body = serde_json::to_vec(&HistoryRequest { limit: args.limit, before: args.before })
        .map_err(|e| CliError::Invalid(e.to_string()))?;
    let spans = Messaging::new("chat-cli", &Peer::from_url(&cli.nats_url));
    let span = spans.request(&MessageRef {
        subject: &subject,
        template: HISTORY_TEMPLATE,
        message_id: None,
        body_size: body.len(),
    });
    let mut headers = HeaderMap::new();
    span.inject(&mut headers);
    let trace_id = span.span_context().trace_id().to_string();
    let request = async_nats::Request::new().headers(headers).payload(body.into()).timeout(Some(cli.timeout));
    let reply = span.scope(client.send_request(subject.clone(), request)).await;
    span.end();
    let reply = reply.map_err(|e| {
        record_failure(&span, "request_failed", &e.to_string());
        match e.kind() {
            async_nats::RequestErrorKind::NoResponders => CliError::NoResponders(subject.clone()),
            async_nats::RequestErrorKind::TimedOut => {
                CliError::Timeout(format!("history request to {subject}"), cli.timeout)
            }
            _ => CliError::Nats(format!("history request failed: {e}")),
        }
    })?;
    if let Some(code) = reply.headers.as_ref().and_then(|h| h.get(async_nats::service::NATS_SERVICE_ERROR_CODE)) {
        let message = reply
            .headers
            .as_ref()
            .and_then(|h| h.get(async_nats::service::NATS_SERVICE_ERROR))
            .map(|v| v.as_str().to_owned())
            .unwrap_or_default();
        record_failure(&span, "service_error", &message);
        return Err(CliError::Service { service: subject, code: code.as_str().to_owned(), message });
    }
    let reply: HistoryReply =
        serde_json::from_slice(&reply.payload).map_err(|e| CliError::Nats(format!("unreadable history reply: {e}")))?;
    let more = match (reply.truncated, reply.messages.last()) {
        (true, Some(oldest)) => format!("; older ones did not fit in one reply: --before {}", oldest.seq),
        _ => String::new(),
    };
    out.result(
        &format!("history of {} ({} messages{more})", reply.room, reply.messages.len()),
        &trace_id,
        json!({ "room": reply.room, "count": reply.messages.len(), "truncated": reply.truncated }),
    );
    for m in &reply.messages {
        let link = m.trace_id.as_deref().map(|t| trace_url(out.grafana(), t)).unwrap_or_default();
        out.line(
            &format!(
                "#{} {} {}: {}\n  trace_id={} {link}",
                m.seq,
                printable(&m.sent_at),
                printable(&m.user),
                printable(&m.text),
                printable(m.trace_id.as_deref().unwrap_or("-"))
            ),
            &json!({ "seq": m.seq, "user": m.user, "text": m.text, "sent_at": m.sent_at, "trace_id": m.trace_id, "trace_url": link }),
        );
    }
    Ok(())
}

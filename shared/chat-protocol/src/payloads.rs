//! JSON payloads: a chat message, a history request and its reply.

use serde::{Deserialize, Serialize};

/// Largest accepted chat message payload, in bytes.
pub const MAX_PAYLOAD_BYTES: usize = 16 * 1024;
/// Longest accepted message text, in characters.
pub const MAX_TEXT_CHARS: usize = 4_000;
/// Messages per history reply when the request names no limit.
pub const DEFAULT_HISTORY_LIMIT: u32 = 50;
/// Most messages one history reply may hold.
pub const MAX_HISTORY_LIMIT: u32 = 500;

/// A fault the persist worker acts out when started with `DEMO_FAULTS=true` (and
/// ignores otherwise): it drives the demo and the seed scenarios.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DemoFault {
    /// The first delivery fails like a transient error; the redelivery succeeds.
    FailOnce,
    /// The first delivery works past the processing deadline; the redelivery succeeds.
    Slow,
    /// Every delivery is treated as poison: terminated and dead-lettered.
    Poison,
    /// The worker aborts right after committing the first delivery, before acking it:
    /// the redelivery must not store the message twice.
    CrashAfterCommit,
}

/// What a client publishes on `chat.msg.<room>.<user>`. Room and user come from the
/// subject, which server permissions make trustworthy; never from the payload.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChatMessage {
    /// The text, 1 to [`MAX_TEXT_CHARS`] characters.
    pub text: String,
    /// When the client sent it, ms since the Unix epoch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sent_at_ms: Option<i64>,
    /// A demo fault request.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub demo_fault: Option<DemoFault>,
}

/// Why a payload is not a valid chat message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvalidMessage {
    /// Bigger than [`MAX_PAYLOAD_BYTES`].
    #[error("payload of {0} bytes exceeds {MAX_PAYLOAD_BYTES}")]
    TooLarge(usize),
    /// Not the JSON shape of [`ChatMessage`] (the serde message, without the payload).
    #[error("payload is not a chat message: {0}")]
    Malformed(String),
    /// Empty text, longer than [`MAX_TEXT_CHARS`], or containing NUL.
    #[error("text must have 1 to {MAX_TEXT_CHARS} characters and no NUL")]
    BadText,
}

impl InvalidMessage {
    /// Low-cardinality reason for metrics, spans and dead-letter headers.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::TooLarge(_) => "too_large",
            Self::Malformed(_) => "malformed",
            Self::BadText => "bad_text",
        }
    }
}

impl ChatMessage {
    /// Decodes and validates a payload.
    pub fn decode(payload: &[u8]) -> Result<Self, InvalidMessage> {
        if payload.len() > MAX_PAYLOAD_BYTES {
            return Err(InvalidMessage::TooLarge(payload.len()));
        }
        let message: Self =
            serde_json::from_slice(payload).map_err(|e| InvalidMessage::Malformed(e.classify_text()))?;
        let chars = message.text.chars().count();
        // PostgreSQL text cannot hold NUL: such a message could never be stored.
        if chars == 0 || chars > MAX_TEXT_CHARS || message.text.contains('\0') {
            return Err(InvalidMessage::BadText);
        }
        Ok(message)
    }
}

/// serde_json messages may quote the input; keep only the category and position.
trait ClassifyText {
    fn classify_text(&self) -> String;
}

impl ClassifyText for serde_json::Error {
    fn classify_text(&self) -> String {
        format!("{:?} error at line {} column {}", self.classify(), self.line(), self.column())
    }
}

/// Body of a request on `chat.history.<room>.<user>` (an empty body means the defaults).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HistoryRequest {
    /// How many messages, 1 to [`MAX_HISTORY_LIMIT`] (default [`DEFAULT_HISTORY_LIMIT`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<u32>,
    /// Only messages with a stream sequence below this one (paging backwards).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub before: Option<i64>,
}

/// One stored message in a history reply.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredMessage {
    /// Stream sequence in `CHAT`.
    pub seq: i64,
    /// Sender (from the subject).
    pub user: String,
    /// The text.
    pub text: String,
    /// When it was sent (RFC 3339).
    pub sent_at: String,
    /// The trace it was published in, if it carried one.
    pub trace_id: Option<String>,
}

/// Largest history reply body: half of nats-server's default `max_payload` (1 MiB), so
/// a reply and its headers always fit (a larger one was silently not sent).
pub const MAX_HISTORY_REPLY_BYTES: usize = 512 * 1024;

/// Reply to a history request: newest first.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HistoryReply {
    /// The room asked for.
    pub room: String,
    /// Newest first.
    pub messages: Vec<StoredMessage>,
    /// Older messages were left out to keep the reply under [`MAX_HISTORY_REPLY_BYTES`]:
    /// ask again with `before` the oldest sequence returned.
    #[serde(default)]
    pub truncated: bool,
}

impl HistoryReply {
    /// The newest `messages` that fit in [`MAX_HISTORY_REPLY_BYTES`] once serialized.
    pub fn within_limit(room: String, mut messages: Vec<StoredMessage>) -> Self {
        let mut size = 64 + room.len();
        let fits = messages
            .iter()
            .take_while(|m| {
                size += serde_json::to_vec(m).map_or(usize::MAX / 2, |bytes| bytes.len() + 1);
                size <= MAX_HISTORY_REPLY_BYTES
            })
            .count();
        let truncated = fits < messages.len();
        messages.truncate(fits);
        Self { room, messages, truncated }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_history_reply_keeps_the_newest_messages_that_fit() {
        let message = |seq| StoredMessage {
            seq,
            user: "bob".into(),
            text: "x".repeat(MAX_TEXT_CHARS),
            sent_at: "2026-12-02T00:00:00Z".into(),
            trace_id: None,
        };
        let messages: Vec<_> = (0..500).rev().map(message).collect();
        let reply = HistoryReply::within_limit("general".into(), messages);
        let bytes = serde_json::to_vec(&reply).expect("json").len();
        assert!(reply.truncated && bytes <= MAX_HISTORY_REPLY_BYTES, "{bytes} bytes");
        assert!(bytes > MAX_HISTORY_REPLY_BYTES - 4 * MAX_TEXT_CHARS, "filled: {bytes}");
        assert_eq!(reply.messages.first().map(|m| m.seq), Some(499), "newest first, kept");
        let small = HistoryReply::within_limit("general".into(), vec![message(1)]);
        assert!(!small.truncated && small.messages.len() == 1);
    }

    #[test]
    fn decodes_valid_messages_and_faults() {
        let m = ChatMessage::decode(br#"{"text":"hi","demo_fault":"fail_once"}"#).expect("valid");
        assert_eq!(m.text, "hi");
        assert_eq!(m.demo_fault, Some(DemoFault::FailOnce));
    }

    #[test]
    fn rejects_poison_without_echoing_it() {
        let secret_text = "password=hunter2";
        let cases: Vec<(Vec<u8>, &str)> = vec![
            (b"not json".to_vec(), "malformed"),
            (format!(r#"{{"text":"{secret_text}","extra":1}}"#).into_bytes(), "malformed"),
            (br#"{"text":""}"#.to_vec(), "bad_text"),
            (br#"{"text":"a\u0000b"}"#.to_vec(), "bad_text"),
            (format!(r#"{{"text":"{}"}}"#, "x".repeat(MAX_TEXT_CHARS + 1)).into_bytes(), "bad_text"),
            (vec![b' '; MAX_PAYLOAD_BYTES + 1], "too_large"),
            (br#"{"text":"hi","demo_fault":"explode"}"#.to_vec(), "malformed"),
        ];
        for (payload, reason) in cases {
            let err = ChatMessage::decode(&payload).expect_err("invalid");
            assert_eq!(err.reason(), reason, "{err}");
            assert!(!err.to_string().contains("hunter2"), "{err}");
        }
    }
}

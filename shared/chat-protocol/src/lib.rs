//! The chat system's wire contract: subjects and their templates, the rule for room and
//! user names, and the JSON payloads. Everything that crosses NATS is defined here once.

mod inbox;
mod names;
mod payloads;

pub use inbox::{chat_inbox_prefix, chat_inbox_user};
pub use names::{
    InvalidName, dlq_subject, history_requester, history_subject, message_subject, parse_history_subject,
    parse_message_subject, validate_name,
};
pub use payloads::{
    ChatMessage, DEFAULT_HISTORY_LIMIT, DemoFault, HistoryReply, HistoryRequest, InvalidMessage, MAX_HISTORY_LIMIT,
    MAX_HISTORY_REPLY_BYTES, MAX_PAYLOAD_BYTES, MAX_TEXT_CHARS, StoredMessage,
};

/// JetStream stream holding chat messages (`chat.msg.>`).
pub const STREAM: &str = "CHAT";
/// JetStream stream holding dead letters (`chat.dlq.>`).
pub const DLQ_STREAM: &str = "CHAT_DLQ";
/// Durable consumer of the persist worker.
pub const CONSUMER: &str = "persist-worker";
/// Queue group of the history service.
pub const HISTORY_QUEUE_GROUP: &str = "history";
/// Template of chat message subjects (span names, `messaging.destination.template`).
pub const MESSAGE_TEMPLATE: &str = "chat.msg.*.*";
/// Template of history request subjects (`chat.history.<room>.<requester>`).
pub const HISTORY_TEMPLATE: &str = "chat.history.*.*";
/// Template of dead-letter subjects.
pub const DLQ_TEMPLATE: &str = "chat.dlq.*";
/// Header naming why a message was dead-lettered.
pub const DLQ_REASON_HEADER: &str = "Chat-Dlq-Reason";

//! The dead letter's headers, built so that the server always accepts it.
//!
//! The sender's headers are user input: copied as they were, a `Nats-Expected-Last-
//! Sequence` or `Nats-Msg-Id` would make the server refuse or drop the dead letter, and a
//! planted `chat-dlq-reason` would lie to whoever reads the DLQ. So the dead letter's own
//! headers are an allowlist set here (`Nats-Msg-Id`, `Chat-Dlq-*`, the trace context),
//! and the sender's headers travel under the prefix `Chat-Orig-`, minus the trace
//! markers, at most [`MAX_COPIED_HEADERS`] of them and [`MAX_COPIED_BYTES`] in all (the
//! rest is counted in `Chat-Dlq-Headers-Dropped`). With the streams' size limits (see
//! `setup`), a dead letter always fits in `CHAT_DLQ`.

use async_nats::HeaderMap;
use async_nats::header::{HeaderName, HeaderValue};
use time::OffsetDateTime;

/// Prefix of the sender's headers in a dead letter.
pub(crate) const ORIGINAL_PREFIX: &str = "Chat-Orig-";
/// Most sender headers copied.
pub(crate) const MAX_COPIED_HEADERS: usize = 64;
/// Most bytes of sender headers copied (names with prefix, plus values).
pub(crate) const MAX_COPIED_BYTES: usize = 4096;
/// Trace markers of the server and the sender: the dead letter carries its own context.
const NEVER_COPIED: &[&str] = &["traceparent", "xraceparent", "tracestate", "nats-trace-dest"];

/// What the dead letter says about the message.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Facts<'a> {
    pub(crate) reason: &'static str,
    pub(crate) subject: &'a str,
    pub(crate) stream_created: OffsetDateTime,
    pub(crate) stream_sequence: u64,
    pub(crate) deliveries: u64,
}

impl Facts<'_> {
    /// The dead letter's `Nats-Msg-Id`: unique across stream lifetimes (a recreated
    /// stream restarts at sequence 1, and the DLQ would drop a second `dlq-1` as a
    /// duplicate within its window).
    pub(crate) fn message_id(&self) -> String {
        format!("dlq-{}-{}", self.stream_created.unix_timestamp_nanos(), self.stream_sequence)
    }
}

/// The headers of the dead letter of a message with `original` headers. The trace
/// context is injected afterwards.
pub(crate) fn headers(original: Option<&HeaderMap>, facts: &Facts<'_>) -> HeaderMap {
    let mut headers = HeaderMap::new();
    let (mut copied, mut bytes, mut dropped) = (0usize, 0usize, 0usize);
    for (name, values) in original.into_iter().flat_map(HeaderMap::iter) {
        let name: &str = name.as_ref();
        if NEVER_COPIED.contains(&name.to_ascii_lowercase().as_str()) {
            continue;
        }
        let Ok(prefixed) = format!("{ORIGINAL_PREFIX}{name}").parse::<HeaderName>() else {
            dropped += values.len();
            continue;
        };
        for value in values {
            let size = ORIGINAL_PREFIX.len() + name.len() + value.as_str().len();
            if copied == MAX_COPIED_HEADERS || bytes + size > MAX_COPIED_BYTES {
                dropped += 1;
                continue;
            }
            headers.append(prefixed.clone(), value.clone());
            (copied, bytes) = (copied + 1, bytes + size);
        }
    }
    headers.insert(async_nats::header::NATS_MESSAGE_ID, facts.message_id().as_str());
    headers.insert(chat_protocol::DLQ_REASON_HEADER, facts.reason);
    // The subject passed the stream's filter, so it is a valid header value.
    if let Ok(subject) = facts.subject.parse::<HeaderValue>() {
        headers.insert("Chat-Dlq-Subject", subject);
    }
    headers.insert("Chat-Dlq-Stream-Seq", facts.stream_sequence.to_string().as_str());
    headers.insert("Chat-Dlq-Deliveries", facts.deliveries.to_string().as_str());
    if dropped > 0 {
        headers.insert("Chat-Dlq-Headers-Dropped", dropped.to_string().as_str());
    }
    headers
}

#[cfg(test)]
mod tests {
    use super::*;

    const FACTS: Facts<'static> = Facts {
        reason: "malformed",
        subject: "chat.msg.general.bob",
        stream_created: OffsetDateTime::UNIX_EPOCH,
        stream_sequence: 7,
        deliveries: 1,
    };

    fn get<'a>(headers: &'a HeaderMap, name: &str) -> Vec<&'a str> {
        headers
            .iter()
            .filter(|(n, _)| AsRef::<str>::as_ref(*n) == name)
            .flat_map(|(_, v)| v.iter().map(HeaderValue::as_str))
            .collect()
    }

    #[test]
    fn sender_headers_are_kept_under_a_prefix_and_never_steer_the_server() {
        let mut original = HeaderMap::new();
        original.insert("Nats-Expected-Last-Sequence", "1");
        original.insert("Nats-Msg-Id", "sender-id");
        original.insert("chat-dlq-reason", "planted");
        original.insert("Chat-Client", "demo");
        original.insert("Xraceparent", "00-5b8efff798038103d269b633813fc60c-eee19b7ec3c1b174-01");
        original.insert("Nats-Trace-Dest", "trace disabled");
        let dead = headers(Some(&original), &FACTS);
        let headers = dead;
        assert_eq!(get(&headers, "Nats-Expected-Last-Sequence"), Vec::<&str>::new());
        assert_eq!(get(&headers, "Chat-Orig-Nats-Expected-Last-Sequence"), ["1"]);
        assert_eq!(get(&headers, "Nats-Msg-Id"), ["dlq-0-7"]);
        assert_eq!(get(&headers, "Chat-Orig-Nats-Msg-Id"), ["sender-id"]);
        assert_eq!(get(&headers, "Chat-Dlq-Reason"), ["malformed"]);
        assert_eq!(get(&headers, "chat-dlq-reason"), Vec::<&str>::new(), "a planted reason stays the sender's");
        assert_eq!(get(&headers, "Chat-Orig-chat-dlq-reason"), ["planted"]);
        assert_eq!(get(&headers, "Chat-Orig-Chat-Client"), ["demo"]);
        for marker in ["Xraceparent", "Chat-Orig-Xraceparent", "Nats-Trace-Dest", "Chat-Orig-Nats-Trace-Dest"] {
            assert!(get(&headers, marker).is_empty(), "{marker}");
        }
        assert!(get(&headers, "Chat-Dlq-Headers-Dropped").is_empty());
    }

    #[test]
    fn copied_headers_are_bounded_and_the_rest_counted() {
        let mut many = HeaderMap::new();
        for i in 0..200 {
            many.append(format!("X-{i}").as_str(), "v");
        }
        let capped = headers(Some(&many), &FACTS);
        let copied = capped.iter().filter(|(n, _)| AsRef::<str>::as_ref(*n).starts_with(ORIGINAL_PREFIX)).count();
        assert_eq!(copied, MAX_COPIED_HEADERS);
        assert_eq!(get(&capped, "Chat-Dlq-Headers-Dropped"), ["136"]);

        let mut big = HeaderMap::new();
        big.insert("X-Big", "v".repeat(3000).as_str());
        big.insert("X-Bigger", "w".repeat(3000).as_str());
        let capped = headers(Some(&big), &FACTS);
        let bytes: usize = capped
            .iter()
            .filter(|(n, _)| AsRef::<str>::as_ref(*n).starts_with(ORIGINAL_PREFIX))
            .map(|(n, v)| AsRef::<str>::as_ref(n).len() + v.iter().map(|v| v.as_str().len()).sum::<usize>())
            .sum();
        assert!(bytes <= MAX_COPIED_BYTES, "{bytes}");
        assert_eq!(get(&capped, "Chat-Dlq-Headers-Dropped"), ["1"]);
    }

    #[test]
    fn dead_letter_ids_differ_across_stream_lifetimes() {
        let recreated = Facts { stream_created: OffsetDateTime::UNIX_EPOCH + time::Duration::seconds(5), ..FACTS };
        assert_ne!(FACTS.message_id(), recreated.message_id());
    }
}

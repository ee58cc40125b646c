//! Streams `CHAT` and `CHAT_DLQ` and the durable pull consumer, created or updated
//! idempotently (a restart, a second replica, or the worker healing itself after one of
//! them vanished finds them and brings their settings up to date).
//!
//! Sizes: `CHAT` refuses messages over [`MAX_MESSAGE_BYTES`] at publish (the publisher
//! gets the error, nothing is stored); `CHAT_DLQ` takes [`MAX_DEAD_LETTER_BYTES`], room
//! for any stored message plus the dead letter's bounded headers, so a dead letter is
//! never refused for its size.

use std::time::Duration;

use async_nats::jetstream::consumer::{AckPolicy, PullConsumer, pull};
use async_nats::jetstream::stream::{Config as StreamConfig, StorageType};
use async_nats::jetstream::{self, Context};
use chat_protocol::{CONSUMER, DLQ_STREAM, STREAM};
use time::OffsetDateTime;

use crate::Config;
use crate::dead_letter::MAX_COPIED_BYTES;

/// Stream or consumer setup failed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum SetupError {
    /// Creating, updating or reading a stream failed.
    #[error("cannot create stream {name}: {source}")]
    Stream {
        /// Stream name.
        name: &'static str,
        /// Server answer.
        source: jetstream::context::CreateStreamError,
    },
    /// Creating or updating the consumer failed.
    #[error("cannot create consumer {CONSUMER}: {0}")]
    Consumer(#[from] jetstream::stream::ConsumerError),
}

/// How long JetStream remembers a `Nats-Msg-Id` to drop duplicate publishes.
const DUPLICATE_WINDOW: Duration = Duration::from_secs(120);
/// Largest message (headers and payload) `CHAT` stores: twice the largest valid chat
/// payload, so too-large messages up to this size are still stored and dead-lettered
/// with a reason, and anything bigger is refused at publish.
pub(crate) const MAX_MESSAGE_BYTES: i32 = 2 * chat_protocol::MAX_PAYLOAD_BYTES as i32;
/// Largest dead letter: a stored message, the sender's headers as copied, and ours.
pub(crate) const MAX_DEAD_LETTER_BYTES: i32 = MAX_MESSAGE_BYTES + MAX_COPIED_BYTES as i32 + 4096;

/// The consumer to pull from, and the identity of the stream it reads (the stream's
/// creation time: part of every row's key).
#[derive(Debug)]
pub(crate) struct Source {
    pub(crate) consumer: PullConsumer,
    pub(crate) stream_created: OffsetDateTime,
}

fn stream(name: &str, subjects: &str, max_message_size: i32, replicas: u8) -> StreamConfig {
    StreamConfig {
        num_replicas: usize::from(replicas),
        name: name.to_owned(),
        subjects: vec![subjects.to_owned()],
        storage: StorageType::File,
        duplicate_window: DUPLICATE_WINDOW,
        max_message_size,
        ..Default::default()
    }
}

/// Ensures both streams and the consumer exist with the configured settings.
pub(crate) async fn ensure_stream_and_consumer(js: &Context, config: &Config) -> Result<Source, SetupError> {
    // The dead-letter stream first: the worker must never take a message it cannot dead-letter.
    ensure_dead_letter_stream(js, config.stream_replicas).await?;
    let info = js
        .create_or_update_stream(stream(STREAM, "chat.msg.>", MAX_MESSAGE_BYTES, config.stream_replicas))
        .await
        .map_err(|source| SetupError::Stream { name: STREAM, source })?;
    let consumer = js
        .create_consumer_on_stream(
            pull::Config {
                durable_name: Some(CONSUMER.to_owned()),
                description: Some("persist-worker: stores chat messages in PostgreSQL".to_owned()),
                ack_policy: AckPolicy::Explicit,
                ack_wait: config.ack_wait,
                // The worker decides when a message's retries are over (see `fate`): the
                // server never drops a message after a last delivery.
                max_deliver: -1,
                backoff: config.backoff.clone(),
                filter_subject: "chat.msg.>".to_owned(),
                // Enough for every batch in flight plus one being collected.
                max_ack_pending: i64::try_from(config.batch_size * (config.in_flight_batches + 1)).unwrap_or(i64::MAX),
                ..Default::default()
            },
            STREAM,
        )
        .await?;
    Ok(Source { consumer, stream_created: to_micros(info.created) })
}

/// Creates the dead-letter stream again if it vanished (a dead letter found no stream).
pub(crate) async fn ensure_dead_letter_stream(js: &Context, replicas: u8) -> Result<(), SetupError> {
    js.create_or_update_stream(stream(DLQ_STREAM, "chat.dlq.>", MAX_DEAD_LETTER_BYTES, replicas))
        .await
        .map(|_| ())
        .map_err(|source| SetupError::Stream { name: DLQ_STREAM, source })
}

/// PostgreSQL keeps microseconds: the stream identity in the key is the creation time
/// at that precision, so what the worker holds equals what the table returns.
fn to_micros(t: OffsetDateTime) -> OffsetDateTime {
    t.replace_nanosecond(t.nanosecond() / 1_000 * 1_000).unwrap_or(t)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stream_identity_has_microsecond_precision() {
        let t = OffsetDateTime::UNIX_EPOCH + time::Duration::nanoseconds(1_234_567_891);
        assert_eq!(to_micros(t), OffsetDateTime::UNIX_EPOCH + time::Duration::nanoseconds(1_234_567_000));
    }
}

//! Streams `CHAT` and `CHAT_DLQ` and the durable pull consumer: [`set_up`] creates or
//! updates them idempotently, run by `persist-worker setup` as the NATS user `setup` (by
//! `make up` before the workers start, and by the tests); [`open`] finds them for the
//! worker, whose user `persist` may only read them, consume and dead-letter (it can
//! neither create nor change a stream: a stream update can set limits that drop
//! messages). A worker that finds one missing reports not ready and retries until the
//! setup step has run again.
//!
//! Sizes: `CHAT` refuses messages over [`MAX_MESSAGE_BYTES`] at publish (the publisher
//! gets the error, nothing is stored); `CHAT_DLQ` takes [`MAX_DEAD_LETTER_BYTES`], room
//! for any stored message plus the dead letter's bounded headers, so a dead letter is
//! never refused for its size.
//!
//! Retention: `CHAT` keeps a message `STREAM_MAX_AGE` (7 days by default): it is the
//! buffer between publishers and PostgreSQL, not the archive, and a week covers a worker
//! outage over a long weekend with bounded disk. `CHAT_DLQ` keeps dead letters until an
//! operator removes them, and remembers their ids for [`DLQ_DUPLICATE_WINDOW`]: a dead
//! letter's id is stable (`dlq-<stream>-<seq>`), so one written again is dropped.
//!
//! Where a new consumer starts: an existing consumer keeps its position. A consumer
//! created again (it vanished: deleted, or its store was lost) starts just after the
//! last ack floor the worker recorded for this stream (`position` records it every 10 s), so
//! it does not replay the stream from its start; with no recorded floor it starts at the
//! first message.

use std::time::Duration;

use async_nats::jetstream::consumer::{AckPolicy, DeliverPolicy, PullConsumer, pull};
use async_nats::jetstream::context::ConsumerInfoErrorKind;
use async_nats::jetstream::stream::{Config as StreamConfig, StorageType};
use async_nats::jetstream::{self, Context};
use chat_protocol::{CONSUMER, DLQ_STREAM, STREAM};
use time::OffsetDateTime;

use crate::Config;
use crate::dead_letter::MAX_COPIED_BYTES;
use crate::store::{Store, StoreError};

/// Stream or consumer setup failed.
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
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
    Consumer(jetstream::stream::ConsumerError),
    /// The stream's handle could not be made.
    #[error("cannot look up stream {STREAM}: {0}")]
    StreamHandle(#[from] jetstream::context::GetStreamError),
    /// The worker found no stream: the setup step has not run (or must run again).
    #[error("stream {STREAM} not found ({0}): run the setup step (`persist-worker setup`, run by make up)")]
    Missing(jetstream::context::GetStreamError),
    /// The worker found no consumer: the setup step has not run (or must run again).
    #[error("consumer {CONSUMER} not found ({0}): run the setup step (`persist-worker setup`, run by make up)")]
    MissingConsumer(String),
    /// Reading the consumer failed (other than: it does not exist).
    #[error("cannot read consumer {CONSUMER}: {0}")]
    ConsumerInfo(#[from] jetstream::context::ConsumerInfoError),
    /// The recorded position could not be read: a new consumer would not know where to
    /// start, so it is not created yet.
    #[error("cannot read the consumer's recorded position: {0}")]
    Position(#[from] StoreError),
}

/// How long `CHAT` remembers a `Nats-Msg-Id` to drop duplicate publishes.
const DUPLICATE_WINDOW: Duration = Duration::from_secs(120);
/// How long `CHAT_DLQ` remembers a dead letter's id.
pub(crate) const DLQ_DUPLICATE_WINDOW: Duration = Duration::from_secs(24 * 3600);
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

fn chat_stream(config: &Config) -> StreamConfig {
    StreamConfig {
        num_replicas: usize::from(config.stream_replicas),
        name: STREAM.to_owned(),
        subjects: vec!["chat.msg.>".to_owned()],
        storage: StorageType::File,
        duplicate_window: DUPLICATE_WINDOW,
        max_message_size: MAX_MESSAGE_BYTES,
        max_age: config.stream_max_age,
        ..Default::default()
    }
}

fn dead_letter_stream(replicas: u8) -> StreamConfig {
    StreamConfig {
        num_replicas: usize::from(replicas),
        name: DLQ_STREAM.to_owned(),
        subjects: vec!["chat.dlq.>".to_owned()],
        storage: StorageType::File,
        duplicate_window: DLQ_DUPLICATE_WINDOW,
        max_message_size: MAX_DEAD_LETTER_BYTES,
        ..Default::default()
    }
}

/// Creates or updates both streams and the consumer with the configured settings.
pub(crate) async fn set_up(js: &Context, config: &Config, store: &Store) -> Result<Source, SetupError> {
    // The dead-letter stream first: the worker must never take a message it cannot dead-letter.
    ensure_dead_letter_stream(js, config.stream_replicas).await?;
    let info = js
        .create_or_update_stream(chat_stream(config))
        .await
        .map_err(|source| SetupError::Stream { name: STREAM, source })?;
    let stream_created = to_micros(info.created);
    let deliver_policy = start_of_consumer(js, store, stream_created).await?;
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
                deliver_policy,
                ..Default::default()
            },
            STREAM,
        )
        .await
        .map_err(SetupError::Consumer)?;
    Ok(Source { consumer, stream_created })
}

/// Where the consumer starts: its own position if it exists (a start cannot be changed
/// on an existing consumer), else just after the recorded ack floor of this stream.
async fn start_of_consumer(
    js: &Context,
    store: &Store,
    stream_created: OffsetDateTime,
) -> Result<DeliverPolicy, SetupError> {
    let stream = js.get_stream_no_info(STREAM).await?;
    match stream.consumer_info(CONSUMER).await {
        Ok(existing) => Ok(existing.config.deliver_policy),
        Err(error) if error.kind() == ConsumerInfoErrorKind::NotFound => {
            Ok(match store.position(stream_created).await? {
                Some(floor) => {
                    tracing::warn!(ack_floor = floor, "consumer missing: creating it after its recorded position");
                    DeliverPolicy::ByStartSequence { start_sequence: floor + 1 }
                }
                None => DeliverPolicy::All,
            })
        }
        Err(error) => Err(error.into()),
    }
}

/// The consumer and the identity of its stream, as the setup step left them.
pub(crate) async fn open(js: &Context) -> Result<Source, SetupError> {
    let stream = js.get_stream(STREAM).await.map_err(SetupError::Missing)?;
    let stream_created = to_micros(stream.cached_info().created);
    let consumer =
        stream.get_consumer::<pull::Config>(CONSUMER).await.map_err(|e| SetupError::MissingConsumer(e.to_string()))?;
    Ok(Source { consumer, stream_created })
}

async fn ensure_dead_letter_stream(js: &Context, replicas: u8) -> Result<(), SetupError> {
    js.create_or_update_stream(dead_letter_stream(replicas))
        .await
        .map(|_| ())
        .map_err(|source| SetupError::Stream { name: DLQ_STREAM, source })
}

/// PostgreSQL keeps microseconds: the stream identity in the key is the creation time
/// at that precision, so what the worker holds equals what the table returns.
pub(crate) fn to_micros(t: OffsetDateTime) -> OffsetDateTime {
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

//! Streams `CHAT` and `CHAT_DLQ` and the durable pull consumer, created idempotently
//! (a restart or a second replica finds them and updates the consumer's settings).

use std::time::Duration;

use async_nats::jetstream::consumer::{AckPolicy, PullConsumer, pull};
use async_nats::jetstream::stream::{Config as StreamConfig, StorageType};
use async_nats::jetstream::{self, Context};
use chat_protocol::{CONSUMER, DLQ_STREAM, STREAM};

use crate::Config;

/// Stream or consumer setup failed.
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    /// Creating or reading a stream failed.
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

/// Ensures both streams and the consumer exist with the configured settings.
pub(crate) async fn ensure_stream_and_consumer(js: &Context, config: &Config) -> Result<PullConsumer, SetupError> {
    let chat = js
        .get_or_create_stream(StreamConfig {
            name: STREAM.to_owned(),
            subjects: vec!["chat.msg.>".to_owned()],
            storage: StorageType::File,
            duplicate_window: DUPLICATE_WINDOW,
            ..Default::default()
        })
        .await
        .map_err(|source| SetupError::Stream { name: STREAM, source })?;
    js.get_or_create_stream(StreamConfig {
        name: DLQ_STREAM.to_owned(),
        subjects: vec!["chat.dlq.>".to_owned()],
        storage: StorageType::File,
        duplicate_window: DUPLICATE_WINDOW,
        ..Default::default()
    })
    .await
    .map_err(|source| SetupError::Stream { name: DLQ_STREAM, source })?;

    let consumer = chat
        .create_consumer(pull::Config {
            durable_name: Some(CONSUMER.to_owned()),
            description: Some("persist-worker: stores chat messages in PostgreSQL".to_owned()),
            ack_policy: AckPolicy::Explicit,
            ack_wait: config.ack_wait,
            max_deliver: config.max_deliver,
            backoff: config.backoff.clone(),
            filter_subject: "chat.msg.>".to_owned(),
            // Enough for every batch in flight plus one being collected.
            max_ack_pending: i64::try_from(config.batch_size * (config.in_flight_batches + 1)).unwrap_or(i64::MAX),
            ..Default::default()
        })
        .await?;
    Ok(consumer)
}

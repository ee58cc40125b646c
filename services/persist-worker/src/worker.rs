//! The pull loop: collects batches (up to `BATCH_SIZE`, waiting at most `BATCH_WAIT` once
//! the first message is in), keeps up to `IN_FLIGHT_BATCHES` batches running, and on
//! shutdown stops pulling, naks what was fetched but not started, and finishes the rest.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::AckKind;
use async_nats::jetstream::consumer::PullConsumer;
use async_nats::jetstream::consumer::pull::Stream as MessageStream;
use futures::StreamExt as _;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

use crate::Config;
use crate::batch::Processor;

/// The pull subscription could not be (re)established.
#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    /// Opening the message stream failed.
    #[error("cannot pull from the consumer: {0}")]
    Pull(#[from] async_nats::jetstream::consumer::StreamError),
}

/// Pause before reopening a pull stream that ended (e.g. the consumer was recreated).
const REOPEN_DELAY: Duration = Duration::from_secs(1);

pub(crate) async fn run(
    consumer: PullConsumer,
    processor: Processor,
    config: &Config,
    shutdown: impl Future<Output = ()>,
) -> Result<(), WorkerError> {
    let permits = Arc::new(Semaphore::new(config.in_flight_batches));
    let mut tasks = JoinSet::new();
    tokio::pin!(shutdown);
    let mut messages = open(&consumer, config).await?;
    'pull: loop {
        let first = tokio::select! {
            () = &mut shutdown => break 'pull,
            next = messages.next() => next,
        };
        let first = match first {
            Some(Ok(message)) => message,
            Some(Err(error)) => {
                // Missed heartbeats while NATS restarts, etc.: the stream recovers by itself.
                tracing::warn!(%error, "pull stream error");
                continue;
            }
            None => {
                tracing::warn!("pull stream ended; reopening");
                tokio::time::sleep(REOPEN_DELAY).await;
                messages = open(&consumer, config).await?;
                continue;
            }
        };
        let mut batch = vec![first];
        let filled_by = tokio::time::Instant::now() + config.batch_wait;
        while batch.len() < config.batch_size {
            match tokio::time::timeout_at(filled_by, messages.next()).await {
                Ok(Some(Ok(message))) => batch.push(message),
                Ok(Some(Err(error))) => tracing::warn!(%error, "pull stream error"),
                Ok(None) | Err(_) => break,
            }
        }
        let permit = tokio::select! {
            () = &mut shutdown => {
                nak_unstarted(batch).await;
                break 'pull;
            }
            permit = Arc::clone(&permits).acquire_owned() => permit,
        };
        let Ok(permit) = permit else { break };
        let processor = processor.clone();
        tasks.spawn(async move {
            processor.process(batch).await;
            drop(permit);
        });
        while tasks.try_join_next().is_some() {}
    }
    // Shutdown: messages already fetched into the client but not started go back at once.
    let mut unstarted = Vec::new();
    while let Ok(Some(Ok(message))) = tokio::time::timeout(Duration::from_millis(50), messages.next()).await {
        unstarted.push(message);
    }
    drop(messages);
    nak_unstarted(unstarted).await;
    tracing::info!(batches = tasks.len(), "finishing batches in flight");
    while tasks.join_next().await.is_some() {}
    Ok(())
}

async fn open(consumer: &PullConsumer, config: &Config) -> Result<MessageStream, WorkerError> {
    Ok(consumer
        .stream()
        .max_messages_per_batch(config.batch_size * config.in_flight_batches)
        .heartbeat(Duration::from_secs(5))
        .expires(Duration::from_secs(30))
        .messages()
        .await?)
}

/// Naks without delay: another worker (or this one after restart) gets them at once.
async fn nak_unstarted(messages: Vec<async_nats::jetstream::Message>) {
    if !messages.is_empty() {
        tracing::info!(count = messages.len(), "returning unstarted messages");
    }
    for message in messages {
        let _ = message.ack_with(AckKind::Nak(None)).await;
    }
}

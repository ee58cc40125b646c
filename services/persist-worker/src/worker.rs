//! The pull loop: finds the consumer, collects batches (up to `BATCH_SIZE`, waiting at
//! most `BATCH_WAIT` once the first message is in), keeps up to `IN_FLIGHT_BATCHES`
//! batches running, and on shutdown stops pulling, naks what was fetched but not
//! started, and finishes the rest.
//!
//! When the consumer or the stream vanishes (deleted, a JetStream store lost), or the
//! pull stream ends or misses heartbeats, the worker reports not ready and looks for
//! them again (with a growing pause) until they are back (the setup step creates them:
//! the worker's NATS user cannot), then resumes. Readiness is true only while it pulls
//! from a consumer it has just verified.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use async_nats::jetstream::AckKind;
use async_nats::jetstream::consumer::PullConsumer;
use async_nats::jetstream::consumer::pull::{MessagesErrorKind, Stream as MessageStream};
use futures::StreamExt as _;
use telemetry::Messaging;
use time::OffsetDateTime;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

use crate::Config;
use crate::batch::Processor;
use crate::delivery::Delivery;
use crate::setup::{self, Source};

/// Whether the worker is pulling from its consumer (the `consumer` readiness check).
#[derive(Debug, Clone, Default)]
pub(crate) struct Pulling(Arc<AtomicBool>);

impl Pulling {
    pub(crate) fn get(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }

    fn set(&self, pulling: bool) {
        self.0.store(pulling, Ordering::Relaxed);
    }
}

/// Pauses between attempts to set up again: 0.5 s doubling to 10 s.
const FIRST_PAUSE: Duration = Duration::from_millis(500);
const LONGEST_PAUSE: Duration = Duration::from_secs(10);

/// What the pull loop needs besides the processor.
pub(crate) struct Puller<'a> {
    pub(crate) js: &'a async_nats::jetstream::Context,
    pub(crate) config: &'a Config,
    pub(crate) spans: &'a Messaging,
    pub(crate) pulling: Pulling,
}

pub(crate) async fn run(puller: Puller<'_>, processor: Processor, shutdown: impl Future<Output = ()>) {
    let config = puller.config;
    let permits = Arc::new(Semaphore::new(config.in_flight_batches));
    let mut tasks = JoinSet::new();
    tokio::pin!(shutdown);
    let mut pause = FIRST_PAUSE;
    'setup: loop {
        let connected = tokio::select! {
            () = &mut shutdown => break 'setup,
            connected = connect(&puller) => connected,
        };
        let (mut messages, stream_created) = match connected {
            Ok(connected) => connected,
            Err(error) => {
                puller.pulling.set(false);
                tracing::error!(%error, retry_in_ms = pause.as_millis() as u64, "cannot pull from the consumer");
                tokio::select! {
                    () = &mut shutdown => break 'setup,
                    () = tokio::time::sleep(pause) => {}
                }
                pause = (pause * 2).min(LONGEST_PAUSE);
                continue 'setup;
            }
        };
        pause = FIRST_PAUSE;
        puller.pulling.set(true);
        loop {
            let first = tokio::select! {
                () = &mut shutdown => {
                    shut_down(messages, tasks).await;
                    return;
                }
                next = messages.next() => next,
            };
            let first = match first {
                Some(Ok(message)) => message,
                Some(Err(error)) if error.kind() == MessagesErrorKind::Other => {
                    tracing::warn!(%error, "pull stream error");
                    continue;
                }
                // Consumer deleted, stream gone (no responders), missed heartbeats, a
                // refused pull: verify and set up again.
                Some(Err(error)) => {
                    puller.pulling.set(false);
                    tracing::warn!(%error, "pull stream interrupted; setting up the consumer again");
                    continue 'setup;
                }
                None => {
                    puller.pulling.set(false);
                    tracing::warn!("pull stream ended; setting up the consumer again");
                    continue 'setup;
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
                    shut_down(messages, tasks).await;
                    return;
                }
                permit = Arc::clone(&permits).acquire_owned() => permit,
            };
            let Ok(permit) = permit else { break 'setup };
            let deliveries = open_all(batch, puller.spans, stream_created);
            let processor = processor.clone();
            tasks.spawn(async move {
                processor.process(deliveries).await;
                drop(permit);
            });
            while tasks.try_join_next().is_some() {}
        }
    }
    puller.pulling.set(false);
    finish(tasks).await;
}

/// Finds the stream and the consumer (as the setup step left them) and opens a pull
/// stream on it.
async fn connect(puller: &Puller<'_>) -> Result<(MessageStream, OffsetDateTime), String> {
    let Source { consumer, stream_created } = setup::open(puller.js).await.map_err(|e| e.to_string())?;
    let messages = open(&consumer, puller.config).await.map_err(|e| format!("cannot pull from the consumer: {e}"))?;
    Ok((messages, stream_created))
}

async fn open(
    consumer: &PullConsumer,
    config: &Config,
) -> Result<MessageStream, async_nats::jetstream::consumer::StreamError> {
    consumer
        .stream()
        .max_messages_per_batch(config.batch_size * config.in_flight_batches)
        .heartbeat(Duration::from_secs(5))
        .expires(Duration::from_secs(30))
        .messages()
        .await
}

/// The deliveries of a batch. A message without JetStream ack metadata cannot come from
/// the consumer (only the server may publish to the worker's inbox): it is ignored.
fn open_all(
    batch: Vec<async_nats::jetstream::Message>,
    spans: &Messaging,
    stream_created: OffsetDateTime,
) -> Vec<Delivery> {
    batch
        .into_iter()
        .filter_map(|message| {
            let delivery = Delivery::open(message, spans, stream_created);
            if delivery.is_none() {
                tracing::warn!("a message that is not a JetStream delivery reached the pull inbox; ignored");
            }
            delivery
        })
        .collect()
}

/// Shutdown: messages already fetched into the client but not started go back at once;
/// batches in flight finish.
async fn shut_down(mut messages: MessageStream, tasks: JoinSet<()>) {
    let mut unstarted = Vec::new();
    while let Ok(Some(Ok(message))) = tokio::time::timeout(Duration::from_millis(50), messages.next()).await {
        unstarted.push(message);
    }
    drop(messages);
    nak_unstarted(unstarted).await;
    finish(tasks).await;
}

async fn finish(mut tasks: JoinSet<()>) {
    tracing::info!(batches = tasks.len(), "finishing batches in flight");
    while tasks.join_next().await.is_some() {}
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

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
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::AckKind;
use async_nats::jetstream::consumer::PullConsumer;
use async_nats::jetstream::consumer::pull::{MessagesErrorKind, Stream as MessageStream};
use futures::StreamExt as _;
use telemetry::messaging::Messaging;
use time::OffsetDateTime;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

use service_kit::health::Flag;

use crate::Config;
use crate::batch::Processor;
use crate::delivery::Delivery;
use crate::setup::{self, Source};

/// Pauses between attempts to set up again: 0.5 s doubling to 10 s.
const FIRST_PAUSE: Duration = Duration::from_millis(500);
const LONGEST_PAUSE: Duration = Duration::from_secs(10);

/// What the pull loop needs besides the processor.
pub(crate) struct Puller<'a> {
    pub(crate) js: &'a async_nats::jetstream::Context,
    pub(crate) config: &'a Config,
    pub(crate) spans: &'a Messaging,
    /// Whether the worker is pulling from its consumer (the `consumer` readiness check).
    pub(crate) pulling: Flag,
}

/// Why pulling from one pull stream ended.
enum Ended {
    /// Shutdown was asked for: fetched messages not started went back.
    Shutdown,
    /// The consumer, the stream or the pull stream went away: set up again.
    Interrupted,
}

/// Batches in flight: at most `IN_FLIGHT_BATCHES`, each a task.
struct InFlight {
    permits: Arc<Semaphore>,
    tasks: JoinSet<()>,
    processor: Processor,
}

pub(crate) async fn run(puller: Puller<'_>, processor: Processor, shutdown: impl Future<Output = ()>) {
    let permits = Arc::new(Semaphore::new(puller.config.in_flight_batches));
    let mut in_flight = InFlight { permits, tasks: JoinSet::new(), processor };
    tokio::pin!(shutdown);
    while let Some((messages, stream_created)) = connect_with_backoff(&puller, &mut shutdown).await {
        puller.pulling.set(true);
        let ended = pull_until_interrupted(&puller, messages, stream_created, &mut in_flight, &mut shutdown).await;
        puller.pulling.set(false);
        if let Ended::Shutdown = ended {
            break;
        }
    }
    tracing::info!(batches = in_flight.tasks.len(), "finishing batches in flight");
    while in_flight.tasks.join_next().await.is_some() {}
}

/// Connects to the consumer, pausing 0.5 s doubling to 10 s between failed attempts;
/// `None` once shutdown is asked for.
async fn connect_with_backoff<S: Future<Output = ()>>(
    puller: &Puller<'_>,
    shutdown: &mut Pin<&mut S>,
) -> Option<(MessageStream, OffsetDateTime)> {
    let mut pause = FIRST_PAUSE;
    loop {
        let connected = tokio::select! {
            () = &mut *shutdown => return None,
            connected = connect(puller) => connected,
        };
        match connected {
            Ok(connected) => return Some(connected),
            Err(error) => {
                tracing::error!(%error, retry_in_ms = pause.as_millis() as u64, "cannot pull from the consumer");
                tokio::select! {
                    () = &mut *shutdown => return None,
                    () = tokio::time::sleep(pause) => {}
                }
                pause = (pause * 2).min(LONGEST_PAUSE);
            }
        }
    }
}

/// Pulls batches and starts each as a task while a permit is free, until the pull
/// stream is interrupted or shutdown is asked for.
async fn pull_until_interrupted<S: Future<Output = ()>>(
    puller: &Puller<'_>,
    mut messages: MessageStream,
    stream_created: OffsetDateTime,
    in_flight: &mut InFlight,
    shutdown: &mut Pin<&mut S>,
) -> Ended {
    loop {
        let first = tokio::select! {
            () = &mut *shutdown => return shut_down(messages, Vec::new()).await,
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
                tracing::warn!(%error, "pull stream interrupted; setting up the consumer again");
                return Ended::Interrupted;
            }
            None => {
                tracing::warn!("pull stream ended; setting up the consumer again");
                return Ended::Interrupted;
            }
        };
        let batch = collect_batch(first, &mut messages, puller.config).await;
        let permit = tokio::select! {
            () = &mut *shutdown => return shut_down(messages, batch).await,
            permit = Arc::clone(&in_flight.permits).acquire_owned() => permit,
        };
        // The semaphore is never closed; if it were, stop as for a shutdown.
        let Ok(permit) = permit else { return shut_down(messages, batch).await };
        let deliveries = open_all(batch, puller.spans, stream_created);
        let processor = in_flight.processor.clone();
        in_flight.tasks.spawn(async move {
            processor.process(deliveries).await;
            drop(permit);
        });
        while in_flight.tasks.try_join_next().is_some() {}
    }
}

/// A batch: `first` and what else arrives, up to `BATCH_SIZE`, waiting at most `BATCH_WAIT`.
async fn collect_batch(
    first: async_nats::jetstream::Message,
    messages: &mut MessageStream,
    config: &Config,
) -> Vec<async_nats::jetstream::Message> {
    let mut batch = vec![first];
    let filled_by = tokio::time::Instant::now() + config.batch_wait;
    while batch.len() < config.batch_size {
        match tokio::time::timeout_at(filled_by, messages.next()).await {
            Ok(Some(Ok(message))) => batch.push(message),
            Ok(Some(Err(error))) => tracing::warn!(%error, "pull stream error"),
            Ok(None) | Err(_) => break,
        }
    }
    batch
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

/// Shutdown: `unstarted` and the messages already fetched into the client go back at
/// once (batches in flight finish in [`run`]).
async fn shut_down(mut messages: MessageStream, mut unstarted: Vec<async_nats::jetstream::Message>) -> Ended {
    while let Ok(Some(Ok(message))) = tokio::time::timeout(Duration::from_millis(50), messages.next()).await {
        unstarted.push(message);
    }
    drop(messages);
    nak_unstarted(unstarted).await;
    Ended::Shutdown
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

//! The forwarding loop: fetch up to `BRIDGE_BATCH_SIZE` messages (waiting at most
//! `BRIDGE_FLUSH_INTERVAL`), post each signal's messages as one OTLP/HTTP request, and
//! settle them by the answer. What happens to a message:
//!
//! | what happened | settlement |
//! |---|---|
//! | the endpoint accepted it (2xx) | ack |
//! | the endpoint is away (connection refused, timeout, 429, 5xx) | held: progress acks while the [breaker](crate::breaker) probes with it, no fetching meanwhile; ack once accepted |
//! | refused (other 4xx) in a request of several messages | each message sent alone, to find the refused one |
//! | refused alone, deliveries left | nak with `BRIDGE_NAK_DELAY` (counted `retried`) |
//! | refused alone on its `BRIDGE_MAX_DELIVER`th delivery | dead letter to `telemetry.dlq.<signal>` with the reason, then term |
//! | a subject of no known signal | dead letter (`unknown_signal`), then term |
//! | the dead letter could not be stored | nak with delay: retried, never dropped |
//! | shutdown while holding messages the endpoint did not take | nak without delay: the next bridge takes them at once |

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::consumer::PullConsumer;
use async_nats::jetstream::{AckKind, Context, Message};
use bytes::{Bytes, BytesMut};
use futures::StreamExt as _;

use service_kit::health::Flag;

use crate::Config;
use crate::breaker::Breaker;
use crate::metrics::Metrics;
use crate::sender::{SendError, Sender};
use crate::stream::{self, Signal};

/// Whether to go on after a request.
enum Next {
    Continue,
    Stop,
}

/// The loop's state.
pub(crate) struct Forwarder {
    pub(crate) js: Context,
    pub(crate) sender: Sender,
    pub(crate) config: Arc<Config>,
    pub(crate) metrics: Metrics,
    /// Whether the bridge has its consumer (the `consumer` readiness check).
    pub(crate) ready: Flag,
    pub(crate) breaker: Breaker,
}

impl Forwarder {
    /// Forwards until `shutdown`.
    pub(crate) async fn run(mut self, shutdown: impl Future<Output = ()>) {
        tokio::pin!(shutdown);
        'consumer: loop {
            let consumer = tokio::select! {
                () = &mut shutdown => return,
                consumer = stream::open(&self.js) => consumer,
            };
            let consumer = match consumer {
                Ok(consumer) => consumer,
                Err(error) => {
                    self.ready.set(false);
                    tracing::error!(%error, "cannot find the consumer; looking again in 2 s");
                    tokio::select! {
                        () = &mut shutdown => return,
                        () = tokio::time::sleep(Duration::from_secs(2)) => continue 'consumer,
                    }
                }
            };
            self.ready.set(true);
            loop {
                let batch = tokio::select! {
                    () = &mut shutdown => return,
                    batch = self.fetch(&consumer) => batch,
                };
                let batch = match batch {
                    Ok(batch) => batch,
                    Err(error) => {
                        self.ready.set(false);
                        tracing::warn!(%error, "fetch failed; finding the consumer again");
                        continue 'consumer;
                    }
                };
                for (signal, messages) in by_signal(batch) {
                    let Some(signal) = signal else {
                        self.dead_letter_all(messages).await;
                        continue;
                    };
                    for request in by_size(messages, |m| m.payload.len(), MAX_REQUEST_BYTES) {
                        if let Next::Stop = self.deliver(signal, request, &mut shutdown).await {
                            return;
                        }
                    }
                }
            }
        }
    }

    /// Up to `BRIDGE_BATCH_SIZE` messages, waiting at most `BRIDGE_FLUSH_INTERVAL`.
    async fn fetch(&self, consumer: &PullConsumer) -> Result<Vec<Message>, String> {
        let mut fetched = consumer
            .fetch()
            .max_messages(self.config.batch_size)
            .expires(self.config.flush_interval)
            .messages()
            .await
            .map_err(|e| e.to_string())?;
        let mut batch = Vec::new();
        while let Some(message) = fetched.next().await {
            batch.push(message.map_err(|e| e.to_string())?);
        }
        Ok(batch)
    }

    /// Posts `messages` as one request until the endpoint answers, then settles them.
    async fn deliver<S: Future<Output = ()>>(
        &mut self,
        signal: Signal,
        messages: Vec<Message>,
        shutdown: &mut Pin<&mut S>,
    ) -> Next {
        let body = concatenated(&messages);
        loop {
            match self.sender.send(signal, body.clone()).await {
                Ok(()) => {
                    self.answered();
                    for message in &messages {
                        settle(message, AckKind::Ack).await;
                    }
                    self.metrics.messages(signal, "exported", messages.len());
                    return Next::Continue;
                }
                Err(error @ SendError::Unavailable(_)) => {
                    self.metrics.failure(signal, error.reason());
                    if !self.breaker.is_open() {
                        tracing::warn!(%error, "OTLP endpoint away: holding the batch and probing");
                    }
                    self.breaker = self.breaker.failed(self.config.probe_max);
                    self.metrics.breaker(true);
                    let Breaker::Open(pause) = self.breaker else { continue };
                    for message in &messages {
                        settle(message, AckKind::Progress).await;
                    }
                    tokio::select! {
                        () = &mut *shutdown => {
                            for message in &messages {
                                settle(message, AckKind::Nak(None)).await;
                            }
                            return Next::Stop;
                        }
                        () = tokio::time::sleep(pause) => {}
                    }
                }
                Err(error @ SendError::Refused(_)) => {
                    self.answered();
                    self.metrics.failure(signal, error.reason());
                    if messages.len() == 1 {
                        let message = messages.into_iter().next().expect("one message");
                        self.refused(signal, message, &error).await;
                        return Next::Continue;
                    }
                    tracing::warn!(%error, messages = messages.len(), "batch refused; sending its messages one by one");
                    for message in messages {
                        if let Next::Stop = Box::pin(self.deliver(signal, vec![message], shutdown)).await {
                            return Next::Stop;
                        }
                    }
                    return Next::Continue;
                }
            }
        }
    }

    fn answered(&mut self) {
        if self.breaker.is_open() {
            tracing::info!("OTLP endpoint answers again: forwarding");
        }
        self.breaker = self.breaker.answered();
        self.metrics.breaker(false);
    }

    /// A message the endpoint refused on its own: nak with delay, or on its last delivery
    /// dead letter and term.
    async fn refused(&self, signal: Signal, message: Message, error: &SendError) {
        let delivered = message.info().map(|info| u64::try_from(info.delivered).unwrap_or(1)).unwrap_or(1);
        if delivered < self.config.max_deliver {
            tracing::warn!(%error, delivered, "message refused; retrying it later");
            settle(&message, AckKind::Nak(Some(self.config.nak_delay))).await;
            self.metrics.messages(signal, "retried", 1);
        } else {
            self.dead_letter(Some(signal), &message, &error.reason(), delivered).await;
        }
    }

    async fn dead_letter_all(&self, messages: Vec<Message>) {
        for message in messages {
            let delivered = message.info().map(|info| u64::try_from(info.delivered).unwrap_or(1)).unwrap_or(1);
            self.dead_letter(None, &message, "unknown_signal", delivered).await;
        }
    }

    /// Publishes the message to `telemetry.dlq.<signal>` with the reason, then terms it;
    /// a dead letter not stored is retried later (nak), never dropped.
    async fn dead_letter(&self, signal: Option<Signal>, message: &Message, reason: &str, delivered: u64) {
        let subject = signal.map_or_else(|| "telemetry.dlq.unknown".to_owned(), Signal::dlq_subject);
        let mut headers = async_nats::HeaderMap::new();
        headers.insert("Telemetry-Dlq-Reason", reason);
        headers.insert("Telemetry-Dlq-Deliveries", delivered.to_string().as_str());
        if let Ok(original) = message.subject.as_str().parse::<async_nats::header::HeaderValue>() {
            headers.insert("Telemetry-Dlq-Subject", original);
        }
        let stored =
            async { self.js.publish_with_headers(subject.clone(), headers, message.payload.clone()).await?.await }
                .await;
        let label = signal.unwrap_or(Signal::Spans);
        match stored {
            Ok(_) => {
                tracing::error!(reason, dlq = %subject, "telemetry batch dead-lettered");
                settle(message, AckKind::Term).await;
                self.metrics.messages(label, "dead_lettered", 1);
            }
            Err(error) => {
                tracing::error!(%error, reason, "dead letter not stored; retrying the message later");
                settle(message, AckKind::Nak(Some(self.config.nak_delay))).await;
                self.metrics.messages(label, "retried", 1);
            }
        }
    }
}

/// Sends an ack, nak, term or progress; a failure means the server redelivers the
/// message after `ack_wait` (an accepted batch may then be posted twice: OTLP receivers
/// take duplicates, a lost batch would be worse).
async fn settle(message: &Message, kind: AckKind) {
    if let Err(error) = message.ack_with(kind).await {
        tracing::warn!(%error, "settlement not sent; the server will redeliver");
    }
}

/// The batch split by signal, in order of first appearance (`None`: no known signal).
fn by_signal(batch: Vec<Message>) -> Vec<(Option<Signal>, Vec<Message>)> {
    let mut groups: Vec<(Option<Signal>, Vec<Message>)> = Vec::new();
    for message in batch {
        let signal = Signal::of(&message.subject);
        match groups.iter_mut().find(|(s, _)| *s == signal) {
            Some((_, messages)) => messages.push(message),
            None => groups.push((signal, vec![message])),
        }
    }
    groups
}

/// The largest request body the bridge builds from several messages: well below what
/// OTLP receivers take (the collector's default limit is 20 MiB); a single larger
/// message is sent alone.
const MAX_REQUEST_BYTES: usize = 4 << 20;

/// Items (one signal's messages) as requests of at most `max` bytes each, in order; an
/// item larger than `max` is a request of its own.
fn by_size<T>(items: Vec<T>, len: impl Fn(&T) -> usize, max: usize) -> Vec<Vec<T>> {
    let mut requests: Vec<Vec<T>> = Vec::new();
    let mut size = 0;
    for item in items {
        let item_len = len(&item);
        match requests.last_mut() {
            Some(request) if size + item_len <= max => {
                size += item_len;
                request.push(item);
            }
            _ => {
                size = item_len;
                requests.push(vec![item]);
            }
        }
    }
    requests
}

/// The payloads one after another: one OTLP request whose lists are those of all.
fn concatenated(messages: &[Message]) -> Bytes {
    if let [one] = messages {
        return one.payload.clone();
    }
    let mut body = BytesMut::with_capacity(messages.iter().map(|m| m.payload.len()).sum());
    for message in messages {
        body.extend_from_slice(&message.payload);
    }
    body.freeze()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_stay_under_the_size_limit_in_order_and_a_large_item_goes_alone() {
        let sizes = vec![3, 3, 3, 9, 1, 12, 2];
        let requests = by_size(sizes, |n| *n, 10);
        assert_eq!(requests, [vec![3, 3, 3], vec![9, 1], vec![12], vec![2]]);
        assert!(by_size(Vec::<usize>::new(), |n| *n, 10).is_empty());
    }
}

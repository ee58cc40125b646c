//! How far behind the worker is, as gauges for the Messaging dashboard and the
//! `ConsumerLagGrowing` alert: every [`INTERVAL`] it asks the server for its consumer's
//! info and the dead-letter stream's size (requests the `persist` user is allowed), and
//! the gauges report the last answer. A failed read keeps the previous figures and is
//! logged at debug level: the pull loop already reports a vanished consumer.
//!
//! Each read also records the consumer's ack floor in PostgreSQL (`chat.consumer_position`,
//! per stream identity): where `setup` starts a consumer that has to be created again.
//!
//! | metric | attributes |
//! |---|---|
//! | `nats.consumer.pending` (not yet delivered) | `stream`, `consumer` |
//! | `nats.consumer.ack_pending` (delivered, not yet acked) | `stream`, `consumer` |
//! | `nats.stream.messages` (dead letters kept) | `stream` = `CHAT_DLQ` |

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use opentelemetry::{KeyValue, global};

use crate::store::Store;

/// Between two reads: finer than Prometheus' 15 s scrape is wasted.
pub(crate) const INTERVAL: Duration = Duration::from_secs(10);

#[derive(Debug, Default)]
struct Figures {
    pending: AtomicU64,
    ack_pending: AtomicU64,
    dead_letters: AtomicU64,
}

/// Registers the gauges and reads the figures until the task is dropped.
pub(crate) async fn observe(js: async_nats::jetstream::Context, store: Store) {
    let figures = Arc::new(Figures::default());
    let meter = global::meter("persist-worker");
    let consumer = [KeyValue::new("stream", chat_protocol::STREAM), KeyValue::new("consumer", chat_protocol::CONSUMER)];
    let gauge = |name: &'static str, description: &'static str, read: fn(&Figures) -> u64, attrs: Vec<KeyValue>| {
        let figures = Arc::clone(&figures);
        meter
            .u64_observable_gauge(name)
            .with_unit("{message}")
            .with_description(description)
            .with_callback(move |observer| observer.observe(read(&figures), &attrs))
            .build()
    };
    let _gauges = [
        gauge(
            "nats.consumer.pending",
            "Messages not yet delivered to the consumer",
            |f| f.pending.load(Ordering::Relaxed),
            consumer.to_vec(),
        ),
        gauge(
            "nats.consumer.ack_pending",
            "Messages delivered and not yet acknowledged",
            |f| f.ack_pending.load(Ordering::Relaxed),
            consumer.to_vec(),
        ),
        gauge(
            "nats.stream.messages",
            "Dead letters kept",
            |f| f.dead_letters.load(Ordering::Relaxed),
            vec![KeyValue::new("stream", chat_protocol::DLQ_STREAM)],
        ),
    ];
    let mut ticks = tokio::time::interval(INTERVAL);
    loop {
        ticks.tick().await;
        if let Err(error) = read(&js, &figures, &store).await {
            tracing::debug!(%error, "cannot read the consumer lag");
        }
    }
}

/// Three requests a read: the chat stream's info (its identity, for the position), the
/// consumer's info, and the dead-letter stream's info (its message count is in the
/// answer `get_stream` caches); one upsert of the position.
async fn read(js: &async_nats::jetstream::Context, figures: &Figures, store: &Store) -> Result<(), String> {
    let stream = js.get_stream(chat_protocol::STREAM).await.map_err(|e| e.to_string())?;
    let info = stream.consumer_info(chat_protocol::CONSUMER).await.map_err(|e| e.to_string())?;
    figures.pending.store(info.num_pending, Ordering::Relaxed);
    figures.ack_pending.store(info.num_ack_pending as u64, Ordering::Relaxed);
    let stream_created = crate::setup::to_micros(stream.cached_info().created);
    store.record_position(stream_created, info.ack_floor.stream_sequence).await.map_err(|e| e.to_string())?;
    let dlq = js.get_stream(chat_protocol::DLQ_STREAM).await.map_err(|e| e.to_string())?;
    figures.dead_letters.store(dlq.cached_info().state.messages, Ordering::Relaxed);
    Ok(())
}

//! Where the consumer is: every [`INTERVAL`] the worker asks the server for its consumer's
//! ack floor and records it in PostgreSQL (`chat.consumer_position`, per stream
//! identity), where `setup` starts a consumer that has to be created again. A failed read
//! keeps the previous record and is logged at debug level: the pull loop already reports
//! a vanished consumer.
//!
//! The lag itself (pending, ack-pending, dead letters kept) is not measured here: a
//! worker that is down could not report it. nats-trace-bridge reads it from the server's
//! monitoring endpoint (its `jetstream` module), so it stays true while no worker runs.

use std::time::Duration;

use crate::store::Store;

/// Between two reads: a recreated consumer restarts at most this much before the floor.
pub(crate) const INTERVAL: Duration = Duration::from_secs(10);

/// Records the position until the task is dropped.
pub(crate) async fn record(js: async_nats::jetstream::Context, store: Store) {
    let mut ticks = tokio::time::interval(INTERVAL);
    loop {
        ticks.tick().await;
        if let Err(error) = read(&js, &store).await {
            tracing::debug!(%error, "cannot record the consumer's position");
        }
    }
}

/// Two requests a read: the chat stream's info (its identity) and the consumer's info;
/// one upsert of the position.
async fn read(js: &async_nats::jetstream::Context, store: &Store) -> Result<(), String> {
    let stream = js.get_stream(chat_protocol::STREAM).await.map_err(|e| e.to_string())?;
    let info = stream.consumer_info(chat_protocol::CONSUMER).await.map_err(|e| e.to_string())?;
    let stream_created = crate::setup::to_micros(stream.cached_info().created);
    store.record_position(stream_created, info.ack_floor.stream_sequence).await.map_err(|e| e.to_string())
}

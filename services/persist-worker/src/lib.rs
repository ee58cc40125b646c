//! persist-worker: a durable JetStream pull consumer that stores chat messages in
//! PostgreSQL, traced from the producer's span to the database row.
//!
//! Layout:
//! - [`config`]: every setting, from flags or environment (`--help` lists them).
//! - `setup`: streams `CHAT`, `CHAT_DLQ` and the durable consumer, created or updated
//!   idempotently by the setup step ([`set_up`]), with the size limits that keep every
//!   dead letter writable; found by the worker.
//! - `store`: the `chat.messages` table (embedded migrations) and the batched insert.
//! - `delivery`: one delivery -> its span, its row or what stands in the way of one.
//! - `demo`: the demo faults a message may ask for (`DEMO_FAULTS=true` only).
//! - `fate`: **the** decision what happens to a message (one pure function, its table).
//! - `dead_letter`: the dead letter's headers (an allowlist; the sender's under a prefix).
//! - `batch`: a batch of deliveries -> one INSERT -> ack / nak / term + dead letter.
//! - `worker`: pulls batches, bounds batches in flight, heals a vanished consumer, drains
//!   on shutdown.
//! - `metrics`: the counters and histogram of DESIGN.md 5.4.
//! - `position`: records the consumer's ack floor, where a consumer created again starts
//!   (`setup`). The lag gauges are nats-trace-bridge's: they must outlive the worker.
//!
//! What happens to a message (the table in `fate`):
//! - valid: inserted (idempotent on stream identity + sequence, and on user +
//!   `Nats-Msg-Id`), acked after commit; a key already holding a different message is
//!   dead-lettered (`id_conflict`) and counted, never acked silently;
//! - transient failure (database down or slow, deadline missed, demo fail-once): nak with
//!   a delay growing per delivery; the redelivery is a new span in the same trace;
//! - poison (undecodable, too large, invalid names, demo poison): published to
//!   `chat.dlq.<room>` in the same trace, then terminated; never retried;
//! - transient failure on the last allowed delivery: the same dead-letter path;
//! - dead-letter publish failed: nak with delay, counted (`messages.dead_letter.failures`)
//!   and retried until it succeeds: nothing is lost.

pub mod config;

mod batch;
mod dead_letter;
mod delivery;
mod demo;
mod fate;
mod metrics;
mod position;
mod setup;
mod store;
mod worker;

pub use config::Config;
pub use setup::SetupError;

use std::future::Future;
use std::sync::Arc;

/// Why the worker stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Invalid settings.
    #[error(transparent)]
    Config(#[from] config::ConfigError),
    /// Could not start (NATS, health endpoints).
    #[error(transparent)]
    Serve(#[from] service_kit::ServeError),
    /// `DATABASE_URL` is unusable.
    #[error(transparent)]
    DatabaseUrl(#[from] service_kit::DbUrlError),
    /// The database could not be reached or migrated.
    #[error(transparent)]
    Store(#[from] store::StoreError),
    /// The setup step could not create or update the streams or the consumer.
    #[error(transparent)]
    Setup(#[from] setup::SetupError),
}

/// The worker's own subcommand (besides `healthcheck`).
#[derive(Debug, Clone, Copy, clap::Subcommand)]
pub enum Command {
    /// Create or update the streams and the consumer, then exit (as the NATS user `setup`).
    Setup,
}

/// The setup step (`persist-worker setup`): applies the database migrations, then
/// creates or updates the streams and the consumer (a consumer created again starts
/// after its recorded position), as a NATS user allowed to (`setup` in
/// `nats/accounts.conf`). Retries for 15 s (JetStream may still be electing a leader),
/// then fails with the last error.
pub async fn set_up(config: Config) -> Result<(), Error> {
    config.validate()?;
    let store = store::Store::new(config.db.pool()?);
    store.migrate().await?;
    let client = config.nats.connect("stream-setup").await.map_err(service_kit::ServeError::from)?;
    let js = async_nats::jetstream::new(client.clone());
    let mut attempt = 0;
    let result = loop {
        match setup::set_up(&js, &config, &store).await {
            Ok(source) => break Ok(source),
            Err(error) if attempt < 15 => {
                attempt += 1;
                tracing::warn!(%error, attempt, "setup failed; retrying");
                tokio::time::sleep(std::time::Duration::from_secs(1)).await;
            }
            Err(error) => break Err(error),
        }
    };
    let _ = tokio::time::timeout(std::time::Duration::from_secs(5), client.flush()).await;
    let source = result?;
    tracing::info!(stream = chat_protocol::STREAM, consumer = chat_protocol::CONSUMER, stream_created = %source.stream_created, "streams and consumer set up");
    Ok(())
}

/// Runs the worker until `shutdown` completes, then stops pulling, finishes the batches
/// in flight (commit + ack, or nak) and returns.
pub async fn run(config: Config, shutdown: impl Future<Output = ()> + Send + 'static) -> Result<(), Error> {
    config.validate()?;
    let config = Arc::new(config);
    let store = store::Store::new(config.db.pool()?);
    let pulling = service_kit::health::Flag::default();
    let checks = {
        let (store, pulling) = (store.clone(), pulling.clone());
        move |health: service_kit::health::Health| {
            health
                .with_check("database", move || {
                    let store = store.clone();
                    async move { store.ping().await }
                })
                .with_flag("consumer", pulling, "not pulling from the consumer")
        }
    };
    let (nats, health_addr) = (config.nats.clone(), config.health.health_addr);
    service_kit::serve("persist-worker", &nats, health_addr, checks, |client| async move {
        store.migrate().await?;
        let jetstream = async_nats::jetstream::new(client);
        let spans = telemetry::messaging::Messaging::new("persist-worker", &config.nats.peer());
        let processor = batch::Processor::new(jetstream.clone(), store.clone(), Arc::clone(&config), spans.clone());
        tracing::info!(consumer = chat_protocol::CONSUMER, stream = chat_protocol::STREAM, "pulling");
        let position = tokio::spawn(position::record(jetstream.clone(), store.clone()));
        let puller = worker::Puller { js: &jetstream, config: &config, spans: &spans, pulling };
        worker::run(puller, processor, shutdown).await;
        position.abort();
        Ok(())
    })
    .await
}

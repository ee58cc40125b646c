//! otlp-bridge: forwards the telemetry services publish to NATS (seed 004) to an OTLP
//! backend. A service with `OTEL_TRACES_EXPORTER=nats` (`_METRICS_`, `_LOGS_`) publishes
//! each OTLP protobuf batch to the JetStream stream `TELEMETRY` as
//! `telemetry.<spans|logs|metrics>.<service>` (see `telemetry::nats::export_over`); the
//! stream keeps it while the collector is away, and across a restart of the service. This
//! service reads the stream with the durable consumer `otlp-bridge` and posts each
//! signal's messages as one OTLP/HTTP request (`/v1/traces`, `/v1/logs`, `/v1/metrics`).
//!
//! What happens to each message is the table in `forward`; the breaker that stops
//! fetching while the endpoint is away is `breaker`. Its own telemetry goes over OTLP
//! directly (`nats` for it is refused: it would loop through itself).
//!
//! Layout: [`config`], [`stream`] (the streams and the consumer, created by the setup
//! step), `sender` (one POST and what its answer means), `breaker`, `forward` (the
//! loop), `metrics`.

pub mod config;
pub mod stream;

mod breaker;
mod forward;
mod metrics;
mod sender;

pub use config::Config;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

/// Why the bridge (or its setup step) stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Invalid settings.
    #[error(transparent)]
    Config(#[from] config::ConfigError),
    /// The endpoint or a header cannot be used.
    #[error("OTLP endpoint: {0}")]
    Endpoint(String),
    /// Could not start (NATS, health endpoints).
    #[error(transparent)]
    Serve(#[from] service_kit::ServeError),
    /// The setup step could not create or update the streams or the consumer.
    #[error(transparent)]
    Stream(#[from] stream::StreamError),
}

/// The bridge's own subcommand (besides `healthcheck`).
#[derive(Debug, Clone, Copy, clap::Subcommand)]
pub enum Command {
    /// Create or update TELEMETRY, TELEMETRY_DLQ and the consumer, then exit (as the NATS user `setup`).
    Setup,
}

/// Forwards until `shutdown` completes.
pub async fn run(config: Config, shutdown: impl Future<Output = ()> + Send + 'static) -> Result<(), Error> {
    config.validate()?;
    let sender = sender::Sender::new(&config.endpoint(), &config.header_pairs()?, config.export_timeout)
        .map_err(Error::Endpoint)?;
    let ready = service_kit::health::Flag::default();
    let check = ready.clone();
    let config = Arc::new(config);
    let shared = Arc::clone(&config);
    service_kit::serve(
        "otlp-bridge",
        &config.nats,
        config.health.health_addr,
        move |health: service_kit::health::Health| {
            health.with_flag("consumer", check, "consumer otlp-bridge not found")
        },
        |client| async move {
            let forwarder = forward::Forwarder {
                js: stream::context(client),
                sender,
                config: shared,
                metrics: metrics::Metrics::new(),
                ready,
                breaker: breaker::Breaker::Closed,
            };
            forwarder.run(shutdown).await;
            Ok(())
        },
    )
    .await
}

/// The setup step (`otlp-bridge setup`): creates or updates TELEMETRY (max age
/// `TELEMETRY_MAX_AGE`, at most `TELEMETRY_MAX_BYTES`, `TELEMETRY_REPLICAS` copies),
/// TELEMETRY_DLQ and the consumer.
/// Retries for 15 s (JetStream may still be electing a leader), then fails with the last
/// error.
pub async fn set_up(config: Config) -> Result<(), Error> {
    let client = config.nats.connect("telemetry-setup").await.map_err(service_kit::ServeError::from)?;
    let js = stream::context(client.clone());
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    let result = loop {
        let limits = stream::Limits { max_age: config.max_age, max_bytes: config.max_bytes, replicas: config.replicas };
        match stream::ensure(&js, limits).await {
            Ok(()) => break Ok(()),
            Err(error) if tokio::time::Instant::now() < deadline => {
                tracing::warn!(%error, "setting up the telemetry streams; retrying");
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            Err(error) => break Err(error),
        }
    };
    let _ = client.flush().await;
    result?;
    tracing::info!("streams TELEMETRY, TELEMETRY_DLQ and consumer otlp-bridge are set up");
    Ok(())
}

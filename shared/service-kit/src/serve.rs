//! The one order every service starts and stops in, so that no service repeats it in its
//! own way: connect to NATS (retried in the background: the service starts before NATS
//! and reports not ready), serve `/healthz` and `/readyz` with the service's checks plus
//! `nats`, run the service's work until its shutdown, then flush what the NATS client
//! still buffers (acks, replies, dead letters) and stop the health server. Telemetry is
//! flushed after this returns ([`with_telemetry`](crate::with_telemetry)).

use std::future::Future;
use std::net::SocketAddr;

use crate::health::Health;

use crate::{ConnectFailed, NatsArgs};

/// How long the last flush of the NATS client may take at shutdown.
const FINAL_FLUSH: std::time::Duration = std::time::Duration::from_secs(5);

/// Starting a service failed.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// NATS could not be reached.
    #[error(transparent)]
    Connect(#[from] ConnectFailed),
    /// The health endpoints could not bind.
    #[error("cannot serve health on {addr}: {source}")]
    Health {
        /// The configured address.
        addr: SocketAddr,
        /// The bind error.
        source: std::io::Error,
    },
}

/// Runs `work` as service `name`: connects as `name` with `nats`, serves health on
/// `health_addr` with the checks `checks` adds (to one that already checks NATS), runs
/// `work` with the client, then flushes the client and stops the health server.
pub async fn serve<E, Work, Fut>(
    name: &'static str,
    nats: &NatsArgs,
    health_addr: SocketAddr,
    checks: impl FnOnce(Health) -> Health,
    work: Work,
) -> Result<(), E>
where
    E: From<ServeError>,
    Work: FnOnce(async_nats::Client) -> Fut,
    Fut: Future<Output = Result<(), E>>,
{
    let client = nats.connect(name).await.map_err(ServeError::from)?;
    let health = checks(Health::new().with_nats(client.clone()));
    let server = health.spawn(health_addr).await.map_err(|source| ServeError::Health { addr: health_addr, source })?;
    tracing::info!("{name} started");
    let result = work(client.clone()).await;
    // A flush waits for the server's PONG: bounded, so that a service asked to stop while
    // NATS is unreachable stops instead of waiting for NATS to come back.
    if tokio::time::timeout(FINAL_FLUSH, client.flush()).await.is_err() {
        tracing::warn!("NATS unreachable at shutdown: what the client still buffered is not sent");
    }
    server.stop().await;
    tracing::info!("{name} stopped");
    result
}

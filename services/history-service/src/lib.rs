//! history-service: serves `chat.history.<room>` (queue group `history`, NATS service
//! API) with the newest messages of a room from PostgreSQL.
//!
//! Layout: `config` (settings), `query` (the `SELECT` and its span), `handler` (one
//! request: SERVER span parented to the requester, validation, reply or service error).
//!
//! Every request gets an answer: invalid room or limit -> `Nats-Service-Error-Code: 400`
//! with a message; database trouble -> `503`; never a timeout for the requester.

mod config;
mod handler;
mod query;

pub use config::Config;

use std::future::Future;
use std::sync::Arc;

use async_nats::service::ServiceExt as _;
use futures::StreamExt as _;

/// Why the service stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Could not start (NATS, health endpoints).
    #[error(transparent)]
    Serve(#[from] service_kit::ServeError),
    /// `DATABASE_URL` is unusable.
    #[error(transparent)]
    DatabaseUrl(#[from] service_kit::DbUrlError),
    /// The NATS service could not be registered.
    #[error("cannot start the NATS service: {0}")]
    Service(String),
}

/// Requests handled at the same time.
const CONCURRENT_REQUESTS: usize = 64;

/// Serves history requests until `shutdown` completes, then finishes those in flight.
pub async fn run(config: Config, shutdown: impl Future<Output = ()> + Send + 'static) -> Result<(), Error> {
    let history = query::History::new(config.db.pool()?);
    // Ready only once the server knows the endpoint: before that a request finds no
    // responder (a test that sent one right after /readyz said 200 saw exactly that).
    let answering = service_kit::health::Flag::default();
    let checks = {
        let (history, answering) = (history.clone(), answering.clone());
        move |health: service_kit::health::Health| {
            health
                .with_check("database", move || {
                    let history = history.clone();
                    async move { history.ping().await }
                })
                .with_flag("endpoint", answering, "not subscribed to chat.history.* yet")
        }
    };
    let spans = telemetry::messaging::Messaging::new("history-service", &config.nats.peer());
    service_kit::serve("history-service", &config.nats, config.health.health_addr, checks, |client| async move {
        let service = client
            .service_builder()
            .description("Chat history: newest messages of a room")
            .queue_group(chat_protocol::HISTORY_QUEUE_GROUP)
            .start("chat-history", env!("CARGO_PKG_VERSION"))
            .await
            .map_err(|e| Error::Service(e.to_string()))?;
        let endpoint = service
            .endpoint_builder()
            .name("history")
            .add(chat_protocol::HISTORY_TEMPLATE)
            .await
            .map_err(|e| Error::Service(e.to_string()))?;
        let handler = Arc::new(handler::Handler::new(history, spans));
        // The subscription reaches the server with the next flush; then requests find us.
        // Not awaited here: with NATS away the flush waits, and so must not the shutdown.
        let flushed = client.clone();
        tokio::spawn(async move {
            while flushed.flush().await.is_err() {
                tokio::time::sleep(std::time::Duration::from_millis(500)).await;
            }
            answering.set(true);
        });
        tracing::info!(subject = chat_protocol::HISTORY_TEMPLATE, "answering history requests");
        endpoint
            .take_until(shutdown)
            .for_each_concurrent(CONCURRENT_REQUESTS, |request| {
                let handler = Arc::clone(&handler);
                async move { handler.handle(request).await }
            })
            .await;
        let _ = service.stop().await;
        Ok(())
    })
    .await
}

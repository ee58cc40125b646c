//! nats-trace-bridge: shows the NATS server hop inside each trace.
//!
//! With `msg_trace` on the `CHAT` account, a publish whose `traceparent` is sampled makes
//! nats-server 2.11+ publish a JSON trace event to `nats.trace.events`: the ingress (`in`),
//! JetStream storage (`js`), deliveries to subscribers (`eg`), subject mappings (`sm`),
//! stream exports and service imports (`se`, `si`). This service turns each event into one
//! INTERNAL span `nats ingress <subject template>` of service `nats-server`, parented to
//! the producer span named by the event's `traceparent`, from the ingress timestamp to the
//! last event, with a span event per step. An event with an `error` sets status ERROR.
//!
//! Bad input: malformed JSON is counted (`nats.trace_events{result="malformed"}`) and
//! skipped; an event without a valid, sampled trace context is counted `untraced` and
//! makes no span; unknown event types are kept as span events. Nothing panics.
//!
//! Why its own binary: it exports under its own `service.name` (`nats-server`), which a
//! task inside another service could only do with a second tracer provider, and it logs in
//! as its own NATS user (`tracer`), so no service gains rights it does not need.
//!
//! Layout: `config`, `event` (decoding and span building).

mod config;
mod event;

pub use config::Config;

use std::future::Future;

use futures::StreamExt as _;
use opentelemetry::metrics::Counter;
use opentelemetry::{KeyValue, global};
use telemetry::Health;

/// Subject the server publishes trace events to (nats.conf `msg_trace.dest`).
pub const TRACE_SUBJECT: &str = "nats.trace.events";

/// Why the bridge stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Could not connect to NATS.
    #[error(transparent)]
    Connect(#[from] service_kit::ConnectFailed),
    /// Could not subscribe to the trace subject.
    #[error("cannot subscribe to {TRACE_SUBJECT}: {0}")]
    Subscribe(#[from] async_nats::SubscribeError),
    /// The health endpoint could not bind.
    #[error("cannot serve health on {addr}: {source}")]
    Health {
        /// The configured address.
        addr: std::net::SocketAddr,
        /// The bind error.
        source: std::io::Error,
    },
}

/// Bridges events until `shutdown` completes.
pub async fn run(config: Config, shutdown: impl Future<Output = ()> + Send + 'static) -> Result<(), Error> {
    let client = config.nats.connect("nats-trace-bridge").await?;
    let addr = config.health.health_addr;
    let health =
        Health::new().with_nats(client.clone()).spawn(addr).await.map_err(|source| Error::Health { addr, source })?;
    // A queue group: replicas share the events instead of duplicating spans.
    let events = client.queue_subscribe(TRACE_SUBJECT, "nats-trace-bridge".to_owned()).await?;
    let counter: Counter<u64> = global::meter("nats-trace-bridge")
        .u64_counter("nats.trace_events")
        .with_unit("{event}")
        .with_description("NATS trace events received, by result (bridged, untraced, malformed)")
        .build();
    let tracer = global::tracer("nats-trace-bridge");
    tracing::info!(subject = TRACE_SUBJECT, "nats-trace-bridge started");
    events
        .take_until(shutdown)
        .for_each(|message| {
            let result = event::bridge(&tracer, &message.payload);
            counter.add(1, &[KeyValue::new("result", result.as_str())]);
            async {}
        })
        .await;
    health.stop().await;
    tracing::info!("nats-trace-bridge stopped");
    Ok(())
}

//! nats-trace-bridge: speaks for nats-server, which has no OpenTelemetry of its own. It
//! shows the NATS server hop inside each trace, and JetStream's figures as the server
//! sees them (module `jetstream`: consumer lag, stream sizes).
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
//! Layout: `config`, `event` (decoding and span building), `jetstream` (the gauges).

mod config;
mod event;
mod jetstream;

pub use config::Config;

use std::future::Future;

use futures::StreamExt as _;
use opentelemetry::metrics::Counter;
use opentelemetry::{KeyValue, global};

/// Subject the server publishes trace events to (nats.conf `msg_trace.dest`).
pub const TRACE_SUBJECT: &str = "nats.trace.events";

/// Why the bridge stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Could not start (NATS, health endpoints).
    #[error(transparent)]
    Serve(#[from] service_kit::ServeError),
    /// Could not subscribe to the trace subject.
    #[error("cannot subscribe to {TRACE_SUBJECT}: {0}")]
    Subscribe(#[from] async_nats::SubscribeError),
}

/// Bridges events until `shutdown` completes.
pub async fn run(config: Config, shutdown: impl Future<Output = ()> + Send + 'static) -> Result<(), Error> {
    let counter: Counter<u64> = global::meter("nats-trace-bridge")
        .u64_counter("nats.trace_events")
        .with_unit("{event}")
        .with_description("NATS trace events received, by result (bridged, untraced, malformed)")
        .build();
    let tracer = global::tracer("nats-trace-bridge");
    service_kit::serve(
        "nats-trace-bridge",
        &config.nats,
        config.health.health_addr,
        |health| health,
        |client| async move {
            let gauges = (!config.monitor_url.is_empty()).then(|| tokio::spawn(jetstream::observe(config.monitor_url)));
            // A queue group: replicas share the events instead of duplicating spans.
            let events = client.queue_subscribe(TRACE_SUBJECT, "nats-trace-bridge".to_owned()).await?;
            tracing::info!(subject = TRACE_SUBJECT, "bridging trace events");
            events
                .take_until(shutdown)
                .for_each(|message| {
                    let result = event::bridge(&tracer, &message.payload);
                    counter.add(1, &[KeyValue::new("result", result.as_str())]);
                    async {}
                })
                .await;
            gauges.inspect(tokio::task::JoinHandle::abort);
            Ok(())
        },
    )
    .await
}

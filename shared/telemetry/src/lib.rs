//! Telemetry shared by every service of the traced NATS chat backend.
//!
//! At the root, what a `main` needs: [`init`] sets up traces, metrics and logs over OTLP
//! from the standard `OTEL_*` variables, W3C TraceContext + Baggage propagation and
//! stdout log lines, for a [`ServiceInfo`] ([`service_info!`]), and returns a
//! [`TelemetryGuard`] whose [`shutdown`](TelemetryGuard::shutdown) flushes them. The rest
//! is in modules:
//!
//! - [`messaging`]: the messaging spans of DESIGN.md 5.2 made with the OpenTelemetry API
//!   (publish, request, server, process, settle), parented correctly, as
//!   [`Traced`](messaging::Traced) handles; a span ended `ERROR` / `Timeout` when work
//!   outlives its deadline.
//! - [`propagation`]: trace context in NATS headers; malformed or hostile headers start a
//!   new root, warn once and are counted.
//! - [`db`]: the database client spans.
//! - [`policy`]: keeps tokens, passwords, JWTs, seeds and message bodies out of every
//!   exported span, event and log record; [`Secret`](policy::Secret) for settings.
//! - [`tracer`]: the tracer those spans start with (the SDK's own, boxed once).
//! - [`nats`]: messages the NATS client could not read in full, and the connection's
//!   events as a counter.
//!
//! The pipeline reports its own health: spans started, exported, dropped and failed
//! exports by `error.type`, and the sampling ratio (`otel.sdk.*` metrics).
//!
//! # Example
//!
//! A traced publish and its consumer (the full program is `examples/nats-roundtrip.rs`,
//! `cargo run -p telemetry --example nats-roundtrip -- --help`):
//!
//! ```no_run
//! use futures::StreamExt as _;
//! use telemetry::messaging::{MessageRef, Messaging, Peer};
//!
//! #[tokio::main]
//! async fn main() -> Result<(), Box<dyn std::error::Error>> {
//!     let guard = telemetry::init(telemetry::service_info!())?;
//!     let url = "nats://127.0.0.1:4222";
//!     let client = async_nats::connect(url).await?;
//!     let spans = Messaging::new("demo", &Peer::from_url(url));
//!     let mut sub = client.subscribe("chat.msg.general.alice").await?;
//!
//!     // Producer: a PRODUCER span whose context travels in the headers.
//!     let body = bytes::Bytes::from_static(br#"{"text":"hi"}"#);
//!     let msg = MessageRef { subject: "chat.msg.general.alice", template: "chat.msg.*.*", message_id: None, body_size: body.len() };
//!     let span = spans.publish(&msg);
//!     let mut headers = async_nats::HeaderMap::new();
//!     span.inject(&mut headers);
//!     span.scope(client.publish_with_headers(msg.subject, headers, body)).await?;
//!     span.end();
//!
//!     // Consumer: a CONSUMER span, child of the producer span; log lines inside carry its ids.
//!     if let Some(m) = sub.next().await {
//!         let msg = MessageRef { subject: &m.subject, template: "chat.msg.*.*", message_id: None, body_size: m.payload.len() };
//!         let span = spans.process(&msg, m.headers.as_ref(), None, "demo");
//!         span.scope(async { tracing::info!("processing") }).await;
//!         span.end();
//!     }
//!     guard.shutdown().await;
//!     Ok(())
//! }
//! ```

pub mod db;
mod filters;
pub mod messaging;
pub mod nats;
mod otlp;
pub mod policy;
mod process_metrics;
pub mod propagation;
mod sdk_health;
mod settings;
mod setup;
mod stdout;
pub mod tracer;

pub use settings::{LINKS_PER_SPAN, SettingsError};
pub use setup::{InitError, LogLines, ServiceInfo, TelemetryGuard, init};

/// What the benchmarks measure, not part of the API: the span pipeline of [`init`], the
/// OTLP encoder of its span exporter and that exporter itself.
#[doc(hidden)]
pub mod bench {
    pub use crate::otlp::encode::TraceRequestEncoder;
    pub use crate::otlp::grpc::DirectGrpcSpanExporter;
    pub use crate::settings::{DEFAULT_BSP_MAX_EXPORT_BATCH_SIZE, DEFAULT_BSP_MAX_QUEUE_SIZE, SpanBatch};
    pub use crate::setup::{grpc_span_processor, span_processor};

    /// The span exporter [`init`](crate::init) makes for OTLP/gRPC to `endpoint` (an
    /// `http://` URL) with plain settings, with the 10 s export timeout. Call it inside a
    /// Tokio runtime (the channel's connection task runs there).
    pub fn grpc_span_exporter(endpoint: &str) -> Result<DirectGrpcSpanExporter, String> {
        let counts = crate::sdk_health::ExportCounts::new("span", "otlp_grpc_span_exporter");
        crate::otlp::grpc::DirectGrpcSpanExporter::new(endpoint, std::time::Duration::from_secs(10), counts)
    }
}

//! Telemetry shared by every service of the traced NATS chat backend.
//!
//! - [`init`] sets up traces, metrics and logs over OTLP from the standard `OTEL_*`
//!   variables, W3C TraceContext + Baggage propagation and stdout log lines, and returns
//!   a [`TelemetryGuard`] whose [`shutdown`](TelemetryGuard::shutdown) flushes them.
//! - [`inject_context`] / [`extract_context`] carry trace context in NATS headers;
//!   malformed or hostile headers start a new root, warn once and are counted.
//! - [`Messaging`] makes the messaging spans of DESIGN.md 5.2 with the OpenTelemetry API
//!   (publish, request, server, process, settle), parented correctly, as [`Traced`]
//!   handles; [`DbSpans`] the database spans; [`run_with_deadline`] ends a span `ERROR` /
//!   `Timeout` when work outlives its deadline.
//! - The attribute [policy](is_sensitive_key) keeps tokens, passwords, JWTs, seeds and
//!   message bodies out of every exported span, event and log record.
//! - The pipeline reports its own health: spans started, exported, dropped and failed
//!   exports by `error.type`, and the sampling ratio (`otel.sdk.*` metrics).
//! - [`nats`]: messages the NATS client could not read in full, and the connection's
//!   events as a counter.
//! - [`Health`] serves `/healthz` and `/readyz`; [`probe`] backs `healthcheck` subcommands.
//!
//! # Example
//!
//! A traced publish and its consumer (the full program is `src/bin/nats-roundtrip.rs`,
//! `cargo run -p telemetry --bin nats-roundtrip -- --help`):
//!
//! ```no_run
//! use futures::StreamExt as _;
//! use telemetry::{MessageRef, Messaging, Peer};
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

mod db;
mod filters;
mod health;
pub mod nats;
pub mod otlp_encode;
mod otlp_grpc;
mod policy;
mod process_metrics;
mod propagation;
mod sdk_health;
mod settings;
mod setup;
mod spans;
mod stdout;

pub use db::{DbSpans, Statement, record_db_failure};
pub use health::{CheckResult, Health, HealthArgs, HealthServer, ProbeError, healthcheck, probe, shutdown_signal};
pub use policy::{REDACTED, RedactingLoggerProvider, RedactingSpanProcessor, Secret, is_sensitive_key, redact_url};
pub use propagation::{
    HeaderExtractor, HeaderInjector, MAX_TRACEPARENT_LEN, MAX_TRACESTATE_LEN, NATS_RENAMED_TRACEPARENT,
    PropagationFailure, TRACEPARENT, TRACESTATE, extract_context, inject_context,
};
pub use settings::{LogFormat, Protocol, Settings, SettingsError, Signal};
pub use setup::{
    DEFAULT_BSP_MAX_EXPORT_BATCH_SIZE, DEFAULT_BSP_MAX_QUEUE_SIZE, InitError, ServiceInfo, TelemetryGuard, init,
    run_service, span_processor,
};
pub use spans::{
    DeadlineExceeded, Delivery, MessageRef, Messaging, Peer, Settlement, Traced, record_failure, run_with_deadline,
};

//! OTLP over NATS (`OTEL_TRACES_EXPORTER=nats`, `_METRICS_`, `_LOGS_`): each batch,
//! encoded as the OTLP protobuf request it would be over HTTP, is published to the
//! JetStream stream `TELEMETRY` as `telemetry.<spans|metrics|logs>.<service>`, over the
//! service's own NATS connection ([`crate::nats::export_over`]); otlp-bridge forwards it
//! to the collector. The stream keeps it while the collector is away (up to the stream's
//! max age and size) and across a restart of the service.
//!
//! Publishing never blocks or slows the service: the exporter hands the batch to a task
//! and returns. At most [`IN_FLIGHT`] batches wait for the stream's ack at once; a batch
//! beyond that, or one exported before the service has a NATS connection, is dropped and
//! counted like any failed export (`otel.sdk.exporter.span.exported` and
//! `...log.exported` with `error.type` `resource_exhausted` or `unavailable`).

use std::sync::OnceLock;
use std::time::Duration;

use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::transform::common::tonic::ResourceAttributesWithSchema;
use opentelemetry_proto::transform::logs::tonic::group_logs_by_resource_and_scope;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::error::{OTelSdkError, OTelSdkResult};
use opentelemetry_sdk::logs::{LogBatch, LogExporter};
use opentelemetry_sdk::metrics::Temporality;
use opentelemetry_sdk::metrics::data::ResourceMetrics;
use opentelemetry_sdk::metrics::exporter::PushMetricExporter;
use opentelemetry_sdk::trace::{SpanData, SpanExporter};
use prost::Message as _;
use tokio::sync::Semaphore;

use super::encode::TraceRequestEncoder;
use crate::sdk_health::ExportCounts;

/// Batches waiting for their ack from the stream, at most.
pub(crate) const IN_FLIGHT: usize = 64;

/// The NATS connection the exporters publish on, once the service has one.
struct Link {
    js: async_nats::jetstream::Context,
    runtime: tokio::runtime::Handle,
}

static LINK: OnceLock<Link> = OnceLock::new();
static IN_FLIGHT_PERMITS: Semaphore = Semaphore::const_new(IN_FLIGHT);

/// Publishes what the `nats` exporters export on `client` (the first call wins; later
/// connections of the same process are ignored). Call inside the Tokio runtime.
pub(crate) fn attach(client: &async_nats::Client) {
    let Ok(runtime) = tokio::runtime::Handle::try_current() else { return };
    let js = async_nats::jetstream::new(client.clone());
    let _ = LINK.set(Link { js, runtime });
}

/// Waits (blocking, at most `timeout`) until every batch handed to a publishing task has
/// its ack or its failure: at shutdown, so the last batches are in the stream before the
/// process ends. Called from the SDK's shutdown, off the runtime's worker threads.
fn wait_for_acks(timeout: Duration) -> OTelSdkResult {
    let deadline = std::time::Instant::now() + timeout.min(Duration::from_secs(10));
    while IN_FLIGHT_PERMITS.available_permits() < IN_FLIGHT {
        if std::time::Instant::now() >= deadline {
            return Err(OTelSdkError::Timeout(timeout));
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    Ok(())
}

/// `telemetry.<signal>.<service>`, the service name as one subject token (characters a
/// token cannot hold become `_`).
pub(crate) fn subject(signal: &str, service: &str) -> String {
    let token: String =
        service.chars().map(|c| if c.is_ascii_alphanumeric() || c == '-' || c == '_' { c } else { '_' }).collect();
    format!("telemetry.{signal}.{}", if token.is_empty() { "unknown" } else { &token })
}

/// One signal's publisher.
#[derive(Debug, Clone)]
struct Publisher {
    subject: String,
    counts: Option<ExportCounts>,
}

impl Publisher {
    /// Hands `body` (holding `items` spans or log records) to a publishing task; counts it
    /// when its ack arrives, or now when it is dropped.
    fn publish(&self, items: usize, body: Vec<u8>) -> OTelSdkResult {
        let record = |result| {
            if let Some(counts) = &self.counts {
                counts.record(items, result);
            }
        };
        let Some(link) = LINK.get() else {
            record(Err("unavailable"));
            return Err(OTelSdkError::InternalFailure("no NATS connection yet: batch dropped".into()));
        };
        let Ok(permit) = IN_FLIGHT_PERMITS.try_acquire() else {
            record(Err("resource_exhausted"));
            return Err(OTelSdkError::InternalFailure(format!("{IN_FLIGHT} batches await their ack: batch dropped")));
        };
        permit.forget();
        let (js, subject, counts) = (link.js.clone(), self.subject.clone(), self.counts.clone());
        link.runtime.spawn(async move {
            let acked = async { js.publish(subject, body.into()).await?.await }.await;
            IN_FLIGHT_PERMITS.add_permits(1);
            if let Some(counts) = counts {
                counts.record(items, acked.as_ref().map(|_| ()).map_err(|_| "unavailable"));
            }
            if let Err(error) = acked {
                tracing::debug!(%error, "telemetry batch not stored in TELEMETRY");
            }
        });
        Ok(())
    }
}

/// Spans as OTLP `ExportTraceServiceRequest`s on `telemetry.spans.<service>`.
#[derive(Debug)]
pub(crate) struct NatsSpanExporter {
    publisher: Publisher,
    encoder: TraceRequestEncoder,
}

impl NatsSpanExporter {
    pub(crate) fn new(service: &str) -> Self {
        let counts = ExportCounts::new("span", "nats_span_exporter");
        Self {
            publisher: Publisher { subject: subject("spans", service), counts: Some(counts) },
            encoder: TraceRequestEncoder::default(),
        }
    }
}

impl SpanExporter for NatsSpanExporter {
    async fn export(&self, batch: Vec<SpanData>) -> OTelSdkResult {
        let body = self.encoder.encode(&batch);
        self.publisher.publish(batch.len(), body)
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        wait_for_acks(timeout)
    }

    fn set_resource(&mut self, resource: &Resource) {
        self.encoder = TraceRequestEncoder::new(resource);
    }
}

/// Log records as OTLP `ExportLogsServiceRequest`s on `telemetry.logs.<service>`.
#[derive(Debug)]
pub(crate) struct NatsLogExporter {
    publisher: Publisher,
    resource: ResourceAttributesWithSchema,
}

impl NatsLogExporter {
    pub(crate) fn new(service: &str) -> Self {
        let counts = ExportCounts::new("log", "nats_log_exporter");
        Self {
            publisher: Publisher { subject: subject("logs", service), counts: Some(counts) },
            resource: ResourceAttributesWithSchema::default(),
        }
    }
}

impl LogExporter for NatsLogExporter {
    async fn export(&self, batch: LogBatch<'_>) -> OTelSdkResult {
        let items = batch.iter().count();
        let request =
            ExportLogsServiceRequest { resource_logs: group_logs_by_resource_and_scope(&batch, &self.resource) };
        self.publisher.publish(items, request.encode_to_vec())
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        wait_for_acks(timeout)
    }

    fn set_resource(&mut self, resource: &Resource) {
        self.resource = resource.into();
    }
}

/// Metrics (cumulative) as OTLP `ExportMetricsServiceRequest`s on
/// `telemetry.metrics.<service>`.
#[derive(Debug)]
pub(crate) struct NatsMetricExporter {
    publisher: Publisher,
}

impl NatsMetricExporter {
    pub(crate) fn new(service: &str) -> Self {
        Self { publisher: Publisher { subject: subject("metrics", service), counts: None } }
    }
}

impl PushMetricExporter for NatsMetricExporter {
    async fn export(&self, metrics: &ResourceMetrics) -> OTelSdkResult {
        let request = ExportMetricsServiceRequest::from(metrics);
        self.publisher.publish(0, request.encode_to_vec())
    }

    fn force_flush(&self) -> OTelSdkResult {
        Ok(())
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        wait_for_acks(timeout)
    }

    fn temporality(&self) -> Temporality {
        Temporality::Cumulative
    }
}

/// For tests of the publishing bound: how many permits are free.
#[cfg(test)]
fn free_permits() -> usize {
    IN_FLIGHT_PERMITS.available_permits()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subjects_name_the_signal_and_the_service_as_one_token() {
        assert_eq!(subject("spans", "persist-worker"), "telemetry.spans.persist-worker");
        assert_eq!(subject("logs", "a.b c>*"), "telemetry.logs.a_b_c__");
        assert_eq!(subject("metrics", ""), "telemetry.metrics.unknown");
    }

    #[test]
    fn a_batch_before_any_connection_is_dropped_counted_and_never_waits() {
        let publisher = Publisher { subject: subject("spans", "x"), counts: None };
        if LINK.get().is_none() {
            assert!(publisher.publish(3, vec![1, 2, 3]).is_err());
            assert_eq!(free_permits(), IN_FLIGHT, "nothing held");
        }
    }
}

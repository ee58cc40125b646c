//! Where each signal is exported, one sink type per signal: for spans the crate's own
//! OTLP/gRPC exporter ([`grpc`]) with its encoder ([`encode`]), or opentelemetry-otlp's;
//! for every signal OTLP over NATS ([`nats`]) or the console (opentelemetry-stdout).
//! Which one is decided once, from the settings, in `setup`.

pub(crate) mod batch;
pub(crate) mod encode;
pub(crate) mod grpc;
pub(crate) mod nats;

use std::time::Duration;

use opentelemetry::logs::Severity;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::logs::{LogBatch, LogExporter};
use opentelemetry_sdk::metrics::Temporality;
use opentelemetry_sdk::metrics::data::ResourceMetrics;
use opentelemetry_sdk::metrics::exporter::PushMetricExporter;
use opentelemetry_sdk::trace::{SpanData, SpanExporter};

use crate::sdk_health::ExportCounter;
use grpc::DirectGrpcSpanExporter;
use nats::{NatsLogExporter, NatsMetricExporter, NatsSpanExporter};

/// The span exporter of a service.
#[derive(Debug)]
pub(crate) enum SpanSink {
    /// [`DirectGrpcSpanExporter`].
    Direct(DirectGrpcSpanExporter),
    /// opentelemetry-otlp's exporter (OTLP/HTTP, or settings only it implements).
    Official(ExportCounter<opentelemetry_otlp::SpanExporter>),
    /// OTLP over NATS.
    Nats(NatsSpanExporter),
    /// One JSON document per batch on stdout.
    Console(opentelemetry_stdout::SpanExporter),
}

impl SpanExporter for SpanSink {
    async fn export(&self, batch: Vec<SpanData>) -> OTelSdkResult {
        match self {
            Self::Direct(exporter) => exporter.export(batch).await,
            Self::Official(exporter) => exporter.export(batch).await,
            Self::Nats(exporter) => exporter.export(batch).await,
            Self::Console(exporter) => exporter.export(batch).await,
        }
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        match self {
            Self::Direct(exporter) => exporter.shutdown_with_timeout(timeout),
            Self::Official(exporter) => exporter.shutdown_with_timeout(timeout),
            Self::Nats(exporter) => exporter.shutdown_with_timeout(timeout),
            Self::Console(exporter) => exporter.shutdown_with_timeout(timeout),
        }
    }

    fn force_flush(&self) -> OTelSdkResult {
        match self {
            Self::Direct(exporter) => exporter.force_flush(),
            Self::Official(exporter) => exporter.force_flush(),
            Self::Nats(exporter) => exporter.force_flush(),
            Self::Console(exporter) => exporter.force_flush(),
        }
    }

    fn set_resource(&mut self, resource: &Resource) {
        match self {
            Self::Direct(exporter) => exporter.set_resource(resource),
            Self::Official(exporter) => exporter.set_resource(resource),
            Self::Nats(exporter) => exporter.set_resource(resource),
            Self::Console(exporter) => exporter.set_resource(resource),
        }
    }
}

/// The log exporter of a service.
#[derive(Debug)]
pub(crate) enum LogSink {
    /// opentelemetry-otlp's exporter, counted.
    Otlp(Box<ExportCounter<opentelemetry_otlp::LogExporter>>),
    /// OTLP over NATS.
    Nats(NatsLogExporter),
    /// One JSON document per batch on stdout.
    Console(opentelemetry_stdout::LogExporter),
}

impl LogExporter for LogSink {
    async fn export(&self, batch: LogBatch<'_>) -> OTelSdkResult {
        match self {
            Self::Otlp(exporter) => exporter.export(batch).await,
            Self::Nats(exporter) => exporter.export(batch).await,
            Self::Console(exporter) => exporter.export(batch).await,
        }
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        match self {
            Self::Otlp(exporter) => exporter.shutdown_with_timeout(timeout),
            Self::Nats(exporter) => exporter.shutdown_with_timeout(timeout),
            Self::Console(exporter) => exporter.shutdown_with_timeout(timeout),
        }
    }

    fn event_enabled(&self, level: Severity, target: &str, name: Option<&str>) -> bool {
        match self {
            Self::Otlp(exporter) => exporter.event_enabled(level, target, name),
            Self::Nats(exporter) => exporter.event_enabled(level, target, name),
            Self::Console(exporter) => exporter.event_enabled(level, target, name),
        }
    }

    fn set_resource(&mut self, resource: &Resource) {
        match self {
            Self::Otlp(exporter) => exporter.set_resource(resource),
            Self::Nats(exporter) => exporter.set_resource(resource),
            Self::Console(exporter) => exporter.set_resource(resource),
        }
    }
}

/// The metric exporter of a service.
#[derive(Debug)]
pub(crate) enum MetricSink {
    /// opentelemetry-otlp's exporter.
    Otlp(opentelemetry_otlp::MetricExporter),
    /// OTLP over NATS.
    Nats(NatsMetricExporter),
    /// One JSON document per collection on stdout.
    Console(opentelemetry_stdout::MetricExporter),
}

impl PushMetricExporter for MetricSink {
    async fn export(&self, metrics: &ResourceMetrics) -> OTelSdkResult {
        match self {
            Self::Otlp(exporter) => exporter.export(metrics).await,
            Self::Nats(exporter) => exporter.export(metrics).await,
            Self::Console(exporter) => exporter.export(metrics).await,
        }
    }

    fn force_flush(&self) -> OTelSdkResult {
        match self {
            Self::Otlp(exporter) => exporter.force_flush(),
            Self::Nats(exporter) => exporter.force_flush(),
            Self::Console(exporter) => exporter.force_flush(),
        }
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        match self {
            Self::Otlp(exporter) => exporter.shutdown_with_timeout(timeout),
            Self::Nats(exporter) => exporter.shutdown_with_timeout(timeout),
            Self::Console(exporter) => exporter.shutdown_with_timeout(timeout),
        }
    }

    fn temporality(&self) -> Temporality {
        match self {
            Self::Otlp(exporter) => exporter.temporality(),
            Self::Nats(exporter) => exporter.temporality(),
            Self::Console(exporter) => exporter.temporality(),
        }
    }
}

//! The tracing pipeline's own health as metrics, named as in the OpenTelemetry semantic
//! conventions for SDK metrics, so a dashboard and an alert can tell "no traces because
//! nothing happened" from "no traces because they are lost":
//!
//! | metric | counted by |
//! |---|---|
//! | `otel.sdk.span.started` (`otel.span.sampling_result`, `otel.span.parent.origin`) | [`SpanStartCounter`], a span processor |
//! | `otel.sdk.processor.span.processed` (`error.type="queue_full"` for dropped spans) | the batch span processor itself: the crate's (`otlp::batch`, for its OTLP/gRPC exporter) or the SDK's (other exporters), with the same attributes |
//! | `otel.sdk.exporter.span.exported`, `otel.sdk.exporter.log.exported` (`error.type` on failure) | [`ExportCounts`]: the crate's span exporter by gRPC status code, [`ExportCounter`] around opentelemetry-otlp's |
//! | `otel.sdk.trace.sampling_ratio` (gauge, new root traces) | [`register_sampling_ratio`], from `OTEL_TRACES_SAMPLER[_ARG]` (read in `settings`) |
//!
//! The SDK's batch processor exposes no drop counter in its API; it records one as a
//! metric when built with its `experimental_metrics_bound_instruments` feature, on the
//! meter that is global when the batch processor is built (so [`crate::init`] installs the
//! meter provider first); the crate's own batch processor records the same metric the
//! same way. Export results are counted around the exporter. Only spans
//! that are recorded reach a processor: `otel.sdk.span.started` counts those (an unsampled
//! span costs nothing and is not counted).

use std::time::Duration;

use opentelemetry::metrics::BoundCounter;
use opentelemetry::trace::{Span as _, TraceContextExt as _};
use opentelemetry::{Context, KeyValue, global};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::error::{OTelSdkError, OTelSdkResult};
use opentelemetry_sdk::logs::{LogBatch, LogExporter};
use opentelemetry_sdk::trace::{Span, SpanData, SpanExporter, SpanProcessor};

const METER: &str = "otel.sdk";

/// Counts recorded spans as they start, by sampling result and parent origin, and hands
/// every call on to `inner`. A wrapper, not a second processor beside `inner`: the SDK
/// gives each processor of a list its own deep copy of every ended span.
#[derive(Debug)]
pub(crate) struct SpanStartCounter<P> {
    /// Indexed by [`SpanStartCounter::slot`]: (sampled, parent none / local / remote).
    started: [BoundCounter<u64>; 6],
    inner: P,
}

impl<P: SpanProcessor> SpanStartCounter<P> {
    pub(crate) fn new(inner: P) -> Self {
        let counter = global::meter(METER)
            .u64_counter("otel.sdk.span.started")
            .with_unit("{span}")
            .with_description("Spans started and recorded by this process")
            .build();
        let bind = |slot: usize| {
            let sampling = if slot < 3 { "RECORD_ONLY" } else { "RECORD_AND_SAMPLE" };
            let parent = ["none", "local", "remote"][slot % 3];
            counter.bind(&[
                KeyValue::new("otel.span.sampling_result", sampling),
                KeyValue::new("otel.span.parent.origin", parent),
            ])
        };
        Self { started: std::array::from_fn(bind), inner }
    }

    fn slot(sampled: bool, parent: &Context) -> usize {
        let parent = parent.span();
        let parent = parent.span_context();
        let origin = match (parent.is_valid(), parent.is_remote()) {
            (false, _) => 0,
            (true, false) => 1,
            (true, true) => 2,
        };
        usize::from(sampled) * 3 + origin
    }
}

impl<P: SpanProcessor> SpanProcessor for SpanStartCounter<P> {
    fn on_start(&self, span: &mut Span, cx: &Context) {
        self.started[Self::slot(span.span_context().is_sampled(), cx)].add(1);
        self.inner.on_start(span, cx);
    }

    fn on_end(&self, span: SpanData) {
        self.inner.on_end(span);
    }

    fn force_flush(&self) -> OTelSdkResult {
        self.inner.force_flush()
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.inner.shutdown_with_timeout(timeout)
    }

    fn set_resource(&mut self, resource: &Resource) {
        self.inner.set_resource(resource);
    }
}

/// `otel.sdk.exporter.{span,log}.exported` of one exporter: what it exported, and what
/// failed by `error.type`.
#[derive(Debug, Clone)]
pub(crate) struct ExportCounts {
    exported: opentelemetry::metrics::Counter<u64>,
    ok: BoundCounter<u64>,
    component: KeyValue,
}

impl ExportCounts {
    /// `signal` is `span` or `log`; `component` the exporter's `otel.component.type`
    /// (`otlp_grpc_span_exporter`, ...).
    pub(crate) fn new(signal: &'static str, component: &'static str) -> Self {
        let exported = global::meter(METER)
            .u64_counter(format!("otel.sdk.exporter.{signal}.exported"))
            .with_unit(if signal == "span" { "{span}" } else { "{log_record}" })
            .with_description("Items whose export finished, successfully or not (error.type)")
            .build();
        let component = KeyValue::new("otel.component.type", component);
        let ok = exported.bind(std::slice::from_ref(&component));
        // Failures appear at 0 from start-up, so the first one shows in increase().
        for error_type in ERROR_TYPES {
            exported.add(0, &[component.clone(), KeyValue::new("error.type", *error_type)]);
        }
        Self { exported, ok, component }
    }

    /// Counts `items` exported, or lost to a failure of this `error.type`.
    pub(crate) fn record(&self, items: usize, result: Result<(), &'static str>) {
        match result {
            Ok(()) => self.ok.add(items as u64),
            Err(error_type) => {
                self.exported.add(items as u64, &[self.component.clone(), KeyValue::new("error.type", error_type)]);
            }
        }
    }
}

/// The `error.type` values an export can end with.
const ERROR_TYPES: &[&str] =
    &["timeout", "already_shutdown", "unavailable", "deadline_exceeded", "resource_exhausted", "export_failed"];

/// `error.type` of a failed OTLP/gRPC export, from its status code.
pub(crate) fn grpc_error_type(code: tonic::Code) -> &'static str {
    match code {
        tonic::Code::Unavailable => "unavailable",
        tonic::Code::DeadlineExceeded => "deadline_exceeded",
        tonic::Code::ResourceExhausted => "resource_exhausted",
        _ => "export_failed",
    }
}

/// Counts around an opentelemetry-otlp exporter (logs; spans with settings only it
/// implements). Its errors are text: `InternalFailure` carries the gRPC status only
/// inside its message, so the code is read back from there; the crate's own span exporter
/// counts by the status code itself (`otlp::grpc`).
#[derive(Debug)]
pub(crate) struct ExportCounter<E> {
    inner: E,
    counts: ExportCounts,
}

impl<E> ExportCounter<E> {
    pub(crate) fn new(inner: E, counts: ExportCounts) -> Self {
        Self { inner, counts }
    }

    fn count(&self, items: usize, result: &OTelSdkResult) {
        self.counts.record(items, result.as_ref().map(|_| ()).map_err(error_type));
    }
}

fn error_type(error: &OTelSdkError) -> &'static str {
    match error {
        OTelSdkError::Timeout(_) => "timeout",
        OTelSdkError::AlreadyShutdown => "already_shutdown",
        OTelSdkError::InternalFailure(message) => [
            ("Unavailable", "unavailable"),
            ("DeadlineExceeded", "deadline_exceeded"),
            ("ResourceExhausted", "resource_exhausted"),
        ]
        .iter()
        .find(|(code, _)| message.contains(code))
        .map_or("export_failed", |(_, kind)| kind),
    }
}

impl<E: SpanExporter> SpanExporter for ExportCounter<E> {
    async fn export(&self, batch: Vec<SpanData>) -> OTelSdkResult {
        let items = batch.len();
        let result = self.inner.export(batch).await;
        self.count(items, &result);
        result
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.inner.shutdown_with_timeout(timeout)
    }

    fn force_flush(&self) -> OTelSdkResult {
        self.inner.force_flush()
    }

    fn set_resource(&mut self, resource: &Resource) {
        self.inner.set_resource(resource);
    }
}

impl<E: LogExporter> LogExporter for ExportCounter<E> {
    async fn export(&self, batch: LogBatch<'_>) -> OTelSdkResult {
        let items = batch.iter().count();
        let result = self.inner.export(batch).await;
        self.count(items, &result);
        result
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.inner.shutdown_with_timeout(timeout)
    }

    fn event_enabled(&self, level: opentelemetry::logs::Severity, target: &str, name: Option<&str>) -> bool {
        self.inner.event_enabled(level, target, name)
    }

    fn set_resource(&mut self, resource: &Resource) {
        self.inner.set_resource(resource);
    }
}

/// Registers `otel.sdk.trace.sampling_ratio` (none for a sampler without a fixed ratio).
pub(crate) fn register_sampling_ratio(ratio: Option<f64>) {
    let Some(ratio) = ratio else { return };
    // The meter provider keeps the callback; the handle is not needed.
    let _ = global::meter(METER)
        .f64_observable_gauge("otel.sdk.trace.sampling_ratio")
        .with_description("Share of new root traces the head sampler records (OTEL_TRACES_SAMPLER[_ARG])")
        .with_callback(move |observer| observer.observe(ratio, &[]))
        .build();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grpc_failures_are_named_by_status() {
        let failure = |m: &str| OTelSdkError::InternalFailure(m.to_owned());
        assert_eq!(
            error_type(&failure("export error: Status { code: Unavailable, message: \"tcp connect\" }")),
            "unavailable"
        );
        assert_eq!(error_type(&failure("HTTP 500")), "export_failed");
        assert_eq!(error_type(&OTelSdkError::Timeout(Duration::from_secs(1))), "timeout");
        assert_eq!(grpc_error_type(tonic::Code::Unavailable), "unavailable");
        assert_eq!(grpc_error_type(tonic::Code::PermissionDenied), "export_failed");
    }
}

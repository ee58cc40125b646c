//! One call that wires traces, metrics and logs for a service, and the guard that
//! flushes them on exit.
//!
//! Owns: the resource, the three OTLP pipelines, the global propagator, the `tracing`
//! subscriber (stdout lines, the OTel span layer, the OTLP log bridge) and their filters,
//! with the pipeline's own health counters (`sdk_health`) in place.

use std::sync::Arc;
use std::sync::atomic::AtomicUsize;

use opentelemetry::propagation::TextMapCompositePropagator;
use opentelemetry::trace::TracerProvider as _;
use opentelemetry::{Key, KeyValue, global};
use opentelemetry_appender_tracing::layer::OpenTelemetryTracingBridge;
use opentelemetry_otlp::{LogExporter, MetricExporter, SpanExporter};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::logs::SdkLoggerProvider;
use opentelemetry_sdk::metrics::{PeriodicReader, SdkMeterProvider};
use opentelemetry_sdk::propagation::{BaggagePropagator, TraceContextPropagator};
use opentelemetry_sdk::trace::{BatchConfig, BatchSpanProcessor, SdkTracerProvider, SpanProcessor};
use tracing::Metadata;
use tracing_subscriber::filter::Targets;
use tracing_subscriber::fmt::writer::BoxMakeWriter;
use tracing_subscriber::layer::Layered;
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;
use tracing_subscriber::{Layer, Registry};

use crate::filters::{self, Gate};
use crate::otlp::batch::EncodingBatchProcessor;
use crate::otlp::grpc::DirectGrpcSpanExporter;
use crate::otlp::nats::{NatsLogExporter, NatsMetricExporter, NatsSpanExporter};
use crate::otlp::{LogSink, MetricSink, SpanSink};
use crate::policy::{RedactingLoggerProvider, RedactingSpanProcessor};
use crate::process_metrics;
use crate::sdk_health::{self, ExportCounter, ExportCounts, SpanStartCounter};
use crate::settings::{Exporter, LogFormat, Protocol, Settings, SettingsError, Signal, SpanBatch, SpanExport};
use crate::stdout::{JsonLines, RedactingFields};

/// Name and version of the binary, and where its log lines go; build it with
/// [`service_info!`](crate::service_info).
#[derive(Debug, Clone, Copy)]
pub struct ServiceInfo {
    /// Fallback `service.name` when neither `OTEL_SERVICE_NAME` nor
    /// `OTEL_RESOURCE_ATTRIBUTES` names the service.
    pub name: &'static str,
    /// `service.version` (unless `OTEL_RESOURCE_ATTRIBUTES` sets it).
    pub version: &'static str,
    /// Log filter when `RUST_LOG` is unset (services: `info`; a CLI: `warn`).
    pub default_log_filter: &'static str,
    /// Where log lines are printed (they go over OTLP too, whatever this says).
    pub log_lines: LogLines,
    /// Report the process's CPU time and memory (`process.*`): a long-running service
    /// yes; a CLI run or a one-shot step no, or `ServiceDown` would read every ended run
    /// as a service gone and the process panels would add up exited runs.
    pub process_metrics: bool,
}

/// The calling crate's name and version as a [`ServiceInfo`] (logs at `info` on stdout).
#[macro_export]
macro_rules! service_info {
    () => {
        $crate::ServiceInfo {
            name: env!("CARGO_PKG_NAME"),
            version: env!("CARGO_PKG_VERSION"),
            default_log_filter: "info",
            log_lines: $crate::LogLines::Stdout,
            process_metrics: true,
        }
    };
}

/// Where a process prints its log lines.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogLines {
    /// A service: stdout, as `docker logs` shows it.
    Stdout,
    /// A CLI, which keeps stdout for its results.
    Stderr,
    /// Nowhere: a full-screen terminal UI owns the screen.
    Off,
}

/// Why telemetry could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum InitError {
    /// An environment variable has a value we cannot honour.
    #[error(transparent)]
    Settings(#[from] SettingsError),
    /// The gRPC exporter needs a Tokio runtime to build its channel.
    #[error("telemetry::init must be called inside a Tokio runtime when a signal uses OTLP/gRPC")]
    NoRuntime,
    /// The OTLP exporter rejected its configuration (endpoint, TLS, headers).
    #[error("cannot build the OTLP {signal} exporter: {source}")]
    Exporter {
        /// `traces`, `metrics` or `logs`.
        signal: &'static str,
        /// What the exporter said.
        source: opentelemetry_otlp::ExporterBuildError,
    },
    /// The OTLP endpoint of the crate's own span exporter is not a URL.
    #[error("cannot build the OTLP {signal} exporter: {reason}")]
    Endpoint {
        /// `traces`.
        signal: &'static str,
        /// Why.
        reason: String,
    },
    /// A global `tracing` subscriber was already installed.
    #[error("a tracing subscriber is already installed: {0}")]
    Subscriber(#[from] tracing_subscriber::util::TryInitError),
}

/// Flushes and shuts down the pipelines: tracer, then logger, then meter.
///
/// Call [`TelemetryGuard::shutdown`] at the end of `main`; dropping the guard also shuts
/// down, but cannot avoid blocking a current-thread runtime (and may lose the last batch).
#[derive(Debug)]
#[must_use = "dropping the guard shuts telemetry down"]
pub struct TelemetryGuard {
    providers: Option<Providers>,
}

#[derive(Debug)]
struct Providers {
    tracer: SdkTracerProvider,
    logger: SdkLoggerProvider,
    meter: SdkMeterProvider,
}

impl Providers {
    /// Blocking; must not run on a Tokio worker of a current-thread runtime.
    fn shutdown(self) {
        let results =
            [("tracer", self.tracer.shutdown()), ("logger", self.logger.shutdown()), ("meter", self.meter.shutdown())];
        for (name, result) in results {
            if let Err(error) = result {
                tracing::warn!(provider = name, %error, "telemetry shutdown incomplete");
            }
        }
    }
}

impl TelemetryGuard {
    /// Exports what is buffered and stops the exporters, without losing the last batch on
    /// any runtime flavour (the blocking shutdown runs on a blocking thread while the
    /// runtime keeps driving the exporter's I/O).
    pub async fn shutdown(mut self) {
        if let Some(providers) = self.providers.take()
            && let Err(error) = tokio::task::spawn_blocking(move || providers.shutdown()).await
        {
            tracing::warn!(%error, "telemetry shutdown task failed");
        }
    }

    /// Whether OTLP export is on (false under `OTEL_SDK_DISABLED=true`).
    pub fn is_exporting(&self) -> bool {
        self.providers.is_some()
    }
}

impl Drop for TelemetryGuard {
    fn drop(&mut self) {
        let Some(providers) = self.providers.take() else { return };
        match tokio::runtime::Handle::try_current().map(|h| h.runtime_flavor()) {
            Ok(tokio::runtime::RuntimeFlavor::MultiThread) => tokio::task::block_in_place(|| providers.shutdown()),
            _ => providers.shutdown(),
        }
    }
}

/// Sets up traces, metrics and logs for this process from the standard environment
/// variables and installs the global `tracing` subscriber and propagator.
///
/// Call once, early in `main`, inside the Tokio runtime. With `OTEL_SDK_DISABLED=true`
/// only the stdout log lines remain.
pub fn init(service: ServiceInfo) -> Result<TelemetryGuard, InitError> {
    let settings = Settings::from_env()?;
    global::set_text_map_propagator(TextMapCompositePropagator::new(vec![
        Box::new(TraceContextPropagator::new()),
        Box::new(BaggagePropagator::new()),
    ]));

    let log = filters::log_targets(settings.rust_log.as_deref(), service.default_log_filter);
    let mut layers: Vec<Box<dyn Layer<Base> + Send + Sync>> =
        stdout_layer(settings.log_format, log.clone(), service.log_lines).into_iter().collect();
    let providers = if settings.sdk_disabled {
        None
    } else {
        let providers = build_providers(&settings, service)?;
        let tracer = providers.tracer.tracer(service.name);
        layers.push(
            tracing_opentelemetry::layer()
                .with_tracer(tracer)
                .with_location(false)
                .with_threads(false)
                .with_tracked_inactivity(false)
                .with_target(false)
                .boxed(),
        );
        let bridge = OpenTelemetryTracingBridge::new(&RedactingLoggerProvider::new(providers.logger.clone()));
        let bridge_log = log.clone();
        let allow = move |meta: &Metadata<'_>| {
            bridge_log.would_enable(meta.target(), meta.level()) && !filters::is_sdk_diagnostic(meta)
        };
        layers.push(Gate::new(bridge, allow).boxed());
        global::set_tracer_provider(providers.tracer.clone());
        crate::tracer::install(&providers.tracer);
        if service.process_metrics {
            process_metrics::register();
        }
        sdk_health::register_sampling_ratio(settings.sampling_ratio);
        crate::propagation::register_failures_at_zero();
        Some(providers)
    };
    tracing_subscriber::registry().with(filters::global(&log)).with(layers).try_init()?;
    Ok(TelemetryGuard { providers })
}

fn build_providers(settings: &Settings, service: ServiceInfo) -> Result<Providers, InitError> {
    let uses_grpc = (0..3).any(|i| settings.exporters[i] == Exporter::Otlp && settings.protocols[i] == Protocol::Grpc);
    if uses_grpc && tokio::runtime::Handle::try_current().is_err() {
        return Err(InitError::NoRuntime);
    }
    let resource = resource(settings, service);
    let service_name = resource.get(&Key::new("service.name")).map(|v| v.to_string()).unwrap_or_default();

    // The meter provider is global before the span pipeline is built: the batch processors
    // and the export counters (sdk_health) take their meters from it.
    let mut meter = SdkMeterProvider::builder().with_resource(resource.clone());
    if let Some(metrics) = metric_sink(settings, &service_name)? {
        meter = meter.with_reader(PeriodicReader::builder(metrics).build());
    }
    let meter = meter.build();
    global::set_meter_provider(meter.clone());

    // Span batches follow OTEL_BSP_* (`settings::SpanBatch`); log batches and metric
    // intervals OTEL_BLRP_* and OTEL_METRIC_EXPORT_INTERVAL, read by the SDK builders; the
    // sampler OTEL_TRACES_SAMPLER[_ARG]. Queues are bounded: a dead collector drops, never blocks.
    let mut tracer =
        SdkTracerProvider::builder().with_resource(resource.clone()).with_max_links_per_span(settings.span_link_limit);
    tracer = match span_sink(settings, &service_name)? {
        Some(SpanSink::Direct(direct)) => {
            tracer.with_span_processor(grpc_span_processor(direct, settings.span_batch).0)
        }
        Some(other) => tracer.with_span_processor(span_processor(other, span_batch_config(settings.span_batch))),
        None => tracer,
    };
    let mut logger = SdkLoggerProvider::builder().with_resource(resource);
    if let Some(logs) = log_sink(settings, &service_name)? {
        logger = logger.with_batch_exporter(logs);
    }
    Ok(Providers { tracer: tracer.build(), logger: logger.build(), meter })
}

/// The span exporter the settings choose: for OTLP the crate's own with plain OTLP/gRPC
/// settings, else opentelemetry-otlp's.
fn span_sink(settings: &Settings, service: &str) -> Result<Option<SpanSink>, InitError> {
    let otlp = match (settings.exporter(Signal::Traces), &settings.span_export) {
        (Exporter::None, _) => return Ok(None),
        (Exporter::Console, _) => return Ok(Some(SpanSink::Console(opentelemetry_stdout::SpanExporter::default()))),
        (Exporter::Nats, _) => return Ok(Some(SpanSink::Nats(NatsSpanExporter::new(service)))),
        (Exporter::Otlp, otlp) => otlp,
    };
    let sink = match otlp {
        SpanExport::Direct { endpoint, timeout } => {
            let counts = ExportCounts::new("span", "otlp_grpc_span_exporter");
            let direct = DirectGrpcSpanExporter::new(endpoint, *timeout, counts);
            SpanSink::Direct(direct.map_err(|reason| InitError::Endpoint { signal: "traces", reason })?)
        }
        SpanExport::Official(protocol) => {
            let (built, component) = match protocol {
                Protocol::Grpc => (SpanExporter::builder().with_tonic().build(), "otlp_grpc_span_exporter"),
                Protocol::HttpProtobuf => (SpanExporter::builder().with_http().build(), "otlp_http_span_exporter"),
            };
            let exporter = built.map_err(|source| InitError::Exporter { signal: "traces", source })?;
            SpanSink::Official(ExportCounter::new(exporter, ExportCounts::new("span", component)))
        }
    };
    Ok(Some(sink))
}

/// The log exporter the settings choose.
fn log_sink(settings: &Settings, service: &str) -> Result<Option<LogSink>, InitError> {
    let protocol = match settings.exporter(Signal::Logs) {
        Exporter::None => return Ok(None),
        Exporter::Console => return Ok(Some(LogSink::Console(opentelemetry_stdout::LogExporter::default()))),
        Exporter::Nats => return Ok(Some(LogSink::Nats(NatsLogExporter::new(service)))),
        Exporter::Otlp => settings.protocol(Signal::Logs),
    };
    let (built, component) = match protocol {
        Protocol::Grpc => (LogExporter::builder().with_tonic().build(), "otlp_grpc_log_exporter"),
        Protocol::HttpProtobuf => (LogExporter::builder().with_http().build(), "otlp_http_log_exporter"),
    };
    let exporter = built.map_err(|source| InitError::Exporter { signal: "logs", source })?;
    Ok(Some(LogSink::Otlp(Box::new(ExportCounter::new(exporter, ExportCounts::new("log", component))))))
}

/// The metric exporter the settings choose.
fn metric_sink(settings: &Settings, service: &str) -> Result<Option<MetricSink>, InitError> {
    let protocol = match settings.exporter(Signal::Metrics) {
        Exporter::None => return Ok(None),
        Exporter::Console => return Ok(Some(MetricSink::Console(opentelemetry_stdout::MetricExporter::default()))),
        Exporter::Nats => return Ok(Some(MetricSink::Nats(NatsMetricExporter::new(service)))),
        Exporter::Otlp => settings.protocol(Signal::Metrics),
    };
    let built = match protocol {
        Protocol::Grpc => MetricExporter::builder().with_tonic().build(),
        Protocol::HttpProtobuf => MetricExporter::builder().with_http().build(),
    };
    Ok(Some(MetricSink::Otlp(built.map_err(|source| InitError::Exporter { signal: "metrics", source })?)))
}

/// A service's one span processor: counts started spans (`SpanStartCounter`), applies
/// the redaction policy, then queues the span for `exporter` in the SDK's batch processor.
/// One processor, each wrapping the next: a provider with several processors deep-copies
/// every ended span (attributes, events, links) once per processor.
pub fn span_processor<E>(exporter: E, config: BatchConfig) -> impl SpanProcessor
where
    E: opentelemetry_sdk::trace::SpanExporter + 'static,
{
    SpanStartCounter::new(RedactingSpanProcessor::new(
        BatchSpanProcessor::builder(exporter).with_batch_config(config).build(),
    ))
}

/// The same for the crate's OTLP/gRPC exporter, whose batches are encoded as spans end
/// (`otlp::batch`) instead of queued as `SpanData` in the SDK's batch processor; with the
/// count of spans its full queue dropped (benchmarks report it). Its encoder applies the
/// redaction policy as it writes each attribute (`otlp::encode::runs`): no
/// `RedactingSpanProcessor` pass before it.
pub fn grpc_span_processor(
    exporter: DirectGrpcSpanExporter,
    batch: SpanBatch,
) -> (impl SpanProcessor, Arc<AtomicUsize>) {
    let batching = EncodingBatchProcessor::new(exporter, batch);
    let dropped = batching.dropped();
    (SpanStartCounter::new(batching), dropped)
}

/// The SDK's batch settings, as this crate reads `OTEL_BSP_*` (`settings::SpanBatch`).
fn span_batch_config(batch: SpanBatch) -> BatchConfig {
    opentelemetry_sdk::trace::BatchConfigBuilder::default()
        .with_max_queue_size(batch.max_queue_size)
        .with_max_export_batch_size(batch.max_export_batch_size)
        .with_scheduled_delay(batch.scheduled_delay)
        .build()
}

/// Env detectors (`OTEL_SERVICE_NAME`, `OTEL_RESOURCE_ATTRIBUTES`) first; code only fills
/// in what the environment left out.
fn resource(settings: &Settings, service: ServiceInfo) -> Resource {
    let from_env = |key: &str| settings.resource_keys_from_env.iter().any(|k| k == key);
    let mut builder = Resource::builder();
    if !settings.service_name_from_env {
        builder = builder.with_service_name(service.name);
    }
    if !from_env("service.version") {
        builder = builder.with_attribute(KeyValue::new("service.version", service.version));
    }
    if !from_env("service.instance.id") {
        builder = builder.with_attribute(KeyValue::new("service.instance.id", uuid::Uuid::new_v4().to_string()));
    }
    builder.build()
}

/// The subscriber under the output layers: the registry behind the global filter.
type Base = Layered<Targets, Registry>;

fn stdout_layer(format: LogFormat, log: Targets, lines: LogLines) -> Option<Box<dyn Layer<Base> + Send + Sync>> {
    let stderr = match lines {
        LogLines::Stdout => false,
        LogLines::Stderr => true,
        LogLines::Off => return None,
    };
    let allow = move |meta: &Metadata<'_>| {
        log.would_enable(meta.target(), meta.level()) && filters::throttle_sdk_diagnostics(meta)
    };
    use std::io::IsTerminal as _;
    // Colour only for a person at a terminal: never into a pipe, a file or `docker logs`.
    let ansi = if stderr { std::io::stderr().is_terminal() } else { std::io::stdout().is_terminal() };
    let writer = if stderr { BoxMakeWriter::new(std::io::stderr) } else { BoxMakeWriter::new(std::io::stdout) };
    let layer = tracing_subscriber::fmt::layer().with_writer(writer).with_ansi(ansi);
    Some(match format {
        // JsonLines reads the span's name from the registry and the trace ids from the OTel
        // context, never the formatted span fields: the fmt layer need not see spans.
        LogFormat::Json => Gate::events_only(layer.event_format(JsonLines), allow).boxed(),
        LogFormat::Text => Gate::new(layer.fmt_fields(RedactingFields::default()), allow).boxed(),
    })
}

//! Every environment variable this crate reads, read here once ([`Settings::from_env`]).
//!
//! The SDK and the OTLP exporters read the standard ones themselves (`OTEL_SERVICE_NAME`,
//! `OTEL_RESOURCE_ATTRIBUTES`, endpoints, timeouts, headers, `OTEL_TRACES_SAMPLER[_ARG]`,
//! `OTEL_BSP_*`, `OTEL_BLRP_*`, `OTEL_METRIC_EXPORT_INTERVAL`), and nothing here overrides
//! them. This crate reads what the SDK does not act on (`OTEL_SDK_DISABLED`, the
//! protocols, `LOG_FORMAT`, `RUST_LOG`, `OTLP_SPAN_ENCODER`), what it must know of the
//! rest (which resource keys and batch sizes the environment sets, the sampler's ratio
//! for the `otel.sdk.trace.sampling_ratio` gauge), and, for its own OTLP/gRPC span
//! exporter, the traces endpoint and timeout, the same way opentelemetry-otlp does. One
//! default differs from the SDK's: links per span ([`LINKS_PER_SPAN`], unless
//! `OTEL_SPAN_LINK_COUNT_LIMIT` is set).

use std::time::Duration;

/// Reads a variable; the indirection lets tests supply their own environment.
pub(crate) type Lookup<'a> = &'a dyn Fn(&str) -> Option<String>;

/// Why the environment could not be turned into settings.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SettingsError {
    /// An `OTEL_EXPORTER_OTLP[_<SIGNAL>]_PROTOCOL` value this build cannot export with.
    #[error("{var}={value:?} is not supported; use \"grpc\" or \"http/protobuf\"")]
    UnsupportedProtocol {
        /// The variable that held it.
        var: String,
        /// Its value.
        value: String,
    },
    /// An `OTEL_<SIGNAL>S_EXPORTER` value this build has no exporter for.
    #[error("{var}={value:?} is not supported; use \"otlp\", \"nats\", \"console\" or \"none\"")]
    UnsupportedExporter {
        /// The variable that held it.
        var: String,
        /// Its value.
        value: String,
    },
    /// A `LOG_FORMAT` value other than `json` or `text`.
    #[error("LOG_FORMAT={0:?} is not supported; use \"json\" or \"text\"")]
    UnsupportedLogFormat(String),
}

/// OTLP transport of one signal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Protocol {
    /// OTLP/gRPC (the default, port 4317).
    Grpc,
    /// OTLP/HTTP with protobuf bodies (port 4318).
    HttpProtobuf,
}

/// Where a signal goes (`OTEL_TRACES_EXPORTER`, `OTEL_METRICS_EXPORTER`,
/// `OTEL_LOGS_EXPORTER`, the specification's values plus `nats`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Exporter {
    /// OTLP to the collector (the default).
    Otlp,
    /// OTLP protobuf batches published to the JetStream stream `TELEMETRY`, forwarded
    /// by otlp-bridge (see `otlp::nats`).
    Nats,
    /// Printed to stdout (opentelemetry-stdout), for a look at what would be exported.
    Console,
    /// Not exported.
    None,
}

/// Stdout log line format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum LogFormat {
    /// One JSON object per line (containers).
    Json,
    /// Human-readable lines (default).
    Text,
}

/// The three OTLP signals.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Signal {
    /// Spans.
    Traces,
    /// Metric points.
    Metrics,
    /// Log records.
    Logs,
}

impl Signal {
    fn env_name(self) -> &'static str {
        match self {
            Self::Traces => "TRACES",
            Self::Metrics => "METRICS",
            Self::Logs => "LOGS",
        }
    }
}

/// What the process environment asks of the telemetry setup.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Settings {
    /// `OTEL_SDK_DISABLED=true`: no exporters, no-op providers; stdout logs still work.
    pub sdk_disabled: bool,
    /// Transport per signal (traces, metrics, logs).
    pub protocols: [Protocol; 3],
    /// Exporter per signal (traces, metrics, logs).
    pub exporters: [Exporter; 3],
    /// `LOG_FORMAT`.
    pub log_format: LogFormat,
    /// Whether `OTEL_SERVICE_NAME` or `service.name` in `OTEL_RESOURCE_ATTRIBUTES` is set.
    pub service_name_from_env: bool,
    /// Resource keys already given by `OTEL_RESOURCE_ATTRIBUTES`.
    pub resource_keys_from_env: Vec<String>,
    /// `RUST_LOG`, when set and not blank.
    pub rust_log: Option<String>,
    /// Which span exporter: the crate's own (plain OTLP/gRPC settings) or opentelemetry-otlp's.
    pub span_export: SpanExport,
    /// The span batch processor's settings (`OTEL_BSP_*`).
    pub span_batch: SpanBatch,
    /// The share of new root traces the head sampler keeps, as the SDK reads
    /// `OTEL_TRACES_SAMPLER[_ARG]`; `None` for a sampler without a fixed ratio.
    pub sampling_ratio: Option<f64>,
    /// Links kept per span: `OTEL_SPAN_LINK_COUNT_LIMIT` as the SDK reads it (a number),
    /// else [`LINKS_PER_SPAN`], not the SDK's 128.
    pub span_link_limit: u32,
}

/// Links a span keeps unless `OTEL_SPAN_LINK_COUNT_LIMIT` says otherwise: a batch span
/// (the worker's INSERT) links every other delivery of its batch, up to 1,024 of them.
/// The SDK's default, 128, dropped half the links of a batch of 256 (counted in the
/// span's dropped links count, but gone from the traces of those messages).
pub const LINKS_PER_SPAN: u32 = 1024;

/// The span batch processor's settings, read from `OTEL_BSP_*` as the SDK reads them
/// (a value that is not a positive number is ignored), with this crate's defaults.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SpanBatch {
    /// `OTEL_BSP_MAX_QUEUE_SIZE`: spans waiting for export; more are dropped and counted.
    pub max_queue_size: usize,
    /// `OTEL_BSP_MAX_EXPORT_BATCH_SIZE`: spans per export (at most the queue's size).
    pub max_export_batch_size: usize,
    /// `OTEL_BSP_SCHEDULE_DELAY` (milliseconds): the longest a span waits for a full batch.
    pub scheduled_delay: Duration,
}

/// The span queue when `OTEL_BSP_MAX_QUEUE_SIZE` is unset: a second of a busy worker
/// (tens of thousands of messages/s), so a burst or a collector hiccup drops nothing
/// (the SDK's 2,048 fill in well under 100 ms at that rate).
pub const DEFAULT_BSP_MAX_QUEUE_SIZE: usize = 16_384;
/// Spans per export when `OTEL_BSP_MAX_EXPORT_BATCH_SIZE` is unset: the SDK's own 512.
/// Measured against 2,048 (`benches/drain.rs`): fewer gRPC calls did not pay; with 512 the
/// buffers are a quarter the size (worker CPU per message 1.24x untraced instead of
/// 1.45x), and each export holds a core for a quarter of the time (publish -> commit p99
/// +9 ms instead of +16..+30 ms at half load).
pub const DEFAULT_BSP_MAX_EXPORT_BATCH_SIZE: usize = 512;
/// The SDK's schedule delay when `OTEL_BSP_SCHEDULE_DELAY` is unset.
const DEFAULT_BSP_SCHEDULE_DELAY: Duration = Duration::from_secs(5);

impl SpanBatch {
    fn from_lookup(env: Lookup<'_>) -> Self {
        let positive = |name: &str| env(name).and_then(|v| v.trim().parse::<u64>().ok()).filter(|&v| v > 0);
        let size = |name: &str, default: usize| positive(name).and_then(|v| usize::try_from(v).ok()).unwrap_or(default);
        let max_queue_size = size("OTEL_BSP_MAX_QUEUE_SIZE", DEFAULT_BSP_MAX_QUEUE_SIZE);
        Self {
            max_queue_size,
            max_export_batch_size: size("OTEL_BSP_MAX_EXPORT_BATCH_SIZE", DEFAULT_BSP_MAX_EXPORT_BATCH_SIZE)
                .min(max_queue_size),
            scheduled_delay: positive("OTEL_BSP_SCHEDULE_DELAY")
                .map_or(DEFAULT_BSP_SCHEDULE_DELAY, Duration::from_millis),
        }
    }
}

/// How spans are exported.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum SpanExport {
    /// The crate's OTLP/gRPC exporter (`otlp::grpc`): an `http://` endpoint without
    /// headers, compression or TLS settings, and `OTLP_SPAN_ENCODER` not `official`.
    Direct {
        /// `OTEL_EXPORTER_OTLP[_TRACES]_ENDPOINT` (default `http://localhost:4317`).
        endpoint: String,
        /// `OTEL_EXPORTER_OTLP[_TRACES]_TIMEOUT` (default 10 s).
        timeout: Duration,
    },
    /// opentelemetry-otlp's exporter with this transport; it reads its settings itself.
    Official(Protocol),
}

/// Variables whose settings only opentelemetry-otlp's exporter implements.
const OFFICIAL_ONLY: &[&str] =
    &["HEADERS", "COMPRESSION", "INSECURE", "CERTIFICATE", "CLIENT_KEY", "CLIENT_CERTIFICATE"];
const DEFAULT_ENDPOINT: &str = "http://localhost:4317";
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

impl Settings {
    /// Reads the process environment.
    pub(crate) fn from_env() -> Result<Self, SettingsError> {
        Self::from_lookup(&|name| std::env::var(name).ok())
    }

    pub(crate) fn from_lookup(env: Lookup<'_>) -> Result<Self, SettingsError> {
        let sdk_disabled = env("OTEL_SDK_DISABLED").is_some_and(|v| v.trim().eq_ignore_ascii_case("true"));
        let protocols = [protocol(env, Signal::Traces)?, protocol(env, Signal::Metrics)?, protocol(env, Signal::Logs)?];
        let exporters = [exporter(env, Signal::Traces)?, exporter(env, Signal::Metrics)?, exporter(env, Signal::Logs)?];
        let log_format = match env("LOG_FORMAT").as_deref().map(str::trim) {
            None | Some("") | Some("text") => LogFormat::Text,
            Some("json") => LogFormat::Json,
            Some(other) => return Err(SettingsError::UnsupportedLogFormat(other.to_owned())),
        };
        let resource_keys_from_env: Vec<String> = env("OTEL_RESOURCE_ATTRIBUTES")
            .unwrap_or_default()
            .split(',')
            .filter_map(|pair| pair.split_once('=').map(|(k, _)| k.trim().to_owned()))
            .filter(|k| !k.is_empty())
            .collect();
        let service_name_from_env = env("OTEL_SERVICE_NAME").is_some_and(|v| !v.trim().is_empty())
            || resource_keys_from_env.iter().any(|k| k == "service.name");
        let rust_log = env("RUST_LOG").filter(|v| !v.trim().is_empty());
        let span_export = span_export(env, protocols[Signal::Traces as usize]);
        let span_batch = SpanBatch::from_lookup(env);
        let sampling_ratio =
            sampling_ratio(env("OTEL_TRACES_SAMPLER").as_deref(), env("OTEL_TRACES_SAMPLER_ARG").as_deref());
        let span_link_limit =
            env("OTEL_SPAN_LINK_COUNT_LIMIT").and_then(|v| v.trim().parse().ok()).unwrap_or(LINKS_PER_SPAN);
        Ok(Self {
            sdk_disabled,
            protocols,
            exporters,
            log_format,
            service_name_from_env,
            resource_keys_from_env,
            rust_log,
            span_export,
            span_batch,
            sampling_ratio,
            span_link_limit,
        })
    }

    /// The transport for `signal`.
    pub(crate) fn protocol(&self, signal: Signal) -> Protocol {
        self.protocols[signal as usize]
    }

    /// The exporter for `signal`.
    pub(crate) fn exporter(&self, signal: Signal) -> Exporter {
        self.exporters[signal as usize]
    }
}

/// Signal-specific variable first, then the generic one, then gRPC (DESIGN.md 5.1).
fn protocol(env: Lookup<'_>, signal: Signal) -> Result<Protocol, SettingsError> {
    let specific = format!("OTEL_EXPORTER_OTLP_{}_PROTOCOL", signal.env_name());
    let generic = "OTEL_EXPORTER_OTLP_PROTOCOL".to_owned();
    for var in [specific, generic] {
        match env(&var).as_deref().map(str::trim) {
            None | Some("") => continue,
            Some("grpc") => return Ok(Protocol::Grpc),
            Some("http/protobuf") => return Ok(Protocol::HttpProtobuf),
            Some(other) => return Err(SettingsError::UnsupportedProtocol { var, value: other.to_owned() }),
        }
    }
    Ok(Protocol::Grpc)
}

/// `OTEL_TRACES_EXPORTER` (`_METRICS_`, `_LOGS_`): `otlp` when unset or blank. The
/// specification allows a list; one exporter per signal is what this crate builds.
fn exporter(env: Lookup<'_>, signal: Signal) -> Result<Exporter, SettingsError> {
    let var = format!("OTEL_{}_EXPORTER", signal.env_name());
    match env(&var).as_deref().map(str::trim) {
        None | Some("") | Some("otlp") => Ok(Exporter::Otlp),
        Some("nats") => Ok(Exporter::Nats),
        Some("console") => Ok(Exporter::Console),
        Some("none") => Ok(Exporter::None),
        Some(other) => Err(SettingsError::UnsupportedExporter { var, value: other.to_owned() }),
    }
}

/// The crate's own exporter for plain OTLP/gRPC settings, else opentelemetry-otlp's.
fn span_export(env: Lookup<'_>, protocol: Protocol) -> SpanExport {
    let var = |name: &str| {
        env(&format!("OTEL_EXPORTER_OTLP_TRACES_{name}"))
            .or_else(|| env(&format!("OTEL_EXPORTER_OTLP_{name}")))
            .filter(|v| !v.trim().is_empty())
    };
    let endpoint = var("ENDPOINT").unwrap_or_else(|| DEFAULT_ENDPOINT.to_owned()).trim().to_owned();
    if protocol != Protocol::Grpc
        || env("OTLP_SPAN_ENCODER").is_some_and(|v| v.trim() == "official")
        || OFFICIAL_ONLY.iter().any(|name| var(name).is_some())
        || !endpoint.starts_with("http://")
    {
        return SpanExport::Official(protocol);
    }
    let timeout = var("TIMEOUT").and_then(|ms| ms.trim().parse().ok()).map_or(DEFAULT_TIMEOUT, Duration::from_millis);
    SpanExport::Direct { endpoint, timeout }
}

/// The ratio of new root traces the configured sampler keeps, as the SDK reads
/// `OTEL_TRACES_SAMPLER[_ARG]` (default `parentbased_always_on`); `None` for a sampler
/// without a fixed ratio (`jaeger_remote`).
fn sampling_ratio(sampler: Option<&str>, arg: Option<&str>) -> Option<f64> {
    let ratio = || arg.and_then(|a| a.trim().parse::<f64>().ok()).map_or(1.0, |r| r.clamp(0.0, 1.0));
    match sampler.map(str::trim).unwrap_or("parentbased_always_on") {
        "always_on" | "parentbased_always_on" => Some(1.0),
        "always_off" | "parentbased_always_off" => Some(0.0),
        "traceidratio" | "parentbased_traceidratio" => Some(ratio()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn settings(vars: &[(&str, &str)]) -> Result<Settings, SettingsError> {
        let map: HashMap<String, String> = vars.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect();
        Settings::from_lookup(&|k| map.get(k).cloned())
    }

    #[test]
    fn defaults_are_grpc_text_enabled() {
        let s = settings(&[]).expect("defaults");
        assert!(!s.sdk_disabled);
        assert_eq!(s.protocols, [Protocol::Grpc; 3]);
        assert_eq!(s.log_format, LogFormat::Text);
        assert!(!s.service_name_from_env);
    }

    #[test]
    fn signal_protocol_beats_generic() {
        let s = settings(&[
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf"),
            ("OTEL_EXPORTER_OTLP_METRICS_PROTOCOL", "grpc"),
        ])
        .expect("valid");
        assert_eq!(s.protocols, [Protocol::HttpProtobuf, Protocol::Grpc, Protocol::HttpProtobuf]);
    }

    #[test]
    fn unsupported_values_are_named() {
        let err = settings(&[("OTEL_EXPORTER_OTLP_PROTOCOL", "http/json")]).expect_err("json unsupported");
        assert!(err.to_string().contains("OTEL_EXPORTER_OTLP_PROTOCOL=\"http/json\""), "{err}");
        assert!(settings(&[("LOG_FORMAT", "xml")]).is_err());
    }

    #[test]
    fn links_per_span_are_the_crates_default_unless_the_environment_sets_a_number() {
        assert_eq!(settings(&[]).expect("valid").span_link_limit, LINKS_PER_SPAN);
        assert_eq!(settings(&[("OTEL_SPAN_LINK_COUNT_LIMIT", " 300 ")]).expect("valid").span_link_limit, 300);
        let ignored = settings(&[("OTEL_SPAN_LINK_COUNT_LIMIT", "many")]).expect("valid");
        assert_eq!(ignored.span_link_limit, LINKS_PER_SPAN, "as the SDK, a value that is not a number is ignored");
    }

    #[test]
    fn disabled_and_service_name_sources() {
        assert!(settings(&[("OTEL_SDK_DISABLED", "TRUE")]).expect("valid").sdk_disabled);
        assert!(!settings(&[("OTEL_SDK_DISABLED", "false")]).expect("valid").sdk_disabled);
        assert!(settings(&[("OTEL_SERVICE_NAME", "x")]).expect("valid").service_name_from_env);
        let s = settings(&[("OTEL_RESOURCE_ATTRIBUTES", "deployment.environment=dev, service.name=y")]).expect("valid");
        assert!(s.service_name_from_env);
        assert_eq!(s.resource_keys_from_env, ["deployment.environment", "service.name"]);
    }

    #[test]
    fn the_ratio_follows_the_sampler_the_sdk_reads() {
        assert_eq!(sampling_ratio(None, None), Some(1.0), "the SDK's default: parentbased_always_on");
        assert_eq!(sampling_ratio(Some("parentbased_traceidratio"), Some("0.1")), Some(0.1));
        assert_eq!(sampling_ratio(Some("traceidratio"), None), Some(1.0), "the SDK's default ratio");
        assert_eq!(sampling_ratio(Some("traceidratio"), Some("7")), Some(1.0));
        assert_eq!(sampling_ratio(Some("always_off"), None), Some(0.0));
        assert_eq!(sampling_ratio(Some("parentbased_jaeger_remote"), None), None);
    }

    #[test]
    fn plain_grpc_settings_use_the_crates_exporter_with_their_endpoint_and_timeout() {
        let direct = |endpoint: &str, ms: u64| SpanExport::Direct {
            endpoint: endpoint.to_owned(),
            timeout: Duration::from_millis(ms),
        };
        assert_eq!(settings(&[]).expect("valid").span_export, direct("http://localhost:4317", 10_000));
        let s = settings(&[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4317"),
            ("OTEL_EXPORTER_OTLP_TRACES_TIMEOUT", "2500"),
        ]);
        assert_eq!(s.expect("valid").span_export, direct("http://collector:4317", 2500));
    }

    #[test]
    fn settings_only_the_official_exporter_implements_select_it() {
        for vars in [
            &[("OTLP_SPAN_ENCODER", "official")][..],
            &[("OTEL_EXPORTER_OTLP_HEADERS", "authorization=Bearer%20x")],
            &[("OTEL_EXPORTER_OTLP_TRACES_COMPRESSION", "gzip")],
            &[("OTEL_EXPORTER_OTLP_INSECURE", "false")],
            &[("OTEL_EXPORTER_OTLP_CERTIFICATE", "/etc/ca.pem")],
            &[("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "https://collector:4317")],
        ] {
            assert_eq!(settings(vars).expect("valid").span_export, SpanExport::Official(Protocol::Grpc), "{vars:?}");
        }
        let http = settings(&[("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf")]).expect("valid");
        assert_eq!(http.span_export, SpanExport::Official(Protocol::HttpProtobuf));
    }

    #[test]
    fn each_signal_has_its_exporter_and_unknown_ones_are_named() {
        assert_eq!(settings(&[]).expect("valid").exporters, [Exporter::Otlp; 3]);
        let s = settings(&[
            ("OTEL_TRACES_EXPORTER", "nats"),
            ("OTEL_METRICS_EXPORTER", " none "),
            ("OTEL_LOGS_EXPORTER", "console"),
        ]);
        assert_eq!(s.expect("valid").exporters, [Exporter::Nats, Exporter::None, Exporter::Console]);
        let err = settings(&[("OTEL_LOGS_EXPORTER", "zipkin")]).expect_err("no zipkin exporter");
        assert!(err.to_string().contains("OTEL_LOGS_EXPORTER=\"zipkin\""), "{err}");
    }

    #[test]
    fn span_batches_follow_otel_bsp_with_this_crates_defaults() {
        let s = settings(&[("OTEL_BSP_MAX_EXPORT_BATCH_SIZE", "64"), ("RUST_LOG", " ")]).expect("valid");
        let batch = |queue, size, ms| SpanBatch {
            max_queue_size: queue,
            max_export_batch_size: size,
            scheduled_delay: Duration::from_millis(ms),
        };
        assert_eq!((s.span_batch, s.rust_log), (batch(DEFAULT_BSP_MAX_QUEUE_SIZE, 64, 5000), None));
        let s = settings(&[
            ("OTEL_BSP_MAX_QUEUE_SIZE", "4"),
            ("OTEL_BSP_MAX_EXPORT_BATCH_SIZE", "8"),
            ("OTEL_BSP_SCHEDULE_DELAY", "100"),
        ]);
        assert_eq!(s.expect("valid").span_batch, batch(4, 4, 100), "a batch is at most the queue");
        let s = settings(&[("OTEL_BSP_MAX_QUEUE_SIZE", "0"), ("OTEL_BSP_SCHEDULE_DELAY", "soon")]);
        assert_eq!(s.expect("valid").span_batch, batch(DEFAULT_BSP_MAX_QUEUE_SIZE, 512, 5000), "ignored");
    }
}

//! The environment variables this crate reads itself, because the Rust SDK does not.
//!
//! Everything else (`OTEL_SERVICE_NAME`, `OTEL_RESOURCE_ATTRIBUTES`, endpoints, timeouts,
//! headers, `OTEL_TRACES_SAMPLER[_ARG]`, `OTEL_BSP_*`, `OTEL_BLRP_*`,
//! `OTEL_METRIC_EXPORT_INTERVAL`) is read by the SDK and the OTLP exporters, and no code
//! here overrides it. The one exception: the crate's own OTLP/gRPC span exporter
//! (`otlp_grpc`) reads the traces endpoint and timeout the same way, and leaves every other
//! exporter setting to opentelemetry-otlp's exporter by not being used.

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
    /// A `LOG_FORMAT` value other than `json` or `text`.
    #[error("LOG_FORMAT={0:?} is not supported; use \"json\" or \"text\"")]
    UnsupportedLogFormat(String),
}

/// OTLP transport of one signal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    /// OTLP/gRPC (the default, port 4317).
    Grpc,
    /// OTLP/HTTP with protobuf bodies (port 4318).
    HttpProtobuf,
}

/// Stdout log line format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// One JSON object per line (containers).
    Json,
    /// Human-readable lines (default).
    Text,
}

/// The three OTLP signals.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signal {
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
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    /// `OTEL_SDK_DISABLED=true`: no exporters, no-op providers; stdout logs still work.
    pub sdk_disabled: bool,
    /// Transport per signal (traces, metrics, logs).
    pub protocols: [Protocol; 3],
    /// `LOG_FORMAT`.
    pub log_format: LogFormat,
    /// Whether `OTEL_SERVICE_NAME` or `service.name` in `OTEL_RESOURCE_ATTRIBUTES` is set.
    pub service_name_from_env: bool,
    /// Resource keys already given by `OTEL_RESOURCE_ATTRIBUTES`.
    pub resource_keys_from_env: Vec<String>,
}

impl Settings {
    /// Reads the process environment.
    pub fn from_env() -> Result<Self, SettingsError> {
        Self::from_lookup(&|name| std::env::var(name).ok())
    }

    pub(crate) fn from_lookup(env: Lookup<'_>) -> Result<Self, SettingsError> {
        let sdk_disabled = env("OTEL_SDK_DISABLED").is_some_and(|v| v.trim().eq_ignore_ascii_case("true"));
        let protocols = [protocol(env, Signal::Traces)?, protocol(env, Signal::Metrics)?, protocol(env, Signal::Logs)?];
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
        Ok(Self { sdk_disabled, protocols, log_format, service_name_from_env, resource_keys_from_env })
    }

    /// The transport for `signal`.
    pub fn protocol(&self, signal: Signal) -> Protocol {
        self.protocols[signal as usize]
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
    fn disabled_and_service_name_sources() {
        assert!(settings(&[("OTEL_SDK_DISABLED", "TRUE")]).expect("valid").sdk_disabled);
        assert!(!settings(&[("OTEL_SDK_DISABLED", "false")]).expect("valid").sdk_disabled);
        assert!(settings(&[("OTEL_SERVICE_NAME", "x")]).expect("valid").service_name_from_env);
        let s = settings(&[("OTEL_RESOURCE_ATTRIBUTES", "deployment.environment=dev, service.name=y")]).expect("valid");
        assert!(s.service_name_from_env);
        assert_eq!(s.resource_keys_from_env, ["deployment.environment", "service.name"]);
    }
}

//! Helpers for checking the compose stack: reading the config files, the Prometheus
//! names of OpenTelemetry metrics, and the metric names a PromQL query uses; the real
//! collector ([`collector`]), Tempo, Loki and Prometheus of the full-stack tier
//! ([`real_backends`]) and its alert watching ([`alert_watch`]); Prometheus and promtool
//! at the image's release ([`prometheus`]); the real Keycloak ([`keycloak`]); and the
//! seed scenarios read back from those backends, shared by that tier and `make test-e2e`
//! ([`scenarios`]); a program in a real terminal ([`tmux`]).

pub mod alert_watch;
pub mod collector;
pub mod keycloak;
pub mod prometheus;
pub mod real_backends;
pub mod scenarios;
pub mod tmux;

use std::collections::BTreeSet;
use std::path::PathBuf;

use regex::Regex;
use serde_yaml::Value;
use test_harness::model::MetricRecord;

/// Runs a checking tool and returns whether it succeeded and what it printed (stdout,
/// then stderr); `what` says how to install it when it cannot start.
pub fn run_tool(command: &mut std::process::Command, what: &str) -> (bool, String) {
    let out = command.output().unwrap_or_else(|e| panic!("{what}: {e}"));
    (out.status.success(), format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)))
}

/// A file of the repository.
pub fn repo_file(path: &str) -> PathBuf {
    test_harness::workspace_root().join(path)
}

/// Reads and parses a YAML file of the repository (panics with the file name).
pub fn yaml(path: &str) -> Value {
    let text = std::fs::read_to_string(repo_file(path)).unwrap_or_else(|e| panic!("{path}: {e}"));
    serde_yaml::from_str(&text).unwrap_or_else(|e| panic!("{path} is not valid YAML: {e}"))
}

/// Reads and parses a JSON file of the repository.
pub fn json(path: &str) -> serde_json::Value {
    let text = std::fs::read_to_string(repo_file(path)).unwrap_or_else(|e| panic!("{path}: {e}"));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{path} is not valid JSON: {e}"))
}

/// Fresh `.env` content from the real `auth-service keygen`.
pub fn sample_env() -> Vec<(String, String)> {
    let out = std::process::Command::new(test_harness::cargo_bin("auth-service"))
        .arg("keygen")
        .output()
        .unwrap_or_else(|e| panic!("auth-service keygen: {e}"));
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.split_once('=').map(|(k, v)| (k.to_owned(), v.to_owned())))
        .collect()
}

/// The Prometheus name the collector's Prometheus exporter gives an OTel metric: dots to
/// underscores, a unit suffix (`s` -> `_seconds`, `By` -> `_bytes`, `{...}` -> none) and
/// `_total` for monotonic sums (counters).
pub fn prometheus_name(metric: &MetricRecord) -> String {
    let mut name = metric.name.replace(['.', '-'], "_");
    let suffix = match metric.unit.as_str() {
        "s" => "_seconds",
        "ms" => "_milliseconds",
        "By" => "_bytes",
        _ => "",
    };
    if !suffix.is_empty() && !name.ends_with(suffix) {
        name.push_str(suffix);
    }
    if metric.monotonic {
        name.push_str("_total");
    }
    name
}

/// Series the collector's span-metrics connectors create (`otel/collector.yaml`): every
/// span's, and the kept traces' (the ones with exemplars).
pub const COLLECTOR_SERIES: &[&str] = &[
    "traces_span_metrics_calls_total",
    "traces_span_metrics_duration_milliseconds",
    "traces_span_metrics_kept_calls_total",
    "traces_span_metrics_kept_duration_milliseconds",
];

/// The span metrics whose exemplars the dashboards show: only kept traces, so that every
/// exemplar opens a trace in Tempo.
pub const EXEMPLAR_SERIES: &str = "traces_span_metrics_kept_duration_milliseconds_bucket";

/// The collector's own series the alert rules and the Telemetry pipeline dashboard use
/// (its internal telemetry, scraped from :8888, counters named `_total` by
/// `without_type_suffix: false`). The full-stack tier reads them back from the real
/// Prometheus (the `send_failed` ones exist from an exporter's first failure).
pub const COLLECTOR_INTERNAL_SERIES: &[&str] = &[
    "up",
    "otelcol_receiver_refused_spans_total",
    "otelcol_receiver_refused_log_records_total",
    "otelcol_receiver_refused_metric_points_total",
    "otelcol_exporter_send_failed_spans_total",
    "otelcol_exporter_send_failed_log_records_total",
    "otelcol_exporter_send_failed_metric_points_total",
    "otelcol_receiver_accepted_spans_total",
    "otelcol_receiver_accepted_log_records_total",
    "otelcol_receiver_accepted_metric_points_total",
    "otelcol_exporter_sent_spans_total",
    "otelcol_exporter_sent_log_records_total",
    "otelcol_exporter_sent_metric_points_total",
    "otelcol_exporter_queue_size",
    "otelcol_exporter_queue_capacity",
    // tail_sampling processor (contrib), attributes `policy` and `sampled`.
    "otelcol_processor_tail_sampling_count_traces_sampled_total",
];

/// Every provisioned dashboard file (`grafana/dashboards/*.json`), sorted.
pub fn dashboard_files() -> Vec<String> {
    let mut files: Vec<String> = std::fs::read_dir(repo_file("grafana/dashboards"))
        .map(|dir| {
            dir.flatten()
                .filter_map(|e| e.file_name().to_str().map(str::to_owned))
                .filter(|name| name.ends_with(".json"))
                .map(|name| format!("grafana/dashboards/{name}"))
                .collect()
        })
        .unwrap_or_default();
    files.sort();
    files
}

/// One alert rule: its name and PromQL expression.
#[derive(Debug, Clone)]
pub struct AlertRule {
    /// `alert:`
    pub alert: String,
    /// `expr:`
    pub expr: String,
}

/// Every alert rule of `prometheus/rules/alerts.yml`.
pub fn alert_exprs() -> Vec<AlertRule> {
    yaml("prometheus/rules/alerts.yml")["groups"]
        .as_sequence()
        .into_iter()
        .flatten()
        .flat_map(|g| g["rules"].as_sequence().into_iter().flatten())
        .filter_map(|r| {
            Some(AlertRule { alert: r["alert"].as_str()?.to_owned(), expr: r["expr"].as_str()?.to_owned() })
        })
        .collect()
}

/// Series Tempo 3.0.3's metrics generator remote-writes with the project's
/// `tempo/tempo.yaml` (service graphs with the messaging histogram, span metrics), as the
/// full-stack tier reads them back from Prometheus (histograms without `_bucket`,
/// `_sum`, `_count`). That tier fails if this list and real Tempo disagree.
pub const TEMPO_SERIES: &[&str] = &[
    "traces_service_graph_request_total",
    "traces_service_graph_request_failed_total",
    "traces_service_graph_request_server_seconds",
    "traces_service_graph_request_client_seconds",
    "traces_service_graph_request_messaging_system_seconds",
    "traces_spanmetrics_calls_total",
    "traces_spanmetrics_latency",
    "traces_spanmetrics_size_total",
];

/// The metric names a PromQL expression selects (an identifier followed by `{` or `[`),
/// with histogram suffixes (`_bucket`, `_sum`, `_count`) removed.
pub fn promql_metrics(expr: &str) -> BTreeSet<String> {
    let selector = Regex::new(r"([A-Za-z_:][A-Za-z0-9_:]*)\s*[\{\[]").unwrap_or_else(|e| panic!("{e}"));
    selector
        .captures_iter(expr)
        .map(|c| c[1].to_owned())
        .filter(|name| !["by", "without", "on", "ignoring", "group_left", "group_right"].contains(&name.as_str()))
        .map(|name| {
            ["_bucket", "_sum", "_count"].iter().find_map(|s| name.strip_suffix(s).map(str::to_owned)).unwrap_or(name)
        })
        .collect()
}

/// The values a PromQL expression matches `label` against with `=` (e.g. every
/// `span_name="..."`), so dashboards can be checked against the spans really exported.
pub fn promql_label_values(expr: &str, label: &str) -> BTreeSet<String> {
    let matcher =
        Regex::new(&format!(r#"\b{}\s*=\s*"([^"]*)""#, regex::escape(label))).unwrap_or_else(|e| panic!("{e}"));
    matcher.captures_iter(expr).map(|c| c[1].to_owned()).collect()
}

/// Every Prometheus expression in a dashboard (targets with an `expr`).
pub fn dashboard_exprs(dashboard: &serde_json::Value) -> Vec<String> {
    let mut exprs = Vec::new();
    for panel in dashboard["panels"].as_array().into_iter().flatten() {
        for target in panel["targets"].as_array().into_iter().flatten() {
            if target["datasource"]["type"] == "prometheus"
                && let Some(expr) = target["expr"].as_str()
            {
                exprs.push(expr.to_owned());
            }
        }
    }
    exprs
}

#[cfg(test)]
mod tests {
    use super::*;
    use test_harness::model::MetricRecord;

    fn metric(name: &str, unit: &str, monotonic: bool) -> MetricRecord {
        MetricRecord { service_name: "s".into(), name: name.into(), unit: unit.into(), monotonic, points: vec![] }
    }

    #[test]
    fn label_matchers_are_read_but_regex_matchers_are_not() {
        let expr = r#"rate(x{service_name="nats-server", span_name="nats ingress chat.msg.*.*", job=~"a.*"}[1m])"#;
        assert_eq!(promql_label_values(expr, "span_name"), BTreeSet::from(["nats ingress chat.msg.*.*".to_owned()]));
        assert_eq!(promql_label_values(expr, "service_name"), BTreeSet::from(["nats-server".to_owned()]));
        assert!(promql_label_values(expr, "job").is_empty());
        assert!(promql_label_values(expr, "name").is_empty());
    }

    #[test]
    fn otel_names_translate_like_the_prometheus_exporter() {
        assert_eq!(prometheus_name(&metric("messages.persisted", "{message}", true)), "messages_persisted_total");
        assert_eq!(
            prometheus_name(&metric("messaging.nats.queue_wait", "s", false)),
            "messaging_nats_queue_wait_seconds"
        );
        assert_eq!(prometheus_name(&metric("process.cpu.time", "s", true)), "process_cpu_time_seconds_total");
        assert_eq!(prometheus_name(&metric("process.memory.usage", "By", false)), "process_memory_usage_bytes");
    }

    #[test]
    fn metric_names_are_found_in_promql() {
        let expr = r#"histogram_quantile(0.95, sum by (le) (rate(x_seconds_bucket{a="b"}[5m]))) / sum(rate(y_total[$__rate_interval]))"#;
        assert_eq!(promql_metrics(expr), BTreeSet::from(["x_seconds".to_owned(), "y_total".to_owned()]));
    }
}

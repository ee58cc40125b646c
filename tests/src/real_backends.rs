//! The full pipeline of the compose stack, run natively: the real OpenTelemetry Collector
//! with `otel/collector.yaml` in front of real Tempo, Loki and Prometheus started with
//! `tempo/tempo.yaml`, `loki/loki.yaml` and `prometheus/prometheus.yml` (its rule files
//! included), at the compose images' versions.
//!
//! **The rewrite, all of it** (everything else is the file as compose mounts it):
//! - Tempo: `server.http_listen_port`, `server.grpc_listen_port`, the OTLP receivers'
//!   endpoints (loopback, free ports), every path under `/var/tempo` (a temp dir), and
//!   the metrics generator's remote-write URL (this Prometheus);
//! - Loki: `server.http_listen_port`, `server.grpc_listen_port`, every path under `/loki`;
//! - the collector: [`crate::collector::rewrite`];
//! - Prometheus ([`prometheus_config`]): each scrape target's `host:port` (compose names
//!   to loopback ports), the rule file's path (absolute, to the repository's); its
//!   command-line flags are docker-compose.yml's, with `--config.file`,
//!   `--storage.tsdb.path` and `--web.listen-address` pointing here.
//!
//! Each backend can be stopped and started again (the alert scenarios need outages).
//! The binaries: `TEMPO_BIN` and `LOKI_BIN` (`.ci/run` unpacks them from `../shared/bin`);
//! the collector and Prometheus from their build scripts.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use serde_yaml::Value;
use test_harness::{ChildProcess, HarnessResult, free_port};

use crate::{collector, repo_file};

/// One running backend, which can be stopped and started again with the same config.
pub struct Backend {
    name: &'static str,
    command: Box<dyn Fn() -> Command + Send + Sync>,
    ready_path: &'static str,
    /// The process while it runs (killed on drop).
    pub process: Option<ChildProcess>,
    /// Its HTTP API (the collector: its health check) on 127.0.0.1.
    pub http_port: u16,
}

impl std::fmt::Debug for Backend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Backend").field("name", &self.name).field("http_port", &self.http_port).finish()
    }
}

impl Backend {
    fn new(
        name: &'static str,
        http_port: u16,
        ready_path: &'static str,
        command: impl Fn() -> Command + Send + Sync + 'static,
    ) -> Self {
        Self { name, command: Box::new(command), ready_path, process: None, http_port }
    }

    /// `http://127.0.0.1:<http_port>`.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.http_port)
    }

    /// Kills the process (an outage; the data directory stays).
    pub fn stop(&mut self) {
        if let Some(mut process) = self.process.take() {
            process.kill();
        }
    }

    /// Starts the process (again) and waits, up to a minute, until it answers ready.
    pub async fn start(&mut self) -> HarnessResult<()> {
        self.stop();
        self.process = Some(ChildProcess::spawn(self.name, (self.command)())?);
        let http = reqwest::Client::builder().timeout(Duration::from_secs(2)).build().map_err(|e| e.to_string())?;
        let url = format!("{}{}", self.url(), self.ready_path);
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if http.get(&url).send().await.is_ok_and(|r| r.status().is_success()) {
                return Ok(());
            }
            let process = self.process.as_mut().ok_or("not started")?;
            if let Some(status) = process.exit_status() {
                return Err(format!("{url}: exited ({status}) with the project's config:\n{}", process.output()));
            }
            if Instant::now() > deadline {
                return Err(format!("{url} not ready within 60 s:\n{}", process.output()));
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }
}

/// Collector, Tempo, Loki and Prometheus, each in its own temp dir.
#[derive(Debug)]
pub struct RealBackends {
    /// The collector: OTLP in, tail sampling, span metrics, redaction.
    pub collector: Backend,
    /// Where the collector listens.
    pub collector_ports: collector::Endpoints,
    /// Traces; remote-writes its service graph and span metrics to `prometheus`.
    pub tempo: Backend,
    /// Tempo's OTLP/gRPC receiver port (the collector's traces exporter).
    pub tempo_otlp_grpc: u16,
    /// Logs over OTLP/HTTP at `/otlp`.
    pub loki: Backend,
    /// Scrapes the collector, Tempo and Loki, takes Tempo's remote write, evaluates the alerts.
    pub prometheus: Backend,
    _dir: tempfile::TempDir,
}

/// The Tempo and Loki binaries named by the environment, or `None` (the tier is skipped).
pub fn binaries() -> Option<(PathBuf, PathBuf)> {
    let var = |name: &str| std::env::var_os(name).filter(|v| !v.is_empty()).map(PathBuf::from);
    Some((var("TEMPO_BIN")?, var("LOKI_BIN")?))
}

impl RealBackends {
    /// Starts the four and waits until each answers ready. `tail_sampling_percentage` is
    /// the collector's `TAIL_SAMPLING_PERCENTAGE` (compose: 100 for the demo).
    pub async fn start(tempo_bin: &Path, loki_bin: &Path, tail_sampling_percentage: u32) -> HarnessResult<Self> {
        let dir = tempfile::tempdir().map_err(|e| format!("temp dir: {e}"))?;
        let collector_bin = collector::binary().ok_or("no collector (scripts/build-collector.sh needs Go)")?;
        let (tempo_http, tempo_grpc, tempo_otlp_grpc, tempo_otlp_http) =
            (free_port(), free_port(), free_port(), free_port());
        let (loki_http, loki_grpc, prometheus_http) = (free_port(), free_port(), free_port());
        let collector_ports = collector::Endpoints::free_ports(
            format!("127.0.0.1:{tempo_otlp_grpc}"),
            format!("http://127.0.0.1:{loki_http}/otlp"),
            dir.path().join("otelcol-queue"),
        );
        std::fs::create_dir_all(&collector_ports.queue_dir).map_err(|e| e.to_string())?;

        let tempo_config = tempo_config(
            &dir.path().join("tempo"),
            tempo_http,
            tempo_grpc,
            tempo_otlp_grpc,
            tempo_otlp_http,
            prometheus_http,
        )?;
        let tempo =
            backend("tempo", tempo_bin, tempo_http, "/ready", write_yaml(dir.path(), "tempo.yaml", &tempo_config)?);
        let loki_config = loki_config(&dir.path().join("loki"), loki_http, loki_grpc)?;
        let loki = backend("loki", loki_bin, loki_http, "/ready", write_yaml(dir.path(), "loki.yaml", &loki_config)?);

        let original = std::fs::read_to_string(repo_file("otel/collector.yaml")).map_err(|e| e.to_string())?;
        let collector_file = dir.path().join("collector.yaml");
        std::fs::write(&collector_file, collector::rewrite(&original, &collector_ports)?).map_err(|e| e.to_string())?;
        let percentage = tail_sampling_percentage.to_string();
        let collector = Backend::new("otelcol", collector_ports.health, "/ready", move || {
            let mut cmd = Command::new(&collector_bin);
            cmd.arg(format!("--config={}", collector_file.display())).env("TAIL_SAMPLING_PERCENTAGE", &percentage);
            cmd
        });

        let targets = BTreeMap::from([
            ("otel-collector:8889".to_owned(), format!("127.0.0.1:{}", collector_ports.prometheus)),
            ("otel-collector:8888".to_owned(), format!("127.0.0.1:{}", collector_ports.telemetry)),
            ("tempo:3200".to_owned(), format!("127.0.0.1:{tempo_http}")),
            ("loki:3100".to_owned(), format!("127.0.0.1:{loki_http}")),
        ]);
        let prometheus_config = prometheus_config(&read_yaml("prometheus/prometheus.yml")?, &targets)?;
        let prometheus_file = write_yaml(dir.path(), "prometheus.yml", &prometheus_config)?;
        let args = prometheus_args(
            &read_yaml("docker-compose.yml")?,
            &prometheus_file,
            &dir.path().join("prometheus"),
            prometheus_http,
        );
        let prometheus_bin = crate::prometheus::server()?;
        let prometheus = Backend::new("prometheus", prometheus_http, "/-/ready", move || {
            let mut cmd = Command::new(&prometheus_bin);
            cmd.args(&args);
            cmd
        });

        let mut backends = Self { collector, collector_ports, tempo, tempo_otlp_grpc, loki, prometheus, _dir: dir };
        for backend in [&mut backends.prometheus, &mut backends.tempo, &mut backends.loki, &mut backends.collector] {
            backend.start().await?;
        }
        Ok(backends)
    }

    /// `OTEL_*` settings that send every signal to the collector, as compose does
    /// (OTLP/gRPC; metrics every 10 s, compose's `OTEL_METRIC_EXPORT_INTERVAL`).
    pub fn export_env(&self) -> Vec<(String, String)> {
        [
            ("OTEL_EXPORTER_OTLP_ENDPOINT", format!("http://127.0.0.1:{}", self.collector_ports.otlp_grpc)),
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc".to_owned()),
            ("OTEL_METRIC_EXPORT_INTERVAL", "10000".to_owned()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect()
    }
}

/// Real Tempo alone with `tempo/tempo.yaml` (the rewrite of the module docs; its remote
/// write goes nowhere), for a tier that only reads traces back: services export their
/// spans to it directly.
#[derive(Debug)]
pub struct TempoOnly {
    pub tempo: Backend,
    /// Its OTLP/gRPC receiver port.
    pub otlp_grpc: u16,
    /// Its OTLP/HTTP receiver port.
    pub otlp_http: u16,
    _dir: tempfile::TempDir,
}

impl TempoOnly {
    /// Starts Tempo and waits until it answers ready.
    pub async fn start(tempo_bin: &Path) -> HarnessResult<Self> {
        let dir = tempfile::tempdir().map_err(|e| format!("temp dir: {e}"))?;
        let (http, grpc, otlp_grpc, otlp_http) = (free_port(), free_port(), free_port(), free_port());
        let config = tempo_config(&dir.path().join("tempo"), http, grpc, otlp_grpc, otlp_http, free_port())?;
        let mut tempo = backend("tempo", tempo_bin, http, "/ready", write_yaml(dir.path(), "tempo.yaml", &config)?);
        tempo.start().await?;
        Ok(Self { tempo, otlp_grpc, otlp_http, _dir: dir })
    }

    /// `OTEL_*` settings that send spans to this Tempo (OTLP/gRPC) and no logs or
    /// metrics (Tempo takes neither).
    pub fn export_env(&self) -> Vec<(String, String)> {
        [
            ("OTEL_EXPORTER_OTLP_ENDPOINT", format!("http://127.0.0.1:{}", self.otlp_grpc)),
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc".to_owned()),
            ("OTEL_LOGS_EXPORTER", "none".to_owned()),
            ("OTEL_METRICS_EXPORTER", "none".to_owned()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect()
    }
}

/// A backend started as `bin -config.file=<file>` (Tempo, Loki).
fn backend(name: &'static str, bin: &Path, port: u16, ready: &'static str, file: PathBuf) -> Backend {
    let bin = bin.to_path_buf();
    Backend::new(name, port, ready, move || {
        let mut cmd = Command::new(&bin);
        cmd.arg(format!("-config.file={}", file.display()));
        cmd
    })
}

fn read_yaml(path: &str) -> HarnessResult<Value> {
    let text = std::fs::read_to_string(repo_file(path)).map_err(|e| format!("{path}: {e}"))?;
    serde_yaml::from_str(&text).map_err(|e| format!("{path}: {e}"))
}

/// Every string under `value` that starts with `from` starts with `to` instead.
fn move_paths(value: &mut Value, from: &str, to: &Path) {
    match value {
        Value::String(s) if s.starts_with(from) => *s = format!("{}{}", to.display(), &s[from.len()..]),
        Value::Mapping(map) => map.values_mut().for_each(|v| move_paths(v, from, to)),
        Value::Sequence(list) => list.iter_mut().for_each(|v| move_paths(v, from, to)),
        _ => {}
    }
}

fn write_yaml(dir: &Path, name: &str, value: &Value) -> HarnessResult<PathBuf> {
    let path = dir.join(name);
    let text = serde_yaml::to_string(value).map_err(|e| format!("{name}: {e}"))?;
    std::fs::write(&path, text).map_err(|e| format!("{}: {e}", path.display()))?;
    Ok(path)
}

/// The project's `tempo/tempo.yaml` with the rewrite of the module docs.
pub fn tempo_config(
    data: &Path,
    http: u16,
    grpc: u16,
    otlp_grpc: u16,
    otlp_http: u16,
    prometheus: u16,
) -> HarnessResult<Value> {
    let mut config = read_yaml("tempo/tempo.yaml")?;
    config["server"]["http_listen_port"] = http.into();
    config["server"]["grpc_listen_port"] = grpc.into();
    let protocols = &mut config["distributor"]["receivers"]["otlp"]["protocols"];
    protocols["grpc"]["endpoint"] = format!("127.0.0.1:{otlp_grpc}").into();
    protocols["http"]["endpoint"] = format!("127.0.0.1:{otlp_http}").into();
    config["metrics_generator"]["storage"]["remote_write"][0]["url"] =
        format!("http://127.0.0.1:{prometheus}/api/v1/write").into();
    move_paths(&mut config, "/var/tempo", data);
    Ok(config)
}

/// The project's `loki/loki.yaml` with the rewrite of the module docs.
pub fn loki_config(data: &Path, http: u16, grpc: u16) -> HarnessResult<Value> {
    let mut config = read_yaml("loki/loki.yaml")?;
    config["server"]["http_listen_port"] = http.into();
    config["server"]["grpc_listen_port"] = grpc.into();
    move_paths(&mut config, "/loki", data);
    Ok(config)
}

/// `prometheus.yml` with every scrape target moved (`targets`: compose `host:port` ->
/// here; a target missing from it is an error, so a new one cannot go unscraped
/// silently) and the rule files made absolute (the repository's own files).
pub fn prometheus_config(config: &Value, targets: &BTreeMap<String, String>) -> HarnessResult<Value> {
    let mut config = config.clone();
    for scrape in config["scrape_configs"].as_sequence_mut().into_iter().flatten() {
        for group in scrape["static_configs"].as_sequence_mut().into_iter().flatten() {
            for target in group["targets"].as_sequence_mut().into_iter().flatten() {
                let from = target.as_str().unwrap_or_default().to_owned();
                let to = targets.get(&from).ok_or_else(|| format!("scrape target {from}: where does it run here?"))?;
                *target = Value::from(to.clone());
            }
        }
    }
    for file in config["rule_files"].as_sequence_mut().into_iter().flatten() {
        let relative = file.as_str().unwrap_or_default().to_owned();
        *file = Value::from(repo_file(&format!("prometheus/{relative}")).display().to_string());
    }
    Ok(config)
}

/// docker-compose.yml's Prometheus flags, with the config, the storage and the listen
/// address of this machine.
fn prometheus_args(compose: &Value, config: &Path, storage: &Path, port: u16) -> Vec<String> {
    let mut args: Vec<String> = compose["services"]["prometheus"]["command"]
        .as_sequence()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .map(|flag| match flag.split_once('=').map(|(name, _)| name) {
            Some("--config.file") => format!("--config.file={}", config.display()),
            Some("--storage.tsdb.path") => format!("--storage.tsdb.path={}", storage.display()),
            _ => flag.to_owned(),
        })
        .collect();
    args.push(format!("--web.listen-address=127.0.0.1:{port}"));
    args
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_scrape_targets_and_rule_paths_change_in_the_prometheus_config() {
        let original = read_yaml("prometheus/prometheus.yml").expect("prometheus.yml");
        let targets: BTreeMap<String, String> = [
            ("otel-collector:8889", "a:1"),
            ("otel-collector:8888", "a:2"),
            ("tempo:3200", "a:3"),
            ("loki:3100", "a:4"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
        let rewritten = prometheus_config(&original, &targets).expect("rewrite");
        let (before, after) =
            (serde_yaml::to_string(&original).expect("yaml"), serde_yaml::to_string(&rewritten).expect("yaml"));
        let changed: Vec<(&str, &str)> = before.lines().zip(after.lines()).filter(|(a, b)| a != b).collect();
        let rules = repo_file("prometheus/rules/alerts.yml").display().to_string();
        let rule_file = format!("- {rules}");
        let expected = [
            ("- rules/alerts.yml", rule_file.as_str()),
            ("    - otel-collector:8889", "    - a:1"),
            ("    - otel-collector:8888", "    - a:2"),
            ("    - tempo:3200", "    - a:3"),
            ("    - loki:3100", "    - a:4"),
        ];
        assert_eq!(changed, expected);
        assert_eq!(before.lines().count(), after.lines().count(), "no key added or removed");
        let unknown = BTreeMap::from([("tempo:3200".to_owned(), "a:3".to_owned())]);
        let error = prometheus_config(&original, &unknown).expect_err("an unlisted target");
        assert!(error.contains("otel-collector:8889"), "{error}");
    }
}

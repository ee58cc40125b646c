//! Real Tempo, Loki and Prometheus for the real-backend tier, started with the
//! project's own `tempo/tempo.yaml`, `loki/loki.yaml` and `prometheus/prometheus.yml`.
//!
//! **The rewrite, all of it** (everything else is the file as compose mounts it):
//! - Tempo: `server.http_listen_port`, `server.grpc_listen_port`, the OTLP receivers'
//!   endpoints (loopback, free ports), every path under `/var/tempo` (a temp dir), and
//!   the metrics generator's remote-write URL (this tier's Prometheus);
//! - Loki: `server.http_listen_port`, `server.grpc_listen_port`, every path under `/loki`;
//! - Prometheus: the command-line flags of docker-compose.yml, with `--config.file`,
//!   `--storage.tsdb.path` and `--web.listen-address` pointing here (its scrape targets
//!   are compose host names and stay unreachable: this tier needs its remote-write
//!   receiver). Debian's Prometheus (2.42) serves, not the image's 3.14.
//!
//! The binaries: `TEMPO_BIN` and `LOKI_BIN` (`.ci/run` unpacks them from
//! `../shared/bin`; the official release binaries of the pinned versions work too);
//! `PROMETHEUS_BIN` or `prometheus` on `PATH`.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use serde_yaml::Value;
use test_harness::{ChildProcess, HarnessResult, free_port};

use crate::repo_file;

/// One running backend.
#[derive(Debug)]
pub struct Backend {
    /// The process (killed on drop).
    pub process: ChildProcess,
    /// Its HTTP API on 127.0.0.1.
    pub http_port: u16,
    /// Its OTLP/gRPC receiver, if it has one.
    pub otlp_grpc_port: Option<u16>,
}

impl Backend {
    /// `http://127.0.0.1:<http_port>`.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.http_port)
    }
}

/// Tempo, Loki and Prometheus, each in its own temp dir.
#[derive(Debug)]
pub struct RealBackends {
    /// Traces; remote-writes its service graph and span metrics to `prometheus`.
    pub tempo: Backend,
    /// Logs over OTLP/HTTP at `/otlp`.
    pub loki: Backend,
    /// Metrics remote-written by Tempo.
    pub prometheus: Backend,
    _dir: tempfile::TempDir,
}

/// The binaries named by the environment, or `None` (the tier is skipped).
pub fn binaries() -> Option<(PathBuf, PathBuf)> {
    let var = |name: &str| std::env::var_os(name).filter(|v| !v.is_empty()).map(PathBuf::from);
    Some((var("TEMPO_BIN")?, var("LOKI_BIN")?))
}

impl RealBackends {
    /// Starts the three and waits until each answers `/ready`.
    pub async fn start(tempo_bin: &Path, loki_bin: &Path) -> HarnessResult<Self> {
        let dir = tempfile::tempdir().map_err(|e| format!("temp dir: {e}"))?;
        let prometheus = start_prometheus(dir.path())?;
        let tempo = start_tempo(tempo_bin, dir.path(), prometheus.http_port)?;
        let loki = start_loki(loki_bin, dir.path())?;
        let mut backends = Self { tempo, loki, prometheus, _dir: dir };
        for (backend, ready) in
            [(&mut backends.prometheus, "/-/ready"), (&mut backends.tempo, "/ready"), (&mut backends.loki, "/ready")]
        {
            wait_ready(backend, ready).await?;
        }
        Ok(backends)
    }

    /// `OTEL_*` settings that send traces to Tempo (gRPC) and logs to Loki (OTLP/HTTP);
    /// metrics stay with the test's receiver.
    pub fn export_env(&self) -> Vec<(String, String)> {
        let tempo = format!("http://127.0.0.1:{}", self.tempo.otlp_grpc_port.unwrap_or_default());
        [
            ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", tempo),
            ("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "grpc".to_owned()),
            ("OTEL_EXPORTER_OTLP_LOGS_ENDPOINT", format!("{}/otlp/v1/logs", self.loki.url())),
            ("OTEL_EXPORTER_OTLP_LOGS_PROTOCOL", "http/protobuf".to_owned()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect()
    }
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

fn start_tempo(bin: &Path, dir: &Path, prometheus: u16) -> HarnessResult<Backend> {
    let (http, grpc, otlp_grpc, otlp_http) = (free_port(), free_port(), free_port(), free_port());
    let config = tempo_config(&dir.join("tempo"), http, grpc, otlp_grpc, otlp_http, prometheus)?;
    let file = write_yaml(dir, "tempo.yaml", &config)?;
    let mut cmd = Command::new(bin);
    cmd.arg(format!("-config.file={}", file.display()));
    Ok(Backend { process: ChildProcess::spawn("tempo", cmd)?, http_port: http, otlp_grpc_port: Some(otlp_grpc) })
}

fn start_loki(bin: &Path, dir: &Path) -> HarnessResult<Backend> {
    let (http, grpc) = (free_port(), free_port());
    let config = loki_config(&dir.join("loki"), http, grpc)?;
    let file = write_yaml(dir, "loki.yaml", &config)?;
    let mut cmd = Command::new(bin);
    cmd.arg(format!("-config.file={}", file.display()));
    Ok(Backend { process: ChildProcess::spawn("loki", cmd)?, http_port: http, otlp_grpc_port: None })
}

fn start_prometheus(dir: &Path) -> HarnessResult<Backend> {
    let bin = std::env::var_os("PROMETHEUS_BIN").map_or_else(|| PathBuf::from("prometheus"), PathBuf::from);
    let compose = read_yaml("docker-compose.yml")?;
    let http = free_port();
    let mut cmd = Command::new(bin);
    for flag in compose["services"]["prometheus"]["command"].as_sequence().into_iter().flatten() {
        let flag = flag.as_str().unwrap_or_default();
        match flag.split_once('=').map(|(name, _)| name) {
            Some("--config.file") => {
                cmd.arg(format!("--config.file={}", repo_file("prometheus/prometheus.yml").display()))
            }
            Some("--storage.tsdb.path") => cmd.arg(format!("--storage.tsdb.path={}", dir.join("prometheus").display())),
            _ => cmd.arg(flag),
        };
    }
    cmd.arg(format!("--web.listen-address=127.0.0.1:{http}"));
    let process = ChildProcess::spawn("prometheus", cmd)
        .map_err(|e| format!("{e} (Debian's prometheus package; scripts/test-deps.sh installs it)"))?;
    Ok(Backend { process, http_port: http, otlp_grpc_port: None })
}

/// Waits (up to a minute: Loki's `/ready` says 503 for its first seconds) for 200.
async fn wait_ready(backend: &mut Backend, path: &str) -> HarnessResult<()> {
    let http = reqwest::Client::builder().timeout(Duration::from_secs(2)).build().map_err(|e| e.to_string())?;
    let url = format!("{}{path}", backend.url());
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if http.get(&url).send().await.is_ok_and(|r| r.status().is_success()) {
            return Ok(());
        }
        if let Some(status) = backend.process.exit_status() {
            return Err(format!("{url}: exited ({status}) with the project's config:\n{}", backend.process.output()));
        }
        if Instant::now() > deadline {
            return Err(format!("{url} not ready within 60 s:\n{}", backend.process.output()));
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

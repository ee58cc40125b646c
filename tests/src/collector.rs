//! The real OpenTelemetry Collector: the binary `scripts/build-collector.sh` builds from
//! `otel/builder.yaml` (the compose image's release), and [`rewrite`], the one place that
//! turns the project's `otel/collector.yaml` into a config for this machine.
//!
//! **The rewrite, all of it**: listen addresses (OTLP gRPC and HTTP, the syslog receiver,
//! the health check, the Prometheus exporter, the collector's own metrics) to free
//! loopback ports; the Tempo and Loki endpoints to what stands in for them; the
//! file-storage directory to a temp dir. Everything else is the file as compose mounts it.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::json;
use serde_yaml::Value;

use crate::repo_file;

/// The collector binary, built (or found built) by `scripts/build-collector.sh`; `None`
/// where Go is missing (the tests print "skipped").
pub fn binary() -> Option<PathBuf> {
    if let Some(path) = std::env::var_os("OTELCOL_BIN").filter(|v| !v.is_empty()) {
        return Some(PathBuf::from(path));
    }
    let out = Command::new("bash").arg(repo_file("scripts/build-collector.sh")).output().ok()?;
    let path = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    (out.status.success() && !path.is_empty()).then(|| repo_file(&path))
}

/// Where the rewritten config listens and sends.
#[derive(Debug, Clone)]
pub struct Endpoints {
    /// OTLP/gRPC receiver port.
    pub otlp_grpc: u16,
    /// OTLP/HTTP receiver port.
    pub otlp_http: u16,
    /// The syslog (UDP) receiver's port.
    pub syslog: u16,
    /// The health check extension's port (`/ready`).
    pub health: u16,
    /// The Prometheus exporter's port.
    pub prometheus: u16,
    /// The collector's own metrics.
    pub telemetry: u16,
    /// Tempo's OTLP/gRPC `host:port`.
    pub tempo: String,
    /// Loki's OTLP base URL (the exporter appends `/v1/logs`).
    pub loki: String,
    /// The file-storage directory.
    pub queue_dir: PathBuf,
}

impl Endpoints {
    /// Every listener on a free loopback port, sending to `tempo` (OTLP/gRPC `host:port`)
    /// and `loki` (OTLP/HTTP base URL), queueing in `queue_dir`.
    pub fn free_ports(tempo: String, loki: String, queue_dir: PathBuf) -> Self {
        use test_harness::free_port;
        Self {
            otlp_grpc: free_port(),
            otlp_http: free_port(),
            syslog: free_port(),
            health: free_port(),
            prometheus: free_port(),
            telemetry: free_port(),
            tempo,
            loki,
            queue_dir,
        }
    }
}

/// `otel/collector.yaml` with the listed keys rewritten (see the module docs).
pub fn rewrite(config: &str, e: &Endpoints) -> Result<String, String> {
    let local = |port: u16| Value::from(format!("127.0.0.1:{port}"));
    let queue_dir = Value::from(e.queue_dir.display().to_string());
    let mut changes = listeners(e);
    changes.extend([
        (&["receivers", "udp_log/nats", "listen_address"][..], local(e.syslog)),
        (&["extensions", "file_storage/queue", "directory"][..], queue_dir),
        (&["exporters", "otlp_grpc/tempo", "endpoint"][..], Value::from(e.tempo.clone())),
        (&["exporters", "otlp_http/loki", "endpoint"][..], Value::from(e.loki.clone())),
    ]);
    set_all(config, &changes)
}

/// The cluster profile's `otel/agent.yaml` for this machine: like [`rewrite`], and its
/// `load_balancing` exporter's DNS resolver (compose's `otel-gateway` name, one address
/// per replica) becomes the static resolver of the same exporter listing `gateways`:
/// loopback has no name resolving to two addresses.
pub fn rewrite_agent(config: &str, e: &Endpoints, gateways: &[String]) -> Result<String, String> {
    let local = |port: u16| Value::from(format!("127.0.0.1:{port}"));
    let mut resolver = serde_yaml::Mapping::new();
    let hostnames: Vec<Value> = gateways.iter().map(|g| Value::from(g.clone())).collect();
    resolver.insert(
        "static".into(),
        Value::Mapping([("hostnames".into(), Value::Sequence(hostnames))].into_iter().collect()),
    );
    let mut changes = listeners(e);
    changes.extend([
        (&["receivers", "udp_log/nats", "listen_address"][..], local(e.syslog)),
        (&["extensions", "file_storage/queue", "directory"][..], Value::from(e.queue_dir.display().to_string())),
        (&["exporters", "load_balancing", "resolver"][..], Value::Mapping(resolver)),
        (&["exporters", "otlp_http/loki", "endpoint"][..], Value::from(e.loki.clone())),
    ]);
    set_all(config, &changes)
}

/// The cluster profile's `otel/gateway.yaml` for this machine (OTLP/gRPC in only; no
/// queue on disk).
pub fn rewrite_gateway(config: &str, e: &Endpoints) -> Result<String, String> {
    let mut changes: Vec<(&[&str], Value)> = listeners(e)
        .into_iter()
        .filter(|(path, _)| *path != ["receivers", "otlp", "protocols", "http", "endpoint"])
        .collect();
    changes.push((&["exporters", "otlp_grpc/tempo", "endpoint"][..], Value::from(e.tempo.clone())));
    set_all(config, &changes)
}

/// The listen addresses every config has: OTLP, health check, Prometheus exporter, the
/// collector's own metrics.
fn listeners(e: &Endpoints) -> Vec<(&'static [&'static str], Value)> {
    let local = |port: u16| Value::from(format!("127.0.0.1:{port}"));
    const READER_HOST: &[&str] =
        &["service", "telemetry", "metrics", "readers", "0", "pull", "exporter", "prometheus", "host"];
    const READER_PORT: &[&str] =
        &["service", "telemetry", "metrics", "readers", "0", "pull", "exporter", "prometheus", "port"];
    vec![
        (&["receivers", "otlp", "protocols", "grpc", "endpoint"][..], local(e.otlp_grpc)),
        (&["receivers", "otlp", "protocols", "http", "endpoint"][..], local(e.otlp_http)),
        (&["extensions", "health_check", "endpoint"][..], local(e.health)),
        (&["exporters", "prometheus", "endpoint"][..], local(e.prometheus)),
        (READER_HOST, Value::from("127.0.0.1")),
        (READER_PORT, Value::from(e.telemetry)),
    ]
}

/// `config` with the value at each path replaced (a path that does not exist is an
/// error: a renamed key must not silently keep its compose value). A numeric segment
/// indexes a sequence.
fn set_all(config: &str, changes: &[(&[&str], Value)]) -> Result<String, String> {
    let mut c: Value = serde_yaml::from_str(config).map_err(|err| err.to_string())?;
    for (path, value) in changes {
        let mut node = &mut c;
        for key in *path {
            let next = match key.parse::<usize>() {
                Ok(index) => node.get_mut(index),
                Err(_) => node.get_mut(*key),
            };
            node = next.ok_or_else(|| format!("no {} in the config", path.join(".")))?;
        }
        *node = value.clone();
    }
    serde_yaml::to_string(&c).map_err(|err| err.to_string())
}

/// `otelcol validate` of a config file: the collector's own verdict (every component
/// known, every setting accepted), without starting it.
pub fn validate(binary: &Path, config: &Path) -> Result<(), String> {
    let out = Command::new(binary)
        .arg("validate")
        .arg(format!("--config={}", config.display()))
        .env("TAIL_SAMPLING_PERCENTAGE", "100")
        .output()
        .map_err(|e| e.to_string())?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)))
    }
}

/// Every key of the attribute policy's list (shared/telemetry/src/policy.rs), in the
/// shapes services and libraries write them.
pub const SENSITIVE: &[&str] = &[
    "token",
    "auth.token",
    "id_token",
    "access_token",
    "refresh_token",
    "tokens",
    "password",
    "user.password",
    "passwd",
    "pwd",
    "secret",
    "client_secret",
    "jwt",
    "user_jwt",
    "seed",
    "xkey.seed",
    "nkey",
    "user_nkey",
    "xkey",
    "authorization",
    "http.request.header.authorization",
    "cookie",
    "credential",
    "credentials",
    "apikey",
    "api_key",
    "x-api-key",
    "private",
    "private_key",
    "body",
    "payload",
    "text",
    "chat.text",
];
/// Keys that must survive everywhere.
pub const KEPT: &[&str] = &["enduser.id", "chat.room"];
/// Keys of the conventions with a sensitive segment that survive on spans (the only
/// place the services set them): put back after the deletion.
pub const KEPT_ON_SPANS: &[&str] = &["db.query.text", "messaging.message.body.size"];

/// `key = "value-of-<key>"` attributes in OTLP/JSON.
fn attributes(keys: &[&str]) -> serde_json::Value {
    keys.iter().map(|k| json!({ "key": k, "value": { "stringValue": format!("value-of-{k}") } })).collect()
}

/// An OTLP/JSON span (trace id [`PROBE_TRACE_ID`], status ERROR so tail sampling keeps it,
/// with an `exception` event) and a log record (body `probe`) of service
/// `redaction-probe`, each carrying every key of [`SENSITIVE`], [`KEPT`] and
/// [`KEPT_ON_SPANS`] as `value-of-<key>`, on the resource too.
pub fn redaction_probe() -> (serde_json::Value, serde_json::Value) {
    let every: Vec<&str> = SENSITIVE.iter().chain(KEPT).chain(KEPT_ON_SPANS).copied().collect();
    let mut resource_attributes = attributes(SENSITIVE);
    if let Some(list) = resource_attributes.as_array_mut() {
        list.push(json!({ "key": "service.name", "value": { "stringValue": "redaction-probe" } }));
    }
    let resource = json!({ "attributes": resource_attributes });
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(1);
    let traces = json!({ "resourceSpans": [{ "resource": resource, "scopeSpans": [{ "spans": [{
        "traceId": PROBE_TRACE_ID, "spanId": "eee19b7ec3c1b174", "name": "probe",
        "kind": 1, "startTimeUnixNano": (now - 1_000_000).to_string(), "endTimeUnixNano": now.to_string(),
        "attributes": attributes(&every),
        "events": [{ "name": "exception", "timeUnixNano": now.to_string(), "attributes": attributes(&every) }],
        "status": { "code": 2, "message": "probe" },
    }]}]}]});
    let logs = json!({ "resourceLogs": [{ "resource": resource, "scopeLogs": [{ "logRecords": [{
        "timeUnixNano": now.to_string(), "severityText": "INFO", "body": { "stringValue": "probe" },
        "attributes": attributes(&every),
    }]}]}]});
    (traces, logs)
}

/// The redaction probe's trace id.
pub const PROBE_TRACE_ID: &str = "5b8efff798038103d269b633813fc60c";

#[cfg(test)]
mod tests {
    use super::*;

    /// Every leaf of a YAML document as `path = value`.
    fn leaves(value: &Value, path: &str, out: &mut Vec<String>) {
        match value {
            Value::Mapping(map) => {
                for (k, v) in map {
                    leaves(v, &format!("{path}.{}", k.as_str().unwrap_or_default()), out);
                }
            }
            Value::Sequence(seq) => {
                for (i, v) in seq.iter().enumerate() {
                    leaves(v, &format!("{path}[{i}]"), out);
                }
            }
            other => out.push(format!("{path} = {}", serde_yaml::to_string(other).unwrap_or_default().trim())),
        }
    }

    #[test]
    fn only_addresses_endpoints_and_the_queue_directory_change() {
        let original = std::fs::read_to_string(repo_file("otel/collector.yaml")).expect("collector.yaml");
        let endpoints = Endpoints {
            otlp_grpc: 1,
            otlp_http: 2,
            syslog: 3,
            health: 4,
            prometheus: 5,
            telemetry: 6,
            tempo: "127.0.0.1:7".into(),
            loki: "http://127.0.0.1:8/otlp".into(),
            queue_dir: PathBuf::from("/tmp/q"),
        };
        let rewritten = rewrite(&original, &endpoints).expect("rewrite");
        let (mut before, mut after) = (Vec::new(), Vec::new());
        leaves(&serde_yaml::from_str(&original).expect("yaml"), "", &mut before);
        leaves(&serde_yaml::from_str(&rewritten).expect("yaml"), "", &mut after);
        let changed: Vec<&String> = after.iter().filter(|l| !before.contains(l)).collect();
        let expected = [
            ".extensions.health_check.endpoint = 127.0.0.1:4",
            ".extensions.file_storage/queue.directory = /tmp/q",
            ".receivers.otlp.protocols.grpc.endpoint = 127.0.0.1:1",
            ".receivers.otlp.protocols.http.endpoint = 127.0.0.1:2",
            ".receivers.udp_log/nats.listen_address = 127.0.0.1:3",
            ".exporters.otlp_grpc/tempo.endpoint = 127.0.0.1:7",
            ".exporters.prometheus.endpoint = 127.0.0.1:5",
            ".exporters.otlp_http/loki.endpoint = http://127.0.0.1:8/otlp",
            ".service.telemetry.metrics.readers[0].pull.exporter.prometheus.host = 127.0.0.1",
            ".service.telemetry.metrics.readers[0].pull.exporter.prometheus.port = 6",
        ];
        let mut changed: Vec<&str> = changed.iter().map(|s| s.as_str()).collect();
        let mut expected = expected.to_vec();
        changed.sort();
        expected.sort();
        assert_eq!(changed, expected);
        assert_eq!(before.len(), after.len(), "no key added or removed");
    }
}

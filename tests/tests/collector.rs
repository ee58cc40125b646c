//! The real OpenTelemetry Collector (issue 20), built from `otel/builder.yaml` at the
//! compose image's release: it accepts the project's three configs, it has exactly the
//! components they use, and its redaction really removes what the attribute policy
//! names, from spans, events, log records and resources.
//!
//! Needs Go (the collector is built once into `.tools/` by `scripts/build-collector.sh`,
//! run by `scripts/test-deps.sh`); without it each test prints "skipped".

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::json;
use stack_checks::collector::{self, Endpoints};
use stack_checks::{repo_file, yaml};
use test_harness::{ChildProcess, OtlpReceiver, free_port};

const CONFIGS: [&str; 3] = ["otel/collector.yaml", "otel/agent.yaml", "otel/gateway.yaml"];

fn built() -> Option<std::path::PathBuf> {
    let binary = collector::binary();
    if binary.is_none() {
        println!("skipped: no collector (scripts/build-collector.sh needs Go)");
    }
    binary
}

#[test]
fn the_collector_is_built_at_the_compose_release_with_exactly_the_components_the_configs_use() {
    let manifest = yaml("otel/builder.yaml");
    let release = manifest["dist"]["version"].as_str().expect("dist.version").to_owned();
    for file in ["docker-compose.yml", "docker-compose.cluster.yml"] {
        let text = std::fs::read_to_string(repo_file(file)).expect("compose file");
        for line in text.lines().filter(|l| l.contains("image: otel/opentelemetry-collector-contrib")) {
            assert!(line.trim().ends_with(&format!(":{release}")), "{file}: {line} vs the manifest's {release}");
        }
    }
    for kind in ["receivers", "processors", "connectors", "exporters", "extensions"] {
        for module in manifest[kind].as_sequence().expect("components") {
            let gomod = module["gomod"].as_str().expect("gomod");
            assert!(gomod.ends_with(&format!(" v{release}")), "{gomod}: every component at v{release}");
        }
    }
    let Some(binary) = built() else { return };
    let out = Command::new(&binary).arg("components").output().expect("otelcol components");
    let listed: serde_yaml::Value = serde_yaml::from_slice(&out.stdout).expect("components YAML");
    for kind in ["receivers", "processors", "connectors", "exporters", "extensions"] {
        let built: BTreeSet<String> = listed[kind]
            .as_sequence()
            .into_iter()
            .flatten()
            .filter_map(|c| c["name"].as_str().map(str::to_owned))
            .collect();
        let used: BTreeSet<String> = CONFIGS
            .iter()
            .flat_map(|file| {
                yaml(file)[kind]
                    .as_mapping()
                    .into_iter()
                    .flatten()
                    .filter_map(|(id, _)| id.as_str().and_then(|id| id.split('/').next()).map(str::to_owned))
                    .collect::<Vec<_>>()
            })
            .collect();
        assert_eq!(built, used, "{kind}: the collector has exactly what the configs use");
    }
}

#[test]
fn the_real_collector_accepts_every_config() {
    let Some(binary) = built() else { return };
    let dir = tempfile::tempdir().expect("temp dir");
    for file in CONFIGS {
        let text = std::fs::read_to_string(repo_file(file)).expect("config");
        // The queue directory must exist (the compose volume's mount point): the one rewrite.
        let text = text.replace("directory: /var/lib/otelcol", &format!("directory: {}", dir.path().display()));
        let path = dir.path().join(Path::new(file).file_name().expect("name"));
        std::fs::write(&path, text).expect("write");
        collector::validate(&binary, &path).unwrap_or_else(|e| panic!("{file}: the collector refuses it:\n{e}"));
    }
}

/// Every key of the attribute policy's list (shared/telemetry/src/policy.rs), in the
/// shapes services and libraries write them.
const SENSITIVE: &[&str] = &[
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
const KEPT: &[&str] = &["enduser.id", "chat.room"];
/// Keys of the conventions with a sensitive segment that survive on spans (the only
/// place the services set them): put back after the deletion.
const KEPT_ON_SPANS: &[&str] = &["db.query.text", "messaging.message.body.size"];

fn attributes(keys: &[&str]) -> serde_json::Value {
    keys.iter().map(|k| json!({ "key": k, "value": { "stringValue": format!("value-of-{k}") } })).collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn the_real_collector_removes_every_sensitive_key_from_spans_events_logs_and_resources() {
    let Some(binary) = built() else { return };
    let downstream = OtlpReceiver::start().await.expect("stand-in for Tempo and Loki");
    let dir = tempfile::tempdir().expect("temp dir");
    let endpoints = Endpoints {
        otlp_grpc: free_port(),
        otlp_http: free_port(),
        syslog: free_port(),
        health: free_port(),
        prometheus: free_port(),
        telemetry: free_port(),
        tempo: downstream.grpc_endpoint().trim_start_matches("http://").to_owned(),
        loki: downstream.http_endpoint(),
        queue_dir: dir.path().to_path_buf(),
    };
    let config = std::fs::read_to_string(repo_file("otel/collector.yaml")).expect("collector.yaml");
    let path = dir.path().join("collector.yaml");
    std::fs::write(&path, collector::rewrite(&config, &endpoints).expect("rewrite")).expect("write");
    let mut command = Command::new(&binary);
    command.arg(format!("--config={}", path.display())).env("TAIL_SAMPLING_PERCENTAGE", "100");
    let mut process = ChildProcess::spawn("otelcol", command).expect("collector");
    let http = reqwest::Client::new();
    let ready = format!("http://127.0.0.1:{}/ready", endpoints.health);
    let deadline = Instant::now() + Duration::from_secs(30);
    while !http.get(&ready).send().await.is_ok_and(|r| r.status().is_success()) {
        assert!(process.exit_status().is_none(), "the collector exited:\n{}", process.output());
        assert!(Instant::now() < deadline, "collector not ready:\n{}", process.output());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    let every: Vec<&str> = SENSITIVE.iter().chain(KEPT).chain(KEPT_ON_SPANS).copied().collect();
    let mut resource_attributes = attributes(SENSITIVE);
    if let Some(list) = resource_attributes.as_array_mut() {
        list.push(json!({ "key": "service.name", "value": { "stringValue": "redaction-probe" } }));
    }
    let resource = json!({ "attributes": resource_attributes });
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("clock").as_nanos();
    let traces = json!({ "resourceSpans": [{ "resource": resource, "scopeSpans": [{ "spans": [{
        "traceId": "5b8efff798038103d269b633813fc60c", "spanId": "eee19b7ec3c1b174", "name": "probe",
        "kind": 1, "startTimeUnixNano": (now - 1_000_000).to_string(), "endTimeUnixNano": now.to_string(),
        "attributes": attributes(&every),
        "events": [{ "name": "exception", "timeUnixNano": now.to_string(), "attributes": attributes(&every) }],
        // An error: tail sampling keeps it whatever the share.
        "status": { "code": 2, "message": "probe" },
    }]}]}]});
    let logs = json!({ "resourceLogs": [{ "resource": resource, "scopeLogs": [{ "logRecords": [{
        "timeUnixNano": now.to_string(), "severityText": "INFO", "body": { "stringValue": "probe" },
        "attributes": attributes(&every),
    }]}]}]});
    for (signal, body) in [("traces", traces), ("logs", logs)] {
        let url = format!("http://127.0.0.1:{}/v1/{signal}", endpoints.otlp_http);
        let response = http.post(url).json(&body).send().await.expect("post");
        assert!(response.status().is_success(), "{signal}: {}", response.status());
    }

    // Tail sampling holds a trace for decision_wait (20 s) before it is sent on.
    let captured = downstream.wait_for(Duration::from_secs(60), "the probe span and log", |c| {
        let span = c.spans.iter().find(|s| s.name == "probe")?;
        let log = c.logs.iter().find(|l| l.body == "probe")?;
        Some((span.clone(), log.clone(), c.resources.clone()))
    });
    let (span, log, resources) =
        captured.await.unwrap_or_else(|e| panic!("{e}\ncollector output:\n{}", process.output()));
    let event = span.events.iter().find(|e| e.name == "exception").expect("the event");
    for (what, keys, kept) in [
        ("span", span.attributes.keys().cloned().collect::<BTreeSet<_>>(), [KEPT, KEPT_ON_SPANS].concat()),
        ("event", event.attributes.keys().cloned().collect(), KEPT.to_vec()),
        ("log", log.attributes.keys().cloned().collect(), KEPT.to_vec()),
    ] {
        let leaked: Vec<&&str> = SENSITIVE.iter().filter(|k| keys.contains(**k)).collect();
        assert!(leaked.is_empty(), "{what}: sensitive keys passed the collector: {leaked:?}");
        let expected: BTreeSet<String> = kept.iter().map(|k| (*k).to_owned()).collect();
        assert_eq!(keys, expected, "{what}: exactly these survive");
    }
    for resource in resources.iter().filter(|r| r.keys().any(|k| k == "service.name")) {
        let leaked: Vec<&&str> = SENSITIVE.iter().filter(|k| resource.contains_key(**k)).collect();
        assert!(leaked.is_empty(), "resource: sensitive keys passed the collector: {leaked:?}");
    }
    let output = process.output();
    assert!(!output.to_lowercase().contains("deprecated"), "no deprecated component names:\n{output}");
}

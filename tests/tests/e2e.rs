//! `make test-e2e`: the seed scenarios against the running compose stack, read back from
//! Tempo, Loki, Prometheus and Grafana over their HTTP APIs, with the same span-tree
//! assertions as the native tests (the answers decode into the same model types).
//!
//! Needs `make up` (Docker) and the workspace binaries (`make test-e2e` builds them).
//! Every wait is bounded; a failure names the component, the query and what came back.

use std::collections::HashMap;
use std::time::Duration;

use serde_json::Value;
use stack_checks::scenarios::{
    Endpoints, assert_service_graph, assert_traces, assert_worker_logs, get_json, poll, send_seed_scenarios,
};
use test_harness::backends::{prometheus_exemplar_trace_ids, prometheus_vector, tempo_trace};

/// The host ports of the compose stack (`.env` may change them, see README "Ports").
fn url(env: &HashMap<String, String>, variable: &str, default: u16) -> String {
    format!("http://localhost:{}", env.get(variable).cloned().unwrap_or_else(|| default.to_string()))
}

fn dot_env() -> HashMap<String, String> {
    let text = std::fs::read_to_string(stack_checks::repo_file(".env")).expect(".env (make keys / make up)");
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
}

async fn chat_cli(env: &HashMap<String, String>, token: &str, args: Vec<String>) -> Vec<Value> {
    let nats = format!("nats://localhost:{}", env.get("NATS_PORT").map_or("4222", String::as_str));
    let out = tokio::process::Command::new(test_harness::cargo_bin("chat-cli"))
        .args(["--json", "--token", token, "--user", "alice", "--nats-url", &nats])
        .args(&args)
        .env("OTEL_EXPORTER_OTLP_ENDPOINT", url(env, "OTLP_GRPC_PORT", 4317))
        .env("OTEL_SERVICE_NAME", "chat-cli")
        .output()
        .await
        .expect("chat-cli (make test-e2e builds it)");
    assert!(out.status.success(), "chat-cli {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).lines().filter_map(|l| serde_json::from_str(l).ok()).collect()
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "needs the compose stack and Docker: run with `make test-e2e`"]
async fn the_seed_scenarios_read_back_from_tempo_loki_prometheus_and_grafana() {
    let http = reqwest::Client::builder().timeout(Duration::from_secs(10)).build().expect("http client");
    let env = dot_env();
    let grafana = url(&env, "GRAFANA_PORT", 3001);
    let backends = Endpoints {
        tempo: url(&env, "TEMPO_PORT", 3200),
        loki: url(&env, "LOKI_PORT", 3100),
        prometheus: url(&env, "PROMETHEUS_PORT", 9090),
    };

    // 1. Every component answers its health endpoint.
    for (component, url) in [
        ("nats", format!("{}/healthz", url(&env, "NATS_MONITOR_PORT", 8222))),
        ("grafana", format!("{grafana}/api/health")),
        ("tempo", format!("{}/ready", backends.tempo)),
        ("loki", format!("{}/ready", backends.loki)),
        ("prometheus", format!("{}/-/ready", backends.prometheus)),
    ] {
        poll(&format!("{component} healthy at {url}"), || async {
            let response = http.get(&url).send().await.map_err(|e| e.to_string())?;
            Ok(response.status().is_success().then_some(()))
        })
        .await;
    }

    // 2. alice logs in to Keycloak; her token passes the auth callout.
    let token_url = format!("{}/realms/chat/protocol/openid-connect/token", url(&env, "KEYCLOAK_PORT", 8080));
    let form = [
        ("grant_type", "password"),
        ("client_id", "chat-cli"),
        ("username", "alice"),
        ("password", env["CHAT_DEMO_PASSWORD"].as_str()),
    ];
    let token: Value = poll("a token from Keycloak for alice", || async {
        let response = http.post(&token_url).form(&form).send().await.map_err(|e| e.to_string())?;
        if !response.status().is_success() {
            return Err(format!("Keycloak answered {}", response.status()));
        }
        response.json().await.map(Some).map_err(|e| e.to_string())
    })
    .await;
    let token = token["access_token"].as_str().expect("access_token").to_owned();

    // 3-6. The scenarios (make demo turns the worker's demo faults on; so does this test),
    // read back with the assertions the full-stack tier of `make test` uses.
    let status = std::process::Command::new("docker")
        .args(["compose", "up", "-d", "--wait", "persist-worker"])
        .env("DEMO_FAULTS", "true")
        .status()
        .expect("docker compose");
    assert!(status.success(), "restarting the worker with demo faults");
    let sent = send_seed_scenarios(|args| chat_cli(&env, &token, args)).await;
    let plain_trace = assert_traces(&http, &backends.tempo, &sent).await;
    assert_worker_logs(&http, &backends.loki, &sent).await;
    assert_service_graph(&http, &backends.prometheus, &plain_trace).await;
    let _ = std::process::Command::new("docker").args(["compose", "up", "-d", "--wait", "persist-worker"]).status();

    // 7. Prometheus: the service series (through the collector) exist and grow; exemplars
    // lead to real traces.
    let prometheus = &backends.prometheus;
    for series in
        ["messages_persisted_total", "auth_requests_total", "history_requests_total", "traces_span_metrics_calls_total"]
    {
        let url = format!("{prometheus}/api/v1/query?query={series}");
        poll(&format!("Prometheus series {series} ({url})"), || async {
            let values = prometheus_vector(&get_json(&http, &url).await?)?;
            Ok(values.iter().any(|(_, v)| *v > 0.0).then_some(()))
        })
        .await;
    }
    let now =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or_default();
    let url = format!(
        "{prometheus}/api/v1/query_exemplars?query={}&start={}&end={now}",
        stack_checks::EXEMPLAR_SERIES,
        now - 900
    );
    let exemplar_traces = poll(&format!("exemplars ({url})"), || async {
        let ids = prometheus_exemplar_trace_ids(&get_json(&http, &url).await?)?;
        Ok((!ids.is_empty()).then_some(ids))
    })
    .await;
    let linked = poll("an exemplar's trace in Tempo", || async {
        for id in &exemplar_traces {
            let spans = tempo_trace(&get_json(&http, &format!("{}/api/v2/traces/{id}", backends.tempo)).await?)?;
            if !spans.is_empty() {
                return Ok(Some(id.clone()));
            }
        }
        Ok(None)
    })
    .await;
    assert_eq!(linked.len(), 32);

    // 8. Grafana: every provisioned datasource is healthy; every dashboard loads.
    let admin = ("admin", env["GRAFANA_ADMIN_PASSWORD"].clone());
    for uid in ["prometheus", "tempo", "loki"] {
        let url = format!("{grafana}/api/datasources/uid/{uid}/health");
        let response = http.get(&url).basic_auth(admin.0, Some(&admin.1)).send().await.expect("grafana");
        let status = response.status();
        let body = response.text().await.unwrap_or_default();
        assert!(status.is_success() && body.contains("OK"), "datasource {uid}: {status} {body} ({url})");
    }
    for uid in ["service-overview", "messaging"] {
        let url = format!("{grafana}/api/dashboards/uid/{uid}");
        let response = http.get(&url).basic_auth(admin.0, Some(&admin.1)).send().await.expect("grafana");
        assert!(response.status().is_success(), "dashboard {uid}: {} ({url})", response.status());
    }
}

//! `make test-e2e`: the seed scenarios against the running compose stack, read back from
//! Tempo, Loki, Prometheus and Grafana over their HTTP APIs, with the same span-tree
//! assertions as the native tests (the answers decode into the same model types).
//!
//! Needs `make up` (Docker) and the workspace binaries (`make test-e2e` builds them).
//! Every wait is bounded; a failure names the component, the query and what came back.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use serde_json::Value;
use test_harness::backends::{loki_logs, prometheus_exemplar_trace_ids, prometheus_vector, tempo_trace};
use test_harness::model::{AttributesExt as _, SpanKind};
use test_harness::service_graph::ServiceGraph;
use test_harness::trace::{Trace, assert_error, assert_kind};

const GRAFANA: &str = "http://localhost:3001";
const TEMPO: &str = "http://localhost:3200";
const LOKI: &str = "http://localhost:3100";
const PROMETHEUS: &str = "http://localhost:9090";
const KEYCLOAK_TOKEN: &str = "http://localhost:8080/realms/chat/protocol/openid-connect/token";
const POLL: Duration = Duration::from_secs(150);

fn dot_env() -> HashMap<String, String> {
    let text = std::fs::read_to_string(stack_checks::repo_file(".env")).expect(".env (make keys / make up)");
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
}

async fn get_json(http: &reqwest::Client, url: &str) -> Result<Value, String> {
    let response = http.get(url).send().await.map_err(|e| format!("GET {url}: {e}"))?;
    let status = response.status();
    let body = response.text().await.map_err(|e| format!("GET {url}: {e}"))?;
    if !status.is_success() {
        return Err(format!("GET {url}: {status} {body}"));
    }
    serde_json::from_str(&body).map_err(|e| format!("GET {url}: not JSON ({e}): {body}"))
}

/// Polls `check` every 2 s until it returns `Ok(Some)`, for at most [`POLL`].
async fn poll<T, F, Fut>(what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<Option<T>, String>>,
{
    let started = Instant::now();
    loop {
        let last = match check().await {
            Ok(Some(found)) => return found,
            Ok(None) => "not there yet".to_owned(),
            Err(error) => error,
        };
        assert!(started.elapsed() < POLL, "{what}: nothing after {POLL:?}; last: {last}");
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
}

/// Waits until the trace has the named spans and returns it.
async fn trace_with(http: &reqwest::Client, trace_id: &str, names: &[&str]) -> Trace {
    let url = format!("{TEMPO}/api/v2/traces/{trace_id}");
    poll(&format!("Tempo trace {trace_id} with {names:?} ({url})"), || async {
        let spans = tempo_trace(&get_json(http, &url).await?)?;
        let trace = Trace::new(spans);
        Ok(names.iter().all(|n| !trace.named(n).is_empty()).then_some(trace))
    })
    .await
}

async fn chat_cli(token: &str, args: &[&str]) -> Vec<Value> {
    let out = tokio::process::Command::new(test_harness::cargo_bin("chat-cli"))
        .args(["--json", "--token", token, "--user", "alice", "--nats-url", "nats://localhost:4222"])
        .args(args)
        .env("OTEL_EXPORTER_OTLP_ENDPOINT", "http://localhost:4317")
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

    // 1. Every component answers its health endpoint.
    for (component, url) in [
        ("nats", "http://localhost:8222/healthz"),
        ("grafana", "http://localhost:3001/api/health"),
        ("tempo", "http://localhost:3200/ready"),
        ("loki", "http://localhost:3100/ready"),
        ("prometheus", "http://localhost:9090/-/ready"),
    ] {
        poll(&format!("{component} healthy at {url}"), || async {
            let response = http.get(url).send().await.map_err(|e| e.to_string())?;
            Ok(response.status().is_success().then_some(()))
        })
        .await;
    }

    // 2. alice logs in to Keycloak; her token passes the auth callout.
    let form = [
        ("grant_type", "password"),
        ("client_id", "chat-cli"),
        ("username", "alice"),
        ("password", env["CHAT_DEMO_PASSWORD"].as_str()),
    ];
    let token: Value = poll("a token from Keycloak for alice", || async {
        let response = http.post(KEYCLOAK_TOKEN).form(&form).send().await.map_err(|e| e.to_string())?;
        if !response.status().is_success() {
            return Err(format!("Keycloak answered {}", response.status()));
        }
        response.json().await.map(Some).map_err(|e| e.to_string())
    })
    .await;
    let token = token["access_token"].as_str().expect("access_token").to_owned();

    // 3. The scenarios, driven by chat-cli.
    let id = |lines: Vec<Value>| lines[0]["trace_id"].as_str().expect("trace id").to_owned();
    let plain = id(chat_cli(&token, &["send", "general", "e2e plain"]).await);
    let retried = id(chat_cli(&token, &["send", "general", "e2e fail once", "--fault", "fail-once"]).await);
    let slow = id(chat_cli(&token, &["send", "general", "e2e slow", "--fault", "slow"]).await);
    let poison = id(chat_cli(&token, &["send", "general", "e2e poison", "--fault", "poison"]).await);
    let history = id(chat_cli(&token, &["history", "general", "--limit", "5"]).await);

    // 4. Tempo: the same span trees as the native tests.
    let names = ["publish chat.msg.*.*", "nats ingress chat.msg.*.*", "process chat.msg.*.*", "INSERT chat.messages"];
    let plain_trace = trace_with(&http, &plain, &names).await;
    let trace = &plain_trace;
    let producer = trace.one("publish chat.msg.*.*");
    let consumer = trace.one("process chat.msg.*.*");
    trace.assert_child_of(consumer, producer);
    let hop = trace.one("nats ingress chat.msg.*.*");
    trace.assert_child_of(hop, producer);
    assert_eq!(hop.service_name, "nats-server");
    assert!(hop.event("jetstream.store").is_some(), "{}", trace.tree());
    trace.assert_child_of(trace.one("INSERT chat.messages"), consumer);
    assert_kind(producer, SpanKind::Producer);
    assert_kind(consumer, SpanKind::Consumer);

    let trace = trace_with(&http, &retried, &["nak chat.msg.*.*", "INSERT chat.messages"]).await;
    let attempts = trace.named("process chat.msg.*.*");
    assert_eq!(attempts.len(), 2, "{}", trace.tree());
    assert_eq!(attempts[1].attributes.bool("messaging.message_redelivered"), Some(true));

    let trace = trace_with(&http, &slow, &["INSERT chat.messages"]).await;
    assert_error(trace.named("process chat.msg.*.*")[0], "Timeout");

    let trace = trace_with(&http, &poison, &["publish chat.dlq.*", "term chat.msg.*.*"]).await;
    trace.assert_child_of(trace.one("publish chat.dlq.*"), trace.one("process chat.msg.*.*"));

    let trace =
        trace_with(&http, &history, &["request chat.history.*", "process chat.history.*", "SELECT chat.messages"])
            .await;
    trace.assert_child_of(trace.one("process chat.history.*"), trace.one("request chat.history.*"));

    // 5. Loki: the worker's log lines for the retried message's trace.
    let query = format!(r#"{{service_name="persist-worker"}} | trace_id="{retried}""#);
    let url = reqwest::Url::parse_with_params(
        &format!("{LOKI}/loki/api/v1/query_range"),
        &[("query", query.as_str()), ("since", "15m"), ("limit", "100")],
    )
    .expect("url");
    let logs = poll(&format!("Loki lines for trace {retried}: {query}"), || async {
        let logs = loki_logs(&get_json(&http, url.as_str()).await?)?;
        Ok((!logs.is_empty()).then_some(logs))
    })
    .await;
    assert!(logs.iter().any(|l| l.body == "will be redelivered"), "{logs:?}");

    // 6. Prometheus: the service series exist and grow; exemplars lead to real traces.
    for series in
        ["messages_persisted_total", "auth_requests_total", "history_requests_total", "traces_span_metrics_calls_total"]
    {
        let url = format!("{PROMETHEUS}/api/v1/query?query={series}");
        poll(&format!("Prometheus series {series} ({url})"), || async {
            let values = prometheus_vector(&get_json(&http, &url).await?)?;
            Ok(values.iter().any(|(_, v)| *v > 0.0).then_some(()))
        })
        .await;
    }
    let now =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or_default();
    let url = format!(
        "{PROMETHEUS}/api/v1/query_exemplars?query=traces_span_metrics_duration_milliseconds_bucket&start={}&end={now}",
        now - 900
    );
    let exemplar_traces = poll(&format!("exemplars ({url})"), || async {
        let ids = prometheus_exemplar_trace_ids(&get_json(&http, &url).await?)?;
        Ok((!ids.is_empty()).then_some(ids))
    })
    .await;
    let linked = poll("an exemplar's trace in Tempo", || async {
        for id in &exemplar_traces {
            let spans = tempo_trace(&get_json(&http, &format!("{TEMPO}/api/v2/traces/{id}")).await?)?;
            if !spans.is_empty() {
                return Ok(Some(id.clone()));
            }
        }
        Ok(None)
    })
    .await;
    assert_eq!(linked.len(), 32);

    // 6b. Prometheus: Tempo's service graph has the edges the model predicts for the
    // plain message's trace (chat-cli -> persist-worker, persist-worker -> postgres).
    let graph = ServiceGraph::of(plain_trace.spans());
    assert!(graph.conflicts.is_empty(), "{:?}", graph.conflicts);
    assert!(graph.edges.len() >= 2, "{graph:?}");
    for edge in graph.edges.keys() {
        let selector = format!(
            r#"traces_service_graph_request_total{{client="{}",server="{}",connection_type="{}"}}"#,
            edge.client,
            edge.server,
            edge.connection_type.label()
        );
        let url = reqwest::Url::parse_with_params(&format!("{PROMETHEUS}/api/v1/query"), &[("query", &selector)])
            .expect("url");
        poll(&format!("service-graph edge {selector} ({url})"), || async {
            let values = prometheus_vector(&get_json(&http, url.as_str()).await?)?;
            Ok(values.iter().any(|(_, v)| *v > 0.0).then_some(()))
        })
        .await;
    }

    // 7. Grafana: every provisioned datasource is healthy; every dashboard loads.
    let admin = ("admin", env["GRAFANA_ADMIN_PASSWORD"].clone());
    for uid in ["prometheus", "tempo", "loki"] {
        let url = format!("{GRAFANA}/api/datasources/uid/{uid}/health");
        let response = http.get(&url).basic_auth(admin.0, Some(&admin.1)).send().await.expect("grafana");
        let status = response.status();
        let body = response.text().await.unwrap_or_default();
        assert!(status.is_success() && body.contains("OK"), "datasource {uid}: {status} {body} ({url})");
    }
    for uid in ["service-overview", "messaging"] {
        let url = format!("{GRAFANA}/api/dashboards/uid/{uid}");
        let response = http.get(&url).basic_auth(admin.0, Some(&admin.1)).send().await.expect("grafana");
        assert!(response.status().is_success(), "dashboard {uid}: {} ({url})", response.status());
    }
}

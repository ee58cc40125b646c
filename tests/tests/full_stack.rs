//! The real-backend tier: real Tempo 3.0.3 and Loki 3.7.6 started with the project's own
//! `tempo/tempo.yaml` and `loki/loki.yaml` (ports and data paths rewritten, see
//! `stack_checks::real_backends`), a real Prometheus taking Tempo's remote write, the real
//! services and chat-cli exporting straight to them, and the seed scenarios read back
//! with the assertion code of `make test-e2e`.
//!
//! What it cannot include: the OpenTelemetry Collector and Grafana have no binary here, so
//! services export to Tempo and Loki directly (no tail sampling, span metrics or
//! redaction of the collector) and Grafana's datasources and dashboards are checked
//! against its published schema instead (`tests/schemas`).
//!
//! Needs `TEMPO_BIN` and `LOKI_BIN` (`.ci/run` sets them from `../shared/bin`); without
//! them it prints one "skipped" line and passes.

use std::collections::BTreeSet;
use std::time::Duration;

use stack_checks::TEMPO_SERIES;
use stack_checks::real_backends::{RealBackends, binaries};
use stack_checks::scenarios::{
    assert_cli_traces, assert_dashboard_queries, assert_service_graph, assert_traces, assert_worker_logs, get_json,
    poll, send_seed_scenarios_as, series_names,
};
use test_harness::ChatStack;
use test_harness::oidc::TestIssuer;

#[tokio::test(flavor = "multi_thread")]
async fn the_seed_scenarios_read_back_from_real_tempo_loki_and_prometheus() {
    let Some((tempo_bin, loki_bin)) = binaries() else {
        eprintln!("skipped: set TEMPO_BIN and LOKI_BIN (real Tempo 3.0.3 and Loki 3.7.6 binaries) to run this tier");
        return;
    };
    let backends = RealBackends::start(&tempo_bin, &loki_bin).await.expect("Tempo, Loki and Prometheus");
    let mut stack = ChatStack::start_secured().await.expect("secured stack");
    let export: Vec<(String, String)> = backends.export_env();
    stack.export_to(&export.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect::<Vec<_>>());
    let issuer = TestIssuer::start().await.expect("issuer");
    let _auth = stack.spawn_service("auth-service", &[("OIDC_ISSUER", issuer.issuer())]).await.expect("auth");
    let worker_env = [("DEMO_FAULTS", "true"), ("NAK_DELAY", "200ms"), ("PROCESSING_DEADLINE", "1s")];
    let _worker = stack.spawn_service("persist-worker", &worker_env).await.expect("worker");
    let _history = stack.spawn_service("history-service", &[]).await.expect("history");
    let _bridge =
        stack.spawn_service("nats-trace-bridge", &[("OTEL_SERVICE_NAME", "nats-server")]).await.expect("bridge");

    let token = issuer.token(&issuer.claims("alice", &["chat-user"]));
    let stack = &stack;
    let sent = send_seed_scenarios_as(stack, &token).await;

    let http = reqwest::Client::builder().timeout(Duration::from_secs(10)).build().expect("http client");
    let plain = assert_traces(&http, &backends.tempo.url(), &sent).await;
    assert_worker_logs(&http, &backends.loki.url(), &sent).await;
    assert_service_graph(&http, &backends.prometheus.url(), &plain).await;

    // The series Tempo generates are the ones the dashboards may query (TEMPO_SERIES).
    let generated = poll("Tempo's span metrics in Prometheus", || async {
        let names = series_names(&http, &backends.prometheus.url(), "traces_").await?;
        Ok(names.iter().any(|n| n.starts_with("traces_spanmetrics_")).then_some(names))
    })
    .await;
    let generated: BTreeSet<String> = generated
        .into_iter()
        .map(|n| ["_bucket", "_sum", "_count"].iter().find_map(|s| n.strip_suffix(s).map(str::to_owned)).unwrap_or(n))
        .collect();
    let listed: BTreeSet<String> = TEMPO_SERIES.iter().map(|s| (*s).to_owned()).collect();
    assert_eq!(generated, listed, "TEMPO_SERIES vs what Tempo 3.0.3 remote-wrote");

    // chat-cli trace prints each scenario's tree as real Tempo holds it.
    let tempo_url = backends.tempo.url();
    assert_cli_traces(&sent, stack, &tempo_url, |id| {
        let (http, url) = (http.clone(), format!("{tempo_url}/api/v2/traces/{id}"));
        async move {
            let body = get_json(&http, &url).await.unwrap_or_default();
            test_harness::backends::tempo_trace(&body).unwrap_or_default()
        }
    })
    .await;

    // What the dashboards ask Tempo and Loki (and Prometheus, for Tempo's series) answers.
    assert_dashboard_queries(&http, &backends.tempo.url(), &backends.loki.url(), &backends.prometheus.url()).await;

    // Prometheus loaded the project's alert rules (prometheus.yml's rule_files).
    let url = format!("{}/api/v1/rules?type=alert", backends.prometheus.url());
    let rules: serde_json::Value = http.get(&url).send().await.expect("rules").json().await.expect("rules JSON");
    let loaded: BTreeSet<String> = rules["data"]["groups"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|g| g["rules"].as_array().into_iter().flatten())
        .filter_map(|r| r["name"].as_str().map(str::to_owned))
        .collect();
    let defined: BTreeSet<String> = stack_checks::alert_exprs().into_iter().map(|r| r.alert).collect();
    assert_eq!(loaded, defined, "alerts the real Prometheus loaded from prometheus/rules/alerts.yml");
}

//! The full-stack tier (issue 20): the real services and chat-cli export to the real
//! OpenTelemetry Collector 0.159 with `otel/collector.yaml` (tail sampling at 50 %, span
//! metrics, redaction), which sends to real Tempo 3.0.3 and Loki 3.7.6; the real
//! Prometheus 3.14 scrapes it with `prometheus/prometheus.yml` and evaluates
//! `prometheus/rules/alerts.yml`. Only hostnames, ports and data paths are rewritten
//! (`stack_checks::real_backends`). Then, with the assertion code of `make test-e2e`:
//!
//! 1. the seed scenarios read back from Tempo and Loki through the collector: every
//!    error, timeout and dead-letter trace kept, about half of the plain ones;
//! 2. span metrics whose exemplars each open a trace in Tempo; every dashboard query
//!    returns data (a short allow-list of panels that may be empty, with reasons);
//! 3. every alert fires in its scenario, evaluated by the real Prometheus on real series,
//!    and stays quiet otherwise: idle; worker and history-service stopped, auth-service
//!    restarted, Tempo and Loki stopped, under make demo's load, with a bridge sampling nothing
//!    and bad logins; then the collector killed; then nats-server restarted three times.
//!
//! The test OIDC issuer signs the logins here (tests/tests/keycloak.rs runs the real
//! Keycloak). Needs `TEMPO_BIN` and `LOKI_BIN` (`.ci/run` sets them from `../shared/bin`)
//! and Go (collector and Prometheus); without them it prints one "skipped" line.

use std::collections::BTreeSet;
use std::time::Duration;

use stack_checks::alert_watch::{stay_quiet, watch};
use stack_checks::real_backends::{RealBackends, binaries};
use stack_checks::scenarios::{
    PrometheusQueries, Sent, assert_cli_traces, assert_dashboard_queries, assert_service_graph, assert_traces,
    assert_worker_logs, get_json, poll, send_seed_scenarios_as, series_names,
};
use stack_checks::{COLLECTOR_SERIES, TEMPO_SERIES};
use test_harness::ChatStack;
use test_harness::oidc::TestIssuer;

/// The collector's `TAIL_SAMPLING_PERCENTAGE` here: below 100 %, so the tier sees
/// sampling decide.
const SAMPLING_PERCENTAGE: u32 = 50;
/// Plain messages sent to measure the share kept.
const PLAIN: usize = 40;

/// Dashboard queries that may be empty after the scenarios, and why: each is a series
/// created at its first event, and the scenarios of phase 1 have none.
const MAY_BE_EMPTY: &[&str] = &[
    // The collector's failure counters, from an exporter's first failed send.
    "otelcol_exporter_send_failed_",
    // The SDK's failed exports, labelled by error type from the first failure.
    r#"error_type!="""#,
    // Spans dropped because the export queue was full.
    r#"error_type="queue_full""#,
];

#[tokio::test(flavor = "multi_thread")]
async fn the_whole_pipeline_keeps_every_trace_it_should_and_fires_every_alert_in_its_scenario_only() {
    let Some((tempo_bin, loki_bin)) = binaries() else {
        println!("skipped: set TEMPO_BIN and LOKI_BIN (real Tempo 3.0.3 and Loki 3.7.6 binaries) to run this tier");
        return;
    };
    let mut backends = RealBackends::start(&tempo_bin, &loki_bin, SAMPLING_PERCENTAGE)
        .await
        .expect("collector, Tempo, Loki, Prometheus");
    let mut stack = ChatStack::start_secured().await.expect("secured stack");
    let export = backends.export_env();
    stack.export_to(&export.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect::<Vec<_>>());
    let issuer = TestIssuer::start().await.expect("issuer");
    let auth_env = [("OIDC_ISSUER", issuer.issuer())];
    let mut auth = stack.spawn_service("auth-service", &auth_env).await.expect("auth");
    // A deadline the redelivery meets even on a busy 2-core machine (the slow fault takes twice it).
    let worker_env = [("DEMO_FAULTS", "true"), ("NAK_DELAY", "200ms"), ("PROCESSING_DEADLINE", "3s")];
    let mut worker = stack.spawn_service("persist-worker", &worker_env).await.expect("worker");
    // history-service's spans take the other road (seed 004): published to TELEMETRY,
    // forwarded by otlp-bridge to the real collector's OTLP/HTTP receiver.
    let otlp_http = format!("http://127.0.0.1:{}", backends.collector_ports.otlp_http);
    let bridge_env = [("BRIDGE_ENDPOINT", otlp_http.as_str()), ("BRIDGE_FLUSH_INTERVAL", "1s")];
    let _otlp_bridge = stack.spawn_service("otlp-bridge", &bridge_env).await.expect("otlp-bridge");
    let mut history =
        stack.spawn_service("history-service", &[("OTEL_TRACES_EXPORTER", "nats")]).await.expect("history");
    let _bridge =
        stack.spawn_service("nats-trace-bridge", &[("OTEL_SERVICE_NAME", "nats-server")]).await.expect("bridge");
    let http = reqwest::Client::builder().timeout(Duration::from_secs(10)).build().expect("http client");
    let prometheus = backends.prometheus.url();

    // 1. The seed scenarios, sampling, redaction.
    let (probe_spans, probe_logs) = stack_checks::collector::redaction_probe();
    for (signal, body) in [("traces", probe_spans), ("logs", probe_logs)] {
        let url = format!("http://127.0.0.1:{}/v1/{signal}", backends.collector_ports.otlp_http);
        let response = http.post(url).json(&body).send().await.expect("the redaction probe");
        assert!(response.status().is_success(), "{signal}: {}", response.status());
    }
    let token = issuer.token(&issuer.claims("alice", &["chat-user"]));
    let sent = send_seed_scenarios_as(&stack, &token).await;
    let mut plain = Vec::new();
    for i in 0..PLAIN {
        plain.push(send_as(&stack, &token, &["send", "general", &format!("plain {i}")]).await);
    }
    let mut histories = Vec::new();
    for _ in 0..10 {
        histories.push(send_as(&stack, &token, &["history", "general", "--limit", "5"]).await);
    }
    // decision_wait (20 s) + batching + Tempo's ingestion: a trace not there at 45 s was dropped.
    tokio::time::sleep(Duration::from_secs(45)).await;
    let tempo = backends.tempo.url();
    let kept = kept_traces(&http, &tempo, &plain).await;
    let kept_histories = kept_traces(&http, &tempo, &histories).await;
    println!("tail sampling at {SAMPLING_PERCENTAGE} %: {} of {PLAIN} plain traces kept", kept.len());
    // Binomial(40, 0.5) falls outside 8..=32 with a probability of 4e-5.
    assert!((8..=32).contains(&kept.len()), "{} of {PLAIN} plain traces kept at {SAMPLING_PERCENTAGE} %", kept.len());
    assert!(!kept_histories.is_empty(), "no history trace of 10 kept at {SAMPLING_PERCENTAGE} %");
    // Errors, timeouts and dead letters are kept whatever the share (assert_traces waits for each).
    let sent = Sent { plain: kept[0].clone(), history: kept_histories[0].clone(), ..sent };
    let plain_trace = assert_traces(&http, &tempo, &sent).await;
    assert_worker_logs(&http, &backends.loki.url(), &sent).await;
    assert_service_graph(&http, &prometheus, &plain_trace).await;
    assert_generated_series(&http, &prometheus).await;
    assert_collector_series(&http, &prometheus).await;
    assert_exemplars_open_in_tempo(&http, &prometheus, &tempo).await;
    assert_cli_traces(&sent, &stack, &tempo, |id| {
        let (http, url) = (http.clone(), format!("{tempo}/api/v2/traces/{id}"));
        async move {
            let body = get_json(&http, &url).await.unwrap_or_default();
            test_harness::backends::tempo_trace(&body).unwrap_or_default()
        }
    })
    .await;
    let every = PrometheusQueries::Every { may_be_empty: MAY_BE_EMPTY };
    assert_dashboard_queries(&http, &tempo, &backends.loki.url(), &prometheus, every).await;
    assert_rules_loaded(&http, &prometheus).await;
    assert_trace_to_logs(&http, &backends.loki.url(), &sent.retried).await;
    assert_nothing_sensitive_stored(&http, &tempo, &backends.loki.url()).await;
    // Two idle minutes of a healthy stack: nothing fires but the poison scenario's dead
    // letter (no ServiceDown for an idle service or an ended chat-cli run), and the RED
    // table still shows the run.
    let healthy = |a: &str| a.starts_with("DeadLettersGrowing{");
    stay_quiet(&http, &prometheus, "healthy and idle", healthy, Duration::from_secs(120)).await;
    assert_red_table_after_traffic(&http, &prometheus).await;

    // 2. Worker and history-service gone, auth-service restarted, Tempo and Loki stopped,
    // load on.
    worker.process.kill();
    history.process.kill();
    auth.process.kill();
    auth = stack.spawn_service("auth-service", &auth_env).await.expect("auth restarted");
    backends.tempo.stop();
    backends.loki.stop();
    // make demo's load (its faults too), with a fresh token (the issuer's live 5 minutes).
    let token = issuer.token(&issuer.claims("alice", &["chat-user"]));
    let demo_load = ["load", "--rate", "12", "--duration", "420s", "--rooms", "general,random"];
    let demo_faults = ["--fail-once", "0.05", "--slow", "0.02", "--poison", "0.02"];
    let mut load =
        stack.cli_command(&[&["--token", token.as_str(), "--user", "alice"][..], &demo_load, &demo_faults].concat());
    let mut load = load.spawn().expect("chat-cli load");
    // Meanwhile a second bridge whose head sampler keeps nothing, and logins with a bad
    // token three times a second.
    let sampling_off = [
        ("OTEL_SERVICE_NAME", "nats-server"),
        ("OTEL_TRACES_SAMPLER", "traceidratio"),
        ("OTEL_TRACES_SAMPLER_ARG", "0"),
    ];
    let _unsampled = stack.spawn_service("nats-trace-bridge", &sampling_off).await.expect("a bridge sampling nothing");
    let nats_url = stack.nats.url();
    let bad_logins = tokio::spawn(async move {
        loop {
            let _ =
                async_nats::ConnectOptions::with_token("not-a-token".into()).max_reconnects(0).connect(&nats_url).await;
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
    });
    let outage = [
        "ConsumerLagGrowing{consumer=persist-worker,stream=CHAT}",
        "CollectorFailingToSend{exporter=otlp_grpc/tempo}",
        "CollectorFailingToSend{exporter=otlp_http/loki}",
        "BackendDown{job=tempo}",
        "BackendDown{job=loki}",
        "ServiceDown{job=history-service}",
        "ServiceDown{job=persist-worker}",
        "TraceSamplingOff{job=nats-server}",
        "AuthDenialsSpiking{}",
    ];
    let seen =
        watch(&http, &prometheus, "worker, history, Tempo and Loki down", &outage, healthy, Duration::from_secs(480))
            .await;
    println!("phase 2 alerts: {seen:?}");
    bad_logins.abort();

    // 3. Tempo, Loki and the worker back; the collector killed: CollectorDown and every
    // service's exports failing, and no storm of ServiceDown.
    backends.tempo.start().await.expect("Tempo again");
    backends.loki.start().await.expect("Loki again");
    worker = stack.spawn_service("persist-worker", &worker_env).await.expect("worker again");
    backends.collector.stop();
    let still_firing = |a: &str| healthy(a) || outage.contains(&a);
    let collector_down = ["CollectorDown{job=otel-collector}", "TraceExportFailing{job=every service}"];
    let seen =
        watch(&http, &prometheus, "collector down", &collector_down, still_firing, Duration::from_secs(300)).await;
    backends.collector.start().await.expect("collector again");

    // 4. nats-server restarted three times: each service's connection drops three times.
    for _ in 0..3 {
        stack.nats.stop();
        tokio::time::sleep(Duration::from_secs(2)).await;
        stack.nats.start_again().await.expect("nats-server again");
        tokio::time::sleep(Duration::from_secs(15)).await;
    }
    let before: BTreeSet<String> = seen.iter().cloned().chain(collector_down.iter().map(|a| (*a).to_owned())).collect();
    // Besides what fired before: each service's failed exports of the collector outage,
    // counted once they can reach it again.
    let unstable = |a: &str| {
        before.contains(a) || a.starts_with("NatsConnectionUnstable{") || a.starts_with("TraceExportFailing{job=")
    };
    let nats_restarted = ["NatsConnectionUnstable{job=auth-service}", "NatsConnectionUnstable{job=persist-worker}"];
    watch(&http, &prometheus, "nats-server restarted three times", &nats_restarted, unstable, Duration::from_secs(240))
        .await;
    let _ = load.kill().await;
    drop((auth, worker));
}

/// `chat-cli --json <args>` as alice: the trace id it printed.
async fn send_as(stack: &ChatStack, token: &str, args: &[&str]) -> String {
    let full = [&["--json", "--token", token, "--user", "alice"][..], args].concat();
    let run = stack.cli(&full).await.expect("chat-cli");
    assert_eq!(run.code, Some(0), "chat-cli {args:?}: {}", run.stderr);
    run.json_lines()[0]["trace_id"].as_str().expect("a trace id").to_owned()
}

/// The ids of `traces` Tempo holds.
async fn kept_traces(http: &reqwest::Client, tempo: &str, traces: &[String]) -> Vec<String> {
    let mut kept = Vec::new();
    for id in traces {
        let body = get_json(http, &format!("{tempo}/api/v2/traces/{id}")).await.unwrap_or_default();
        if test_harness::backends::tempo_trace(&body).is_ok_and(|spans| !spans.is_empty()) {
            kept.push(id.clone());
        }
    }
    kept
}

/// The series Tempo generates are the ones the dashboards may query (TEMPO_SERIES), and
/// the collector's span metrics are there too (COLLECTOR_SERIES).
async fn assert_generated_series(http: &reqwest::Client, prometheus: &str) {
    let names = poll("Tempo's and the collector's span metrics in Prometheus", || async {
        let names = series_names(http, prometheus, "traces_").await?;
        let both = names.iter().any(|n| n.starts_with("traces_spanmetrics_"))
            && names.iter().any(|n| n.starts_with("traces_span_metrics_"));
        Ok(both.then_some(names))
    })
    .await;
    let base = |n: &String| {
        ["_bucket", "_sum", "_count"].iter().find_map(|s| n.strip_suffix(s).map(str::to_owned)).unwrap_or(n.clone())
    };
    let (collector, tempo): (BTreeSet<String>, BTreeSet<String>) =
        names.iter().map(base).partition(|n| n.starts_with("traces_span_metrics_"));
    let listed = |list: &[&str]| list.iter().map(|s| (*s).to_owned()).collect::<BTreeSet<_>>();
    assert_eq!(tempo, listed(TEMPO_SERIES), "TEMPO_SERIES vs what Tempo 3.0.3 remote-wrote");
    assert_eq!(collector, listed(COLLECTOR_SERIES), "COLLECTOR_SERIES vs what the collector's span_metrics made");
}

/// The collector's own series the alerts and the Telemetry pipeline dashboard read
/// (COLLECTOR_INTERNAL_SERIES) are in Prometheus under those names, except the failure
/// counters, which a collector creates at an exporter's first failure.
async fn assert_collector_series(http: &reqwest::Client, prometheus: &str) {
    let names: BTreeSet<String> = series_names(http, prometheus, "").await.expect("series names").into_iter().collect();
    let missing: Vec<&&str> = stack_checks::COLLECTOR_INTERNAL_SERIES
        .iter()
        .filter(|n| !n.contains("send_failed") && !names.contains(**n))
        .collect();
    assert!(missing.is_empty(), "collector series the alerts or dashboards use but Prometheus lacks: {missing:?}");
}

/// Issue 27: every exemplar opens a trace. The kept traces' span metrics carry exemplars
/// and each of their trace ids is in Tempo (at 50 %, where half the plain traces are
/// dropped); every span's metrics carry none (most would name dropped traces).
async fn assert_exemplars_open_in_tempo(http: &reqwest::Client, prometheus: &str, tempo: &str) {
    let exemplar_ids = |series: &'static str| async move {
        let url = reqwest::Url::parse_with_params(
            &format!("{prometheus}/api/v1/query_exemplars"),
            &[("query", series), ("start", "0"), ("end", "9999999999")],
        )
        .map_err(|e| e.to_string())?;
        let body = get_json(http, url.as_str()).await?;
        let ids: BTreeSet<String> = test_harness::backends::prometheus_exemplar_trace_ids(&body)?.into_iter().collect();
        Ok::<_, String>(ids)
    };
    let ids = poll("exemplars of the kept traces' span metrics", || async {
        let ids = exemplar_ids(stack_checks::EXEMPLAR_SERIES).await?;
        Ok((!ids.is_empty()).then_some(ids))
    })
    .await;
    let ids: Vec<String> = ids.into_iter().collect();
    // A trace reaches Tempo and the kept span metrics at once; Tempo may answer a little later.
    poll("every exemplar's trace in Tempo", || async {
        let opened = kept_traces(http, tempo, &ids).await;
        let missing: Vec<&String> = ids.iter().filter(|id| !opened.contains(id)).collect();
        match missing.is_empty() {
            true => Ok(Some(())),
            false => Err(format!("{} of {} exemplars name no trace in Tempo: {missing:?}", missing.len(), ids.len())),
        }
    })
    .await;
    println!("exemplars: {} trace ids, every one opens in Tempo", ids.len());
    let every_span = exemplar_ids("traces_span_metrics_duration_milliseconds_bucket").await.expect("exemplars");
    assert!(every_span.is_empty(), "every span's metrics carry exemplars: {every_span:?}");
}

/// Prometheus loaded the project's alert rules (prometheus.yml's rule_files).
async fn assert_rules_loaded(http: &reqwest::Client, prometheus: &str) {
    let rules = get_json(http, &format!("{prometheus}/api/v1/rules?type=alert")).await.expect("rules");
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

/// The redaction probe (every key of the attribute policy's list on a span, its event, a
/// log record and their resource) as real Tempo and Loki stored it: not one sensitive
/// value in what they answer, the kept keys' values there.
async fn assert_nothing_sensitive_stored(http: &reqwest::Client, tempo: &str, loki: &str) {
    use stack_checks::collector::{KEPT, PROBE_TRACE_ID, SENSITIVE};
    let url = format!("{tempo}/api/v2/traces/{PROBE_TRACE_ID}");
    let stored_trace = poll("the redaction probe's trace in Tempo", || async {
        let body = get_json(http, &url).await?;
        let spans = test_harness::backends::tempo_trace(&body)?;
        Ok((!spans.is_empty()).then(|| body.to_string()))
    })
    .await;
    let query = r#"{service_name="redaction-probe"}"#;
    let url = reqwest::Url::parse_with_params(
        &format!("{loki}/loki/api/v1/query_range"),
        &[("query", query), ("since", "30m"), ("limit", "10")],
    )
    .expect("url");
    let stored_log = poll("the redaction probe's log record in Loki", || async {
        let body = get_json(http, url.as_str()).await?;
        let logs = test_harness::backends::loki_logs(&body)?;
        Ok((!logs.is_empty()).then(|| body.to_string()))
    })
    .await;
    for (backend, stored) in [("Tempo", &stored_trace), ("Loki", &stored_log)] {
        let leaked: Vec<&&str> = SENSITIVE.iter().filter(|k| stored.contains(&format!("value-of-{k}\""))).collect();
        assert!(leaked.is_empty(), "{backend} stored the values of {leaked:?}: {stored}");
        for kept in KEPT {
            assert!(stored.contains(&format!("value-of-{kept}")), "{backend}: {kept} was removed too: {stored}");
        }
    }
}

/// Grafana's "Logs for this trace" (the Tempo datasource's `tracesToLogsV2` query, as
/// provisioned) finds the worker's lines of a trace whose root is chat-cli's span.
async fn assert_trace_to_logs(http: &reqwest::Client, loki: &str, trace_id: &str) {
    let datasources = stack_checks::yaml("grafana/provisioning/datasources/datasources.yaml");
    let tempo = datasources["datasources"].as_sequence().into_iter().flatten().find(|d| d["uid"] == "tempo");
    let query = tempo.and_then(|d| d["jsonData"]["tracesToLogsV2"]["query"].as_str()).expect("tracesToLogsV2.query");
    let query = query.replace("$${__trace.traceId}", trace_id);
    let url = reqwest::Url::parse_with_params(
        &format!("{loki}/loki/api/v1/query_range"),
        &[("query", query.as_str()), ("since", "30m"), ("limit", "100")],
    )
    .expect("url");
    let logs = poll(&format!("Logs for this trace: {query}"), || async {
        let logs = test_harness::backends::loki_logs(&get_json(http, url.as_str()).await?)?;
        Ok((!logs.is_empty()).then_some(logs))
    })
    .await;
    assert!(logs.iter().any(|l| l.body == "will be redelivered"), "{logs:?}");
}

/// The RED table (instant queries over the dashboard's range) two minutes after the
/// traffic stopped: every row has a rate, a number as error ratio (0 for spans that never
/// failed, not blank) and percentiles. It once turned 0 / NaN a minute after the traffic.
async fn assert_red_table_after_traffic(http: &reqwest::Client, prometheus: &str) {
    let dashboard = stack_checks::json("grafana/dashboards/service-overview.json");
    let panel = dashboard["panels"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|p| p["title"].as_str().is_some_and(|t| t.starts_with("Rate, errors, duration")))
        .expect("the RED table");
    let mut rows = None;
    for target in panel["targets"].as_array().into_iter().flatten() {
        let expr = target["expr"].as_str().unwrap_or_default();
        assert!(target["instant"] == true && expr.contains("[$__range]"), "{expr}");
        let query = expr.replace("$service", ".+").replace("$span_name", ".+").replace("$__range", "15m");
        let url =
            reqwest::Url::parse_with_params(&format!("{prometheus}/api/v1/query"), &[("query", &query)]).expect("url");
        let values = test_harness::backends::prometheus_vector(&get_json(http, url.as_str()).await.expect(&query))
            .expect("a vector");
        assert!(!values.is_empty(), "{query}: no rows two minutes after the traffic");
        let refid = target["refId"].as_str().unwrap_or_default();
        for (labels, value) in &values {
            if !value.is_finite() {
                // What Prometheus holds of the row, to tell a series born late from one never counted.
                let (service, span) = (&labels["service_name"], &labels["span_name"]);
                let names = "traces_span_metrics_calls_total|traces_span_metrics_duration_milliseconds_count";
                let held = format!(r#"{{__name__=~"{names}", service_name="{service}", span_name="{span}"}}[15m]"#);
                let url = reqwest::Url::parse_with_params(&format!("{prometheus}/api/v1/query"), &[("query", &held)])
                    .expect("url");
                let raw = get_json(http, url.as_str()).await.unwrap_or_default();
                panic!("{refid}: {labels:?} = {value} two minutes after the traffic; Prometheus holds: {raw}");
            }
            if refid == "A" {
                assert!(*value > 0.0, "rate of {labels:?} is {value}");
            }
        }
        assert_eq!(*rows.get_or_insert(values.len()), values.len(), "{refid}: one value per row of A");
    }
}

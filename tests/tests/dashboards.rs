//! Every metric a dashboard queries is one the services really export (names read from
//! the OTLP receiver while the real services run, translated with the Prometheus rules)
//! or one the span-metrics connector / Tempo's metrics generator produce; the same for
//! every metric an alert rule uses.

use std::collections::BTreeSet;
use std::time::Duration;

use stack_checks::{
    COLLECTOR_INTERNAL_SERIES, COLLECTOR_SERIES, TEMPO_SERIES, dashboard_exprs, dashboard_files, json, prometheus_name,
    promql_label_values, promql_metrics,
};
use test_harness::ChatStack;
use test_harness::oidc::TestIssuer;

const WAIT: Duration = Duration::from_secs(30);

#[tokio::test(flavor = "multi_thread")]
async fn every_dashboard_metric_is_exported_by_a_service_or_generated_from_spans() {
    let stack = ChatStack::start_secured().await.expect("stack");
    let issuer = TestIssuer::start().await.expect("issuer");
    let auth_env = [("OIDC_ISSUER", issuer.issuer())];
    let _auth = stack.spawn_service("auth-service", &auth_env).await.expect("auth-service");
    let _worker = stack
        .spawn_service("persist-worker", &[("DEMO_FAULTS", "true"), ("NAK_DELAY", "100ms")])
        .await
        .expect("worker");
    let _history = stack.spawn_service("history-service", &[]).await.expect("history");
    let _bridge =
        stack.spawn_service("nats-trace-bridge", &[("OTEL_SERVICE_NAME", "nats-server")]).await.expect("bridge");
    let receiver = stack.otlp.http_endpoint();
    let _otlp_bridge =
        stack.spawn_service("otlp-bridge", &[("BRIDGE_ENDPOINT", receiver.as_str())]).await.expect("otlp-bridge");

    // Traffic that makes every instrument record: allowed and denied logins, a retry, a
    // dead letter, history ok and refused, a hostile traceparent.
    let token = issuer.token(&issuer.claims("alice", &["chat-user"]));
    let as_alice = |args: &[&str]| -> Vec<String> {
        ["--json", "--token", token.as_str(), "--user", "alice"].iter().chain(args).map(|s| (*s).to_owned()).collect()
    };
    for args in [
        vec!["send", "general", "hello"],
        vec!["send", "general", "retry", "--fault", "fail-once"],
        vec!["send", "general", "poison", "--fault", "poison"],
        vec!["history", "general"],
    ] {
        let args_owned = as_alice(&args);
        let run = stack.cli(&args_owned.iter().map(String::as_str).collect::<Vec<_>>()).await.expect("cli");
        assert_eq!(run.code, Some(0), "{args:?}: {}", run.stderr);
    }
    let refused = as_alice(&["history", "general", "--limit", "0"]);
    let _ = stack.cli(&refused.iter().map(String::as_str).collect::<Vec<_>>()).await;
    let _ = async_nats::ConnectOptions::with_token("garbage".into()).connect(stack.nats.url()).await;
    let persist = stack.admin().await.expect("test admin");
    let mut headers = async_nats::HeaderMap::new();
    headers.insert("traceparent", "00-not-valid-01");
    persist.publish_with_headers("chat.msg.general.mallory", headers, r#"{"text":"x"}"#.into()).await.expect("publish");
    persist.flush().await.expect("flush");

    let wanted = [
        "auth.requests",
        "history.requests",
        "messages.dead_lettered",
        "messages.redelivered",
        "trace_context.propagation.failures",
        "otel.sdk.processor.span.processed",
        "otel.sdk.exporter.span.exported",
        "nats.consumer.pending",
        "nats.trace_events",
        // Histograms recorded as messages and requests are handled: the gauges above can
        // arrive before them (nats.consumer.pending is the bridge's, read at start-up).
        "messaging.nats.queue_wait",
        "auth.request.duration",
        "history.request.duration",
        "process.uptime",
        "otlp_bridge.messages",
        "otlp_bridge.export.failures",
        "otlp_bridge.breaker.open",
    ];
    let metrics = stack
        .otlp
        .wait_for(WAIT, "metrics from all three services", |c| {
            wanted.iter().all(|w| c.metrics.iter().any(|m| m.name == *w)).then(|| c.metrics.clone())
        })
        .await
        .expect("metrics");
    let mut known: BTreeSet<String> = metrics.iter().map(prometheus_name).collect();
    known.extend(COLLECTOR_SERIES.iter().chain(TEMPO_SERIES).map(|s| (*s).to_owned()));

    let mut filtered_spans = BTreeSet::new();
    let mut filtered_services = BTreeSet::new();
    let files = dashboard_files();
    assert_eq!(files.len(), 3, "service overview, messaging, telemetry pipeline: {files:?}");
    for path in &files {
        let dashboard = json(path);
        let exprs = dashboard_exprs(&dashboard);
        assert!(!exprs.is_empty(), "{path} has Prometheus panels");
        for expr in exprs {
            filtered_spans.extend(promql_label_values(&expr, "span_name"));
            filtered_services.extend(promql_label_values(&expr, "service_name"));
            let used = promql_metrics(&expr);
            assert!(!used.is_empty(), "{path}: no metric found in {expr}");
            for metric in used {
                assert!(
                    known.contains(&metric) || COLLECTOR_INTERNAL_SERIES.contains(&metric.as_str()),
                    "{path}: {metric} (in `{expr}`) is neither exported nor generated; known: {known:?}"
                );
            }
        }
    }
    // Span-metric panels filter on span and service names: each must be one really exported.
    assert!(filtered_spans.contains("nats ingress chat.msg.*.*"), "{filtered_spans:?}");
    let seen = stack
        .otlp
        .wait_for(WAIT, "every span and service name a dashboard filters on", |c| {
            let spans: BTreeSet<String> = c.spans.iter().map(|s| s.name.clone()).collect();
            let services: BTreeSet<String> = c.spans.iter().map(|s| s.service_name.clone()).collect();
            (filtered_spans.is_subset(&spans) && filtered_services.is_subset(&services)).then_some(())
        })
        .await;
    if seen.is_err() {
        let captured = stack.otlp.captured();
        let spans: BTreeSet<_> = captured.spans.iter().map(|s| (s.service_name.as_str(), s.name.as_str())).collect();
        panic!("dashboards filter on {filtered_spans:?} / {filtered_services:?}; exported: {spans:?}");
    }

    // Every metric an alert rule uses: exported by a service, generated from spans, or one
    // of the collector's own series (which cannot be produced here).
    for rule in stack_checks::alert_exprs() {
        for metric in promql_metrics(&rule.expr) {
            assert!(
                known.contains(&metric) || COLLECTOR_INTERNAL_SERIES.contains(&metric.as_str()),
                "alert {}: {metric} is neither exported, generated nor a collector series; known: {known:?}",
                rule.alert
            );
        }
    }

    // The metrics of DESIGN.md 5.4, under their Prometheus names.
    for name in [
        "messages_persisted_total",
        "messages_persist_errors_total",
        "messages_redelivered_total",
        "messages_dead_lettered_total",
        "messaging_nats_queue_wait_seconds",
        "history_requests_total",
        "history_request_duration_seconds",
        "auth_requests_total",
        "auth_request_duration_seconds",
        "trace_context_propagation_failures_total",
        "process_cpu_time_seconds_total",
        "process_memory_usage_bytes",
        // Pipeline health (issue 12) and consumer lag.
        "otel_sdk_span_started_total",
        "otel_sdk_processor_span_processed_total",
        "otel_sdk_exporter_span_exported_total",
        "otel_sdk_exporter_log_exported_total",
        "otel_sdk_trace_sampling_ratio",
        "nats_consumer_pending",
        "nats_consumer_ack_pending",
        "nats_stream_messages",
    ] {
        assert!(known.contains(name), "{name} is not exported: {known:?}");
    }
}

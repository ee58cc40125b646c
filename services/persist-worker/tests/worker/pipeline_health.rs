//! The tracing pipeline reports its own health over OTLP (issue 12): spans the batch
//! processor drops when its queue overflows, and exports that fail while the trace
//! endpoint is unreachable, are counted and still reach the metrics receiver; the
//! sampling ratio is a gauge.

use test_harness::ChatStack;
use test_harness::model::{AttributesExt as _, MetricRecord, MetricValue};
use test_harness::otlp::Captured;

use crate::helpers::{TestApp, WAIT};

/// The latest value of `name` from persist-worker for the points whose `error.type` is
/// `error_type` (`None`: points without one), summed.
fn latest(captured: &Captured, name: &str, error_type: Option<&str>) -> Option<f64> {
    let record: &MetricRecord =
        captured.metrics.iter().rev().find(|m| m.name == name && m.service_name == "persist-worker")?;
    let points = record.points.iter().filter(|p| p.attributes.str("error.type") == error_type);
    Some(
        points
            .map(|p| match p.value {
                MetricValue::Sum(v) | MetricValue::Gauge(v) => v,
                MetricValue::Histogram { count, .. } => count as f64,
            })
            .sum(),
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn dropped_spans_and_failed_exports_are_counted_while_metrics_still_flow() {
    let app = TestApp { stack: ChatStack::start().await.expect("stack") };
    // Traces go nowhere (connection refused); metrics and logs reach the receiver.
    let dead = format!("http://127.0.0.1:{}", test_harness::free_port());
    let _worker = app
        .worker(&[
            ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", dead.as_str()),
            ("OTEL_BSP_MAX_QUEUE_SIZE", "4"),
            ("OTEL_BSP_MAX_EXPORT_BATCH_SIZE", "2"),
            ("OTEL_TRACES_SAMPLER", "parentbased_traceidratio"),
            ("OTEL_TRACES_SAMPLER_ARG", "0.25"),
        ])
        .await;
    // chat-cli samples every message, so the worker records all of them (parent-based).
    app.send("burst", &["--count", "100"]).await;
    app.wait_rows(100, WAIT).await;

    let figures = app
        .stack
        .otlp
        .wait_for(WAIT, "pipeline health counters from persist-worker", |c| {
            let dropped = latest(c, "otel.sdk.processor.span.processed", Some("queue_full"))?;
            let failed = latest(c, "otel.sdk.exporter.span.exported", Some("unavailable"))?;
            let started = latest(c, "otel.sdk.span.started", None)?;
            let ratio = latest(c, "otel.sdk.trace.sampling_ratio", None)?;
            (dropped > 0.0 && failed > 0.0 && started >= 100.0).then_some((dropped, failed, started, ratio))
        })
        .await
        .unwrap_or_else(|e| {
            let c = app.stack.otlp.captured();
            let names: std::collections::BTreeSet<_> = c.metrics.iter().map(|m| m.name.as_str()).collect();
            panic!("{e}; metrics seen: {names:?}")
        });
    let (dropped, failed, started, ratio) = figures;
    assert_eq!(ratio, 0.25, "the configured head-sampling ratio");
    // Started = handed to the queue: every span is dropped, failed or still queued.
    assert!(dropped + failed <= started, "dropped {dropped} + failed {failed} <= started {started}");

    // The log exporter works: its successes are counted without an error.type, and its
    // failure series exist at 0 from start-up.
    let c = app.stack.otlp.captured();
    assert!(latest(&c, "otel.sdk.exporter.log.exported", None).is_some_and(|v| v > 0.0), "log exports counted");
    assert_eq!(latest(&c, "otel.sdk.exporter.log.exported", Some("unavailable")), Some(0.0));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_healthy_pipeline_drops_nothing_and_fails_nothing() {
    let (app, _worker) = TestApp::spawn().await;
    app.send("calm", &["--count", "20"]).await;
    app.wait_rows(20, WAIT).await;
    let (exported, dropped) = app
        .stack
        .otlp
        .wait_for(WAIT, "span exports counted", |c| {
            let exported = latest(c, "otel.sdk.exporter.span.exported", None)?;
            let dropped = latest(c, "otel.sdk.processor.span.processed", Some("queue_full")).unwrap_or(0.0);
            (exported >= 20.0).then_some((exported, dropped))
        })
        .await
        .expect("span exports");
    let c = app.stack.otlp.captured();
    assert_eq!(dropped, 0.0, "{exported} exported");
    assert_eq!(latest(&c, "otel.sdk.exporter.span.exported", Some("unavailable")), Some(0.0));
    assert_eq!(latest(&c, "otel.sdk.trace.sampling_ratio", None), Some(1.0), "the default sampler");
}

#[tokio::test(flavor = "multi_thread")]
async fn the_first_dead_letter_of_a_fresh_stack_counts_from_zero() {
    let (app, _worker) = TestApp::spawn().await;
    let at = |c: &Captured, name: &str, attrs: &[(&str, &str)]| test_harness::otlp::latest_sum(&c.metrics, name, attrs);
    app.stack
        .otlp
        .wait_for(WAIT, "rare-event counters at 0 before any event", |c| {
            let dead = at(c, "messages.dead_lettered", &[("reason", "demo_poison")]);
            let propagation =
                at(c, "trace_context.propagation.failures", &[("direction", "extract"), ("reason", "zero_id")]);
            (dead == Some(0.0) && propagation == Some(0.0)).then_some(())
        })
        .await
        .expect("counters at 0 from start-up");
    app.send("poison", &["--fault", "poison"]).await;
    app.stack
        .otlp
        .wait_for(WAIT, "the first dead letter counted", |c| {
            (at(c, "messages.dead_lettered", &[("reason", "demo_poison")]) == Some(1.0)).then_some(())
        })
        .await
        .expect("first dead letter: 0 -> 1, an increase() sees it");
}

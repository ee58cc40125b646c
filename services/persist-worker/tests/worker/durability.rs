//! Nothing lost, nothing stored twice: duplicates, crashes, a dead database, shutdown.

use std::time::Duration;

use test_harness::Service;

use crate::helpers::{TestApp, WAIT};

fn assert_each_seq_once(rows: &[crate::helpers::Row], n: usize) {
    let seqs: Vec<i64> = rows.iter().map(|r| r.stream_seq).collect();
    let expected: Vec<i64> = (1..=n as i64).collect();
    assert_eq!(seqs, expected, "every stream sequence stored exactly once");
}

#[tokio::test(flavor = "multi_thread")]
async fn the_same_msg_id_published_twice_is_stored_once() {
    let (app, _worker) = TestApp::spawn().await;
    app.stack.cli_ok(&["send", "general", "once", "--msg-id", "dup-1"]).await.expect("first");
    // The stream drops the second as a duplicate: chat-cli says it was not stored.
    let second = app.stack.cli(&["--json", "send", "general", "once", "--msg-id", "dup-1"]).await.expect("second");
    assert_eq!(second.code, Some(1), "{}", second.stderr);
    assert!(second.stderr.contains("not stored"), "{}", second.stderr);
    app.send("marker", &[]).await;
    let rows = app.wait_rows(2, WAIT).await;
    assert_eq!(rows.iter().filter(|r| r.text == "once").count(), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_crash_between_commit_and_ack_does_not_store_the_redelivery_twice() {
    let (app, mut worker) = TestApp::spawn().await;
    app.send("crash", &["--fault", "crash-after-commit"]).await;
    let status = worker.process.wait_exit(WAIT).await.expect("the worker aborts after commit");
    assert!(!status.success());
    assert_eq!(app.rows().await.len(), 1, "committed before the crash");

    // The redelivery (ack never arrived) meets the stored row and is acked, not stored again.
    let _worker = app.worker(&[("ACK_WAIT", "1s")]).await;
    let trace = app.stack.otlp.wait_for(WAIT, "the redelivery's ack", |c| {
        c.spans.iter().find(|s| s.name == "process chat.msg.*.*" && s.event("ack").is_some()).cloned()
    });
    trace.await.expect("acked after restart");
    app.send("after crash", &[]).await;
    let rows = app.wait_rows(2, WAIT).await;
    assert_eq!(rows.iter().filter(|r| r.text == "crash").count(), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn kill_9_in_the_middle_of_a_10k_backlog_loses_and_duplicates_nothing() {
    let app = TestApp { stack: test_harness::ChatStack::start().await.expect("stack") };
    // The stream must exist before the backlog is published: a first worker creates it.
    drop(app.worker(&[]).await);
    app.stack
        .cli_ok(&["send", "general", "backlog", "--count", "10000", "--concurrency", "512"])
        .await
        .expect("publish");

    let mut worker = app.worker(&[("ACK_WAIT", "2s"), ("BATCH_SIZE", "100")]).await;
    app.wait_rows(1_000, WAIT).await;
    worker.process.signal("KILL").expect("kill -9");
    let _ = worker.process.wait_exit(WAIT).await;
    let stored_at_kill = app.rows().await.len();
    assert!(stored_at_kill < 10_000, "the kill came too late to prove anything ({stored_at_kill} stored)");

    let _worker = app.worker(&[("ACK_WAIT", "2s")]).await;
    let rows = app.wait_rows(10_000, Duration::from_secs(120)).await;
    assert_each_seq_once(&rows, 10_000);
}

#[tokio::test(flavor = "multi_thread")]
async fn postgres_down_for_a_while_naks_with_delay_and_loses_nothing() {
    let (app, mut worker) = TestApp::spawn().await;
    let worker_env = [("MAX_DELIVER", "30"), ("NAK_DELAY", "100ms"), ("NAK_DELAY_MAX", "300ms")];
    worker.process.kill();
    let mut worker = app.worker(&worker_env).await;
    app.send("before", &[]).await;
    app.wait_rows(1, WAIT).await;

    app.stack.postgres.stop_server().expect("stop postgres");
    worker.wait_readyz(503, WAIT).await.expect("not ready without its database");
    app.send("during", &["--count", "50"]).await;
    app.stack
        .otlp
        .wait_for(WAIT, "naks while the database is down", |c| {
            c.spans.iter().any(|s| s.name == "process chat.msg.*.*" && s.event("nak").is_some()).then_some(())
        })
        .await
        .expect("naks");
    tokio::time::sleep(Duration::from_secs(2)).await;
    app.stack.postgres.start_server().expect("start postgres");

    let rows = app.wait_rows(51, WAIT).await;
    assert_each_seq_once(&rows, 51);
    worker.wait_readyz(200, WAIT).await.expect("ready again");
    // Refused connections count as db_unavailable; a statement stuck past the processing
    // deadline (the pool still trying to connect) as timeout.
    let errors = app.stack.otlp.wait_for(WAIT, "the db error counter", |c| {
        let count = |t| test_harness::otlp::latest_sum(&c.metrics, "messages.persist.errors", &[("error.type", t)]);
        let total = count("db_unavailable").unwrap_or(0.0) + count("timeout").unwrap_or(0.0);
        (total > 0.0).then_some(total)
    });
    errors.await.expect("failed attempts counted");
    let dead = test_harness::otlp::latest_sum(&app.stack.otlp.captured().metrics, "messages.dead_lettered", &[]);
    assert_eq!(dead.unwrap_or(0.0), 0.0, "nothing was dead-lettered");
}

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_finishes_in_flight_work_flushes_telemetry_and_exits_0() {
    let app = TestApp { stack: test_harness::ChatStack::start().await.expect("stack") };
    drop(app.worker(&[]).await);
    app.stack.cli_ok(&["send", "general", "drain", "--count", "3000", "--concurrency", "512"]).await.expect("publish");
    let mut worker: Service = app.worker(&[("BATCH_SIZE", "50")]).await;
    app.wait_rows(200, WAIT).await;
    worker.process.signal("TERM").expect("SIGTERM");
    let status = worker.process.wait_exit(WAIT).await.expect("exits");
    assert!(status.success(), "exit status {status}:\n{}", worker.process.output());
    assert!(worker.process.output().contains("persist-worker stopped"));
    let stored = app.rows().await.len();

    // Everything it stored was also exported before it exited.
    let exported_inserts: i64 = app
        .stack
        .otlp
        .captured()
        .spans
        .iter()
        .filter(|s| s.name == crate::helpers::INSERT)
        .filter_map(|s| test_harness::model::AttributesExt::int(&s.attributes, "db.operation.batch.size"))
        .sum();
    assert!(exported_inserts as usize >= stored, "{exported_inserts} rows in exported INSERT spans, {stored} stored");

    let _worker = app.worker(&[]).await;
    let rows = app.wait_rows(3_000, Duration::from_secs(60)).await;
    assert_each_seq_once(&rows, 3_000);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_restarting_nats_is_survived_and_readiness_follows_it() {
    let (mut app, mut worker) = TestApp::spawn().await;
    app.send("before", &[]).await;
    app.wait_rows(1, WAIT).await;

    app.stack.nats.stop();
    worker.wait_readyz(503, WAIT).await.expect("not ready without NATS");
    app.stack.nats.start_again().await.expect("NATS back (same port, same store)");
    worker.wait_readyz(200, WAIT).await.expect("ready again after reconnecting");

    // The pull subscription recovers: messages sent after the restart are stored.
    app.send("after", &["--count", "5"]).await;
    let rows = app.wait_rows(6, WAIT).await;
    assert_each_seq_once(&rows, 6);

    // The drop is counted (the NatsConnectionUnstable alert's series).
    let counted = app.stack.otlp.wait_for(WAIT, "disconnect counted", |c| {
        test_harness::otlp::latest_sum(&c.metrics, "nats.client.events", &[("event", "disconnected")])
            .filter(|n| *n >= 1.0)
    });
    counted.await.expect("the worker counted its NATS disconnect");
}

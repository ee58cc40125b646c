//! The seed's messaging scenarios (seed 000) and the dead-letter path, as traces.

use test_harness::model::{AttributesExt as _, SpanKind, StatusCode};
use test_harness::trace::{assert_error, assert_kind};

use crate::helpers::{INSERT, PROCESS, PUBLISH, TestApp, WAIT};

#[tokio::test(flavor = "multi_thread")]
async fn scenario_1_active_trace_gives_producer_consumer_and_db_span_in_one_trace() {
    let (app, _worker) = TestApp::spawn().await;
    let sent = app.send("hello", &[]).await;
    let (seq, trace_id) = &sent[0];

    app.stack.otlp.wait_for_spans_in_trace(trace_id, PROCESS, 1, WAIT).await.expect("consumer");
    let trace = app.stack.otlp.wait_for_spans_in_trace(trace_id, INSERT, 1, WAIT).await.expect("insert");
    let caller = trace.one("send message");
    let producer = trace.one(PUBLISH);
    let consumer = trace.one(PROCESS);
    let insert = trace.one(INSERT);
    trace.assert_child_of(producer, caller);
    trace.assert_child_of(consumer, producer);
    trace.assert_child_of(insert, consumer);
    assert_kind(producer, SpanKind::Producer);
    assert_kind(consumer, SpanKind::Consumer);
    assert_kind(insert, SpanKind::Client);
    // The settlement is an event on the consumer span (SETTLE_SPANS=true makes it a span).
    let ack = consumer.event("ack").unwrap_or_else(|| panic!("an ack event:\n{}", trace.tree()));
    assert_eq!(ack.attributes.str("messaging.operation.type"), Some("settle"));
    assert!(trace.named("ack chat.msg.*.*").is_empty(), "no ack span by default");
    assert_eq!((producer.service_name.as_str(), consumer.service_name.as_str()), ("chat-cli", "persist-worker"));

    let a = &consumer.attributes;
    assert_eq!(a.str("messaging.destination.name"), Some("chat.msg.general.alice"));
    assert_eq!(a.str("messaging.consumer.group.name"), Some("persist-worker"));
    assert_eq!(a.bool("messaging.message_redelivered"), Some(false));
    assert_eq!(a.int("messaging.nats.delivery_count"), Some(1));
    assert_eq!(a.int("messaging.nats.stream.sequence"), Some(*seq as i64));
    assert!(a.f64("messaging.nats.queue_wait").is_some_and(|w| w >= 0.0), "{a:?}");
    let db = &insert.attributes;
    assert_eq!(db.str("db.system.name"), Some("postgresql"));
    assert_eq!(db.str("db.collection.name"), Some("chat.messages"));
    assert_eq!(db.str("db.operation.name"), Some("INSERT"));
    assert!(db.str("db.query.text").is_some_and(|q| q.contains("$1") && !q.contains("hello")));
    assert_eq!(db.str("db.namespace"), Some(app.stack.db.name.as_str()));

    let rows = app.wait_rows(1, WAIT).await;
    assert_eq!(rows[0].trace_id.as_deref(), Some(trace_id.as_str()));
    assert_eq!(
        (rows[0].room.as_str(), rows[0].username.as_str(), rows[0].text.as_str()),
        ("general", "alice", "hello")
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn scenario_2_producer_without_context_starts_a_new_root_with_the_same_linkage() {
    let (app, _worker) = TestApp::spawn().await;
    let (_, trace_id) = app.send("no context", &["--no-caller-span"]).await.remove(0);
    let trace = app.stack.otlp.wait_for_spans_in_trace(&trace_id, INSERT, 1, WAIT).await.expect("trace");
    let producer = trace.one(PUBLISH);
    assert_eq!(producer.parent_span_id, None, "the producer is the root:\n{}", trace.tree());
    let consumer = trace.one(PROCESS);
    trace.assert_child_of(consumer, producer);
    trace.assert_child_of(trace.one(INSERT), consumer);
}

#[tokio::test(flavor = "multi_thread")]
async fn scenario_3_failed_first_attempt_and_successful_redelivery_share_the_trace() {
    let (app, _worker) = TestApp::spawn().await;
    let (_, trace_id) = app.send("fail once", &["--fault", "fail-once"]).await.remove(0);
    let trace = app.stack.otlp.wait_for_spans_in_trace(&trace_id, INSERT, 1, WAIT).await.expect("stored after retry");
    let trace = app.stack.otlp.wait_for_spans_in_trace(&trace_id, PROCESS, 2, WAIT).await.map(|_| trace).expect("2");
    let trace = app.stack.otlp.trace(&trace.spans()[0].trace_id);
    let producer = trace.one(PUBLISH);
    let attempts = trace.named(PROCESS);
    assert_eq!(attempts.len(), 2, "{}", trace.tree());
    let (first, second) = (attempts[0], attempts[1]);
    trace.assert_child_of(first, producer);
    trace.assert_child_of(second, producer);
    assert_eq!(first.status, StatusCode::Error);
    assert_eq!(first.attributes.str("error.type"), Some("injected_failure"));
    assert!(first.event("exception").is_some());
    assert_eq!(first.attributes.bool("messaging.message_redelivered"), Some(false));
    assert_eq!(second.attributes.bool("messaging.message_redelivered"), Some(true));
    assert_eq!(second.attributes.int("messaging.nats.delivery_count"), Some(2));
    assert_ne!(second.status, StatusCode::Error);
    let nak = first.event("nak").unwrap_or_else(|| panic!("a nak event:\n{}", trace.tree()));
    assert!(nak.attributes.f64("messaging.nats.nak_delay").is_some_and(|d| d > 0.0), "{nak:?}");
    trace.assert_child_of(trace.one(INSERT), second);
    assert_eq!(app.wait_rows(1, WAIT).await.len(), 1);

    // The worker's log line about the retry carries the message's trace (issue 3, item 10).
    let log = app
        .stack
        .otlp
        .wait_for(WAIT, "the retry log record", |c| c.logs.iter().find(|l| l.body == "will be redelivered").cloned())
        .await
        .expect("log");
    assert_eq!(log.trace_id.as_deref(), Some(trace_id.as_str()));
    assert_eq!(log.span_id.as_deref(), Some(first.span_id.as_str()));
    assert_eq!(log.service_name, "persist-worker");
}

#[tokio::test(flavor = "multi_thread")]
async fn scenario_4_an_attempt_past_its_deadline_is_a_timeout_and_the_redelivery_stores_once() {
    let (app, _worker) = TestApp::spawn().await;
    let (_, trace_id) = app.send("slow", &["--fault", "slow"]).await.remove(0);
    let trace = app.stack.otlp.wait_for_spans_in_trace(&trace_id, INSERT, 1, WAIT).await.expect("stored");
    let trace = app.stack.otlp.wait_for_spans_in_trace(&trace_id, PROCESS, 2, WAIT).await.map(|_| trace).expect("2");
    let trace = app.stack.otlp.trace(&trace.spans()[0].trace_id);
    let attempts = trace.named(PROCESS);
    assert_error(attempts[0], "Timeout");
    assert_eq!(attempts[0].attributes.str("error.type"), Some("timeout"));
    assert_eq!(attempts[1].attributes.bool("messaging.message_redelivered"), Some(true));
    let rows = app.wait_rows(1, WAIT).await;
    assert_eq!(rows.len(), 1);
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    assert_eq!(app.rows().await.len(), 1, "stored exactly once");
}

#[tokio::test(flavor = "multi_thread")]
async fn poison_is_dead_lettered_in_the_same_trace_not_retried_and_the_worker_goes_on() {
    let (app, _worker) = TestApp::spawn().await;
    let (_, trace_id) = app.send("poison", &["--fault", "poison"]).await.remove(0);
    let trace = app.stack.otlp.wait_for_spans_in_trace(&trace_id, PROCESS, 1, WAIT).await.expect("consumer");
    let trace = app
        .stack
        .otlp
        .wait_for_spans_in_trace(&trace_id, "publish chat.dlq.*", 1, WAIT)
        .await
        .map(|_| trace)
        .expect("dlq");
    let trace = app.stack.otlp.trace(&trace.spans()[0].trace_id);
    let consumer = trace.one(PROCESS);
    assert!(consumer.event("term").is_some(), "terminated after the dead letter:\n{}", trace.tree());
    assert_eq!(consumer.status, StatusCode::Error);
    assert_eq!(consumer.attributes.str("error.type"), Some("demo_poison"));
    let dlq = trace.one("publish chat.dlq.*");
    assert_kind(dlq, SpanKind::Producer);
    trace.assert_child_of(dlq, consumer);
    assert_eq!(dlq.attributes.str("messaging.destination.name"), Some("chat.dlq.general"));
    assert!(trace.named(INSERT).is_empty());

    // The dead letter is stored with its reason and carries the trace onward.
    let client = async_nats::connect(app.stack.nats.url()).await.expect("nats");
    let js = async_nats::jetstream::new(client);
    let stream = js.get_stream("CHAT_DLQ").await.expect("dlq stream");
    let dead = stream.get_last_raw_message_by_subject("chat.dlq.general").await.expect("dead letter");
    let header = |name: &str| dead.headers.get(name).map(|v| v.as_str().to_owned());
    assert_eq!(header("Chat-Dlq-Reason").as_deref(), Some("demo_poison"));
    assert!(header("traceparent").is_some_and(|tp| tp.contains(&trace_id)), "the dead letter continues the trace");

    // Not retried, and the worker keeps working.
    app.send("after poison", &[]).await;
    let rows = app.wait_rows(1, WAIT).await;
    assert_eq!(rows.iter().map(|r| r.text.as_str()).collect::<Vec<_>>(), ["after poison"]);
    assert_eq!(app.stack.otlp.trace(&trace_id).named(PROCESS).len(), 1, "poison is not redelivered");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_dead_letter_keeps_the_senders_headers_under_a_prefix_but_not_the_servers_trace_markers() {
    let (app, _worker) = TestApp::spawn().await;
    let client = async_nats::connect(app.stack.nats.url()).await.expect("nats");
    let js = async_nats::jetstream::new(client);
    // As NATS 2.11+ store a traced message: `Xraceparent` (2.11-2.13), `Nats-Trace-Dest:
    // trace disabled` (2.14+); plus a header of the sender's own.
    let trace_id = "5b8efff798038103d269b633813fc60c";
    let mut headers = async_nats::HeaderMap::new();
    headers.insert("Xraceparent", format!("00-{trace_id}-eee19b7ec3c1b174-01").as_str());
    headers.insert("Nats-Trace-Dest", "trace disabled");
    headers.insert("Chat-Client", "demo");
    let published = js.publish_with_headers("chat.msg.general.bob", headers, "not json".into()).await;
    published.expect("publish").await.expect("stored");
    app.stack.otlp.wait_for_spans_in_trace(trace_id, "publish chat.dlq.*", 1, WAIT).await.expect("dead-lettered");

    let stream = js.get_stream("CHAT_DLQ").await.expect("dlq stream");
    let dead = stream.get_last_raw_message_by_subject("chat.dlq.general").await.expect("dead letter");
    let header = |name: &str| dead.headers.get(name).map(|v| v.as_str().to_owned());
    assert_eq!(header("Chat-Orig-Chat-Client").as_deref(), Some("demo"), "{:?}", dead.headers);
    assert_eq!(header("Nats-Trace-Dest"), None, "{:?}", dead.headers);
    assert_eq!(header("Xraceparent"), None, "{:?}", dead.headers);
    assert!(header("traceparent").is_some_and(|tp| tp.contains(trace_id)), "{:?}", dead.headers);
}

#[tokio::test(flavor = "multi_thread")]
async fn malformed_payloads_and_bad_names_are_dead_lettered_without_leaking_them() {
    let (app, worker) = TestApp::spawn().await;
    let client = async_nats::connect(app.stack.nats.url()).await.expect("nats");
    let js = async_nats::jetstream::new(client);
    let secret = "s3cr3t-body-never-logged";
    for (subject, payload) in [
        ("chat.msg.general.bob", format!("not json {secret}")),
        ("chat.msg.general.bob", format!(r#"{{"text":"","x":"{secret}"}}"#)),
        ("chat.msg.Bad_Room.bob", r#"{"text":"hi"}"#.to_owned()),
    ] {
        js.publish(subject, payload.into()).await.expect("publish").await.expect("stored");
    }
    let dead = app
        .stack
        .otlp
        .wait_for(WAIT, "three terms", |c| {
            let n = c.spans.iter().filter(|s| s.name == PROCESS && s.event("term").is_some()).count();
            (n == 3).then_some(())
        })
        .await;
    dead.expect("all three dead-lettered");
    let reasons: Vec<_> = app
        .stack
        .otlp
        .captured()
        .spans
        .iter()
        .filter(|s| s.name == PROCESS)
        .filter_map(|s| s.attributes.str("error.type").map(str::to_owned))
        .collect();
    for reason in ["malformed", "invalid_subject"] {
        assert!(reasons.iter().any(|r| r == reason), "{reasons:?}");
    }
    assert!(!format!("{:?}", app.stack.otlp.captured()).contains(secret), "a body reached telemetry");
    assert!(!worker.process.output().contains(secret), "a body reached stdout");
    assert!(app.rows().await.is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn long_work_sends_progress_acks_so_the_server_does_not_redeliver_meanwhile() {
    let app = TestApp { stack: test_harness::ChatStack::start().await.expect("stack") };
    // ack_wait 1 s but 3 s of work: only progress acks keep the server from redelivering.
    let _worker = app.worker(&[("ACK_WAIT", "1s"), ("PROCESSING_DEADLINE", "3s")]).await;
    let (_, trace_id) = app.send("slow", &["--fault", "slow"]).await.remove(0);
    let trace = app.stack.otlp.wait_for_spans_in_trace(&trace_id, INSERT, 1, WAIT).await.expect("stored");
    let trace = app.stack.otlp.trace(&trace.spans()[0].trace_id);
    let attempts = trace.named(PROCESS);
    assert_eq!(attempts.len(), 2, "the timed-out attempt and one redelivery, nothing in between:\n{}", trace.tree());
    assert_error(attempts[0], "Timeout");
    assert_eq!(attempts[1].attributes.int("messaging.nats.delivery_count"), Some(2));
    let progress = trace.named("progress chat.msg.*.*");
    assert!(progress.is_empty(), "progress acks are not traced per tick");
}

/// With `SETTLE_SPANS=true` each settlement is a CLIENT span `ack chat.msg.*.*` (`nak`,
/// `term`) child of the consumer span, as OpenTelemetry's optional settle spans.
#[tokio::test(flavor = "multi_thread")]
async fn with_settle_spans_the_settlements_are_client_spans() {
    let (app, mut worker) = TestApp::spawn().await;
    worker.process.kill();
    let _worker = app.worker(&[("SETTLE_SPANS", "true")]).await;
    let (_, trace_id) = app.send("fail once", &["--fault", "fail-once"]).await.remove(0);
    let trace = app.stack.otlp.wait_for_spans_in_trace(&trace_id, "ack chat.msg.*.*", 1, WAIT).await.expect("ack span");
    let trace = app
        .stack
        .otlp
        .wait_for_spans_in_trace(&trace_id, "nak chat.msg.*.*", 1, WAIT)
        .await
        .map(|_| trace)
        .expect("nak");
    // A settle span ends before the process span it belongs to, and may be exported a
    // batch earlier: wait for both attempts too.
    let trace = app.stack.otlp.wait_for_spans_in_trace(&trace.spans()[0].trace_id, PROCESS, 2, WAIT).await;
    let trace = trace.expect("both attempts");
    let attempts = trace.named(PROCESS);
    assert_eq!(attempts.len(), 2, "{}", trace.tree());
    let (nak, ack) = (trace.one("nak chat.msg.*.*"), trace.one("ack chat.msg.*.*"));
    trace.assert_child_of(nak, attempts[0]);
    trace.assert_child_of(ack, attempts[1]);
    assert_kind(ack, SpanKind::Client);
    assert_eq!(ack.attributes.str("messaging.operation.type"), Some("settle"));
    assert!(attempts.iter().all(|a| a.event("ack").is_none() && a.event("nak").is_none()), "spans, not events");
}

/// A full batch (the default 256 deliveries, from a backlog) is one INSERT, child of its
/// first delivery's span and linked to each of the others: none of the links lost to the
/// SDK's default limit of 128 per span.
#[tokio::test(flavor = "multi_thread")]
async fn a_full_batch_insert_links_every_other_delivery_of_the_batch() {
    let app = TestApp { stack: test_harness::ChatStack::start().await.expect("stack") };
    // The stream must exist before the backlog is published: a first worker creates it.
    drop(app.worker(&[]).await);
    let sent = app.send("batched", &["--count", "300", "--concurrency", "64"]).await;
    let _worker = app.worker(&[]).await;
    app.wait_rows(300, WAIT).await;
    let full = |s: &&test_harness::model::SpanRecord| {
        s.name == INSERT && s.attributes.int("db.operation.batch.size") == Some(256)
    };
    let insert = app
        .stack
        .otlp
        .wait_for(WAIT, "a full batch's INSERT span", |c| c.spans.iter().find(full).cloned())
        .await
        .expect("a batch of 256 from the backlog of 300");
    let sent: std::collections::HashSet<&str> = sent.iter().map(|(_, trace_id)| trace_id.as_str()).collect();
    let mut linked: Vec<&str> = insert.links.iter().map(|link| link.trace_id.as_str()).collect();
    linked.sort_unstable();
    linked.dedup();
    assert_eq!(linked.len(), 255, "one link per other delivery, each a message's own trace");
    assert!(linked.iter().all(|trace_id| sent.contains(trace_id)), "links to the messages sent");
    assert!(!linked.contains(&insert.trace_id.as_str()), "the first delivery is the parent, not a link");
}

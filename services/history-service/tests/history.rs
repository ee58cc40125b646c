//! history-service with persist-worker on a real nats-server and PostgreSQL: the request
//! trace, error replies, and the metrics of both services as exported over OTLP.

use std::time::{Duration, Instant};

use test_harness::model::{AttributesExt as _, SpanKind, StatusCode};
use test_harness::otlp::latest_sum;
use test_harness::trace::assert_kind;
use test_harness::{ChatStack, Service};

const WAIT: Duration = Duration::from_secs(30);
const WORKER_ENV: &[(&str, &str)] = &[("DEMO_FAULTS", "true"), ("NAK_DELAY", "100ms")];

async fn spawn() -> (ChatStack, Service, Service) {
    let stack = ChatStack::start().await.expect("stack");
    let worker = stack.spawn_service("persist-worker", WORKER_ENV).await.expect("worker");
    let history = stack.spawn_service("history-service", &[]).await.expect("history");
    (stack, worker, history)
}

/// A client whose replies come to a chat user's inbox, as chat-cli's do (the service
/// answers nothing else).
async fn requester(stack: &ChatStack) -> async_nats::Client {
    async_nats::ConnectOptions::new()
        .custom_inbox_prefix(chat_protocol::chat_inbox_prefix("tester"))
        .connect(stack.nats.url())
        .await
        .expect("nats")
}

/// Sends `n` messages and waits until history returns all of them.
async fn send_and_wait(stack: &ChatStack, n: usize) -> Vec<serde_json::Value> {
    let sent = stack.cli_ok(&["send", "general", "hello", "--count", &n.to_string()]).await.expect("send");
    let deadline = Instant::now() + WAIT;
    loop {
        let lines = stack.cli_ok(&["history", "general"]).await.expect("history");
        if lines.len() > n {
            return sent;
        }
        assert!(Instant::now() < deadline, "history never showed {n} messages: {lines:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_history_request_is_one_trace_client_server_db_and_answers_newest_first() {
    let (stack, _worker, _history) = spawn().await;
    let sent = send_and_wait(&stack, 3).await;

    let lines = stack.cli_ok(&["history", "general", "--limit", "2"]).await.expect("history");
    let trace_id = lines[0]["trace_id"].as_str().expect("request trace id").to_owned();
    let messages = &lines[1..];
    assert_eq!(messages.len(), 2);
    let seqs: Vec<u64> = messages.iter().map(|m| m["seq"].as_u64().expect("seq")).collect();
    assert_eq!(seqs, [3, 2], "newest first");
    // Each stored message leads back to the trace it was sent in.
    for m in messages {
        let sent_trace = sent.iter().find(|s| s["seq"] == m["seq"]).map(|s| s["trace_id"].clone());
        assert_eq!(Some(m["trace_id"].clone()), sent_trace);
    }

    let trace = stack.otlp.wait_for_spans_in_trace(&trace_id, "SELECT chat.messages", 1, WAIT).await.expect("trace");
    let client = trace.one("request chat.history.*.*");
    let server = trace.one("process chat.history.*.*");
    let select = trace.one("SELECT chat.messages");
    assert_kind(client, SpanKind::Client);
    assert_kind(server, SpanKind::Server);
    assert_kind(select, SpanKind::Client);
    trace.assert_child_of(server, client);
    trace.assert_child_of(select, server);
    assert_eq!((client.service_name.as_str(), server.service_name.as_str()), ("chat-cli", "history-service"));
    assert_eq!(server.attributes.str("messaging.destination.name"), Some("chat.history.general.alice"));
    assert_eq!(server.attributes.str("messaging.consumer.group.name"), Some("history"));
    assert_eq!(select.attributes.int("db.response.returned_rows"), Some(2));
    assert!(select.attributes.str("db.query.text").is_some_and(|q| q.contains("$1") && !q.contains("general")));
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_rooms_and_limits_get_service_errors_fast_never_a_timeout() {
    let (stack, _worker, _history) = spawn().await;
    let client = requester(&stack).await;
    for (subject, body, expected) in [
        ("chat.history.BAD_ROOM.tester", "", "invalid room name"),
        ("chat.history.general.tester", r#"{"limit":0}"#, "limit must be between 1 and 500"),
        ("chat.history.general.tester", r#"{"limit":501}"#, "limit must be between 1 and 500"),
        ("chat.history.general.tester", "not json", "request is not a history request"),
    ] {
        let started = Instant::now();
        let reply = client.request(subject, body.into()).await.expect("an answer, not a timeout");
        assert!(started.elapsed() < Duration::from_secs(2), "{subject} took {:?}", started.elapsed());
        let headers = reply.headers.expect("error headers");
        assert_eq!(headers.get("Nats-Service-Error-Code").map(|v| v.as_str()), Some("400"), "{subject} {body}");
        let message = headers.get("Nats-Service-Error").map(|v| v.as_str().to_owned()).unwrap_or_default();
        assert!(message.contains(expected), "{message:?}");
    }

    // The CLI turns the service error into a clear message and a non-zero exit.
    let run = stack.cli(&["history", "general", "--limit", "900"]).await.expect("cli");
    assert_eq!(run.code, Some(1));
    assert!(run.stderr.contains("answered 400: limit must be between 1 and 500"), "{}", run.stderr);
    let refused = stack.otlp.wait_for(WAIT, "a refused request span", |c| {
        c.spans.iter().find(|s| s.name == "process chat.history.*.*" && s.status == StatusCode::Error).cloned()
    });
    assert_eq!(refused.await.expect("span").attributes.str("error.type"), Some("bad_request"));
}

#[tokio::test(flavor = "multi_thread")]
async fn both_services_export_the_documented_metrics() {
    let (stack, _worker, _history) = spawn().await;
    send_and_wait(&stack, 2).await;
    stack.cli_ok(&["send", "general", "retry me", "--fault", "fail-once"]).await.expect("fail once");
    stack.cli_ok(&["send", "general", "poison", "--fault", "poison"]).await.expect("poison");
    let _ = stack.cli(&["history", "general", "--limit", "0"]).await;
    // A hostile traceparent reaching the worker is counted by the propagation counter.
    let client = requester(&stack).await;
    let mut headers = async_nats::HeaderMap::new();
    headers.insert("traceparent", "00-zz-not-valid-01");
    async_nats::jetstream::new(client)
        .publish_with_headers("chat.msg.general.mallory", headers, r#"{"text":"x"}"#.into())
        .await
        .expect("publish")
        .await
        .expect("stored");

    // (metric, label, least count)
    type AtLeast = (&'static str, Option<(&'static str, &'static str)>, f64);
    const AT_LEAST: [AtLeast; 6] = [
        ("messages.persisted", None, 3.0),
        ("messages.persist.errors", Some(("error.type", "injected_failure")), 1.0),
        ("messages.dead_lettered", None, 1.0),
        ("history.requests", Some(("result", "bad_request")), 1.0),
        ("history.requests", Some(("result", "ok")), 1.0),
        ("trace_context.propagation.failures", Some(("direction", "extract")), 1.0),
    ];
    let expected = [
        ("persist-worker", "messages.persisted", "{message}"),
        ("persist-worker", "messages.persist.errors", "{error}"),
        ("persist-worker", "messages.redelivered", "{message}"),
        ("persist-worker", "messages.dead_lettered", "{message}"),
        ("persist-worker", "messaging.nats.queue_wait", "s"),
        ("persist-worker", "trace_context.propagation.failures", "{failure}"),
        ("persist-worker", "process.cpu.time", "s"),
        ("persist-worker", "process.memory.usage", "By"),
        ("history-service", "history.requests", "{request}"),
        ("history-service", "history.request.duration", "s"),
        ("history-service", "process.cpu.time", "s"),
    ];
    let found = stack
        .otlp
        .wait_for(WAIT, "every documented metric", |c| {
            let all = expected.iter().all(|(service, name, unit)| {
                c.metrics.iter().any(|m| m.service_name == *service && m.name == *name && m.unit == *unit)
            });
            // Points of one metric can arrive in a later export than its first point, and
            // the counters of rare events exist at 0 from start-up: wait for the counts.
            let counted = AT_LEAST
                .iter()
                .all(|(name, attr, min)| latest_sum(&c.metrics, name, attr.as_slice()).is_some_and(|n| n >= *min));
            (all && counted).then(|| c.metrics.clone())
        })
        .await
        .expect("metrics");
    let failures = latest_sum(&found, "trace_context.propagation.failures", &[("direction", "extract")]);
    assert_eq!(failures, Some(1.0));
}

#[tokio::test(flavor = "multi_thread")]
async fn readiness_follows_the_database() {
    let (stack, mut worker, mut history) = spawn().await;
    stack.postgres.stop_server().expect("stop postgres");
    worker.wait_readyz(503, WAIT).await.expect("worker not ready");
    history.wait_readyz(503, WAIT).await.expect("history not ready");
    // Requests still get an answer: 503, not a timeout.
    let client = requester(&stack).await;
    let reply = client.request("chat.history.general.tester", "".into()).await.expect("answer");
    let code = reply.headers.and_then(|h| h.get("Nats-Service-Error-Code").map(|v| v.as_str().to_owned()));
    assert_eq!(code.as_deref(), Some("503"));
    stack.postgres.start_server().expect("start postgres");
    worker.wait_readyz(200, WAIT).await.expect("worker ready");
    history.wait_readyz(200, WAIT).await.expect("history ready");
}

/// The confused-deputy attack: a request whose reply subject names a JetStream API
/// subject (or someone else's chat subject) would make the service publish there with its
/// own rights. It is not answered at all, and counted.
#[tokio::test(flavor = "multi_thread")]
async fn a_reply_subject_that_is_not_a_chat_inbox_gets_no_answer() {
    let (stack, _worker, _history) = spawn().await;
    send_and_wait(&stack, 1).await;
    let attacker = async_nats::connect(stack.nats.url()).await.expect("nats");
    let mut forged = attacker.subscribe("chat.msg.general.bob").await.expect("watch");
    for reply in ["$JS.API.STREAM.DELETE.CHAT", "$JS.API.CONSUMER.DELETE.CHAT.persist-worker", "chat.msg.general.bob"] {
        attacker.publish_with_reply("chat.history.general.tester", reply, "".into()).await.expect("publish");
    }
    attacker.flush().await.expect("flush");
    let refused = stack.otlp.wait_for(WAIT, "three refused requests", |c| {
        latest_sum(&c.metrics, "history.requests", &[("result", "refused_reply_subject")]).filter(|n| *n >= 3.0)
    });
    refused.await.expect("refusals counted");
    let js = async_nats::jetstream::new(attacker.clone());
    let mut stream = js.get_stream("CHAT").await.expect("the stream is still there");
    assert!(stream.info().await.expect("info").state.messages >= 1);
    stream.get_consumer::<async_nats::jetstream::consumer::pull::Config>("persist-worker").await.expect("consumer");
    let forged = tokio::time::timeout(Duration::from_millis(300), futures::StreamExt::next(&mut forged)).await;
    assert!(forged.is_err(), "nothing was published as bob: {forged:?}");
    // History still answers a proper request.
    assert!(!stack.cli_ok(&["history", "general"]).await.expect("history").is_empty());
}

/// Issue 26, H10: started while NATS is unreachable (or losing it), the service still
/// stops on SIGTERM; it once ignored it for as long as NATS stayed away.
#[tokio::test(flavor = "multi_thread")]
async fn sigterm_stops_it_while_nats_is_unreachable() {
    let mut stack = ChatStack::start().await.expect("stack");
    stack.nats.stop();
    for started_with_nats_gone in [true, false] {
        if !started_with_nats_gone {
            stack.nats.start_again().await.expect("NATS back");
        }
        let port = test_harness::free_port();
        let command = stack.service_command("history-service", port);
        let mut process = test_harness::ChildProcess::spawn("history-service", command).expect("spawn");
        if started_with_nats_gone {
            process.wait_for_output("history-service started", WAIT).await.expect("started without NATS");
        } else {
            process.wait_for_output("answering history requests", WAIT).await.expect("serving");
            stack.nats.stop();
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
        process.signal("TERM").expect("SIGTERM");
        let exit = process.wait_exit(Duration::from_secs(15)).await;
        let exit = exit.unwrap_or_else(|e| panic!("NATS gone at start: {started_with_nats_gone}: {e}"));
        assert!(exit.success(), "a clean stop: {exit}\n{}", process.output());
    }
}

/// Issue 26, H8: a reply over nats-server's max_payload (1 MiB) was silently not sent and
/// the requester timed out. Now the reply holds the newest messages that fit and says
/// that older ones were left out.
#[tokio::test(flavor = "multi_thread")]
async fn a_history_too_large_for_one_reply_is_cut_to_the_newest_and_says_so() {
    let (stack, _worker, _history) = spawn().await;
    let text = "w".repeat(chat_protocol::MAX_TEXT_CHARS);
    stack.cli_ok(&["send", "general", &text, "--count", "200"]).await.expect("send");
    let deadline = Instant::now() + WAIT;
    let lines = loop {
        let lines = stack.cli_ok(&["history", "general", "--limit", "200"]).await.expect("history answers");
        let stored = lines.len() - 1;
        if lines[0]["truncated"] == true && stored > 0 {
            break lines;
        }
        assert!(Instant::now() < deadline, "never truncated: {stored} messages");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let count = lines[0]["count"].as_u64().expect("count");
    assert!((64..200).contains(&count), "as many as fit in 512 KiB: {count}");
    let seqs: Vec<u64> = lines[1..].iter().filter_map(|m| m["seq"].as_u64()).collect();
    assert!(seqs.windows(2).all(|w| w[0] > w[1]), "newest first");
}

/// Issue 20: `history.requests` appeared at its first request, so rate() and increase()
/// missed that request and the history panels stayed empty. Every result is exported at 0
/// before any request.
#[tokio::test(flavor = "multi_thread")]
async fn the_request_counter_is_at_zero_for_every_result_before_any_request() {
    let (stack, _worker, _history) = spawn().await;
    let results = ["ok", "bad_request", "error", "refused_reply_subject", "unreadable"];
    stack
        .otlp
        .wait_for(WAIT, "history.requests at 0 for every result", |c| {
            let at_zero = |r: &str| latest_sum(&c.metrics, "history.requests", &[("result", r)]) == Some(0.0);
            results.iter().all(|r| at_zero(r)).then_some(())
        })
        .await
        .expect("every result at 0");
}

//! Issue 26, H1: bytes a chat user puts in a header block or a subject that the NATS
//! client cannot read. Sent raw (no client library produces them); once, each one
//! panicked a service's connection task or dropped its connection on every delivery.
//! Now: the worker dead-letters such a message with its own reason and stores the
//! messages around it, history ignores such a request and keeps serving, `tail` shows
//! it with a note, and every process stays up and ready.

use std::time::Duration;

use test_harness::otlp::latest_sum;

use crate::app::{App, Options, WAIT};
use crate::raw::{RawClient, UNREADABLE_HEADER_BLOCKS, settle};

const CHAT: &[u8] = br#"{"text":"crafted"}"#;

#[tokio::test(flavor = "multi_thread")]
async fn unreadable_headers_are_dead_lettered_and_the_messages_around_them_are_stored() {
    let app = App::spawn(Options::default()).await;
    let mut alice = RawClient::connect(&app.stack.nats.url(), &app.token("alice", &["chat-user"])).await;
    let bob = app.chat_user("bob", &["chat-user"]).await;
    let js = async_nats::jetstream::new(bob.client.clone());
    for (i, (what, block)) in UNREADABLE_HEADER_BLOCKS.iter().enumerate() {
        alice.hpub(format!("chat.msg.h{i}.alice").as_bytes(), None, block, CHAT).await;
        alice.ping().await.unwrap_or_else(|e| panic!("{what}: the server refused the publish: {e}"));
        for j in 0..4 {
            let body = format!(r#"{{"text":"bob {i}-{j}"}}"#);
            let ack = js.publish(format!("chat.msg.h{i}.bob"), body.into()).await.expect("publish");
            ack.await.unwrap_or_else(|e| panic!("after {what}: bob's message not acked: {e}"));
        }
    }
    // A subject that is not UTF-8 (NATS lets a publisher use any bytes in a token).
    alice.publish(b"chat.msg.\xff\xfe.alice", CHAT).await;
    alice.ping().await.expect("the server accepts a subject that is not UTF-8");

    let rows = app.wait_rows("bob's 20 messages", |rows| rows.iter().filter(|r| r.1 == "bob").count() == 20).await;
    assert!(rows.iter().all(|(_, user, _)| user == "bob"), "a crafted message was stored: {rows:?}");
    for (i, (what, _)) in UNREADABLE_HEADER_BLOCKS.iter().enumerate() {
        let letter = app.wait_dead_letter(&format!("chat.msg.h{i}.alice")).await;
        let reason = letter.headers.get("Chat-Dlq-Reason").map(|v| v.as_str().to_owned());
        assert_eq!(reason.as_deref(), Some("malformed_headers"), "{what}");
        assert_eq!(letter.subject.as_str(), format!("chat.dlq.h{i}"), "{what}");
    }
    let letter = app.wait_dead_letter("chat.msg.\u{FFFD}\u{FFFD}.alice").await;
    assert_eq!(letter.headers.get("Chat-Dlq-Reason").map(|v| v.as_str()), Some("malformed_headers"));
    assert_eq!(letter.subject.as_str(), "chat.dlq.invalid");

    let counted = app.stack.otlp.wait_for(WAIT, "dead letters counted by reason", |c| {
        latest_sum(&c.metrics, "messages.dead_lettered", &[("reason", "malformed_headers")]).filter(|n| *n >= 6.0)
    });
    counted.await.expect("six dead letters counted as malformed_headers");
    assert_eq!(app.worker.readyz().await, Some(200), "the worker is still ready");
    let output = app.worker.process.output();
    assert!(output.contains("could not read in full"), "logged at WARN:\n{output}");
    assert!(!output.contains("panicked"), "nothing panicked:\n{output}");
    // The counter exists from the start (at 0): no service connection dropped.
    let disconnects =
        latest_sum(&app.stack.otlp.captured().metrics, "nats.client.events", &[("event", "disconnected")]);
    assert_eq!(disconnects, Some(0.0), "no service connection dropped");
}

#[tokio::test(flavor = "multi_thread")]
async fn history_ignores_an_unreadable_request_and_keeps_serving() {
    let app = App::spawn(Options { history: true, ..Options::default() }).await;
    let token = app.token("carol", &["chat-readonly"]);
    let mut carol = RawClient::connect(&app.stack.nats.url(), &token).await;
    let inbox = b"_INBOX.chat.carol.raw1";
    for (what, block) in UNREADABLE_HEADER_BLOCKS {
        carol.hpub(b"chat.history.general.carol", Some(inbox), block, b"{}").await;
        carol.ping().await.unwrap_or_else(|e| panic!("{what}: {e}"));
    }
    // A reply subject that is not UTF-8: read lossily, so not where carol asked.
    carol.hpub(b"chat.history.general.carol", Some(b"_INBOX.chat.carol.\xff"), b"NATS/1.0\r\n\r\n", b"{}").await;
    carol.ping().await.expect("accepted");
    settle().await;

    let ignored = app.stack.otlp.wait_for(WAIT, "unreadable requests counted", |c| {
        latest_sum(&c.metrics, "history.requests", &[("result", "unreadable")]).filter(|n| *n >= 6.0)
    });
    ignored.await.expect("six requests counted as unreadable");
    let history = app._history.as_ref().expect("history-service");
    assert_eq!(history.readyz().await, Some(200), "history-service is still ready");
    let reader = app.chat_user("carol", &["chat-readonly"]).await;
    let reply = reader.client.request("chat.history.general.carol", "{}".into()).await.expect("history still answers");
    assert!(reply.payload.starts_with(b"{"), "an answer: {:?}", reply.payload);
}

#[tokio::test(flavor = "multi_thread")]
async fn tail_shows_a_message_with_unreadable_headers_and_keeps_running() {
    let app = App::spawn(Options::default()).await;
    let token = app.token("bob", &["chat-user"]);
    let args = ["--json", "--token", token.as_str(), "--user", "bob", "tail", "general", "--count", "2"];
    let tail =
        app.stack.cli_command(&args).stderr(std::process::Stdio::piped()).stdout(std::process::Stdio::piped()).spawn();
    let tail = tail.expect("chat-cli tail");
    // `tail` says when it is subscribed; give it a moment rather than parse its stream.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let mut alice = RawClient::connect(&app.stack.nats.url(), &app.token("alice", &["chat-user"])).await;
    alice.hpub(b"chat.msg.general.alice", None, UNREADABLE_HEADER_BLOCKS[0].1, CHAT).await;
    alice.publish(b"chat.msg.general.alice", br#"{"text":"readable"}"#).await;
    alice.ping().await.expect("accepted");
    let output = tokio::time::timeout(WAIT, tail.wait_with_output()).await.expect("tail ends after 2").expect("ran");
    let (stdout, stderr) = (String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    assert_eq!(output.status.code(), Some(0), "stdout:\n{stdout}\nstderr:\n{stderr}");
    let texts: Vec<String> = stdout
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter_map(|v| v["text"].as_str().map(str::to_owned))
        .collect();
    assert_eq!(texts, ["crafted", "readable"], "stdout:\n{stdout}");
    assert!(stderr.contains("could not be read"), "a note for the unreadable one:\n{stderr}");
}

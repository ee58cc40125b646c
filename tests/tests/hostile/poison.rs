//! Poison sent by a chat user: every message ends as a row, a dead letter or a counted
//! alert, never silently dropped.

use std::time::Duration;

use async_nats::HeaderMap;
use sqlx::postgres::PgPoolOptions;
use test_harness::otlp::latest_sum;

use crate::app::{App, Options, WAIT};

/// JetStream publish as a chat user, with headers; the stream's answer.
async fn publish(
    app: &App,
    subject: &str,
    headers: HeaderMap,
    payload: Vec<u8>,
) -> Result<async_nats::jetstream::publish::PublishAck, String> {
    let user = subject.rsplit('.').next().unwrap_or_default();
    let alice = app.chat_user(user, &["chat-user"]).await;
    let js = async_nats::jetstream::new(alice.client.clone());
    let ack = js.publish_with_headers(subject.to_owned(), headers, payload.into()).await.map_err(|e| e.to_string())?;
    ack.await.map_err(|e| e.to_string())
}

#[tokio::test(flavor = "multi_thread")]
async fn oversize_messages_are_refused_at_publish_or_dead_lettered_never_dropped() {
    let app = App::spawn(Options::default()).await;
    // Over the stream's limit: the publisher gets the error, nothing is stored.
    let huge = format!(r#"{{"text":"{}"}}"#, "x".repeat(40 * 1024));
    let refused = publish(&app, "chat.msg.big.alice", HeaderMap::new(), huge.into_bytes()).await;
    assert!(refused.is_err(), "a 40 KiB message must be refused at publish: {refused:?}");
    // Stored but too large for a chat message: dead-lettered with its reason.
    let large = format!(r#"{{"text":"{}"}}"#, "y".repeat(20 * 1024));
    publish(&app, "chat.msg.large.alice", HeaderMap::new(), large.into_bytes()).await.expect("stored");
    let letter = app.wait_dead_letter("chat.msg.large.alice").await;
    assert_eq!(letter.headers.get("Chat-Dlq-Reason").map(|v| v.as_str()), Some("too_large"));
    assert!(app.rows().await.is_empty());
}

/// Headers that steer the server, and a planted dead-letter reason: copied as they were,
/// they made the dead letter's publish fail, and the message was then abandoned.
#[tokio::test(flavor = "multi_thread")]
async fn a_header_laden_poison_message_is_dead_lettered_with_its_headers_disarmed() {
    let app = App::spawn(Options::default()).await;
    let mut headers = HeaderMap::new();
    headers.insert("Nats-Expected-Stream", "CHAT");
    headers.insert("Nats-Expected-Last-Subject-Sequence", "0");
    headers.insert("Nats-Msg-Id", "sender-chosen-id");
    headers.insert("chat-dlq-reason", "nothing to see");
    for i in 0..80 {
        headers.insert(format!("X-Junk-{i}").as_str(), "j".repeat(100).as_str());
    }
    publish(&app, "chat.msg.laden.alice", headers, b"not json".to_vec()).await.expect("stored in CHAT");
    let letter = app.wait_dead_letter("chat.msg.laden.alice").await;
    let header = |name: &str| letter.headers.get(name).map(|v| v.as_str().to_owned());
    // Ours, not the planted one (which is copied under the prefix, or dropped if the
    // copied headers' budget was spent before it: counted either way).
    assert_eq!(header("Chat-Dlq-Reason").as_deref(), Some("malformed"));
    assert_eq!(header("chat-dlq-reason"), None);
    assert_eq!(header("Nats-Expected-Stream"), None);
    assert_eq!(header("Nats-Expected-Last-Subject-Sequence"), None);
    let copied = letter.headers.iter().filter(|(n, _)| AsRef::<str>::as_ref(*n).starts_with("Chat-Orig-")).count();
    let dropped: usize = header("Chat-Dlq-Headers-Dropped").and_then(|d| d.parse().ok()).unwrap_or(0);
    assert!(copied <= 64 && dropped > 0, "80 junk headers do not all fit: {copied} copied, {dropped} dropped");
    assert_eq!(copied + dropped, 84, "every sender header is copied or counted");
    let dead = app.stack.otlp.wait_for(WAIT, "counted", |c| {
        latest_sum(&c.metrics, "messages.dead_lettered", &[("reason", "malformed")]).filter(|n| *n >= 1.0)
    });
    dead.await.expect("dead letter counted");
}

/// NATS accepts a literal `*` as a subject token: such a message is no chat message.
#[tokio::test(flavor = "multi_thread")]
async fn a_wildcard_token_in_a_published_subject_is_dead_lettered() {
    let app = App::spawn(Options::default()).await;
    publish(&app, "chat.msg.*.alice", HeaderMap::new(), br#"{"text":"everywhere"}"#.to_vec()).await.expect("stored");
    let letter = app.wait_dead_letter("chat.msg.*.alice").await;
    assert_eq!(letter.headers.get("Chat-Dlq-Reason").map(|v| v.as_str()), Some("invalid_subject"));
    assert_eq!(letter.subject.as_str(), "chat.dlq.invalid");
    assert!(app.rows().await.is_empty());
}

/// A key taken by a different message (the sender's `Nats-Msg-Id`, stored with other
/// text, e.g. reused after JetStream's 2-minute duplicate window) is dead-lettered and
/// counted, never acked as if it were stored.
#[tokio::test(flavor = "multi_thread")]
async fn a_key_taken_by_another_message_is_dead_lettered_and_counted() {
    let app = App::spawn(Options::default()).await;
    let sent = app.cli_as("alice", &["send", "general", "first"]).await;
    assert_eq!(sent.code, Some(0), "{}", sent.stderr);
    app.wait_rows("the table exists", |rows| rows.len() == 1).await;
    let pool = PgPoolOptions::new().max_connections(1).connect(&app.stack.db.url).await.expect("db");
    sqlx::query(
        "INSERT INTO chat.messages (stream_created, stream_seq, room, username, text, sent_at, msg_id) \
         VALUES ('epoch', 999, 'general', 'alice', 'stored earlier', now(), 'taken-id')",
    )
    .execute(&pool)
    .await
    .expect("a row holding the id");
    pool.close().await;
    let sent = app.cli_as("alice", &["send", "general", "other text", "--msg-id", "taken-id"]).await;
    assert_eq!(sent.code, Some(0), "{}", sent.stderr);
    let letter = app.wait_dead_letter("chat.msg.general.alice").await;
    assert_eq!(letter.headers.get("Chat-Dlq-Reason").map(|v| v.as_str()), Some("id_conflict"));
    let counted = app.stack.otlp.wait_for(WAIT, "conflict counted", |c| {
        latest_sum(&c.metrics, "messages.persist.errors", &[("error.type", "id_conflict")]).filter(|n| *n >= 1.0)
    });
    counted.await.expect("an alert-worthy count");
    let texts: Vec<String> = app.rows().await.into_iter().map(|r| r.2).collect();
    assert_eq!(texts, ["stored earlier", "first"], "the stored rows are untouched");
}

/// The dead-letter stream refuses writes for a while: the poison message is retried and
/// every failure counted, and it lands in the DLQ once the stream takes it again.
#[tokio::test(flavor = "multi_thread")]
async fn a_dead_letter_that_cannot_be_written_is_retried_and_counted_until_it_lands() {
    let app = App::spawn(Options::default()).await;
    let admin = app.stack.admin().await.expect("admin");
    let js = async_nats::jetstream::new(admin.clone());
    let mut dlq = js.get_stream("CHAT_DLQ").await.expect("dlq").info().await.expect("info").config.clone();
    let full = async_nats::jetstream::stream::Config {
        max_messages: 1,
        discard: async_nats::jetstream::stream::DiscardPolicy::New,
        ..dlq.clone()
    };
    js.update_stream(full).await.expect("limit the DLQ");
    js.publish("chat.dlq.filler", "filler".into()).await.expect("publish").await.expect("fill the DLQ");

    publish(&app, "chat.msg.stuck.alice", HeaderMap::new(), b"not json".to_vec()).await.expect("stored");
    let failing = app.stack.otlp.wait_for(WAIT, "dead-letter failures counted", |c| {
        latest_sum(&c.metrics, "messages.dead_letter.failures", &[("reason", "malformed")]).filter(|n| *n >= 2.0)
    });
    failing.await.expect("the failure is counted, again and again");

    dlq.max_messages = -1;
    js.update_stream(dlq).await.expect("the DLQ takes writes again");
    let letter = app.wait_dead_letter("chat.msg.stuck.alice").await;
    assert_eq!(letter.headers.get("Chat-Dlq-Reason").map(|v| v.as_str()), Some("malformed"));
    let mut consumer = js
        .get_consumer_from_stream::<async_nats::jetstream::consumer::pull::Config, _, _>("persist-worker", "CHAT")
        .await
        .expect("consumer");
    let deadline = std::time::Instant::now() + WAIT;
    while consumer.info().await.expect("consumer info").num_ack_pending > 0 {
        assert!(std::time::Instant::now() < deadline, "the message was never settled after it landed");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Issue 26, H6: the sender chooses `Nats-Msg-Id`, and it is part of a unique index that
/// PostgreSQL refuses over ~2.7 KB. Once, such an id failed the whole batch (row by row
/// after that) and the message was dead-lettered as `db_rejected`; now it is refused up
/// front with its own reason, and the messages beside it are stored.
#[tokio::test(flavor = "multi_thread")]
async fn an_oversized_message_id_is_dead_lettered_with_its_reason_and_its_neighbours_stored() {
    let app = App::spawn(Options::default()).await;
    let mut headers = HeaderMap::new();
    headers.insert("Nats-Msg-Id", "i".repeat(3000).as_str());
    publish(&app, "chat.msg.ids.alice", headers, br#"{"text":"long id"}"#.to_vec()).await.expect("stored in CHAT");
    for i in 0..5 {
        let body = format!(r#"{{"text":"neighbour {i}"}}"#).into_bytes();
        publish(&app, "chat.msg.ids.bob", HeaderMap::new(), body).await.expect("stored in CHAT");
    }
    let letter = app.wait_dead_letter("chat.msg.ids.alice").await;
    assert_eq!(letter.headers.get("Chat-Dlq-Reason").map(|v| v.as_str()), Some("invalid_message_id"));
    let rows = app.wait_rows("the five neighbours", |rows| rows.len() == 5).await;
    assert!(rows.iter().all(|(_, user, _)| user == "bob"), "{rows:?}");
    let fallback = app.worker.process.output().contains("inserting row by row");
    assert!(!fallback, "no batch fell back to row-by-row inserts");
}

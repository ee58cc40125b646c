//! The stream and the consumer vanish under the worker: it reports not ready until the
//! setup step (`make up`) has created them again (a consumer after its recorded
//! position), then resumes and stores every acknowledged message exactly once.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use sqlx::postgres::PgPoolOptions;

use crate::app::{App, Options, WAIT};

/// A recreated stream restarts at sequence 1: keyed on the sequence alone, its first
/// messages hit the old rows and were acked without being stored.
#[tokio::test(flavor = "multi_thread")]
async fn a_recreated_stream_stores_messages_whose_sequences_collide_with_old_rows() {
    let mut app = App::spawn(Options::default()).await;
    let sent = app.cli_as("alice", &["send", "general", "old", "--count", "3"]).await;
    assert_eq!(sent.code, Some(0), "{}", sent.stderr);
    app.wait_rows("3 old rows", |rows| rows.len() == 3).await;

    let admin = app.stack.admin().await.expect("admin");
    let js = async_nats::jetstream::new(admin);
    js.delete_stream("CHAT").await.expect("delete the stream (and its consumer)");
    // The worker notices and is not ready until the setup step runs again.
    app.worker.wait_readyz(503, WAIT).await.expect("not ready without its stream");
    assert!(js.get_stream("CHAT").await.is_err(), "the worker's user cannot create a stream");
    app.set_up_streams().await;
    app.worker.wait_readyz(200, WAIT).await.expect("ready again");
    let sent = app.cli_as("alice", &["send", "general", "new", "--count", "3"]).await;
    assert_eq!(sent.code, Some(0), "{}", sent.stderr);
    let seqs: BTreeSet<u64> = sent.json_lines().iter().filter_map(|l| l["seq"].as_u64()).collect();
    assert_eq!(seqs, BTreeSet::from([1, 2, 3]), "the new stream restarts at 1");
    let rows = app.wait_rows("6 rows", |rows| rows.len() == 6).await;
    assert_eq!(rows.iter().filter(|r| r.2 == "new").count(), 3, "{rows:?}");
}

/// The consumer is deleted while messages pour in, and once more while the setup step
/// cannot create it again (a stream squats on the dead-letter subjects): readiness shows
/// the gap, and every message the stream acknowledged is stored exactly once.
#[tokio::test(flavor = "multi_thread")]
async fn a_consumer_deleted_under_load_is_recreated_and_loses_nothing() {
    let mut app = App::spawn(Options::default()).await;
    let admin = app.stack.admin().await.expect("admin");
    let js = async_nats::jetstream::new(admin);

    let load = app.cli_as("alice", &["load", "--rate", "200", "--duration", "3s"]);
    let delete = async {
        tokio::time::sleep(Duration::from_millis(1000)).await;
        js.delete_consumer_from_stream("persist-worker", "CHAT").await.expect("delete the consumer");
    };
    let (load, ()) = tokio::join!(load, delete);
    assert_eq!(load.code, Some(0), "{}\n{}", load.stdout, load.stderr);
    app.worker.wait_readyz(503, WAIT).await.expect("not ready without its consumer");
    app.set_up_streams().await;
    app.worker.wait_readyz(200, WAIT).await.expect("ready again");

    // Setting up again is blocked while another stream holds chat.dlq.>: not ready.
    js.delete_stream("CHAT_DLQ").await.expect("delete the DLQ stream");
    js.create_stream(async_nats::jetstream::stream::Config {
        name: "SQUATTER".to_owned(),
        subjects: vec!["chat.dlq.>".to_owned()],
        ..Default::default()
    })
    .await
    .expect("squat");
    js.delete_consumer_from_stream("persist-worker", "CHAT").await.expect("delete the consumer again");
    app.worker.wait_readyz(503, WAIT).await.expect("not ready while it cannot pull");
    let blocked = app.stack.set_up_streams(&[("ACK_WAIT", "5s")]).await;
    assert!(blocked.is_err(), "the setup step cannot create CHAT_DLQ while SQUATTER holds its subjects");
    js.delete_stream("SQUATTER").await.expect("leave");
    app.set_up_streams().await;
    app.worker.wait_readyz(200, WAIT).await.expect("ready again");

    let acked: usize = js.get_stream("CHAT").await.expect("CHAT").info().await.expect("info").state.messages as usize;
    assert!(acked >= 500, "the load published {acked} messages");
    let rows = app.wait_rows("every stored message", |rows| rows.len() >= acked).await;
    assert_eq!(rows.len(), acked, "stored exactly once");
}

/// Issue 26, H4: a consumer created again (deleted, or its store lost) started at the
/// first message of the stream: every stored message was processed again ("already
/// stored") and every poison message dead-lettered a second time. Now it starts after
/// the ack floor the worker records, and nothing is replayed.
#[tokio::test(flavor = "multi_thread")]
async fn a_consumer_created_again_starts_after_the_recorded_position() {
    let mut app = App::spawn(Options::default()).await;
    let sent = app.cli_as("alice", &["send", "general", "before", "--count", "20"]).await;
    assert_eq!(sent.code, Some(0), "{}", sent.stderr);
    let alice = app.chat_user("alice", &["chat-user"]).await;
    let js_alice = async_nats::jetstream::new(alice.client.clone());
    js_alice.publish("chat.msg.general.alice", "not json".into()).await.expect("publish").await.expect("stored");
    app.wait_rows("20 rows", |rows| rows.len() == 20).await;
    app.wait_dead_letter("chat.msg.general.alice").await;

    // The worker records its consumer's ack floor every lag read (10 s).
    let pool = PgPoolOptions::new().max_connections(1).connect(&app.stack.db.url).await.expect("db");
    let deadline = Instant::now() + WAIT;
    loop {
        let floor: Option<i64> = sqlx::query_scalar("SELECT max(ack_floor) FROM chat.consumer_position")
            .fetch_one(&pool)
            .await
            .unwrap_or(None);
        if floor == Some(21) {
            break;
        }
        assert!(Instant::now() < deadline, "position not recorded: {floor:?}");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    pool.close().await;

    let admin = app.stack.admin().await.expect("admin");
    let js = async_nats::jetstream::new(admin);
    js.delete_consumer_from_stream("persist-worker", "CHAT").await.expect("delete the consumer");
    app.worker.wait_readyz(503, WAIT).await.expect("not ready without its consumer");
    app.set_up_streams().await;
    let stream = js.get_stream("CHAT").await.expect("CHAT");
    let info = stream.consumer_info("persist-worker").await.expect("the consumer, created again");
    assert_eq!(
        info.config.deliver_policy,
        async_nats::jetstream::consumer::DeliverPolicy::ByStartSequence { start_sequence: 22 },
        "starts after the recorded ack floor"
    );
    app.worker.wait_readyz(200, WAIT).await.expect("ready again");
    let sent = app.cli_as("alice", &["send", "general", "after", "--count", "5"]).await;
    assert_eq!(sent.code, Some(0), "{}", sent.stderr);
    app.wait_rows("25 rows", |rows| rows.len() == 25).await;
    assert_eq!(app.dead_letters().await.len(), 1, "the poison message is dead-lettered once");
    let output = app.worker.process.output();
    assert!(!output.contains("already stored"), "nothing was replayed:\n{output}");
}

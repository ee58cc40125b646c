//! The stream and the consumer vanish under the worker: it reports not ready, sets them
//! up again, and stores every acknowledged message exactly once.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

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
    // The worker notices, sets both up again and is ready again.
    app.worker.wait_readyz(200, WAIT).await.expect("ready again");
    let deadline = Instant::now() + WAIT;
    while js.get_stream("CHAT").await.is_err() {
        assert!(Instant::now() < deadline, "the worker did not create the stream again");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let sent = app.cli_as("alice", &["send", "general", "new", "--count", "3"]).await;
    assert_eq!(sent.code, Some(0), "{}", sent.stderr);
    let seqs: BTreeSet<u64> = sent.json_lines().iter().filter_map(|l| l["seq"].as_u64()).collect();
    assert_eq!(seqs, BTreeSet::from([1, 2, 3]), "the new stream restarts at 1");
    let rows = app.wait_rows("6 rows", |rows| rows.len() == 6).await;
    assert_eq!(rows.iter().filter(|r| r.2 == "new").count(), 3, "{rows:?}");
}

/// The consumer is deleted while messages pour in, and once more while the worker cannot
/// set it up again (a stream squats on the dead-letter subjects): readiness shows the gap,
/// and every message the stream acknowledged is stored exactly once.
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
    js.delete_stream("SQUATTER").await.expect("leave");
    app.worker.wait_readyz(200, WAIT).await.expect("ready again");

    let acked: usize = js.get_stream("CHAT").await.expect("CHAT").info().await.expect("info").state.messages as usize;
    assert!(acked >= 500, "the load published {acked} messages");
    let rows = app.wait_rows("every stored message", |rows| rows.len() >= acked).await;
    assert_eq!(rows.len(), acked, "stored exactly once");
}

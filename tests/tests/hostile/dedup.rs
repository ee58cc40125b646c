//! Issue 26, H2: JetStream de-duplicates by `Nats-Msg-Id` across the whole stream,
//! whoever publishes. When chat-cli's ids were `<run>-<i>`, a user who saw another's
//! first message could publish the next ids first: the other user's messages were
//! dropped as duplicates while chat-cli reported them sent. Now each id is random, and
//! a publish the stream answers "duplicate" at its first copy is an error, not a send.

use async_nats::HeaderMap;

use crate::app::{App, Options};

#[tokio::test(flavor = "multi_thread")]
async fn message_ids_cannot_be_predicted_and_a_taken_id_is_reported_not_sent() {
    let app = App::spawn(Options::default()).await;
    let sent = app.cli_as("bob", &["send", "general", "hello", "--count", "3"]).await;
    assert_eq!(sent.code, Some(0), "{}", sent.stderr);
    let ids: Vec<String> = sent.json_lines().iter().filter_map(|l| l["msg_id"].as_str().map(str::to_owned)).collect();
    assert_eq!(ids.len(), 3, "{}", sent.stdout);
    for id in &ids {
        assert!(id.len() == 32 && id.bytes().all(|b| b.is_ascii_hexdigit()), "a random id: {id}");
    }
    // Nothing shared to extrapolate from: no two ids start alike.
    for (a, b) in [(0, 1), (0, 2), (1, 2)] {
        assert_ne!(ids[a][..6], ids[b][..6], "{ids:?}");
    }

    // An id taken first by another user (what a collision would be): bob is told his
    // message was not stored, and the stream holds alice's.
    let alice = app.chat_user("alice", &["chat-user"]).await;
    let js = async_nats::jetstream::new(alice.client.clone());
    let mut headers = HeaderMap::new();
    headers.insert("Nats-Msg-Id", "taken-first");
    let ack = js.publish_with_headers("chat.msg.general.alice", headers, br#"{"text":"first"}"#.to_vec().into());
    ack.await.expect("publish").await.expect("stored");
    let dropped = app.cli_as("bob", &["send", "general", "mine", "--msg-id", "taken-first"]).await;
    assert_eq!(dropped.code, Some(1), "stdout:\n{}\nstderr:\n{}", dropped.stdout, dropped.stderr);
    assert!(dropped.stderr.contains("not stored"), "{}", dropped.stderr);
    assert!(dropped.json_lines().is_empty(), "nothing reported sent: {}", dropped.stdout);
    let rows = app.wait_rows("bob's three and alice's", |rows| rows.len() == 4).await;
    assert!(rows.iter().all(|(_, _, text)| text != "mine"), "{rows:?}");
}

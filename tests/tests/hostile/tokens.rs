//! Tokens at the edges of what an issuer may sign (issue 26, H9 and the far-future
//! `exp`): a large token reaches the callout and logs in; a token that never expires
//! gives a session that works (bounded to a day by the callout), not one closed at once.

use std::time::Duration;

use crate::app::{App, Options};
use crate::raw::RawClient;

#[tokio::test(flavor = "multi_thread")]
async fn a_large_token_logs_in() {
    let app = App::spawn(Options::default()).await;
    let mut claims = app.issuer.claims("alice", &["chat-user"]);
    claims["padding"] = serde_json::json!("p".repeat(6000));
    let token = app.issuer.token(&claims);
    assert!(token.len() > 8000, "a token over the old 4 KB control line: {} bytes", token.len());
    let mut raw = RawClient::connect(&app.stack.nats.url(), &token).await;
    raw.publish(b"chat.msg.general.alice", br#"{"text":"big token"}"#).await;
    raw.ping().await.expect("logged in, and allowed to publish as alice");
    app.wait_rows("the message of the large token", |rows| rows.len() == 1).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_token_that_never_expires_gives_a_working_session() {
    let app = App::spawn(Options::default()).await;
    for exp in [10_000_000_000_u64, u64::MAX / 2] {
        let mut claims = app.issuer.claims("alice", &["chat-user"]);
        claims["exp"] = serde_json::json!(exp);
        let mut raw = RawClient::connect(&app.stack.nats.url(), &app.issuer.token(&claims)).await;
        tokio::time::sleep(Duration::from_secs(2)).await;
        raw.publish(b"chat.msg.general.alice", br#"{"text":"still here"}"#).await;
        raw.ping().await.unwrap_or_else(|e| panic!("exp {exp}: the session closed: {e}"));
    }
    app.wait_rows("both messages", |rows| rows.len() == 2).await;
}

//! Least privilege: what each user may publish and subscribe, checked against the real
//! server; snooping on other users' inboxes; reply-subject attacks.

use std::time::Duration;

use test_harness::otlp::latest_sum;

use crate::app::{App, Options, Probe, WAIT};

/// Subjects a user must be refused, and a few it must be allowed (harmless ones only:
/// an allowed probe is really published).
struct Grant<'a> {
    publish: &'a [&'a str],
    no_publish: &'a [&'a str],
    subscribe: &'a [&'a str],
    no_subscribe: &'a [&'a str],
}

async fn assert_grant(who: &str, probe: &Probe, grant: &Grant<'_>) {
    let mut wrong = Vec::new();
    for subject in grant.publish {
        if !probe.may_publish(subject).await {
            wrong.push(format!("{who} may not publish {subject} but should"));
        }
    }
    for subject in grant.no_publish {
        if probe.may_publish(subject).await {
            wrong.push(format!("{who} may publish {subject}"));
        }
    }
    for subject in grant.subscribe {
        if !probe.may_subscribe(subject).await {
            wrong.push(format!("{who} may not subscribe {subject} but should"));
        }
    }
    for subject in grant.no_subscribe {
        if probe.may_subscribe(subject).await {
            wrong.push(format!("{who} may subscribe {subject}"));
        }
    }
    assert!(wrong.is_empty(), "{wrong:#?}");
}

/// Subjects that would delete, forge or read what is not the user's.
const DANGEROUS: &[&str] = &[
    "$JS.API.STREAM.DELETE.CHAT",
    "$JS.API.STREAM.PURGE.CHAT",
    "$JS.API.STREAM.MSG.DELETE.CHAT",
    "$JS.API.CONSUMER.DELETE.CHAT.persist-worker",
    "$JS.API.STREAM.DELETE.CHAT_DLQ",
    "$JS.ACK.CHAT.persist-worker.1.1.1.1.1.0",
    "nats.trace.events",
    "$SRV.PING",
    "$SYS.REQ.USER.AUTH",
    "_INBOX.svc.persist-worker.x",
    // Telemetry of a service the user is not (forged spans), and the telemetry streams.
    "telemetry.spans.history-service",
    "telemetry.dlq.spans",
    "$JS.API.STREAM.DELETE.TELEMETRY",
    "$JS.API.STREAM.PURGE.TELEMETRY",
    "$JS.API.STREAM.UPDATE.TELEMETRY",
    "$JS.API.CONSUMER.DELETE.TELEMETRY.otlp-bridge",
];

#[tokio::test(flavor = "multi_thread")]
async fn every_user_and_role_is_held_to_its_grant() {
    let app = App::spawn(Options::default()).await;
    let alice = app.chat_user("alice", &["chat-user"]).await;
    let no_publish: Vec<&str> =
        [&["chat.msg.general.bob", "chat.dlq.general", "_INBOX.chat.bob.x", "chat.history.general.bob"][..], DANGEROUS]
            .concat();
    // Nor read anyone's telemetry (it carries subjects, user names, trace ids).
    let no_subscribe =
        ["_INBOX.>", "_INBOX.chat.bob.>", "_INBOX.svc.persist-worker.>", "chat.dlq.>", ">", "$JS.API.>", "telemetry.>"];
    let grant = Grant {
        publish: &["chat.history.general.alice"],
        no_publish: &no_publish,
        subscribe: &["chat.msg.general.*", "chat.msg.>", "_INBOX.chat.alice.>"],
        no_subscribe: &[&no_subscribe[..], &["nats.trace.events", "chat.history.*.*"]].concat(),
    };
    assert_grant("alice (chat-user)", &alice, &grant).await;
    assert!(alice.may_publish("chat.msg.general.alice").await, "alice posts as herself");

    let carol = app.chat_user("carol", &["chat-readonly"]).await;
    let no_publish: Vec<&str> =
        [&["chat.msg.general.carol", "chat.msg.general.alice", "chat.history.general.alice"][..], DANGEROUS].concat();
    let grant = Grant {
        publish: &["chat.history.general.carol"],
        no_publish: &no_publish,
        subscribe: &["chat.msg.>", "_INBOX.chat.carol.>"],
        no_subscribe: &no_subscribe,
    };
    assert_grant("carol (chat-readonly)", &carol, &grant).await;

    let persist = app.service_user("persist", "NATS_PERSIST_PASSWORD").await;
    let dangerous_for_persist: Vec<&str> =
        DANGEROUS.iter().copied().filter(|s| !s.starts_with("$JS.ACK.CHAT.persist-worker")).collect();
    // Issue 26, H5: no subject that creates or changes a stream or the consumer (a stream
    // update can set limits that drop messages): that is the setup step's user.
    const SETUP_ONLY: &[&str] = &[
        "$JS.API.STREAM.CREATE.CHAT",
        "$JS.API.STREAM.UPDATE.CHAT",
        "$JS.API.STREAM.UPDATE.CHAT_DLQ",
        "$JS.API.CONSUMER.CREATE.CHAT.persist-worker",
    ];
    let no_publish: Vec<&str> = [
        &["chat.msg.general.alice", "chat.history.general.alice", "_INBOX.chat.alice.x"][..],
        &dangerous_for_persist,
        SETUP_ONLY,
    ]
    .concat();
    let grant = Grant {
        publish: &[
            "chat.dlq.probe",
            "$JS.API.STREAM.INFO.CHAT",
            "$JS.API.CONSUMER.INFO.CHAT.persist-worker",
            "telemetry.spans.persist-worker",
        ],
        no_publish: &no_publish,
        subscribe: &["_INBOX.svc.persist-worker.x"],
        no_subscribe: &["chat.msg.>", "_INBOX.>", "_INBOX.chat.alice.>", "nats.trace.events", "chat.history.*.*"],
    };
    assert_grant("persist", &persist, &grant).await;

    let setup = app.service_user("setup", "NATS_SETUP_PASSWORD").await;
    let setup_may: Vec<&str> =
        DANGEROUS.iter().copied().filter(|s| !s.starts_with("$JS.API.STREAM.UPDATE.TELEMETRY")).collect();
    let no_publish: Vec<&str> =
        [&["chat.msg.general.alice", "chat.dlq.general", "_INBOX.chat.alice.x"][..], &setup_may].concat();
    let grant = Grant {
        publish: &[
            "$JS.API.STREAM.INFO.CHAT",
            "$JS.API.CONSUMER.INFO.CHAT.persist-worker",
            "$JS.API.STREAM.INFO.TELEMETRY",
            "$JS.API.CONSUMER.INFO.TELEMETRY.otlp-bridge",
        ],
        no_publish: &no_publish,
        subscribe: &["_INBOX.svc.stream-setup.x", "_INBOX.svc.telemetry-setup.x"],
        no_subscribe: &["chat.msg.>", "_INBOX.>", "chat.dlq.>", "nats.trace.events", "chat.history.*.*"],
    };
    assert_grant("setup", &setup, &grant).await;

    let history = app.service_user("history", "NATS_HISTORY_PASSWORD").await;
    let own_telemetry = |s: &&str| !s.starts_with("telemetry.spans.history-service");
    let no_publish: Vec<&str> =
        [
            &[
                "chat.msg.general.bob",
                "chat.dlq.general",
                "chat.history.general.alice",
                "telemetry.spans.persist-worker",
            ][..],
            &DANGEROUS.iter().copied().filter(own_telemetry).collect::<Vec<_>>(),
        ]
        .concat();
    let grant = Grant {
        publish: &["_INBOX.chat.alice.x", "telemetry.spans.history-service"],
        no_publish: &no_publish,
        subscribe: &["chat.history.general.alice", "$SRV.PING", "_INBOX.svc.history-service.x"],
        no_subscribe: &["chat.msg.>", "_INBOX.>", "chat.dlq.>", "nats.trace.events"],
    };
    assert_grant("history", &history, &grant).await;

    let tracer = app.service_user("tracer", "NATS_TRACER_PASSWORD").await;
    let no_publish: Vec<&str> =
        [&["chat.msg.general.alice", "_INBOX.chat.alice.x", "telemetry.spans.nats-trace-bridge"][..], DANGEROUS]
            .concat();
    let grant = Grant {
        // Its telemetry as exported: service.name nats-server.
        publish: &["telemetry.spans.nats-server"],
        no_publish: &no_publish,
        subscribe: &["nats.trace.events", "_INBOX.svc.nats-trace-bridge.x"],
        no_subscribe: &["chat.msg.>", "_INBOX.>", ">"],
    };
    assert_grant("tracer", &tracer, &grant).await;

    let auth = app.service_user("auth", "NATS_AUTH_PASSWORD").await;
    let grant = Grant {
        publish: &["$SYS._INBOX.probe.x", "telemetry.spans.auth-service"],
        no_publish: &[
            "chat.msg.general.alice",
            "$SYS.REQ.USER.AUTH",
            "_INBOX.chat.alice.x",
            ">",
            "telemetry.spans.persist-worker",
        ],
        subscribe: &["$SYS.REQ.USER.AUTH", "_INBOX.svc.auth-service.x"],
        no_subscribe: &[">", "_INBOX.>", "$SYS._INBOX.>"],
    };
    assert_grant("auth", &auth, &grant).await;

    // The OTLP bridge: its consumer, its acks, dead letters; no stream changes, no
    // telemetry of its own through TELEMETRY, no chat.
    let bridge = app.service_user("otlp-bridge", "NATS_OTLP_BRIDGE_PASSWORD").await;
    let bridge_may = |s: &&str| !s.starts_with("telemetry.dlq.");
    let no_publish: Vec<&str> = [
        &["chat.msg.general.alice", "telemetry.spans.otlp-bridge", "$JS.API.CONSUMER.CREATE.TELEMETRY.otlp-bridge"][..],
        &DANGEROUS.iter().copied().filter(bridge_may).collect::<Vec<_>>(),
    ]
    .concat();
    let grant = Grant {
        publish: &[
            "telemetry.dlq.spans",
            "$JS.API.STREAM.INFO.TELEMETRY",
            "$JS.API.CONSUMER.INFO.TELEMETRY.otlp-bridge",
        ],
        no_publish: &no_publish,
        subscribe: &["_INBOX.svc.otlp-bridge.x"],
        no_subscribe: &["telemetry.>", "_INBOX.>", "chat.msg.>", ">"],
    };
    assert_grant("otlp-bridge", &bridge, &grant).await;

    // The worker still works after all that: nothing it needs was taken away.
    let sent = app.cli_as("alice", &["send", "general", "still stored"]).await;
    assert_eq!(sent.code, Some(0), "{}", sent.stderr);
    app.wait_rows("alice's message stored", |rows| rows.iter().any(|r| r.2 == "still stored")).await;
    assert_eq!(app.worker.readyz().await, Some(200));
}

/// A chat user sees its own replies and nobody else's: the PubAck of bob's publish and
/// the history reply bob asked for never reach alice.
#[tokio::test(flavor = "multi_thread")]
async fn a_chat_user_cannot_read_other_users_replies() {
    let app = App::spawn(Options { history: true, ..Options::default() }).await;
    let alice = app.chat_user("alice", &["chat-user"]).await;
    assert!(!alice.may_subscribe("_INBOX.>").await);
    assert!(!alice.may_subscribe("_INBOX.chat.*.>").await);
    assert!(!alice.may_subscribe("_INBOX.chat.bob.>").await);
    // What a snooper subscribed to anyway would receive: nothing of bob's.
    let mut snoop = alice.client.subscribe("_INBOX.chat.bob.>").await.expect("subscribe");
    let sent = app.cli_as("bob", &["send", "general", "bob's secret"]).await;
    assert_eq!(sent.code, Some(0), "{}", sent.stderr);
    let history = app.cli_as("bob", &["history", "general"]).await;
    assert_eq!(history.code, Some(0), "{}", history.stderr);
    let leaked = tokio::time::timeout(Duration::from_millis(500), futures::StreamExt::next(&mut snoop)).await;
    assert!(leaked.is_err(), "alice read one of bob's replies: {leaked:?}");
}

/// The confused deputy: a request whose reply subject is a JetStream API subject or
/// another user's chat subject, sent by a read-only user. Nothing is deleted, nothing
/// is forged, and the refusals are counted.
#[tokio::test(flavor = "multi_thread")]
async fn a_reply_subject_attack_deletes_nothing_and_forges_nothing() {
    let app = App::spawn(Options { history: true, ..Options::default() }).await;
    let sent = app.cli_as("alice", &["send", "general", "before the attack"]).await;
    assert_eq!(sent.code, Some(0), "{}", sent.stderr);
    let watcher = app.stack.admin().await.expect("admin");
    let mut forged = watcher.subscribe("chat.msg.general.bob").await.expect("watch bob's subject");
    watcher.flush().await.expect("flush");

    let carol = app.chat_user("carol", &["chat-readonly"]).await;
    let replies = [
        "$JS.API.STREAM.DELETE.CHAT",
        "$JS.API.CONSUMER.DELETE.CHAT.persist-worker",
        "$JS.API.STREAM.PURGE.CHAT",
        "chat.msg.general.bob",
        "_INBOX.svc.persist-worker.x",
    ];
    for reply in replies {
        carol.client.publish_with_reply("chat.history.general.carol", reply, "".into()).await.expect("publish");
    }
    carol.client.flush().await.expect("flush");
    let refused = app.stack.otlp.wait_for(WAIT, "the refusals counted", |c| {
        latest_sum(&c.metrics, "history.requests", &[("result", "refused_reply_subject")])
            .filter(|n| *n >= replies.len() as f64)
    });
    refused.await.expect("every attack refused");

    let js = async_nats::jetstream::new(watcher.clone());
    let mut stream = js.get_stream("CHAT").await.expect("CHAT still exists");
    assert!(stream.info().await.expect("info").state.messages >= 1, "nothing purged");
    stream.get_consumer::<async_nats::jetstream::consumer::pull::Config>("persist-worker").await.expect("consumer");
    let forged = tokio::time::timeout(Duration::from_millis(300), futures::StreamExt::next(&mut forged)).await;
    assert!(forged.is_err(), "a message was published as bob: {forged:?}");
    let after = app.cli_as("alice", &["send", "general", "after the attack"]).await;
    assert_eq!(after.code, Some(0), "{}", after.stderr);
    app.wait_rows("messages still stored", |rows| rows.iter().any(|r| r.2 == "after the attack")).await;
}

/// Issue 26, H3: a reply subject is the requester's choice, and every user's inbox prefix
/// shows on their messages. Alice named bob's inbox as the reply of her history
/// requests: 20 requests put 19 MB into bob's connection. Now history-service answers
/// only the inbox of the user in the request subject (the callout lets each user request
/// with its own name only).
#[tokio::test(flavor = "multi_thread")]
async fn history_answers_only_the_requesters_own_inbox() {
    let app = App::spawn(Options { history: true, ..Options::default() }).await;
    let bob = app.chat_user("bob", &["chat-user"]).await;
    let mut bob_inbox = bob.client.subscribe("_INBOX.chat.bob.>").await.expect("bob's inbox");
    bob.client.flush().await.expect("flush");
    let alice = app.chat_user("alice", &["chat-user"]).await;
    for _ in 0..20 {
        let request = alice.client.publish_with_reply("chat.history.general.alice", "_INBOX.chat.bob.x1", "{}".into());
        request.await.expect("publish");
    }
    assert!(!alice.may_publish("chat.history.general.bob").await, "alice cannot request as bob");
    let refused = app.stack.otlp.wait_for(WAIT, "the requests refused", |c| {
        latest_sum(&c.metrics, "history.requests", &[("result", "refused_reply_subject")]).filter(|n| *n >= 20.0)
    });
    refused.await.expect("every request naming bob's inbox refused");
    let flooded = tokio::time::timeout(Duration::from_millis(300), futures::StreamExt::next(&mut bob_inbox)).await;
    assert!(flooded.is_err(), "a history reply reached bob: {flooded:?}");
    let own = alice.client.request("chat.history.general.alice", "{}".into()).await.expect("alice's own request");
    assert!(own.payload.starts_with(b"{\"room\":\"general\""), "{:?}", own.payload);
}

/// Issue 26, H5: the worker's user once could update `CHAT_DLQ` to `max_msgs: 1`, which
/// cut the dead letters down to one. Now it cannot, and the dead letters stay.
#[tokio::test(flavor = "multi_thread")]
async fn the_workers_user_cannot_shrink_a_stream() {
    let app = App::spawn(Options::default()).await;
    let alice = app.chat_user("alice", &["chat-user"]).await;
    let js_alice = async_nats::jetstream::new(alice.client.clone());
    for i in 0..3 {
        let subject = format!("chat.msg.r{i}.alice");
        js_alice.publish(subject, "not json".into()).await.expect("publish").await.expect("stored");
    }
    let admin = async_nats::jetstream::new(app.stack.admin().await.expect("admin"));
    let deadline = std::time::Instant::now() + WAIT;
    let mut dlq = admin.get_stream("CHAT_DLQ").await.expect("CHAT_DLQ");
    while dlq.info().await.expect("info").state.messages < 3 {
        assert!(std::time::Instant::now() < deadline, "three dead letters");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let persist = app.service_user("persist", "NATS_PERSIST_PASSWORD").await;
    let js = async_nats::jetstream::new(persist.client.clone());
    let mut shrunk = dlq.info().await.expect("info").config.clone();
    shrunk.max_messages = 1;
    assert!(js.update_stream(shrunk).await.is_err(), "the worker's user may not update a stream");
    assert_eq!(dlq.info().await.expect("info").state.messages, 3, "no dead letter lost");
}

//! The clustered profile, natively: three real nats-server 2.12 nodes running the
//! project's `nats/cluster.conf` (authenticated routes, the same accounts and callout),
//! streams at `STREAM_REPLICAS=3`, two persist-workers on the one durable consumer and two
//! auth callouts in a queue group. The stream leader's node is killed with SIGKILL in the
//! middle of a steady load and started again; nothing acknowledged may be lost or stored
//! twice, and every message stays one trace.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use async_nats::jetstream;
use sqlx::postgres::PgPoolOptions;
use test_harness::model::{AttributesExt as _, SpanKind};
use test_harness::oidc::TestIssuer;
use test_harness::{ChatStack, Service};

const WAIT: Duration = Duration::from_secs(60);
/// 10,000 messages: 400 per second for 25 s.
const RATE: &str = "400";
const DURATION: &str = "25s";
/// Quick redeliveries, so that messages caught by the node loss come back within the test.
const WORKER_ENV: &[(&str, &str)] =
    &[("STREAM_REPLICAS", "3"), ("NAK_DELAY", "100ms"), ("NAK_DELAY_MAX", "1s"), ("ACK_WAIT", "5s")];

struct Cluster {
    stack: ChatStack,
    issuer: TestIssuer,
    auth: Vec<Service>,
    workers: Vec<Service>,
}

impl Cluster {
    async fn spawn(workers: usize) -> Self {
        let stack = ChatStack::start_secured_cluster().await.expect("three-node cluster");
        let issuer = TestIssuer::start().await.expect("issuer");
        let mut auth = Vec::new();
        for _ in 0..2 {
            auth.push(stack.spawn_service("auth-service", &[("OIDC_ISSUER", issuer.issuer())]).await.expect("auth"));
        }
        let mut worker_list = Vec::new();
        for _ in 0..workers {
            worker_list.push(stack.spawn_service("persist-worker", WORKER_ENV).await.expect("persist-worker"));
        }
        Self { stack, issuer, auth, workers: worker_list }
    }

    fn cli_args(&self, user: &str) -> Vec<String> {
        let token = self.issuer.token(&self.issuer.claims(user, &["chat-user"]));
        ["--json", "--token", token.as_str(), "--user", user, "--timeout", "10s"].map(str::to_owned).to_vec()
    }

    /// Runs `chat-cli` as `user` with `args` beside whatever else runs.
    fn cli_as(&self, user: &str, args: &[&str]) -> tokio::process::Command {
        let all = [self.cli_args(user), args.iter().map(|a| (*a).to_owned()).collect()].concat();
        self.stack.cli_command(&all.iter().map(String::as_str).collect::<Vec<_>>())
    }

    async fn stream_info(&self, name: &str) -> jetstream::stream::Info {
        let js = jetstream::new(self.stack.admin().await.expect("admin"));
        let deadline = Instant::now() + WAIT;
        loop {
            // While a stream elects a leader, its info request may go unanswered for a moment.
            if let Ok(mut stream) = js.get_stream(name).await
                && let Ok(info) = stream.info().await
                && info.cluster.as_ref().is_some_and(|c| c.leader.is_some())
            {
                return info.clone();
            }
            assert!(Instant::now() < deadline, "stream {name} has no leader within {WAIT:?}");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Rows as msg id -> (count, trace ids).
    async fn rows(&self) -> BTreeMap<String, (usize, BTreeSet<String>)> {
        let pool = PgPoolOptions::new().max_connections(1).connect(&self.stack.db.url).await.expect("db");
        let rows: Vec<(Option<String>, Option<String>)> =
            sqlx::query_as("SELECT msg_id, trace_id FROM chat.messages").fetch_all(&pool).await.unwrap_or_default();
        pool.close().await;
        let mut by_id: BTreeMap<String, (usize, BTreeSet<String>)> = BTreeMap::new();
        for (msg_id, trace_id) in rows {
            let entry = by_id.entry(msg_id.unwrap_or_default()).or_default();
            entry.0 += 1;
            entry.1.extend(trace_id);
        }
        by_id
    }
}

/// The load's summary: acknowledged message ids and how many were reported failed.
fn acknowledged(summary: &serde_json::Value) -> (BTreeSet<String>, usize) {
    let sent = summary["sent"].as_u64().expect("sent");
    let failed: BTreeSet<u64> =
        summary["failed"].as_array().expect("failed").iter().filter_map(|v| v.as_u64()).collect();
    let ids = summary["acked_msg_ids"].as_array().expect("acked_msg_ids");
    let acked: BTreeSet<String> = ids.iter().filter_map(|v| v.as_str().map(str::to_owned)).collect();
    assert_eq!(acked.len(), ids.len(), "every message has its own id");
    assert_eq!(acked.len() as u64, summary["acked"].as_u64().expect("acked"), "{summary}");
    assert_eq!(acked.len() as u64 + failed.len() as u64, sent, "acked = sent - failed: {summary}");
    (acked, failed.len())
}

#[tokio::test(flavor = "multi_thread")]
async fn killing_the_stream_leader_mid_run_loses_and_duplicates_nothing_and_each_message_stays_one_trace() {
    let mut cluster = Cluster::spawn(2).await;
    let info = cluster.stream_info("CHAT").await;
    assert_eq!(info.config.num_replicas, 3, "STREAM_REPLICAS=3 makes CHAT an R3 stream");
    assert_eq!(cluster.stream_info("CHAT_DLQ").await.config.num_replicas, 3);
    let leader = info.cluster.and_then(|c| c.leader).expect("leader");

    let load = cluster
        .cli_as("alice", &["load", "--rate", RATE, "--duration", DURATION])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("chat-cli load");

    // A third of the way in, the leader's node dies without a goodbye; it comes back later.
    tokio::time::sleep(Duration::from_secs(8)).await;
    cluster.stack.node_mut(&leader).expect("leader node").stop();
    // Meanwhile the callout keeps admitting users, also with one of its two instances gone.
    cluster.auth.remove(0).process.kill();
    let history = cluster.cli_as("bob", &["send", "general", "admitted"]).output().await.expect("chat-cli send");
    let stderr = String::from_utf8_lossy(&history.stderr);
    assert!(history.status.success(), "bob is admitted while a node and a callout are down: {stderr}");
    // Every service is connected to some node, and says so.
    for service in cluster.workers.iter_mut().chain(cluster.auth.iter_mut()) {
        service.wait_readyz(200, WAIT).await.expect("ready with one node down");
    }
    tokio::time::sleep(Duration::from_secs(6)).await;
    cluster.stack.node_mut(&leader).expect("leader node").start_again().await.expect("the node rejoins");
    let new_leader = cluster.stream_info("CHAT").await.cluster.and_then(|c| c.leader);
    assert!(new_leader.is_some() && new_leader.as_ref() != Some(&leader), "another node took over: {new_leader:?}");

    let output = tokio::time::timeout(WAIT, load.wait_with_output()).await.expect("load ends").expect("load output");
    let (stdout, stderr) = (String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    let summary: serde_json::Value = stdout
        .lines()
        .find_map(|l| serde_json::from_str(l).ok())
        .unwrap_or_else(|| panic!("no summary: {stdout}\n{stderr}"));
    let (acked, failed) = acknowledged(&summary);
    // The load really ran (a slow machine may send a little less than 10,000), and the
    // publishes caught by the election were retried, not given up.
    let sent = summary["sent"].as_u64().unwrap_or_default() as usize;
    assert!(
        sent >= 8_000 && acked.len() * 10 >= sent * 9,
        "most publishes acknowledged through the failover: {summary}"
    );

    // Every acknowledged publish is stored exactly once (a publish retried after a lost
    // ack, or a message redelivered to the other worker, is not a second row).
    let deadline = Instant::now() + WAIT;
    let rows = loop {
        let rows = cluster.rows().await;
        if acked.iter().all(|id| rows.contains_key(id)) {
            break rows;
        }
        let missing: Vec<&String> = acked.iter().filter(|id| !rows.contains_key(*id)).take(5).collect();
        assert!(Instant::now() < deadline, "acknowledged but not stored (first 5): {missing:?}; {summary}");
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    let twice: Vec<_> = rows.iter().filter(|(_, (n, _))| *n > 1).take(5).collect();
    assert!(twice.is_empty(), "stored more than once: {twice:?}");
    // Only this run's messages (and bob's one) are stored.
    assert!(rows.len() <= acked.len() + failed + 1, "{} rows for {} acknowledged", rows.len(), acked.len());

    // One trace per message: the row's trace id is its publish's, and that trace holds the
    // producer span and at least one process span; redeliveries stay in it, marked.
    let spans = cluster
        .stack
        .otlp
        .wait_for(WAIT, "a process span for every stored message", |c| {
            let processed: BTreeSet<&str> = c
                .spans
                .iter()
                .filter(|s| s.kind == SpanKind::Consumer && s.service_name == "persist-worker")
                .filter_map(|s| s.attributes.str("messaging.message.id"))
                .collect();
            acked.iter().all(|id| processed.contains(id.as_str())).then(|| c.spans.clone())
        })
        .await
        .expect("spans");
    let producer_trace: BTreeMap<&str, &str> = spans
        .iter()
        .filter(|s| s.kind == SpanKind::Producer && s.service_name == "chat-cli")
        .filter_map(|s| Some((s.attributes.str("messaging.message.id")?, s.trace_id.as_str())))
        .collect();
    let retries = spans
        .iter()
        .filter(|s| s.kind == SpanKind::Producer)
        .flat_map(|s| &s.events)
        .filter(|e| e.name == "publish retry")
        .count();
    let mut redelivered = 0;
    for span in spans.iter().filter(|s| s.kind == SpanKind::Consumer && s.service_name == "persist-worker") {
        let Some(id) = span.attributes.str("messaging.message.id") else { continue };
        assert_eq!(producer_trace.get(id), Some(&span.trace_id.as_str()), "{id}: process span in the publish's trace");
        redelivered += usize::from(span.attributes.bool("messaging.message_redelivered") == Some(true));
    }
    for id in &acked {
        let traces = &rows[id].1;
        assert_eq!(traces.len(), 1, "{id}: one trace id on its row");
        assert_eq!(
            traces.first().map(String::as_str),
            producer_trace.get(id.as_str()).copied(),
            "{id}: the row's trace"
        );
    }
    println!(
        "cluster failover: {} acknowledged ({failed} failed), {} stored, {retries} publish retries, \
         {redelivered} redeliveries, leader {leader} -> {new_leader:?}, ack p99 {} ms",
        acked.len(),
        rows.len(),
        summary["ack_latency_ms"]["p99"]
    );
}

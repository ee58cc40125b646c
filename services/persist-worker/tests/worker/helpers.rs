//! `spawn_app` for the worker: the stack, a worker with test-friendly timings, and
//! database reads.

use std::time::{Duration, Instant};

use sqlx::postgres::PgPoolOptions;
use test_harness::{ChatStack, Service};

/// Bound for every wait on exported telemetry or stored rows.
pub(crate) const WAIT: Duration = Duration::from_secs(30);
pub(crate) const PROCESS: &str = "process chat.msg.*.*";
pub(crate) const PUBLISH: &str = "publish chat.msg.*.*";
pub(crate) const INSERT: &str = "INSERT chat.messages";

/// Short delays so redeliveries happen within a test; faults enabled.
pub(crate) const WORKER_ENV: &[(&str, &str)] = &[
    ("DEMO_FAULTS", "true"),
    ("NAK_DELAY", "100ms"),
    ("NAK_DELAY_MAX", "500ms"),
    ("PROCESSING_DEADLINE", "400ms"),
    ("ACK_WAIT", "5s"),
];

pub(crate) struct TestApp {
    pub(crate) stack: ChatStack,
}

impl TestApp {
    pub(crate) async fn spawn() -> (Self, Service) {
        let app = Self { stack: ChatStack::start().await.expect("stack") };
        let worker = app.worker(&[]).await;
        (app, worker)
    }

    pub(crate) async fn worker(&self, extra: &[(&str, &str)]) -> Service {
        let env: Vec<_> = WORKER_ENV.iter().chain(extra).copied().collect();
        self.stack.spawn_service("persist-worker", &env).await.expect("persist-worker ready")
    }

    /// `chat-cli send general <text> <args>`; returns the (seq, trace_id) of each message.
    pub(crate) async fn send(&self, text: &str, args: &[&str]) -> Vec<(u64, String)> {
        let lines = self.stack.cli_ok(&[&["send", "general", text], args].concat()).await.expect("send");
        lines
            .iter()
            .map(|l| (l["seq"].as_u64().expect("seq"), l["trace_id"].as_str().expect("trace_id").to_owned()))
            .collect()
    }

    pub(crate) async fn rows(&self) -> Vec<Row> {
        let pool = PgPoolOptions::new().max_connections(1).connect(&self.stack.db.url).await.expect("db");
        let rows = sqlx::query_as::<_, Row>(
            "SELECT stream_seq, room, username, text, trace_id FROM chat.messages ORDER BY stream_seq",
        )
        .fetch_all(&pool)
        .await;
        pool.close().await;
        rows.unwrap_or_default()
    }

    /// Waits until at least `n` rows are stored (the table may not exist yet).
    pub(crate) async fn wait_rows(&self, n: usize, timeout: Duration) -> Vec<Row> {
        let deadline = Instant::now() + timeout;
        loop {
            let rows = self.rows().await;
            if rows.len() >= n {
                return rows;
            }
            assert!(Instant::now() < deadline, "only {} of {n} rows stored within {timeout:?}", rows.len());
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub(crate) struct Row {
    pub(crate) stream_seq: i64,
    pub(crate) room: String,
    pub(crate) username: String,
    pub(crate) text: String,
    pub(crate) trace_id: Option<String>,
}

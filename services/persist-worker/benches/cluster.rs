//! The persist path on one nats-server with R1 streams against a three-node cluster with
//! R3 streams, with one and two worker replicas, side by side in one run:
//! `cargo build --release --workspace --bins && cargo bench -p persist-worker --bench cluster`.
//!
//! Each setup: fresh servers and database (the cluster: three real nats-server nodes on
//! loopback, the worker with `STREAM_REPLICAS=3`), tracing on everywhere (100 %, to the
//! in-process OTLP receiver), then
//! - drain: a backlog of [`BACKLOG`] traced messages published by chat-cli, drained by the
//!   worker replicas (messages/s from the workers' start to the last row committed, and
//!   the workers' CPU per message);
//! - paced: chat-cli `load` at [`RATE`] msg/s for [`PACED_SECONDS`] s into running
//!   workers, publish -> commit latency per row (`persisted_at - sent_at`): p50 and p99.
//!
//! Ratios are to the R1 / one-worker setup of the same run. Everything shares the
//! machine's cores (three NATS nodes, PostgreSQL, the workers, the publisher and the
//! receiver): the figures say what replication costs here, not what a cluster of
//! machines does.

use std::time::{Duration, Instant};

use test_harness::{ChatStack, Service, cpu_seconds};

mod common;
use common::{publish_to_commit_ms, rows};

const BACKLOG: usize = 20_000;
const RATE: u32 = 1_000;
const PACED_SECONDS: u32 = 10;

#[derive(Debug, Clone, Copy)]
struct Setup {
    replicas: u8,
    workers: usize,
}

impl Setup {
    fn label(self) -> String {
        format!("R{} x{} worker{}", self.replicas, self.workers, if self.workers > 1 { "s" } else { "" })
    }

    async fn stack(self) -> ChatStack {
        if self.replicas > 1 { ChatStack::start_cluster().await } else { ChatStack::start().await }.expect("stack")
    }

    async fn workers(self, stack: &ChatStack) -> Vec<Service> {
        let replicas = self.replicas.to_string();
        let env = [("STREAM_REPLICAS", replicas.as_str()), ("RUST_LOG", "warn"), ("LOG_FORMAT", "json")];
        let mut workers = Vec::new();
        for _ in 0..self.workers {
            workers.push(stack.spawn_service("persist-worker", &env).await.expect("worker"));
        }
        workers
    }
}

struct Figures {
    per_second: f64,
    cpu_us_per_message: f64,
    p50_ms: f64,
    p99_ms: f64,
}

async fn drain(setup: Setup) -> (f64, f64) {
    let stack = setup.stack().await;
    drop(setup.workers(&stack).await); // creates the streams with the setup's replicas
    let count = BACKLOG.to_string();
    stack
        .cli_ok(&["send", "general", "benchmark message", "--count", &count, "--concurrency", "1024"])
        .await
        .expect("backlog");
    let started = Instant::now();
    let workers = setup.workers(&stack).await;
    while rows(&stack.db.url).await < BACKLOG {
        assert!(started.elapsed() < Duration::from_secs(300), "{}: backlog not drained", setup.label());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let elapsed = started.elapsed().as_secs_f64();
    let cpu: f64 = workers.iter().map(|w| cpu_seconds(w.process.pid())).sum();
    (BACKLOG as f64 / elapsed, cpu * 1e6 / BACKLOG as f64)
}

/// Publish -> commit at [`RATE`] msg/s: (p50 ms, p99 ms).
async fn paced(setup: Setup) -> (f64, f64) {
    let stack = setup.stack().await;
    let _workers = setup.workers(&stack).await;
    let duration = format!("{PACED_SECONDS}s");
    stack.cli_ok(&["load", "--rate", &RATE.to_string(), "--duration", &duration]).await.expect("load");
    publish_to_commit_ms(&stack.db.url, f64::from(RATE * PACED_SECONDS) * 0.95).await
}

#[tokio::main]
async fn main() {
    let setups = [
        Setup { replicas: 1, workers: 1 },
        Setup { replicas: 1, workers: 2 },
        Setup { replicas: 3, workers: 1 },
        Setup { replicas: 3, workers: 2 },
    ];
    let mut results = Vec::new();
    for setup in setups {
        let (per_second, cpu_us_per_message) = drain(setup).await;
        let (p50_ms, p99_ms) = paced(setup).await;
        let figures = Figures { per_second, cpu_us_per_message, p50_ms, p99_ms };
        println!(
            "{:16} drain {:7.0} msg/s  worker CPU {:5.1} µs/msg   at {RATE} msg/s publish -> commit p50 {:6.1} ms  p99 {:7.1} ms",
            setup.label(),
            figures.per_second,
            figures.cpu_us_per_message,
            figures.p50_ms,
            figures.p99_ms
        );
        results.push((setup, figures));
    }
    let base = &results[0].1;
    for (setup, f) in &results[1..] {
        println!(
            "{:16} vs R1 x1 worker: throughput {:.2}x, p99 {:+.1} ms",
            setup.label(),
            f.per_second / base.per_second,
            f.p99_ms - base.p99_ms
        );
    }
}

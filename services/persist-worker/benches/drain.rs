//! The persist path at saturation, tracing on vs off, alternating in one run:
//! `cargo build --release --workspace --bins && cargo bench -p persist-worker --bench drain`.
//!
//! Each round: a fresh nats-server and database, a backlog of traced messages published by
//! chat-cli, then the worker drains it. Reports messages/s (worker ready -> last row
//! committed), worker CPU per message (utime+stime from /proc), the `process`/`ack` spans
//! that never reached the receiver (dropped), and the on/off ratios; then one paced run
//! each way for the publish -> commit latency (p50, p99).
//! With tracing on, every span goes to the in-process OTLP receiver (which, like a real
//! collector, costs CPU on the same two cores).
//!
//! `DRAIN_PERF=1` also samples the worker with `perf record -e cpu-clock -g` during the
//! tracing-on rounds (files `target/perf-drain-<n>.data`; read with `perf report`).

use std::time::{Duration, Instant};

use test_harness::ChatStack;
use test_harness::model::SpanRecord;
use test_harness::otlp::Captured;

const BACKLOG: usize = 20_000;

fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let after = stat.rsplit_once(')').map(|(_, rest)| rest).unwrap_or_default();
    let fields: Vec<f64> = after.split_whitespace().skip(11).take(2).filter_map(|f| f.parse().ok()).collect();
    fields.iter().sum::<f64>() / 100.0
}

/// The numbers in the answer to `query` (empty while the table does not exist yet).
async fn psql_numbers(url: &str, query: &str) -> Vec<f64> {
    let out = tokio::process::Command::new("psql").args([url, "-tA", "-F", " ", "-c", query]).output().await;
    let out = out.expect("psql");
    String::from_utf8_lossy(&out.stdout).split_whitespace().filter_map(|f| f.parse().ok()).collect()
}

async fn rows(url: &str) -> usize {
    let count = psql_numbers(url, "SELECT count(*) FROM chat.messages").await;
    count.first().map_or(0, |n| *n as usize)
}

/// The worker's settings in every round: JSON log lines as in the containers, batches
/// of 256, two in flight.
fn worker_env(tracing: bool) -> [(&'static str, &'static str); 5] {
    [
        ("OTEL_SDK_DISABLED", if tracing { "false" } else { "true" }),
        ("RUST_LOG", "warn"),
        ("LOG_FORMAT", "json"),
        ("BATCH_SIZE", "256"),
        ("IN_FLIGHT_BATCHES", "2"),
    ]
}

struct Round {
    per_second: f64,
    cpu_us_per_message: f64,
    spans_dropped: Option<usize>,
}

async fn round(tracing: bool) -> Round {
    let stack = ChatStack::start().await.expect("stack");
    drop(stack.spawn_service("persist-worker", &[]).await.expect("creates the stream"));
    stack
        .cli_ok(&["send", "general", "benchmark message", "--count", &BACKLOG.to_string(), "--concurrency", "1024"])
        .await
        .expect("backlog");
    let started = Instant::now();
    let worker = stack.spawn_service("persist-worker", &worker_env(tracing)).await.expect("worker");
    let perf = (tracing && std::env::var_os("DRAIN_PERF").is_some()).then(|| {
        let out = test_harness::workspace_root().join(format!("target/perf-drain-{}.data", worker.process.pid()));
        std::process::Command::new("perf")
            .args(["record", "-e", "cpu-clock", "-g", "-o"])
            .arg(out)
            .args(["-p", &worker.process.pid().to_string()])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("perf (Debian package linux-perf)")
    });
    while rows(&stack.db.url).await < BACKLOG {
        assert!(started.elapsed() < Duration::from_secs(300), "backlog not drained");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let elapsed = started.elapsed().as_secs_f64();
    let cpu = cpu_seconds(worker.process.pid());
    if let Some(perf) = perf {
        let _ = std::process::Command::new("kill").args(["-INT", &perf.id().to_string()]).status();
        let _ = perf.wait_with_output();
    }
    let spans_dropped = if tracing { Some(spans_dropped(&stack).await) } else { None };
    Round { per_second: BACKLOG as f64 / elapsed, cpu_us_per_message: cpu * 1e6 / BACKLOG as f64, spans_dropped }
}

/// Publish -> commit latency (ms, p50 and p99) at a paced, light load: `chat-cli load`
/// at [`PACED_RATE`] for [`PACED_SECONDS`], then each row's `persisted_at - sent_at`
/// (`persisted_at` is the insert transaction's start, just before its commit).
async fn paced_latency(tracing: bool) -> (f64, f64) {
    let stack = ChatStack::start().await.expect("stack");
    let _worker = stack.spawn_service("persist-worker", &worker_env(tracing)).await.expect("worker");
    let rate = PACED_RATE.to_string();
    let duration = format!("{PACED_SECONDS}s");
    stack.cli_ok(&["load", "--rate", &rate, "--duration", &duration]).await.expect("paced load");
    let query = "SELECT count(*), percentile_cont(0.5) WITHIN GROUP (ORDER BY ms), \
                 percentile_cont(0.99) WITHIN GROUP (ORDER BY ms) \
                 FROM (SELECT extract(epoch FROM persisted_at - sent_at) * 1000 AS ms FROM chat.messages) t";
    let started = Instant::now();
    loop {
        let fields = psql_numbers(&stack.db.url, query).await;
        // The load run has waited for each message's stream ack: all of them get stored.
        if let [count, p50, p99] = fields[..]
            && count >= f64::from(PACED_RATE * PACED_SECONDS) * 0.95
        {
            return (p50, p99);
        }
        assert!(started.elapsed() < Duration::from_secs(60), "paced messages not stored: {fields:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// `process` and `ack` spans the worker should have exported (one each per message) but
/// that never reached the receiver, waiting for the batch processor's last export.
async fn spans_dropped(stack: &ChatStack) -> usize {
    let expected = 2 * BACKLOG;
    let count = |c: &Captured| {
        let per_message = |s: &&SpanRecord| s.name == "process chat.msg.*.*" || s.name == "ack chat.msg.*.*";
        c.spans.iter().filter(|s| s.service_name == "persist-worker").filter(per_message).count()
    };
    let all = stack
        .otlp
        .wait_for(Duration::from_secs(20), "the worker's spans", |c| (count(c) >= expected).then_some(expected));
    let exported = all.await.unwrap_or_else(|_| count(&stack.otlp.captured()));
    expected.saturating_sub(exported)
}

/// Off/on pairs (`DRAIN_PAIRS` overrides); each pair gives one ratio, the report is their
/// median (disk and cache state drift during a run, and a pair sees the same state twice).
const PAIRS: usize = 5;
/// The paced run's offered load: `chat-cli load` paces with Tokio's 1 ms timer, so this is
/// about what one loader sends evenly; a light load, far below saturation.
const PACED_RATE: u32 = 1_000;
const PACED_SECONDS: u32 = 10;

#[tokio::main]
async fn main() {
    let pairs = std::env::var("DRAIN_PAIRS").ok().and_then(|n| n.parse().ok()).unwrap_or(PAIRS).max(1);
    let mut throughput = Vec::new();
    let mut cpu = Vec::new();
    for _ in 0..pairs {
        let off = round(false).await;
        let on = round(true).await;
        for (name, r) in [("off", &off), ("on", &on)] {
            let dropped = r.spans_dropped.map(|n| format!("   spans dropped {n}")).unwrap_or_default();
            println!(
                "tracing {name:3}  {:8.0} msg/s   worker CPU {:6.1} µs/msg{dropped}",
                r.per_second, r.cpu_us_per_message
            );
        }
        throughput.push(on.per_second / off.per_second);
        cpu.push(on.cpu_us_per_message / off.cpu_us_per_message);
    }
    let median = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let (off_p50, off_p99) = paced_latency(false).await;
    let (on_p50, on_p99) = paced_latency(true).await;
    println!(
        "publish -> commit at {PACED_RATE} msg/s: off p50 {off_p50:.1} ms p99 {off_p99:.1} ms, \
         on p50 {on_p50:.1} ms p99 {on_p99:.1} ms (p99 on - off {:+.1} ms)",
        on_p99 - off_p99
    );
    println!(
        "ratio on/off, median of {pairs} pairs: throughput {:.3} (pairs {:.2}..{:.2}), worker CPU per message {:.3}",
        median(&mut throughput),
        throughput[0],
        throughput[pairs - 1],
        median(&mut cpu)
    );
}

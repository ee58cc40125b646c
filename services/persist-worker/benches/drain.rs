//! The persist path at saturation, tracing on vs off, alternating in one run:
//! `cargo build --release --workspace --bins && cargo bench -p persist-worker --bench drain`.
//!
//! Each round: a fresh nats-server and database, a backlog of traced messages published by
//! chat-cli, then the worker drains it. Reports messages/s (worker ready -> last row
//! committed), worker CPU per message (utime+stime from /proc), the `process`/`ack` spans
//! that never reached the receiver (dropped), and the on/off ratios.
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

async fn rows(url: &str) -> i64 {
    let out = tokio::process::Command::new("psql")
        .args([url, "-tAc", "SELECT count(*) FROM chat.messages"])
        .output()
        .await
        .expect("psql");
    String::from_utf8_lossy(&out.stdout).trim().parse().unwrap_or(0)
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
    let sdk_disabled = if tracing { "false" } else { "true" };
    // As in the containers: JSON log lines.
    let env = [
        ("OTEL_SDK_DISABLED", sdk_disabled),
        ("RUST_LOG", "warn"),
        ("LOG_FORMAT", "json"),
        ("BATCH_SIZE", "256"),
        ("IN_FLIGHT_BATCHES", "2"),
    ];
    let started = Instant::now();
    let worker = stack.spawn_service("persist-worker", &env).await.expect("worker");
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
    while rows(&stack.db.url).await < BACKLOG as i64 {
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

/// Off/on pairs; each pair gives one ratio, the report is their median (disk and cache
/// state drift during a run, and a pair sees the same state twice).
const PAIRS: usize = 5;

#[tokio::main]
async fn main() {
    let mut throughput = Vec::new();
    let mut cpu = Vec::new();
    for _ in 0..PAIRS {
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
    println!(
        "ratio on/off, median of {PAIRS} pairs: throughput {:.3} (pairs {:.2}..{:.2}), worker CPU per message {:.3}",
        median(&mut throughput),
        throughput[0],
        throughput[PAIRS - 1],
        median(&mut cpu)
    );
}

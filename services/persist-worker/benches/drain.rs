//! The persist path at saturation, tracing off, on (100 %) and head-sampled (10 %),
//! alternating in one run:
//! `cargo build --release --workspace --bins && cargo bench -p persist-worker --bench drain`.
//!
//! Each round: a fresh nats-server and database, a backlog of traced messages published by
//! chat-cli (sampled as the round's setting says), then the worker drains it. Reports
//! messages/s (rows committed per second from the first commit to the last, by the rows'
//! `persisted_at`: the worker's start-up is not the drain's rate, it is reported apart as
//! the time from starting the worker to its first commit), worker CPU per message (the
//! scheduler's nanoseconds per thread, from /proc), the bench process's CPU per message
//! (in traced rounds mostly the OTLP receiver taking the spans in), the `process` spans
//! that never reached the receiver (dropped), and the ratios to the `off` round of the
//! same triple (triples alternate their order: off, on, 10 %, then 10 %, on, off); then
//! the saturation of the whole path with the loader running (tracing off), and paced runs
//! each way at half and a quarter of it for the publish -> commit latency (p50, p99,
//! achieved rate).
//! With tracing on, every span goes to the in-process OTLP receiver, which shares the two
//! cores (it keeps the requests and decodes them into spans only when the bench reads
//! them, after the drain: decoding as they arrived cost 9-14 µs per message, about what
//! the traced worker itself costs). The worker uses its default batch span processor
//! settings.
//!
//! `DRAIN_PERF=on` (or `off`, `10%`) also samples the worker with `perf record -e
//! cpu-clock --call-graph dwarf` during those rounds (files
//! `target/perf-drain-<pid>.data`; read with `perf report`; release builds have no frame
//! pointers, so `DRAIN_PERF_CALLGRAPH=fp` gives flat profiles only;
//! `DRAIN_PERF_EVENT=page-faults` records each page fault instead). `DRAIN_BACKLOG=100000`
//! makes the rounds longer (more samples). `DRAIN_PROTOCOL=http/protobuf` makes the
//! worker export over OTLP/HTTP. `DRAIN_PACED_RATE=9000` runs only the paced part at that
//! rate; `DRAIN_WORKER_ENV="OTEL_BSP_MAX_EXPORT_BATCH_SIZE=512"` gives the worker more
//! settings (comma-separated) in every round.
//!
//! `DRAIN_COUNT=instructions` counts the worker's instructions per message instead
//! (valgrind; see `drain/instructions.rs`): figures that do not move with the machine;
//! `DRAIN_CALLGRIND_ARGS="--cache-sim=yes ..."` adds simulated cache misses per message.
//!
//! `DRAIN_TOGETHER=1` drains off, on and 10 % side by side instead, each on its own stack
//! (see `drain/together.rs`): the three see the same machine at the same moments.
//!
//! `DRAIN_VIA=nats` compares the two roads of the worker's spans instead (seed 004): each
//! pair is a round exporting directly over OTLP/gRPC and one with
//! `OTEL_TRACES_EXPORTER=nats` (OTLP batches published to the TELEMETRY stream), both at
//! 100 %; the ratios are NATS to direct. After a NATS round's drain (and the batch
//! processor's last export), otlp-bridge is started on the backlog of spans it left in
//! TELEMETRY and forwards them to the receiver's OTLP/HTTP endpoint: its spans per second
//! (bridge start -> every span received) and CPU per span.

use std::time::{Duration, Instant};

use test_harness::model::SpanRecord;
use test_harness::otlp::Captured;
use test_harness::{ChatStack, cpu_seconds};

mod common;
use common::{publish_to_commit_ms, rows};
#[path = "drain/instructions.rs"]
mod instructions;
#[path = "drain/together.rs"]
mod together;

/// A number from the environment (the `DRAIN_*` knobs), if set and valid.
fn env_number<T: std::str::FromStr>(name: &str) -> Option<T> {
    std::env::var(name).ok().and_then(|n| n.parse().ok())
}

/// Messages per drain round (`DRAIN_BACKLOG` overrides, e.g. for a longer profile).
fn backlog() -> usize {
    env_number("DRAIN_BACKLOG").unwrap_or(20_000)
}

/// `telemetry::bench::DEFAULT_BSP_MAX_QUEUE_SIZE`, as text (checked in `main`).
const BSP_QUEUE: &str = "16384";

/// Tracing in a round.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Tracing {
    Off,
    On,
    /// `parentbased_traceidratio` 0.1 in the publisher and the worker.
    Sampled,
    /// 100 %, the worker's spans published to TELEMETRY (`OTEL_TRACES_EXPORTER=nats`).
    Nats,
}

impl Tracing {
    fn label(self) -> &'static str {
        match self {
            Self::Off => "off",
            Self::On => "on",
            Self::Sampled => "10%",
            Self::Nats => "nats",
        }
    }

    /// The sampler of the publisher and the worker.
    fn sampler(self) -> [(&'static str, &'static str); 2] {
        match self {
            Self::Sampled => [("OTEL_TRACES_SAMPLER", "parentbased_traceidratio"), ("OTEL_TRACES_SAMPLER_ARG", "0.1")],
            _ => [("OTEL_TRACES_SAMPLER", "parentbased_always_on"), ("OTEL_TRACES_SAMPLER_ARG", "1")],
        }
    }
}

/// The worker's settings in every round: JSON log lines as in the containers, batches
/// of 256, two in flight, the round's sampler, and the telemetry crate's default batch
/// span processor settings (the test harness sets a larger queue for the tests).
fn worker_env(tracing: Tracing, stack: &ChatStack) -> Vec<(String, String)> {
    let mut env: Vec<(String, String)> = vec![
        ("OTEL_BSP_MAX_QUEUE_SIZE", BSP_QUEUE),
        ("OTEL_BSP_SCHEDULE_DELAY", "5000"),
        ("OTEL_SDK_DISABLED", if tracing == Tracing::Off { "true" } else { "false" }),
        ("RUST_LOG", "warn"),
        ("LOG_FORMAT", "json"),
        ("BATCH_SIZE", "256"),
        ("IN_FLIGHT_BATCHES", "2"),
    ]
    .into_iter()
    .chain(tracing.sampler())
    .chain((tracing == Tracing::Nats).then_some(("OTEL_TRACES_EXPORTER", "nats")))
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect();
    // DRAIN_WORKER_ENV="K=V,K2=V2": more settings for the worker (e.g. batch processor).
    if let Ok(extra) = std::env::var("DRAIN_WORKER_ENV") {
        env.extend(extra.split(',').filter_map(|kv| kv.split_once('=')).map(|(k, v)| (k.into(), v.into())));
    }
    // DRAIN_PROTOCOL=http/protobuf: the worker exports over OTLP/HTTP instead of gRPC.
    if let Ok(protocol) = std::env::var("DRAIN_PROTOCOL") {
        let endpoint = if protocol == "grpc" { stack.otlp.grpc_endpoint() } else { stack.otlp.http_endpoint() };
        env.push(("OTEL_EXPORTER_OTLP_PROTOCOL".into(), protocol));
        env.push(("OTEL_EXPORTER_OTLP_ENDPOINT".into(), endpoint));
    }
    env
}

fn as_strs(env: &[(String, String)]) -> Vec<(&str, &str)> {
    env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect()
}

struct Round {
    /// Rows committed per second, first commit to last.
    per_second: f64,
    /// From starting the worker (its stream set-up step included) to its first commit.
    first_commit_ms: f64,
    /// The bench process's CPU during the drain (receiver, polling), µs per message.
    bench_us_per_message: f64,
    cpu_us_per_message: f64,
    /// Of which the span batch thread (`otlp-span-batch`; `test_harness::thread_cpu_seconds`).
    batch_thread_us_per_message: f64,
    /// A worker's start-up CPU in this mode, spread over the backlog (part of the above).
    startup_us_per_message: f64,
    spans_dropped: Option<usize>,
    /// A NATS round: the bridge's spans per second and CPU µs per span.
    bridge: Option<(f64, f64)>,
}

/// A round's own stack (nats-server, database, OTLP receiver) with the stream made and the
/// backlog published, its worker not started yet.
struct Prepared {
    stack: ChatStack,
    /// CPU seconds a worker in this mode took to get ready (connections, telemetry set-up).
    startup_cpu: f64,
}

async fn prepare(tracing: Tracing, backlog: usize) -> Prepared {
    let mut stack = ChatStack::start().await.expect("stack");
    stack.export_to(&tracing.sampler());
    // A first worker creates the stream; its CPU at readiness is what start-up costs a
    // worker in this mode (connections, telemetry set-up), which the drain's figure
    // spreads over the backlog.
    let first = stack.spawn_service("persist-worker", &as_strs(&worker_env(tracing, &stack))).await;
    // Nanoseconds: a start-up takes milliseconds, under /proc/<pid>/stat's 10 ms ticks.
    let startup_cpu = total_cpu_seconds(first.as_ref().expect("stream").process.pid());
    drop(first);
    if tracing == Tracing::Nats {
        stack.set_up_telemetry_streams().await.expect("TELEMETRY");
    }
    stack
        .cli_ok(&["send", "general", "benchmark message", "--count", &backlog.to_string(), "--concurrency", "1024"])
        .await
        .expect("backlog");
    Prepared { stack, startup_cpu }
}

async fn round(tracing: Tracing) -> Round {
    let backlog = backlog();
    let Prepared { stack, startup_cpu } = prepare(tracing, backlog).await;
    let started = Instant::now();
    let started_at = std::time::SystemTime::now();
    let bench_cpu = total_cpu_seconds(std::process::id());
    let env = worker_env(tracing, &stack);
    let worker = stack.spawn_service("persist-worker", &as_strs(&env)).await.expect("worker");
    let perf = (std::env::var("DRAIN_PERF").is_ok_and(|mode| mode == tracing.label())).then(|| {
        let out = test_harness::workspace_root().join(format!("target/perf-drain-{}.data", worker.process.pid()));
        // Timer samples, or every occurrence of another event (`DRAIN_PERF_EVENT=page-faults`).
        let event = std::env::var("DRAIN_PERF_EVENT").unwrap_or_else(|_| "cpu-clock".to_owned());
        let rate: [&str; 2] = if event == "cpu-clock" { ["-F", "4000"] } else { ["-c", "1"] };
        std::process::Command::new("perf")
            .args(["record", "-e", &event])
            .args(rate)
            .args(["--call-graph", std::env::var("DRAIN_PERF_CALLGRAPH").as_deref().unwrap_or("dwarf,16384"), "-o"])
            .arg(out)
            .args(["-p", &worker.process.pid().to_string()])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("perf (Debian package linux-perf)")
    });
    while rows(&stack.db.url).await < backlog {
        assert!(started.elapsed() < Duration::from_secs(300), "backlog not drained");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let bench_cpu = total_cpu_seconds(std::process::id()) - bench_cpu;
    let (first_commit, per_second) = drain_rate(&stack.db.url).await;
    let since_epoch = started_at.duration_since(std::time::UNIX_EPOCH).expect("clock").as_secs_f64();
    // The scheduler's nanoseconds, not /proc/<pid>/stat's 10 ms ticks (0.5 µs per message
    // over 20,000 messages, 4 % of an untraced worker's figure); no thread of the worker
    // ends during a drain, so none is missed.
    let (batch_thread, others) = test_harness::thread_cpu_seconds(worker.process.pid());
    let cpu = batch_thread + others;
    if let Some(perf) = perf {
        let _ = std::process::Command::new("kill").args(["-INT", &perf.id().to_string()]).status();
        let _ = perf.wait_with_output();
    }
    let bridge = if tracing == Tracing::Nats { Some(bridge_throughput(&stack).await) } else { None };
    let spans_dropped = matches!(tracing, Tracing::On | Tracing::Nats).then_some(spans_dropped(&stack, backlog).await);
    Round {
        per_second,
        first_commit_ms: (first_commit - since_epoch) * 1e3,
        bench_us_per_message: bench_cpu * 1e6 / backlog as f64,
        cpu_us_per_message: cpu * 1e6 / backlog as f64,
        batch_thread_us_per_message: batch_thread * 1e6 / backlog as f64,
        startup_us_per_message: startup_cpu * 1e6 / backlog as f64,
        spans_dropped,
        bridge,
    }
}

/// CPU seconds of process `pid`, every thread (the scheduler's nanoseconds).
fn total_cpu_seconds(pid: u32) -> f64 {
    let (batch_thread, others) = test_harness::thread_cpu_seconds(pid);
    batch_thread + others
}

/// The drain's rate from the stored rows: (the first commit, as seconds since the epoch;
/// rows committed per second from the first commit to the last). `persisted_at` is a
/// batch's transaction start, so the last batch's rows are not counted (they were
/// committed after its time).
async fn drain_rate(url: &str) -> (f64, f64) {
    let commits = commits(url).await;
    let (first, last) = (commits[0].0, commits[commits.len() - 1].0);
    let before_last: f64 = commits[..commits.len() - 1].iter().map(|(_, rows)| rows).sum();
    (first, before_last / (last - first))
}

/// The worker's commits: (a batch's `persisted_at` as seconds since the epoch, its rows),
/// in time order.
async fn commits(url: &str) -> Vec<(f64, f64)> {
    let query = "SELECT extract(epoch FROM persisted_at), count(*) FROM chat.messages GROUP BY 1 ORDER BY 1";
    let numbers = common::psql_numbers(url, query).await;
    assert!(numbers.len() >= 4, "the drained rows' times: {numbers:?}");
    numbers.chunks_exact(2).map(|c| (c[0], c[1])).collect()
}

/// otlp-bridge on the spans a NATS round left in TELEMETRY (after the worker's last
/// batch, `OTEL_BSP_SCHEDULE_DELAY` after the drain): (spans/s, CPU µs per span), from
/// the bridge's start to the last of the worker's spans at the receiver.
async fn bridge_throughput(stack: &ChatStack) -> (f64, f64) {
    tokio::time::sleep(Duration::from_secs(6)).await;
    let started = Instant::now();
    let endpoint = stack.otlp.http_endpoint();
    let bridge = stack.spawn_service("otlp-bridge", &[("BRIDGE_ENDPOINT", endpoint.as_str())]).await.expect("bridge");
    let count = |c: &Captured| c.spans.iter().filter(|s| s.service_name == "persist-worker").count();
    let mut last = (0, Instant::now());
    loop {
        let now = count(&stack.otlp.captured());
        if now != last.0 {
            last = (now, Instant::now());
        } else if last.1.elapsed() > Duration::from_secs(6) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let seconds = last.1.duration_since(started).as_secs_f64();
    let cpu = cpu_seconds(bridge.process.pid());
    (last.0 as f64 / seconds, cpu * 1e6 / last.0.max(1) as f64)
}

/// Publish -> commit latency at `rate` msg/s for [`PACED_SECONDS`]: each row's
/// `persisted_at - sent_at` (`persisted_at` is the insert transaction's start, just before
/// its commit). Returns (achieved rate, p50 ms, p99 ms).
async fn paced_latency(tracing: Tracing, rate: u32) -> (f64, f64, f64) {
    let mut stack = ChatStack::start().await.expect("stack");
    stack.export_to(&tracing.sampler());
    let env = worker_env(tracing, &stack);
    let _worker = stack.spawn_service("persist-worker", &as_strs(&env)).await.expect("worker");
    let duration = format!("{PACED_SECONDS}s");
    let summary = stack.cli_ok(&["load", "--rate", &rate.to_string(), "--duration", &duration]).await.expect("load");
    let achieved = summary.last().and_then(|s| s["rate"].as_f64()).unwrap_or_default();
    // The load run has waited for each message's stream ack: all of them get stored.
    let (p50, p99) = publish_to_commit_ms(&stack.db.url, f64::from(rate * PACED_SECONDS) * 0.95).await;
    (achieved, p50, p99)
}

/// The rate the whole path sustains with the loader on the same two cores, tracing off:
/// chat-cli `load` offered `offered` msg/s (the drain rate, more than the path takes with
/// the loader running) for [`SATURATION_SECONDS`]. Returns (sent/s, committed/s): the
/// loader's achieved rate, and the rows stored when it finished per second of its run.
/// The paced runs use half the smaller: half of what the drain alone reaches would be
/// most of the machine once the loader runs too, and would measure queueing.
async fn pipeline_saturation(offered: f64) -> (f64, f64) {
    let mut stack = ChatStack::start().await.expect("stack");
    stack.export_to(&Tracing::Off.sampler());
    let env = worker_env(Tracing::Off, &stack);
    let _worker = stack.spawn_service("persist-worker", &as_strs(&env)).await.expect("worker");
    let (rate, duration) = (format!("{offered:.0}"), format!("{SATURATION_SECONDS}s"));
    let summary = stack.cli_ok(&["load", "--rate", &rate, "--duration", &duration]).await.expect("load");
    let committed = rows(&stack.db.url).await as f64;
    let field = |name: &str| summary.last().and_then(|s| s[name].as_f64()).unwrap_or_default();
    (field("rate"), committed / field("seconds").max(1e-3))
}

/// `process` spans the worker should have exported (one per message of the `expected`)
/// but that never reached the receiver, waiting for the batch processor's last export.
async fn spans_dropped(stack: &ChatStack, expected: usize) -> usize {
    let count = |c: &Captured| {
        let per_message = |s: &&SpanRecord| s.name == "process chat.msg.*.*";
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
/// The paced runs: this long each, at half and a quarter of the measured saturation rate.
const PACED_SECONDS: u32 = 10;
/// The saturation run (tracing off, loader and worker together).
const SATURATION_SECONDS: u32 = 8;

#[tokio::main]
async fn main() {
    assert_eq!(BSP_QUEUE, telemetry::bench::DEFAULT_BSP_MAX_QUEUE_SIZE.to_string());
    if let Some(rate) = env_number("DRAIN_PACED_RATE") {
        return paced(rate, None).await;
    }
    if std::env::var("DRAIN_COUNT").is_ok_and(|count| count == "instructions") {
        return instructions::report().await;
    }
    let pairs = env_number("DRAIN_PAIRS").unwrap_or(PAIRS).max(1);
    if std::env::var("DRAIN_VIA").is_ok_and(|via| via == "nats") {
        return via_nats(pairs).await;
    }
    if std::env::var("DRAIN_TOGETHER").is_ok_and(|together| together == "1") {
        return together::report(pairs).await;
    }
    let (mut off_rates, mut on, mut sampled) = (Vec::new(), Ratios::default(), Ratios::default());
    for pair in 0..pairs {
        // Every other triple in reverse order: a round's place in the triple (what ran
        // just before it) then weighs on off and on alike.
        let (off, traced, ten) = if pair % 2 == 0 {
            let off = round(Tracing::Off).await;
            let traced = round(Tracing::On).await;
            (off, traced, round(Tracing::Sampled).await)
        } else {
            let ten = round(Tracing::Sampled).await;
            let traced = round(Tracing::On).await;
            (round(Tracing::Off).await, traced, ten)
        };
        for (tracing, r) in [(Tracing::Off, &off), (Tracing::On, &traced), (Tracing::Sampled, &ten)] {
            let dropped = r.spans_dropped.map(|n| format!("   spans dropped {n}")).unwrap_or_default();
            println!(
                "tracing {:3}  {:8.0} msg/s   worker CPU {:6.2} µs/msg (span batch thread {:4.2}, others {:5.2}; \
                 start-up {:4.1})   first commit {:3.0} ms   bench CPU {:4.2} µs/msg{dropped}",
                tracing.label(),
                r.per_second,
                r.cpu_us_per_message,
                r.batch_thread_us_per_message,
                r.cpu_us_per_message - r.batch_thread_us_per_message,
                r.startup_us_per_message,
                r.first_commit_ms,
                r.bench_us_per_message
            );
        }
        off_rates.push(off.per_second);
        on.push(&traced, &off);
        sampled.push(&ten, &off);
    }
    let drain = median(&mut off_rates);
    let (sent, committed) = pipeline_saturation(drain).await;
    let saturation = sent.min(committed);
    println!(
        "saturation with the loader on the same cores (tracing off, {drain:.0} msg/s offered): \
         sent {sent:.0} msg/s, committed {committed:.0} msg/s"
    );
    paced((saturation / 2.0).round() as u32, Some(saturation)).await;
    paced((saturation / 4.0).round() as u32, Some(saturation)).await;
    for (label, ratios) in [("100 %", &mut on), ("10 %", &mut sampled)] {
        println!("ratio to off at {label}, median of {pairs} pairs: {}", ratios.summary("pairs"));
    }
}

/// `DRAIN_VIA=nats`: pairs of direct and NATS rounds; the ratios NATS to direct.
async fn via_nats(pairs: usize) {
    let mut ratios = Ratios::default();
    let mut bridge_rates = Vec::new();
    for _ in 0..pairs {
        let direct = round(Tracing::On).await;
        let nats = round(Tracing::Nats).await;
        for (road, r) in [("direct OTLP", &direct), ("via NATS", &nats)] {
            println!(
                "{road:11}  {:8.0} msg/s   worker CPU {:6.1} µs/msg   spans dropped {}",
                r.per_second,
                r.cpu_us_per_message,
                r.spans_dropped.unwrap_or_default()
            );
        }
        if let Some((per_second, cpu)) = nats.bridge {
            println!("otlp-bridge  {per_second:8.0} spans/s   bridge CPU {cpu:6.1} µs/span");
            bridge_rates.push(per_second);
        }
        ratios.push(&nats, &direct);
    }
    println!(
        "via NATS / direct, median of {pairs} pairs: throughput {:.3}, worker CPU per message {:.3}; \
         otlp-bridge median {:.0} spans/s",
        median(&mut ratios.throughput),
        median(&mut ratios.cpu),
        median(&mut bridge_rates)
    );
}

/// The paced runs, off then on, at `rate` (half or a quarter of the measured
/// `saturation`, or as `DRAIN_PACED_RATE` asked).
async fn paced(rate: u32, saturation: Option<f64>) {
    let (off_rate, off_p50, off_p99) = paced_latency(Tracing::Off, rate).await;
    let (on_rate, on_p50, on_p99) = paced_latency(Tracing::On, rate).await;
    let why = saturation.map_or_else(
        || "as DRAIN_PACED_RATE asks".to_owned(),
        |s| format!("{:.0} % of {s:.0}", 100.0 * f64::from(rate) / s),
    );
    println!(
        "publish -> commit at {rate} msg/s offered ({why}): off {off_rate:.0} msg/s p50 {off_p50:.1} ms \
         p99 {off_p99:.1} ms; on {on_rate:.0} msg/s p50 {on_p50:.1} ms p99 {on_p99:.1} ms (p99 on - off {:+.2} ms)",
        on_p99 - off_p99
    );
}

/// Per-pair ratios of a traced round to its `off` round.
#[derive(Default)]
struct Ratios {
    throughput: Vec<f64>,
    cpu: Vec<f64>,
}

impl Ratios {
    fn push(&mut self, traced: &Round, off: &Round) {
        self.add(traced.per_second / off.per_second, traced.cpu_us_per_message / off.cpu_us_per_message);
    }

    fn add(&mut self, throughput: f64, cpu: f64) {
        self.throughput.push(throughput);
        self.cpu.push(cpu);
    }

    /// The medians and the ranges, e.g. "throughput 0.937 (pairs 0.86..1.03), worker CPU
    /// per message 1.341 (pairs 1.33..1.37)".
    fn summary(&mut self, of: &str) -> String {
        let (throughput, cpu) = (median(&mut self.throughput), median(&mut self.cpu));
        let range = |sorted: &[f64]| format!("({of} {:.2}..{:.2})", sorted[0], sorted[sorted.len() - 1]);
        format!(
            "throughput {throughput:.3} {}, worker CPU per message {cpu:.3} {}",
            range(&self.throughput),
            range(&self.cpu)
        )
    }
}

/// Sorts `values` and returns the middle one.
fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

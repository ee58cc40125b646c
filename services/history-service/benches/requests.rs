//! History requests at a steady rate, tracing on vs off, alternating in one run:
//! `cargo build --release --workspace --bins && cargo bench -p history-service --bench requests`.
//!
//! A fresh stack with 200 stored messages; then history-service is started with tracing
//! off or on (every request traced: it carries a sampled `traceparent`, as chat-cli's do)
//! and asked `chat.history.general` ([`RATE`] requests/s for [`SECONDS`] s, each awaited
//! concurrently), after a [`WARM_UP_SECONDS`] warm-up at the same rate that is not
//! counted. Reports the achieved rate, request latency p50 / p99 as the requester
//! sees it (NATS round trip, handler, the SELECT of 50 rows), and the service's CPU per
//! request; then the on/off ratios.

use std::time::{Duration, Instant};

use test_harness::{ChatStack, cpu_seconds};

const RATE: u32 = 1_000;
const SECONDS: u32 = 10;
const PAIRS: usize = 3;
/// Requests sent at the same rate before the measured ones, not counted: the pool's
/// connections, prepared statements and the first export happen here.
const WARM_UP_SECONDS: u32 = 1;

struct Round {
    rate: f64,
    p50_ms: f64,
    p99_ms: f64,
    cpu_us: f64,
}

async fn round(stack: &ChatStack, tracing: bool) -> Round {
    let env =
        [("OTEL_SDK_DISABLED", if tracing { "false" } else { "true" }), ("RUST_LOG", "warn"), ("LOG_FORMAT", "json")];
    let history = stack.spawn_service("history-service", &env).await.expect("history-service");
    // The service answers only a chat user's inbox.
    let client = async_nats::ConnectOptions::new()
        .custom_inbox_prefix("_INBOX.chat.bench")
        .connect(stack.nats.url())
        .await
        .expect("nats");
    let total = (RATE * SECONDS) as usize;
    let warm_up = (RATE * WARM_UP_SECONDS) as usize;
    let mut cpu_before = cpu_seconds(history.process.pid());
    let mut ticker = tokio::time::interval(Duration::from_millis(1));
    let per_tick = (RATE / 1000).max(1) as usize;
    let mut started = Instant::now();
    let mut requests = tokio::task::JoinSet::new();
    let mut sent = 0;
    while sent < warm_up + total {
        ticker.tick().await;
        if sent == warm_up {
            (started, cpu_before) = (Instant::now(), cpu_seconds(history.process.pid()));
        }
        for _ in 0..per_tick {
            let measured = sent >= warm_up;
            let client = client.clone();
            let trace_id = format!("{:032x}", u128::from(sent as u64) + 1);
            requests.spawn(async move {
                let mut headers = async_nats::HeaderMap::new();
                headers.insert("traceparent", format!("00-{trace_id}-00f067aa0ba902b7-01").as_str());
                let asked = Instant::now();
                let reply = client.request_with_headers("chat.history.general.bench", headers, "".into()).await;
                (reply.is_ok_and(|r| r.headers.is_none()), measured, asked.elapsed())
            });
            sent += 1;
        }
    }
    let mut latencies = Vec::with_capacity(total);
    while let Some(done) = requests.join_next().await {
        let (ok, measured, latency) = done.expect("request task");
        assert!(ok, "a history request failed");
        if measured {
            latencies.push(latency.as_secs_f64() * 1e3);
        }
    }
    let took = started.elapsed().as_secs_f64();
    let cpu_us = (cpu_seconds(history.process.pid()) - cpu_before) * 1e6 / total as f64;
    latencies.sort_by(f64::total_cmp);
    let at = |q: f64| latencies[((latencies.len() as f64 * q) as usize).min(latencies.len() - 1)];
    Round { rate: total as f64 / took, p50_ms: at(0.5), p99_ms: at(0.99), cpu_us }
}

#[tokio::main]
async fn main() {
    let stack = ChatStack::start().await.expect("stack");
    let worker = stack.spawn_service("persist-worker", &[]).await.expect("worker");
    stack.cli_ok(&["send", "general", "a stored message", "--count", "200"]).await.expect("messages");
    tokio::time::sleep(Duration::from_secs(2)).await;
    drop(worker);
    let (mut p99, mut cpu) = (Vec::new(), Vec::new());
    for _ in 0..PAIRS {
        let off = round(&stack, false).await;
        let on = round(&stack, true).await;
        for (name, r) in [("off", &off), ("on", &on)] {
            println!(
                "tracing {name:3}  {:6.0} req/s   p50 {:5.2} ms   p99 {:5.2} ms   history-service CPU {:5.1} µs/request",
                r.rate, r.p50_ms, r.p99_ms, r.cpu_us
            );
        }
        p99.push(on.p99_ms / off.p99_ms);
        cpu.push(on.cpu_us / off.cpu_us);
    }
    let median = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    println!(
        "ratio on/off at {RATE} req/s, median of {PAIRS} pairs: p99 {:.2}, CPU per request {:.2}",
        median(&mut p99),
        median(&mut cpu)
    );
}

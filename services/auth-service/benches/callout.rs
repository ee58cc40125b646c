//! Auth callout throughput and latency with the JWKS cached, tracing on vs off, in one run:
//! `cargo bench -p auth-service --bench callout` (builds the release binaries it starts:
//! run `cargo build --release --workspace --bins` first).
//!
//! Each measured operation is a full client connection through the real nats-server 2.12
//! with the project's nats.conf: CONNECT -> sealed callout request -> token validation ->
//! signed, sealed user JWT -> connected. Reports connections per second (8 concurrent
//! clients) and p50/p99 latency of sequential connections, and first the same latency for
//! a user nats.conf knows itself (no callout: the floor of a connection). With tracing on,
//! the same connections' server side too, from the spans auth-service exported: its
//! callout span and each step's p50/p99, so a connection's tail splits into the client's
//! connect, our handling and the rest (nats-server's callout round trip, scheduling).

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use test_harness::model::SpanRecord;
use test_harness::oidc::TestIssuer;
use test_harness::{ChatStack, OtlpReceiver};

const CALLOUT_SPAN: &str = "process $SYS.REQ.USER.AUTH";
const STEPS: [&str; 4] = ["xkey.decrypt", "jwt.validate", "permissions.map", "respond"];

/// Sequential connections per round: a p99 from 1,000 is the 10th slowest (from 300, as
/// first written, it was the 3rd and moved by a millisecond between identical rounds).
const SEQUENTIAL: usize = 1_000;
const CONCURRENT_CLIENTS: usize = 8;
const PER_CLIENT: usize = 100;

async fn connect(url: &str, token: &str) {
    let client = async_nats::ConnectOptions::with_token(token.to_owned()).connect(url).await.expect("connect");
    drop(client);
}

struct Figures {
    per_second: f64,
    p50: Duration,
    p99: Duration,
    /// When the sequential connections ran (ns since the Unix epoch), to find their spans.
    sequential: (u64, u64),
}

fn unix_nanos() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_nanos() as u64)
}

/// Whether `span` is a `name` span started within `window`.
fn started_within(span: &SpanRecord, name: &str, window: (u64, u64)) -> bool {
    span.name == name && (window.0..=window.1).contains(&span.start_unix_nano)
}

/// p50 and p99 in ms of the durations of `name` spans started within `window`, and
/// how many there were.
fn span_percentiles(otlp: &OtlpReceiver, name: &str, window: (u64, u64)) -> (f64, f64, usize) {
    let mut durations: Vec<u64> = otlp.inspect(|c| {
        c.spans
            .iter()
            .filter(|s| started_within(s, name, window))
            .map(|s| s.end_unix_nano.saturating_sub(s.start_unix_nano))
            .collect()
    });
    durations.sort_unstable();
    let at = |q: usize| durations.get(durations.len() * q / 100).map_or(f64::NAN, |ns| *ns as f64 / 1e6);
    (at(50), at(99), durations.len())
}

/// The server side of the sequential connections, from auth-service's spans.
async fn server_side(otlp: &OtlpReceiver, window: (u64, u64)) {
    let all_there = otlp.wait_for(Duration::from_secs(20), "the callout spans", |c| {
        let n = c.spans.iter().filter(|s| started_within(s, CALLOUT_SPAN, window)).count();
        (n >= SEQUENTIAL).then_some(())
    });
    if let Err(e) = all_there.await {
        println!("  (server side not read: {e})");
        return;
    }
    let (p50, p99, n) = span_percentiles(otlp, CALLOUT_SPAN, window);
    let steps: Vec<String> = STEPS
        .iter()
        .map(|step| {
            let (p50, p99, _) = span_percentiles(otlp, step, window);
            format!("{step} {p50:.2}/{p99:.2}")
        })
        .collect();
    println!(
        "  server side, {n} callouts: its span p50 {p50:6.2} ms   p99 {p99:6.2} ms; steps p50/p99 ms: {}",
        steps.join(", ")
    );
}

impl Figures {
    fn p99_ms(&self) -> f64 {
        self.p99.as_secs_f64() * 1e3
    }
}

async fn measure(url: &str, token: &str) -> Figures {
    for _ in 0..20 {
        connect(url, token).await; // warm-up: JWKS loaded and cached
    }
    let mut latencies = Vec::with_capacity(SEQUENTIAL);
    let first = unix_nanos();
    for _ in 0..SEQUENTIAL {
        let started = Instant::now();
        connect(url, token).await;
        latencies.push(started.elapsed());
    }
    let sequential = (first, unix_nanos());
    latencies.sort();
    let started = Instant::now();
    let clients: Vec<_> = (0..CONCURRENT_CLIENTS)
        .map(|_| {
            let (url, token) = (url.to_owned(), token.to_owned());
            tokio::spawn(async move {
                for _ in 0..PER_CLIENT {
                    connect(&url, &token).await;
                }
            })
        })
        .collect();
    for client in clients {
        client.await.expect("client");
    }
    let per_second = (CONCURRENT_CLIENTS * PER_CLIENT) as f64 / started.elapsed().as_secs_f64();
    Figures { per_second, p50: latencies[SEQUENTIAL / 2], p99: latencies[SEQUENTIAL * 99 / 100], sequential }
}

#[tokio::main]
async fn main() {
    let stack = ChatStack::start_secured().await.expect("stack");
    let issuer = TestIssuer::start().await.expect("issuer");
    let token = issuer.token(&issuer.claims("alice", &["chat-user"]));
    // The floor: the same connection as a user the server knows itself (no callout).
    let mut plain = Vec::with_capacity(SEQUENTIAL);
    for i in 0..SEQUENTIAL + 20 {
        let started = Instant::now();
        drop(stack.admin().await.expect("admin connects"));
        if i >= 20 {
            plain.push(started.elapsed());
        }
    }
    plain.sort();
    println!(
        "no callout   (a user in nats.conf)              p50 {:6.2} ms   p99 {:6.2} ms (sequential)",
        plain[SEQUENTIAL / 2].as_secs_f64() * 1e3,
        plain[SEQUENTIAL * 99 / 100].as_secs_f64() * 1e3
    );
    let mut results = Vec::new();
    for (label, sdk_disabled) in
        [("tracing off", "true"), ("tracing on", "false"), ("tracing off", "true"), ("tracing on", "false")]
    {
        let env = [("OIDC_ISSUER", issuer.issuer()), ("OTEL_SDK_DISABLED", sdk_disabled), ("RUST_LOG", "warn")];
        let mut auth = stack.spawn_service("auth-service", &env).await.expect("auth-service");
        let figures = measure(&stack.nats.url(), &token).await;
        println!(
            "{label:12} {:8.0} connections/s ({CONCURRENT_CLIENTS} clients)   p50 {:6.2} ms   p99 {:6.2} ms (sequential)",
            figures.per_second,
            figures.p50.as_secs_f64() * 1e3,
            figures.p99.as_secs_f64() * 1e3
        );
        if sdk_disabled == "false" {
            server_side(&stack.otlp, figures.sequential).await;
        }
        results.push((sdk_disabled == "false", figures));
        auth.process.kill();
    }
    // The mean of one figure over the rounds with tracing `on` (or off).
    let mean = |on: bool, figure: fn(&Figures) -> f64| {
        let chosen: Vec<f64> = results.iter().filter(|(t, _)| *t == on).map(|(_, f)| figure(f)).collect();
        chosen.iter().sum::<f64>() / chosen.len() as f64
    };
    let (p99_off, p99_on) = (mean(false, Figures::p99_ms), mean(true, Figures::p99_ms));
    println!(
        "ratio tracing on / off: throughput {:.3}, p99 {:.2} (mean p99 off {p99_off:.2} ms, on {p99_on:.2} ms)",
        mean(true, |f| f.per_second) / mean(false, |f| f.per_second),
        p99_on / p99_off,
    );
}

//! `DRAIN_COUNT=instructions`: the real worker's instructions per message, tracing off,
//! on and 10 %, counted by valgrind (callgrind, every thread: each span's encoding on the
//! message path and the batch thread's gRPC send count) while it drains a backlog.
//! Unlike the drain's times, the counts do not move with the machine's load. Each mode drains `n` and `2n`
//! messages (`DRAIN_BACKLOG`, default 5,000) with a fresh stack each; the difference
//! is `n` messages' worth, without start-up and shut-down (which include the last
//! export: every span is encoded and sent once in both). The profiles stay in
//! `target/callgrind-drain-<mode>-<messages>.out` (`callgrind_annotate` reads them).
//! About 50 times slower than native: ~1 minute for the three modes at 5,000.

use std::time::{Duration, Instant};

use test_harness::{ChatStack, ChildProcess, Service, free_port, workspace_root};

use crate::{Tracing, as_strs, env_number, rows, worker_env};

/// Per mode: the instructions of `2n` minus those of `n`, over `n`; ratios to off.
pub(crate) async fn report() {
    let n: usize = env_number("DRAIN_BACKLOG").unwrap_or(5_000);
    let mut per_message = Vec::new();
    for tracing in [Tracing::Off, Tracing::On, Tracing::Sampled] {
        let small = drain(tracing, n).await;
        let big = drain(tracing, 2 * n).await;
        let value = big.saturating_sub(small) as f64 / n as f64;
        println!(
            "tracing {:3}  worker instructions per message {value:8.0}   ({small} for {n} messages, {big} for {})",
            tracing.label(),
            2 * n
        );
        per_message.push(value);
    }
    if let [off, on, ten] = per_message[..] {
        println!(
            "instructions per message to off: at 100 % {:.3} (+{:.0}), at 10 % {:.3} (+{:.0})",
            on / off,
            on - off,
            ten / off,
            ten - off
        );
    }
}

/// The instructions a worker under callgrind spends from its start to its exit, having
/// drained a backlog of `messages`.
async fn drain(tracing: Tracing, messages: usize) -> u64 {
    let mut stack = ChatStack::start().await.expect("stack");
    stack.export_to(&tracing.sampler());
    let env = worker_env(tracing, &stack);
    stack.set_up_streams(&as_strs(&env)).await.expect("streams");
    stack
        .cli_ok(&["send", "general", "benchmark message", "--count", &messages.to_string(), "--concurrency", "1024"])
        .await
        .expect("backlog");
    let health_port = free_port();
    let native = stack.service_command("persist-worker", health_port);
    let out = workspace_root()
        .join(format!("target/callgrind-drain-{}-{messages}.out", tracing.label().trim_end_matches('%')));
    let mut command = std::process::Command::new("valgrind");
    command
        .arg("--tool=callgrind")
        .arg(format!("--callgrind-out-file={}", out.display()))
        .arg(native.get_program())
        .args(native.get_args())
        .envs(native.get_envs().filter_map(|(k, v)| Some((k, v?))))
        .envs(as_strs(&env));
    let process =
        ChildProcess::spawn("persist-worker (callgrind)", command).expect("valgrind (apt-get install valgrind)");
    let mut worker = Service { process, health_port };
    worker.wait_readyz(200, Duration::from_secs(120)).await.expect("worker ready under callgrind");
    let started = Instant::now();
    while rows(&stack.db.url).await < messages {
        assert!(started.elapsed() < Duration::from_secs(900), "backlog not drained under callgrind");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // A graceful stop: the worker exports what its batch processor holds, then valgrind
    // prints the total.
    worker.process.signal("TERM").expect("stop the worker");
    worker.process.wait_exit(Duration::from_secs(300)).await.expect("worker exits");
    let output = worker.process.output();
    output
        .lines()
        .find_map(|line| line.split("Collected :").nth(1))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or_else(|| panic!("no instruction count in callgrind's output:\n{output}"))
}

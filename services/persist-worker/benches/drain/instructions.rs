//! `DRAIN_COUNT=instructions`: the real worker's instructions per message, tracing off,
//! on and 10 %, counted by valgrind (callgrind, every thread: each span's encoding on the
//! message path and the batch thread's gRPC send count) while it drains a backlog.
//! Unlike the drain's times, the counts do not move with the machine's load. Each mode
//! drains `n` and `2n` messages (`DRAIN_BACKLOG`, default 5,000) with a fresh stack each;
//! the difference is `n` messages' worth, without start-up and shut-down (which include
//! the last export: every span is encoded and sent once in both). The profiles stay in
//! `target/callgrind-drain-<mode>-<messages>.out` (`callgrind_annotate` reads them).
//! About 50 times slower than native: ~1 minute for the three modes at 5,000 (~3 with
//! the cache simulated).

use std::time::{Duration, Instant};

use test_harness::{ChatStack, ChildProcess, Service, free_port, workspace_root};

use crate::{Tracing, as_strs, env_number, rows, worker_env};

/// Per mode: the instructions of `2n` minus those of `n`, over `n`; ratios to off. With
/// `DRAIN_CALLGRIND_ARGS="--cache-sim=yes"` (and cache sizes, e.g. `--D1=32768,8,64
/// --I1=32768,8,64 --LL=1048576,16,64` for this machine's L1 and L2), also the simulated
/// cache misses per message, which cost time that no instruction count shows.
pub(crate) async fn report() {
    let n: usize = env_number("DRAIN_BACKLOG").unwrap_or(5_000);
    let mut per_message = Vec::new();
    for tracing in [Tracing::Off, Tracing::On, Tracing::Sampled] {
        let small = drain(tracing, n).await;
        let big = drain(tracing, 2 * n).await;
        let events: Vec<(String, f64)> = big
            .iter()
            .zip(&small)
            .map(|((event, big), (_, small))| (event.clone(), big.saturating_sub(*small) as f64 / n as f64))
            .collect();
        println!(
            "tracing {:3}  worker instructions per message {:8.0}   ({} for {n} messages, {} for {})",
            tracing.label(),
            events[0].1,
            small[0].1,
            big[0].1,
            2 * n
        );
        per_message.push(events);
    }
    if let [off, on, ten] = &per_message[..] {
        let (off, on, ten) = (off[0].1, on[0].1, ten[0].1);
        println!(
            "instructions per message to off: at 100 % {:.3} (+{:.0}), at 10 % {:.3} (+{:.0})",
            on / off,
            on - off,
            ten / off,
            ten - off
        );
        for (i, (event, _)) in per_message[0].iter().enumerate().skip(1) {
            let [off, on, ten] = [0, 1, 2].map(|mode| per_message[mode][i].1);
            println!(
                "{event:5} per message: off {off:7.1}, on {on:7.1} ({:.2}x), 10 % {ten:7.1} ({:.2}x)",
                on / off,
                ten / off
            );
        }
    }
}

/// What callgrind counted in a worker from its start to its exit, having drained a
/// backlog of `messages`: each event (instructions `Ir` first) and its total.
async fn drain(tracing: Tracing, messages: usize) -> Vec<(String, u64)> {
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
        .args(std::env::var("DRAIN_CALLGRIND_ARGS").iter().flat_map(|a| a.split_whitespace()))
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
    let after = |label: &str| output.lines().find_map(|line| Some(line.split_once(label)?.1.split_whitespace()));
    let (Some(events), Some(totals)) = (after("Events    :"), after("Collected :")) else {
        panic!("no counts in callgrind's output:\n{output}")
    };
    let events: Vec<(String, u64)> = events.zip(totals).map(|(e, n)| (e.to_owned(), n.parse().unwrap_or(0))).collect();
    assert!(events.first().is_some_and(|(e, n)| e == "Ir" && *n > 0), "callgrind's output:\n{output}");
    events
}

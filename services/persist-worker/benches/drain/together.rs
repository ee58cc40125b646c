//! `DRAIN_TOGETHER=1`: off, on and 10 % drained **side by side**, so that all three see
//! the same machine at the same moments. Rounds run one after the other meet the two
//! cores in different states (single untraced rounds ranged 6.7-12.2 µs per message in one
//! day); here whatever else runs weighs on the three workers alike.
//!
//! Each triple: three stacks of their own (nats-server, database, OTLP receiver), their
//! backlogs published, then the three workers started at once.
//! The window compared is the stretch in which all three were committing: from the last
//! of their first commits to the first of their last ones. In it, per worker: rows
//! committed per second (between its first and last batch in the window, by the rows'
//! `persisted_at`) and CPU per message (its threads' CPU, sampled every 5 ms from /proc
//! and read at those two batches' times). Over the whole run, per worker: context
//! switches and page faults per message and the kernel's share of its CPU (all threads,
//! and the span batch thread: the export's system calls). Three workers and their servers
//! share the two cores, so the rates are lower than in a drain alone; the ratios are what
//! compare.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use super::common::rows;
use super::{Ratios, Tracing, as_strs, commits, env_number, prepare, spans_dropped, worker_env};

/// The modes drained together; the first is what the others are compared with.
const MODES: [Tracing; 3] = [Tracing::Off, Tracing::On, Tracing::Sampled];
/// Messages per worker (`DRAIN_BACKLOG` overrides): three times a drain alone's, so that
/// the common window (2.5-4 s here) holds tens of batches of each worker.
const BACKLOG: usize = 60_000;
/// How often the workers' CPU is read.
const CPU_SAMPLE: Duration = Duration::from_millis(5);

/// One worker's figures over the common window.
struct Window {
    per_second: f64,
    cpu_us_per_message: f64,
    batch_thread_us_per_message: f64,
    rows: f64,
}

/// The workers' CPU (span batch thread, other threads) over time: (seconds since the epoch,
/// per worker).
type CpuSamples = Vec<(f64, Vec<(f64, f64)>)>;

pub(super) async fn report(triples: usize) {
    let backlog = env_number("DRAIN_BACKLOG").unwrap_or(BACKLOG);
    let mut ratios = [Ratios::default(), Ratios::default()];
    for triple in 0..triples {
        let mut prepared = Vec::new();
        for tracing in MODES {
            prepared.push(prepare(tracing, backlog).await);
        }
        // All three started at once (each spawn waits for its worker's readiness): started
        // one after the other, the last worker to start drained fastest in the window.
        let envs: Vec<_> = MODES.iter().zip(&prepared).map(|(&mode, p)| worker_env(mode, &p.stack)).collect();
        let envs: Vec<_> = envs.iter().map(|env| as_strs(env)).collect();
        let spawns = prepared.iter().zip(&envs).map(|(p, env)| p.stack.spawn_service("persist-worker", env));
        let workers: Vec<_> = futures::future::join_all(spawns).await.into_iter().map(|w| w.expect("worker")).collect();
        let pids: Vec<u32> = workers.iter().map(|w| w.process.pid()).collect();
        let (stop, sampler) = sample_cpu(pids);
        let started = Instant::now();
        for p in &prepared {
            while rows(&p.stack.db.url).await < backlog {
                assert!(started.elapsed() < Duration::from_secs(300), "backlog not drained");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
        stop.store(true, Ordering::Relaxed);
        let samples = sampler.join().expect("CPU sampler");
        let counts: Vec<Counts> = workers.iter().map(|w| Counts::read(w.process.pid())).collect();
        let mut timelines = Vec::new();
        for p in &prepared {
            timelines.push(commits(&p.stack.db.url).await);
        }
        // The sampler started once every worker was up: a worker's first commit can come
        // before the last one's readiness.
        let start = timelines.iter().map(|t| t[0].0).fold(samples[0].0, f64::max);
        let end = timelines.iter().map(|t| t[t.len() - 1].0).fold(f64::MAX, f64::min);
        let windows: Vec<Window> =
            timelines.iter().enumerate().map(|(i, t)| window(t, start, end, &samples, i)).collect();
        println!("side by side {}: window {:.2} s", triple + 1, end - start);
        for (i, w) in windows.iter().enumerate() {
            let dropped = if MODES[i] == Tracing::On {
                format!("   spans dropped {}", spans_dropped(&prepared[i].stack, backlog).await)
            } else {
                String::new()
            };
            println!(
                "  tracing {:3}  {:8.0} msg/s   worker CPU {:6.2} µs/msg (span batch thread {:4.2})   rows in window {:.0}   \
                 context switches {:.3}/msg   page faults {:.3}/msg   in the kernel {:.0} % (span batch thread {:.0} %){dropped}",
                MODES[i].label(),
                w.per_second,
                w.cpu_us_per_message,
                w.batch_thread_us_per_message,
                w.rows,
                counts[i].switches / backlog as f64,
                counts[i].faults / backlog as f64,
                counts[i].kernel * 100.0,
                counts[i].batch_thread_kernel * 100.0
            );
        }
        for (traced, ratios) in windows[1..].iter().zip(ratios.iter_mut()) {
            ratios.add(
                traced.per_second / windows[0].per_second,
                traced.cpu_us_per_message / windows[0].cpu_us_per_message,
            );
        }
    }
    for (label, ratios) in ["100 %", "10 %"].iter().zip(ratios.iter_mut()) {
        println!("side by side, ratio to off at {label}, median of {triples}: {}", ratios.summary("triples"));
    }
}

/// Reads the CPU of each of `pids` every [`CPU_SAMPLE`] on a thread of its own until the
/// flag is set.
fn sample_cpu(pids: Vec<u32>) -> (Arc<AtomicBool>, std::thread::JoinHandle<CpuSamples>) {
    let stop = Arc::new(AtomicBool::new(false));
    let flag = Arc::clone(&stop);
    let sampler = std::thread::spawn(move || {
        let mut samples = CpuSamples::new();
        let mut readers: Vec<test_harness::ThreadCpu> = pids.into_iter().map(test_harness::ThreadCpu::new).collect();
        while !flag.load(Ordering::Relaxed) {
            let now = SystemTime::now().duration_since(UNIX_EPOCH).expect("clock").as_secs_f64();
            samples.push((now, readers.iter_mut().map(test_harness::ThreadCpu::read).collect()));
            std::thread::sleep(CPU_SAMPLE);
        }
        samples
    });
    (stop, sampler)
}

/// Worker `index`'s figures between its first and last commit within [`start`, `end`]:
/// the rows of the batches from the first up to (not including) the last, per second and
/// per CPU second read at those two times.
fn window(commits: &[(f64, f64)], start: f64, end: f64, samples: &CpuSamples, index: usize) -> Window {
    // persisted_at has microseconds; the bounds came through the same text.
    let inside: Vec<&(f64, f64)> = commits.iter().filter(|(t, _)| *t >= start - 1e-6 && *t <= end + 1e-6).collect();
    assert!(inside.len() >= 3, "too few commits in the common window ({}): a longer DRAIN_BACKLOG", inside.len());
    let (first, last) = (inside[0].0, inside[inside.len() - 1].0);
    let rows: f64 = inside[..inside.len() - 1].iter().map(|(_, n)| n).sum();
    let (batch_a, others_a) = cpu_at(samples, index, first);
    let (batch_b, others_b) = cpu_at(samples, index, last);
    let cpu = (batch_b + others_b) - (batch_a + others_a);
    Window {
        per_second: rows / (last - first),
        cpu_us_per_message: cpu * 1e6 / rows,
        batch_thread_us_per_message: (batch_b - batch_a) * 1e6 / rows,
        rows,
    }
}

/// Worker `index`'s CPU (span batch thread, others) at time `t`, interpolated between the
/// samples around it.
fn cpu_at(samples: &CpuSamples, index: usize, t: f64) -> (f64, f64) {
    let after = samples.partition_point(|(at, _)| *at <= t);
    assert!(after > 0 && after < samples.len(), "no CPU sample around a commit");
    let ((t0, before), (t1, next)) = (&samples[after - 1], &samples[after]);
    let share = (t - t0) / (t1 - t0);
    let (b0, o0) = before[index];
    let (b1, o1) = next[index];
    (b0 + (b1 - b0) * share, o0 + (o1 - o0) * share)
}

/// What a worker's threads did over the whole run, read once from
/// `/proc/<pid>/task/*/{status,stat}` after its drain.
struct Counts {
    /// Context switches, voluntary (waits) and not (preempted).
    switches: f64,
    /// Page faults that needed no disk (first touches of fresh memory).
    faults: f64,
    /// The share of the CPU spent in the kernel (system calls, the loopback's network
    /// stack), in clock ticks: all threads', and the span batch thread's (which sends the
    /// export).
    kernel: f64,
    batch_thread_kernel: f64,
}

impl Counts {
    fn read(pid: u32) -> Self {
        let (mut switches, mut faults) = (0.0, 0.0);
        let (mut all, mut batch) = ((0.0, 0.0), (0.0, 0.0));
        for task in std::fs::read_dir(format!("/proc/{pid}/task")).into_iter().flatten().flatten() {
            let status = std::fs::read_to_string(task.path().join("status")).unwrap_or_default();
            for line in status.lines().filter(|l| l.contains("ctxt_switches:")) {
                switches += line.split_whitespace().nth(1).and_then(|n| n.parse::<f64>().ok()).unwrap_or_default();
            }
            let stat = std::fs::read_to_string(task.path().join("stat")).unwrap_or_default();
            let Some((head, rest)) = stat.rsplit_once(')') else { continue };
            // The fields after the command name: state is field 3, minflt 10, utime 14
            // and stime 15.
            let fields: Vec<f64> = rest.split_whitespace().map(|f| f.parse().unwrap_or(0.0)).collect();
            let [Some(minflt), Some(user), Some(system)] = [7, 11, 12].map(|i| fields.get(i)) else { continue };
            faults += minflt;
            all = (all.0 + user, all.1 + system);
            let comm = head.split_once('(').map(|(_, c)| c).unwrap_or_default();
            if test_harness::is_span_batch_thread(comm) {
                batch = (batch.0 + user, batch.1 + system);
            }
        }
        let share = |(user, system): (f64, f64)| if user + system > 0.0 { system / (user + system) } else { 0.0 };
        Self { switches, faults, kernel: share(all), batch_thread_kernel: share(batch) }
    }
}

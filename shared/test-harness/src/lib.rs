//! Test harness shared by the integration tests of every crate in the workspace, in the
//! spirit of zero2prod's `spawn_app`: real servers on free ports, real binaries, and an
//! OTLP receiver that keeps what the services export.
//!
//! - [`NatsServer`]: a real nats-server (2.12 or later) with a temp JetStream store.
//! - [`Postgres`]: a throwaway PostgreSQL cluster (or `TEST_DATABASE_URL`) handing out a
//!   fresh database per test.
//! - [`OtlpReceiver`]: OTLP/gRPC and OTLP/HTTP in the test process; spans, log records
//!   and metrics decoded into the [`model`] types, with bounded waits.
//! - [`ChatStack`]: all of the above plus the project's binaries and `chat-cli`.
//! - [`ChildProcess`]: a spawned binary whose output is captured for failure messages and
//!   which is killed on drop, even when the test panics.
//!
//! The [`model`] types, [`trace`] assertions and the [`service_graph`] model are shared with the compose-level tests,
//! which decode Tempo's answers into the same types.

mod http;
mod nats;
mod paths;
mod postgres;
mod process;
mod stack;

pub mod backends;
pub mod model;
pub mod oidc;
pub mod otlp;
pub mod service_graph;
pub mod tempo_stub;
pub mod trace;

pub use nats::NatsServer;
pub use otlp::OtlpReceiver;
pub use paths::{cargo_bin, cargo_example, workspace_root};
pub use postgres::{Postgres, TestDatabase};
pub use process::ChildProcess;
pub use stack::{ChatStack, CliRun, Service};

/// Errors are reported as readable strings: tests print them and fail.
pub type HarnessResult<T> = Result<T, String>;

/// CPU seconds (user + system) a process has used so far, from `/proc/<pid>/stat`; 0 when
/// it cannot be read. For benchmarks that report CPU per operation.
pub fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // The command name may contain spaces: fields are counted after its closing ')'.
    let after = stat.rsplit_once(')').map(|(_, rest)| rest).unwrap_or_default();
    let ticks: Vec<f64> = after.split_whitespace().skip(11).take(2).filter_map(|f| f.parse().ok()).collect();
    ticks.iter().sum::<f64>() / 100.0
}

/// CPU seconds of process `pid` by thread, from the scheduler's nanosecond counts
/// (`/proc/<pid>/task/*/schedstat`; threads that ended are not counted): (the span batch
/// thread, every other thread). The batch thread is the telemetry crate's
/// `otlp-span-batch` (its OTLP/gRPC exporter) or the OpenTelemetry SDK's
/// `OpenTelemetry.Traces.BatchProcessor` (other exporters), whose name Linux keeps as
/// `OpenTelemetry.T` (15 bytes).
/// The worker's drain bench and the telemetry crate's per_message bench split their CPU
/// with it; [`ThreadCpu`] reads it again and again.
pub fn thread_cpu_seconds(pid: u32) -> (f64, f64) {
    ThreadCpu::new(pid).read()
}

/// [`thread_cpu_seconds`] of one process, read again and again (a sampler every few
/// milliseconds): each thread's name is read once, the first time it is seen, so a
/// reading opens one file per thread, not two. The services name their threads as they
/// start them, before a bench samples them.
#[derive(Debug)]
pub struct ThreadCpu {
    pid: u32,
    /// Per thread id: whether it is a span batch thread.
    batch_threads: std::collections::HashMap<String, bool>,
}

impl ThreadCpu {
    /// A reader of `pid`'s threads.
    pub fn new(pid: u32) -> Self {
        Self { pid, batch_threads: std::collections::HashMap::new() }
    }

    /// (the span batch thread, every other thread), CPU seconds so far.
    pub fn read(&mut self) -> (f64, f64) {
        let mut split = (0.0, 0.0);
        for task in std::fs::read_dir(format!("/proc/{}/task", self.pid)).into_iter().flatten().flatten() {
            let path = task.path();
            let tid = task.file_name().to_string_lossy().into_owned();
            let batch = *self.batch_threads.entry(tid).or_insert_with(|| {
                is_span_batch_thread(&std::fs::read_to_string(path.join("comm")).unwrap_or_default())
            });
            let schedstat = std::fs::read_to_string(path.join("schedstat")).unwrap_or_default();
            let seconds =
                schedstat.split_whitespace().next().and_then(|n| n.parse::<f64>().ok()).unwrap_or_default() / 1e9;
            if batch {
                split.0 += seconds;
            } else {
                split.1 += seconds;
            }
        }
        split
    }
}

/// Whether a thread of this name (`/proc/.../comm`) is a span batch processor's: the
/// SDK's or the telemetry crate's gRPC exporter's (its `otlp::batch::THREAD_NAME`; the
/// harness does not depend on that crate).
pub fn is_span_batch_thread(comm: &str) -> bool {
    comm.starts_with("OpenTelemetry.T") || comm.trim_end() == "otlp-span-batch"
}

/// A free TCP port for a server a test starts: chosen at random **below the kernel's
/// ephemeral range** (`/proc/sys/net/ipv4/ip_local_port_range`) and checked free on every
/// interface. A port the kernel hands out (`bind(0)`, or the local end of any outgoing
/// connection) is never one of these, so a server that binds it seconds later (Keycloak
/// takes half a minute) cannot find it taken by a parallel test's connection, which is
/// how a port from `bind(0)` failed in CI. Never the same port twice in one process.
pub fn free_port() -> u16 {
    use rand::Rng;
    use std::sync::Mutex;
    static HANDED_OUT: Mutex<Vec<u16>> = Mutex::new(Vec::new());
    let ephemeral_low = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|range| range.split_whitespace().next()?.parse::<u16>().ok())
        .unwrap_or(32768);
    let (low, high) = if ephemeral_low > 12_000 { (10_000, ephemeral_low) } else { (1024, 10_000) };
    let mut handed_out = HANDED_OUT.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    for _ in 0..1000 {
        let port = rand::thread_rng().gen_range(low..high);
        if !handed_out.contains(&port) && std::net::TcpListener::bind(("0.0.0.0", port)).is_ok() {
            handed_out.push(port);
            return port;
        }
    }
    panic!("no free port in {low}..{high} after 1000 tries")
}

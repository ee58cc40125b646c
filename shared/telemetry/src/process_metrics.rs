//! Process CPU time, resident memory and uptime as OpenTelemetry metrics
//! (`process.cpu.time`, `process.memory.usage`, `process.uptime`), read at each export.
//!
//! Prometheus sees them as `process_cpu_time_seconds_total`, `process_memory_usage_bytes`
//! and `process_uptime_seconds`. The uptime is the liveness signal of `ServiceDown`: it
//! advances at every export of a live process, and stops where the collector keeps the
//! last value of one that is gone (CPU time may not advance a clock tick in minutes for
//! an idle service). On systems without `/proc`, CPU time and memory are not reported.

use std::time::Instant;

use opentelemetry::global;

/// Clock ticks per second of `/proc/<pid>/stat` times (`USER_HZ`, fixed at 100 by the
/// Linux ABI on every architecture we build for).
const USER_HZ: f64 = 100.0;

/// Registers the observable instruments on the global meter provider.
pub(crate) fn register() {
    let meter = global::meter("telemetry");
    let started = Instant::now();
    let _uptime = meter
        .f64_observable_gauge("process.uptime")
        .with_unit("s")
        .with_description("Time since this process set up its telemetry")
        .with_callback(move |observer| observer.observe(started.elapsed().as_secs_f64(), &[]))
        .build();
    let _cpu = meter
        .f64_observable_counter("process.cpu.time")
        .with_unit("s")
        .with_description("CPU time used by this process (user + system)")
        .with_callback(|observer| {
            if let Some(seconds) = cpu_seconds() {
                observer.observe(seconds, &[]);
            }
        })
        .build();
    let _memory = meter
        .i64_observable_up_down_counter("process.memory.usage")
        .with_unit("By")
        .with_description("Resident memory of this process")
        .with_callback(|observer| {
            if let Some(bytes) = resident_bytes() {
                observer.observe(bytes, &[]);
            }
        })
        .build();
}

fn cpu_seconds() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    parse_cpu_seconds(&stat)
}

/// Fields 14 and 15 (utime, stime) counted after the `(comm)` field, which may hold spaces.
fn parse_cpu_seconds(stat: &str) -> Option<f64> {
    let after_comm = &stat[stat.rfind(')')? + 1..];
    let mut fields = after_comm.split_whitespace().skip(11);
    let utime: f64 = fields.next()?.parse().ok()?;
    let stime: f64 = fields.next()?.parse().ok()?;
    Some((utime + stime) / USER_HZ)
}

/// `VmRSS` from `/proc/self/status`, given in kB there.
fn resident_bytes() -> Option<i64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kib: i64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_stat_with_spaces_in_the_command_name() {
        let stat = "4242 (my worker) S 1 4242 4242 0 -1 4194560 100 0 0 0 250 50 0 0 20 0 8 0 1 2 3";
        assert_eq!(parse_cpu_seconds(stat), Some(3.0));
    }

    #[test]
    fn reads_this_process() {
        assert!(cpu_seconds().is_some_and(|s| s >= 0.0));
        assert!(resident_bytes().is_some_and(|b| b > 0));
    }
}

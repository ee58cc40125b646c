//! `chat-cli tui`'s costs: `cargo bench -p chat-cli --bench tui`.
//!
//! 1. Frame time: the waterfall of a 500-span trace with its details pane, drawn on
//!    ratatui's `TestBackend` at 160x48 and 80x24 (the layout and every cell; writing
//!    the changed cells to a real terminal is crossterm's and the terminal's part), 1,000
//!    frames after 50 to warm up: mean, p50, p99. Goal: under 20 ms per frame.
//! 2. Idle CPU: the release binary in a real terminal (a tmux pane), no message and no
//!    key for 10 s, in the messages view and then in the traces view (which searches an
//!    unreachable Tempo every 5 s): its utime+stime from /proc over wall time. Goal:
//!    under 2 %. Needs tmux; skipped (said) without it.

use std::process::Command;
use std::time::{Duration, Instant};

fn main() {
    for (width, height) in [(160, 48), (80, 24)] {
        let mut frame = chat_cli::bench::waterfall_frame(500, width, height);
        for _ in 0..50 {
            std::hint::black_box(frame());
        }
        let mut times: Vec<Duration> = (0..1000)
            .map(|_| {
                let start = Instant::now();
                std::hint::black_box(frame());
                start.elapsed()
            })
            .collect();
        times.sort();
        let mean = times.iter().sum::<Duration>() / times.len() as u32;
        let ms = |d: Duration| d.as_secs_f64() * 1e3;
        println!(
            "waterfall of 500 spans at {width}x{height}: mean {:.2} ms, p50 {:.2} ms, p99 {:.2} ms per frame (goal < 20 ms)",
            ms(mean),
            ms(times[times.len() / 2]),
            ms(times[times.len() * 99 / 100])
        );
    }
    idle_cpu();
}

fn idle_cpu() {
    if Command::new("tmux").arg("-V").output().is_err() {
        println!("idle CPU: skipped (no tmux)");
        return;
    }
    let socket = format!("chat-cli-bench-{}", std::process::id());
    let tmux = |args: &[&str]| {
        Command::new("tmux")
            .args(["-L", &socket])
            .args(args)
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
    };
    let binary = env!("CARGO_BIN_EXE_chat-cli");
    let started = tmux(&["-f", "/dev/null", "new-session", "-d", "-x", "160", "-y", "48", "-s", "b"]).is_ok()
        && tmux(&[
            "respawn-pane",
            "-k",
            "-t",
            "b",
            "env",
            "OTEL_SDK_DISABLED=true",
            binary,
            "--nats-url",
            "nats://127.0.0.1:1",
            "tui",
            "general",
            "--tempo-url",
            "http://127.0.0.1:1",
        ])
        .is_ok();
    let pid: Option<u32> =
        tmux(&["display-message", "-p", "-t", "b", "#{pane_pid}"]).ok().and_then(|p| p.trim().parse().ok());
    match (started, pid) {
        (true, Some(pid)) => {
            // Connecting to the absent NATS fails first; then the screen is idle.
            std::thread::sleep(Duration::from_secs(3));
            for (view, key) in [("messages view", None), ("traces view, searching every 5 s", Some("T"))] {
                if let Some(key) = key {
                    let _ = tmux(&["send-keys", "-t", "b", key]);
                    std::thread::sleep(Duration::from_secs(1));
                }
                let (cpu, wall) = (test_harness::cpu_seconds(pid), Instant::now());
                std::thread::sleep(Duration::from_secs(10));
                let share = (test_harness::cpu_seconds(pid) - cpu) / wall.elapsed().as_secs_f64() * 100.0;
                let dead = tmux(&["display-message", "-p", "-t", "b", "#{pane_dead}"]).unwrap_or_default();
                if dead.trim() != "0" {
                    println!("idle CPU: the TUI exited, nothing measured");
                    break;
                }
                println!("idle CPU, {view}: {share:.2} % of one core over 10 s (goal < 2 %)");
            }
        }
        _ => println!("idle CPU: skipped (tmux did not start {binary})"),
    }
    let _ = tmux(&["kill-server"]);
}

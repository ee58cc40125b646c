//! Child processes for tests: output captured, killed on drop.

use std::io::{BufRead as _, BufReader, Read};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::HarnessResult;

/// A running program whose stdout and stderr are kept (and echoed when `TEST_LOG` is set).
#[derive(Debug)]
pub struct ChildProcess {
    name: String,
    child: Child,
    output: Arc<Mutex<String>>,
}

impl ChildProcess {
    /// Starts `command` with piped output. `name` prefixes echoed lines and messages.
    pub fn spawn(name: &str, mut command: Command) -> HarnessResult<Self> {
        command.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
        let mut child = command.spawn().map_err(|e| format!("cannot start {name} ({command:?}): {e}"))?;
        let output = Arc::new(Mutex::new(String::new()));
        let echo = std::env::var_os("TEST_LOG").is_some();
        if let Some(out) = child.stdout.take() {
            capture(name, out, Arc::clone(&output), echo);
        }
        if let Some(err) = child.stderr.take() {
            capture(name, err, Arc::clone(&output), echo);
        }
        Ok(Self { name: name.to_owned(), child, output })
    }

    /// Everything the process printed so far (stdout and stderr interleaved by line).
    pub fn output(&self) -> String {
        self.output.lock().map(|o| o.clone()).unwrap_or_default()
    }

    /// The operating-system process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Waits until the output contains `needle` (polled every 20 ms, bounded by `timeout`).
    pub async fn wait_for_output(&mut self, needle: &str, timeout: Duration) -> HarnessResult<()> {
        let deadline = Instant::now() + timeout;
        loop {
            if self.output().contains(needle) {
                return Ok(());
            }
            if let Some(status) = self.exit_status() {
                return Err(format!("{} exited ({status}) before printing {needle:?}:\n{}", self.name, self.output()));
            }
            if Instant::now() > deadline {
                return Err(format!("{} did not print {needle:?} within {timeout:?}:\n{}", self.name, self.output()));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// The exit status if the process has exited.
    pub fn exit_status(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    /// Waits for the process to exit by itself, bounded by `timeout` (then kills it).
    pub async fn wait_exit(&mut self, timeout: Duration) -> HarnessResult<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            match self.child.try_wait() {
                Ok(Some(status)) => return Ok(status),
                Ok(None) if Instant::now() < deadline => tokio::time::sleep(Duration::from_millis(20)).await,
                Ok(None) => {
                    let _ = self.child.kill();
                    return Err(format!("{} did not exit within {timeout:?}:\n{}", self.name, self.output()));
                }
                Err(e) => return Err(format!("waiting for {}: {e}", self.name)),
            }
        }
    }

    /// Sends a signal by name (`TERM`, `KILL`, `INT`) with the system `kill` command.
    pub fn signal(&self, signal: &str) -> HarnessResult<()> {
        let status = Command::new("kill")
            .args([format!("-{signal}"), self.child.id().to_string()])
            .status()
            .map_err(|e| format!("kill -{signal} {}: {e}", self.name))?;
        status.success().then_some(()).ok_or_else(|| format!("kill -{signal} {} failed: {status}", self.name))
    }

    /// Kills the process now and reaps it.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for ChildProcess {
    fn drop(&mut self) {
        self.kill();
    }
}

fn capture(name: &str, stream: impl Read + Send + 'static, sink: Arc<Mutex<String>>, echo: bool) {
    let name = name.to_owned();
    std::thread::spawn(move || {
        for line in BufReader::new(stream).lines().map_while(Result::ok) {
            if echo {
                eprintln!("[{name}] {line}");
            }
            if let Ok(mut out) = sink.lock() {
                out.push_str(&line);
                out.push('\n');
            }
        }
    });
}

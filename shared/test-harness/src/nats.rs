//! A real nats-server for tests: free ports, temp JetStream store, killed on drop.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use crate::paths::find_program;
use crate::process::ChildProcess;
use crate::{HarnessResult, free_port, http};

/// Oldest server accepted: message tracing and the auth callout behaviour we rely on.
const MIN_VERSION: (u32, u32) = (2, 12);

/// A nats-server started for one test.
#[derive(Debug)]
pub struct NatsServer {
    child: Option<ChildProcess>,
    bin: PathBuf,
    config: Option<PathBuf>,
    envs: Vec<(String, String)>,
    port: u16,
    monitor_port: u16,
    dir: tempfile::TempDir,
}

impl NatsServer {
    /// JetStream enabled, no auth, loopback only.
    pub async fn start() -> HarnessResult<Self> {
        Self::start_with(None, Vec::new()).await
    }

    /// Runs with `config` (e.g. the project's `nats/nats.conf`) and extra environment
    /// variables for its `$VAR` references. Listen and monitoring ports are set on the
    /// command line, which overrides the file; the JetStream store dir is a temp dir passed
    /// as `NATS_STORE_DIR`.
    pub async fn start_with(config: Option<&Path>, envs: Vec<(String, String)>) -> HarnessResult<Self> {
        let bin = find_program("NATS_SERVER_BIN", "nats-server").ok_or(
            "nats-server not found: run scripts/test-deps.sh (installs nats-server 2.12.8 into .tools/) \
             or set NATS_SERVER_BIN",
        )?;
        check_version(&bin)?;
        let dir = tempfile::tempdir().map_err(|e| format!("temp dir: {e}"))?;
        let mut server = Self {
            child: None,
            bin,
            config: config.map(Path::to_path_buf),
            envs,
            port: free_port(),
            monitor_port: free_port(),
            dir,
        };
        server.start_again().await?;
        Ok(server)
    }

    /// Starts the server (again) on the same ports and store, e.g. after [`Self::stop`].
    pub async fn start_again(&mut self) -> HarnessResult<()> {
        let mut cmd = Command::new(&self.bin);
        cmd.args(["-a", "127.0.0.1", "-p", &self.port.to_string(), "-m", &self.monitor_port.to_string()]);
        match &self.config {
            // The project's config sets `store_dir: $NATS_STORE_DIR` (a second -sd is an error).
            Some(config) => cmd.arg("-c").arg(config).env("NATS_STORE_DIR", self.dir.path()),
            None => cmd.arg("-js").arg("-sd").arg(self.dir.path()),
        };
        cmd.envs(self.envs.iter().map(|(k, v)| (k, v)));
        let mut child = ChildProcess::spawn("nats-server", cmd)?;
        // /healthz on the monitoring port answers 200 once JetStream is ready too.
        let deadline = Instant::now() + Duration::from_secs(15);
        while http::get_status(self.monitor_port, "/healthz").await != Some(200) {
            if let Some(status) = child.exit_status() {
                return Err(format!("nats-server exited ({status}):\n{}", child.output()));
            }
            if Instant::now() > deadline {
                return Err(format!("nats-server not healthy within 15 s:\n{}", child.output()));
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        self.child = Some(child);
        Ok(())
    }

    /// Stops the server (SIGKILL); the store stays for [`Self::start_again`].
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.kill();
        }
    }

    /// `nats://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// Client port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// HTTP monitoring port (`/varz`, `/jsz`, `/healthz`).
    pub fn monitor_port(&self) -> u16 {
        self.monitor_port
    }

    /// What the server printed so far.
    pub fn output(&self) -> String {
        self.child.as_ref().map(ChildProcess::output).unwrap_or_default()
    }
}

fn check_version(bin: &Path) -> HarnessResult<()> {
    let out = Command::new(bin).arg("--version").output().map_err(|e| format!("{}: {e}", bin.display()))?;
    let text = String::from_utf8_lossy(&out.stdout);
    // "nats-server: v2.12.8"
    let version = text.trim().rsplit('v').next().unwrap_or_default();
    let mut parts = version.split('.').map(|p| p.parse::<u32>().unwrap_or(0));
    let (major, minor) = (parts.next().unwrap_or(0), parts.next().unwrap_or(0));
    if (major, minor) < MIN_VERSION {
        return Err(format!(
            "{} is {}; tests need nats-server {}.{} or later (scripts/test-deps.sh installs 2.12.8)",
            bin.display(),
            text.trim(),
            MIN_VERSION.0,
            MIN_VERSION.1
        ));
    }
    Ok(())
}

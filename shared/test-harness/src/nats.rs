//! A real nats-server for tests: free ports, temp JetStream store, killed on drop; alone
//! or as a three-node cluster running the project's `nats/cluster.conf`.

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
    /// Cluster flags of a node without a config file (`-n`, `--cluster`, `--routes`).
    cluster_flags: Vec<String>,
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
        let mut server = Self::prepare(config, envs)?;
        server.start_again().await?;
        Ok(server)
    }

    /// Three nodes `nats-1..3` on loopback, each running `config_dir/cluster.conf` (which
    /// includes `accounts.conf` from the same directory) with its own store, routes
    /// authenticated with a fresh route password. The file's cluster listen port is replaced
    /// by a free loopback port per node (`node-<i>.conf` beside it); everything else is the
    /// file as shipped. Returns once every node reports healthy (JetStream meta leader known).
    pub async fn start_cluster(config_dir: &Path, envs: Vec<(String, String)>) -> HarnessResult<Vec<Self>> {
        let template =
            std::fs::read_to_string(config_dir.join("cluster.conf")).map_err(|e| format!("cluster.conf: {e}"))?;
        let anchor = "\n  port: 6222\n";
        if !template.contains(anchor) {
            return Err(format!("nats/cluster.conf changed: update start_cluster in {}", file!()));
        }
        let route_ports: Vec<u16> = (0..3).map(|_| free_port()).collect();
        let password = format!("pw{:032x}", rand::random::<u128>());
        let routes: Vec<String> =
            route_ports.iter().map(|p| format!("\"nats-route://route:{password}@127.0.0.1:{p}\"")).collect();
        let mut nodes = Vec::new();
        for (i, route_port) in route_ports.iter().enumerate() {
            let config = config_dir.join(format!("node-{}.conf", i + 1));
            let text = template.replacen(anchor, &format!("\n  listen: 127.0.0.1:{route_port}\n"), 1);
            std::fs::write(&config, text).map_err(|e| format!("write {}: {e}", config.display()))?;
            let mut node_envs = envs.clone();
            node_envs.extend([
                ("NATS_SERVER_NAME".to_owned(), format!("nats-{}", i + 1)),
                ("NATS_ROUTE_PASSWORD".to_owned(), password.clone()),
                ("NATS_ROUTES".to_owned(), format!("[{}]", routes.join(", "))),
            ]);
            let mut node = Self::prepare(Some(&config), node_envs)?;
            node.spawn()?;
            nodes.push(node);
        }
        // A clustered JetStream is healthy only with a quorum: wait once all three run.
        for node in &mut nodes {
            node.wait_healthy().await?;
        }
        Ok(nodes)
    }

    /// Three nodes `nats-1..3` on loopback with JetStream and no auth (like [`Self::start`]),
    /// clustered with command-line flags: for benchmarks comparing a cluster with one server.
    pub async fn start_plain_cluster() -> HarnessResult<Vec<Self>> {
        let route_ports: Vec<u16> = (0..3).map(|_| free_port()).collect();
        let routes: Vec<String> = route_ports.iter().map(|p| format!("nats-route://127.0.0.1:{p}")).collect();
        let mut nodes = Vec::new();
        for (i, route_port) in route_ports.iter().enumerate() {
            let name = format!("nats-{}", i + 1);
            let mut node = Self::prepare(None, vec![("NATS_SERVER_NAME".to_owned(), name.clone())])?;
            node.cluster_flags = ["-n", &name, "--cluster_name", "chat", "--cluster"]
                .map(str::to_owned)
                .into_iter()
                .chain([format!("nats://127.0.0.1:{route_port}"), "--routes".to_owned(), routes.join(",")])
                .collect();
            node.spawn()?;
            nodes.push(node);
        }
        for node in &mut nodes {
            node.wait_healthy().await?;
        }
        Ok(nodes)
    }

    fn prepare(config: Option<&Path>, envs: Vec<(String, String)>) -> HarnessResult<Self> {
        let bin = find_program("NATS_SERVER_BIN", "nats-server").ok_or(
            "nats-server not found: run scripts/test-deps.sh (installs nats-server 2.12.8 into .tools/) \
             or set NATS_SERVER_BIN",
        )?;
        check_version(&bin)?;
        let dir = tempfile::tempdir().map_err(|e| format!("temp dir: {e}"))?;
        Ok(Self {
            child: None,
            bin,
            config: config.map(Path::to_path_buf),
            envs,
            cluster_flags: Vec::new(),
            port: free_port(),
            monitor_port: free_port(),
            dir,
        })
    }

    /// Starts the server (again) on the same ports and store, e.g. after [`Self::stop`].
    pub async fn start_again(&mut self) -> HarnessResult<()> {
        self.spawn()?;
        self.wait_healthy().await
    }

    fn spawn(&mut self) -> HarnessResult<()> {
        let mut cmd = Command::new(&self.bin);
        cmd.args(["-a", "127.0.0.1", "-p", &self.port.to_string(), "-m", &self.monitor_port.to_string()]);
        match &self.config {
            // The project's config sets `store_dir: $NATS_STORE_DIR` (a second -sd is an error).
            Some(config) => cmd.arg("-c").arg(config).env("NATS_STORE_DIR", self.dir.path()),
            None => cmd.arg("-js").arg("-sd").arg(self.dir.path()).args(&self.cluster_flags),
        };
        cmd.envs(self.envs.iter().map(|(k, v)| (k, v)));
        self.child = Some(ChildProcess::spawn("nats-server", cmd)?);
        Ok(())
    }

    /// Waits until /healthz on the monitoring port answers 200 (JetStream ready too).
    async fn wait_healthy(&mut self) -> HarnessResult<()> {
        let deadline = Instant::now() + Duration::from_secs(20);
        while http::get_status(self.monitor_port, "/healthz").await != Some(200) {
            let child = self.child.as_mut().ok_or("nats-server is not running")?;
            if let Some(status) = child.exit_status() {
                return Err(format!("nats-server exited ({status}):\n{}", child.output()));
            }
            if Instant::now() > deadline {
                return Err(format!("nats-server not healthy within 20 s:\n{}", child.output()));
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        Ok(())
    }

    /// The `server_name` (`nats-<i>` in a cluster).
    pub fn name(&self) -> &str {
        self.envs.iter().find(|(k, _)| k == "NATS_SERVER_NAME").map_or("", |(_, v)| v.as_str())
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

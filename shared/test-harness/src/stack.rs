//! `spawn_app` for this project: a real nats-server, a fresh PostgreSQL database and an
//! OTLP receiver, plus helpers that start the real service binaries and run `chat-cli`
//! against them with the right environment.

use std::collections::BTreeMap;
use std::process::Command;
use std::time::{Duration, Instant};

use crate::paths::cargo_bin;
use crate::{ChildProcess, HarnessResult, NatsServer, OtlpReceiver, Postgres, TestDatabase, free_port, http};

/// The servers one test runs against.
#[derive(Debug)]
pub struct ChatStack {
    /// nats-server with JetStream (in a cluster stack: node `nats-1`).
    pub nats: NatsServer,
    /// With [`ChatStack::start_secured_cluster`]: nodes `nats-2` and `nats-3`.
    pub other_nodes: Vec<NatsServer>,
    /// PostgreSQL (owned by the stack so it can be stopped and started).
    pub postgres: Postgres,
    /// This test's database.
    pub db: TestDatabase,
    /// Where every service exports.
    pub otlp: OtlpReceiver,
    /// With [`ChatStack::start_secured`]: the generated `.env` (keys and passwords).
    pub secrets: BTreeMap<String, String>,
    /// The servers' config files (the project's plus the test admin), kept while they run.
    _nats_config: Option<tempfile::TempDir>,
    /// Exporter settings that replace the receiver's for the services and chat-cli
    /// started from now on (e.g. traces to a real Tempo): see [`ChatStack::export_to`].
    export_overrides: Vec<(String, String)>,
}

/// The test-only NATS user of [`ChatStack::start_secured`].
const TEST_ADMIN: &str = "test-admin";
const TEST_ADMIN_PASSWORD: &str = "TEST_ADMIN_PASSWORD";

/// The project's `nats/*.conf` in a temp dir, with the `test-admin` user added to `CHAT` in
/// `accounts.conf` (listed in `auth_users`, so it bypasses the callout). Fails if the
/// anchors it edits moved.
fn with_test_admin() -> HarnessResult<tempfile::TempDir> {
    let dir = tempfile::tempdir().map_err(|e| format!("temp dir: {e}"))?;
    let project = crate::paths::workspace_root().join("nats");
    for name in ["nats.conf", "cluster.conf", "accounts.conf"] {
        std::fs::copy(project.join(name), dir.path().join(name)).map_err(|e| format!("copy nats/{name}: {e}"))?;
    }
    let accounts = dir.path().join("accounts.conf");
    let text = std::fs::read_to_string(&accounts).map_err(|e| format!("{}: {e}", accounts.display()))?;
    let users_anchor = "    users: [\n      # persist-worker";
    let auth_users_anchor = "auth_users: [ auth, persist, setup, history, tracer, otlp-bridge ]";
    if !text.contains(users_anchor) || !text.contains(auth_users_anchor) {
        return Err(format!("nats/accounts.conf changed: update with_test_admin in {}", file!()));
    }
    let admin = format!("{{ user: {TEST_ADMIN}, password: ${TEST_ADMIN_PASSWORD} }}");
    let text =
        text.replacen(users_anchor, &format!("    users: [\n      {admin}\n      # persist-worker"), 1).replacen(
            auth_users_anchor,
            &format!("auth_users: [ auth, persist, setup, history, tracer, otlp-bridge, {TEST_ADMIN} ]"),
            1,
        );
    std::fs::write(&accounts, text).map_err(|e| format!("write {}: {e}", accounts.display()))?;
    Ok(dir)
}

/// Keys and passwords fresh from `auth-service keygen` plus the test admin's.
fn fresh_secrets() -> HarnessResult<BTreeMap<String, String>> {
    let out = Command::new(cargo_bin("auth-service")).arg("keygen").output().map_err(|e| format!("keygen: {e}"))?;
    let mut secrets: BTreeMap<String, String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.split_once('=').map(|(k, v)| (k.to_owned(), v.to_owned())))
        .collect();
    secrets.insert(TEST_ADMIN_PASSWORD.to_owned(), random_password());
    Ok(secrets)
}

/// The environment nats-server reads the secrets (and the trace sampling) from.
fn nats_env(secrets: &BTreeMap<String, String>) -> Vec<(String, String)> {
    let mut env: Vec<(String, String)> = secrets.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
    env.push(("NATS_TRACE_SAMPLING".to_owned(), "100".to_owned()));
    env
}

/// A random password (nats.conf reads `$VAR` values as config values: start with a letter).
fn random_password() -> String {
    format!("pw{:032x}", rand::random::<u128>())
}

/// A running service binary with its health port.
#[derive(Debug)]
pub struct Service {
    /// The process.
    pub process: ChildProcess,
    /// Port of `/healthz` and `/readyz` on 127.0.0.1.
    pub health_port: u16,
}

impl Service {
    /// The status code of `GET /readyz`, if the service answers.
    pub async fn readyz(&self) -> Option<u16> {
        http::get_status(self.health_port, "/readyz").await
    }

    /// Waits (bounded) until `/readyz` answers `status`.
    pub async fn wait_readyz(&mut self, status: u16, timeout: Duration) -> HarnessResult<()> {
        let deadline = Instant::now() + timeout;
        loop {
            if self.readyz().await == Some(status) {
                return Ok(());
            }
            if let Some(exit) = self.process.exit_status() {
                return Err(format!("service exited ({exit}) before /readyz was {status}:\n{}", self.process.output()));
            }
            if Instant::now() > deadline {
                return Err(format!("/readyz not {status} within {timeout:?}:\n{}", self.process.output()));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// What a `chat-cli` run printed.
#[derive(Debug)]
pub struct CliRun {
    /// Exit code (`None` if killed by a signal).
    pub code: Option<i32>,
    /// Results (JSON lines with `--json`).
    pub stdout: String,
    /// Log lines and errors.
    pub stderr: String,
}

impl CliRun {
    /// The stdout lines that parse as JSON objects.
    pub fn json_lines(&self) -> Vec<serde_json::Value> {
        self.stdout.lines().filter_map(|l| serde_json::from_str(l).ok()).collect()
    }
}

impl ChatStack {
    /// Starts nats-server, PostgreSQL (with a fresh database) and the OTLP receiver.
    pub async fn start() -> HarnessResult<Self> {
        let nats = NatsServer::start().await?;
        Self::with_nats(nats, Vec::new(), BTreeMap::new(), None).await
    }

    /// Like [`ChatStack::start`] on a three-node cluster without auth
    /// ([`NatsServer::start_plain_cluster`]).
    pub async fn start_cluster() -> HarnessResult<Self> {
        let mut nodes = NatsServer::start_plain_cluster().await?.into_iter();
        let first = nodes.next().ok_or("no node")?;
        Self::with_nats(first, nodes.collect(), BTreeMap::new(), None).await
    }

    /// Like [`ChatStack::start`], but nats-server runs the project's `nats/nats.conf` with
    /// keys and passwords fresh from `auth-service keygen`: clients need the auth callout,
    /// services log in as their service users (with the permissions the file gives them).
    ///
    /// The one change to the file: a test-only user `test-admin` with no permission
    /// limits in the `CHAT` account ([`ChatStack::admin`]), for setting up and inspecting
    /// what the tests need (raw stored messages, hostile publishes, deleting a consumer).
    pub async fn start_secured() -> HarnessResult<Self> {
        let secrets = fresh_secrets()?;
        let config = with_test_admin()?;
        let nats = NatsServer::start_with(Some(&config.path().join("nats.conf")), nats_env(&secrets)).await?;
        Self::with_nats(nats, Vec::new(), secrets, Some(config)).await
    }

    /// Like [`ChatStack::start_secured`] on a three-node cluster running the project's
    /// `nats/cluster.conf` ([`NatsServer::start_cluster`]): services and chat-cli get every
    /// node in `NATS_URL` ([`ChatStack::nats_url`]).
    pub async fn start_secured_cluster() -> HarnessResult<Self> {
        let secrets = fresh_secrets()?;
        let config = with_test_admin()?;
        let mut nodes = NatsServer::start_cluster(config.path(), nats_env(&secrets)).await?.into_iter();
        let first = nodes.next().ok_or("no node")?;
        Self::with_nats(first, nodes.collect(), secrets, Some(config)).await
    }

    async fn with_nats(
        nats: NatsServer,
        other_nodes: Vec<NatsServer>,
        secrets: BTreeMap<String, String>,
        config: Option<tempfile::TempDir>,
    ) -> HarnessResult<Self> {
        let postgres = Postgres::start()?;
        let db = postgres.create_database()?;
        let otlp = OtlpReceiver::start().await?;
        Ok(Self { nats, other_nodes, postgres, db, otlp, secrets, _nats_config: config, export_overrides: Vec::new() })
    }

    /// Every node's URL (one on a single server).
    pub fn node_urls(&self) -> Vec<String> {
        std::iter::once(&self.nats).chain(&self.other_nodes).map(NatsServer::url).collect()
    }

    /// [`ChatStack::node_urls`] comma separated, as `NATS_URL` takes them.
    pub fn nats_url(&self) -> String {
        self.node_urls().join(",")
    }

    /// The node named `name` (`nats-1`..`nats-3` in a cluster), for stopping and starting it.
    pub fn node_mut(&mut self, name: &str) -> Option<&mut NatsServer> {
        std::iter::once(&mut self.nats).chain(&mut self.other_nodes).find(|n| n.name() == name)
    }

    /// Services and chat-cli started from now on export with these `OTEL_*` settings on
    /// top of the receiver's (per-signal endpoints and protocols send a signal elsewhere).
    pub fn export_to(&mut self, overrides: &[(&str, &str)]) {
        self.export_overrides = overrides.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect();
    }

    /// A client as the test-only `test-admin` user of [`ChatStack::start_secured`] (no
    /// permission limits in the `CHAT` account); on [`ChatStack::start`], a plain client.
    pub async fn admin(&self) -> HarnessResult<async_nats::Client> {
        let mut options = async_nats::ConnectOptions::new().name("test-admin");
        if let Some(password) = self.secrets.get(TEST_ADMIN_PASSWORD) {
            options = options.user_and_password(TEST_ADMIN.to_owned(), password.clone());
        }
        options.connect(self.node_urls()).await.map_err(|e| format!("test-admin: {e}"))
    }

    fn secret(&self, key: &str) -> &str {
        self.secrets.get(key).map_or("", String::as_str)
    }

    /// A command for workspace binary `bin`, exporting to the receiver as `bin`, with
    /// `NATS_URL`, `DATABASE_URL` and a free `HEALTH_ADDR` (nats-trace-bridge: and
    /// `NATS_MONITOR_URL`).
    pub fn service_command(&self, bin: &str, health_port: u16) -> Command {
        let mut cmd = Command::new(cargo_bin(bin));
        cmd.envs(self.otlp.env())
            .envs(self.export_overrides.iter().map(|(k, v)| (k, v)))
            .env("OTEL_SERVICE_NAME", bin)
            .env("RUST_LOG", "info")
            .env("NATS_URL", self.nats_url())
            .env("DATABASE_URL", &self.db.url)
            .env("HEALTH_ADDR", format!("127.0.0.1:{health_port}"));
        if bin == "nats-trace-bridge" {
            // As compose: the JetStream gauges from every node's monitoring endpoint.
            let nodes = std::iter::once(&self.nats).chain(&self.other_nodes);
            let urls: Vec<String> = nodes.map(|n| format!("http://127.0.0.1:{}", n.monitor_port())).collect();
            cmd.env("NATS_MONITOR_URL", urls.join(","));
        }
        if !self.secrets.is_empty() {
            let (user, password) = match bin {
                "auth-service" => ("auth", "NATS_AUTH_PASSWORD"),
                "history-service" => ("history", "NATS_HISTORY_PASSWORD"),
                "nats-trace-bridge" => ("tracer", "NATS_TRACER_PASSWORD"),
                "otlp-bridge" => ("otlp-bridge", "NATS_OTLP_BRIDGE_PASSWORD"),
                _ => ("persist", "NATS_PERSIST_PASSWORD"),
            };
            cmd.env("NATS_USER", user).env("NATS_PASSWORD", self.secret(password));
            if bin == "auth-service" {
                cmd.env("AUTH_ACCOUNT_SEED", self.secret("AUTH_ACCOUNT_SEED"))
                    .env("AUTH_XKEY_SEED", self.secret("AUTH_XKEY_SEED"));
            }
        }
        cmd
    }

    /// The setup step as `make up` runs it: `persist-worker setup` as the NATS user
    /// `setup`, with the worker's settings in `env` (stream and consumer settings are the
    /// step's to apply). Run before every worker [`ChatStack::spawn_service`] starts, and
    /// by tests that make the streams or the consumer vanish.
    pub async fn set_up_streams(&self, env: &[(&str, &str)]) -> HarnessResult<()> {
        let mut cmd = self.service_command("persist-worker", free_port());
        cmd.arg("setup").env("OTEL_SERVICE_NAME", "stream-setup").envs(env.iter().copied());
        if !self.secrets.is_empty() {
            cmd.env("NATS_USER", "setup").env("NATS_PASSWORD", self.secret("NATS_SETUP_PASSWORD"));
        }
        let mut setup = ChildProcess::spawn("stream-setup", cmd)?;
        let status = setup.wait_exit(Duration::from_secs(90)).await?;
        if status.success() { Ok(()) } else { Err(format!("setup step failed ({status}):\n{}", setup.output())) }
    }

    /// The telemetry setup step as `make up` runs it: `otlp-bridge setup` as the NATS
    /// user `setup` (streams TELEMETRY, TELEMETRY_DLQ and the consumer `otlp-bridge`).
    pub async fn set_up_telemetry_streams(&self) -> HarnessResult<()> {
        let mut cmd = self.service_command("otlp-bridge", free_port());
        cmd.arg("setup").env("OTEL_SERVICE_NAME", "telemetry-setup");
        if !self.secrets.is_empty() {
            cmd.env("NATS_USER", "setup").env("NATS_PASSWORD", self.secret("NATS_SETUP_PASSWORD"));
        }
        let mut setup = ChildProcess::spawn("telemetry-setup", cmd)?;
        let status = setup.wait_exit(Duration::from_secs(90)).await?;
        if status.success() { Ok(()) } else { Err(format!("telemetry setup failed ({status}):\n{}", setup.output())) }
    }

    /// Starts a service binary with extra environment and waits until it is ready (the
    /// worker and the OTLP bridge after their setup steps).
    pub async fn spawn_service(&self, bin: &str, env: &[(&str, &str)]) -> HarnessResult<Service> {
        if bin == "persist-worker" {
            self.set_up_streams(env).await?;
        }
        if bin == "otlp-bridge" {
            self.set_up_telemetry_streams().await?;
        }
        let health_port = free_port();
        let mut cmd = self.service_command(bin, health_port);
        cmd.envs(env.iter().copied());
        let mut service = Service { process: ChildProcess::spawn(bin, cmd)?, health_port };
        service.wait_readyz(200, Duration::from_secs(30)).await?;
        Ok(service)
    }

    /// `chat-cli <args>` with this stack's environment, not started: for a run the test
    /// works beside (e.g. stopping a node meanwhile). Killed when dropped.
    pub fn cli_command(&self, args: &[&str]) -> tokio::process::Command {
        let mut cmd = tokio::process::Command::new(cargo_bin("chat-cli"));
        cmd.envs(self.otlp.env())
            .envs(self.export_overrides.iter().map(|(k, v)| (k, v)))
            .env("OTEL_SERVICE_NAME", "chat-cli")
            .env("NATS_URL", self.nats_url())
            // Never pick up a token cached by a developer's own `chat-cli login`.
            .env("XDG_CACHE_HOME", std::env::temp_dir().join(format!("chat-cli-test-{}", std::process::id())))
            .args(args)
            .kill_on_drop(true);
        cmd
    }

    /// Runs `chat-cli <args>` to completion (bounded by 120 s).
    pub async fn cli(&self, args: &[&str]) -> HarnessResult<CliRun> {
        let mut cmd = self.cli_command(args);
        let output = tokio::time::timeout(Duration::from_secs(120), cmd.output())
            .await
            .map_err(|_| format!("chat-cli {args:?} did not finish within 120 s"))?
            .map_err(|e| format!("chat-cli: {e}"))?;
        Ok(CliRun {
            code: output.status.code(),
            stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        })
    }

    /// Runs `chat-cli --json <args>`, requires exit 0, and returns its JSON lines.
    pub async fn cli_ok(&self, args: &[&str]) -> HarnessResult<Vec<serde_json::Value>> {
        let run = self.cli(&[&["--json"], args].concat()).await?;
        if run.code != Some(0) {
            return Err(format!(
                "chat-cli {args:?} exited {:?}\nstdout:\n{}\nstderr:\n{}",
                run.code, run.stdout, run.stderr
            ));
        }
        Ok(run.json_lines())
    }
}

//! `/healthz` and `/readyz` for every service, and the probe behind each binary's
//! `healthcheck` subcommand (for images without a shell or curl).
//!
//! Owns: the named readiness checks, their JSON report, the axum router and server, and
//! a minimal HTTP/1.1 GET client. `/healthz` answers 200 while the process serves HTTP;
//! `/readyz` runs every check and answers 503 if any fails.

use std::collections::BTreeMap;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use axum::{Json, Router};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};

/// The result of one readiness check: `Err` carries a short reason (no secrets).
pub type CheckResult = Result<(), String>;
type CheckFn = dyn Fn() -> Pin<Box<dyn Future<Output = CheckResult> + Send>> + Send + Sync;

/// How long one readiness check may take before it counts as failed (well below the
/// healthcheck probe's 3 s).
const CHECK_TIMEOUT: Duration = Duration::from_millis(1500);

/// `HEALTH_ADDR`: where `/healthz` and `/readyz` listen.
#[derive(Debug, Clone, clap::Args)]
pub struct HealthArgs {
    /// Address of the health endpoints (/healthz, /readyz).
    #[arg(long, global = true, env = "HEALTH_ADDR", default_value = "0.0.0.0:8080")]
    pub health_addr: SocketAddr,
}

/// A readiness condition the service's work sets and a check reads (e.g. "pulling from
/// the consumer"). Cheap to clone; false until set.
#[derive(Debug, Clone, Default)]
pub struct Flag(Arc<std::sync::atomic::AtomicBool>);

impl Flag {
    /// Whether the condition holds.
    pub fn get(&self) -> bool {
        self.0.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Sets it.
    pub fn set(&self, holds: bool) {
        self.0.store(holds, std::sync::atomic::Ordering::Relaxed);
    }
}

/// Named readiness checks, cheap to clone.
#[derive(Clone, Default)]
pub struct Health {
    checks: Vec<(&'static str, Arc<CheckFn>)>,
}

impl std::fmt::Debug for Health {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.checks.iter().map(|(name, _)| name)).finish()
    }
}

impl Health {
    /// No checks yet: ready.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a check named `name` (e.g. `nats`, `database`, `jwks`).
    pub fn with_check<F, Fut>(mut self, name: &'static str, check: F) -> Self
    where
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: Future<Output = CheckResult> + Send + 'static,
    {
        self.checks.push((name, Arc::new(move || Box::pin(check()))));
        self
    }

    /// Adds the check `name`: ready while `flag` is set; else not ready with `reason`.
    pub fn with_flag(self, name: &'static str, flag: Flag, reason: &'static str) -> Self {
        self.with_check(name, move || {
            let holds = flag.get();
            async move { if holds { Ok(()) } else { Err(reason.to_owned()) } }
        })
    }

    /// Adds the check `nats`: ready while the client is connected and its connection
    /// answers a PING (a flush), so a client whose connection task is gone, whatever
    /// state it last reported, is not ready.
    pub fn with_nats(self, client: async_nats::Client) -> Self {
        self.with_check("nats", move || {
            let client = client.clone();
            async move {
                match client.connection_state() {
                    async_nats::connection::State::Connected => {
                        client.flush().await.map_err(|error| format!("NATS does not answer: {error}"))
                    }
                    other => Err(format!("NATS {other}")),
                }
            }
        })
    }

    /// Binds `addr` and serves in the background until [`HealthServer::stop`].
    pub async fn spawn(self, addr: SocketAddr) -> std::io::Result<HealthServer> {
        let listener = TcpListener::bind(addr).await?;
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(self.serve(listener, async {
            let _ = stopped.await;
        }));
        Ok(HealthServer { stop, task })
    }

    /// Runs every check (each bounded by a timeout); `true` when all pass.
    /// Checks run concurrently, so `/readyz` answers within `CHECK_TIMEOUT` (1.5 s) however many
    /// checks there are (probes give up after a few seconds).
    pub async fn report(&self) -> (bool, BTreeMap<&'static str, String>) {
        let outcomes = futures::future::join_all(self.checks.iter().map(|(name, check)| async move {
            let outcome = match tokio::time::timeout(CHECK_TIMEOUT, check()).await {
                Ok(Ok(())) => "ok".to_owned(),
                Ok(Err(reason)) => reason,
                Err(_) => format!("check timed out after {CHECK_TIMEOUT:?}"),
            };
            (*name, outcome)
        }))
        .await;
        let all_ok = outcomes.iter().all(|(_, outcome)| outcome == "ok");
        (all_ok, outcomes.into_iter().collect())
    }

    /// The router serving `/healthz` and `/readyz`.
    pub fn router(self) -> Router {
        Router::new()
            .route("/healthz", get(|| async { Json(serde_json::json!({ "status": "ok" })) }))
            .route("/readyz", get(readyz))
            .with_state(self)
    }

    /// Serves the router on `listener` until `shutdown` completes.
    pub async fn serve(
        self,
        listener: TcpListener,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        axum::serve(listener, self.router()).with_graceful_shutdown(shutdown).await
    }
}

/// A health server running in the background.
#[derive(Debug)]
pub struct HealthServer {
    stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<std::io::Result<()>>,
}

impl HealthServer {
    /// Stops serving and waits for the server to finish.
    pub async fn stop(self) {
        let _ = self.stop.send(());
        let _ = self.task.await;
    }
}

async fn readyz(State(health): State<Health>) -> (StatusCode, Json<serde_json::Value>) {
    let (ok, checks) = health.report().await;
    let status = if ok { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    let body = serde_json::json!({ "status": if ok { "ready" } else { "not ready" }, "checks": checks });
    (status, Json(body))
}

/// Why a health probe failed.
#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    /// Could not connect, send or read.
    #[error("cannot reach {addr}: {source}")]
    Io {
        /// The probed address.
        addr: SocketAddr,
        /// The I/O error.
        source: std::io::Error,
    },
    /// No answer in time.
    #[error("no answer from {0} in time")]
    Timeout(SocketAddr),
    /// An answer that was not `200 OK`.
    #[error("{path} answered {status_line:?}")]
    NotOk {
        /// The probed path.
        path: String,
        /// The HTTP status line received.
        status_line: String,
    },
}

/// GETs `http://<addr><path>` and succeeds on a 200. Used by `<service> healthcheck`.
/// An unspecified address (`0.0.0.0`) is probed on loopback.
pub async fn probe(addr: SocketAddr, path: &str, timeout: Duration) -> Result<(), ProbeError> {
    let mut addr = addr;
    if addr.ip().is_unspecified() {
        addr.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
    }
    let io = |source| ProbeError::Io { addr, source };
    let exchange = async {
        let mut stream = TcpStream::connect(addr).await.map_err(io)?;
        let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
        stream.write_all(request.as_bytes()).await.map_err(io)?;
        let mut response = Vec::new();
        stream.read_to_end(&mut response).await.map_err(io)?;
        Ok::<_, ProbeError>(response)
    };
    let response = tokio::time::timeout(timeout, exchange).await.map_err(|_| ProbeError::Timeout(addr))??;
    let status_line = String::from_utf8_lossy(&response).lines().next().unwrap_or_default().to_owned();
    if status_line.split_whitespace().nth(1) == Some("200") {
        Ok(())
    } else {
        Err(ProbeError::NotOk { path: path.to_owned(), status_line })
    }
}

/// The `healthcheck` subcommand: probes `/readyz` of the service on `addr` and turns the
/// answer into an exit code (for container healthchecks in images without a shell).
pub(crate) async fn healthcheck(addr: SocketAddr) -> std::process::ExitCode {
    match probe(addr, "/readyz", Duration::from_secs(3)).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("not ready: {error}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// Resolves on SIGTERM (how containers are stopped) or Ctrl-C.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = terminate => {},
    }
    tracing::info!("shutdown requested");
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn serve(health: Health) -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        tokio::spawn(health.serve(listener, std::future::pending()));
        addr
    }

    #[tokio::test]
    async fn ready_when_every_check_passes() {
        let addr = serve(Health::new().with_check("nats", || async { Ok(()) })).await;
        probe(addr, "/healthz", Duration::from_secs(2)).await.expect("healthz");
        probe(addr, "/readyz", Duration::from_secs(2)).await.expect("readyz");
    }

    #[tokio::test]
    async fn not_ready_names_the_failing_check() {
        let health = Health::new()
            .with_check("nats", || async { Ok(()) })
            .with_check("database", || async { Err("connection refused".to_owned()) });
        let (ok, report) = health.report().await;
        assert!(!ok);
        assert_eq!(report["database"], "connection refused");
        let addr = serve(health).await;
        probe(addr, "/healthz", Duration::from_secs(2)).await.expect("alive");
        let err = probe(addr, "/readyz", Duration::from_secs(2)).await.expect_err("not ready");
        assert!(err.to_string().contains("503"), "{err}");
    }

    #[tokio::test]
    async fn a_flag_check_follows_its_flag() {
        let flag = Flag::default();
        let health = Health::new().with_flag("consumer", flag.clone(), "not pulling");
        assert_eq!(health.report().await.1["consumer"], "not pulling");
        flag.set(true);
        assert!(health.report().await.0);
    }

    #[tokio::test]
    async fn probe_of_a_closed_port_fails_fast() {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        drop(listener);
        assert!(matches!(probe(addr, "/healthz", Duration::from_secs(2)).await, Err(ProbeError::Io { .. })));
    }
}

//! A throwaway PostgreSQL for tests, or the server named by `TEST_DATABASE_URL`.
//!
//! Each [`Postgres::create_database`] call returns a fresh, empty database. The cluster
//! runs from a temp dir on a free port; as root (CI) it runs as the `postgres` user,
//! because `initdb` refuses root.

use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};

use crate::{HarnessResult, free_port};

/// A database created for one test.
#[derive(Debug, Clone)]
pub struct TestDatabase {
    /// `postgres://postgres@127.0.0.1:<port>/<name>`.
    pub url: String,
    /// Database name.
    pub name: String,
}

/// A PostgreSQL server for tests.
#[derive(Debug)]
pub struct Postgres {
    /// URL of the maintenance database, used to create test databases.
    admin_url: String,
    cluster: Option<Cluster>,
}

#[derive(Debug)]
struct Cluster {
    bin_dir: PathBuf,
    data_dir: PathBuf,
    port: u16,
    run_as_postgres: bool,
    _dir: tempfile::TempDir,
}

impl Postgres {
    /// Uses `TEST_DATABASE_URL` when set, else starts a cluster with `initdb` + `pg_ctl`.
    pub fn start() -> HarnessResult<Self> {
        if let Ok(url) = std::env::var("TEST_DATABASE_URL") {
            return Ok(Self { admin_url: url, cluster: None });
        }
        let bin_dir = pg_bin_dir()?;
        let run_as_postgres = is_root();
        let dir = tempfile::Builder::new().prefix("pg-test-").tempdir().map_err(|e| format!("temp dir: {e}"))?;
        let data_dir = dir.path().join("data");
        if run_as_postgres {
            chown_to_postgres(dir.path())?;
        }
        let cluster = Cluster { bin_dir, data_dir, port: free_port(), run_as_postgres, _dir: dir };
        cluster.run("initdb", &["-D", &path_str(&cluster.data_dir), "-U", "postgres", "--auth=trust", "-E", "UTF8"])?;
        let mut postgres = Self { admin_url: String::new(), cluster: Some(cluster) };
        // A free port can be taken by a parallel test between our probe and the server's
        // bind, and many parallel clusters can briefly exhaust kernel resources: then try
        // again on another port (the port stays fixed once the server ran). The last
        // failure reports the server's log.
        for attempt in 1.. {
            let port = postgres.cluster.as_ref().map_or(0, |c| c.port);
            postgres.admin_url = format!("postgres://postgres@127.0.0.1:{port}/postgres");
            match postgres.start_server() {
                Ok(()) => return Ok(postgres),
                Err(error) => {
                    if attempt >= 3 {
                        return Err(format!("{error}\nserver.log:\n{}", postgres.server_log()));
                    }
                    std::thread::sleep(std::time::Duration::from_millis(500));
                    if let Some(c) = postgres.cluster.as_mut() {
                        c.port = free_port();
                    }
                }
            }
        }
        unreachable!("the loop returns")
    }

    /// The server's log so far (empty when it cannot be read).
    fn server_log(&self) -> String {
        self.cluster
            .as_ref()
            .and_then(|c| std::fs::read_to_string(c.data_dir.join("server.log")).ok())
            .unwrap_or_default()
    }

    /// Starts the cluster's server (again), waiting until it accepts connections.
    pub fn start_server(&self) -> HarnessResult<()> {
        let Some(c) = &self.cluster else { return Err("TEST_DATABASE_URL server is not ours to start".into()) };
        // Durability is irrelevant for throwaway data; these settings only make tests faster.
        let options = format!(
            "-p {} -c listen_addresses=127.0.0.1 -c unix_socket_directories='' -c fsync=off \
             -c synchronous_commit=off -c full_page_writes=off -c max_connections=200",
            c.port
        );
        let log = path_str(&c.data_dir.join("server.log"));
        c.run("pg_ctl", &["-D", &path_str(&c.data_dir), "-o", &options, "-l", &log, "-w", "-t", "30", "start"])
    }

    /// Stops the server (`fast` mode); data stays for [`Self::start_server`].
    pub fn stop_server(&self) -> HarnessResult<()> {
        let Some(c) = &self.cluster else { return Err("TEST_DATABASE_URL server is not ours to stop".into()) };
        c.run("pg_ctl", &["-D", &path_str(&c.data_dir), "-m", "fast", "-w", "stop"])
    }

    /// Creates an empty database with a unique name.
    pub fn create_database(&self) -> HarnessResult<TestDatabase> {
        static COUNTER: AtomicU32 = AtomicU32::new(0);
        let name = format!("test_{}_{}", std::process::id(), COUNTER.fetch_add(1, Ordering::Relaxed));
        let psql = match &self.cluster {
            Some(c) => c.bin_dir.join("psql"),
            None => PathBuf::from("psql"),
        };
        let out = Command::new(psql)
            .args([&self.admin_url, "-v", "ON_ERROR_STOP=1", "-qc", &format!("CREATE DATABASE {name}")])
            .output()
            .map_err(|e| format!("psql: {e}"))?;
        if !out.status.success() {
            return Err(format!("CREATE DATABASE failed: {}", String::from_utf8_lossy(&out.stderr)));
        }
        let base = self.admin_url.rsplit_once('/').map_or(self.admin_url.as_str(), |(base, _)| base);
        Ok(TestDatabase { url: format!("{base}/{name}"), name })
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        if let Some(c) = &self.cluster {
            let _ = c.run("pg_ctl", &["-D", &path_str(&c.data_dir), "-m", "immediate", "-w", "stop"]);
        }
    }
}

impl Cluster {
    fn run(&self, program: &str, args: &[&str]) -> HarnessResult<()> {
        let program = self.bin_dir.join(program);
        let mut cmd = if self.run_as_postgres {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(&program);
            c
        } else {
            Command::new(&program)
        };
        let out = cmd.args(args).output().map_err(|e| format!("{}: {e}", program.display()))?;
        if out.status.success() {
            Ok(())
        } else {
            Err(format!(
                "{} {args:?} failed: {}{}",
                program.display(),
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ))
        }
    }
}

/// `PG_BIN_DIR`, else the newest `/usr/lib/postgresql/<v>/bin`.
fn pg_bin_dir() -> HarnessResult<PathBuf> {
    if let Some(dir) = std::env::var_os("PG_BIN_DIR") {
        return Ok(PathBuf::from(dir));
    }
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| Some((e.file_name().to_str()?.parse().ok()?, e.path().join("bin"))))
        .filter(|(_, bin)| bin.join("initdb").exists())
        .collect();
    versions.sort();
    versions.pop().map(|(_, bin)| bin).ok_or_else(|| {
        "PostgreSQL server binaries not found: install them (scripts/test-deps.sh, or apt-get install \
         postgresql), set PG_BIN_DIR, or point TEST_DATABASE_URL at a server"
            .to_owned()
    })
}

fn is_root() -> bool {
    Command::new("id").arg("-u").output().is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

fn chown_to_postgres(path: &std::path::Path) -> HarnessResult<()> {
    let status =
        Command::new("chown").args(["postgres:postgres"]).arg(path).status().map_err(|e| format!("chown: {e}"))?;
    status.success().then_some(()).ok_or_else(|| format!("chown postgres {} failed", path.display()))
}

fn path_str(path: &std::path::Path) -> String {
    path.to_string_lossy().into_owned()
}

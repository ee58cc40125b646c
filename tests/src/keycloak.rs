//! The real Keycloak for the full-stack logins: the official distribution of the compose
//! image's version (`org.keycloak:keycloak-quarkus-dist` from Maven Central, unpacked by
//! `scripts/test-deps.sh` into `.tools/keycloak-<version>`, or `KEYCLOAK_HOME`), started
//! the way compose starts the image.
//!
//! Each start runs in its own copy of the distribution (170 MB, a second to copy): a
//! `start-dev` rewrites `lib/quarkus` (its augmentation) while starting, and the
//! Keycloak test and the full-stack tier start theirs at the same time in `make test`.
//!
//! **The differences from compose, all of them**: the HTTP and management ports (free
//! ports on loopback instead of 8080 and 9000, and `KC_HOSTNAME` on that port), and the
//! database: `--db=dev-mem` instead of the image's file in the container layer, so each
//! start imports the realm afresh with this run's passwords. The command (`start-dev
//! --import-realm`), the realm file (`keycloak/chat-realm.json`, copied to
//! `data/import`), the environment (bootstrap admin, health, backchannel, the demo
//! password the realm's placeholders take) and the readiness probe (`/health/ready` on
//! the management interface) are the compose file's.

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::Value;
use test_harness::{ChildProcess, HarnessResult, free_port};

use crate::repo_file;

/// The version compose pins (`quay.io/keycloak/keycloak:<version>`).
pub const VERSION: &str = "26.4.0";

/// A running Keycloak with the `chat` realm.
#[derive(Debug)]
pub struct Keycloak {
    /// The JVM (killed on drop).
    pub process: ChildProcess,
    /// HTTP port on 127.0.0.1 (tokens, JWKS, admin API).
    pub port: u16,
    /// This start's copy of the distribution (removed on drop, after the JVM).
    _home: tempfile::TempDir,
    /// How long it took to become ready.
    pub started_in: Duration,
    admin_password: String,
}

/// The unpacked distribution, if there is one (else the tier is skipped).
pub fn home() -> Option<PathBuf> {
    let home = std::env::var_os("KEYCLOAK_HOME")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| repo_file(&format!(".tools/keycloak-{VERSION}")));
    home.join("bin/kc.sh").is_file().then_some(home)
}

impl Keycloak {
    /// Starts it and waits (up to 5 minutes) until the management interface reports
    /// ready, as the compose healthcheck does.
    pub async fn start(
        distribution: &std::path::Path,
        admin_password: &str,
        demo_password: &str,
    ) -> HarnessResult<Self> {
        let copy = tempfile::tempdir().map_err(|e| format!("temp dir: {e}"))?;
        let home = copy.path().join("keycloak");
        let copied = Command::new("cp")
            .arg("-a")
            .arg(distribution)
            .arg(&home)
            .status()
            .map_err(|e| format!("cp -a {}: {e}", distribution.display()))?;
        if !copied.success() {
            return Err(format!("cp -a {} {}: {copied}", distribution.display(), home.display()));
        }
        let import = home.join("data/import");
        std::fs::create_dir_all(&import).map_err(|e| format!("{}: {e}", import.display()))?;
        std::fs::copy(repo_file("keycloak/chat-realm.json"), import.join("chat-realm.json"))
            .map_err(|e| format!("copy the realm: {e}"))?;
        let (port, management_port) = (free_port(), free_port());
        let mut command = Command::new(home.join("bin/kc.sh"));
        command
            .args(["start-dev", "--import-realm", "--db=dev-mem"])
            .arg(format!("--http-port={port}"))
            .arg(format!("--http-management-port={management_port}"))
            .env("KC_BOOTSTRAP_ADMIN_USERNAME", "admin")
            .env("KC_BOOTSTRAP_ADMIN_PASSWORD", admin_password)
            .env("KC_HEALTH_ENABLED", "true")
            .env("KC_HOSTNAME", format!("http://localhost:{port}"))
            .env("KC_HOSTNAME_BACKCHANNEL_DYNAMIC", "true")
            .env("CHAT_DEMO_PASSWORD", demo_password);
        let started = Instant::now();
        let mut process = ChildProcess::spawn("keycloak", command)?;
        let ready = format!("http://127.0.0.1:{management_port}/health/ready");
        let http = reqwest::Client::new();
        loop {
            if let Ok(response) = http.get(&ready).send().await
                && response.text().await.is_ok_and(|body| body.contains("\"UP\""))
            {
                break;
            }
            if let Some(status) = process.exit_status() {
                return Err(format!("keycloak exited ({status}):\n{}", process.output()));
            }
            if started.elapsed() > Duration::from_secs(300) {
                return Err(format!("keycloak not ready within 5 minutes:\n{}", process.output()));
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        Ok(Self {
            process,
            port,
            _home: copy,
            started_in: started.elapsed(),
            admin_password: admin_password.to_owned(),
        })
    }

    /// `http://localhost:<port>`: the issuer's host, as `KC_HOSTNAME` says.
    pub fn url(&self) -> String {
        format!("http://localhost:{}", self.port)
    }

    /// The `chat` realm's issuer (`OIDC_ISSUER` of auth-service).
    pub fn issuer(&self) -> String {
        format!("{}/realms/chat", self.url())
    }

    /// The token endpoint chat-cli logs in at.
    pub fn token_url(&self) -> String {
        format!("{}/protocol/openid-connect/token", self.issuer())
    }

    /// An access token from the password grant of the public client `chat-cli`.
    pub async fn password_grant(&self, user: &str, password: &str) -> Result<Value, String> {
        let form = [("grant_type", "password"), ("client_id", "chat-cli"), ("username", user), ("password", password)];
        let response =
            reqwest::Client::new().post(self.token_url()).form(&form).send().await.map_err(|e| e.to_string())?;
        let status = response.status();
        let body: Value = response.json().await.map_err(|e| e.to_string())?;
        if status.is_success() { Ok(body) } else { Err(format!("{status}: {body}")) }
    }

    /// Calls the admin REST API of the `chat` realm (`path` below `/admin/realms/chat`) as
    /// the bootstrap admin; the answer's JSON (`Null` for an empty body).
    pub async fn admin(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Result<Value, String> {
        let http = reqwest::Client::new();
        let form = [
            ("grant_type", "password"),
            ("client_id", "admin-cli"),
            ("username", "admin"),
            ("password", self.admin_password.as_str()),
        ];
        let token: Value = http
            .post(format!("{}/realms/master/protocol/openid-connect/token", self.url()))
            .form(&form)
            .send()
            .await
            .and_then(reqwest::Response::error_for_status)
            .map_err(|e| format!("admin token: {e}"))?
            .json()
            .await
            .map_err(|e| e.to_string())?;
        let bearer = token["access_token"].as_str().unwrap_or_default().to_owned();
        let mut request = http.request(method, format!("{}/admin/realms/chat{path}", self.url())).bearer_auth(bearer);
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.map_err(|e| e.to_string())?;
        let status = response.status();
        let text = response.text().await.map_err(|e| e.to_string())?;
        if !status.is_success() {
            return Err(format!("{path}: {status}: {text}"));
        }
        Ok(serde_json::from_str(&text).unwrap_or(Value::Null))
    }
}

/// The `kid` of a JWT's header.
pub fn kid(token: &str) -> Option<String> {
    let header = token.split('.').next()?;
    let bytes = data_encoding::BASE64URL_NOPAD.decode(header.trim_end_matches('=').as_bytes()).ok()?;
    serde_json::from_slice::<Value>(&bytes).ok()?["kid"].as_str().map(str::to_owned)
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_token_names_its_key() {
        // {"alg":"RS256","kid":"k1"} . {} . signature
        let token = "eyJhbGciOiJSUzI1NiIsImtpZCI6ImsxIn0.e30.c2ln";
        assert_eq!(super::kid(token).as_deref(), Some("k1"));
        assert_eq!(super::kid("not a token"), None);
    }
}

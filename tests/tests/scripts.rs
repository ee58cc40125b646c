//! `make up` and `make keys` (scripts/up.sh, scripts/keys.sh) with stand-ins for docker
//! and cargo, so that their failure paths run here: a crash loop ends with the logs of
//! the failing services, and `.env` is never partial.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use stack_checks::repo_file;

/// A fake command: a shell script at `dir/name` that records its arguments and runs `body`.
fn stub(dir: &Path, name: &str, body: &str) -> PathBuf {
    let path = dir.join(name);
    let script = format!("#!/usr/bin/env bash\necho \"{name} $*\" >> \"{}/calls\"\n{body}\n", dir.display());
    std::fs::write(&path, script).expect("write stub");
    let mut permissions = std::fs::metadata(&path).expect("stub").permissions();
    std::os::unix::fs::PermissionsExt::set_mode(&mut permissions, 0o755);
    std::fs::set_permissions(&path, permissions).expect("chmod");
    path
}

fn text(out: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
}

/// A copy of the scripts and the root manifest in a temp dir (they `cd` to their parent),
/// with the patched crates already in place (`scripts/patch-crates.sh` finds them done).
fn sandbox() -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("temp dir");
    for sub in ["scripts", "patches"] {
        std::fs::create_dir(dir.path().join(sub)).expect("dir");
    }
    let patch = "patches/async-nats-0.51.0.patch";
    for file in ["scripts/up.sh", "scripts/keys.sh", "scripts/patch-crates.sh", patch, "Cargo.toml"] {
        std::fs::copy(repo_file(file), dir.path().join(file)).expect("copy");
    }
    let patched = dir.path().join(".tools/patched/async-nats-0.51.0");
    std::fs::create_dir_all(&patched).expect("patched dir");
    let digest = Command::new("sha256sum").arg(repo_file(patch)).output().expect("sha256sum");
    let digest = String::from_utf8_lossy(&digest.stdout).split(' ').next().unwrap_or_default().to_owned();
    std::fs::write(patched.join(".patched"), format!("{digest}\n")).expect("stamp");
    dir
}

const COMPOSE_PS: &str = r#"case "$*" in
  *"up -d"*) exit 1 ;;
  *"--format"*) printf 'nats running healthy\nkeycloak restarting \nauth-service running unhealthy\npostgres running healthy\n' ;;
  *"ps -a"*) echo "NAME STATE (the ps table)" ;;
  *logs*) echo "log lines of ${@: -1}" ;;
esac"#;

#[test]
fn make_up_fails_with_ps_and_the_logs_of_every_service_that_is_not_healthy() {
    let dir = sandbox();
    let compose = stub(dir.path(), "compose", COMPOSE_PS);
    let out = Command::new("bash")
        .arg(dir.path().join("scripts/up.sh"))
        .env("COMPOSE", &compose)
        .env("WAIT_TIMEOUT", "5")
        .output()
        .expect("up.sh");
    let text = text(&out);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(text.contains("did not become healthy within 5s"), "{text}");
    assert!(text.contains("the ps table"), "{text}");
    // Each long step is announced with how long it may take.
    assert!(text.contains("make up: building the images (the first time"), "{text}");
    assert!(
        text.contains("make up: starting the stack and waiting until every service is healthy (at most 5s"),
        "{text}"
    );
    for failing in ["keycloak", "auth-service"] {
        assert!(text.contains(&format!("log lines of {failing}")), "{failing} logs missing:\n{text}");
    }
    for healthy in ["nats", "postgres"] {
        assert!(!text.contains(&format!("log lines of {healthy}")), "{healthy} is fine:\n{text}");
    }
    let calls = std::fs::read_to_string(dir.path().join("calls")).expect("calls");
    assert!(calls.contains("--profile demo build"), "chat-cli is built too: {calls}");
    assert!(calls.contains("up -d --wait --wait-timeout 5"), "{calls}");
}

#[test]
fn make_up_ignores_a_compose_profiles_setting() {
    let dir = sandbox();
    let body =
        format!("echo \"profiles=${{COMPOSE_PROFILES-unset}}\" >> \"{}/calls\"\n{COMPOSE_PS}", dir.path().display());
    let compose = stub(dir.path(), "compose", &body);
    let out = Command::new("bash")
        .arg(dir.path().join("scripts/up.sh"))
        .env("COMPOSE", &compose)
        .env("COMPOSE_PROFILES", "demo")
        .env("WAIT_TIMEOUT", "5")
        .output()
        .expect("up.sh");
    let calls = std::fs::read_to_string(dir.path().join("calls")).expect("calls");
    assert!(calls.contains("profiles=unset") && !calls.contains("profiles=demo"), "{calls}\n{}", text(&out));
}

#[tokio::test(flavor = "multi_thread")]
async fn make_up_waits_for_the_collector_health_endpoint() {
    let dir = sandbox();
    let compose = stub(dir.path(), "compose", "exit 0");
    let out = up_with_a_ready_collector(dir.path(), &compose, 1).await;
    assert!(out.status.success(), "{}", text(&out));
}

/// `scripts/up.sh` in `dir` with the stand-in `compose`, a collector health endpoint that
/// answers ready, and `checks` crash-loop checks after it.
async fn up_with_a_ready_collector(dir: &Path, compose: &Path, checks: u32) -> Output {
    tokio::process::Command::new("bash")
        .arg(dir.join("scripts/up.sh"))
        .env("COMPOSE", compose)
        .env("COLLECTOR_HEALTH_PORT", collector_ready().await.to_string())
        .env("RUNNING_CHECKS", checks.to_string())
        .output()
        .await
        .expect("up.sh")
}

/// Cluster profile: each collector gateway replica's health endpoint is probed from a
/// container on its network; one that never answers fails make up with the gateways' logs.
#[tokio::test(flavor = "multi_thread")]
async fn make_up_probes_each_collector_gateway_replica() {
    for (answering, fails) in [("172.18.0.7|172.18.0.8", false), ("172.18.0.7", true)] {
        let dir = sandbox();
        let compose_body = r#"case "$*" in
  *"ps -q otel-gateway"*) printf 'gw1\ngw2\n' ;;
  *logs*) echo "log lines of ${@: -1}" ;;
esac"#;
        let compose = stub(dir.path(), "compose", compose_body);
        let docker_body = format!(
            r#"case "$*" in
  "inspect "*gw1) echo "chat_default 172.18.0.7" ;;
  "inspect "*gw2) echo "chat_default 172.18.0.8" ;;
  "run --rm --network chat_default --entrypoint wget nats:"*) [[ "${{@: -1}}" =~ http://({answering}):13133/ready ]] ;;
  *) exit 3 ;;
esac"#
        );
        let docker = stub(dir.path(), "docker", &docker_body);
        let out = tokio::process::Command::new("bash")
            .arg(dir.path().join("scripts/up.sh"))
            .env("COMPOSE", &compose)
            .env("DOCKER", &docker)
            .env("GATEWAY_PROBES", "2")
            .env("RUNNING_CHECKS", "1")
            .env("COLLECTOR_HEALTH_PORT", collector_ready().await.to_string())
            .output()
            .await
            .expect("up.sh");
        let text = text(&out);
        let calls = std::fs::read_to_string(dir.path().join("calls")).expect("calls");
        assert!(calls.contains("http://172.18.0.7:13133/ready"), "{calls}");
        assert!(calls.contains("http://172.18.0.8:13133/ready"), "every replica probed: {calls}");
        if fails {
            assert_eq!(out.status.code(), Some(1), "{text}");
            assert!(text.contains("a collector gateway (172.18.0.8) did not answer"), "{text}");
            assert!(text.contains("log lines of otel-gateway"), "{text}");
        } else {
            assert!(out.status.success(), "{text}");
        }
    }
}

/// The probe's image is the stack's nats image (already pulled, it has busybox wget).
#[test]
fn the_gateway_probe_uses_the_compose_nats_image() {
    let up = std::fs::read_to_string(repo_file("scripts/up.sh")).expect("up.sh");
    let compose: serde_yaml::Value =
        serde_yaml::from_str(&std::fs::read_to_string(repo_file("docker-compose.yml")).expect("compose"))
            .expect("yaml");
    let image = compose["services"]["nats"]["image"].as_str().expect("nats image");
    assert!(up.contains(&format!("probe_image={image}\n")), "up.sh probes with {image}");
}

/// A collector health endpoint that answers ready, for as long as the test runs; its port.
async fn collector_ready() -> u16 {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let app = axum::Router::new().route("/ready", axum::routing::get(|| async { "ok" }));
    tokio::spawn(async move { axum::serve(listener, app).await });
    port
}

/// The keygen output as `auth-service keygen` prints it.
fn keygen_lines() -> String {
    let out = Command::new(test_harness::cargo_bin("auth-service")).arg("keygen").output().expect("keygen");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn make_keys_uses_docker_when_the_rust_toolchain_is_too_old() {
    let dir = sandbox();
    let keys = dir.path().join("keys.txt");
    std::fs::write(&keys, keygen_lines()).expect("keys");
    let cargo = stub(dir.path(), "cargo", r#"[ "$1" = "--version" ] && echo "cargo 1.70.0 (old)"; exit 1"#);
    let docker = stub(dir.path(), "docker", &format!(r#"[ "$1" = "run" ] && cat "{}"; exit 0"#, keys.display()));
    let out = Command::new("bash")
        .arg(dir.path().join("scripts/keys.sh"))
        .env("CARGO", &cargo)
        .env("DOCKER", &docker)
        .output()
        .expect("keys.sh");
    assert!(out.status.success(), "{}", text(&out));
    let env = dir.path().join(".env");
    let mode = std::fs::metadata(&env).expect(".env written").permissions();
    assert_eq!(std::os::unix::fs::PermissionsExt::mode(&mode) & 0o777, 0o600);
    assert_eq!(std::fs::read_to_string(&env).expect(".env"), std::fs::read_to_string(&keys).expect("keys"));
    let calls = std::fs::read_to_string(dir.path().join("calls")).expect("calls");
    assert!(calls.contains("docker build") && calls.contains("docker run --rm"), "{calls}");
    assert!(!calls.contains("cargo run"), "{calls}");
    // The long build says so first and shows its own progress (no -q, not silenced).
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("10-25 minutes the first time"), "{stderr}");
    assert!(!calls.contains("build -q"), "{calls}");
}

#[test]
fn make_keys_never_leaves_a_partial_env_and_never_overwrites_one() {
    let dir = sandbox();
    let partial: String = keygen_lines().lines().take(4).map(|l| format!("{l}\n")).collect();
    let cargo = stub(
        dir.path(),
        "cargo",
        &format!("[ \"$1\" = \"--version\" ] && {{ echo 'cargo 1.95.0'; exit 0; }}\nprintf '%s' '{partial}'\nexit 1"),
    );
    let run =
        || Command::new("bash").arg(dir.path().join("scripts/keys.sh")).env("CARGO", &cargo).output().expect("keys.sh");
    let out = run();
    assert!(!out.status.success(), "a failed keygen fails make keys: {}", text(&out));
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(said.contains("make keys: building auth-service's keygen with cargo"), "{said}");
    let leftovers: Vec<String> = std::fs::read_dir(dir.path())
        .expect("dir")
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(".env"))
        .collect();
    assert!(leftovers.is_empty(), "left behind: {leftovers:?}");

    std::fs::write(dir.path().join(".env"), "MINE=1\n").expect("an existing .env");
    let out = run();
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(std::fs::read_to_string(dir.path().join(".env")).expect(".env"), "MINE=1\n", "never overwritten");
}

/// A container without a healthcheck (a cluster gateway) that crash-loops after `up
/// --wait` counted it: make up fails with its logs; one-shot steps that exited 0 do not.
#[tokio::test(flavor = "multi_thread")]
async fn make_up_fails_when_a_container_without_a_healthcheck_crash_loops() {
    let dir = sandbox();
    let body = r#"case "$*" in
  *ExitCode*) printf 'nats running 0\nstream-setup exited 0\notel-gateway restarting 1\notel-gateway running 0\n' ;;
  *"--format"*) printf 'otel-gateway restarting \n' ;;
  *logs*) echo "log lines of ${@: -1}" ;;
esac"#;
    let compose = stub(dir.path(), "compose", body);
    let out = up_with_a_ready_collector(dir.path(), &compose, 2).await;
    let text = text(&out);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(text.contains("not running: otel-gateway"), "{text}");
    assert!(text.contains("log lines of otel-gateway"), "{text}");
    assert!(!text.contains("stream-setup"), "a one-shot step that exited 0 is fine: {text}");
}

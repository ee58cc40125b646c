//! The healthcheck commands compose runs inside the Tempo and Loki containers
//! (`/tempo -health`, `/usr/bin/loki -health`), run against the real binaries (issue 27):
//! a config that parses is not a healthcheck that answers. Each checks an HTTP `/ready`
//! URL and exits 0 only when it answers; by default `localhost:<the port compose and the
//! backend's config use>`, here the test's free port (`-health.url`).

use std::path::Path;
use std::process::Command;

use stack_checks::real_backends::{RealBackends, binaries};
use stack_checks::yaml;

/// `<bin> -health -health.url=<url>`: (exit code 0, its output).
fn health(bin: &Path, url: &str) -> (bool, String) {
    let out = Command::new(bin).args(["-health", &format!("-health.url={url}")]).output().expect("run the binary");
    (out.status.success(), format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)))
}

#[tokio::test(flavor = "multi_thread")]
async fn the_tempo_and_loki_healthchecks_answer_ready_only_while_the_backend_is() {
    let Some((tempo_bin, loki_bin)) = binaries() else {
        println!("skipped: set TEMPO_BIN and LOKI_BIN (real Tempo 3.0.3 and Loki 3.7.6 binaries) to run this tier");
        return;
    };
    let mut backends =
        RealBackends::start(&tempo_bin, &loki_bin, 100).await.expect("collector, Tempo, Loki, Prometheus");
    let compose = yaml("docker-compose.yml");
    for (service, bin, url) in [("tempo", &tempo_bin, backends.tempo.url()), ("loki", &loki_bin, backends.loki.url())] {
        let test = &compose["services"][service]["healthcheck"]["test"];
        assert!(test[2] == "-health" && test.as_sequence().map(Vec::len) == Some(3), "{service}: {test:?}");
        let (ready, output) = health(bin, &format!("{url}/ready"));
        assert!(ready, "{service} is up, its healthcheck says: {output}");
    }
    backends.tempo.stop();
    backends.loki.stop();
    for (service, bin, url) in [("tempo", &tempo_bin, backends.tempo.url()), ("loki", &loki_bin, backends.loki.url())] {
        let (ready, output) = health(bin, &format!("{url}/ready"));
        assert!(!ready, "{service} is down, yet its healthcheck passed: {output}");
        assert!(output.contains("Health check failed"), "{service}: {output}");
    }
    // Without -health.url each checks the port its compose service listens on.
    let tempo_port = yaml("tempo/tempo.yaml")["server"]["http_listen_port"].as_u64();
    let loki_port = yaml("loki/loki.yaml")["server"]["http_listen_port"].as_u64();
    assert_eq!((tempo_port, loki_port), (Some(3200), Some(3100)), "the ports -health checks by default");
    let help = Command::new(&tempo_bin).arg("-help").output().expect("tempo -help");
    let help = format!("{}{}", String::from_utf8_lossy(&help.stdout), String::from_utf8_lossy(&help.stderr));
    assert!(help.contains(r#"(default "http://localhost:3200/ready")"#), "tempo -health's default URL");
    let loki = Command::new(&loki_bin).arg("-health").output().expect("loki -health");
    let said = String::from_utf8_lossy(&loki.stderr).into_owned() + &String::from_utf8_lossy(&loki.stdout);
    // (Nothing listens on 3100 here; were a Loki there, the check would pass silently.)
    assert!(loki.status.success() || said.contains("localhost:3100/ready"), "loki -health's default URL: {said}");
}

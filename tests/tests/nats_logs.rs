//! nats-server's own log lines reach Loki through the collector's syslog receiver
//! (`udp_log/nats` in `otel/collector.yaml` and `otel/agent.yaml`): compose points every
//! node at it, and both collector configs parse alike. What the real collector makes of
//! what the real nats-server sends is tests/tests/collector.rs'
//! `nats_server_log_lines_reach_loki_through_the_real_syslog_receiver`.

use serde_yaml::Value;
use stack_checks::yaml;

/// `udp://host:port` of `--remote_syslog` in a compose service's command.
fn remote_syslog(command: &Value) -> String {
    let args: Vec<&str> = command.as_sequence().into_iter().flatten().filter_map(Value::as_str).collect();
    let at = args.iter().position(|a| *a == "--remote_syslog").expect("nats runs with --remote_syslog");
    args[at + 1].to_owned()
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
        let receiver = &config["receivers"]["udp_log/nats"];
        assert_eq!(receiver, &yaml("otel/collector.yaml")["receivers"]["udp_log/nats"], "{file}: one parser for both");
        let name = &config["processors"]["resource/nats-server"]["attributes"][0];
        assert_eq!((&name["key"], &name["value"]), (&"service.name".into(), &"nats-server".into()), "{file}");
    }
}

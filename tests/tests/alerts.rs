//! The alert rules: promtool's unit tests pass, every alert has a case that fires it and
//! one that must stay quiet, and the compose Prometheus loads the file the tests test.

use stack_checks::{repo_file, yaml};
use std::collections::{BTreeMap, BTreeSet};

const RULE_TESTS: &str = "prometheus/rules/alerts.test.yml";

/// Every alert name in the rule file.
fn alert_names() -> BTreeSet<String> {
    stack_checks::alert_exprs().into_iter().map(|rule| rule.alert).collect()
}

#[test]
fn promtool_unit_tests_of_every_rule_pass() {
    let (ok, text) = stack_checks::run_tool(
        stack_checks::prometheus::promtool().args(["test", "rules"]).arg(repo_file(RULE_TESTS)),
        "promtool (scripts/build-prometheus.sh)",
    );
    assert!(ok && text.contains("SUCCESS"), "{text}");
}

/// The rules are tested by the promtool of the Prometheus compose runs, not Debian's 2.42.
#[test]
fn promtool_and_prometheus_are_the_compose_image_release() {
    let release = stack_checks::prometheus::release();
    let compose = std::fs::read_to_string(repo_file("docker-compose.yml")).expect("compose");
    assert!(compose.contains(&format!("image: prom/prometheus:v{release}\n")), "compose pins v{release}");
    let dir = stack_checks::prometheus::tools_dir().expect("built");
    for tool in ["promtool", "prometheus"] {
        let out = std::process::Command::new(dir.join(tool)).arg("--version").output().expect(tool);
        let text = String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
        assert!(text.starts_with(&format!("{tool}, version {release} ")), "{text}");
    }
}

#[test]
fn every_alert_has_a_firing_and_a_quiet_case() {
    // alert -> (cases that expect it firing, cases that expect nothing)
    let mut cases: BTreeMap<String, (usize, usize)> = BTreeMap::new();
    for test in yaml(RULE_TESTS)["tests"].as_sequence().into_iter().flatten() {
        for case in test["alert_rule_test"].as_sequence().into_iter().flatten() {
            let name = case["alertname"].as_str().unwrap_or_default().to_owned();
            let firing = case["exp_alerts"].as_sequence().is_some_and(|a| !a.is_empty());
            let entry = cases.entry(name).or_default();
            if firing { entry.0 += 1 } else { entry.1 += 1 }
        }
    }
    let alerts = alert_names();
    assert!(alerts.len() >= 8, "the alerts issue 12 asks for: {alerts:?}");
    for alert in &alerts {
        let (firing, quiet) = cases.get(alert).copied().unwrap_or_default();
        assert!(firing > 0 && quiet > 0, "{alert}: {firing} firing and {quiet} quiet cases in {RULE_TESTS}");
    }
    let unknown: Vec<_> = cases.keys().filter(|name| !alerts.contains(*name)).collect();
    assert!(unknown.is_empty(), "tests of alerts that do not exist: {unknown:?}");
}

#[test]
fn the_compose_prometheus_loads_the_tested_rule_file() {
    let config = yaml("prometheus/prometheus.yml");
    let files: Vec<&str> =
        config["rule_files"].as_sequence().into_iter().flatten().filter_map(|f| f.as_str()).collect();
    assert_eq!(files, ["rules/alerts.yml"], "only the rule file, never its tests");
    let compose = yaml("docker-compose.yml");
    let volumes: Vec<&str> = compose["services"]["prometheus"]["volumes"]
        .as_sequence()
        .into_iter()
        .flatten()
        .filter_map(|v| v.as_str())
        .collect();
    assert!(volumes.contains(&"./prometheus/rules:/etc/prometheus/rules:ro"), "{volumes:?}");
}

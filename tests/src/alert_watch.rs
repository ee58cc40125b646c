//! Watching the real Prometheus's alerts through a scenario: which fired (state
//! `firing`, not `pending`), checked against what the scenario expects and allows.
//! An alert is named `Name{label=value,...}` with its identifying labels only
//! (`severity` and `instance` left out), e.g. `ServiceDown{job=history-service}`.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::scenarios::get_json;

/// The alerts firing now.
pub async fn firing(http: &reqwest::Client, prometheus: &str) -> Result<BTreeSet<String>, String> {
    let body = get_json(http, &format!("{prometheus}/api/v1/alerts")).await?;
    let alerts = body["data"]["alerts"].as_array().ok_or_else(|| format!("not an alerts answer: {body}"))?;
    Ok(alerts.iter().filter(|a| a["state"] == "firing").map(name).collect())
}

fn name(alert: &Value) -> String {
    let labels = alert["labels"].as_object().cloned().unwrap_or_default();
    let alertname = labels.get("alertname").and_then(Value::as_str).unwrap_or_default().to_owned();
    let identifying: Vec<String> = labels
        .iter()
        .filter(|(k, _)| !["alertname", "severity", "instance"].contains(&k.as_str()))
        .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or_default()))
        .collect();
    format!("{alertname}{{{}}}", identifying.join(","))
}

/// Polls every 5 s until every alert of `expected` has fired (not necessarily at once),
/// for at most `timeout`; panics when one fires that `allowed` refuses, or on time out.
/// Returns every alert seen firing.
pub async fn watch(
    http: &reqwest::Client,
    prometheus: &str,
    phase: &str,
    expected: &[&str],
    allowed: impl Fn(&str) -> bool,
    timeout: Duration,
) -> BTreeSet<String> {
    let started = Instant::now();
    let mut seen = BTreeSet::new();
    loop {
        match firing(http, prometheus).await {
            Ok(now) => seen.extend(now),
            Err(error) => eprintln!("{phase}: {error}"),
        }
        let unexpected: Vec<&String> = seen.iter().filter(|a| !allowed(a) && !expected.contains(&a.as_str())).collect();
        assert!(unexpected.is_empty(), "{phase}: fired although it must stay quiet: {unexpected:?} (all: {seen:?})");
        if expected.iter().all(|e| seen.contains(*e)) {
            println!("{phase}: fired after {:?}: {seen:?}", started.elapsed());
            return seen;
        }
        assert!(started.elapsed() < timeout, "{phase}: within {timeout:?} only {seen:?} fired; expected {expected:?}");
        tokio::time::sleep(Duration::from_secs(5)).await;
    }
}

/// Polls every 5 s for `duration`: nothing but what `allowed` accepts may fire.
pub async fn stay_quiet(
    http: &reqwest::Client,
    prometheus: &str,
    phase: &str,
    allowed: impl Fn(&str) -> bool,
    duration: Duration,
) {
    let started = Instant::now();
    while started.elapsed() < duration {
        if let Ok(now) = firing(http, prometheus).await {
            let unexpected: Vec<&String> = now.iter().filter(|a| !allowed(a)).collect();
            assert!(unexpected.is_empty(), "{phase}: fired although it must stay quiet: {unexpected:?}");
        }
        tokio::time::sleep(Duration::from_secs(5)).await;
    }
}

//! The seed scenarios driven with chat-cli and read back from Tempo, Loki and
//! Prometheus over their HTTP APIs: one assertion code for `make test-e2e` (the compose
//! stack) and the full-stack tier of `make test` (real Tempo, Loki and Prometheus
//! started by the test). The answers decode into the harness's model types, so the
//! span-tree assertions are those of the native tests too.
//!
//! Every wait is bounded; a failure names the component, the query and what came back.

use std::future::Future;
use std::time::{Duration, Instant};

use serde_json::Value;
use test_harness::backends::{loki_logs, prometheus_vector, tempo_trace};
use test_harness::model::{AttributesExt as _, SpanKind};
use test_harness::service_graph::ServiceGraph;
use test_harness::trace::{Trace, assert_error, assert_kind};

/// How long to wait for data to show up in a backend.
pub const POLL: Duration = Duration::from_secs(150);

/// Where the backends answer.
#[derive(Debug, Clone)]
pub struct Endpoints {
    /// Tempo's HTTP API.
    pub tempo: String,
    /// Loki's HTTP API.
    pub loki: String,
    /// Prometheus's HTTP API.
    pub prometheus: String,
}

/// The trace ids of the scenarios, as chat-cli printed them.
#[derive(Debug, Clone)]
pub struct Sent {
    /// A plain message (scenario 1, with the NATS hop).
    pub plain: String,
    /// A message whose first attempt fails (scenario 3).
    pub retried: String,
    /// A message whose first attempt times out (scenario 4).
    pub slow: String,
    /// A poison message (dead letter).
    pub poison: String,
    /// A history request.
    pub history: String,
}

/// GET and parse JSON; an error names the URL and what came back.
pub async fn get_json(http: &reqwest::Client, url: &str) -> Result<Value, String> {
    let response = http.get(url).send().await.map_err(|e| format!("GET {url}: {e}"))?;
    let status = response.status();
    let body = response.text().await.map_err(|e| format!("GET {url}: {e}"))?;
    if !status.is_success() {
        return Err(format!("GET {url}: {status} {body}"));
    }
    serde_json::from_str(&body).map_err(|e| format!("GET {url}: not JSON ({e}): {body}"))
}

/// Polls `check` every 2 s until it returns `Ok(Some)`, for at most [`POLL`].
pub async fn poll<T, F, Fut>(what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<Option<T>, String>>,
{
    let started = Instant::now();
    loop {
        let last = match check().await {
            Ok(Some(found)) => return found,
            Ok(None) => "not there yet".to_owned(),
            Err(error) => error,
        };
        assert!(started.elapsed() < POLL, "{what}: nothing after {POLL:?}; last: {last}");
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
}

/// Runs the scenarios with `cli` (`chat-cli --json <args>` as alice, returning its JSON
/// lines; the worker must honour demo faults).
pub async fn send_seed_scenarios<F, Fut>(cli: F) -> Sent
where
    F: Fn(Vec<String>) -> Fut,
    Fut: Future<Output = Vec<Value>>,
{
    let run = |args: &[&str]| {
        let args: Vec<String> = args.iter().map(|a| (*a).to_owned()).collect();
        let lines = cli(args);
        async move { lines.await[0]["trace_id"].as_str().expect("chat-cli printed a trace id").to_owned() }
    };
    Sent {
        plain: run(&["send", "general", "e2e plain"]).await,
        retried: run(&["send", "general", "e2e fail once", "--fault", "fail-once"]).await,
        slow: run(&["send", "general", "e2e slow", "--fault", "slow"]).await,
        poison: run(&["send", "general", "e2e poison", "--fault", "poison"]).await,
        history: run(&["history", "general", "--limit", "5"]).await,
    }
}

/// Waits until Tempo has the trace with the named spans and returns it.
pub async fn trace_with(http: &reqwest::Client, tempo: &str, trace_id: &str, names: &[&str]) -> Trace {
    let url = format!("{tempo}/api/v2/traces/{trace_id}");
    poll(&format!("Tempo trace {trace_id} with {names:?} ({url})"), || async {
        let spans = tempo_trace(&get_json(http, &url).await?)?;
        let trace = Trace::new(spans);
        if names.iter().all(|n| !trace.named(n).is_empty()) {
            Ok(Some(trace))
        } else {
            // Polled again; on time-out the failure shows what Tempo holds.
            Err(format!("Tempo holds:\n{}", trace.tree()))
        }
    })
    .await
}

/// The span trees of every scenario, read from Tempo; returns the plain message's trace.
pub async fn assert_traces(http: &reqwest::Client, tempo: &str, sent: &Sent) -> Trace {
    let names = ["publish chat.msg.*.*", "nats ingress chat.msg.*.*", "process chat.msg.*.*", "INSERT chat.messages"];
    let plain = trace_with(http, tempo, &sent.plain, &names).await;
    let producer = plain.one("publish chat.msg.*.*");
    let consumer = plain.one("process chat.msg.*.*");
    plain.assert_child_of(consumer, producer);
    let hop = plain.one("nats ingress chat.msg.*.*");
    plain.assert_child_of(hop, producer);
    assert_eq!(hop.service_name, "nats-server");
    assert!(hop.event("jetstream.store").is_some(), "{}", plain.tree());
    plain.assert_child_of(plain.one("INSERT chat.messages"), consumer);
    assert_kind(producer, SpanKind::Producer);
    assert_kind(consumer, SpanKind::Consumer);

    // Stored in the end: an attempt acked (after its commit). The INSERT span is in this
    // trace only when the redelivery led its batch; sharing one with another message, it
    // is the first message's child and links to this one.
    let trace = poll(&format!("Tempo trace {} with both attempts, the second acked", sent.retried), || async {
        let trace = trace_with(http, tempo, &sent.retried, &["process chat.msg.*.*"]).await;
        let attempts = trace.named("process chat.msg.*.*");
        Ok((attempts.len() == 2 && attempts.iter().any(|a| a.event("ack").is_some())).then_some(trace))
    })
    .await;
    let attempts = trace.named("process chat.msg.*.*");
    assert!(attempts[0].event("nak").is_some(), "the first attempt is nak'd:\n{}", trace.tree());
    assert_eq!(attempts[1].attributes.bool("messaging.message_redelivered"), Some(true));
    assert!(attempts[1].event("ack").is_some(), "the redelivery is acked:\n{}", trace.tree());

    let trace = poll(&format!("Tempo trace {} with an acked attempt", sent.slow), || async {
        let trace = trace_with(http, tempo, &sent.slow, &["process chat.msg.*.*"]).await;
        let acked = trace.named("process chat.msg.*.*").iter().any(|a| a.event("ack").is_some());
        Ok(acked.then_some(trace))
    })
    .await;
    let timed_out = trace.named("process chat.msg.*.*")[0];
    assert_error(timed_out, "Timeout");
    assert!(timed_out.event("exception").is_some(), "{}", trace.tree());

    let trace = trace_with(http, tempo, &sent.poison, &["publish chat.dlq.*", "process chat.msg.*.*"]).await;
    let consumer = trace.one("process chat.msg.*.*");
    trace.assert_child_of(trace.one("publish chat.dlq.*"), consumer);
    assert!(consumer.event("term").is_some(), "terminated after the dead letter:\n{}", trace.tree());

    let names = ["request chat.history.*.*", "process chat.history.*.*", "SELECT chat.messages"];
    let trace = trace_with(http, tempo, &sent.history, &names).await;
    trace.assert_child_of(trace.one("process chat.history.*.*"), trace.one("request chat.history.*.*"));
    plain
}

/// The worker's log lines of the retried message's trace, read from Loki by `trace_id`.
pub async fn assert_worker_logs(http: &reqwest::Client, loki: &str, sent: &Sent) {
    let query = format!(r#"{{service_name="persist-worker"}} | trace_id="{}""#, sent.retried);
    let url = reqwest::Url::parse_with_params(
        &format!("{loki}/loki/api/v1/query_range"),
        &[("query", query.as_str()), ("since", "15m"), ("limit", "100")],
    )
    .expect("url");
    let logs = poll(&format!("Loki lines for trace {}: {query}", sent.retried), || async {
        let logs = loki_logs(&get_json(http, url.as_str()).await?)?;
        Ok((!logs.is_empty()).then_some(logs))
    })
    .await;
    assert!(logs.iter().any(|l| l.body == "will be redelivered"), "{logs:?}");
}

/// Tempo's service graph in Prometheus has the edges the model predicts for `trace`
/// (chat-cli -> persist-worker over messaging, persist-worker -> the database).
pub async fn assert_service_graph(http: &reqwest::Client, prometheus: &str, trace: &Trace) {
    let graph = ServiceGraph::of(trace.spans());
    assert!(graph.conflicts.is_empty(), "{:?}", graph.conflicts);
    assert!(graph.edges.len() >= 2, "{graph:?}");
    for edge in graph.edges.keys() {
        let selector = format!(
            r#"traces_service_graph_request_total{{client="{}",server="{}",connection_type="{}"}}"#,
            edge.client,
            edge.server,
            edge.connection_type.label()
        );
        let url = reqwest::Url::parse_with_params(&format!("{prometheus}/api/v1/query"), &[("query", &selector)])
            .expect("url");
        poll(&format!("service-graph edge {selector} ({url})"), || async {
            let values = prometheus_vector(&get_json(http, url.as_str()).await?)?;
            Ok(values.iter().any(|(_, v)| *v > 0.0).then_some(()))
        })
        .await;
    }
}

/// The metric names in Prometheus that start with `prefix` (e.g. what Tempo generated).
pub async fn series_names(http: &reqwest::Client, prometheus: &str, prefix: &str) -> Result<Vec<String>, String> {
    let body = get_json(http, &format!("{prometheus}/api/v1/label/__name__/values")).await?;
    let names = body["data"].as_array().ok_or_else(|| format!("not a label-values answer: {body}"))?;
    Ok(names.iter().filter_map(Value::as_str).filter(|n| n.starts_with(prefix)).map(str::to_owned).collect())
}

/// Which Prometheus queries of the dashboards [`assert_dashboard_queries`] runs.
#[derive(Debug, Clone, Copy)]
pub enum PrometheusQueries<'a> {
    /// Only those over Tempo's generated series (`make test-e2e` and stand-in tiers).
    TempoSeries,
    /// Every one (the full-stack tier: collector, services and Tempo series), variables
    /// at their defaults and `$service` at `persist-worker`; a query containing one of
    /// `may_be_empty` may return nothing (each with its reason where the list is written).
    Every {
        /// Parts of queries allowed to return nothing.
        may_be_empty: &'a [&'a str],
    },
}

/// Every TraceQL and LogQL query of the provisioned dashboards, and their Prometheus
/// queries as `prometheus_queries` says, return data from real backends (variables set
/// to "all", Grafana's intervals to 1m). The error-trace table names each trace's root.
pub async fn assert_dashboard_queries(
    http: &reqwest::Client,
    tempo: &str,
    loki: &str,
    prometheus: &str,
    prometheus_queries: PrometheusQueries<'_>,
) {
    let all = |q: &str| {
        let q = q.replace("$service", ".+").replace("$span_name", ".+").replace("$__auto", "1m");
        q.replace("$__range", "15m")
    };
    let mut ran = 0;
    for path in crate::dashboard_files() {
        let dashboard = crate::json(&path);
        for panel in dashboard["panels"].as_array().into_iter().flatten() {
            for target in panel["targets"].as_array().into_iter().flatten() {
                let what = format!("{path}: {}", panel["title"]);
                match (target["datasource"]["type"].as_str(), target["queryType"].as_str()) {
                    (Some("tempo"), Some("traceql")) => {
                        let query = target["query"].as_str().unwrap_or_default();
                        if query.starts_with('$') {
                            continue; // the trace panel: a trace id chosen by a click
                        }
                        let url = reqwest::Url::parse_with_params(
                            &format!("{tempo}/api/search"),
                            &[("q", all(query).as_str()), ("limit", "20")],
                        )
                        .expect("url");
                        let traces = poll(&what, || async {
                            let body = get_json(http, url.as_str()).await?;
                            let traces = body["traces"].as_array().cloned().unwrap_or_default();
                            Ok((!traces.is_empty()).then_some(traces))
                        })
                        .await;
                        for trace in &traces {
                            let root = trace["rootServiceName"].as_str().unwrap_or_default();
                            assert!(
                                !root.is_empty() && !root.starts_with('<'),
                                "{what}: a trace without its root: {trace}"
                            );
                        }
                        ran += 1;
                    }
                    (Some("loki"), _) => {
                        let query = all(target["expr"].as_str().unwrap_or_default());
                        let params = [("query", query.as_str()), ("since", "15m"), ("limit", "10")];
                        poll_results(
                            http,
                            &format!("{what}: {query}"),
                            &format!("{loki}/loki/api/v1/query_range"),
                            &params,
                        )
                        .await;
                        ran += 1;
                    }
                    (Some("prometheus"), _) => {
                        let expr = target["expr"].as_str().unwrap_or_default();
                        let metrics = crate::promql_metrics(expr);
                        let tempo_only = metrics.iter().all(|m| crate::TEMPO_SERIES.contains(&m.as_str()));
                        let run = match prometheus_queries {
                            PrometheusQueries::TempoSeries => !metrics.is_empty() && tempo_only,
                            PrometheusQueries::Every { may_be_empty } => !may_be_empty.iter().any(|p| expr.contains(p)),
                        };
                        if !run {
                            continue;
                        }
                        let mut queries = vec![all(expr)];
                        if matches!(prometheus_queries, PrometheusQueries::Every { .. }) && expr.contains("$service") {
                            queries.push(all(&expr.replace("$service", "persist-worker")));
                        }
                        for query in queries {
                            let query = query.replace("$__rate_interval", "1m");
                            let params = [("query", query.as_str())];
                            let endpoint = format!("{prometheus}/api/v1/query");
                            poll_results(http, &format!("{what}: {query}"), &endpoint, &params).await;
                            ran += 1;
                        }
                    }
                    _ => {}
                }
            }
        }
    }
    assert!(ran >= 5, "only {ran} dashboard queries could run against the real backends");
}

/// Polls a Loki or Prometheus query API until its `data.result` is not empty.
async fn poll_results(http: &reqwest::Client, what: &str, endpoint: &str, params: &[(&str, &str)]) {
    let url = reqwest::Url::parse_with_params(endpoint, params).expect("url");
    poll(what, || async {
        let body = get_json(http, url.as_str()).await?;
        let results = body["data"]["result"].as_array().map_or(0, Vec::len);
        Ok((results > 0).then_some(()))
    })
    .await;
}

/// The seed scenarios sent by chat-cli as alice with `token` through `stack`.
pub async fn send_seed_scenarios_as(stack: &test_harness::ChatStack, token: &str) -> Sent {
    send_seed_scenarios(|args| {
        let mut full = vec!["--json".to_owned(), "--token".to_owned(), token.to_owned(), "--user".to_owned()];
        full.push("alice".to_owned());
        full.extend(args);
        async move {
            let full: Vec<&str> = full.iter().map(String::as_str).collect();
            let run = stack.cli(&full).await.expect("chat-cli");
            assert_eq!(run.code, Some(0), "chat-cli {full:?}: {}", run.stderr);
            run.json_lines()
        }
    })
    .await
}

/// What `chat-cli --json trace <id>` printed, checked against the spans the backend holds:
/// every span once, parents before children, each at its depth under its parent, names
/// and errors as stored.
pub fn assert_cli_tree(what: &str, lines: &[Value], reference: &[test_harness::model::SpanRecord]) {
    use std::collections::{BTreeSet, HashMap};
    let by_id: HashMap<&str, &test_harness::model::SpanRecord> =
        reference.iter().map(|s| (s.span_id.as_str(), s)).collect();
    let printed: Vec<&str> = lines.iter().filter_map(|l| l["span_id"].as_str()).collect();
    assert_eq!(
        printed.iter().copied().collect::<BTreeSet<_>>(),
        by_id.keys().copied().collect::<BTreeSet<_>>(),
        "{what}: the spans printed"
    );
    assert_eq!(printed.len(), by_id.len(), "{what}: each span once: {lines:#?}");
    fn parent_in_trace<'a>(by_id: &HashMap<&str, &'a test_harness::model::SpanRecord>, id: &str) -> Option<&'a str> {
        by_id[id].parent_span_id.as_deref().filter(|p| by_id.contains_key(p))
    }
    let depth = |id: &str| {
        let (mut depth, mut at) = (0, by_id[id].span_id.as_str());
        while let Some(parent) = parent_in_trace(&by_id, at) {
            depth += 1;
            at = parent;
        }
        depth
    };
    let mut seen = BTreeSet::new();
    for line in lines {
        let id = line["span_id"].as_str().unwrap_or_default();
        let span = by_id[id];
        if let Some(parent) = parent_in_trace(&by_id, id) {
            assert!(seen.contains(parent), "{what}: {} printed before its parent: {lines:#?}", span.name);
        }
        assert_eq!(line["depth"].as_u64(), Some(depth(id)), "{what}: depth of {}", span.name);
        assert_eq!(line["name"].as_str(), Some(span.name.as_str()), "{what}");
        assert_eq!(line["service"].as_str(), Some(span.service_name.as_str()), "{what}");
        let error = span.status == test_harness::model::StatusCode::Error;
        assert_eq!(line["error"].is_string(), error, "{what}: error of {}", span.name);
        seen.insert(id);
    }
}

/// What a reader of each seed scenario's tree must see: the retry (a failed attempt with
/// a `nak`, then a redelivery with an `ack`), the timeout, the dead letter and its `term`.
pub fn assert_cli_scenarios(sent: &Sent, tree: impl Fn(&str) -> Vec<Value>) {
    let process = |lines: &[Value]| -> Vec<Value> {
        lines.iter().filter(|l| l["name"] == "process chat.msg.*.*").cloned().collect()
    };
    let has_event = |line: &Value, name: &str| line["events"].as_array().is_some_and(|e| e.iter().any(|n| n == name));

    let plain = tree(&sent.plain);
    let publish = plain.iter().find(|l| l["name"] == "publish chat.msg.*.*").expect("publish line");
    assert!(process(&plain).iter().any(|p| p["parent_span_id"] == publish["span_id"] && has_event(p, "ack")));

    let retried = process(&tree(&sent.retried));
    assert!(retried.iter().any(|p| p["error"].is_string() && has_event(p, "nak")), "{retried:#?}");
    assert!(retried.iter().any(|p| p["redelivered"] == true && has_event(p, "ack")), "{retried:#?}");

    let slow = process(&tree(&sent.slow));
    assert!(slow.iter().any(|p| p["error"] == "Timeout"), "{slow:#?}");

    let poison = tree(&sent.poison);
    assert!(poison.iter().any(|l| l["name"] == "publish chat.dlq.*"), "{poison:#?}");
    assert!(process(&poison).iter().any(|p| has_event(p, "term")), "{poison:#?}");
}

/// Runs `chat-cli --json trace <id> --tempo-url <tempo>` on each seed scenario's trace
/// until what it printed has as many spans as the backend holds (`reference`, read just
/// before and just after, so late spans do not race), then checks each tree and the
/// scenario marks.
pub async fn assert_cli_traces<R, RF>(sent: &Sent, stack: &test_harness::ChatStack, tempo: &str, reference: R)
where
    R: Fn(String) -> RF,
    RF: Future<Output = Vec<test_harness::model::SpanRecord>>,
{
    let cli = |id: String| async move {
        let run = stack.cli(&["--json", "trace", &id, "--tempo-url", tempo]).await.expect("chat-cli");
        assert_eq!(run.code, Some(0), "chat-cli trace {id}: {}", run.stderr);
        run.json_lines()
    };
    let mut trees = std::collections::HashMap::new();
    for id in [&sent.plain, &sent.retried, &sent.slow, &sent.poison] {
        let mut attempt = 0;
        loop {
            let before = reference(id.clone()).await;
            let lines = cli(id.clone()).await;
            let after = reference(id.clone()).await;
            let settled = !after.is_empty() && before.len() == after.len() && lines.len() == after.len();
            if settled || attempt == 10 {
                assert_cli_tree(&format!("trace {id}"), &lines, &after);
                trees.insert(id.clone(), lines);
                break;
            }
            attempt += 1;
            tokio::time::sleep(std::time::Duration::from_secs(1)).await;
        }
    }
    assert_cli_scenarios(sent, |id| trees[id].clone());
}

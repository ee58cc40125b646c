//! What a Tempo user sees when otlp-bridge re-sends a batch (seed 004's at-least-once: a
//! bridge killed between a successful POST and its ack sends that batch again after the
//! redelivery): the same spans, byte for byte, posted twice to real Tempo 3.0.3, then the
//! trace read back as Grafana reads it (`GET /api/v2/traces/<id>`).
//!
//! Measured: Tempo 3.0.3 returns each span twice (its live store keeps both copies; the
//! trace view shows the same span id on two rows). The README says so; this test fails,
//! and the README must change, the day Tempo deduplicates them.

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use stack_checks::real_backends::{TempoOnly, binaries};

#[tokio::test(flavor = "multi_thread")]
async fn a_batch_sent_twice_shows_each_of_its_spans_twice_in_tempo() {
    let Some((tempo_bin, _)) = binaries() else {
        println!("skipped: set TEMPO_BIN and LOKI_BIN (real Tempo 3.0.3 and Loki 3.7.6 binaries) to run this tier");
        return;
    };
    let tempo = TempoOnly::start(&tempo_bin).await.expect("Tempo");
    let http = reqwest::Client::new();
    let trace_id = format!("{:032x}", u128::from(std::process::id()) << 64 | 0x5eed);
    let batch = batch(&trace_id, &["00000000000000a1", "00000000000000a2"]);
    let url = format!("http://127.0.0.1:{}/v1/traces", tempo.otlp_http);
    for attempt in ["the first delivery", "the re-sent batch"] {
        let response = http.post(&url).json(&batch).send().await.expect(attempt);
        assert!(response.status().is_success(), "{attempt}: {}", response.status());
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let read = format!("{}/api/v2/traces/{trace_id}", tempo.tempo.url());
    let deadline = Instant::now() + Duration::from_secs(30);
    let spans = loop {
        let body: Value = http.get(&read).send().await.expect("GET").json().await.unwrap_or_default();
        let spans = test_harness::backends::tempo_trace(&body).unwrap_or_default();
        if spans.len() >= 2 || Instant::now() > deadline {
            break spans;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    let mut ids: Vec<&str> = spans.iter().map(|s| s.span_id.as_str()).collect();
    ids.sort_unstable();
    println!("Tempo returned {} spans for 2 spans sent twice: {ids:?}", spans.len());
    let twice = ["00000000000000a1", "00000000000000a1", "00000000000000a2", "00000000000000a2"];
    assert_eq!(ids, twice, "Tempo keeps both copies of a re-sent batch (README: telemetry through NATS)");
}

/// One OTLP/JSON request with a span per id, as a service's batch would carry them.
fn batch(trace_id: &str, span_ids: &[&str]) -> Value {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("clock").as_nanos();
    let spans: Vec<Value> = span_ids
        .iter()
        .map(|id| {
            json!({
                "traceId": trace_id, "spanId": id, "name": "process chat.msg.*.*", "kind": 5,
                "startTimeUnixNano": (now - 2_000_000).to_string(), "endTimeUnixNano": now.to_string(),
            })
        })
        .collect();
    json!({"resourceSpans": [{
        "resource": {"attributes": [{"key": "service.name", "value": {"stringValue": "persist-worker"}}]},
        "scopeSpans": [{"scope": {"name": "duplicates"}, "spans": spans}],
    }]})
}

//! What both persist-worker benchmarks read back from PostgreSQL (with `psql`).

use std::time::{Duration, Instant};

/// The numbers in the answer to `query` (empty while the table does not exist yet).
pub(crate) async fn psql_numbers(url: &str, query: &str) -> Vec<f64> {
    let out = tokio::process::Command::new("psql").args([url, "-tA", "-F", " ", "-c", query]).output().await;
    let out = out.expect("psql");
    String::from_utf8_lossy(&out.stdout).split_whitespace().filter_map(|f| f.parse().ok()).collect()
}

/// Rows stored so far.
pub(crate) async fn rows(url: &str) -> usize {
    psql_numbers(url, "SELECT count(*) FROM chat.messages").await.first().map_or(0, |n| *n as usize)
}

/// Waits until at least `expected` rows are stored, then returns the publish -> commit
/// latency of the rows, (p50, p99) in ms: each row's `persisted_at - sent_at`
/// (`persisted_at` is the insert transaction's start, just before its commit). Rows sent
/// in the run's first second are left out (warm-up: connections opening, the first
/// export, memory growing; one spike there moved a p99 by tens of ms).
pub(crate) async fn publish_to_commit_ms(url: &str, expected: f64) -> (f64, f64) {
    let query = "SELECT (SELECT count(*) FROM chat.messages), percentile_cont(0.5) WITHIN GROUP (ORDER BY ms), \
                 percentile_cont(0.99) WITHIN GROUP (ORDER BY ms) \
                 FROM (SELECT extract(epoch FROM persisted_at - sent_at) * 1000 AS ms FROM chat.messages \
                 WHERE sent_at >= (SELECT min(sent_at) FROM chat.messages) + interval '1 second') t";
    let started = Instant::now();
    loop {
        let fields = psql_numbers(url, query).await;
        if let [count, p50, p99] = fields[..]
            && count >= expected
        {
            return (p50, p99);
        }
        assert!(started.elapsed() < Duration::from_secs(60), "paced messages not stored: {fields:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

//! Grafana Explore links that open one trace in the Tempo datasource (uid `tempo`).

/// `<grafana>/explore?...` showing trace `trace_id`.
pub(crate) fn trace_url(grafana: &str, trace_id: &str) -> String {
    let panes = format!(
        r#"{{"trace":{{"datasource":"tempo","queries":[{{"refId":"A","datasource":{{"type":"tempo","uid":"tempo"}},"queryType":"traceql","query":"{trace_id}"}}],"range":{{"from":"now-1h","to":"now"}}}}}}"#
    );
    format!("{}/explore?schemaVersion=1&orgId=1&panes={}", grafana.trim_end_matches('/'), percent_encode(&panes))
}

/// Percent-encodes everything but unreserved URL characters (RFC 3986).
pub(crate) fn percent_encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn links_open_the_trace_in_tempo() {
        let url = trace_url("http://localhost:3001/", "4bf92f3577b34da6a3ce929d0e0e4736");
        assert!(url.starts_with("http://localhost:3001/explore?schemaVersion=1&orgId=1&panes=%7B%22trace%22"), "{url}");
        assert!(url.contains("4bf92f3577b34da6a3ce929d0e0e4736"));
        assert!(url.contains("%22uid%22%3A%22tempo%22"));
        assert!(!url.contains(' ') && !url.contains('"'));
    }
}

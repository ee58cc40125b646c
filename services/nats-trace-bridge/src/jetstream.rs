//! JetStream as the server sees it, for the Messaging dashboard and the
//! `ConsumerLagGrowing` alert: every [`INTERVAL`] the bridge reads nats-server's own
//! monitoring endpoint `/jsz?consumers=true` (what prometheus-nats-exporter reads; that
//! exporter's module is not served to this project's machines) and reports, as service
//! `nats-server`:
//!
//! | metric | attributes |
//! |---|---|
//! | `nats.consumer.pending` (not yet delivered) | `stream`, `consumer` |
//! | `nats.consumer.ack_pending` (delivered, not yet acked) | `stream`, `consumer` |
//! | `nats.consumer.redelivered` (delivered more than once, not yet acked) | `stream`, `consumer` |
//! | `nats.stream.messages` (kept) | `stream` |
//!
//! Why here and not in persist-worker: a worker that is down cannot say how far behind it
//! is, which is when the lag matters (issue 20: worker stopped, 1,500 messages pending,
//! the worker's own gauge stayed at 0). The bridge needs no NATS permission for it.
//!
//! The first monitoring URL that answers is read (cluster: one per node, all replicas
//! report the same figures). A failed read is logged (once per outage) and reports
//! nothing until the next good one: no stale figure is repeated as if it were fresh.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use opentelemetry::{KeyValue, global};
use serde::Deserialize;

/// Between two reads: finer than Prometheus' 15 s scrape is wasted.
pub(crate) const INTERVAL: Duration = Duration::from_secs(10);

/// The part of `/jsz?consumers=true` read here.
#[derive(Debug, Default, Deserialize)]
pub(crate) struct Jsz {
    #[serde(default)]
    account_details: Vec<AccountDetail>,
}

#[derive(Debug, Default, Deserialize)]
struct AccountDetail {
    #[serde(default)]
    stream_detail: Vec<StreamDetail>,
}

#[derive(Debug, Default, Deserialize)]
struct StreamDetail {
    name: String,
    #[serde(default)]
    state: StreamState,
    #[serde(default)]
    consumer_detail: Vec<ConsumerDetail>,
}

#[derive(Debug, Default, Deserialize)]
struct StreamState {
    #[serde(default)]
    messages: u64,
}

#[derive(Debug, Default, Deserialize)]
struct ConsumerDetail {
    name: String,
    #[serde(default)]
    num_pending: u64,
    #[serde(default)]
    num_ack_pending: u64,
    #[serde(default)]
    num_redelivered: u64,
}

/// One reading: `(metric, attributes, value)` rows.
#[derive(Debug, Default, Clone, PartialEq)]
pub(crate) struct Figures(Vec<(&'static str, Vec<KeyValue>, u64)>);

impl Figures {
    /// The rows of one `/jsz` answer, streams and consumers of every account.
    pub(crate) fn from_jsz(jsz: &Jsz) -> Self {
        let mut rows = Vec::new();
        for stream in jsz.account_details.iter().flat_map(|a| &a.stream_detail) {
            rows.push((
                "nats.stream.messages",
                vec![KeyValue::new("stream", stream.name.clone())],
                stream.state.messages,
            ));
            for consumer in &stream.consumer_detail {
                let attrs = vec![
                    KeyValue::new("stream", stream.name.clone()),
                    KeyValue::new("consumer", consumer.name.clone()),
                ];
                rows.push(("nats.consumer.pending", attrs.clone(), consumer.num_pending));
                rows.push(("nats.consumer.ack_pending", attrs.clone(), consumer.num_ack_pending));
                rows.push(("nats.consumer.redelivered", attrs, consumer.num_redelivered));
            }
        }
        Self(rows)
    }

    /// The value of `metric` with these `(key, value)` attributes (the unit tests' reader).
    #[cfg(test)]
    fn get(&self, metric: &str, attrs: &[(&str, &str)]) -> Option<u64> {
        self.0.iter().find_map(|(name, row, value)| {
            let matches =
                attrs.iter().all(|(k, v)| row.iter().any(|kv| kv.key.as_str() == *k && kv.value.as_str() == *v));
            (*name == metric && matches && row.len() == attrs.len()).then_some(*value)
        })
    }
}

/// Registers the gauges and reads `urls` until the task is dropped.
pub(crate) async fn observe(urls: Vec<String>) {
    let latest = Arc::new(Mutex::new(Figures::default()));
    let meter = global::meter("nats-trace-bridge");
    let gauge = |name: &'static str, description: &'static str| {
        let latest = Arc::clone(&latest);
        meter
            .u64_observable_gauge(name)
            .with_unit("{message}")
            .with_description(description)
            .with_callback(move |observer| {
                let figures = latest.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
                for (_, attrs, value) in figures.0.iter().filter(|(metric, ..)| *metric == name) {
                    observer.observe(*value, attrs);
                }
            })
            .build()
    };
    let _gauges = [
        gauge("nats.consumer.pending", "Messages of the stream not yet delivered to the consumer"),
        gauge("nats.consumer.ack_pending", "Messages delivered to the consumer and not yet acknowledged"),
        gauge("nats.consumer.redelivered", "Messages delivered more than once and not yet acknowledged"),
        gauge("nats.stream.messages", "Messages the stream keeps"),
    ];
    let http = reqwest::Client::builder().timeout(Duration::from_secs(5)).build().unwrap_or_default();
    let mut failing = false;
    let mut ticks = tokio::time::interval(INTERVAL);
    loop {
        ticks.tick().await;
        let read = read_first(&http, &urls).await;
        let figures = match read {
            Ok(figures) => {
                if std::mem::take(&mut failing) {
                    tracing::info!("reading JetStream figures again");
                }
                figures
            }
            Err(error) => {
                if !std::mem::replace(&mut failing, true) {
                    tracing::warn!(%error, "cannot read JetStream figures from the NATS monitoring endpoint");
                }
                Figures::default()
            }
        };
        *latest.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = figures;
    }
}

/// The figures of the first URL that answers.
async fn read_first(http: &reqwest::Client, urls: &[String]) -> Result<Figures, String> {
    let mut errors = Vec::new();
    for url in urls {
        let url = format!("{}/jsz?consumers=true", url.trim_end_matches('/'));
        let answer = async { http.get(&url).send().await?.error_for_status()?.json::<Jsz>().await };
        match answer.await {
            Ok(jsz) => return Ok(Figures::from_jsz(&jsz)),
            Err(error) => errors.push(format!("{url}: {error}")),
        }
    }
    Err(errors.join("; "))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_stream_and_consumer_of_every_account_becomes_rows() {
        let jsz: Jsz = serde_json::from_str(
            r#"{"server_id":"x","account_details":[
                {"name":"CHAT","stream_detail":[
                  {"name":"CHAT","state":{"messages":1500,"bytes":9},"consumer_detail":[
                    {"stream_name":"CHAT","name":"persist-worker","num_pending":1400,"num_ack_pending":100,"num_redelivered":3}]},
                  {"name":"CHAT_DLQ","state":{"messages":2}}]},
                {"name":"$G"}]}"#,
        )
        .expect("jsz");
        let figures = Figures::from_jsz(&jsz);
        let consumer = [("stream", "CHAT"), ("consumer", "persist-worker")];
        assert_eq!(figures.get("nats.consumer.pending", &consumer), Some(1400));
        assert_eq!(figures.get("nats.consumer.ack_pending", &consumer), Some(100));
        assert_eq!(figures.get("nats.consumer.redelivered", &consumer), Some(3));
        assert_eq!(figures.get("nats.stream.messages", &[("stream", "CHAT_DLQ")]), Some(2));
        assert_eq!(figures.get("nats.stream.messages", &[("stream", "CHAT")]), Some(1500));
        assert_eq!(figures.0.len(), 5);
    }

    #[test]
    fn an_answer_without_jetstream_details_is_no_rows() {
        let jsz: Jsz = serde_json::from_str(r#"{"server_id":"x","streams":0}"#).expect("jsz");
        assert_eq!(Figures::from_jsz(&jsz), Figures::default());
    }
}

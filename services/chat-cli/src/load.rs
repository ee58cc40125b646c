//! `chat-cli load`: a steady stream of traced messages at a fixed rate for a while, with a
//! share of demo faults, then a summary (sent, acked by the stream, errors, ack latency
//! percentiles). Drives `make demo` and fills the dashboards.

use std::time::{Duration, Instant};

use chat_protocol::{ChatMessage, DemoFault, message_subject};
use serde_json::json;
use telemetry::messaging::{Messaging, Peer};
use tokio::task::JoinSet;

use crate::send::{PublishOptions, Sent, new_message_id, now_ms, publish_one};
use crate::{Cli, CliError};

/// Arguments of `load`.
#[derive(Debug, clap::Args)]
pub struct LoadArgs {
    /// Messages per second.
    #[arg(long, default_value_t = 5.0)]
    pub rate: f64,
    /// How long to send.
    #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
    pub duration: Duration,
    /// Rooms, used in turn.
    #[arg(long, value_delimiter = ',', default_value = "general")]
    pub rooms: Vec<String>,
    /// Senders, used in turn (default: --user). Behind the auth callout a token may only
    /// publish as its own user, so this only works without it.
    #[arg(long, value_delimiter = ',')]
    pub users: Vec<String>,
    /// Share of messages that ask to fail once (0 to 1).
    #[arg(long, default_value_t = 0.0)]
    pub fail_once: f64,
    /// Share of messages that ask to be slow past the worker's deadline.
    #[arg(long, default_value_t = 0.0)]
    pub slow: f64,
    /// Share of poison messages (dead-lettered).
    #[arg(long, default_value_t = 0.0)]
    pub poison: f64,
}

/// The fault for message `i`, spreading each share evenly over the run.
fn fault_for(i: u64, args: &LoadArgs) -> Option<DemoFault> {
    let every = |share: f64| (share > 0.0).then(|| (1.0 / share).round().max(1.0) as u64);
    [(args.poison, DemoFault::Poison), (args.slow, DemoFault::Slow), (args.fail_once, DemoFault::FailOnce)]
        .into_iter()
        .enumerate()
        .find_map(|(k, (share, fault))| every(share).filter(|n| (i + k as u64).is_multiple_of(*n)).map(|_| fault))
}

pub(crate) async fn load(client: &async_nats::Client, cli: &Cli, args: &LoadArgs) -> Result<(), CliError> {
    if !(args.rate > 0.0 && args.rate <= 100_000.0) {
        return Err(CliError::Invalid("--rate must be between 0 and 100000".into()));
    }
    let users = if args.users.is_empty() { vec![cli.user.clone()] } else { args.users.clone() };
    let subjects: Vec<String> = args
        .rooms
        .iter()
        .flat_map(|room| users.iter().map(move |user| message_subject(room, user)))
        .collect::<Result<_, _>>()
        .map_err(|e| CliError::Invalid(e.to_string()))?;
    let js = async_nats::jetstream::new(client.clone());
    let spans = Messaging::new("chat-cli", &Peer::from_url(&cli.nats_url));
    let options = std::sync::Arc::new(PublishOptions { caller_span: true, traceparent: None, timeout: cli.timeout });
    // Tokio's timer ticks at most every millisecond: above 1,000 msg/s each tick sends as
    // many messages as the rate asks for by then (a burst per millisecond).
    let tick = Duration::from_secs_f64(1.0 / args.rate).max(Duration::from_millis(1));
    let mut ticker = tokio::time::interval(tick);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let (started, mut in_flight, mut results) = (Instant::now(), JoinSet::new(), Vec::new());
    let mut i: u64 = 0;
    while started.elapsed() < args.duration {
        if i as f64 >= started.elapsed().as_secs_f64() * args.rate {
            ticker.tick().await;
            continue;
        }
        let subject = subjects[(i as usize) % subjects.len()].clone();
        let body = serde_json::to_vec(&ChatMessage {
            text: format!("load message {i}"),
            sent_at_ms: Some(now_ms()),
            demo_fault: fault_for(i, args),
        })
        .map_err(|e| CliError::Invalid(e.to_string()))?;
        let (js, spans, options, msg_id) = (js.clone(), spans.clone(), options.clone(), new_message_id());
        in_flight.spawn(async move {
            let sent_at = Instant::now();
            let result = publish_one(&js, &spans, &subject, msg_id, &body, &options).await;
            (i, result, sent_at.elapsed())
        });
        while let Some(done) = in_flight.try_join_next() {
            results.extend(done.ok());
        }
        i += 1;
    }
    while let Some(done) = in_flight.join_next().await {
        results.extend(done.ok());
    }
    summarize(&results, started.elapsed(), cli.json)
}

/// The outcome of message `i` and its publish latency.
type Outcome = (u64, Result<Sent, CliError>, Duration);

/// Prints counts and latencies; with `--json` also the ids of the messages the stream
/// stored and the numbers of those whose publish failed, so a check can tell
/// acknowledged from not.
fn summarize(results: &[Outcome], took: Duration, json_out: bool) -> Result<(), CliError> {
    let mut latencies: Vec<Duration> = results.iter().filter(|(_, r, _)| r.is_ok()).map(|(_, _, l)| *l).collect();
    latencies.sort();
    let pct = |p: usize| {
        latencies
            .get((latencies.len() * p / 100).min(latencies.len().saturating_sub(1)))
            .map_or(0.0, |d| d.as_secs_f64() * 1e3)
    };
    let errors: Vec<String> =
        results.iter().filter_map(|(_, r, _)| r.as_ref().err().map(ToString::to_string)).collect();
    let (sent, acked) = (results.len(), latencies.len());
    if json_out {
        println!(
            "{}",
            json!({ "sent": sent, "acked": acked, "errors": errors.len(), "seconds": took.as_secs_f64(),
                    "acked_msg_ids": results.iter().filter_map(|(_, r, _)| r.as_ref().ok().map(|s| &s.msg_id)).collect::<Vec<_>>(),
                    "failed": results.iter().filter(|(_, r, _)| r.is_err()).map(|(i, _, _)| i).collect::<Vec<_>>(),
                    "rate": sent as f64 / took.as_secs_f64().max(1e-9),
                    "ack_latency_ms": { "p50": pct(50), "p95": pct(95), "p99": pct(99) } })
        );
    } else {
        println!(
            "sent {sent} ({:.0}/s), acked by the stream {acked}, errors {} in {:.1} s; ack latency p50 {:.1} ms, p95 {:.1} ms, p99 {:.1} ms",
            sent as f64 / took.as_secs_f64().max(1e-9),
            errors.len(),
            took.as_secs_f64(),
            pct(50),
            pct(95),
            pct(99)
        );
    }
    match errors.into_iter().next() {
        Some(first) => Err(CliError::Nats(format!("some publishes failed, the first: {first}"))),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser as _;

    #[test]
    fn fault_shares_are_spread_over_the_run() {
        let cli =
            crate::Cli::try_parse_from(["chat-cli", "load", "--fail-once", "0.1", "--poison", "0.05"]).expect("args");
        let crate::Command::Load(args) = cli.command else { panic!("load") };
        let faults: Vec<_> = (0..100).map(|i| fault_for(i, &args)).collect();
        let count = |f| faults.iter().filter(|x| **x == Some(f)).count();
        assert_eq!(count(DemoFault::Poison), 5);
        assert!((8..=10).contains(&count(DemoFault::FailOnce)), "{}", count(DemoFault::FailOnce));
        assert_eq!(count(DemoFault::Slow), 0);
    }
}

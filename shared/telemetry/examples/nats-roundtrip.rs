//! A runnable example of the telemetry crate, and the program its integration tests drive:
//! publishes traced chat messages to NATS, consumes them, and exports everything over OTLP.
//!
//! ```sh
//! OTEL_EXPORTER_OTLP_ENDPOINT=http://localhost:4317 \
//!   cargo run -p telemetry --example nats-roundtrip -- --nats-url nats://localhost:4222 --count 3
//! ```
//! Prints one `published trace_id=<id> message_id=<id>` line per message, then
//! `received <n> messages`. `--rate 1000` paces the publishing (the consumer runs
//! alongside), for a load that lasts `count / rate` seconds.

use std::time::Duration;

use bytes::Bytes;
use clap::Parser;
use futures::StreamExt as _;
use telemetry::messaging::{MessageRef, Messaging, Peer, run_with_deadline};

const TEMPLATE: &str = "chat.msg.*.*";
/// The `traceparent` sent next to each `--raw-tracestate` value.
const VALID_PARENT: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

#[derive(Debug, Parser)]
#[command(about = "Publish traced messages through NATS and consume them")]
struct Args {
    /// NATS server URL.
    #[arg(long, env = "NATS_URL", default_value = "nats://127.0.0.1:4222")]
    nats_url: String,
    /// Messages to publish with injected trace context.
    #[arg(long, default_value_t = 1)]
    count: usize,
    /// Publish without an active caller span: the publish span is a new root.
    #[arg(long)]
    root: bool,
    /// Also publish one message per value with this raw `traceparent` header.
    #[arg(long)]
    raw_traceparent: Vec<String>,
    /// Record this value as `auth.token` on each consumer span and log line (policy demo).
    #[arg(long)]
    secret: Option<String>,
    /// Consumer work per message, in milliseconds.
    #[arg(long, default_value_t = 0)]
    work_ms: u64,
    /// Deadline for the consumer work, in milliseconds.
    #[arg(long, default_value_t = 5_000)]
    deadline_ms: u64,
    /// Also publish one message per value with a valid `traceparent` and this `tracestate`.
    #[arg(long)]
    raw_tracestate: Vec<String>,
    /// Run on a current-thread Tokio runtime instead of the multi-thread one.
    #[arg(long)]
    current_thread: bool,
    /// Publish at most this many messages per second (default: as fast as it can).
    #[arg(long)]
    rate: Option<u32>,
    /// The user token of the subject, `chat.msg.general.<user>`: two runs on one server
    /// with different users do not consume each other's messages.
    #[arg(long, default_value = "alice")]
    user: String,
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = Args::parse();
    let runtime = if args.current_thread {
        tokio::runtime::Builder::new_current_thread().enable_all().build()?
    } else {
        tokio::runtime::Builder::new_multi_thread().enable_all().build()?
    };
    runtime.block_on(async {
        let guard = telemetry::init(telemetry::service_info!())?;
        tracing::info!(exporting = guard.is_exporting(), "roundtrip started");
        let result = run(&args).await;
        guard.shutdown().await;
        result
    })
}

async fn run(args: &Args) -> Result<(), Box<dyn std::error::Error>> {
    let client = async_nats::connect(&args.nats_url).await?;
    // With OTEL_TRACES_EXPORTER=nats (or _METRICS_, _LOGS_) the telemetry goes to the
    // TELEMETRY stream over this connection (service-kit's services do this in `connect`).
    telemetry::nats::export_over(&client);
    let spans = Messaging::new("nats-roundtrip", &Peer::from_url(&args.nats_url));
    let subject = format!("chat.msg.general.{}", args.user);
    let subscriber = client.subscribe(subject.clone()).await?;
    let expected = args.count + args.raw_traceparent.len() + args.raw_tracestate.len();
    // The consumer runs alongside the publisher: a paced run delivers while it publishes.
    let consumer =
        tokio::spawn(consume(subscriber, spans.clone(), expected, args.secret.clone(), args.work_ms, args.deadline_ms));

    let mut pace = args.rate.map(|rate| tokio::time::interval(Duration::from_secs(1) / rate.max(1)));
    for i in 0..args.count {
        if let Some(pace) = pace.as_mut() {
            pace.tick().await;
        }
        let id = format!("msg-{i}");
        let caller = if args.root { tracing::Span::none() } else { tracing::info_span!("send message") };
        publish(&client, &spans, &subject, &id, caller).await?;
    }
    let raw_parents = args.raw_traceparent.iter().map(|p| (p.as_str(), None));
    let raw_states = args.raw_tracestate.iter().map(|s| (VALID_PARENT, Some(s.as_str())));
    for (i, (parent, state)) in raw_parents.chain(raw_states).enumerate() {
        let mut headers = async_nats::HeaderMap::new();
        headers.insert("Nats-Msg-Id", format!("raw-{i}").as_str());
        headers.insert(telemetry::propagation::TRACEPARENT, parent.parse::<async_nats::HeaderValue>()?);
        if let Some(state) = state {
            headers.insert(telemetry::propagation::TRACESTATE, state.parse::<async_nats::HeaderValue>()?);
        }
        client.publish_with_headers(subject.clone(), headers, Bytes::from_static(b"{}")).await?;
    }
    client.flush().await?;
    consumer.await??;
    tracing::info!(count = expected, "roundtrip finished");
    println!("received {expected} messages");
    Ok(())
}

/// Consumes `expected` messages (10 s at most between two), each in a CONSUMER span.
async fn consume(
    mut subscriber: async_nats::Subscriber,
    spans: Messaging,
    expected: usize,
    secret: Option<String>,
    work_ms: u64,
    deadline_ms: u64,
) -> Result<(), tokio::time::error::Elapsed> {
    for _ in 0..expected {
        let Some(message) = tokio::time::timeout(Duration::from_secs(10), subscriber.next()).await? else { break };
        let id = message.headers.as_ref().and_then(|h| h.get("Nats-Msg-Id")).map(|v| v.as_str().to_owned());
        let msg = MessageRef {
            subject: &message.subject,
            template: TEMPLATE,
            message_id: id.as_deref(),
            body_size: message.payload.len(),
        };
        let span = spans.process(&msg, message.headers.as_ref(), None, "roundtrip");
        if let Some(secret) = &secret {
            span.set_attribute(opentelemetry::KeyValue::new("auth.token", secret.clone()));
        }
        let work = async {
            tracing::info!(auth.token = secret.as_deref().unwrap_or(""), "processing message");
            tokio::time::sleep(Duration::from_millis(work_ms)).await;
        };
        let _ = run_with_deadline(&span, Duration::from_millis(deadline_ms), work).await;
        span.end();
    }
    Ok(())
}

async fn publish(
    client: &async_nats::Client,
    spans: &Messaging,
    subject: &str,
    id: &str,
    caller: tracing::Span,
) -> Result<(), Box<dyn std::error::Error>> {
    let body = Bytes::from_static(br#"{"text":"hello"}"#);
    let msg = MessageRef { subject, template: TEMPLATE, message_id: Some(id), body_size: body.len() };
    let span = caller.in_scope(|| spans.publish(&msg));
    let mut headers = async_nats::HeaderMap::new();
    headers.insert("Nats-Msg-Id", id);
    span.inject(&mut headers);
    let trace_id = span.span_context().trace_id();
    println!("published trace_id={trace_id} message_id={id}");
    span.scope(client.publish_with_headers(subject.to_owned(), headers, body)).await?;
    span.end();
    Ok(())
}

//! Instrumentation cost per message (DESIGN.md section 9's micro-benchmark):
//! `cargo bench -p telemetry --bench per_message`.
//!
//! One message of the persist path, as the worker instruments it with this crate: the
//! CONSUMER span `process chat.msg.*.*` parented to the producer from the headers (W3C
//! `traceparent`), its context read once, made current twice (deciding, storing), the
//! settlement as an `ack` event on it, and the batch's `INSERT chat.messages` span (one
//! per 256 messages, linked to the other 255). No NATS, no database: only the telemetry.
//!
//! Four setups in one process, alternated round by round (ABCDABCD...):
//! - `off`: the no-op tracer (what `OTEL_SDK_DISABLED=true` leaves);
//! - `unsampled`: the SDK with `parentbased_traceidratio` 0.1 and a producer that was not
//!   sampled (`-00`): what 90 % of the messages cost under 10 % head sampling;
//! - `spans`: the SDK, every span recorded, the services' span processor
//!   (`telemetry::span_processor`: start counter, redaction, batching), an exporter that
//!   drops the batches;
//! - `spans+otlp`: the same, and every batch encoded to OTLP protobuf by
//!   `telemetry::otlp_encode`, as the crate's OTLP/gRPC exporter does before sending it;
//! - `spans+proto`: the same bytes made as opentelemetry-otlp's exporters make them
//!   (`opentelemetry-proto`'s message structs, then prost; used for OTLP/HTTP and for
//!   settings the crate's exporter leaves to it).
//!
//! Reports process CPU (all threads, so the batch thread's work counts) and wall time per
//! message, medians over the rounds, the difference to `off`, bytes per span, and spans
//! dropped.
//!
//! The allocator is mimalloc, as in the service binaries. With glibc malloc the traced
//! rows cost more (spans are allocated on one thread and freed on the batch thread,
//! which glibc serialises on its arena locks): remove the two lines below to see it.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use async_nats::HeaderMap;
use opentelemetry::global::BoxedTracer;
use opentelemetry::trace::TracerProvider as _;
use opentelemetry::trace::noop::NoopTracer;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::transform::common::tonic::ResourceAttributesWithSchema;
use opentelemetry_proto::transform::trace::tonic::group_spans_by_resource_and_scope;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::trace::{BatchConfigBuilder, Sampler, SdkTracerProvider, SpanData, SpanExporter};
use prost::Message as _;
use telemetry::otlp_encode::TraceRequestEncoder;
use telemetry::{DbSpans, Delivery, MessageRef, Messaging, Peer, Settlement, Statement};

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

const MESSAGES_PER_ROUND: u64 = 102_400;
const ROUNDS: usize = 7;
/// Messages between two waits for the exporter.
const FLUSH_EVERY: u64 = 8192;
/// Messages per INSERT, as the worker's default BATCH_SIZE.
const BATCH: usize = 256;
const INSERT: Statement = Statement {
    operation: "INSERT",
    collection: "chat.messages",
    name: "INSERT chat.messages",
    query: "INSERT INTO chat.messages (...) SELECT * FROM UNNEST(...)",
};

/// How the exporter turns a batch into OTLP bytes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
enum Encoding {
    /// Not at all (the batch is dropped).
    #[default]
    None,
    /// As opentelemetry-otlp does: `opentelemetry-proto`'s structs, then prost.
    Official,
    /// `telemetry::otlp_encode`: straight from `SpanData` to bytes (the crate's exporter).
    Direct,
}

/// Counts what reaches the exporter; optionally encodes it to OTLP protobuf.
#[derive(Debug, Clone, Default)]
struct CountingExporter {
    encoding: Encoding,
    spans: Arc<AtomicU64>,
    bytes: Arc<AtomicU64>,
    resource: Arc<ResourceAttributesWithSchema>,
    direct: Arc<TraceRequestEncoder>,
}

impl SpanExporter for CountingExporter {
    async fn export(&self, batch: Vec<SpanData>) -> OTelSdkResult {
        self.spans.fetch_add(batch.len() as u64, Ordering::Relaxed);
        let bytes = match self.encoding {
            Encoding::None => 0,
            Encoding::Official => {
                let spans = group_spans_by_resource_and_scope(batch, &self.resource);
                ExportTraceServiceRequest { resource_spans: spans }.encode_to_vec().len()
            }
            Encoding::Direct => self.direct.encode(&batch).len(),
        };
        self.bytes.fetch_add(bytes as u64, Ordering::Relaxed);
        Ok(())
    }

    fn set_resource(&mut self, resource: &Resource) {
        self.resource = Arc::new(resource.into());
        self.direct = Arc::new(TraceRequestEncoder::new(resource));
    }
}

struct Setup {
    name: &'static str,
    messaging: Messaging,
    db: DbSpans,
    sampled: bool,
    provider: Option<SdkTracerProvider>,
    exporter: CountingExporter,
    cpu: Vec<f64>,
    wall: Vec<f64>,
}

/// How a setup's spans are made.
enum Mode {
    Off,
    Unsampled,
    Spans(Encoding),
}

impl Setup {
    fn new(name: &'static str, mode: &Mode, peer: &Peer) -> Self {
        let encoding = if let Mode::Spans(encoding) = mode { *encoding } else { Encoding::None };
        let exporter = CountingExporter { encoding, ..CountingExporter::default() };
        let (tracer, provider) = match mode {
            Mode::Off => (BoxedTracer::new(Box::new(NoopTracer::new())), None),
            Mode::Unsampled | Mode::Spans(_) => {
                // A queue that holds what is made between two flushes: nothing is dropped
                // (dropped spans cost nothing and would flatter the figures).
                let config = BatchConfigBuilder::default()
                    .with_max_queue_size(2 * FLUSH_EVERY as usize)
                    .with_max_export_batch_size(telemetry::DEFAULT_BSP_MAX_EXPORT_BATCH_SIZE)
                    .build();
                let provider = SdkTracerProvider::builder()
                    .with_resource(Resource::builder().with_service_name("persist-worker").build())
                    .with_sampler(Sampler::ParentBased(Box::new(Sampler::TraceIdRatioBased(0.1))))
                    .with_span_processor(telemetry::span_processor(exporter.clone(), config))
                    .build();
                (BoxedTracer::new(Box::new(provider.tracer("persist-worker"))), Some(provider))
            }
        };
        let db_tracer = match &provider {
            Some(provider) => BoxedTracer::new(Box::new(provider.tracer("telemetry"))),
            None => BoxedTracer::new(Box::new(NoopTracer::new())),
        };
        Self {
            name,
            messaging: Messaging::with_tracer(tracer, peer),
            db: DbSpans::with_tracer(db_tracer, "chat", "postgres", 5432),
            sampled: !matches!(mode, Mode::Unsampled),
            provider,
            exporter,
            cpu: Vec::new(),
            wall: Vec::new(),
        }
    }

    fn round(&mut self, sampled: &HeaderMap, unsampled: &HeaderMap) {
        let headers = if self.sampled { sampled } else { unsampled };
        let cpu_before = process_cpu_seconds();
        let started = Instant::now();
        let mut batch = Vec::with_capacity(BATCH);
        for sequence in 0..MESSAGES_PER_ROUND {
            batch.push(one_message(&self.messaging, headers, sequence));
            if batch.len() == BATCH {
                insert(&self.db, &batch);
                batch.clear();
            }
            // The export keeps up, as at a service's real rate: the queue stays small
            // (memory as in a service) and every span's export is counted in this round.
            if (sequence + 1) % FLUSH_EVERY == 0
                && let Some(provider) = &self.provider
            {
                let _ = provider.force_flush();
            }
        }
        if let Some(provider) = &self.provider {
            let _ = provider.force_flush();
        }
        let per_message = |seconds: f64| seconds * 1e6 / MESSAGES_PER_ROUND as f64;
        self.wall.push(per_message(started.elapsed().as_secs_f64()));
        self.cpu.push(per_message(process_cpu_seconds() - cpu_before));
    }
}

/// The worker's instrumentation of one delivery (see `persist-worker/src/delivery.rs`
/// and `batch.rs`), with the work itself left out. Returns what the batch keeps: the
/// span (ended after the INSERT, as the worker settles after commit).
fn one_message(spans: &Messaging, headers: &HeaderMap, sequence: u64) -> telemetry::Traced {
    let message_id = "0af7651916cd43dd8448eb211c80319c-0";
    let msg = MessageRef {
        subject: "chat.msg.general.alice",
        template: "chat.msg.*.*",
        message_id: Some(message_id),
        body_size: 64,
    };
    let facts = Delivery { stream_sequence: sequence + 1, delivery_count: 1, queue_wait_seconds: 0.002 };
    let span = spans.process(&msg, Some(headers), Some(&facts), "persist-worker");
    let trace_id = span.span_context().trace_id();
    std::hint::black_box(trace_id);
    span.in_scope(|| std::hint::black_box(sequence)); // deciding
    span
}

/// The batch's INSERT span (a child of the first delivery, linked to the others), then
/// each delivery's settlement as an event and the end of its span.
fn insert(db: &DbSpans, batch: &[telemetry::Traced]) {
    let span = batch[0].in_scope(|| db.span(&INSERT));
    if span.is_recording() {
        for delivery in &batch[1..] {
            span.add_link(delivery.span_context());
        }
    }
    span.end();
    let msg =
        MessageRef { subject: "chat.msg.general.alice", template: "chat.msg.*.*", message_id: None, body_size: 64 };
    for delivery in batch {
        let _ = Messaging::settle_event(delivery, Settlement::Ack, None, &msg);
        delivery.end();
    }
}

/// utime + stime of this process (all threads), in seconds.
fn process_cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let after = stat.rsplit_once(')').map(|(_, rest)| rest).unwrap_or_default();
    let ticks: Vec<f64> = after.split_whitespace().skip(11).take(2).filter_map(|f| f.parse().ok()).collect();
    ticks.iter().sum::<f64>() / 100.0
}

fn median(values: &[f64]) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    sorted[sorted.len() / 2]
}

fn main() {
    opentelemetry::global::set_text_map_propagator(opentelemetry_sdk::propagation::TraceContextPropagator::new());
    let mut sampled = HeaderMap::new();
    sampled.insert("traceparent", "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01");
    let mut unsampled = HeaderMap::new();
    unsampled.insert("traceparent", "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-00");
    let peer = Peer { address: "nats".into(), port: 4222 };
    let mut setups = vec![
        Setup::new("off", &Mode::Off, &peer),
        Setup::new("unsampled", &Mode::Unsampled, &peer),
        Setup::new("spans", &Mode::Spans(Encoding::None), &peer),
        Setup::new("spans+otlp", &Mode::Spans(Encoding::Direct), &peer),
        Setup::new("spans+proto", &Mode::Spans(Encoding::Official), &peer),
    ];
    // PER_MESSAGE_ONLY=spans+otlp runs one setup (to profile it with perf).
    if let Ok(only) = std::env::var("PER_MESSAGE_ONLY") {
        setups.retain(|s| s.name == "off" || s.name == only);
    }

    for setup in &mut setups {
        setup.round(&sampled, &unsampled); // warm-up, discarded
        setup.cpu.clear();
        setup.wall.clear();
    }
    for _ in 0..ROUNDS {
        for setup in &mut setups {
            setup.round(&sampled, &unsampled);
        }
    }

    let off_cpu = median(&setups[0].cpu);
    println!(
        "per message, median of {ROUNDS} rounds of {MESSAGES_PER_ROUND} (a process span with an ack event, \
         and an INSERT span per {BATCH} messages, when recorded):"
    );
    for setup in &setups {
        let (cpu, wall) = (median(&setup.cpu), median(&setup.wall));
        let per_round = MESSAGES_PER_ROUND + MESSAGES_PER_ROUND / BATCH as u64;
        let created = if setup.sampled { per_round * (ROUNDS as u64 + 1) } else { 0 };
        let exported = setup.exporter.spans.load(Ordering::Relaxed);
        let bytes = setup.exporter.bytes.load(Ordering::Relaxed);
        let detail = match &setup.provider {
            None => String::new(),
            Some(_) => format!(
                "   spans exported {exported}, dropped {}{}",
                created.saturating_sub(exported),
                if bytes > 0 {
                    format!(", {} B/message OTLP", bytes / (MESSAGES_PER_ROUND * (ROUNDS as u64 + 1)))
                } else {
                    String::new()
                }
            ),
        };
        println!(
            "  {:<12} CPU {:6.2} µs (+{:5.2} µs over off)   wall {:6.2} µs{detail}",
            setup.name,
            cpu,
            cpu - off_cpu,
            wall
        );
    }
    for setup in &setups {
        if let Some(provider) = &setup.provider {
            let _ = provider.shutdown_with_timeout(Duration::from_secs(5));
        }
    }
}

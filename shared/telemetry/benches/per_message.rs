//! Instrumentation cost per message (DESIGN.md section 9's micro-benchmark):
//! `cargo bench -p telemetry --bench per_message`.
//!
//! One message of the persist path, as the worker instruments it with this crate: the
//! CONSUMER span `process chat.msg.*.*` parented to the producer from the headers (W3C
//! `traceparent`), its context read once, entered twice (deciding, storing), and the
//! CLIENT span `ack chat.msg.*.*` inside it. No NATS, no database: only the telemetry.
//!
//! Three subscribers in one process, alternated round by round (ABCABC...):
//! - `off`: the registry and the level filter only (what `OTEL_SDK_DISABLED=true` leaves);
//! - `spans`: plus the OpenTelemetry layer (the services' lean options), the redacting
//!   processor and the batch processor, with an exporter that drops batches;
//! - `spans+otlp`: the same, and the exporter encodes every batch to OTLP protobuf as the
//!   real exporter does before sending it.
//!
//! Reports process CPU (all threads, so the batch thread's work counts) and wall time per
//! message, medians over the rounds, the ratio to `off`, bytes per span, and spans dropped.
//!
//! The allocator is mimalloc, as in the service binaries. With glibc malloc the traced
//! rows cost about 2.4x more (spans are allocated on one thread and freed on the batch
//! thread, which glibc serialises on its arena locks): remove the two lines below to see it.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use async_nats::HeaderMap;
use opentelemetry::trace::{TraceContextExt as _, TracerProvider as _};
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::transform::common::tonic::ResourceAttributesWithSchema;
use opentelemetry_proto::transform::trace::tonic::group_spans_by_resource_and_scope;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::trace::{BatchConfigBuilder, BatchSpanProcessor, SdkTracerProvider, SpanData, SpanExporter};
use prost::Message as _;
use telemetry::{Delivery, MessageRef, Peer, RedactingSpanProcessor, Settlement, process_span, settle_span};
use tracing::Dispatch;
use tracing::level_filters::LevelFilter;
use tracing_opentelemetry::OpenTelemetrySpanExt as _;
use tracing_subscriber::filter::Targets;
use tracing_subscriber::layer::SubscriberExt as _;

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

const MESSAGES_PER_ROUND: u64 = 100_000;
const ROUNDS: usize = 7;

/// Counts what reaches the exporter; optionally encodes it like the OTLP exporter.
#[derive(Debug, Clone, Default)]
struct CountingExporter {
    encode: bool,
    spans: Arc<AtomicU64>,
    bytes: Arc<AtomicU64>,
    resource: Arc<ResourceAttributesWithSchema>,
}

impl SpanExporter for CountingExporter {
    async fn export(&self, batch: Vec<SpanData>) -> OTelSdkResult {
        self.spans.fetch_add(batch.len() as u64, Ordering::Relaxed);
        if self.encode {
            let request =
                ExportTraceServiceRequest { resource_spans: group_spans_by_resource_and_scope(batch, &self.resource) };
            self.bytes.fetch_add(request.encode_to_vec().len() as u64, Ordering::Relaxed);
        }
        Ok(())
    }

    fn set_resource(&mut self, resource: &Resource) {
        self.resource = Arc::new(resource.into());
    }
}

struct Setup {
    name: &'static str,
    dispatch: Dispatch,
    provider: Option<SdkTracerProvider>,
    exporter: CountingExporter,
    cpu: Vec<f64>,
    wall: Vec<f64>,
}

impl Setup {
    fn new(name: &'static str, export: Option<bool>) -> Self {
        let filter = Targets::new().with_default(LevelFilter::INFO);
        let exporter = CountingExporter { encode: export.unwrap_or(false), ..CountingExporter::default() };
        let (dispatch, provider) = match export {
            None => (Dispatch::new(tracing_subscriber::registry().with(filter)), None),
            Some(_) => {
                // A queue large enough that nothing is dropped: dropped spans cost nothing.
                let config = BatchConfigBuilder::default().with_max_queue_size(1 << 20).build();
                let batch = BatchSpanProcessor::builder(exporter.clone()).with_batch_config(config).build();
                let provider = SdkTracerProvider::builder()
                    .with_resource(Resource::builder().with_service_name("persist-worker").build())
                    .with_span_processor(RedactingSpanProcessor::new(batch))
                    .build();
                let layer = tracing_opentelemetry::layer()
                    .with_tracer(provider.tracer("persist-worker"))
                    .with_location(false)
                    .with_threads(false)
                    .with_tracked_inactivity(false)
                    .with_target(false);
                (Dispatch::new(tracing_subscriber::registry().with(filter).with(layer)), Some(provider))
            }
        };
        Self { name, dispatch, provider, exporter, cpu: Vec::new(), wall: Vec::new() }
    }

    fn round(&mut self, headers: &HeaderMap, peer: &Peer) {
        let cpu_before = process_cpu_seconds();
        let started = Instant::now();
        tracing::dispatcher::with_default(&self.dispatch, || {
            for sequence in 0..MESSAGES_PER_ROUND {
                one_message(headers, peer, sequence);
            }
        });
        if let Some(provider) = &self.provider {
            let _ = provider.force_flush();
        }
        let per_message = |seconds: f64| seconds * 1e6 / MESSAGES_PER_ROUND as f64;
        self.wall.push(per_message(started.elapsed().as_secs_f64()));
        self.cpu.push(per_message(process_cpu_seconds() - cpu_before));
    }
}

/// The worker's instrumentation of one delivery (see `persist-worker/src/delivery.rs`
/// and `batch.rs`), with the work itself left out.
fn one_message(headers: &HeaderMap, peer: &Peer, sequence: u64) {
    let message_id = "0af7651916cd43dd8448eb211c80319c-0";
    let msg = MessageRef {
        subject: "chat.msg.general.alice",
        template: "chat.msg.*.*",
        message_id: Some(message_id),
        body_size: 64,
    };
    let facts = Delivery { stream_sequence: sequence + 1, delivery_count: 1, queue_wait_seconds: 0.002 };
    let span = process_span(&msg, Some(headers), Some(&facts), "persist-worker", peer);
    let trace_id = span.context().span().span_context().trace_id();
    std::hint::black_box(trace_id);
    span.in_scope(|| std::hint::black_box(sequence)); // deciding
    let ack = span.in_scope(|| settle_span(Settlement::Ack, &msg, peer));
    ack.in_scope(|| std::hint::black_box(sequence)); // the ack's publish
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
    let mut headers = HeaderMap::new();
    headers.insert("traceparent", "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01");
    let peer = Peer { address: "nats".into(), port: 4222 };
    let mut setups = [Setup::new("off", None), Setup::new("spans", Some(false)), Setup::new("spans+otlp", Some(true))];

    for setup in &mut setups {
        setup.round(&headers, &peer); // warm-up, discarded
        setup.cpu.clear();
        setup.wall.clear();
    }
    for _ in 0..ROUNDS {
        for setup in &mut setups {
            setup.round(&headers, &peer);
        }
    }

    let off_cpu = median(&setups[0].cpu);
    println!("per message, median of {ROUNDS} rounds of {MESSAGES_PER_ROUND} (2 spans each when traced):");
    for setup in &setups {
        let (cpu, wall) = (median(&setup.cpu), median(&setup.wall));
        let created = 2 * MESSAGES_PER_ROUND * (ROUNDS as u64 + 1);
        let exported = setup.exporter.spans.load(Ordering::Relaxed);
        let bytes = setup.exporter.bytes.load(Ordering::Relaxed);
        let detail = match &setup.provider {
            None => String::new(),
            Some(_) => format!(
                "   spans dropped {}{}",
                created.saturating_sub(exported),
                if bytes > 0 { format!(", {} B/span OTLP", bytes / exported.max(1)) } else { String::new() }
            ),
        };
        println!("  {:<11} CPU {:6.2} µs ({:5.2}x off)   wall {:6.2} µs{detail}", setup.name, cpu, cpu / off_cpu, wall);
    }
    for setup in &setups {
        if let Some(provider) = &setup.provider {
            let _ = provider.shutdown_with_timeout(Duration::from_secs(5));
        }
    }
}

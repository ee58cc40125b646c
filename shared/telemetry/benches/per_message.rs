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
//! - `ended`: the SDK, every span recorded, and dropped as it ends by a span processor
//!   that does nothing else: what the SDK's spans cost before any processing or export
//!   (the floor under every setup below);
//! - `spans`: the SDK, every span recorded, the span processor of the services' other
//!   exporters (`telemetry::bench::span_processor`: start counter, redaction, the SDK's
//!   batch processor), an exporter that drops the batches;
//! - `spans+otlp`: the same, and every batch encoded to OTLP protobuf by the crate's
//!   encoder, as the OTLP over NATS exporter encodes the SDK's batches;
//! - `spans+proto`: the same bytes made as opentelemetry-otlp's exporters make them
//!   (`opentelemetry-proto`'s message structs, then prost; used for OTLP/HTTP and for
//!   settings the crate's exporter leaves to it);
//! - `spans+grpc`: the services' real export path: the crate's OTLP/gRPC exporter
//!   (`telemetry::bench::grpc_span_exporter`, what `init` makes) behind its own batch
//!   processor (spans encoded as they end: `telemetry::bench::grpc_span_processor`),
//!   on a two-thread Tokio runtime, as in a service, sending every batch over loopback to
//!   an OTLP receiver in another process (this binary again, `PER_MESSAGE_SINK=1`: it
//!   answers each export and keeps nothing), as a service sends to the collector.
//!
//! Reports process CPU (all threads, so the batch thread's work counts) and wall time per
//! message, medians over the rounds, the difference to `off`, bytes per span, and spans
//! dropped; and the CPU split the drain bench reports for the worker: the span batch
//! thread (the SDK's `OpenTelemetry.Traces.BatchProcessor`: encoding, and the wait for the
//! send; for `spans+grpc` the crate's `otlp-span-batch`: framing and the wait) against
//! every other thread (the message loop, where `spans+grpc` encodes, and the runtime's
//! gRPC I/O).
//!
//! The allocator is mimalloc, as in the service binaries. With glibc malloc the traced
//! rows cost more (spans are allocated on one thread and freed on the batch thread,
//! which glibc serialises on its arena locks). Built with `--features bench-allocations`
//! it is the system allocator wrapped in a counter instead, and each row gets its heap
//! allocations per message (a count that does not move with the machine's load; the
//! times of that build are not the services').

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use async_nats::HeaderMap;
use opentelemetry::global::BoxedTracer;
use opentelemetry::trace::TracerProvider as _;
use opentelemetry::trace::noop::NoopTracer;
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{TraceService, TraceServiceServer};
use opentelemetry_proto::tonic::collector::trace::v1::{ExportTraceServiceRequest, ExportTraceServiceResponse};
use opentelemetry_proto::transform::common::tonic::ResourceAttributesWithSchema;
use opentelemetry_proto::transform::trace::tonic::group_spans_by_resource_and_scope;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::trace::{BatchConfigBuilder, Sampler, SdkTracerProvider, SpanData, SpanExporter};
use prost::Message as _;
use telemetry::bench::{DirectGrpcSpanExporter, SpanBatch, TraceRequestEncoder};
use telemetry::db::{DbSpans, Statement};
use telemetry::messaging::{DeliveryFacts, MessageRef, Messaging, Peer, Settlement};
use telemetry::tracer::SpanTracer;
use test_harness::thread_cpu_seconds;

#[cfg(not(feature = "bench-allocations"))]
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[cfg(feature = "bench-allocations")]
#[global_allocator]
static ALLOCATOR: &stats_alloc::StatsAlloc<std::alloc::System> = &stats_alloc::INSTRUMENTED_SYSTEM;

/// Heap allocations so far, all threads (`None` unless built with `bench-allocations`).
fn allocations() -> Option<u64> {
    #[cfg(feature = "bench-allocations")]
    return Some(ALLOCATOR.stats().allocations as u64);
    #[cfg(not(feature = "bench-allocations"))]
    None
}

/// Messages per round: 102,400, or `PER_MESSAGE_MESSAGES` (fewer, to run under valgrind).
fn messages_per_round() -> u64 {
    static MESSAGES: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    *MESSAGES.get_or_init(|| {
        std::env::var("PER_MESSAGE_MESSAGES").ok().and_then(|n| n.parse().ok()).filter(|n| *n >= 256).unwrap_or(102_400)
    })
}
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
    /// the crate's encoder: straight from `SpanData` to bytes (as the OTLP over NATS
    /// exporter encodes the SDK's batches).
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
        let spans = batch.len() as u64;
        let bytes = match self.encoding {
            Encoding::None => 0,
            Encoding::Official => {
                let spans = group_spans_by_resource_and_scope(batch, &self.resource);
                ExportTraceServiceRequest { resource_spans: spans }.encode_to_vec().len()
            }
            Encoding::Direct => self.direct.encode(&batch).len(),
        };
        self.bytes.fetch_add(bytes as u64, Ordering::Relaxed);
        self.spans.fetch_add(spans, Ordering::Relaxed);
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
    /// Spans the gRPC setup's full queue dropped (its exporter is not a `CountingExporter`).
    grpc_dropped: Option<Arc<AtomicUsize>>,
    /// Whether spans reach an exporter (not in `ended`).
    exports: bool,
    wall: Vec<f64>,
    /// Per round: CPU µs per message of the batch thread and of every other thread.
    split: Vec<(f64, f64)>,
    /// Per round: heap allocations per message (with `bench-allocations`).
    allocations: Vec<f64>,
}

/// How a setup's spans are made.
enum Mode {
    Off,
    Unsampled,
    /// Spans dropped as they end ([`DropAtEnd`]).
    Ended,
    Spans(Encoding),
    /// Spans sent by the crate's gRPC exporter.
    Grpc(Box<DirectGrpcSpanExporter>),
}

impl Setup {
    fn new(name: &'static str, mode: &Mode, peer: &Peer) -> Self {
        let exporter = match mode {
            Mode::Spans(encoding) => CountingExporter { encoding: *encoding, ..CountingExporter::default() },
            Mode::Off | Mode::Unsampled | Mode::Ended | Mode::Grpc(_) => CountingExporter::default(),
        };
        // A queue that holds what is made between two flushes: nothing is dropped (dropped
        // spans cost nothing and would flatter the figures).
        let batch = SpanBatch {
            max_queue_size: 2 * FLUSH_EVERY as usize,
            max_export_batch_size: telemetry::bench::DEFAULT_BSP_MAX_EXPORT_BATCH_SIZE,
            scheduled_delay: Duration::from_secs(5),
        };
        let builder = SdkTracerProvider::builder()
            .with_resource(Resource::builder().with_service_name("persist-worker").build())
            .with_max_links_per_span(telemetry::LINKS_PER_SPAN)
            .with_sampler(Sampler::ParentBased(Box::new(Sampler::TraceIdRatioBased(0.1))));
        let (provider, grpc_dropped) = match mode {
            Mode::Off => (None, None),
            Mode::Unsampled | Mode::Spans(_) => {
                let config = BatchConfigBuilder::default()
                    .with_max_queue_size(batch.max_queue_size)
                    .with_max_export_batch_size(batch.max_export_batch_size)
                    .build();
                let processor = telemetry::bench::span_processor(exporter.clone(), config);
                (Some(builder.with_span_processor(processor).build()), None)
            }
            Mode::Ended => {
                let processor = DropAtEnd(Arc::clone(&exporter.spans));
                (Some(builder.with_span_processor(processor).build()), None)
            }
            Mode::Grpc(grpc) => {
                let (processor, dropped) = telemetry::bench::grpc_span_processor((**grpc).clone(), batch);
                (Some(builder.with_span_processor(processor).build()), Some(dropped))
            }
        };
        // As in a service: the SDK's tracer when there is a pipeline, else the global API's.
        let tracer = |scope| match &provider {
            Some(provider) => SpanTracer::Sdk(provider.tracer(scope)),
            None => SpanTracer::Global(BoxedTracer::new(Box::new(NoopTracer::new()))),
        };
        Self {
            name,
            messaging: Messaging::with_tracer(tracer("persist-worker"), peer),
            db: DbSpans::with_tracer(tracer("telemetry"), "chat", "postgres", 5432),
            sampled: !matches!(mode, Mode::Unsampled),
            provider,
            exporter,
            grpc_dropped,
            exports: !matches!(mode, Mode::Ended),
            wall: Vec::new(),
            split: Vec::new(),
            allocations: Vec::new(),
        }
    }

    /// Median CPU µs per message over the rounds, all threads.
    fn cpu(&self) -> f64 {
        median(&self.split.iter().map(|(batch, others)| batch + others).collect::<Vec<_>>())
    }

    fn round(&mut self, sampled: &HeaderMap, unsampled: &HeaderMap) {
        let headers = if self.sampled { sampled } else { unsampled };
        let split_before = thread_cpu_seconds(std::process::id());
        let allocations_before = allocations();
        let started = Instant::now();
        let mut batch = Vec::with_capacity(BATCH);
        for sequence in 0..messages_per_round() {
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
        let per_message = |seconds: f64| seconds * 1e6 / messages_per_round() as f64;
        self.wall.push(per_message(started.elapsed().as_secs_f64()));
        let split_after = thread_cpu_seconds(std::process::id());
        let split = (per_message(split_after.0 - split_before.0), per_message(split_after.1 - split_before.1));
        self.split.push(split);
        if let (Some(before), Some(after)) = (allocations_before, allocations()) {
            self.allocations.push((after - before) as f64 / messages_per_round() as f64);
        }
    }
}

/// The `ended` setup's span processor: counts each span as it ends and drops it there.
#[derive(Debug)]
struct DropAtEnd(Arc<AtomicU64>);

impl opentelemetry_sdk::trace::SpanProcessor for DropAtEnd {
    fn on_start(&self, _span: &mut opentelemetry_sdk::trace::Span, _cx: &opentelemetry::Context) {}

    fn on_end(&self, _span: SpanData) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }

    fn force_flush(&self) -> OTelSdkResult {
        Ok(())
    }

    fn shutdown_with_timeout(&self, _timeout: Duration) -> OTelSdkResult {
        Ok(())
    }
}

/// The worker's instrumentation of one delivery (see `persist-worker/src/delivery.rs`
/// and `batch.rs`), with the work itself left out. Returns what the batch keeps: the
/// span (ended after the INSERT, as the worker settles after commit).
fn one_message(spans: &Messaging, headers: &HeaderMap, sequence: u64) -> telemetry::messaging::Traced {
    let message_id = "0af7651916cd43dd8448eb211c80319c-0";
    let msg = MessageRef {
        subject: "chat.msg.general.alice",
        template: "chat.msg.*.*",
        message_id: Some(message_id),
        body_size: 64,
    };
    let facts = DeliveryFacts {
        stream_sequence: sequence + 1,
        delivery_count: 1,
        published: time::OffsetDateTime::UNIX_EPOCH,
        queue_wait_seconds: 0.002,
    };
    let span = spans.process(&msg, Some(headers), Some(&facts), "persist-worker");
    let trace_id = span.span_context().trace_id();
    std::hint::black_box(trace_id);
    span.in_scope(|| std::hint::black_box(sequence)); // deciding
    span
}

/// The batch's INSERT span (a child of the first delivery, linked to the others), then
/// each delivery's settlement as an event and the end of its span.
fn insert(db: &DbSpans, batch: &[telemetry::messaging::Traced]) {
    let links = batch[1..].iter().map(|delivery| delivery.span_context()).collect();
    let span = batch[0].in_scope(|| db.span_linked(&INSERT, links));
    span.end();
    for delivery in batch {
        delivery.add_settlement(Settlement::Ack);
        delivery.end();
    }
}

/// `PER_MESSAGE_SINK=1`: this binary as the OTLP receiver of the `spans+grpc` setup, in a
/// process of its own as the collector is to a service. It answers every export and
/// keeps nothing, prints its port, and ends when its standard input closes (the bench
/// ended without killing it).
fn run_sink() {
    #[derive(Debug)]
    struct Sink;

    #[tonic::async_trait]
    impl TraceService for Sink {
        async fn export(
            &self,
            request: tonic::Request<ExportTraceServiceRequest>,
        ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
            std::hint::black_box(request);
            Ok(tonic::Response::new(ExportTraceServiceResponse::default()))
        }
    }

    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().expect("runtime");
    runtime.block_on(async {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind the sink");
        println!("{}", listener.local_addr().expect("sink address").port());
        let stdin_closed = async {
            let _ = tokio::task::spawn_blocking(|| std::io::copy(&mut std::io::stdin(), &mut std::io::sink())).await;
        };
        tonic::transport::Server::builder()
            .add_service(TraceServiceServer::new(Sink))
            .serve_with_incoming_shutdown(tonic::transport::server::TcpIncoming::from(listener), stdin_closed)
            .await
            .expect("the sink serves");
    });
}

/// Starts the sink process; returns it (it ends when dropped: its stdin closes) and the
/// `http://` endpoint it listens on.
fn start_sink() -> (std::process::Child, String) {
    use std::io::BufRead as _;
    let mut sink = std::process::Command::new(std::env::current_exe().expect("this binary"))
        .env("PER_MESSAGE_SINK", "1")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("start the OTLP sink");
    let mut port = String::new();
    let stdout = sink.stdout.take().expect("the sink's stdout");
    std::io::BufReader::new(stdout).read_line(&mut port).expect("the sink's port");
    (sink, format!("http://127.0.0.1:{}", port.trim()))
}

fn median(values: &[f64]) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    sorted[sorted.len() / 2]
}

fn main() {
    if std::env::var_os("PER_MESSAGE_SINK").is_some() {
        return run_sink();
    }
    opentelemetry::global::set_text_map_propagator(opentelemetry_sdk::propagation::TraceContextPropagator::new());
    let mut sampled = HeaderMap::new();
    sampled.insert("traceparent", "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01");
    let mut unsampled = HeaderMap::new();
    unsampled.insert("traceparent", "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-00");
    let peer = Peer { address: "nats".into(), port: 4222 };
    // PER_MESSAGE_ONLY=spans+otlp runs one setup beside off (to profile it with perf).
    let only = std::env::var("PER_MESSAGE_ONLY").ok();
    let wanted = |name: &str| name == "off" || only.as_deref().is_none_or(|only| only == name);
    // The services' runtime on this 2-core machine: two worker threads.
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime");
    let mut sink = None;
    let mut setups = Vec::new();
    for (name, mode) in [
        ("off", Mode::Off),
        ("unsampled", Mode::Unsampled),
        ("ended", Mode::Ended),
        ("spans", Mode::Spans(Encoding::None)),
        ("spans+otlp", Mode::Spans(Encoding::Direct)),
        ("spans+proto", Mode::Spans(Encoding::Official)),
    ] {
        if wanted(name) {
            setups.push(Setup::new(name, &mode, &peer));
        }
    }
    if wanted("spans+grpc") {
        let (process, endpoint) = start_sink();
        let _entered = runtime.enter();
        let grpc = telemetry::bench::grpc_span_exporter(&endpoint).expect("the gRPC exporter");
        setups.push(Setup::new("spans+grpc", &Mode::Grpc(Box::new(grpc)), &peer));
        sink = Some(process);
    }

    for setup in &mut setups {
        setup.round(&sampled, &unsampled); // warm-up, discarded
        setup.wall.clear();
        setup.split.clear();
        setup.allocations.clear();
    }
    for _ in 0..ROUNDS {
        for setup in &mut setups {
            setup.round(&sampled, &unsampled);
        }
    }

    let off_cpu = setups[0].cpu();
    println!(
        "per message, median of {ROUNDS} rounds of {} (a process span with an ack event, \
         and an INSERT span per {BATCH} messages, when recorded):",
        messages_per_round()
    );
    for setup in &setups {
        let (cpu, wall) = (setup.cpu(), median(&setup.wall));
        let batch_thread = median(&setup.split.iter().map(|s| s.0).collect::<Vec<_>>());
        let other_threads = median(&setup.split.iter().map(|s| s.1).collect::<Vec<_>>());
        let per_round = messages_per_round() + messages_per_round() / BATCH as u64;
        let created = if setup.sampled { per_round * (ROUNDS as u64 + 1) } else { 0 };
        // The gRPC setup's sink answers every export: what its queue did not drop was sent.
        let exported = match &setup.grpc_dropped {
            Some(dropped) => created.saturating_sub(dropped.load(Ordering::Relaxed) as u64),
            None => setup.exporter.spans.load(Ordering::Relaxed),
        };
        let bytes = setup.exporter.bytes.load(Ordering::Relaxed);
        let allocated = match setup.allocations.is_empty() {
            true => String::new(),
            false => format!("   allocations {:6.2}", median(&setup.allocations)),
        };
        let detail = match &setup.provider {
            None => String::new(),
            Some(_) if !setup.exports => format!("   spans ended {exported} (none exported)"),
            Some(_) => format!(
                "   spans exported {exported}, dropped {}{}",
                created.saturating_sub(exported),
                if bytes > 0 {
                    format!(", {} B/message OTLP", bytes / (messages_per_round() * (ROUNDS as u64 + 1)))
                } else {
                    String::new()
                }
            ),
        };
        println!(
            "  {:<12} CPU {:6.2} µs (+{:5.2} µs over off; batch thread {batch_thread:5.2}, others {other_threads:5.2})   \
             wall {:6.2} µs{allocated}{detail}",
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
    // Killed, not asked to stop: a graceful stop would wait for the exporter's connection,
    // which the setups still hold.
    if let Some(mut sink) = sink {
        let _ = sink.kill();
        let _ = sink.wait();
    }
}

//! The span batch processor of the crate's OTLP/gRPC exporter. It does what the SDK's
//! `BatchSpanProcessor` does (a bounded queue, batches of at most
//! `OTEL_BSP_MAX_EXPORT_BATCH_SIZE` spans sent by a thread of its own, every
//! `OTEL_BSP_SCHEDULE_DELAY` or as soon as a batch is full, `otel.sdk.processor.span.processed`
//! with the same attributes), with one difference: a span is encoded when it ends, on the
//! thread that ends it, and only its bytes are queued.
//!
//! Why: the SDK moves each `SpanData` (~400 bytes) through its channel and its batch
//! vector (five copies), and the batch thread then reads, encodes and frees spans that
//! other threads wrote and allocated, cold in its cache; measured in the worker
//! (`DRAIN_COUNT=instructions`), those moves were ~1,100 instructions per message. Here a
//! span is encoded while its memory is warm and freed where it was allocated; the batch
//! thread only frames and sends bytes.
//!
//! What happens to a span: encoded and queued; dropped and counted
//! (`error.type="queue_full"`) when `OTEL_BSP_MAX_QUEUE_SIZE` spans are already waiting
//! (a dead or slow collector never blocks the service); dropped and counted
//! (`error.type="already_shutdown"`) after shutdown. A failed export is counted by the
//! exporter (`otel.sdk.exporter.span.exported`) and not retried, as in the SDK.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use opentelemetry::metrics::BoundCounter;
use opentelemetry::{Context, KeyValue, global};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::error::{OTelSdkError, OTelSdkResult};
use opentelemetry_sdk::trace::{Span, SpanData, SpanExporter as _, SpanProcessor};

use super::encode::{EncodedSpans, with_span_message};
use super::grpc::DirectGrpcSpanExporter;
use crate::settings::SpanBatch;

/// The batch thread's name (15 bytes: all of it shows in `/proc/<pid>/task/*/comm`).
pub(crate) const THREAD_NAME: &str = "otlp-span-batch";
/// How long `force_flush` waits for the batch thread (the SDK's 5 s).
const FLUSH_TIMEOUT: Duration = Duration::from_secs(5);

/// Encodes spans as they end and exports them in batches through a
/// [`DirectGrpcSpanExporter`] on a thread of its own.
#[derive(Debug)]
pub(crate) struct EncodingBatchProcessor {
    shared: Arc<Shared>,
    config: SpanBatch,
    thread: Mutex<Option<JoinHandle<()>>>,
    counts: ProcessedCounts,
    /// Spans dropped for a full queue: the first drop is logged, the rest only counted.
    dropped: Arc<AtomicUsize>,
}

#[derive(Debug)]
struct Shared {
    queue: Mutex<Queue>,
    /// Wakes the batch thread: a batch is full, a flush or shutdown is asked for.
    work: Condvar,
    /// Wakes callers of `force_flush` and `shutdown`: the thread has done what they asked.
    done: Condvar,
}

#[derive(Debug, Default)]
struct Queue {
    /// The batch spans are added to.
    filling: EncodedSpans,
    /// Batches of `max_export_batch_size` spans, waiting to be sent.
    full: VecDeque<EncodedSpans>,
    /// Spans in `filling` and `full`.
    queued: usize,
    /// Flushes asked for, how many of them the thread has done, and the outcome of the
    /// last one (or of the exports at shutdown).
    flushes_asked: u64,
    flushes_done: u64,
    flush_error: Option<String>,
    resource: Option<Resource>,
    shutdown: bool,
    stopped: bool,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Queue> {
        self.queue.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl EncodingBatchProcessor {
    /// Starts the batch thread; `exporter` is moved there.
    pub(crate) fn new(exporter: DirectGrpcSpanExporter, config: SpanBatch) -> Self {
        let shared = Arc::new(Shared { queue: Mutex::default(), work: Condvar::new(), done: Condvar::new() });
        let counts = ProcessedCounts::new();
        let thread = {
            let (shared, sent) = (Arc::clone(&shared), counts.ok.clone());
            std::thread::Builder::new()
                .name(THREAD_NAME.to_owned())
                .spawn(move || export_loop(&shared, exporter, config, &sent))
                .ok()
        };
        if thread.is_none() {
            tracing::error!("the span batch thread could not start: spans will be dropped and counted");
            shared.lock().shutdown = true;
        }
        Self { shared, config, thread: Mutex::new(thread), counts, dropped: Arc::default() }
    }

    /// The count of spans dropped for a full queue (benchmarks report it).
    pub(crate) fn dropped(&self) -> Arc<AtomicUsize> {
        Arc::clone(&self.dropped)
    }
}

impl SpanProcessor for EncodingBatchProcessor {
    fn on_start(&self, _span: &mut Span, _cx: &Context) {}

    fn on_end(&self, span: SpanData) {
        with_span_message(&span, |message| {
            let mut queue = self.shared.lock();
            if queue.shutdown {
                self.counts.after_shutdown.add(1);
            } else if queue.queued >= self.config.max_queue_size {
                drop(queue);
                self.counts.queue_full.add(1);
                if self.dropped.fetch_add(1, Ordering::Relaxed) == 0 {
                    tracing::warn!(
                        name: "BatchSpanProcessor.SpanDroppingStarted",
                        max_queue_size = self.config.max_queue_size,
                        "span queue full: dropping spans (counted in otel.sdk.processor.span.processed)"
                    );
                }
            } else {
                queue.filling.push_message(&span.instrumentation_scope, message);
                queue.queued += 1;
                if queue.filling.len() >= self.config.max_export_batch_size {
                    let next = queue.filling.empty_like();
                    let full = std::mem::replace(&mut queue.filling, next);
                    queue.full.push_back(full);
                    self.shared.work.notify_one();
                }
            }
        });
        // `span` is freed here, on the thread that allocated it.
    }

    fn force_flush(&self) -> OTelSdkResult {
        let mut queue = self.shared.lock();
        if queue.shutdown {
            return Err(OTelSdkError::AlreadyShutdown);
        }
        queue.flushes_asked += 1;
        let asked = queue.flushes_asked;
        self.shared.work.notify_one();
        let (queue, wait) = self
            .shared
            .done
            .wait_timeout_while(queue, FLUSH_TIMEOUT, |q| q.flushes_done < asked && !q.stopped)
            .unwrap_or_else(PoisonError::into_inner);
        if wait.timed_out() {
            return Err(OTelSdkError::Timeout(FLUSH_TIMEOUT));
        }
        match &queue.flush_error {
            Some(error) => Err(OTelSdkError::InternalFailure(error.clone())),
            None => Ok(()),
        }
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        let mut queue = self.shared.lock();
        if queue.shutdown {
            return Err(OTelSdkError::AlreadyShutdown);
        }
        queue.shutdown = true;
        self.shared.work.notify_one();
        let (queue, wait) =
            self.shared.done.wait_timeout_while(queue, timeout, |q| !q.stopped).unwrap_or_else(PoisonError::into_inner);
        let error = queue.flush_error.clone();
        drop(queue);
        if wait.timed_out() {
            return Err(OTelSdkError::Timeout(timeout));
        }
        if let Some(thread) = self.thread.lock().unwrap_or_else(PoisonError::into_inner).take() {
            let _ = thread.join();
        }
        error.map_or(Ok(()), |e| Err(OTelSdkError::InternalFailure(e)))
    }

    fn set_resource(&mut self, resource: &Resource) {
        self.shared.lock().resource = Some(resource.clone());
    }
}

/// The batch thread: sends each full batch, and everything queued when the schedule
/// delay has passed since the last export, a flush is asked for, or at shutdown.
fn export_loop(shared: &Shared, mut exporter: DirectGrpcSpanExporter, config: SpanBatch, sent: &BoundCounter<u64>) {
    // The export's own telemetry (tonic, h2) must not make spans or logs of its own.
    let _suppressed = Context::enter_telemetry_suppressed_scope();
    let mut deadline = Instant::now() + config.scheduled_delay;
    loop {
        let mut queue = shared.lock();
        while !queue.shutdown && queue.full.is_empty() && queue.flushes_done == queue.flushes_asked {
            let now = Instant::now();
            if now >= deadline {
                break;
            }
            queue = shared.work.wait_timeout(queue, deadline - now).unwrap_or_else(PoisonError::into_inner).0;
        }
        if let Some(resource) = queue.resource.take() {
            exporter.set_resource(&resource);
        }
        let flush_to = queue.flushes_asked;
        let everything = queue.shutdown || flush_to > queue.flushes_done || Instant::now() >= deadline;
        let take = if everything { queue.full.len() } else { queue.full.len().min(1) };
        let mut batches: Vec<EncodedSpans> = queue.full.drain(..take).collect();
        if everything && queue.filling.len() > 0 {
            let next = queue.filling.empty_like();
            batches.push(std::mem::replace(&mut queue.filling, next));
        }
        queue.queued -= batches.iter().map(EncodedSpans::len).sum::<usize>();
        let shutdown = queue.shutdown;
        drop(queue);

        let mut error = None;
        for batch in batches {
            // Counted as processed before the export, whatever its outcome (as the SDK).
            sent.add(batch.len() as u64);
            if let Err(e) = exporter.export_encoded(batch) {
                error = Some(e.to_string());
            }
        }
        deadline = Instant::now() + config.scheduled_delay;

        let mut queue = shared.lock();
        if flush_to > queue.flushes_done || shutdown {
            queue.flushes_done = flush_to;
            queue.flush_error = error;
        }
        if shutdown {
            drop(queue);
            let _ = exporter.shutdown();
            shared.lock().stopped = true;
            shared.done.notify_all();
            return;
        }
        drop(queue);
        shared.done.notify_all();
    }
}

/// `otel.sdk.processor.span.processed`, as the SDK's batch processor records it.
#[derive(Debug)]
struct ProcessedCounts {
    ok: BoundCounter<u64>,
    queue_full: BoundCounter<u64>,
    after_shutdown: BoundCounter<u64>,
}

impl ProcessedCounts {
    fn new() -> Self {
        static INSTANCES: AtomicUsize = AtomicUsize::new(0);
        let name = format!("batching_span_processor/{}", INSTANCES.fetch_add(1, Ordering::Relaxed));
        let counter = global::meter("otel.sdk")
            .u64_counter("otel.sdk.processor.span.processed")
            .with_description("The number of spans for which the processing has finished, either successful or failed.")
            .with_unit("{span}")
            .build();
        let component = [
            KeyValue::new("otel.component.type", "batching_span_processor"),
            KeyValue::new("otel.component.name", name),
        ];
        let failed = |error_type: &'static str| {
            let mut attributes = vec![KeyValue::new("error.type", error_type)];
            attributes.extend(component.iter().cloned());
            counter.bind(&attributes)
        };
        Self {
            ok: counter.bind(&component),
            queue_full: failed("queue_full"),
            after_shutdown: failed("already_shutdown"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sdk_health::ExportCounts;
    use opentelemetry::trace::{Span as _, Tracer as _, TracerProvider as _};
    use opentelemetry_sdk::trace::SdkTracerProvider;
    use test_harness::OtlpReceiver;

    fn exporter(endpoint: &str) -> DirectGrpcSpanExporter {
        let counts = ExportCounts::new("span", "otlp_grpc_span_exporter");
        DirectGrpcSpanExporter::new(endpoint, Duration::from_secs(1), counts).expect("exporter")
    }

    fn config(max_queue_size: usize, max_export_batch_size: usize, delay_ms: u64) -> SpanBatch {
        SpanBatch { max_queue_size, max_export_batch_size, scheduled_delay: Duration::from_millis(delay_ms) }
    }

    fn provider(processor: EncodingBatchProcessor) -> SdkTracerProvider {
        let resource = Resource::builder().with_service_name("batch-test").build();
        SdkTracerProvider::builder().with_resource(resource).with_span_processor(processor).build()
    }

    /// Ends `count` spans named `{prefix} {i}` on each of `threads` threads.
    fn end_spans(provider: &SdkTracerProvider, threads: usize, count: usize, prefix: &str) {
        std::thread::scope(|scope| {
            for t in 0..threads {
                let tracer = provider.tracer(if t % 2 == 0 { "even" } else { "odd" });
                scope.spawn(move || {
                    for i in 0..count {
                        tracer.start(format!("{prefix} {t}-{i}")).end();
                    }
                });
            }
        });
    }

    fn wait_for(receiver: &OtlpReceiver, spans: usize) -> test_harness::otlp::Captured {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let captured = receiver.captured();
            if captured.spans.len() >= spans || Instant::now() > deadline {
                return captured;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn full_batches_are_sent_without_waiting_for_the_delay_span_for_span() {
        let receiver = OtlpReceiver::start().await.expect("receiver");
        let provider =
            provider(EncodingBatchProcessor::new(exporter(&receiver.grpc_endpoint()), config(1000, 10, 60_000)));
        let captured = tokio::task::spawn_blocking(move || {
            end_spans(&provider, 3, 20, "full");
            let captured = wait_for(&receiver, 60);
            drop(provider);
            captured
        })
        .await
        .expect("threads");
        assert_eq!(captured.spans.len(), 60, "every span, without a flush, long before the 60 s delay");
        assert_eq!(captured.grpc_requests, 6, "batches of 10");
        let mut names: Vec<&str> = captured.spans.iter().map(|s| s.name.as_str()).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), 60, "each span once");
        assert!(captured.spans.iter().all(|s| s.service_name == "batch-test"));
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn a_flush_and_the_delay_send_a_partial_batch_and_shutdown_the_rest() {
        let receiver = OtlpReceiver::start().await.expect("receiver");
        let endpoint = receiver.grpc_endpoint();
        let (flushed, after_delay, at_shutdown) = tokio::task::spawn_blocking(move || {
            let flushing = provider(EncodingBatchProcessor::new(exporter(&endpoint), config(1000, 100, 60_000)));
            end_spans(&flushing, 1, 3, "flushed");
            flushing.force_flush().expect("flushed");
            let flushed = receiver.captured().spans.len();
            let delayed = provider(EncodingBatchProcessor::new(exporter(&endpoint), config(1000, 100, 200)));
            end_spans(&delayed, 1, 2, "delayed");
            let after_delay = wait_for(&receiver, 5).spans.len();
            end_spans(&flushing, 2, 4, "at shutdown");
            flushing.shutdown().expect("shut down");
            (flushed, after_delay, receiver.captured().spans.len())
        })
        .await
        .expect("threads");
        assert_eq!(flushed, 3, "force_flush returns once the partial batch is sent");
        assert_eq!(after_delay, 5, "the schedule delay sends a partial batch");
        assert_eq!(at_shutdown, 13, "shutdown sends what is queued");
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn a_full_queue_drops_and_counts_and_nothing_is_queued_after_shutdown() {
        // A collector that takes the connection and never answers: each export waits for
        // its 1 s timeout and fails, as with a hung collector.
        let hung = std::net::TcpListener::bind("127.0.0.1:0").expect("listener");
        let endpoint = format!("http://{}", hung.local_addr().expect("address"));
        let processor = Arc::new(EncodingBatchProcessor::new(exporter(&endpoint), config(5, 5, 60_000)));
        let resource = Resource::builder().with_service_name("batch-test").build();
        let provider = SdkTracerProvider::builder()
            .with_resource(resource)
            .with_span_processor(SharedProcessor(Arc::clone(&processor)))
            .build();
        let tracer = provider.tracer("drop-test");
        // The thread takes the first full batch (or not yet); the queue holds 5 more at most.
        for i in 0..20 {
            tracer.start(format!("span {i}")).end();
        }
        let dropped = processor.dropped.load(Ordering::Relaxed);
        assert!((10..=15).contains(&dropped), "20 spans, a queue of 5, one batch of 5 taken: {dropped} dropped");
        // Its outcome is the last export's, which the hung collector fails or which had
        // nothing left to send: either way it returns, after the 1 s timeouts.
        let _ = tokio::task::spawn_blocking(move || provider.shutdown()).await.expect("thread");
        assert_eq!(processor.shared.lock().queued, 0, "shutdown took what was queued");
        processor.on_end(finished_span());
        assert_eq!(processor.shared.lock().queued, 0, "a span after shutdown is counted, not queued");
        assert!(matches!(processor.force_flush(), Err(OTelSdkError::AlreadyShutdown)));
    }

    /// The processor behind an `Arc`, so a test can look at it inside a provider.
    #[derive(Debug)]
    struct SharedProcessor(Arc<EncodingBatchProcessor>);

    impl SpanProcessor for SharedProcessor {
        fn on_start(&self, span: &mut Span, cx: &Context) {
            self.0.on_start(span, cx);
        }
        fn on_end(&self, span: SpanData) {
            self.0.on_end(span);
        }
        fn force_flush(&self) -> OTelSdkResult {
            self.0.force_flush()
        }
        fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
            self.0.shutdown_with_timeout(timeout)
        }
    }

    fn finished_span() -> SpanData {
        let memory = opentelemetry_sdk::trace::InMemorySpanExporter::default();
        let provider = SdkTracerProvider::builder().with_simple_exporter(memory.clone()).build();
        provider.tracer("late").start("late").end();
        memory.get_finished_spans().expect("spans").remove(0)
    }
}

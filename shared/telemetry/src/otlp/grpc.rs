//! The OTLP/gRPC span exporter this crate uses when the settings are plain (see
//! `settings::SpanExport`): a batch of spans encoded as they ended (`super::batch`,
//! [`super::encode`]: no intermediate message structs) is sent as one unary
//! `TraceService/Export` call, as opentelemetry-otlp's exporter would (one
//! attempt, the same endpoint and timeout). Failures are counted by their gRPC status
//! code. Measured in `benches/per_message.rs`: the encoding costs a sixth of the
//! official path's.
//!
//! The call is made on the channel itself, not through tonic's codec: the gRPC message
//! frame (a flag byte, the length, the message) is the HTTP/2 body as it is, the small
//! pieces the encoder writes around each scope's spans and the spans' buffers themselves,
//! sent one after the other (`Chunks`), none copied into another. tonic's codec would
//! copy every encoded batch into its own buffer first (a tenth of the export thread's
//! time, measured with perf). The
//! answer is read as tonic reads a unary answer: `grpc-status` in the headers
//! (trailers-only) or the trailers, else the HTTP status mapped as gRPC specifies.
//!
//! The call runs on a runtime of the exporter's own, driven by the thread that exports
//! (the span batch thread), not on the service's runtime: a batch's HTTP/2 framing
//! and socket writes do not take the worker threads that process messages, and no
//! wake-up crosses threads between encoding and sending (`spans+grpc` in the bench).

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::BodyExt as _;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::error::{OTelSdkError, OTelSdkResult};
use opentelemetry_sdk::trace::{SpanData, SpanExporter};
use tonic::codegen::http::{self, HeaderMap, HeaderValue, StatusCode, header};
use tonic::transport::{Channel, Endpoint};
use tonic::{Code, Status};
use tower::ServiceExt as _;

use super::encode::{EncodedSpans, TraceRequestEncoder};
use crate::sdk_health::{ExportCounts, grpc_error_type};

const EXPORT_PATH: &str = "/opentelemetry.proto.collector.trace.v1.TraceService/Export";

/// Sends pre-encoded OTLP trace requests over gRPC.
#[derive(Debug, Clone)]
pub struct DirectGrpcSpanExporter {
    channel: Channel,
    runtime: Arc<OwnRuntime>,
    encoder: TraceRequestEncoder,
    timeout: Duration,
    counts: ExportCounts,
}

/// The exporter's current-thread runtime: the channel's connection task lives there and
/// runs while an export waits on it. Shut down without waiting when the exporter goes
/// (dropping a runtime blocks, which a Tokio context forbids).
#[derive(Debug)]
struct OwnRuntime(Option<tokio::runtime::Runtime>);

impl Drop for OwnRuntime {
    fn drop(&mut self) {
        if let Some(runtime) = self.0.take() {
            runtime.shutdown_background();
        }
    }
}

impl DirectGrpcSpanExporter {
    /// An exporter to `endpoint` (an `http://` URL), with its own runtime.
    pub(crate) fn new(endpoint: &str, timeout: Duration, counts: ExportCounts) -> Result<Self, String> {
        let endpoint = Endpoint::from_shared(endpoint.to_owned())
            .map_err(|e| format!("invalid OTLP endpoint {endpoint:?}: {e}"))?;
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| format!("the span exporter's runtime: {e}"))?;
        let channel = {
            let _entered = runtime.enter();
            endpoint.timeout(timeout).connect_lazy()
        };
        let runtime = Arc::new(OwnRuntime(Some(runtime)));
        Ok(Self { channel, runtime, encoder: TraceRequestEncoder::default(), timeout, counts })
    }

    /// Sends `frame` (a gRPC message frame) on the exporter's runtime, blocking the
    /// calling thread (the span batch thread, which waits for each export anyway).
    fn send_blocking(&self, frame: Chunks) -> Result<(), Status> {
        match &self.runtime.0 {
            Some(runtime) => runtime.block_on(self.send(frame)),
            None => Err(Status::unavailable("the span exporter was shut down")),
        }
    }

    async fn send(&self, frame: Chunks) -> Result<(), Status> {
        let request = http::Request::builder()
            .method(http::Method::POST)
            .uri(EXPORT_PATH)
            .version(http::Version::HTTP_2)
            .header(header::CONTENT_TYPE, HeaderValue::from_static("application/grpc"))
            .header(header::TE, HeaderValue::from_static("trailers"))
            .header("grpc-timeout", grpc_timeout(self.timeout))
            .body(tonic::body::Body::new(frame))
            .map_err(|e| Status::internal(e.to_string()))?;
        // The channel's own timeout (the endpoint's) bounds the whole call, as in tonic.
        let response = self.channel.clone().oneshot(request).await.map_err(|e| Status::from_error(e.into()))?;
        let (parts, body) = response.into_parts();
        if let Some(status) = Status::from_header_map(&parts.headers) {
            return ok_or(status); // trailers-only: the call ended in its headers
        }
        let trailers = body.collect().await?.trailers().cloned();
        answer(trailers.as_ref(), parts.status)
    }
}

/// A gRPC message frame's header: no compression (flag 0), then the message's length
/// (big-endian u32). gRPC messages are far below 4 GiB (the collector refuses more than
/// 4 MiB); one that somehow was not is sent with a length the receiver refuses, never
/// truncated.
fn frame_header(len: usize) -> [u8; 5] {
    let [a, b, c, d] = u32::try_from(len).unwrap_or(u32::MAX).to_be_bytes();
    [0, a, b, c, d]
}

/// A request body of several chunks, sent one after the other as they are.
#[derive(Debug)]
struct Chunks {
    chunks: std::collections::VecDeque<Bytes>,
    remaining: u64,
}

impl Chunks {
    fn new(chunks: Vec<Bytes>) -> Self {
        let remaining = chunks.iter().map(|chunk| chunk.len() as u64).sum();
        Self { chunks: chunks.into(), remaining }
    }
}

impl http_body::Body for Chunks {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Bytes>, Self::Error>>> {
        let chunk = self.chunks.pop_front();
        self.remaining -= chunk.as_ref().map_or(0, |chunk| chunk.len() as u64);
        std::task::Poll::Ready(chunk.map(|chunk| Ok(http_body::Frame::data(chunk))))
    }

    fn is_end_stream(&self) -> bool {
        self.chunks.is_empty()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        http_body::SizeHint::with_exact(self.remaining)
    }
}

/// The `grpc-timeout` header: at most 8 digits, in milliseconds (or hours past that).
fn grpc_timeout(timeout: Duration) -> HeaderValue {
    let millis = timeout.as_millis();
    let value = if millis < 100_000_000 { format!("{millis}m") } else { format!("{}H", timeout.as_secs() / 3600) };
    HeaderValue::from_str(&value).unwrap_or_else(|_| HeaderValue::from_static("10000m"))
}

fn ok_or(status: Status) -> Result<(), Status> {
    if status.code() == Code::Ok { Ok(()) } else { Err(status) }
}

/// The call's outcome from its trailers, or from the HTTP status when they hold no
/// `grpc-status` (the mapping of gRPC's http-grpc-status-mapping.md, as tonic does).
fn answer(trailers: Option<&HeaderMap>, http_status: StatusCode) -> Result<(), Status> {
    if let Some(status) = trailers.and_then(Status::from_header_map) {
        return ok_or(status);
    }
    let code = match http_status {
        StatusCode::BAD_REQUEST => Code::Internal,
        StatusCode::UNAUTHORIZED => Code::Unauthenticated,
        StatusCode::FORBIDDEN => Code::PermissionDenied,
        StatusCode::NOT_FOUND => Code::Unimplemented,
        StatusCode::TOO_MANY_REQUESTS
        | StatusCode::BAD_GATEWAY
        | StatusCode::SERVICE_UNAVAILABLE
        | StatusCode::GATEWAY_TIMEOUT => Code::Unavailable,
        _ => Code::Unknown,
    };
    Err(Status::new(code, format!("no grpc-status in the answer (HTTP {http_status})")))
}

impl DirectGrpcSpanExporter {
    /// Sends `spans` (encoded as they ended, `otlp::batch`) as one request, blocking the
    /// calling thread; counted like [`SpanExporter::export`]. The spans' buffers become
    /// the request's body as they are (`Chunks`).
    pub(crate) fn export_encoded(&self, spans: EncodedSpans) -> OTelSdkResult {
        let items = spans.len();
        let chunks = self.encoder.encode_spans_chunks(spans, |len| frame_header(len).to_vec());
        self.send_counted(items, Chunks::new(chunks))
    }

    /// Sends `body` and counts its `items` by the outcome.
    fn send_counted(&self, items: usize, body: Chunks) -> OTelSdkResult {
        let sent = self.send_blocking(body);
        self.counts.record(items, sent.as_ref().map(|_| ()).map_err(|status| grpc_error_type(status.code())));
        sent.map_err(|status| {
            OTelSdkError::InternalFailure(format!(
                "export error: Status {{ code: {:?}, message: {:?} }}",
                status.code(),
                status.message()
            ))
        })
    }
}

impl SpanExporter for DirectGrpcSpanExporter {
    async fn export(&self, batch: Vec<SpanData>) -> OTelSdkResult {
        let mut frame = vec![0_u8; 5];
        let len = self.encoder.encode_into(&batch, &mut frame);
        frame[..5].copy_from_slice(&frame_header(len));
        self.send_counted(batch.len(), Chunks::new(vec![Bytes::from(frame)]))
    }

    fn set_resource(&mut self, resource: &Resource) {
        self.encoder = TraceRequestEncoder::new(resource);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry::trace::{Span as _, Tracer as _, TracerProvider as _};
    use opentelemetry_sdk::trace::{InMemorySpanExporter, SdkTracerProvider};
    use test_harness::OtlpReceiver;

    fn counts() -> ExportCounts {
        ExportCounts::new("span", "otlp_grpc_span_exporter")
    }

    /// Two finished spans of `service`, as the SDK hands them to an exporter.
    fn batch(service: &str) -> (Resource, Vec<SpanData>) {
        let resource = Resource::builder().with_service_name(service.to_owned()).build();
        let memory = InMemorySpanExporter::default();
        let provider = SdkTracerProvider::builder().with_simple_exporter(memory.clone()).build();
        let tracer = provider.tracer("grpc-test");
        tracer.start("process chat.msg.*.*").end();
        tracer.start("INSERT chat.messages").end();
        (resource, memory.get_finished_spans().expect("spans"))
    }

    /// Exports on a thread of its own, as the SDK's span batch thread does (the exporter
    /// blocks on its own runtime, which a Tokio test thread must not).
    async fn export(mut exporter: DirectGrpcSpanExporter, resource: Resource, spans: Vec<SpanData>) -> OTelSdkResult {
        exporter.set_resource(&resource);
        tokio::task::spawn_blocking(move || futures::executor::block_on(exporter.export(spans)))
            .await
            .expect("export thread")
    }

    #[tokio::test]
    async fn an_endpoint_that_is_not_a_url_is_refused_with_its_value() {
        let error = DirectGrpcSpanExporter::new("http://bad host:4317", Duration::from_secs(1), counts());
        assert!(error.expect_err("not a URL").contains("http://bad host:4317"));
        assert!(DirectGrpcSpanExporter::new("http://collector:4317", Duration::from_secs(1), counts()).is_ok());
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn a_batch_reaches_a_real_otlp_receiver_span_for_span() {
        let receiver = OtlpReceiver::start().await.expect("receiver");
        let exporter =
            DirectGrpcSpanExporter::new(&receiver.grpc_endpoint(), Duration::from_secs(5), counts()).expect("exporter");
        let (resource, spans) = batch("grpc-exporter-test");
        let ids: Vec<String> = spans.iter().map(|s| s.span_context.span_id().to_string()).collect();
        export(exporter.clone(), resource.clone(), spans).await.expect("exported");
        let (resource, more) = batch("grpc-exporter-test");
        export(exporter, resource, more).await.expect("a second batch on the same connection");

        let captured = receiver.captured();
        assert_eq!(captured.grpc_requests, 2, "one Export call per batch");
        assert_eq!(captured.spans.len(), 4, "{:?}", captured.spans);
        let first: Vec<&str> = captured.spans[..2].iter().map(|s| s.span_id.as_str()).collect();
        assert_eq!(first, ids, "the batch's spans, in order");
        assert!(captured.spans.iter().all(|s| s.service_name == "grpc-exporter-test"));
        assert_eq!(captured.spans[1].name, "INSERT chat.messages");
    }

    #[tokio::test]
    async fn a_collector_that_is_not_there_is_unavailable() {
        let endpoint = format!("http://127.0.0.1:{}", test_harness::free_port());
        let exporter = DirectGrpcSpanExporter::new(&endpoint, Duration::from_secs(2), counts()).expect("exporter");
        let (resource, spans) = batch("grpc-exporter-test");
        let error = export(exporter, resource, spans).await.expect_err("nothing listens");
        assert!(error.to_string().contains("Unavailable"), "{error}");
    }

    #[test]
    fn a_frame_is_the_flag_the_length_and_the_encoded_request() {
        let (resource, spans) = batch("grpc-exporter-test");
        let encoder = TraceRequestEncoder::new(&resource);
        let encoded = encoder.encode(&spans);
        let chunks = encoder.encode_spans_chunks(EncodedSpans::of(&spans), |len| frame_header(len).to_vec());
        let body = Chunks::new(chunks);
        assert_eq!(http_body::Body::size_hint(&body).exact(), Some(5 + encoded.len() as u64));
        let frame: Vec<u8> = body.chunks.iter().flat_map(|chunk| chunk.iter().copied()).collect();
        assert_eq!(frame[0], 0, "not compressed");
        assert_eq!(u32::from_be_bytes([frame[1], frame[2], frame[3], frame[4]]) as usize, encoded.len());
        assert_eq!(&frame[5..], encoded.as_slice());
    }

    #[test]
    fn the_answer_is_its_grpc_status_else_its_http_status_mapped() {
        let mut trailers = HeaderMap::new();
        trailers.insert("grpc-status", HeaderValue::from_static("0"));
        assert!(answer(Some(&trailers), StatusCode::OK).is_ok());
        trailers.insert("grpc-status", HeaderValue::from_static("8"));
        trailers.insert("grpc-message", HeaderValue::from_static("too many spans"));
        let refused = answer(Some(&trailers), StatusCode::OK).expect_err("resource exhausted");
        assert_eq!((refused.code(), refused.message()), (Code::ResourceExhausted, "too many spans"));
        for (http, code) in [
            (StatusCode::OK, Code::Unknown),
            (StatusCode::BAD_REQUEST, Code::Internal),
            (StatusCode::UNAUTHORIZED, Code::Unauthenticated),
            (StatusCode::NOT_FOUND, Code::Unimplemented),
            (StatusCode::SERVICE_UNAVAILABLE, Code::Unavailable),
            (StatusCode::INTERNAL_SERVER_ERROR, Code::Unknown),
        ] {
            assert_eq!(answer(None, http).expect_err("no grpc-status").code(), code, "HTTP {http}");
        }
    }

    #[test]
    fn the_grpc_timeout_header_has_at_most_eight_digits() {
        assert_eq!(grpc_timeout(Duration::from_secs(10)), "10000m");
        assert_eq!(grpc_timeout(Duration::from_millis(1500)), "1500m");
        assert_eq!(grpc_timeout(Duration::from_secs(200_000)), "55H");
    }
}

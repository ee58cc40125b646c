//! The OTLP/gRPC span exporter this crate uses when the settings are plain (see
//! `settings::SpanExport`): the batch is encoded by [`super::encode`] (straight from
//! the SDK's span data, no copy of the batch, no intermediate message structs) and sent as
//! one unary `TraceService/Export` call, as opentelemetry-otlp's exporter would (one
//! attempt, the same endpoint and timeout). Failures are counted by their gRPC status
//! code. Measured in `benches/per_message.rs`: the encoding costs a sixth of the
//! official path's.
//!
//! The call runs on a runtime of the exporter's own, driven by the thread that exports
//! (the SDK's span batch thread), not on the service's runtime: a batch's HTTP/2 framing
//! and socket writes do not take the worker threads that process messages, and no
//! wake-up crosses threads between encoding and sending (`spans+grpc` in the bench).

use std::sync::Arc;
use std::time::Duration;

use bytes::{Buf as _, BufMut as _};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::error::{OTelSdkError, OTelSdkResult};
use opentelemetry_sdk::trace::{SpanData, SpanExporter};
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::codegen::http::uri::PathAndQuery;
use tonic::transport::{Channel, Endpoint};

use super::encode::TraceRequestEncoder;
use crate::sdk_health::{ExportCounts, grpc_error_type};

const EXPORT_PATH: &str = "/opentelemetry.proto.collector.trace.v1.TraceService/Export";

/// Sends pre-encoded OTLP trace requests over gRPC.
#[derive(Debug, Clone)]
pub struct DirectGrpcSpanExporter {
    grpc: tonic::client::Grpc<Channel>,
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
        let grpc = {
            let _entered = runtime.enter();
            tonic::client::Grpc::new(endpoint.timeout(timeout).connect_lazy())
        };
        let runtime = Arc::new(OwnRuntime(Some(runtime)));
        Ok(Self { grpc, runtime, encoder: TraceRequestEncoder::default(), timeout, counts })
    }

    /// Sends `body` on the exporter's runtime, blocking the calling thread (the SDK's
    /// span batch thread, which waits for each export anyway).
    fn send_blocking(&self, body: Vec<u8>) -> Result<(), tonic::Status> {
        match &self.runtime.0 {
            Some(runtime) => runtime.block_on(self.send(body)),
            None => Err(tonic::Status::unavailable("the span exporter was shut down")),
        }
    }

    async fn send(&self, body: Vec<u8>) -> Result<(), tonic::Status> {
        let mut grpc = self.grpc.clone();
        let mut request = tonic::Request::new(body);
        request.set_timeout(self.timeout);
        grpc.ready().await.map_err(|e| tonic::Status::unavailable(e.to_string()))?;
        grpc.unary::<Vec<u8>, (), RawCodec>(request, PathAndQuery::from_static(EXPORT_PATH), RawCodec).await?;
        Ok(())
    }
}

impl SpanExporter for DirectGrpcSpanExporter {
    async fn export(&self, batch: Vec<SpanData>) -> OTelSdkResult {
        let items = batch.len();
        let body = self.encoder.encode(&batch);
        drop(batch);
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

    fn set_resource(&mut self, resource: &Resource) {
        self.encoder = TraceRequestEncoder::new(resource);
    }
}

/// Sends bytes as they are; ignores the answer (`ExportTraceServiceResponse`, whose
/// partial-success counts opentelemetry-otlp does not act on either).
#[derive(Debug, Clone, Copy, Default)]
struct RawCodec;

impl Codec for RawCodec {
    type Encode = Vec<u8>;
    type Decode = ();
    type Encoder = Self;
    type Decoder = Self;

    fn encoder(&mut self) -> Self::Encoder {
        Self
    }

    fn decoder(&mut self) -> Self::Decoder {
        Self
    }
}

impl Encoder for RawCodec {
    type Item = Vec<u8>;
    type Error = tonic::Status;

    fn encode(&mut self, item: Vec<u8>, dst: &mut EncodeBuf<'_>) -> Result<(), Self::Error> {
        dst.put_slice(&item);
        Ok(())
    }
}

impl Decoder for RawCodec {
    type Item = ();
    type Error = tonic::Status;

    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<()>, Self::Error> {
        src.advance(src.remaining());
        Ok(Some(()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn an_endpoint_that_is_not_a_url_is_refused_with_its_value() {
        let counts = ExportCounts::new("span", "otlp_grpc_span_exporter");
        let error = DirectGrpcSpanExporter::new("http://bad host:4317", Duration::from_secs(1), counts.clone());
        assert!(error.expect_err("not a URL").contains("http://bad host:4317"));
        assert!(DirectGrpcSpanExporter::new("http://collector:4317", Duration::from_secs(1), counts).is_ok());
    }
}

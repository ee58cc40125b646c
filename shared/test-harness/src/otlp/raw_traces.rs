//! The OTLP/gRPC trace service, taking each request's `ResourceSpans` as undecoded bytes
//! ([`RawTraceRequest`]), decoded when something reads them (`Store::read`). Decoding
//! every span as it arrived (opentelemetry-proto's `TraceServiceServer`: a `String` per
//! attribute key and value) cost the drain bench ~3 µs of CPU per traced message, on the
//! cores the persist worker runs on.

use std::convert::Infallible;
use std::future::{Ready, ready};
use std::sync::Arc;

use bytes::Bytes;
use opentelemetry_proto::tonic::collector::trace::v1::{ExportTraceServiceRequest, ExportTraceServiceResponse};
use opentelemetry_proto::tonic::trace::v1::ResourceSpans;
use prost::Message as _;
use tonic::codec::CompressionEncoding;
use tonic::codegen::{Body, BoxFuture, Service, StdError, http};
use tonic::server::{NamedService, UnaryService};
use tonic::{Request, Response, Status};
use tonic_prost::ProstCodec;

use super::Store;

const EXPORT_PATH: &str = "/opentelemetry.proto.collector.trace.v1.TraceService/Export";

/// An `ExportTraceServiceRequest` with each `ResourceSpans` kept as its bytes.
#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct RawTraceRequest {
    /// `ExportTraceServiceRequest.resource_spans` (field 1), undecoded.
    #[prost(bytes = "bytes", repeated, tag = "1")]
    pub(crate) resource_spans: Vec<Bytes>,
}

impl RawTraceRequest {
    /// The request decoded whole. A test reading spans that the receiver cannot decode
    /// fails there, with the reason.
    pub(crate) fn decode_whole(&self) -> ExportTraceServiceRequest {
        let resource_spans = self
            .resource_spans
            .iter()
            .map(|bytes| ResourceSpans::decode(bytes.as_ref()))
            .collect::<Result<_, _>>()
            .unwrap_or_else(|e| panic!("a span export request the receiver cannot decode: {e}"));
        ExportTraceServiceRequest { resource_spans }
    }
}

/// `TraceService` as opentelemetry-proto generates it, but taking [`RawTraceRequest`]s.
#[derive(Debug, Clone)]
pub(super) struct RawTraceServer(pub(super) Arc<Store>);

impl NamedService for RawTraceServer {
    const NAME: &'static str = "opentelemetry.proto.collector.trace.v1.TraceService";
}

impl<B> Service<http::Request<B>> for RawTraceServer
where
    B: Body + Send + 'static,
    B::Error: Into<StdError> + Send + 'static,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = Infallible;
    type Future = BoxFuture<Self::Response, Self::Error>;

    fn poll_ready(&mut self, _cx: &mut std::task::Context<'_>) -> std::task::Poll<Result<(), Self::Error>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        if request.uri().path() != EXPORT_PATH {
            return Box::pin(async { Ok(Status::unimplemented("only TraceService/Export").into_http()) });
        }
        let export = Export(Arc::clone(&self.0));
        Box::pin(async move {
            let codec = ProstCodec::<ExportTraceServiceResponse, RawTraceRequest>::default();
            let mut grpc = tonic::server::Grpc::new(codec).accept_compressed(CompressionEncoding::Gzip);
            Ok(grpc.unary(export, request).await)
        })
    }
}

struct Export(Arc<Store>);

impl UnaryService<RawTraceRequest> for Export {
    type Response = ExportTraceServiceResponse;
    type Future = Ready<Result<Response<Self::Response>, Status>>;

    fn call(&mut self, request: Request<RawTraceRequest>) -> Self::Future {
        self.0.add_traces(request.into_inner(), |c| c.grpc_requests += 1);
        ready(Ok(Response::new(ExportTraceServiceResponse::default())))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry_proto::tonic::resource::v1::Resource;

    #[test]
    fn a_request_kept_raw_decodes_to_the_request_sent() {
        let sent = ExportTraceServiceRequest {
            resource_spans: vec![
                ResourceSpans { resource: Some(Resource::default()), schema_url: "a".into(), ..Default::default() },
                ResourceSpans { schema_url: "b".into(), ..Default::default() },
            ],
        };
        let raw = RawTraceRequest::decode(sent.encode_to_vec().as_slice()).expect("the outer message");
        assert_eq!(raw.resource_spans.len(), 2);
        assert_eq!(raw.decode_whole(), sent);
    }
}

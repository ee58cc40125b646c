//! The OTLP/gRPC (tonic) and OTLP/HTTP (axum) servers feeding the [`Store`] (span
//! requests are kept with their spans undecoded, `raw_traces`, decoded when read). Both take gzip-compressed requests too
//! (the collector's exporters compress by default).

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::post;
use opentelemetry_proto::tonic::collector::logs::v1::logs_service_server::{LogsService, LogsServiceServer};
use opentelemetry_proto::tonic::collector::logs::v1::{ExportLogsServiceRequest, ExportLogsServiceResponse};
use opentelemetry_proto::tonic::collector::metrics::v1::metrics_service_server::{
    MetricsService, MetricsServiceServer,
};
use opentelemetry_proto::tonic::collector::metrics::v1::{ExportMetricsServiceRequest, ExportMetricsServiceResponse};
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceResponse;
use prost::Message as _;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tonic::codec::CompressionEncoding;
use tonic::{Request, Response, Status};

use super::Store;
use super::raw_traces::{RawTraceRequest, RawTraceServer};
use crate::HarnessResult;

#[derive(Debug, Clone)]
struct Grpc(Arc<Store>);

#[tonic::async_trait]
impl LogsService for Grpc {
    async fn export(
        &self,
        r: Request<ExportLogsServiceRequest>,
    ) -> Result<Response<ExportLogsServiceResponse>, Status> {
        self.0.add_logs(r.get_ref(), |c| c.grpc_requests += 1);
        Ok(Response::new(ExportLogsServiceResponse::default()))
    }
}

#[tonic::async_trait]
impl MetricsService for Grpc {
    async fn export(
        &self,
        r: Request<ExportMetricsServiceRequest>,
    ) -> Result<Response<ExportMetricsServiceResponse>, Status> {
        self.0.add_metrics(r.get_ref(), |c| c.grpc_requests += 1);
        Ok(Response::new(ExportMetricsServiceResponse::default()))
    }
}

async fn bind() -> HarnessResult<(u16, TcpListener)> {
    let listener = TcpListener::bind("127.0.0.1:0").await.map_err(|e| format!("bind OTLP receiver: {e}"))?;
    let port = listener.local_addr().map_err(|e| e.to_string())?.port();
    Ok((port, listener))
}

pub(super) async fn grpc(store: Arc<Store>) -> HarnessResult<(u16, JoinHandle<()>)> {
    let (port, listener) = bind().await?;
    let svc = Grpc(Arc::clone(&store));
    let server = tonic::transport::Server::builder()
        .add_service(RawTraceServer(store))
        .add_service(LogsServiceServer::new(svc.clone()).accept_compressed(CompressionEncoding::Gzip))
        .add_service(MetricsServiceServer::new(svc).accept_compressed(CompressionEncoding::Gzip))
        .serve_with_incoming(tonic::transport::server::TcpIncoming::from(listener));
    let task = tokio::spawn(async move {
        if let Err(e) = server.await {
            eprintln!("OTLP gRPC receiver stopped: {e}");
        }
    });
    Ok((port, task))
}

pub(super) async fn http(store: Arc<Store>) -> HarnessResult<(u16, JoinHandle<()>)> {
    let (port, listener) = bind().await?;
    let app = axum::Router::new()
        .route("/v1/traces", post(traces))
        .route("/v1/logs", post(logs))
        .route("/v1/metrics", post(metrics))
        .with_state(store);
    let task = tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            eprintln!("OTLP HTTP receiver stopped: {e}");
        }
    });
    Ok((port, task))
}

fn protobuf(body: Vec<u8>) -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "application/x-protobuf")], body)
}

/// The export request of an OTLP/HTTP body, gunzipped first when `Content-Encoding: gzip`.
fn request<T: prost::Message + Default>(headers: &HeaderMap, body: &Bytes) -> Result<T, StatusCode> {
    let gzip = headers.get(header::CONTENT_ENCODING).is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"gzip"));
    let decoded = if gzip {
        let mut out = Vec::new();
        std::io::Read::read_to_end(&mut flate2::read::GzDecoder::new(&body[..]), &mut out)
            .map_err(|_| StatusCode::BAD_REQUEST)?;
        T::decode(&out[..])
    } else {
        T::decode(&body[..])
    };
    decoded.map_err(|_| StatusCode::BAD_REQUEST)
}

async fn traces(
    State(store): State<Arc<Store>>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<impl IntoResponse, StatusCode> {
    let request: RawTraceRequest = request(&headers, &body)?;
    store.add_traces(request, |c| c.http_requests += 1);
    Ok(protobuf(ExportTraceServiceResponse::default().encode_to_vec()))
}

async fn logs(
    State(store): State<Arc<Store>>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<impl IntoResponse, StatusCode> {
    let request: ExportLogsServiceRequest = request(&headers, &body)?;
    store.add_logs(&request, |c| c.http_requests += 1);
    Ok(protobuf(ExportLogsServiceResponse::default().encode_to_vec()))
}

async fn metrics(
    State(store): State<Arc<Store>>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<impl IntoResponse, StatusCode> {
    let request: ExportMetricsServiceRequest = request(&headers, &body)?;
    store.add_metrics(&request, |c| c.http_requests += 1);
    Ok(protobuf(ExportMetricsServiceResponse::default().encode_to_vec()))
}

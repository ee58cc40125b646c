//! The OTLP/gRPC (tonic) and OTLP/HTTP (axum) servers feeding the [`Store`].

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::post;
use opentelemetry_proto::tonic::collector::logs::v1::logs_service_server::{LogsService, LogsServiceServer};
use opentelemetry_proto::tonic::collector::logs::v1::{ExportLogsServiceRequest, ExportLogsServiceResponse};
use opentelemetry_proto::tonic::collector::metrics::v1::metrics_service_server::{
    MetricsService, MetricsServiceServer,
};
use opentelemetry_proto::tonic::collector::metrics::v1::{ExportMetricsServiceRequest, ExportMetricsServiceResponse};
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{TraceService, TraceServiceServer};
use opentelemetry_proto::tonic::collector::trace::v1::{ExportTraceServiceRequest, ExportTraceServiceResponse};
use prost::Message as _;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tonic::{Request, Response, Status};

use super::{Store, decode};
use crate::HarnessResult;

#[derive(Debug, Clone)]
struct Grpc(Arc<Store>);

#[tonic::async_trait]
impl TraceService for Grpc {
    async fn export(
        &self,
        r: Request<ExportTraceServiceRequest>,
    ) -> Result<Response<ExportTraceServiceResponse>, Status> {
        record_traces(&self.0, r.get_ref(), |c| c.grpc_requests += 1);
        Ok(Response::new(ExportTraceServiceResponse::default()))
    }
}

#[tonic::async_trait]
impl LogsService for Grpc {
    async fn export(
        &self,
        r: Request<ExportLogsServiceRequest>,
    ) -> Result<Response<ExportLogsServiceResponse>, Status> {
        let logs = decode::logs(r.get_ref());
        self.0.update(|c| {
            c.grpc_requests += 1;
            c.logs.extend(logs);
        });
        Ok(Response::new(ExportLogsServiceResponse::default()))
    }
}

#[tonic::async_trait]
impl MetricsService for Grpc {
    async fn export(
        &self,
        r: Request<ExportMetricsServiceRequest>,
    ) -> Result<Response<ExportMetricsServiceResponse>, Status> {
        let metrics = decode::metrics(r.get_ref());
        self.0.update(|c| {
            c.grpc_requests += 1;
            c.metrics.extend(metrics);
        });
        Ok(Response::new(ExportMetricsServiceResponse::default()))
    }
}

fn record_traces(store: &Store, request: &ExportTraceServiceRequest, count: impl FnOnce(&mut super::Captured)) {
    let spans = decode::spans(request);
    let resources = decode::resources(request);
    store.update(|c| {
        count(c);
        c.spans.extend(spans);
        for resource in resources {
            if !c.resources.contains(&resource) {
                c.resources.push(resource);
            }
        }
    });
}

async fn bind() -> HarnessResult<(u16, TcpListener)> {
    let listener = TcpListener::bind("127.0.0.1:0").await.map_err(|e| format!("bind OTLP receiver: {e}"))?;
    let port = listener.local_addr().map_err(|e| e.to_string())?.port();
    Ok((port, listener))
}

pub(super) async fn grpc(store: Arc<Store>) -> HarnessResult<(u16, JoinHandle<()>)> {
    let (port, listener) = bind().await?;
    let svc = Grpc(store);
    let server = tonic::transport::Server::builder()
        .add_service(TraceServiceServer::new(svc.clone()))
        .add_service(LogsServiceServer::new(svc.clone()))
        .add_service(MetricsServiceServer::new(svc))
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

async fn traces(State(store): State<Arc<Store>>, body: Bytes) -> Result<impl IntoResponse, StatusCode> {
    let request = ExportTraceServiceRequest::decode(body).map_err(|_| StatusCode::BAD_REQUEST)?;
    record_traces(&store, &request, |c| c.http_requests += 1);
    Ok(protobuf(ExportTraceServiceResponse::default().encode_to_vec()))
}

async fn logs(State(store): State<Arc<Store>>, body: Bytes) -> Result<impl IntoResponse, StatusCode> {
    let request = ExportLogsServiceRequest::decode(body).map_err(|_| StatusCode::BAD_REQUEST)?;
    let logs = decode::logs(&request);
    store.update(|c| {
        c.http_requests += 1;
        c.logs.extend(logs);
    });
    Ok(protobuf(ExportLogsServiceResponse::default().encode_to_vec()))
}

async fn metrics(State(store): State<Arc<Store>>, body: Bytes) -> Result<impl IntoResponse, StatusCode> {
    let request = ExportMetricsServiceRequest::decode(body).map_err(|_| StatusCode::BAD_REQUEST)?;
    let metrics = decode::metrics(&request);
    store.update(|c| {
        c.http_requests += 1;
        c.metrics.extend(metrics);
    });
    Ok(protobuf(ExportMetricsServiceResponse::default().encode_to_vec()))
}

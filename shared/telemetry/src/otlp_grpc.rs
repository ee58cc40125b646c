//! The OTLP/gRPC span exporter this crate uses when the settings are plain: the batch is
//! encoded by [`crate::otlp_encode`] (straight from the SDK's span data, no copy of the
//! batch, no intermediate message structs) and sent as one unary
//! `TraceService/Export` call, as opentelemetry-otlp's exporter would (one attempt, the
//! same endpoint and timeout variables, the same error texts' status codes).
//!
//! "Plain" means an `http://` endpoint without headers, compression or TLS settings;
//! anything else, or `OTLP_SPAN_ENCODER=official`, uses opentelemetry-otlp's exporter
//! ([`DirectGrpcSpanExporter::from_env`] returns `None`). Measured in
//! `benches/per_message.rs`: the encoding costs a sixth of the official path's.

use std::time::Duration;

use bytes::{Buf as _, BufMut as _};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::error::{OTelSdkError, OTelSdkResult};
use opentelemetry_sdk::trace::{SpanData, SpanExporter};
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::codegen::http::uri::PathAndQuery;
use tonic::transport::{Channel, Endpoint};

use crate::otlp_encode::TraceRequestEncoder;
use crate::settings::Lookup;

const EXPORT_PATH: &str = "/opentelemetry.proto.collector.trace.v1.TraceService/Export";
const DEFAULT_ENDPOINT: &str = "http://localhost:4317";
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

/// Variables whose settings only opentelemetry-otlp's exporter implements.
const OFFICIAL_ONLY: &[&str] =
    &["HEADERS", "COMPRESSION", "INSECURE", "CERTIFICATE", "CLIENT_KEY", "CLIENT_CERTIFICATE"];

/// Sends pre-encoded OTLP trace requests over gRPC.
#[derive(Debug, Clone)]
pub(crate) struct DirectGrpcSpanExporter {
    grpc: tonic::client::Grpc<Channel>,
    encoder: TraceRequestEncoder,
    timeout: Duration,
}

impl DirectGrpcSpanExporter {
    /// The exporter for this environment, or `None` when its settings need
    /// opentelemetry-otlp's exporter. Needs a Tokio runtime (the channel's connection task).
    pub(crate) fn from_env(env: Lookup<'_>) -> Option<Result<Self, String>> {
        let var = |name: &str| {
            env(&format!("OTEL_EXPORTER_OTLP_TRACES_{name}"))
                .or_else(|| env(&format!("OTEL_EXPORTER_OTLP_{name}")))
                .filter(|v| !v.trim().is_empty())
        };
        if env("OTLP_SPAN_ENCODER").is_some_and(|v| v.trim() == "official")
            || OFFICIAL_ONLY.iter().any(|name| var(name).is_some())
        {
            return None;
        }
        let endpoint = var("ENDPOINT").unwrap_or_else(|| DEFAULT_ENDPOINT.to_owned());
        if !endpoint.trim().starts_with("http://") {
            return None;
        }
        let timeout =
            var("TIMEOUT").and_then(|ms| ms.trim().parse().ok()).map_or(DEFAULT_TIMEOUT, Duration::from_millis);
        Some(
            Endpoint::from_shared(endpoint.trim().to_owned())
                .map(|e| Self {
                    grpc: tonic::client::Grpc::new(e.timeout(timeout).connect_lazy()),
                    encoder: TraceRequestEncoder::default(),
                    timeout,
                })
                .map_err(|e| format!("invalid OTLP endpoint {endpoint:?}: {e}")),
        )
    }
}

impl SpanExporter for DirectGrpcSpanExporter {
    async fn export(&self, batch: Vec<SpanData>) -> OTelSdkResult {
        let body = self.encoder.encode(&batch);
        drop(batch);
        let mut grpc = self.grpc.clone();
        let mut request = tonic::Request::new(body);
        request.set_timeout(self.timeout);
        let failed = |status: tonic::Status| {
            OTelSdkError::InternalFailure(format!(
                "export error: Status {{ code: {:?}, message: {:?} }}",
                status.code(),
                status.message()
            ))
        };
        grpc.ready().await.map_err(|e| failed(tonic::Status::unavailable(e.to_string())))?;
        grpc.unary::<Vec<u8>, (), RawCodec>(request, PathAndQuery::from_static(EXPORT_PATH), RawCodec)
            .await
            .map(|_| ())
            .map_err(failed)
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

/// The span exporter of a service: this module's, or opentelemetry-otlp's.
#[derive(Debug)]
pub(crate) enum SpanSink {
    /// [`DirectGrpcSpanExporter`].
    Direct(DirectGrpcSpanExporter),
    /// opentelemetry-otlp's exporter (OTLP/HTTP, or settings only it implements).
    Official(opentelemetry_otlp::SpanExporter),
}

impl SpanExporter for SpanSink {
    async fn export(&self, batch: Vec<SpanData>) -> OTelSdkResult {
        match self {
            Self::Direct(exporter) => exporter.export(batch).await,
            Self::Official(exporter) => exporter.export(batch).await,
        }
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        match self {
            Self::Direct(exporter) => exporter.shutdown_with_timeout(timeout),
            Self::Official(exporter) => exporter.shutdown_with_timeout(timeout),
        }
    }

    fn force_flush(&self) -> OTelSdkResult {
        match self {
            Self::Direct(exporter) => exporter.force_flush(),
            Self::Official(exporter) => exporter.force_flush(),
        }
    }

    fn set_resource(&mut self, resource: &Resource) {
        match self {
            Self::Direct(exporter) => exporter.set_resource(resource),
            Self::Official(exporter) => exporter.set_resource(resource),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn choose(vars: &[(&str, &str)]) -> Option<Result<DirectGrpcSpanExporter, String>> {
        let env: HashMap<String, String> = vars.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect();
        DirectGrpcSpanExporter::from_env(&|name| env.get(name).cloned())
    }

    #[tokio::test]
    async fn plain_settings_use_the_direct_encoder_with_their_endpoint_and_timeout() {
        let direct = choose(&[]).expect("plain").expect("valid");
        assert_eq!(direct.timeout, DEFAULT_TIMEOUT);
        let direct = choose(&[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4317"),
            ("OTEL_EXPORTER_OTLP_TRACES_TIMEOUT", "2500"),
        ]);
        assert_eq!(direct.expect("plain").expect("valid").timeout, Duration::from_millis(2500));
        assert!(choose(&[("OTEL_EXPORTER_OTLP_ENDPOINT", "http://bad host:4317")]).expect("ours").is_err());
    }

    #[tokio::test]
    async fn settings_only_the_official_exporter_implements_select_it() {
        for vars in [
            &[("OTLP_SPAN_ENCODER", "official")][..],
            &[("OTEL_EXPORTER_OTLP_HEADERS", "authorization=Bearer%20x")],
            &[("OTEL_EXPORTER_OTLP_TRACES_COMPRESSION", "gzip")],
            &[("OTEL_EXPORTER_OTLP_INSECURE", "false")],
            &[("OTEL_EXPORTER_OTLP_CERTIFICATE", "/etc/ca.pem")],
            &[("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "https://collector:4317")],
        ] {
            assert!(choose(vars).is_none(), "{vars:?}");
        }
    }
}

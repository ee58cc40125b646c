//! One OTLP/HTTP POST of a batch, and what its answer means: accepted, away for now
//! (connection refused, timeout, 429, 5xx: the breaker opens), or refused for good
//! (any other 4xx: that batch will never be accepted as it is).

use std::time::Duration;

use bytes::Bytes;

use crate::stream::Signal;

/// The endpoint and how to talk to it.
#[derive(Debug, Clone)]
pub(crate) struct Sender {
    http: reqwest::Client,
    endpoint: String,
    headers: reqwest::header::HeaderMap,
}

/// Why a batch was not accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum SendError {
    /// The endpoint is away or overloaded: try again later, as it is.
    #[error("endpoint unavailable: {0}")]
    Unavailable(String),
    /// The endpoint refused the batch itself (`4xx` other than 429).
    #[error("endpoint refused the batch: HTTP {0}")]
    Refused(u16),
}

impl SendError {
    /// The `reason` label: `unavailable`, or `http_<status>`.
    pub(crate) fn reason(&self) -> String {
        match self {
            Self::Unavailable(_) => "unavailable".to_owned(),
            Self::Refused(status) => format!("http_{status}"),
        }
    }
}

impl Sender {
    /// A sender to `endpoint` (`http://collector:4318`) with extra `headers`.
    pub(crate) fn new(endpoint: &str, headers: &[(String, String)], timeout: Duration) -> Result<Self, String> {
        let mut map = reqwest::header::HeaderMap::new();
        for (key, value) in headers {
            let name = reqwest::header::HeaderName::from_bytes(key.as_bytes())
                .map_err(|_| format!("header name {key:?} is not valid"))?;
            // The value is not repeated: it may be a token.
            let value = reqwest::header::HeaderValue::from_str(value)
                .map_err(|_| format!("the value of header {key:?} is not valid"))?;
            map.insert(name, value);
        }
        let http = reqwest::Client::builder().timeout(timeout).build().map_err(|e| e.to_string())?;
        Ok(Self { http, endpoint: endpoint.trim_end_matches('/').to_owned(), headers: map })
    }

    /// Posts `body` (one or more OTLP requests of `signal`, concatenated: protobuf reads
    /// concatenated messages as one whose lists are joined).
    pub(crate) async fn send(&self, signal: Signal, body: Bytes) -> Result<(), SendError> {
        let response = self
            .http
            .post(format!("{}{}", self.endpoint, signal.path()))
            .headers(self.headers.clone())
            .header(reqwest::header::CONTENT_TYPE, "application/x-protobuf")
            .body(body)
            .send()
            .await
            .map_err(|e| SendError::Unavailable(e.without_url().to_string()))?;
        let status = response.status();
        if status.is_success() {
            Ok(())
        } else if status == reqwest::StatusCode::TOO_MANY_REQUESTS || status.is_server_error() {
            Err(SendError::Unavailable(format!("HTTP {status}")))
        } else {
            Err(SendError::Refused(status.as_u16()))
        }
    }
}

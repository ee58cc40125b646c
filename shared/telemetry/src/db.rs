//! Database client spans following the OpenTelemetry database conventions
//! (`{db.operation.name} {db.collection.name}`, kind CLIENT, parameterised query text).

use tracing::Span;
use tracing::field::Empty;

use crate::spans::record_failure;

/// One database operation, described for its span.
#[derive(Debug, Clone, Copy)]
pub struct DbOperation<'a> {
    /// `INSERT`, `SELECT`, ...
    pub operation: &'static str,
    /// Schema-qualified table, e.g. `chat.messages`.
    pub collection: &'static str,
    /// The parameterised SQL; never values.
    pub query: &'static str,
    /// Database name (`db.namespace`).
    pub namespace: &'a str,
    /// Server host (`server.address`).
    pub address: &'a str,
    /// Server port (`server.port`).
    pub port: u16,
}

/// A CLIENT span `<operation> <collection>`, child of the current span.
pub fn db_span(op: &DbOperation<'_>) -> Span {
    tracing::info_span!(
        "db",
        otel.name = %format_args!("{} {}", op.operation, op.collection),
        otel.kind = "client",
        otel.status_code = Empty,
        otel.status_description = Empty,
        error.type = Empty,
        db.system.name = "postgresql",
        db.namespace = op.namespace,
        db.collection.name = op.collection,
        db.operation.name = op.operation,
        db.query.text = op.query,
        db.operation.batch.size = Empty,
        db.response.returned_rows = Empty,
        db.response.status_code = Empty,
        server.address = op.address,
        server.port = i64::from(op.port),
    )
}

/// Marks a database span failed: the SQLSTATE (when the server sent one) as
/// `db.response.status_code` and `error.type`, otherwise `error_type`.
pub fn record_db_failure(span: &Span, sqlstate: Option<&str>, error_type: &str, description: &str) {
    if let Some(code) = sqlstate {
        span.record("db.response.status_code", code);
    }
    record_failure(span, sqlstate.unwrap_or(error_type), description);
}

//! Database client spans following the OpenTelemetry database conventions
//! (`{db.operation.name} {db.collection.name}`, kind CLIENT, parameterised query text),
//! built with the OpenTelemetry API; the attributes of the database (system, namespace,
//! server) are built once per pool.

use std::borrow::Cow;
use std::sync::Arc;

use opentelemetry::trace::{Link, SpanBuilder, SpanContext, SpanKind, TraceContextExt as _};
use opentelemetry::{Context, KeyValue, StringValue, Value};

use crate::messaging::{Traced, record_failure};
use crate::tracer::SpanTracer;

/// The spans of one database: its tracer and the attributes every statement shares.
#[derive(Clone)]
pub struct DbSpans {
    inner: Arc<Inner>,
}

struct Inner {
    tracer: SpanTracer,
    shared: [KeyValue; 4],
}

impl std::fmt::Debug for DbSpans {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DbSpans").field("shared", &self.inner.shared).finish_non_exhaustive()
    }
}

/// One statement, described for its span.
#[derive(Debug, Clone, Copy)]
pub struct Statement {
    /// `INSERT`, `SELECT`, ...
    pub operation: &'static str,
    /// Schema-qualified table, e.g. `chat.messages`.
    pub collection: &'static str,
    /// The span name, `{operation} {collection}`.
    pub name: &'static str,
    /// The parameterised SQL; never values.
    pub query: &'static str,
}

impl DbSpans {
    /// Spans of the pipeline [`crate::init`] built (or of the global tracer) for a
    /// PostgreSQL database `namespace` at `address:port`.
    pub fn new(namespace: &str, address: &str, port: u16) -> Self {
        Self::with_tracer(SpanTracer::named("telemetry"), namespace, address, port)
    }

    /// Spans of `tracer` (benchmarks and tests bring their own provider).
    pub fn with_tracer(tracer: impl Into<SpanTracer>, namespace: &str, address: &str, port: u16) -> Self {
        let tracer = tracer.into();
        let shared = |s: &str| Value::String(StringValue::from(Arc::<str>::from(s)));
        let shared = [
            KeyValue::new("db.system.name", "postgresql"),
            KeyValue::new("db.namespace", shared(namespace)),
            KeyValue::new("server.address", shared(address)),
            KeyValue::new("server.port", i64::from(port)),
        ];
        Self { inner: Arc::new(Inner { tracer, shared }) }
    }

    /// A CLIENT span for `statement`, child of the current context.
    pub fn span(&self, statement: &Statement) -> Traced {
        self.span_linked(statement, Vec::new())
    }

    /// A CLIENT span for `statement` on behalf of several operations: a child of the
    /// current context (the first), linked to the span of each of the others (`links`),
    /// given as it starts (one list, as the sampler sees them). The provider keeps
    /// [`crate::LINKS_PER_SPAN`] links unless `OTEL_SPAN_LINK_COUNT_LIMIT` says otherwise.
    pub fn span_linked(&self, statement: &Statement, links: Vec<SpanContext>) -> Traced {
        let mut builder = SpanBuilder::from_name(Cow::Borrowed(statement.name)).with_kind(SpanKind::Client);
        if !links.is_empty() {
            builder = builder.with_links(links.into_iter().map(|cx| Link::new(cx, Vec::new(), 0)).collect());
        }
        let cx = self.inner.tracer.start(builder, &Context::current());
        if cx.span().is_recording() {
            let mut attributes = Vec::with_capacity(8);
            attributes.extend(self.inner.shared.iter().cloned());
            attributes.extend([
                KeyValue::new("db.collection.name", statement.collection),
                KeyValue::new("db.operation.name", statement.operation),
                KeyValue::new("db.query.text", statement.query),
            ]);
            cx.span().set_attributes(attributes);
        }
        Traced::from_context(cx)
    }
}

/// Marks a database span failed: the SQLSTATE (when the server sent one) as
/// `db.response.status_code` and `error.type`, otherwise `error_type`.
pub fn record_db_failure(span: &Traced, sqlstate: Option<&str>, error_type: &str, description: &str) {
    if let Some(code) = sqlstate {
        span.set_attribute(KeyValue::new("db.response.status_code", code.to_owned()));
    }
    record_failure(span, sqlstate.unwrap_or(error_type), description);
}

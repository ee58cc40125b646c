//! Log lines on stdout: human-readable text or one JSON object per line, both with the
//! attribute policy applied (a sensitive field prints as `[REDACTED]`).
//!
//! JSON lines carry `trace_id` and `span_id` when emitted inside a traced span, so a line
//! from `docker logs` leads to its trace as directly as a record in Loki does.

use std::fmt;

use opentelemetry::trace::TraceContextExt as _;
use serde_json::{Map, Value};
use tracing::field::{Field, Visit};
use tracing::{Event, Subscriber};
use tracing_subscriber::field::{MakeVisitor, VisitFmt, VisitOutput};
use tracing_subscriber::fmt::format::{DefaultFields, Writer};
use tracing_subscriber::fmt::time::{FormatTime as _, SystemTime};
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::registry::LookupSpan;

use crate::policy::{REDACTED, is_sensitive_key};

/// Field formatting for text lines: like the default, with sensitive values redacted.
#[derive(Debug, Default)]
pub(crate) struct RedactingFields(DefaultFields);

impl<'w> MakeVisitor<Writer<'w>> for RedactingFields {
    type Visitor = RedactingVisitor<<DefaultFields as MakeVisitor<Writer<'w>>>::Visitor>;

    fn make_visitor(&self, target: Writer<'w>) -> Self::Visitor {
        RedactingVisitor(self.0.make_visitor(target))
    }
}

/// Wraps the default visitor; sensitive fields are recorded as [`REDACTED`].
pub(crate) struct RedactingVisitor<V>(V);

impl<V: Visit> Visit for RedactingVisitor<V> {
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        if is_sensitive_key(field.name()) {
            self.0.record_str(field, REDACTED);
        } else {
            self.0.record_debug(field, value);
        }
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        self.0.record_str(field, if is_sensitive_key(field.name()) { REDACTED } else { value });
    }
}

impl<V: VisitOutput<fmt::Result>> VisitOutput<fmt::Result> for RedactingVisitor<V> {
    fn finish(self) -> fmt::Result {
        self.0.finish()
    }
}

impl<V: VisitFmt> VisitFmt for RedactingVisitor<V> {
    fn writer(&mut self) -> &mut dyn fmt::Write {
        self.0.writer()
    }
}

/// One JSON object per event: `timestamp`, `level`, `target`, `span`, `trace_id`,
/// `span_id`, `message` and the event's fields.
#[derive(Debug, Default)]
pub(crate) struct JsonLines;

impl<S, N> FormatEvent<S, N> for JsonLines
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(&self, ctx: &FmtContext<'_, S, N>, mut writer: Writer<'_>, event: &Event<'_>) -> fmt::Result {
        let mut line = Map::new();
        let mut timestamp = String::new();
        SystemTime.format_time(&mut Writer::new(&mut timestamp))?;
        line.insert("timestamp".into(), timestamp.into());
        line.insert("level".into(), event.metadata().level().as_str().into());
        line.insert("target".into(), event.metadata().target().into());
        if let Some(span) = ctx.lookup_current() {
            line.insert("span".into(), span.name().into());
        }
        // The OTel context made current when the enclosing span was entered.
        let cx = opentelemetry::Context::current();
        let span_context = cx.span().span_context().clone();
        if span_context.is_valid() {
            line.insert("trace_id".into(), span_context.trace_id().to_string().into());
            line.insert("span_id".into(), span_context.span_id().to_string().into());
        }
        event.record(&mut JsonVisitor(&mut line));
        let text = serde_json::to_string(&line).map_err(|_| fmt::Error)?;
        writeln!(writer, "{text}")
    }
}

struct JsonVisitor<'a>(&'a mut Map<String, Value>);

impl JsonVisitor<'_> {
    fn put(&mut self, field: &Field, value: Value) {
        let value = if is_sensitive_key(field.name()) { REDACTED.into() } else { value };
        self.0.insert(field.name().to_owned(), value);
    }
}

impl Visit for JsonVisitor<'_> {
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.put(field, format!("{value:?}").into());
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        self.put(field, value.into());
    }
    fn record_i64(&mut self, field: &Field, value: i64) {
        self.put(field, value.into());
    }
    fn record_u64(&mut self, field: &Field, value: u64) {
        self.put(field, value.into());
    }
    fn record_f64(&mut self, field: &Field, value: f64) {
        self.put(field, value.into());
    }
    fn record_bool(&mut self, field: &Field, value: bool) {
        self.put(field, value.into());
    }
    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        self.put(field, value.to_string().into());
    }
}

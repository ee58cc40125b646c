//! OTLP protobuf encoding of a span batch straight from the SDK's `SpanData`: the bytes
//! of an `ExportTraceServiceRequest`, without building `opentelemetry-proto`'s message
//! structs first (one `String` per attribute key and value, a `Vec` per list) and without
//! copying the batch. Same message as `opentelemetry-proto`'s
//! `group_spans_by_resource_and_scope` + `prost::Message::encode` (the tests decode both
//! and compare); one allocation, of the exact size, per batch.
//!
//! Wire format: each nested message is written as its field key, its length and its
//! fields; lengths are computed once per span and per list, before writing.

use std::borrow::Cow;
use std::time::{SystemTime, UNIX_EPOCH};

use opentelemetry::trace::{SpanContext, SpanId, SpanKind, Status, TraceState};
use opentelemetry::{Array, InstrumentationScope, KeyValue, StringValue, Value};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::trace::SpanData;
use prost::encoding::{WireType, encode_varint, encoded_len_varint, key_len};

/// `SpanFlags`: the W3C trace flags in the low byte, then "the context knows whether the
/// parent is remote" and "the parent is remote" (OTLP trace.proto).
const HAS_IS_REMOTE: u32 = 0x100;
const IS_REMOTE: u32 = 0x200;

/// Encodes span batches for one resource (its message is encoded once).
#[derive(Debug, Clone, Default)]
pub struct TraceRequestEncoder {
    /// The `Resource` message's fields (attributes).
    resource: Vec<u8>,
    schema_url: String,
}

impl TraceRequestEncoder {
    /// For spans of `resource`.
    pub fn new(resource: &Resource) -> Self {
        let mut encoded = Vec::new();
        for (key, value) in resource.iter() {
            write_key_value(1, key.as_str(), value, &mut encoded);
        }
        Self { resource: encoded, schema_url: resource.schema_url().unwrap_or_default().to_owned() }
    }

    /// The bytes of an `ExportTraceServiceRequest` holding `spans`, grouped by
    /// instrumentation scope in order of first appearance.
    pub fn encode(&self, spans: &[SpanData]) -> Vec<u8> {
        let mut scopes: Vec<(&InstrumentationScope, Vec<usize>)> = Vec::new();
        for (i, span) in spans.iter().enumerate() {
            match scopes.iter_mut().find(|(scope, _)| *scope == &span.instrumentation_scope) {
                Some((_, members)) => members.push(i),
                None => scopes.push((&span.instrumentation_scope, vec![i])),
            }
        }
        let span_lens: Vec<usize> = spans.iter().map(span_len).collect();
        let scope_lens: Vec<usize> = scopes
            .iter()
            .map(|(scope, members)| {
                message_field_len(1, scope_len(scope))
                    + members.iter().map(|i| message_field_len(2, span_lens[*i])).sum::<usize>()
                    + string_field_len(3, scope.schema_url().unwrap_or_default())
            })
            .collect();
        let resource_spans_len = message_field_len(1, self.resource.len())
            + scope_lens.iter().map(|len| message_field_len(2, *len)).sum::<usize>()
            + string_field_len(3, &self.schema_url);
        let total = message_field_len(1, resource_spans_len);

        let mut buf = Vec::with_capacity(total);
        write_message_header(1, resource_spans_len, &mut buf);
        write_message_header(1, self.resource.len(), &mut buf);
        buf.extend_from_slice(&self.resource);
        for ((scope, members), scope_spans_len) in scopes.iter().zip(&scope_lens) {
            write_message_header(2, *scope_spans_len, &mut buf);
            write_message_header(1, scope_len(scope), &mut buf);
            write_scope(scope, &mut buf);
            for i in members {
                write_message_header(2, span_lens[*i], &mut buf);
                write_span(&spans[*i], &mut buf);
            }
            write_string(3, scope.schema_url().unwrap_or_default(), &mut buf);
        }
        write_string(3, &self.schema_url, &mut buf);
        debug_assert_eq!(buf.len(), total);
        buf
    }
}

// --- lengths -------------------------------------------------------------------------

fn message_field_len(tag: u32, len: usize) -> usize {
    key_len(tag) + encoded_len_varint(len as u64) + len
}

fn string_field_len(tag: u32, s: &str) -> usize {
    if s.is_empty() { 0 } else { message_field_len(tag, s.len()) }
}

fn varint_field_len(tag: u32, v: u64) -> usize {
    if v == 0 { 0 } else { key_len(tag) + encoded_len_varint(v) }
}

fn fixed64_field_len(tag: u32, v: u64) -> usize {
    if v == 0 { 0 } else { key_len(tag) + 8 }
}

fn attributes_len(tag: u32, attributes: &[KeyValue]) -> usize {
    attributes.iter().map(|kv| message_field_len(tag, key_value_len(kv.key.as_str(), &kv.value))).sum()
}

fn key_value_len(key: &str, value: &Value) -> usize {
    string_field_len(1, key) + message_field_len(2, any_value_len(value))
}

/// `AnyValue`: a oneof, so even a default value (`""`, `false`, `0`) is written.
fn any_value_len(value: &Value) -> usize {
    match value {
        Value::Bool(b) => key_len(2) + encoded_len_varint(u64::from(*b)),
        Value::I64(i) => key_len(3) + encoded_len_varint(*i as u64),
        Value::F64(_) => key_len(4) + 8,
        Value::String(s) => message_field_len(1, s.as_str().len()),
        Value::Array(array) => message_field_len(5, array_len(array)),
        other => message_field_len(1, other.to_string().len()),
    }
}

fn array_len(array: &Array) -> usize {
    let item = |v: Value| message_field_len(1, any_value_len(&v));
    match array {
        Array::Bool(values) => values.iter().map(|v| item(Value::Bool(*v))).sum(),
        Array::I64(values) => values.iter().map(|v| item(Value::I64(*v))).sum(),
        Array::F64(values) => values.iter().map(|v| item(Value::F64(*v))).sum(),
        Array::String(values) => values.iter().map(|v| message_field_len(1, string_value_len(v))).sum(),
        other => message_field_len(1, message_field_len(1, other.to_string().len())),
    }
}

fn string_value_len(s: &StringValue) -> usize {
    message_field_len(1, s.as_str().len())
}

fn scope_len(scope: &InstrumentationScope) -> usize {
    string_field_len(1, scope.name())
        + string_field_len(2, scope.version().unwrap_or_default())
        + scope.attributes().map(|kv| message_field_len(3, key_value_len(kv.key.as_str(), &kv.value))).sum::<usize>()
}

/// `trace_id` and `span_id`: 16 and 8 bytes.
fn ids_len() -> usize {
    message_field_len(1, 16) + message_field_len(2, 8)
}

/// The W3C `tracestate` header (built only when there is one).
fn trace_state(cx: &SpanContext) -> Cow<'static, str> {
    if *cx.trace_state() == TraceState::NONE { Cow::Borrowed("") } else { Cow::Owned(cx.trace_state().header()) }
}

fn span_len(span: &SpanData) -> usize {
    let parent = if span.parent_span_id == SpanId::INVALID { 0 } else { message_field_len(4, 8) };
    ids_len()
        + string_field_len(3, &trace_state(&span.span_context))
        + parent
        + string_field_len(5, &span.name)
        + varint_field_len(6, kind(&span.span_kind))
        + fixed64_field_len(7, nanos(span.start_time))
        + fixed64_field_len(8, nanos(span.end_time))
        + attributes_len(9, &span.attributes)
        + varint_field_len(10, u64::from(span.dropped_attributes_count))
        + span.events.iter().map(|e| message_field_len(11, event_len(e))).sum::<usize>()
        + varint_field_len(12, u64::from(span.events.dropped_count))
        + span.links.iter().map(|l| message_field_len(13, link_len(l))).sum::<usize>()
        + varint_field_len(14, u64::from(span.links.dropped_count))
        + message_field_len(15, status_len(&span.status))
        + key_len(16)
        + 4
}

fn event_len(event: &opentelemetry::trace::Event) -> usize {
    fixed64_field_len(1, nanos(event.timestamp))
        + string_field_len(2, &event.name)
        + attributes_len(3, &event.attributes)
        + varint_field_len(4, u64::from(event.dropped_attributes_count))
}

fn link_len(link: &opentelemetry::trace::Link) -> usize {
    ids_len()
        + string_field_len(3, &trace_state(&link.span_context))
        + attributes_len(4, &link.attributes)
        + varint_field_len(5, u64::from(link.dropped_attributes_count))
        + key_len(6)
        + 4
}

fn status_len(status: &Status) -> usize {
    match status {
        Status::Unset => 0,
        Status::Ok => varint_field_len(3, 1),
        Status::Error { description } => string_field_len(2, description) + varint_field_len(3, 2),
    }
}

// --- values --------------------------------------------------------------------------

fn nanos(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_nanos() as u64)
}

fn kind(kind: &SpanKind) -> u64 {
    match kind {
        SpanKind::Internal => 1,
        SpanKind::Server => 2,
        SpanKind::Client => 3,
        SpanKind::Producer => 4,
        SpanKind::Consumer => 5,
    }
}

fn flags(cx: &SpanContext, parent_is_remote: bool) -> u32 {
    u32::from(cx.trace_flags().to_u8()) | HAS_IS_REMOTE | if parent_is_remote { IS_REMOTE } else { 0 }
}

// --- writing -------------------------------------------------------------------------

/// A varint; most (field keys, lengths of short values) are one byte, written without
/// a call into prost's general loop (a fifth of the encoder's time, measured with perf).
#[inline]
fn put_varint(v: u64, buf: &mut Vec<u8>) {
    if v < 0x80 {
        buf.push(v as u8);
    } else {
        encode_varint(v, buf);
    }
}

/// A field key (`tag << 3 | wire type`).
#[inline]
fn put_key(tag: u32, wire_type: WireType, buf: &mut Vec<u8>) {
    put_varint(u64::from(tag << 3 | wire_type as u32), buf);
}

fn write_message_header(tag: u32, len: usize, buf: &mut Vec<u8>) {
    put_key(tag, WireType::LengthDelimited, buf);
    put_varint(len as u64, buf);
}

fn write_bytes(tag: u32, bytes: &[u8], buf: &mut Vec<u8>) {
    write_message_header(tag, bytes.len(), buf);
    buf.extend_from_slice(bytes);
}

fn write_string(tag: u32, s: &str, buf: &mut Vec<u8>) {
    if !s.is_empty() {
        write_bytes(tag, s.as_bytes(), buf);
    }
}

fn write_varint(tag: u32, v: u64, buf: &mut Vec<u8>) {
    if v != 0 {
        put_key(tag, WireType::Varint, buf);
        put_varint(v, buf);
    }
}

fn write_fixed64(tag: u32, v: u64, buf: &mut Vec<u8>) {
    if v != 0 {
        put_key(tag, WireType::SixtyFourBit, buf);
        buf.extend_from_slice(&v.to_le_bytes());
    }
}

fn write_fixed32(tag: u32, v: u32, buf: &mut Vec<u8>) {
    put_key(tag, WireType::ThirtyTwoBit, buf);
    buf.extend_from_slice(&v.to_le_bytes());
}

fn write_key_value(tag: u32, key: &str, value: &Value, buf: &mut Vec<u8>) {
    write_message_header(tag, key_value_len(key, value), buf);
    write_string(1, key, buf);
    write_message_header(2, any_value_len(value), buf);
    write_any_value(value, buf);
}

fn write_attributes(tag: u32, attributes: &[KeyValue], buf: &mut Vec<u8>) {
    for kv in attributes {
        write_key_value(tag, kv.key.as_str(), &kv.value, buf);
    }
}

/// The fields of an `AnyValue` (its oneof always written).
fn write_any_value(value: &Value, buf: &mut Vec<u8>) {
    match value {
        Value::Bool(b) => {
            put_key(2, WireType::Varint, buf);
            put_varint(u64::from(*b), buf);
        }
        Value::I64(i) => {
            put_key(3, WireType::Varint, buf);
            put_varint(*i as u64, buf);
        }
        Value::F64(f) => {
            put_key(4, WireType::SixtyFourBit, buf);
            buf.extend_from_slice(&f.to_le_bytes());
        }
        Value::String(s) => write_bytes(1, s.as_str().as_bytes(), buf),
        Value::Array(array) => {
            write_message_header(5, array_len(array), buf);
            write_array(array, buf);
        }
        other => write_bytes(1, other.to_string().as_bytes(), buf),
    }
}

fn write_array(array: &Array, buf: &mut Vec<u8>) {
    let item = |v: &Value, buf: &mut Vec<u8>| {
        write_message_header(1, any_value_len(v), buf);
        write_any_value(v, buf);
    };
    match array {
        Array::Bool(values) => values.iter().for_each(|v| item(&Value::Bool(*v), buf)),
        Array::I64(values) => values.iter().for_each(|v| item(&Value::I64(*v), buf)),
        Array::F64(values) => values.iter().for_each(|v| item(&Value::F64(*v), buf)),
        Array::String(values) => values.iter().for_each(|v| {
            write_message_header(1, string_value_len(v), buf);
            write_bytes(1, v.as_str().as_bytes(), buf);
        }),
        other => item(&Value::String(other.to_string().into()), buf),
    }
}

fn write_scope(scope: &InstrumentationScope, buf: &mut Vec<u8>) {
    write_string(1, scope.name(), buf);
    write_string(2, scope.version().unwrap_or_default(), buf);
    for kv in scope.attributes() {
        write_key_value(3, kv.key.as_str(), &kv.value, buf);
    }
}

fn write_ids(cx: &SpanContext, buf: &mut Vec<u8>) {
    write_bytes(1, &cx.trace_id().to_bytes(), buf);
    write_bytes(2, &cx.span_id().to_bytes(), buf);
}

fn write_span(span: &SpanData, buf: &mut Vec<u8>) {
    write_ids(&span.span_context, buf);
    write_string(3, &trace_state(&span.span_context), buf);
    if span.parent_span_id != SpanId::INVALID {
        write_bytes(4, &span.parent_span_id.to_bytes(), buf);
    }
    write_string(5, &span.name, buf);
    write_varint(6, kind(&span.span_kind), buf);
    write_fixed64(7, nanos(span.start_time), buf);
    write_fixed64(8, nanos(span.end_time), buf);
    write_attributes(9, &span.attributes, buf);
    write_varint(10, u64::from(span.dropped_attributes_count), buf);
    for event in span.events.iter() {
        write_message_header(11, event_len(event), buf);
        write_fixed64(1, nanos(event.timestamp), buf);
        write_string(2, &event.name, buf);
        write_attributes(3, &event.attributes, buf);
        write_varint(4, u64::from(event.dropped_attributes_count), buf);
    }
    write_varint(12, u64::from(span.events.dropped_count), buf);
    for link in span.links.iter() {
        write_message_header(13, link_len(link), buf);
        write_ids(&link.span_context, buf);
        write_string(3, &trace_state(&link.span_context), buf);
        write_attributes(4, &link.attributes, buf);
        write_varint(5, u64::from(link.dropped_attributes_count), buf);
        write_fixed32(6, flags(&link.span_context, link.span_context.is_remote()), buf);
    }
    write_varint(14, u64::from(span.links.dropped_count), buf);
    write_message_header(15, status_len(&span.status), buf);
    match &span.status {
        Status::Unset => {}
        Status::Ok => write_varint(3, 1, buf),
        Status::Error { description } => {
            write_string(2, description, buf);
            write_varint(3, 2, buf);
        }
    }
    write_fixed32(16, flags(&span.span_context, span.parent_span_is_remote), buf);
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry::trace::{
        Link, Span as _, TraceContextExt as _, TraceFlags, TraceId, Tracer as _, TracerProvider as _,
    };
    use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
    use opentelemetry_proto::transform::common::tonic::ResourceAttributesWithSchema;
    use opentelemetry_proto::transform::trace::tonic::group_spans_by_resource_and_scope;
    use opentelemetry_sdk::trace::{InMemorySpanExporter, SdkTracerProvider};
    use prost::Message as _;

    fn resource() -> Resource {
        Resource::builder()
            .with_service_name("persist-worker")
            .with_attributes([KeyValue::new("service.instance.id", "i-1"), KeyValue::new("host.cpus", 2)])
            .with_schema_url([], "https://opentelemetry.io/schemas/1.38.0")
            .build()
    }

    /// Spans as the SDK makes them: every value type, events, links, remote and local
    /// parents, error status, a trace state, two instrumentation scopes.
    fn sdk_spans() -> Vec<SpanData> {
        let exporter = InMemorySpanExporter::default();
        let provider = SdkTracerProvider::builder().with_simple_exporter(exporter.clone()).build();
        let worker = provider.tracer("persist-worker");
        let scoped = provider.tracer_with_scope(
            InstrumentationScope::builder("telemetry")
                .with_version("0.1.0")
                .with_schema_url("https://opentelemetry.io/schemas/1.38.0")
                .with_attributes([KeyValue::new("scope.kind", "db")])
                .build(),
        );
        let remote = SpanContext::new(
            TraceId::from(0x0af7_6519_16cd_43dd_8448_eb21_1c80_319c),
            SpanId::from(0xb7ad_6b71_6920_3331),
            TraceFlags::SAMPLED,
            true,
            TraceState::from_key_value([("vendor", "v1")]).expect("trace state"),
        );
        let parent = opentelemetry::Context::new().with_remote_span_context(remote.clone());
        let mut process = worker
            .span_builder("process chat.msg.*.*")
            .with_kind(SpanKind::Consumer)
            .with_links(vec![Link::new(remote, vec![KeyValue::new("link.reason", "batch")], 1)])
            .start_with_context(&worker, &parent);
        process.set_attributes([
            KeyValue::new("messaging.system", "nats"),
            KeyValue::new("empty", ""),
            KeyValue::new("messaging.message_redelivered", false),
            KeyValue::new("negative", -42_i64),
            KeyValue::new("zero", 0_i64),
            KeyValue::new("messaging.nats.queue_wait", 0.002),
            KeyValue::new("bools", Value::Array(Array::Bool(vec![true, false]))),
            KeyValue::new("ints", Value::Array(Array::I64(vec![1, -1, 0]))),
            KeyValue::new("floats", Value::Array(Array::F64(vec![0.5, 0.0]))),
            KeyValue::new("strings", Value::Array(Array::String(vec!["a".into(), "".into()]))),
            KeyValue::new("nonascii", "grüße ✓"),
        ]);
        process.add_event("ack", vec![KeyValue::new("messaging.operation.type", "settle")]);
        process.add_event("no attributes", vec![]);
        process.set_status(Status::error("boom: the insert failed"));
        let cx = parent.with_span(process);
        let mut insert =
            scoped.span_builder("INSERT chat.messages").with_kind(SpanKind::Client).start_with_context(&scoped, &cx);
        insert.set_status(Status::Ok);
        insert.end();
        cx.span().end();
        let mut root = worker.span_builder("publish chat.msg.*.*").with_kind(SpanKind::Producer).start(&worker);
        root.end();
        let mut spans = exporter.get_finished_spans().expect("spans");
        // Counts the SDK only sets past its limits.
        let mut limited = spans[0].clone();
        limited.dropped_attributes_count = 3;
        limited.events.dropped_count = 4;
        limited.links.dropped_count = 5;
        limited.span_kind = SpanKind::Server;
        spans.push(limited);
        let mut internal = spans[0].clone();
        internal.span_kind = SpanKind::Internal;
        internal.parent_span_id = SpanId::INVALID;
        internal.parent_span_is_remote = false;
        internal.status = Status::Unset;
        internal.attributes.clear();
        internal.events.events.clear();
        internal.links.links.clear();
        spans.push(internal);
        spans
    }

    #[test]
    fn decodes_to_the_same_request_as_the_official_transform() {
        let (resource, spans) = (resource(), sdk_spans());
        assert!(spans.len() >= 5, "{}", spans.len());
        let ours = TraceRequestEncoder::new(&resource).encode(&spans);
        let official = ExportTraceServiceRequest {
            resource_spans: group_spans_by_resource_and_scope(spans, &ResourceAttributesWithSchema::from(&resource)),
        };
        let decoded = ExportTraceServiceRequest::decode(ours.as_slice()).expect("our bytes decode as OTLP");
        assert_eq!(decoded, official);
        assert_eq!(ours.len(), official.encoded_len(), "no more and no fewer bytes than prost writes");
        assert_eq!(decoded.resource_spans[0].scope_spans.len(), 2, "grouped by scope");
    }

    #[test]
    fn an_empty_batch_is_a_request_with_the_resource_only() {
        let resource = resource();
        let ours = TraceRequestEncoder::new(&resource).encode(&[]);
        let official = ExportTraceServiceRequest {
            resource_spans: group_spans_by_resource_and_scope(
                Vec::new(),
                &ResourceAttributesWithSchema::from(&resource),
            ),
        };
        assert_eq!(ExportTraceServiceRequest::decode(ours.as_slice()).expect("decodes"), official);
    }
}

//! OTLP protobuf encoding of a span batch straight from the SDK's `SpanData`: the bytes
//! of an `ExportTraceServiceRequest`, without building `opentelemetry-proto`'s message
//! structs first (one `String` per attribute key and value, a `Vec` per list) and without
//! cloning the batch's spans. Same message as `opentelemetry-proto`'s
//! `group_spans_by_resource_and_scope` + `prost::Message::encode` (the tests decode both
//! and compare); the exact size reserved once per batch (after the gRPC frame header, for
//! the gRPC exporter: `encode_into`).
//!
//! Wire format: each nested message is written as its field key, its length and its
//! fields, so its length is needed before its fields. Attributes and their values are
//! measured by `*_len` functions right before their header; a span's leading attributes
//! that repeat span after span are written from a held encoding ([`runs`]). A span is
//! written without its header into a buffer kept per thread, then copied behind its header
//! into [`EncodedSpans`] (one copy of warm memory, cheaper than measuring every attribute
//! twice); its events, links and status are written in place, each behind a byte kept for
//! its length and filled in after (`write_nested`). A request is the resource and those
//! spans, scope by scope: [`TraceRequestEncoder::encode_spans_into`].
//!
//! The gRPC exporter's batch processor (`otlp::batch`) encodes each span as it ends, on
//! the thread that ends it, and sends batches of [`EncodedSpans`]; the NATS exporter
//! encodes the SDK's batches of `SpanData` ([`TraceRequestEncoder::encode_into`]).

use std::borrow::Cow;
use std::cell::RefCell;
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::{BufMut, Bytes};
use opentelemetry::trace::{Event, Link, SpanContext, SpanId, SpanKind, Status, TraceState};
use opentelemetry::{Array, InstrumentationScope, KeyValue, StringValue, Value};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::trace::SpanData;
use prost::encoding::{WireType, encode_varint, encoded_len_varint, key_len};

mod runs;

use runs::write_attributes;

/// `SpanFlags`: the W3C trace flags in the low byte, then "the context knows whether the
/// parent is remote" and "the parent is remote" (OTLP trace.proto).
const HAS_IS_REMOTE: u32 = 0x100;
const IS_REMOTE: u32 = 0x200;

thread_local! {
    /// The message of the span being encoded, before it is copied behind its header. Per
    /// thread and kept between spans, so its memory is warm; one grown past
    /// [`KEPT_BODY_CAPACITY`] by a huge span is not kept.
    static SPAN_BODY: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

thread_local! {
    /// The batch [`TraceRequestEncoder::encode_into`] encodes on this thread, emptied
    /// between batches.
    static BATCH: RefCell<EncodedSpans> = RefCell::new(EncodedSpans::default());
}

/// The most bytes a scope's buffer of the kept [`BATCH`] keeps between batches (a
/// 512-span batch of the worker's spans is ~400 KB).
const KEPT_BATCH_CAPACITY: usize = 4 << 20;

/// The most bytes kept per thread between spans (a worker's span is under 1 KB).
const KEPT_BODY_CAPACITY: usize = 64 << 10;

/// The bytes a scope's buffer starts with in a batch that had no spans of that scope.
const FIRST_SCOPE_CAPACITY: usize = 32 << 10;

/// Calls `f` with `span`'s message (its fields, without its header), written in the
/// thread's buffer.
pub(crate) fn with_span_message<R>(span: &SpanData, f: impl FnOnce(&[u8]) -> R) -> R {
    SPAN_BODY.with(|body| {
        let Ok(mut body) = body.try_borrow_mut() else {
            // Only if `f` encoded another span on this thread (no caller does).
            let mut own = Vec::new();
            write_span(span, &mut own);
            return f(&own);
        };
        body.clear();
        write_span(span, &mut body);
        let result = f(&body);
        if body.capacity() > KEPT_BODY_CAPACITY {
            *body = Vec::new();
        }
        result
    })
}

/// Ended spans, encoded: per instrumentation scope (in order of first appearance), the
/// `ScopeSpans.spans` fields of its spans, one after the other. What a request holds
/// besides its resource.
#[derive(Debug, Default)]
pub(crate) struct EncodedSpans {
    scopes: Vec<(InstrumentationScope, Vec<u8>)>,
    spans: usize,
}

impl EncodedSpans {
    /// How many spans it holds.
    pub(crate) fn len(&self) -> usize {
        self.spans
    }

    /// Appends `span`.
    pub(crate) fn push(&mut self, span: &SpanData) {
        with_span_message(span, |message| self.push_message(&span.instrumentation_scope, message));
    }

    /// A batch of `spans` (tests build batches so).
    #[cfg(test)]
    pub(crate) fn of(spans: &[SpanData]) -> Self {
        let mut encoded = Self::default();
        for span in spans {
            encoded.push(span);
        }
        encoded
    }

    /// Appends a span of `scope` whose message is `message` ([`with_span_message`]).
    pub(crate) fn push_message(&mut self, scope: &InstrumentationScope, message: &[u8]) {
        let at = match self.scopes.iter().position(|(known, _)| same_scope(known, scope)) {
            Some(at) => at,
            None => {
                // Room for a few dozen spans before the first reallocation.
                self.scopes.push((scope.clone(), Vec::with_capacity(FIRST_SCOPE_CAPACITY)));
                self.scopes.len() - 1
            }
        };
        write_bytes(field::scope_spans::SPANS, message, &mut self.scopes[at].1);
        self.spans += 1;
    }

    /// Empties it, keeping its buffers (up to [`KEPT_BATCH_CAPACITY`] each).
    fn clear(&mut self) {
        for (_, spans) in &mut self.scopes {
            spans.clear();
            if spans.capacity() > KEPT_BATCH_CAPACITY {
                *spans = Vec::new();
            }
        }
        self.spans = 0;
    }

    /// An empty batch with room for a quarter more bytes per scope than this one holds:
    /// the next batch of a steady stream is written without reallocating (a reallocation
    /// copies all that was written, ~400 KB for a batch of the worker's spans).
    pub(crate) fn empty_like(&self) -> Self {
        let room = |spans: &Vec<u8>| Vec::with_capacity(spans.len() + spans.len() / 4);
        let scopes = self.scopes.iter().map(|(scope, spans)| (scope.clone(), room(spans))).collect();
        Self { scopes, spans: 0 }
    }

    /// The scopes that hold spans, with their spans' fields.
    fn scopes(&self) -> impl Iterator<Item = (&InstrumentationScope, &[u8])> + Clone {
        self.scopes.iter().filter(|(_, spans)| !spans.is_empty()).map(|(scope, spans)| (scope, spans.as_slice()))
    }
}

/// Whether two scopes are equal, first by memory: the SDK gives each span a clone of its
/// tracer's scope, whose name is mostly a literal (the same memory in every clone), so
/// the usual answer needs no text compared (~90 instructions per message in the worker).
fn same_scope(a: &InstrumentationScope, b: &InstrumentationScope) -> bool {
    let same_text = |a: Option<&str>, b: Option<&str>| match (a, b) {
        (Some(a), Some(b)) => std::ptr::eq(a, b),
        (a, b) => a.is_none() && b.is_none(),
    };
    let same_memory = same_text(Some(a.name()), Some(b.name()))
        && same_text(a.version(), b.version())
        && same_text(a.schema_url(), b.schema_url())
        && a.attributes().next().is_none()
        && b.attributes().next().is_none();
    same_memory || a == b
}

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
            write_key_value(field::resource::ATTRIBUTES, key.as_str(), value, &mut encoded);
        }
        Self { resource: encoded, schema_url: resource.schema_url().unwrap_or_default().to_owned() }
    }

    /// The bytes of an `ExportTraceServiceRequest` holding `spans`, grouped by
    /// instrumentation scope in order of first appearance.
    pub fn encode(&self, spans: &[SpanData]) -> Vec<u8> {
        let mut buf = Vec::new();
        let written = self.encode_into(spans, &mut buf);
        debug_assert_eq!(buf.len(), written);
        buf
    }

    /// Appends the same bytes to `buf` and returns their length. The spans are encoded
    /// into the thread's [`EncodedSpans`] first, kept between batches (emptied), so a
    /// batch is not written into buffers grown from nothing again.
    pub fn encode_into(&self, spans: &[SpanData], buf: &mut Vec<u8>) -> usize {
        BATCH.with(|batch| {
            let mut own = EncodedSpans::default();
            // Borrowed only here, and nothing here encodes another batch on this thread.
            let mut kept = batch.try_borrow_mut();
            let encoded = kept.as_deref_mut().unwrap_or(&mut own);
            for span in spans {
                encoded.push(span);
            }
            let written = self.encode_spans_into(encoded, buf);
            encoded.clear();
            written
        })
    }

    /// Appends the bytes of an `ExportTraceServiceRequest` holding `spans` to `buf`
    /// (reserving their exact length first) and returns their length.
    pub(crate) fn encode_spans_into(&self, spans: &EncodedSpans, buf: &mut Vec<u8>) -> usize {
        let (resource_spans_len, total) = self.lens(spans);
        buf.reserve_exact(total);
        self.write_head(resource_spans_len, buf);
        for (scope, scope_spans) in spans.scopes() {
            write_scope_spans_head(scope, scope_spans, buf);
            buf.put_slice(scope_spans);
            write_scope_spans_tail(scope, buf);
        }
        write_string(field::resource_spans::SCHEMA_URL, &self.schema_url, buf);
        total
    }

    /// The same request, as chunks to send one after the other: `head` (the gRPC frame's
    /// header, given the request's length) and the request's own headers, then each
    /// scope's spans as they are (moved, not copied), between the small pieces around
    /// them.
    pub(crate) fn encode_spans_chunks(&self, spans: EncodedSpans, head: impl FnOnce(usize) -> Vec<u8>) -> Vec<Bytes> {
        let (resource_spans_len, total) = self.lens(&spans);
        let mut piece = head(total);
        self.write_head(resource_spans_len, &mut piece);
        let mut chunks = Vec::with_capacity(2 * spans.scopes.len() + 1);
        for (scope, scope_spans) in spans.scopes.into_iter().filter(|(_, spans)| !spans.is_empty()) {
            write_scope_spans_head(&scope, &scope_spans, &mut piece);
            chunks.push(Bytes::from(std::mem::take(&mut piece)));
            chunks.push(Bytes::from(scope_spans));
            write_scope_spans_tail(&scope, &mut piece);
        }
        write_string(field::resource_spans::SCHEMA_URL, &self.schema_url, &mut piece);
        chunks.push(Bytes::from(piece));
        chunks
    }

    /// The `ResourceSpans` message's length and the request's.
    fn lens(&self, spans: &EncodedSpans) -> (usize, usize) {
        use field::{request, resource_spans};
        let resource_spans_len = message_field_len(resource_spans::RESOURCE, self.resource.len())
            + spans
                .scopes()
                .map(|(scope, spans)| message_field_len(resource_spans::SCOPE_SPANS, scope_spans_len(scope, spans)))
                .sum::<usize>()
            + string_field_len(resource_spans::SCHEMA_URL, &self.schema_url);
        (resource_spans_len, message_field_len(request::RESOURCE_SPANS, resource_spans_len))
    }

    /// The request's and its `ResourceSpans`' headers, and the resource.
    fn write_head(&self, resource_spans_len: usize, buf: &mut Vec<u8>) {
        use field::{request, resource_spans};
        write_message_header(request::RESOURCE_SPANS, resource_spans_len, buf);
        write_message_header(resource_spans::RESOURCE, self.resource.len(), buf);
        buf.put_slice(&self.resource);
    }
}

/// A `ScopeSpans` message's length, its spans' fields being `spans`.
fn scope_spans_len(scope: &InstrumentationScope, spans: &[u8]) -> usize {
    use field::scope_spans::{SCHEMA_URL, SCOPE};
    message_field_len(SCOPE, scope_len(scope))
        + spans.len()
        + string_field_len(SCHEMA_URL, scope.schema_url().unwrap_or_default())
}

/// What comes before a `ScopeSpans` message's spans: its header and its scope.
fn write_scope_spans_head(scope: &InstrumentationScope, spans: &[u8], buf: &mut Vec<u8>) {
    write_message_header(field::resource_spans::SCOPE_SPANS, scope_spans_len(scope, spans), buf);
    write_message_header(field::scope_spans::SCOPE, scope_len(scope), buf);
    write_scope(scope, buf);
}

/// What comes after them: the scope's schema URL.
fn write_scope_spans_tail(scope: &InstrumentationScope, buf: &mut Vec<u8>) {
    write_string(field::scope_spans::SCHEMA_URL, scope.schema_url().unwrap_or_default(), buf);
}

/// The field numbers of the OTLP messages written here (opentelemetry-proto's
/// `trace/v1/trace.proto`, `common/v1/common.proto`, `collector/trace/v1/trace_service.proto`).
mod field {
    pub(super) mod request {
        pub(crate) const RESOURCE_SPANS: u32 = 1;
    }
    pub(super) mod resource_spans {
        pub(crate) const RESOURCE: u32 = 1;
        pub(crate) const SCOPE_SPANS: u32 = 2;
        pub(crate) const SCHEMA_URL: u32 = 3;
    }
    pub(super) mod resource {
        pub(crate) const ATTRIBUTES: u32 = 1;
    }
    pub(super) mod scope_spans {
        pub(crate) const SCOPE: u32 = 1;
        pub(crate) const SPANS: u32 = 2;
        pub(crate) const SCHEMA_URL: u32 = 3;
    }
    pub(super) mod scope {
        pub(crate) const NAME: u32 = 1;
        pub(crate) const VERSION: u32 = 2;
        pub(crate) const ATTRIBUTES: u32 = 3;
    }
    pub(super) mod span {
        pub(crate) const TRACE_ID: u32 = 1;
        pub(crate) const SPAN_ID: u32 = 2;
        pub(crate) const TRACE_STATE: u32 = 3;
        pub(crate) const PARENT_SPAN_ID: u32 = 4;
        pub(crate) const NAME: u32 = 5;
        pub(crate) const KIND: u32 = 6;
        pub(crate) const START_TIME_UNIX_NANO: u32 = 7;
        pub(crate) const END_TIME_UNIX_NANO: u32 = 8;
        pub(crate) const ATTRIBUTES: u32 = 9;
        pub(crate) const DROPPED_ATTRIBUTES_COUNT: u32 = 10;
        pub(crate) const EVENTS: u32 = 11;
        pub(crate) const DROPPED_EVENTS_COUNT: u32 = 12;
        pub(crate) const LINKS: u32 = 13;
        pub(crate) const DROPPED_LINKS_COUNT: u32 = 14;
        pub(crate) const STATUS: u32 = 15;
        pub(crate) const FLAGS: u32 = 16;
    }
    pub(super) mod event {
        pub(crate) const TIME_UNIX_NANO: u32 = 1;
        pub(crate) const NAME: u32 = 2;
        pub(crate) const ATTRIBUTES: u32 = 3;
        pub(crate) const DROPPED_ATTRIBUTES_COUNT: u32 = 4;
    }
    /// `trace_id` and `span_id` are 1 and 2, as in a span (`write_ids`).
    pub(super) mod link {
        pub(crate) const TRACE_STATE: u32 = 3;
        pub(crate) const ATTRIBUTES: u32 = 4;
        pub(crate) const DROPPED_ATTRIBUTES_COUNT: u32 = 5;
        pub(crate) const FLAGS: u32 = 6;
    }
    pub(super) mod status {
        pub(crate) const MESSAGE: u32 = 2;
        pub(crate) const CODE: u32 = 3;
    }
    pub(super) mod key_value {
        pub(crate) const KEY: u32 = 1;
        pub(crate) const VALUE: u32 = 2;
    }
    pub(super) mod any_value {
        pub(crate) const STRING: u32 = 1;
        pub(crate) const BOOL: u32 = 2;
        pub(crate) const INT: u32 = 3;
        pub(crate) const DOUBLE: u32 = 4;
        pub(crate) const ARRAY: u32 = 5;
    }
    pub(super) mod array_value {
        pub(crate) const VALUES: u32 = 1;
    }
}

/// `Status.code`: `STATUS_CODE_OK`, `STATUS_CODE_ERROR` (unset is 0, not written).
const STATUS_OK: u64 = 1;
const STATUS_ERROR: u64 = 2;

// --- lengths of attributes, their values and the scope -----------------------------------

fn message_field_len(tag: u32, len: usize) -> usize {
    key_len(tag) + encoded_len_varint(len as u64) + len
}

fn string_field_len(tag: u32, s: &str) -> usize {
    if s.is_empty() { 0 } else { message_field_len(tag, s.len()) }
}

fn attributes_len<'a>(tag: u32, attributes: impl Iterator<Item = &'a KeyValue>) -> usize {
    attributes.map(|kv| message_field_len(tag, key_value_len(kv.key.as_str(), any_value_len(&kv.value)))).sum()
}

/// A `KeyValue` whose `AnyValue` is `value_len` long.
fn key_value_len(key: &str, value_len: usize) -> usize {
    string_field_len(field::key_value::KEY, key) + message_field_len(field::key_value::VALUE, value_len)
}

/// `AnyValue`: a oneof, so even a default value (`""`, `false`, `0`) is written.
fn any_value_len(value: &Value) -> usize {
    use field::any_value::{ARRAY, BOOL, DOUBLE, INT, STRING};
    match value {
        Value::Bool(b) => key_len(BOOL) + encoded_len_varint(u64::from(*b)),
        Value::I64(i) => key_len(INT) + encoded_len_varint(*i as u64),
        Value::F64(_) => key_len(DOUBLE) + 8,
        Value::String(s) => string_value_len(s),
        Value::Array(array) => message_field_len(ARRAY, array_len(array)),
        other => message_field_len(STRING, other.to_string().len()),
    }
}

fn array_len(array: &Array) -> usize {
    use field::array_value::VALUES;
    let item = |v: Value| message_field_len(VALUES, any_value_len(&v));
    match array {
        Array::Bool(values) => values.iter().map(|v| item(Value::Bool(*v))).sum(),
        Array::I64(values) => values.iter().map(|v| item(Value::I64(*v))).sum(),
        Array::F64(values) => values.iter().map(|v| item(Value::F64(*v))).sum(),
        Array::String(values) => values.iter().map(|v| message_field_len(VALUES, string_value_len(v))).sum(),
        other => item(Value::String(other.to_string().into())),
    }
}

fn string_value_len(s: &StringValue) -> usize {
    message_field_len(field::any_value::STRING, s.as_str().len())
}

fn scope_len(scope: &InstrumentationScope) -> usize {
    use field::scope::{ATTRIBUTES, NAME, VERSION};
    string_field_len(NAME, scope.name())
        + string_field_len(VERSION, scope.version().unwrap_or_default())
        + attributes_len(ATTRIBUTES, scope.attributes())
}

/// The W3C `tracestate` header (built only when there is one).
fn trace_state(cx: &SpanContext) -> Cow<'static, str> {
    if *cx.trace_state() == TraceState::NONE { Cow::Borrowed("") } else { Cow::Owned(cx.trace_state().header()) }
}

// --- values --------------------------------------------------------------------------

/// Nanoseconds since the epoch: 0 (a field not written) for the epoch and before,
/// saturating past the year 2554.
fn nanos(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

/// `Span.SpanKind`.
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

// --- writing ---------------------------------------------------------------------------

/// A varint; most (field keys, lengths of short values) are one byte, written without
/// a call into prost's general loop (a fifth of the encoder's time, measured with perf).
#[inline]
fn put_varint<B: BufMut>(v: u64, buf: &mut B) {
    if v < 0x80 {
        buf.put_u8(v as u8);
    } else {
        encode_varint(v, buf);
    }
}

/// A field key (`tag << 3 | wire type`).
#[inline]
fn put_key<B: BufMut>(tag: u32, wire_type: WireType, buf: &mut B) {
    put_varint(u64::from(tag << 3 | wire_type as u32), buf);
}

fn write_message_header<B: BufMut>(tag: u32, len: usize, buf: &mut B) {
    put_key(tag, WireType::LengthDelimited, buf);
    put_varint(len as u64, buf);
}

fn write_bytes<B: BufMut>(tag: u32, bytes: &[u8], buf: &mut B) {
    write_message_header(tag, bytes.len(), buf);
    buf.put_slice(bytes);
}

fn write_string<B: BufMut>(tag: u32, s: &str, buf: &mut B) {
    if !s.is_empty() {
        write_bytes(tag, s.as_bytes(), buf);
    }
}

fn write_varint<B: BufMut>(tag: u32, v: u64, buf: &mut B) {
    if v != 0 {
        put_key(tag, WireType::Varint, buf);
        put_varint(v, buf);
    }
}

fn write_fixed64<B: BufMut>(tag: u32, v: u64, buf: &mut B) {
    if v != 0 {
        put_key(tag, WireType::SixtyFourBit, buf);
        buf.put_slice(&v.to_le_bytes());
    }
}

fn write_fixed32<B: BufMut>(tag: u32, v: u32, buf: &mut B) {
    put_key(tag, WireType::ThirtyTwoBit, buf);
    buf.put_slice(&v.to_le_bytes());
}

fn write_key_value<B: BufMut>(tag: u32, key: &str, value: &Value, buf: &mut B) {
    use field::key_value::{KEY, VALUE};
    if tag < 0x10 && !key.is_empty() && write_short_key_value(tag, key, value, buf) {
        return;
    }
    let value_len = any_value_len(value);
    write_message_header(tag, key_value_len(key, value_len), buf);
    write_string(KEY, key, buf);
    write_message_header(VALUE, value_len, buf);
    write_any_value(value, buf);
}

/// A key-value whose every length is one byte (most attributes), its length counted and
/// its bytes written in one pass: the bytes before the key, and those before the value,
/// four at a time; a number's varint made on the stack and written at once. `false`
/// (nothing written) when it is not that short. Measured (`scripts/per-message-instructions.sh
/// spans+grpc`, 2026-12-04): 6,552 -> 6,230 instructions per traced message against
/// counting the lengths first, a `match` on the value each.
fn write_short_key_value<B: BufMut>(tag: u32, key: &str, value: &Value, buf: &mut B) -> bool {
    use field::any_value::{BOOL, DOUBLE, INT, STRING};
    use field::key_value::{KEY, VALUE};
    let head = |len: usize, buf: &mut B| {
        buf.put_slice(&[length_delimited(tag), len as u8, length_delimited(KEY), key.len() as u8]);
        buf.put_slice(key.as_bytes());
    };
    // The KeyValue's length: the key's field (2 + key) and the value's header (2), then
    // the AnyValue's own bytes.
    let short = |any_value_len: usize| {
        let len = 4 + key.len() + any_value_len;
        (len < 0x80).then_some(len)
    };
    match value {
        Value::String(s) => {
            let s = s.as_str();
            let Some(len) = short(2 + s.len()) else { return false };
            head(len, buf);
            buf.put_slice(&[length_delimited(VALUE), (2 + s.len()) as u8, length_delimited(STRING), s.len() as u8]);
            buf.put_slice(s.as_bytes());
        }
        Value::I64(i) => {
            let mut any_value = [0; 13];
            any_value[2] = (INT << 3 | WireType::Varint as u32) as u8;
            let varint_len = put_varint_at(*i as u64, &mut any_value[3..]);
            let Some(len) = short(1 + varint_len) else { return false };
            any_value[0] = length_delimited(VALUE);
            any_value[1] = (1 + varint_len) as u8;
            head(len, buf);
            buf.put_slice(&any_value[..3 + varint_len]);
        }
        Value::F64(f) => {
            let Some(len) = short(9) else { return false };
            head(len, buf);
            buf.put_slice(&[length_delimited(VALUE), 9, (DOUBLE << 3 | WireType::SixtyFourBit as u32) as u8]);
            buf.put_slice(&f.to_le_bytes());
        }
        Value::Bool(b) => {
            let Some(len) = short(2) else { return false };
            head(len, buf);
            buf.put_slice(&[length_delimited(VALUE), 2, (BOOL << 3 | WireType::Varint as u32) as u8, u8::from(*b)]);
        }
        _ => return false,
    }
    true
}

/// Writes `v` as a varint at the start of `out` (at least 10 bytes); returns its length.
fn put_varint_at(mut v: u64, out: &mut [u8]) -> usize {
    let mut n = 0;
    while v >= 0x80 {
        out[n] = (v as u8) | 0x80;
        v >>= 7;
        n += 1;
    }
    out[n] = v as u8;
    n + 1
}

/// The one-byte key of length-delimited field `tag` (below 16).
const fn length_delimited(tag: u32) -> u8 {
    (tag << 3 | WireType::LengthDelimited as u32) as u8
}

/// The fields of an `AnyValue` (its oneof always written).
fn write_any_value<B: BufMut>(value: &Value, buf: &mut B) {
    use field::any_value::{ARRAY, BOOL, DOUBLE, INT, STRING};
    match value {
        Value::Bool(b) => {
            put_key(BOOL, WireType::Varint, buf);
            put_varint(u64::from(*b), buf);
        }
        Value::I64(i) => {
            put_key(INT, WireType::Varint, buf);
            put_varint(*i as u64, buf);
        }
        Value::F64(f) => {
            put_key(DOUBLE, WireType::SixtyFourBit, buf);
            buf.put_slice(&f.to_le_bytes());
        }
        Value::String(s) => write_bytes(STRING, s.as_str().as_bytes(), buf),
        Value::Array(array) => {
            write_message_header(ARRAY, array_len(array), buf);
            write_array(array, buf);
        }
        other => write_bytes(STRING, other.to_string().as_bytes(), buf),
    }
}

fn write_array<B: BufMut>(array: &Array, buf: &mut B) {
    use field::array_value::VALUES;
    let item = |v: &Value, buf: &mut B| {
        write_message_header(VALUES, any_value_len(v), buf);
        write_any_value(v, buf);
    };
    match array {
        Array::Bool(values) => values.iter().for_each(|v| item(&Value::Bool(*v), buf)),
        Array::I64(values) => values.iter().for_each(|v| item(&Value::I64(*v), buf)),
        Array::F64(values) => values.iter().for_each(|v| item(&Value::F64(*v), buf)),
        Array::String(values) => values.iter().for_each(|v| {
            write_message_header(VALUES, string_value_len(v), buf);
            write_bytes(field::any_value::STRING, v.as_str().as_bytes(), buf);
        }),
        other => item(&Value::String(other.to_string().into()), buf),
    }
}

fn write_scope<B: BufMut>(scope: &InstrumentationScope, buf: &mut B) {
    use field::scope::{ATTRIBUTES, NAME, VERSION};
    write_string(NAME, scope.name(), buf);
    write_string(VERSION, scope.version().unwrap_or_default(), buf);
    for kv in scope.attributes() {
        write_key_value(ATTRIBUTES, kv.key.as_str(), &kv.value, buf);
    }
}

/// `trace_id` and `span_id`, the same field numbers in a span and a link.
fn write_ids<B: BufMut>(cx: &SpanContext, buf: &mut B) {
    write_bytes(field::span::TRACE_ID, &cx.trace_id().to_bytes(), buf);
    write_bytes(field::span::SPAN_ID, &cx.span_id().to_bytes(), buf);
}

/// Field `tag`, a message that `write` writes: its length written after it, in the byte
/// kept for it (the bytes moved up when it needs more: a message of 128 bytes or more).
fn write_nested(tag: u32, buf: &mut Vec<u8>, write: impl FnOnce(&mut Vec<u8>)) {
    put_key(tag, WireType::LengthDelimited, buf);
    let at = buf.len();
    buf.push(0);
    write(buf);
    let len = buf.len() - at - 1;
    if len < 0x80 {
        buf[at] = len as u8;
    } else {
        let mut varint = Vec::with_capacity(10);
        encode_varint(len as u64, &mut varint);
        buf.splice(at..=at, varint);
    }
}

/// A span's fields (its message without the field header).
fn write_span(span: &SpanData, buf: &mut Vec<u8>) {
    use field::span::*;
    write_ids(&span.span_context, buf);
    write_string(TRACE_STATE, &trace_state(&span.span_context), buf);
    if span.parent_span_id != SpanId::INVALID {
        write_bytes(PARENT_SPAN_ID, &span.parent_span_id.to_bytes(), buf);
    }
    write_string(NAME, &span.name, buf);
    write_varint(KIND, kind(&span.span_kind), buf);
    write_fixed64(START_TIME_UNIX_NANO, nanos(span.start_time), buf);
    write_fixed64(END_TIME_UNIX_NANO, nanos(span.end_time), buf);
    write_attributes(ATTRIBUTES, &span.attributes, buf);
    write_varint(DROPPED_ATTRIBUTES_COUNT, u64::from(span.dropped_attributes_count), buf);
    for event in span.events.iter() {
        write_nested(EVENTS, buf, |buf| write_event(event, buf));
    }
    write_varint(DROPPED_EVENTS_COUNT, u64::from(span.events.dropped_count), buf);
    for link in span.links.iter() {
        write_nested(LINKS, buf, |buf| write_link(link, buf));
    }
    write_varint(DROPPED_LINKS_COUNT, u64::from(span.links.dropped_count), buf);
    write_nested(STATUS, buf, |buf| write_status(&span.status, buf));
    write_fixed32(FLAGS, flags(&span.span_context, span.parent_span_is_remote), buf);
}

fn write_event(event: &Event, buf: &mut Vec<u8>) {
    use field::event::*;
    write_fixed64(TIME_UNIX_NANO, nanos(event.timestamp), buf);
    write_string(NAME, &event.name, buf);
    write_attributes(ATTRIBUTES, &event.attributes, buf);
    write_varint(DROPPED_ATTRIBUTES_COUNT, u64::from(event.dropped_attributes_count), buf);
}

fn write_link(link: &Link, buf: &mut Vec<u8>) {
    use field::link::*;
    write_ids(&link.span_context, buf);
    write_string(TRACE_STATE, &trace_state(&link.span_context), buf);
    write_attributes(ATTRIBUTES, &link.attributes, buf);
    write_varint(DROPPED_ATTRIBUTES_COUNT, u64::from(link.dropped_attributes_count), buf);
    write_fixed32(FLAGS, flags(&link.span_context, link.span_context.is_remote()), buf);
}

fn write_status(status: &Status, buf: &mut Vec<u8>) {
    use field::status::{CODE, MESSAGE};
    match status {
        Status::Unset => {}
        Status::Ok => write_varint(CODE, STATUS_OK, buf),
        Status::Error { description } => {
            write_string(MESSAGE, description, buf);
            write_varint(CODE, STATUS_ERROR, buf);
        }
    }
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
            KeyValue::new("messaging.nats.stream.sequence", 1_i64 << 40),
            KeyValue::new("flag", true),
            // The longest key-values of one-byte lengths (127 bytes) and the shortest past them.
            KeyValue::new("n".repeat(120), 300_i64),
            KeyValue::new("m".repeat(121), 300_i64),
            KeyValue::new("f".repeat(114), 1.5),
            KeyValue::new("g".repeat(115), 1.5),
            KeyValue::new("b".repeat(121), true),
            KeyValue::new("c".repeat(122), true),
            KeyValue::new("messaging.nats.queue_wait", 0.002),
            KeyValue::new("bools", Value::Array(Array::Bool(vec![true, false]))),
            KeyValue::new("ints", Value::Array(Array::I64(vec![1, -1, 0]))),
            KeyValue::new("floats", Value::Array(Array::F64(vec![0.5, 0.0]))),
            KeyValue::new("strings", Value::Array(Array::String(vec!["a".into(), "".into()]))),
            KeyValue::new("nonascii", "grüße ✓"),
            // Lengths of two bytes and more (a value, a key, an array's item).
            KeyValue::new("long", "x".repeat(300)),
            KeyValue::new("k".repeat(130), "v"),
            KeyValue::new("long strings", Value::Array(Array::String(vec!["y".repeat(200).into()]))),
        ]);
        process.add_event("ack", vec![KeyValue::new("messaging.operation.type", "settle")]);
        process.add_event("no attributes", vec![]);
        // Events, links and a status of 128 bytes and more (their lengths take two bytes).
        process.add_event("exception", vec![KeyValue::new("exception.message", "e".repeat(200))]);
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
        limited.status = Status::error("z".repeat(150));
        let linked = spans[1].span_context.clone();
        limited.links.links.push(Link::new(linked, vec![KeyValue::new("link.note", "n".repeat(140))], 0));
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

    /// The encoder redacts as the span processor does: span, event and link attributes.
    #[test]
    fn attributes_are_written_redacted_as_the_policy_rewrites_them() {
        let exporter = InMemorySpanExporter::default();
        let provider = SdkTracerProvider::builder().with_simple_exporter(exporter.clone()).build();
        let tracer = provider.tracer("persist-worker");
        let linked = SpanContext::new(TraceId::from(7), SpanId::from(9), TraceFlags::SAMPLED, true, TraceState::NONE);
        for round in 0..3 {
            let mut span = tracer
                .span_builder("process chat.msg.*.*")
                .with_links(vec![Link::new(linked.clone(), vec![KeyValue::new("nats.jwt", "eyJ.link")], 0)])
                .start(&tracer);
            span.set_attributes([
                KeyValue::new("messaging.system", "nats"),
                KeyValue::new("auth.token", "eyJ.literal"),
                KeyValue::new("messaging.destination.name", format!("chat.msg.r{round}.u")),
                KeyValue::new(opentelemetry::Key::from("user_password".to_owned()), "hunter2".to_owned()),
            ]);
            span.add_event("exception", vec![KeyValue::new("chat.text", "hello".to_owned())]);
            span.end();
        }
        let (resource, spans) = (resource(), exporter.get_finished_spans().expect("spans"));
        let ours = TraceRequestEncoder::new(&resource).encode(&spans);
        let redacted: Vec<SpanData> = spans
            .into_iter()
            .map(|mut span| {
                crate::policy::redact_span(&mut span);
                span
            })
            .collect();
        let official = ExportTraceServiceRequest {
            resource_spans: group_spans_by_resource_and_scope(redacted, &ResourceAttributesWithSchema::from(&resource)),
        };
        assert_eq!(ExportTraceServiceRequest::decode(ours.as_slice()).expect("decodes"), official);
        for secret in ["eyJ", "hunter2", "hello"] {
            assert!(!ours.windows(secret.len()).any(|w| w == secret.as_bytes()), "{secret} in the bytes");
        }
    }

    #[test]
    fn batches_encoded_one_after_the_other_on_a_thread_are_each_their_own() {
        let (resource, spans) = (resource(), sdk_spans());
        let encoder = TraceRequestEncoder::new(&resource);
        let alone = encoder.encode(&spans[..2]);
        // A bigger batch first leaves more span bytes in the thread's buffer.
        encoder.encode(&spans);
        let mut after = vec![0xAA; 3];
        let written = encoder.encode_into(&spans[..2], &mut after);
        assert_eq!(&after[..3], &[0xAA; 3], "appended after what the buffer held");
        assert_eq!((written, &after[3..]), (alone.len(), alone.as_slice()));
    }

    #[test]
    fn a_next_batch_holds_only_its_own_spans() {
        let (resource, spans) = (resource(), sdk_spans());
        let encoder = TraceRequestEncoder::new(&resource);
        let mut reused = EncodedSpans::of(&spans).empty_like();
        // Only spans of the first scope now: the other scope's empty buffer is not a
        // `ScopeSpans` of the request.
        let first_scope: Vec<SpanData> =
            spans.iter().filter(|s| s.instrumentation_scope == spans[0].instrumentation_scope).cloned().collect();
        assert!(first_scope.len() < spans.len(), "the spans have two scopes");
        for span in &first_scope {
            reused.push(span);
        }
        assert_eq!(reused.len(), first_scope.len());
        let mut ours = Vec::new();
        encoder.encode_spans_into(&reused, &mut ours);
        assert_eq!(ours, encoder.encode(&first_scope));
        let decoded = ExportTraceServiceRequest::decode(ours.as_slice()).expect("decodes");
        assert_eq!(decoded.resource_spans[0].scope_spans.len(), 1);
    }

    #[test]
    fn chunks_are_the_same_request_after_their_head() {
        let (resource, spans) = (resource(), sdk_spans());
        let encoder = TraceRequestEncoder::new(&resource);
        let mut given = 0;
        let chunks = encoder.encode_spans_chunks(EncodedSpans::of(&spans), |len| {
            given = len;
            vec![0xAA, len as u8]
        });
        let joined: Vec<u8> = chunks.iter().flat_map(|chunk| chunk.iter().copied()).collect();
        let whole = encoder.encode(&spans);
        assert_eq!(given, whole.len(), "the head is given the request's length");
        assert_eq!((joined[0], &joined[2..]), (0xAA, whole.as_slice()));
        assert_eq!(chunks.len(), 2 * 2 + 1, "two scopes: a piece before and the spans of each, and the end");
    }

    #[test]
    fn scopes_are_the_same_by_memory_or_by_text_and_never_otherwise() {
        let scope = |name: &str, version: &'static str| {
            InstrumentationScope::builder(name.to_owned()).with_version(version).build()
        };
        let literal = InstrumentationScope::builder("worker").with_version("1").build();
        assert!(same_scope(&literal, &literal.clone()), "a clone: the same memory");
        assert!(same_scope(&literal, &scope("worker", "1")), "the same text elsewhere");
        assert!(!same_scope(&literal, &scope("worken", "1")), "a name of the same length");
        static NAME: &str = "worker";
        let named = |version: &'static str| InstrumentationScope::builder(NAME).with_version(version).build();
        assert!(!same_scope(&named("1"), &named("2")), "another version, the name at the same memory");
        let attributed =
            InstrumentationScope::builder("worker").with_version("1").with_attributes([KeyValue::new("a", 1)]).build();
        assert!(!same_scope(&literal, &attributed), "attributes: compared, not assumed");
        assert!(same_scope(&attributed, &attributed.clone()));
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

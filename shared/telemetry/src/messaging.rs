//! Spans for NATS messaging, named and attributed as DESIGN.md 5.2 and the OpenTelemetry
//! messaging conventions ask, built with the OpenTelemetry API directly: they are on the
//! per-message path, where a `tracing` span costs several times a raw one.
//!
//! Owns: span names (`{operation} {subject template}`, never a raw subject), kinds,
//! `messaging.*` / `server.*` attributes, parenting from message headers, how a failure
//! or a missed deadline is recorded, and [`Traced`], the handle a span is used through.
//!
//! Cost rules, measured by `benches/per_message.rs`: the static attributes of a span are
//! built once per service ([`Messaging`]); a span's name is a `&'static str` (made once
//! per operation and template); per-message attributes are built only when the sampler
//! records the span; the parent context is extracted once per message.
//!
//! Log lines and `tracing` spans (database spans, for example) inside a [`Traced`] future
//! or closure ([`Traced::scope`], [`Traced::in_scope`]) carry its trace and span ids:
//! the span's context is the current OpenTelemetry context while they run.

use std::borrow::Cow;
use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use async_nats::HeaderMap;
use opentelemetry::context::{FutureExt as _, WithContext};
use opentelemetry::trace::{SpanBuilder, SpanContext, SpanKind, Status, TraceContextExt as _};
use opentelemetry::{Context, KeyValue, StringValue, Value};

use crate::propagation::{extract_context, inject_context};
use crate::tracer::SpanTracer;

/// The message a span is about. Only the template goes into the span name.
#[derive(Debug, Clone, Copy)]
pub struct MessageRef<'a> {
    /// The real subject, e.g. `chat.msg.general.alice` (`messaging.destination.name`).
    pub subject: &'a str,
    /// Its low-cardinality template, e.g. `chat.msg.*.*` (`messaging.destination.template`).
    pub template: &'static str,
    /// `Nats-Msg-Id`, when the message has one (`messaging.message.id`).
    pub message_id: Option<&'a str>,
    /// Payload size in bytes (`messaging.message.body.size`).
    pub body_size: usize,
}

/// The NATS server a client talks to (`server.address`, `server.port`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Peer {
    /// Host name or address.
    pub address: String,
    /// TCP port.
    pub port: u16,
}

impl Peer {
    /// The first server of a NATS URL list such as `nats://nats:4222,nats://b:4222`.
    /// Credentials in the URL are dropped; the port defaults to 4222.
    pub fn from_url(url: &str) -> Self {
        let first = url.split(',').next().unwrap_or_default().trim();
        let without_scheme = first.split_once("://").map_or(first, |(_, rest)| rest);
        let host_port = without_scheme.rsplit_once('@').map_or(without_scheme, |(_, hp)| hp);
        let host_port = host_port.split('/').next().unwrap_or_default();
        match host_port.rsplit_once(':') {
            Some((host, port)) if !host.ends_with(':') => {
                Self { address: host.trim_matches(['[', ']']).to_owned(), port: port.parse().unwrap_or(4222) }
            }
            _ => Self { address: host_port.to_owned(), port: 4222 },
        }
    }
}

/// JetStream delivery facts for a consumer span, read from the delivery's reply subject.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DeliveryFacts {
    /// Stream sequence (`messaging.nats.stream.sequence`).
    pub stream_sequence: u64,
    /// 1 on first delivery (`messaging.nats.delivery_count`).
    pub delivery_count: u64,
    /// When the server stored the message.
    pub published: time::OffsetDateTime,
    /// Time between the server storing the message and this delivery, in seconds
    /// (`messaging.nats.queue_wait`).
    pub queue_wait_seconds: f64,
}

impl DeliveryFacts {
    /// Reads the delivery facts from a JetStream message's reply-subject metadata.
    pub fn from_info(info: &async_nats::jetstream::message::Info<'_>) -> Self {
        let waited = time::OffsetDateTime::now_utc() - info.published;
        Self {
            stream_sequence: info.stream_sequence,
            delivery_count: u64::try_from(info.delivered).unwrap_or(1),
            published: info.published,
            queue_wait_seconds: waited.as_seconds_f64().max(0.0),
        }
    }

    /// A delivery after the first one.
    pub fn is_redelivery(&self) -> bool {
        self.delivery_count > 1
    }
}

/// How a JetStream delivery was settled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Settlement {
    /// Processed; never redelivered.
    Ack,
    /// Failed for now; redelivered after this delay.
    Nak(Duration),
    /// Will never succeed; not redelivered.
    Term,
}

impl Settlement {
    /// `ack`, `nak` or `term`: the event's (or settle span's) name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Ack => "ack",
            Self::Nak(_) => "nak",
            Self::Term => "term",
        }
    }

    /// What is sent to the server.
    pub fn ack_kind(self) -> async_nats::jetstream::AckKind {
        use async_nats::jetstream::AckKind;
        match self {
            Self::Ack => AckKind::Ack,
            Self::Nak(delay) => AckKind::Nak(Some(delay)),
            Self::Term => AckKind::Term,
        }
    }
}

fn as_i64(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

fn text(value: &str) -> Value {
    Value::String(StringValue::from(value.to_owned()))
}

/// Span names `{operation} {template}` as `&'static str`, made once per pair (span names
/// are `Cow<'static, str>`: a borrowed name costs no allocation per span, also when the
/// span is not recorded). The pairs are few and their strings are literals: a short list
/// searched by address, no hashing. Measured (`scripts/per-message-instructions.sh`,
/// 2026-12-03): without it a message costs 730 more instructions with tracing off
/// (7,060 -> 7,790) and 180 more traced.
struct SpanNames {
    names: RwLock<Vec<((usize, usize), &'static str)>>,
}

static SPAN_NAMES: SpanNames = SpanNames { names: RwLock::new(Vec::new()) };

impl SpanNames {
    fn get(&self, operation: &'static str, template: &'static str) -> &'static str {
        let key = (operation.as_ptr() as usize ^ operation.len(), template.as_ptr() as usize ^ template.len());
        let find = |names: &[((usize, usize), &'static str)]| {
            names
                .iter()
                .find(|(k, name)| *k == key && name.len() == operation.len() + 1 + template.len())
                .map(|(_, n)| *n)
        };
        if let Some(name) = self.names.read().ok().and_then(|n| find(&n)) {
            return name;
        }
        let Ok(mut names) = self.names.write() else { return operation };
        if let Some(name) = find(&names) {
            return name;
        }
        let name: &'static str = Box::leak(format!("{operation} {template}").into_boxed_str());
        names.push((key, name));
        name
    }
}

/// A started span and its context: what the code holds while it works on a message.
/// Cheap to clone; the span ends at [`Traced::end`] or when the last clone is dropped.
#[derive(Debug, Clone, Default)]
pub struct Traced {
    cx: Context,
}

impl Traced {
    /// No span: used where tracing is off for a path (and in tests).
    pub fn none() -> Self {
        Self::default()
    }

    /// Wraps a context (its active span) as a `Traced`.
    pub fn from_context(cx: Context) -> Self {
        Self { cx }
    }

    /// The context, with this span active (for parenting and injection).
    pub fn context(&self) -> &Context {
        &self.cx
    }

    /// The span's identity.
    pub fn span_context(&self) -> SpanContext {
        self.cx.span().span_context().clone()
    }

    /// Whether the span is recorded (sampled); attributes and events of a span that is
    /// not are dropped, so callers may skip building them.
    pub fn is_recording(&self) -> bool {
        self.cx.span().is_recording()
    }

    /// Runs `future` with this span as the current context (log lines and `tracing`
    /// spans inside become its children). The async twin of [`Traced::in_scope`] (not
    /// named `instrument`, which `tracing::Instrument` would shadow).
    pub fn scope<F: Future>(&self, future: F) -> WithContext<F> {
        future.with_context(self.cx.clone())
    }

    /// Runs `f` with this span as the current context.
    pub fn in_scope<R>(&self, f: impl FnOnce() -> R) -> R {
        let _current = self.cx.clone().attach();
        f()
    }

    /// Sets one attribute (dropped if the span is not recorded).
    pub fn set_attribute(&self, attribute: KeyValue) {
        self.cx.span().set_attribute(attribute);
    }

    /// Adds an event (dropped if the span is not recorded).
    pub fn add_event(&self, name: &'static str, attributes: Vec<KeyValue>) {
        self.cx.span().add_event(name, attributes);
    }

    /// The settlement of the delivery this span processes, as an event `ack` (`nak` with
    /// its delay, `term`) with `messaging.operation.type = settle`.
    pub fn add_settlement(&self, settlement: Settlement) {
        if !self.is_recording() {
            return;
        }
        let mut attributes = vec![
            KeyValue::new("messaging.operation.type", "settle"),
            KeyValue::new("messaging.operation.name", settlement.as_str()),
        ];
        if let Settlement::Nak(delay) = settlement {
            attributes.push(KeyValue::new("messaging.nats.nak_delay", delay.as_secs_f64()));
        }
        self.add_event(settlement.as_str(), attributes);
    }

    /// Injects this span's context into `headers` (W3C trace context and baggage).
    pub fn inject(&self, headers: &mut HeaderMap) {
        inject_context(&self.cx, headers);
    }

    /// Ends the span now.
    pub fn end(&self) {
        self.cx.span().end();
    }
}

/// The messaging spans of one service: its tracer and the attributes that are the same
/// for every span (the server it talks to), built once. Cheap to clone.
#[derive(Clone)]
pub struct Messaging {
    inner: Arc<MessagingInner>,
}

struct MessagingInner {
    tracer: SpanTracer,
    server: [KeyValue; 2],
    /// Set once a span of a sampled parent (or a root) was recording: from then on such
    /// spans get their attributes in the builder. Never set for a no-op tracer, whose
    /// spans then cost no attribute building at all.
    records_sampled: AtomicBool,
}

impl std::fmt::Debug for Messaging {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Messaging").field("server", &self.inner.server).finish_non_exhaustive()
    }
}

/// The shape of one messaging span.
struct Shape<'a> {
    kind: SpanKind,
    operation: &'static str,
    operation_type: &'static str,
    group: Option<&'static str>,
    delivery: Option<&'a DeliveryFacts>,
}

impl Messaging {
    /// Spans of the pipeline [`crate::init`] built (or of the global tracer provider) for a
    /// client of `peer`.
    pub fn new(scope: &'static str, peer: &Peer) -> Self {
        Self::with_tracer(SpanTracer::named(scope), peer)
    }

    /// Spans of `tracer` (benchmarks and tests bring their own provider).
    pub fn with_tracer(tracer: impl Into<SpanTracer>, peer: &Peer) -> Self {
        let tracer = tracer.into();
        // Leaked once per service: a static value is copied into each span, where a shared
        // one would be counted up and down (an atomic each way, on the threads that start
        // and end spans).
        let address: &'static str = Box::leak(peer.address.clone().into_boxed_str());
        let server = [
            KeyValue::new("server.address", Value::String(StringValue::from(address))),
            KeyValue::new("server.port", i64::from(peer.port)),
        ];
        Self { inner: Arc::new(MessagingInner { tracer, server, records_sampled: AtomicBool::new(false) }) }
    }

    /// One span shape for every messaging operation. A span that will be recorded gets its
    /// attributes in the span builder: the SDK moves the `Vec` in, instead of growing its
    /// own by one locked `set_attribute` each (2 µs of the 3 µs a `process` span cost).
    /// Whether it will be is known only afterwards, so: a child of an unsampled parent (never
    /// recorded under the parent-based samplers, the default) and every span until one
    /// was seen recording (a no-op tracer never is) get their attributes only if they turn
    /// out to be recording; after that, sampled children and roots go through the builder.
    fn start(&self, shape: &Shape<'_>, msg: &MessageRef<'_>, parent: &Context) -> Traced {
        let tracer = &self.inner.tracer;
        let name = SPAN_NAMES.get(shape.operation, msg.template);
        let builder = SpanBuilder::from_name(Cow::Borrowed(name)).with_kind(shape.kind.clone());
        let parent_span = parent.span();
        let parent_context = parent_span.span_context();
        let likely = !parent_context.is_valid() || parent_context.is_sampled();
        if likely && self.inner.records_sampled.load(Ordering::Relaxed) {
            return Traced { cx: tracer.start(builder.with_attributes(self.attributes(shape, msg)), parent) };
        }
        let cx = tracer.start(builder, parent);
        if cx.span().is_recording() {
            cx.span().set_attributes(self.attributes(shape, msg));
            if likely {
                self.inner.records_sampled.store(true, Ordering::Relaxed);
            }
        }
        Traced { cx }
    }

    fn attributes(&self, shape: &Shape<'_>, msg: &MessageRef<'_>) -> Vec<KeyValue> {
        // One push each: an array of them extended would be built, then copied (~230
        // instructions of copying per `process` span, measured in the worker). Those the
        // same for every span of its shape come first, up to the subject (an owned text):
        // the encoder writes them as one held run (`otlp::encode::runs`).
        let mut attributes = Vec::with_capacity(16);
        attributes.push(KeyValue::new("messaging.system", "nats"));
        attributes.push(KeyValue::new("messaging.operation.name", shape.operation));
        attributes.push(KeyValue::new("messaging.operation.type", shape.operation_type));
        attributes.push(KeyValue::new("messaging.destination.template", msg.template));
        attributes.push(self.inner.server[0].clone());
        attributes.push(self.inner.server[1].clone());
        if let Some(group) = shape.group {
            attributes.push(KeyValue::new("messaging.consumer.group.name", group));
        }
        attributes.push(KeyValue::new("messaging.destination.name", text(msg.subject)));
        attributes.push(KeyValue::new("messaging.message.body.size", as_i64(msg.body_size as u64)));
        if let Some(id) = msg.message_id {
            attributes.push(KeyValue::new("messaging.message.id", text(id)));
        }
        if let Some(d) = shape.delivery {
            attributes.push(KeyValue::new("messaging.message_redelivered", d.is_redelivery()));
            attributes.push(KeyValue::new("messaging.nats.delivery_count", as_i64(d.delivery_count)));
            attributes.push(KeyValue::new("messaging.nats.stream.sequence", as_i64(d.stream_sequence)));
            attributes.push(KeyValue::new("messaging.nats.queue_wait", d.queue_wait_seconds));
        }
        attributes
    }

    /// PRODUCER span `publish <template>`, child of the current context (or a new root).
    /// Inject it with [`Traced::inject`] before publishing.
    pub fn publish(&self, msg: &MessageRef<'_>) -> Traced {
        let shape = Shape {
            kind: SpanKind::Producer,
            operation: "publish",
            operation_type: "send",
            group: None,
            delivery: None,
        };
        self.start(&shape, msg, &Context::current())
    }

    /// CLIENT span `request <template>` for a request/reply call, child of the current context.
    pub fn request(&self, msg: &MessageRef<'_>) -> Traced {
        let shape =
            Shape { kind: SpanKind::Client, operation: "request", operation_type: "send", group: None, delivery: None };
        self.start(&shape, msg, &Context::current())
    }

    /// SERVER span `process <template>` for answering a request, parented to the
    /// requester's span from `headers` (a new root if they carry none or a bad one).
    pub fn server(&self, msg: &MessageRef<'_>, headers: Option<&HeaderMap>, group: &'static str) -> Traced {
        let shape = Shape {
            kind: SpanKind::Server,
            operation: "process",
            operation_type: "process",
            group: Some(group),
            delivery: None,
        };
        self.start(&shape, msg, &extract_context(headers))
    }

    /// CONSUMER span `process <template>` for one delivery, parented to the producer span
    /// from `headers` (a new root if they carry none or a bad one).
    pub fn process(
        &self,
        msg: &MessageRef<'_>,
        headers: Option<&HeaderMap>,
        delivery: Option<&DeliveryFacts>,
        group: &'static str,
    ) -> Traced {
        let shape = Shape {
            kind: SpanKind::Consumer,
            operation: "process",
            operation_type: "process",
            group: Some(group),
            delivery,
        };
        self.start(&shape, msg, &extract_context(headers))
    }

    /// INTERNAL span `name` (a step of the work), child of the current context.
    pub fn internal(&self, name: &'static str) -> Traced {
        let builder = SpanBuilder::from_name(Cow::Borrowed(name)).with_kind(SpanKind::Internal);
        Traced { cx: self.inner.tracer.start(builder, &Context::current()) }
    }

    /// The settlement of a delivery processed in `span` as a CLIENT span `ack <template>`
    /// (`nak`, `term`), child of it, so that the settlement's publish runs inside. The
    /// default is an event instead: [`Traced::add_settlement`].
    pub fn settle_span(&self, span: &Traced, settlement: Settlement, msg: &MessageRef<'_>) -> Traced {
        let shape = Shape {
            kind: SpanKind::Client,
            operation: settlement.as_str(),
            operation_type: "settle",
            group: None,
            delivery: None,
        };
        self.start(&shape, msg, span.context())
    }
}

/// Marks `span` failed: status `ERROR` with `description`, attribute `error.type` and
/// an `exception` event. The description must not contain secrets or message bodies.
pub fn record_failure(span: &Traced, error_type: &str, description: &str) {
    if !span.is_recording() {
        return;
    }
    let current = span.context().span();
    current.set_attribute(KeyValue::new("error.type", text(error_type)));
    current.add_event(
        "exception",
        vec![KeyValue::new("exception.type", text(error_type)), KeyValue::new("exception.message", text(description))],
    );
    current.set_status(Status::error(description.to_owned()));
}

/// The unit of work did not finish within its deadline.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("processing did not finish within {0:?}")]
pub struct DeadlineExceeded(pub Duration);

/// Runs `work` inside `span` and gives up after `deadline`. A missed deadline ends the
/// span with status `ERROR` / `Timeout`, `error.type = "timeout"` and an `exception`
/// event (seed 000, scenario 4); `work` is dropped, so it must be cancel-safe.
pub async fn run_with_deadline<F: Future>(
    span: &Traced,
    deadline: Duration,
    work: F,
) -> Result<F::Output, DeadlineExceeded> {
    match tokio::time::timeout(deadline, span.scope(work)).await {
        Ok(output) => Ok(output),
        Err(_) => {
            let error = DeadlineExceeded(deadline);
            let current = span.context().span();
            current.set_attribute(KeyValue::new("error.type", "timeout"));
            current.add_event(
                "exception",
                vec![KeyValue::new("exception.type", "Timeout"), KeyValue::new("exception.message", error.to_string())],
            );
            current.set_status(Status::error("Timeout"));
            span.in_scope(|| tracing::warn!(deadline_ms = deadline.as_millis() as u64, "processing timed out"));
            Err(error)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry::trace::TracerProvider as _;
    use opentelemetry_sdk::trace::{InMemorySpanExporter, SdkTracerProvider, SpanData};

    /// The first recorded span gets its attributes set after the start, later ones in the
    /// builder: both ways give the same attributes; unsampled parents record nothing.
    #[test]
    fn spans_get_the_same_attributes_whichever_way_they_are_built() {
        opentelemetry::global::set_text_map_propagator(opentelemetry_sdk::propagation::TraceContextPropagator::new());
        let exporter = InMemorySpanExporter::default();
        let provider = SdkTracerProvider::builder().with_simple_exporter(exporter.clone()).build();
        let spans = Messaging::with_tracer(provider.tracer("test"), &Peer::from_url("nats://n:4222"));
        let headers = |flags: &str| {
            let mut headers = HeaderMap::new();
            headers.insert(
                "traceparent",
                format!("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-{flags}").as_str(),
            );
            headers
        };
        let msg = MessageRef {
            subject: "chat.msg.general.alice",
            template: "chat.msg.*.*",
            message_id: Some("m-1"),
            body_size: 3,
        };
        let facts = DeliveryFacts {
            stream_sequence: 7,
            delivery_count: 2,
            published: time::OffsetDateTime::UNIX_EPOCH,
            queue_wait_seconds: 0.5,
        };
        for flags in ["01", "01", "00", "01"] {
            spans.process(&msg, Some(&headers(flags)), Some(&facts), "persist-worker").end();
        }
        let finished = exporter.get_finished_spans().expect("spans");
        assert_eq!(finished.len(), 3, "the unsampled parent's child is not recorded");
        let sorted = |s: &SpanData| {
            let mut kv: Vec<String> = s.attributes.iter().map(|kv| format!("{}={}", kv.key, kv.value)).collect();
            kv.sort();
            kv
        };
        assert_eq!(sorted(&finished[0]).len(), 14, "{:?}", sorted(&finished[0]));
        assert_eq!(sorted(&finished[0]), sorted(&finished[1]));
        assert_eq!(sorted(&finished[0]), sorted(&finished[2]));
    }

    #[test]
    fn peer_from_urls() {
        let cases = [
            ("nats://nats:4222", "nats", 4222),
            ("nats://127.0.0.1:14222,nats://b:4222", "127.0.0.1", 14222),
            ("localhost", "localhost", 4222),
            ("nats://user:pass@host:5222", "host", 5222),
            ("tls://[::1]:4443", "::1", 4443),
        ];
        for (url, address, port) in cases {
            assert_eq!(Peer::from_url(url), Peer { address: address.to_owned(), port }, "{url}");
        }
    }

    #[test]
    fn first_delivery_is_not_a_redelivery() {
        let d = DeliveryFacts {
            stream_sequence: 7,
            delivery_count: 1,
            published: time::OffsetDateTime::UNIX_EPOCH,
            queue_wait_seconds: 0.0,
        };
        assert!(!d.is_redelivery());
        assert!(DeliveryFacts { delivery_count: 2, ..d }.is_redelivery());
    }

    #[test]
    fn span_names_are_made_once_per_operation_and_template() {
        let names = SpanNames { names: RwLock::new(Vec::new()) };
        let a = names.get("process", "chat.msg.*.*");
        let b = names.get("process", "chat.msg.*.*");
        assert_eq!(a, "process chat.msg.*.*");
        assert!(std::ptr::eq(a, b), "the same &'static str");
        assert_eq!(names.get("publish", "chat.msg.*.*"), "publish chat.msg.*.*");
        assert_eq!(names.get("process", "chat.dlq.*"), "process chat.dlq.*");
        assert_eq!(names.names.read().expect("lock").len(), 3);
    }
}

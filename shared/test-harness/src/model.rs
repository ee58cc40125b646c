//! Telemetry as the tests see it, independent of where it was read from: the OTLP
//! receiver decodes into these types, and so do the compose-level tests reading Tempo,
//! Loki and Prometheus. Ids are lower-case hex strings.

use std::collections::BTreeMap;

/// An attribute value.
#[derive(Debug, Clone, PartialEq)]
pub enum AttrValue {
    /// String.
    Str(String),
    /// Boolean.
    Bool(bool),
    /// Integer.
    Int(i64),
    /// Floating point.
    Double(f64),
    /// Arrays, maps and bytes, rendered for display.
    Other(String),
}

impl AttrValue {
    /// The value rendered as text (for scans and messages).
    pub fn to_text(&self) -> String {
        match self {
            Self::Str(s) | Self::Other(s) => s.clone(),
            Self::Bool(b) => b.to_string(),
            Self::Int(i) => i.to_string(),
            Self::Double(d) => d.to_string(),
        }
    }
}

/// Attributes by key.
pub type Attributes = BTreeMap<String, AttrValue>;

/// Typed reads of attributes.
pub trait AttributesExt {
    /// A string attribute.
    fn str(&self, key: &str) -> Option<&str>;
    /// A boolean attribute.
    fn bool(&self, key: &str) -> Option<bool>;
    /// An integer attribute.
    fn int(&self, key: &str) -> Option<i64>;
    /// A floating-point attribute (integers are widened).
    fn f64(&self, key: &str) -> Option<f64>;
}

impl AttributesExt for Attributes {
    fn str(&self, key: &str) -> Option<&str> {
        match self.get(key)? {
            AttrValue::Str(s) => Some(s),
            _ => None,
        }
    }
    fn bool(&self, key: &str) -> Option<bool> {
        match self.get(key)? {
            AttrValue::Bool(b) => Some(*b),
            _ => None,
        }
    }
    fn int(&self, key: &str) -> Option<i64> {
        match self.get(key)? {
            AttrValue::Int(i) => Some(*i),
            _ => None,
        }
    }
    fn f64(&self, key: &str) -> Option<f64> {
        match self.get(key)? {
            AttrValue::Double(d) => Some(*d),
            AttrValue::Int(i) => Some(*i as f64),
            _ => None,
        }
    }
}

/// Span kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SpanKind {
    /// Not given.
    Unspecified,
    /// INTERNAL.
    Internal,
    /// SERVER.
    Server,
    /// CLIENT.
    Client,
    /// PRODUCER.
    Producer,
    /// CONSUMER.
    Consumer,
}

/// Span status code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StatusCode {
    /// UNSET.
    Unset,
    /// OK.
    Ok,
    /// ERROR.
    Error,
}

/// A span event.
#[derive(Debug, Clone, PartialEq)]
pub struct SpanEvent {
    /// Event name, e.g. `exception`.
    pub name: String,
    /// Event attributes.
    pub attributes: Attributes,
}

/// A link to another span.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpanLink {
    /// Linked trace id.
    pub trace_id: String,
    /// Linked span id.
    pub span_id: String,
}

/// One finished span.
#[derive(Debug, Clone, PartialEq)]
pub struct SpanRecord {
    /// `service.name` of the exporting resource.
    pub service_name: String,
    /// Trace id (32 hex).
    pub trace_id: String,
    /// Span id (16 hex).
    pub span_id: String,
    /// Parent span id, `None` for a root.
    pub parent_span_id: Option<String>,
    /// Span name.
    pub name: String,
    /// Kind.
    pub kind: SpanKind,
    /// Status code.
    pub status: StatusCode,
    /// Status description.
    pub status_message: String,
    /// Attributes.
    pub attributes: Attributes,
    /// Events.
    pub events: Vec<SpanEvent>,
    /// Links.
    pub links: Vec<SpanLink>,
    /// Start time, ns since the Unix epoch.
    pub start_unix_nano: u64,
    /// End time, ns since the Unix epoch.
    pub end_unix_nano: u64,
}

impl SpanRecord {
    /// The first event with this name.
    pub fn event(&self, name: &str) -> Option<&SpanEvent> {
        self.events.iter().find(|e| e.name == name)
    }
}

/// One log record.
#[derive(Debug, Clone, PartialEq)]
pub struct LogRecord {
    /// `service.name` of the exporting resource.
    pub service_name: String,
    /// Trace id when emitted inside a span.
    pub trace_id: Option<String>,
    /// Span id when emitted inside a span.
    pub span_id: Option<String>,
    /// Severity text (`INFO`, `WARN`, ...).
    pub severity_text: String,
    /// The message.
    pub body: String,
    /// Attributes.
    pub attributes: Attributes,
}

/// One data point's value.
#[derive(Debug, Clone, PartialEq)]
pub enum MetricValue {
    /// Counter or up-down counter.
    Sum(f64),
    /// Gauge.
    Gauge(f64),
    /// Histogram count and sum.
    Histogram {
        /// Number of recordings.
        count: u64,
        /// Sum of recordings.
        sum: f64,
    },
}

/// One data point.
#[derive(Debug, Clone, PartialEq)]
pub struct MetricPoint {
    /// Point attributes.
    pub attributes: Attributes,
    /// Value.
    pub value: MetricValue,
}

/// One metric as exported at one collection.
#[derive(Debug, Clone, PartialEq)]
pub struct MetricRecord {
    /// `service.name` of the exporting resource.
    pub service_name: String,
    /// Instrument name (`messages.persisted`).
    pub name: String,
    /// Unit (`{message}`, `s`).
    pub unit: String,
    /// Whether a sum is monotonic (a counter).
    pub monotonic: bool,
    /// Points.
    pub points: Vec<MetricPoint>,
}

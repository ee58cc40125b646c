//! The attribute policy: which keys may never carry their value out of the process.
//!
//! Secrets (tokens, passwords, JWTs, key seeds) and message bodies must not reach an
//! exported span, span event or log record, whatever a caller passes. The policy is
//! applied at the last point before export, so it holds for attributes recorded by this
//! crate, by services and by any library:
//! - spans: `RedactingSpanProcessor` wraps the batch processor and rewrites the span's
//!   attributes, its events' attributes and its links' attributes; with the crate's own
//!   OTLP/gRPC exporter, its encoder writes each of those attributes with the same
//!   verdicts instead (`otlp::encode::runs`: the same bytes, one pass fewer);
//! - logs: `RedactingLoggerProvider` wraps the SDK logger provider used by the
//!   `tracing` -> OTLP log bridge and rewrites attributes as they are added.
//!
//! A redacted attribute keeps its key and gets the value [`REDACTED`], so a reader can
//! see that something was removed. The collector's redaction processor repeats the same
//! rule (defence in depth, see `otel/collector.yaml`).

use std::borrow::Cow;
use std::time::{Duration, SystemTime};

use opentelemetry::logs::{AnyValue, LogRecord, Logger, LoggerProvider, Severity};
use opentelemetry::trace::{SpanId, TraceFlags, TraceId};
use opentelemetry::{Context, InstrumentationScope, Key, KeyValue, Value};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::logs::{SdkLogRecord, SdkLogger, SdkLoggerProvider};
use opentelemetry_sdk::trace::{Span, SpanData, SpanProcessor};

/// The value that replaces a sensitive attribute's value.
pub const REDACTED: &str = "[REDACTED]";

/// Key segments (split on `.`, `_`, `-`, lower-cased) that mark a key as sensitive.
const SENSITIVE_SEGMENTS: &[&str] = &[
    "token",
    "tokens",
    "password",
    "passwd",
    "pwd",
    "secret",
    "jwt",
    "seed",
    "nkey",
    "xkey",
    "authorization",
    "cookie",
    "credential",
    "credentials",
    "apikey",
    "private",
    "body",
    "payload",
    "text",
];

/// Segments that make a key describe a sensitive value rather than hold it
/// (`messaging.message.body.size`, `max_payload`, `auth.token.type`).
const DESCRIPTIVE_SEGMENTS: &[&str] = &["size", "len", "length", "count", "max", "bytes", "type", "kind"];

/// Keys that contain a sensitive segment but are known not to carry sensitive values.
const ALLOWED_KEYS: &[&str] = &[
    // Parameterised SQL only; values are bound, never inlined.
    "db.query.text",
];

/// A secret from the configuration (password, URL with credentials, key seed): its
/// `Debug` and `Display` print [`REDACTED`], so it cannot leak through a log of a config.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// The secret value, for the one place that needs it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::str::FromStr for Secret {
    type Err = std::convert::Infallible;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(Self(s.to_owned()))
    }
}

impl From<String> for Secret {
    fn from(value: String) -> Self {
        Self(value)
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(REDACTED)
    }
}

impl std::fmt::Display for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(REDACTED)
    }
}

/// Whether an attribute with this key must have its value redacted before export.
///
/// ```
/// assert!(telemetry::policy::is_sensitive_key("auth.token"));
/// assert!(telemetry::policy::is_sensitive_key("connect_opts.auth_token"));
/// assert!(telemetry::policy::is_sensitive_key("user_password"));
/// assert!(telemetry::policy::is_sensitive_key("chat.text"));
/// assert!(!telemetry::policy::is_sensitive_key("messaging.message.body.size"));
/// ```
pub fn is_sensitive_key(key: &str) -> bool {
    with_verdicts(|verdicts| verdicts.get_or_decide(key))
}

/// Whether an attribute with `key` must have its value redacted: as [`is_sensitive_key`],
/// the key held as its own clone (the same memory for a static or shared key). The OTLP
/// encoder asks this of every attribute it does not know clean (`otlp::encode::runs`).
pub(crate) fn is_sensitive(key: &Key) -> bool {
    with_verdicts(|verdicts| verdicts.get_or_decide_holding(key.as_str(), || key.clone()))
}

thread_local! {
    static VERDICTS: std::cell::RefCell<KeyVerdicts> = std::cell::RefCell::new(KeyVerdicts::new());
}

/// Runs `f` with this thread's [`KeyVerdicts`] (once per span, not per key).
fn with_verdicts<R>(f: impl FnOnce(&mut KeyVerdicts) -> R) -> R {
    VERDICTS.with(|verdicts| f(&mut verdicts.borrow_mut()))
}

/// The policy's answers remembered per key. Every attribute of every span passes the
/// policy as the span ends, and keys repeat (most are `&'static str` literals at a fixed
/// address): the table is indexed by the key's address, each key in one of 4 neighbouring
/// slots (a direct-mapped table let two keys of a span evict each other on every span).
/// Each key is held as a `Key`: a static text, a shared one (its reference counted), or
/// an owned copy. A key at the very memory of a held key (same address and length) is
/// that key, because the table keeps that memory alive and nothing else can be there;
/// any other hit compares the text, so a key at a reused address is never mistaken for
/// another. Measured (`scripts/per-message-instructions.sh`, 2026-12-03): a traced
/// message costs 7,100 instructions over untraced with the table, 20,900 without; the
/// hit by memory saves ~30 per attribute over comparing the text (2026-12-03, evening).
struct KeyVerdicts {
    slots: Vec<Option<(Key, bool)>>,
    /// Key lists of recent attribute lists with no sensitive key, held as their `Key`s.
    clean_lists: CleanLists,
}

impl KeyVerdicts {
    const SETS: usize = 512;
    const WAYS: usize = 4;

    fn new() -> Self {
        Self { slots: vec![None; Self::SETS + Self::WAYS], clean_lists: CleanLists::default() }
    }

    /// The verdict for a key only known as text (held as an owned copy).
    fn get_or_decide(&mut self, key: &str) -> bool {
        self.get_or_decide_holding(key, || Key::from(key.to_owned()))
    }

    /// The verdict for `key`, held as `hold()` if it is new: the attribute's `Key` cloned
    /// (the same memory for a static or shared key).
    fn get_or_decide_holding(&mut self, key: &str, hold: impl FnOnce() -> Key) -> bool {
        let address = (key.as_ptr() as usize ^ key.len()) as u64;
        let first = (address.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 55) as usize % Self::SETS;
        let ways = &mut self.slots[first..first + Self::WAYS];
        let held = |known: &Key| std::ptr::eq(known.as_str(), key);
        let known = ways.iter().flatten().find(|(known, _)| held(known));
        if let Some((_, sensitive)) = known.or_else(|| ways.iter().flatten().find(|(known, _)| known.as_str() == key)) {
            return *sensitive;
        }
        let sensitive = decide(key);
        let free = ways.iter().position(Option::is_none).unwrap_or(address as usize % Self::WAYS);
        ways[free] = Some((hold(), sensitive));
        sensitive
    }
}

fn decide(key: &str) -> bool {
    if ALLOWED_KEYS.contains(&key) {
        return false;
    }
    let is_any = |list: &[&str], segment: &str| list.iter().any(|s| segment.eq_ignore_ascii_case(s));
    let mut segments = key.split(['.', '_', '-']);
    segments.clone().any(|segment| is_any(SENSITIVE_SEGMENTS, segment))
        && !segments.any(|segment| is_any(DESCRIPTIVE_SEGMENTS, segment))
}

/// The key lists (keys in order) of the last [`CleanLists::LISTS`] attribute lists that had
/// no sensitive key. Spans of one kind carry the same keys in the same order, mostly
/// literals: a list whose keys are each at the very memory of a held list's keys is that
/// list (as in [`KeyVerdicts`]: the held `Key`s keep that memory alive), and needs no
/// verdict per key. Measured in the worker (`DRAIN_COUNT=instructions`, 2026-12-04): a
/// traced message's redaction took ~730 instructions key by key, ~370 fewer with the lists.
#[derive(Default)]
struct CleanLists {
    lists: [Vec<Key>; Self::LISTS],
    /// The list replaced next.
    next: usize,
}

impl CleanLists {
    const LISTS: usize = 8;
    /// Longer lists are always checked key by key (and not held).
    const MAX_KEYS: usize = 64;

    fn contains(&self, attributes: &[KeyValue]) -> bool {
        self.lists.iter().any(|keys| {
            keys.len() == attributes.len()
                && keys.iter().zip(attributes).all(|(held, kv)| std::ptr::eq(held.as_str(), kv.key.as_str()))
        })
    }

    /// Holds the list's keys in place of the oldest list, if each one's clone is at its
    /// memory (a static or shared key); a list with an owned key (a copy elsewhere) would
    /// never be found: it only empties the oldest list's place.
    fn remember(&mut self, attributes: &[KeyValue]) {
        if attributes.len() > Self::MAX_KEYS {
            return;
        }
        let keys = &mut self.lists[self.next];
        keys.clear();
        for kv in attributes {
            let held = kv.key.clone();
            if !std::ptr::eq(held.as_str(), kv.key.as_str()) {
                keys.clear();
                return;
            }
            keys.push(held);
        }
        self.next = (self.next + 1) % Self::LISTS;
    }
}

fn redact_key_values(verdicts: &mut KeyVerdicts, attributes: &mut [KeyValue]) {
    if attributes.is_empty() || verdicts.clean_lists.contains(attributes) {
        return;
    }
    let mut clean = true;
    for kv in attributes.iter_mut().filter(|kv| verdicts.get_or_decide_holding(kv.key.as_str(), || kv.key.clone())) {
        kv.value = Value::from(REDACTED);
        clean = false;
    }
    if clean {
        verdicts.clean_lists.remember(attributes);
    }
}

/// Applies the policy to a finished span (attributes, event attributes, link attributes).
pub(crate) fn redact_span(span: &mut SpanData) {
    with_verdicts(|verdicts| {
        redact_key_values(verdicts, &mut span.attributes);
        for event in span.events.events.iter_mut() {
            redact_key_values(verdicts, &mut event.attributes);
        }
        for link in span.links.links.iter_mut() {
            redact_key_values(verdicts, &mut link.attributes);
        }
    });
}

/// A span processor that applies the policy, then hands the span to `inner`.
#[derive(Debug)]
pub(crate) struct RedactingSpanProcessor<P> {
    inner: P,
}

impl<P: SpanProcessor> RedactingSpanProcessor<P> {
    /// Wraps `inner` (normally the batch span processor).
    pub(crate) fn new(inner: P) -> Self {
        Self { inner }
    }
}

impl<P: SpanProcessor> SpanProcessor for RedactingSpanProcessor<P> {
    fn on_start(&self, span: &mut Span, cx: &Context) {
        self.inner.on_start(span, cx);
    }

    fn on_end(&self, mut span: SpanData) {
        redact_span(&mut span);
        self.inner.on_end(span);
    }

    fn force_flush(&self) -> OTelSdkResult {
        self.inner.force_flush()
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.inner.shutdown_with_timeout(timeout)
    }

    fn set_resource(&mut self, resource: &Resource) {
        self.inner.set_resource(resource);
    }
}

/// A logger provider for the `tracing` log bridge whose records redact sensitive keys.
#[derive(Debug, Clone)]
pub(crate) struct RedactingLoggerProvider {
    inner: SdkLoggerProvider,
}

impl RedactingLoggerProvider {
    /// Wraps the SDK provider that exports the records.
    pub(crate) fn new(inner: SdkLoggerProvider) -> Self {
        Self { inner }
    }
}

impl LoggerProvider for RedactingLoggerProvider {
    type Logger = RedactingLogger;

    fn logger_with_scope(&self, scope: InstrumentationScope) -> Self::Logger {
        RedactingLogger(self.inner.logger_with_scope(scope))
    }
}

/// The logger handed out by [`RedactingLoggerProvider`].
#[derive(Debug)]
pub(crate) struct RedactingLogger(SdkLogger);

impl Logger for RedactingLogger {
    type LogRecord = RedactingLogRecord;

    fn create_log_record(&self) -> Self::LogRecord {
        RedactingLogRecord(self.0.create_log_record())
    }

    fn emit(&self, record: Self::LogRecord) {
        self.0.emit(record.0);
    }

    fn event_enabled(&self, level: Severity, target: &str, name: Option<&str>) -> bool {
        self.0.event_enabled(level, target, name)
    }
}

/// A log record that redacts sensitive attributes as they are added.
#[derive(Debug)]
pub(crate) struct RedactingLogRecord(SdkLogRecord);

impl LogRecord for RedactingLogRecord {
    fn set_event_name(&mut self, name: &'static str) {
        self.0.set_event_name(name);
    }

    fn set_target<T: Into<Cow<'static, str>>>(&mut self, target: T) {
        self.0.set_target(target);
    }

    fn set_timestamp(&mut self, timestamp: SystemTime) {
        self.0.set_timestamp(timestamp);
    }

    fn set_observed_timestamp(&mut self, timestamp: SystemTime) {
        self.0.set_observed_timestamp(timestamp);
    }

    fn set_severity_text(&mut self, text: &'static str) {
        self.0.set_severity_text(text);
    }

    fn set_severity_number(&mut self, number: Severity) {
        self.0.set_severity_number(number);
    }

    fn set_body(&mut self, body: AnyValue) {
        self.0.set_body(body);
    }

    fn add_attributes<I, K, V>(&mut self, attributes: I)
    where
        I: IntoIterator<Item = (K, V)>,
        K: Into<Key>,
        V: Into<AnyValue>,
    {
        for (key, value) in attributes {
            self.add_attribute(key, value);
        }
    }

    fn add_attribute<K: Into<Key>, V: Into<AnyValue>>(&mut self, key: K, value: V) {
        let key = key.into();
        if is_sensitive_key(key.as_str()) {
            self.0.add_attribute(key, AnyValue::from(REDACTED));
        } else {
            self.0.add_attribute(key, value);
        }
    }

    fn set_trace_context(&mut self, trace_id: TraceId, span_id: SpanId, flags: Option<TraceFlags>) {
        self.0.set_trace_context(trace_id, span_id, flags);
    }
}

/// `url` with its user information replaced by `REDACTED:REDACTED`, as the HTTP semantic
/// conventions ask for `url.full`; use it for every URL that reaches a span, a log line or
/// an error message (a configured URL may carry credentials). Each URL of a
/// comma-separated list is redacted. Text that is not a URL is returned unchanged.
pub fn redact_url(url: &str) -> String {
    url.split(',')
        .map(|one| {
            let (scheme, rest) = match one.split_once("://") {
                Some((scheme, rest)) => (Some(scheme), rest),
                None => (None, one),
            };
            let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
            let redacted = match rest[..authority_end].rfind('@') {
                Some(at) => format!("REDACTED:REDACTED{}", &rest[at..]),
                None => rest.to_owned(),
            };
            match scheme {
                Some(scheme) => format!("{scheme}://{redacted}"),
                None => redacted,
            }
        })
        .collect::<Vec<_>>()
        .join(",")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_lose_their_credentials_and_keep_the_rest() {
        let cases = [
            (
                "http://admin:hunter2@keycloak:8080/realms/chat/certs",
                "http://REDACTED:REDACTED@keycloak:8080/realms/chat/certs",
            ),
            (
                "nats://token@nats:4222,nats://a:b@n2:4222",
                "nats://REDACTED:REDACTED@nats:4222,nats://REDACTED:REDACTED@n2:4222",
            ),
            ("http://keycloak:8080/certs?next=a@b", "http://keycloak:8080/certs?next=a@b"),
            ("https://host/path", "https://host/path"),
            ("user:pw@host:1", "REDACTED:REDACTED@host:1"),
        ];
        for (url, expected) in cases {
            assert_eq!(redact_url(url), expected, "{url}");
        }
    }

    #[test]
    fn sensitive_keys_are_recognised_by_segment() {
        for key in [
            "token",
            "auth.token",
            "access_token",
            "connect_opts.auth_token",
            "PASSWORD",
            "db.password",
            "user_jwt",
            "nats.jwt",
            "account.seed",
            "xkey.seed",
            "http.request.header.authorization",
            "chat.text",
            "messaging.message.body",
            "payload",
        ] {
            assert!(is_sensitive_key(key), "{key} should be sensitive");
        }
    }

    #[test]
    fn ordinary_and_allowed_keys_pass() {
        for key in [
            "messaging.destination.name",
            "messaging.message.body.size",
            "db.query.text",
            "enduser.id",
            "error.type",
            "textual", // a segment must match whole
            "seedless",
            "max_payload",
            "auth.token.type",
        ] {
            assert!(!is_sensitive_key(key), "{key} should pass");
        }
    }

    #[test]
    fn the_cache_answers_as_the_rules_do_for_many_keys_and_reused_addresses() {
        // More keys than the cache holds, owned (addresses reused as they are freed),
        // asked twice: every answer is the rules' answer.
        let mut verdicts = KeyVerdicts::new();
        for round in 0..2 {
            for i in 0..2_000 {
                let key = if i % 3 == 0 { format!("k{i}.token") } else { format!("k{i}.size") };
                assert_eq!(verdicts.get_or_decide(&key), decide(&key), "{key} (round {round})");
                assert_eq!(is_sensitive_key(&key), decide(&key), "{key} (round {round})");
            }
        }
    }

    #[test]
    fn one_buffer_holding_other_keys_in_turn_gets_each_keys_answer() {
        let mut verdicts = KeyVerdicts::new();
        let mut buffer = String::with_capacity(32);
        for key in ["auth.token", "body.size", "user_password", "chat.room", "auth.token"] {
            buffer.clear();
            buffer.push_str(key);
            assert_eq!(verdicts.get_or_decide(&buffer), decide(key), "{key} at the same address");
        }
    }

    #[test]
    fn attribute_keys_get_their_own_answer_static_shared_or_owned_at_reused_addresses() {
        let mut verdicts = KeyVerdicts::new();
        for round in 0..2 {
            for key in ["auth.token", "body.size", "user_password", "chat.room"] {
                let shared: std::sync::Arc<str> = key.into();
                for held in [Key::from_static_str(key), Key::from(shared), Key::from(key.to_owned())] {
                    let answer = verdicts.get_or_decide_holding(held.as_str(), || held.clone());
                    assert_eq!(answer, decide(key), "{key} held as {held:?} (round {round})");
                }
            }
            // Owned keys of one length freed in turn: an address holds other texts in turn.
            for i in 0..300 {
                let key = Key::from(if i % 2 == 0 { format!("k{i:03}.token") } else { format!("k{i:03}.sizes") });
                let answer = verdicts.get_or_decide_holding(key.as_str(), || key.clone());
                assert_eq!(answer, decide(key.as_str()), "{key} (round {round})");
            }
        }
    }

    #[test]
    fn secrets_never_print() {
        let s: Secret = "postgres://u:hunter2@db/x".parse().expect("infallible");
        assert_eq!(format!("{s} {s:?}"), format!("{REDACTED} {REDACTED}"));
        assert_eq!(s.expose(), "postgres://u:hunter2@db/x");
    }

    #[test]
    fn a_key_list_seen_clean_passes_whole_and_every_other_list_key_by_key() {
        let mut verdicts = KeyVerdicts::new();
        let redacted = |verdicts: &mut KeyVerdicts, mut attributes: Vec<KeyValue>| {
            redact_key_values(verdicts, &mut attributes);
            attributes.iter().map(|kv| kv.value.as_str() == REDACTED).collect::<Vec<_>>()
        };
        let clean = || vec![KeyValue::new("messaging.system", "nats"), KeyValue::new("enduser.id", "alice")];
        assert_eq!(redacted(&mut verdicts, clean()), [false, false]);
        assert!(verdicts.clean_lists.contains(&clean()), "a clean list of static keys is held");
        assert_eq!(redacted(&mut verdicts, clean()), [false, false]);
        let one_changed = vec![KeyValue::new("messaging.system", "nats"), KeyValue::new("auth.token", "eyJ")];
        assert_eq!(redacted(&mut verdicts, one_changed), [false, true]);
        // Shared keys: held, so their memory cannot hold another key while held.
        let shared = |key: &str| Key::from(std::sync::Arc::<str>::from(key));
        let list = vec![KeyValue::new(shared("enduser.id"), "alice")];
        assert_eq!(redacted(&mut verdicts, list), [false]);
        assert_eq!(redacted(&mut verdicts, vec![KeyValue::new(shared("auth.token"), "eyJ")]), [true]);
        // Owned keys are copied elsewhere when held: their lists are never held.
        let owned = |key: &str| vec![KeyValue::new(Key::from(key.to_owned()), "v")];
        assert_eq!(redacted(&mut verdicts, owned("enduser.id")), [false]);
        assert!(!verdicts.clean_lists.contains(&owned("enduser.id")));
        assert_eq!(redacted(&mut verdicts, owned("auth.token")), [true], "same length, maybe the same address");
        // More lists than are held, in turn, sensitive ones among them: every answer right.
        let keys = ["a.size", "b.token", "c.id", "d.password", "e.count", "f.jwt", "g.name", "h.secret", "i.kind"];
        for round in 0..3 {
            for first in 0..keys.len() {
                for second in 0..keys.len() {
                    let list = vec![KeyValue::new(keys[first], "v"), KeyValue::new(keys[second], "v")];
                    let expected = [decide(keys[first]), decide(keys[second])];
                    assert_eq!(redacted(&mut verdicts, list), expected, "{first} {second} (round {round})");
                }
            }
        }
    }

    #[test]
    fn span_data_is_redacted_everywhere() {
        let mut attrs = vec![KeyValue::new("auth.token", "eyJhbGciOi.secret"), KeyValue::new("enduser.id", "alice")];
        with_verdicts(|verdicts| redact_key_values(verdicts, &mut attrs));
        assert_eq!(attrs[0].value.as_str(), REDACTED);
        assert_eq!(attrs[1].value.as_str(), "alice");
    }
}

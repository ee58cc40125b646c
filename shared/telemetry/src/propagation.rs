//! W3C trace context over NATS headers, with validation in front of the propagator.
//!
//! Owns: the [`HeaderMap`] injector and extractor, the checks that keep malformed or
//! hostile `traceparent`/`tracestate` values from reaching the propagator, and the
//! `trace_context.propagation.failures` counter.
//!
//! What happens to bad input: a message whose trace headers fail validation is still
//! processed; its consumer span starts a **new root** (we are stricter than W3C, which
//! would keep a valid `traceparent` next to a bad `tracestate`), one warning is logged
//! and the counter is incremented with `direction = "extract"` and a low-cardinality
//! `reason`. A message with no `traceparent` at all is normal (e.g. sent by the `nats`
//! CLI): it starts a new root silently. On inject, a value that async-nats would refuse
//! (it panics on CR/LF) is skipped and counted with `direction = "inject"`.

use std::str::FromStr;

use async_nats::HeaderMap;
use async_nats::header::{HeaderName, HeaderValue};
use opentelemetry::propagation::{Extractor, Injector};
use opentelemetry::{Context, KeyValue, global};

/// Header carrying the W3C trace parent.
pub const TRACEPARENT: &str = "traceparent";
/// Header carrying the W3C vendor trace state.
pub const TRACESTATE: &str = "tracestate";
/// What NATS 2.11–2.13 rename `traceparent` to when they store a message in JetStream
/// while the account has `msg_trace` (so a redelivery does not re-trigger server
/// tracing). NATS 2.14 stopped renaming. Read as `traceparent` when that is absent.
pub(crate) const NATS_RENAMED_TRACEPARENT: &str = "Xraceparent";
/// Longest `tracestate` accepted (W3C asks vendors to propagate at least 512 characters).
pub(crate) const MAX_TRACESTATE_LEN: usize = 512;
/// Longest `traceparent` accepted (future versions may append fields).
pub(crate) const MAX_TRACEPARENT_LEN: usize = 256;

/// Why trace context could not be propagated; the `reason` attribute of the counter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PropagationFailure {
    /// `traceparent` does not follow the W3C format (version, lengths, hex, separators).
    MalformedTraceparent,
    /// `traceparent` has an all-zero trace id or span id.
    ZeroId,
    /// `traceparent` or `tracestate` exceeds the length limit.
    Oversized,
    /// `tracestate` has invalid characters or list members.
    MalformedTracestate,
    /// The header appears more than once with different values.
    Duplicated,
    /// On inject: a value NATS headers cannot carry (control characters, non-ASCII).
    InvalidHeaderValue,
}

impl PropagationFailure {
    /// The low-cardinality `reason` attribute value.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Self::MalformedTraceparent => "malformed_traceparent",
            Self::ZeroId => "zero_id",
            Self::Oversized => "oversized",
            Self::MalformedTracestate => "malformed_tracestate",
            Self::Duplicated => "duplicated",
            Self::InvalidHeaderValue => "invalid_header_value",
        }
    }
}

/// Writes propagation fields into a NATS [`HeaderMap`] without ever panicking.
#[derive(Debug)]
pub(crate) struct HeaderInjector<'a>(pub &'a mut HeaderMap);

impl Injector for HeaderInjector<'_> {
    fn set(&mut self, key: &str, value: String) {
        // The W3C propagator injects an empty `tracestate` when there is none.
        if value.is_empty() {
            return;
        }
        match (HeaderName::from_str(key), HeaderValue::from_str(&value)) {
            (Ok(name), Ok(value)) => self.0.insert(name, value),
            _ => record_failure("inject", PropagationFailure::InvalidHeaderValue, key),
        }
    }
}

/// Reads propagation fields from a NATS [`HeaderMap`], matching names case-insensitively.
#[derive(Debug)]
pub(crate) struct HeaderExtractor<'a>(pub &'a HeaderMap);

impl HeaderExtractor<'_> {
    /// Every value of `key` (any case), in header order; for `traceparent`, also the
    /// values of the NATS 2.11–2.13 storage rename [`NATS_RENAMED_TRACEPARENT`]: both
    /// name the same parent, so two different values among them are a conflict.
    fn all(&self, key: &str) -> Vec<&str> {
        let find = |key: &str| -> Vec<&str> {
            self.0
                .iter()
                .filter(|(name, _)| AsRef::<str>::as_ref(*name).eq_ignore_ascii_case(key))
                .flat_map(|(_, values)| values.iter().map(HeaderValue::as_str))
                .collect()
        };
        let mut values = find(key);
        if key.eq_ignore_ascii_case(TRACEPARENT) {
            values.extend(find(NATS_RENAMED_TRACEPARENT));
        }
        values
    }
}

impl Extractor for HeaderExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).map(HeaderValue::as_str).or_else(|| self.all(key).into_iter().next())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.iter().map(|(name, _)| AsRef::<str>::as_ref(name)).collect()
    }
}

/// Injects `cx` (W3C trace context and baggage) into `headers`.
pub fn inject_context(cx: &Context, headers: &mut HeaderMap) {
    global::get_text_map_propagator(|p| p.inject_context(cx, &mut HeaderInjector(headers)));
}

/// Extracts the remote parent from `headers`; an empty context (a new root) when the
/// headers are absent, carry no trace context, or fail validation (warned and counted).
pub fn extract_context(headers: Option<&HeaderMap>) -> Context {
    let Some(headers) = headers else {
        return Context::new();
    };
    let extractor = HeaderExtractor(headers);
    if let Err(failure) = validate(&extractor) {
        record_failure("extract", failure, TRACEPARENT);
        return Context::new();
    }
    global::get_text_map_propagator(|p| p.extract(&extractor))
}

/// Checks the trace headers; `Ok` when there are none or they are well formed.
fn validate(headers: &HeaderExtractor<'_>) -> Result<(), PropagationFailure> {
    let parents = headers.all(TRACEPARENT);
    let Some(first) = parents.first() else {
        return Ok(());
    };
    if parents.iter().any(|p| p != first) {
        return Err(PropagationFailure::Duplicated);
    }
    validate_traceparent(first)?;
    let states = headers.all(TRACESTATE);
    if states.iter().map(|s| s.len()).sum::<usize>() > MAX_TRACESTATE_LEN {
        return Err(PropagationFailure::Oversized);
    }
    states.iter().try_for_each(|s| validate_tracestate(s))
}

/// `version-traceid-spanid-flags`, lower-case hex, per W3C Trace Context level 1.
pub(crate) fn validate_traceparent(value: &str) -> Result<(), PropagationFailure> {
    use PropagationFailure::{MalformedTraceparent as Bad, Oversized, ZeroId};
    if value.len() > MAX_TRACEPARENT_LEN {
        return Err(Oversized);
    }
    let bytes = value.as_bytes();
    let is_hex = |s: &[u8]| s.iter().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
    if bytes.len() < 55 || !is_hex(&bytes[..2]) || &bytes[..2] == b"ff" {
        return Err(Bad);
    }
    // Version 00 is exactly 55 characters; later versions may append `-fields`.
    if (&bytes[..2] == b"00" && bytes.len() != 55) || (bytes.len() > 55 && bytes[55] != b'-') {
        return Err(Bad);
    }
    let (trace_id, span_id, flags) = (&bytes[3..35], &bytes[36..52], &bytes[53..55]);
    if bytes[2] != b'-' || bytes[35] != b'-' || bytes[52] != b'-' {
        return Err(Bad);
    }
    if !is_hex(trace_id) || !is_hex(span_id) || !is_hex(flags) {
        return Err(Bad);
    }
    if trace_id.iter().all(|b| *b == b'0') || span_id.iter().all(|b| *b == b'0') {
        return Err(ZeroId);
    }
    Ok(())
}

/// A comma-separated list of `key=value` members of printable ASCII (no `,` or `=` in values).
fn validate_tracestate(value: &str) -> Result<(), PropagationFailure> {
    let members = value.split(',').map(str::trim).filter(|m| !m.is_empty());
    for member in members {
        let Some((key, val)) = member.split_once('=') else {
            return Err(PropagationFailure::MalformedTracestate);
        };
        let key_ok = !key.is_empty()
            && key.len() <= 256
            && key.bytes().all(|b| matches!(b, b'a'..=b'z' | b'0'..=b'9' | b'_' | b'-' | b'*' | b'/' | b'@'));
        let val_ok = !val.is_empty()
            && val.len() <= 256
            && val.bytes().all(|b| (0x20..=0x7e).contains(&b) && b != b',' && b != b'=');
        if !key_ok || !val_ok {
            return Err(PropagationFailure::MalformedTracestate);
        }
    }
    Ok(())
}

fn record_failure(direction: &'static str, failure: PropagationFailure, header: &str) {
    // The value itself is never logged: it is attacker-controlled and may be huge.
    tracing::warn!(
        direction,
        reason = failure.as_str(),
        header,
        "trace context not propagated; the message continues on a new root trace"
    );
    failures_counter().add(1, &[KeyValue::new("direction", direction), KeyValue::new("reason", failure.as_str())]);
}

fn failures_counter() -> opentelemetry::metrics::Counter<u64> {
    global::meter("telemetry")
        .u64_counter("trace_context.propagation.failures")
        .with_description("Trace headers that could not be injected or extracted")
        .with_unit("{failure}")
        .build()
}

/// Creates every (direction, reason) series of `trace_context.propagation.failures` at 0,
/// so the first failure shows in `rate()` / `increase()`. Called by [`crate::init`].
pub(crate) fn register_failures_at_zero() {
    use PropagationFailure::*;
    let counter = failures_counter();
    let series = [MalformedTraceparent, ZeroId, Oversized, MalformedTracestate, Duplicated]
        .map(|f| ("extract", f))
        .into_iter()
        .chain([("inject", InvalidHeaderValue)]);
    for (direction, failure) in series {
        counter.add(0, &[KeyValue::new("direction", direction), KeyValue::new("reason", failure.as_str())]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const VALID: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    #[test]
    fn accepts_valid_and_future_versions() {
        assert_eq!(validate_traceparent(VALID), Ok(()));
        let future = "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra";
        assert_eq!(validate_traceparent(future), Ok(()));
    }

    #[test]
    fn rejects_hostile_traceparents_with_a_reason() {
        use PropagationFailure::*;
        let long = format!("{VALID}-{}", "a".repeat(400));
        let cases: &[(&str, PropagationFailure)] = &[
            ("", MalformedTraceparent),
            ("ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", MalformedTraceparent),
            ("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-x", MalformedTraceparent),
            ("00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01", MalformedTraceparent),
            ("00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01", MalformedTraceparent),
            ("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902bz-01", MalformedTraceparent),
            ("00_4bf92f3577b34da6a3ce929d0e0e4736_00f067aa0ba902b7_01", MalformedTraceparent),
            ("00-00000000000000000000000000000000-00f067aa0ba902b7-01", ZeroId),
            ("00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01", ZeroId),
            ("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01\r\nx: y", MalformedTraceparent),
            ("00-4bf92f3577b34da6a3ce929d0e0é4736-00f067aa0ba902b7-01", MalformedTraceparent),
            (long.as_str(), Oversized),
        ];
        for (value, reason) in cases {
            assert_eq!(validate_traceparent(value), Err(*reason), "{value:?}");
        }
    }

    #[test]
    fn tracestate_rules() {
        assert_eq!(validate_tracestate("rojo=00f067aa0ba902b7,congo=t61rcWkgMzE"), Ok(()));
        assert_eq!(validate_tracestate(""), Ok(()));
        for bad in ["novalue", "=x", "k=", "K=v", "k=v\u{7f}", "k=a=b"] {
            assert_eq!(validate_tracestate(bad), Err(PropagationFailure::MalformedTracestate), "{bad:?}");
        }
    }

    #[test]
    fn injector_skips_empty_values_and_never_panics_on_crlf() {
        let mut headers = HeaderMap::new();
        let mut injector = HeaderInjector(&mut headers);
        injector.set(TRACESTATE, String::new());
        injector.set(TRACEPARENT, "a\r\nInjected: yes".to_owned());
        injector.set("bad name:", "x".to_owned());
        assert!(headers.is_empty());
        HeaderInjector(&mut headers).set(TRACEPARENT, VALID.to_owned());
        assert_eq!(headers.get(TRACEPARENT).map(HeaderValue::as_str), Some(VALID));
    }

    #[test]
    fn extractor_matches_names_case_insensitively() {
        let mut headers = HeaderMap::new();
        headers.insert("TraceParent", VALID);
        let extractor = HeaderExtractor(&headers);
        assert_eq!(extractor.get(TRACEPARENT), Some(VALID));
        assert_eq!(validate(&extractor), Ok(()));
    }

    #[test]
    fn the_nats_storage_rename_of_traceparent_is_read() {
        let mut headers = HeaderMap::new();
        headers.insert(NATS_RENAMED_TRACEPARENT, VALID);
        assert_eq!(HeaderExtractor(&headers).get(TRACEPARENT), Some(VALID));
        assert_eq!(validate(&HeaderExtractor(&headers)), Ok(()));
        headers.insert(TRACEPARENT, VALID);
        assert_eq!(validate(&HeaderExtractor(&headers)), Ok(()), "the same parent under both names");
        headers.insert(TRACEPARENT, "00-4bf92f3577b34da6a3ce929d0e0e4737-00f067aa0ba902b7-01");
        assert_eq!(
            validate(&HeaderExtractor(&headers)),
            Err(PropagationFailure::Duplicated),
            "two different parents: a new root, counted"
        );
    }

    #[test]
    fn conflicting_duplicates_are_rejected() {
        let mut headers = HeaderMap::new();
        headers.insert(TRACEPARENT, VALID);
        headers.append("Traceparent", "00-4bf92f3577b34da6a3ce929d0e0e4737-00f067aa0ba902b7-01");
        assert_eq!(validate(&HeaderExtractor(&headers)), Err(PropagationFailure::Duplicated));
    }
}

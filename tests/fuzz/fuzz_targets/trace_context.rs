//! Trace headers as a consumer extracts them: each input line `name: value` becomes a
//! header (lines NATS could not carry are skipped, as they could never arrive).
#![no_main]

use async_nats::HeaderMap;
use async_nats::header::{HeaderName, HeaderValue};
use libfuzzer_sys::fuzz_target;
use opentelemetry::trace::TraceContextExt as _;

fuzz_target!(|data: &[u8]| {
    let _ = PROPAGATOR.get_or_init(|| {
        opentelemetry::global::set_text_map_propagator(opentelemetry_sdk::propagation::TraceContextPropagator::new());
    });
    let mut headers = HeaderMap::new();
    for line in String::from_utf8_lossy(data).lines() {
        let Some((name, value)) = line.split_once(':') else { continue };
        if let (Ok(name), Ok(value)) = (name.parse::<HeaderName>(), value.trim().parse::<HeaderValue>()) {
            headers.append(name, value);
        }
    }
    let context = telemetry::propagation::extract_context(Some(&headers));
    let span = context.span();
    let parent = span.span_context();
    if parent.is_valid() {
        // A parent was accepted: it is what one of the headers said.
        let id = parent.trace_id().to_string();
        assert!(String::from_utf8_lossy(data).contains(&id));
    }
});

static PROPAGATOR: std::sync::OnceLock<()> = std::sync::OnceLock::new();

//! Which spans and events reach which output.
//!
//! We do not use tracing-subscriber's per-layer filters: with them, the OpenTelemetry
//! layer intermittently missed spans in a busy multi-threaded service (children of a
//! consumer span came out as roots or not at all). Instead:
//! - one **global** filter: everything at `info` and above (so spans never depend on the
//!   log level), more where `RUST_LOG` asks for more, and the exporter's own transport
//!   crates (`h2`, `hyper`, `tonic`, `tower`, `reqwest`) off, so telemetry never
//!   describes its own export;
//! - a [`Gate`] around the stdout layer and around the OTLP log bridge that passes only
//!   the *events* it wants (`RUST_LOG` level, SDK diagnostics throttled or dropped) and
//!   forwards span callbacks untouched.

use std::collections::HashMap;
use std::sync::{LazyLock, Mutex};
use std::time::{Duration, Instant};

use tracing::span::{Attributes, Id, Record};
use tracing::{Event, Metadata, Subscriber};
use tracing_subscriber::filter::{LevelFilter, Targets};
use tracing_subscriber::layer::{Context, Layer};
use tracing_subscriber::registry::LookupSpan;

/// Targets whose own telemetry would describe the export of telemetry.
pub(crate) const TRANSPORT_TARGETS: &[&str] = &["h2", "hyper", "hyper_util", "tonic", "tower", "reqwest"];
/// How often one SDK diagnostic call site may print while the collector stays down.
const DIAGNOSTIC_INTERVAL: Duration = Duration::from_secs(30);

/// `RUST_LOG` as `target=level` directives (or `default` when unset or unparsable).
pub(crate) fn log_targets(rust_log: Option<&str>, default: &str) -> Targets {
    let parse = |s: &str| s.parse::<Targets>().ok();
    rust_log
        .and_then(parse)
        .or_else(|| parse(default))
        .unwrap_or_else(|| Targets::new().with_default(LevelFilter::INFO))
}

/// The global filter: the log targets, but never less than `info`, transport crates off.
pub(crate) fn global(log: &Targets) -> Targets {
    let default = log.default_level().unwrap_or(LevelFilter::OFF).max(LevelFilter::INFO);
    let mut global = log.clone().with_default(default);
    for target in TRANSPORT_TARGETS {
        global = global.with_target(*target, LevelFilter::OFF);
    }
    global
}

/// Forwards callbacks to `inner` but passes only the events `allow` accepts. With
/// `spans: false` the span callbacks are not forwarded either: for an output that never
/// shows span fields, formatting them for every span would be pure cost (measured: ~8 % of
/// the worker's CPU with the stdout layer).
#[derive(Debug)]
pub(crate) struct Gate<L, F> {
    inner: L,
    allow: F,
    spans: bool,
}

impl<L, F> Gate<L, F> {
    pub(crate) fn new(inner: L, allow: F) -> Self {
        Self { inner, allow, spans: true }
    }

    /// Events only: the inner layer never sees spans.
    pub(crate) fn events_only(inner: L, allow: F) -> Self {
        Self { inner, allow, spans: false }
    }
}

impl<S, L, F> Layer<S> for Gate<L, F>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    L: Layer<S>,
    F: Fn(&Metadata<'_>) -> bool + Send + Sync + 'static,
{
    fn on_layer(&mut self, subscriber: &mut S) {
        self.inner.on_layer(subscriber);
    }
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
        if self.spans {
            self.inner.on_new_span(attrs, id, ctx);
        }
    }
    fn on_record(&self, id: &Id, values: &Record<'_>, ctx: Context<'_, S>) {
        if self.spans {
            self.inner.on_record(id, values, ctx);
        }
    }
    fn on_follows_from(&self, id: &Id, follows: &Id, ctx: Context<'_, S>) {
        if self.spans {
            self.inner.on_follows_from(id, follows, ctx);
        }
    }
    fn on_event(&self, event: &Event<'_>, ctx: Context<'_, S>) {
        if (self.allow)(event.metadata()) {
            self.inner.on_event(event, ctx);
        }
    }
    fn on_enter(&self, id: &Id, ctx: Context<'_, S>) {
        if self.spans {
            self.inner.on_enter(id, ctx);
        }
    }
    fn on_exit(&self, id: &Id, ctx: Context<'_, S>) {
        if self.spans {
            self.inner.on_exit(id, ctx);
        }
    }
    fn on_close(&self, id: Id, ctx: Context<'_, S>) {
        if self.spans {
            self.inner.on_close(id, ctx);
        }
    }
    fn on_id_change(&self, old: &Id, new: &Id, ctx: Context<'_, S>) {
        if self.spans {
            self.inner.on_id_change(old, new, ctx);
        }
    }
}

/// Whether an event comes from the OpenTelemetry SDK or exporter.
pub(crate) fn is_sdk_diagnostic(meta: &Metadata<'_>) -> bool {
    meta.target().starts_with("opentelemetry")
}

/// Lets each SDK diagnostic (e.g. "export failed") print at most once per
/// [`DIAGNOSTIC_INTERVAL`], so a dead collector is visible but does not flood stdout.
pub(crate) fn throttle_sdk_diagnostics(meta: &Metadata<'_>) -> bool {
    static LAST: LazyLock<Mutex<HashMap<tracing::callsite::Identifier, Instant>>> = LazyLock::new(Default::default);
    if !is_sdk_diagnostic(meta) {
        return true;
    }
    let Ok(mut last) = LAST.lock() else { return true };
    let now = Instant::now();
    match last.get(&meta.callsite()) {
        Some(at) if now.duration_since(*at) < DIAGNOSTIC_INTERVAL => false,
        _ => {
            last.insert(meta.callsite(), now);
            true
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_global_filter_keeps_info_spans_whatever_rust_log_says() {
        let quiet: Targets = "warn".parse().expect("valid");
        assert_eq!(global(&quiet).default_level(), Some(LevelFilter::INFO));
        let verbose: Targets = "debug,sqlx=warn".parse().expect("valid");
        let g = global(&verbose);
        assert_eq!(g.default_level(), Some(LevelFilter::DEBUG));
        assert!(g.would_enable("sqlx::query", &tracing::Level::WARN));
        assert!(!g.would_enable("h2::proto", &tracing::Level::ERROR));
        assert!(!g.would_enable("tonic::transport", &tracing::Level::ERROR));
    }
}

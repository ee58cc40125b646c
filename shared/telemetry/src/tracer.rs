//! The tracer the crate's own spans (messaging, database) start with: the SDK's tracer of
//! the pipeline [`crate::init`] built, else the global one (a no-op when none is set).
//!
//! Why not always the global one: `opentelemetry::global::BoxedTracer` boxes each span it
//! starts, and the context that holds the span (`Context::with_span`) boxes it again, so
//! each span costs two allocations and each call on it two dynamic dispatches. The SDK's
//! own span goes into the context in one box. Measured (`scripts/per-message-instructions.sh`,
//! 2026-12-04): ~100 instructions less per message, sampled or not (unsampled +401 -> +296
//! over untraced, spans exported over gRPC +7,622 -> +7,524).

use std::sync::RwLock;

use opentelemetry::Context;
use opentelemetry::global::BoxedTracer;
use opentelemetry::trace::{SpanBuilder, TraceContextExt as _, TracerProvider as _};
use opentelemetry_sdk::trace::{SdkTracer, SdkTracerProvider};

/// The provider [`crate::init`] installed as the global one, kept with its type.
static INSTALLED: RwLock<Option<SdkTracerProvider>> = RwLock::new(None);

/// Records `provider` as the pipeline's (alongside `global::set_tracer_provider`).
pub(crate) fn install(provider: &SdkTracerProvider) {
    if let Ok(mut installed) = INSTALLED.write() {
        *installed = Some(provider.clone());
    }
}

/// Starts spans, as the SDK's tracer when there is one.
#[derive(Debug)]
pub enum SpanTracer {
    /// A tracer of an SDK provider: one allocation per span.
    Sdk(SdkTracer),
    /// Any other tracer, behind the global API's box.
    Global(BoxedTracer),
}

impl SpanTracer {
    /// The tracer named `scope` of the pipeline [`crate::init`] built, or of the global
    /// provider when `init` built none (the SDK disabled: a no-op).
    pub fn named(scope: &'static str) -> Self {
        let installed = INSTALLED.read().ok().and_then(|p| p.as_ref().map(|p| p.tracer(scope)));
        installed.map_or_else(|| Self::Global(opentelemetry::global::tracer(scope)), Self::Sdk)
    }

    /// Starts the span `builder` describes as a child of `parent`: the context with it.
    pub(crate) fn start(&self, builder: SpanBuilder, parent: &Context) -> Context {
        match self {
            Self::Sdk(tracer) => parent.with_span(builder.start_with_context(tracer, parent)),
            Self::Global(tracer) => parent.with_span(builder.start_with_context(tracer, parent)),
        }
    }
}

impl From<SdkTracer> for SpanTracer {
    fn from(tracer: SdkTracer) -> Self {
        Self::Sdk(tracer)
    }
}

impl From<BoxedTracer> for SpanTracer {
    fn from(tracer: BoxedTracer) -> Self {
        Self::Global(tracer)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry::trace::SpanKind;
    use opentelemetry_sdk::trace::InMemorySpanExporter;

    /// Before `init` the global API's tracer (a no-op here); after, the SDK's, whose spans
    /// reach its exporter.
    #[test]
    fn spans_start_on_the_installed_pipeline() {
        assert!(matches!(SpanTracer::named("test"), SpanTracer::Global(_)));
        let exporter = InMemorySpanExporter::default();
        let provider = SdkTracerProvider::builder().with_simple_exporter(exporter.clone()).build();
        install(&provider);
        let tracer = SpanTracer::named("test");
        *INSTALLED.write().expect("lock") = None;
        assert!(matches!(tracer, SpanTracer::Sdk(_)));
        let cx = tracer.start(SpanBuilder::from_name("work").with_kind(SpanKind::Internal), &Context::new());
        assert!(cx.span().is_recording());
        cx.span().end();
        let spans = exporter.get_finished_spans().expect("spans");
        assert_eq!(spans.iter().map(|s| s.name.as_ref()).collect::<Vec<_>>(), ["work"]);
        assert_eq!(spans[0].instrumentation_scope.name(), "test");
    }
}

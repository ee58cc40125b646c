//! Assertions over the spans of one trace, shared by both test tiers. Failures panic
//! with the whole trace printed as a tree, so a reader sees what arrived instead.

use std::fmt::Write as _;

use crate::model::{SpanKind, SpanRecord, StatusCode};

/// The spans of one trace.
#[derive(Debug, Clone)]
pub struct Trace {
    spans: Vec<SpanRecord>,
}

impl Trace {
    /// Wraps spans that share one trace id.
    pub fn new(spans: Vec<SpanRecord>) -> Self {
        Self { spans }
    }

    /// All spans.
    pub fn spans(&self) -> &[SpanRecord] {
        &self.spans
    }

    /// Spans with this name, in start order.
    pub fn named(&self, name: &str) -> Vec<&SpanRecord> {
        let mut spans: Vec<_> = self.spans.iter().filter(|s| s.name == name).collect();
        spans.sort_by_key(|s| s.start_unix_nano);
        spans
    }

    /// The one span with this name; panics (showing the tree) if there are none or several.
    pub fn one(&self, name: &str) -> &SpanRecord {
        match self.named(name).as_slice() {
            [span] => span,
            found => panic!("expected exactly one span {name:?}, found {}:\n{}", found.len(), self.tree()),
        }
    }

    /// The parent of `span` within this trace.
    pub fn parent_of(&self, span: &SpanRecord) -> Option<&SpanRecord> {
        let parent = span.parent_span_id.as_deref()?;
        self.spans.iter().find(|s| s.span_id == parent)
    }

    /// The roots (spans without a parent, or whose parent is not in the trace).
    pub fn roots(&self) -> Vec<&SpanRecord> {
        self.spans.iter().filter(|s| self.parent_of(s).is_none()).collect()
    }

    /// Panics unless `child`'s parent is `parent`.
    pub fn assert_child_of(&self, child: &SpanRecord, parent: &SpanRecord) {
        assert_eq!(
            child.parent_span_id.as_deref(),
            Some(parent.span_id.as_str()),
            "{:?} should be a child of {:?}:\n{}",
            child.name,
            parent.name,
            self.tree()
        );
    }

    /// The trace rendered as an indented tree (name, kind, status, service).
    pub fn tree(&self) -> String {
        let mut out = String::new();
        let mut roots = self.roots();
        roots.sort_by_key(|s| s.start_unix_nano);
        for root in roots {
            self.write_subtree(&mut out, root, 0);
        }
        out
    }

    fn write_subtree(&self, out: &mut String, span: &SpanRecord, depth: usize) {
        let _ = writeln!(
            out,
            "{:indent$}- {} [{:?}, {:?}{}] ({}) span={}",
            "",
            span.name,
            span.kind,
            span.status,
            if span.status_message.is_empty() { String::new() } else { format!(": {}", span.status_message) },
            span.service_name,
            span.span_id,
            indent = depth * 2
        );
        let mut children: Vec<_> =
            self.spans.iter().filter(|s| s.parent_span_id.as_deref() == Some(span.span_id.as_str())).collect();
        children.sort_by_key(|s| s.start_unix_nano);
        for child in children {
            self.write_subtree(out, child, depth + 1);
        }
    }
}

/// Panics unless `span` has this kind.
pub fn assert_kind(span: &SpanRecord, kind: SpanKind) {
    assert_eq!(span.kind, kind, "span {:?} kind", span.name);
}

/// Panics unless `span` is `ERROR` with this description and has an `exception` event.
pub fn assert_error(span: &SpanRecord, description: &str) {
    assert_eq!(span.status, StatusCode::Error, "span {:?} status ({span:?})", span.name);
    assert_eq!(span.status_message, description, "span {:?} status description", span.name);
    assert!(span.event("exception").is_some(), "span {:?} has no exception event: {:?}", span.name, span.events);
}

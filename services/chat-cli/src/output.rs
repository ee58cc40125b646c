//! Printing results as text or JSON lines, each with its trace id and Grafana link.
//!
//! Message text is another user's input: in text mode every control character (C0, DEL,
//! C1 — newlines and escape sequences included), every bidirectional mark, embedding,
//! override and isolate, the Unicode line and paragraph separators and the zero-width
//! characters are printed escaped (`\u{1b}`), so a message cannot fake another user's
//! line, hide text, move the cursor or retitle the terminal (an emoji built with a
//! zero-width joiner shows as its parts). JSON lines are escaped by the JSON encoder.

use std::borrow::Cow;

use serde_json::{Value, json};

use crate::links::trace_url;

/// Where and how results are printed.
#[derive(Debug)]
pub(crate) struct Output {
    json: bool,
    grafana: String,
}

impl Output {
    pub(crate) fn new(json: bool, grafana: &str) -> Self {
        Self { json, grafana: grafana.to_owned() }
    }

    /// Prints one result: `text` for humans, `fields` plus trace id and link for scripts.
    pub(crate) fn result(&self, text: &str, trace_id: &str, mut fields: Value) {
        let url = trace_url(&self.grafana, trace_id);
        if self.json {
            fields["trace_id"] = json!(trace_id);
            fields["trace_url"] = json!(url);
            println!("{fields}");
        } else {
            println!("{text} trace_id={trace_id}\n  {url}");
        }
    }

    /// Prints a line without a trace (e.g. one history entry in text mode).
    pub(crate) fn line(&self, text: &str, fields: &Value) {
        if self.json {
            println!("{fields}");
        } else {
            println!("{text}");
        }
    }

    pub(crate) fn grafana(&self) -> &str {
        &self.grafana
    }
}

/// `text` with control characters and bidirectional overrides escaped as `\u{..}`.
pub(crate) fn printable(text: &str) -> Cow<'_, str> {
    let unsafe_char = |c: char| {
        c.is_control()
            || matches!(c,
                // zero-width space/joiners and left-to-right / right-to-left marks
                '\u{200b}'..='\u{200f}'
                // line and paragraph separators, bidirectional embeddings and overrides
                | '\u{2028}'..='\u{202e}'
                // word joiner, invisible operators, bidirectional isolates
                | '\u{2060}'..='\u{2069}'
                | '\u{061c}' | '\u{feff}')
    };
    if !text.chars().any(unsafe_char) {
        return Cow::Borrowed(text);
    }
    Cow::Owned(
        text.chars().map(|c| if unsafe_char(c) { c.escape_unicode().to_string() } else { c.to_string() }).collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_sequences_and_bidi_overrides_are_escaped() {
        assert_eq!(printable("hello, world"), "hello, world");
        assert_eq!(printable("hi\nbob: i am bob"), "hi\\u{a}bob: i am bob");
        assert_eq!(printable("\u{1b}]0;pwned\u{7}"), "\\u{1b}]0;pwned\\u{7}");
        assert_eq!(printable("a\u{202e}b\u{9b}c\u{7f}"), "a\\u{202e}b\\u{9b}c\\u{7f}");
        assert_eq!(printable("émoji ✓ 中文"), "émoji ✓ 中文");
        assert_eq!(printable("a\u{2028}b\u{2029}c"), "a\\u{2028}b\\u{2029}c");
        assert_eq!(printable("pay\u{200b}pal\u{200e}\u{200f}\u{feff}"), "pay\\u{200b}pal\\u{200e}\\u{200f}\\u{feff}");
        assert_eq!(printable("\u{2066}x\u{2069}\u{61c}"), "\\u{2066}x\\u{2069}\\u{61c}");
    }
}

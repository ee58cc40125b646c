//! Attribute runs that repeat span after span, held per thread with their encoding.
//!
//! Spans of one kind start with the same attributes every time, mostly literals at a fixed
//! address (`messaging.system = nats`, the operation, the subject template, the server,
//! the consumer group; the database's system, namespace and query): their bytes are the
//! same every time too. Each thread holds the last [`Runs::RUNS`] such runs with their
//! encoding; the leading attributes of a span (or event) that are, one by one, at the very
//! memory of a held run's (key and text value; a number or a flag by value) are written as
//! that run's bytes, the rest one by one. As in `policy::KeyVerdicts`, the same memory
//! means the same text because the held clones keep that memory alive: an owned text
//! (whose clone is a copy elsewhere) is never held, and ends a run. Finding that out takes
//! that clone: a list that starts with an owned text (an `exception` event) costs one copy
//! of it. Measured (`scripts/per-message-instructions.sh spans+grpc`, 2026-12-04): 7,524 ->
//! 6,716 instructions per traced message over untraced (16 key-values encoded -> 7).

use std::cell::RefCell;

use bytes::BufMut;
use opentelemetry::{KeyValue, Value};

use super::write_key_value;

thread_local! {
    static RUNS: RefCell<Runs> = RefCell::new(Runs::default());
}

/// Writes `attributes` as repeated field `tag`, their leading run from a held encoding
/// when there is one.
pub(super) fn write_attributes<B: BufMut>(tag: u32, attributes: &[KeyValue], buf: &mut B) {
    let written = if attributes.is_empty() {
        0
    } else {
        RUNS.with(|runs| runs.try_borrow_mut().map_or(0, |mut runs| runs.write_run(tag, attributes, buf)))
    };
    for kv in &attributes[written..] {
        write_key_value(tag, kv.key.as_str(), &kv.value, buf);
    }
}

/// Whether `kv` may be held: its key's and text value's clones at their memory (a
/// literal or a shared text), or a number or flag.
fn held_at_its_memory(kv: &KeyValue) -> bool {
    let value = match &kv.value {
        Value::String(s) => std::ptr::eq(s.clone().as_str(), s.as_str()),
        Value::Bool(_) | Value::I64(_) | Value::F64(_) => true,
        _ => false,
    };
    value && std::ptr::eq(kv.key.clone().as_str(), kv.key.as_str())
}

/// `kv` is `held` itself: the same key and text memory, or the same number or flag.
fn is(held: &KeyValue, kv: &KeyValue) -> bool {
    std::ptr::eq(held.key.as_str(), kv.key.as_str())
        && match (&held.value, &kv.value) {
            (Value::String(a), Value::String(b)) => std::ptr::eq(a.as_str(), b.as_str()),
            (Value::I64(a), Value::I64(b)) => a == b,
            (Value::Bool(a), Value::Bool(b)) => a == b,
            (Value::F64(a), Value::F64(b)) => a.to_bits() == b.to_bits(),
            _ => false,
        }
}

#[derive(Default)]
struct Runs {
    runs: [Run; Self::RUNS],
    /// The run replaced next.
    next: usize,
}

/// A run of attributes (field `tag`), held, and their encoding: the bytes of the first
/// `n` end at `ends[n - 1]`.
#[derive(Default)]
struct Run {
    tag: u32,
    held: Vec<KeyValue>,
    ends: Vec<usize>,
    bytes: Vec<u8>,
}

impl Runs {
    const RUNS: usize = 8;
    /// Longer runs are held only up to this many attributes.
    const MAX_HELD: usize = 32;

    /// Writes the leading attributes of `attributes` (not empty) that a held run has (the
    /// longest match); returns how many it wrote. Holds a new run of them instead when no
    /// run has the first, or the best one differs from them (another kind of span: a
    /// publish where the run is a process span's) at an attribute that can be held; a
    /// run is never held past an owned text, so values that vary per span (the subject,
    /// the sizes) go after one. A number that varies inside a run (a `nak` event's delay)
    /// holds a new run each time, in place of the oldest.
    fn write_run<B: BufMut>(&mut self, tag: u32, attributes: &[KeyValue], buf: &mut B) -> usize {
        // The first run that has them all wins at once (the usual case: one run per kind
        // of span, and few kinds); otherwise the longest match.
        let (mut best, mut n) = (0, 0);
        for (i, run) in self.runs.iter().enumerate() {
            if run.tag != tag || run.held.is_empty() || !is(&run.held[0], &attributes[0]) {
                continue;
            }
            let mut matched = 1;
            while matched < run.held.len() && matched < attributes.len() && is(&run.held[matched], &attributes[matched])
            {
                matched += 1;
            }
            if matched > n {
                (best, n) = (i, matched);
                if matched == run.held.len() {
                    break;
                }
            }
        }
        let run = &self.runs[best];
        let differs_inside = n < run.held.len() && n < attributes.len();
        if n > 0 && !(differs_inside && held_at_its_memory(&attributes[n])) {
            buf.put_slice(&run.bytes[..run.ends[n - 1]]);
            return n;
        }
        if n == 0 && !held_at_its_memory(&attributes[0]) {
            return 0;
        }
        let run = &mut self.runs[self.next];
        self.next = (self.next + 1) % Self::RUNS;
        run.tag = tag;
        run.held.clear();
        run.ends.clear();
        run.bytes.clear();
        for kv in attributes.iter().take(Self::MAX_HELD).take_while(|kv| held_at_its_memory(kv)) {
            write_key_value(tag, kv.key.as_str(), &kv.value, &mut run.bytes);
            run.ends.push(run.bytes.len());
            run.held.push(kv.clone());
        }
        buf.put_slice(&run.bytes);
        run.held.len()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use opentelemetry::StringValue;

    use super::*;

    const TAG: u32 = 9;

    fn one_by_one(attributes: &[KeyValue]) -> Vec<u8> {
        let mut buf = Vec::new();
        for kv in attributes {
            write_key_value(TAG, kv.key.as_str(), &kv.value, &mut buf);
        }
        buf
    }

    fn encoded(runs: &mut Runs, attributes: &[KeyValue]) -> (Vec<u8>, usize) {
        let mut buf = Vec::new();
        let from_run = runs.write_run(TAG, attributes, &mut buf);
        for kv in &attributes[from_run..] {
            write_key_value(TAG, kv.key.as_str(), &kv.value, &mut buf);
        }
        (buf, from_run)
    }

    fn process(subject: &str, size: i64) -> Vec<KeyValue> {
        vec![
            KeyValue::new("messaging.system", "nats"),
            KeyValue::new("messaging.operation.name", "process"),
            KeyValue::new("server.port", 4222),
            KeyValue::new("messaging.destination.name", subject.to_owned()),
            KeyValue::new("messaging.message.body.size", size),
        ]
    }

    #[test]
    fn literals_shared_texts_and_numbers_are_held_owned_texts_are_not() {
        let shared = Value::String(StringValue::from(Arc::<str>::from("chat")));
        assert!(held_at_its_memory(&KeyValue::new("db.namespace", shared)));
        assert!(held_at_its_memory(&KeyValue::new("messaging.system", "nats")));
        assert!(held_at_its_memory(&KeyValue::new("server.port", 4222)));
        assert!(!held_at_its_memory(&KeyValue::new("messaging.destination.name", "chat.msg.a.b".to_owned())));
        assert!(!held_at_its_memory(&KeyValue::new(String::from("an.owned.key"), "nats")));
    }

    /// The same bytes as one by one, span after span: the leading literals from the run,
    /// what follows the owned subject one by one (the size differs per span).
    #[test]
    fn a_repeated_run_is_written_as_held() {
        let mut runs = Runs::default();
        for (i, subject) in ["chat.msg.a.b", "chat.msg.c.d", "chat.msg.a.b"].into_iter().enumerate() {
            let attributes = process(subject, i as i64);
            assert_eq!(encoded(&mut runs, &attributes), (one_by_one(&attributes), 3), "{subject}");
        }
        assert_eq!(runs.runs.iter().filter(|r| !r.held.is_empty()).count(), 1);
    }

    /// A span of another kind (same first attribute, another operation) gets a run of its
    /// own; a number that differs ends the match there.
    #[test]
    fn another_kind_of_span_holds_its_own_run_and_a_differing_number_ends_a_match() {
        let mut runs = Runs::default();
        let publish = |port: i64| {
            vec![
                KeyValue::new("messaging.system", "nats"),
                KeyValue::new("messaging.operation.name", "publish"),
                KeyValue::new("server.port", port),
                KeyValue::new("messaging.destination.name", "chat.msg.a.b".to_owned()),
            ]
        };
        let _ = encoded(&mut runs, &process("chat.msg.a.b", 1));
        assert_eq!(encoded(&mut runs, &publish(4222)), (one_by_one(&publish(4222)), 3));
        assert_eq!(runs.runs.iter().filter(|r| !r.held.is_empty()).count(), 2);
        assert_eq!(encoded(&mut runs, &publish(4222)), (one_by_one(&publish(4222)), 3));
        let other_port = publish(5222);
        let (bytes, _) = encoded(&mut runs, &other_port);
        assert_eq!(bytes, one_by_one(&other_port));
    }

    /// Owned keys are written one by one even when a later one sits where an earlier,
    /// different one was freed.
    #[test]
    fn owned_keys_at_reused_memory_are_never_taken_for_earlier_ones() {
        let mut runs = Runs::default();
        for key in ["first.key", "other.key", "third.key"] {
            let attributes = vec![KeyValue::new(key.to_owned(), "nats"), KeyValue::new("server.port", 1)];
            assert_eq!(encoded(&mut runs, &attributes), (one_by_one(&attributes), 0), "{key}");
        }
    }
}

//! Attribute runs that repeat span after span, held per thread with their encoding; and
//! the attribute policy (`crate::policy`), applied as attributes are written.
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
//!
//! The policy: a sensitive key's value is written as [`REDACTED`]. A run holds only keys
//! the policy lets pass, so its bytes need no verdict; after a run, the keys that followed
//! it last time (its tail: the subject, the sizes, the delivery facts) are held too when
//! the policy let them all pass, and keys at their very memory again pass at once; any
//! other key gets its verdict from the policy's table. So the crate's gRPC exporter needs
//! no redaction pass over each span before this one (`policy::RedactingSpanProcessor`):
//! measured in the worker (`DRAIN_COUNT=instructions`, 2026-12-04), that pass was ~480
//! instructions per message.

use std::cell::RefCell;

use bytes::BufMut;
use opentelemetry::{Key, KeyValue, StringValue, Value};

use super::write_key_value;
use crate::policy::{REDACTED, is_sensitive};

thread_local! {
    static RUNS: RefCell<Runs> = RefCell::new(Runs::default());
}

/// Writes `attributes` as repeated field `tag`, each sensitive key's value as
/// [`REDACTED`]; their leading run from a held encoding when there is one.
pub(super) fn write_attributes<B: BufMut>(tag: u32, attributes: &[KeyValue], buf: &mut B) {
    if attributes.is_empty() {
        return;
    }
    RUNS.with(|runs| match runs.try_borrow_mut() {
        Ok(mut runs) => runs.write(tag, attributes, buf),
        // Only if writing an attribute encoded another span on this thread (none does).
        Err(_) => {
            write_checked(tag, attributes, buf);
        }
    });
}

/// Writes `attributes` one by one, each with the policy's verdict on its key; returns
/// whether every key passed.
fn write_checked<B: BufMut>(tag: u32, attributes: &[KeyValue], buf: &mut B) -> bool {
    let mut clean = true;
    for kv in attributes {
        if is_sensitive(&kv.key) {
            clean = false;
            write_key_value(tag, kv.key.as_str(), &Value::String(StringValue::from(REDACTED)), buf);
        } else {
            write_key_value(tag, kv.key.as_str(), &kv.value, buf);
        }
    }
    clean
}

/// Whether `kv` may be held: its key's and text value's clones at their memory (a
/// literal or a shared text), or a number or flag.
fn held_at_its_memory(kv: &KeyValue) -> bool {
    let value = match &kv.value {
        Value::String(s) => std::ptr::eq(s.clone().as_str(), s.as_str()),
        Value::Bool(_) | Value::I64(_) | Value::F64(_) => true,
        _ => false,
    };
    value && key_at_its_memory(&kv.key)
}

fn key_at_its_memory(key: &Key) -> bool {
    std::ptr::eq(key.clone().as_str(), key.as_str())
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
/// `n` end at `ends[n - 1]`. Every held key passed the policy.
#[derive(Default)]
struct Run {
    tag: u32,
    held: Vec<KeyValue>,
    ends: Vec<usize>,
    bytes: Vec<u8>,
    /// The keys that followed the whole run last time, all passed by the policy and held
    /// at their memory; `None` until then, or when they did not.
    tail: Option<Vec<Key>>,
}

impl Run {
    /// Whether `rest` (what follows the whole run) has the held tail's keys, one by one
    /// at their memory.
    fn has_tail(&self, rest: &[KeyValue]) -> bool {
        self.tail.as_ref().is_some_and(|tail| {
            tail.len() == rest.len()
                && tail.iter().zip(rest).all(|(held, kv)| std::ptr::eq(held.as_str(), kv.key.as_str()))
        })
    }

    /// Holds the keys of `rest` (all passed by the policy) as the tail, if each one's
    /// clone is at its memory; a tail with an owned key would never be found.
    fn hold_tail(&mut self, rest: &[KeyValue]) {
        let tail = self.tail.get_or_insert_with(Vec::new);
        tail.clear();
        for kv in rest.iter().take(Runs::MAX_HELD) {
            let held = kv.key.clone();
            if !std::ptr::eq(held.as_str(), kv.key.as_str()) {
                self.tail = None;
                return;
            }
            tail.push(held);
        }
        if tail.len() < rest.len() {
            self.tail = None;
        }
    }
}

impl Runs {
    const RUNS: usize = 8;
    /// Longer runs (and tails) are held only up to this many attributes.
    const MAX_HELD: usize = 32;

    /// Writes `attributes` (not empty): the leading ones from a held run, the rest with
    /// the policy's verdicts, or as the run's tail when they are its held keys.
    fn write<B: BufMut>(&mut self, tag: u32, attributes: &[KeyValue], buf: &mut B) {
        let (run, n) = self.write_run(tag, attributes, buf);
        let rest = &attributes[n..];
        // The tail goes with the whole run only: after part of it, `rest` starts inside.
        let run = run.map(|i| &mut self.runs[i]).filter(|run| run.held.len() == n);
        match run {
            Some(run) if run.has_tail(rest) => {
                for kv in rest {
                    write_key_value(tag, kv.key.as_str(), &kv.value, buf);
                }
            }
            Some(run) => {
                if write_checked(tag, rest, buf) {
                    run.hold_tail(rest);
                } else {
                    run.tail = None;
                }
            }
            None => {
                write_checked(tag, rest, buf);
            }
        }
    }

    /// Writes the leading attributes of `attributes` (not empty) that a held run has (the
    /// longest match); returns that run and how many it wrote. Holds a new run of them
    /// instead when no run has the first, or the best one differs from them (another kind
    /// of span: a publish where the run is a process span's) at an attribute that can be
    /// held; a run is never held past an owned text or a key the policy redacts, so values
    /// that vary per span (the subject, the sizes) go after one. A number that varies
    /// inside a run (a `nak` event's delay) holds a new run each time, in place of the
    /// oldest.
    fn write_run<B: BufMut>(&mut self, tag: u32, attributes: &[KeyValue], buf: &mut B) -> (Option<usize>, usize) {
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
        if n > 0 && !(differs_inside && holdable(&attributes[n])) {
            buf.put_slice(&run.bytes[..run.ends[n - 1]]);
            return (Some(best), n);
        }
        if n == 0 && !holdable(&attributes[0]) {
            return (None, 0);
        }
        let at = self.next;
        self.next = (self.next + 1) % Self::RUNS;
        let run = &mut self.runs[at];
        run.tag = tag;
        run.held.clear();
        run.ends.clear();
        run.bytes.clear();
        run.tail = None;
        for kv in attributes.iter().take(Self::MAX_HELD).take_while(|kv| holdable(kv)) {
            write_key_value(tag, kv.key.as_str(), &kv.value, &mut run.bytes);
            run.ends.push(run.bytes.len());
            run.held.push(kv.clone());
        }
        buf.put_slice(&run.bytes);
        (Some(at), run.held.len())
    }
}

/// Whether `kv` may be part of a run: held at its memory, and its key passed by the policy.
fn holdable(kv: &KeyValue) -> bool {
    held_at_its_memory(kv) && !is_sensitive(&kv.key)
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
        let (_, from_run) = runs.write_run(TAG, attributes, &mut buf);
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

    /// `attributes` one by one as the policy lets them out: a sensitive key's value
    /// [`REDACTED`].
    fn one_by_one_redacted(attributes: &[KeyValue]) -> Vec<u8> {
        let redacted: Vec<KeyValue> = attributes
            .iter()
            .map(|kv| match crate::policy::is_sensitive_key(kv.key.as_str()) {
                true => KeyValue::new(kv.key.clone(), REDACTED),
                false => kv.clone(),
            })
            .collect();
        one_by_one(&redacted)
    }

    fn written(runs: &mut Runs, attributes: &[KeyValue]) -> Vec<u8> {
        let mut buf = Vec::new();
        runs.write(TAG, attributes, &mut buf);
        buf
    }

    /// Sensitive keys (static, shared, owned; with literal or owned values) in the run's
    /// place, in its tail and first: redacted the first time and every time after, as the
    /// tail held for a clean list is found again, missed, and held again.
    #[test]
    fn sensitive_values_are_redacted_in_runs_tails_and_alone_every_time() {
        let shared = |key: &str| Key::from(Arc::<str>::from(key));
        let clean = |subject: &str| {
            let mut list = process(subject, 7);
            list.push(KeyValue::new("messaging.message.id", "m-1".to_owned()));
            list
        };
        let tail_secret = |subject: &str| {
            let mut list = process(subject, 7);
            list.push(KeyValue::new("auth.token", "eyJ.tail".to_owned()));
            list
        };
        let lists = [
            clean("chat.msg.a.b"),
            clean("chat.msg.c.d"),
            tail_secret("chat.msg.a.b"),
            clean("chat.msg.a.b"),
            tail_secret("chat.msg.a.b"),
            vec![
                KeyValue::new("messaging.system", "nats"),
                KeyValue::new("auth.token", "eyJ.literal"),
                KeyValue::new("server.port", 4222),
            ],
            vec![KeyValue::new(shared("nats.jwt"), "eyJ.shared"), KeyValue::new("server.port", 4222)],
            vec![
                KeyValue::new(Key::from("user_password".to_owned()), "hunter2".to_owned()),
                KeyValue::new("chat.text", "hello".to_owned()),
            ],
            vec![KeyValue::new("exception.message", "boom".to_owned()), KeyValue::new(shared("db.password"), "pw")],
        ];
        let mut runs = Runs::default();
        for round in 0..3 {
            for (i, list) in lists.iter().enumerate() {
                let bytes = written(&mut runs, list);
                assert_eq!(bytes, one_by_one_redacted(list), "list {i} (round {round})");
                let secrets = ["eyJ", "hunter2", "hello", "pw"];
                assert!(secrets.iter().all(|secret| !bytes.windows(secret.len()).any(|w| w == secret.as_bytes())));
            }
        }
        let last = clean("chat.msg.e.f");
        assert_eq!(written(&mut runs, &last), one_by_one(&last));
        assert!(runs.runs.iter().flat_map(|run| &run.held).all(|kv| !crate::policy::is_sensitive_key(kv.key.as_str())));
        let process_run = runs.runs.iter().find(|run| run.held.len() == 3).expect("the process spans' run");
        assert_eq!(process_run.tail.as_ref().map(Vec::len), Some(3), "the clean tail, held again after a secret");
    }
}

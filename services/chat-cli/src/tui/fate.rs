//! What became of a chat message, read from its trace: the JetStream consumer's attempts
//! (`process chat.msg.*.*` spans with a `messaging.nats.delivery_count`), how each was
//! settled (`ack`/`nak`/`term` events, or settle spans when those are enabled), the
//! attempts that outlived `ack_wait` (status `Timeout`) and the dead letter
//! (`publish chat.dlq.*`).

use std::fmt;

use crate::trace::Span;

/// A message's fate as far as its trace tells.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Fate {
    /// No consumer attempt in the trace yet (or Tempo has not got it).
    Pending,
    /// Attempts so far, none acknowledged or dead-lettered; the last one failed.
    Retrying { attempts: usize, timeouts: usize },
    /// The last attempt outlived `ack_wait`; the redelivery has not shown yet.
    TimedOut { attempts: usize },
    /// Stored after `retries` failed attempts (`timeouts` of them timed out).
    Stored { retries: usize, timeouts: usize },
    /// Terminated and published to `chat.dlq.*` after `attempts` attempts.
    DeadLettered { attempts: usize },
}

impl Fate {
    /// Final: nothing later can change it.
    pub(crate) fn is_final(self) -> bool {
        matches!(self, Self::Stored { .. } | Self::DeadLettered { .. })
    }

    /// Read from a trace's spans.
    pub(crate) fn of(spans: &[Span]) -> Self {
        let mut attempts: Vec<&Span> = spans.iter().filter(|s| is_attempt(s)).collect();
        attempts.sort_by_key(|s| s.start_ns);
        let settled = |attempt: &Span, how: &str| {
            attempt.events.iter().any(|e| e.name == how)
                || spans.iter().any(|s| s.parent_id.as_deref() == Some(&attempt.span_id) && s.name.starts_with(how))
        };
        let timeouts = attempts.iter().filter(|s| s.error.as_deref() == Some("Timeout")).count();
        let dead_letter = spans.iter().any(|s| s.name.starts_with("publish chat.dlq."));
        let Some(last) = attempts.last() else { return Self::Pending };
        if dead_letter || attempts.iter().any(|a| settled(a, "term")) {
            Self::DeadLettered { attempts: attempts.len() }
        } else if let Some(stored) = attempts.iter().position(|a| settled(a, "ack")) {
            Self::Stored { retries: stored, timeouts }
        } else if last.error.as_deref() == Some("Timeout") {
            Self::TimedOut { attempts: attempts.len() }
        } else if last.error.is_some() || settled(last, "nak") {
            Self::Retrying { attempts: attempts.len(), timeouts }
        } else {
            // In progress: the attempt has not ended (or Tempo has half of it).
            Self::Pending
        }
    }
}

/// One delivery by JetStream (the CLI's own `tail` spans are core NATS deliveries: no
/// delivery count).
pub(crate) fn is_attempt(span: &Span) -> bool {
    span.name.starts_with("process chat.msg.") && span.attribute("messaging.nats.delivery_count").is_some()
}

impl fmt::Display for Fate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let plural = |n: usize, one: &str, many: &str| if n == 1 { format!("1 {one}") } else { format!("{n} {many}") };
        match *self {
            Self::Pending => f.write_str("…"),
            Self::Retrying { attempts, .. } => {
                write!(f, "retrying ({} failed)", plural(attempts, "attempt", "attempts"))
            }
            Self::TimedOut { attempts } => write!(f, "timed out (attempt {attempts})"),
            Self::Stored { retries: 0, .. } => f.write_str("stored"),
            Self::Stored { retries, timeouts: 0 } => write!(f, "stored after {}", plural(retries, "retry", "retries")),
            Self::Stored { retries, timeouts } => {
                write!(f, "stored after {} ({timeouts} timed out)", plural(retries, "retry", "retries"))
            }
            Self::DeadLettered { attempts } => {
                write!(f, "dead-lettered after {}", plural(attempts, "attempt", "attempts"))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::trace::Event;

    fn attempt(id: &str, start: u64, error: Option<&str>, events: &[&str]) -> Span {
        Span {
            span_id: id.into(),
            parent_id: Some("p".into()),
            name: "process chat.msg.*.*".into(),
            service: "persist-worker".into(),
            kind: "consumer".into(),
            start_ns: start,
            end_ns: start + 10,
            error: error.map(Into::into),
            redelivered: start > 0,
            attributes: vec![("messaging.nats.delivery_count".into(), "1".into())],
            events: events.iter().map(|n| Event { name: (*n).into(), at_ns: start + 5, attributes: vec![] }).collect(),
        }
    }

    #[test]
    fn each_seed_scenario_reads_as_its_fate() {
        assert_eq!(Fate::of(&[]), Fate::Pending);
        assert_eq!(Fate::of(&[attempt("a", 0, None, &["ack"])]).to_string(), "stored");
        let retried = [attempt("a", 0, Some("boom"), &["nak"]), attempt("b", 100, None, &["ack"])];
        assert_eq!(Fate::of(&retried).to_string(), "stored after 1 retry");
        assert_eq!(Fate::of(&retried[..1]).to_string(), "retrying (1 attempt failed)");
        let slow = [attempt("a", 0, Some("Timeout"), &["exception"]), attempt("b", 100, None, &["ack"])];
        assert_eq!(Fate::of(&slow[..1]).to_string(), "timed out (attempt 1)");
        assert_eq!(Fate::of(&slow).to_string(), "stored after 1 retry (1 timed out)");
        let mut dlq = attempt("d", 5, None, &[]);
        dlq.name = "publish chat.dlq.*".into();
        let poison = [attempt("a", 0, Some("invalid"), &["term"]), dlq];
        assert_eq!(Fate::of(&poison).to_string(), "dead-lettered after 1 attempt");
        assert!(Fate::of(&poison).is_final() && !Fate::of(&slow[..1]).is_final());
    }

    #[test]
    fn settle_spans_count_like_settle_events_and_the_clis_own_spans_are_not_attempts() {
        let mut ack = attempt("s", 6, None, &[]);
        (ack.name, ack.parent_id) = ("ack chat.msg.*.*".into(), Some("a".into()));
        assert_eq!(Fate::of(&[attempt("a", 0, None, &[]), ack]), Fate::Stored { retries: 0, timeouts: 0 });
        // chat-cli's own delivery (tail, the TUI): a consumer group of its own, no delivery count.
        let mut tail = attempt("t", 0, None, &["ack"]);
        tail.attributes = vec![("messaging.consumer.group.name".into(), "chat-cli".into())];
        assert_eq!(Fate::of(&[tail]), Fate::Pending);
    }
}

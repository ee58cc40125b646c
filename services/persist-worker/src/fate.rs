//! A message's fate, decided in one place: a pure function of the delivery facts and
//! what the last step found. Everything else in the worker only carries it out.
//!
//! | what happened                         | fate                   | settlement        |
//! |---------------------------------------|------------------------|-------------------|
//! | delivered more than `MAX_DELIVER` times | dead letter `deliveries_exhausted` (not processed again) | term |
//! | delivered, within the limit           | process                | -                 |
//! | valid                                 | store                  | ack after commit  |
//! | transient failure, deliveries left    | retry with a delay     | nak(delay)        |
//! | transient failure, last delivery      | dead letter `retries_exhausted` | term     |
//! | poison (undecodable, unreadable headers, invalid, refused by the database) | dead letter `<reason>` | term |
//! | key taken by a different message      | dead letter `id_conflict` | term           |
//! | dead letter could not be published    | retry with a delay, forever (counted, alerting) | nak(delay) |
//!
//! The server's own redelivery limit is off (`max_deliver: -1`): only this table ends a
//! message's life, so nothing is dropped by the server after its last delivery.

use std::time::Duration;

/// The worker's retry settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct RetryPolicy {
    /// Deliveries allowed before a transient failure becomes a dead letter.
    pub(crate) max_deliver: u64,
    /// Delay of the first nak; doubles per delivery.
    pub(crate) nak_delay: Duration,
    /// Longest nak delay.
    pub(crate) nak_delay_max: Duration,
}

impl RetryPolicy {
    /// Whether a delivery is past the last one allowed ([`Found::Exhausted`]): not processed.
    pub(crate) fn exhausted(&self, delivery: u64) -> bool {
        delivery > self.max_deliver
    }

    /// `nak_delay * 2^(delivery-1)`, capped at `nak_delay_max`.
    pub(crate) fn delay(&self, delivery: u64) -> Duration {
        let factor = 1u32.checked_shl(delivery.saturating_sub(1).min(16) as u32).unwrap_or(u32::MAX);
        self.nak_delay.saturating_mul(factor).min(self.nak_delay_max)
    }
}

/// What stands between a delivery and its row: anything but "valid, store it".
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Found {
    /// Delivered more than `max_deliver` times: not processed again.
    Exhausted,
    /// Failed for now (database down, deadline missed, injected failure): `error.type`.
    Transient(&'static str),
    /// Can never succeed: the reason.
    Poison(&'static str),
    /// Its key is already taken by a different message.
    Conflict,
    /// Its dead letter could not be published.
    DeadLetterFailed,
}

/// What to do with the delivery instead of storing it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Fate {
    /// Nak with this delay: it comes back later.
    Retry(Duration),
    /// Publish it to `chat.dlq.<room>` with this reason, then term.
    DeadLetter(&'static str),
}

/// The one decision. `delivery` is the delivery count (1 on the first delivery).
pub(crate) fn fate(delivery: u64, found: Found, policy: &RetryPolicy) -> Fate {
    match found {
        Found::Exhausted => Fate::DeadLetter("deliveries_exhausted"),
        Found::Transient(_) if delivery >= policy.max_deliver => Fate::DeadLetter("retries_exhausted"),
        Found::Transient(_) | Found::DeadLetterFailed => Fate::Retry(policy.delay(delivery)),
        Found::Poison(reason) => Fate::DeadLetter(reason),
        Found::Conflict => Fate::DeadLetter("id_conflict"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const POLICY: RetryPolicy = RetryPolicy {
        max_deliver: 3,
        nak_delay: Duration::from_millis(100),
        nak_delay_max: Duration::from_millis(300),
    };

    #[test]
    fn every_case_of_the_table() {
        let ms = Duration::from_millis;
        let processed: Vec<bool> = (1..=4).map(|d| !POLICY.exhausted(d)).collect();
        assert_eq!(processed, [true, true, true, false]);
        let cases = [
            (4, Found::Exhausted, Fate::DeadLetter("deliveries_exhausted")),
            (1, Found::Transient("db_unavailable"), Fate::Retry(ms(100))),
            (2, Found::Transient("timeout"), Fate::Retry(ms(200))),
            (3, Found::Transient("timeout"), Fate::DeadLetter("retries_exhausted")),
            (1, Found::Poison("malformed"), Fate::DeadLetter("malformed")),
            (1, Found::Conflict, Fate::DeadLetter("id_conflict")),
            (1, Found::DeadLetterFailed, Fate::Retry(ms(100))),
            (9, Found::DeadLetterFailed, Fate::Retry(ms(300))),
        ];
        for (delivery, found, expected) in cases {
            assert_eq!(fate(delivery, found, &POLICY), expected, "delivery {delivery}, {found:?}");
        }
    }

    #[test]
    fn a_dead_letter_that_cannot_be_written_is_retried_forever_never_dropped() {
        for delivery in [1, 3, 4, 50, u64::MAX] {
            assert!(matches!(fate(delivery, Found::DeadLetterFailed, &POLICY), Fate::Retry(_)));
        }
    }

    #[test]
    fn delays_double_and_are_capped() {
        let delays: Vec<u128> = (1..=5).map(|d| POLICY.delay(d).as_millis()).collect();
        assert_eq!(delays, [100, 200, 300, 300, 300]);
        assert_eq!(POLICY.delay(u64::MAX), Duration::from_millis(300));
    }
}

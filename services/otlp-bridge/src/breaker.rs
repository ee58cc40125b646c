//! The circuit breaker: while the endpoint is away (connection refused, timeout, 429,
//! 5xx) the bridge stops fetching, so no delivery is spent on a collector that cannot
//! take it, and probes with the batch it holds, 1 s apart at first, doubling up to a
//! limit; the first answer closes it.

use std::time::Duration;

const FIRST_PAUSE: Duration = Duration::from_secs(1);

/// Closed (forwarding) or open (probing, with the pause before the next probe).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Breaker {
    /// The endpoint answers.
    Closed,
    /// The endpoint is away: probe again after this pause.
    Open(Duration),
}

impl Breaker {
    /// After a transient failure: open, or wait longer (up to `longest`).
    pub(crate) fn failed(self, longest: Duration) -> Self {
        match self {
            Self::Closed => Self::Open(FIRST_PAUSE.min(longest)),
            Self::Open(pause) => Self::Open((pause * 2).min(longest)),
        }
    }

    /// After an answer (accepted or refused: the endpoint is there).
    pub(crate) fn answered(self) -> Self {
        Self::Closed
    }

    /// Whether the breaker is open.
    pub(crate) fn is_open(self) -> bool {
        matches!(self, Self::Open(_))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn opens_on_a_failure_backs_off_doubling_and_closes_on_an_answer() {
        let longest = Duration::from_secs(10);
        let mut breaker = Breaker::Closed;
        let mut pauses = Vec::new();
        for _ in 0..6 {
            breaker = breaker.failed(longest);
            let Breaker::Open(pause) = breaker else { panic!("open after a failure") };
            pauses.push(pause.as_secs());
        }
        assert_eq!(pauses, [1, 2, 4, 8, 10, 10]);
        assert_eq!(breaker.answered(), Breaker::Closed);
        assert!(!Breaker::Closed.is_open() && breaker.is_open());
    }
}

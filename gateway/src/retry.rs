//! Retries in place: a planner call that fails with a passing error (the
//! planner or an executor unreachable or restarting, a timeout, overload)
//! is tried again under the same lease after an exponential, jittered
//! delay, until it goes through or the budget, bounded in time
//! (`--retry-for`) and in count (`--retries`), is spent.
//!
//! ```text
//! try 1 ✗ ─ 0.25–0.5 s ─ try 2 ✗ ─ 0.5–1 s ─ try 3 ✗ ─ 1–2 s ─ … ─ ≤ 8–16 s between tries
//!   └─ budget spent: FAILED "the planner call kept failing for 5m 0s (41 tries) …"
//! ```
//!
//! Retrying in place instead of releasing the workitem keeps it from being
//! claimed again at once (which spent every attempt of the control plane's
//! budget within milliseconds while a planner restarted), and leaves the
//! claim count (`--max-attempts`, the server's `--max-workitem-attempts`)
//! to what it is for: workers that die holding the workitem. The delays
//! come from `backon`'s exponential schedule with its jitter (each delay
//! plus a random part below it), so many workitems waiting out one outage
//! do not come back in lockstep.

use std::time::{Duration, Instant};

use backon::{BackoffBuilder as _, ExponentialBackoff, ExponentialBuilder};

/// Wait before the second try.
pub const FIRST_DELAY: Duration = Duration::from_millis(250);
/// Longest wait between tries, before jitter (which adds up to as much again).
pub const MAX_DELAY: Duration = Duration::from_secs(8);

/// One workitem's retry budget.
#[derive(Debug)]
pub struct Budget {
    delays: ExponentialBackoff,
    started: Instant,
    retry_for: Duration,
    max_tries: u32,
    tries: u32,
    first: Option<String>,
    last: Option<String>,
}

impl Budget {
    /// A budget of `retry_for` from `started` and `max_tries` tries (the
    /// first included).
    pub fn new(started: Instant, retry_for: Duration, max_tries: u32) -> Budget {
        let delays = ExponentialBuilder::new()
            .with_min_delay(FIRST_DELAY)
            .with_max_delay(MAX_DELAY)
            .with_factor(2.0)
            .with_jitter()
            .without_max_times()
            .build();
        Budget {
            delays,
            started,
            retry_for,
            max_tries: max_tries.max(1),
            tries: 0,
            first: None,
            last: None,
        }
    }

    /// Records a try that failed with a passing error (`error` says what
    /// failed) at `now`, and returns how long to wait before the next one;
    /// `None` when the budget is spent. The wait never reaches past the
    /// time budget: the last try is at its end, not after it.
    pub fn failed(&mut self, error: String, now: Instant) -> Option<Duration> {
        self.tries += 1;
        if self.first.is_none() {
            self.first = Some(error.clone());
        }
        self.last = Some(error);
        let left = self
            .retry_for
            .checked_sub(now.duration_since(self.started))?;
        if self.tries >= self.max_tries || left.is_zero() {
            return None;
        }
        let delay = self.delays.next()?;
        Some(delay.min(left))
    }

    /// Tries made so far.
    pub fn tries(&self) -> u32 {
        self.tries
    }

    /// Why the workitem fails once the budget is spent: what kept failing,
    /// for how long, in how many tries.
    pub fn gave_up(&self, now: Instant) -> String {
        let elapsed = now.duration_since(self.started);
        // Whole milliseconds: "4s 250ms", not nanoseconds.
        let elapsed = humantime::format_duration(Duration::from_millis(elapsed.as_millis() as u64));
        let last = self.last.as_deref().unwrap_or("no error recorded");
        match self.first.as_deref() {
            Some(first) if first != last => format!(
                "the planner call kept failing for {elapsed} ({} tries, the budget is {} tries or {}); the first: {first}; the last: {last}",
                self.tries,
                self.max_tries,
                humantime::format_duration(self.retry_for)
            ),
            _ => format!(
                "the planner call kept failing for {elapsed} ({} tries, the budget is {} tries or {}): {last}",
                self.tries,
                self.max_tries,
                humantime::format_duration(self.retry_for)
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_grow_exponentially_with_jitter_up_to_the_maximum() {
        let start = Instant::now();
        let mut budget = Budget::new(start, Duration::from_secs(3600), 1000);
        let mut base = FIRST_DELAY;
        for _ in 0..12 {
            let delay = budget.failed("Unavailable".into(), start).unwrap();
            assert!(
                delay >= base && delay < base * 2 + Duration::from_millis(1),
                "{delay:?} outside [{base:?}, 2×{base:?}]"
            );
            base = (base * 2).min(MAX_DELAY);
        }
    }

    #[test]
    fn the_budget_ends_in_count() {
        let start = Instant::now();
        let mut budget = Budget::new(start, Duration::from_secs(3600), 3);
        assert!(budget.failed("a".into(), start).is_some());
        assert!(budget.failed("a".into(), start).is_some());
        assert_eq!(budget.failed("a".into(), start), None);
        assert_eq!(budget.tries(), 3);
    }

    #[test]
    fn the_budget_ends_in_time_and_no_wait_reaches_past_it() {
        let start = Instant::now();
        let mut budget = Budget::new(start, Duration::from_secs(10), 1000);
        let near_end = start + Duration::from_millis(9_900);
        for _ in 0..8 {
            budget.failed("x".into(), start);
        }
        let delay = budget.failed("x".into(), near_end).unwrap();
        assert!(delay <= Duration::from_millis(100), "{delay:?}");
        assert_eq!(
            budget.failed("x".into(), start + Duration::from_secs(10)),
            None
        );
    }

    #[test]
    fn the_final_error_says_what_kept_failing_for_how_long() {
        let start = Instant::now();
        let mut budget = Budget::new(start, Duration::from_secs(5), 60);
        budget.failed("Unavailable: tcp connect error".into(), start);
        budget.failed(
            "Unavailable: tcp connect error".into(),
            start + Duration::from_secs(1),
        );
        let message = budget.gave_up(start + Duration::from_millis(5_250));
        assert_eq!(
            message,
            "the planner call kept failing for 5s 250ms (2 tries, the budget is 60 tries or 5s): Unavailable: tcp connect error"
        );
        budget.failed(
            "DeadlineExceeded: slow".into(),
            start + Duration::from_secs(2),
        );
        let message = budget.gave_up(start + Duration::from_secs(6));
        assert!(
            message.contains(
                "the first: Unavailable: tcp connect error; the last: DeadlineExceeded: slow"
            ),
            "{message}"
        );
    }
}

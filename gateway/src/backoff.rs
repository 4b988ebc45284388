//! How long the gateway waits before it asks the control plane for work
//! again: a pure schedule, fed with what the last claim brought.
//!
//! ```text
//! claim brought work      → ask again at once (drain the queue)
//! claim found nothing     → `interval` (≈1 s); after `idle_after` empty
//!                           claims in a row, ×1.5 per empty claim up to `idle_max`
//! claim failed            → `error_base` doubling per failure up to `error_max`
//! ```
//!
//! Every wait is jittered so that many gateways do not poll in lockstep:
//! ±`jitter` around the wait when polling, "equal jitter" (half fixed, half
//! random) after errors. The random number is a parameter, so the schedule is
//! a plain function in tests.

use std::time::Duration;

/// What the last claim brought.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Poll {
    /// A workitem was claimed.
    Work,
    /// The queue was empty.
    Empty,
    /// The control plane could not be asked (transport error, 5xx, 401, ...).
    Error,
}

/// The parameters of the schedule.
#[derive(Debug, Clone, PartialEq)]
pub struct Schedule {
    /// Wait after an empty claim while recently busy.
    pub interval: Duration,
    /// Empty claims in a row before the gateway counts as idle.
    pub idle_after: u32,
    /// Longest wait while idle.
    pub idle_max: Duration,
    /// Wait after the first failed claim.
    pub error_base: Duration,
    /// Longest wait after failed claims.
    pub error_max: Duration,
    /// Relative jitter of polling waits, e.g. 0.1 for ±10 %.
    pub jitter: f64,
}

impl Default for Schedule {
    fn default() -> Self {
        Schedule {
            interval: Duration::from_secs(1),
            idle_after: 60,
            idle_max: Duration::from_secs(5),
            error_base: Duration::from_secs(1),
            error_max: Duration::from_secs(30),
            jitter: 0.1,
        }
    }
}

/// The state of the schedule: how many empty and failed claims in a row.
#[derive(Debug, Clone)]
pub struct Backoff {
    schedule: Schedule,
    empty: u32,
    errors: u32,
    last: Poll,
}

impl Backoff {
    /// A fresh schedule, as after a claim that found work.
    pub fn new(schedule: Schedule) -> Self {
        Backoff {
            schedule,
            empty: 0,
            errors: 0,
            last: Poll::Work,
        }
    }

    /// The schedule's settings.
    pub fn schedule(&self) -> &Schedule {
        &self.schedule
    }

    /// Records the result of a claim.
    pub fn record(&mut self, poll: Poll) {
        match poll {
            Poll::Work => {
                self.empty = 0;
                self.errors = 0;
            }
            Poll::Empty => {
                self.empty = self.empty.saturating_add(1);
                self.errors = 0;
            }
            Poll::Error => self.errors = self.errors.saturating_add(1),
        }
        self.last = poll;
    }

    /// Failed claims in a row.
    pub fn errors(&self) -> u32 {
        self.errors
    }

    /// The wait before the next claim; `random` is uniform in `[0, 1)`.
    pub fn delay(&self, random: f64) -> Duration {
        let random = random.clamp(0.0, 1.0);
        let s = &self.schedule;
        match self.last {
            Poll::Work => Duration::ZERO,
            Poll::Empty => {
                let beyond = self.empty.saturating_sub(s.idle_after);
                let grown = s.interval.as_secs_f64() * 1.5f64.powi(beyond.min(64) as i32);
                let base = grown.min(s.idle_max.as_secs_f64().max(s.interval.as_secs_f64()));
                let factor = 1.0 + s.jitter * (2.0 * random - 1.0);
                Duration::from_secs_f64((base * factor).max(0.0))
            }
            Poll::Error => {
                let exponent = self.errors.saturating_sub(1).min(32) as i32;
                let grown = s.error_base.as_secs_f64() * 2f64.powi(exponent);
                let capped = grown.min(s.error_max.as_secs_f64());
                Duration::from_secs_f64(capped / 2.0 + capped / 2.0 * random)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secs(d: Duration) -> f64 {
        (d.as_secs_f64() * 1000.0).round() / 1000.0
    }

    #[test]
    fn work_means_ask_again_at_once() {
        let mut backoff = Backoff::new(Schedule::default());
        backoff.record(Poll::Empty);
        backoff.record(Poll::Work);
        assert_eq!(backoff.delay(0.7), Duration::ZERO);
    }

    #[test]
    fn empty_claims_wait_about_the_interval_within_the_jitter() {
        let mut backoff = Backoff::new(Schedule::default());
        backoff.record(Poll::Empty);
        assert_eq!(secs(backoff.delay(0.0)), 0.9);
        assert_eq!(secs(backoff.delay(0.5)), 1.0);
        assert_eq!(secs(backoff.delay(0.999_999)), 1.1);
    }

    #[test]
    fn idle_gateways_back_off_up_to_the_idle_maximum() {
        let schedule = Schedule {
            idle_after: 3,
            ..Schedule::default()
        };
        let mut backoff = Backoff::new(schedule);
        let mut waits = Vec::new();
        for _ in 0..10 {
            backoff.record(Poll::Empty);
            waits.push(secs(backoff.delay(0.5)));
        }
        assert_eq!(waits, [1.0, 1.0, 1.0, 1.5, 2.25, 3.375, 5.0, 5.0, 5.0, 5.0]);
        backoff.record(Poll::Work);
        backoff.record(Poll::Empty);
        assert_eq!(secs(backoff.delay(0.5)), 1.0, "work resets the idle count");
    }

    #[test]
    fn errors_double_up_to_the_maximum_with_equal_jitter() {
        let mut backoff = Backoff::new(Schedule::default());
        let mut bounds = Vec::new();
        for _ in 0..7 {
            backoff.record(Poll::Error);
            bounds.push((secs(backoff.delay(0.0)), secs(backoff.delay(0.999_999))));
        }
        assert_eq!(
            bounds,
            [
                (0.5, 1.0),
                (1.0, 2.0),
                (2.0, 4.0),
                (4.0, 8.0),
                (8.0, 16.0),
                (15.0, 30.0),
                (15.0, 30.0)
            ]
        );
        assert_eq!(backoff.errors(), 7);
        backoff.record(Poll::Empty);
        assert_eq!(backoff.errors(), 0, "an answer resets the error count");
        assert_eq!(secs(backoff.delay(0.5)), 1.0);
    }

    #[test]
    fn jitter_never_leaves_its_band() {
        let mut backoff = Backoff::new(Schedule::default());
        backoff.record(Poll::Empty);
        for i in 0..=1000 {
            let wait = backoff.delay(f64::from(i) / 1000.0).as_secs_f64();
            assert!((0.9..=1.1).contains(&wait), "{wait}");
        }
        // Out-of-range randomness is clamped rather than trusted.
        assert_eq!(secs(backoff.delay(7.0)), 1.1);
        assert_eq!(secs(backoff.delay(-3.0)), 0.9);
    }
}

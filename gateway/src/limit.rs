//! How many workitems the gateway holds at once: at most `--concurrency`,
//! fewer while the planner or an executor says it is saturated.
//!
//! ```text
//! claim ─▶ acquire a slot (waits while `limit` are in flight) ─▶ process ─▶ slot back
//! planner answer: passing error (unavailable, overloaded, timeout) ─▶ limit halved (≥ 1)
//!                 success                                          ─▶ limit + 1 (≤ max)
//! ```
//!
//! Additive increase, multiplicative decrease, as TCP's congestion window:
//! a saturated planner or executor sees fewer calls at once within one
//! round of answers, and the gateway claims less; nothing is queued inside
//! the gateway beyond the slots it holds. A decrease takes effect as slots
//! come back (a slot held by running work is not taken away from it), and
//! at most one decrease counts per [`SHRINK_EVERY`], so one outage seen by
//! every workitem in flight halves the limit once, not once per workitem.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Shortest time between two decreases of the limit.
pub const SHRINK_EVERY: Duration = Duration::from_secs(1);

/// The adaptive bound on workitems in flight.
#[derive(Debug)]
pub struct Limit {
    slots: Arc<Semaphore>,
    max: usize,
    state: Mutex<State>,
}

#[derive(Debug)]
struct State {
    /// The current limit, `1..=max`.
    limit: usize,
    /// Slots to take out of circulation as they come back (a decrease
    /// while they were held).
    debt: usize,
    /// When the limit last decreased.
    shrunk_at: Option<Instant>,
}

/// One workitem's place in flight; gives it back (or retires it, after a
/// decrease) when dropped.
#[derive(Debug)]
pub struct Slot {
    permit: Option<OwnedSemaphorePermit>,
    limit: Arc<Limit>,
}

impl Limit {
    /// At most `max` (at least 1) in flight.
    pub fn new(max: usize) -> Arc<Limit> {
        let max = max.max(1);
        Arc::new(Limit {
            slots: Arc::new(Semaphore::new(max)),
            max,
            state: Mutex::new(State {
                limit: max,
                debt: 0,
                shrunk_at: None,
            }),
        })
    }

    /// Waits for a free slot.
    pub async fn acquire(self: &Arc<Self>) -> Slot {
        let permit = Arc::clone(&self.slots)
            .acquire_owned()
            .await
            .expect("the semaphore is never closed");
        Slot {
            permit: Some(permit),
            limit: Arc::clone(self),
        }
    }

    /// The current limit.
    pub fn current(&self) -> usize {
        self.state.lock().expect("limit lock").limit
    }

    /// The planner or an executor is saturated or away: halve the limit
    /// (at least 1), at most once per [`SHRINK_EVERY`]. Returns the new
    /// limit when it changed.
    pub fn shrink(&self, now: Instant) -> Option<usize> {
        let mut state = self.state.lock().expect("limit lock");
        if state.limit == 1
            || state
                .shrunk_at
                .is_some_and(|at| now.duration_since(at) < SHRINK_EVERY)
        {
            return None;
        }
        let smaller = (state.limit / 2).max(1);
        let by = state.limit - smaller;
        state.limit = smaller;
        state.shrunk_at = Some(now);
        // Free slots go at once; held ones when they come back.
        let forgotten = self.slots.forget_permits(by);
        state.debt += by - forgotten;
        Some(smaller)
    }

    /// A call went through: one more slot, up to the maximum. Returns the
    /// new limit when it changed.
    pub fn grow(&self) -> Option<usize> {
        let mut state = self.state.lock().expect("limit lock");
        if state.limit >= self.max {
            return None;
        }
        state.limit += 1;
        if state.debt > 0 {
            state.debt -= 1;
        } else {
            self.slots.add_permits(1);
        }
        Some(state.limit)
    }

    fn give_back(&self, permit: OwnedSemaphorePermit) {
        let mut state = self.state.lock().expect("limit lock");
        if state.debt > 0 {
            state.debt -= 1;
            permit.forget();
        } else {
            drop(permit);
        }
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        if let Some(permit) = self.permit.take() {
            self.limit.give_back(permit);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn free(limit: &Limit) -> usize {
        limit.slots.available_permits()
    }

    #[tokio::test]
    async fn claiming_stops_while_the_limit_is_in_flight() {
        let limit = Limit::new(2);
        let a = limit.acquire().await;
        let _b = limit.acquire().await;
        let third = tokio::time::timeout(Duration::from_millis(50), limit.acquire()).await;
        assert!(third.is_err(), "a third slot while two are held");
        drop(a);
        let _c = tokio::time::timeout(Duration::from_millis(50), limit.acquire())
            .await
            .expect("a slot given back is free again");
    }

    #[tokio::test]
    async fn saturation_halves_the_limit_once_per_interval_and_success_restores_it() {
        let limit = Limit::new(8);
        let held: Vec<Slot> = futures_held(&limit, 6).await;
        let now = Instant::now();
        assert_eq!(limit.shrink(now), Some(4));
        // Every workitem in flight seeing the same outage: one decrease.
        assert_eq!(limit.shrink(now + Duration::from_millis(10)), None);
        // Two were free and went at once; two more go as held slots return.
        assert_eq!(free(&limit), 0);
        drop(held);
        assert_eq!(free(&limit), 4, "6 back, 2 retired");
        assert_eq!(limit.shrink(now + SHRINK_EVERY), Some(2));
        assert_eq!(free(&limit), 2);
        assert_eq!(limit.shrink(now + 2 * SHRINK_EVERY), Some(1));
        assert_eq!(limit.shrink(now + 3 * SHRINK_EVERY), None, "never below 1");
        assert_eq!(free(&limit), 1);
        for expected in 2..=8 {
            assert_eq!(limit.grow(), Some(expected));
        }
        assert_eq!(limit.grow(), None, "never above the maximum");
        assert_eq!((limit.current(), free(&limit)), (8, 8));
    }

    async fn futures_held(limit: &Arc<Limit>, n: usize) -> Vec<Slot> {
        let mut held = Vec::new();
        for _ in 0..n {
            held.push(limit.acquire().await);
        }
        held
    }
}

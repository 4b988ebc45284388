//! The Acks of recently completed plans, so a plan id is applied at most once.
//!
//! A resent plan (the planner retried after losing the stream, or a
//! duplicate delivery) gets the Ack of the first application back without
//! a single API call. Only the Ack of a plan that completed (no error) is
//! remembered: a failure is not an answer to replay, because its cause (a
//! 5xx, a webhook timeout, a ResourceQuota, an unhealthy rollout) may be gone
//! by the retry, which carries the same plan id when nothing was written. A
//! resent failed plan is checked again; where its first run wrote, its
//! preconditions (now stale) refuse it and the planner re-plans. The cache is
//! bounded: the least recently used entry goes first. It lives in memory
//! only; after a restart a resent plan is checked again the same way.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;

use k8sworker_proto::v1::Ack;

#[derive(Debug)]
struct Entry {
    digest: String,
    ack: Ack,
    used: u64,
}

#[derive(Debug, Default)]
struct Lru {
    entries: HashMap<String, Entry>,
    /// Last use → plan id, oldest first.
    order: BTreeMap<u64, String>,
    clock: u64,
}

/// A bounded, least-recently-used map from plan id to its Ack.
#[derive(Debug)]
pub struct AckCache {
    capacity: usize,
    lru: Mutex<Lru>,
}

/// What the cache knows about a plan id.
#[derive(Clone, Debug, PartialEq)]
pub enum Cached {
    /// Applied before, with the same digest: here is its Ack.
    Ack(Ack),
    /// Applied before with another digest: the id was reused for a different plan.
    OtherDigest(String),
    /// Not applied, or forgotten since.
    Unknown,
}

impl AckCache {
    /// An empty cache remembering at most `capacity` plan ids (at least 1).
    pub fn new(capacity: usize) -> Self {
        AckCache {
            capacity: capacity.max(1),
            lru: Mutex::new(Lru::default()),
        }
    }

    /// What is known about `plan_id` applied with `digest`; a hit counts as
    /// a use for eviction.
    pub fn get(&self, plan_id: &str, digest: &str) -> Cached {
        let mut lru = self.lru.lock().unwrap_or_else(|e| e.into_inner());
        let lru = &mut *lru;
        lru.clock += 1;
        let now = lru.clock;
        let Some(entry) = lru.entries.get_mut(plan_id) else {
            return Cached::Unknown;
        };
        lru.order.remove(&entry.used);
        entry.used = now;
        lru.order.insert(now, plan_id.to_string());
        if entry.digest == digest {
            Cached::Ack(entry.ack.clone())
        } else {
            Cached::OtherDigest(entry.digest.clone())
        }
    }

    /// Remembers `ack` for `plan_id` with `digest` when the plan completed
    /// (the Ack has no error), replacing what was there and evicting the
    /// least recently used id beyond the capacity; true when remembered. A
    /// failed Ack is not remembered, so a retry of the plan is applied again.
    pub fn insert(&self, plan_id: &str, digest: &str, ack: Ack) -> bool {
        if ack.error.is_some() {
            return false;
        }
        let mut lru = self.lru.lock().unwrap_or_else(|e| e.into_inner());
        let lru = &mut *lru;
        lru.clock += 1;
        let now = lru.clock;
        let entry = Entry {
            digest: digest.to_string(),
            ack,
            used: now,
        };
        if let Some(old) = lru.entries.insert(plan_id.to_string(), entry) {
            lru.order.remove(&old.used);
        }
        lru.order.insert(now, plan_id.to_string());
        while lru.entries.len() > self.capacity {
            let Some((_, oldest)) = lru.order.pop_first() else {
                break;
            };
            lru.entries.remove(&oldest);
        }
        true
    }

    /// Plan ids remembered.
    pub fn len(&self) -> usize {
        self.lru
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entries
            .len()
    }

    /// Whether no plan id is remembered.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mk_ack(id: &str) -> Ack {
        Ack {
            plan_id: id.into(),
            ..Default::default()
        }
    }

    #[test]
    fn returns_the_ack_for_the_same_id_and_digest() {
        let cache = AckCache::new(4);
        assert_eq!(cache.get("p1", "d1"), Cached::Unknown);
        cache.insert("p1", "d1", mk_ack("p1"));
        assert_eq!(cache.get("p1", "d1"), Cached::Ack(mk_ack("p1")));
        assert_eq!(cache.get("p1", "d2"), Cached::OtherDigest("d1".into()));
    }

    #[test]
    fn a_failed_ack_is_not_remembered() {
        let cache = AckCache::new(4);
        let failed = Ack {
            error: Some(k8sworker_proto::v1::Error {
                message: "exceeded quota".into(),
                ..Default::default()
            }),
            ..mk_ack("p1")
        };
        assert!(!cache.insert("p1", "d1", failed));
        assert_eq!(cache.get("p1", "d1"), Cached::Unknown);
        assert!(cache.is_empty());
        assert!(cache.insert("p1", "d1", mk_ack("p1")));
        assert_eq!(cache.get("p1", "d1"), Cached::Ack(mk_ack("p1")));
    }

    #[test]
    fn evicts_the_least_recently_used() {
        let cache = AckCache::new(2);
        cache.insert("p1", "d", mk_ack("p1"));
        cache.insert("p2", "d", mk_ack("p2"));
        let _ = cache.get("p1", "d"); // p2 is now the oldest
        cache.insert("p3", "d", mk_ack("p3"));
        assert_eq!(cache.len(), 2);
        assert_eq!(cache.get("p2", "d"), Cached::Unknown);
        assert!(matches!(cache.get("p1", "d"), Cached::Ack(_)));
        assert!(matches!(cache.get("p3", "d"), Cached::Ack(_)));
    }

    #[test]
    fn reinserting_replaces_without_growing() {
        let cache = AckCache::new(2);
        cache.insert("p1", "d", mk_ack("p1"));
        cache.insert("p1", "d", mk_ack("p1"));
        assert_eq!(cache.len(), 1);
        let lru = cache.lru.lock().unwrap();
        assert_eq!(lru.order.len(), 1);
    }
}

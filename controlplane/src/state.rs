//! What every request handler and the maintenance sweep share: the store,
//! the configuration, the claimers' wake-ups and the shutdown signal. The
//! server builds one [`AppState`] and hands clones to the API and the sweep,
//! so neither needs to know the server.

use std::collections::HashMap;
use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use governor::clock::{Clock, DefaultClock};
use governor::state::keyed::HashMapStateStore;
use governor::{Quota, RateLimiter};
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore, watch};

use crate::config::Config;
use crate::keyring::Keyring;
use crate::store::Store;
use crate::store::lock::DatabaseLock;

/// Wake-ups for long-polling claims, one per (namespace, cluster).
#[derive(Debug, Default)]
pub struct Wakeups {
    clusters: Mutex<HashMap<(String, String), Arc<Notify>>>,
}

impl Wakeups {
    /// The notifier a claimer of this cluster waits on.
    pub fn notifier(&self, namespace: &str, cluster: &str) -> Arc<Notify> {
        let mut clusters = self
            .clusters
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        Arc::clone(
            clusters
                .entry((namespace.to_owned(), cluster.to_owned()))
                .or_default(),
        )
    }

    /// Wakes every claimer waiting on this cluster.
    pub fn wake(&self, namespace: &str, cluster: &str) {
        let clusters = self
            .clusters
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(notify) = clusters.get(&(namespace.to_owned(), cluster.to_owned())) {
            notify.notify_waiters();
        }
    }
}

/// Why a login was not attempted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum LoginRefused {
    /// The client address made more than `per_minute` attempts.
    #[error("more than {per_minute} login attempts per minute")]
    RateLimited {
        /// The configured rate.
        per_minute: u32,
        /// When the next attempt is admitted.
        retry_after: Duration,
    },
    /// `concurrency` password verifications are running already.
    #[error("{concurrency} password verifications are running")]
    Busy {
        /// The configured number at once.
        concurrency: u32,
    },
}

/// The limits on password logins (`GET /authenticate` with Basic
/// credentials), whose PBKDF2 verification is slow by design: a rate per
/// client address (governor's GCRA, a token bucket) and a number running at
/// once (a semaphore), so logins can neither exhaust the CPU nor the
/// blocking pool storage runs on. Unknown users are verified against
/// [`LoginLimits::dummy_hash`], so they cost what known ones cost.
#[derive(Debug)]
pub struct LoginLimits {
    per_minute: u32,
    concurrency: u32,
    rate: RateLimiter<IpAddr, HashMapStateStore<IpAddr>, DefaultClock>,
    running: Arc<Semaphore>,
    /// A hash of a random password with the configured iterations, verified
    /// for user names that do not exist.
    pub dummy_hash: String,
}

/// Client addresses remembered before idle ones are forgotten.
const REMEMBERED_CLIENTS: usize = 10_000;

impl LoginLimits {
    /// Limits of `per_minute` attempts per client address and `concurrency`
    /// verifications at once (both at least 1); the dummy hash is made with
    /// `iterations`.
    pub fn new(per_minute: u32, concurrency: u32, iterations: u32) -> LoginLimits {
        let per_minute = per_minute.max(1);
        let concurrency = concurrency.max(1);
        let quota = Quota::per_minute(NonZeroU32::new(per_minute).unwrap_or(NonZeroU32::MIN));
        LoginLimits {
            per_minute,
            concurrency,
            rate: RateLimiter::hashmap(quota),
            running: Arc::new(Semaphore::new(concurrency as usize)),
            dummy_hash: crate::auth::hash_password(&crate::auth::new_token(), iterations),
        }
    }

    /// Admits one attempt from `client`, holding one of the verification
    /// slots until the permit is dropped.
    pub fn admit(&self, client: IpAddr) -> Result<OwnedSemaphorePermit, LoginRefused> {
        if self.rate.len() > REMEMBERED_CLIENTS {
            self.rate.retain_recent();
        }
        if let Err(not_until) = self.rate.check_key(&client) {
            return Err(LoginRefused::RateLimited {
                per_minute: self.per_minute,
                retry_after: not_until.wait_time_from(DefaultClock::default().now()),
            });
        }
        Arc::clone(&self.running)
            .try_acquire_owned()
            .map_err(|_| LoginRefused::Busy {
                concurrency: self.concurrency,
            })
    }
}

/// What every handler can reach; cheap to clone.
#[derive(Debug, Clone)]
pub struct AppState {
    /// The database.
    pub store: Store,
    /// The keys that seal secret values before they are stored and open
    /// them for a worker's claim.
    pub keyring: Arc<Keyring>,
    /// The server's configuration.
    pub config: Arc<Config>,
    /// Wake-ups for claimers waiting on a cluster's queue.
    pub wakeups: Arc<Wakeups>,
    /// `true` once shutdown began.
    pub shutdown: watch::Receiver<bool>,
    /// The limits on password logins.
    pub logins: Arc<LoginLimits>,
    /// The database's lock, shared, held as long as anything serving holds
    /// the state: `rotate-key` is refused meanwhile
    /// ([`crate::store::lock`]).
    pub database_lock: Arc<DatabaseLock>,
}

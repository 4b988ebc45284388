//! What every request handler and the maintenance sweep share: the store,
//! the configuration, the claimers' wake-ups and the shutdown signal. The
//! server builds one [`AppState`] and hands clones to the API and the sweep,
//! so neither needs to know the server.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::sync::{Notify, watch};

use crate::config::Config;
use crate::keyring::Keyring;
use crate::store::Store;

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
}

//! `k8soperations` (*ours*): the operation history, read-only, for admins
//! ([`crate::store::history`] keeps it). Listed and read through the shared
//! handlers of [`super::resource`], so `where`, `sort`, `props`, `limit`,
//! `page` and `count` work as for every resource; the list's own order is
//! the most recently requested first.

use rusqlite::Transaction;
use serde_json::Value;

use super::resource::{Readable, Resource};
use crate::auth::Action;
use crate::store::{StoreError, history};

/// The `k8soperations` resource type.
#[derive(Debug)]
pub struct Operations;

impl Resource for Operations {
    const NAME: &'static str = "k8soperations";
    const KEY: &'static str = "id";
}

impl Readable for Operations {
    const READ: Action = Action::ReadOperations;

    fn list(tx: &Transaction<'_>, namespace: &str) -> Result<Vec<Value>, StoreError> {
        history::list(tx, namespace)
    }

    fn get(tx: &Transaction<'_>, namespace: &str, key: &str) -> Result<Option<Value>, StoreError> {
        history::get(tx, namespace, key)
    }
}

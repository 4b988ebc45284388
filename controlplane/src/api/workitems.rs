//! `k8sworkitems`: read, and cancelled by delete, through the shared
//! handlers of [`super::resource`]; created by commands and changed by the
//! worker protocol, so every other write is refused. A worker holding a
//! cancelled item finds its lease lost when it reports.

use rusqlite::Transaction;
use serde_json::Value;

use super::error::ApiError;
use super::resource::{Readable, Removable, Resource};
use crate::auth::Action;
use crate::lifecycle::Workitem;
use crate::store::StoreError;
use crate::store::workitems;

/// The `k8sworkitems` resource type.
#[derive(Debug)]
pub struct Workitems;

impl Resource for Workitems {
    const NAME: &'static str = "k8sworkitems";
    const KEY: &'static str = "requestId";
}

impl Readable for Workitems {
    const READ: Action = Action::ReadWorkitems;

    fn list(tx: &Transaction<'_>, namespace: &str) -> Result<Vec<Value>, StoreError> {
        Ok(workitems::list(tx, namespace)?
            .iter()
            .map(Workitem::to_doc)
            .collect())
    }

    fn get(tx: &Transaction<'_>, namespace: &str, key: &str) -> Result<Option<Value>, StoreError> {
        Ok(workitems::get(tx, namespace, key)?.map(|item| item.to_doc()))
    }
}

impl Removable for Workitems {
    const DELETE: Action = Action::CancelWorkitems;

    fn delete(tx: &Transaction<'_>, namespace: &str, key: &str) -> Result<bool, ApiError> {
        Ok(workitems::delete(tx, namespace, key)?)
    }
}

/// Any other write on `k8sworkitems`.
pub async fn read_only() -> ApiError {
    ApiError::OperationNotAllowed {
        resource: Workitems::NAME,
        operation: "direct writes",
        reason: "workitems are created by command operations and changed by the worker protocol",
    }
}

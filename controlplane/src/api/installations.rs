//! `k8sinstallations`: read through the shared handlers of
//! [`super::resource`]; written only by the worker protocol, so every direct
//! write is refused.

use rusqlite::Transaction;
use serde_json::Value;

use super::error::ApiError;
use super::resource::{Readable, Resource};
use crate::auth::Action;
use crate::store::StoreError;
use crate::store::resources::{self, DocTable};

/// The `k8sinstallations` resource type.
#[derive(Debug)]
pub struct Installations;

impl Resource for Installations {
    const NAME: &'static str = "k8sinstallations";
    const KEY: &'static str = "name";
}

impl Readable for Installations {
    const READ: Action = Action::ReadInstallations;

    fn list(tx: &Transaction<'_>, namespace: &str) -> Result<Vec<Value>, StoreError> {
        resources::list_docs(tx, DocTable::Installations, namespace)
    }

    fn get(tx: &Transaction<'_>, namespace: &str, key: &str) -> Result<Option<Value>, StoreError> {
        resources::get_doc(tx, DocTable::Installations, namespace, key)
    }
}

/// Any write on `k8sinstallations`: "No direct update operations are allowed".
pub async fn read_only() -> ApiError {
    ApiError::OperationNotAllowed {
        resource: Installations::NAME,
        operation: "direct writes",
        reason: "installations change only through the command operations (deploy, undeploy, shutdown, restart)",
    }
}

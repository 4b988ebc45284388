//! `k8sinstallations`: read through the shared handlers of
//! [`super::resource`]; written only by the worker protocol, so every direct
//! write is refused. Reads show `configSpec` with its secret values
//! redacted.

use rusqlite::Transaction;
use serde_json::Value;

use super::error::ApiError;
use super::resource::{Readable, Resource};
use crate::auth::Action;
use crate::secret_config;
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

    /// Records with their `configSpec` secret values redacted (also before
    /// a `where` clause sees them, so a select cannot probe a value).
    fn list(tx: &Transaction<'_>, namespace: &str) -> Result<Vec<Value>, StoreError> {
        let mut records = resources::list_docs(tx, DocTable::Installations, namespace)?;
        records
            .iter_mut()
            .for_each(secret_config::redact_installation);
        Ok(records)
    }

    fn get(tx: &Transaction<'_>, namespace: &str, key: &str) -> Result<Option<Value>, StoreError> {
        let mut record = resources::get_doc(tx, DocTable::Installations, namespace, key)?;
        record
            .iter_mut()
            .for_each(secret_config::redact_installation);
        Ok(record)
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

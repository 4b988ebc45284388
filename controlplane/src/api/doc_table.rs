//! The reads shared by the resources kept as JSON documents in one
//! [`DocTable`] (`k8sclusters`, `k8sinstallations`): a select over the
//! caller's namespace, and one document by name.

use axum::Json;
use axum::response::Response;
use serde_json::Value;

use super::extract::selected;
use crate::auth::{Action, Caller};
use crate::error::ApiError;
use crate::query::Select;
use crate::server::AppState;
use crate::store::resources::{self, DocTable};

/// Every document of `table` in the caller's namespace that `select` keeps,
/// for a caller allowed `action`.
pub async fn list(
    state: &AppState,
    caller: Caller,
    action: Action,
    table: DocTable,
    select: &Select,
) -> Result<Response, ApiError> {
    caller.require(action)?;
    let namespace = caller.namespace;
    let docs = state
        .store
        .transaction(move |tx| resources::list_docs(tx, table, &namespace))
        .await?;
    Ok(selected(select, docs))
}

/// The document `name` of `table` in the caller's namespace, for a caller
/// allowed `action`; `not_found(name)` when there is none.
pub async fn get(
    state: &AppState,
    caller: Caller,
    action: Action,
    table: DocTable,
    name: String,
    not_found: fn(String) -> ApiError,
) -> Result<Json<Value>, ApiError> {
    caller.require(action)?;
    state
        .store
        .transaction(move |tx| {
            resources::get_doc(tx, table, &caller.namespace, &name)?.ok_or_else(|| not_found(name))
        })
        .await
        .map(Json)
}

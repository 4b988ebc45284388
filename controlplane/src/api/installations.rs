//! `k8sinstallations` (read-only; written through the worker protocol) and
//! `k8sworkitems` (read; cancel by delete).

use axum::Json;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::Value;

use super::extract::{JsonBody, SelectParams, selected};
use crate::auth::{Action, Caller};
use crate::error::ApiError;
use crate::operations::Target;
use crate::server::AppState;
use crate::store::resources::DocTable;
use crate::store::workitems;

/// `GET /k8sinstallations`.
pub async fn list(
    State(state): State<AppState>,
    caller: Caller,
    SelectParams(select): SelectParams,
) -> Result<Response, ApiError> {
    let table = DocTable::Installations;
    super::doc_table::list(&state, caller, Action::ReadInstallations, table, &select).await
}

/// `POST /k8sinstallations/select`.
pub async fn select(
    state: State<AppState>,
    caller: Caller,
    params: SelectParams,
    JsonBody(body): JsonBody,
) -> Result<Response, ApiError> {
    let params = params.with_where(&body)?;
    list(state, caller, params).await
}

/// `GET /k8sinstallations/<name>`.
pub async fn get_one(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let table = DocTable::Installations;
    super::doc_table::get(
        &state,
        caller,
        Action::ReadInstallations,
        table,
        name,
        |id| ApiError::NotFound {
            resource: "k8sinstallations",
            key: "name",
            id,
        },
    )
    .await
}

/// Any write on `k8sinstallations`: "No direct update operations are allowed".
pub async fn read_only() -> ApiError {
    ApiError::OperationNotAllowed {
        resource: "k8sinstallations",
        operation: "direct writes",
        reason: "installations change only through the command operations (deploy, undeploy, shutdown, restart)",
    }
}

/// `POST /k8sinstallations/<name>/command`.
pub async fn command(
    State(state): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    Path(name): Path<String>,
    JsonBody(body): JsonBody,
) -> Result<Json<Value>, ApiError> {
    super::run_command(state, caller, &headers, Target::Installation(name), body).await
}

/// `GET /k8sworkitems`.
pub async fn list_workitems(
    State(state): State<AppState>,
    caller: Caller,
    SelectParams(select): SelectParams,
) -> Result<Response, ApiError> {
    caller.require(Action::ReadWorkitems)?;
    let namespace = caller.namespace.clone();
    let docs = state
        .store
        .transaction(move |tx| {
            Ok(workitems::list(tx, &namespace)?
                .iter()
                .map(workitems::WorkitemRow::to_doc)
                .collect::<Vec<_>>())
        })
        .await?;
    Ok(selected(&select, docs))
}

/// `POST /k8sworkitems/select`.
pub async fn select_workitems(
    state: State<AppState>,
    caller: Caller,
    params: SelectParams,
    JsonBody(body): JsonBody,
) -> Result<Response, ApiError> {
    let params = params.with_where(&body)?;
    list_workitems(state, caller, params).await
}

fn workitem_not_found(id: String) -> ApiError {
    ApiError::NotFound {
        resource: "k8sworkitems",
        key: "requestId",
        id,
    }
}

/// `GET /k8sworkitems/<requestId>`.
pub async fn get_workitem(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    caller.require(Action::ReadWorkitems)?;
    state
        .store
        .transaction(move |tx| {
            workitems::get(tx, &caller.namespace, &id)?
                .map(|row| row.to_doc())
                .ok_or_else(|| workitem_not_found(id))
        })
        .await
        .map(Json)
}

/// `DELETE /k8sworkitems/<requestId>`: cancels the workitem. A worker
/// holding it will find its lease lost on completion.
pub async fn delete_workitem(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    caller.require(Action::CancelWorkitems)?;
    state
        .store
        .transaction(move |tx| {
            if workitems::delete(tx, &caller.namespace, &id)? {
                Ok(())
            } else {
                Err(workitem_not_found(id))
            }
        })
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// `DELETE /k8sworkitems?where=…`.
pub async fn delete_workitems_where(
    State(state): State<AppState>,
    caller: Caller,
    SelectParams(select): SelectParams,
) -> Result<Response, ApiError> {
    caller.require(Action::CancelWorkitems)?;
    let count = select.count;
    let deleted = state
        .store
        .transaction(move |tx| {
            let docs: Vec<Value> = workitems::list(tx, &caller.namespace)?
                .iter()
                .map(workitems::WorkitemRow::to_doc)
                .collect();
            let select = crate::query::Select {
                props: None,
                ..select
            };
            let matched = select.apply(docs);
            for doc in &matched.documents {
                if let Some(id) = doc.get("requestId").and_then(Value::as_str) {
                    workitems::delete(tx, &caller.namespace, id)?;
                }
            }
            Ok(matched.documents.len())
        })
        .await?;
    let mut response = StatusCode::NO_CONTENT.into_response();
    if count {
        response
            .headers_mut()
            .insert("x-total-count", HeaderValue::from(deleted as u64));
    }
    Ok(response)
}

/// Any other write on `k8sworkitems`.
pub async fn workitems_read_only() -> ApiError {
    ApiError::OperationNotAllowed {
        resource: "k8sworkitems",
        operation: "direct writes",
        reason: "workitems are created by command operations and changed by the worker protocol",
    }
}

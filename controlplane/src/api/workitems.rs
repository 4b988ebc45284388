//! `k8sworkitems`: read, and cancelled by delete, through the shared
//! handlers of [`super::resource`]; created by commands and changed by the
//! worker protocol, so every other write is refused. A worker holding a
//! cancelled item finds its lease lost when it reports.
//!
//! With `--vantiq-strict` a worker token reports through this resource
//! instead (`vantiq-api.md` §6.2): `PUT k8sworkitems/<id>` with `status`
//! (and `message`) and `DELETE k8sworkitems/<id>` when done ([`update`],
//! [`remove`]).

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use k8sworker_client::protocol::MAX_PARAM_BYTES;
use rusqlite::Transaction;
use serde_json::Value;

use super::error::ApiError;
use super::extract::{JsonBody, object};
use super::procedures::check_cluster;
use super::resource::{Readable, Removable, Resource, delete_one};
use crate::auth::{Action, Caller};
use crate::lifecycle::{Status, Workitem};
use crate::state::AppState;
use crate::store::StoreError;
use crate::store::workitems::{self, StatusChange};

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

/// `PUT k8sworkitems/<id>` by a worker token (`--vantiq-strict`): body
/// `{"status": "PENDING" | "FAILED" | "INVALID" | "REQUESTED", "message"?}`
/// and nothing else; the workitem afterwards (`null` when a cancelled one
/// was given back and dropped). 409 `…workitem.status.conflict` when the
/// change does not follow from its status now ([`workitems::set_status`]);
/// 403 for another cluster's workitem.
pub async fn update(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    JsonBody(body): JsonBody,
) -> Result<Json<Value>, ApiError> {
    caller.require(Action::ReportWork)?;
    let body = object(body)?;
    if let Some(other) = body
        .keys()
        .find(|key| !matches!(key.as_str(), "status" | "message"))
    {
        return Err(ApiError::invalid(
            other,
            "a worker changes only a workitem's status and message",
        ));
    }
    let asked = body
        .get("status")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned();
    let to = Status::parse(&asked)
        .filter(|status| *status != Status::Cancelled)
        .ok_or_else(|| {
            ApiError::invalid("status", "must be PENDING, FAILED, INVALID or REQUESTED")
        })?;
    let message = match body.get("message") {
        None | Some(Value::Null) => None,
        Some(Value::String(text)) if !text.is_empty() && text.len() <= MAX_PARAM_BYTES => {
            Some(text.clone())
        }
        Some(_) => {
            return Err(ApiError::invalid(
                "message",
                format!("must be a string of 1 to {MAX_PARAM_BYTES} bytes"),
            ));
        }
    };
    let max_attempts = state.config.max_workitem_attempts;
    // A refusal writes nothing, except giving up on an exhausted item: the
    // transaction answers the refusal inside its result, so that commits.
    state
        .store
        .transaction(move |tx| {
            check_cluster(tx, &caller, &id)?;
            let conflict = |from: Status, request_id: String| ApiError::StatusConflict {
                request_id,
                from: from.as_str(),
                to: asked.clone(),
            };
            let change = workitems::set_status(
                tx,
                &caller.namespace,
                &id,
                to,
                message.as_deref(),
                max_attempts,
            )?;
            match change {
                StatusChange::Changed(item) => Ok(Ok(item.unwrap_or(Value::Null))),
                StatusChange::Conflict(from) => Err(conflict(from, id)),
                StatusChange::GaveUp => Ok(Err(conflict(Status::Failed, id))),
            }
        })
        .await?
        .map(Json)
}

/// `DELETE k8sworkitems/<id>` with `--vantiq-strict`: a worker token's
/// delete says the work is done (the item goes at once,
/// [`workitems::finish`]); anyone else's cancels it, as without the flag.
pub async fn remove(
    state: State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    if !caller.grants.allows(Action::ReportWork) {
        return delete_one::<Workitems>(state, caller, Path(id)).await;
    }
    state
        .store
        .transaction(move |tx| {
            check_cluster(tx, &caller, &id)?;
            match workitems::finish(tx, &caller.namespace, &id)? {
                Ok(true) => Ok(StatusCode::NO_CONTENT),
                Ok(false) => Err(Workitems::not_found(id)),
                Err(from) => Err(ApiError::StatusConflict {
                    request_id: id,
                    from: from.as_str(),
                    to: "deleted".into(),
                }),
            }
        })
        .await
}

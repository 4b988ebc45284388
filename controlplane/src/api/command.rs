//! The command endpoints, `POST k8sclusters/<name>/command` and
//! `POST k8sinstallations/<name>/command` with `{"op": .., "data": ..}`:
//! checked and enqueued by [`crate::operations`], answered with the new
//! workitem at once, and the cluster's long-polling workers woken.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::HeaderMap;
use serde_json::{Map, Value};

use super::clusters::Clusters;
use super::error::ApiError;
use super::extract::{JsonBody, object};
use super::installations::Installations;
use super::resource::Resource;
use crate::auth::{Action, Caller};
use crate::operations::{self, Rules, Target};
use crate::query::json_kind;
use crate::state::AppState;

/// A resource type whose instances take commands.
pub trait Commandable: Resource {
    /// What a command on the instance `name` is addressed to.
    fn target(name: String) -> Target;

    /// What the command `op` needs the caller to be allowed.
    fn action(_op: &str) -> Action {
        Action::RequestOperation
    }
}

impl Commandable for Clusters {
    fn target(name: String) -> Target {
        Target::Cluster(name)
    }
}

impl Commandable for Installations {
    fn target(name: String) -> Target {
        Target::Installation(name)
    }

    /// `verify` changes nothing in the cluster: whoever reads installations
    /// may ask for one.
    fn action(op: &str) -> Action {
        if op == crate::lifecycle::Operation::Verify.as_str() {
            Action::VerifyInstallation
        } else {
            Action::RequestOperation
        }
    }
}

/// `POST <type>/<name>/command`: validate, enqueue, wake the cluster's
/// long-polling workers, answer the workitem.
pub async fn run<R: Commandable>(
    State(state): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    Path(name): Path<String>,
    JsonBody(body): JsonBody,
) -> Result<Json<Value>, ApiError> {
    let op = body.get("op").and_then(Value::as_str).unwrap_or_default();
    caller.require(R::action(op))?;
    let (op, data) = parts(body)?;
    let target = R::target(name);
    let traceparent = crate::trace_context::for_request(&headers);
    let rules = Rules {
        self_k8s_namespace: state.config.self_k8s_namespace.clone(),
        keyring: state.keyring.clone(),
    };
    let item = state
        .store
        .transaction(move |tx| {
            operations::request(tx, &caller, &target, &op, &data, traceparent, &rules)
        })
        .await?;
    tracing::info!(
        namespace = %item.namespace,
        cluster = %item.cluster,
        installation = %item.installation,
        operation = %item.operation,
        request_id = %item.request_id,
        "workitem requested"
    );
    state.wakeups.wake(&item.namespace, &item.cluster);
    Ok(Json(item.to_doc()))
}

/// Splits a command body into `op` and `data` (`null` when absent).
fn parts(body: Value) -> Result<(String, Value), ApiError> {
    let mut body: Map<String, Value> = object(body)?;
    let op = match body.remove("op") {
        Some(Value::String(op)) => op,
        Some(other) => {
            return Err(ApiError::invalid(
                "op",
                format!("must be a string, got {}", json_kind(&other)),
            ));
        }
        None => return Err(ApiError::invalid("op", "is required")),
    };
    let data = body.remove("data").unwrap_or(Value::Null);
    if let Some(key) = body.keys().next() {
        return Err(ApiError::invalid(
            key,
            "is not a field of a command (op, data)",
        ));
    }
    Ok((op, data))
}

//! A deploy checked or previewed before it is submitted (*ours*), for a
//! form that shows errors as the user types and the objects a request
//! renders to:
//!
//! - `POST k8sinstallations/validate` with a deploy's `data` (`name`,
//!   `k8sNamespace`, `config` or `configRef`, optionally `clusterName`) →
//!   always 200 `{"valid": bool, "errors": [{"field", "message"}]}`
//!   ([`crate::operations::check_deploy`]); admins and users.
//! - `POST k8sinstallations/preview` with the same body (`clusterName`
//!   required) → 200 `{"objects": [{"kind", "name", "manifest"}]}`, every
//!   Secret's data masked ([`k8sworker_core::preview`]); a refused request
//!   is answered as the deploy would be (400 with every violation). The
//!   rules of a deploy; admins.
//!
//! Both carry the deploy out in a transaction that is rolled back
//! ([`crate::store::Store::rolled_back`]): the same rules, nothing written.

use axum::Json;
use axum::extract::State;
use k8sworker_core::render::RenderError;
use serde_json::{Value, json};

use super::error::ApiError;
use super::extract::{JsonBody, object};
use crate::auth::{Action, Caller};
use crate::operations::{self, Rules};
use crate::query::json_kind;
use crate::state::AppState;

fn rules(state: &AppState) -> Rules {
    Rules {
        self_k8s_namespace: state.config.self_k8s_namespace.clone(),
        keyring: state.keyring.clone(),
    }
}

/// `POST k8sinstallations/validate`.
pub async fn validate(
    State(state): State<AppState>,
    caller: Caller,
    JsonBody(body): JsonBody,
) -> Result<Json<Value>, ApiError> {
    caller.require(Action::ValidateDeploy)?;
    let data = object(body)?;
    let rules = rules(&state);
    let errors = state
        .store
        .rolled_back(move |tx| operations::check_deploy(tx, &caller, &data, &rules))
        .await?;
    let errors: Vec<Value> = errors
        .into_iter()
        .map(|error| json!({"field": error.field, "message": error.message}))
        .collect();
    Ok(Json(json!({"valid": errors.is_empty(), "errors": errors})))
}

/// `POST k8sinstallations/preview`.
pub async fn preview(
    State(state): State<AppState>,
    caller: Caller,
    JsonBody(body): JsonBody,
) -> Result<Json<Value>, ApiError> {
    caller.require(Action::RequestOperation)?;
    let data = object(body)?;
    let cluster = match data.get("clusterName") {
        Some(Value::String(cluster)) if !cluster.is_empty() => cluster.clone(),
        Some(other) if !other.is_string() => {
            return Err(ApiError::invalid(
                "clusterName",
                format!("must be a string, got {}", json_kind(other)),
            ));
        }
        _ => {
            return Err(ApiError::invalid(
                "clusterName",
                "is required: the cluster the request would be deployed to",
            ));
        }
    };
    let rules = rules(&state);
    let draft = {
        let cluster = cluster.clone();
        state
            .store
            .rolled_back(move |tx| {
                operations::draft_deploy(tx, &caller, &cluster, &Value::Object(data), &rules)
            })
            .await?
    };
    let objects =
        k8sworker_core::preview::preview(&draft.request, &cluster, &draft.ingress_default_node)
            .map_err(|error| match error {
                RenderError::Invalid(errors) => ApiError::ValidationFailed(
                    errors.errors.iter().map(ToString::to_string).collect(),
                ),
                other => ApiError::ValidationFailed(vec![other.to_string()]),
            })?;
    let objects: Vec<Value> = objects
        .iter()
        .map(|object| {
            json!({
                "kind": object.kind().as_str(),
                "name": object.name(),
                "manifest": object.to_preview_json(),
            })
        })
        .collect();
    Ok(Json(json!({"objects": objects})))
}

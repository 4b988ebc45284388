//! `k8sclusters`: insert and update here; list, select, get and delete
//! through the shared handlers of [`super::resource`], with [`Clusters`]
//! saying how. A cluster is not deleted while it has installations or
//! outstanding workitems.

use axum::Json;
use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use rusqlite::Transaction;
use serde_json::{Map, Value, json};

use k8sworker_core::names;

use super::error::ApiError;
use super::extract::{JsonBody, RawQuery, is_upsert, object};
use super::resource::{Readable, Removable, Resource};
use crate::audit::{audit, iso, now_ms};
use crate::auth::{Action, Caller, random_id};
use crate::query::json_kind;
use crate::state::AppState;
use crate::store::StoreError;
use crate::store::resources::{self, DocTable, MAX_OPERATION_COUNT};

/// The `k8sclusters` resource type.
#[derive(Debug)]
pub struct Clusters;

impl Resource for Clusters {
    const NAME: &'static str = "k8sclusters";
    const KEY: &'static str = "name";
}

impl Readable for Clusters {
    const READ: Action = Action::ReadClusters;

    fn list(tx: &Transaction<'_>, namespace: &str) -> Result<Vec<Value>, StoreError> {
        resources::list_docs(tx, DocTable::Clusters, namespace)
    }

    fn get(tx: &Transaction<'_>, namespace: &str, key: &str) -> Result<Option<Value>, StoreError> {
        resources::get_doc(tx, DocTable::Clusters, namespace, key)
    }
}

impl Removable for Clusters {
    const DELETE: Action = Action::WriteClusters;

    /// Refused while installations or outstanding workitems exist.
    fn delete(tx: &Transaction<'_>, namespace: &str, key: &str) -> Result<bool, ApiError> {
        if resources::get_doc(tx, DocTable::Clusters, namespace, key)?.is_none() {
            return Ok(false);
        }
        let (installations, workitems) = resources::cluster_usage(tx, namespace, key)?;
        if installations > 0 || workitems > 0 {
            return Err(ApiError::ClusterInUse {
                cluster: key.to_owned(),
                installations,
                workitems,
            });
        }
        Ok(resources::delete_cluster(tx, namespace, key)?)
    }
}

/// A cluster name: what the worker's `CLUSTER_NAME` must match.
fn check_name(name: &Value) -> Result<String, ApiError> {
    let Value::String(name) = name else {
        return Err(ApiError::invalid(
            "name",
            format!("must be a string, got {}", json_kind(name)),
        ));
    };
    let valid = !name.is_empty()
        && name.len() <= 253
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if !valid {
        return Err(ApiError::invalid(
            "name",
            "must be 1-253 characters of letters, digits, '-', '_' or '.'",
        ));
    }
    Ok(name.clone())
}

/// The writable properties of a body, type-checked; `_id`, `ars_*` and
/// `name` are left out (the name is the identity).
fn writable(body: &Map<String, Value>) -> Result<Map<String, Value>, ApiError> {
    let mut out = Map::new();
    for (key, value) in body {
        match key.as_str() {
            "name" | "_id" => {}
            key if key.starts_with("ars_") => {}
            "ingressDefaultNode" => match value {
                Value::String(text) if names::is_ingress_host(text) => {
                    out.insert(key.into(), value.clone());
                }
                // It becomes the host of the installations' Ingresses, which
                // the API server refuses unless it is a DNS name.
                Value::String(text) if names::is_ip_literal(text) => {
                    return Err(ApiError::invalid(
                        "ingressDefaultNode",
                        format!(
                            "`{text}` is an IP address; an Ingress host must be a DNS name \
                             (Kubernetes refuses IP addresses): give the node's DNS name"
                        ),
                    ));
                }
                Value::String(text) => {
                    return Err(ApiError::invalid(
                        "ingressDefaultNode",
                        format!(
                            "`{text}` is not a valid host name: a lower-case DNS name of at \
                             most 253 characters, optionally `*.`-prefixed"
                        ),
                    ));
                }
                _ => {
                    return Err(ApiError::invalid(
                        "ingressDefaultNode",
                        format!("must be a non-empty host name, got {}", json_kind(value)),
                    ));
                }
            },
            "lifecycleOperationCount" => match value.as_i64() {
                Some(count) if (0..=MAX_OPERATION_COUNT).contains(&count) => {
                    out.insert(key.into(), value.clone());
                }
                _ => {
                    return Err(ApiError::invalid(
                        "lifecycleOperationCount",
                        format!("must be an integer between 0 and {MAX_OPERATION_COUNT}"),
                    ));
                }
            },
            other => {
                return Err(ApiError::invalid(
                    other,
                    "is not a property of k8sclusters (name, ingressDefaultNode, lifecycleOperationCount)",
                ));
            }
        }
    }
    Ok(out)
}

/// The `ingressDefaultNode` a new cluster gets when none is given:
/// `vantiq-<name>-node`, lower-cased, as Vantiq does.
///
/// # Errors
/// A cluster name allows `_` and 253 characters, a host neither: when the
/// default would not be a valid Ingress host the cluster is refused naming
/// the field, rather than stored and failing every deploy at plan time.
fn default_ingress_node(name: &str, props: &Map<String, Value>) -> Result<(), ApiError> {
    let default = format!("vantiq-{name}-node").to_lowercase();
    if props.contains_key("ingressDefaultNode") || names::is_ingress_host(&default) {
        return Ok(());
    }
    Err(ApiError::invalid(
        "ingressDefaultNode",
        format!(
            "the default `{default}` made from the cluster's name is not a valid host name \
             (a lower-case DNS name of at most 253 characters): give ingressDefaultNode"
        ),
    ))
}

fn new_doc(caller: &Caller, name: &str, props: &Map<String, Value>) -> Value {
    let now = now_ms();
    let mut doc = audit(
        &caller.namespace,
        1,
        now,
        &caller.username,
        now,
        &caller.username,
    );
    doc.insert("_id".into(), json!(random_id(12)));
    doc.insert("name".into(), json!(name));
    doc.insert(
        "ingressDefaultNode".into(),
        json!(format!("vantiq-{name}-node").to_lowercase()),
    );
    doc.insert("lifecycleOperationCount".into(), json!(0));
    for (key, value) in props {
        doc.insert(key.clone(), value.clone());
    }
    Value::Object(doc)
}

fn apply_update(caller: &Caller, doc: &mut Value, props: &Map<String, Value>) {
    for (key, value) in props {
        doc[key] = value.clone();
    }
    let version = doc.get("ars_version").and_then(Value::as_i64).unwrap_or(1);
    doc["ars_version"] = json!(version.saturating_add(1));
    doc["ars_modifiedAt"] = json!(iso(now_ms()));
    doc["ars_modifiedBy"] = json!(caller.username);
}

/// `POST /k8sclusters` (insert, or upsert with `?upsert=true`).
pub async fn insert(
    State(state): State<AppState>,
    caller: Caller,
    RawQuery(query): RawQuery,
    JsonBody(body): JsonBody,
) -> Result<Response, ApiError> {
    caller.require(Action::WriteClusters)?;
    let body = object(body)?;
    let name = check_name(body.get("name").unwrap_or(&Value::Null))?;
    let props = writable(&body)?;
    let upsert = is_upsert(&query);
    state
        .store
        .transaction(move |tx| {
            let namespace = caller.namespace.as_str();
            match resources::get_doc(tx, DocTable::Clusters, namespace, &name)? {
                Some(mut doc) if upsert => {
                    apply_update(&caller, &mut doc, &props);
                    resources::replace_cluster(tx, namespace, &name, &doc)?;
                    // Vantiq answers an update with the changed properties only.
                    Ok(Json(Value::Object(props)).into_response())
                }
                Some(_) => Err(ApiError::Duplicate {
                    resource: Clusters::NAME,
                    id: name,
                }),
                None => {
                    default_ingress_node(&name, &props)?;
                    let doc = new_doc(&caller, &name, &props);
                    resources::insert_cluster(tx, namespace, &name, &doc)?;
                    Ok(Json(doc).into_response())
                }
            }
        })
        .await
}

/// `PUT /k8sclusters/<name>`.
pub async fn update(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
    JsonBody(body): JsonBody,
) -> Result<Response, ApiError> {
    caller.require(Action::WriteClusters)?;
    let body = object(body)?;
    if let Some(given) = body.get("name")
        && given.as_str() != Some(name.as_str())
    {
        return Err(ApiError::invalid("name", "a cluster cannot be renamed"));
    }
    let props = writable(&body)?;
    state
        .store
        .transaction(move |tx| {
            let namespace = caller.namespace.as_str();
            let mut doc = resources::get_doc(tx, DocTable::Clusters, namespace, &name)?
                .ok_or_else(|| Clusters::not_found(name.clone()))?;
            apply_update(&caller, &mut doc, &props);
            resources::replace_cluster(tx, namespace, &name, &doc)?;
            Ok(Json(Value::Object(props)).into_response())
        })
        .await
}

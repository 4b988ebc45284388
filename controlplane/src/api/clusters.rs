//! `k8sclusters`: CRUD with Vantiq's select parameters, and the command
//! endpoint that turns an operation into a workitem.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{Map, Value, json};

use super::extract::{JsonBody, RawQuery, SelectParams, is_upsert};
use crate::auth::{Action, Caller, random_id};
use crate::error::ApiError;
use crate::operations::{Target, json_kind};
use crate::server::AppState;
use crate::store::resources::{self, DocTable};
use crate::store::{audit, iso, now_ms};

const RESOURCE: &str = "k8sclusters";

fn not_found(name: &str) -> ApiError {
    ApiError::NotFound {
        resource: RESOURCE,
        key: "name",
        id: name.to_owned(),
    }
}

fn invalid(field: &str, reason: impl Into<String>) -> ApiError {
    ApiError::InvalidArgument {
        field: field.to_owned(),
        reason: reason.into(),
    }
}

/// A cluster name: what the worker's `CLUSTER_NAME` must match.
fn check_name(name: &Value) -> Result<String, ApiError> {
    let Value::String(name) = name else {
        return Err(invalid(
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
        return Err(invalid(
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
                Value::String(text) if !text.is_empty() && text.len() <= 253 => {
                    out.insert(key.into(), value.clone());
                }
                _ => {
                    return Err(invalid(
                        "ingressDefaultNode",
                        format!("must be a non-empty host name, got {}", json_kind(value)),
                    ));
                }
            },
            "lifecycleOperationCount" => match value.as_i64() {
                Some(count) if count >= 0 => {
                    out.insert(key.into(), value.clone());
                }
                _ => {
                    return Err(invalid(
                        "lifecycleOperationCount",
                        "must be a non-negative integer",
                    ));
                }
            },
            other => {
                return Err(invalid(
                    other,
                    "is not a property of k8sclusters (name, ingressDefaultNode, lifecycleOperationCount)",
                ));
            }
        }
    }
    Ok(out)
}

fn body_object(body: Value) -> Result<Map<String, Value>, ApiError> {
    match body {
        Value::Object(object) => Ok(object),
        other => Err(invalid(
            "body",
            format!("must be a JSON object, got {}", json_kind(&other)),
        )),
    }
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
    doc["ars_version"] = json!(version + 1);
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
    let body = body_object(body)?;
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
                    resource: RESOURCE,
                    id: name,
                }),
                None => {
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
    let body = body_object(body)?;
    if let Some(given) = body.get("name")
        && given.as_str() != Some(name.as_str())
    {
        return Err(invalid("name", "a cluster cannot be renamed"));
    }
    let props = writable(&body)?;
    state
        .store
        .transaction(move |tx| {
            let namespace = caller.namespace.as_str();
            let mut doc = resources::get_doc(tx, DocTable::Clusters, namespace, &name)?
                .ok_or_else(|| not_found(&name))?;
            apply_update(&caller, &mut doc, &props);
            resources::replace_cluster(tx, namespace, &name, &doc)?;
            Ok(Json(Value::Object(props)).into_response())
        })
        .await
}

/// `GET /k8sclusters`.
pub async fn list(
    State(state): State<AppState>,
    caller: Caller,
    SelectParams(select): SelectParams,
) -> Result<Response, ApiError> {
    super::doc_table::list(
        &state,
        caller,
        Action::ReadClusters,
        DocTable::Clusters,
        &select,
    )
    .await
}

/// `POST /k8sclusters/select` (the body is the where clause).
pub async fn select(
    state: State<AppState>,
    caller: Caller,
    params: SelectParams,
    JsonBody(body): JsonBody,
) -> Result<Response, ApiError> {
    let params = params.with_where(&body)?;
    list(state, caller, params).await
}

/// `GET /k8sclusters/<name>`.
pub async fn get_one(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
) -> Result<Json<Value>, ApiError> {
    super::doc_table::get(
        &state,
        caller,
        Action::ReadClusters,
        DocTable::Clusters,
        name,
        |name| not_found(&name),
    )
    .await
}

fn delete_checked(
    tx: &rusqlite::Transaction<'_>,
    namespace: &str,
    name: &str,
) -> Result<(), ApiError> {
    let (installations, workitems) = resources::cluster_usage(tx, namespace, name)?;
    if installations > 0 || workitems > 0 {
        return Err(ApiError::ClusterInUse {
            cluster: name.to_owned(),
            installations,
            workitems,
        });
    }
    resources::delete_cluster(tx, namespace, name)?;
    Ok(())
}

/// `DELETE /k8sclusters/<name>`: refused while installations or
/// outstanding workitems exist.
pub async fn delete_one(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
) -> Result<StatusCode, ApiError> {
    caller.require(Action::WriteClusters)?;
    state
        .store
        .transaction(move |tx| {
            let namespace = caller.namespace.as_str();
            if resources::get_doc(tx, DocTable::Clusters, namespace, &name)?.is_none() {
                return Err(not_found(&name));
            }
            delete_checked(tx, namespace, &name)
        })
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// `DELETE /k8sclusters?where=…`: all or nothing.
pub async fn delete_where(
    State(state): State<AppState>,
    caller: Caller,
    SelectParams(select): SelectParams,
) -> Result<Response, ApiError> {
    caller.require(Action::WriteClusters)?;
    let count = select.count;
    let deleted = state
        .store
        .transaction(move |tx| {
            let namespace = caller.namespace.as_str();
            let docs = resources::list_docs(tx, DocTable::Clusters, namespace)?;
            let select = crate::query::Select {
                props: None,
                ..select
            };
            let matched = select.apply(docs);
            for doc in &matched.documents {
                let name = doc.get("name").and_then(Value::as_str).unwrap_or_default();
                delete_checked(tx, namespace, name)?;
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

/// `POST /k8sclusters/<name>/command` with `{"op": .., "data": ..}`.
pub async fn command(
    State(state): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    Path(name): Path<String>,
    JsonBody(body): JsonBody,
) -> Result<Json<Value>, ApiError> {
    super::run_command(state, caller, &headers, Target::Cluster(name), body).await
}

/// Splits a command body into `op` and `data`.
pub fn command_parts(body: Value) -> Result<(String, Value), ApiError> {
    let mut body = body_object(body)?;
    let op = match body.remove("op") {
        Some(Value::String(op)) => op,
        Some(other) => {
            return Err(invalid(
                "op",
                format!("must be a string, got {}", json_kind(&other)),
            ));
        }
        None => return Err(invalid("op", "is required")),
    };
    let data = body.remove("data").unwrap_or(Value::Null);
    if let Some(key) = body.keys().next() {
        return Err(invalid(key, "is not a field of a command (op, data)"));
    }
    Ok((op, data))
}

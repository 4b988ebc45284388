//! `k8sinstallations`: read through the shared handlers of
//! [`super::resource`]; written only by the worker protocol, so every direct
//! write is refused. Reads show `configSpec` with its secret values
//! redacted.
//!
//! With `--vantiq-strict` a worker token writes its cluster's records
//! itself, as `vantiq-api.md` §6.2 infers a Vantiq worker does:
//! `POST k8sinstallations?upsert=true` ([`upsert`]) and
//! `DELETE k8sinstallations/<name>` ([`remove`]).

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use k8sworker_core::model::InstallationRequest;
use k8sworker_core::validate;
use rusqlite::Transaction;
use serde_json::{Map, Value, json};

use super::error::ApiError;
use super::extract::{JsonBody, object};
use super::procedures::check_report_types;
use super::resource::{Readable, Resource};
use crate::audit::{iso, now_ms};
use crate::auth::{Action, Caller};
use crate::keyring::Keyring;
use crate::lifecycle::{REPORTABLE_INSTALLATION_STATUSES, REPORTED_PROPERTIES};
use crate::query::json_kind;
use crate::secret_config;
use crate::state::AppState;
use crate::store::StoreError;
use crate::store::identity;
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

/// What a worker's upsert may set besides [`REPORTED_PROPERTIES`]: what a
/// deploy records (§2.1) and the verify time.
const WORKER_PROPERTIES: &[&str] = &[
    "name",
    "clusterName",
    "k8sNamespace",
    "configSpec",
    "installationDate",
    "installedBy",
    "installationStatus",
    "k8sInstallationType",
    "lastVerifiedAt",
];

/// The cluster a worker token serves: the one it is bound to, else
/// `cluster`, to which it is bound now (in the caller's transaction). 403
/// for another cluster; 404 when the cluster does not exist.
fn worker_cluster(tx: &Transaction<'_>, caller: &Caller, cluster: &str) -> Result<(), ApiError> {
    if resources::get_doc(tx, DocTable::Clusters, &caller.namespace, cluster)?.is_none() {
        return Err(ApiError::not_found("k8sclusters", "name", cluster));
    }
    let bound = match &caller.k8s_cluster {
        Some(bound) => Some(bound.clone()),
        None => identity::bind_token_cluster(tx, &caller.token_hash, cluster)?,
    };
    match bound {
        Some(bound) if bound != cluster => Err(ApiError::WorkerClusterDenied {
            bound,
            requested: cluster.to_owned(),
        }),
        _ => Ok(()),
    }
}

/// `POST k8sinstallations?upsert=true` by a worker token
/// (`--vantiq-strict`): creates the record named `name`, or merges the
/// given properties into it. Only [`WORKER_PROPERTIES`] and
/// [`REPORTED_PROPERTIES`]; `clusterName` must be the token's cluster and
/// the record's; `installationStatus` one of RUNNING, STOPPED, DAMAGED,
/// FAILED. Secret slots of `configSpec` are sealed at rest. Answers the
/// record, its secret values redacted.
pub async fn upsert(
    State(state): State<AppState>,
    caller: Caller,
    JsonBody(body): JsonBody,
) -> Result<Json<Value>, ApiError> {
    caller.require(Action::ReportWork)?;
    let mut body = object(body)?;
    if let Some(other) = body.keys().find(|key| {
        !WORKER_PROPERTIES.contains(&key.as_str()) && !REPORTED_PROPERTIES.contains(&key.as_str())
    }) {
        return Err(ApiError::invalid(
            other,
            "a worker records only what it deployed and what the cluster reports",
        ));
    }
    let text = |key: &str| {
        body.get(key)
            .and_then(Value::as_str)
            .filter(|text| !text.is_empty())
            .map(str::to_owned)
            .ok_or_else(|| ApiError::invalid(key, "required, a non-empty string"))
    };
    let name = text("name")?;
    let cluster = text("clusterName")?;
    check_worker_types(&body)?;
    check_identity(&name, body.get("k8sNamespace").and_then(Value::as_str))?;
    if let Some(status) = body.get("installationStatus")
        && !status
            .as_str()
            .is_some_and(|status| REPORTABLE_INSTALLATION_STATUSES.contains(&status))
    {
        return Err(ApiError::invalid(
            "installationStatus",
            format!(
                "must be one of {}",
                REPORTABLE_INSTALLATION_STATUSES.join(", ")
            ),
        ));
    }
    if let Some(config) = body.get("configSpec") {
        secret_config::refuse_marker_outside_slots(config).map_err(|error| {
            ApiError::invalid(
                &format!("configSpec[{}].{}", error.index, error.key),
                error.to_string(),
            )
        })?;
    }
    let keyring = state.keyring.clone();
    let verify = state.config.verify_interval;
    state
        .store
        .transaction(move |tx| {
            worker_cluster(tx, &caller, &cluster)?;
            let namespace = &caller.namespace;
            let existing = resources::get_doc(tx, DocTable::Installations, namespace, &name)?;
            if let Some(config) = body.get_mut("configSpec") {
                seal_config(config, existing.as_ref(), &keyring)?;
            }
            let now = now_ms();
            let mut doc = match existing {
                Some(Value::Object(doc)) => {
                    let recorded = doc.get("clusterName").and_then(Value::as_str);
                    if let Some(recorded) = recorded
                        && recorded != cluster
                    {
                        return Err(ApiError::InstallationOnOtherCluster {
                            installation: name,
                            actual: recorded.to_owned(),
                            requested: cluster,
                        });
                    }
                    let recorded = doc.get("k8sNamespace").and_then(Value::as_str);
                    let asked = body.get("k8sNamespace").and_then(Value::as_str);
                    if let (Some(recorded), Some(asked)) = (recorded, asked)
                        && recorded != asked
                    {
                        return Err(ApiError::InstallationInOtherNamespace {
                            installation: name,
                            actual: recorded.to_owned(),
                            requested: asked.to_owned(),
                        });
                    }
                    doc
                }
                _ => {
                    let mut doc = serde_json::Map::new();
                    doc.insert("_id".into(), json!(crate::auth::random_id(12)));
                    doc.insert("ars_namespace".into(), json!(namespace));
                    doc.insert("ars_createdAt".into(), json!(iso(now)));
                    doc.insert("ars_createdBy".into(), json!(caller.username));
                    doc
                }
            };
            doc.extend(body);
            doc.insert("ars_modifiedAt".into(), json!(iso(now)));
            doc.insert("ars_modifiedBy".into(), json!(caller.username));
            let settled = doc
                .get("installationStatus")
                .and_then(Value::as_str)
                .is_some_and(|status| matches!(status, "RUNNING" | "STOPPED" | "DAMAGED"));
            let next_verify_at =
                (settled && !verify.is_zero()).then(|| now + verify.as_millis() as i64);
            let mut doc = Value::Object(doc);
            resources::put_installation(tx, namespace, &name, &cluster, &doc, next_verify_at)?;
            secret_config::redact_installation(&mut doc);
            Ok(doc)
        })
        .await
        .map(Json)
}

/// The types of a worker's record: [`REPORTED_PROPERTIES`] as the claim
/// protocol's report has them, the other [`WORKER_PROPERTIES`] strings (or
/// `null`, but `name` and `clusterName`), `configSpec` a list (of Vantiq's
/// config entries, §2.3).
fn check_worker_types(body: &Map<String, Value>) -> Result<(), ApiError> {
    check_report_types(body, "")?;
    for (key, value) in body {
        let expected = match key.as_str() {
            "configSpec" if !value.is_array() => "a list",
            "configSpec" => continue,
            key if REPORTED_PROPERTIES.contains(&key) => continue,
            // Unset, as a worker may write what a request did not say.
            "k8sNamespace"
            | "installationDate"
            | "installedBy"
            | "k8sInstallationType"
            | "lastVerifiedAt"
                if value.is_null() =>
            {
                continue;
            }
            _ if !value.is_string() => "a string",
            _ => continue,
        };
        return Err(ApiError::invalid(
            key,
            format!("must be {expected}, got {}", json_kind(value)),
        ));
    }
    Ok(())
}

/// The record's name (and `k8sNamespace`, when given) by the rules a
/// deploy's are checked with (`k8sworker_core::validate::validate_identity`):
/// a record no deploy could have made would be one no command can address.
fn check_identity(name: &str, k8s_namespace: Option<&str>) -> Result<(), ApiError> {
    let request = InstallationRequest {
        name: name.to_owned(),
        // Only the name is checked when the worker sends no namespace.
        k8s_namespace: k8s_namespace.unwrap_or("default").to_owned(),
        config: Vec::new(),
    };
    validate::validate_identity(&request).map_err(|errors| {
        ApiError::ValidationFailed(errors.errors.iter().map(ToString::to_string).collect())
    })
}

/// Seals the secret slots of a worker's `configSpec` (`secret_config`); a
/// slot holding the redaction marker (what every read shows, so what a
/// worker that writes back the record it read sends) keeps the value
/// `existing` stores for the same entry, sealed as it is. Without one the
/// marker is refused (400): sealing it would replace the secret with the
/// marker's text, which the next redeploy would put in the cluster.
fn seal_config(
    config: &mut Value,
    existing: Option<&Value>,
    keyring: &Keyring,
) -> Result<(), ApiError> {
    let previous = existing.and_then(|record| record.get("configSpec"));
    let kept = secret_config::keep_redacted(config, previous).map_err(|error| {
        ApiError::invalid(&format!("configSpec[{}]", error.index), error.to_string())
    })?;
    secret_config::for_each_slot(config, |index, value| {
        if !kept.contains(&index) {
            *value = keyring.seal(value);
        }
        Ok::<_, ApiError>(())
    })
}

/// `DELETE k8sinstallations/<name>` with `--vantiq-strict`: a worker
/// token removes its cluster's record (an undeploy) and its `self` quota
/// charge; 404 when there is none. Anyone else: refused as without the flag.
pub async fn remove(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
) -> Result<StatusCode, ApiError> {
    if !caller.grants.allows(Action::ReportWork) {
        return Err(read_only().await);
    }
    state
        .store
        .transaction(move |tx| {
            let namespace = &caller.namespace;
            let Some(existing) = resources::get_doc(tx, DocTable::Installations, namespace, &name)?
            else {
                return Err(Installations::not_found(name));
            };
            let cluster = existing
                .get("clusterName")
                .and_then(Value::as_str)
                .unwrap_or_default();
            worker_cluster(tx, &caller, cluster)?;
            resources::delete_installation(tx, namespace, &name)?;
            Ok(StatusCode::NO_CONTENT)
        })
        .await
}

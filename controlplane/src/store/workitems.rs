//! The workitem queue and the worker protocol's transactions.
//!
//! Life of a workitem:
//!
//! ```text
//!   command ─▶ REQUESTED ──claim──▶ PENDING ──complete──▶ (deleted)
//!                 ▲                  │  │
//!                 └─ lease expired ──┘  └──fail──▶ FAILED | INVALID
//!                    or release
//! ```
//!
//! Every transition is one SQLite transaction, so a claim, a completion and
//! the installation record it writes are atomic. A claim takes the oldest
//! `REQUESTED` item of a cluster whose installation has no `PENDING` item,
//! so the operations on one installation run one at a time, in order.

use std::collections::BTreeMap;

use base64::Engine as _;
use k8sworker_core::model::{ConfigEntry, EnvValue, InstallationRequest};
use rusqlite::{OptionalExtension, Transaction, params};
use serde_json::{Map, Value, json};

use super::resources::{self, DocTable};
use super::{iso, now_ms};
use crate::error::ApiError;

/// Installation properties a worker may report on completion.
pub const REPORTED_PROPERTIES: &[&str] = &[
    "k8sState",
    "replicaCount",
    "k8sInstallationInfo",
    "k8sInstallationIdentifier",
    "k8sAssociatedServices",
    "k8sAssociatedIngresses",
    "k8sAssociatedConfigMaps",
    "k8sAssociatedSecrets",
    "installationStatus",
];

/// A workitem to enqueue.
#[derive(Debug, Clone)]
pub struct NewWorkitem {
    pub namespace: String,
    pub cluster: String,
    pub installation: String,
    pub operation: String,
    pub request: Value,
    pub requested_by: String,
    pub traceparent: Option<String>,
}

/// One stored workitem.
#[derive(Debug, Clone)]
pub struct WorkitemRow {
    pub request_id: String,
    pub namespace: String,
    pub cluster: String,
    pub installation: String,
    pub operation: String,
    pub status: String,
    pub request: Value,
    pub requested_by: String,
    pub created_at: i64,
    pub updated_at: i64,
    pub lease_id: Option<String>,
    pub lease_owner: Option<String>,
    pub lease_expires_at: Option<i64>,
    pub attempts: i64,
    pub message: Option<String>,
    pub traceparent: Option<String>,
    pub delayed: bool,
}

const COLUMNS: &str = "request_id, namespace, cluster_name, installation, operation, status, request,
    requested_by, created_at, updated_at, lease_id, lease_owner, lease_expires_at, attempts, message,
    traceparent, delayed";

fn read_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<(WorkitemRow, String)> {
    Ok((
        WorkitemRow {
            request_id: row.get(0)?,
            namespace: row.get(1)?,
            cluster: row.get(2)?,
            installation: row.get(3)?,
            operation: row.get(4)?,
            status: row.get(5)?,
            request: Value::Null,
            requested_by: row.get(7)?,
            created_at: row.get(8)?,
            updated_at: row.get(9)?,
            lease_id: row.get(10)?,
            lease_owner: row.get(11)?,
            lease_expires_at: row.get(12)?,
            attempts: row.get(13)?,
            message: row.get(14)?,
            traceparent: row.get(15)?,
            delayed: row.get::<_, i64>(16)? != 0,
        },
        row.get(6)?,
    ))
}

fn finish_row((mut row, request): (WorkitemRow, String)) -> Result<WorkitemRow, ApiError> {
    row.request = serde_json::from_str(&request)?;
    Ok(row)
}

impl WorkitemRow {
    /// The Vantiq view of the workitem (without `ancillaries`).
    pub fn to_doc(&self) -> Value {
        let mut doc = json!({
            "_id": self.request_id,
            "requestId": self.request_id,
            "clusterName": self.cluster,
            "operation": self.operation,
            "timestamp": iso(self.updated_at),
            "status": self.status,
            "request": self.request,
            "requestedBy": self.requested_by,
            "installationName": self.installation,
            "createdAt": iso(self.created_at),
            "attempts": self.attempts,
            "delayed": self.delayed,
            "ars_namespace": self.namespace,
        });
        if let Some(message) = &self.message {
            doc["message"] = json!(message);
        }
        if let Some(traceparent) = &self.traceparent {
            doc["traceparent"] = json!(traceparent);
        }
        if self.status == "PENDING" {
            doc["leaseOwner"] = json!(self.lease_owner);
            doc["leaseExpiresAt"] = json!(self.lease_expires_at.map(iso));
        }
        doc
    }
}

/// Enqueues a workitem as `REQUESTED`.
pub fn insert(tx: &Transaction<'_>, item: &NewWorkitem) -> Result<WorkitemRow, ApiError> {
    let now = now_ms();
    let request_id = uuid::Uuid::new_v4().to_string();
    tx.execute(
        "INSERT INTO k8sworkitems (request_id, namespace, cluster_name, installation, operation,
           status, request, requested_by, created_at, updated_at, traceparent)
         VALUES (?1, ?2, ?3, ?4, ?5, 'REQUESTED', ?6, ?7, ?8, ?8, ?9)",
        params![
            request_id,
            item.namespace,
            item.cluster,
            item.installation,
            item.operation,
            item.request.to_string(),
            item.requested_by,
            now,
            item.traceparent
                .clone()
                .unwrap_or_else(crate::trace_context::fresh)
        ],
    )?;
    get(tx, &item.namespace, &request_id)?.ok_or_else(|| not_found(&request_id))
}

fn not_found(request_id: &str) -> ApiError {
    ApiError::NotFound {
        resource: "k8sworkitems",
        key: "requestId",
        id: request_id.to_owned(),
    }
}

/// One workitem of a namespace.
pub fn get(
    tx: &Transaction<'_>,
    namespace: &str,
    request_id: &str,
) -> Result<Option<WorkitemRow>, ApiError> {
    let sql =
        format!("SELECT {COLUMNS} FROM k8sworkitems WHERE namespace = ?1 AND request_id = ?2");
    tx.query_row(&sql, params![namespace, request_id], read_row)
        .optional()?
        .map(finish_row)
        .transpose()
}

/// Every workitem of a namespace, oldest first.
pub fn list(tx: &Transaction<'_>, namespace: &str) -> Result<Vec<WorkitemRow>, ApiError> {
    let sql = format!("SELECT {COLUMNS} FROM k8sworkitems WHERE namespace = ?1 ORDER BY seq");
    let mut statement = tx.prepare(&sql)?;
    let rows = statement.query_map([namespace], read_row)?;
    let mut out = Vec::new();
    for row in rows {
        out.push(finish_row(row?)?);
    }
    Ok(out)
}

/// Cancels (deletes) a workitem; `false` when there is none.
pub fn delete(tx: &Transaction<'_>, namespace: &str, request_id: &str) -> Result<bool, ApiError> {
    let Some(row) = get(tx, namespace, request_id)? else {
        return Ok(false);
    };
    tx.execute(
        "DELETE FROM k8sworkitems WHERE request_id = ?1",
        [request_id],
    )?;
    resources::release_orphan_charge(tx, namespace, &row.installation)?;
    Ok(true)
}

/// Returns every expired lease to `REQUESTED`; the clusters that got work back.
pub fn expire_leases(tx: &Transaction<'_>, now: i64) -> Result<Vec<(String, String)>, ApiError> {
    let mut statement = tx.prepare(
        "UPDATE k8sworkitems SET status = 'REQUESTED', lease_id = NULL, lease_owner = NULL,
           lease_expires_at = NULL, updated_at = ?1
         WHERE status = 'PENDING' AND lease_expires_at < ?1
         RETURNING namespace, cluster_name, request_id",
    )?;
    let rows = statement.query_map([now], |row| {
        Ok((
            row.get::<_, String>(0)?,
            row.get::<_, String>(1)?,
            row.get::<_, String>(2)?,
        ))
    })?;
    let mut clusters = Vec::new();
    for row in rows {
        let (namespace, cluster, request_id) = row?;
        tracing::warn!(%namespace, %cluster, %request_id, "workitem lease expired; back to REQUESTED");
        clusters.push((namespace, cluster));
    }
    clusters.sort();
    clusters.dedup();
    Ok(clusters)
}

/// What a successful claim hands the worker.
#[derive(Debug, Clone)]
pub struct Claim {
    pub row: WorkitemRow,
    /// The claim response body.
    pub body: Value,
}

/// Claims the oldest eligible `REQUESTED` workitem of a cluster, or `None`.
///
/// A workitem whose secrets or documents no longer exist cannot be processed:
/// it is marked `INVALID` (naming what is missing) and the next one is tried.
pub fn claim(
    tx: &Transaction<'_>,
    namespace: &str,
    cluster: &str,
    owner: &str,
    lease_ms: i64,
) -> Result<Option<Claim>, ApiError> {
    let now = now_ms();
    expire_leases(tx, now)?;
    let sql = format!(
        "SELECT {COLUMNS} FROM k8sworkitems w
         WHERE w.namespace = ?1 AND w.cluster_name = ?2 AND w.status = 'REQUESTED'
           AND NOT EXISTS (SELECT 1 FROM k8sworkitems p WHERE p.namespace = w.namespace
                           AND p.installation = w.installation AND p.status = 'PENDING')
         ORDER BY w.seq LIMIT 1"
    );
    loop {
        let Some(row) = tx
            .query_row(&sql, params![namespace, cluster], read_row)
            .optional()?
            .map(finish_row)
            .transpose()?
        else {
            return Ok(None);
        };
        let installation =
            resources::get_doc(tx, DocTable::Installations, namespace, &row.installation)?;
        let ancillaries = match resolve_ancillaries(tx, &row, installation.as_ref())? {
            Ok(ancillaries) => ancillaries,
            Err(problem) => {
                tracing::warn!(%namespace, request_id = %row.request_id, %problem, "workitem cannot be processed; marked INVALID");
                tx.execute(
                    "UPDATE k8sworkitems SET status = 'INVALID', message = ?2, updated_at = ?3
                     WHERE request_id = ?1",
                    params![row.request_id, problem, now],
                )?;
                resources::release_orphan_charge(tx, namespace, &row.installation)?;
                continue;
            }
        };
        let lease_id = uuid::Uuid::new_v4().to_string();
        let expires = now + lease_ms;
        tx.execute(
            "UPDATE k8sworkitems SET status = 'PENDING', lease_id = ?2, lease_owner = ?3,
               lease_expires_at = ?4, attempts = attempts + 1, updated_at = ?5, delayed = 0
             WHERE request_id = ?1",
            params![row.request_id, lease_id, owner, expires, now],
        )?;
        let row = get(tx, namespace, &row.request_id)?.ok_or_else(|| not_found(&row.request_id))?;
        let cluster_doc = resources::get_doc(tx, DocTable::Clusters, namespace, cluster)?;
        let mut body = row.to_doc();
        body["leaseId"] = json!(lease_id);
        body["leaseSeconds"] = json!(lease_ms / 1000);
        body["ancillaries"] = ancillaries;
        body["installation"] = installation.unwrap_or(Value::Null);
        body["cluster"] = json!({
            "name": cluster,
            "ingressDefaultNode": cluster_doc
                .as_ref()
                .and_then(|doc| doc.get("ingressDefaultNode"))
                .cloned()
                .unwrap_or(Value::Null),
        });
        return Ok(Some(Claim { row, body }));
    }
}

/// The config an operation works on: the request's for a deploy, the
/// installation's recorded `configSpec` otherwise.
fn effective_request(row: &WorkitemRow, installation: Option<&Value>) -> Option<Value> {
    if row.operation == "deploy" {
        return Some(row.request.clone());
    }
    let installation = installation?;
    Some(json!({
        "name": row.installation,
        "k8sNamespace": installation.get("k8sNamespace").cloned().unwrap_or(Value::Null),
        "config": installation.get("configSpec").cloned().unwrap_or(json!([])),
    }))
}

/// Reads the `@secrets(NAME)` values and `resourceType: documents` content a
/// workitem needs. `Ok(Err(problem))` when one is missing.
fn resolve_ancillaries(
    tx: &Transaction<'_>,
    row: &WorkitemRow,
    installation: Option<&Value>,
) -> Result<Result<Value, String>, ApiError> {
    let mut secrets = BTreeMap::new();
    let mut documents = BTreeMap::new();
    let Some(request) = effective_request(row, installation) else {
        return Ok(Ok(json!({"secrets": {}, "documents": {}})));
    };
    // The planner's reading of the config, so secret and document references
    // are found exactly as the renderer will look for them.
    if let Ok(parsed) = InstallationRequest::from_json(&request) {
        for entry in &parsed.config {
            match entry {
                ConfigEntry::EnvironmentVariable(variable) => {
                    if let Some(EnvValue::SecretRef(name)) = variable.parsed_value() {
                        match resources::get_secret_value(tx, &row.namespace, name)? {
                            Some(value) => {
                                secrets.insert(name.to_owned(), value);
                            }
                            None => {
                                return Ok(Err(format!(
                                    "environment variable {} refers to @secrets({name}), which does not exist",
                                    variable.name
                                )));
                            }
                        }
                    }
                }
                ConfigEntry::File(file) if file.resource_type.as_deref() == Some("documents") => {
                    if let Some(name) = &file.resource_name {
                        match resources::get_document_content(tx, &row.namespace, name)? {
                            Some((_, content)) => {
                                documents.insert(
                                    name.clone(),
                                    base64::engine::general_purpose::STANDARD.encode(content),
                                );
                            }
                            None => {
                                return Ok(Err(format!(
                                    "file {} refers to document {name}, which does not exist",
                                    file.path
                                )));
                            }
                        }
                    }
                }
                _ => {}
            }
        }
    }
    Ok(Ok(json!({"secrets": secrets, "documents": documents})))
}

/// The workitem if `lease_id` still holds it.
fn leased(
    tx: &Transaction<'_>,
    namespace: &str,
    request_id: &str,
    lease_id: &str,
) -> Result<WorkitemRow, ApiError> {
    let row = get(tx, namespace, request_id)?.ok_or_else(|| not_found(request_id))?;
    if row.status != "PENDING" || row.lease_id.as_deref() != Some(lease_id) {
        return Err(ApiError::LeaseLost {
            request_id: request_id.to_owned(),
            lease_id: lease_id.to_owned(),
        });
    }
    Ok(row)
}

/// Extends a held lease to `lease_ms` from now.
pub fn renew(
    tx: &Transaction<'_>,
    namespace: &str,
    request_id: &str,
    lease_id: &str,
    lease_ms: i64,
) -> Result<Value, ApiError> {
    leased(tx, namespace, request_id, lease_id)?;
    let now = now_ms();
    let expires = now + lease_ms;
    tx.execute(
        "UPDATE k8sworkitems SET lease_expires_at = ?2, updated_at = ?3 WHERE request_id = ?1",
        params![request_id, expires, now],
    )?;
    Ok(json!({
        "requestId": request_id,
        "leaseId": lease_id,
        "leaseExpiresAt": iso(expires),
        "leaseSeconds": lease_ms / 1000,
    }))
}

/// Gives a held workitem back to the queue (a worker shutting down).
pub fn release(
    tx: &Transaction<'_>,
    namespace: &str,
    request_id: &str,
    lease_id: &str,
) -> Result<WorkitemRow, ApiError> {
    leased(tx, namespace, request_id, lease_id)?;
    tx.execute(
        "UPDATE k8sworkitems SET status = 'REQUESTED', lease_id = NULL, lease_owner = NULL,
           lease_expires_at = NULL, updated_at = ?2 WHERE request_id = ?1",
        params![request_id, now_ms()],
    )?;
    get(tx, namespace, request_id)?.ok_or_else(|| not_found(request_id))
}

fn base_installation(row: &WorkitemRow, existing: Option<Value>) -> Map<String, Value> {
    let mut doc = match existing {
        Some(Value::Object(doc)) => doc,
        _ => {
            let mut doc = Map::new();
            doc.insert("_id".into(), json!(crate::auth::random_id(12)));
            doc.insert("name".into(), json!(row.installation));
            doc.insert("ars_namespace".into(), json!(row.namespace));
            doc.insert("ars_createdAt".into(), json!(iso(now_ms())));
            doc.insert("ars_createdBy".into(), json!(row.requested_by));
            doc
        }
    };
    doc.insert("clusterName".into(), json!(row.cluster));
    doc.insert("k8sInstallationType".into(), json!("STATEFUL_SET"));
    doc.insert("ars_modifiedAt".into(), json!(iso(now_ms())));
    doc
}

/// Applies a deploy's own properties (config, namespace, date, user).
fn record_deploy(doc: &mut Map<String, Value>, row: &WorkitemRow) {
    let now = iso(now_ms());
    doc.insert(
        "k8sNamespace".into(),
        row.request
            .get("k8sNamespace")
            .cloned()
            .unwrap_or(Value::Null),
    );
    doc.insert(
        "configSpec".into(),
        row.request.get("config").cloned().unwrap_or(json!([])),
    );
    doc.insert("installationDate".into(), json!(now));
    doc.insert("installedBy".into(), json!(row.requested_by));
}

/// What an operation's success leaves as `installationStatus`.
fn status_after(operation: &str) -> Option<&'static str> {
    match operation {
        "deploy" | "restart" => Some("RUNNING"),
        "shutdown" => Some("STOPPED"),
        _ => None,
    }
}

/// Completes a held workitem successfully: writes the installation record the
/// operation implies and deletes the workitem, in one transaction.
pub fn complete(
    tx: &Transaction<'_>,
    namespace: &str,
    request_id: &str,
    lease_id: &str,
    report: &Map<String, Value>,
    verify_interval_ms: Option<i64>,
) -> Result<Value, ApiError> {
    let row = leased(tx, namespace, request_id, lease_id)?;
    let existing = resources::get_doc(tx, DocTable::Installations, namespace, &row.installation)?;
    let reported_status = report.get("installationStatus").and_then(Value::as_str);
    if let Some(status) = reported_status
        && !matches!(status, "RUNNING" | "STOPPED" | "DAMAGED" | "FAILED")
    {
        return Err(ApiError::InvalidArgument {
            field: "installation.installationStatus".into(),
            reason: format!("{status} is not one of RUNNING, STOPPED, DAMAGED, FAILED"),
        });
    }
    let installation = match row.operation.as_str() {
        "undeploy" => {
            resources::delete_installation(tx, namespace, &row.installation)?;
            Value::Null
        }
        "fetchLogs" => existing.unwrap_or(Value::Null),
        operation => {
            if existing.is_none() && operation != "deploy" {
                // Undeployed or never created while the item was queued.
                Value::Null
            } else {
                let mut doc = base_installation(&row, existing);
                if operation == "deploy" {
                    record_deploy(&mut doc, &row);
                    let charge = resources::charges(tx, namespace)?
                        .into_iter()
                        .find(|(name, _)| *name == row.installation)
                        .map(|(_, charge)| charge);
                    if let Some(charge) = charge {
                        doc.insert("quotaConsumed".into(), charge);
                    }
                }
                for key in REPORTED_PROPERTIES {
                    if let Some(value) = report.get(*key) {
                        doc.insert((*key).to_owned(), value.clone());
                    }
                }
                let status = reported_status
                    .or_else(|| status_after(operation))
                    .or_else(|| doc.get("installationStatus").and_then(Value::as_str))
                    .unwrap_or("RUNNING")
                    .to_owned();
                doc.insert("installationStatus".into(), json!(status));
                if operation == "verify" {
                    doc.insert("lastVerifiedAt".into(), json!(iso(now_ms())));
                }
                let next_verify = verify_interval_ms.map(|interval| now_ms() + interval);
                let doc = Value::Object(doc);
                resources::put_installation(
                    tx,
                    namespace,
                    &row.installation,
                    &row.cluster,
                    &doc,
                    next_verify,
                )?;
                doc
            }
        }
    };
    tx.execute(
        "DELETE FROM k8sworkitems WHERE request_id = ?1",
        [request_id],
    )?;
    Ok(json!({
        "requestId": request_id,
        "operation": row.operation,
        "installation": installation,
    }))
}

/// Fails a held workitem (`FAILED`, or `INVALID` for a bad request) with a
/// message; deploy/restart/shutdown/undeploy failures mark the installation
/// `FAILED` (a failed first deploy creates the record), in one transaction.
pub fn fail(
    tx: &Transaction<'_>,
    namespace: &str,
    request_id: &str,
    lease_id: &str,
    status: &str,
    message: &str,
) -> Result<Value, ApiError> {
    let row = leased(tx, namespace, request_id, lease_id)?;
    let now = now_ms();
    if matches!(
        row.operation.as_str(),
        "deploy" | "restart" | "shutdown" | "undeploy"
    ) {
        let existing =
            resources::get_doc(tx, DocTable::Installations, namespace, &row.installation)?;
        let create = row.operation == "deploy" && status == "FAILED";
        if existing.is_some() || create {
            let fresh = existing.is_none();
            let mut doc = base_installation(&row, existing);
            if row.operation == "deploy" && (fresh || status == "FAILED") {
                record_deploy(&mut doc, &row);
            }
            doc.insert("installationStatus".into(), json!("FAILED"));
            doc.insert("k8sState".into(), json!(message));
            resources::put_installation(
                tx,
                namespace,
                &row.installation,
                &row.cluster,
                &Value::Object(doc),
                None,
            )?;
        }
    }
    tx.execute(
        "UPDATE k8sworkitems SET status = ?2, message = ?3, lease_id = NULL, lease_owner = NULL,
           lease_expires_at = NULL, updated_at = ?4 WHERE request_id = ?1",
        params![request_id, status, message, now],
    )?;
    resources::release_orphan_charge(tx, namespace, &row.installation)?;
    Ok(get(tx, namespace, request_id)?
        .ok_or_else(|| not_found(request_id))?
        .to_doc())
}

/// Flags `REQUESTED` workitems created before `before` as delayed; returns
/// the newly flagged ones.
pub fn flag_delayed(tx: &Transaction<'_>, before: i64) -> Result<Vec<WorkitemRow>, ApiError> {
    let sql = format!(
        "UPDATE k8sworkitems SET delayed = 1
         WHERE status = 'REQUESTED' AND delayed = 0 AND created_at < ?1 RETURNING {COLUMNS}"
    );
    let mut statement = tx.prepare(&sql)?;
    let rows = statement.query_map([before], read_row)?;
    let mut out = Vec::new();
    for row in rows {
        out.push(finish_row(row?)?);
    }
    Ok(out)
}

/// Enqueues a `verify` workitem for every installation whose verify is due
/// and that has no outstanding workitem; returns the clusters that got work.
pub fn schedule_verifies(
    tx: &Transaction<'_>,
    now: i64,
    interval_ms: i64,
) -> Result<Vec<(String, String)>, ApiError> {
    let due: Vec<(String, String, String, String)> = tx
        .prepare(
            "SELECT i.namespace, i.name, i.cluster_name, COALESCE(json_extract(i.doc, '$.k8sNamespace'), '')
             FROM k8sinstallations i
             WHERE i.next_verify_at IS NOT NULL AND i.next_verify_at <= ?1
               AND json_extract(i.doc, '$.installationStatus') IN ('RUNNING', 'STOPPED', 'DAMAGED')
               AND NOT EXISTS (SELECT 1 FROM k8sworkitems w WHERE w.namespace = i.namespace
                               AND w.installation = i.name AND w.status IN ('REQUESTED', 'PENDING'))",
        )?
        .query_map([now], |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?, row.get(3)?)))?
        .collect::<Result<_, _>>()?;
    let mut clusters = Vec::new();
    for (namespace, name, cluster, k8s_namespace) in due {
        insert(
            tx,
            &NewWorkitem {
                namespace: namespace.clone(),
                cluster: cluster.clone(),
                installation: name.clone(),
                operation: "verify".into(),
                request: json!({"name": name, "k8sNamespace": k8s_namespace}),
                requested_by: "system".into(),
                traceparent: None,
            },
        )?;
        tx.execute(
            "UPDATE k8sinstallations SET next_verify_at = ?3 WHERE namespace = ?1 AND name = ?2",
            params![namespace, name, now + interval_ms],
        )?;
        clusters.push((namespace, cluster));
    }
    clusters.sort();
    clusters.dedup();
    Ok(clusters)
}

/// Whether an installation has a `REQUESTED` or `PENDING` workitem.
pub fn has_outstanding(
    tx: &Transaction<'_>,
    namespace: &str,
    installation: &str,
) -> Result<bool, ApiError> {
    Ok(tx
        .query_row(
            "SELECT 1 FROM k8sworkitems WHERE namespace = ?1 AND installation = ?2
             AND status IN ('REQUESTED', 'PENDING') LIMIT 1",
            params![namespace, installation],
            |_| Ok(()),
        )
        .optional()?
        .is_some())
}

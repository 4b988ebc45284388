//! The workitem state machine and what each step does to the installation
//! record, as pure decisions: no SQL, no clock, no randomness. The store
//! ([`crate::store::workitems`]) reads the rows, calls these functions inside
//! its transaction, and writes what they return.
//!
//! ```text
//!   command ─▶ REQUESTED ──Claim──▶ PENDING ──Complete──▶ (deleted)
//!               │  ▲                 │  │
//!        Reject │  └ Expire/Release ─┘  └──Fail──▶ FAILED | INVALID
//!               ▼                    │ Cancel
//!            INVALID                 ▼
//!                               CANCELLED ──Complete / Release / Expire──▶ (deleted)
//!                                    └──Fail──▶ FAILED | INVALID
//!
//!   any other ──Cancel──▶ (deleted)
//! ```
//!
//! Cancelling a `PENDING` item keeps it, `CANCELLED`, under its lease: the
//! worker learns it when it renews (the renewal still extends the lease) and
//! does not start; an apply already running finishes, and its outcome is
//! recorded against the item as for a `PENDING` one.
//!
//! A worker acts on a `PENDING` item only while it holds the item's lease
//! ([`check_lease`]). Success writes the record the operation implies
//! ([`complete`]); failure marks it `FAILED` ([`fail`]). A claim hands the
//! worker the secrets and documents the request refers to
//! ([`resolve_ancillaries`]); one that no longer exists makes the item
//! `INVALID` instead.

use std::collections::BTreeMap;
use std::fmt;

use base64::Engine as _;
use k8sworker_client::protocol::InstallationReport;
use k8sworker_core::model::{ConfigEntry, EnvValue, InstallationRequest};
use serde_json::{Map, Value, json};

use crate::audit::iso;
use crate::secret_config;

/// Installation properties a worker may report on completion: the worker
/// protocol's own list (`docs/worker-protocol.md`).
pub const REPORTED_PROPERTIES: &[&str] = InstallationReport::PROPERTIES;

/// The `installationStatus` values a worker may report.
pub const REPORTABLE_INSTALLATION_STATUSES: &[&str] = &["RUNNING", "STOPPED", "DAMAGED", "FAILED"];

/// Where a workitem is in its life (Vantiq's `K8sWorkitem.status`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Status {
    /// Waiting for a worker to claim it.
    Requested,
    /// Claimed; a worker holds its lease.
    Pending,
    /// The operation failed in the cluster.
    Failed,
    /// The request cannot be carried out (bad request, missing reference).
    Invalid,
    /// Cancelled while a worker held it (*ours*); the lease still holds so
    /// an operation in flight can report its outcome.
    Cancelled,
}

impl Status {
    /// The stored and wire name (`REQUESTED`, …).
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Requested => "REQUESTED",
            Status::Pending => "PENDING",
            Status::Failed => "FAILED",
            Status::Invalid => "INVALID",
            Status::Cancelled => "CANCELLED",
        }
    }

    /// The status named `text`, if any.
    pub fn parse(text: &str) -> Option<Status> {
        match text {
            "REQUESTED" => Some(Status::Requested),
            "PENDING" => Some(Status::Pending),
            "FAILED" => Some(Status::Failed),
            "INVALID" => Some(Status::Invalid),
            "CANCELLED" => Some(Status::Cancelled),
            _ => None,
        }
    }

    /// The statuses a worker may fail an item with: `FAILED` or `INVALID`.
    pub fn failure(text: &str) -> Option<Status> {
        Status::parse(text).filter(|status| matches!(status, Status::Failed | Status::Invalid))
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The K8s operation a workitem carries: the planner's own type, so the
/// control plane and the planner name operations alike.
pub use k8sworker_core::plan::Operation;

/// The `installationStatus` an installation shows while `operation` is
/// queued: `STARTING` for a restart, `STOPPING` for a shutdown.
pub fn transitional_status(operation: Operation) -> Option<&'static str> {
    match operation {
        Operation::Restart => Some("STARTING"),
        Operation::Shutdown => Some("STOPPING"),
        _ => None,
    }
}

/// The `installationStatus` the success of `operation` leaves when the
/// worker reports none.
fn status_after_success(operation: Operation) -> Option<&'static str> {
    match operation {
        Operation::Deploy | Operation::Restart => Some("RUNNING"),
        Operation::Shutdown => Some("STOPPED"),
        _ => None,
    }
}

/// Whether the failure of `operation` marks the installation `FAILED` (not
/// so for `fetchLogs` and `verify`, which change nothing).
fn failure_marks_installation(operation: Operation) -> bool {
    matches!(
        operation,
        Operation::Deploy | Operation::Restart | Operation::Shutdown | Operation::Undeploy
    )
}

/// What happens to a workitem.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    /// A worker takes it with a lease.
    Claim,
    /// Its secrets or documents no longer exist; it cannot be processed.
    Reject,
    /// It was claimed as many times as allowed and no claim ended with an
    /// outcome (each lease expired or was released): a poison item, failed
    /// for good instead of being claimed again.
    GiveUp,
    /// The lease ran out.
    Expire,
    /// The worker gives it back.
    Release,
    /// The worker reports success.
    Complete,
    /// The worker reports failure with this status (`FAILED` or `INVALID`).
    Fail(Status),
    /// A user cancels (deletes) it.
    Cancel,
}

/// Where an [`Event`] leaves a workitem.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Next {
    /// It stays, with this status.
    Status(Status),
    /// It is deleted.
    Deleted,
}

/// Why a step of the state machine was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TransitionError {
    /// The caller does not hold the item's lease (any more).
    #[error("workitem {request_id} is not leased under lease {lease_id}")]
    LeaseLost {
        /// The workitem's `requestId`.
        request_id: String,
        /// The lease the caller presented.
        lease_id: String,
    },
    /// A value the worker sent is not one the step accepts.
    #[error("invalid {field}: {reason}")]
    Invalid {
        /// The parameter, as the worker protocol names it.
        field: &'static str,
        /// What is wrong, for a person.
        reason: String,
    },
    /// The event does not apply to an item in this status.
    #[error("a {from} workitem cannot take the event {event:?}")]
    NotAllowed {
        /// The item's status.
        from: Status,
        /// The refused event.
        event: Event,
    },
}

/// The state machine: where `event` takes an item in status `from`.
pub fn transition(from: Status, event: Event) -> Result<Next, TransitionError> {
    use Status::*;
    match (from, event) {
        (Pending | Cancelled, Event::Cancel) => Ok(Next::Status(Cancelled)),
        (_, Event::Cancel) => Ok(Next::Deleted),
        (Cancelled, Event::Complete | Event::Release | Event::Expire) => Ok(Next::Deleted),
        (Cancelled, Event::Fail(status @ (Failed | Invalid))) => Ok(Next::Status(status)),
        (Requested, Event::Claim) => Ok(Next::Status(Pending)),
        (Requested, Event::Reject) => Ok(Next::Status(Invalid)),
        (Requested, Event::GiveUp) => Ok(Next::Status(Failed)),
        (Pending, Event::Expire | Event::Release) => Ok(Next::Status(Requested)),
        (Pending, Event::Complete) => Ok(Next::Deleted),
        (Pending, Event::Fail(status @ (Failed | Invalid))) => Ok(Next::Status(status)),
        (Pending | Cancelled, Event::Fail(_)) => Err(TransitionError::Invalid {
            field: "status",
            reason: "must be FAILED or INVALID".into(),
        }),
        (from, event) => Err(TransitionError::NotAllowed { from, event }),
    }
}

/// One workitem as stored.
#[derive(Debug, Clone, PartialEq)]
pub struct Workitem {
    /// Its id (a UUID), `requestId` on the wire.
    pub request_id: String,
    /// The Vantiq namespace it belongs to.
    pub namespace: String,
    /// The K8s cluster whose worker carries it out.
    pub cluster: String,
    /// The installation it acts on.
    pub installation: String,
    /// What it does.
    pub operation: Operation,
    /// Where it is in its life.
    pub status: Status,
    /// The request as stored: a deploy's `data`, or `name`/`k8sNamespace`
    /// (and `fetchLogs` options) for the other operations.
    pub request: Value,
    /// Who asked for it (`system` for scheduled verifies).
    pub requested_by: String,
    /// When it was enqueued, epoch milliseconds.
    pub created_at: i64,
    /// When it last changed, epoch milliseconds.
    pub updated_at: i64,
    /// The lease a worker holds it under, while `PENDING`.
    pub lease_id: Option<String>,
    /// The worker holding it, while `PENDING`.
    pub lease_owner: Option<String>,
    /// When the lease runs out, epoch milliseconds, while `PENDING`.
    pub lease_expires_at: Option<i64>,
    /// How many times it was claimed.
    pub attempts: i64,
    /// Why it failed, for `FAILED` and `INVALID`; while queued again, how
    /// its last attempt ended (the lease expired, or it was released).
    pub message: Option<String>,
    /// The W3C `traceparent` of the request that created it.
    pub traceparent: Option<String>,
    /// Whether it waited longer than the server's `--delayed-after`.
    pub delayed: bool,
}

impl Workitem {
    /// The Vantiq view of the workitem (without `ancillaries`), its
    /// request's secret values redacted ([`crate::secret_config`]): only a
    /// claim shows them, opened.
    pub fn to_doc(&self) -> Value {
        let mut doc = json!({
            "_id": self.request_id,
            "requestId": self.request_id,
            "clusterName": self.cluster,
            "operation": self.operation.as_str(),
            "timestamp": iso(self.updated_at),
            "status": self.status.as_str(),
            "request": secret_config::redacted_request(&self.request),
            "requestedBy": self.requested_by,
            "installationName": self.installation,
            "createdAt": iso(self.created_at),
            "attempts": self.attempts,
            "delayed": self.delayed,
            "ars_namespace": self.namespace,
        });
        // A queued item keeps how its last attempt ended (for giving up on
        // it); the message is shown once it failed.
        if let Some(message) = &self.message
            && matches!(self.status, Status::Failed | Status::Invalid)
        {
            doc["message"] = json!(message);
        }
        if let Some(traceparent) = &self.traceparent {
            doc["traceparent"] = json!(traceparent);
        }
        if matches!(self.status, Status::Pending | Status::Cancelled) {
            doc["leaseOwner"] = json!(self.lease_owner);
            doc["leaseExpiresAt"] = json!(self.lease_expires_at.map(iso));
        }
        doc
    }
}

/// Refuses unless `lease_id` holds `item`: it is `PENDING` (or `CANCELLED`,
/// still leased) under that lease.
pub fn check_lease(item: &Workitem, lease_id: &str) -> Result<(), TransitionError> {
    if matches!(item.status, Status::Pending | Status::Cancelled)
        && item.lease_id.as_deref() == Some(lease_id)
    {
        Ok(())
    } else {
        Err(TransitionError::LeaseLost {
            request_id: item.request_id.clone(),
            lease_id: lease_id.to_owned(),
        })
    }
}

/// The facts a record change is stamped with, chosen by the caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stamp {
    /// Now, epoch milliseconds.
    pub now: i64,
    /// The `_id` a record gets if this change creates it.
    pub new_id: String,
}

/// What a completion does to the installation record.
#[derive(Debug, Clone, PartialEq)]
pub enum RecordChange {
    /// Remove the record and its quota charge (an undeploy).
    Delete,
    /// Leave the record as it is; the value is what the answer shows (the
    /// record, or `null` when there is none).
    Keep(Value),
    /// Write this record; `next_verify_at` (epoch milliseconds) schedules
    /// its next `verify`, `None` keeps the schedule.
    Put {
        /// The whole record.
        doc: Value,
        /// When to verify next.
        next_verify_at: Option<i64>,
    },
}

impl RecordChange {
    /// The record the completion answers with (`null` when none remains).
    pub fn answer(&self) -> Value {
        match self {
            RecordChange::Delete => Value::Null,
            RecordChange::Keep(value) => value.clone(),
            RecordChange::Put { doc, .. } => doc.clone(),
        }
    }
}

/// A successful completion of `item` under `lease_id`: what happens to the
/// installation record, given the `existing` one, the worker's `report`
/// (only [`REPORTED_PROPERTIES`]), the deploy's quota `charge` if any, and
/// the verify interval in milliseconds (`None`: verify is off).
pub fn complete(
    item: &Workitem,
    lease_id: &str,
    existing: Option<Value>,
    report: &Map<String, Value>,
    charge: Option<Value>,
    verify_interval_ms: Option<i64>,
    stamp: &Stamp,
) -> Result<RecordChange, TransitionError> {
    check_lease(item, lease_id)?;
    transition(item.status, Event::Complete)?;
    let reported_status = report.get("installationStatus").and_then(Value::as_str);
    if let Some(status) = reported_status
        && !REPORTABLE_INSTALLATION_STATUSES.contains(&status)
    {
        return Err(TransitionError::Invalid {
            field: "installation.installationStatus",
            reason: format!(
                "{status} is not one of {}",
                REPORTABLE_INSTALLATION_STATUSES.join(", ")
            ),
        });
    }
    let operation = item.operation;
    match operation {
        Operation::Undeploy => return Ok(RecordChange::Delete),
        Operation::FetchLogs => return Ok(RecordChange::Keep(existing.unwrap_or(Value::Null))),
        // Undeployed or never created while the item was queued.
        _ if existing.is_none() && operation != Operation::Deploy => {
            return Ok(RecordChange::Keep(Value::Null));
        }
        _ => {}
    }
    let mut doc = base_record(item, existing, stamp);
    if operation == Operation::Deploy {
        record_deploy(&mut doc, item, stamp.now);
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
        .or_else(|| status_after_success(operation))
        .or_else(|| doc.get("installationStatus").and_then(Value::as_str))
        .unwrap_or("RUNNING")
        .to_owned();
    doc.insert("installationStatus".into(), json!(status));
    if operation == Operation::Verify {
        doc.insert("lastVerifiedAt".into(), json!(iso(stamp.now)));
    }
    Ok(RecordChange::Put {
        doc: Value::Object(doc),
        next_verify_at: verify_interval_ms.map(|interval| stamp.now + interval),
    })
}

/// A failure of `item` under `lease_id` with `status` and `message`: where
/// the item goes, and the installation record to write, if any. A failed
/// deploy, restart, shutdown or undeploy marks the record `FAILED` with the
/// message as `k8sState`; a failed first deploy creates the record (an
/// `INVALID` one does not: nothing was attempted).
pub fn fail(
    item: &Workitem,
    lease_id: &str,
    status: Status,
    message: &str,
    existing: Option<Value>,
    stamp: &Stamp,
) -> Result<(Status, Option<Value>), TransitionError> {
    check_lease(item, lease_id)?;
    let Next::Status(next) = transition(item.status, Event::Fail(status))? else {
        unreachable!("a failure keeps the workitem");
    };
    Ok((next, failure_record(item, status, message, existing, stamp)))
}

/// Whether `item` has used up its claims: it was claimed `max_attempts`
/// times (`--max-workitem-attempts`) and is queued again, so no claim ended
/// with an outcome.
pub fn exhausted(item: &Workitem, max_attempts: u32) -> bool {
    item.status == Status::Requested && item.attempts >= i64::from(max_attempts)
}

/// Gives up on an [exhausted](exhausted) workitem: it goes `FAILED` with a
/// message naming the attempts and how the last one ended (the item's
/// `message`, set when its lease expired or was released), and the
/// installation record is marked as for any failure ([`fail`]). Answers the
/// status, the message and the record to write, if any.
pub fn give_up(
    item: &Workitem,
    max_attempts: u32,
    existing: Option<Value>,
    stamp: &Stamp,
) -> Result<(Status, String, Option<Value>), TransitionError> {
    let Next::Status(next) = transition(item.status, Event::GiveUp)? else {
        unreachable!("giving up keeps the workitem");
    };
    let message = format!(
        "gave up after {} attempts (the limit is {max_attempts}), none of which reported an outcome; the last: {}",
        item.attempts,
        item.message.as_deref().unwrap_or("no reason was recorded"),
    );
    let record = failure_record(item, Status::Failed, &message, existing, stamp);
    Ok((next, message, record))
}

/// The installation record a failure of `item` with `status` and `message`
/// leaves, if any (see [`fail`]).
fn failure_record(
    item: &Workitem,
    status: Status,
    message: &str,
    existing: Option<Value>,
    stamp: &Stamp,
) -> Option<Value> {
    if !failure_marks_installation(item.operation) {
        return None;
    }
    let deploy = item.operation == Operation::Deploy;
    let create = deploy && status == Status::Failed;
    if existing.is_none() && !create {
        return None;
    }
    let fresh = existing.is_none();
    let mut doc = base_record(item, existing, stamp);
    if deploy && (fresh || status == Status::Failed) {
        record_deploy(&mut doc, item, stamp.now);
    }
    doc.insert("installationStatus".into(), json!("FAILED"));
    doc.insert("k8sState".into(), json!(message));
    Some(Value::Object(doc))
}

/// The record to change: the existing one, or a new one with its identity
/// and creation audit; either way with the item's cluster and a new
/// modification time.
fn base_record(item: &Workitem, existing: Option<Value>, stamp: &Stamp) -> Map<String, Value> {
    let mut doc = match existing {
        Some(Value::Object(doc)) => doc,
        _ => {
            let mut doc = Map::new();
            doc.insert("_id".into(), json!(stamp.new_id));
            doc.insert("name".into(), json!(item.installation));
            doc.insert("ars_namespace".into(), json!(item.namespace));
            doc.insert("ars_createdAt".into(), json!(iso(stamp.now)));
            doc.insert("ars_createdBy".into(), json!(item.requested_by));
            doc
        }
    };
    doc.insert("clusterName".into(), json!(item.cluster));
    doc.insert("k8sInstallationType".into(), json!("STATEFUL_SET"));
    doc.insert("ars_modifiedAt".into(), json!(iso(stamp.now)));
    doc
}

/// Records a deploy's own properties: its K8s namespace, config, date and user.
fn record_deploy(doc: &mut Map<String, Value>, item: &Workitem, now: i64) {
    doc.insert(
        "k8sNamespace".into(),
        item.request
            .get("k8sNamespace")
            .cloned()
            .unwrap_or(Value::Null),
    );
    doc.insert(
        "configSpec".into(),
        item.request.get("config").cloned().unwrap_or(json!([])),
    );
    doc.insert("installationDate".into(), json!(iso(now)));
    doc.insert("installedBy".into(), json!(item.requested_by));
}

/// Content a deploy request refers to that lives in the control plane.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reference<'a> {
    /// `@secrets(name)` as the value of environment variable `variable`.
    Secret {
        /// The secret's name.
        name: &'a str,
        /// The environment variable that refers to it.
        variable: &'a str,
    },
    /// A `file` entry with `resourceType: documents` at `path`.
    Document {
        /// The document's name.
        name: &'a str,
        /// The entry's file path.
        path: &'a str,
    },
}

impl Reference<'_> {
    /// What is missing, for a person (a workitem's `message`).
    pub fn missing(&self) -> String {
        match self {
            Reference::Secret { name, variable } => format!(
                "environment variable {variable} refers to @secrets({name}), which does not exist"
            ),
            Reference::Document { name, path } => {
                format!("file {path} refers to document {name}, which does not exist")
            }
        }
    }
}

/// The secrets and documents `request` refers to, in config order, read the
/// way the planner's renderer reads them.
pub fn references(request: &InstallationRequest) -> Vec<Reference<'_>> {
    let mut out = Vec::new();
    for entry in &request.config {
        match entry {
            ConfigEntry::EnvironmentVariable(variable) => {
                if let Some(EnvValue::SecretRef(name)) = variable.parsed_value() {
                    out.push(Reference::Secret {
                        name,
                        variable: &variable.name,
                    });
                }
            }
            ConfigEntry::File(file) if file.resource_type.as_deref() == Some("documents") => {
                if let Some(name) = &file.resource_name {
                    out.push(Reference::Document {
                        name,
                        path: &file.path,
                    });
                }
            }
            _ => {}
        }
    }
    out
}

/// Whether a deploy's `config` list (a request's, or a record's
/// `configSpec`) mounts document `document` (a `file` entry with
/// `resourceType: documents`). A config that does not read mounts nothing.
pub fn mounts_document(config: &Value, document: &str) -> bool {
    let request = json!({"name": "", "k8sNamespace": "", "config": config});
    InstallationRequest::from_json(&request).is_ok_and(|request| {
        references(&request).iter().any(
            |reference| matches!(reference, Reference::Document { name, .. } if *name == document),
        )
    })
}

/// The config an operation works on: the request's for a deploy, the
/// installation's recorded `configSpec` otherwise (`None` without a record).
pub fn effective_request(item: &Workitem, installation: Option<&Value>) -> Option<Value> {
    if item.operation == Operation::Deploy {
        return Some(item.request.clone());
    }
    let installation = installation?;
    Some(json!({
        "name": item.installation,
        "k8sNamespace": installation.get("k8sNamespace").cloned().unwrap_or(Value::Null),
        "config": installation.get("configSpec").cloned().unwrap_or(json!([])),
    }))
}

/// Where [`resolve_ancillaries`] reads secret values and document contents.
pub trait AncillarySource {
    /// Why a read failed.
    type Error;
    /// The value of secret `name`, `None` when there is none.
    fn secret(&mut self, name: &str) -> Result<Option<String>, Self::Error>;
    /// The content of document `name`, `None` when there is none.
    fn document(&mut self, name: &str) -> Result<Option<Vec<u8>>, Self::Error>;
}

/// What a claim hands the worker besides the workitem.
#[derive(Debug, Clone, PartialEq)]
pub enum Ancillaries {
    /// `{"secrets": {name: value}, "documents": {name: base64 content}}`.
    Ready(Value),
    /// A reference that no longer exists, named for a person.
    Missing(String),
}

/// The `ancillaries` of a claim of `item`: every secret and document its
/// effective request refers to, read from `source`. A request that does not
/// parse refers to nothing (the worker reports it `INVALID`).
pub fn resolve_ancillaries<S: AncillarySource>(
    item: &Workitem,
    installation: Option<&Value>,
    source: &mut S,
) -> Result<Ancillaries, S::Error> {
    let mut secrets = BTreeMap::new();
    let mut documents = BTreeMap::new();
    let parsed = effective_request(item, installation)
        .and_then(|request| InstallationRequest::from_json(&request).ok());
    for reference in parsed.iter().flat_map(references) {
        match reference {
            Reference::Secret { name, .. } => match source.secret(name)? {
                Some(value) => {
                    secrets.insert(name.to_owned(), value);
                }
                None => return Ok(Ancillaries::Missing(reference.missing())),
            },
            Reference::Document { name, .. } => match source.document(name)? {
                Some(content) => {
                    documents.insert(
                        name.to_owned(),
                        base64::engine::general_purpose::STANDARD.encode(content),
                    );
                }
                None => return Ok(Ancillaries::Missing(reference.missing())),
            },
        }
    }
    Ok(Ancillaries::Ready(
        json!({"secrets": secrets, "documents": documents}),
    ))
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::convert::Infallible;

    use super::*;

    const NOW: i64 = 1_700_000_000_000;

    fn stamp() -> Stamp {
        Stamp {
            now: NOW,
            new_id: "id0".into(),
        }
    }

    fn mk_item(operation: Operation, status: Status) -> Workitem {
        Workitem {
            request_id: "r1".into(),
            namespace: "ns".into(),
            cluster: "c1".into(),
            installation: "app".into(),
            operation,
            status,
            request: json!({
                "name": "app",
                "k8sNamespace": "apps",
                "config": [{"type": "image", "name": "nginx"}],
            }),
            requested_by: "alice".into(),
            created_at: NOW - 10,
            updated_at: NOW - 5,
            lease_id: (status == Status::Pending).then(|| "L".to_owned()),
            lease_owner: (status == Status::Pending).then(|| "w1".to_owned()),
            lease_expires_at: (status == Status::Pending).then_some(NOW + 60_000),
            attempts: 1,
            message: None,
            traceparent: None,
            delayed: false,
        }
    }

    /// A completion without report, charge or verify schedule.
    fn completed(
        item: &Workitem,
        existing: Option<Value>,
    ) -> Result<RecordChange, TransitionError> {
        complete(item, "L", existing, &Map::new(), None, None, &stamp())
    }

    fn record(status: &str) -> Value {
        json!({
            "_id": "old",
            "name": "app",
            "clusterName": "c1",
            "k8sNamespace": "apps",
            "configSpec": [{"type": "image", "name": "nginx:1"}],
            "installationStatus": status,
            "ars_createdBy": "bob",
        })
    }

    #[test]
    fn names_round_trip() {
        for status in [
            Status::Requested,
            Status::Pending,
            Status::Failed,
            Status::Invalid,
        ] {
            assert_eq!(Status::parse(status.as_str()), Some(status));
        }
        assert_eq!(Status::parse("pending"), None);
        assert_eq!(Status::failure("FAILED"), Some(Status::Failed));
        assert_eq!(Status::failure("INVALID"), Some(Status::Invalid));
        assert_eq!(Status::failure("PENDING"), None);
    }

    #[test]
    fn queued_restarts_and_shutdowns_show_a_transition() {
        assert_eq!(transitional_status(Operation::Restart), Some("STARTING"));
        assert_eq!(transitional_status(Operation::Shutdown), Some("STOPPING"));
        for operation in [
            Operation::Deploy,
            Operation::Undeploy,
            Operation::FetchLogs,
            Operation::Verify,
        ] {
            assert_eq!(transitional_status(operation), None, "{operation}");
        }
    }

    #[test]
    fn the_state_machine_allows_only_its_edges() {
        use Event::*;
        use Status::*;
        let allowed = [
            (Requested, Claim, Next::Status(Pending)),
            (Requested, Reject, Next::Status(Invalid)),
            (Requested, GiveUp, Next::Status(Failed)),
            (Pending, Expire, Next::Status(Requested)),
            (Pending, Release, Next::Status(Requested)),
            (Pending, Complete, Next::Deleted),
            (Pending, Fail(Failed), Next::Status(Failed)),
            (Pending, Fail(Invalid), Next::Status(Invalid)),
        ];
        for (from, event, next) in allowed {
            assert_eq!(transition(from, event), Ok(next), "{from} {event:?}");
        }
        for from in [Requested, Failed, Invalid] {
            assert_eq!(transition(from, Cancel), Ok(Next::Deleted));
        }
        // A leased item stays, cancelled, until its worker reports.
        let cancelled = [
            (Pending, Cancel, Next::Status(Cancelled)),
            (Cancelled, Cancel, Next::Status(Cancelled)),
            (Cancelled, Complete, Next::Deleted),
            (Cancelled, Release, Next::Deleted),
            (Cancelled, Expire, Next::Deleted),
            (Cancelled, Fail(Failed), Next::Status(Failed)),
            (Cancelled, Fail(Invalid), Next::Status(Invalid)),
        ];
        for (from, event, next) in cancelled {
            assert_eq!(transition(from, event), Ok(next), "{from} {event:?}");
        }
        for event in [Claim, Reject, GiveUp] {
            assert!(transition(Cancelled, event).is_err(), "{event:?}");
        }
        let refused = [
            (Pending, Claim),
            (Failed, Claim),
            (Invalid, Claim),
            (Requested, Complete),
            (Failed, Complete),
            (Requested, Release),
            (Requested, Expire),
            (Invalid, Release),
            (Requested, Fail(Failed)),
            (Pending, Reject),
            (Pending, GiveUp),
            (Failed, GiveUp),
        ];
        for (from, event) in refused {
            assert_eq!(
                transition(from, event),
                Err(TransitionError::NotAllowed { from, event }),
                "{from} {event:?}"
            );
        }
        assert!(matches!(
            transition(Pending, Fail(Requested)),
            Err(TransitionError::Invalid {
                field: "status",
                ..
            })
        ));
    }

    #[test]
    fn only_the_holder_of_the_lease_acts() {
        let item = mk_item(Operation::Deploy, Status::Pending);
        assert_eq!(check_lease(&item, "L"), Ok(()));
        let lost = Err(TransitionError::LeaseLost {
            request_id: "r1".into(),
            lease_id: "other".into(),
        });
        assert_eq!(check_lease(&item, "other"), lost);
        // Released or expired: the old lease no longer holds it.
        let mut requested = item.clone();
        requested.status = Status::Requested;
        assert!(matches!(
            check_lease(&requested, "L"),
            Err(TransitionError::LeaseLost { .. })
        ));
        assert!(matches!(
            completed(&requested, None),
            Err(TransitionError::LeaseLost { .. })
        ));
        assert!(matches!(
            fail(&requested, "L", Status::Failed, "x", None, &stamp()),
            Err(TransitionError::LeaseLost { .. })
        ));
    }

    #[test]
    fn a_first_deploy_creates_the_record() {
        let item = mk_item(Operation::Deploy, Status::Pending);
        let report = json!({"k8sState": "ready", "replicaCount": 1});
        let change = complete(
            &item,
            "L",
            None,
            report.as_object().unwrap(),
            Some(json!({"vCPU": "1"})),
            Some(1_000),
            &stamp(),
        )
        .unwrap();
        let RecordChange::Put {
            doc,
            next_verify_at,
        } = change
        else {
            panic!("a deploy writes the record: {change:?}");
        };
        assert_eq!(next_verify_at, Some(NOW + 1_000));
        assert_eq!(doc["_id"], "id0");
        assert_eq!(doc["name"], "app");
        assert_eq!(doc["clusterName"], "c1");
        assert_eq!(doc["k8sNamespace"], "apps");
        assert_eq!(doc["configSpec"], item.request["config"]);
        assert_eq!(doc["installationStatus"], "RUNNING");
        assert_eq!(doc["installedBy"], "alice");
        assert_eq!(doc["ars_createdBy"], "alice");
        assert_eq!(doc["installationDate"], iso(NOW));
        assert_eq!(doc["quotaConsumed"], json!({"vCPU": "1"}));
        assert_eq!(doc["k8sState"], "ready");
        assert_eq!(doc["k8sInstallationType"], "STATEFUL_SET");
    }

    #[test]
    fn success_sets_the_status_the_operation_implies() {
        let cases = [
            (Operation::Shutdown, "RUNNING", "STOPPED"),
            (Operation::Restart, "STOPPED", "RUNNING"),
            (Operation::Verify, "DAMAGED", "DAMAGED"),
        ];
        for (operation, before, after) in cases {
            let item = mk_item(operation, Status::Pending);
            let change = completed(&item, Some(record(before))).unwrap();
            let RecordChange::Put {
                doc,
                next_verify_at,
            } = change
            else {
                panic!("{operation} writes the record");
            };
            assert_eq!(doc["installationStatus"], after, "{operation}");
            assert_eq!(doc["_id"], "old", "the record keeps its identity");
            assert_eq!(doc["ars_createdBy"], "bob");
            assert_eq!(next_verify_at, None);
            assert_eq!(
                doc.get("lastVerifiedAt").is_some(),
                operation == Operation::Verify
            );
            // Only a deploy changes the recorded config.
            assert_eq!(doc["configSpec"][0]["name"], "nginx:1");
        }
        // The worker's report wins.
        let item = mk_item(Operation::Restart, Status::Pending);
        let report = json!({"installationStatus": "DAMAGED"});
        let change = complete(
            &item,
            "L",
            Some(record("STOPPED")),
            report.as_object().unwrap(),
            None,
            None,
            &stamp(),
        )
        .unwrap();
        assert_eq!(change.answer()["installationStatus"], "DAMAGED");
    }

    #[test]
    fn undeploy_deletes_and_fetch_logs_keeps() {
        let undeploy = mk_item(Operation::Undeploy, Status::Pending);
        let change = completed(&undeploy, Some(record("RUNNING")));
        assert_eq!(change, Ok(RecordChange::Delete));
        assert_eq!(RecordChange::Delete.answer(), Value::Null);

        let logs = mk_item(Operation::FetchLogs, Status::Pending);
        let change = completed(&logs, Some(record("RUNNING")));
        assert_eq!(change, Ok(RecordChange::Keep(record("RUNNING"))));

        // The record went away while a restart was queued: nothing to write.
        let restart = mk_item(Operation::Restart, Status::Pending);
        let change = completed(&restart, None);
        assert_eq!(change, Ok(RecordChange::Keep(Value::Null)));
    }

    #[test]
    fn an_unknown_reported_status_is_refused() {
        let item = mk_item(Operation::Deploy, Status::Pending);
        let report = json!({"installationStatus": "GREAT"});
        let refused = complete(
            &item,
            "L",
            None,
            report.as_object().unwrap(),
            None,
            None,
            &stamp(),
        );
        assert_eq!(
            refused,
            Err(TransitionError::Invalid {
                field: "installation.installationStatus",
                reason: "GREAT is not one of RUNNING, STOPPED, DAMAGED, FAILED".into(),
            })
        );
    }

    #[test]
    fn an_exhausted_workitem_is_given_up_with_its_last_error() {
        let mut deploy = mk_item(Operation::Deploy, Status::Requested);
        deploy.attempts = 4;
        assert!(!exhausted(&deploy, 5));
        deploy.attempts = 5;
        deploy.message = Some("attempt 5: the lease of w1 expired".into());
        assert!(exhausted(&deploy, 5));
        assert!(!exhausted(
            &Workitem {
                status: Status::Pending,
                ..deploy.clone()
            },
            5
        ));
        let (next, message, doc) = give_up(&deploy, 5, Some(record("RUNNING")), &stamp()).unwrap();
        assert_eq!(next, Status::Failed);
        assert_eq!(
            message,
            "gave up after 5 attempts (the limit is 5), none of which reported an outcome; \
             the last: attempt 5: the lease of w1 expired"
        );
        let doc = doc.expect("the record is marked");
        assert_eq!(doc["installationStatus"], "FAILED");
        assert_eq!(doc["k8sState"], message.as_str());
        // Only a queued item is given up.
        let pending = mk_item(Operation::Deploy, Status::Pending);
        assert!(give_up(&pending, 5, None, &stamp()).is_err());
    }

    #[test]
    fn failure_marks_the_record() {
        // A failed first deploy creates a FAILED record with the request's config.
        let deploy = mk_item(Operation::Deploy, Status::Pending);
        let (next, doc) = fail(&deploy, "L", Status::Failed, "boom", None, &stamp()).unwrap();
        assert_eq!(next, Status::Failed);
        let doc = doc.expect("a record is created");
        assert_eq!(doc["installationStatus"], "FAILED");
        assert_eq!(doc["k8sState"], "boom");
        assert_eq!(doc["configSpec"], deploy.request["config"]);

        // An INVALID first deploy creates nothing.
        let (next, doc) = fail(&deploy, "L", Status::Invalid, "bad", None, &stamp()).unwrap();
        assert_eq!((next, doc), (Status::Invalid, None));

        // An INVALID deploy of an existing installation marks it FAILED but
        // keeps its config.
        let (_, doc) = fail(
            &deploy,
            "L",
            Status::Invalid,
            "bad",
            Some(record("RUNNING")),
            &stamp(),
        )
        .unwrap();
        let doc = doc.unwrap();
        assert_eq!(doc["installationStatus"], "FAILED");
        assert_eq!(doc["configSpec"][0]["name"], "nginx:1");

        // A failed shutdown marks the existing record; without one, nothing.
        let shutdown = mk_item(Operation::Shutdown, Status::Pending);
        let (_, doc) = fail(
            &shutdown,
            "L",
            Status::Failed,
            "stuck",
            Some(record("STOPPING")),
            &stamp(),
        )
        .unwrap();
        assert_eq!(doc.unwrap()["installationStatus"], "FAILED");
        let (_, doc) = fail(&shutdown, "L", Status::Failed, "stuck", None, &stamp()).unwrap();
        assert_eq!(doc, None);

        // fetchLogs and verify failures leave the record alone.
        for operation in [Operation::FetchLogs, Operation::Verify] {
            let item = mk_item(operation, Status::Pending);
            let (next, doc) = fail(
                &item,
                "L",
                Status::Failed,
                "no logs",
                Some(record("RUNNING")),
                &stamp(),
            )
            .unwrap();
            assert_eq!((next, doc), (Status::Failed, None), "{operation}");
        }
    }

    #[test]
    fn the_workitem_view_shows_the_lease_only_while_pending() {
        let pending = mk_item(Operation::Deploy, Status::Pending).to_doc();
        assert_eq!(pending["status"], "PENDING");
        assert_eq!(pending["operation"], "deploy");
        assert_eq!(pending["leaseOwner"], "w1");
        assert_eq!(pending["leaseExpiresAt"], iso(NOW + 60_000));
        let requested = mk_item(Operation::FetchLogs, Status::Requested).to_doc();
        assert_eq!(requested["operation"], "fetchLogs");
        assert!(requested.get("leaseOwner").is_none());
        assert!(requested.get("message").is_none());
    }

    /// Secrets and documents in memory.
    #[derive(Default)]
    struct Source {
        secrets: HashMap<String, String>,
        documents: HashMap<String, Vec<u8>>,
        reads: Vec<String>,
    }

    impl AncillarySource for Source {
        type Error = Infallible;
        fn secret(&mut self, name: &str) -> Result<Option<String>, Infallible> {
            self.reads.push(format!("secret {name}"));
            Ok(self.secrets.get(name).cloned())
        }
        fn document(&mut self, name: &str) -> Result<Option<Vec<u8>>, Infallible> {
            self.reads.push(format!("document {name}"));
            Ok(self.documents.get(name).cloned())
        }
    }

    fn with_references() -> Workitem {
        let mut item = mk_item(Operation::Deploy, Status::Requested);
        item.request = json!({
            "name": "app",
            "k8sNamespace": "apps",
            "config": [
                {"type": "image", "name": "nginx"},
                {"type": "environmentVariable", "name": "PASSWORD", "value": "@secrets(db)"},
                {"type": "environmentVariable", "name": "LITERAL", "value": "\\@secrets(db)"},
                {"type": "file", "path": "/etc/app", "filename": "app.conf",
                 "resourceType": "documents", "resourceName": "conf"}
            ],
        });
        item
    }

    #[test]
    fn ancillaries_carry_what_the_request_refers_to() {
        let item = with_references();
        let mut source = Source::default();
        source.secrets.insert("db".into(), "hunter2".into());
        source.documents.insert("conf".into(), b"x=1".to_vec());
        let resolved = resolve_ancillaries(&item, None, &mut source).unwrap();
        assert_eq!(
            resolved,
            Ancillaries::Ready(json!({
                "secrets": {"db": "hunter2"},
                "documents": {"conf": "eD0x"},
            }))
        );
        // The escaped literal is no reference.
        assert_eq!(source.reads, vec!["secret db", "document conf"]);
    }

    #[test]
    fn a_missing_reference_is_named() {
        let item = with_references();
        let mut source = Source::default();
        source.documents.insert("conf".into(), b"x=1".to_vec());
        assert_eq!(
            resolve_ancillaries(&item, None, &mut source).unwrap(),
            Ancillaries::Missing(
                "environment variable PASSWORD refers to @secrets(db), which does not exist".into()
            )
        );
        let mut source = Source::default();
        source.secrets.insert("db".into(), "hunter2".into());
        assert_eq!(
            resolve_ancillaries(&item, None, &mut source).unwrap(),
            Ancillaries::Missing(
                "file /etc/app refers to document conf, which does not exist".into()
            )
        );
    }

    #[test]
    fn other_operations_use_the_recorded_config() {
        let mut item = mk_item(Operation::Restart, Status::Requested);
        item.request = json!({"name": "app", "k8sNamespace": "apps"});
        let installation = json!({
            "k8sNamespace": "apps",
            "configSpec": [
                {"type": "image", "name": "nginx"},
                {"type": "environmentVariable", "name": "P", "value": "@secrets(gone)"}
            ],
        });
        let mut source = Source::default();
        assert_eq!(
            resolve_ancillaries(&item, Some(&installation), &mut source).unwrap(),
            Ancillaries::Missing(
                "environment variable P refers to @secrets(gone), which does not exist".into()
            )
        );
        // No record: nothing to resolve.
        assert_eq!(
            resolve_ancillaries(&item, None, &mut source).unwrap(),
            Ancillaries::Ready(json!({"secrets": {}, "documents": {}}))
        );
    }
}

//! The documented-REST worker protocol: what the gateway reads and writes
//! when the server offers only Vantiq's documented resources
//! (`k8sworkitems`, `k8sinstallations`, `documents`) and no claim
//! procedures. Pure: the queries, the order, the records to write.
//!
//! ```text
//! GET k8sworkitems?where={"clusterName":c,"status":"REQUESTED"}&sort={"timestamp":1}&limit=n
//!   └─ next(): the first one that is the oldest of its installation
//!        PUT k8sworkitems/<id> {"status":"PENDING"}   (refused → skipped this run)
//!        ... Planner.Execute ...
//!        success: record_after(Complete) → POST k8sinstallations?upsert=true | DELETE k8sinstallations/<name>
//!                 DELETE k8sworkitems/<id>
//!        failure: record_after(Fail)     → POST k8sinstallations?upsert=true (FAILED, k8sState = message)
//!                 PUT k8sworkitems/<id> {"status":"FAILED"|"INVALID","message":…}
//!        retry:   PUT k8sworkitems/<id> {"status":"REQUESTED"}
//! ```
//!
//! The URL shapes are Vantiq's (`vantiq-api.md` §5.1, §5.2); which writes a
//! worker makes, and their order, are inferred (§6.2), not documented.
//! There is no lease: one gateway per cluster (the CronJob's `Forbid`).

use std::collections::{BTreeMap, HashSet};
use std::time::SystemTime;

use k8sworker_client::Error as ControlPlaneError;
use k8sworker_client::protocol::{FailStatus, InstallationReport, K8sWorkitem};
use k8sworker_core::plan::Operation;
use serde_json::{Map, Value, json};

/// Vantiq's workitem resource.
pub const WORKITEMS: &str = "k8sworkitems";
/// Vantiq's installation resource.
pub const INSTALLATIONS: &str = "k8sinstallations";
/// How many queued workitems one listing reads.
pub const PAGE: u32 = 50;

/// What a control plane answers in place of a secret value it does not
/// show (`controlplane.md`, secrets at rest).
const REDACTED: &str = "<redacted>";

/// The `where` and `sort` of the listing: the cluster's `REQUESTED`
/// workitems, oldest change first (§6.2, "Polling").
pub fn queued(cluster: &str) -> (Value, Value) {
    (
        json!({"clusterName": cluster, "status": "REQUESTED"}),
        json!({"timestamp": 1}),
    )
}

/// When a workitem was asked for: `createdAt` when the server says,
/// else `timestamp` (the last change; a requeue moves it).
fn asked_at(item: &K8sWorkitem) -> &str {
    item.created_at
        .as_deref()
        .or(item.timestamp.as_deref())
        .unwrap_or_default()
}

/// The installation a workitem acts on (`installationName`, else
/// `request.name`).
pub fn installation_of(item: &K8sWorkitem) -> String {
    item.installation_name
        .clone()
        .or_else(|| {
            item.request
                .get("name")
                .and_then(Value::as_str)
                .map(str::to_owned)
        })
        .unwrap_or_default()
}

/// The workitem to work on next out of a listing: the first, not in
/// `skipped`, whose installation has no older workitem in the listing. So
/// the operations of one installation run in the order they were asked
/// for, even when a requeue moved one's `timestamp`; an installation whose
/// oldest workitem was skipped (it could not be marked) waits for the next
/// run.
pub fn next<'a>(listing: &'a [K8sWorkitem], skipped: &HashSet<String>) -> Option<&'a K8sWorkitem> {
    let mut oldest: BTreeMap<String, &str> = BTreeMap::new();
    for item in listing {
        let at = asked_at(item);
        oldest
            .entry(installation_of(item))
            .and_modify(|first| {
                if at < *first {
                    *first = at;
                }
            })
            .or_insert(at);
    }
    listing.iter().find(|item| {
        !skipped.contains(&item.request_id)
            && oldest.get(&installation_of(item)).copied() == Some(asked_at(item))
    })
}

/// Whether a refusal to mark a workitem `PENDING` is about the worker, not
/// the workitem: the token may not (401/403: no `k8sWorker__system`
/// profile, another cluster's token) or the server takes no such write
/// (405: a claim-protocol server, which `--protocol rest`, or an `auto`
/// detection misled by a 404 on the version endpoint, chose wrongly).
/// Every other workitem would be refused alike, so the run stops and says
/// so, instead of skipping them all and reporting an empty queue.
pub fn refuses_the_worker(error: &ControlPlaneError) -> bool {
    matches!(
        error,
        ControlPlaneError::Unauthorized { .. } | ControlPlaneError::Rejected { status: 405, .. }
    )
}

/// Why a deploy cannot be done over the documented REST surface: it carries
/// secret values (`@secrets(...)`, or a value the server shows only
/// redacted). Vantiq documents no way for a worker to read them.
pub fn needs_claim_protocol(operation: &str, request: &Value) -> Option<String> {
    if operation != Operation::Deploy.as_str() {
        return None;
    }
    let entries = request.get("config").and_then(Value::as_array)?;
    for entry in entries {
        let kind = entry
            .get("type")
            .and_then(Value::as_str)
            .unwrap_or_default();
        let (field, value) = match kind {
            "environmentVariable" | "environmentVariables" => ("value", entry.get("value")),
            "file" => ("content", entry.get("content")),
            _ => continue,
        };
        let Some(text) = value.and_then(Value::as_str) else {
            continue;
        };
        let name = entry
            .get("name")
            .or_else(|| entry.get("filename"))
            .and_then(Value::as_str)
            .unwrap_or("?");
        if text.trim_start().starts_with("@secrets(") {
            return Some(format!(
                "the {kind} `{name}` takes its {field} from {text}: the documented REST worker protocol has no way to read secret values; run the gateway with --protocol claim against a control plane that offers it"
            ));
        }
        if text == REDACTED {
            return Some(format!(
                "the {kind} `{name}` has a secret {field} the server shows only redacted: the documented REST worker protocol has no way to read secret values; run the gateway with --protocol claim against a control plane that offers it"
            ));
        }
    }
    None
}

/// The documents a request's `file` entries mount (`resourceType:
/// documents`, `resourceName`), read through the `documents` resource.
pub fn documents(request: &Value) -> Vec<String> {
    let mut names: Vec<String> = request
        .get("config")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter(|entry| entry.get("type").and_then(Value::as_str) == Some("file"))
        .filter(|entry| entry.get("resourceType").and_then(Value::as_str) == Some("documents"))
        .filter_map(|entry| entry.get("resourceName").and_then(Value::as_str))
        .map(str::to_owned)
        .collect();
    names.sort();
    names.dedup();
    names
}

/// What an outcome does to the installation record.
#[derive(Debug, Clone, PartialEq)]
pub enum RecordWrite {
    /// Upsert these properties (with `name`).
    Upsert(Value),
    /// Delete the record (an undeploy).
    Delete,
    /// Leave it.
    Keep,
}

/// The workitem facts a record is written from.
#[derive(Debug, Clone, Copy)]
pub struct Done<'a> {
    /// The operation.
    pub operation: Operation,
    /// The installation.
    pub installation: &'a str,
    /// The cluster.
    pub cluster: &'a str,
    /// The workitem's `request`.
    pub request: &'a Value,
    /// Who asked for it.
    pub requested_by: &'a str,
    /// Whether the installation has a record now.
    pub recorded: bool,
}

fn iso(at: SystemTime) -> String {
    humantime::format_rfc3339_millis(at).to_string()
}

/// What a deploy records of its request: the K8s namespace, the config and
/// who asked.
fn record_request(doc: &mut Map<String, Value>, done: &Done<'_>) {
    let request = |key: &str| done.request.get(key).cloned();
    doc.insert(
        "k8sNamespace".into(),
        request("k8sNamespace").unwrap_or(Value::Null),
    );
    doc.insert("configSpec".into(), request("config").unwrap_or(json!([])));
    doc.insert("installedBy".into(), json!(done.requested_by));
}

fn base(done: &Done<'_>) -> Map<String, Value> {
    let mut doc = Map::new();
    doc.insert("name".into(), json!(done.installation));
    doc.insert("clusterName".into(), json!(done.cluster));
    doc.insert("k8sInstallationType".into(), json!("STATEFUL_SET"));
    doc
}

/// The record write after a success with the planner's `report`, as a
/// Vantiq worker makes it (§6.2, "Updating installations"): a deploy
/// records its namespace, config, date and user; every operation but
/// fetchLogs records what the cluster reported and the status it leaves.
pub fn record_after_success(
    done: &Done<'_>,
    report: &InstallationReport,
    now: SystemTime,
) -> RecordWrite {
    match done.operation {
        Operation::Undeploy => return RecordWrite::Delete,
        Operation::FetchLogs => return RecordWrite::Keep,
        // Undeployed meanwhile: nothing to describe.
        operation if !done.recorded && operation != Operation::Deploy => return RecordWrite::Keep,
        _ => {}
    }
    let mut doc = base(done);
    if done.operation == Operation::Deploy {
        record_request(&mut doc, done);
        doc.insert("installationDate".into(), json!(iso(now)));
    }
    if let Ok(Value::Object(reported)) = serde_json::to_value(report) {
        doc.extend(reported);
    }
    if !doc.contains_key("installationStatus") {
        let status = match done.operation {
            Operation::Shutdown => Some("STOPPED"),
            Operation::Deploy | Operation::Restart => Some("RUNNING"),
            _ => None,
        };
        if let Some(status) = status {
            doc.insert("installationStatus".into(), json!(status));
        }
    }
    if done.operation == Operation::Verify {
        doc.insert("lastVerifiedAt".into(), json!(iso(now)));
    }
    RecordWrite::Upsert(Value::Object(doc))
}

/// The record write after a failure: a failed deploy, restart, shutdown or
/// undeploy marks the installation `FAILED` with the message as `k8sState`
/// (a failed first deploy creates the record; an `INVALID` one does not,
/// since nothing was applied); verify and fetchLogs change nothing.
pub fn record_after_failure(done: &Done<'_>, status: FailStatus, message: &str) -> RecordWrite {
    let marks = matches!(
        done.operation,
        Operation::Deploy | Operation::Restart | Operation::Shutdown | Operation::Undeploy
    );
    if !marks
        || (!done.recorded
            && (status == FailStatus::Invalid || done.operation != Operation::Deploy))
    {
        return RecordWrite::Keep;
    }
    let mut doc = base(done);
    if !done.recorded {
        record_request(&mut doc, done);
    }
    doc.insert("installationStatus".into(), json!("FAILED"));
    doc.insert("k8sState".into(), json!(message));
    RecordWrite::Upsert(Value::Object(doc))
}

#[cfg(test)]
mod tests {
    use super::*;
    use pretty_assertions::assert_eq;

    fn item(id: &str, installation: &str, created: &str, timestamp: &str) -> K8sWorkitem {
        serde_json::from_value(json!({
            "requestId": id, "operation": "deploy", "installationName": installation,
            "createdAt": created, "timestamp": timestamp, "request": {"name": installation},
        }))
        .unwrap()
    }

    #[test]
    fn the_listing_asks_for_the_clusters_requested_workitems_oldest_first() {
        let (filter, sort) = queued("c1");
        assert_eq!(filter, json!({"clusterName": "c1", "status": "REQUESTED"}));
        assert_eq!(sort, json!({"timestamp": 1}));
    }

    #[test]
    fn an_installations_workitems_run_in_the_order_they_were_asked_for() {
        // `a-0` was requeued (its timestamp moved) but was asked for first.
        let listing = [
            item(
                "a-1",
                "a",
                "2026-01-01T00:00:02.000Z",
                "2026-01-01T00:00:02.000Z",
            ),
            item(
                "b-1",
                "b",
                "2026-01-01T00:00:03.000Z",
                "2026-01-01T00:00:03.000Z",
            ),
            item(
                "a-0",
                "a",
                "2026-01-01T00:00:01.000Z",
                "2026-01-01T00:00:09.000Z",
            ),
        ];
        let none = HashSet::new();
        assert_eq!(next(&listing, &none).unwrap().request_id, "b-1");
        let skipped = HashSet::from(["b-1".to_owned()]);
        assert_eq!(next(&listing, &skipped).unwrap().request_id, "a-0");
        // Done (no longer listed): the next of its installation.
        assert_eq!(next(&listing[..2], &skipped).unwrap().request_id, "a-1");
        // `a-0` could not be marked: `a-1` waits behind it.
        let skipped = HashSet::from(["a-0".to_owned()]);
        assert_eq!(next(&listing, &skipped).unwrap().request_id, "b-1");
        let skipped = HashSet::from(["a-0".to_owned(), "b-1".to_owned()]);
        assert!(next(&listing, &skipped).is_none());
    }

    #[test]
    fn secret_values_need_the_claim_protocol() {
        let secret = json!({"config": [
            {"type": "image", "name": "app"},
            {"type": "environmentVariable", "name": "DB", "value": "@secrets(db-pass)"},
        ]});
        let message = needs_claim_protocol("deploy", &secret).unwrap();
        assert!(message.contains("@secrets(db-pass)"), "{message}");
        assert!(message.contains("--protocol claim"), "{message}");
        let redacted = json!({"config": [
            {"type": "environmentVariable", "name": "K", "value": "<redacted>", "asSecret": true},
        ]});
        assert!(needs_claim_protocol("deploy", &redacted).is_some());
        let escaped = json!({"config": [
            {"type": "environmentVariable", "name": "K", "value": "\\@secrets(x)"},
            {"type": "file", "path": "/p", "filename": "f", "content": "plain"},
        ]});
        assert_eq!(needs_claim_protocol("deploy", &escaped), None);
        assert_eq!(needs_claim_protocol("restart", &secret), None);
    }

    #[test]
    fn mounted_documents_are_named_once() {
        let request = json!({"config": [
            {"type": "file", "path": "/a", "resourceType": "documents", "resourceName": "conf/b.txt"},
            {"type": "file", "path": "/b", "resourceType": "documents", "resourceName": "conf/b.txt"},
            {"type": "file", "path": "/c", "content": "x", "filename": "c"},
        ]});
        assert_eq!(documents(&request), ["conf/b.txt"]);
    }

    fn done(operation: Operation, recorded: bool) -> Done<'static> {
        static REQUEST: std::sync::LazyLock<Value> = std::sync::LazyLock::new(
            || json!({"name": "web", "k8sNamespace": "apps", "config": [{"type": "image", "name": "app"}]}),
        );
        Done {
            operation,
            installation: "web",
            cluster: "c1",
            request: &REQUEST,
            requested_by: "admin",
            recorded,
        }
    }

    #[test]
    fn a_deploy_records_what_a_vantiq_worker_records() {
        let report = InstallationReport {
            replica_count: Some(2),
            k8s_state: Some("Running: 2/2 replicas ready".into()),
            ..InstallationReport::default()
        };
        let at = SystemTime::UNIX_EPOCH;
        let RecordWrite::Upsert(doc) =
            record_after_success(&done(Operation::Deploy, false), &report, at)
        else {
            panic!("a deploy writes its record");
        };
        assert_eq!(
            doc,
            json!({
                "name": "web", "clusterName": "c1", "k8sInstallationType": "STATEFUL_SET",
                "k8sNamespace": "apps", "configSpec": [{"type": "image", "name": "app"}],
                "installationDate": "1970-01-01T00:00:00.000Z", "installedBy": "admin",
                "replicaCount": 2, "k8sState": "Running: 2/2 replicas ready",
                "installationStatus": "RUNNING",
            })
        );
        let report = InstallationReport::default();
        let RecordWrite::Upsert(doc) =
            record_after_success(&done(Operation::Shutdown, true), &report, at)
        else {
            panic!("a shutdown writes its status");
        };
        assert_eq!(doc["installationStatus"], "STOPPED");
        assert!(doc.get("configSpec").is_none());
        assert_eq!(
            record_after_success(&done(Operation::Undeploy, true), &report, at),
            RecordWrite::Delete
        );
        assert_eq!(
            record_after_success(&done(Operation::FetchLogs, true), &report, at),
            RecordWrite::Keep
        );
        assert_eq!(
            record_after_success(&done(Operation::Restart, false), &report, at),
            RecordWrite::Keep
        );
    }

    #[test]
    fn a_failure_marks_the_installation_unless_nothing_was_attempted() {
        let RecordWrite::Upsert(doc) =
            record_after_failure(&done(Operation::Restart, true), FailStatus::Failed, "boom")
        else {
            panic!("a failed restart marks the record");
        };
        assert_eq!(doc["installationStatus"], "FAILED");
        assert_eq!(doc["k8sState"], "boom");
        assert_eq!(
            record_after_failure(&done(Operation::Deploy, false), FailStatus::Invalid, "bad"),
            RecordWrite::Keep
        );
        assert!(matches!(
            record_after_failure(&done(Operation::Deploy, false), FailStatus::Failed, "x"),
            RecordWrite::Upsert(_)
        ));
        assert_eq!(
            record_after_failure(&done(Operation::FetchLogs, true), FailStatus::Failed, "x"),
            RecordWrite::Keep
        );
    }
}

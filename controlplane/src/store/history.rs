//! The operation history (`k8soperations`): one record per workitem, kept
//! after the workitem is gone (a success deletes it, Vantiq's way), so
//! what was done stays readable.
//!
//! ```text
//!   insert ─▶ requested (who, when, the request with secret values redacted)
//!   claim  ─▶ started   (the first claim's time)
//!   complete / fail / INVALID at claim / give up / cancel ─▶ finished
//!             (outcome, error, the plan's steps, the trace id)
//!   sweep  ─▶ pruned    (finished longer ago than --history-retention,
//!                         its workitem no longer queued)
//! ```
//!
//! Every change is made inside the transaction of the workitem step it
//! records ([`super::workitems`]), so the history never disagrees with the
//! queue. The request is stored already redacted
//! ([`crate::secret_config::redacted_request`]): a secret value never
//! reaches this table, sealed or not. A record is finished once; a later
//! step (an admin clearing a `FAILED` workitem) leaves it as it is.

use k8sworker_client::protocol::PlanStep;
use rusqlite::{OptionalExtension, Transaction, params};
use serde_json::{Value, json};

use super::StoreError;
use crate::audit::iso;
use crate::lifecycle::{Status, Workitem};
use crate::secret_config;

/// How an operation ended (`outcome` of a `k8soperations` record).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The worker completed it.
    Succeeded,
    /// It failed in the cluster, or was given up after too many attempts.
    Failed,
    /// Its request could not be carried out (refused by the worker, or a
    /// secret or document it needs was gone at claim time).
    Invalid,
    /// Cancelled before its worker carried it out.
    Cancelled,
}

impl Outcome {
    /// The wire name: `SUCCEEDED`, `FAILED`, `INVALID`, `CANCELLED`.
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Succeeded => "SUCCEEDED",
            Outcome::Failed => "FAILED",
            Outcome::Invalid => "INVALID",
            Outcome::Cancelled => "CANCELLED",
        }
    }

    /// The outcome a workitem's final status stands for: `FAILED` and
    /// `INVALID` as they are, anything else (a workitem dropped while
    /// `REQUESTED` or `CANCELLED`) a cancellation.
    pub fn of_final_status(status: Status) -> Outcome {
        match status {
            Status::Failed => Outcome::Failed,
            Status::Invalid => Outcome::Invalid,
            _ => Outcome::Cancelled,
        }
    }
}

/// What a worker reported for the history with its outcome (the worker
/// protocol's optional `steps` and `traceId`).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Reported<'a> {
    /// The plan's steps, when the worker sent them.
    pub steps: Option<&'a [PlanStep]>,
    /// The trace id the worker sent; `None` keeps the one of the
    /// workitem's `traceparent`.
    pub trace_id: Option<&'a str>,
}

/// How a record is finished.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Finish<'a> {
    /// The outcome.
    pub outcome: Outcome,
    /// The error message, for every outcome but a success.
    pub error: Option<&'a str>,
    /// What the worker reported with it.
    pub reported: Reported<'a>,
}

impl<'a> Finish<'a> {
    /// A finish with `outcome` and `error` and nothing from a worker.
    pub fn plain(outcome: Outcome, error: Option<&'a str>) -> Finish<'a> {
        Finish {
            outcome,
            error,
            reported: Reported::default(),
        }
    }
}

/// The error of a workitem cancelled before its worker carried it out.
pub const CANCELLED: &str = "cancelled before its worker carried it out";

/// The trace id of a W3C `traceparent` (`00-<trace id>-<span id>-<flags>`).
pub fn trace_id_of(traceparent: &str) -> Option<&str> {
    traceparent
        .split('-')
        .nth(1)
        .filter(|id| id.len() == 32 && id.bytes().all(|b| b.is_ascii_hexdigit()))
}

/// The Kubernetes namespace a request names (`k8sNamespace`), if any.
fn k8s_namespace(request: &Value) -> Option<&str> {
    request.get("k8sNamespace").and_then(Value::as_str)
}

/// Records a new workitem: who asked, when, and what (redacted).
pub fn requested(tx: &Transaction<'_>, item: &Workitem) -> Result<(), StoreError> {
    tx.execute(
        "INSERT INTO k8soperations (id, namespace, cluster_name, installation, k8s_namespace,
           operation, requested_by, requested_at, request, trace_id)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)
         ON CONFLICT(id) DO NOTHING",
        params![
            item.request_id,
            item.namespace,
            item.cluster,
            item.installation,
            k8s_namespace(&item.request),
            item.operation.as_str(),
            item.requested_by,
            item.created_at,
            secret_config::redacted_request(&item.request).to_string(),
            item.traceparent.as_deref().and_then(trace_id_of),
        ],
    )?;
    Ok(())
}

/// Records that a worker took the workitem at `now` (epoch milliseconds);
/// the first time counts.
pub fn started(tx: &Transaction<'_>, item: &Workitem, now: i64) -> Result<(), StoreError> {
    requested(tx, item)?;
    tx.execute(
        "UPDATE k8soperations SET started_at = COALESCE(started_at, ?2) WHERE id = ?1",
        params![item.request_id, now],
    )?;
    Ok(())
}

/// Finishes the record of `item` at `now`, unless it is finished already.
/// A workitem enqueued before the history existed gets its record here.
pub fn finished(
    tx: &Transaction<'_>,
    item: &Workitem,
    finish: &Finish<'_>,
    now: i64,
) -> Result<(), StoreError> {
    requested(tx, item)?;
    let steps = finish
        .reported
        .steps
        .map(serde_json::to_string)
        .transpose()?;
    tx.execute(
        "UPDATE k8soperations SET finished_at = ?2, outcome = ?3, error = ?4,
           steps = COALESCE(?5, steps), trace_id = COALESCE(?6, trace_id)
         WHERE id = ?1 AND outcome IS NULL",
        params![
            item.request_id,
            now,
            finish.outcome.as_str(),
            finish.error,
            steps,
            finish.reported.trace_id,
        ],
    )?;
    Ok(())
}

/// Deletes the records finished before `before` (epoch milliseconds); how
/// many. Unfinished records stay, however old, and so does the record of a
/// workitem still in the queue (`FAILED` or `INVALID`, until an admin
/// clears it): the step that removes the workitem would otherwise record it
/// anew, with its own outcome instead of the one it had.
pub fn prune(tx: &Transaction<'_>, before: i64) -> Result<usize, StoreError> {
    Ok(tx.execute(
        "DELETE FROM k8soperations WHERE finished_at IS NOT NULL AND finished_at < ?1
           AND NOT EXISTS (SELECT 1 FROM k8sworkitems WHERE request_id = k8soperations.id)",
        [before],
    )?)
}

const COLUMNS: &str = "id, cluster_name, installation, k8s_namespace, operation, requested_by,
    requested_at, started_at, finished_at, outcome, error, request, steps, trace_id";

/// A record's Vantiq view: `id` (the workitem's `requestId`, also
/// `workitemId`), `clusterName`, `installationName`, `namespace` (the
/// Kubernetes namespace), `op`, `requestedBy`, ISO 8601 `requestedAt`,
/// `startedAt`, `finishedAt` (`null` until then), `outcome` (`null` while
/// outstanding), `error`, `request`, `steps` (`[]` when none were
/// reported), `traceId`.
fn read_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<(Value, String, Option<String>)> {
    let id: String = row.get(0)?;
    let time = |index: usize| -> rusqlite::Result<Value> {
        Ok(row
            .get::<_, Option<i64>>(index)?
            .map_or(Value::Null, |ms| json!(iso(ms))))
    };
    let doc = json!({
        "id": id,
        "workitemId": id,
        "clusterName": row.get::<_, String>(1)?,
        "installationName": row.get::<_, String>(2)?,
        "namespace": row.get::<_, Option<String>>(3)?,
        "op": row.get::<_, String>(4)?,
        "requestedBy": row.get::<_, String>(5)?,
        "requestedAt": time(6)?,
        "startedAt": time(7)?,
        "finishedAt": time(8)?,
        "outcome": row.get::<_, Option<String>>(9)?,
        "error": row.get::<_, Option<String>>(10)?,
        "traceId": row.get::<_, Option<String>>(13)?,
    });
    Ok((doc, row.get(11)?, row.get(12)?))
}

fn decode(raw: (Value, String, Option<String>)) -> Result<Value, StoreError> {
    let (mut doc, request, steps) = raw;
    doc["request"] = serde_json::from_str(&request)?;
    doc["steps"] = match steps {
        Some(steps) => serde_json::from_str(&steps)?,
        None => json!([]),
    };
    Ok(doc)
}

/// Every record of a namespace, the most recently requested first.
pub fn list(tx: &Transaction<'_>, namespace: &str) -> Result<Vec<Value>, StoreError> {
    let sql = format!(
        "SELECT {COLUMNS} FROM k8soperations WHERE namespace = ?1
         ORDER BY requested_at DESC, rowid DESC"
    );
    let mut statement = tx.prepare(&sql)?;
    let rows = statement.query_map([namespace], read_row)?;
    let mut out = Vec::new();
    for row in rows {
        out.push(decode(row?)?);
    }
    Ok(out)
}

/// The record `id` of a namespace.
pub fn get(tx: &Transaction<'_>, namespace: &str, id: &str) -> Result<Option<Value>, StoreError> {
    let sql = format!("SELECT {COLUMNS} FROM k8soperations WHERE namespace = ?1 AND id = ?2");
    tx.query_row(&sql, params![namespace, id], read_row)
        .optional()?
        .map(decode)
        .transpose()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_trace_id_is_the_second_field_of_a_traceparent() {
        assert_eq!(
            trace_id_of("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"),
            Some("4bf92f3577b34da6a3ce929d0e0e4736")
        );
        assert_eq!(trace_id_of("garbage"), None);
        assert_eq!(trace_id_of("00-short-00f067aa0ba902b7-01"), None);
    }

    #[test]
    fn a_final_status_names_its_outcome() {
        assert_eq!(Outcome::of_final_status(Status::Failed), Outcome::Failed);
        assert_eq!(Outcome::of_final_status(Status::Invalid), Outcome::Invalid);
        assert_eq!(
            Outcome::of_final_status(Status::Requested),
            Outcome::Cancelled
        );
        assert_eq!(
            Outcome::of_final_status(Status::Cancelled),
            Outcome::Cancelled
        );
    }
}

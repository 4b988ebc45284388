//! The workitem queue and the worker protocol's transactions.
//!
//! Every step is one SQLite transaction: read the row, ask
//! [`crate::lifecycle`] what the step means, write that. So a claim, a
//! completion and the installation record it writes are atomic. A claim
//! takes the oldest `REQUESTED` item of a cluster whose installation has no
//! `PENDING` item, so the operations on one installation run one at a time,
//! in order.

use rusqlite::{OptionalExtension, Transaction, params};
use serde_json::{Map, Value, json};

use super::StoreError;
use super::history::{self, Finish, Outcome, Reported};
use super::resources::{self, DocTable};
use crate::audit::{iso, now_ms};
use crate::lifecycle::{
    self, Ancillaries, AncillarySource, Event, Next, Operation, RecordChange, Stamp, Status,
    Workitem,
};

/// A workitem to enqueue.
#[derive(Debug, Clone)]
pub struct NewWorkitem {
    /// The Vantiq namespace it belongs to.
    pub namespace: String,
    /// The K8s cluster whose worker carries it out.
    pub cluster: String,
    /// The installation it acts on.
    pub installation: String,
    /// The operation's wire name (`deploy`, `fetchLogs`, …); an unknown one
    /// is a [`StoreError::Invalid`].
    pub operation: String,
    /// The request to hand the worker.
    pub request: Value,
    /// Who asks for it.
    pub requested_by: String,
    /// The W3C `traceparent` to continue; `None` starts a new trace.
    pub traceparent: Option<String>,
}

const RESOURCE: &str = "k8sworkitems";

const COLUMNS: &str = "request_id, namespace, cluster_name, installation, operation, status, request,
    requested_by, created_at, updated_at, lease_id, lease_owner, lease_expires_at, attempts, message,
    traceparent, delayed";

/// A row as SQLite hands it over, before its text columns are decoded.
struct Raw {
    item: Workitem,
    operation: String,
    status: String,
    request: String,
}

fn read_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<Raw> {
    Ok(Raw {
        item: Workitem {
            request_id: row.get(0)?,
            namespace: row.get(1)?,
            cluster: row.get(2)?,
            installation: row.get(3)?,
            operation: Operation::Deploy,
            status: Status::Requested,
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
        operation: row.get(4)?,
        status: row.get(5)?,
        request: row.get(6)?,
    })
}

fn decode(raw: Raw) -> Result<Workitem, StoreError> {
    let mut item = raw.item;
    item.operation = Operation::parse(&raw.operation).ok_or_else(|| {
        StoreError::Corrupt(format!(
            "workitem {} has the unknown operation {:?}",
            item.request_id, raw.operation
        ))
    })?;
    item.status = Status::parse(&raw.status).ok_or_else(|| {
        StoreError::Corrupt(format!(
            "workitem {} has the unknown status {:?}",
            item.request_id, raw.status
        ))
    })?;
    item.request = serde_json::from_str(&raw.request)?;
    Ok(item)
}

fn not_found(request_id: &str) -> StoreError {
    StoreError::NotFound {
        resource: RESOURCE,
        key: "requestId",
        id: request_id.to_owned(),
    }
}

/// The status `event` takes `item` to; the caller has checked the item's
/// status, so a refusal is a bug reported as [`StoreError::Transition`].
fn next_status(item: &Workitem, event: Event) -> Result<Status, StoreError> {
    match lifecycle::transition(item.status, event)? {
        Next::Status(status) => Ok(status),
        Next::Deleted => Err(StoreError::Transition(
            lifecycle::TransitionError::NotAllowed {
                from: item.status,
                event,
            },
        )),
    }
}

/// Enqueues a workitem as `REQUESTED`.
pub fn insert(tx: &Transaction<'_>, item: &NewWorkitem) -> Result<Workitem, StoreError> {
    let operation = Operation::parse(&item.operation).ok_or_else(|| StoreError::Invalid {
        field: "operation".into(),
        reason: format!("{} is not a K8s operation", item.operation),
    })?;
    let now = now_ms();
    let request_id = uuid::Uuid::new_v4().to_string();
    tx.execute(
        "INSERT INTO k8sworkitems (request_id, namespace, cluster_name, installation, operation,
           status, request, requested_by, created_at, updated_at, traceparent)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?9, ?10)",
        params![
            request_id,
            item.namespace,
            item.cluster,
            item.installation,
            operation.as_str(),
            Status::Requested.as_str(),
            item.request.to_string(),
            item.requested_by,
            now,
            item.traceparent
                .clone()
                .unwrap_or_else(crate::trace_context::fresh)
        ],
    )?;
    let item = get(tx, &item.namespace, &request_id)?.ok_or_else(|| not_found(&request_id))?;
    history::requested(tx, &item)?;
    Ok(item)
}

/// One workitem of a namespace.
pub fn get(
    tx: &Transaction<'_>,
    namespace: &str,
    request_id: &str,
) -> Result<Option<Workitem>, StoreError> {
    let sql =
        format!("SELECT {COLUMNS} FROM k8sworkitems WHERE namespace = ?1 AND request_id = ?2");
    tx.query_row(&sql, params![namespace, request_id], read_row)
        .optional()?
        .map(decode)
        .transpose()
}

/// The cluster of one workitem of a namespace.
pub fn cluster_of(
    tx: &Transaction<'_>,
    namespace: &str,
    request_id: &str,
) -> Result<Option<String>, StoreError> {
    Ok(tx
        .prepare_cached(
            "SELECT cluster_name FROM k8sworkitems WHERE namespace = ?1 AND request_id = ?2",
        )?
        .query_row(params![namespace, request_id], |row| row.get(0))
        .optional()?)
}

/// Every workitem of a namespace, oldest first.
pub fn list(tx: &Transaction<'_>, namespace: &str) -> Result<Vec<Workitem>, StoreError> {
    let sql = format!("SELECT {COLUMNS} FROM k8sworkitems WHERE namespace = ?1 ORDER BY seq");
    let mut statement = tx.prepare(&sql)?;
    let rows = statement.query_map([namespace], read_row)?;
    let mut out = Vec::new();
    for row in rows {
        out.push(decode(row?)?);
    }
    Ok(out)
}

/// Cancels a workitem; `false` when there is none. A leased (`PENDING`)
/// one becomes `CANCELLED` under its lease, so its worker learns it at its
/// next renewal and reports what it did; any other is deleted at once.
pub fn delete(tx: &Transaction<'_>, namespace: &str, request_id: &str) -> Result<bool, StoreError> {
    let Some(item) = get(tx, namespace, request_id)? else {
        return Ok(false);
    };
    match lifecycle::transition(item.status, Event::Cancel)? {
        Next::Status(status) => {
            tx.execute(
                "UPDATE k8sworkitems SET status = ?2, updated_at = ?3 WHERE request_id = ?1",
                params![request_id, status.as_str(), now_ms()],
            )?;
        }
        Next::Deleted => {
            let outcome = Outcome::of_final_status(item.status);
            let error = match outcome {
                Outcome::Cancelled => Some(history::CANCELLED),
                _ => item.message.as_deref(),
            };
            history::finished(tx, &item, &Finish::plain(outcome, error), now_ms())?;
            drop_item(tx, &item)?;
        }
    }
    Ok(true)
}

/// A status change a worker asks for through `PUT k8sworkitems/<id>`
/// (`--vantiq-strict`), and what stands in its way.
#[derive(Debug, Clone, PartialEq)]
pub enum StatusChange {
    /// Done: the workitem's view as it now is ([`Workitem::to_doc`];
    /// `None`: it was dropped, a cancelled one given back).
    Changed(Option<Value>),
    /// The change does not follow the workitem's life from its status now.
    Conflict(Status),
    /// Asked to take an item taken as many times as allowed
    /// (`--max-workitem-attempts`) without an outcome: it failed for good
    /// instead ([`lifecycle::give_up`]), as a claim would have failed it.
    GaveUp,
}

/// A worker's status change without a lease (Vantiq's documented surface,
/// `vantiq-api.md` §6.2): `REQUESTED` → `PENDING` (it takes the item;
/// refused when taken already, so two workers never both do, and while
/// another item of its installation is taken or older, [`behind_another`]),
/// `PENDING`/`CANCELLED` → `FAILED`/`INVALID` with `message`, and
/// `PENDING` → `REQUESTED` (given back; a `CANCELLED` one is dropped). A
/// workitem held under a claim lease is not this worker's: refused. The
/// installation record is the worker's to write, except when the item is
/// failed for good ([`StatusChange::GaveUp`]: taken `max_attempts` times,
/// each given back, the claim protocol's limit too).
pub fn set_status(
    tx: &Transaction<'_>,
    namespace: &str,
    request_id: &str,
    to: Status,
    message: Option<&str>,
    max_attempts: u32,
) -> Result<StatusChange, StoreError> {
    let item = get(tx, namespace, request_id)?.ok_or_else(|| not_found(request_id))?;
    let event = match to {
        Status::Pending => Event::Claim,
        Status::Failed | Status::Invalid => Event::Fail(to),
        Status::Requested => Event::Release,
        Status::Cancelled => return Ok(StatusChange::Conflict(item.status)),
    };
    if item.lease_id.is_some() {
        return Ok(StatusChange::Conflict(item.status));
    }
    if to == Status::Pending && item.status == Status::Requested {
        if behind_another(tx, &item)? {
            return Ok(StatusChange::Conflict(item.status));
        }
        if lifecycle::exhausted(&item, max_attempts) {
            let installation =
                resources::get_doc(tx, DocTable::Installations, namespace, &item.installation)?;
            give_up(tx, &item, max_attempts, installation, now_ms())?;
            return Ok(StatusChange::GaveUp);
        }
    }
    let next = match lifecycle::transition(item.status, event) {
        Ok(next) => next,
        Err(_) => return Ok(StatusChange::Conflict(item.status)),
    };
    let now = now_ms();
    match next {
        Next::Deleted => {
            history::finished(
                tx,
                &item,
                &Finish::plain(Outcome::Cancelled, Some(history::CANCELLED)),
                now,
            )?;
            drop_item(tx, &item)?;
            return Ok(StatusChange::Changed(None));
        }
        Next::Status(Status::Pending) => {
            history::started(tx, &item, now)?;
            tx.execute(
                "UPDATE k8sworkitems SET status = ?2, updated_at = ?3, attempts = attempts + 1,
               delayed = 0 WHERE request_id = ?1",
                params![request_id, Status::Pending.as_str(), now],
            )?
        }
        Next::Status(status) => {
            if matches!(status, Status::Failed | Status::Invalid) {
                let error = message.or(item.message.as_deref());
                history::finished(
                    tx,
                    &item,
                    &Finish::plain(Outcome::of_final_status(status), error),
                    now,
                )?;
            }
            tx.execute(
                "UPDATE k8sworkitems SET status = ?2, updated_at = ?3,
               message = COALESCE(?4, message) WHERE request_id = ?1",
                params![request_id, status.as_str(), now, message],
            )?
        }
    };
    if matches!(to, Status::Failed | Status::Invalid) {
        release_orphan_charge(tx, namespace, &item.installation)?;
    }
    Ok(StatusChange::Changed(
        get(tx, namespace, request_id)?.map(|item| item.to_doc()),
    ))
}

/// Whether another workitem of `item`'s installation comes first: one
/// taken (`PENDING`, or `CANCELLED` while its worker finishes) or an older
/// `REQUESTED` one. The claim protocol's order (one operation of an
/// installation at a time, oldest first, [`claim`]), kept for workers
/// that mark items `PENDING` themselves: otherwise two gateways, or one
/// taking a later item, would run an installation's operations at once or
/// out of order.
fn behind_another(tx: &Transaction<'_>, item: &Workitem) -> Result<bool, StoreError> {
    Ok(tx.query_row(
        "SELECT EXISTS (SELECT 1 FROM k8sworkitems p
           WHERE p.namespace = ?1 AND p.installation = ?2 AND p.request_id <> ?3
             AND (p.status IN ('PENDING', 'CANCELLED')
                  OR (p.status = 'REQUESTED'
                      AND p.seq < (SELECT seq FROM k8sworkitems WHERE request_id = ?3))))",
        params![item.namespace, item.installation, item.request_id],
        |row| row.get(0),
    )?)
}

/// A worker's `DELETE k8sworkitems/<id>` (`--vantiq-strict`): the work it
/// took is done, the item goes at once (`PENDING`, or `CANCELLED` while it
/// worked); `false` when there is none. Any other status is refused with
/// it: a `REQUESTED` item was never taken, so deleting it would skip its
/// work, and a `FAILED`/`INVALID` one is the admin's record of a failure.
/// Held under a claim lease: refused.
pub fn finish(
    tx: &Transaction<'_>,
    namespace: &str,
    request_id: &str,
) -> Result<Result<bool, Status>, StoreError> {
    let Some(item) = get(tx, namespace, request_id)? else {
        return Ok(Ok(false));
    };
    if item.lease_id.is_some() || !matches!(item.status, Status::Pending | Status::Cancelled) {
        return Ok(Err(item.status));
    }
    let finish = if item.status == Status::Pending {
        Finish::plain(Outcome::Succeeded, None)
    } else {
        Finish::plain(Outcome::Cancelled, Some(history::CANCELLED))
    };
    history::finished(tx, &item, &finish, now_ms())?;
    drop_item(tx, &item)?;
    Ok(Ok(true))
}

/// Deletes a workitem, and the `self` charge of an installation that will
/// now never exist.
fn drop_item(tx: &Transaction<'_>, item: &Workitem) -> Result<(), StoreError> {
    tx.execute(
        "DELETE FROM k8sworkitems WHERE request_id = ?1",
        [&item.request_id],
    )?;
    release_orphan_charge(tx, &item.namespace, &item.installation)
}

/// Returns every expired lease to `REQUESTED` ([`Event::Expire`]); the
/// clusters that got work back.
pub fn expire_leases(tx: &Transaction<'_>, now: i64) -> Result<Vec<(String, String)>, StoreError> {
    let mut statement = tx.prepare(
        "UPDATE k8sworkitems SET status = 'REQUESTED', lease_id = NULL, lease_owner = NULL,
           lease_expires_at = NULL, updated_at = ?1,
           message = 'attempt ' || attempts || ': the lease of ' || COALESCE(lease_owner, 'its worker')
                     || ' expired before an outcome was reported'
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
    // A cancelled item whose worker went away: the cancellation is done.
    let gone = format!(
        "SELECT {COLUMNS} FROM k8sworkitems WHERE status = 'CANCELLED' AND lease_expires_at < ?1"
    );
    let gone: Vec<Raw> = tx
        .prepare(&gone)?
        .query_map([now], read_row)?
        .collect::<Result<_, _>>()?;
    for raw in gone {
        let item = decode(raw)?;
        history::finished(
            tx,
            &item,
            &Finish::plain(
                Outcome::Cancelled,
                Some("cancelled; its worker's lease expired without an outcome"),
            ),
            now,
        )?;
    }
    let dropped: Vec<(String, String, String)> = tx
        .prepare_cached(
            "DELETE FROM k8sworkitems WHERE status = 'CANCELLED' AND lease_expires_at < ?1
             RETURNING namespace, installation, request_id",
        )?
        .query_map([now], |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?)))?
        .collect::<Result<_, _>>()?;
    for (namespace, installation, request_id) in dropped {
        tracing::info!(%namespace, %request_id, "cancelled workitem's lease expired; dropped");
        release_orphan_charge(tx, &namespace, &installation)?;
    }
    clusters.sort();
    clusters.dedup();
    Ok(clusters)
}

/// What a successful claim hands the worker.
#[derive(Debug, Clone)]
pub struct Claim {
    /// The claimed workitem, now `PENDING`.
    pub row: Workitem,
    /// The claim response body: the workitem's view with `leaseId`,
    /// `leaseSeconds`, `ancillaries`, `installation` and `cluster`.
    pub body: Value,
}

/// Secret values and document contents of one namespace, read in the
/// claim's transaction.
struct NamespaceContent<'a, 'tx> {
    tx: &'a Transaction<'tx>,
    namespace: &'a str,
}

impl AncillarySource for NamespaceContent<'_, '_> {
    type Error = StoreError;

    fn secret(&mut self, name: &str) -> Result<Option<String>, StoreError> {
        resources::get_secret_value(self.tx, self.namespace, name)
    }

    fn document(&mut self, name: &str) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(
            resources::get_document_content(self.tx, self.namespace, name)?
                .map(|(_, content)| content),
        )
    }
}

/// Claims the oldest eligible `REQUESTED` workitem of a cluster, or `None`.
///
/// A workitem whose secrets or documents no longer exist cannot be processed:
/// it is marked `INVALID` (naming what is missing) and the next one is tried.
/// A workitem already claimed `max_attempts` times without an outcome (a
/// poison item: every lease expired or was released) is marked `FAILED`
/// with how its last attempt ended, its installation record as for any
/// failure ([`lifecycle::give_up`]), and the next one is tried.
pub fn claim(
    tx: &Transaction<'_>,
    namespace: &str,
    cluster: &str,
    owner: &str,
    lease_ms: i64,
    max_attempts: u32,
) -> Result<Option<Claim>, StoreError> {
    let now = now_ms();
    expire_leases(tx, now)?;
    let sql = format!(
        "SELECT {COLUMNS} FROM k8sworkitems w
         WHERE w.namespace = ?1 AND w.cluster_name = ?2 AND w.status = 'REQUESTED'
           AND NOT EXISTS (SELECT 1 FROM k8sworkitems p WHERE p.namespace = w.namespace
                           AND p.installation = w.installation AND p.status IN ('PENDING', 'CANCELLED'))
         ORDER BY w.seq LIMIT 1"
    );
    loop {
        let Some(row) = tx
            .query_row(&sql, params![namespace, cluster], read_row)
            .optional()?
            .map(decode)
            .transpose()?
        else {
            return Ok(None);
        };
        let installation =
            resources::get_doc(tx, DocTable::Installations, namespace, &row.installation)?;
        if lifecycle::exhausted(&row, max_attempts) {
            give_up(tx, &row, max_attempts, installation, now)?;
            continue;
        }
        let mut content = NamespaceContent { tx, namespace };
        let ancillaries = match lifecycle::resolve_ancillaries(
            &row,
            installation.as_ref(),
            &mut content,
        )? {
            Ancillaries::Ready(ancillaries) => ancillaries,
            Ancillaries::Missing(problem) => {
                tracing::warn!(%namespace, request_id = %row.request_id, %problem, "workitem cannot be processed; marked INVALID");
                history::finished(
                    tx,
                    &row,
                    &Finish::plain(Outcome::Invalid, Some(&problem)),
                    now,
                )?;
                tx.execute(
                    "UPDATE k8sworkitems SET status = ?2, message = ?3, updated_at = ?4
                         WHERE request_id = ?1",
                    params![
                        row.request_id,
                        next_status(&row, Event::Reject)?.as_str(),
                        problem,
                        now
                    ],
                )?;
                release_orphan_charge(tx, namespace, &row.installation)?;
                continue;
            }
        };
        history::started(tx, &row, now)?;
        let lease_id = uuid::Uuid::new_v4().to_string();
        let expires = now + lease_ms;
        tx.execute(
            "UPDATE k8sworkitems SET status = ?2, lease_id = ?3, lease_owner = ?4,
               lease_expires_at = ?5, attempts = attempts + 1, updated_at = ?6, delayed = 0
             WHERE request_id = ?1",
            params![
                row.request_id,
                next_status(&row, Event::Claim)?.as_str(),
                lease_id,
                owner,
                expires,
                now
            ],
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

/// Fails an exhausted workitem for good ([`lifecycle::give_up`]).
fn give_up(
    tx: &Transaction<'_>,
    row: &Workitem,
    max_attempts: u32,
    installation: Option<Value>,
    now: i64,
) -> Result<(), StoreError> {
    let stamp = Stamp {
        now,
        new_id: crate::auth::random_id(12),
    };
    let (next, message, record) = lifecycle::give_up(row, max_attempts, installation, &stamp)?;
    tracing::warn!(namespace = %row.namespace, request_id = %row.request_id, attempts = row.attempts, %message, "workitem failed for good");
    history::finished(
        tx,
        row,
        &Finish::plain(Outcome::of_final_status(next), Some(&message)),
        now,
    )?;
    if let Some(doc) = record {
        resources::put_installation(
            tx,
            &row.namespace,
            &row.installation,
            &row.cluster,
            &doc,
            None,
        )?;
    }
    tx.execute(
        "UPDATE k8sworkitems SET status = ?2, message = ?3, updated_at = ?4 WHERE request_id = ?1",
        params![row.request_id, next.as_str(), message, now],
    )?;
    release_orphan_charge(tx, &row.namespace, &row.installation)?;
    Ok(())
}

/// The workitem `request_id`, if `lease_id` still holds it.
fn leased(
    tx: &Transaction<'_>,
    namespace: &str,
    request_id: &str,
    lease_id: &str,
) -> Result<Workitem, StoreError> {
    let item = get(tx, namespace, request_id)?.ok_or_else(|| not_found(request_id))?;
    lifecycle::check_lease(&item, lease_id)?;
    Ok(item)
}

/// A renewed lease.
#[derive(Debug, Clone, PartialEq)]
pub struct Renewal {
    /// The renewal's answer: `requestId`, `leaseId`, `leaseExpiresAt`,
    /// `leaseSeconds`.
    pub body: Value,
    /// The workitem was cancelled: the lease was extended all the same (an
    /// operation in flight must be able to report), but the worker must not
    /// start one.
    pub cancelled: bool,
}

/// Extends a held lease to `lease_ms` from now; answers the new expiry and
/// whether the workitem was cancelled.
pub fn renew(
    tx: &Transaction<'_>,
    namespace: &str,
    request_id: &str,
    lease_id: &str,
    lease_ms: i64,
) -> Result<Renewal, StoreError> {
    let item = leased(tx, namespace, request_id, lease_id)?;
    let now = now_ms();
    let expires = now + lease_ms;
    tx.execute(
        "UPDATE k8sworkitems SET lease_expires_at = ?2, updated_at = ?3 WHERE request_id = ?1",
        params![request_id, expires, now],
    )?;
    Ok(Renewal {
        body: json!({
            "requestId": request_id,
            "leaseId": lease_id,
            "leaseExpiresAt": iso(expires),
            "leaseSeconds": lease_ms / 1000,
        }),
        cancelled: item.status == Status::Cancelled,
    })
}

/// Gives a held workitem back to the queue (a worker shutting down); a
/// cancelled one is dropped instead (its worker did not start it). Answers
/// the item as it now is (for a dropped one: as it was, `CANCELLED`).
pub fn release(
    tx: &Transaction<'_>,
    namespace: &str,
    request_id: &str,
    lease_id: &str,
) -> Result<Workitem, StoreError> {
    let item = leased(tx, namespace, request_id, lease_id)?;
    if lifecycle::transition(item.status, Event::Release)? == Next::Deleted {
        history::finished(
            tx,
            &item,
            &Finish::plain(Outcome::Cancelled, Some(history::CANCELLED)),
            now_ms(),
        )?;
        drop_item(tx, &item)?;
        return Ok(item);
    }
    let message = format!(
        "attempt {}: released by {} before an outcome was reported",
        item.attempts,
        item.lease_owner.as_deref().unwrap_or("its worker")
    );
    tx.execute(
        "UPDATE k8sworkitems SET status = ?2, lease_id = NULL, lease_owner = NULL,
           lease_expires_at = NULL, updated_at = ?3, message = ?4 WHERE request_id = ?1",
        params![
            request_id,
            next_status(&item, Event::Release)?.as_str(),
            now_ms(),
            message
        ],
    )?;
    get(tx, namespace, request_id)?.ok_or_else(|| not_found(request_id))
}

fn stamp() -> Stamp {
    Stamp {
        now: now_ms(),
        new_id: crate::auth::random_id(12),
    }
}

/// Completes a held workitem successfully: writes the installation record the
/// operation implies ([`lifecycle::complete`]) and deletes the workitem, in
/// one transaction. `verify_interval_ms` schedules the next `verify`
/// (`None`: off). The history record is finished `SUCCEEDED` with what the
/// worker `reported` ([`history`]).
pub fn complete(
    tx: &Transaction<'_>,
    namespace: &str,
    request_id: &str,
    lease_id: &str,
    report: &Map<String, Value>,
    verify_interval_ms: Option<i64>,
    reported: Reported<'_>,
) -> Result<Value, StoreError> {
    let item = get(tx, namespace, request_id)?.ok_or_else(|| not_found(request_id))?;
    let existing = resources::get_doc(tx, DocTable::Installations, namespace, &item.installation)?;
    let charge = resources::charge(tx, namespace, &item.installation)?;
    let change = lifecycle::complete(
        &item,
        lease_id,
        existing,
        report,
        charge,
        verify_interval_ms,
        &stamp(),
    )?;
    match &change {
        RecordChange::Delete => {
            resources::delete_installation(tx, namespace, &item.installation)?;
        }
        RecordChange::Keep(_) => {}
        RecordChange::Put {
            doc,
            next_verify_at,
        } => resources::put_installation(
            tx,
            namespace,
            &item.installation,
            &item.cluster,
            doc,
            *next_verify_at,
        )?,
    }
    let finish = Finish {
        outcome: Outcome::Succeeded,
        error: None,
        reported,
    };
    history::finished(tx, &item, &finish, now_ms())?;
    tx.execute(
        "DELETE FROM k8sworkitems WHERE request_id = ?1",
        [request_id],
    )?;
    let mut installation = change.answer();
    crate::secret_config::redact_installation(&mut installation);
    Ok(json!({
        "requestId": request_id,
        "operation": item.operation.as_str(),
        "installation": installation,
    }))
}

/// Fails a held workitem with `status` (`FAILED`, or `INVALID` for a bad
/// request) and a message; the installation record changes as
/// [`lifecycle::fail`] decides, in the same transaction, and the history
/// record is finished with what the worker `reported`. Answers the
/// workitem's view.
pub fn fail(
    tx: &Transaction<'_>,
    namespace: &str,
    request_id: &str,
    lease_id: &str,
    status: Status,
    message: &str,
    reported: Reported<'_>,
) -> Result<Value, StoreError> {
    let item = get(tx, namespace, request_id)?.ok_or_else(|| not_found(request_id))?;
    let existing = resources::get_doc(tx, DocTable::Installations, namespace, &item.installation)?;
    let stamp = stamp();
    let (next, record) = lifecycle::fail(&item, lease_id, status, message, existing, &stamp)?;
    if let Some(doc) = record {
        resources::put_installation(tx, namespace, &item.installation, &item.cluster, &doc, None)?;
    }
    let finish = Finish {
        outcome: Outcome::of_final_status(next),
        error: Some(message),
        reported,
    };
    history::finished(tx, &item, &finish, stamp.now)?;
    tx.execute(
        "UPDATE k8sworkitems SET status = ?2, message = ?3, lease_id = NULL, lease_owner = NULL,
           lease_expires_at = NULL, updated_at = ?4 WHERE request_id = ?1",
        params![request_id, next.as_str(), message, stamp.now],
    )?;
    release_orphan_charge(tx, namespace, &item.installation)?;
    Ok(get(tx, namespace, request_id)?
        .ok_or_else(|| not_found(request_id))?
        .to_doc())
}

/// Flags `REQUESTED` workitems created before `before` (epoch milliseconds)
/// as delayed; returns the newly flagged ones.
pub fn flag_delayed(tx: &Transaction<'_>, before: i64) -> Result<Vec<Workitem>, StoreError> {
    let sql = format!(
        "UPDATE k8sworkitems SET delayed = 1
         WHERE status = 'REQUESTED' AND delayed = 0 AND created_at < ?1 RETURNING {COLUMNS}"
    );
    let mut statement = tx.prepare(&sql)?;
    let rows = statement.query_map([before], read_row)?;
    let mut out = Vec::new();
    for row in rows {
        out.push(decode(row?)?);
    }
    Ok(out)
}

/// Enqueues a `verify` workitem for every installation whose verify is due
/// at `now` and that has no outstanding workitem, and schedules the next one
/// `interval_ms` later; returns the clusters that got work.
pub fn schedule_verifies(
    tx: &Transaction<'_>,
    now: i64,
    interval_ms: i64,
) -> Result<Vec<(String, String)>, StoreError> {
    let due: Vec<(String, String, String, String)> = tx
        .prepare(
            "SELECT i.namespace, i.name, i.cluster_name, COALESCE(json_extract(i.doc, '$.k8sNamespace'), '')
             FROM k8sinstallations i
             WHERE i.next_verify_at IS NOT NULL AND i.next_verify_at <= ?1
               AND json_extract(i.doc, '$.installationStatus') IN ('RUNNING', 'STOPPED', 'DAMAGED')
               AND NOT EXISTS (SELECT 1 FROM k8sworkitems w WHERE w.namespace = i.namespace
                               AND w.installation = i.name AND w.status IN ('REQUESTED', 'PENDING', 'CANCELLED'))",
        )?
        .query_map([now], |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?, row.get(3)?)))?
        .collect::<Result<_, _>>()?;
    let mut clusters = Vec::new();
    for (namespace, name, cluster, k8s_namespace) in due {
        insert(
            tx,
            &verify_workitem(&namespace, &cluster, &name, &k8s_namespace, "system", None),
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

/// The `verify` workitem of installation `name` (on `cluster`, in
/// Kubernetes namespace `k8s_namespace`), asked for by `requested_by`
/// (`system` for the periodic verify): the same for the sweep and for a
/// verify asked for on demand.
pub fn verify_workitem(
    namespace: &str,
    cluster: &str,
    name: &str,
    k8s_namespace: &str,
    requested_by: &str,
    traceparent: Option<String>,
) -> NewWorkitem {
    NewWorkitem {
        namespace: namespace.to_owned(),
        cluster: cluster.to_owned(),
        installation: name.to_owned(),
        operation: Operation::Verify.as_str().into(),
        request: json!({"name": name, "k8sNamespace": k8s_namespace}),
        requested_by: requested_by.to_owned(),
        traceparent,
    }
}

/// The oldest `verify` workitem of an installation still to be done
/// (`REQUESTED` or `PENDING`), if any.
pub fn outstanding_verify(
    tx: &Transaction<'_>,
    namespace: &str,
    installation: &str,
) -> Result<Option<Workitem>, StoreError> {
    let sql = format!(
        "SELECT {COLUMNS} FROM k8sworkitems WHERE namespace = ?1 AND installation = ?2
         AND operation = 'verify' AND status IN ('REQUESTED', 'PENDING')
         ORDER BY created_at, request_id LIMIT 1"
    );
    tx.query_row(&sql, params![namespace, installation], read_row)
        .optional()?
        .map(decode)
        .transpose()
}

/// Whether an installation has a `REQUESTED`, `PENDING` or `CANCELLED`
/// (still leased) workitem.
pub fn has_outstanding(
    tx: &Transaction<'_>,
    namespace: &str,
    installation: &str,
) -> Result<bool, StoreError> {
    Ok(tx
        .query_row(
            "SELECT 1 FROM k8sworkitems WHERE namespace = ?1 AND installation = ?2
             AND status IN ('REQUESTED', 'PENDING', 'CANCELLED') LIMIT 1",
            params![namespace, installation],
            |_| Ok(()),
        )
        .optional()?
        .is_some())
}

/// Where an outstanding (`REQUESTED`, `PENDING` or `CANCELLED`) deploy of an
/// installation goes: its cluster and the `k8sNamespace` of its request, the
/// most recent first. `None` when no deploy is outstanding.
///
/// Before an installation's first deploy completes there is no record to
/// name its place, so this is what a second first deploy is compared with.
pub fn outstanding_deploy_target(
    tx: &Transaction<'_>,
    namespace: &str,
    installation: &str,
) -> Result<Option<(String, String)>, StoreError> {
    let row: Option<(String, String)> = tx
        .query_row(
            "SELECT cluster_name, request FROM k8sworkitems WHERE namespace = ?1 AND installation = ?2
             AND operation = 'deploy' AND status IN ('REQUESTED', 'PENDING', 'CANCELLED')
             ORDER BY created_at DESC LIMIT 1",
            params![namespace, installation],
            |row| Ok((row.get(0)?, row.get(1)?)),
        )
        .optional()?;
    let Some((cluster, request)) = row else {
        return Ok(None);
    };
    let request: Value = serde_json::from_str(&request)?;
    let k8s_namespace = request
        .get("k8sNamespace")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned();
    Ok(Some((cluster, k8s_namespace)))
}

/// Releases the `self`-cluster charge of an installation that will never
/// exist: no record and no outstanding workitem (a first deploy that was
/// refused, failed as `INVALID` or cancelled).
fn release_orphan_charge(
    tx: &Transaction<'_>,
    namespace: &str,
    installation: &str,
) -> Result<(), StoreError> {
    let has_record =
        resources::get_doc(tx, DocTable::Installations, namespace, installation)?.is_some();
    if !has_record && !has_outstanding(tx, namespace, installation)? {
        resources::delete_charge(tx, namespace, installation)?;
    }
    Ok(())
}

//! `POST /api/v1/resources/procedures/<name>`: `K8sManager.addK8sWorkerProfile`
//! and the worker protocol (`docs/worker-protocol.md`):
//! `claimWorkitem`, `renewWorkitemLease`, `completeWorkitem`,
//! `failWorkitem`, `releaseWorkitem`; and `renewWorkitemLeases`, every
//! lease a worker holds in one call (an extension Vantiq does not have).
//!
//! A claim with `waitSeconds` is a long-poll: it registers for the cluster's
//! wake-up *before* looking at the queue, so a workitem enqueued between the
//! look and the wait still wakes it; pickup latency is one notification.
//!
//! The parameters and answers are the shared types of
//! `k8sworker_client::protocol`, so the server and its clients agree on
//! every name. Parameters are read one by one, so that a wrong one is named
//! in Vantiq's error (`params[0]`).

use std::time::Duration;

use axum::Json;
use axum::extract::{Path, Request, State};
use axum::response::{IntoResponse, Response};
use k8sworker_client::protocol::{
    self as protocol, ClaimWorkitem, ClaimedWorkitem, CompleteWorkitem, Completion, FailStatus,
    FailWorkitem, HeldLease, InstallationReport, K8sWorkitem, LeaseRenewal, LeaseRenewals,
    MAX_LEASES_PER_RENEWAL, MAX_PARAM_BYTES, MAX_PLAN_STEPS, PlanStep, ReleaseWorkitem,
    RenewWorkitemLease, RenewWorkitemLeases,
};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::{Map, Value};
use tracing::Instrument;

use super::error::ApiError;
use super::extract::read_body;
use crate::auth::{Action, Caller};
use crate::lifecycle::Status;
use crate::query::json_kind;
use crate::state::AppState;
use crate::store::history::Reported;
use crate::store::resources::{self, DocTable};
use crate::store::{StoreError, identity, sealing, workitems};

/// The procedure's named parameters.
struct Params(Map<String, Value>);

impl Params {
    fn string(&self, key: &str) -> Result<String, ApiError> {
        match self.0.get(key) {
            Some(Value::String(text)) if !text.is_empty() && text.len() <= MAX_PARAM_BYTES => {
                Ok(text.clone())
            }
            Some(Value::String(text)) if !text.is_empty() => Err(ApiError::invalid(
                key,
                format!(
                    "must be at most {MAX_PARAM_BYTES} bytes, got {} bytes",
                    text.len()
                ),
            )),
            Some(other) if !other.is_string() => Err(ApiError::invalid(
                key,
                format!("must be a string, got {}", json_kind(other)),
            )),
            Some(_) => Err(ApiError::invalid(key, "must be a non-empty string")),
            None => Err(ApiError::invalid(key, "is required")),
        }
    }

    fn optional_string(&self, key: &str) -> Result<Option<String>, ApiError> {
        match self.0.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(_) => self.string(key).map(Some),
        }
    }

    /// Seconds, at most `max`.
    fn seconds(&self, key: &str, max: Duration) -> Result<Option<f64>, ApiError> {
        match self.0.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::Number(number)) => {
                let seconds = number.as_f64().unwrap_or(-1.0);
                if !(0.0..=max.as_secs_f64()).contains(&seconds) {
                    return Err(ApiError::invalid(
                        key,
                        format!("must be between 0 and {} seconds", max.as_secs()),
                    ));
                }
                Ok(Some(seconds))
            }
            Some(other) => Err(ApiError::invalid(
                key,
                format!("must be a number of seconds, got {}", json_kind(other)),
            )),
        }
    }

    /// `claimWorkitem`'s parameters; lease and wait within the server's limits.
    fn claim(&self, config: &crate::config::Config) -> Result<ClaimWorkitem, ApiError> {
        Ok(ClaimWorkitem {
            cluster_name: self.string("clusterName")?,
            worker_id: self.optional_string("workerId")?,
            lease_seconds: self.seconds("leaseSeconds", config.max_lease)?,
            wait_seconds: self.seconds("waitSeconds", config.max_claim_wait)?,
        })
    }

    /// `renewWorkitemLeases`' parameters: 1 to [`MAX_LEASES_PER_RENEWAL`]
    /// leases, each `{requestId, leaseId}` (named `leases[i].requestId` in
    /// an error).
    fn renew_many(&self, config: &crate::config::Config) -> Result<RenewWorkitemLeases, ApiError> {
        let entries = match self.0.get("leases") {
            Some(Value::Array(entries)) => entries,
            Some(other) => {
                return Err(ApiError::invalid(
                    "leases",
                    format!("must be an array, got {}", json_kind(other)),
                ));
            }
            None => return Err(ApiError::invalid("leases", "is required")),
        };
        if entries.is_empty() || entries.len() > MAX_LEASES_PER_RENEWAL {
            return Err(ApiError::invalid(
                "leases",
                format!(
                    "must name 1 to {MAX_LEASES_PER_RENEWAL} leases, got {}",
                    entries.len()
                ),
            ));
        }
        let mut leases = Vec::with_capacity(entries.len());
        for (i, entry) in entries.iter().enumerate() {
            let Value::Object(entry) = entry else {
                return Err(ApiError::invalid(
                    &format!("leases[{i}]"),
                    format!("must be an object, got {}", json_kind(entry)),
                ));
            };
            let entry = Params(entry.clone());
            let named = |key: &str| {
                entry.string(key).map_err(|error| match error {
                    ApiError::InvalidArgument { field, reason } => {
                        ApiError::invalid(&format!("leases[{i}].{field}"), reason)
                    }
                    other => other,
                })
            };
            leases.push(HeldLease {
                request_id: named("requestId")?,
                lease_id: named("leaseId")?,
            });
        }
        Ok(RenewWorkitemLeases {
            leases,
            lease_seconds: self.seconds("leaseSeconds", config.max_lease)?,
        })
    }

    fn renew(&self, config: &crate::config::Config) -> Result<RenewWorkitemLease, ApiError> {
        Ok(RenewWorkitemLease {
            request_id: self.string("requestId")?,
            lease_id: self.string("leaseId")?,
            lease_seconds: self.seconds("leaseSeconds", config.max_lease)?,
        })
    }

    /// The optional `steps` of a completion or failure: at most
    /// [`MAX_PLAN_STEPS`] objects `{action, kind, name, reason}` of strings,
    /// each at most [`MAX_PARAM_BYTES`] bytes; a wrong one is named
    /// (`steps[3].kind`).
    fn steps(&self) -> Result<Option<Vec<PlanStep>>, ApiError> {
        let steps = match self.0.get("steps") {
            None | Some(Value::Null) => return Ok(None),
            Some(Value::Array(steps)) => steps,
            Some(other) => {
                return Err(ApiError::invalid(
                    "steps",
                    format!("must be a list, got {}", json_kind(other)),
                ));
            }
        };
        if steps.len() > MAX_PLAN_STEPS {
            return Err(ApiError::invalid(
                "steps",
                format!(
                    "must hold at most {MAX_PLAN_STEPS} steps, got {}",
                    steps.len()
                ),
            ));
        }
        steps
            .iter()
            .enumerate()
            .map(|(index, step)| {
                let field = |name: &str| format!("steps[{index}].{name}");
                let Value::Object(step) = step else {
                    return Err(ApiError::invalid(
                        &format!("steps[{index}]"),
                        format!("must be an object, got {}", json_kind(step)),
                    ));
                };
                for (key, value) in step {
                    if !matches!(key.as_str(), "action" | "kind" | "name" | "reason") {
                        return Err(ApiError::invalid(
                            &field(key),
                            "is not a step property (action, kind, name, reason)",
                        ));
                    }
                    match value {
                        Value::String(text) if text.len() <= MAX_PARAM_BYTES => {}
                        Value::String(text) => {
                            return Err(ApiError::invalid(
                                &field(key),
                                format!(
                                    "must be at most {MAX_PARAM_BYTES} bytes, got {} bytes",
                                    text.len()
                                ),
                            ));
                        }
                        other => {
                            return Err(ApiError::invalid(
                                &field(key),
                                format!("must be a string, got {}", json_kind(other)),
                            ));
                        }
                    }
                }
                let text = |key: &str| -> Result<String, ApiError> {
                    match step.get(key) {
                        Some(Value::String(text)) => Ok(text.clone()),
                        _ if key == "reason" => Ok(String::new()),
                        _ => Err(ApiError::invalid(&field(key), "is required")),
                    }
                };
                Ok(PlanStep {
                    action: text("action")?,
                    kind: text("kind")?,
                    name: text("name")?,
                    reason: text("reason")?,
                })
            })
            .collect::<Result<Vec<_>, _>>()
            .map(Some)
    }

    /// The optional `traceId`: a W3C trace id, 32 lowercase hex digits,
    /// not all zero.
    fn trace_id(&self) -> Result<Option<String>, ApiError> {
        let Some(id) = self.optional_string("traceId")? else {
            return Ok(None);
        };
        let hex = id.len() == 32
            && id
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
        if !hex || id.bytes().all(|b| b == b'0') {
            return Err(ApiError::invalid(
                "traceId",
                "must be a W3C trace id: 32 lowercase hex digits, not all zero",
            ));
        }
        Ok(Some(id))
    }

    /// `completeWorkitem`'s parameters: only reportable properties, each of
    /// its protocol type.
    fn complete(&self) -> Result<CompleteWorkitem, ApiError> {
        let request_id = self.string("requestId")?;
        let lease_id = self.string("leaseId")?;
        let report = match self.0.get("installation") {
            None | Some(Value::Null) => Map::new(),
            Some(Value::Object(report)) => report.clone(),
            Some(other) => {
                return Err(ApiError::invalid(
                    "installation",
                    format!("must be an object, got {}", json_kind(other)),
                ));
            }
        };
        if let Some(key) = report
            .keys()
            .find(|key| !InstallationReport::PROPERTIES.contains(&key.as_str()))
        {
            return Err(ApiError::invalid(
                &format!("installation.{key}"),
                format!(
                    "is not a reportable property ({})",
                    InstallationReport::PROPERTIES.join(", ")
                ),
            ));
        }
        check_report_types(&report, "installation.")?;
        let installation = serde_json::from_value(Value::Object(report))
            .map_err(|error| ApiError::invalid("installation", error.to_string()))?;
        Ok(CompleteWorkitem {
            request_id,
            lease_id,
            installation,
            steps: self.steps()?,
            trace_id: self.trace_id()?,
        })
    }

    fn fail(&self) -> Result<FailWorkitem, ApiError> {
        let request_id = self.string("requestId")?;
        let lease_id = self.string("leaseId")?;
        let status = match self.optional_string("status")? {
            None => FailStatus::default(),
            Some(status) => FailStatus::parse(&status)
                .ok_or_else(|| ApiError::invalid("status", "must be FAILED or INVALID"))?,
        };
        Ok(FailWorkitem {
            request_id,
            lease_id,
            status,
            message: self.string("message")?,
            steps: self.steps()?,
            trace_id: self.trace_id()?,
        })
    }

    fn release(&self) -> Result<ReleaseWorkitem, ApiError> {
        Ok(ReleaseWorkitem {
            request_id: self.string("requestId")?,
            lease_id: self.string("leaseId")?,
        })
    }
}

/// Checks that each of `report`'s [`InstallationReport::PROPERTIES`] has
/// its protocol type (`replicaCount` an integer, `k8sAssociated*` lists of
/// names, ...), one at a time so that a wrong one is named (`{prefix}key`);
/// other properties are the caller's to refuse or check.
pub(super) fn check_report_types(
    report: &Map<String, Value>,
    prefix: &str,
) -> Result<(), ApiError> {
    for (key, value) in report {
        if !InstallationReport::PROPERTIES.contains(&key.as_str()) {
            continue;
        }
        let one = Map::from_iter([(key.clone(), value.clone())]);
        serde_json::from_value::<InstallationReport>(Value::Object(one)).map_err(|error| {
            ApiError::invalid(&format!("{prefix}{key}"), format!("is not valid: {error}"))
        })?;
    }
    Ok(())
}

/// A lease of `seconds`, or the server's default for none (or zero).
fn lease_or_default(seconds: Option<f64>, state: &AppState) -> Duration {
    seconds
        .filter(|seconds| *seconds > 0.0)
        .map_or(state.config.default_lease, Duration::from_secs_f64)
}

/// Refuses a call about workitem `request_id` from a worker token bound to
/// another cluster than the workitem's, before anything is changed. A token
/// not bound yet is bound to the workitem's cluster, as a first claim binds
/// it (in the caller's transaction, so a call that then fails binds
/// nothing): otherwise a token that never claimed could renew, complete,
/// fail or release any cluster's workitem whose lease it knows.
pub(super) fn check_cluster(
    tx: &rusqlite::Transaction<'_>,
    caller: &Caller,
    request_id: &str,
) -> Result<(), ApiError> {
    let Some(cluster) = workitems::cluster_of(tx, &caller.namespace, request_id)? else {
        return Ok(());
    };
    let bound = match &caller.k8s_cluster {
        Some(bound) => Some(bound.clone()),
        None => identity::bind_token_cluster(tx, &caller.token_hash, &cluster)?,
    };
    match bound {
        Some(bound) if bound != cluster => Err(ApiError::WorkerClusterDenied {
            bound,
            requested: cluster,
        }),
        _ => Ok(()),
    }
}

/// A store answer as the protocol's type `T`. The store writes the
/// protocol's JSON; one that does not read is a server bug, logged.
fn answer<T: DeserializeOwned>(procedure: &str, value: Value) -> Result<T, ApiError> {
    serde_json::from_value(value).map_err(|error| {
        tracing::error!(%error, procedure, "an answer does not match the worker protocol");
        ApiError::Internal(StoreError::Json(error))
    })
}

fn respond(answer: &impl Serialize) -> Response {
    Json(answer).into_response()
}

/// Dispatches a procedure call.
pub async fn call(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
    request: Request,
) -> Result<Response, ApiError> {
    let body = read_body(request, &state).await?;
    let params = if body.iter().all(u8::is_ascii_whitespace) {
        Map::new()
    } else {
        match serde_json::from_slice::<Value>(&body) {
            Ok(Value::Object(object)) => object,
            Ok(Value::Array(_)) => {
                return Err(ApiError::invalid(
                    "parameters",
                    "pass named parameters as a JSON object; positional parameters are not supported",
                ));
            }
            Ok(other) => {
                return Err(ApiError::invalid(
                    "parameters",
                    format!("must be a JSON object, got {}", json_kind(&other)),
                ));
            }
            Err(error) => return Err(ApiError::MalformedJson(error.to_string())),
        }
    };
    let params = Params(params);
    // The documented surface has no worker procedures.
    let worker_procedure = [
        protocol::CLAIM_WORKITEM,
        protocol::RENEW_WORKITEM_LEASE,
        protocol::RENEW_WORKITEM_LEASES,
        protocol::COMPLETE_WORKITEM,
        protocol::FAIL_WORKITEM,
        protocol::RELEASE_WORKITEM,
    ]
    .contains(&name.as_str());
    if state.config.vantiq_strict && worker_procedure {
        return Err(ApiError::UnknownProcedure(name));
    }
    Ok(match name.as_str() {
        "K8sManager.addK8sWorkerProfile" => {
            respond(&super::identity::add_worker_profile(&state, &caller).await?)
        }
        protocol::CLAIM_WORKITEM => respond(&claim(&state, &caller, &params).await?),
        protocol::RENEW_WORKITEM_LEASE => respond(&renew(&state, &caller, &params).await?),
        protocol::RENEW_WORKITEM_LEASES => respond(&renew_many(&state, &caller, &params).await?),
        protocol::COMPLETE_WORKITEM => respond(&complete(&state, &caller, &params).await?),
        protocol::FAIL_WORKITEM => respond(&fail(&state, &caller, &params).await?),
        protocol::RELEASE_WORKITEM => respond(&release(&state, &caller, &params).await?),
        other => {
            return Err(ApiError::UnknownProcedure(
                other.chars().take(200).collect(),
            ));
        }
    })
}

/// Claims the oldest eligible workitem of a cluster, waiting up to
/// `waitSeconds` for one; `null` when none came.
async fn claim(
    state: &AppState,
    caller: &Caller,
    params: &Params,
) -> Result<Option<ClaimedWorkitem>, ApiError> {
    caller.require(Action::WorkerProtocol)?;
    let ClaimWorkitem {
        cluster_name: cluster,
        worker_id,
        lease_seconds,
        wait_seconds,
    } = params.claim(&state.config)?;
    let owner = worker_id.unwrap_or_else(|| caller.username.clone());
    let lease = lease_or_default(lease_seconds, state);
    let wait = wait_seconds.map_or(Duration::ZERO, Duration::from_secs_f64);
    let namespace = caller.namespace.clone();
    {
        let (namespace, name) = (namespace.clone(), cluster.clone());
        let token = caller.token_hash.clone();
        let bound = caller.k8s_cluster.clone();
        state
            .store
            .transaction(move |tx| {
                if resources::get_doc(tx, DocTable::Clusters, &namespace, &name)?.is_none() {
                    return Err(ApiError::not_found("k8sclusters", "name", name));
                }
                // A worker token serves one cluster: the one it names, or
                // the one it first claims from.
                let bound = match bound {
                    Some(bound) => Some(bound),
                    None => identity::bind_token_cluster(tx, &token, &name)?,
                };
                match bound {
                    Some(bound) if bound != name => Err(ApiError::WorkerClusterDenied {
                        bound,
                        requested: name,
                    }),
                    _ => Ok(()),
                }
            })
            .await?;
    }
    let span =
        tracing::info_span!("workitem.claim", %namespace, cluster = %cluster, worker = %owner);
    async {
        let deadline = tokio::time::Instant::now() + wait;
        let notify = state.wakeups.notifier(&namespace, &cluster);
        let mut shutdown = state.shutdown.clone();
        loop {
            let notified = notify.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let claimed = {
                let (namespace, cluster, owner) =
                    (namespace.clone(), cluster.clone(), owner.clone());
                let lease_ms = lease.as_millis() as i64;
                let max_attempts = state.config.max_workitem_attempts;
                state
                    .store
                    .transaction(move |tx| {
                        workitems::claim(tx, &namespace, &cluster, &owner, lease_ms, max_attempts)
                    })
                    .await?
            };
            if let Some(claim) = claimed {
                tracing::info!(
                    request_id = %claim.row.request_id,
                    operation = %claim.row.operation,
                    installation = %claim.row.installation,
                    "workitem claimed"
                );
                crate::metrics::claimed(claim.row.operation.as_str());
                let body = sealing::open_claim(claim, &state.keyring)?;
                return answer(protocol::CLAIM_WORKITEM, body).map(Some);
            }
            if *shutdown.borrow() {
                return Ok(None);
            }
            tokio::select! {
                _ = &mut notified => {}
                _ = tokio::time::sleep_until(deadline) => return Ok(None),
                _ = shutdown.changed() => return Ok(None),
            }
        }
    }
    .instrument(span)
    .await
}

async fn renew(
    state: &AppState,
    caller: &Caller,
    params: &Params,
) -> Result<LeaseRenewal, ApiError> {
    caller.require(Action::WorkerProtocol)?;
    let RenewWorkitemLease {
        request_id,
        lease_id,
        lease_seconds,
    } = params.renew(&state.config)?;
    let lease = lease_or_default(lease_seconds, state);
    let caller = caller.clone();
    let renewed = state
        .store
        .transaction(move |tx| {
            check_cluster(tx, &caller, &request_id)?;
            Ok::<_, ApiError>(workitems::renew(
                tx,
                &caller.namespace,
                &request_id,
                &lease_id,
                lease.as_millis() as i64,
            )?)
        })
        .await?;
    if renewed.cancelled {
        // Answered after the extension committed: a worker whose apply is
        // running keeps its lease to report the outcome.
        return Err(ApiError::WorkitemCancelled {
            request_id: renewed.body["requestId"]
                .as_str()
                .unwrap_or_default()
                .to_owned(),
        });
    }
    answer(protocol::RENEW_WORKITEM_LEASE, renewed.body)
}

/// Renews every named lease in one transaction, each as `renewWorkitemLease`
/// would, answering each one's fate instead of an error: `renewed`,
/// `cancelled` (extended; do not start), `lost` (409), `gone` (404). A
/// lease of another cluster than the token's refuses the whole call (403),
/// as it would refuse that lease alone.
async fn renew_many(
    state: &AppState,
    caller: &Caller,
    params: &Params,
) -> Result<LeaseRenewals, ApiError> {
    use k8sworker_client::protocol::{BatchRenewal, RenewalOutcome};
    caller.require(Action::WorkerProtocol)?;
    let RenewWorkitemLeases {
        leases,
        lease_seconds,
    } = params.renew_many(&state.config)?;
    let lease = lease_or_default(lease_seconds, state);
    let caller = caller.clone();
    let renewals = state
        .store
        .transaction(move |tx| {
            let mut renewals = Vec::with_capacity(leases.len());
            for HeldLease {
                request_id,
                lease_id,
            } in leases
            {
                check_cluster(tx, &caller, &request_id)?;
                let renewed = workitems::renew(
                    tx,
                    &caller.namespace,
                    &request_id,
                    &lease_id,
                    lease.as_millis() as i64,
                );
                let (outcome, expires) = match renewed {
                    Ok(renewed) => (
                        if renewed.cancelled {
                            RenewalOutcome::Cancelled
                        } else {
                            RenewalOutcome::Renewed
                        },
                        renewed.body["leaseExpiresAt"].as_str().map(str::to_owned),
                    ),
                    Err(StoreError::LeaseLost { .. }) => (RenewalOutcome::Lost, None),
                    Err(StoreError::NotFound { .. }) => (RenewalOutcome::Gone, None),
                    Err(error) => return Err(ApiError::from(error)),
                };
                renewals.push(BatchRenewal {
                    request_id,
                    lease_id,
                    outcome,
                    lease_expires_at: expires,
                });
            }
            Ok::<_, ApiError>(renewals)
        })
        .await?;
    Ok(LeaseRenewals { leases: renewals })
}

async fn complete(
    state: &AppState,
    caller: &Caller,
    params: &Params,
) -> Result<Completion, ApiError> {
    caller.require(Action::WorkerProtocol)?;
    let CompleteWorkitem {
        request_id,
        lease_id,
        installation,
        steps,
        trace_id,
    } = params.complete()?;
    let report = installation.to_map();
    let verify = state.config.verify_interval;
    let verify_ms = (!verify.is_zero()).then_some(verify.as_millis() as i64);
    let caller = caller.clone();
    let result = state
        .store
        .transaction(move |tx| {
            check_cluster(tx, &caller, &request_id)?;
            Ok::<_, ApiError>(workitems::complete(
                tx,
                &caller.namespace,
                &request_id,
                &lease_id,
                &report,
                verify_ms,
                Reported {
                    steps: steps.as_deref(),
                    trace_id: trace_id.as_deref(),
                },
            )?)
        })
        .await?;
    let completion: Completion = answer(protocol::COMPLETE_WORKITEM, result)?;
    tracing::info!(request_id = %completion.request_id, operation = %completion.operation, "workitem completed");
    crate::metrics::completed(&completion.operation);
    Ok(completion)
}

async fn fail(state: &AppState, caller: &Caller, params: &Params) -> Result<K8sWorkitem, ApiError> {
    caller.require(Action::WorkerProtocol)?;
    let FailWorkitem {
        request_id,
        lease_id,
        status,
        message,
        steps,
        trace_id,
    } = params.fail()?;
    let caller = caller.clone();
    let result = state
        .store
        .transaction(move |tx| {
            check_cluster(tx, &caller, &request_id)?;
            Ok::<_, ApiError>(workitems::fail(
                tx,
                &caller.namespace,
                &request_id,
                &lease_id,
                match status {
                    FailStatus::Failed => Status::Failed,
                    FailStatus::Invalid => Status::Invalid,
                },
                &message,
                Reported {
                    steps: steps.as_deref(),
                    trace_id: trace_id.as_deref(),
                },
            )?)
        })
        .await?;
    let failed: K8sWorkitem = answer(protocol::FAIL_WORKITEM, result)?;
    tracing::warn!(request_id = %failed.request_id, status = status.as_str(), "workitem failed");
    crate::metrics::failed(&failed.operation, status.as_str());
    Ok(failed)
}

async fn release(
    state: &AppState,
    caller: &Caller,
    params: &Params,
) -> Result<K8sWorkitem, ApiError> {
    caller.require(Action::WorkerProtocol)?;
    let ReleaseWorkitem {
        request_id,
        lease_id,
    } = params.release()?;
    let caller = caller.clone();
    let row = state
        .store
        .transaction(move |tx| {
            check_cluster(tx, &caller, &request_id)?;
            Ok::<_, ApiError>(workitems::release(
                tx,
                &caller.namespace,
                &request_id,
                &lease_id,
            )?)
        })
        .await?;
    state.wakeups.wake(&row.namespace, &row.cluster);
    answer(protocol::RELEASE_WORKITEM, row.to_doc())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn params(value: Value) -> Params {
        match value {
            Value::Object(map) => Params(map),
            _ => unreachable!("test parameters are objects"),
        }
    }

    fn field(error: ApiError) -> String {
        match error {
            ApiError::InvalidArgument { field, .. } => field,
            other => panic!("expected InvalidArgument, got {other:?}"),
        }
    }

    #[test]
    fn what_a_client_sends_is_read_back_as_the_same_parameters() {
        let config = crate::config::Config::for_tests("unused.db".into());
        let claim = ClaimWorkitem {
            cluster_name: "c1".into(),
            worker_id: Some("gw-1".into()),
            lease_seconds: Some(60.0),
            wait_seconds: Some(0.5),
        };
        let sent = params(serde_json::to_value(&claim).unwrap());
        assert_eq!(sent.claim(&config).unwrap(), claim);
        let renew = RenewWorkitemLease {
            request_id: "r".into(),
            lease_id: "l".into(),
            lease_seconds: None,
        };
        let sent = params(serde_json::to_value(&renew).unwrap());
        assert_eq!(sent.renew(&config).unwrap(), renew);
        let complete = CompleteWorkitem {
            request_id: "r".into(),
            lease_id: "l".into(),
            installation: InstallationReport {
                installation_status: Some(protocol::InstallationStatus::Damaged),
                k8s_state: Some("Damaged: ConfigMap x is missing".into()),
                replica_count: Some(2),
                k8s_installation_info: Some(Map::from_iter([("drift".into(), json!([]))])),
                k8s_installation_identifier: Some("uid-1".into()),
                k8s_associated_services: Some(vec!["web".into()]),
                k8s_associated_ingresses: Some(Vec::new()),
                k8s_associated_config_maps: Some(vec!["vantiq-web-configmap-0".into()]),
                k8s_associated_secrets: Some(Vec::new()),
            },
            steps: Some(vec![PlanStep {
                action: "create".into(),
                kind: "StatefulSet".into(),
                name: "web".into(),
                reason: "missing".into(),
            }]),
            trace_id: Some("4bf92f3577b34da6a3ce929d0e0e4736".into()),
        };
        let sent = params(serde_json::to_value(&complete).unwrap());
        assert_eq!(sent.complete().unwrap(), complete);
        let fail = FailWorkitem {
            request_id: "r".into(),
            lease_id: "l".into(),
            status: FailStatus::Invalid,
            message: "bad".into(),
            steps: None,
            trace_id: None,
        };
        let sent = params(serde_json::to_value(&fail).unwrap());
        assert_eq!(sent.fail().unwrap(), fail);
        let release = ReleaseWorkitem {
            request_id: "r".into(),
            lease_id: "l".into(),
        };
        let sent = params(serde_json::to_value(&release).unwrap());
        assert_eq!(sent.release().unwrap(), release);
    }

    #[test]
    fn a_wrong_parameter_is_named() {
        let config = crate::config::Config::for_tests("unused.db".into());
        assert_eq!(
            field(
                params(json!({"clusterName": 5}))
                    .claim(&config)
                    .unwrap_err()
            ),
            "clusterName"
        );
        assert_eq!(
            field(
                params(json!({"clusterName": "c1", "waitSeconds": 3600}))
                    .claim(&config)
                    .unwrap_err()
            ),
            "waitSeconds"
        );
        let lease = json!({"requestId": "r", "leaseId": "l"});
        let mut report = lease.clone();
        report["installation"] = json!({"replicaCount": "two"});
        assert_eq!(
            field(params(report).complete().unwrap_err()),
            "installation.replicaCount"
        );
        let mut report = lease.clone();
        report["installation"] = json!({"name": "hijack"});
        assert_eq!(
            field(params(report).complete().unwrap_err()),
            "installation.name"
        );
        let mut report = lease.clone();
        report["steps"] = json!([{"action": "create", "kind": 5, "name": "x"}]);
        assert_eq!(
            field(params(report).complete().unwrap_err()),
            "steps[0].kind"
        );
        let mut report = lease.clone();
        report["steps"] = json!([{"action": "create", "kind": "Secret"}]);
        assert_eq!(
            field(params(report).complete().unwrap_err()),
            "steps[0].name"
        );
        let mut report = lease.clone();
        report["steps"] = json!("create");
        assert_eq!(field(params(report).complete().unwrap_err()), "steps");
        let mut report = lease.clone();
        report["traceId"] = json!("00000000000000000000000000000000");
        assert_eq!(field(params(report).complete().unwrap_err()), "traceId");
        let mut report = lease.clone();
        report["traceId"] = json!("4BF92F3577B34DA6A3CE929D0E0E4736");
        assert_eq!(field(params(report).complete().unwrap_err()), "traceId");
        let mut fail = lease.clone();
        fail["status"] = json!("DONE");
        fail["message"] = json!("m");
        assert_eq!(field(params(fail).fail().unwrap_err()), "status");
        assert_eq!(field(params(lease).fail().unwrap_err()), "message");
    }
}

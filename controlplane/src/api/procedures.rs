//! `POST /api/v1/resources/procedures/<name>`: `K8sManager.addK8sWorkerProfile`
//! and the worker protocol (`docs/worker-protocol.md`):
//! `claimWorkitem`, `renewWorkitemLease`, `completeWorkitem`,
//! `failWorkitem`, `releaseWorkitem`.
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
    FailWorkitem, InstallationReport, K8sWorkitem, LeaseRenewal, MAX_PARAM_BYTES, ReleaseWorkitem,
    RenewWorkitemLease,
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

    fn renew(&self, config: &crate::config::Config) -> Result<RenewWorkitemLease, ApiError> {
        Ok(RenewWorkitemLease {
            request_id: self.string("requestId")?,
            lease_id: self.string("leaseId")?,
            lease_seconds: self.seconds("leaseSeconds", config.max_lease)?,
        })
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
        };
        let sent = params(serde_json::to_value(&complete).unwrap());
        assert_eq!(sent.complete().unwrap(), complete);
        let fail = FailWorkitem {
            request_id: "r".into(),
            lease_id: "l".into(),
            status: FailStatus::Invalid,
            message: "bad".into(),
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
        let mut fail = lease.clone();
        fail["status"] = json!("DONE");
        fail["message"] = json!("m");
        assert_eq!(field(params(fail).fail().unwrap_err()), "status");
        assert_eq!(field(params(lease).fail().unwrap_err()), "message");
    }
}

//! `POST /api/v1/resources/procedures/<name>`: `K8sManager.addK8sWorkerProfile`
//! and the worker protocol (`docs/worker-protocol.md`):
//! `claimWorkitem`, `renewWorkitemLease`, `completeWorkitem`,
//! `failWorkitem`, `releaseWorkitem`.
//!
//! A claim with `waitSeconds` is a long-poll: it registers for the cluster's
//! wake-up *before* looking at the queue, so a workitem enqueued between the
//! look and the wait still wakes it; pickup latency is one notification.

use std::time::Duration;

use axum::Json;
use axum::extract::{Path, Request, State};
use serde_json::{Map, Value};
use tracing::Instrument;

use super::error::ApiError;
use super::extract::read_body;
use crate::auth::{Action, Caller};
use crate::lifecycle::{REPORTED_PROPERTIES, Status};
use crate::query::json_kind;
use crate::state::AppState;
use crate::store::resources::{self, DocTable};
use crate::store::workitems;

/// The procedure's named parameters.
struct Params(Map<String, Value>);

impl Params {
    fn string(&self, key: &str) -> Result<String, ApiError> {
        match self.0.get(key) {
            Some(Value::String(text)) if !text.is_empty() && text.len() <= 1024 => Ok(text.clone()),
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
    fn seconds(&self, key: &str, max: Duration) -> Result<Option<Duration>, ApiError> {
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
                Ok(Some(Duration::from_secs_f64(seconds)))
            }
            Some(other) => Err(ApiError::invalid(
                key,
                format!("must be a number of seconds, got {}", json_kind(other)),
            )),
        }
    }
}

/// Dispatches a procedure call.
pub async fn call(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
    request: Request,
) -> Result<Json<Value>, ApiError> {
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
    let value = match name.as_str() {
        "K8sManager.addK8sWorkerProfile" => {
            super::identity::add_worker_profile(&state, &caller).await?
        }
        "K8sManager.claimWorkitem" => claim(&state, &caller, &params).await?,
        "K8sManager.renewWorkitemLease" => renew(&state, &caller, &params).await?,
        "K8sManager.completeWorkitem" => complete(&state, &caller, &params).await?,
        "K8sManager.failWorkitem" => fail(&state, &caller, &params).await?,
        "K8sManager.releaseWorkitem" => release(&state, &caller, &params).await?,
        other => {
            return Err(ApiError::UnknownProcedure(
                other.chars().take(200).collect(),
            ));
        }
    };
    Ok(Json(value))
}

/// Claims the oldest eligible workitem of a cluster, waiting up to
/// `waitSeconds` for one; `null` when none came.
async fn claim(state: &AppState, caller: &Caller, params: &Params) -> Result<Value, ApiError> {
    caller.require(Action::WorkerProtocol)?;
    let cluster = params.string("clusterName")?;
    let owner = params
        .optional_string("workerId")?
        .unwrap_or_else(|| caller.username.clone());
    let lease = params
        .seconds("leaseSeconds", state.config.max_lease)?
        .filter(|lease| !lease.is_zero())
        .unwrap_or(state.config.default_lease);
    let wait = params
        .seconds("waitSeconds", state.config.max_claim_wait)?
        .unwrap_or(Duration::ZERO);
    let namespace = caller.namespace.clone();
    {
        let (namespace, name) = (namespace.clone(), cluster.clone());
        let exists = state
            .store
            .transaction(move |tx| {
                Ok::<_, ApiError>(
                    resources::get_doc(tx, DocTable::Clusters, &namespace, &name)?.is_some(),
                )
            })
            .await?;
        if !exists {
            return Err(ApiError::not_found("k8sclusters", "name", cluster));
        }
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
                state
                    .store
                    .transaction(move |tx| {
                        workitems::claim(tx, &namespace, &cluster, &owner, lease_ms)
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
                return Ok(claim.body);
            }
            if *shutdown.borrow() {
                return Ok(Value::Null);
            }
            tokio::select! {
                _ = &mut notified => {}
                _ = tokio::time::sleep_until(deadline) => return Ok(Value::Null),
                _ = shutdown.changed() => return Ok(Value::Null),
            }
        }
    }
    .instrument(span)
    .await
}

fn lease_params(params: &Params) -> Result<(String, String), ApiError> {
    Ok((params.string("requestId")?, params.string("leaseId")?))
}

async fn renew(state: &AppState, caller: &Caller, params: &Params) -> Result<Value, ApiError> {
    caller.require(Action::WorkerProtocol)?;
    let (request_id, lease_id) = lease_params(params)?;
    let lease = params
        .seconds("leaseSeconds", state.config.max_lease)?
        .filter(|lease| !lease.is_zero())
        .unwrap_or(state.config.default_lease);
    let namespace = caller.namespace.clone();
    let lease_ms = lease.as_millis() as i64;
    let renewed = state
        .store
        .transaction(move |tx| workitems::renew(tx, &namespace, &request_id, &lease_id, lease_ms))
        .await?;
    Ok(renewed)
}

async fn complete(state: &AppState, caller: &Caller, params: &Params) -> Result<Value, ApiError> {
    caller.require(Action::WorkerProtocol)?;
    let (request_id, lease_id) = lease_params(params)?;
    let report = match params.0.get("installation") {
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
        .find(|key| !REPORTED_PROPERTIES.contains(&key.as_str()))
    {
        return Err(ApiError::invalid(
            &format!("installation.{key}"),
            format!(
                "is not a reportable property ({})",
                REPORTED_PROPERTIES.join(", ")
            ),
        ));
    }
    let verify = state.config.verify_interval;
    let verify_ms = (!verify.is_zero()).then_some(verify.as_millis() as i64);
    let namespace = caller.namespace.clone();
    let result = state
        .store
        .transaction(move |tx| {
            workitems::complete(tx, &namespace, &request_id, &lease_id, &report, verify_ms)
        })
        .await?;
    tracing::info!(request_id = %result["requestId"], operation = %result["operation"], "workitem completed");
    Ok(result)
}

async fn fail(state: &AppState, caller: &Caller, params: &Params) -> Result<Value, ApiError> {
    caller.require(Action::WorkerProtocol)?;
    let (request_id, lease_id) = lease_params(params)?;
    let status = match params.optional_string("status")? {
        None => Status::Failed,
        Some(status) => Status::failure(&status)
            .ok_or_else(|| ApiError::invalid("status", "must be FAILED or INVALID"))?,
    };
    let message = params.string("message")?;
    let namespace = caller.namespace.clone();
    let result = state
        .store
        .transaction(move |tx| {
            workitems::fail(tx, &namespace, &request_id, &lease_id, status, &message)
        })
        .await?;
    tracing::warn!(request_id = %result["requestId"], status = %result["status"], "workitem failed");
    Ok(result)
}

async fn release(state: &AppState, caller: &Caller, params: &Params) -> Result<Value, ApiError> {
    caller.require(Action::WorkerProtocol)?;
    let (request_id, lease_id) = lease_params(params)?;
    let namespace = caller.namespace.clone();
    let row = state
        .store
        .transaction(move |tx| workitems::release(tx, &namespace, &request_id, &lease_id))
        .await?;
    state.wakeups.wake(&row.namespace, &row.cluster);
    Ok(row.to_doc())
}

//! `plan`: the live plan — the steps the planner would apply for a request
//! now, against what the namespace's executor observes, without applying
//! anything. It calls the planner's `Plan` over mutual TLS with a preview
//! client's certificate (`spiffe://k8sworker/preview`, `docs/tls.md`), which
//! may call Render and Plan and nothing else; the planner observes through
//! the executor with its own certificate.
//!
//! What only the control plane holds never reaches a preview: `@secrets`
//! values and documents' content are stand-ins ([`placeholders`]), so a
//! Secret made from them shows as an UPDATE the real deploy may not make.

use std::path::Path;

use anyhow::{Context as _, bail};
use k8sworker_core::owner::Tenant;
use k8sworker_core::plan::Operation;
use k8sworker_core::render::ClusterContext;
use k8sworker_core::validate::parse_and_validate;
use k8sworker_proto::convert;
use k8sworker_proto::v1 as pb;
use k8sworker_proto::v1::planner_client::PlannerClient;
use k8sworker_tls::{Identity, TlsArgs};
use serde_json::{Value, json};
use tonic::transport::Endpoint;

use crate::preview::placeholders;

/// What a live plan is asked for.
pub struct LivePlan<'a> {
    /// The deploy's `data` (`name`, `k8sNamespace`, `config`).
    pub data: &'a Value,
    /// The operation to plan: deploy, undeploy, shutdown or restart.
    pub operation: Operation,
    /// Whose objects are ours: `<vantiq-namespace>/<cluster>`.
    pub tenant: Tenant,
    /// The Ingress host of ports that name none.
    pub ingress_default_node: String,
    /// The planner, `https://host:port`.
    pub planner: &'a str,
    /// The preview client's `tls.crt`, `tls.key` and `ca.crt`.
    pub tls_dir: &'a Path,
}

/// The plan as rows: `{action, kind, name, reason, object?}` per step, the
/// plan's id, namespace and operation on each; Secret data masked by the
/// planner.
///
/// # Errors
/// An invalid request (every validation error), an operation that applies
/// no plan, certificates that cannot be read or are not a preview client's,
/// and the planner's refusal (its gRPC status: objects in the way, an
/// immutable field, missing references, no executor for the namespace).
pub async fn live_plan(asked: LivePlan<'_>) -> anyhow::Result<Vec<Value>> {
    if matches!(asked.operation, Operation::Verify | Operation::FetchLogs) {
        bail!("plan: --op must be deploy, undeploy, shutdown or restart");
    }
    let request = parse_and_validate(asked.data).map_err(|errors| {
        let errors: Vec<String> = errors.errors.iter().map(ToString::to_string).collect();
        anyhow::anyhow!("the deploy request is not valid: {}", errors.join("; "))
    })?;
    let tls = TlsArgs::dir(asked.tls_dir)
        .load(&Identity::Preview)
        .with_context(|| format!("the preview certificate in {}", asked.tls_dir.display()))?
        .context("--tls-dir: no certificate loaded")?;
    let endpoint = Endpoint::from_shared(asked.planner.to_owned())
        .with_context(|| format!("--planner `{}`", asked.planner))?;
    let mut planner = PlannerClient::new(k8sworker_tls::channel(
        endpoint,
        Some(&tls),
        Identity::Planner,
    ));
    let cluster = ClusterContext {
        cluster_name: asked.tenant.cluster.clone(),
        ingress_default_node: asked.ingress_default_node,
        tenant: None,
    };
    let response = planner
        .plan(pb::PlanRequest {
            installation: Some(convert::installation_to_pb(&request)),
            cluster: Some(convert::cluster_to_pb(&cluster)),
            ancillaries: Some(convert::ancillaries_to_pb(&placeholders(&request))),
            operation: convert::operation_to_pb(asked.operation) as i32,
            observed: Vec::new(),
            tenant: Some(convert::tenant_to_pb(&asked.tenant)),
            live: true,
        })
        .await
        .map_err(|status| {
            anyhow::anyhow!(
                "the planner refused the plan ({:?}): {}",
                status.code(),
                status.message()
            )
        })?
        .into_inner();
    let plan = response
        .plan
        .context("the planner answered without a plan")?;
    Ok(rows(&plan))
}

/// One row per step of `plan`.
fn rows(plan: &pb::Plan) -> Vec<Value> {
    plan.steps
        .iter()
        .map(|step| {
            let component = step.component.clone().unwrap_or_default();
            let mut row = json!({
                "plan": plan.id,
                "namespace": plan.namespace,
                "action": step.action().as_str_name().trim_start_matches("ACTION_"),
                "kind": component.kind,
                "name": component.name,
                "reason": step.reason,
            });
            if let Ok(object) = serde_json::from_slice::<Value>(&step.object_json) {
                row["object"] = object;
            }
            row
        })
        .collect()
}

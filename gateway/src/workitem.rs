//! A claimed workitem, as the control plane hands it over, and the planner
//! request it becomes.
//!
//! ```text
//! ClaimedWorkitem ──Workitem::from_claim──▶ Workitem ──task──▶ (Operation, ExecuteRequest)
//!                                                        └──▶ Err(message): INVALID
//! ```
//!
//! A deploy carries its whole request (`name`, `k8sNamespace`, `config`) and
//! is validated here with the planner's own rules, so a bad request fails as
//! `INVALID` before anything is asked of the cluster. Every other operation
//! carries only the installation's name and namespace; its config is the
//! installation record's `configSpec` (needed for `restart`'s replica count
//! and `verify`'s render). No I/O in this module.

use std::time::{Duration, SystemTime};

use k8sworker_client::protocol::ClaimedWorkitem;
use k8sworker_core::model::InstallationRequest;
use k8sworker_core::plan::Operation;
use k8sworker_core::validate;
use k8sworker_proto::convert;
use k8sworker_proto::v1 as pb;
use serde_json::{Value, json};

/// Why a claim body could not be read: a control plane bug or an
/// incompatible server, never the user's fault.
#[derive(Debug, thiserror::Error)]
pub enum ClaimError {
    /// A property the worker needs is missing or empty.
    #[error("the claim has no `{0}`")]
    Missing(&'static str),
    /// A document of the ancillaries is not base64.
    #[error(transparent)]
    DocumentEncoding(#[from] k8sworker_client::protocol::DocumentEncodingError),
}

/// Content the control plane resolved for the workitem. Never logged: its
/// `Debug` shows names only.
#[derive(Clone, Default)]
pub struct Ancillaries(pub pb::Ancillaries);

impl std::fmt::Debug for Ancillaries {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ancillaries")
            .field("secrets", &self.0.secrets.keys().collect::<Vec<_>>())
            .field("documents", &self.0.documents.keys().collect::<Vec<_>>())
            .finish()
    }
}

/// One claimed workitem.
#[derive(Debug, Clone)]
pub struct Workitem {
    /// The workitem's id.
    pub request_id: String,
    /// The lease the claim granted; every later call names it.
    pub lease_id: String,
    /// The lease's length as granted, when the server says.
    pub lease: Option<Duration>,
    /// Vantiq's operation name (`deploy`, `undeploy`, ...).
    pub operation: String,
    /// The installation's name.
    pub installation: String,
    /// The workitem's `request`.
    pub request: Value,
    /// The installation record before this operation, when there is one.
    pub record: Option<Value>,
    /// The cluster, as the planner takes it.
    pub cluster: pb::ClusterContext,
    /// The resolved secrets and documents.
    pub ancillaries: Ancillaries,
    /// W3C trace context of the request that created the workitem.
    pub traceparent: Option<String>,
    /// How many times it has been claimed, this claim included.
    pub attempts: u32,
    /// When the workitem was created, per the server.
    pub created_at: Option<SystemTime>,
    /// The Vantiq user who asked for it.
    pub requested_by: Option<String>,
}

/// What the planner is asked to do for a workitem.
#[derive(Debug, Clone)]
pub struct Task {
    /// The operation.
    pub operation: Operation,
    /// The planner's request.
    pub request: pb::ExecuteRequest,
    /// fetchLogs: where the log documents go instead of `<cluster>/<installation>`.
    pub document_group: Option<String>,
}

fn text(value: &Value, key: &str) -> Option<String> {
    value
        .get(key)
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
}

impl Workitem {
    /// Reads what a successful `K8sManager.claimWorkitem` handed over.
    pub fn from_claim(claim: &ClaimedWorkitem) -> Result<Workitem, ClaimError> {
        let workitem = &claim.workitem;
        let present = |text: &str| (!text.is_empty()).then(|| text.to_owned());
        let request_id = present(&workitem.request_id).ok_or(ClaimError::Missing("requestId"))?;
        let lease_id = present(&claim.lease_id).ok_or(ClaimError::Missing("leaseId"))?;
        let operation = present(&workitem.operation).ok_or(ClaimError::Missing("operation"))?;
        let request = workitem.request.clone();
        let installation = workitem
            .installation_name
            .as_deref()
            .and_then(present)
            .or_else(|| text(&request, "name"))
            .ok_or(ClaimError::Missing("installationName"))?;
        let cluster = pb::ClusterContext {
            cluster_name: present(&claim.cluster.name)
                .or_else(|| workitem.cluster_name.as_deref().and_then(present))
                .ok_or(ClaimError::Missing("clusterName"))?,
            ingress_default_node: claim
                .cluster
                .ingress_default_node
                .clone()
                .unwrap_or_default(),
        };
        let ancillaries = pb::Ancillaries {
            secrets: claim.ancillaries.secrets.clone().into_iter().collect(),
            documents: claim.ancillaries.decode_documents()?.into_iter().collect(),
        };
        Ok(Workitem {
            request_id,
            lease_id,
            lease: claim.lease(),
            operation,
            installation,
            request,
            record: claim.installation.clone().filter(Value::is_object),
            cluster,
            ancillaries: Ancillaries(ancillaries),
            traceparent: workitem.traceparent.as_deref().and_then(present),
            attempts: workitem.attempts.unwrap_or(1),
            created_at: workitem
                .created_at
                .as_deref()
                .and_then(|t| humantime::parse_rfc3339_weak(t).ok()),
            requested_by: workitem.requested_by.clone(),
        })
    }

    /// The planner request for this workitem, or why it is invalid (the
    /// message for an `INVALID` workitem).
    pub fn task(&self) -> Result<Task, String> {
        let operation = Operation::parse(&self.operation).ok_or_else(|| {
            format!(
                "unknown operation `{}`; this worker handles deploy, undeploy, shutdown, restart, verify and fetchLogs",
                self.operation
            )
        })?;
        let installation = match operation {
            Operation::Deploy => validate::parse_and_validate(&self.request).map_err(|errors| {
                format!(
                    "The deploy request is not valid: {}",
                    errors
                        .errors
                        .iter()
                        .map(ToString::to_string)
                        .collect::<Vec<_>>()
                        .join("; ")
                )
            })?,
            _ => self.recorded_installation()?,
        };
        let pod_name = (operation == Operation::FetchLogs)
            .then(|| text(&self.request, "podName"))
            .flatten();
        let document_group = (operation == Operation::FetchLogs)
            .then(|| text(&self.request, "documentGroup"))
            .flatten();
        Ok(Task {
            operation,
            document_group,
            request: pb::ExecuteRequest {
                workitem_id: self.request_id.clone(),
                installation: Some(convert::installation_to_pb(&installation)),
                cluster: Some(self.cluster.clone()),
                ancillaries: Some(self.ancillaries.0.clone()),
                operation: convert::operation_to_pb(operation) as i32,
                pod_name,
                // Filled by the gateway from its own configuration.
                tenant: None,
            },
        })
    }

    /// The installation an operation other than deploy works on: name and
    /// namespace from the request (else the record), config from the record.
    fn recorded_installation(&self) -> Result<InstallationRequest, String> {
        let record = self.record.clone().unwrap_or(Value::Null);
        let namespace = text(&self.request, "k8sNamespace")
            .or_else(|| text(&record, "k8sNamespace"))
            .ok_or_else(|| {
                format!(
                    "installation `{}` has no k8sNamespace; it was never deployed",
                    self.installation
                )
            })?;
        let config = record
            .get("configSpec")
            .filter(|c| c.is_array())
            .cloned()
            .unwrap_or_else(|| json!([]));
        let data = json!({"name": self.installation, "k8sNamespace": namespace, "config": config});
        // The recorded config was valid when it was deployed; should it no
        // longer read, the operation still has its name and namespace, and
        // the planner decides whether that is enough.
        Ok(
            InstallationRequest::from_json(&data).unwrap_or(InstallationRequest {
                name: self.installation.clone(),
                k8s_namespace: namespace,
                config: Vec::new(),
            }),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pretty_assertions::assert_eq;

    /// A claim as the control plane answers it.
    fn claim(operation: &str, request: Value, record: Value) -> ClaimedWorkitem {
        serde_json::from_value(claim_json(operation, request, record)).unwrap()
    }

    fn claim_json(operation: &str, request: Value, record: Value) -> Value {
        json!({
            "requestId": "r-1",
            "leaseId": "l-1",
            "leaseSeconds": 60,
            "operation": operation,
            "installationName": "jdbc",
            "clusterName": "c1",
            "request": request,
            "installation": record,
            "cluster": {"name": "c1", "ingressDefaultNode": "vantiq-c1-node"},
            "ancillaries": {"secrets": {"dbpass": "s3cret"}, "documents": {"conf.txt": "aGVsbG8="}},
            "traceparent": "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "attempts": 2,
            "createdAt": "2026-01-02T03:04:05.678Z",
        })
    }

    fn deploy_data() -> Value {
        json!({"name": "jdbc", "k8sNamespace": "team-a", "config": [
            {"type": "image", "name": "registry.example.com/jdbc:1", "replicaCount": 2},
            {"type": "environmentVariable", "name": "PASS", "value": "@secrets(dbpass)"},
        ]})
    }

    #[test]
    fn a_claim_is_read_with_its_lease_trace_and_ancillaries() {
        let item = Workitem::from_claim(&claim("deploy", deploy_data(), Value::Null)).unwrap();
        assert_eq!(item.request_id, "r-1");
        assert_eq!(item.lease_id, "l-1");
        assert_eq!(item.lease, Some(Duration::from_secs(60)));
        assert_eq!(item.installation, "jdbc");
        assert_eq!(item.cluster.ingress_default_node, "vantiq-c1-node");
        assert_eq!(item.attempts, 2);
        assert!(item.record.is_none());
        assert_eq!(item.ancillaries.0.documents["conf.txt"], b"hello");
        assert!(item.traceparent.as_deref().unwrap().starts_with("00-4bf9"));
        assert!(item.created_at.is_some());
        let debug = format!("{item:?}");
        assert!(
            !debug.contains("s3cret"),
            "secrets stay out of Debug: {debug}"
        );
    }

    #[test]
    fn a_claim_without_a_lease_is_refused() {
        let mut body = claim_json("deploy", deploy_data(), Value::Null);
        body["leaseId"] = json!("");
        let body: ClaimedWorkitem = serde_json::from_value(body).unwrap();
        assert!(matches!(
            Workitem::from_claim(&body),
            Err(ClaimError::Missing("leaseId"))
        ));
    }

    #[test]
    fn a_document_that_is_not_base64_is_refused_by_name() {
        let mut body = claim_json("deploy", deploy_data(), Value::Null);
        body["ancillaries"]["documents"]["conf.txt"] = json!("%%%");
        let body: ClaimedWorkitem = serde_json::from_value(body).unwrap();
        let error = Workitem::from_claim(&body).unwrap_err();
        assert!(error.to_string().contains("conf.txt"), "{error}");
    }

    #[test]
    fn a_deploy_becomes_an_execute_request() {
        let item = Workitem::from_claim(&claim("deploy", deploy_data(), Value::Null)).unwrap();
        let task = item.task().unwrap();
        assert_eq!(task.operation, Operation::Deploy);
        let request = task.request;
        assert_eq!(request.workitem_id, "r-1");
        assert_eq!(request.operation, pb::Operation::Deploy as i32);
        let installation = request.installation.unwrap();
        assert_eq!(installation.name, "jdbc");
        assert_eq!(installation.k8s_namespace, "team-a");
        assert_eq!(installation.config.len(), 2);
        assert_eq!(request.ancillaries.unwrap().secrets["dbpass"], "s3cret");
    }

    #[test]
    fn a_bad_deploy_is_invalid_naming_every_field() {
        let data = json!({"name": "jdbc", "k8sNamespace": "team-a", "config": [
            {"type": "image", "name": "registry.example.com/jdbc:1"},
            {"type": "inboundPort", "port": 70000, "protocol": "TCP"},
        ]});
        let item = Workitem::from_claim(&claim("deploy", data, Value::Null)).unwrap();
        let message = item.task().unwrap_err();
        assert!(
            message.starts_with("The deploy request is not valid: "),
            "{message}"
        );
        assert!(message.contains("config[1]"), "{message}");
        assert!(message.contains("port"), "{message}");
    }

    #[test]
    fn other_operations_take_the_config_from_the_record() {
        let record = json!({"name": "jdbc", "k8sNamespace": "team-a", "configSpec": deploy_data()["config"]});
        let request = json!({"name": "jdbc", "k8sNamespace": "team-a"});
        let item = Workitem::from_claim(&claim("restart", request, record)).unwrap();
        let task = item.task().unwrap();
        assert_eq!(task.operation, Operation::Restart);
        let installation = task.request.installation.unwrap();
        assert_eq!(installation.k8s_namespace, "team-a");
        assert_eq!(installation.config.len(), 2, "replicaCount comes from here");
    }

    #[test]
    fn fetch_logs_carries_pod_and_document_group() {
        let request = json!({"name": "jdbc", "k8sNamespace": "team-a", "podName": "jdbc-1", "documentGroup": "logs/today"});
        let item = Workitem::from_claim(&claim("fetchLogs", request, Value::Null)).unwrap();
        let task = item.task().unwrap();
        assert_eq!(task.request.pod_name.as_deref(), Some("jdbc-1"));
        assert_eq!(task.document_group.as_deref(), Some("logs/today"));
    }

    #[test]
    fn unknown_operations_and_missing_namespaces_are_invalid() {
        let item = Workitem::from_claim(&claim("explode", json!({}), Value::Null)).unwrap();
        assert!(
            item.task()
                .unwrap_err()
                .contains("unknown operation `explode`")
        );
        let item =
            Workitem::from_claim(&claim("shutdown", json!({"name": "jdbc"}), Value::Null)).unwrap();
        assert!(item.task().unwrap_err().contains("no k8sNamespace"));
    }
}

//! The worker protocol's messages (`docs/worker-protocol.md`): the named
//! parameters of each `K8sManager.*` procedure and what it answers, the
//! workitem as a claim hands it over, the installation report a worker sends
//! on completion, and the server's version.
//!
//! ```text
//! ClaimWorkitem       {clusterName, workerId?, leaseSeconds?, waitSeconds?} → ClaimedWorkitem | null
//! RenewWorkitemLease  {requestId, leaseId, leaseSeconds?}                    → LeaseRenewal
//! RenewWorkitemLeases {leases: [{requestId, leaseId}], leaseSeconds?}        → LeaseRenewals
//! CompleteWorkitem    {requestId, leaseId, installation: InstallationReport} → Completion
//! FailWorkitem        {requestId, leaseId, status, message}                  → K8sWorkitem
//! ReleaseWorkitem     {requestId, leaseId}                                   → K8sWorkitem
//! GET /api/v1/version                                                        → ServerVersion
//! ```
//!
//! Every procedure is `POST /api/v1/resources/procedures/<NAME>` with the
//! parameters as a JSON object ([`Procedure`] ties the two together).
//! Optional parameters are left out of the JSON when absent. Times are
//! RFC 3339 strings in UTC with milliseconds (`2026-01-01T10:00:00.000Z`);
//! lengths of time are numbers of seconds, written as integers when whole.

use std::collections::BTreeMap;
use std::time::Duration;

use base64::Engine as _;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// `K8sManager.claimWorkitem`.
pub const CLAIM_WORKITEM: &str = "K8sManager.claimWorkitem";
/// `K8sManager.renewWorkitemLease`.
pub const RENEW_WORKITEM_LEASE: &str = "K8sManager.renewWorkitemLease";
/// `K8sManager.renewWorkitemLeases`: every lease a worker holds in one
/// call (an extension of the worker protocol; a server without it answers
/// 404 "unknown procedure", and a worker renews one lease per call).
pub const RENEW_WORKITEM_LEASES: &str = "K8sManager.renewWorkitemLeases";
/// Most leases one `renewWorkitemLeases` call may name.
pub const MAX_LEASES_PER_RENEWAL: usize = 500;
/// `K8sManager.completeWorkitem`.
pub const COMPLETE_WORKITEM: &str = "K8sManager.completeWorkitem";
/// `K8sManager.failWorkitem`.
pub const FAIL_WORKITEM: &str = "K8sManager.failWorkitem";
/// `K8sManager.releaseWorkitem`.
pub const RELEASE_WORKITEM: &str = "K8sManager.releaseWorkitem";

/// The longest string parameter of a worker-protocol call (`failWorkitem`'s
/// `message` included) the control plane accepts, in bytes; a longer one is
/// refused with HTTP 400. A worker cuts a longer message to fit.
pub const MAX_PARAM_BYTES: usize = 1024;

/// The version of the worker protocol this crate speaks, as
/// [`ServerVersion::worker_protocol`] reports it.
pub const WORKER_PROTOCOL_VERSION: u32 = 1;

/// One procedure of the worker protocol: its parameters are `Self`, its
/// answer on success is [`Procedure::Answer`].
pub trait Procedure: Serialize {
    /// The procedure's full name, e.g. [`CLAIM_WORKITEM`].
    const NAME: &'static str;
    /// What a successful call answers (HTTP 200).
    type Answer: DeserializeOwned + Serialize;

    /// How long the server may hold the call before answering (a claim's
    /// long-poll wait); a client's timeout must exceed it. Zero for every
    /// other procedure.
    fn server_wait(&self) -> Duration {
        Duration::ZERO
    }

    /// The workitem the call is about, for errors (`None` for a claim).
    fn request_id(&self) -> Option<&str> {
        None
    }
}

/// Seconds as the protocol writes them: a JSON number, an integer when
/// whole (`60`, `0.3`), so an answer reads back exactly as it was sent.
mod seconds {
    use serde::{Deserialize, Deserializer, Serializer};

    /// Largest whole number of seconds written as an integer (beyond it an
    /// `f64` loses integer precision anyway).
    const EXACT: f64 = 9_007_199_254_740_992.0;

    pub fn serialize<S: Serializer>(value: &Option<f64>, serializer: S) -> Result<S::Ok, S::Error> {
        match value {
            Some(seconds) if seconds.fract() == 0.0 && (0.0..EXACT).contains(seconds) => {
                serializer.serialize_u64(*seconds as u64)
            }
            Some(seconds) => serializer.serialize_f64(*seconds),
            None => serializer.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<Option<f64>, D::Error> {
        Option::<f64>::deserialize(deserializer)
    }
}

/// `K8sManager.claimWorkitem`: take the oldest claimable workitem of a
/// cluster under a lease, waiting up to `waitSeconds` for one.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ClaimWorkitem {
    /// The K8sCluster this worker serves (`CLUSTER_NAME`).
    pub cluster_name: String,
    /// Recorded as the lease's `leaseOwner`; the server defaults it to the
    /// token's user.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub worker_id: Option<String>,
    /// Lease length in seconds, `0 < s ≤` the server's `--max-lease`
    /// (15 min by default); the server's `--default-lease` (60 s) when absent.
    #[serde(default, skip_serializing_if = "Option::is_none", with = "seconds")]
    pub lease_seconds: Option<f64>,
    /// Long-poll wait in seconds, `0 ≤ s ≤` the server's `--max-claim-wait`
    /// (30 s); 0 (answer at once) when absent.
    #[serde(default, skip_serializing_if = "Option::is_none", with = "seconds")]
    pub wait_seconds: Option<f64>,
}

impl Procedure for ClaimWorkitem {
    const NAME: &'static str = CLAIM_WORKITEM;
    /// `None` (JSON `null`) when nothing was claimable within the wait.
    type Answer = Option<ClaimedWorkitem>;

    fn server_wait(&self) -> Duration {
        self.wait_seconds
            .filter(|s| s.is_finite() && *s > 0.0)
            .map_or(Duration::ZERO, Duration::from_secs_f64)
    }
}

/// A workitem's status (Vantiq's K8sWorkitem `status`). A completed workitem
/// has none: it is deleted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum WorkitemStatus {
    /// Queued, waiting for a worker.
    Requested,
    /// Claimed under a lease.
    Pending,
    /// The operation failed; kept for people to see, never claimed again.
    Failed,
    /// The request itself was bad; kept, never claimed again.
    Invalid,
    /// Cancelled while leased (*ours*): the worker must not start it; one
    /// already applying finishes and reports its outcome, which the server
    /// records. It goes away with that report, a release, or the lease's end.
    Cancelled,
}

/// A K8sWorkitem as the control plane shows it (`GET k8sworkitems`, the
/// answers of fail and release, the body of a claim). Secrets never appear
/// here; only a claim adds them, in [`ClaimedWorkitem::ancillaries`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct K8sWorkitem {
    /// The instance id; the same as `requestId`.
    #[serde(rename = "_id", default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// The workitem's id.
    pub request_id: String,
    /// The K8sCluster it is for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster_name: Option<String>,
    /// Vantiq's operation name: `deploy`, `undeploy`, `shutdown`, `restart`,
    /// `fetchLogs` or `verify`. Kept as text: a worker fails an operation it
    /// does not know as `INVALID` rather than refusing the claim.
    pub operation: String,
    /// Its status; absent only from servers that do not say.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<WorkitemStatus>,
    /// For `deploy`, Vantiq's deploy `data` as validated (`name`,
    /// `k8sNamespace`, `config`); for the other operations `{"name",
    /// "k8sNamespace"}`, plus `podName`/`documentGroup` for `fetchLogs`.
    #[serde(default)]
    pub request: Value,
    /// Who asked for it (`system` for a scheduled `verify`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requested_by: Option<String>,
    /// The K8sInstallation it works on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub installation_name: Option<String>,
    /// When it was requested (RFC 3339, server clock).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_at: Option<String>,
    /// When it last changed (RFC 3339, server clock).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timestamp: Option<String>,
    /// How many times it has been claimed, the current claim included.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attempts: Option<u32>,
    /// Still `REQUESTED` after the server's `--delayed-after`.
    #[serde(default)]
    pub delayed: bool,
    /// Why it failed (`FAILED`, `INVALID`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// W3C trace context of the request that created it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub traceparent: Option<String>,
    /// The lease holder's `workerId` (`PENDING` only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lease_owner: Option<String>,
    /// When the lease runs out (`PENDING` only; RFC 3339, server clock).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lease_expires_at: Option<String>,
    /// The Vantiq namespace it belongs to.
    #[serde(
        rename = "ars_namespace",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub namespace: Option<String>,
    /// Any other property the server sends (kept, so a record reads back
    /// as it was written).
    #[serde(flatten)]
    pub other: Map<String, Value>,
}

/// The cluster a claimed workitem is for, with what rendering needs of it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ClusterContext {
    /// The K8sCluster's name.
    #[serde(default)]
    pub name: String,
    /// Host of the Ingress of an `inboundPort` entry without `host`; `null`
    /// when the cluster has none.
    #[serde(default)]
    pub ingress_default_node: Option<String>,
}

/// Content the control plane resolved for a claimed workitem, visible only
/// to worker tokens. Its `Debug` shows names, never values.
#[derive(Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Ancillaries {
    /// Every `@secrets(NAME)` of the effective config: name → value.
    #[serde(default)]
    pub secrets: BTreeMap<String, String>,
    /// Every `file` entry's `resourceName` (with `resourceType: documents`)
    /// → the document's bytes, base64 (standard alphabet, padded).
    #[serde(default)]
    pub documents: BTreeMap<String, String>,
}

impl std::fmt::Debug for Ancillaries {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ancillaries")
            .field("secrets", &self.secrets.keys().collect::<Vec<_>>())
            .field("documents", &self.documents.keys().collect::<Vec<_>>())
            .finish()
    }
}

/// A document of [`Ancillaries::documents`] whose content is not base64.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DocumentEncodingError {
    /// The document's name.
    pub name: String,
}

impl std::fmt::Display for DocumentEncodingError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "the claim's `ancillaries.documents.{}` is not base64",
            self.name
        )
    }
}

impl std::error::Error for DocumentEncodingError {}

impl Ancillaries {
    /// Encodes a document's bytes as the protocol carries them.
    pub fn encode_document(content: &[u8]) -> String {
        base64::engine::general_purpose::STANDARD.encode(content)
    }

    /// Every document's bytes, by name; the first document that is not
    /// base64 is an error naming it.
    pub fn decode_documents(&self) -> Result<BTreeMap<String, Vec<u8>>, DocumentEncodingError> {
        self.documents
            .iter()
            .map(|(name, encoded)| {
                base64::engine::general_purpose::STANDARD
                    .decode(encoded)
                    .map(|content| (name.clone(), content))
                    .map_err(|_| DocumentEncodingError { name: name.clone() })
            })
            .collect()
    }
}

/// What a successful claim hands the worker: the workitem, its lease, the
/// cluster, the installation record and the ancillaries.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ClaimedWorkitem {
    /// The workitem, now `PENDING` with `leaseOwner` and `leaseExpiresAt`.
    #[serde(flatten)]
    pub workitem: K8sWorkitem,
    /// The lease; every later call about the workitem names it.
    pub lease_id: String,
    /// The lease's length in seconds as granted.
    #[serde(default, skip_serializing_if = "Option::is_none", with = "seconds")]
    pub lease_seconds: Option<f64>,
    /// The cluster, with its `ingressDefaultNode`.
    #[serde(default)]
    pub cluster: ClusterContext,
    /// The current K8sInstallation record; `null` for a first deploy. For
    /// every operation but `deploy` its `configSpec` is the config to render.
    #[serde(default)]
    pub installation: Option<Value>,
    /// Resolved secrets and documents. Never log them.
    #[serde(default)]
    pub ancillaries: Ancillaries,
}

impl ClaimedWorkitem {
    /// The lease's length as granted, when the server says and it is positive.
    pub fn lease(&self) -> Option<Duration> {
        self.lease_seconds
            .filter(|s| s.is_finite() && *s > 0.0)
            .map(Duration::from_secs_f64)
    }
}

/// `K8sManager.renewWorkitemLease`: extend a held lease to now + `leaseSeconds`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RenewWorkitemLease {
    /// The workitem.
    pub request_id: String,
    /// The lease its claim granted.
    pub lease_id: String,
    /// The new lease length in seconds; the server's `--default-lease` when absent.
    #[serde(default, skip_serializing_if = "Option::is_none", with = "seconds")]
    pub lease_seconds: Option<f64>,
}

impl Procedure for RenewWorkitemLease {
    const NAME: &'static str = RENEW_WORKITEM_LEASE;
    type Answer = LeaseRenewal;

    fn request_id(&self) -> Option<&str> {
        Some(&self.request_id)
    }
}

/// `K8sManager.renewWorkitemLeases`: extend every named lease to now +
/// `leaseSeconds`, in one transaction. Each lease's fate is answered on its
/// own ([`LeaseRenewals`]): one lost lease does not fail the others.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RenewWorkitemLeases {
    /// The leases, 1 to [`MAX_LEASES_PER_RENEWAL`].
    pub leases: Vec<HeldLease>,
    /// The new lease length in seconds, for each; the server's
    /// `--default-lease` when absent.
    #[serde(default, skip_serializing_if = "Option::is_none", with = "seconds")]
    pub lease_seconds: Option<f64>,
}

impl Procedure for RenewWorkitemLeases {
    const NAME: &'static str = RENEW_WORKITEM_LEASES;
    type Answer = LeaseRenewals;
}

/// A lease a worker holds: the workitem and the lease its claim granted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HeldLease {
    /// The workitem.
    pub request_id: String,
    /// The lease its claim granted.
    pub lease_id: String,
}

/// What `renewWorkitemLeases` answers: one entry per lease asked about, in
/// the order asked.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LeaseRenewals {
    /// Each lease's fate.
    pub leases: Vec<BatchRenewal>,
}

/// One lease's fate in a `renewWorkitemLeases` call.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BatchRenewal {
    /// The workitem.
    pub request_id: String,
    /// The lease asked about.
    pub lease_id: String,
    /// What became of it.
    pub outcome: RenewalOutcome,
    /// The new expiry (RFC 3339, server clock), for `renewed` and `cancelled`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lease_expires_at: Option<String>,
}

/// One lease's fate, as `renewWorkitemLease`'s answers say it for one
/// lease: 200, 410, 409, 404.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RenewalOutcome {
    /// Extended.
    Renewed,
    /// Extended, but the workitem was cancelled: do not start it.
    Cancelled,
    /// Not held under this lease any more (expired and re-claimed,
    /// released, failed): stop working on it.
    Lost,
    /// The workitem no longer exists (cancelled and dropped, or completed).
    Gone,
}

/// What `renewWorkitemLease` answers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LeaseRenewal {
    /// The workitem.
    pub request_id: String,
    /// The lease, unchanged.
    pub lease_id: String,
    /// The lease's length in seconds.
    #[serde(default, skip_serializing_if = "Option::is_none", with = "seconds")]
    pub lease_seconds: Option<f64>,
    /// The new expiry (RFC 3339, server clock).
    pub lease_expires_at: String,
}

/// An installation's `installationStatus`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum InstallationStatus {
    /// Deployed and ready.
    Running,
    /// Scaled to zero.
    Stopped,
    /// Components missing or altered (found by `verify`).
    Damaged,
    /// The last operation failed.
    Failed,
}

impl InstallationStatus {
    /// The protocol's name (`RUNNING`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            InstallationStatus::Running => "RUNNING",
            InstallationStatus::Stopped => "STOPPED",
            InstallationStatus::Damaged => "DAMAGED",
            InstallationStatus::Failed => "FAILED",
        }
    }
}

/// The K8sInstallation properties a worker reports when it completes a
/// workitem: what it observed in the cluster. The control plane adds what it
/// knows itself (`configSpec`, `installationDate`, `installedBy`, ...) in the
/// same transaction; any property outside [`InstallationReport::PROPERTIES`]
/// is refused (400).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct InstallationReport {
    /// The status; the server derives it from the operation when absent
    /// (`RUNNING` after deploy and restart, `STOPPED` after shutdown).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub installation_status: Option<InstallationStatus>,
    /// A sentence about the installation's state (`Running: 2/2 replicas
    /// ready`, or the drift `verify` found).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub k8s_state: Option<String>,
    /// The StatefulSet's desired replicas.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replica_count: Option<i32>,
    /// Free-form details (namespace, StatefulSet, the last plan, replicas,
    /// drift; `docs/gateway.md` lists them).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub k8s_installation_info: Option<Map<String, Value>>,
    /// The StatefulSet's UID.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub k8s_installation_identifier: Option<String>,
    /// Names of the installation's Services, sorted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub k8s_associated_services: Option<Vec<String>>,
    /// Names of its Ingresses, sorted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub k8s_associated_ingresses: Option<Vec<String>>,
    /// Names of its ConfigMaps, sorted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub k8s_associated_config_maps: Option<Vec<String>>,
    /// Names of its Secrets, sorted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub k8s_associated_secrets: Option<Vec<String>>,
}

impl InstallationReport {
    /// The properties a worker may report, in Vantiq's spelling.
    pub const PROPERTIES: &'static [&'static str] = &[
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

    /// The report as a JSON object (only the properties that are set).
    pub fn to_map(&self) -> Map<String, Value> {
        match serde_json::to_value(self) {
            Ok(Value::Object(map)) => map,
            _ => unreachable!("a struct of JSON-representable fields is a JSON object"),
        }
    }
}

/// `K8sManager.completeWorkitem`: the operation succeeded. The server writes
/// the installation record and deletes the workitem in one transaction.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CompleteWorkitem {
    /// The workitem.
    pub request_id: String,
    /// The lease its claim granted.
    pub lease_id: String,
    /// What the worker observed.
    #[serde(default)]
    pub installation: InstallationReport,
    /// The plan's steps as carried out, for the operation history
    /// (`k8soperations`); optional, so a worker that does not send them is
    /// still accepted (the record then has none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub steps: Option<Vec<PlanStep>>,
    /// The W3C trace id (32 lowercase hex digits) of the trace the worker
    /// carried the operation out in; optional (the record then keeps the
    /// trace id of the workitem's `traceparent`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trace_id: Option<String>,
}

/// One step of the plan an operation carried out, as the operation history
/// records it (`k8soperations`' `steps`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PlanStep {
    /// `create`, `update`, `delete`, `scale` or `noop`.
    pub action: String,
    /// The Kubernetes kind (`StatefulSet`, `ConfigMap`, …).
    pub kind: String,
    /// The object's name.
    pub name: String,
    /// Why the step exists, for a person reading the plan.
    #[serde(default)]
    pub reason: String,
}

/// The most steps a completion or failure may carry
/// ([`CompleteWorkitem::steps`], [`FailWorkitem::steps`]); an
/// installation's plan has one step per object, far fewer.
pub const MAX_PLAN_STEPS: usize = 1000;

impl Procedure for CompleteWorkitem {
    const NAME: &'static str = COMPLETE_WORKITEM;
    type Answer = Completion;

    fn request_id(&self) -> Option<&str> {
        Some(&self.request_id)
    }
}

/// What `completeWorkitem` answers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Completion {
    /// The completed (now deleted) workitem.
    pub request_id: String,
    /// Its operation.
    pub operation: String,
    /// The K8sInstallation record afterwards; `null` after an undeploy.
    #[serde(default)]
    pub installation: Option<Value>,
}

/// How a failed workitem is marked.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum FailStatus {
    /// The operation failed; the installation is marked `FAILED`.
    #[default]
    Failed,
    /// The request itself is wrong; nothing was applied.
    Invalid,
}

impl FailStatus {
    /// The protocol's name: `FAILED` or `INVALID`.
    pub fn as_str(self) -> &'static str {
        match self {
            FailStatus::Failed => "FAILED",
            FailStatus::Invalid => "INVALID",
        }
    }

    /// The status named `name` (`FAILED`, `INVALID`), if it is one.
    pub fn parse(name: &str) -> Option<FailStatus> {
        match name {
            "FAILED" => Some(FailStatus::Failed),
            "INVALID" => Some(FailStatus::Invalid),
            _ => None,
        }
    }
}

/// `K8sManager.failWorkitem`: the operation failed (or its request was bad).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FailWorkitem {
    /// The workitem.
    pub request_id: String,
    /// The lease its claim granted.
    pub lease_id: String,
    /// `FAILED` (the default) or `INVALID`.
    #[serde(default)]
    pub status: FailStatus,
    /// What failed and where (e.g. the pod and the reason); required.
    pub message: String,
    /// The steps of the plan that failed, when there was one; optional, as
    /// for [`CompleteWorkitem::steps`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub steps: Option<Vec<PlanStep>>,
    /// The W3C trace id of the attempt; optional, as for
    /// [`CompleteWorkitem::trace_id`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trace_id: Option<String>,
}

impl Procedure for FailWorkitem {
    const NAME: &'static str = FAIL_WORKITEM;
    /// The workitem, now `FAILED` or `INVALID` with the message.
    type Answer = K8sWorkitem;

    fn request_id(&self) -> Option<&str> {
        Some(&self.request_id)
    }
}

/// `K8sManager.releaseWorkitem`: give the workitem back to the queue
/// (`REQUESTED`), e.g. for a worker shutting down.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ReleaseWorkitem {
    /// The workitem.
    pub request_id: String,
    /// The lease its claim granted.
    pub lease_id: String,
}

impl Procedure for ReleaseWorkitem {
    const NAME: &'static str = RELEASE_WORKITEM;
    /// The workitem, `REQUESTED` again.
    type Answer = K8sWorkitem;

    fn request_id(&self) -> Option<&str> {
        Some(&self.request_id)
    }
}

/// `GET /api/v1/version`: what the server is and which worker protocol it
/// speaks. Every field is optional for a client: a server that does not say
/// is asked nothing of.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ServerVersion {
    /// The server's name, e.g. `k8sworker-controlplane`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Its version.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// The worker protocol version ([`WORKER_PROTOCOL_VERSION`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub worker_protocol: Option<u32>,
    /// Whether claims can wait (`waitSeconds`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub long_poll: Option<bool>,
    /// The longest `waitSeconds` the server honours.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_claim_wait_seconds: Option<u64>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use pretty_assertions::assert_eq;
    use serde_json::json;

    /// Reads `json` as `T` and writes it back: the same JSON, value for value.
    fn round_trip<T: DeserializeOwned + Serialize>(json: Value) -> T {
        let typed: T = serde_json::from_value(json.clone()).expect("the protocol's JSON reads");
        assert_eq!(serde_json::to_value(&typed).unwrap(), json);
        typed
    }

    /// A claim's answer exactly as the control plane writes it.
    fn claimed_json() -> Value {
        json!({
            "_id": "6f0c",
            "requestId": "6f0c",
            "clusterName": "c1",
            "operation": "deploy",
            "timestamp": "2026-01-01T10:00:02.000Z",
            "status": "PENDING",
            "request": {"name": "web", "k8sNamespace": "apps", "config": [
                {"type": "image", "name": "registry.example.com/web:1"},
                {"type": "environmentVariable", "name": "PASS", "value": "@secrets(db-pass)"},
            ]},
            "requestedBy": "admin",
            "installationName": "web",
            "createdAt": "2026-01-01T10:00:00.000Z",
            "attempts": 1,
            "delayed": false,
            "ars_namespace": "k8sworker",
            "traceparent": "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "leaseOwner": "gw-1",
            "leaseExpiresAt": "2026-01-01T10:01:02.000Z",
            "leaseId": "2d3e",
            "leaseSeconds": 60,
            "ancillaries": {
                "secrets": {"db-pass": "hunter2"},
                "documents": {"conf/app.properties": "a2V5PXZhbHVlCg=="}
            },
            "installation": null,
            "cluster": {"name": "c1", "ingressDefaultNode": "vantiq-c1-node"},
        })
    }

    #[test]
    fn a_claim_answer_reads_and_writes_back_exactly() {
        let claimed: ClaimedWorkitem = round_trip(claimed_json());
        assert_eq!(claimed.workitem.request_id, "6f0c");
        assert_eq!(claimed.workitem.status, Some(WorkitemStatus::Pending));
        assert_eq!(claimed.workitem.attempts, Some(1));
        assert_eq!(claimed.workitem.namespace.as_deref(), Some("k8sworker"));
        assert!(claimed.workitem.other.is_empty(), "every field is named");
        assert_eq!(claimed.lease_id, "2d3e");
        assert_eq!(claimed.lease(), Some(Duration::from_secs(60)));
        assert_eq!(
            claimed.cluster.ingress_default_node.as_deref(),
            Some("vantiq-c1-node")
        );
        assert_eq!(claimed.installation, None);
        assert_eq!(
            claimed.ancillaries.decode_documents().unwrap()["conf/app.properties"],
            b"key=value\n"
        );
        assert_eq!(claimed.ancillaries.secrets["db-pass"], "hunter2");
    }

    #[test]
    fn a_claim_of_a_recorded_installation_without_an_ingress_node_reads_back() {
        let mut json = claimed_json();
        json["operation"] = json!("restart");
        json["request"] = json!({"name": "web", "k8sNamespace": "apps"});
        json["installation"] =
            json!({"name": "web", "k8sNamespace": "apps", "configSpec": [], "ars_version": 3});
        json["cluster"] = json!({"name": "c1", "ingressDefaultNode": null});
        json["ancillaries"] = json!({"secrets": {}, "documents": {}});
        json["attempts"] = json!(2);
        let claimed: ClaimedWorkitem = round_trip(json);
        assert_eq!(claimed.cluster.ingress_default_node, None);
        assert_eq!(claimed.installation.unwrap()["ars_version"], 3);
    }

    #[test]
    fn secrets_stay_out_of_debug_output() {
        let claimed: ClaimedWorkitem = serde_json::from_value(claimed_json()).unwrap();
        let debug = format!("{claimed:?}");
        assert!(!debug.contains("hunter2"), "{debug}");
        assert!(!debug.contains("a2V5PXZhbHVlCg=="), "{debug}");
        assert!(debug.contains("db-pass"), "names are shown: {debug}");
    }

    #[test]
    fn a_document_that_is_not_base64_is_named() {
        let ancillaries = Ancillaries {
            documents: BTreeMap::from([("bad.txt".to_owned(), "%%%".to_owned())]),
            ..Ancillaries::default()
        };
        let error = ancillaries.decode_documents().unwrap_err();
        assert_eq!(error.name, "bad.txt");
        assert_eq!(
            Ancillaries::encode_document(b"key=value\n"),
            "a2V5PXZhbHVlCg=="
        );
    }

    #[test]
    fn a_claim_without_a_lease_does_not_read() {
        let mut json = claimed_json();
        json.as_object_mut().unwrap().remove("leaseId");
        assert!(serde_json::from_value::<ClaimedWorkitem>(json).is_err());
    }

    #[test]
    fn procedure_parameters_are_written_as_the_server_reads_them() {
        let claim: ClaimWorkitem = round_trip(
            json!({"clusterName": "c1", "workerId": "gw-1", "leaseSeconds": 60, "waitSeconds": 20}),
        );
        assert_eq!(claim.server_wait(), Duration::from_secs(20));
        round_trip::<ClaimWorkitem>(json!({"clusterName": "c1", "leaseSeconds": 0.3}));
        let bare: ClaimWorkitem = round_trip(json!({"clusterName": "c1"}));
        assert_eq!(bare.server_wait(), Duration::ZERO);
        assert_eq!(ClaimWorkitem::NAME, "K8sManager.claimWorkitem");

        let renew: RenewWorkitemLease =
            round_trip(json!({"requestId": "r", "leaseId": "l", "leaseSeconds": 30}));
        assert_eq!(renew.request_id(), Some("r"));
        round_trip::<RenewWorkitemLease>(json!({"requestId": "r", "leaseId": "l"}));
        round_trip::<RenewWorkitemLeases>(json!({
            "leases": [{"requestId": "r", "leaseId": "l"}, {"requestId": "s", "leaseId": "m"}],
            "leaseSeconds": 60
        }));
        round_trip::<LeaseRenewals>(json!({"leases": [
            {"requestId": "r", "leaseId": "l", "outcome": "renewed", "leaseExpiresAt": "2026-01-01T10:01:00.000Z"},
            {"requestId": "s", "leaseId": "m", "outcome": "gone"}
        ]}));
        round_trip::<ReleaseWorkitem>(json!({"requestId": "r", "leaseId": "l"}));
        let fail: FailWorkitem = round_trip(
            json!({"requestId": "r", "leaseId": "l", "status": "INVALID", "message": "bad"}),
        );
        assert_eq!(fail.status, FailStatus::Invalid);
        let defaulted: FailWorkitem =
            serde_json::from_value(json!({"requestId": "r", "leaseId": "l", "message": "m"}))
                .unwrap();
        assert_eq!(defaulted.status, FailStatus::Failed);
        assert!(
            serde_json::from_value::<FailWorkitem>(
                json!({"requestId": "r", "leaseId": "l", "status": "DONE", "message": "m"})
            )
            .is_err()
        );
        assert_eq!(FailStatus::parse("INVALID"), Some(FailStatus::Invalid));
        assert_eq!(FailStatus::parse("DONE"), None);
    }

    #[test]
    fn an_installation_report_is_written_with_vantiq_names() {
        let json = json!({
            "installation": {
                "installationStatus": "RUNNING",
                "k8sState": "Running: 2/2 replicas ready",
                "replicaCount": 2,
                "k8sInstallationIdentifier": "uid-1",
                "k8sInstallationInfo": {"k8sNamespace": "apps", "statefulSet": "web", "desiredReplicas": 2, "readyReplicas": 2},
                "k8sAssociatedServices": ["vantiq-web-service-0", "web"],
                "k8sAssociatedIngresses": ["vantiq-web-ingress-0"],
                "k8sAssociatedConfigMaps": ["vantiq-web-configmap-0"],
                "k8sAssociatedSecrets": [],
            },
            "leaseId": "l",
            "requestId": "r",
        });
        let complete: CompleteWorkitem = round_trip(json.clone());
        let report = &complete.installation;
        assert_eq!(
            report.installation_status,
            Some(InstallationStatus::Running)
        );
        assert_eq!(report.replica_count, Some(2));
        let map = report.to_map();
        let mut names: Vec<&str> = map.keys().map(String::as_str).collect();
        let mut properties = InstallationReport::PROPERTIES.to_vec();
        names.sort_unstable();
        properties.sort_unstable();
        assert_eq!(names, properties, "every property, spelled as Vantiq does");
        // An empty report is an empty object; an unknown property is refused.
        round_trip::<CompleteWorkitem>(
            json!({"requestId": "r", "leaseId": "l", "installation": {}}),
        );
        assert!(serde_json::from_value::<InstallationReport>(json!({"name": "hijack"})).is_err());
        assert!(
            serde_json::from_value::<InstallationReport>(json!({"installationStatus": "GREAT"}))
                .is_err()
        );
    }

    #[test]
    fn answers_read_back_exactly() {
        round_trip::<LeaseRenewal>(json!({
            "requestId": "r", "leaseId": "l",
            "leaseExpiresAt": "2026-01-01T10:01:32.000Z", "leaseSeconds": 30,
        }));
        let completion: Completion = round_trip(json!({
            "requestId": "r", "operation": "undeploy", "installation": null,
        }));
        assert_eq!(completion.installation, None);
        round_trip::<Completion>(json!({
            "requestId": "r", "operation": "deploy",
            "installation": {"name": "web", "installationStatus": "RUNNING"},
        }));
        let failed: K8sWorkitem = round_trip(json!({
            "_id": "r", "requestId": "r", "clusterName": "c1", "operation": "deploy",
            "timestamp": "2026-01-01T10:00:05.000Z", "status": "FAILED",
            "request": {"name": "web"}, "requestedBy": "admin", "installationName": "web",
            "createdAt": "2026-01-01T10:00:00.000Z", "attempts": 1, "delayed": false,
            "ars_namespace": "k8sworker", "message": "ImagePullBackOff on pod web-0",
            "traceparent": "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        }));
        assert_eq!(failed.status, Some(WorkitemStatus::Failed));
        let version: ServerVersion = round_trip(json!({
            "name": "k8sworker-controlplane", "version": "0.1.0", "workerProtocol": 1,
            "longPoll": true, "maxClaimWaitSeconds": 30,
        }));
        assert_eq!(version.worker_protocol, Some(WORKER_PROTOCOL_VERSION));
        assert_eq!(
            serde_json::from_value::<ServerVersion>(json!({"build": "x"})).unwrap(),
            ServerVersion::default(),
            "a server that says nothing of the protocol"
        );
    }
}

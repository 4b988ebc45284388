//! What can go wrong in an executor, and how each failure reaches the caller.
//!
//! Every failure is one [`Error`] variant named for what failed. At the gRPC
//! boundary it becomes a [`tonic::Status`] with an explicit code, and the
//! status details carry the protocol's [`v1::Error`] (stable [`ErrorCode`],
//! message, components) encoded with prost, so a caller can tell a stale
//! plan from a foreign object without parsing messages. Inside an `Ack` the
//! same [`v1::Error`] is used.

use k8sworker_proto::v1::{self, ComponentRef, ErrorCode};
use prost::Message as _;

/// One component a refusal is about, and why.
#[derive(Clone, Debug, PartialEq)]
pub struct Problem {
    /// The component.
    pub component: ComponentRef,
    /// What is wrong with it, for a person.
    pub detail: String,
}

/// Why an Observe, Apply or FetchLogs failed; [`Error::code`] gives the
/// protocol's stable code and `From<Error> for tonic::Status` the gRPC one.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The request names another namespace than the executor's own.
    #[error(
        "plan for namespace {requested:?} refused: this executor serves namespace {own:?} only; \
         send it to the executor of {requested:?}"
    )]
    WrongNamespace {
        /// The namespace the request named.
        requested: String,
        /// The namespace this executor serves.
        own: String,
    },

    /// The request or plan is malformed; nothing was written.
    #[error("invalid request: {message}")]
    Invalid {
        /// What is wrong, for a person.
        message: String,
        /// The component it is about, when there is one.
        component: Option<ComponentRef>,
    },

    /// A plan id came back with another digest than the one applied.
    #[error(
        "plan id {id:?} was already applied with digest {applied:?}; a changed plan needs a new id"
    )]
    PlanIdReused {
        /// The plan id.
        id: String,
        /// The digest of the plan applied under that id.
        applied: String,
    },

    /// A precondition no longer holds (the object changed, appeared or
    /// vanished after it was observed); nothing was written.
    #[error("stale plan, nothing written; observe again and re-plan: {}", describe_all(.0))]
    Stale(Vec<Problem>),

    /// An object at a generated name lacks our ownership labels, or belongs
    /// to another installation; nothing was written.
    #[error(
        "objects exist that k8sworker does not own, nothing written; rename or remove them: {}",
        describe_all(.0)
    )]
    NotOwned(Vec<Problem>),

    /// Objects of the plan break the executor's policy
    /// ([`k8sworker_core::policy`]); each problem names the object, the field
    /// and the rule. Refused before any API call.
    #[error(
        "plan refused by the executor's policy, nothing written: {}",
        describe_all(.0)
    )]
    Forbidden(Vec<Problem>),

    /// Updates would change fields the API server never lets an update
    /// change ([`k8sworker_core::immutable`]); each problem names the object
    /// and field. Refused before any write.
    #[error(
        "plan would change immutable fields, nothing written: {}; {}",
        describe_all(.0),
        k8sworker_core::immutable::ADVICE
    )]
    Immutable(Vec<Problem>),

    /// The API server refused writes of the plan sent as a server-side dry
    /// run before the first persisted write (validation, an admission
    /// webhook, a ResourceQuota, …); each problem names the object and the
    /// server's reason. Nothing was written.
    #[error(
        "plan refused by the API server's dry run, nothing written: {}",
        describe_all(.refused)
    )]
    DryRunRefused {
        /// Every refused write: the object and the API server's reason.
        refused: Vec<Problem>,
        /// One of them was a 409: an object changed after the precondition
        /// check, so the plan is stale rather than wrong.
        conflict: bool,
    },

    /// The pods of the plan's StatefulSet would not fit a ResourceQuota of
    /// the namespace ([`k8sworker_core::resource_quota`]): a quota on pod
    /// resources is charged when pods are created, which a dry run of the
    /// StatefulSet cannot see. Each problem names the quota, the resource,
    /// the amount requested and the room left. Nothing was written.
    #[error(
        "plan refused, nothing written: its pods would exceed the namespace's ResourceQuota: {}; \
         lower the installation's resources or replicas, or raise the quota",
        describe_all(.0)
    )]
    QuotaExceeded(Vec<Problem>),

    /// A write failed after earlier writes of the same plan succeeded (the
    /// dry run passed, then something changed: a race). The message names
    /// what was written; the next plan is computed from what is observed,
    /// so it continues from there.
    #[error(
        "{source}; written before it: {}; deploy again to continue from there",
        .written.join(", ")
    )]
    PartlyWritten {
        /// Each object written, as `Kind namespace/name (what was done)`.
        written: Vec<String>,
        /// The failure of the write that stopped the plan.
        #[source]
        source: Box<Error>,
    },

    /// The plan's tenant is not one the operator allows in this namespace
    /// (`--allowed-tenant`), or the plan names none. Refused before any API
    /// call.
    #[error(
        "plan of {tenant} refused: the executor of namespace {namespace:?} allows {allowed}; nothing read or written"
    )]
    TenantNotAllowed {
        /// The plan's tenant, `<vantiq-namespace>/<cluster>`, or `no tenant`.
        tenant: String,
        /// The namespace this executor serves.
        namespace: String,
        /// The allowed tenants, for a person (`no tenant` when none is).
        allowed: String,
    },

    /// The health wait saw pods fail in a way waiting will not fix.
    #[error("installation {installation:?} is unhealthy: {summary}")]
    Unhealthy {
        /// Installation name.
        installation: String,
        /// Each failing pod with its reason ([`crate::health::assess`]).
        summary: String,
    },

    /// The health wait ended at its deadline.
    #[error("installation {installation:?} did not become ready within {seconds}s: {progress}")]
    Timeout {
        /// Installation name.
        installation: String,
        /// The wait's length, in seconds.
        seconds: u64,
        /// How far the rollout got.
        progress: String,
    },

    /// The executor's cache has not finished its first list of the
    /// namespace; nothing was read or written.
    #[error("executor is not ready: its cache of the namespace did not sync within {seconds} s")]
    NotSynced {
        /// How long it waited.
        seconds: u64,
    },

    /// The executor stopped taking plans (SIGTERM); nothing was written.
    #[error("executor is shutting down; retry against its replacement")]
    ShuttingDown,

    /// A Kubernetes API call failed (a 409 conflict counts as a stale plan).
    /// The message carries the API server's own words once ([`api_reason`]).
    #[error("Kubernetes API call to {action} {target} failed: {}", api_reason(.source))]
    Kube {
        /// What the call was for, e.g. `apply`, `delete`.
        action: &'static str,
        /// The object or collection it addressed.
        target: String,
        /// kube's error, with the API server's status when it answered.
        #[source]
        source: kube::Error,
    },
}

impl Error {
    pub(crate) fn invalid(message: impl Into<String>) -> Self {
        Error::Invalid {
            message: message.into(),
            component: None,
        }
    }

    pub(crate) fn invalid_component(component: &ComponentRef, message: impl Into<String>) -> Self {
        Error::Invalid {
            message: format!("{}: {}", describe(component), message.into()),
            component: Some(component.clone()),
        }
    }

    pub(crate) fn kube(
        action: &'static str,
        target: impl Into<String>,
        source: kube::Error,
    ) -> Self {
        Error::Kube {
            action,
            target: target.into(),
            source,
        }
    }

    /// The stable code a caller acts on.
    pub fn code(&self) -> ErrorCode {
        match self {
            Error::WrongNamespace { .. } => ErrorCode::WrongNamespace,
            Error::Invalid { .. } | Error::PlanIdReused { .. } => ErrorCode::InvalidRequest,
            Error::Stale(_) => ErrorCode::StalePlan,
            Error::NotOwned(_) => ErrorCode::NotOwned,
            Error::Forbidden(_) => ErrorCode::PolicyViolation,
            Error::Immutable(_) => ErrorCode::ImmutableField,
            Error::TenantNotAllowed { .. } => ErrorCode::TenantNotAllowed,
            Error::Unhealthy { .. } => ErrorCode::Unhealthy,
            Error::Timeout { .. } => ErrorCode::Timeout,
            Error::ShuttingDown | Error::NotSynced { .. } => ErrorCode::Internal,
            Error::DryRunRefused { conflict: true, .. } => ErrorCode::StalePlan,
            Error::DryRunRefused { .. } | Error::QuotaExceeded(_) => ErrorCode::KubernetesApi,
            Error::PartlyWritten { source, .. } => source.code(),
            Error::Kube { source, .. } if api_status(source) == Some(409) => ErrorCode::StalePlan,
            Error::Kube { .. } => ErrorCode::KubernetesApi,
        }
    }

    /// The components the error is about.
    pub fn components(&self) -> Vec<ComponentRef> {
        match self {
            Error::Stale(problems)
            | Error::NotOwned(problems)
            | Error::Forbidden(problems)
            | Error::Immutable(problems)
            | Error::QuotaExceeded(problems)
            | Error::DryRunRefused {
                refused: problems, ..
            } => problems.iter().map(|p| p.component.clone()).collect(),
            Error::PartlyWritten { source, .. } => source.components(),
            Error::Invalid {
                component: Some(component),
                ..
            } => vec![component.clone()],
            _ => Vec::new(),
        }
    }

    /// The protocol's error value, as it goes into an `Ack` or status details.
    pub fn to_proto(&self) -> v1::Error {
        v1::Error {
            code: self.code() as i32,
            message: self.to_string(),
            components: self.components(),
        }
    }

    fn grpc_code(&self) -> tonic::Code {
        match self {
            Error::WrongNamespace { .. } | Error::Forbidden(_) | Error::TenantNotAllowed { .. } => {
                tonic::Code::PermissionDenied
            }
            Error::Invalid { .. } | Error::PlanIdReused { .. } => tonic::Code::InvalidArgument,
            Error::Stale(_)
            | Error::NotOwned(_)
            | Error::Immutable(_)
            | Error::Unhealthy { .. }
            | Error::DryRunRefused {
                conflict: false, ..
            }
            | Error::QuotaExceeded(_) => tonic::Code::FailedPrecondition,
            Error::DryRunRefused { conflict: true, .. } => tonic::Code::Aborted,
            Error::PartlyWritten { source, .. } => source.grpc_code(),
            Error::Timeout { .. } => tonic::Code::DeadlineExceeded,
            Error::ShuttingDown | Error::NotSynced { .. } => tonic::Code::Unavailable,
            Error::Kube { source, .. } => match api_status(source) {
                Some(403) => tonic::Code::PermissionDenied,
                Some(404) => tonic::Code::NotFound,
                Some(409) => tonic::Code::Aborted,
                Some(400 | 422) => tonic::Code::InvalidArgument,
                Some(429) => tonic::Code::ResourceExhausted,
                Some(_) | None => tonic::Code::Unavailable,
            },
        }
    }
}

impl From<Error> for tonic::Status {
    fn from(error: Error) -> Self {
        let details = error.to_proto().encode_to_vec();
        tonic::Status::with_details(error.grpc_code(), error.to_string(), details.into())
    }
}

/// kube's error for a person: when the API server answered, its message
/// with the HTTP status and reason (`… is invalid: spec: Forbidden: … (HTTP
/// 422 Invalid)`); kube's own Display repeats the whole status as Debug,
/// which doubles a refusal's length and buries it. Otherwise kube's message.
pub(crate) fn api_reason(error: &kube::Error) -> String {
    match error {
        kube::Error::Api(status) if !status.message.is_empty() => {
            format!(
                "{} (HTTP {} {})",
                status.message, status.code, status.reason
            )
        }
        other => other.to_string(),
    }
}

/// The HTTP status of an error the API server answered with.
pub(crate) fn api_status(error: &kube::Error) -> Option<u16> {
    match error {
        kube::Error::Api(status) => Some(status.code),
        _ => None,
    }
}

/// `Kind namespace/name`, the way a person reads an object reference.
pub fn describe(component: &ComponentRef) -> String {
    if component.namespace.is_empty() {
        format!("{} {}", component.kind, component.name)
    } else {
        format!(
            "{} {}/{}",
            component.kind, component.namespace, component.name
        )
    }
}

fn describe_all(problems: &[Problem]) -> String {
    problems
        .iter()
        .map(|p| format!("{} ({})", describe(&p.component), p.detail))
        .collect::<Vec<_>>()
        .join("; ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mk_ref(kind: &str, name: &str) -> ComponentRef {
        ComponentRef {
            api_version: "v1".into(),
            kind: kind.into(),
            namespace: "ns-a".into(),
            name: name.into(),
        }
    }

    fn mk_api_error(code: u16) -> kube::Error {
        kube::Error::Api(Box::new(kube::core::Status {
            code,
            message: "refused".into(),
            ..Default::default()
        }))
    }

    #[test]
    fn refusals_map_to_explicit_grpc_codes() {
        let cases = [
            (
                Error::WrongNamespace {
                    requested: "b".into(),
                    own: "a".into(),
                },
                tonic::Code::PermissionDenied,
                ErrorCode::WrongNamespace,
            ),
            (
                Error::invalid("no steps"),
                tonic::Code::InvalidArgument,
                ErrorCode::InvalidRequest,
            ),
            (
                Error::Stale(vec![Problem {
                    component: mk_ref("ConfigMap", "c"),
                    detail: "changed".into(),
                }]),
                tonic::Code::FailedPrecondition,
                ErrorCode::StalePlan,
            ),
            (
                Error::NotOwned(vec![]),
                tonic::Code::FailedPrecondition,
                ErrorCode::NotOwned,
            ),
            (
                Error::Forbidden(vec![Problem {
                    component: mk_ref("Service", "s"),
                    detail: "spec.externalIPs: not allowed".into(),
                }]),
                tonic::Code::PermissionDenied,
                ErrorCode::PolicyViolation,
            ),
            (
                Error::kube("patch", "x", mk_api_error(403)),
                tonic::Code::PermissionDenied,
                ErrorCode::KubernetesApi,
            ),
            (
                Error::kube("patch", "x", mk_api_error(409)),
                tonic::Code::Aborted,
                ErrorCode::StalePlan,
            ),
            (
                Error::kube("patch", "x", mk_api_error(500)),
                tonic::Code::Unavailable,
                ErrorCode::KubernetesApi,
            ),
        ];
        for (error, grpc, code) in cases {
            assert_eq!(error.code(), code, "{error}");
            let status = tonic::Status::from(error);
            assert_eq!(status.code(), grpc);
            let details = v1::Error::decode(status.details()).expect("details decode");
            assert_eq!(details.code, code as i32);
            assert_eq!(details.message, status.message());
        }
    }

    #[test]
    fn an_api_refusal_says_the_servers_reason_once() {
        let refusal = kube::Error::Api(Box::new(kube::core::Status {
            code: 422,
            message: "StatefulSet.apps \"web\" is invalid: spec: Forbidden: updates to statefulset spec are forbidden".into(),
            reason: "Invalid".into(),
            ..Default::default()
        }));
        let message = Error::kube("update", "StatefulSet ns-a/web", refusal).to_string();
        assert_eq!(
            message,
            "Kubernetes API call to update StatefulSet ns-a/web failed: StatefulSet.apps \"web\" \
             is invalid: spec: Forbidden: updates to statefulset spec are forbidden (HTTP 422 Invalid)"
        );
    }

    #[test]
    fn stale_error_names_every_component() {
        let error = Error::Stale(vec![
            Problem {
                component: mk_ref("ConfigMap", "one"),
                detail: "resourceVersion 5, plan expected 4".into(),
            },
            Problem {
                component: mk_ref("Secret", "two"),
                detail: "exists, plan expected none".into(),
            },
        ]);
        let message = error.to_string();
        assert!(
            message.contains("ConfigMap ns-a/one (resourceVersion 5"),
            "{message}"
        );
        assert!(message.contains("Secret ns-a/two (exists"), "{message}");
        assert_eq!(error.components().len(), 2);
    }
}

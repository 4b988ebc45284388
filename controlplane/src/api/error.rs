//! The errors the API answers with, in Vantiq's shape: a JSON **array** of
//! `{code, message, params}` with a fitting HTTP status.
//!
//! Every failure a handler can meet is a variant of [`ApiError`]; the variant
//! decides the status and the Vantiq error code, so the table of codes in
//! `docs/controlplane.md` is this file. The layers below speak their own
//! errors ([`StoreError`], [`Forbidden`], [`QuotaError`], [`OperationError`],
//! [`QueryError`]); each is mapped here, once, by a `From` impl.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

use crate::auth::Forbidden;
use crate::operations::OperationError;
use crate::query::QueryError;
use crate::quota::QuotaError;
use crate::state::LoginRefused;
use crate::store::StoreError;

use k8sworker_client::vantiq;
/// One element of a Vantiq error body: the worker protocol's own type.
pub use k8sworker_client::vantiq::VantiqError;

/// Why a request failed; the `Display` text is the answer's `message`.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// 404: no instance of `resource` has `key` = `id` in the namespace.
    #[error(
        "The requested instance ('{{{key}={id}}}') of the {resource} resource could not be found."
    )]
    NotFound {
        /// The resource type (`k8sclusters`, …).
        resource: &'static str,
        /// The identifying property (`name`, `requestId`).
        key: &'static str,
        /// The value looked for.
        id: String,
    },
    /// 404: a path under `/api/v1/resources` names no resource type.
    #[error("The resource {0} is not a known system resource.")]
    UnknownResource(String),
    /// 404: no route has this path.
    #[error("No route for {0}.")]
    NoRoute(String),
    /// 401: the request carries no token.
    #[error(
        "Authentication required: send a bearer token or use GET /authenticate with Basic credentials."
    )]
    Unauthenticated,
    /// 401: Basic credentials that match no user.
    #[error("The user name or password is not valid.")]
    BadCredentials,
    /// 429: the client address made too many login attempts.
    #[error(
        "Too many login attempts from this address: at most {per_minute} per minute; retry in {retry_after_seconds} s."
    )]
    LoginRateLimited {
        /// The configured attempts per minute.
        per_minute: u32,
        /// Seconds until the next attempt is admitted (also `Retry-After`).
        retry_after_seconds: u64,
    },
    /// 429: every password verification slot is busy.
    #[error("The server is verifying {concurrency} passwords already; retry in a moment.")]
    LoginBusy {
        /// The configured verifications at once.
        concurrency: u32,
    },
    /// 401: an unknown, revoked or expired token.
    #[error("The access token is not valid or has expired.")]
    InvalidToken,
    /// 403: the token's profiles do not allow the action.
    #[error("The token does not grant {action} in namespace {namespace}.")]
    Forbidden {
        /// The action, for a person ("modifying k8sclusters").
        action: &'static str,
        /// The token's namespace.
        namespace: String,
    },
    /// 403: the request targets another namespace than the token's.
    #[error("The token is for namespace {token}; it cannot act in namespace {target}.")]
    WrongNamespace {
        /// The token's namespace.
        token: String,
        /// The namespace the request named.
        target: String,
    },
    /// 400: the body does not parse as JSON.
    #[error("The request body is not valid JSON: {0}")]
    MalformedJson(String),
    /// 413: the body exceeds `--max-body-bytes` (the limit, in bytes).
    #[error("The request body is larger than the limit of {0} bytes.")]
    BodyTooLarge(usize),
    /// 400: a field has a value the request cannot take.
    #[error("Invalid value for {field}: {reason}")]
    InvalidArgument {
        /// The field, as the request names it (`data.name`, `config`, …).
        field: String,
        /// What is wrong, for a person.
        reason: String,
    },
    /// 400: a select parameter (`where`, `sort`, …) is malformed.
    #[error("{0}")]
    InvalidQuery(#[from] QueryError),
    /// 409: the name is taken.
    #[error("An instance of {resource} named {id} already exists.")]
    Duplicate {
        /// The resource type.
        resource: &'static str,
        /// The name.
        id: String,
    },
    /// 405: the resource type does not take this kind of request.
    #[error("{resource} does not allow {operation}: {reason}")]
    OperationNotAllowed {
        /// The resource type.
        resource: &'static str,
        /// What was attempted ("direct writes").
        operation: &'static str,
        /// Why not, and what to do instead.
        reason: &'static str,
    },
    /// 400: a command's `op` is not one the target takes.
    #[error("Unknown operation {op} on {resource}; expected one of {expected}.")]
    UnknownOperation {
        /// `k8sclusters` or `k8sinstallations`.
        resource: &'static str,
        /// The `op` sent.
        op: String,
        /// The operations the target takes.
        expected: &'static str,
    },
    /// 400: the planner's validation refused the deploy; one entry per
    /// violation, each naming the config entry and field.
    #[error("The deploy request is not valid: {}", .0.join("; "))]
    ValidationFailed(Vec<String>),
    /// 400: a cluster with installations or outstanding workitems cannot be
    /// deleted.
    #[error(
        "K8s cluster {cluster} cannot be deleted: it has {installations} installation(s) and {workitems} outstanding workitem(s)."
    )]
    ClusterInUse {
        /// The cluster.
        cluster: String,
        /// How many installations it has.
        installations: u64,
        /// How many `REQUESTED` or `PENDING` workitems it has.
        workitems: u64,
    },
    /// 400: the command names another cluster than the installation's.
    #[error("Installation {installation} belongs to cluster {actual}, not {requested}.")]
    InstallationOnOtherCluster {
        /// The installation.
        installation: String,
        /// Its recorded cluster.
        actual: String,
        /// The cluster the command named.
        requested: String,
    },
    /// 400: a deploy names another K8s namespace than the installation's
    /// (its record, or its outstanding first deploy).
    #[error(
        "Installation {installation} is in K8s namespace {actual}, not {requested}; undeploy it before deploying it elsewhere."
    )]
    InstallationInOtherNamespace {
        /// The installation.
        installation: String,
        /// Its K8s namespace.
        actual: String,
        /// The K8s namespace the deploy named.
        requested: String,
    },
    /// 403: a non-admin deploys to the `self` cluster.
    #[error("Only organization administrators may deploy to the self cluster.")]
    SelfClusterAdminOnly,
    /// 400: a `self` deploy names another K8s namespace than the configured one.
    #[error("Deploys to the self cluster must use K8s namespace {expected}, not {given}.")]
    SelfClusterWrongNamespace {
        /// The configured namespace (`--self-k8s-namespace`).
        expected: String,
        /// The request's `k8sNamespace`.
        given: String,
    },
    /// 400: a `self` deploy without `resourceRequest` or `resourceLimit`.
    #[error("Deploys to the self cluster must include a resourceRequest or a resourceLimit entry.")]
    SelfClusterResourcesRequired,
    /// 400: a `self` deploy that states no `cpu` or no `memory` (in
    /// `resourceRequest` or `resourceLimit`); the missing ones.
    #[error(
        "Deploys to the self cluster must state both cpu and memory in resourceRequest or resourceLimit; missing: {}.",
        .0.join(", ")
    )]
    SelfClusterDimensionsRequired(Vec<&'static str>),
    /// 429: the `self` deploy does not fit the namespace's `k8sResources` quota.
    #[error(
        "The deploy would exceed the namespace's k8sResources quota for {resource}: requested {requested}, in use {in_use}, limit {limit}."
    )]
    QuotaExceeded {
        /// The Vantiq dimension (`vCPU`, `memory`, `gpuNvidia`, `gpuAmd`).
        resource: &'static str,
        /// This deploy's charge.
        requested: String,
        /// The namespace's other charges.
        in_use: String,
        /// The quota.
        limit: String,
    },
    /// 429: an upload would take the namespace's documents beyond
    /// `--max-documents` or `--max-document-bytes`.
    #[error(
        "The upload would exceed the namespace's document quota for {measure}: requested {requested}, in use {in_use}, limit {limit}."
    )]
    DocumentQuotaExceeded {
        /// `documents` (their number) or `bytes` (their content).
        measure: &'static str,
        /// What this upload adds.
        requested: u64,
        /// What the namespace's other documents hold.
        in_use: u64,
        /// The quota.
        limit: u64,
    },
    /// 403: a non-admin writes or deletes a document that a deploy mounts.
    #[error(
        "Document {document} is mounted by installation {installation}; only administrators may change or delete it."
    )]
    DocumentMounted {
        /// The document.
        document: String,
        /// An installation whose deploy mounts it.
        installation: String,
    },
    /// 400: a secret or document the request refers to does not exist.
    #[error("The {kind} {name} referenced by the request does not exist.")]
    MissingReference {
        /// `secret` or `document`.
        kind: &'static str,
        /// Its name.
        name: String,
    },
    /// 409: the worker no longer holds the workitem's lease.
    #[error(
        "Workitem {request_id} is not leased under lease {lease_id}; it was completed, released, cancelled or re-claimed after the lease expired."
    )]
    LeaseLost {
        /// The workitem's `requestId`.
        request_id: String,
        /// The lease presented.
        lease_id: String,
    },
    /// 403: a worker token bound to one cluster acts on another's workitem.
    #[error(
        "This worker token serves K8s cluster {bound}; it cannot act on cluster {requested}'s workitems."
    )]
    WorkerClusterDenied {
        /// The cluster the token is bound to.
        bound: String,
        /// The cluster the call concerns.
        requested: String,
    },
    /// 410: the leased workitem was cancelled; the renewal still extended
    /// the lease, so an operation already applying can report its outcome.
    #[error(
        "Workitem {request_id} was cancelled: do not start it (release it); an operation already applying finishes and reports its outcome."
    )]
    WorkitemCancelled {
        /// The workitem's `requestId`.
        request_id: String,
    },
    /// 409: a worker's status update does not follow the workitem's life
    /// (`--vantiq-strict`: `REQUESTED` → `PENDING` → `FAILED`/`INVALID`,
    /// or back to `REQUESTED`); another worker took it, or it was cancelled.
    #[error("Workitem {request_id} is {from}; it cannot become {to}.")]
    StatusConflict {
        /// The workitem's `requestId`.
        request_id: String,
        /// Its status now.
        from: &'static str,
        /// The status asked for.
        to: String,
    },
    /// 404: no procedure has this name.
    #[error("Unknown procedure {0}.")]
    UnknownProcedure(String),
    /// 503: the server stops taking work.
    #[error("The server is shutting down.")]
    ShuttingDown,
    /// 503: the readiness check found storage unable to serve; the details
    /// are logged, never answered.
    #[error("Storage is unavailable; the server log has the details.")]
    StorageUnavailable(#[source] StoreError),
    /// 500: a handler panicked; the request failed alone, the panic is
    /// logged.
    #[error("Internal error; the server log has the details.")]
    Panicked,
    /// 500: storage failed; the details are logged, never answered.
    #[error("Internal error; the server log has the details.")]
    Internal(#[source] StoreError),
    /// 500: a blocking task (password hashing, select matching) failed.
    #[error("Internal error; the server log has the details.")]
    Task(#[source] tokio::task::JoinError),
}

impl ApiError {
    /// A malformed `field`: 400 `io.vantiq.argument.invalid`.
    pub fn invalid(field: &str, reason: impl Into<String>) -> ApiError {
        ApiError::InvalidArgument {
            field: field.to_owned(),
            reason: reason.into(),
        }
    }

    /// No instance of `resource` has `key` = `id`: 404
    /// `io.vantiq.resource.not.found`.
    pub fn not_found(resource: &'static str, key: &'static str, id: impl Into<String>) -> ApiError {
        ApiError::NotFound {
            resource,
            key,
            id: id.into(),
        }
    }

    /// The HTTP status Vantiq uses for this kind of failure.
    pub fn status(&self) -> StatusCode {
        use ApiError::*;
        match self {
            NotFound { .. } | UnknownResource(_) | NoRoute(_) | UnknownProcedure(_) => {
                StatusCode::NOT_FOUND
            }
            Unauthenticated | BadCredentials | InvalidToken => StatusCode::UNAUTHORIZED,
            Forbidden { .. }
            | WrongNamespace { .. }
            | SelfClusterAdminOnly
            | DocumentMounted { .. }
            | WorkerClusterDenied { .. } => StatusCode::FORBIDDEN,
            OperationNotAllowed { .. } => StatusCode::METHOD_NOT_ALLOWED,
            MalformedJson(_)
            | InvalidArgument { .. }
            | InvalidQuery(_)
            | UnknownOperation { .. }
            | ValidationFailed(_)
            | ClusterInUse { .. }
            | InstallationOnOtherCluster { .. }
            | InstallationInOtherNamespace { .. }
            | SelfClusterWrongNamespace { .. }
            | SelfClusterResourcesRequired
            | SelfClusterDimensionsRequired(_)
            | MissingReference { .. } => StatusCode::BAD_REQUEST,
            BodyTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            Duplicate { .. } | LeaseLost { .. } | StatusConflict { .. } => StatusCode::CONFLICT,
            WorkitemCancelled { .. } => StatusCode::GONE,
            QuotaExceeded { .. }
            | DocumentQuotaExceeded { .. }
            | LoginRateLimited { .. }
            | LoginBusy { .. } => StatusCode::TOO_MANY_REQUESTS,
            ShuttingDown | StorageUnavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            Internal(_) | Task(_) | Panicked => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The Vantiq error code.
    pub fn code(&self) -> &'static str {
        use ApiError::*;
        match self {
            NotFound { .. } => vantiq::NOT_FOUND,
            UnknownResource(_) => "io.vantiq.type.system.resource.unknown",
            NoRoute(_) => "io.vantiq.http.route.unknown",
            Unauthenticated => "io.vantiq.authentication.required",
            BadCredentials => "io.vantiq.authentication.failed",
            InvalidToken => "io.vantiq.authentication.token.invalid",
            LoginRateLimited { .. } => "io.vantiq.authentication.rate.limited",
            LoginBusy { .. } => "io.vantiq.authentication.busy",
            Forbidden { .. } => "io.vantiq.authorization.denied",
            WrongNamespace { .. } => "io.vantiq.authorization.namespace.denied",
            MalformedJson(_) => "io.vantiq.json.invalid",
            BodyTooLarge(_) => "io.vantiq.request.too.large",
            InvalidArgument { .. } => vantiq::ARGUMENT_INVALID,
            InvalidQuery(_) => "io.vantiq.query.invalid",
            Duplicate { .. } => "io.vantiq.resource.duplicate",
            OperationNotAllowed { .. } => "io.vantiq.resource.operation.not.allowed",
            UnknownOperation { .. } => "io.vantiq.resources.k8s.operation.unknown",
            ValidationFailed(_) => "io.vantiq.resources.k8s.request.invalid",
            ClusterInUse { .. } => "io.vantiq.resources.k8s.cluster.in.use",
            InstallationOnOtherCluster { .. } => {
                "io.vantiq.resources.k8s.installation.other.cluster"
            }
            InstallationInOtherNamespace { .. } => {
                "io.vantiq.resources.k8s.installation.other.namespace"
            }
            SelfClusterAdminOnly => "io.vantiq.resources.k8s.self.cluster.admin.only",
            SelfClusterWrongNamespace { .. } => {
                "io.vantiq.resources.k8s.self.cluster.wrong.namespace"
            }
            SelfClusterResourcesRequired | SelfClusterDimensionsRequired(_) => {
                "io.vantiq.resources.k8s.self.cluster.resources.required"
            }
            QuotaExceeded { .. } => "io.vantiq.resources.k8s.self.cluster.quota.exceeded",
            MissingReference { .. } => "io.vantiq.resources.k8s.reference.missing",
            DocumentQuotaExceeded { .. } => "io.vantiq.resources.documents.quota.exceeded",
            DocumentMounted { .. } => "io.vantiq.resources.documents.mounted.admin.only",
            LeaseLost { .. } => vantiq::LEASE_LOST,
            StatusConflict { .. } => "io.vantiq.resources.k8s.workitem.status.conflict",
            WorkitemCancelled { .. } => vantiq::WORKITEM_CANCELLED,
            WorkerClusterDenied { .. } => "io.vantiq.resources.k8s.worker.cluster.denied",
            UnknownProcedure(_) => vantiq::UNKNOWN_PROCEDURE,
            ShuttingDown => "io.vantiq.server.shutting.down",
            StorageUnavailable(_) => "io.vantiq.storage.unavailable",
            Internal(_) | Task(_) | Panicked => "io.vantiq.internal.error",
        }
    }

    /// The `params` of the error: the values the message names.
    pub fn params(&self) -> Vec<serde_json::Value> {
        use ApiError::*;
        use serde_json::json;
        match self {
            NotFound { resource, key, id } => {
                vec![json!(resource), json!(format!("{{{key}={id}}}"))]
            }
            UnknownResource(name) | NoRoute(name) | UnknownProcedure(name) => vec![json!(name)],
            StatusConflict {
                request_id,
                from,
                to,
            } => vec![json!(request_id), json!(from), json!(to)],
            Forbidden { action, namespace } => vec![json!(action), json!(namespace)],
            WrongNamespace { token, target } => vec![json!(token), json!(target)],
            BodyTooLarge(limit) => vec![json!(limit)],
            LoginRateLimited {
                per_minute,
                retry_after_seconds,
            } => vec![json!(per_minute), json!(retry_after_seconds)],
            LoginBusy { concurrency } => vec![json!(concurrency)],
            InvalidArgument { field, .. } => vec![json!(field)],
            InvalidQuery(QueryError::TooComplex {
                measure,
                limit,
                actual,
            }) => vec![json!(measure), json!(limit), json!(actual)],
            Duplicate { resource, id } => vec![json!(resource), json!(id)],
            OperationNotAllowed {
                resource,
                operation,
                ..
            } => vec![json!(resource), json!(operation)],
            UnknownOperation { resource, op, .. } => vec![json!(resource), json!(op)],
            ValidationFailed(errors) => errors.iter().map(|e| json!(e)).collect(),
            ClusterInUse { cluster, .. } => vec![json!(cluster)],
            InstallationOnOtherCluster {
                installation,
                actual,
                ..
            } => vec![json!(installation), json!(actual)],
            InstallationInOtherNamespace {
                installation,
                actual,
                requested,
            } => vec![json!(installation), json!(actual), json!(requested)],
            SelfClusterWrongNamespace { expected, given } => vec![json!(given), json!(expected)],
            QuotaExceeded {
                resource,
                requested,
                in_use,
                limit,
            } => vec![
                json!(resource),
                json!(requested),
                json!(in_use),
                json!(limit),
            ],
            MissingReference { kind, name } => vec![json!(kind), json!(name)],
            SelfClusterDimensionsRequired(missing) => missing.iter().map(|m| json!(m)).collect(),
            DocumentQuotaExceeded {
                measure,
                requested,
                in_use,
                limit,
            } => vec![
                json!(measure),
                json!(requested),
                json!(in_use),
                json!(limit),
            ],
            DocumentMounted {
                document,
                installation,
            } => vec![json!(document), json!(installation)],
            WorkerClusterDenied { bound, requested } => vec![json!(bound), json!(requested)],
            WorkitemCancelled { request_id } => vec![json!(request_id)],
            LeaseLost {
                request_id,
                lease_id,
            } => vec![json!(request_id), json!(lease_id)],
            _ => Vec::new(),
        }
    }

    /// The body element.
    pub fn to_vantiq(&self) -> VantiqError {
        VantiqError {
            code: self.code().to_owned(),
            message: self.to_string(),
            params: self.params(),
        }
    }
}

/// The store's facts become the answers Vantiq gives for them; a storage
/// failure is a 500 whose details go to the log only.
impl From<StoreError> for ApiError {
    fn from(error: StoreError) -> Self {
        match error {
            StoreError::NotFound { resource, key, id } => ApiError::NotFound { resource, key, id },
            StoreError::Duplicate { resource, id } => ApiError::Duplicate { resource, id },
            StoreError::LeaseLost {
                request_id,
                lease_id,
            } => ApiError::LeaseLost {
                request_id,
                lease_id,
            },
            StoreError::Invalid { field, reason } => ApiError::InvalidArgument { field, reason },
            storage => ApiError::Internal(storage),
        }
    }
}

impl From<LoginRefused> for ApiError {
    fn from(refused: LoginRefused) -> Self {
        match refused {
            LoginRefused::RateLimited {
                per_minute,
                retry_after,
            } => ApiError::LoginRateLimited {
                per_minute,
                retry_after_seconds: retry_after.as_secs_f64().ceil().max(1.0) as u64,
            },
            LoginRefused::Busy { concurrency } => ApiError::LoginBusy { concurrency },
        }
    }
}

impl From<Forbidden> for ApiError {
    fn from(error: Forbidden) -> Self {
        ApiError::Forbidden {
            action: error.action.describe(),
            namespace: error.namespace,
        }
    }
}

impl From<QuotaError> for ApiError {
    fn from(error: QuotaError) -> Self {
        match error {
            QuotaError::ResourcesRequired => ApiError::SelfClusterResourcesRequired,
            QuotaError::DimensionsRequired(missing) => {
                ApiError::SelfClusterDimensionsRequired(missing)
            }
            QuotaError::Invalid { field, reason } => ApiError::InvalidArgument { field, reason },
            QuotaError::Exceeded {
                resource,
                requested,
                in_use,
                limit,
            } => ApiError::QuotaExceeded {
                resource,
                requested,
                in_use,
                limit,
            },
        }
    }
}

impl From<OperationError> for ApiError {
    fn from(error: OperationError) -> Self {
        match error {
            OperationError::Invalid { field, reason } => {
                ApiError::InvalidArgument { field, reason }
            }
            OperationError::UnknownOperation {
                resource,
                op,
                expected,
            } => ApiError::UnknownOperation {
                resource,
                op,
                expected,
            },
            OperationError::ValidationFailed(errors) => ApiError::ValidationFailed(errors),
            OperationError::NotFound { resource, name } => ApiError::NotFound {
                resource,
                key: "name",
                id: name,
            },
            OperationError::InstallationOnOtherCluster {
                installation,
                actual,
                requested,
            } => ApiError::InstallationOnOtherCluster {
                installation,
                actual,
                requested,
            },
            OperationError::InstallationInOtherNamespace {
                installation,
                actual,
                requested,
            } => ApiError::InstallationInOtherNamespace {
                installation,
                actual,
                requested,
            },
            OperationError::SelfClusterAdminOnly => ApiError::SelfClusterAdminOnly,
            OperationError::SelfClusterWrongNamespace { expected, given } => {
                ApiError::SelfClusterWrongNamespace { expected, given }
            }
            OperationError::Quota(error) => error.into(),
            OperationError::MissingReference { kind, name } => {
                ApiError::MissingReference { kind, name }
            }
            OperationError::Store(error) => error.into(),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        match &self {
            ApiError::Internal(error) => {
                tracing::error!(error = %error, source = ?std::error::Error::source(error), "request failed on storage");
            }
            ApiError::Task(error) => {
                tracing::error!(%error, "request failed in a blocking task");
            }
            ApiError::StorageUnavailable(error) => {
                tracing::error!(error = %error, source = ?std::error::Error::source(error), "readiness: storage is unavailable");
            }
            _ => {}
        }
        let retry_after = match &self {
            ApiError::LoginRateLimited {
                retry_after_seconds,
                ..
            } => Some(*retry_after_seconds),
            ApiError::LoginBusy { .. } => Some(1),
            _ => None,
        };
        let mut response = (status, Json(vec![self.to_vantiq()])).into_response();
        if let Some(seconds) = retry_after {
            response.headers_mut().insert(
                axum::http::header::RETRY_AFTER,
                axum::http::HeaderValue::from(seconds),
            );
        }
        response
    }
}

/// A Vantiq-shaped body for a bare status produced outside the handlers (the
/// router's 405, a body-limit rejection), so every error has one shape.
pub fn vantiq_body_for_status(status: StatusCode) -> Vec<VantiqError> {
    let (code, message) = match status {
        StatusCode::METHOD_NOT_ALLOWED => (
            "io.vantiq.http.method.not.allowed",
            "The HTTP method is not allowed on this resource.",
        ),
        StatusCode::PAYLOAD_TOO_LARGE => (
            "io.vantiq.request.too.large",
            "The request body is larger than the limit.",
        ),
        StatusCode::UNSUPPORTED_MEDIA_TYPE => (
            "io.vantiq.http.media.type.unsupported",
            "The request's Content-Type is not supported here.",
        ),
        StatusCode::NOT_FOUND => ("io.vantiq.http.route.unknown", "No such route."),
        _ if status.is_client_error() => ("io.vantiq.request.invalid", "The request is not valid."),
        _ => (
            "io.vantiq.internal.error",
            "Internal error; the server log has the details.",
        ),
    };
    vec![VantiqError {
        code: code.to_owned(),
        message: message.to_owned(),
        params: Vec::new(),
    }]
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::auth::Action;

    /// (status, code, message, params) of the answer an error becomes.
    fn answer(error: impl Into<ApiError>) -> (u16, String, String, Vec<serde_json::Value>) {
        let error = error.into();
        let VantiqError {
            code,
            message,
            params,
        } = error.to_vantiq();
        (error.status().as_u16(), code, message, params)
    }

    #[test]
    fn store_facts_keep_their_vantiq_answers() {
        assert_eq!(
            answer(StoreError::NotFound {
                resource: "k8sworkitems",
                key: "requestId",
                id: "r1".into(),
            }),
            (
                404,
                "io.vantiq.resource.not.found".into(),
                "The requested instance ('{requestId=r1}') of the k8sworkitems resource could not be found.".into(),
                vec![json!("k8sworkitems"), json!("{requestId=r1}")],
            )
        );
        assert_eq!(
            answer(StoreError::Duplicate {
                resource: "k8sclusters",
                id: "c1".into(),
            }),
            (
                409,
                "io.vantiq.resource.duplicate".into(),
                "An instance of k8sclusters named c1 already exists.".into(),
                vec![json!("k8sclusters"), json!("c1")],
            )
        );
        let (status, code, message, params) = answer(StoreError::LeaseLost {
            request_id: "r1".into(),
            lease_id: "L".into(),
        });
        assert_eq!(status, 409);
        assert_eq!(code, "io.vantiq.resources.k8s.workitem.lease.lost");
        assert!(
            message.starts_with("Workitem r1 is not leased under lease L;"),
            "{message}"
        );
        assert_eq!(params, vec![json!("r1"), json!("L")]);
        assert_eq!(
            answer(StoreError::Invalid {
                field: "installation.installationStatus".into(),
                reason: "GREAT is not one of RUNNING, STOPPED, DAMAGED, FAILED".into(),
            }),
            (
                400,
                "io.vantiq.argument.invalid".into(),
                "Invalid value for installation.installationStatus: GREAT is not one of RUNNING, STOPPED, DAMAGED, FAILED".into(),
                vec![json!("installation.installationStatus")],
            )
        );
    }

    #[test]
    fn storage_failures_are_500s_that_say_nothing_more() {
        let failures = [
            StoreError::Sqlite(rusqlite::Error::QueryReturnedNoRows),
            StoreError::Panicked("a bug".into()),
            StoreError::Corrupt("workitem r1 has the unknown status \"X\"".into()),
            StoreError::Transition(crate::lifecycle::TransitionError::NotAllowed {
                from: crate::lifecycle::Status::Failed,
                event: crate::lifecycle::Event::Claim,
            }),
        ];
        for failure in failures {
            let error = ApiError::from(failure);
            assert!(matches!(error, ApiError::Internal(_)), "{error:?}");
            assert_eq!(
                answer(error),
                (
                    500,
                    "io.vantiq.internal.error".into(),
                    "Internal error; the server log has the details.".into(),
                    vec![],
                )
            );
        }
    }

    #[test]
    fn refusals_of_the_pure_layers_keep_their_answers() {
        assert_eq!(
            answer(Forbidden {
                action: Action::WriteClusters,
                namespace: "ns1".into(),
            }),
            (
                403,
                "io.vantiq.authorization.denied".into(),
                "The token does not grant modifying k8sclusters in namespace ns1.".into(),
                vec![json!("modifying k8sclusters"), json!("ns1")],
            )
        );
        assert_eq!(
            answer(QuotaError::ResourcesRequired).1,
            "io.vantiq.resources.k8s.self.cluster.resources.required"
        );
        let (status, code, message, _) = answer(QuotaError::Exceeded {
            resource: "vCPU",
            requested: "1".into(),
            in_use: "2".into(),
            limit: "2".into(),
        });
        assert_eq!(status, 429);
        assert_eq!(code, "io.vantiq.resources.k8s.self.cluster.quota.exceeded");
        assert_eq!(
            message,
            "The deploy would exceed the namespace's k8sResources quota for vCPU: requested 1, in use 2, limit 2."
        );
        assert_eq!(
            answer(OperationError::NotFound {
                resource: "k8sclusters",
                name: "c9".into(),
            }),
            (
                404,
                "io.vantiq.resource.not.found".into(),
                "The requested instance ('{name=c9}') of the k8sclusters resource could not be found.".into(),
                vec![json!("k8sclusters"), json!("{name=c9}")],
            )
        );
        assert_eq!(
            answer(OperationError::Quota(QuotaError::ResourcesRequired)).0,
            400
        );
        assert_eq!(
            answer(OperationError::Store(StoreError::Panicked("a bug".into()))).0,
            500
        );
        let (status, code, _, params) = answer(OperationError::MissingReference {
            kind: "secret",
            name: "db".into(),
        });
        assert_eq!(status, 400);
        assert_eq!(code, "io.vantiq.resources.k8s.reference.missing");
        assert_eq!(params, vec![json!("secret"), json!("db")]);
        assert_eq!(
            answer(OperationError::SelfClusterAdminOnly).1,
            "io.vantiq.resources.k8s.self.cluster.admin.only"
        );
    }

    #[test]
    fn the_response_is_a_vantiq_error_array() {
        let response = ApiError::from(StoreError::Panicked("a bug".into())).into_response();
        assert_eq!(response.status(), StatusCode::INTERNAL_SERVER_ERROR);
        let content_type = response.headers()[axum::http::header::CONTENT_TYPE]
            .to_str()
            .unwrap();
        assert!(
            content_type.starts_with("application/json"),
            "{content_type}"
        );
    }
}

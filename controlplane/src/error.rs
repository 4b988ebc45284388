//! The errors the API answers with, in Vantiq's shape: a JSON **array** of
//! `{code, message, params}` with a fitting HTTP status.
//!
//! Every failure a handler can meet is a variant of [`ApiError`]; the variant
//! decides the status and the Vantiq error code, so the table of codes in
//! `docs/controlplane.md` is this file.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use crate::query::QueryError;
use crate::store::StoreError;

/// One element of a Vantiq error body.
#[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize)]
pub struct VantiqError {
    pub code: String,
    pub message: String,
    pub params: Vec<serde_json::Value>,
}

/// Why a request failed.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error(
        "The requested instance ('{{{key}={id}}}') of the {resource} resource could not be found."
    )]
    NotFound {
        resource: &'static str,
        key: &'static str,
        id: String,
    },
    #[error("The resource {0} is not a known system resource.")]
    UnknownResource(String),
    #[error("No route for {0}.")]
    NoRoute(String),
    #[error(
        "Authentication required: send a bearer token or use GET /authenticate with Basic credentials."
    )]
    Unauthenticated,
    #[error("The user name or password is not valid.")]
    BadCredentials,
    #[error("The access token is not valid or has expired.")]
    InvalidToken,
    #[error("The token does not grant {action} in namespace {namespace}.")]
    Forbidden {
        action: &'static str,
        namespace: String,
    },
    #[error("The token is for namespace {token}; it cannot act in namespace {target}.")]
    WrongNamespace { token: String, target: String },
    #[error("The request body is not valid JSON: {0}")]
    MalformedJson(String),
    #[error("The request body is larger than the limit of {0} bytes.")]
    BodyTooLarge(usize),
    #[error("Invalid value for {field}: {reason}")]
    InvalidArgument { field: String, reason: String },
    #[error("{0}")]
    InvalidQuery(#[from] QueryError),
    #[error("An instance of {resource} named {id} already exists.")]
    Duplicate { resource: &'static str, id: String },
    #[error("{resource} does not allow {operation}: {reason}")]
    OperationNotAllowed {
        resource: &'static str,
        operation: &'static str,
        reason: &'static str,
    },
    #[error("Unknown operation {op} on {resource}; expected one of {expected}.")]
    UnknownOperation {
        resource: &'static str,
        op: String,
        expected: &'static str,
    },
    #[error("The deploy request is not valid: {}", .0.join("; "))]
    ValidationFailed(Vec<String>),
    #[error(
        "K8s cluster {cluster} cannot be deleted: it has {installations} installation(s) and {workitems} outstanding workitem(s)."
    )]
    ClusterInUse {
        cluster: String,
        installations: u64,
        workitems: u64,
    },
    #[error("Installation {installation} belongs to cluster {actual}, not {requested}.")]
    InstallationOnOtherCluster {
        installation: String,
        actual: String,
        requested: String,
    },
    #[error("Only organization administrators may deploy to the self cluster.")]
    SelfClusterAdminOnly,
    #[error("Deploys to the self cluster must use K8s namespace {expected}, not {given}.")]
    SelfClusterWrongNamespace { expected: String, given: String },
    #[error("Deploys to the self cluster must include a resourceRequest or a resourceLimit entry.")]
    SelfClusterResourcesRequired,
    #[error(
        "The deploy would exceed the namespace's k8sResources quota for {resource}: requested {requested}, in use {in_use}, limit {limit}."
    )]
    QuotaExceeded {
        resource: &'static str,
        requested: String,
        in_use: String,
        limit: String,
    },
    #[error("The {kind} {name} referenced by the request does not exist.")]
    MissingReference { kind: &'static str, name: String },
    #[error(
        "Workitem {request_id} is not leased under lease {lease_id}; it was completed, released, cancelled or re-claimed after the lease expired."
    )]
    LeaseLost {
        request_id: String,
        lease_id: String,
    },
    #[error("Unknown procedure {0}.")]
    UnknownProcedure(String),
    #[error("The server is shutting down.")]
    ShuttingDown,
    #[error("Internal error; the server log has the details.")]
    Internal(#[from] StoreError),
}

impl ApiError {
    /// The HTTP status Vantiq uses for this kind of failure.
    pub fn status(&self) -> StatusCode {
        use ApiError::*;
        match self {
            NotFound { .. } | UnknownResource(_) | NoRoute(_) | UnknownProcedure(_) => {
                StatusCode::NOT_FOUND
            }
            Unauthenticated | BadCredentials | InvalidToken => StatusCode::UNAUTHORIZED,
            Forbidden { .. } | WrongNamespace { .. } | SelfClusterAdminOnly => {
                StatusCode::FORBIDDEN
            }
            OperationNotAllowed { .. } => StatusCode::METHOD_NOT_ALLOWED,
            MalformedJson(_)
            | InvalidArgument { .. }
            | InvalidQuery(_)
            | UnknownOperation { .. }
            | ValidationFailed(_)
            | ClusterInUse { .. }
            | InstallationOnOtherCluster { .. }
            | SelfClusterWrongNamespace { .. }
            | SelfClusterResourcesRequired
            | MissingReference { .. } => StatusCode::BAD_REQUEST,
            BodyTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            Duplicate { .. } | LeaseLost { .. } => StatusCode::CONFLICT,
            QuotaExceeded { .. } => StatusCode::TOO_MANY_REQUESTS,
            ShuttingDown => StatusCode::SERVICE_UNAVAILABLE,
            Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The Vantiq error code.
    pub fn code(&self) -> &'static str {
        use ApiError::*;
        match self {
            NotFound { .. } => "io.vantiq.resource.not.found",
            UnknownResource(_) => "io.vantiq.type.system.resource.unknown",
            NoRoute(_) => "io.vantiq.http.route.unknown",
            Unauthenticated => "io.vantiq.authentication.required",
            BadCredentials => "io.vantiq.authentication.failed",
            InvalidToken => "io.vantiq.authentication.token.invalid",
            Forbidden { .. } => "io.vantiq.authorization.denied",
            WrongNamespace { .. } => "io.vantiq.authorization.namespace.denied",
            MalformedJson(_) => "io.vantiq.json.invalid",
            BodyTooLarge(_) => "io.vantiq.request.too.large",
            InvalidArgument { .. } => "io.vantiq.argument.invalid",
            InvalidQuery(_) => "io.vantiq.query.invalid",
            Duplicate { .. } => "io.vantiq.resource.duplicate",
            OperationNotAllowed { .. } => "io.vantiq.resource.operation.not.allowed",
            UnknownOperation { .. } => "io.vantiq.resources.k8s.operation.unknown",
            ValidationFailed(_) => "io.vantiq.resources.k8s.request.invalid",
            ClusterInUse { .. } => "io.vantiq.resources.k8s.cluster.in.use",
            InstallationOnOtherCluster { .. } => {
                "io.vantiq.resources.k8s.installation.other.cluster"
            }
            SelfClusterAdminOnly => "io.vantiq.resources.k8s.self.cluster.admin.only",
            SelfClusterWrongNamespace { .. } => {
                "io.vantiq.resources.k8s.self.cluster.wrong.namespace"
            }
            SelfClusterResourcesRequired => {
                "io.vantiq.resources.k8s.self.cluster.resources.required"
            }
            QuotaExceeded { .. } => "io.vantiq.resources.k8s.self.cluster.quota.exceeded",
            MissingReference { .. } => "io.vantiq.resources.k8s.reference.missing",
            LeaseLost { .. } => "io.vantiq.resources.k8s.workitem.lease.lost",
            UnknownProcedure(_) => "io.vantiq.procedure.unknown",
            ShuttingDown => "io.vantiq.server.shutting.down",
            Internal(_) => "io.vantiq.internal.error",
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
            Forbidden { action, namespace } => vec![json!(action), json!(namespace)],
            WrongNamespace { token, target } => vec![json!(token), json!(target)],
            BodyTooLarge(limit) => vec![json!(limit)],
            InvalidArgument { field, .. } => vec![json!(field)],
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

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        if let ApiError::Internal(error) = &self {
            tracing::error!(error = %error, "request failed on storage");
        }
        (status, Json(vec![self.to_vantiq()])).into_response()
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

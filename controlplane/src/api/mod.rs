//! The HTTP API: Vantiq's resource URLs under `/api/v1/resources`, plus
//! `/authenticate`, the document download under `/docs`, and `/healthz`.
//!
//! Every error leaves in Vantiq's shape; responses the router or a layer
//! produce on their own (405, 413) are rewritten into it by
//! [`vantiq_error_shape`].

mod clusters;
mod doc_table;
mod documents;
mod extract;
mod identity;
mod installations;
mod procedures;

use axum::Json;
use axum::Router;
use axum::extract::{DefaultBodyLimit, Request};
use axum::http::{HeaderMap, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use k8sworker_client::protocol::{ServerVersion, WORKER_PROTOCOL_VERSION};
use serde_json::{Value, json};

use crate::auth::{Action, Caller};
use crate::error::{ApiError, vantiq_body_for_status};
use crate::operations::{self, Rules, Target};
use crate::server::AppState;

const R: &str = "/api/v1/resources";

/// `GET /api/v1/version`: what this server is and which worker protocol it
/// speaks, so a worker can log it and choose between long-poll and polling.
/// Any valid token may ask.
async fn version(
    axum::extract::State(state): axum::extract::State<AppState>,
    _caller: Caller,
) -> Json<ServerVersion> {
    Json(ServerVersion {
        name: Some("k8sworker-controlplane".into()),
        version: Some(env!("CARGO_PKG_VERSION").into()),
        worker_protocol: Some(WORKER_PROTOCOL_VERSION),
        long_poll: Some(true),
        max_claim_wait_seconds: Some(state.config.max_claim_wait.as_secs()),
    })
}

/// The application's routes.
pub fn router(state: AppState) -> Router {
    let limit = state.config.max_body_bytes;
    Router::new()
        .route("/healthz", get(|| async { Json(json!({"status": "ok"})) }))
        .route("/api/v1/version", get(version))
        .route("/authenticate", get(identity::authenticate))
        .route("/authenticate/refresh", post(identity::refresh))
        .route(
            &format!("{R}/tokens"),
            get(identity::list_tokens).post(identity::create_token),
        )
        .route(
            &format!("{R}/tokens/{{name}}"),
            axum::routing::delete(identity::delete_token),
        )
        .route(
            &format!("{R}/users"),
            get(identity::list_users).post(identity::create_user),
        )
        .route(
            &format!("{R}/namespaces"),
            get(identity::list_namespaces).post(identity::create_namespace),
        )
        .route(
            &format!("{R}/namespaces/{{name}}"),
            get(identity::get_namespace).put(identity::update_namespace),
        )
        .route(
            &format!("{R}/k8sclusters"),
            get(clusters::list)
                .post(clusters::insert)
                .delete(clusters::delete_where),
        )
        .route(&format!("{R}/k8sclusters/select"), post(clusters::select))
        .route(
            &format!("{R}/k8sclusters/{{name}}"),
            get(clusters::get_one)
                .put(clusters::update)
                .delete(clusters::delete_one),
        )
        .route(
            &format!("{R}/k8sclusters/{{name}}/command"),
            post(clusters::command),
        )
        .route(
            &format!("{R}/k8sinstallations"),
            get(installations::list)
                .post(installations::read_only)
                .delete(installations::read_only),
        )
        .route(
            &format!("{R}/k8sinstallations/select"),
            post(installations::select),
        )
        .route(
            &format!("{R}/k8sinstallations/{{name}}"),
            get(installations::get_one)
                .put(installations::read_only)
                .patch(installations::read_only)
                .delete(installations::read_only),
        )
        .route(
            &format!("{R}/k8sinstallations/{{name}}/command"),
            post(installations::command),
        )
        .route(
            &format!("{R}/k8sworkitems"),
            get(installations::list_workitems)
                .delete(installations::delete_workitems_where)
                .post(installations::workitems_read_only),
        )
        .route(
            &format!("{R}/k8sworkitems/select"),
            post(installations::select_workitems),
        )
        .route(
            &format!("{R}/k8sworkitems/{{id}}"),
            get(installations::get_workitem)
                .delete(installations::delete_workitem)
                .put(installations::workitems_read_only)
                .patch(installations::workitems_read_only),
        )
        .route(
            &format!("{R}/documents"),
            get(documents::list).post(documents::upload),
        )
        .route(&format!("{R}/documents/select"), post(documents::select))
        .route(
            &format!("{R}/documents/{{*name}}"),
            get(documents::get_one).delete(documents::delete_one),
        )
        .route("/docs/{*name}", get(documents::download))
        .route(
            &format!("{R}/secrets"),
            get(documents::list_secrets).post(documents::put_secret),
        )
        .route(
            &format!("{R}/secrets/{{name}}"),
            get(documents::get_secret)
                .put(documents::update_secret)
                .delete(documents::delete_secret),
        )
        .route(&format!("{R}/procedures/{{name}}"), post(procedures::call))
        .fallback(fallback)
        .layer(axum::middleware::map_response(vantiq_error_shape))
        .layer(DefaultBodyLimit::max(limit))
        .layer(tower_http::trace::TraceLayer::new_for_http())
        .layer(k8sworker_telemetry::ServerTraceLayer::new("http.request"))
        .with_state(state)
}

/// Unknown paths: an unknown resource type under `/api/v1/resources`,
/// otherwise an unknown route.
async fn fallback(request: Request) -> ApiError {
    let path = request.uri().path();
    if let Some(rest) = path.strip_prefix("/api/v1/resources/") {
        let rest = rest.strip_prefix("custom/").unwrap_or(rest);
        let resource = rest.split('/').next().unwrap_or_default();
        return ApiError::UnknownResource(resource.chars().take(200).collect());
    }
    ApiError::NoRoute(path.chars().take(200).collect())
}

/// Rewrites an error response that is not JSON (a router 405, a rejected
/// body) into Vantiq's `[{code, message, params}]`.
async fn vantiq_error_shape(response: Response) -> Response {
    let status = response.status();
    if !(status.is_client_error() || status.is_server_error()) {
        return response;
    }
    let is_json = response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .is_some_and(|value| value.starts_with("application/json"));
    if is_json {
        return response;
    }
    let mut rewritten = (status, Json(vantiq_body_for_status(status))).into_response();
    if let Some(allow) = response.headers().get(header::ALLOW) {
        rewritten.headers_mut().insert(header::ALLOW, allow.clone());
    }
    rewritten
}

/// Shared by both command endpoints: validate, enqueue, wake the cluster's
/// long-polling workers, answer the workitem.
async fn run_command(
    state: AppState,
    caller: Caller,
    headers: &HeaderMap,
    target: Target,
    body: Value,
) -> Result<Json<Value>, ApiError> {
    caller.require(Action::RequestOperation)?;
    let (op, data) = clusters::command_parts(body)?;
    let traceparent = crate::trace_context::for_request(headers);
    let rules = Rules {
        self_k8s_namespace: state.config.self_k8s_namespace.clone(),
    };
    let row = state
        .store
        .transaction(move |tx| {
            operations::request(tx, &caller, &target, &op, &data, traceparent, &rules)
        })
        .await?;
    tracing::info!(
        namespace = %row.namespace,
        cluster = %row.cluster,
        installation = %row.installation,
        operation = %row.operation,
        request_id = %row.request_id,
        "workitem requested"
    );
    state.wakeups.wake(&row.namespace, &row.cluster);
    Ok(Json(row.to_doc()))
}

//! The HTTP API: Vantiq's resource URLs under `/api/v1/resources`, plus
//! `/authenticate`, the document download under `/docs`, and `/healthz` and
//! `/readyz` (both answer 200 only while storage serves).
//!
//! A handler that panics fails only its own request: the panic is caught
//! and answered as a Vantiq 500 (`CatchPanicLayer`), and a panic inside a
//! storage transaction rolls it back ([`crate::store::Store::run`]).
//!
//! The API is the edge: it reads requests, asks the layers below
//! ([`crate::operations`], [`crate::store`], [`crate::lifecycle`],
//! [`crate::auth`]) and turns their answers and errors into Vantiq's
//! ([`error`]). The list, select, get and delete routes of every resource
//! type share one set of handlers ([`resource`]).
//!
//! Every error leaves in Vantiq's shape; responses the router or a layer
//! produce on their own (405, 413) are rewritten into it by
//! `vantiq_error_shape`.

mod clusters;
mod command;
mod documents;
mod drafts;
pub mod error;
mod extract;
mod identity;
mod installations;
mod operations;
mod procedures;
pub mod resource;
mod secrets;
mod templates;
mod workitems;

use axum::Json;
use axum::Router;
use axum::extract::{DefaultBodyLimit, Request};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use k8sworker_client::protocol::{ServerVersion, WORKER_PROTOCOL_VERSION};
use serde_json::json;

use self::clusters::Clusters;
use self::documents::Documents;
use self::error::{ApiError, vantiq_body_for_status};
use self::identity::Tokens;
use self::installations::Installations;
use self::operations::Operations;
use self::resource::{delete_one, delete_where, get_one, list, select};
use self::secrets::Secrets;
use self::workitems::Workitems;
use crate::auth::Caller;
use crate::state::AppState;

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

/// `GET /healthz` and `GET /readyz` (no token): 200 `{"status": "ok"}`
/// when storage answers a read through the shared connection, else 503
/// `io.vantiq.storage.unavailable`, so a probe restarts or drains a server
/// whose storage cannot serve.
async fn health(
    axum::extract::State(state): axum::extract::State<AppState>,
) -> Result<Json<serde_json::Value>, ApiError> {
    state
        .store
        .check()
        .await
        .map_err(ApiError::StorageUnavailable)?;
    Ok(Json(json!({"status": "ok"})))
}

/// A handler's panic as a Vantiq 500; the request fails alone.
fn panic_response(payload: Box<dyn std::any::Any + Send + 'static>) -> Response {
    let message = payload
        .downcast_ref::<&str>()
        .map(|text| (*text).to_owned())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_default();
    tracing::error!(panic = %message, "a request handler panicked");
    ApiError::Panicked.into_response()
}

/// The application's routes.
///
/// With `--vantiq-strict` only Vantiq's documented surface: no
/// `/api/v1/version` (so a gateway on `--protocol auto` speaks the REST
/// protocol), no worker procedures ([`procedures`]), and the worker
/// token's writes of `k8sworkitems` status and `k8sinstallations` records
/// (`docs/worker-protocol.md`, "The documented-REST protocol").
pub fn router(state: AppState) -> Router {
    let limit = state.config.max_body_bytes;
    let strict = state.config.vantiq_strict;
    let installations = if strict {
        get(list::<Installations>)
            .post(installations::upsert)
            .delete(installations::read_only)
    } else {
        get(list::<Installations>)
            .post(installations::read_only)
            .delete(installations::read_only)
    };
    let installation = get(get_one::<Installations>)
        .put(installations::read_only)
        .patch(installations::read_only);
    let installation = if strict {
        installation.delete(installations::remove)
    } else {
        installation.delete(installations::read_only)
    };
    let workitem = get(get_one::<Workitems>).patch(workitems::read_only);
    let workitem = if strict {
        workitem.put(workitems::update).delete(workitems::remove)
    } else {
        workitem
            .put(workitems::read_only)
            .delete(delete_one::<Workitems>)
    };
    let router = Router::new()
        .route("/healthz", get(health))
        .route("/readyz", get(health));
    let router = if state.config.no_metrics {
        router
    } else {
        router.route("/metrics", get(k8sworker_telemetry::metrics::scrape))
    };
    let router = if strict {
        router
    } else {
        router.route("/api/v1/version", get(version))
    };
    router
        .route("/authenticate", get(identity::authenticate))
        .route("/authenticate/refresh", post(identity::refresh))
        .route(
            &format!("{R}/tokens"),
            get(identity::list_tokens).post(identity::create_token),
        )
        .route(
            &format!("{R}/tokens/{{name}}"),
            delete(delete_one::<Tokens>),
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
            get(list::<Clusters>)
                .post(clusters::insert)
                .delete(delete_where::<Clusters>),
        )
        .route(&format!("{R}/k8sclusters/select"), post(select::<Clusters>))
        .route(
            &format!("{R}/k8sclusters/{{name}}"),
            get(get_one::<Clusters>)
                .put(clusters::update)
                .delete(delete_one::<Clusters>),
        )
        .route(
            &format!("{R}/k8sclusters/{{name}}/command"),
            post(command::run::<Clusters>),
        )
        .route(
            &format!("{R}/k8sclusters/{{name}}/workerTemplates"),
            get(templates::download),
        )
        .route(&format!("{R}/k8sinstallations"), installations)
        .route(
            &format!("{R}/k8sinstallations/select"),
            post(select::<Installations>),
        )
        .route(
            &format!("{R}/k8sinstallations/validate"),
            post(drafts::validate),
        )
        .route(
            &format!("{R}/k8sinstallations/preview"),
            post(drafts::preview),
        )
        .route(&format!("{R}/k8sinstallations/{{name}}"), installation)
        .route(
            &format!("{R}/k8sinstallations/{{name}}/command"),
            post(command::run::<Installations>),
        )
        .route(
            &format!("{R}/k8sworkitems"),
            get(list::<Workitems>)
                .delete(delete_where::<Workitems>)
                .post(workitems::read_only),
        )
        .route(
            &format!("{R}/k8sworkitems/select"),
            post(select::<Workitems>),
        )
        .route(&format!("{R}/k8sworkitems/{{id}}"), workitem)
        .route(&format!("{R}/k8soperations"), get(list::<Operations>))
        .route(
            &format!("{R}/k8soperations/select"),
            post(select::<Operations>),
        )
        .route(
            &format!("{R}/k8soperations/{{id}}"),
            get(get_one::<Operations>),
        )
        .route(
            &format!("{R}/documents"),
            get(list::<Documents>).post(documents::upload),
        )
        .route(&format!("{R}/documents/select"), post(select::<Documents>))
        .route(
            &format!("{R}/documents/{{*name}}"),
            get(get_one::<Documents>).delete(documents::delete),
        )
        .route("/docs/{*name}", get(documents::download))
        .route(
            &format!("{R}/secrets"),
            get(list::<Secrets>).post(secrets::put_secret),
        )
        .route(
            &format!("{R}/secrets/{{name}}"),
            get(get_one::<Secrets>)
                .put(secrets::update_secret)
                .delete(delete_one::<Secrets>),
        )
        .route(&format!("{R}/procedures/{{name}}"), post(procedures::call))
        .fallback(fallback)
        .layer(tower_http::catch_panic::CatchPanicLayer::custom(
            panic_response,
        ))
        .layer(axum::middleware::map_response(vantiq_error_shape))
        .layer(DefaultBodyLimit::max(limit))
        .layer(tower_http::trace::TraceLayer::new_for_http().make_span_with(request_span))
        .layer(k8sworker_telemetry::ServerTraceLayer::http(matched_route))
        .with_state(state)
}

/// The route template a request matched (`/api/v1/resources/k8sclusters/{name}`),
/// which names its server span; `None` for the fallback.
fn matched_route(extensions: &http::Extensions) -> Option<String> {
    extensions
        .get::<axum::extract::MatchedPath>()
        .map(|path| path.as_str().to_owned())
}

/// The access log's span of a request: method, version and the URI with
/// every query value redacted, since `?token=` (Vantiq documents it) may
/// carry an access token. Nothing else in the server records a URI.
fn request_span(request: &Request) -> tracing::Span {
    tracing::debug_span!(
        "request",
        method = %request.method(),
        uri = %redacted_uri(request.uri()),
        version = ?request.version(),
    )
}

/// `uri`'s path and query with every query value replaced by
/// [`crate::secret_config::REDACTED`] (the names stay, for the log reader).
pub fn redacted_uri(uri: &http::Uri) -> String {
    let path = uri.path();
    let Some(query) = uri.query() else {
        return path.to_owned();
    };
    let redacted: Vec<String> = query
        .split('&')
        .map(|pair| match pair.split_once('=') {
            Some((name, _)) => format!("{name}={}", crate::secret_config::REDACTED),
            None => pair.to_owned(),
        })
        .collect();
    format!("{path}?{}", redacted.join("&"))
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_values_are_redacted_before_a_uri_is_recorded() {
        let uri: http::Uri = "/api/v1/resources/k8sclusters?token=abc.def&where=%7B%7D&count"
            .parse()
            .unwrap();
        let recorded = redacted_uri(&uri);
        assert_eq!(
            recorded,
            "/api/v1/resources/k8sclusters?token=<redacted>&where=<redacted>&count"
        );
        assert!(!recorded.contains("abc.def"));
        assert_eq!(redacted_uri(&"/healthz".parse().unwrap()), "/healthz");
    }

    #[test]
    fn a_handler_panic_is_a_vantiq_500() {
        for payload in [
            Box::new("a literal") as Box<dyn std::any::Any + Send>,
            Box::new(String::from("a format")),
            Box::new(7_u8),
        ] {
            let response = panic_response(payload);
            assert_eq!(response.status(), http::StatusCode::INTERNAL_SERVER_ERROR);
            let content_type = response.headers()[header::CONTENT_TYPE].to_str().unwrap();
            assert!(
                content_type.starts_with("application/json"),
                "{content_type}"
            );
        }
    }
}

//! The web console under `/ui/`: Vantiq's K8s screens (clusters, the
//! cluster panel, the deploy dialog, installations, the operation history)
//! as server-rendered HTML, with one small script for as-you-type
//! validation and updates without reload (`assets/console.js`).
//!
//! The console is a client of the REST API in the same process: each page
//! calls the API router with the session's token, so every read and every
//! action is authorised exactly as over REST, and a refusal shows the
//! server's own message. What a page offers follows the caller's
//! [`Grants`](crate::auth::Grants); the `k8sWorker__system` profile gets no
//! console at all.
//!
//! Session: the access token of `/authenticate` lives in an `HttpOnly`,
//! `SameSite=Strict` cookie scoped to `/ui` (`Secure` when the request came
//! over TLS, `X-Forwarded-Proto: https`, or with `--console-secure-cookie`).
//! Every form post carries a CSRF token derived from the session token
//! (`session::csrf_token`); the login form carries one of its own, matched against
//! a cookie (double submit). An expired or revoked token sends the browser
//! back to the login page, which says so. Logout revokes the token.

mod assets;
mod deploy;
mod pages;
mod session;

use std::net::SocketAddr;

use axum::Router;
use axum::body::Body;
use axum::extract::{ConnectInfo, FromRequest as _, Path, Query, Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use base64::Engine as _;
use serde_json::{Value, json};
use tower::ServiceExt as _;

use self::session::{
    BASE, ConsoleError, ConsoleState, FormPairs, LOGIN_COOKIE, MAX_VIEWED_DOCUMENT, SESSION_COOKIE,
    Session, checked_form, cookie_value, document_path, error_message, field, over_tls, page,
    query, same, see_other, segment, set_cookie,
};
use crate::auth::{Action, token_hash};
use crate::state::AppState;

/// `router` with the console mounted under `/ui/` (and `/` sending a browser
/// there); `router` is the API ([`crate::api::router`]), which the console
/// calls in-process.
pub fn mount(router: Router, app: AppState) -> Router {
    let state = ConsoleState {
        app,
        api: router.clone(),
    };
    let console = Router::new()
        .route("/", get(|| async { Redirect::to("/ui/clusters") }))
        .route("/login", get(login_page).post(login))
        .route("/logout", post(logout))
        .route("/assets/{name}", get(assets::serve))
        .route("/clusters", get(clusters).post(new_cluster))
        .route("/clusters/{name}", get(cluster))
        .route("/clusters/{name}/delete", post(delete_cluster))
        .route("/clusters/{name}/templates", get(templates))
        .route(
            "/clusters/{name}/deploy",
            get(deploy::form_page).post(deploy::submit),
        )
        .route("/clusters/{name}/deploy/validate", post(deploy::validate))
        .route("/workitems/{id}/cancel", post(cancel_workitem))
        .route("/installations", get(installations))
        .route("/installations/{name}", get(installation))
        .route("/installations/{name}/command", post(installation_command))
        .route("/documents/{*name}", get(document))
        .layer(axum::middleware::map_response(security_headers))
        .with_state(state);
    router
        .route("/ui/", get(|| async { Redirect::to("/ui/clusters") }))
        .nest(BASE, console)
}

/// Every console answer: no framing, no sniffing, scripts and styles only
/// from the console itself, nothing cached.
async fn security_headers(mut response: Response) -> Response {
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'self'; img-src 'self' data:; frame-ancestors 'none'; form-action 'self'",
        ),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    if !headers.contains_key(header::CACHE_CONTROL) {
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    response
}

#[derive(Debug, serde::Deserialize)]
struct LoginQuery {
    expired: Option<String>,
    out: Option<String>,
}

async fn login_page(
    State(state): State<ConsoleState>,
    headers: HeaderMap,
    Query(params): Query<LoginQuery>,
) -> Response {
    let notice = if params.expired.is_some() {
        Some("Your session has expired or was revoked. Sign in again.")
    } else if params.out.is_some() {
        Some("You are signed out.")
    } else {
        None
    };
    login_form(&state, &headers, notice, None, StatusCode::OK)
}

fn login_form(
    state: &ConsoleState,
    headers: &HeaderMap,
    notice: Option<&str>,
    error: Option<&str>,
    status: StatusCode,
) -> Response {
    let nonce = crate::auth::new_token();
    let mut response = (status, pages::login(&nonce, notice, error)).into_response();
    response.headers_mut().append(
        header::SET_COOKIE,
        set_cookie(LOGIN_COOKIE, Some(&nonce), over_tls(state, headers)),
    );
    response
}

/// `POST /ui/login`: `/authenticate` with the form's user name and
/// password; the token becomes the session cookie.
async fn login(State(state): State<ConsoleState>, request: Request) -> Response {
    let connect = request
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .cloned();
    let headers = request.headers().clone();
    let secure = over_tls(&state, &headers);
    let Ok(axum::Form(form)) = FormPairs::from_request(request, &()).await else {
        return login_form(
            &state,
            &headers,
            None,
            Some("The form could not be read."),
            StatusCode::BAD_REQUEST,
        );
    };
    let expected = cookie_value(&headers, LOGIN_COOKIE).unwrap_or_default();
    let sent = field(&form, "csrf").unwrap_or_default();
    if expected.is_empty() || !same(sent, &expected) {
        return login_form(
            &state,
            &headers,
            None,
            Some("The sign-in form expired; try again."),
            StatusCode::FORBIDDEN,
        );
    }
    let username = field(&form, "username").unwrap_or_default();
    let password = field(&form, "password").unwrap_or_default();
    let basic = base64::engine::general_purpose::STANDARD.encode(format!("{username}:{password}"));
    let mut call = http::Request::builder()
        .uri("/authenticate")
        .header(header::AUTHORIZATION, format!("Basic {basic}"))
        .body(Body::empty())
        .expect("a well-formed request");
    if let Some(connect) = connect {
        call.extensions_mut().insert(connect);
    }
    let Ok(response) = state.api.clone().oneshot(call).await;
    let status = response.status();
    let bytes = axum::body::to_bytes(response.into_body(), 64 * 1024)
        .await
        .unwrap_or_default();
    let body: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    let token = body.get("accessToken").and_then(Value::as_str);
    match token {
        Some(token) if status.is_success() => {
            let profiles = body.get("profiles").cloned().unwrap_or(json!([]));
            let grants = crate::auth::Grants::from_profiles(
                &profiles
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(Value::as_str)
                    .collect::<Vec<_>>(),
            );
            if !grants.admin && !grants.user {
                revoke(&state.app, token).await;
                return login_form(
                    &state,
                    &headers,
                    None,
                    Some("This account's profile has no console."),
                    StatusCode::FORBIDDEN,
                );
            }
            let home = if grants.allows(Action::ReadClusters) {
                "/ui/clusters"
            } else {
                "/ui/installations"
            };
            see_other(
                home,
                vec![
                    set_cookie(SESSION_COOKIE, Some(token), secure),
                    set_cookie(LOGIN_COOKIE, None, secure),
                ],
            )
        }
        _ => {
            let message = if status == StatusCode::TOO_MANY_REQUESTS {
                error_message(status, &body)
            } else {
                "Wrong user name or password.".to_owned()
            };
            login_form(&state, &headers, None, Some(&message), status)
        }
    }
}

/// Deletes a session token (logout).
async fn revoke(app: &AppState, token: &str) {
    let hash = token_hash(token);
    let result = app
        .store
        .transaction(move |tx| crate::store::identity::delete_token_by_hash(tx, &hash))
        .await;
    if let Err(error) = result {
        tracing::warn!(%error, "console logout: the token could not be revoked");
    }
}

/// `POST /ui/logout`: revokes the session token and clears the cookie.
async fn logout(
    State(state): State<ConsoleState>,
    session: Session,
    axum::Form(form): FormPairs,
) -> Result<Response, ConsoleError> {
    checked_form(&session, &form)?;
    revoke(&state.app, &session.token).await;
    Ok(see_other(
        "/ui/login?out=1",
        vec![set_cookie(SESSION_COOKIE, None, session.secure)],
    ))
}

/// `GET /ui/clusters`: the clusters with their installations and waiting
/// workitems.
async fn clusters(
    State(state): State<ConsoleState>,
    session: Session,
) -> Result<Response, ConsoleError> {
    if !session.may(Action::ReadClusters) {
        return Ok(Redirect::to("/ui/installations").into_response());
    }
    let clusters = state
        .list(&session, "/api/v1/resources/k8sclusters")
        .await?
        .unwrap_or_default();
    let installations = state
        .list(&session, "/api/v1/resources/k8sinstallations")
        .await?
        .unwrap_or_default();
    let workitems = state
        .list(&session, "/api/v1/resources/k8sworkitems")
        .await?
        .unwrap_or_default();
    Ok(page(
        &session,
        pages::clusters(&session, &clusters, &installations, &workitems),
    ))
}

/// `POST /ui/clusters`: a new cluster (`name`, `ingressDefaultNode`).
async fn new_cluster(
    State(state): State<ConsoleState>,
    session: Session,
    axum::Form(form): FormPairs,
) -> Result<Response, ConsoleError> {
    checked_form(&session, &form)?;
    let name = field(&form, "name").unwrap_or_default().trim();
    let mut body = json!({"name": name});
    if let Some(node) = field(&form, "ingressDefaultNode").map(str::trim)
        && !node.is_empty()
    {
        body["ingressDefaultNode"] = json!(node);
    }
    let done = format!("/ui/clusters/{name}");
    state
        .act(
            &session,
            (Method::POST, "/api/v1/resources/k8sclusters", Some(&body)),
            (&done, "/ui/clusters"),
            |_| format!("Cluster {name} created."),
            "Cluster not created",
        )
        .await
}

/// `POST /ui/clusters/{name}/delete`: the server refuses while work is
/// outstanding, and its message is shown.
async fn delete_cluster(
    State(state): State<ConsoleState>,
    session: Session,
    Path(name): Path<String>,
    axum::Form(form): FormPairs,
) -> Result<Response, ConsoleError> {
    checked_form(&session, &form)?;
    state
        .act(
            &session,
            (
                Method::DELETE,
                &format!("/api/v1/resources/k8sclusters/{}", segment(&name)),
                None,
            ),
            ("/ui/clusters", "/ui/clusters"),
            |_| format!("Cluster {name} deleted."),
            &format!("Cluster {name} not deleted"),
        )
        .await
}

/// `GET /ui/clusters/{name}`: the cluster panel.
async fn cluster(
    State(state): State<ConsoleState>,
    session: Session,
    Path(name): Path<String>,
) -> Result<Response, ConsoleError> {
    let record = state
        .get(
            &session,
            &format!("/api/v1/resources/k8sclusters/{}", segment(&name)),
        )
        .await?;
    let by_cluster = json!({"clusterName": name}).to_string();
    let installations = state
        .list(
            &session,
            &format!(
                "/api/v1/resources/k8sinstallations?{}",
                query(&[("where", &by_cluster)])
            ),
        )
        .await?
        .unwrap_or_default();
    let workitems = state
        .list(
            &session,
            &format!(
                "/api/v1/resources/k8sworkitems?{}",
                query(&[("where", &by_cluster)])
            ),
        )
        .await?
        .unwrap_or_default();
    let history = state
        .history(&session, json!({"clusterName": name}))
        .await?;
    let trace_ui = state.app.config.trace_ui_url.clone();
    Ok(page(
        &session,
        pages::cluster(
            &session,
            &record,
            &installations,
            &workitems,
            history.as_deref(),
            trace_ui.as_deref(),
        ),
    ))
}

/// `GET /ui/clusters/{name}/templates`: the worker's deployment templates
/// as a zip, with this console's origin as the control-plane URL.
async fn templates(
    State(state): State<ConsoleState>,
    session: Session,
    headers: HeaderMap,
    Path(name): Path<String>,
) -> Result<Response, ConsoleError> {
    let host = headers
        .get(header::HOST)
        .and_then(|value| value.to_str().ok())
        .unwrap_or("127.0.0.1");
    let scheme = if over_tls(&state, &headers) {
        "https"
    } else {
        "http"
    };
    let url = format!("{scheme}://{host}");
    let response = state
        .call_raw(
            &session,
            Method::GET,
            &format!(
                "/api/v1/resources/k8sclusters/{}/workerTemplates?{}",
                segment(&name),
                query(&[("url", &url)])
            ),
            None,
        )
        .await;
    let status = response.status();
    if status.is_success() {
        return Ok(response);
    }
    if matches!(
        status,
        StatusCode::NOT_FOUND | StatusCode::METHOD_NOT_ALLOWED
    ) {
        return Err(ConsoleError::Api(
            status,
            "This server does not offer the worker templates download.".into(),
        ));
    }
    let bytes = axum::body::to_bytes(response.into_body(), 64 * 1024)
        .await
        .unwrap_or_default();
    let body = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    Err(ConsoleError::Api(status, error_message(status, &body)))
}

/// `POST /ui/workitems/{id}/cancel`: cancels a workitem not yet started.
async fn cancel_workitem(
    State(state): State<ConsoleState>,
    session: Session,
    Path(id): Path<String>,
    axum::Form(form): FormPairs,
) -> Result<Response, ConsoleError> {
    checked_form(&session, &form)?;
    let back = field(&form, "back")
        .filter(|back| back.starts_with("/ui/") && !back.starts_with("/ui//"))
        .unwrap_or("/ui/clusters")
        .to_owned();
    state
        .act(
            &session,
            (
                Method::DELETE,
                &format!("/api/v1/resources/k8sworkitems/{}", segment(&id)),
                None,
            ),
            (&back, &back),
            |_| format!("Workitem {id} cancelled."),
            &format!("Workitem {id} not cancelled"),
        )
        .await
}

/// `GET /ui/installations`: every installation the caller may read.
async fn installations(
    State(state): State<ConsoleState>,
    session: Session,
) -> Result<Response, ConsoleError> {
    let installations = state
        .list(&session, "/api/v1/resources/k8sinstallations")
        .await?
        .unwrap_or_default();
    Ok(page(
        &session,
        pages::installations(&session, &installations),
    ))
}

/// `GET /ui/installations/{name}`: the installation page.
async fn installation(
    State(state): State<ConsoleState>,
    session: Session,
    Path(name): Path<String>,
) -> Result<Response, ConsoleError> {
    let record = state
        .get(
            &session,
            &format!("/api/v1/resources/k8sinstallations/{}", segment(&name)),
        )
        .await?;
    let cluster = record
        .get("clusterName")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned();
    let workitems = if session.may(Action::ReadWorkitems) {
        state
            .list(
                &session,
                &format!(
                    "/api/v1/resources/k8sworkitems?{}",
                    query(&[("where", &json!({"installationName": name}).to_string())])
                ),
            )
            .await?
            .unwrap_or_default()
    } else {
        Vec::new()
    };
    let documents = if session.may(Action::ReadDocuments) {
        let prefix = format!("^{}/{}/", regex::escape(&cluster), regex::escape(&name));
        state
            .list(
                &session,
                &format!(
                    "/api/v1/resources/documents?{}",
                    query(&[("where", &json!({"name": {"$regex": prefix}}).to_string())])
                ),
            )
            .await?
            .unwrap_or_default()
    } else {
        Vec::new()
    };
    let history = state
        .history(
            &session,
            json!({"clusterName": cluster, "installationName": name}),
        )
        .await?;
    let trace_ui = state.app.config.trace_ui_url.clone();
    Ok(page(
        &session,
        pages::installation(
            &session,
            &record,
            &workitems,
            &documents,
            history.as_deref(),
            trace_ui.as_deref(),
        ),
    ))
}

/// `POST /ui/installations/{name}/command`: `op` one of shutdown, restart,
/// undeploy, fetchLogs (with an optional `podName`) or verify.
async fn installation_command(
    State(state): State<ConsoleState>,
    session: Session,
    Path(name): Path<String>,
    axum::Form(form): FormPairs,
) -> Result<Response, ConsoleError> {
    checked_form(&session, &form)?;
    let op = field(&form, "op").unwrap_or_default();
    if !pages::INSTALLATION_OPERATIONS.contains(&op) {
        return Err(ConsoleError::Api(
            StatusCode::BAD_REQUEST,
            format!("`{op}` is not an operation of the console"),
        ));
    }
    let mut data = json!({"name": name});
    if op == "fetchLogs"
        && let Some(pod) = field(&form, "podName").map(str::trim)
        && !pod.is_empty()
    {
        data["podName"] = json!(pod);
    }
    let back = format!("/ui/installations/{name}");
    state
        .act(
            &session,
            (
                Method::POST,
                &format!(
                    "/api/v1/resources/k8sinstallations/{}/command",
                    segment(&name)
                ),
                Some(&json!({"op": op, "data": data})),
            ),
            (&back, &back),
            |item| {
                format!(
                    "{op} requested (workitem {}).",
                    item.get("requestId").and_then(Value::as_str).unwrap_or("?")
                )
            },
            &format!("{op} refused"),
        )
        .await
}

/// `GET /ui/documents/{name}`: a document (a fetched log) as text.
async fn document(
    State(state): State<ConsoleState>,
    session: Session,
    Path(name): Path<String>,
) -> Result<Response, ConsoleError> {
    let response = state
        .call_raw(
            &session,
            Method::GET,
            &format!("/docs/{}", document_path(&name)),
            None,
        )
        .await;
    let status = response.status();
    let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
        .await
        .unwrap_or_default();
    if status == StatusCode::UNAUTHORIZED {
        return Err(ConsoleError::SignedOut {
            expired: true,
            secure: session.secure,
        });
    }
    if !status.is_success() {
        let body = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        return Err(ConsoleError::Api(status, error_message(status, &body)));
    }
    let shown = &bytes[..bytes.len().min(MAX_VIEWED_DOCUMENT)];
    let text = String::from_utf8_lossy(shown);
    Ok(page(
        &session,
        pages::document(&session, &name, &text, bytes.len() > shown.len()),
    ))
}

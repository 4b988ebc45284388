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
//! ([`csrf_token`]); the login form carries one of its own, matched against
//! a cookie (double submit). An expired or revoked token sends the browser
//! back to the login page, which says so. Logout revokes the token.

mod assets;
mod deploy;
mod pages;

use std::net::SocketAddr;

use axum::Router;
use axum::body::Body;
use axum::extract::{ConnectInfo, FromRequest as _, FromRequestParts, Path, Query, Request, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use base64::Engine as _;
use cookie::{Cookie, SameSite};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use tower::ServiceExt as _;

use crate::auth::{Action, Caller, token_hash};
use crate::state::AppState;

/// The session cookie: the access token.
const SESSION_COOKIE: &str = "k8sworker_session";
/// The login form's double-submit CSRF cookie.
const LOGIN_COOKIE: &str = "k8sworker_login";
/// A one-shot message for the next page (base64url text).
const FLASH_COOKIE: &str = "k8sworker_flash";
/// Where the console lives.
const BASE: &str = "/ui";
/// The largest document the log viewer shows, in bytes.
const MAX_VIEWED_DOCUMENT: usize = 1 << 20;

/// What the console's handlers share: the application state and the API
/// router they call.
#[derive(Clone)]
pub struct ConsoleState {
    app: AppState,
    api: Router,
}

impl std::fmt::Debug for ConsoleState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConsoleState").finish_non_exhaustive()
    }
}

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

/// The CSRF token of a session: SHA-256 of a fixed prefix and the session
/// token, hex. A page can only hold it if it could read the session, which
/// another site cannot.
pub fn csrf_token(token: &str) -> String {
    hex::encode(Sha256::digest(format!("k8sworker-console-csrf:{token}")))
}

/// Compares two strings in time independent of where they differ.
fn same(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |diff, (x, y)| diff | (x ^ y))
            == 0
}

fn cookie_value(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(Cookie::split_parse)
        .filter_map(Result::ok)
        .find(|cookie| cookie.name() == name)
        .map(|cookie| cookie.value().to_owned())
}

/// Whether cookies should be `Secure` for this request.
fn over_tls(state: &ConsoleState, headers: &HeaderMap) -> bool {
    state.app.config.console_secure_cookie
        || headers
            .get("x-forwarded-proto")
            .and_then(|value| value.to_str().ok())
            .is_some_and(|proto| proto.eq_ignore_ascii_case("https"))
}

/// A `Set-Cookie` value scoped to the console; `None` clears it.
fn set_cookie(name: &str, value: Option<&str>, secure: bool) -> HeaderValue {
    let mut cookie = Cookie::build((name.to_owned(), value.unwrap_or("").to_owned()))
        .path(BASE)
        .http_only(true)
        .same_site(SameSite::Strict)
        .secure(secure);
    if value.is_none() {
        cookie = cookie.max_age(cookie::time::Duration::ZERO);
    }
    HeaderValue::from_str(&cookie.build().to_string()).expect("cookie text is a header value")
}

/// A 303 to `location` with extra `Set-Cookie`s.
fn see_other(location: &str, cookies: Vec<HeaderValue>) -> Response {
    let mut response = Redirect::to(location).into_response();
    for cookie in cookies {
        response.headers_mut().append(header::SET_COOKIE, cookie);
    }
    response
}

/// A 303 to `location` that shows `message` there once.
fn redirect_with(location: &str, message: &str, secure: bool) -> Response {
    let encoded = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(message);
    see_other(
        location,
        vec![set_cookie(FLASH_COOKIE, Some(&encoded), secure)],
    )
}

/// The signed-in caller of a console request.
#[derive(Debug, Clone)]
pub struct Session {
    token: String,
    caller: Caller,
    /// The CSRF token every form of this session carries.
    pub csrf: String,
    secure: bool,
    flash: Option<String>,
}

impl Session {
    /// Whether the caller's profiles allow `action`.
    pub fn may(&self, action: Action) -> bool {
        self.caller.require(action).is_ok()
    }

    /// The user name.
    pub fn username(&self) -> &str {
        &self.caller.username
    }

    /// The namespace the session is bound to.
    pub fn namespace(&self) -> &str {
        &self.caller.namespace
    }

    /// The profile to show: `admin` or `user`.
    pub fn profile(&self) -> &'static str {
        if self.caller.grants.admin {
            "admin"
        } else {
            "user"
        }
    }
}

/// Why a console request was not served.
#[derive(Debug)]
pub enum ConsoleError {
    /// No session (`expired`: there was one and the server no longer
    /// accepts its token).
    SignedOut {
        /// Whether a token was presented and refused.
        expired: bool,
        /// Whether the cookie is to be `Secure`.
        secure: bool,
    },
    /// The token's profile has no console (the worker profile).
    NoConsole,
    /// A form post without the session's CSRF token.
    Csrf,
    /// The API refused: its status and message.
    Api(StatusCode, String),
}

impl IntoResponse for ConsoleError {
    fn into_response(self) -> Response {
        match self {
            ConsoleError::SignedOut { expired, secure } => {
                let target = if expired {
                    "/ui/login?expired=1"
                } else {
                    "/ui/login"
                };
                see_other(target, vec![set_cookie(SESSION_COOKIE, None, secure)])
            }
            ConsoleError::NoConsole => (
                StatusCode::FORBIDDEN,
                pages::message_page(
                    "No console",
                    "This token's profile has no console: sign in as an admin or a user.",
                ),
            )
                .into_response(),
            ConsoleError::Csrf => (
                StatusCode::FORBIDDEN,
                pages::message_page(
                    "Refused",
                    "The form was not sent by this console (missing or wrong CSRF token). Reload the page and try again.",
                ),
            )
                .into_response(),
            ConsoleError::Api(status, message) => {
                (status, pages::message_page("Refused", &message)).into_response()
            }
        }
    }
}

impl FromRequestParts<ConsoleState> for Session {
    type Rejection = ConsoleError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &ConsoleState,
    ) -> Result<Self, Self::Rejection> {
        let secure = over_tls(state, &parts.headers);
        let Some(token) = cookie_value(&parts.headers, SESSION_COOKIE).filter(|t| !t.is_empty())
        else {
            return Err(ConsoleError::SignedOut {
                expired: false,
                secure,
            });
        };
        let caller = resolve(&state.app, &token)
            .await
            .ok_or(ConsoleError::SignedOut {
                expired: true,
                secure,
            })?;
        if !caller.grants.admin && !caller.grants.user {
            return Err(ConsoleError::NoConsole);
        }
        let flash = cookie_value(&parts.headers, FLASH_COOKIE)
            .and_then(|text| {
                base64::engine::general_purpose::URL_SAFE_NO_PAD
                    .decode(text)
                    .ok()
            })
            .and_then(|bytes| String::from_utf8(bytes).ok());
        Ok(Session {
            csrf: csrf_token(&token),
            token,
            caller,
            secure,
            flash,
        })
    }
}

/// The caller a token stands for, as the API sees it; `None` when the
/// token is unknown or expired.
async fn resolve(app: &AppState, token: &str) -> Option<Caller> {
    let (mut parts, ()) = http::Request::builder()
        .header(header::AUTHORIZATION, format!("Bearer {token}"))
        .body(())
        .ok()?
        .into_parts();
    Caller::from_request_parts(&mut parts, app).await.ok()
}

/// A rendered page; the flash message, if any, is shown once and cleared.
fn page(session: &Session, markup: maud::Markup) -> Response {
    let mut response = axum::response::Html(markup.into_string()).into_response();
    if session.flash.is_some() {
        response.headers_mut().append(
            header::SET_COOKIE,
            set_cookie(FLASH_COOKIE, None, session.secure),
        );
    }
    response
}

/// The message of a Vantiq error body (an array of `{code, message}`), or
/// the body's text.
fn error_message(status: StatusCode, body: &Value) -> String {
    let messages: Vec<String> = match body {
        Value::Array(errors) => errors
            .iter()
            .filter_map(|e| e.get("message").and_then(Value::as_str))
            .map(str::to_owned)
            .collect(),
        Value::Object(map) => map
            .get("message")
            .and_then(Value::as_str)
            .map(str::to_owned)
            .into_iter()
            .collect(),
        _ => Vec::new(),
    };
    if messages.is_empty() {
        format!("the server answered {status}")
    } else {
        messages.join("; ")
    }
}

/// A query string value, percent-encoded.
fn query(pairs: &[(&str, &str)]) -> String {
    serde_urlencoded::to_string(pairs).expect("strings encode")
}

impl ConsoleState {
    /// Calls the API as the session; the raw answer.
    async fn call_raw(
        &self,
        session: &Session,
        method: Method,
        uri: &str,
        body: Option<&Value>,
    ) -> Response {
        let mut request = http::Request::builder()
            .method(method)
            .uri(uri)
            .header(header::AUTHORIZATION, format!("Bearer {}", session.token));
        let body = match body {
            Some(value) => {
                request = request.header(header::CONTENT_TYPE, "application/json");
                Body::from(value.to_string())
            }
            None => Body::empty(),
        };
        let request = request.body(body).expect("a well-formed request");
        match self.api.clone().oneshot(request).await {
            Ok(response) => response,
            Err(never) => match never {},
        }
    }

    /// Calls the API as the session: the JSON answer of a 2xx (`null` when
    /// empty), or why not. A 401 means the session ended.
    async fn call(
        &self,
        session: &Session,
        method: Method,
        uri: &str,
        body: Option<&Value>,
    ) -> Result<Value, ConsoleError> {
        let response = self.call_raw(session, method, uri, body).await;
        let status = response.status();
        let bytes = axum::body::to_bytes(response.into_body(), self.app.config.max_body_bytes)
            .await
            .unwrap_or_default();
        let value = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes).unwrap_or(Value::Null)
        };
        if status == StatusCode::UNAUTHORIZED {
            return Err(ConsoleError::SignedOut {
                expired: true,
                secure: session.secure,
            });
        }
        if !status.is_success() {
            return Err(ConsoleError::Api(status, error_message(status, &value)));
        }
        Ok(value)
    }

    /// Performs a form post's API `call` (method, URI, body) and sends the
    /// browser on: to `to.0` with `done(answer)` shown, or, when the server
    /// refuses, to `to.1` with `refused` and the server's message.
    async fn act(
        &self,
        session: &Session,
        call: (Method, &str, Option<&Value>),
        to: (&str, &str),
        done: impl FnOnce(&Value) -> String,
        refused: &str,
    ) -> Result<Response, ConsoleError> {
        let (method, uri, body) = call;
        match self.call(session, method, uri, body).await {
            Ok(answer) => Ok(redirect_with(to.0, &done(&answer), session.secure)),
            Err(ConsoleError::Api(_, message)) => Ok(redirect_with(
                to.1,
                &format!("{refused}: {message}"),
                session.secure,
            )),
            Err(other) => Err(other),
        }
    }

    /// `GET uri` as the session: the JSON answer, or why not.
    async fn get(&self, session: &Session, uri: &str) -> Result<Value, ConsoleError> {
        self.call(session, Method::GET, uri, None).await
    }

    /// A list as the session may read it; a refusal (403) is an empty list
    /// and a missing endpoint (404) `None`.
    async fn list(&self, session: &Session, uri: &str) -> Result<Option<Vec<Value>>, ConsoleError> {
        match self.get(session, uri).await {
            Ok(Value::Array(items)) => Ok(Some(items)),
            Ok(_) => Ok(Some(Vec::new())),
            Err(ConsoleError::Api(StatusCode::FORBIDDEN, _)) => Ok(Some(Vec::new())),
            Err(ConsoleError::Api(StatusCode::NOT_FOUND | StatusCode::METHOD_NOT_ALLOWED, _)) => {
                Ok(None)
            }
            Err(other) => Err(other),
        }
    }

    /// The operation history matching `filter`, newest first (`None`
    /// where the server keeps none).
    async fn history(
        &self,
        session: &Session,
        filter: Value,
    ) -> Result<Option<Vec<Value>>, ConsoleError> {
        if !session.caller.grants.admin {
            // Admins only, as over REST.
            return Ok(Some(Vec::new()));
        }
        let uri = format!(
            "/api/v1/resources/k8soperations?{}",
            query(&[
                ("where", &filter.to_string()),
                ("sort", r#"{"requestedAt":-1}"#),
                ("limit", "50"),
            ])
        );
        self.list(session, &uri).await
    }
}

/// Reads a posted form and checks its CSRF token.
fn checked_form(session: &Session, form: &[(String, String)]) -> Result<(), ConsoleError> {
    let sent = field(form, "csrf").unwrap_or_default();
    if same(sent, &session.csrf) {
        Ok(())
    } else {
        Err(ConsoleError::Csrf)
    }
}

/// The first value of `name` in a posted form.
fn field<'a>(form: &'a [(String, String)], name: &str) -> Option<&'a str> {
    form.iter()
        .find(|(key, _)| key == name)
        .map(|(_, value)| value.as_str())
}

type FormPairs = axum::Form<Vec<(String, String)>>;

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
                &format!("/api/v1/resources/k8sclusters/{name}"),
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
        .get(&session, &format!("/api/v1/resources/k8sclusters/{name}"))
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
                "/api/v1/resources/k8sclusters/{name}/workerTemplates?{}",
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
                &format!("/api/v1/resources/k8sworkitems/{id}"),
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
            &format!("/api/v1/resources/k8sinstallations/{name}"),
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
                &format!("/api/v1/resources/k8sinstallations/{name}/command"),
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
        .call_raw(&session, Method::GET, &format!("/docs/{name}"), None)
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

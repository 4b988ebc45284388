//! The console's session and what every handler shares: the signed-in
//! caller ([`Session`], from the cookie), the API client ([`ConsoleState`]),
//! CSRF checks, cookies and redirects, and [`ConsoleError`].

use axum::Router;
use axum::body::Body;
use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use base64::Engine as _;
use cookie::{Cookie, SameSite};
use maud::{DOCTYPE, Markup, html};
use serde_json::Value;
use sha2::{Digest, Sha256};
use tower::ServiceExt as _;

use crate::auth::{Action, Caller};
use crate::state::AppState;

/// The session cookie: the access token.
pub(super) const SESSION_COOKIE: &str = "k8sworker_session";
/// The login form's double-submit CSRF cookie.
pub(super) const LOGIN_COOKIE: &str = "k8sworker_login";
/// A one-shot message for the next page (base64url text).
pub(super) const FLASH_COOKIE: &str = "k8sworker_flash";
/// Where the console lives.
pub(super) const BASE: &str = "/ui";
/// The largest document the log viewer shows, in bytes.
pub(super) const MAX_VIEWED_DOCUMENT: usize = 1 << 20;

/// What the console's handlers share: the application state and the API
/// router they call.
#[derive(Clone)]
pub struct ConsoleState {
    pub(super) app: AppState,
    pub(super) api: Router,
}

impl std::fmt::Debug for ConsoleState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConsoleState").finish_non_exhaustive()
    }
}

/// The CSRF token of a session: SHA-256 of a fixed prefix and the session
/// token, hex. A page can only hold it if it could read the session, which
/// another site cannot.
pub fn csrf_token(token: &str) -> String {
    hex::encode(Sha256::digest(format!("k8sworker-console-csrf:{token}")))
}

/// Compares two strings in time independent of where they differ.
pub(super) fn same(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |diff, (x, y)| diff | (x ^ y))
            == 0
}

pub(super) fn cookie_value(headers: &HeaderMap, name: &str) -> Option<String> {
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
pub(super) fn over_tls(state: &ConsoleState, headers: &HeaderMap) -> bool {
    state.app.config.console_secure_cookie
        || headers
            .get("x-forwarded-proto")
            .and_then(|value| value.to_str().ok())
            .is_some_and(|proto| proto.eq_ignore_ascii_case("https"))
}

/// A `Set-Cookie` value scoped to the console; `None` clears it.
pub(super) fn set_cookie(name: &str, value: Option<&str>, secure: bool) -> HeaderValue {
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
pub(super) fn see_other(location: &str, cookies: Vec<HeaderValue>) -> Response {
    let mut response = Redirect::to(location).into_response();
    for cookie in cookies {
        response.headers_mut().append(header::SET_COOKIE, cookie);
    }
    response
}

/// A 303 to `location` that shows `message` there once.
pub(super) fn redirect_with(location: &str, message: &str, secure: bool) -> Response {
    let encoded = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(message);
    see_other(
        location,
        vec![set_cookie(FLASH_COOKIE, Some(&encoded), secure)],
    )
}

/// The signed-in caller of a console request.
#[derive(Debug, Clone)]
pub struct Session {
    pub(super) token: String,
    pub(super) caller: Caller,
    /// The CSRF token every form of this session carries.
    pub csrf: String,
    pub(super) secure: bool,
    pub(super) flash: Option<String>,
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
                message_page(
                    "No console",
                    "This token's profile has no console: sign in as an admin or a user.",
                ),
            )
                .into_response(),
            ConsoleError::Csrf => (
                StatusCode::FORBIDDEN,
                message_page(
                    "Refused",
                    "The form was not sent by this console (missing or wrong CSRF token). Reload the page and try again.",
                ),
            )
                .into_response(),
            ConsoleError::Api(status, message) => {
                (status, message_page("Refused", &message)).into_response()
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
pub(super) async fn resolve(app: &AppState, token: &str) -> Option<Caller> {
    let (mut parts, ()) = http::Request::builder()
        .header(header::AUTHORIZATION, format!("Bearer {token}"))
        .body(())
        .ok()?
        .into_parts();
    Caller::from_request_parts(&mut parts, app).await.ok()
}

/// A rendered page; the flash message, if any, is shown once and cleared.
pub(super) fn page(session: &Session, markup: maud::Markup) -> Response {
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
pub(super) fn error_message(status: StatusCode, body: &Value) -> String {
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

/// What [`segment`] leaves as is: the unreserved characters of RFC 3986
/// (section 2.3); everything else is percent-encoded.
const SEGMENT: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// A name from a console path as one segment of an API path: `/`, `?`,
/// `#`, `%`, spaces and controls percent-encoded, so a name is never
/// another resource, another query or a request that cannot be built (the
/// API's path extraction decodes it back to the name).
pub(super) fn segment(name: &str) -> String {
    let encoded = percent_encoding::utf8_percent_encode(name, SEGMENT).to_string();
    match encoded.as_str() {
        // A dot segment would be resolved away by a proxy in front of the API.
        "." => "%2E".to_owned(),
        ".." => "%2E%2E".to_owned(),
        _ => encoded,
    }
}

/// A document's name as a path: each `/`-separated part one [`segment`],
/// so `?`, `#` or `%` in a name neither cut a link or an API call short
/// nor point it at another document.
pub(super) fn document_path(name: &str) -> String {
    name.split('/').map(segment).collect::<Vec<_>>().join("/")
}

/// A query string value, percent-encoded.
pub(super) fn query(pairs: &[(&str, &str)]) -> String {
    serde_urlencoded::to_string(pairs).expect("strings encode")
}

impl ConsoleState {
    /// Calls the API as the session; the raw answer.
    pub(super) async fn call_raw(
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
    pub(super) async fn call(
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
    pub(super) async fn act(
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
    pub(super) async fn get(&self, session: &Session, uri: &str) -> Result<Value, ConsoleError> {
        self.call(session, Method::GET, uri, None).await
    }

    /// A list as the session may read it; a refusal (403) is an empty list
    /// and a missing endpoint (404) `None`.
    pub(super) async fn list(
        &self,
        session: &Session,
        uri: &str,
    ) -> Result<Option<Vec<Value>>, ConsoleError> {
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
    pub(super) async fn history(
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
pub(super) fn checked_form(
    session: &Session,
    form: &[(String, String)],
) -> Result<(), ConsoleError> {
    let sent = field(form, "csrf").unwrap_or_default();
    if same(sent, &session.csrf) {
        Ok(())
    } else {
        Err(ConsoleError::Csrf)
    }
}

/// The first value of `name` in a posted form.
pub(super) fn field<'a>(form: &'a [(String, String)], name: &str) -> Option<&'a str> {
    form.iter()
        .find(|(key, _)| key == name)
        .map(|(_, value)| value.as_str())
}

pub(super) type FormPairs = axum::Form<Vec<(String, String)>>;

pub fn head(title: &str) -> Markup {
    html! {
        head {
            meta charset="utf-8";
            meta name="viewport" content="width=device-width, initial-scale=1";
            title { (title) " · k8sworker" }
            link rel="stylesheet" href="/ui/assets/console.css";
            script src="/ui/assets/console.js" defer {}
        }
    }
}

/// A page with a heading and a message, for refusals.
pub fn message_page(title: &str, message: &str) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            (head(title))
            body {
                main #main {
                    h1 { (title) }
                    p.problems role="alert" #message { (message) }
                    p { a href="/ui/" { "Back to the console" } }
                }
            }
        }
    }
}

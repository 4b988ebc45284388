//! One HTTP client of a control plane (Vantiq, or k8sworker-controlplane):
//! the worker protocol's procedures, typed, and Vantiq's REST API.
//!
//! ```text
//! Client::builder(base).token(t).build() ──▶ Client
//!   call(&ClaimWorkitem{..})        POST /api/v1/resources/procedures/K8sManager.claimWorkitem
//!   version() / cluster(name)       GET  /api/v1/version, /api/v1/resources/k8sclusters/<name>
//!   upload_document / document(s)   POST /api/v1/resources/documents (multipart), GET …
//!   download_document(name)         GET  /docs/<name>
//!   get / post / put / delete       any path: status and JSON body, for tests and tools
//!   login(user, password)           GET  /authenticate (Basic) → a client with the session token
//! ```
//!
//! Every request carries the current tracing span's W3C `traceparent`, so
//! the server's spans join the caller's trace. The token goes only into the
//! `Authorization` header (marked sensitive); `Debug`, errors and logs never
//! show it. Each call has a timeout; a claim's is the client's timeout plus
//! the claim's long-poll wait, so a waiting claim is never cut short.
//! HTTP/1.1 only; no proxy (the client talks to the control plane directly).

use std::sync::Arc;
use std::time::Duration;

use reqwest::Method;
use reqwest::header::{AUTHORIZATION, HeaderMap, HeaderValue};
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject as _;
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::documents::{self, Document};
use crate::error::{BuildError, Error};
use crate::protocol::{Procedure, ServerVersion};
use crate::token::AccessToken;

/// Timeout of each call unless [`ClientBuilder::timeout`] says otherwise.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);
/// How long establishing a connection (TCP and TLS) may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Idle connections are closed after this long, before a server or a load
/// balancer (typically 60 s) closes them under a request.
const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(50);

/// An HTTP answer as it came: the status and the body as JSON (`null` when
/// the body is empty or not JSON). For tests and tools that assert on
/// refusals; the typed calls turn refusals into [`Error`]s instead.
#[derive(Debug, Clone, PartialEq)]
pub struct Answer {
    /// The HTTP status.
    pub status: u16,
    /// The body, parsed.
    pub body: Value,
}

impl Answer {
    /// Whether the status is 2xx.
    pub fn is_success(&self) -> bool {
        (200..300).contains(&self.status)
    }
}

/// Configuration of a [`Client`].
#[derive(Debug)]
pub struct ClientBuilder {
    base: String,
    token: Option<AccessToken>,
    timeout: Duration,
    user_agent: String,
    extra_roots: Vec<CertificateDer<'static>>,
    error: Option<BuildError>,
}

impl ClientBuilder {
    /// Calls carry `token` as `Authorization: Bearer <token>`.
    pub fn token(mut self, token: AccessToken) -> Self {
        self.token = Some(token);
        self
    }

    /// Timeout of each call (a claim adds its long-poll wait); default
    /// [`DEFAULT_TIMEOUT`].
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// The `User-Agent` header; default `k8sworker-client/<version>`.
    pub fn user_agent(mut self, user_agent: impl Into<String>) -> Self {
        self.user_agent = user_agent.into();
        self
    }

    /// Also trusts the CA certificates in `pem` (one or more `CERTIFICATE`
    /// blocks), besides the platform's. A PEM that does not read fails
    /// [`ClientBuilder::build`].
    pub fn root_certificates_pem(mut self, pem: &[u8]) -> Self {
        for certificate in CertificateDer::pem_slice_iter(pem) {
            match certificate {
                Ok(certificate) => self.extra_roots.push(certificate),
                Err(error) => {
                    self.error.get_or_insert(BuildError::Certificate(error));
                }
            }
        }
        self
    }

    /// The client; no I/O yet.
    pub fn build(self) -> Result<Client, BuildError> {
        if let Some(error) = self.error {
            return Err(error);
        }
        let base = self.base.trim_end_matches('/').to_owned();
        let has_host = base
            .strip_prefix("http://")
            .or_else(|| base.strip_prefix("https://"))
            .is_some_and(|rest| !rest.is_empty() && !rest.starts_with('/'));
        if !has_host {
            return Err(BuildError::Url(self.base));
        }
        let authorization = self.token.as_ref().map(authorization).transpose()?;
        let tls = crate::tls::client_config(self.extra_roots).map_err(BuildError::Tls)?;
        let http = reqwest::Client::builder()
            .tls_backend_preconfigured(tls)
            .connect_timeout(CONNECT_TIMEOUT)
            .tcp_nodelay(true)
            .pool_idle_timeout(POOL_IDLE_TIMEOUT)
            .no_proxy()
            .user_agent(self.user_agent)
            .build()
            .map_err(BuildError::Http)?;
        Ok(Client {
            http,
            base: base.into(),
            authorization,
            timeout: self.timeout,
        })
    }
}

/// `Bearer <token>`, marked sensitive so that no header dump shows it.
fn authorization(token: &AccessToken) -> Result<HeaderValue, BuildError> {
    let mut value = HeaderValue::from_str(&format!("Bearer {}", token.expose()))
        .map_err(|_| BuildError::Token)?;
    value.set_sensitive(true);
    Ok(value)
}

/// A client of one control plane, with one token (or none, to log in).
/// Cloning is cheap and shares the connection pool.
#[derive(Clone)]
pub struct Client {
    http: reqwest::Client,
    base: Arc<str>,
    authorization: Option<HeaderValue>,
    timeout: Duration,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("base", &self.base)
            .field("authenticated", &self.authorization.is_some())
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

impl Client {
    /// A builder for a client of the server at `base` (e.g.
    /// `https://vantiq.example.com`; a trailing `/` is ignored).
    pub fn builder(base: &str) -> ClientBuilder {
        ClientBuilder {
            base: base.to_owned(),
            token: None,
            timeout: DEFAULT_TIMEOUT,
            user_agent: concat!("k8sworker-client/", env!("CARGO_PKG_VERSION")).to_owned(),
            extra_roots: Vec::new(),
            error: None,
        }
    }

    /// The server's base URL, without a trailing `/`.
    pub fn base(&self) -> &str {
        &self.base
    }

    /// The same client (and connection pool) with another token.
    pub fn with_token(&self, token: &AccessToken) -> Result<Client, BuildError> {
        Ok(Client {
            authorization: Some(authorization(token)?),
            ..self.clone()
        })
    }

    /// Logs in with `GET /authenticate` (HTTP Basic); a client with the
    /// session token. A wrong password is [`Error::Unauthorized`].
    pub async fn login(&self, username: &str, password: &str) -> Result<Client, Error> {
        let token = self.authenticate(username, password).await?;
        self.with_token(&token)
            .map_err(|_| Error::Protocol("/authenticate answered an unusable token".into()))
    }

    /// `GET /authenticate` (HTTP Basic): the session token itself, for a
    /// tool that keeps it (the `k8sworker` command line). A wrong password is
    /// [`Error::Unauthorized`].
    pub async fn authenticate(&self, username: &str, password: &str) -> Result<AccessToken, Error> {
        #[derive(serde::Deserialize)]
        #[serde(rename_all = "camelCase")]
        struct Session {
            access_token: String,
        }
        let url = self.url("/authenticate");
        let request = self
            .http
            .get(&url)
            .basic_auth(username, Some(password))
            .timeout(self.timeout);
        let (status, body) = self.exchange(request, &url, false).await?;
        if !(200..300).contains(&status) {
            return Err(Error::refusal(status, &body, None));
        }
        let session: Session = decode("/authenticate", &body)?;
        Ok(AccessToken::new(session.access_token))
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// Sends `request` with the trace context (and the token, when
    /// `authorize`); the status and body of the answer.
    async fn exchange(
        &self,
        request: reqwest::RequestBuilder,
        url: &str,
        authorize: bool,
    ) -> Result<(u16, Vec<u8>), Error> {
        let mut headers = HeaderMap::new();
        k8sworker_telemetry::inject_current(&mut headers);
        if authorize && let Some(authorization) = &self.authorization {
            headers.insert(AUTHORIZATION, authorization.clone());
        }
        let response = request
            .headers(headers)
            .send()
            .await
            .map_err(|error| Error::unreachable(url, error))?;
        let status = response.status().as_u16();
        let body = response
            .bytes()
            .await
            .map_err(|error| Error::unreachable(url, error))?;
        Ok((status, body.to_vec()))
    }

    /// One authorized call with a JSON body (or none).
    async fn send(
        &self,
        method: Method,
        path: &str,
        body: Option<&(impl Serialize + ?Sized)>,
        timeout: Duration,
    ) -> Result<(u16, Vec<u8>), Error> {
        let url = self.url(path);
        let mut request = self.http.request(method, &url).timeout(timeout);
        if let Some(body) = body {
            request = request.json(body);
        }
        self.exchange(request, &url, true).await
    }

    /// `method path` with `body` as JSON; the answer as it came. Only a
    /// transport failure is an error.
    pub async fn request(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> Result<Answer, Error> {
        let (status, body) = self.send(method, path, body, self.timeout).await?;
        Ok(Answer {
            status,
            body: serde_json::from_slice(&body).unwrap_or(Value::Null),
        })
    }

    /// `GET path`; the answer as it came.
    pub async fn get(&self, path: &str) -> Result<Answer, Error> {
        self.request(Method::GET, path, None).await
    }

    /// `POST path` with `body`; the answer as it came.
    pub async fn post(&self, path: &str, body: &Value) -> Result<Answer, Error> {
        self.request(Method::POST, path, Some(body)).await
    }

    /// `PUT path` with `body`; the answer as it came.
    pub async fn put(&self, path: &str, body: &Value) -> Result<Answer, Error> {
        self.request(Method::PUT, path, Some(body)).await
    }

    /// `DELETE path`; the answer as it came.
    pub async fn delete(&self, path: &str) -> Result<Answer, Error> {
        self.request(Method::DELETE, path, None).await
    }

    /// `GET path`, the answer read as `T`; a refusal is an [`Error`].
    pub async fn get_json<T: DeserializeOwned>(&self, path: &str) -> Result<T, Error> {
        let (status, body) = self
            .send(Method::GET, path, None::<&Value>, self.timeout)
            .await?;
        success(path, status, &body, None)
    }

    /// `POST path` with `body` as JSON, the answer read as `T`; a refusal
    /// is an [`Error`].
    pub async fn post_json<T: DeserializeOwned>(
        &self,
        path: &str,
        body: &(impl Serialize + ?Sized),
    ) -> Result<T, Error> {
        let (status, answer) = self
            .send(Method::POST, path, Some(body), self.timeout)
            .await?;
        success(path, status, &answer, None)
    }

    /// Calls a worker-protocol procedure with `params`; its answer.
    ///
    /// Errors: [`Error::LeaseLost`] (409 on a call about a held workitem),
    /// [`Error::NotFound`] (the workitem is gone, or no such cluster),
    /// [`Error::NotImplemented`] (the server has no such procedure),
    /// [`Error::Unauthorized`], [`Error::Rejected`] (e.g. an invalid
    /// parameter), and the transient [`Error::Unreachable`] and
    /// [`Error::Server`].
    pub async fn call<P: Procedure>(&self, params: &P) -> Result<P::Answer, Error> {
        let path = format!("/api/v1/resources/procedures/{}", P::NAME);
        let timeout = self.timeout + params.server_wait();
        let (status, body) = self
            .send(Method::POST, &path, Some(params), timeout)
            .await?;
        success(P::NAME, status, &body, params.request_id())
    }

    /// `GET /api/v1/version`: what the server is and whether it long-polls.
    /// A server without the endpoint answers [`Error::NotFound`].
    pub async fn version(&self) -> Result<ServerVersion, Error> {
        self.get_json("/api/v1/version").await
    }

    /// `GET /api/v1/resources/<resource>?where=&sort=&limit=` (Vantiq's
    /// select parameters, each JSON-encoded and URL-escaped,
    /// `vantiq-api.md` §5.2): the matching instances, in the sort's order.
    pub async fn select(
        &self,
        resource: &str,
        filter: &Value,
        sort: &Value,
        limit: u32,
    ) -> Result<Vec<Value>, Error> {
        let path = format!("/api/v1/resources/{resource}");
        let url = self.url(&path);
        let query = [
            ("where", filter.to_string()),
            ("sort", sort.to_string()),
            ("limit", limit.to_string()),
        ];
        let request = self.http.get(&url).query(&query).timeout(self.timeout);
        let (status, body) = self.exchange(request, &url, true).await?;
        success(&path, status, &body, None)
    }

    /// `PUT /api/v1/resources/<resource>/<id>` with `changes` (Vantiq's
    /// update: only the properties given change); the answer's body.
    pub async fn update(&self, resource: &str, id: &str, changes: &Value) -> Result<Value, Error> {
        let path = format!("/api/v1/resources/{resource}/{id}");
        let (status, body) = self
            .send(Method::PUT, &path, Some(changes), self.timeout)
            .await?;
        success(&path, status, &body, None)
    }

    /// `POST /api/v1/resources/<resource>?upsert=true` with `instance`
    /// (created, or merged into the instance with its key).
    pub async fn upsert(&self, resource: &str, instance: &Value) -> Result<Value, Error> {
        let path = format!("/api/v1/resources/{resource}?upsert=true");
        let (status, body) = self
            .send(Method::POST, &path, Some(instance), self.timeout)
            .await?;
        success(&path, status, &body, None)
    }

    /// `DELETE /api/v1/resources/<resource>/<id>`; [`Error::NotFound`]
    /// when there is none.
    pub async fn delete_one(&self, resource: &str, id: &str) -> Result<(), Error> {
        let path = format!("/api/v1/resources/{resource}/{id}");
        let (status, body) = self
            .send(Method::DELETE, &path, None::<&Value>, self.timeout)
            .await?;
        success::<Value>(&path, status, &body, None).map(drop)
    }

    /// `GET /api/v1/resources/<resource>/<id>`; `None` on 404.
    pub async fn find(&self, resource: &str, id: &str) -> Result<Option<Value>, Error> {
        match self
            .get_json(&format!("/api/v1/resources/{resource}/{id}"))
            .await
        {
            Ok(found) => Ok(Some(found)),
            Err(Error::NotFound { .. }) => Ok(None),
            Err(error) => Err(error),
        }
    }

    /// `GET /healthz` (no token needed): `Ok` when the server says it is live.
    pub async fn health(&self) -> Result<(), Error> {
        self.get_json::<Value>("/healthz").await.map(drop)
    }

    /// The K8sCluster `name` of the token's namespace
    /// (`GET /api/v1/resources/k8sclusters/<name>`); [`Error::NotFound`]
    /// when there is none.
    pub async fn cluster(&self, name: &str) -> Result<Value, Error> {
        self.get_json(&format!("/api/v1/resources/k8sclusters/{name}"))
            .await
    }

    /// Uploads (or replaces) the document `name` with `content` of type
    /// `content_type` (multipart `POST /api/v1/resources/documents`: the
    /// name as the `documentPath` field, the content as the `file` part
    /// named after the name's last segment); its metadata.
    pub async fn upload_document(
        &self,
        name: &str,
        content: Vec<u8>,
        content_type: &str,
    ) -> Result<Document, Error> {
        let path = "/api/v1/resources/documents";
        let url = self.url(path);
        let file_name = name.rsplit('/').next().unwrap_or(name).to_owned();
        let file = reqwest::multipart::Part::bytes(content)
            .file_name(file_name)
            .mime_str(content_type)
            .map_err(|_| {
                Error::Protocol(format!("`{content_type}` is not a valid content type"))
            })?;
        let form = reqwest::multipart::Form::new()
            .text(documents::PATH_FIELD, name.to_owned())
            .part(documents::FILE_FIELD, file);
        let request = self.http.post(&url).multipart(form).timeout(self.timeout);
        let (status, body) = self.exchange(request, &url, true).await?;
        success(path, status, &body, None)
    }

    /// Every document's metadata (`GET /api/v1/resources/documents`).
    pub async fn documents(&self) -> Result<Vec<Document>, Error> {
        self.get_json("/api/v1/resources/documents").await
    }

    /// The metadata of the document `name`; [`Error::NotFound`] when there
    /// is none.
    pub async fn document(&self, name: &str) -> Result<Document, Error> {
        self.get_json(&format!("/api/v1/resources/documents/{name}"))
            .await
    }

    /// The bytes of the document `name` (`GET /docs/<name>`);
    /// [`Error::NotFound`] when there is none.
    pub async fn download_document(&self, name: &str) -> Result<Vec<u8>, Error> {
        let path = format!("/docs/{name}");
        let (status, body) = self
            .send(Method::GET, &path, None::<&Value>, self.timeout)
            .await?;
        if (200..300).contains(&status) {
            Ok(body)
        } else {
            Err(Error::refusal(status, &body, None))
        }
    }
}

/// A 2xx answer read as `T` (an empty body reads as `null`), else the
/// refusal.
fn success<T: DeserializeOwned>(
    what: &str,
    status: u16,
    body: &[u8],
    request_id: Option<&str>,
) -> Result<T, Error> {
    if (200..300).contains(&status) {
        decode(what, body)
    } else {
        Err(Error::refusal(status, body, request_id))
    }
}

fn decode<T: DeserializeOwned>(what: &str, body: &[u8]) -> Result<T, Error> {
    let body: &[u8] = if body.iter().all(u8::is_ascii_whitespace) {
        b"null"
    } else {
        body
    };
    serde_json::from_slice(body).map_err(|error| Error::Protocol(format!("{what}: {error}")))
}

//! The control plane as the gateway sees it: Vantiq's REST API with the
//! worker token, and the worker protocol (`docs/worker-protocol.md`) as
//! `K8sManager.*` procedures.
//!
//! ```text
//! claimWorkitem {clusterName, workerId, leaseSeconds, waitSeconds} → workitem + lease | null
//! renewWorkitemLease {requestId, leaseId, leaseSeconds}
//! completeWorkitem {requestId, leaseId, installation: {...}}
//! failWorkitem {requestId, leaseId, status, message}
//! releaseWorkitem {requestId, leaseId}
//! POST /documents (multipart)                                     fetchLogs output
//! ```
//!
//! Every request carries the current span's `traceparent`, so the control
//! plane's own spans join the workitem's trace. The token is only ever put
//! in the `Authorization` header; errors and logs never contain it.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::header::{AUTHORIZATION, CONTENT_TYPE, HeaderValue, USER_AGENT};
use http::{HeaderMap, Method, Request};
use http_body_util::{BodyExt as _, Full};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde_json::{Value, json};

use crate::config::AccessToken;

type HttpClient = Client<HttpsConnector<HttpConnector>, Full<Bytes>>;

/// A transport failure, boxed (hyper, TLS, I/O, a timeout).
pub type TransportError = Box<dyn std::error::Error + Send + Sync>;

/// Vantiq's error code for a lost lease (HTTP 409).
const LEASE_LOST: &str = "io.vantiq.resources.k8s.workitem.lease.lost";
/// Vantiq's error code for an unknown procedure (HTTP 404).
const UNKNOWN_PROCEDURE: &str = "io.vantiq.procedure.unknown";

/// Why a control-plane call failed.
#[derive(Debug, thiserror::Error)]
pub enum ControlPlaneError {
    #[error("the control plane at {url} could not be reached")]
    Unreachable {
        url: String,
        #[source]
        source: TransportError,
    },
    #[error("the control plane refused the access token (HTTP {status}): {message}")]
    Unauthorized { status: u16, message: String },
    #[error(
        "the server does not implement the k8sworker worker protocol ({message}); it needs the K8sManager claim/renew/complete/fail/release procedures"
    )]
    NotImplemented { message: String },
    #[error("the lease on workitem {request_id} was lost: {message}")]
    LeaseLost { request_id: String, message: String },
    #[error("the control plane refused the request (HTTP {status}): {message}")]
    Rejected { status: u16, message: String },
    #[error("the control plane failed (HTTP {status}): {message}")]
    Server { status: u16, message: String },
    #[error("the control plane answered something the worker protocol does not allow: {0}")]
    Protocol(String),
}

impl ControlPlaneError {
    /// Whether asking again later may succeed (the server is down,
    /// restarting or overloaded).
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            ControlPlaneError::Unreachable { .. } | ControlPlaneError::Server { .. }
        )
    }
}

/// What the server says about itself.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ServerInfo {
    /// `name version`, when the server has a version endpoint.
    pub version: Option<String>,
    /// Whether the server says its claims can wait (long-poll); `None` when
    /// it does not say.
    pub long_poll: Option<bool>,
}

/// A client of one control plane, for one cluster.
#[derive(Clone)]
pub struct ControlPlane {
    http: HttpClient,
    base: String,
    token: AccessToken,
    timeout: Duration,
}

impl std::fmt::Debug for ControlPlane {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ControlPlane")
            .field("base", &self.base)
            .finish_non_exhaustive()
    }
}

/// The message of a Vantiq error body (`[{code, message, params}]`, a single
/// object, or a legacy `{"error": ...}`), with its code.
pub fn error_message(body: &str) -> (Option<String>, String) {
    let parsed: Option<Value> = serde_json::from_str(body).ok();
    let first = match &parsed {
        Some(Value::Array(items)) => items.first().cloned(),
        Some(object @ Value::Object(_)) => Some(object.clone()),
        _ => None,
    };
    match first {
        Some(error) => {
            let code = error.get("code").and_then(Value::as_str).map(str::to_owned);
            let message = error
                .get("message")
                .or_else(|| error.get("error"))
                .and_then(Value::as_str)
                .map(str::to_owned)
                .unwrap_or_else(|| error.to_string());
            (code, message)
        }
        None => (None, body.chars().take(500).collect()),
    }
}

/// Why the HTTP client could not be built.
#[derive(Debug, thiserror::Error)]
#[error("the TLS configuration could not be built")]
pub struct TlsError(#[source] std::io::Error);

impl ControlPlane {
    /// A client of the server at `base` (e.g. `https://vantiq.example.com`).
    /// `timeout` bounds every call except a claim's wait. TLS uses ring and
    /// the platform's trust store.
    pub fn new(base: &str, token: AccessToken, timeout: Duration) -> Result<Self, TlsError> {
        let mut connector = HttpConnector::new();
        connector.enforce_http(false);
        connector.set_connect_timeout(Some(Duration::from_secs(5)));
        connector.set_nodelay(true);
        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .with_provider_and_platform_verifier(Arc::new(rustls::crypto::ring::default_provider()))
            .map_err(TlsError)?
            .https_or_http()
            .enable_http1()
            .wrap_connector(connector);
        let http = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(50))
            .build(https);
        Ok(ControlPlane {
            http,
            base: base.trim_end_matches('/').to_owned(),
            token,
            timeout,
        })
    }

    pub fn base(&self) -> &str {
        &self.base
    }

    /// Sends one request with the token and the current trace context;
    /// the status and body of the answer.
    async fn send(
        &self,
        method: Method,
        url: &str,
        content_type: Option<&str>,
        body: Bytes,
        timeout: Duration,
    ) -> Result<(u16, String), ControlPlaneError> {
        let unreachable = |source: TransportError| ControlPlaneError::Unreachable {
            url: url.to_owned(),
            source,
        };
        let mut request = Request::builder()
            .method(method)
            .uri(url)
            .body(Full::new(body))
            .map_err(|e| unreachable(e.into()))?;
        let headers = request.headers_mut();
        let mut authorization =
            HeaderValue::from_str(&format!("Bearer {}", self.token.expose()))
                .map_err(|_| unreachable("the access token is not a valid header value".into()))?;
        authorization.set_sensitive(true);
        headers.insert(AUTHORIZATION, authorization);
        headers.insert(
            USER_AGENT,
            HeaderValue::from_static(concat!("k8sworker-gateway/", env!("CARGO_PKG_VERSION"))),
        );
        if let Some(content_type) = content_type {
            headers.insert(
                CONTENT_TYPE,
                HeaderValue::from_str(content_type).map_err(|e| unreachable(e.into()))?,
            );
        }
        let mut trace = HeaderMap::new();
        k8sworker_telemetry::inject_current(&mut trace);
        headers.extend(trace);
        let exchange = async {
            let response = self.http.request(request).await?;
            let status = response.status().as_u16();
            let body = response.into_body().collect().await?.to_bytes();
            Ok::<_, TransportError>((status, String::from_utf8_lossy(&body).into_owned()))
        };
        match tokio::time::timeout(timeout, exchange).await {
            Ok(answer) => answer.map_err(unreachable),
            Err(_) => Err(unreachable(format!("no answer within {timeout:?}").into())),
        }
    }

    async fn post_json(
        &self,
        url: &str,
        body: &Value,
        timeout: Duration,
    ) -> Result<(u16, String), ControlPlaneError> {
        let body = Bytes::from(serde_json::to_vec(body).expect("JSON values serialize"));
        self.send(Method::POST, url, Some("application/json"), body, timeout)
            .await
    }

    async fn get(&self, url: &str) -> Result<(u16, String), ControlPlaneError> {
        self.send(Method::GET, url, None, Bytes::new(), self.timeout)
            .await
    }

    /// Calls a `K8sManager` procedure; `Ok(answer)` on 2xx.
    async fn procedure(
        &self,
        name: &str,
        params: Value,
        timeout: Duration,
    ) -> Result<Value, ControlPlaneError> {
        let url = format!(
            "{}/api/v1/resources/procedures/K8sManager.{name}",
            self.base
        );
        let (status, body) = self.post_json(&url, &params, timeout).await?;
        if (200..300).contains(&status) {
            return if body.trim().is_empty() {
                Ok(Value::Null)
            } else {
                serde_json::from_str(&body)
                    .map_err(|e| ControlPlaneError::Protocol(format!("{name}: {e}")))
            };
        }
        let (code, message) = error_message(&body);
        Err(match (status, code.as_deref()) {
            (401 | 403, _) => ControlPlaneError::Unauthorized { status, message },
            (404, Some(UNKNOWN_PROCEDURE)) => ControlPlaneError::NotImplemented { message },
            (409, Some(LEASE_LOST)) | (409, None) => ControlPlaneError::LeaseLost {
                request_id: params["requestId"].as_str().unwrap_or_default().to_owned(),
                message,
            },
            (500.., _) | (429, _) => ControlPlaneError::Server { status, message },
            _ => ControlPlaneError::Rejected { status, message },
        })
    }

    /// Checks the token and that `cluster` exists, and asks the server for
    /// its version when it has a version endpoint.
    pub async fn check(&self, cluster: &str) -> Result<ServerInfo, ControlPlaneError> {
        let url = format!("{}/api/v1/resources/k8sclusters/{cluster}", self.base);
        let (status, body) = self.get(&url).await?;
        match status {
            200..=299 => {}
            401 | 403 => {
                return Err(ControlPlaneError::Unauthorized {
                    status,
                    message: error_message(&body).1,
                });
            }
            404 => {
                return Err(ControlPlaneError::Rejected {
                    status,
                    message: format!(
                        "the K8sCluster `{cluster}` does not exist in the token's namespace; create it (its name must be this gateway's CLUSTER_NAME)"
                    ),
                });
            }
            500.. => {
                return Err(ControlPlaneError::Server {
                    status,
                    message: error_message(&body).1,
                });
            }
            _ => {
                return Err(ControlPlaneError::Rejected {
                    status,
                    message: error_message(&body).1,
                });
            }
        }
        let url = format!("{}/api/v1/version", self.base);
        let info = match self.get(&url).await {
            Ok((200, body)) => {
                let answer: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
                ServerInfo {
                    version: answer.get("version").and_then(Value::as_str).map(|v| {
                        match answer.get("name").and_then(Value::as_str) {
                            Some(name) => format!("{name} {v}"),
                            None => v.to_owned(),
                        }
                    }),
                    long_poll: answer.get("longPoll").and_then(Value::as_bool),
                }
            }
            _ => ServerInfo::default(),
        };
        Ok(info)
    }

    /// Claims the oldest workitem of `cluster`, waiting up to `wait` for
    /// one; `None` when none came.
    pub async fn claim(
        &self,
        cluster: &str,
        worker_id: &str,
        lease: Duration,
        wait: Duration,
    ) -> Result<Option<Value>, ControlPlaneError> {
        let params = json!({
            "clusterName": cluster,
            "workerId": worker_id,
            "leaseSeconds": lease.as_secs().max(1),
            "waitSeconds": wait.as_secs_f64(),
        });
        let answer = self
            .procedure("claimWorkitem", params, self.timeout + wait)
            .await?;
        Ok(match answer {
            Value::Null => None,
            Value::Object(_) => Some(answer),
            other => {
                return Err(ControlPlaneError::Protocol(format!(
                    "claimWorkitem answered {other}"
                )));
            }
        })
    }

    /// Extends the lease; the server's new expiry.
    pub async fn renew(
        &self,
        request_id: &str,
        lease_id: &str,
        lease: Duration,
    ) -> Result<Value, ControlPlaneError> {
        let params = json!({"requestId": request_id, "leaseId": lease_id, "leaseSeconds": lease.as_secs().max(1)});
        self.procedure("renewWorkitemLease", params, self.timeout)
            .await
    }

    /// Completes the workitem, reporting installation properties.
    pub async fn complete(
        &self,
        request_id: &str,
        lease_id: &str,
        installation: &serde_json::Map<String, Value>,
    ) -> Result<Value, ControlPlaneError> {
        let params =
            json!({"requestId": request_id, "leaseId": lease_id, "installation": installation});
        self.procedure("completeWorkitem", params, self.timeout)
            .await
    }

    /// Fails the workitem with `FAILED` or `INVALID`.
    pub async fn fail(
        &self,
        request_id: &str,
        lease_id: &str,
        status: &str,
        message: &str,
    ) -> Result<Value, ControlPlaneError> {
        let params = json!({"requestId": request_id, "leaseId": lease_id, "status": status, "message": message});
        self.procedure("failWorkitem", params, self.timeout).await
    }

    /// Gives the workitem back to the queue.
    pub async fn release(&self, request_id: &str, lease_id: &str) -> Result<(), ControlPlaneError> {
        let params = json!({"requestId": request_id, "leaseId": lease_id});
        self.procedure("releaseWorkitem", params, self.timeout)
            .await
            .map(drop)
    }

    /// Uploads a text document (multipart `POST /documents`).
    pub async fn upload_document(
        &self,
        name: &str,
        content: Vec<u8>,
    ) -> Result<(), ControlPlaneError> {
        let url = format!("{}/api/v1/resources/documents", self.base);
        let boundary = format!("k8sworker-{}", uuid::Uuid::new_v4().simple());
        let body = multipart(&boundary, name, &content);
        let content_type = format!("multipart/form-data; boundary={boundary}");
        let (status, body) = self
            .send(Method::POST, &url, Some(&content_type), body, self.timeout)
            .await?;
        match status {
            200..=299 => Ok(()),
            401 | 403 => Err(ControlPlaneError::Unauthorized {
                status,
                message: error_message(&body).1,
            }),
            500.. => Err(ControlPlaneError::Server {
                status,
                message: error_message(&body).1,
            }),
            _ => Err(ControlPlaneError::Rejected {
                status,
                message: error_message(&body).1,
            }),
        }
    }
}

/// A `multipart/form-data` body with the document's path and its content
/// as a text file part.
fn multipart(boundary: &str, name: &str, content: &[u8]) -> Bytes {
    let quoted = |text: &str| text.replace('"', "%22").replace(['\r', '\n'], " ");
    let file_name = name.rsplit('/').next().unwrap_or(name);
    let mut body = Vec::with_capacity(content.len() + 512);
    body.extend_from_slice(
        format!(
            "--{boundary}\r\nContent-Disposition: form-data; name=\"documentPath\"\r\n\r\n{name}\r\n\
             --{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"{}\"\r\n\
             Content-Type: text/plain\r\n\r\n",
            quoted(file_name)
        )
        .as_bytes(),
    );
    body.extend_from_slice(content);
    body.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
    Bytes::from(body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_document_is_one_path_field_and_one_file_part() {
        let body = multipart("B", "c1/web/web-0-t.txt", b"line 1\nline 2\n");
        assert_eq!(
            String::from_utf8(body.to_vec()).unwrap(),
            "--B\r\nContent-Disposition: form-data; name=\"documentPath\"\r\n\r\nc1/web/web-0-t.txt\r\n\
             --B\r\nContent-Disposition: form-data; name=\"file\"; filename=\"web-0-t.txt\"\r\n\
             Content-Type: text/plain\r\n\r\nline 1\nline 2\n\r\n--B--\r\n"
        );
    }

    #[test]
    fn vantiq_error_bodies_of_every_shape_are_read() {
        assert_eq!(
            error_message(r#"[{"code":"io.vantiq.x","message":"boom","params":[]}]"#),
            (Some("io.vantiq.x".into()), "boom".into())
        );
        assert_eq!(
            error_message(r#"{"code":"c","message":"single"}"#),
            (Some("c".into()), "single".into())
        );
        assert_eq!(
            error_message(r#"{"error":"legacy"}"#),
            (None, "legacy".into())
        );
        assert_eq!(error_message("plain text"), (None, "plain text".into()));
    }

    #[test]
    fn only_unreachable_and_server_errors_are_transient() {
        assert!(
            ControlPlaneError::Server {
                status: 503,
                message: String::new()
            }
            .is_transient()
        );
        assert!(
            !ControlPlaneError::LeaseLost {
                request_id: String::new(),
                message: String::new()
            }
            .is_transient()
        );
        assert!(
            !ControlPlaneError::Unauthorized {
                status: 401,
                message: String::new()
            }
            .is_transient()
        );
    }
}

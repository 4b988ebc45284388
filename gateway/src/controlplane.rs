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

use std::time::Duration;

use http::HeaderMap;
use serde_json::{Value, json};

use crate::config::AccessToken;

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
        source: reqwest::Error,
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
    http: reqwest::Client,
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

impl ControlPlane {
    /// A client of the server at `base` (e.g. `https://vantiq.example.com`).
    /// `timeout` bounds every call except a claim's wait.
    pub fn new(base: &str, token: AccessToken, timeout: Duration) -> Result<Self, reqwest::Error> {
        let http = reqwest::Client::builder()
            .user_agent(concat!("k8sworker-gateway/", env!("CARGO_PKG_VERSION")))
            .connect_timeout(Duration::from_secs(5))
            .pool_idle_timeout(Duration::from_secs(50))
            .build()?;
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

    fn headers() -> HeaderMap {
        let mut headers = HeaderMap::new();
        k8sworker_telemetry::inject_current(&mut headers);
        headers
    }

    async fn send(
        &self,
        request: reqwest::RequestBuilder,
        url: &str,
    ) -> Result<(u16, String), ControlPlaneError> {
        let response = request
            .headers(Self::headers())
            .bearer_auth(self.token.expose())
            .send()
            .await
            .map_err(|source| ControlPlaneError::Unreachable {
                url: url.to_owned(),
                source,
            })?;
        let status = response.status().as_u16();
        let body = response
            .text()
            .await
            .map_err(|source| ControlPlaneError::Unreachable {
                url: url.to_owned(),
                source,
            })?;
        Ok((status, body))
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
        let request = self.http.post(&url).json(&params).timeout(timeout);
        let (status, body) = self.send(request, &url).await?;
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
        let (status, body) = self
            .send(self.http.get(&url).timeout(self.timeout), &url)
            .await?;
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
        let info = match self
            .send(self.http.get(&url).timeout(self.timeout), &url)
            .await
        {
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
        let file_name = name.rsplit('/').next().unwrap_or(name).to_owned();
        let part = reqwest::multipart::Part::bytes(content)
            .file_name(file_name)
            .mime_str("text/plain")
            .expect("text/plain is a valid MIME type");
        let form = reqwest::multipart::Form::new()
            .text("documentPath", name.to_owned())
            .part("file", part);
        let request = self.http.post(&url).multipart(form).timeout(self.timeout);
        let (status, body) = self.send(request, &url).await?;
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

#[cfg(test)]
mod tests {
    use super::*;

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

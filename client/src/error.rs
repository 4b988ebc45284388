//! Why a call failed, in the distinctions a worker acts on: retry later
//! ([`Error::is_transient`]), stop working on the workitem
//! ([`Error::LeaseLost`]), give up ([`Error::Unauthorized`],
//! [`Error::NotImplemented`]). No error carries the access token or a
//! password: they only ever travel in the `Authorization` header.

use crate::vantiq::{self, LEASE_LOST, UNKNOWN_PROCEDURE, WORKITEM_CANCELLED};

/// Why a call to the control plane failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// No HTTP answer: connection refused or reset, TLS handshake failed,
    /// no answer within the timeout.
    #[error("the control plane at {url} could not be reached: {reason}")]
    Unreachable {
        /// The URL called (never holds a credential).
        url: String,
        /// The innermost causes, e.g. `Connection refused (os error 111)`.
        reason: String,
        /// The transport error.
        #[source]
        source: reqwest::Error,
    },
    /// HTTP 401 or 403: the token is unknown, expired, revoked, or lacks the
    /// profile the call needs.
    #[error("the control plane refused the access token (HTTP {status}): {message}")]
    Unauthorized {
        /// 401 or 403.
        status: u16,
        /// The server's message.
        message: String,
    },
    /// HTTP 404 `io.vantiq.procedure.unknown`: the server does not
    /// implement the worker protocol.
    #[error(
        "the server does not implement the k8sworker worker protocol ({message}); it needs the K8sManager claim/renew/complete/fail/release procedures"
    )]
    NotImplemented {
        /// The server's message.
        message: String,
    },
    /// HTTP 409 on a call about a held workitem: its lease is gone (expired
    /// and re-claimed, released, failed). Stop working on it.
    #[error("the lease on workitem {request_id} was lost: {message}")]
    LeaseLost {
        /// The workitem.
        request_id: String,
        /// The server's message.
        message: String,
    },
    /// HTTP 410 `io.vantiq.resources.k8s.workitem.cancelled` on a call
    /// about a held workitem: it was cancelled. Do not start it; an
    /// operation already applying finishes and reports its outcome.
    #[error("workitem {request_id} was cancelled: {message}")]
    Cancelled {
        /// The workitem.
        request_id: String,
        /// The server's message.
        message: String,
    },
    /// HTTP 404: no such resource instance in the token's namespace (a
    /// cancelled or completed workitem, a missing cluster or document).
    #[error("the control plane has no such resource (HTTP 404): {message}")]
    NotFound {
        /// The server's message.
        message: String,
    },
    /// Any other 4xx: the server refused the request as it was.
    #[error("the control plane refused the request (HTTP {status}): {message}")]
    Rejected {
        /// The HTTP status.
        status: u16,
        /// Vantiq's error code, when the body has one.
        code: Option<String>,
        /// The server's message.
        message: String,
    },
    /// HTTP 5xx or 429: the server is failing, restarting or overloaded.
    #[error("the control plane failed (HTTP {status}): {message}")]
    Server {
        /// The HTTP status.
        status: u16,
        /// The server's message.
        message: String,
    },
    /// A success whose body the protocol does not allow.
    #[error("the control plane answered something the worker protocol does not allow: {0}")]
    Protocol(String),
}

impl Error {
    /// Whether asking again later may succeed (the server is down,
    /// restarting or overloaded).
    pub fn is_transient(&self) -> bool {
        matches!(self, Error::Unreachable { .. } | Error::Server { .. })
    }

    /// The error for a non-2xx answer. `request_id` names the workitem of a
    /// call that holds a lease; only such a call can lose one.
    pub(crate) fn refusal(status: u16, body: &[u8], request_id: Option<&str>) -> Error {
        let (code, message) = vantiq::error_message(&String::from_utf8_lossy(body));
        match (status, code.as_deref(), request_id) {
            (401 | 403, _, _) => Error::Unauthorized { status, message },
            (404, Some(UNKNOWN_PROCEDURE), _) => Error::NotImplemented { message },
            (404, _, _) => Error::NotFound { message },
            (410, Some(WORKITEM_CANCELLED), Some(request_id)) => Error::Cancelled {
                request_id: request_id.to_owned(),
                message,
            },
            (409, Some(LEASE_LOST) | None, Some(request_id)) => Error::LeaseLost {
                request_id: request_id.to_owned(),
                message,
            },
            (500.., _, _) | (429, _, _) => Error::Server { status, message },
            _ => Error::Rejected {
                status,
                code,
                message,
            },
        }
    }

    /// A transport failure calling `url`.
    pub(crate) fn unreachable(url: &str, source: reqwest::Error) -> Error {
        let reason = if source.is_timeout() {
            "no answer within the timeout".to_owned()
        } else {
            let mut causes = Vec::new();
            let mut cause: Option<&(dyn std::error::Error + 'static)> =
                std::error::Error::source(&source);
            while let Some(error) = cause {
                causes.push(error.to_string());
                cause = error.source();
            }
            // The innermost causes say what happened; reqwest's own message
            // only repeats the URL.
            causes.dedup();
            if causes.is_empty() {
                source.to_string()
            } else {
                causes.join(": ")
            }
        };
        Error::Unreachable {
            url: url.to_owned(),
            reason,
            source,
        }
    }
}

/// Why a [`Client`](crate::Client) could not be built.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    /// The base URL is not `http://` or `https://` with a host.
    #[error("the control plane URL must be an http:// or https:// URL, got `{0}`")]
    Url(String),
    /// The token has characters an HTTP header cannot carry.
    #[error("the access token is not a valid HTTP header value")]
    Token,
    /// A root certificate given in PEM could not be read.
    #[error("the root certificates could not be read (PEM)")]
    Certificate(#[source] rustls::pki_types::pem::Error),
    /// rustls refused the TLS configuration (e.g. no usable trust store).
    #[error("the TLS configuration could not be built")]
    Tls(#[source] rustls::Error),
    /// reqwest refused the configuration.
    #[error("the HTTP client could not be built")]
    Http(#[source] reqwest::Error),
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(code: &str, message: &str) -> Vec<u8> {
        serde_json::json!([{"code": code, "message": message, "params": []}])
            .to_string()
            .into_bytes()
    }

    #[test]
    fn answers_map_to_what_a_worker_acts_on() {
        assert!(matches!(
            Error::refusal(401, b"", None),
            Error::Unauthorized { status: 401, .. }
        ));
        assert!(matches!(
            Error::refusal(403, &body("io.vantiq.authorization.denied", "no"), None),
            Error::Unauthorized { status: 403, .. }
        ));
        assert!(matches!(
            Error::refusal(404, &body(UNKNOWN_PROCEDURE, "Unknown procedure"), None),
            Error::NotImplemented { .. }
        ));
        assert!(matches!(
            Error::refusal(404, &body(vantiq::NOT_FOUND, "gone"), Some("r-1")),
            Error::NotFound { .. }
        ));
        match Error::refusal(409, &body(LEASE_LOST, "lost it"), Some("r-1")) {
            Error::LeaseLost {
                request_id,
                message,
            } => assert_eq!((request_id.as_str(), message.as_str()), ("r-1", "lost it")),
            other => panic!("expected LeaseLost, got {other:?}"),
        }
        assert!(matches!(
            Error::refusal(409, b"conflict", Some("r-1")),
            Error::LeaseLost { .. }
        ));
        match Error::refusal(410, &body(WORKITEM_CANCELLED, "cancelled"), Some("r-1")) {
            Error::Cancelled { request_id, .. } => assert_eq!(request_id, "r-1"),
            other => panic!("expected Cancelled, got {other:?}"),
        }
        // A 409 of a call that holds no lease (a duplicate name) is a refusal.
        match Error::refusal(409, &body("io.vantiq.resource.duplicate", "exists"), None) {
            Error::Rejected { status, code, .. } => {
                assert_eq!(
                    (status, code.as_deref()),
                    (409, Some("io.vantiq.resource.duplicate"))
                )
            }
            other => panic!("expected Rejected, got {other:?}"),
        }
        assert!(matches!(
            Error::refusal(400, &body(vantiq::ARGUMENT_INVALID, "bad"), Some("r-1")),
            Error::Rejected { status: 400, .. }
        ));
        assert!(matches!(
            Error::refusal(503, b"", None),
            Error::Server { status: 503, .. }
        ));
        assert!(matches!(
            Error::refusal(429, b"", None),
            Error::Server { status: 429, .. }
        ));
    }

    #[test]
    fn only_unreachable_and_server_errors_are_transient() {
        assert!(
            Error::Server {
                status: 503,
                message: String::new()
            }
            .is_transient()
        );
        assert!(
            !Error::LeaseLost {
                request_id: String::new(),
                message: String::new()
            }
            .is_transient()
        );
        assert!(
            !Error::Unauthorized {
                status: 401,
                message: String::new()
            }
            .is_transient()
        );
        assert!(
            !Error::NotFound {
                message: String::new()
            }
            .is_transient()
        );
    }
}

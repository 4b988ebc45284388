//! Vantiq's error body — a JSON array of `{code, message, params}` — and the
//! error codes the worker protocol gives a meaning to
//! (`docs/worker-protocol.md`, "Errors of renew / complete / fail / release").

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// `io.vantiq.resources.k8s.workitem.lease.lost` (HTTP 409): the workitem is
/// not `PENDING` under this `leaseId` any more; stop working on it.
pub const LEASE_LOST: &str = "io.vantiq.resources.k8s.workitem.lease.lost";
/// `io.vantiq.resources.k8s.workitem.cancelled` (HTTP 410, *ours*): the
/// workitem was cancelled while leased. A renewal still extends the lease,
/// so an operation already applying can report its outcome; one not yet
/// started must not start (release it instead).
pub const WORKITEM_CANCELLED: &str = "io.vantiq.resources.k8s.workitem.cancelled";
/// `io.vantiq.procedure.unknown` (HTTP 404): the server has no such
/// procedure, so it does not implement the worker protocol.
pub const UNKNOWN_PROCEDURE: &str = "io.vantiq.procedure.unknown";
/// `io.vantiq.resource.not.found` (HTTP 404): no such resource instance in
/// the token's namespace (a cancelled or completed workitem, a missing cluster).
pub const NOT_FOUND: &str = "io.vantiq.resource.not.found";
/// `io.vantiq.argument.invalid` (HTTP 400): a missing or wrongly typed
/// parameter, named in `params[0]`.
pub const ARGUMENT_INVALID: &str = "io.vantiq.argument.invalid";

/// One element of a Vantiq error body.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VantiqError {
    /// A dotted code, e.g. [`LEASE_LOST`].
    pub code: String,
    /// A message for people.
    pub message: String,
    /// The code's parameters (e.g. the invalid parameter's name).
    #[serde(default)]
    pub params: Vec<Value>,
}

/// The code and message of an error body: Vantiq's `[{code, message,
/// params}]`, a single such object, or a legacy `{"error": "..."}`; for
/// anything else no code and the body's first 500 characters.
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
    fn an_error_element_round_trips() {
        let body = r#"[{"code":"io.vantiq.argument.invalid","message":"The parameter leaseSeconds must be between 0 and 900 seconds.","params":["leaseSeconds"]}]"#;
        let errors: Vec<VantiqError> = serde_json::from_str(body).unwrap();
        assert_eq!(errors[0].code, ARGUMENT_INVALID);
        assert_eq!(errors[0].params, vec![Value::from("leaseSeconds")]);
        assert_eq!(serde_json::to_string(&errors).unwrap(), body);
    }
}

//! The W3C `traceparent` stored on a workitem, so the gateway that claims it
//! continues the trace of the request that created it.
//!
//! Preference: the server's own request span (a child of the caller's
//! `traceparent` when there was one, see `k8sworker_telemetry::ServerTraceLayer`);
//! without an OpenTelemetry exporter that span has no context, so the
//! caller's valid `traceparent` header is stored as is; without either, a
//! fresh root context is made so every workitem still names a trace.

use http::HeaderMap;

/// Whether `value` is a well-formed version-00 `traceparent` with non-zero ids.
pub fn is_valid(value: &str) -> bool {
    let parts: Vec<&str> = value.split('-').collect();
    let hex = |s: &str, len: usize| {
        s.len() == len
            && s.bytes()
                .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
    };
    parts.len() == 4
        && parts[0] == "00"
        && hex(parts[1], 32)
        && hex(parts[2], 16)
        && hex(parts[3], 2)
        && parts[1].bytes().any(|b| b != b'0')
        && parts[2].bytes().any(|b| b != b'0')
}

/// A new root context, sampled.
pub fn fresh() -> String {
    format!(
        "00-{}-{}-01",
        crate::auth::random_id(16),
        crate::auth::random_id(8)
    )
}

/// The `traceparent` to store for a request with these headers, read inside
/// the request's span.
pub fn for_request(headers: &HeaderMap) -> String {
    if let Some(current) = k8sworker_telemetry::current_traceparent()
        && is_valid(&current)
    {
        return current;
    }
    headers
        .get("traceparent")
        .and_then(|value| value.to_str().ok())
        .map(str::trim)
        .filter(|value| is_valid(value))
        .map(str::to_owned)
        .unwrap_or_else(fresh)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validates_traceparents() {
        assert!(is_valid(
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
        ));
        assert!(!is_valid(
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01"
        ));
        assert!(!is_valid(
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7"
        ));
        assert!(!is_valid("zz"));
        assert!(is_valid(&fresh()));
    }

    #[test]
    fn header_is_used_when_no_span_context() {
        let mut headers = HeaderMap::new();
        let tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        headers.insert("traceparent", tp.parse().unwrap());
        assert_eq!(for_request(&headers), tp);
        headers.insert("traceparent", "garbage".parse().unwrap());
        assert_ne!(for_request(&headers), "garbage");
    }
}

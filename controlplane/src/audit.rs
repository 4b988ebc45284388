//! Vantiq's clock conventions for resource instances: milliseconds since the
//! Unix epoch in storage, ISO 8601 UTC with milliseconds on the wire, and the
//! `ars_*` audit properties every instance carries.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::{Map, Value, json};

/// Milliseconds since the Unix epoch, now (0 if the clock is before 1970).
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// The latest instant the date format can write, in milliseconds since the
/// epoch: 9999-12-31T23:59:59.999Z (RFC 3339 has four-digit years). Every
/// timestamp read from a request is checked against it.
pub const MAX_MS: i64 = 253_402_300_799_999;

/// Vantiq's date format for `ms` milliseconds since the epoch: ISO 8601 UTC
/// with milliseconds (`2024-05-01T12:00:00.000Z`); negative values are the
/// epoch and values past [`MAX_MS`] are [`MAX_MS`], so formatting never
/// fails.
pub fn iso(ms: i64) -> String {
    let time = UNIX_EPOCH + Duration::from_millis(ms.clamp(0, MAX_MS) as u64);
    humantime::format_rfc3339_millis(time).to_string()
}

/// The `ars_*` audit properties of an instance of `namespace`: its
/// `version`, and when (epoch milliseconds) and by whom it was created and
/// last modified.
pub fn audit(
    namespace: &str,
    version: i64,
    created_at: i64,
    created_by: &str,
    modified_at: i64,
    modified_by: &str,
) -> Map<String, Value> {
    let value = json!({
        "ars_namespace": namespace,
        "ars_version": version,
        "ars_createdAt": iso(created_at),
        "ars_createdBy": created_by,
        "ars_modifiedAt": iso(modified_at),
        "ars_modifiedBy": modified_by,
    });
    match value {
        Value::Object(map) => map,
        _ => unreachable!("a literal object"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_are_iso_with_milliseconds() {
        assert_eq!(iso(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(iso(-5), "1970-01-01T00:00:00.000Z");
        assert_eq!(iso(1_500), "1970-01-01T00:00:01.500Z");
        assert_eq!(iso(MAX_MS), "9999-12-31T23:59:59.999Z");
        // Past the format's range: the last writable instant, not a panic.
        assert_eq!(iso(MAX_MS + 1), "9999-12-31T23:59:59.999Z");
        assert_eq!(iso(i64::MAX), "9999-12-31T23:59:59.999Z");
    }
}

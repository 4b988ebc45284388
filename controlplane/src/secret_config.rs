//! Which values of a deploy's `config` are secret, and what is done to
//! them: sealed before they are stored, redacted in every read, opened only
//! for the worker's claim, and kept when a client sends the redaction
//! marker back.
//!
//! A *secret slot* is (Vantiq's K8s Installation config, vantiq-api §2.3):
//! - the `value` of an `environmentVariable(s)` entry with `asSecret: true`
//!   and no `secretName`, unless the value is a `@secrets(NAME)` reference
//!   (a name, resolved from the `secrets` resource at claim time);
//! - the inline `content` of a `file` entry with `dataSource: secret`.
//!
//! Pure: the cipher is the caller's ([`crate::keyring::Keyring`]).

use serde_json::Value;

/// What every read shows in place of a secret value. Sent back in a
/// redeploy, it stands for the value stored for the same entry.
pub const REDACTED: &str = "<redacted>";

/// How an entry of `config` is recognised across deploys: an environment
/// variable by its name, a file by its path and file name.
fn identity(entry: &Value) -> Option<(String, String)> {
    let text = |key: &str| entry.get(key).and_then(Value::as_str).unwrap_or_default();
    match text("type") {
        "environmentVariable" | "environmentVariables" => {
            Some(("env".to_owned(), text("name").to_owned()))
        }
        "file" => Some((text("path").to_owned(), text("filename").to_owned())),
        _ => None,
    }
}

/// The name of `entry`'s secret slot, if it has one.
fn slot_key(entry: &Value) -> Option<&'static str> {
    let text = |key: &str| entry.get(key).and_then(Value::as_str);
    match text("type")? {
        "environmentVariable" | "environmentVariables" => {
            let secret = entry.get("asSecret") == Some(&Value::Bool(true))
                && entry.get("secretName").is_none_or(Value::is_null);
            let value = text("value")?;
            let reference = value.starts_with("@secrets(") && value.ends_with(')');
            (secret && !reference).then_some("value")
        }
        "file" => {
            (text("dataSource") == Some("secret") && text("content").is_some()).then_some("content")
        }
        _ => None,
    }
}

/// Calls `each` with the index and the (string) value of every secret slot
/// of a `config` list; anything but a list has none.
pub fn for_each_slot<E>(
    config: &mut Value,
    mut each: impl FnMut(usize, &mut String) -> Result<(), E>,
) -> Result<(), E> {
    let Some(entries) = config.as_array_mut() else {
        return Ok(());
    };
    for (index, entry) in entries.iter_mut().enumerate() {
        if let Some(key) = slot_key(entry)
            && let Some(Value::String(value)) = entry.get_mut(key)
        {
            each(index, value)?;
        }
    }
    Ok(())
}

/// Replaces every secret value of `config` with [`REDACTED`].
pub fn redact(config: &mut Value) {
    let _ = for_each_slot(config, |_, value| {
        *value = REDACTED.to_owned();
        Ok::<_, std::convert::Infallible>(())
    });
}

/// `request` (a deploy's `data`, with a `config` list) with its secret
/// values redacted.
pub fn redacted_request(request: &Value) -> Value {
    let mut request = request.clone();
    if let Some(config) = request.get_mut("config") {
        redact(config);
    }
    request
}

/// Redacts an installation record's `configSpec` in place.
pub fn redact_installation(record: &mut Value) {
    if let Some(config) = record.get_mut("configSpec") {
        redact(config);
    }
}

/// A [`REDACTED`] marker with no stored value to stand for.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("config[{index}]: {marker} stands for the stored value, but there is none for this entry")]
pub struct NothingToKeep {
    /// The entry's index in `config`.
    pub index: usize,
    /// The marker, for the message.
    pub marker: &'static str,
}

/// A [`REDACTED`] marker in a value that is not a secret slot (an
/// environment variable that is not `asSecret`, file content whose
/// `dataSource` is not `secret`): there it would be deployed as the literal
/// text, since the marker only stands for a stored *secret* value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "config[{index}].{key}: {marker} stands for a stored secret value, but this entry's {key} is not secret"
)]
pub struct MarkerOutsideSlot {
    /// The entry's index in `config`.
    pub index: usize,
    /// The entry's field holding the marker: `value` or `content`.
    pub key: &'static str,
    /// The marker, for the message.
    pub marker: &'static str,
}

/// Refuses a [`REDACTED`] marker as the `value` of an environment variable
/// or the `content` of a file entry that has no secret slot
/// ([`MarkerOutsideSlot`]); the first such entry is named.
pub fn refuse_marker_outside_slots(config: &Value) -> Result<(), MarkerOutsideSlot> {
    let Some(entries) = config.as_array() else {
        return Ok(());
    };
    for (index, entry) in entries.iter().enumerate() {
        let key = match entry.get("type").and_then(Value::as_str) {
            Some("environmentVariable" | "environmentVariables") => "value",
            Some("file") => "content",
            _ => continue,
        };
        if entry.get(key).and_then(Value::as_str) == Some(REDACTED) && slot_key(entry).is_none() {
            return Err(MarkerOutsideSlot {
                index,
                key,
                marker: REDACTED,
            });
        }
    }
    Ok(())
}

/// Puts the `previous` config's stored value in every secret slot of
/// `config` that holds [`REDACTED`] (same entry: environment variable name,
/// or file path and name); answers the indices of the entries it filled.
/// Values are copied as stored (sealed): the caller opens exactly those,
/// never a value the client sent.
pub fn keep_redacted(
    config: &mut Value,
    previous: Option<&Value>,
) -> Result<Vec<usize>, NothingToKeep> {
    let mut kept = Vec::new();
    let empty = Vec::new();
    let previous = previous.and_then(Value::as_array).unwrap_or(&empty);
    let mut identities = Vec::new();
    if let Some(entries) = config.as_array() {
        identities = entries.iter().map(identity).collect();
    }
    for_each_slot(config, |index, value| {
        if value != REDACTED {
            return Ok(());
        }
        let wanted = identities[index].as_ref();
        let stored = previous
            .iter()
            .find(|entry| identity(entry).as_ref() == wanted)
            .and_then(|entry| Some(entry.get(slot_key(entry)?)?.as_str()?.to_owned()))
            .filter(|stored| stored != REDACTED)
            .ok_or(NothingToKeep {
                index,
                marker: REDACTED,
            })?;
        *value = stored;
        kept.push(index);
        Ok(())
    })?;
    Ok(kept)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn config() -> Value {
        json!([
            {"type": "image", "name": "nginx:1"},
            {"type": "environmentVariable", "name": "PLAIN", "value": "visible"},
            {"type": "environmentVariable", "name": "KEY", "value": "s3cret", "asSecret": true},
            {"type": "environmentVariable", "name": "REF", "value": "@secrets(db)", "asSecret": true},
            {"type": "environmentVariable", "name": "EXT", "secretName": "x", "key": "k", "asSecret": true},
            {"type": "file", "path": "/etc/app", "filename": "a.conf", "content": "open"},
            {"type": "file", "path": "/etc/app", "filename": "key.pem", "content": "PEM", "dataSource": "secret"},
        ])
    }

    #[test]
    fn only_secret_values_are_redacted() {
        let mut redacted = config();
        redact(&mut redacted);
        let mut expected = config();
        expected[2]["value"] = json!(REDACTED);
        expected[6]["content"] = json!(REDACTED);
        assert_eq!(redacted, expected);
        let request = json!({"name": "app", "config": config()});
        assert_eq!(redacted_request(&request)["config"], expected);
    }

    #[test]
    fn the_marker_keeps_the_stored_value_of_the_same_entry() {
        let stored = config();
        let mut resubmitted = config();
        redact(&mut resubmitted);
        resubmitted.as_array_mut().unwrap().swap(2, 6);
        assert_eq!(
            keep_redacted(&mut resubmitted, Some(&stored)),
            Ok(vec![2, 6])
        );
        assert_eq!(resubmitted[6]["value"], "s3cret");
        assert_eq!(resubmitted[2]["content"], "PEM");

        let mut new_entry = json!([{"type": "environmentVariable", "name": "NEW", "value": REDACTED, "asSecret": true}]);
        assert_eq!(
            keep_redacted(&mut new_entry, Some(&stored)),
            Err(NothingToKeep {
                index: 0,
                marker: REDACTED
            })
        );
        assert!(keep_redacted(&mut new_entry, None).is_err());
    }

    #[test]
    fn the_marker_outside_a_secret_slot_is_refused() {
        let mut redacted = config();
        redact(&mut redacted);
        assert_eq!(refuse_marker_outside_slots(&redacted), Ok(()));
        for (index, key, unsecret) in [
            (2, "value", json!(false)),
            (6, "content", json!("configMap")),
        ] {
            let mut config = redacted.clone();
            let field = if key == "value" {
                "asSecret"
            } else {
                "dataSource"
            };
            config[index][field] = unsecret;
            assert_eq!(
                refuse_marker_outside_slots(&config),
                Err(MarkerOutsideSlot {
                    index,
                    key,
                    marker: REDACTED
                })
            );
        }
        let mut external = redacted.clone();
        external[4]["value"] = json!(REDACTED);
        assert_eq!(
            refuse_marker_outside_slots(&external).map_err(|error| error.index),
            Err(4)
        );
    }
}

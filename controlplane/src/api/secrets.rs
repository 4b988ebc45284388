//! `secrets`: admin-written values, stored sealed ([`crate::keyring`]) and
//! never read back (only a worker's claim sees them, opened, in the
//! workitem's `ancillaries`). Insert and update here;
//! list, get (metadata only) and delete through the shared handlers of
//! [`super::resource`].

use axum::Json;
use axum::extract::{Path, State};
use rusqlite::Transaction;
use serde_json::Value;

use super::error::ApiError;
use super::extract::{JsonBody, RawQuery, is_upsert, object};
use super::resource::{Readable, Removable, Resource};
use crate::auth::{Action, Caller};
use crate::query::json_kind;
use crate::secret_config::REDACTED;
use crate::state::AppState;
use crate::store::StoreError;
use crate::store::resources::{self, WriteMode};

/// The `secrets` resource type.
#[derive(Debug)]
pub struct Secrets;

impl Resource for Secrets {
    const NAME: &'static str = "secrets";
    const KEY: &'static str = "name";
}

impl Readable for Secrets {
    const READ: Action = Action::ManageSecrets;

    fn list(tx: &Transaction<'_>, namespace: &str) -> Result<Vec<Value>, StoreError> {
        resources::list_secrets(tx, namespace)
    }

    fn get(tx: &Transaction<'_>, namespace: &str, key: &str) -> Result<Option<Value>, StoreError> {
        resources::get_secret_meta(tx, namespace, key)
    }
}

impl Removable for Secrets {
    const DELETE: Action = Action::ManageSecrets;

    fn delete(tx: &Transaction<'_>, namespace: &str, key: &str) -> Result<bool, ApiError> {
        Ok(resources::delete_secret(tx, namespace, key)?)
    }
}

/// The fields of a secret write: name, secret value, description.
type SecretFields = (Option<String>, Option<String>, Option<String>);

/// Reads a secret write's body.
fn secret_fields(body: Value, name_required: bool) -> Result<SecretFields, ApiError> {
    let body = object(body)?;
    let mut name = None;
    let mut secret = None;
    let mut description = None;
    let text = |key: &str, value: &Value| -> Result<String, ApiError> {
        value.as_str().map(str::to_owned).ok_or_else(|| {
            ApiError::invalid(key, format!("must be a string, got {}", json_kind(value)))
        })
    };
    for (key, value) in &body {
        match key.as_str() {
            "name" => name = Some(text(key, value)?),
            "secret" => secret = Some(text(key, value)?),
            "description" => description = Some(text(key, value)?),
            "_id" => {}
            key if key.starts_with("ars_") => {}
            other => {
                return Err(ApiError::invalid(
                    other,
                    "is not a property of secrets (name, secret, description)",
                ));
            }
        }
    }
    if name_required {
        let valid = name.as_deref().is_some_and(|name| {
            !name.is_empty()
                && name.len() <= 253
                && name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        });
        if !valid {
            return Err(ApiError::invalid(
                "name",
                "1-253 characters of letters, digits, '-', '_' or '.'",
            ));
        }
    }
    Ok((name, secret, description))
}

/// `POST /secrets` (insert, or upsert with `?upsert=true`).
pub async fn put_secret(
    State(state): State<AppState>,
    caller: Caller,
    RawQuery(query): RawQuery,
    JsonBody(body): JsonBody,
) -> Result<Json<Value>, ApiError> {
    caller.require(Action::ManageSecrets)?;
    let (name, secret, description) = secret_fields(body, true)?;
    let name = name.unwrap_or_default();
    let mode = if is_upsert(&query) {
        WriteMode::Upsert
    } else {
        WriteMode::Insert
    };
    write(&state, caller, name, secret, description, mode).await
}

/// `PUT /secrets/<name>`.
pub async fn update_secret(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
    JsonBody(body): JsonBody,
) -> Result<Json<Value>, ApiError> {
    caller.require(Action::ManageSecrets)?;
    let (given, secret, description) = secret_fields(body, false)?;
    if given.is_some_and(|given| given != name) {
        return Err(ApiError::invalid("name", "a secret cannot be renamed"));
    }
    write(&state, caller, name, secret, description, WriteMode::Update).await
}

/// Writes a secret as `mode` says; answers its metadata.
async fn write(
    state: &AppState,
    caller: Caller,
    name: String,
    secret: Option<String>,
    description: Option<String>,
    mode: WriteMode,
) -> Result<Json<Value>, ApiError> {
    // Sealed before it is stored; the redaction marker sent back keeps the
    // stored value, as in a redeploy.
    let sealed = secret
        .filter(|secret| secret != REDACTED)
        .map(|secret| state.keyring.seal(&secret));
    let written = state
        .store
        .transaction(move |tx| {
            resources::put_secret(
                tx,
                &caller.namespace,
                &name,
                sealed.as_deref(),
                description.as_deref(),
                &caller.username,
                mode,
            )
        })
        .await?;
    Ok(Json(written))
}

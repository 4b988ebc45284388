//! `documents` (multipart upload, metadata, download under `/docs/<name>`)
//! and `secrets` (admin-written values, never read back; only a worker's
//! claim sees them, in the workitem's `ancillaries`).

use axum::Json;
use axum::extract::{Multipart, Path, Request, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use k8sworker_client::documents;
use serde_json::Value;

use super::extract::{JsonBody, RawQuery, SelectParams, is_upsert, selected};
use crate::auth::{Action, Caller};
use crate::error::ApiError;
use crate::operations::json_kind;
use crate::server::AppState;
use crate::store::resources::{self, WriteMode};

fn invalid(field: &str, reason: impl Into<String>) -> ApiError {
    ApiError::InvalidArgument {
        field: field.to_owned(),
        reason: reason.into(),
    }
}

/// Document names are paths (`cluster/inst/pod-ts.txt`) without `..`.
fn check_document_name(name: &str) -> Result<(), ApiError> {
    let valid = !name.is_empty()
        && name.len() <= 1024
        && !name.starts_with('/')
        && !name
            .split('/')
            .any(|segment| segment.is_empty() || segment == "." || segment == "..")
        && !name.chars().any(char::is_control);
    if valid {
        Ok(())
    } else {
        Err(invalid(
            "name",
            "a document name is a relative path of non-empty segments without '.', '..' or control characters",
        ))
    }
}

fn document_not_found(name: String) -> ApiError {
    ApiError::NotFound {
        resource: "documents",
        key: "name",
        id: name,
    }
}

fn multipart_error(state: &AppState, error: axum::extract::multipart::MultipartError) -> ApiError {
    if error.status() == StatusCode::PAYLOAD_TOO_LARGE {
        ApiError::BodyTooLarge(state.config.max_body_bytes)
    } else {
        invalid("body", error.body_text())
    }
}

/// `POST /documents` (multipart/form-data): the `file` part's file name is
/// the document name unless a `documentPath` (or `name`) field names it
/// (`k8sworker_client::documents`).
pub async fn upload(
    State(state): State<AppState>,
    caller: Caller,
    request: Request,
) -> Result<Json<Value>, ApiError> {
    caller.require(Action::WriteDocuments)?;
    let mut multipart =
        <Multipart as axum::extract::FromRequest<AppState>>::from_request(request, &state)
            .await
            .map_err(|rejection| {
                invalid(
                    "body",
                    format!("expected multipart/form-data: {}", rejection.body_text()),
                )
            })?;
    let mut file: Option<(Option<String>, String, Vec<u8>)> = None;
    let mut path: Option<String> = None;
    while let Some(field) = multipart
        .next_field()
        .await
        .map_err(|error| multipart_error(&state, error))?
    {
        let field_name = field.name().unwrap_or_default().to_owned();
        let file_name = field.file_name().map(str::to_owned);
        let content_type = field
            .content_type()
            .unwrap_or("application/octet-stream")
            .to_owned();
        if field_name == documents::PATH_FIELD || field_name == "name" {
            path = Some(
                field
                    .text()
                    .await
                    .map_err(|error| multipart_error(&state, error))?,
            );
        } else if file_name.is_some() || field_name == documents::FILE_FIELD {
            let bytes = field
                .bytes()
                .await
                .map_err(|error| multipart_error(&state, error))?;
            file = Some((file_name, content_type, bytes.to_vec()));
        }
    }
    let Some((file_name, content_type, content)) = file else {
        return Err(invalid(
            documents::FILE_FIELD,
            "the upload has no file part",
        ));
    };
    let name = path.or(file_name).ok_or_else(|| {
        invalid(
            "name",
            "give the file part a file name or a documentPath field",
        )
    })?;
    check_document_name(&name)?;
    let doc = state
        .store
        .transaction(move |tx| {
            resources::put_document(
                tx,
                &caller.namespace,
                &name,
                &content_type,
                &content,
                &caller.username,
            )
        })
        .await?;
    Ok(Json(doc))
}

/// `GET /documents`.
pub async fn list(
    State(state): State<AppState>,
    caller: Caller,
    SelectParams(select): SelectParams,
) -> Result<Response, ApiError> {
    caller.require(Action::ReadDocuments)?;
    let docs = state
        .store
        .transaction(move |tx| resources::list_documents(tx, &caller.namespace))
        .await?;
    Ok(selected(&select, docs))
}

/// `POST /documents/select`.
pub async fn select(
    state: State<AppState>,
    caller: Caller,
    params: SelectParams,
    JsonBody(body): JsonBody,
) -> Result<Response, ApiError> {
    let params = params.with_where(&body)?;
    list(state, caller, params).await
}

/// `GET /documents/<name>`: metadata; `content` is the download URI.
pub async fn get_one(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
) -> Result<Json<Value>, ApiError> {
    caller.require(Action::ReadDocuments)?;
    state
        .store
        .transaction(move |tx| {
            resources::get_document_meta(tx, &caller.namespace, &name)?
                .ok_or_else(|| document_not_found(name))
        })
        .await
        .map(Json)
}

/// `DELETE /documents/<name>`.
pub async fn delete_one(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
) -> Result<StatusCode, ApiError> {
    caller.require(Action::WriteDocuments)?;
    state
        .store
        .transaction(move |tx| {
            if resources::delete_document(tx, &caller.namespace, &name)? {
                Ok(StatusCode::NO_CONTENT)
            } else {
                Err(document_not_found(name))
            }
        })
        .await
}

/// `GET /docs/<name>`: the document's bytes.
pub async fn download(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
) -> Result<Response, ApiError> {
    caller.require(Action::ReadDocuments)?;
    let (file_type, content) = state
        .store
        .transaction(move |tx| {
            resources::get_document_content(tx, &caller.namespace, &name)?
                .ok_or_else(|| document_not_found(name))
        })
        .await?;
    Ok(([(header::CONTENT_TYPE, file_type)], content).into_response())
}

/// The fields of a secret write: name, secret value, description.
type SecretFields = (Option<String>, Option<String>, Option<String>);

/// Reads a secret write's body.
fn secret_fields(body: Value, name_required: bool) -> Result<SecretFields, ApiError> {
    let Value::Object(body): Value = body else {
        return Err(invalid(
            "body",
            format!("must be a JSON object, got {}", json_kind(&body)),
        ));
    };
    let mut name = None;
    let mut secret = None;
    let mut description = None;
    let text = |key: &str, value: &Value| -> Result<String, ApiError> {
        value
            .as_str()
            .map(str::to_owned)
            .ok_or_else(|| invalid(key, format!("must be a string, got {}", json_kind(value))))
    };
    for (key, value) in &body {
        match key.as_str() {
            "name" => name = Some(text(key, value)?),
            "secret" => secret = Some(text(key, value)?),
            "description" => description = Some(text(key, value)?),
            "_id" => {}
            key if key.starts_with("ars_") => {}
            other => {
                return Err(invalid(
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
            return Err(invalid(
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
    state
        .store
        .transaction(move |tx| {
            resources::put_secret(
                tx,
                &caller.namespace,
                &name,
                secret.as_deref(),
                description.as_deref(),
                &caller.username,
                mode,
            )
        })
        .await
        .map(Json)
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
        return Err(invalid("name", "a secret cannot be renamed"));
    }
    state
        .store
        .transaction(move |tx| {
            resources::put_secret(
                tx,
                &caller.namespace,
                &name,
                secret.as_deref(),
                description.as_deref(),
                &caller.username,
                WriteMode::Update,
            )
        })
        .await
        .map(Json)
}

/// `GET /secrets`: names and audit properties only.
pub async fn list_secrets(
    State(state): State<AppState>,
    caller: Caller,
    SelectParams(select): SelectParams,
) -> Result<Response, ApiError> {
    caller.require(Action::ManageSecrets)?;
    let docs = state
        .store
        .transaction(move |tx| resources::list_secrets(tx, &caller.namespace))
        .await?;
    Ok(selected(&select, docs))
}

fn secret_not_found(name: String) -> ApiError {
    ApiError::NotFound {
        resource: "secrets",
        key: "name",
        id: name,
    }
}

/// `GET /secrets/<name>`: metadata only.
pub async fn get_secret(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
) -> Result<Json<Value>, ApiError> {
    caller.require(Action::ManageSecrets)?;
    state
        .store
        .transaction(move |tx| {
            resources::get_secret_meta(tx, &caller.namespace, &name)?
                .ok_or_else(|| secret_not_found(name))
        })
        .await
        .map(Json)
}

/// `DELETE /secrets/<name>`.
pub async fn delete_secret(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
) -> Result<StatusCode, ApiError> {
    caller.require(Action::ManageSecrets)?;
    state
        .store
        .transaction(move |tx| {
            if resources::delete_secret(tx, &caller.namespace, &name)? {
                Ok(StatusCode::NO_CONTENT)
            } else {
                Err(secret_not_found(name))
            }
        })
        .await
}

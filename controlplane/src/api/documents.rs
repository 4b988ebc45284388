//! `documents`: multipart upload, delete and the download under
//! `/docs/<name>` here; list, select and get (metadata, `content` is the
//! download URI) through the shared handlers of [`super::resource`].
//!
//! Uploads are held to the namespace's document quota (`--max-documents`,
//! `--max-document-bytes`), and a document a deploy mounts is written or
//! deleted by admins only.

use axum::Json;
use axum::extract::{Multipart, Path, Request, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use k8sworker_client::documents;
use rusqlite::Transaction;
use serde_json::Value;

use super::error::ApiError;
use super::resource::{Readable, Resource};
use crate::auth::{Action, Caller};
use crate::state::AppState;
use crate::store::StoreError;
use crate::store::resources;

/// The `documents` resource type.
#[derive(Debug)]
pub struct Documents;

impl Resource for Documents {
    const NAME: &'static str = "documents";
    const KEY: &'static str = "name";
}

impl Readable for Documents {
    const READ: Action = Action::ReadDocuments;

    fn list(tx: &Transaction<'_>, namespace: &str) -> Result<Vec<Value>, StoreError> {
        resources::list_documents(tx, namespace)
    }

    fn get(tx: &Transaction<'_>, namespace: &str, key: &str) -> Result<Option<Value>, StoreError> {
        resources::get_document_meta(tx, namespace, key)
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
        Err(ApiError::invalid(
            "name",
            "a document name is a relative path of non-empty segments without '.', '..' or control characters",
        ))
    }
}

fn multipart_error(state: &AppState, error: axum::extract::multipart::MultipartError) -> ApiError {
    if error.status() == StatusCode::PAYLOAD_TOO_LARGE {
        ApiError::BodyTooLarge(state.config.max_body_bytes)
    } else {
        ApiError::invalid("body", error.body_text())
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
                ApiError::invalid(
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
        return Err(ApiError::invalid(
            documents::FILE_FIELD,
            "the upload has no file part",
        ));
    };
    let name = path.or(file_name).ok_or_else(|| {
        ApiError::invalid(
            "name",
            "give the file part a file name or a documentPath field",
        )
    })?;
    check_document_name(&name)?;
    let (max_documents, max_bytes) = (state.config.max_documents, state.config.max_document_bytes);
    let doc = state
        .store
        .transaction(move |tx| {
            guard_mounted(tx, &caller, &name)?;
            let (count, bytes) = resources::document_usage(tx, &caller.namespace, &name)?;
            let size = content.len() as u64;
            for (measure, requested, in_use, limit) in [
                ("documents", 1, count, max_documents),
                ("bytes", size, bytes, max_bytes),
            ] {
                if in_use.saturating_add(requested) > limit {
                    return Err(ApiError::DocumentQuotaExceeded {
                        measure,
                        requested,
                        in_use,
                        limit,
                    });
                }
            }
            Ok::<_, ApiError>(resources::put_document(
                tx,
                &caller.namespace,
                &name,
                &content_type,
                &content,
                &caller.username,
            )?)
        })
        .await?;
    Ok(Json(doc))
}

/// Content types served as uploaded: ones a browser shows without running
/// anything (no HTML, SVG, XML or script). Anything else is served as
/// `application/octet-stream` for download, so an uploaded page cannot run
/// in the control plane's origin.
const SERVED_AS_UPLOADED: &[&str] = &[
    "text/plain",
    "text/csv",
    "application/json",
    "application/octet-stream",
    "application/pdf",
    "application/zip",
    "application/gzip",
    "image/png",
    "image/jpeg",
    "image/gif",
    "image/webp",
    "video/mp4",
    "video/webm",
];

/// The headers a download is served with: the uploaded content type when it
/// is in [`SERVED_AS_UPLOADED`] (parameters such as `charset` kept), else
/// `application/octet-stream` with `Content-Disposition: attachment`; always
/// `X-Content-Type-Options: nosniff` and a sandboxing
/// `Content-Security-Policy`.
fn download_headers(file_type: &str) -> Vec<(header::HeaderName, String)> {
    let essence = file_type
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase();
    let safe = SERVED_AS_UPLOADED.contains(&essence.as_str())
        && http::HeaderValue::from_str(file_type).is_ok();
    let mut headers = vec![
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff".to_owned()),
        (
            header::CONTENT_SECURITY_POLICY,
            "default-src 'none'; sandbox".to_owned(),
        ),
    ];
    if safe {
        headers.push((header::CONTENT_TYPE, file_type.to_owned()));
    } else {
        headers.push((header::CONTENT_TYPE, "application/octet-stream".to_owned()));
        headers.push((header::CONTENT_DISPOSITION, "attachment".to_owned()));
    }
    headers
}

/// Documents a deploy mounts are changed only by admins: what a `user` or
/// a worker token writes never reaches an installation's pods without an
/// admin (who may deploy anyway) having done it.
fn guard_mounted(tx: &Transaction<'_>, caller: &Caller, name: &str) -> Result<(), ApiError> {
    if caller.grants.admin {
        return Ok(());
    }
    match resources::document_mounted_by(tx, &caller.namespace, name)? {
        Some(installation) => Err(ApiError::DocumentMounted {
            document: name.to_owned(),
            installation,
        }),
        None => Ok(()),
    }
}

/// `DELETE /documents/<name>`: 204, 404 when there is none, 403 for a
/// non-admin when a deploy mounts it.
pub async fn delete(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
) -> Result<StatusCode, ApiError> {
    caller.require(Action::WriteDocuments)?;
    state
        .store
        .transaction(move |tx| {
            guard_mounted(tx, &caller, &name)?;
            if resources::delete_document(tx, &caller.namespace, &name)? {
                Ok(StatusCode::NO_CONTENT)
            } else {
                Err(Documents::not_found(name))
            }
        })
        .await
}

/// `GET /docs/<name>`: the document's bytes, served with
/// [`download_headers`].
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
                .ok_or_else(|| Documents::not_found(name))
        })
        .await?;
    let mut response = content.into_response();
    for (name, value) in download_headers(&file_type) {
        if let Ok(value) = http::HeaderValue::from_str(&value) {
            response.headers_mut().insert(name, value);
        }
    }
    Ok(response)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header_of(
        headers: &[(header::HeaderName, String)],
        name: header::HeaderName,
    ) -> Option<&str> {
        headers
            .iter()
            .find(|(key, _)| *key == name)
            .map(|(_, value)| value.as_str())
    }

    #[test]
    fn active_content_is_served_for_download_only() {
        for uploaded in [
            "text/html",
            "image/svg+xml",
            "application/javascript",
            "text/xml",
            "TEXT/HTML; charset=utf-8",
            "bad\nvalue",
        ] {
            let headers = download_headers(uploaded);
            assert_eq!(
                header_of(&headers, header::CONTENT_TYPE),
                Some("application/octet-stream"),
                "{uploaded}"
            );
            assert_eq!(
                header_of(&headers, header::CONTENT_DISPOSITION),
                Some("attachment")
            );
            assert_eq!(
                header_of(&headers, header::X_CONTENT_TYPE_OPTIONS),
                Some("nosniff")
            );
        }
        let headers = download_headers("text/plain; charset=utf-8");
        assert_eq!(
            header_of(&headers, header::CONTENT_TYPE),
            Some("text/plain; charset=utf-8")
        );
        assert_eq!(header_of(&headers, header::CONTENT_DISPOSITION), None);
        assert_eq!(
            header_of(&headers, header::X_CONTENT_TYPE_OPTIONS),
            Some("nosniff")
        );
    }
}

//! Request plumbing shared by the handlers: the authenticated [`Caller`], a
//! JSON body that fails in Vantiq's shape, and the select parameters.

use std::collections::HashMap;

use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Query, Request};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{Map, Value};

use super::error::ApiError;
use crate::audit::now_ms;
use crate::auth::{Caller, Grants, token_hash};
use crate::query::json_kind;
use crate::query::{Filter, Select};
use crate::state::AppState;
use crate::store::identity;

/// The query string as a map (repeated keys: the last wins).
pub fn query_map(parts: &Parts) -> HashMap<String, String> {
    Query::<HashMap<String, String>>::try_from_uri(&parts.uri)
        .map(|Query(map)| map)
        .unwrap_or_default()
}

fn bearer(headers: &HeaderMap) -> Option<String> {
    let value = headers.get(http::header::AUTHORIZATION)?.to_str().ok()?;
    let token = value
        .strip_prefix("Bearer ")
        .or_else(|| value.strip_prefix("bearer "))?;
    Some(token.trim().to_owned())
}

impl FromRequestParts<AppState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let query = query_map(parts);
        let token = bearer(&parts.headers)
            .or_else(|| query.get("token").cloned())
            .ok_or(ApiError::Unauthenticated)?;
        let hash = token_hash(&token);
        let lookup = hash.clone();
        let record = state
            .store
            .transaction(move |tx| identity::find_token(tx, &lookup))
            .await?
            .ok_or(ApiError::InvalidToken)?;
        if record.expires_at.is_some_and(|expires| expires <= now_ms()) {
            return Err(ApiError::InvalidToken);
        }
        let target = parts
            .headers
            .get("x-target-namespace")
            .and_then(|value| value.to_str().ok())
            .map(str::to_owned)
            .or_else(|| query.get("targetNamespace").cloned());
        if let Some(target) = target
            && target != record.namespace
        {
            return Err(ApiError::WrongNamespace {
                token: record.namespace,
                target: target.chars().take(200).collect(),
            });
        }
        let grants = Grants::from_profiles(&record.profiles);
        Ok(Caller {
            system_admin: grants.admin && record.namespace == state.config.bootstrap_namespace,
            namespace: record.namespace,
            username: record.username,
            grants,
            token_hash: hash,
            k8s_cluster: record.k8s_cluster,
        })
    }
}

/// A JSON request body; malformed JSON is a 400 and an oversized body a 413,
/// both in Vantiq's error shape.
#[derive(Debug)]
pub struct JsonBody(pub Value);

impl FromRequest<AppState> for JsonBody {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &AppState) -> Result<Self, Self::Rejection> {
        let bytes = read_body(request, state).await?;
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Err(ApiError::MalformedJson("the body is empty".into()));
        }
        serde_json::from_slice(&bytes)
            .map(JsonBody)
            .map_err(|error| ApiError::MalformedJson(error.to_string()))
    }
}

/// The raw body, with the size limit applied.
pub async fn read_body(request: Request, state: &AppState) -> Result<Bytes, ApiError> {
    Bytes::from_request(request, state)
        .await
        .map_err(|rejection| {
            if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
                ApiError::BodyTooLarge(state.config.max_body_bytes)
            } else {
                ApiError::MalformedJson(rejection.body_text())
            }
        })
}

/// A body that must be a JSON object; anything else is a 400 naming what
/// it was.
pub fn object(body: Value) -> Result<Map<String, Value>, ApiError> {
    match body {
        Value::Object(object) => Ok(object),
        other => Err(ApiError::invalid(
            "body",
            format!("must be a JSON object, got {}", json_kind(&other)),
        )),
    }
}

/// The select parameters of a GET (`where`, `props`, `sort`, `limit`,
/// `page`, `count`). Parsing compiles the `where` clause's `$regex` terms
/// (up to [`crate::query::MAX_WHERE_REGEXES`] programs, each up to its size
/// limit: milliseconds of CPU), so it runs on a blocking thread, never on
/// the async ones; the errors are those of [`Select::from_params`].
#[derive(Debug)]
pub struct SelectParams(pub Select);

impl<S: Send + Sync> FromRequestParts<S> for SelectParams {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        let query = query_map(parts);
        let select = tokio::task::spawn_blocking(move || {
            let get = |key: &str| query.get(key).map(String::as_str);
            Select::from_params(
                get("where"),
                get("props"),
                get("sort"),
                get("limit"),
                get("page"),
                get("count"),
            )
        })
        .await
        .map_err(ApiError::Task)??;
        Ok(SelectParams(select))
    }
}

impl SelectParams {
    /// For `POST <resource>/select`: the body is the where clause, parsed
    /// (and its regexes compiled) on a blocking thread like the query
    /// string's.
    pub async fn with_where(mut self, body: Value) -> Result<Self, ApiError> {
        self.0.filter = tokio::task::spawn_blocking(move || Filter::parse(&body))
            .await
            .map_err(ApiError::Task)??;
        Ok(self)
    }
}

/// Applies a select to documents and answers them, with `X-Total-Count`
/// when `count=true`.
pub fn selected(select: &Select, documents: Vec<Value>) -> Response {
    let result = select.apply(documents);
    let mut response = axum::Json(result.documents).into_response();
    if select.count {
        response
            .headers_mut()
            .insert("x-total-count", HeaderValue::from(result.total as u64));
    }
    response
}

/// Whether the query string has `upsert=true`.
pub fn is_upsert(parts: &HashMap<String, String>) -> bool {
    parts.get("upsert").is_some_and(|value| value == "true")
}

/// The query string of a request, as an extractor.
#[derive(Debug)]
pub struct RawQuery(pub HashMap<String, String>);

impl<S: Send + Sync> FromRequestParts<S> for RawQuery {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        Ok(RawQuery(query_map(parts)))
    }
}

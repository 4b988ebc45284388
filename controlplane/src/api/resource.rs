//! The handlers every resource type shares: list (`GET <type>` with
//! Vantiq's select parameters), select (`POST <type>/select`), get one
//! (`GET <type>/<key>`), delete one (`DELETE <type>/<key>`) and delete where
//! (`DELETE <type>?where=…`, all or nothing).
//!
//! A resource type says what they need to know by implementing [`Resource`]
//! (its name and key, for errors), [`Readable`] (who may read it and where
//! its JSON view comes from) and [`Removable`] (who may delete it and how);
//! the router picks the handlers each type offers.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use rusqlite::Transaction;
use serde_json::Value;

use super::error::ApiError;
use super::extract::{JsonBody, SelectParams, selected};
use crate::auth::{Action, Caller};
use crate::query::Select;
use crate::state::AppState;
use crate::store::StoreError;

/// A resource type, as its URLs and errors name it.
pub trait Resource: Send + Sync + 'static {
    /// Vantiq's name of the type (`k8sclusters`).
    const NAME: &'static str;
    /// The property an instance is addressed by (`name`, `requestId`).
    const KEY: &'static str;

    /// The 404 for an instance that does not exist.
    fn not_found(key: String) -> ApiError {
        ApiError::not_found(Self::NAME, Self::KEY, key)
    }
}

/// A resource type whose instances can be listed and read.
pub trait Readable: Resource {
    /// What reading requires.
    const READ: Action;

    /// Every instance of `namespace`, as Vantiq JSON, in the type's order.
    fn list(tx: &Transaction<'_>, namespace: &str) -> Result<Vec<Value>, StoreError>;

    /// The instance `key` of `namespace`, if it exists.
    fn get(tx: &Transaction<'_>, namespace: &str, key: &str) -> Result<Option<Value>, StoreError>;
}

/// A resource type whose instances can be deleted one by one.
pub trait Removable: Resource {
    /// What deleting requires.
    const DELETE: Action;

    /// Deletes the instance `key` of `namespace`: `false` when there is none,
    /// an error when the type refuses (a cluster still in use).
    fn delete(tx: &Transaction<'_>, namespace: &str, key: &str) -> Result<bool, ApiError>;
}

/// `GET <type>`: the caller's namespace's instances that the select keeps,
/// with `X-Total-Count` on `count=true`.
pub async fn list<R: Readable>(
    State(state): State<AppState>,
    caller: Caller,
    SelectParams(select): SelectParams,
) -> Result<Response, ApiError> {
    caller.require(R::READ)?;
    let namespace = caller.namespace;
    let documents = state
        .store
        .transaction(move |tx| R::list(tx, &namespace))
        .await?;
    // Matching (regexes included) is CPU work: off the async threads, and
    // outside the storage lock so other requests go on meanwhile.
    tokio::task::spawn_blocking(move || selected(&select, documents))
        .await
        .map_err(ApiError::Task)
}

/// `POST <type>/select`: [`list`] with the body as the where clause.
pub async fn select<R: Readable>(
    state: State<AppState>,
    caller: Caller,
    params: SelectParams,
    JsonBody(body): JsonBody,
) -> Result<Response, ApiError> {
    let params = params.with_where(body).await?;
    list::<R>(state, caller, params).await
}

/// `GET <type>/<key>`.
pub async fn get_one<R: Readable>(
    State(state): State<AppState>,
    caller: Caller,
    Path(key): Path<String>,
) -> Result<Json<Value>, ApiError> {
    caller.require(R::READ)?;
    state
        .store
        .transaction(move |tx| {
            R::get(tx, &caller.namespace, &key)?.ok_or_else(|| R::not_found(key))
        })
        .await
        .map(Json)
}

/// `DELETE <type>/<key>`: 204, or 404 when there is none.
pub async fn delete_one<R: Removable>(
    State(state): State<AppState>,
    caller: Caller,
    Path(key): Path<String>,
) -> Result<StatusCode, ApiError> {
    caller.require(R::DELETE)?;
    state
        .store
        .transaction(move |tx| {
            if R::delete(tx, &caller.namespace, &key)? {
                Ok(StatusCode::NO_CONTENT)
            } else {
                Err(R::not_found(key))
            }
        })
        .await
}

/// `DELETE <type>?where=…`: deletes every match in one transaction, or none
/// when one is refused; 204 with `X-Total-Count` on `count=true`.
pub async fn delete_where<R: Readable + Removable>(
    State(state): State<AppState>,
    caller: Caller,
    SelectParams(select): SelectParams,
) -> Result<Response, ApiError> {
    caller.require(R::DELETE)?;
    let count = select.count;
    let deleted = state
        .store
        .transaction(move |tx| {
            let namespace = caller.namespace.as_str();
            let select = Select {
                props: None,
                ..select
            };
            let matched = select.apply(R::list(tx, namespace)?);
            for document in &matched.documents {
                if let Some(key) = document.get(R::KEY).and_then(Value::as_str) {
                    R::delete(tx, namespace, key)?;
                }
            }
            Ok::<_, ApiError>(matched.documents.len())
        })
        .await?;
    let mut response = StatusCode::NO_CONTENT.into_response();
    if count {
        response
            .headers_mut()
            .insert("x-total-count", HeaderValue::from(deleted as u64));
    }
    Ok(response)
}

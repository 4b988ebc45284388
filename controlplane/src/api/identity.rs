//! Authentication and identity resources: `GET /authenticate` (Basic →
//! access token), `POST /authenticate/refresh`, long-lived `tokens`,
//! `users` and `namespaces`.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;

use axum::Json;
use axum::extract::{ConnectInfo, Path, Request, State};
use rusqlite::Transaction;
use serde_json::{Value, json};

use super::error::ApiError;
use super::extract::{JsonBody, read_body};
use super::resource::{Removable, Resource};
use crate::audit::{MAX_MS, iso, now_ms};
use crate::auth::{
    self, Action, Caller, WORKER_PROFILE, hash_password, new_token, normalize_profile, parse_basic,
    token_hash,
};
use crate::query::json_kind;
use crate::state::AppState;
use crate::store::identity::{self, TokenRecord, UserRecord};
use crate::store::resources::{self, DocTable};

/// Long-lived `tokens`, revoked through the shared delete handler of
/// [`super::resource`].
#[derive(Debug)]
pub struct Tokens;

impl Resource for Tokens {
    const NAME: &'static str = "tokens";
    const KEY: &'static str = "name";
}

impl Removable for Tokens {
    const DELETE: Action = Action::ManageTokens;

    fn delete(tx: &Transaction<'_>, namespace: &str, key: &str) -> Result<bool, ApiError> {
        Ok(identity::delete_named_token(tx, namespace, key)?)
    }
}

fn check_identifier(field: &str, value: Option<&Value>) -> Result<String, ApiError> {
    match value {
        Some(Value::String(text))
            if !text.is_empty()
                && text.len() <= 128
                && text
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '@')) =>
        {
            Ok(text.clone())
        }
        Some(other) if !other.is_string() => Err(ApiError::invalid(
            field,
            format!("must be a string, got {}", json_kind(other)),
        )),
        Some(_) => Err(ApiError::invalid(
            field,
            "1-128 characters of letters, digits, '-', '_', '.' or '@'",
        )),
        None => Err(ApiError::invalid(field, "is required")),
    }
}

/// A new password: a string of 8 to 1024 characters.
fn check_password(field: &str, value: Option<&Value>) -> Result<String, ApiError> {
    match value {
        Some(Value::String(password)) if password.len() >= 8 && password.len() <= 1024 => {
            Ok(password.clone())
        }
        _ => Err(ApiError::invalid(
            field,
            "must be a string of 8 to 1024 characters",
        )),
    }
}

/// The stored form of `password`, hashed off the runtime (PBKDF2 is slow
/// by design).
async fn hash(state: &AppState, password: String) -> Result<String, ApiError> {
    let iterations = state.config.password_hash_iterations;
    tokio::task::spawn_blocking(move || hash_password(&password, iterations))
        .await
        .map_err(ApiError::Task)
}

/// Issues a session token for a user and answers Vantiq's authenticate body.
async fn issue_session(state: &AppState, user: UserRecord) -> Result<Json<Value>, ApiError> {
    let token = new_token();
    let expires_at = now_ms() + state.config.access_token_ttl.as_millis() as i64;
    let record = TokenRecord {
        name: None,
        namespace: user.namespace.clone(),
        username: user.username.clone(),
        profiles: vec![user.profile.clone()],
        expires_at: Some(expires_at),
        k8s_cluster: None,
    };
    let hash = token_hash(&token);
    state
        .store
        .transaction(move |tx| identity::insert_token(tx, &hash, &record))
        .await?;
    Ok(Json(json!({
        "accessToken": token,
        "idToken": token,
        "username": user.username,
        "namespace": user.namespace,
        "profiles": [user.profile],
        "expiresAt": iso(expires_at),
    })))
}

/// `GET /authenticate` with `Authorization: Basic`.
///
/// Each attempt is admitted by [`crate::state::LoginLimits`] first (a rate
/// per client address, a number at once); then the password is verified
/// off the runtime, against the user's hash or, for an unknown user, a
/// dummy hash of the same cost ([`auth::verify_login`]).
pub async fn authenticate(
    State(state): State<AppState>,
    request: Request,
) -> Result<Json<Value>, ApiError> {
    let header = request
        .headers()
        .get(http::header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .ok_or(ApiError::Unauthenticated)?;
    let (username, password) = parse_basic(header).ok_or(ApiError::BadCredentials)?;
    let client = request
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED), |info| info.0.ip());
    let permit = state.logins.admit(client)?;
    let lookup = username.clone();
    let user = state
        .store
        .transaction(move |tx| identity::find_user(tx, &lookup))
        .await?;
    // PBKDF2 is deliberately slow: keep it off the runtime and the database lock.
    let stored = user.as_ref().map(|user| user.password_hash.clone());
    let logins = Arc::clone(&state.logins);
    let valid = tokio::task::spawn_blocking(move || {
        let _permit = permit;
        auth::verify_login(stored.as_deref(), &password, &logins.dummy_hash)
    })
    .await
    .unwrap_or(false);
    match user {
        Some(user) if valid => issue_session(&state, user).await,
        _ => {
            tracing::info!(%username, "authentication failed");
            Err(ApiError::BadCredentials)
        }
    }
}

/// `POST /authenticate/refresh`: the body (text/plain) is a valid session
/// token; it is replaced by a new one.
pub async fn refresh(
    State(state): State<AppState>,
    request: Request,
) -> Result<Json<Value>, ApiError> {
    let body = read_body(request, &state).await?;
    let token = String::from_utf8_lossy(&body)
        .trim()
        .trim_matches('"')
        .to_owned();
    if token.is_empty() {
        return Err(ApiError::Unauthenticated);
    }
    let hash = token_hash(&token);
    let user = state
        .store
        .transaction(move |tx| {
            let record = identity::find_token(tx, &hash)?.ok_or(ApiError::InvalidToken)?;
            // Only live session tokens are refreshed: a long-lived token
            // carries its own profiles, not its creator's session.
            if record.name.is_some() || record.expires_at.is_none_or(|expires| expires <= now_ms())
            {
                return Err(ApiError::InvalidToken);
            }
            let user = identity::find_user(tx, &record.username)?.ok_or(ApiError::InvalidToken)?;
            identity::delete_token_by_hash(tx, &hash)?;
            Ok(user)
        })
        .await?;
    issue_session(&state, user).await
}

/// The token property (*ours*) naming the one K8s cluster a worker token
/// serves; without it, the cluster of the token's first claim.
const CLUSTER_BINDING: &str = "k8sClusterName";

/// `POST /api/v1/resources/tokens` `{"name", "profiles", "expiresAt"?,
/// "k8sClusterName"?}`: a long-lived token; the secret is in the answer only.
pub async fn create_token(
    State(state): State<AppState>,
    caller: Caller,
    JsonBody(body): JsonBody,
) -> Result<Json<Value>, ApiError> {
    caller.require(Action::ManageTokens)?;
    let name = check_identifier("name", body.get("name"))?;
    let profiles: Vec<String> = match body.get("profiles") {
        Some(Value::Array(items)) if !items.is_empty() => items
            .iter()
            .map(|item| {
                item.as_str()
                    .map(str::to_owned)
                    .ok_or_else(|| ApiError::invalid("profiles", "must be a list of profile names"))
            })
            .collect::<Result<_, _>>()?,
        _ => {
            return Err(ApiError::invalid(
                "profiles",
                "must be a non-empty list of profile names",
            ));
        }
    };
    let expires_at = match body.get("expiresAt") {
        None | Some(Value::Null) => None,
        Some(Value::Number(number)) => match number.as_i64() {
            Some(ms) if (0..=MAX_MS).contains(&ms) => Some(ms),
            _ => {
                return Err(ApiError::invalid(
                    "expiresAt",
                    format!(
                        "must be whole epoch milliseconds between 0 and {MAX_MS} ({}), got {number}",
                        iso(MAX_MS)
                    ),
                ));
            }
        },
        Some(Value::String(text)) => Some(
            humantime::parse_rfc3339(text)
                .map_err(|error| ApiError::invalid("expiresAt", error.to_string()))?
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| i64::try_from(d.as_millis()).unwrap_or(MAX_MS).min(MAX_MS))
                .unwrap_or(0),
        ),
        Some(other) => {
            return Err(ApiError::invalid(
                "expiresAt",
                format!(
                    "must be an ISO 8601 date or epoch milliseconds, got {}",
                    json_kind(other)
                ),
            ));
        }
    };
    let k8s_cluster = match body.get(CLUSTER_BINDING) {
        None | Some(Value::Null) => None,
        value => Some(check_identifier(CLUSTER_BINDING, value)?),
    };
    let token = new_token();
    let hash = token_hash(&token);
    let answer_profiles = profiles.clone();
    let namespace = caller.namespace.clone();
    state
        .store
        .transaction(move |tx| {
            let mut normalized = Vec::new();
            for profile in &profiles {
                let qualifier = profile.rsplit_once('.').map(|(ns, _)| ns);
                let known = normalize_profile(profile)
                    .filter(|_| qualifier.is_none_or(|ns| ns == caller.namespace || ns == "system"));
                let Some(known) = known else {
                    return Err(ApiError::invalid("profiles", format!("{profile} is not a profile of namespace {}", caller.namespace)));
                };
                if !identity::has_profile(tx, &caller.namespace, known)? {
                    return Err(ApiError::invalid(
                        "profiles",
                        format!("namespace {} has no {known} profile; run K8sManager.addK8sWorkerProfile", caller.namespace),
                    ));
                }
                normalized.push(known.to_owned());
            }
            if let Some(cluster) = &k8s_cluster {
                if !normalized.iter().any(|profile| profile == WORKER_PROFILE) {
                    return Err(ApiError::invalid(
                        CLUSTER_BINDING,
                        format!("binds a worker token to its cluster; the profiles have no {WORKER_PROFILE}"),
                    ));
                }
                if resources::get_doc(tx, DocTable::Clusters, &caller.namespace, cluster)?.is_none() {
                    return Err(ApiError::invalid(
                        CLUSTER_BINDING,
                        format!("{cluster} is not a K8s cluster of namespace {}", caller.namespace),
                    ));
                }
            }
            let record = TokenRecord {
                name: Some(name.clone()),
                namespace: caller.namespace.clone(),
                username: caller.username.clone(),
                profiles: normalized,
                expires_at,
                k8s_cluster: k8s_cluster.clone(),
            };
            identity::insert_token(tx, &hash, &record)?;
            let mut answer = json!({
                "name": name,
                "accessToken": token,
                "profiles": answer_profiles,
                "expiresAt": expires_at.map(iso),
                "ars_namespace": namespace,
                "ars_createdBy": caller.username,
            });
            if let Some(cluster) = k8s_cluster {
                answer[CLUSTER_BINDING] = json!(cluster);
            }
            Ok(Json(answer))
        })
        .await
}

/// `GET /api/v1/resources/tokens`: names and profiles, never the secret.
pub async fn list_tokens(
    State(state): State<AppState>,
    caller: Caller,
) -> Result<Json<Value>, ApiError> {
    caller.require(Action::ManageTokens)?;
    let tokens = state
        .store
        .transaction(move |tx| identity::list_tokens(tx, &caller.namespace))
        .await?;
    Ok(Json(Value::Array(tokens)))
}

/// `POST /api/v1/resources/users` `{"username", "password", "profiles": ["admin"|"user"]}`.
pub async fn create_user(
    State(state): State<AppState>,
    caller: Caller,
    JsonBody(body): JsonBody,
) -> Result<Json<Value>, ApiError> {
    caller.require(Action::ManageUsers)?;
    let username = check_identifier("username", body.get("username"))?;
    let password = check_password("password", body.get("password"))?;
    let profile = match body
        .get("profiles")
        .and_then(|profiles| profiles.get(0))
        .or_else(|| body.get("profile"))
        .and_then(Value::as_str)
        .and_then(normalize_profile)
    {
        Some(profile @ (auth::ADMIN_PROFILE | auth::USER_PROFILE)) => profile,
        _ => {
            return Err(ApiError::invalid(
                "profiles",
                "a user has the admin or the user profile",
            ));
        }
    };
    let password_hash = hash(&state, password).await?;
    let namespace = caller.namespace.clone();
    let answer = json!({"username": username, "profiles": [profile], "ars_namespace": namespace});
    state
        .store
        .transaction(move |tx| {
            identity::create_user(
                tx,
                &UserRecord {
                    username,
                    namespace,
                    profile: profile.to_owned(),
                    password_hash,
                },
            )
        })
        .await?;
    Ok(Json(answer))
}

/// `GET /api/v1/resources/users`.
pub async fn list_users(
    State(state): State<AppState>,
    caller: Caller,
) -> Result<Json<Value>, ApiError> {
    caller.require(Action::ManageUsers)?;
    let users = state
        .store
        .transaction(move |tx| identity::list_users(tx, &caller.namespace))
        .await?;
    Ok(Json(Value::Array(users)))
}

fn check_limits(value: Option<&Value>) -> Result<Value, ApiError> {
    match value {
        None | Some(Value::Null) => Ok(json!({})),
        Some(Value::Object(limits)) => {
            if let Some(resources) = limits.get("k8sResources") {
                let Value::Object(resources) = resources else {
                    return Err(ApiError::invalid(
                        "limits.k8sResources",
                        "must be an object",
                    ));
                };
                for (key, value) in resources {
                    if !crate::quota::DIMENSIONS.iter().any(|(name, _)| name == key) {
                        return Err(ApiError::invalid(
                            &format!("limits.k8sResources.{key}"),
                            "is not one of vCPU, memory, gpuNvidia, gpuAmd",
                        ));
                    }
                    let text = match value {
                        Value::String(text) => text.clone(),
                        Value::Number(number) => number.to_string(),
                        _ => String::new(),
                    };
                    if k8sworker_core::quantity::Quantity::parse(&text).is_none() {
                        return Err(ApiError::invalid(
                            &format!("limits.k8sResources.{key}"),
                            "must be a Kubernetes quantity",
                        ));
                    }
                }
            }
            Ok(Value::Object(limits.clone()))
        }
        Some(other) => Err(ApiError::invalid(
            "limits",
            format!("must be an object, got {}", json_kind(other)),
        )),
    }
}

/// `POST /api/v1/resources/namespaces` (system admins):
/// `{"name", "adminUsername"?, "adminPassword"?, "limits"?}`.
pub async fn create_namespace(
    State(state): State<AppState>,
    caller: Caller,
    JsonBody(body): JsonBody,
) -> Result<Json<Value>, ApiError> {
    caller.require(Action::ManageNamespaces)?;
    let name = check_identifier("name", body.get("name"))?;
    let limits = check_limits(body.get("limits"))?;
    let admin = match body.get("adminUsername") {
        None | Some(Value::Null) => None,
        value => {
            let username = check_identifier("adminUsername", value)?;
            let password = check_password("adminPassword", body.get("adminPassword"))?;
            Some((username, hash(&state, password).await?))
        }
    };
    state
        .store
        .transaction(move |tx| {
            identity::create_namespace(tx, &name, &limits)?;
            if let Some((username, password_hash)) = admin {
                identity::create_user(
                    tx,
                    &UserRecord {
                        username,
                        namespace: name.clone(),
                        profile: auth::ADMIN_PROFILE.into(),
                        password_hash,
                    },
                )?;
            }
            Ok(Json(
                identity::namespace_doc(tx, &name)?.unwrap_or(Value::Null),
            ))
        })
        .await
}

/// `GET /api/v1/resources/namespaces`: all for a system admin, else one's own.
pub async fn list_namespaces(
    State(state): State<AppState>,
    caller: Caller,
) -> Result<Json<Value>, ApiError> {
    state
        .store
        .transaction(move |tx| {
            let names = if caller.require(Action::ManageNamespaces).is_ok() {
                identity::namespace_names(tx)?
            } else {
                vec![caller.namespace.clone()]
            };
            let mut docs = Vec::new();
            for name in names {
                docs.extend(identity::namespace_doc(tx, &name)?);
            }
            Ok(Json(Value::Array(docs)))
        })
        .await
}

/// `GET /api/v1/resources/namespaces/<name>`.
pub async fn get_namespace(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let not_found = |name: String| ApiError::not_found("namespaces", "name", name);
    if name != caller.namespace && caller.require(Action::ManageNamespaces).is_err() {
        return Err(not_found(name));
    }
    state
        .store
        .transaction(move |tx| identity::namespace_doc(tx, &name)?.ok_or_else(|| not_found(name)))
        .await
        .map(Json)
}

/// `PUT /api/v1/resources/namespaces/<name>` `{"limits": {"k8sResources": {..}}}`
/// (system admins: a namespace does not set its own quota).
pub async fn update_namespace(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
    JsonBody(body): JsonBody,
) -> Result<Json<Value>, ApiError> {
    caller.require(Action::ManageNamespaces)?;
    let limits = check_limits(body.get("limits"))?;
    state
        .store
        .transaction(move |tx| {
            if !identity::set_limits(tx, &name, &limits)? {
                return Err(ApiError::not_found("namespaces", "name", name));
            }
            Ok(Json(json!({"limits": limits})))
        })
        .await
}

/// `K8sManager.addK8sWorkerProfile()`: gives the caller's namespace the
/// `k8sWorker__system` profile (namespaces created before it existed).
pub async fn add_worker_profile(state: &AppState, caller: &Caller) -> Result<Value, ApiError> {
    caller.require(Action::ManageProfiles)?;
    let namespace = caller.namespace.clone();
    state
        .store
        .transaction(move |tx| {
            let added = identity::ensure_profile(tx, &namespace, WORKER_PROFILE)?;
            Ok(json!({
                "profile": format!("{namespace}.{WORKER_PROFILE}"),
                "added": added,
            }))
        })
        .await
}

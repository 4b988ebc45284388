//! Namespaces, profiles, users and tokens.

use rusqlite::{OptionalExtension, Transaction, params};
use serde_json::{Value, json};

use super::StoreError;
use crate::audit::{iso, now_ms};
use crate::auth::{ADMIN_PROFILE, USER_PROFILE, WORKER_PROFILE};

/// The profiles a new namespace has.
pub const DEFAULT_PROFILES: &[&str] = &[ADMIN_PROFILE, USER_PROFILE, WORKER_PROFILE];

/// A stored token, found by its hash.
#[derive(Debug, Clone)]
pub struct TokenRecord {
    /// `None` for a session token from `/authenticate`.
    pub name: Option<String>,
    /// The namespace the token acts in.
    pub namespace: String,
    /// The user it was issued to (or by, for a named token).
    pub username: String,
    /// Its profiles (`admin`, `user`, `k8sWorker__system`).
    pub profiles: Vec<String>,
    /// When it expires, epoch milliseconds; `None`: never.
    pub expires_at: Option<i64>,
    /// The one K8s cluster a worker token serves (*ours*): named when the
    /// token is created, or else the cluster of its first claim.
    pub k8s_cluster: Option<String>,
}

/// A stored user.
#[derive(Debug, Clone)]
pub struct UserRecord {
    /// The login name, unique across namespaces.
    pub username: String,
    /// The one namespace the user belongs to.
    pub namespace: String,
    /// `admin` or `user`.
    pub profile: String,
    /// [`crate::auth::hash_password`]'s string.
    pub password_hash: String,
}

/// Whether any namespace exists (first start when not).
pub fn is_initialized(tx: &Transaction<'_>) -> Result<bool, StoreError> {
    Ok(tx
        .query_row("SELECT 1 FROM namespaces LIMIT 1", [], |_| Ok(()))
        .optional()?
        .is_some())
}

/// Creates a namespace with the default profiles.
pub fn create_namespace(
    tx: &Transaction<'_>,
    name: &str,
    limits: &Value,
) -> Result<(), StoreError> {
    let inserted = tx.execute(
        "INSERT OR IGNORE INTO namespaces (name, limits, created_at) VALUES (?1, ?2, ?3)",
        params![name, limits.to_string(), now_ms()],
    )?;
    if inserted == 0 {
        return Err(StoreError::Duplicate {
            resource: "namespaces",
            id: name.to_owned(),
        });
    }
    for profile in DEFAULT_PROFILES {
        tx.execute(
            "INSERT OR IGNORE INTO profiles (namespace, name) VALUES (?1, ?2)",
            params![name, profile],
        )?;
    }
    Ok(())
}

/// The namespace's JSON view.
pub fn namespace_doc(tx: &Transaction<'_>, name: &str) -> Result<Option<Value>, StoreError> {
    let row = tx
        .query_row(
            "SELECT limits, created_at FROM namespaces WHERE name = ?1",
            [name],
            |row| Ok((row.get::<_, String>(0)?, row.get::<_, i64>(1)?)),
        )
        .optional()?;
    let Some((limits, created_at)) = row else {
        return Ok(None);
    };
    let profiles: Vec<String> = tx
        .prepare("SELECT name FROM profiles WHERE namespace = ?1 ORDER BY name")?
        .query_map([name], |row| row.get(0))?
        .collect::<Result<_, _>>()?;
    Ok(Some(json!({
        "namespaceName": name,
        "name": name,
        "limits": serde_json::from_str::<Value>(&limits)?,
        "profiles": profiles,
        "ars_createdAt": iso(created_at),
    })))
}

/// Every namespace name.
pub fn namespace_names(tx: &Transaction<'_>) -> Result<Vec<String>, StoreError> {
    Ok(tx
        .prepare("SELECT name FROM namespaces ORDER BY name")?
        .query_map([], |row| row.get(0))?
        .collect::<Result<_, _>>()?)
}

/// The namespace's `limits` object.
pub fn limits(tx: &Transaction<'_>, namespace: &str) -> Result<Value, StoreError> {
    let text: Option<String> = tx
        .query_row(
            "SELECT limits FROM namespaces WHERE name = ?1",
            [namespace],
            |row| row.get(0),
        )
        .optional()?;
    Ok(match text {
        Some(text) => serde_json::from_str(&text)?,
        None => json!({}),
    })
}

/// Replaces the namespace's `limits`; `false` when it does not exist.
pub fn set_limits(
    tx: &Transaction<'_>,
    namespace: &str,
    limits: &Value,
) -> Result<bool, StoreError> {
    Ok(tx.execute(
        "UPDATE namespaces SET limits = ?2 WHERE name = ?1",
        params![namespace, limits.to_string()],
    )? == 1)
}

/// Adds a profile to a namespace; `true` when it was missing.
pub fn ensure_profile(
    tx: &Transaction<'_>,
    namespace: &str,
    profile: &str,
) -> Result<bool, StoreError> {
    Ok(tx.execute(
        "INSERT OR IGNORE INTO profiles (namespace, name) VALUES (?1, ?2)",
        params![namespace, profile],
    )? == 1)
}

/// Whether a namespace has a profile.
pub fn has_profile(
    tx: &Transaction<'_>,
    namespace: &str,
    profile: &str,
) -> Result<bool, StoreError> {
    Ok(tx
        .query_row(
            "SELECT 1 FROM profiles WHERE namespace = ?1 AND name = ?2",
            params![namespace, profile],
            |_| Ok(()),
        )
        .optional()?
        .is_some())
}

/// Removes a profile (used by tests of `K8sManager.addK8sWorkerProfile`
/// against a namespace that predates it).
pub fn remove_profile(
    tx: &Transaction<'_>,
    namespace: &str,
    profile: &str,
) -> Result<(), StoreError> {
    tx.execute(
        "DELETE FROM profiles WHERE namespace = ?1 AND name = ?2",
        params![namespace, profile],
    )?;
    Ok(())
}

/// Creates a user; usernames are unique across namespaces.
pub fn create_user(tx: &Transaction<'_>, user: &UserRecord) -> Result<(), StoreError> {
    let inserted = tx.execute(
        "INSERT OR IGNORE INTO users (username, namespace, profile, password_hash, created_at)
         VALUES (?1, ?2, ?3, ?4, ?5)",
        params![
            user.username,
            user.namespace,
            user.profile,
            user.password_hash,
            now_ms()
        ],
    )?;
    if inserted == 0 {
        return Err(StoreError::Duplicate {
            resource: "users",
            id: user.username.clone(),
        });
    }
    Ok(())
}

/// Finds a user by name.
pub fn find_user(tx: &Transaction<'_>, username: &str) -> Result<Option<UserRecord>, StoreError> {
    Ok(tx
        .query_row(
            "SELECT username, namespace, profile, password_hash FROM users WHERE username = ?1",
            [username],
            |row| {
                Ok(UserRecord {
                    username: row.get(0)?,
                    namespace: row.get(1)?,
                    profile: row.get(2)?,
                    password_hash: row.get(3)?,
                })
            },
        )
        .optional()?)
}

/// The users of a namespace, without password hashes.
pub fn list_users(tx: &Transaction<'_>, namespace: &str) -> Result<Vec<Value>, StoreError> {
    Ok(tx
        .prepare("SELECT username, profile, created_at FROM users WHERE namespace = ?1")?
        .query_map([namespace], |row| {
            Ok(json!({
                "username": row.get::<_, String>(0)?,
                "profiles": [row.get::<_, String>(1)?],
                "ars_namespace": namespace,
                "ars_createdAt": iso(row.get::<_, i64>(2)?),
            }))
        })?
        .collect::<Result<_, _>>()?)
}

/// Stores a token by its hash; a named token must be unique in its namespace.
pub fn insert_token(
    tx: &Transaction<'_>,
    hash: &str,
    record: &TokenRecord,
) -> Result<(), StoreError> {
    let name = record.name.as_deref();
    if let Some(name) = name {
        let exists = tx
            .query_row(
                "SELECT 1 FROM tokens WHERE namespace = ?1 AND name = ?2",
                params![record.namespace, name],
                |_| Ok(()),
            )
            .optional()?
            .is_some();
        if exists {
            return Err(StoreError::Duplicate {
                resource: "tokens",
                id: name.to_owned(),
            });
        }
    }
    tx.execute(
        "INSERT INTO tokens (token_hash, namespace, name, username, profiles, expires_at, created_at, k8s_cluster)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
        params![
            hash,
            record.namespace,
            name,
            record.username,
            serde_json::to_string(&record.profiles)?,
            record.expires_at,
            now_ms(),
            record.k8s_cluster,
        ],
    )?;
    Ok(())
}

/// Finds a token by its hash.
pub fn find_token(tx: &Transaction<'_>, hash: &str) -> Result<Option<TokenRecord>, StoreError> {
    let row = tx
        .query_row(
            "SELECT namespace, username, profiles, expires_at, name, k8s_cluster FROM tokens WHERE token_hash = ?1",
            [hash],
            |row| {
                Ok((
                    row.get::<_, String>(0)?,
                    row.get::<_, String>(1)?,
                    row.get::<_, String>(2)?,
                    row.get::<_, Option<i64>>(3)?,
                    row.get::<_, Option<String>>(4)?,
                    row.get::<_, Option<String>>(5)?,
                ))
            },
        )
        .optional()?;
    let Some((namespace, username, profiles, expires_at, name, k8s_cluster)) = row else {
        return Ok(None);
    };
    Ok(Some(TokenRecord {
        name,
        namespace,
        username,
        profiles: serde_json::from_str(&profiles)?,
        expires_at,
        k8s_cluster,
    }))
}

/// Binds the token `hash` to `cluster` unless it is bound already; answers
/// the cluster it is bound to afterwards.
pub fn bind_token_cluster(
    tx: &Transaction<'_>,
    hash: &str,
    cluster: &str,
) -> Result<Option<String>, StoreError> {
    tx.execute(
        "UPDATE tokens SET k8s_cluster = ?2 WHERE token_hash = ?1 AND k8s_cluster IS NULL",
        params![hash, cluster],
    )?;
    Ok(tx
        .query_row(
            "SELECT k8s_cluster FROM tokens WHERE token_hash = ?1",
            [hash],
            |row| row.get::<_, Option<String>>(0),
        )
        .optional()?
        .flatten())
}

/// Revokes a token by its hash (refresh revokes the old session token).
pub fn delete_token_by_hash(tx: &Transaction<'_>, hash: &str) -> Result<bool, StoreError> {
    Ok(tx.execute("DELETE FROM tokens WHERE token_hash = ?1", [hash])? == 1)
}

/// The named (long-lived) tokens of a namespace, without secrets.
pub fn list_tokens(tx: &Transaction<'_>, namespace: &str) -> Result<Vec<Value>, StoreError> {
    Ok(tx
        .prepare(
            "SELECT name, username, profiles, expires_at, created_at, k8s_cluster FROM tokens
             WHERE namespace = ?1 AND name IS NOT NULL ORDER BY name",
        )?
        .query_map([namespace], |row| {
            let profiles: String = row.get(2)?;
            let mut doc = json!({
                "name": row.get::<_, String>(0)?,
                "ars_createdBy": row.get::<_, String>(1)?,
                "profiles": serde_json::from_str::<Value>(&profiles).unwrap_or(Value::Null),
                "expiresAt": row.get::<_, Option<i64>>(3)?.map(iso),
                "ars_createdAt": iso(row.get::<_, i64>(4)?),
                "ars_namespace": namespace,
            });
            if let Some(cluster) = row.get::<_, Option<String>>(5)? {
                doc["k8sClusterName"] = json!(cluster);
            }
            Ok(doc)
        })?
        .collect::<Result<_, _>>()?)
}

/// Revokes a named token; `false` when there is none.
pub fn delete_named_token(
    tx: &Transaction<'_>,
    namespace: &str,
    name: &str,
) -> Result<bool, StoreError> {
    Ok(tx.execute(
        "DELETE FROM tokens WHERE namespace = ?1 AND name = ?2",
        params![namespace, name],
    )? == 1)
}

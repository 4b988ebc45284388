//! Clusters, installations, documents, secrets and `self`-cluster quota
//! charges: plain rows of one namespace each.

use rusqlite::{OptionalExtension, Transaction, params};
use serde_json::{Value, json};

use super::StoreError;
use crate::audit::{audit, now_ms};
use crate::auth::random_id;

/// The tables holding a JSON `doc` keyed by `(namespace, name)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DocTable {
    /// `k8sclusters`.
    Clusters,
    /// `k8sinstallations`.
    Installations,
}

impl DocTable {
    fn table(self) -> &'static str {
        match self {
            DocTable::Clusters => "k8sclusters",
            DocTable::Installations => "k8sinstallations",
        }
    }
}

/// One document by name.
pub fn get_doc(
    tx: &Transaction<'_>,
    table: DocTable,
    namespace: &str,
    name: &str,
) -> Result<Option<Value>, StoreError> {
    let sql = format!(
        "SELECT doc FROM {} WHERE namespace = ?1 AND name = ?2",
        table.table()
    );
    let text: Option<String> = tx
        .query_row(&sql, params![namespace, name], |row| row.get(0))
        .optional()?;
    Ok(match text {
        Some(text) => Some(serde_json::from_str(&text)?),
        None => None,
    })
}

/// Every document of a namespace, in name order.
pub fn list_docs(
    tx: &Transaction<'_>,
    table: DocTable,
    namespace: &str,
) -> Result<Vec<Value>, StoreError> {
    let sql = format!(
        "SELECT doc FROM {} WHERE namespace = ?1 ORDER BY name",
        table.table()
    );
    let mut statement = tx.prepare(&sql)?;
    let rows = statement.query_map([namespace], |row| row.get::<_, String>(0))?;
    let mut out = Vec::new();
    for row in rows {
        out.push(serde_json::from_str(&row?)?);
    }
    Ok(out)
}

/// Inserts a cluster document; [`StoreError::Duplicate`] when the name is taken.
pub fn insert_cluster(
    tx: &Transaction<'_>,
    namespace: &str,
    name: &str,
    doc: &Value,
) -> Result<(), StoreError> {
    let inserted = tx.execute(
        "INSERT OR IGNORE INTO k8sclusters (namespace, name, doc) VALUES (?1, ?2, ?3)",
        params![namespace, name, doc.to_string()],
    )?;
    if inserted == 0 {
        return Err(StoreError::Duplicate {
            resource: "k8sclusters",
            id: name.to_owned(),
        });
    }
    Ok(())
}

/// Replaces a cluster document.
pub fn replace_cluster(
    tx: &Transaction<'_>,
    namespace: &str,
    name: &str,
    doc: &Value,
) -> Result<(), StoreError> {
    tx.execute(
        "UPDATE k8sclusters SET doc = ?3 WHERE namespace = ?1 AND name = ?2",
        params![namespace, name, doc.to_string()],
    )?;
    Ok(())
}

/// Deletes a cluster and the finished (FAILED/INVALID) workitems left on it.
pub fn delete_cluster(
    tx: &Transaction<'_>,
    namespace: &str,
    name: &str,
) -> Result<bool, StoreError> {
    tx.execute(
        "DELETE FROM k8sworkitems WHERE namespace = ?1 AND cluster_name = ?2",
        params![namespace, name],
    )?;
    Ok(tx.execute(
        "DELETE FROM k8sclusters WHERE namespace = ?1 AND name = ?2",
        params![namespace, name],
    )? == 1)
}

/// (installations, outstanding workitems) on a cluster.
pub fn cluster_usage(
    tx: &Transaction<'_>,
    namespace: &str,
    name: &str,
) -> Result<(u64, u64), StoreError> {
    let installations: i64 = tx.query_row(
        "SELECT COUNT(*) FROM k8sinstallations WHERE namespace = ?1 AND cluster_name = ?2",
        params![namespace, name],
        |row| row.get(0),
    )?;
    let workitems: i64 = tx.query_row(
        "SELECT COUNT(*) FROM k8sworkitems WHERE namespace = ?1 AND cluster_name = ?2
         AND status IN ('REQUESTED', 'PENDING', 'CANCELLED')",
        params![namespace, name],
        |row| row.get(0),
    )?;
    Ok((installations as u64, workitems as u64))
}

/// The largest `lifecycleOperationCount` a client may set and the counter
/// reaches (2^53 - 1, the largest integer every JSON reader keeps exact);
/// counting stops there instead of overflowing.
pub const MAX_OPERATION_COUNT: i64 = (1 << 53) - 1;

/// Adds one to the cluster's `lifecycleOperationCount`, up to
/// [`MAX_OPERATION_COUNT`].
pub fn count_cluster_operation(
    tx: &Transaction<'_>,
    namespace: &str,
    name: &str,
) -> Result<(), StoreError> {
    if let Some(mut doc) = get_doc(tx, DocTable::Clusters, namespace, name)? {
        let count = doc
            .get("lifecycleOperationCount")
            .and_then(Value::as_i64)
            .unwrap_or(0);
        doc["lifecycleOperationCount"] = json!(count.saturating_add(1).min(MAX_OPERATION_COUNT));
        replace_cluster(tx, namespace, name, &doc)?;
    }
    Ok(())
}

/// Inserts or replaces an installation document.
pub fn put_installation(
    tx: &Transaction<'_>,
    namespace: &str,
    name: &str,
    cluster: &str,
    doc: &Value,
    next_verify_at: Option<i64>,
) -> Result<(), StoreError> {
    tx.execute(
        "INSERT INTO k8sinstallations (namespace, name, cluster_name, doc, next_verify_at)
         VALUES (?1, ?2, ?3, ?4, ?5)
         ON CONFLICT (namespace, name) DO UPDATE SET
           cluster_name = excluded.cluster_name, doc = excluded.doc,
           next_verify_at = COALESCE(excluded.next_verify_at, next_verify_at)",
        params![namespace, name, cluster, doc.to_string(), next_verify_at],
    )?;
    Ok(())
}

/// Removes an installation and its quota charge.
pub fn delete_installation(
    tx: &Transaction<'_>,
    namespace: &str,
    name: &str,
) -> Result<(), StoreError> {
    tx.execute(
        "DELETE FROM k8sinstallations WHERE namespace = ?1 AND name = ?2",
        params![namespace, name],
    )?;
    delete_charge(tx, namespace, name)
}

/// Stores (replaces) a document's content; returns its metadata view.
pub fn put_document(
    tx: &Transaction<'_>,
    namespace: &str,
    name: &str,
    file_type: &str,
    content: &[u8],
    user: &str,
) -> Result<Value, StoreError> {
    let now = now_ms();
    tx.execute(
        "INSERT INTO documents (namespace, name, id, file_type, content, created_at, created_by, modified_at, modified_by)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?6, ?7)
         ON CONFLICT (namespace, name) DO UPDATE SET
           file_type = excluded.file_type, content = excluded.content,
           modified_at = excluded.modified_at, modified_by = excluded.modified_by",
        params![namespace, name, random_id(12), file_type, content, now, user],
    )?;
    get_document_meta(tx, namespace, name)?.ok_or_else(|| StoreError::NotFound {
        resource: "documents",
        key: "name",
        id: name.to_owned(),
    })
}

const DOCUMENT_META: &str = "SELECT name, id, file_type, length(content), created_at, created_by, modified_at, modified_by FROM documents";

fn document_meta(namespace: &str, row: &rusqlite::Row<'_>) -> rusqlite::Result<Value> {
    let name: String = row.get(0)?;
    let mut doc = audit(
        namespace,
        1,
        row.get(4)?,
        &row.get::<_, String>(5)?,
        row.get(6)?,
        &row.get::<_, String>(7)?,
    );
    doc.insert("content".into(), json!(format!("/docs/{name}")));
    doc.insert("name".into(), json!(name));
    doc.insert("_id".into(), json!(row.get::<_, String>(1)?));
    doc.insert("fileType".into(), json!(row.get::<_, String>(2)?));
    doc.insert("contentSize".into(), json!(row.get::<_, i64>(3)?));
    Ok(Value::Object(doc))
}

/// A document's metadata.
pub fn get_document_meta(
    tx: &Transaction<'_>,
    namespace: &str,
    name: &str,
) -> Result<Option<Value>, StoreError> {
    let sql = format!("{DOCUMENT_META} WHERE namespace = ?1 AND name = ?2");
    Ok(tx
        .query_row(&sql, params![namespace, name], |row| {
            document_meta(namespace, row)
        })
        .optional()?)
}

/// Every document's metadata in a namespace.
pub fn list_documents(tx: &Transaction<'_>, namespace: &str) -> Result<Vec<Value>, StoreError> {
    let sql = format!("{DOCUMENT_META} WHERE namespace = ?1 ORDER BY name");
    Ok(tx
        .prepare(&sql)?
        .query_map([namespace], |row| document_meta(namespace, row))?
        .collect::<Result<_, _>>()?)
}

/// A document's content type and bytes.
pub fn get_document_content(
    tx: &Transaction<'_>,
    namespace: &str,
    name: &str,
) -> Result<Option<(String, Vec<u8>)>, StoreError> {
    Ok(tx
        .query_row(
            "SELECT file_type, content FROM documents WHERE namespace = ?1 AND name = ?2",
            params![namespace, name],
            |row| Ok((row.get(0)?, row.get(1)?)),
        )
        .optional()?)
}

/// The number and content bytes of a namespace's documents other than
/// `except` (the one an upload would replace).
pub fn document_usage(
    tx: &Transaction<'_>,
    namespace: &str,
    except: &str,
) -> Result<(u64, u64), StoreError> {
    let (count, bytes): (i64, i64) = tx.query_row(
        "SELECT count(*), COALESCE(sum(length(content)), 0) FROM documents
         WHERE namespace = ?1 AND name <> ?2",
        params![namespace, except],
        |row| Ok((row.get(0)?, row.get(1)?)),
    )?;
    Ok((count.max(0) as u64, bytes.max(0) as u64))
}

/// The installation whose deploy mounts document `name`, if any: an
/// installation record's `configSpec`, or the request of a deploy still
/// queued or running.
pub fn document_mounted_by(
    tx: &Transaction<'_>,
    namespace: &str,
    name: &str,
) -> Result<Option<String>, StoreError> {
    for record in list_docs(tx, DocTable::Installations, namespace)? {
        if let Some(config) = record.get("configSpec")
            && crate::lifecycle::mounts_document(config, name)
        {
            return Ok(record
                .get("name")
                .and_then(Value::as_str)
                .map(str::to_owned));
        }
    }
    let mut statement = tx.prepare(
        "SELECT installation, request FROM k8sworkitems
         WHERE namespace = ?1 AND operation = 'deploy' AND status IN ('REQUESTED', 'PENDING', 'CANCELLED')",
    )?;
    let rows = statement.query_map([namespace], |row| {
        Ok((row.get::<_, String>(0)?, row.get::<_, String>(1)?))
    })?;
    for row in rows {
        let (installation, request) = row?;
        let request: Value = serde_json::from_str(&request)?;
        if let Some(config) = request.get("config")
            && crate::lifecycle::mounts_document(config, name)
        {
            return Ok(Some(installation));
        }
    }
    Ok(None)
}

/// Deletes a document; `false` when there is none.
pub fn delete_document(
    tx: &Transaction<'_>,
    namespace: &str,
    name: &str,
) -> Result<bool, StoreError> {
    Ok(tx.execute(
        "DELETE FROM documents WHERE namespace = ?1 AND name = ?2",
        params![namespace, name],
    )? == 1)
}

/// How a secret write treats an existing secret of the same name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WriteMode {
    /// Create; an existing secret is a [`StoreError::Duplicate`].
    Insert,
    /// Create or change.
    Upsert,
    /// Change; a missing secret is a [`StoreError::NotFound`].
    Update,
}

const SECRET_META: &str =
    "SELECT name, id, description, created_at, created_by, modified_at, modified_by FROM secrets";

fn secret_meta(namespace: &str, row: &rusqlite::Row<'_>) -> rusqlite::Result<Value> {
    let mut doc = audit(
        namespace,
        1,
        row.get(3)?,
        &row.get::<_, String>(4)?,
        row.get(5)?,
        &row.get::<_, String>(6)?,
    );
    doc.insert("name".into(), json!(row.get::<_, String>(0)?));
    doc.insert("_id".into(), json!(row.get::<_, String>(1)?));
    if let Some(description) = row.get::<_, Option<String>>(2)? {
        doc.insert("description".into(), json!(description));
    }
    Ok(Value::Object(doc))
}

/// Writes a secret's value; returns its metadata (never the value).
pub fn put_secret(
    tx: &Transaction<'_>,
    namespace: &str,
    name: &str,
    value: Option<&str>,
    description: Option<&str>,
    user: &str,
    mode: WriteMode,
) -> Result<Value, StoreError> {
    let exists = get_secret_meta(tx, namespace, name)?.is_some();
    let now = now_ms();
    match (exists, mode) {
        (true, WriteMode::Insert) => {
            return Err(StoreError::Duplicate {
                resource: "secrets",
                id: name.to_owned(),
            });
        }
        (false, WriteMode::Update) => {
            return Err(StoreError::NotFound {
                resource: "secrets",
                key: "name",
                id: name.to_owned(),
            });
        }
        (true, _) => {
            tx.execute(
                "UPDATE secrets SET value = COALESCE(?3, value), description = COALESCE(?4, description),
                 modified_at = ?5, modified_by = ?6 WHERE namespace = ?1 AND name = ?2",
                params![namespace, name, value, description, now, user],
            )?;
        }
        (false, _) => {
            let Some(value) = value else {
                return Err(StoreError::Invalid {
                    field: "secret".into(),
                    reason: "a new secret needs a string `secret` value".into(),
                });
            };
            tx.execute(
                "INSERT INTO secrets (namespace, name, id, value, description, created_at, created_by, modified_at, modified_by)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?6, ?7)",
                params![namespace, name, random_id(12), value, description, now, user],
            )?;
        }
    }
    get_secret_meta(tx, namespace, name)?.ok_or_else(|| StoreError::NotFound {
        resource: "secrets",
        key: "name",
        id: name.to_owned(),
    })
}

/// A secret's metadata.
pub fn get_secret_meta(
    tx: &Transaction<'_>,
    namespace: &str,
    name: &str,
) -> Result<Option<Value>, StoreError> {
    let sql = format!("{SECRET_META} WHERE namespace = ?1 AND name = ?2");
    Ok(tx
        .query_row(&sql, params![namespace, name], |row| {
            secret_meta(namespace, row)
        })
        .optional()?)
}

/// Every secret's metadata in a namespace.
pub fn list_secrets(tx: &Transaction<'_>, namespace: &str) -> Result<Vec<Value>, StoreError> {
    let sql = format!("{SECRET_META} WHERE namespace = ?1 ORDER BY name");
    Ok(tx
        .prepare(&sql)?
        .query_map([namespace], |row| secret_meta(namespace, row))?
        .collect::<Result<_, _>>()?)
}

/// A secret's value (only the claim of a workitem reads it).
pub fn get_secret_value(
    tx: &Transaction<'_>,
    namespace: &str,
    name: &str,
) -> Result<Option<String>, StoreError> {
    Ok(tx
        .query_row(
            "SELECT value FROM secrets WHERE namespace = ?1 AND name = ?2",
            params![namespace, name],
            |row| row.get(0),
        )
        .optional()?)
}

/// Deletes a secret; `false` when there is none.
pub fn delete_secret(
    tx: &Transaction<'_>,
    namespace: &str,
    name: &str,
) -> Result<bool, StoreError> {
    Ok(tx.execute(
        "DELETE FROM secrets WHERE namespace = ?1 AND name = ?2",
        params![namespace, name],
    )? == 1)
}

/// The `self`-cluster charges of a namespace, by installation.
pub fn charges(tx: &Transaction<'_>, namespace: &str) -> Result<Vec<(String, Value)>, StoreError> {
    let mut statement =
        tx.prepare("SELECT installation, charge FROM quota_charges WHERE namespace = ?1")?;
    let rows = statement.query_map([namespace], |row| {
        Ok((row.get::<_, String>(0)?, row.get::<_, String>(1)?))
    })?;
    let mut out = Vec::new();
    for row in rows {
        let (installation, charge) = row?;
        out.push((installation, serde_json::from_str(&charge)?));
    }
    Ok(out)
}

/// One installation's `self`-cluster charge, if it has one.
pub fn charge(
    tx: &Transaction<'_>,
    namespace: &str,
    installation: &str,
) -> Result<Option<Value>, StoreError> {
    let text: Option<String> = tx
        .query_row(
            "SELECT charge FROM quota_charges WHERE namespace = ?1 AND installation = ?2",
            params![namespace, installation],
            |row| row.get(0),
        )
        .optional()?;
    Ok(match text {
        Some(text) => Some(serde_json::from_str(&text)?),
        None => None,
    })
}

/// Records (replaces) an installation's charge.
pub fn set_charge(
    tx: &Transaction<'_>,
    namespace: &str,
    installation: &str,
    charge: &Value,
) -> Result<(), StoreError> {
    tx.execute(
        "INSERT INTO quota_charges (namespace, installation, charge) VALUES (?1, ?2, ?3)
         ON CONFLICT (namespace, installation) DO UPDATE SET charge = excluded.charge",
        params![namespace, installation, charge.to_string()],
    )?;
    Ok(())
}

/// Releases an installation's charge.
pub fn delete_charge(
    tx: &Transaction<'_>,
    namespace: &str,
    installation: &str,
) -> Result<(), StoreError> {
    tx.execute(
        "DELETE FROM quota_charges WHERE namespace = ?1 AND installation = ?2",
        params![namespace, installation],
    )?;
    Ok(())
}

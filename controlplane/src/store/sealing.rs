//! Every stored secret value under the current key: the `secrets`
//! resource's values, and the secret slots ([`crate::secret_config`]) of
//! installation `configSpec`s and workitem requests.
//!
//! [`reseal_all`] runs at every start (a value stored before encryption
//! existed gets sealed; one sealed with a retired key gets sealed again with
//! the current one) and is what `k8sworker-controlplane rotate-key` runs
//! after putting a new key first.

use rusqlite::{Transaction, params};
use serde_json::Value;

use super::StoreError;
use super::workitems::Claim;
use crate::keyring::Keyring;
use crate::secret_config;

/// Reseals every `config` secret slot of `config`; whether one changed.
fn reseal_config(config: &mut Value, keyring: &Keyring) -> Result<bool, StoreError> {
    let mut changed = false;
    secret_config::for_each_slot(config, |_, value| {
        if let Some(resealed) = keyring.reseal(value)? {
            *value = resealed;
            changed = true;
        }
        Ok::<_, StoreError>(())
    })?;
    Ok(changed)
}

/// Reseals the JSON column `column` of `table` (rows keyed by `key`) at the
/// member `member` (`configSpec`, `config`); answers how many rows changed.
fn reseal_json_column(
    tx: &Transaction<'_>,
    keyring: &Keyring,
    table: &str,
    key: &str,
    column: &str,
    member: &str,
) -> Result<usize, StoreError> {
    let rows: Vec<(i64, String)> = tx
        .prepare(&format!("SELECT {key}, {column} FROM {table}"))?
        .query_map([], |row| Ok((row.get(0)?, row.get(1)?)))?
        .collect::<Result<_, _>>()?;
    let mut changed = 0;
    for (rowid, text) in rows {
        let mut doc: Value = serde_json::from_str(&text)?;
        let Some(config) = doc.get_mut(member) else {
            continue;
        };
        if reseal_config(config, keyring)? {
            tx.execute(
                &format!("UPDATE {table} SET {column} = ?2 WHERE {key} = ?1"),
                params![rowid, doc.to_string()],
            )?;
            changed += 1;
        }
    }
    Ok(changed)
}

/// Seals every stored secret value that is not sealed with the current key
/// (plain values from before encryption, values under a retired key);
/// answers how many rows changed. A value whose key the keyring does not
/// hold fails the whole transaction, naming the key.
pub fn reseal_all(tx: &Transaction<'_>, keyring: &Keyring) -> Result<usize, StoreError> {
    let secrets: Vec<(i64, String)> = tx
        .prepare("SELECT rowid, value FROM secrets")?
        .query_map([], |row| Ok((row.get(0)?, row.get(1)?)))?
        .collect::<Result<_, _>>()?;
    let mut changed = 0;
    for (rowid, value) in secrets {
        if let Some(resealed) = keyring.reseal(&value)? {
            tx.execute(
                "UPDATE secrets SET value = ?2 WHERE rowid = ?1",
                params![rowid, resealed],
            )?;
            changed += 1;
        }
    }
    changed += reseal_json_column(
        tx,
        keyring,
        "k8sinstallations",
        "rowid",
        "doc",
        "configSpec",
    )?;
    changed += reseal_json_column(tx, keyring, "k8sworkitems", "seq", "request", "config")?;
    Ok(changed)
}

/// Rewrites the database without free pages and empties the WAL, so no
/// page keeps a value replaced by [`reseal_all`] (a plain value from before
/// encryption, or a ciphertext under a retired key). Outside a transaction.
pub fn compact(connection: &rusqlite::Connection) -> Result<(), StoreError> {
    connection.execute_batch("VACUUM")?;
    connection.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))?;
    Ok(())
}

/// The claim answer a worker receives: the request's and the recorded
/// `configSpec`'s secret values and the ancillary secrets, opened. This is
/// the only place stored secrets leave the control plane in the clear.
pub fn open_claim(claim: Claim, keyring: &Keyring) -> Result<Value, StoreError> {
    let Claim { row, mut body } = claim;
    let open_config = |config: &mut Value| {
        secret_config::for_each_slot(config, |_, value| {
            *value = keyring.reveal(value)?;
            Ok::<_, StoreError>(())
        })
    };
    let mut request = row.request;
    if let Some(config) = request.get_mut("config") {
        open_config(config)?;
    }
    body["request"] = request;
    if let Some(config) = body
        .get_mut("installation")
        .and_then(|installation| installation.get_mut("configSpec"))
    {
        open_config(config)?;
    }
    if let Some(Value::Object(secrets)) = body
        .get_mut("ancillaries")
        .and_then(|ancillaries| ancillaries.get_mut("secrets"))
    {
        for value in secrets.values_mut() {
            if let Value::String(text) = value {
                *text = keyring.reveal(text)?;
            }
        }
    }
    Ok(body)
}

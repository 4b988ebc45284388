//! The commands that run instead of the server: `backup FILE` (SQLite's
//! online backup, safe while a server runs on the same database) and
//! `rotate-key` (a new current key, every stored secret sealed with it;
//! refused while a server runs on the database). docs/controlplane.md gives the procedures,
//! restore included.

use std::path::Path;

use crate::config::Config;
use crate::keyring::Keyring;
use crate::server::{ServerError, open_sealed};
use crate::store::lock::{DatabaseLock, Holder};
use crate::store::{self, StoreError, sealing};

/// What `backup` did, for the operator.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackupReport {
    /// The ids of the keys in the key file, current first: a restore of the
    /// backup needs the key file holding the keys its secrets were sealed
    /// with.
    pub key_ids: Vec<String>,
}

/// Copies the configured database into the new file `file` (mode 0600).
pub fn backup(config: &Config, file: &Path) -> Result<BackupReport, StoreError> {
    store::backup(&config.database, file)?;
    let key_ids = match Keyring::load(&config.key_file()) {
        Ok(keyring) => keyring.ids().into_iter().map(str::to_owned).collect(),
        Err(error) => {
            tracing::warn!(%error, "the key file could not be read; the backup's secrets need it");
            Vec::new()
        }
    };
    Ok(BackupReport { key_ids })
}

/// What `rotate-key` did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rotation {
    /// The new current key.
    pub new_key_id: String,
    /// The keys now retired (kept in the file for older backups).
    pub retired_key_ids: Vec<String>,
    /// Rows whose secrets were sealed again.
    pub resealed_rows: usize,
}

/// Puts a new key first in the key file (kept atomically, the old keys
/// retired after it), then seals every stored secret with it in one
/// transaction, then compacts the database so no page keeps an old
/// ciphertext. Interrupted before the transaction commits, the file holds
/// both keys and the database the old ciphertexts, which still open: run it
/// again. Refused ([`crate::store::lock::LockError::ServerRunning`]), before anything is read
/// or written, while a server runs on the database: it would keep the old
/// keys ([`crate::store::lock`]).
pub fn rotate_key(config: &Config) -> Result<Rotation, ServerError> {
    let _lock = DatabaseLock::acquire(&config.database, Holder::RotateKey)?;
    let key_file = config.key_file();
    let old = Keyring::load(&key_file)?;
    // Everything stored must open with the old keys before anything changes.
    let (store, _) = open_sealed(&config.database, &key_file, config.sqlite_synchronous)?;
    let new = old.rotated();
    new.save(&key_file)?;
    let resealed_rows = store.run_blocking(|connection| {
        let tx = connection.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        let changed = sealing::reseal_all(&tx, &new)?;
        tx.commit()?;
        sealing::compact(connection)?;
        Ok::<_, StoreError>(changed)
    })?;
    Ok(Rotation {
        new_key_id: new.current_id().to_owned(),
        retired_key_ids: old.ids().into_iter().map(str::to_owned).collect(),
        resealed_rows,
    })
}

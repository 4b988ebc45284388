//! The keys that encrypt secret values at rest, and the sealed form they
//! are stored in.
//!
//! A secret value (a `secrets` resource's value, an `asSecret` environment
//! value, a secret file's inline content; see [`crate::secret_config`]) is
//! stored as
//!
//! ```text
//! k8sw-sealed:v1:<key id>:<base64url(24-byte nonce ‖ ciphertext ‖ 16-byte tag)>
//! ```
//!
//! with XChaCha20-Poly1305 (RustCrypto's `chacha20poly1305`): an
//! authenticated cipher, so a changed ciphertext, nonce or key id fails to
//! open instead of decrypting to garbage. The key id is the associated
//! data. Nonces are random (192 bits, so random nonces never collide in
//! practice).
//!
//! The key file holds one key per line, `<key id> <base64 of 32 bytes>`; the
//! first line is the *current* key (every new value is sealed with it), the
//! others are *retired* keys kept to open older values and backups. Lines
//! starting with `#` are comments. The file is created on first start with
//! one random key and mode 0600 (only when nothing stored needs another
//! key); rotation (`k8sworker-controlplane
//! rotate-key`) puts a new key first and re-seals every stored value
//! (docs/controlplane.md, "Secrets at rest").

use std::collections::HashMap;
use std::fmt;
use std::io::Write as _;
use std::path::{Path, PathBuf};

use base64::Engine as _;
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};

/// The prefix of every sealed value, version included.
pub const SEALED_PREFIX: &str = "k8sw-sealed:v1:";

const NONCE_BYTES: usize = 24;
const KEY_BYTES: usize = 32;

/// Why keys could not be loaded or a value could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum KeyringError {
    /// The key file could not be read, created or written.
    #[error("key file {path}")]
    Io {
        /// The key file.
        path: String,
        /// The file system's error.
        #[source]
        source: std::io::Error,
    },
    /// A line of the key file is not `<key id> <base64 of 32 bytes>`.
    #[error("key file {path}, line {line}: expected `<key id> <base64 of 32 bytes>`")]
    Malformed {
        /// The key file.
        path: String,
        /// The line number, from 1.
        line: usize,
    },
    /// The key file holds no key.
    #[error("key file {0} holds no key")]
    Empty(String),
    /// Two lines of the key file have the same key id, so which key opens
    /// a value sealed under it would be a guess.
    #[error("key file {path}, line {line}: key id {id} is already on an earlier line")]
    DuplicateId {
        /// The key file.
        path: String,
        /// The line number of the second one, from 1.
        line: usize,
        /// The key id.
        id: String,
    },
    /// The key file may be read by others than its owner and its mode could
    /// not be narrowed to 0600.
    #[error(
        "key file {path} may be read by others (mode {mode:o}) and cannot be narrowed to 0600; make it readable by its owner only"
    )]
    Exposed {
        /// The key file.
        path: String,
        /// Its permission bits.
        mode: u32,
        /// Why narrowing failed.
        #[source]
        source: std::io::Error,
    },
    /// A stored value was sealed with a key the key file does not hold.
    #[error("a stored secret needs key {0}, which the key file does not hold")]
    UnknownKey(String),
    /// A stored value does not open: it was changed, or is not a sealed value.
    #[error("a stored secret does not decrypt (changed or corrupt)")]
    Corrupt,
}

/// The keys of one control plane: the current one and the retired ones.
#[derive(Clone)]
pub struct Keyring {
    current: String,
    keys: HashMap<String, XChaCha20Poly1305>,
    /// Every key in file order, for writing the file back.
    lines: Vec<(String, [u8; KEY_BYTES])>,
}

impl fmt::Debug for Keyring {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Key ids only; never the key bytes.
        f.debug_struct("Keyring")
            .field("current", &self.current)
            .field("ids", &self.ids())
            .finish()
    }
}

fn io_error(path: &Path) -> impl FnOnce(std::io::Error) -> KeyringError + '_ {
    move |source| KeyringError::Io {
        path: path.display().to_string(),
        source,
    }
}

fn new_key() -> (String, [u8; KEY_BYTES]) {
    let mut key = [0u8; KEY_BYTES];
    getrandom::fill(&mut key).expect("the OS random source is available");
    (crate::auth::random_id(6), key)
}

impl Keyring {
    /// A keyring of one new random key (tests and first start).
    pub fn generate() -> Keyring {
        Keyring::from_lines(vec![new_key()])
    }

    fn from_lines(lines: Vec<(String, [u8; KEY_BYTES])>) -> Keyring {
        let keys = lines
            .iter()
            .map(|(id, key)| {
                (
                    id.clone(),
                    XChaCha20Poly1305::new_from_slice(key).expect("a 32-byte key"),
                )
            })
            .collect();
        Keyring {
            current: lines[0].0.clone(),
            keys,
            lines,
        }
    }

    /// Reads the key file at `path`; `None` when there is none. A file
    /// others may read is narrowed to mode 0600 first, as the database
    /// files are ([`KeyringError::Exposed`] when that fails).
    pub fn load_if_present(path: &Path) -> Result<Option<Keyring>, KeyringError> {
        match std::fs::read_to_string(path) {
            Ok(text) => {
                keep_private(path)?;
                Ok(Some(Keyring::parse(path, &text)?))
            }
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(error) => Err(io_error(path)(error)),
        }
    }

    /// Reads the key file at `path`; it must exist. Narrowed as in
    /// [`Keyring::load_if_present`].
    pub fn load(path: &Path) -> Result<Keyring, KeyringError> {
        let text = std::fs::read_to_string(path).map_err(io_error(path))?;
        keep_private(path)?;
        Keyring::parse(path, &text)
    }

    fn parse(path: &Path, text: &str) -> Result<Keyring, KeyringError> {
        let mut lines = Vec::new();
        for (index, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let malformed = || KeyringError::Malformed {
                path: path.display().to_string(),
                line: index + 1,
            };
            let mut words = line.split_whitespace();
            let (Some(id), Some(key), None) = (words.next(), words.next(), words.next()) else {
                return Err(malformed());
            };
            if id.contains(':') {
                return Err(malformed());
            }
            if lines.iter().any(|(seen, _)| seen == id) {
                return Err(KeyringError::DuplicateId {
                    path: path.display().to_string(),
                    line: index + 1,
                    id: id.to_owned(),
                });
            }
            let key: [u8; KEY_BYTES] = base64::engine::general_purpose::STANDARD
                .decode(key)
                .ok()
                .and_then(|bytes| bytes.try_into().ok())
                .ok_or_else(malformed)?;
            lines.push((id.to_owned(), key));
        }
        if lines.is_empty() {
            return Err(KeyringError::Empty(path.display().to_string()));
        }
        Ok(Keyring::from_lines(lines))
    }

    fn file_text(&self) -> String {
        let mut text = String::from(
            "# k8sworker control plane: keys of the secrets at rest. The first key seals new\n\
             # values; the others open older values and backups. Keep a copy apart from the\n\
             # database backups: without it the stored secrets cannot be read.\n",
        );
        for (id, key) in &self.lines {
            text.push_str(id);
            text.push(' ');
            text.push_str(&base64::engine::general_purpose::STANDARD.encode(key));
            text.push('\n');
        }
        text
    }

    /// Creates the key file at `path` (mode 0600); fails if it exists.
    pub fn write_new(&self, path: &Path) -> Result<(), KeyringError> {
        let mut file = private_file(path, true).map_err(io_error(path))?;
        file.write_all(self.file_text().as_bytes())
            .and_then(|()| file.sync_all())
            .map_err(io_error(path))
    }

    /// Replaces the key file at `path` with this keyring, atomically (a new
    /// file beside it, mode 0600, renamed over the old one).
    pub fn save(&self, path: &Path) -> Result<(), KeyringError> {
        let temporary = PathBuf::from(format!("{}.new", path.display()));
        let _ = std::fs::remove_file(&temporary);
        self.write_new(&temporary)?;
        std::fs::rename(&temporary, path).map_err(io_error(path))
    }

    /// This keyring with a new random key in front (the current one from
    /// now on); the old keys stay, retired.
    pub fn rotated(&self) -> Keyring {
        let mut lines = vec![new_key()];
        lines.extend(self.lines.iter().cloned());
        Keyring::from_lines(lines)
    }

    /// The current key's id.
    pub fn current_id(&self) -> &str {
        &self.current
    }

    /// Every key's id, current first.
    pub fn ids(&self) -> Vec<&str> {
        self.lines.iter().map(|(id, _)| id.as_str()).collect()
    }

    /// Seals `plaintext` with the current key.
    pub fn seal(&self, plaintext: &str) -> String {
        let mut nonce = [0u8; NONCE_BYTES];
        getrandom::fill(&mut nonce).expect("the OS random source is available");
        let cipher = &self.keys[&self.current];
        let sealed = cipher
            .encrypt(
                XNonce::from_slice(&nonce),
                Payload {
                    msg: plaintext.as_bytes(),
                    aad: self.current.as_bytes(),
                },
            )
            .expect("XChaCha20-Poly1305 seals any message that fits in memory");
        let mut bytes = Vec::with_capacity(NONCE_BYTES + sealed.len());
        bytes.extend_from_slice(&nonce);
        bytes.extend_from_slice(&sealed);
        format!(
            "{SEALED_PREFIX}{}:{}",
            self.current,
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
        )
    }

    /// Opens a value [`Keyring::seal`] produced, with whichever key sealed it.
    pub fn open(&self, sealed: &str) -> Result<String, KeyringError> {
        let rest = sealed
            .strip_prefix(SEALED_PREFIX)
            .ok_or(KeyringError::Corrupt)?;
        let (id, data) = rest.split_once(':').ok_or(KeyringError::Corrupt)?;
        let cipher = self
            .keys
            .get(id)
            .ok_or_else(|| KeyringError::UnknownKey(id.to_owned()))?;
        let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(data)
            .map_err(|_| KeyringError::Corrupt)?;
        if bytes.len() < NONCE_BYTES {
            return Err(KeyringError::Corrupt);
        }
        let (nonce, ciphertext) = bytes.split_at(NONCE_BYTES);
        let plaintext = cipher
            .decrypt(
                XNonce::from_slice(nonce),
                Payload {
                    msg: ciphertext,
                    aad: id.as_bytes(),
                },
            )
            .map_err(|_| KeyringError::Corrupt)?;
        String::from_utf8(plaintext).map_err(|_| KeyringError::Corrupt)
    }

    /// The value a stored value stands for: a sealed one opened, anything
    /// else (a value stored before encryption existed) as it is.
    pub fn reveal(&self, stored: &str) -> Result<String, KeyringError> {
        if is_sealed(stored) {
            self.open(stored)
        } else {
            Ok(stored.to_owned())
        }
    }

    /// `stored` sealed with the current key: a sealed value under another
    /// key is opened and sealed again, a plain one sealed; `None` when it is
    /// already sealed with the current key.
    pub fn reseal(&self, stored: &str) -> Result<Option<String>, KeyringError> {
        if sealed_key_id(stored) == Some(self.current.as_str()) {
            return Ok(None);
        }
        Ok(Some(self.seal(&self.reveal(stored)?)))
    }
}

/// Whether `value` is in the sealed form.
pub fn is_sealed(value: &str) -> bool {
    value.starts_with(SEALED_PREFIX)
}

/// The id of the key that sealed `value`, if it is sealed.
pub fn sealed_key_id(value: &str) -> Option<&str> {
    value
        .strip_prefix(SEALED_PREFIX)?
        .split_once(':')
        .map(|(id, _)| id)
}

/// Opens (creating, or truncating when `create_new` is false and it exists)
/// a file only its owner may read and write (mode 0600 on Unix).
pub fn private_file(path: &Path, create_new: bool) -> std::io::Result<std::fs::File> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true);
    if create_new {
        options.create_new(true);
    } else {
        options.create(true).truncate(true);
    }
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    options.open(path)
}

/// Narrows the existing key file at `path` to mode 0600 when group or
/// others have any permission on it (a copy restored under the default
/// umask); a file already private is left as it is, so a read-only one
/// (a mounted Secret of mode 0400) is fine.
fn keep_private(path: &Path) -> Result<(), KeyringError> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(path)
            .map_err(io_error(path))?
            .permissions()
            .mode()
            & 0o777;
        if mode & 0o077 != 0 {
            make_private(path).map_err(|source| KeyringError::Exposed {
                path: path.display().to_string(),
                mode,
                source,
            })?;
            tracing::warn!(
                key_file = %path.display(),
                was = format!("{mode:o}"),
                "the key file could be read by others; narrowed to mode 0600"
            );
        }
    }
    #[cfg(not(unix))]
    let _ = path;
    Ok(())
}

/// Narrows an existing file to owner read and write (mode 0600); nothing
/// off Unix.
pub fn make_private(path: &Path) -> std::io::Result<()> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    }
    #[cfg(not(unix))]
    let _ = path;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sealed_value_opens_and_shows_nothing_of_the_plaintext() {
        let keyring = Keyring::generate();
        let sealed = keyring.seal("hunter2-value");
        assert!(sealed.starts_with(SEALED_PREFIX));
        assert_eq!(sealed_key_id(&sealed), Some(keyring.current_id()));
        assert!(!sealed.contains("hunter2"));
        assert_ne!(keyring.seal("hunter2-value"), sealed, "random nonces");
        assert_eq!(keyring.open(&sealed).unwrap(), "hunter2-value");
    }

    #[test]
    fn a_changed_value_or_key_id_does_not_open() {
        let keyring = Keyring::generate();
        let sealed = keyring.seal("value");
        let mut flipped = sealed.clone().into_bytes();
        let last = flipped.len() - 3;
        flipped[last] = if flipped[last] == b'A' { b'B' } else { b'A' };
        let flipped = String::from_utf8(flipped).unwrap();
        assert!(matches!(keyring.open(&flipped), Err(KeyringError::Corrupt)));
        let other = Keyring::generate();
        assert!(matches!(
            other.open(&sealed),
            Err(KeyringError::UnknownKey(_))
        ));
        assert!(matches!(keyring.open("plain"), Err(KeyringError::Corrupt)));
        assert_eq!(keyring.reveal("plain").unwrap(), "plain");
    }

    #[test]
    fn rotation_keeps_old_values_readable_and_reseals_them() {
        let old = Keyring::generate();
        let sealed = old.seal("value");
        let new = old.rotated();
        assert_ne!(new.current_id(), old.current_id());
        assert_eq!(new.ids()[1], old.current_id());
        assert_eq!(new.open(&sealed).unwrap(), "value");
        let resealed = new.reseal(&sealed).unwrap().unwrap();
        assert_eq!(sealed_key_id(&resealed), Some(new.current_id()));
        assert_eq!(new.reseal(&resealed).unwrap(), None);
        assert_eq!(new.open(&resealed).unwrap(), "value");
    }

    #[test]
    fn the_key_file_is_created_private_and_read_back() {
        let dir =
            std::env::temp_dir().join(format!("k8sworker-keyring-{}", crate::auth::random_id(8)));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("controlplane.db.key");
        assert!(Keyring::load_if_present(&path).unwrap().is_none());
        let created = Keyring::generate();
        created.write_new(&path).unwrap();
        assert!(created.write_new(&path).is_err(), "never overwritten");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o600);
        }
        let loaded = Keyring::load_if_present(&path).unwrap().unwrap();
        assert_eq!(loaded.ids(), created.ids());
        assert_eq!(loaded.open(&created.seal("x")).unwrap(), "x");
        let rotated = loaded.rotated();
        rotated.save(&path).unwrap();
        assert_eq!(Keyring::load(&path).unwrap().ids(), rotated.ids());
        std::fs::write(&path, "only-an-id\n").unwrap();
        assert!(matches!(
            Keyring::load(&path),
            Err(KeyringError::Malformed { line: 1, .. })
        ));
        let _ = std::fs::remove_dir_all(dir);
    }
    #[test]
    fn a_key_file_others_may_read_is_narrowed_and_a_repeated_key_id_refused() {
        let dir =
            std::env::temp_dir().join(format!("k8sworker-keyring-{}", crate::auth::random_id(8)));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("controlplane.db.key");
        let created = Keyring::generate();
        created.write_new(&path).unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            let mode = |path: &Path| std::fs::metadata(path).unwrap().permissions().mode() & 0o777;
            let set = |bits: u32| {
                std::fs::set_permissions(&path, std::fs::Permissions::from_mode(bits)).unwrap();
            };
            // A copy restored under the default umask.
            set(0o644);
            let loaded = Keyring::load_if_present(&path).unwrap().unwrap();
            assert_eq!(loaded.ids(), created.ids());
            assert_eq!(mode(&path), 0o600);
            set(0o640);
            Keyring::load(&path).unwrap();
            assert_eq!(mode(&path), 0o600);
            // Private already (a mounted read-only Secret): left alone.
            set(0o400);
            Keyring::load(&path).unwrap();
            assert_eq!(mode(&path), 0o400);
            set(0o600);
        }

        // The same id twice, with two keys: which one opens is no guess.
        let key = |byte: u8| base64::engine::general_purpose::STANDARD.encode([byte; KEY_BYTES]);
        std::fs::write(&path, format!("# keys\nk1 {}\nk1 {}\n", key(1), key(2))).unwrap();
        let refused = Keyring::load(&path).unwrap_err();
        assert!(
            matches!(&refused, KeyringError::DuplicateId { line: 3, id, .. } if id == "k1"),
            "{refused:?}"
        );
        let _ = std::fs::remove_dir_all(dir);
    }
}

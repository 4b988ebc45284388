//! Where `k8sworker login` keeps the server and its session token: the file
//! `credentials.json` in the configuration directory (`--config-dir`,
//! `K8SWORKER_CONFIG_DIR`, else `<user config dir>/k8sworker`, e.g.
//! `~/.config/k8sworker` on Linux), readable by its owner only (0600, in a
//! 0700 directory), as kubectl keeps its kubeconfig.

use std::io::Write as _;
use std::path::{Path, PathBuf};

use anyhow::{Context as _, bail};
use serde_json::{Value, json};

/// The file's name in the configuration directory.
pub const FILE: &str = "credentials.json";

/// A logged-in session: the control plane's URL and the token.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    /// The control plane's base URL (`https://vantiq.example.com`).
    pub server: String,
    /// The session token `GET /authenticate` issued.
    pub token: String,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("server", &self.server)
            .field("token", &"<redacted>")
            .finish()
    }
}

/// The configuration directory: `explicit`, else the user's.
///
/// # Errors
/// The platform has no user configuration directory and none was given.
pub fn directory(explicit: Option<&Path>) -> anyhow::Result<PathBuf> {
    match explicit {
        Some(dir) => Ok(dir.to_owned()),
        None => Ok(dirs::config_dir()
            .context("no user configuration directory: give --config-dir")?
            .join("k8sworker")),
    }
}

/// The stored credentials, `None` when there are none.
///
/// # Errors
/// The file exists but cannot be read or is not ours.
pub fn load(dir: &Path) -> anyhow::Result<Option<Credentials>> {
    let path = dir.join(FILE);
    let text = match std::fs::read_to_string(&path) {
        Ok(text) => text,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(error) => return Err(error).with_context(|| format!("reading {}", path.display())),
    };
    let value: Value =
        serde_json::from_str(&text).with_context(|| format!("reading {}", path.display()))?;
    let field = |name: &str| value.get(name).and_then(Value::as_str).map(str::to_owned);
    match (field("server"), field("token")) {
        (Some(server), Some(token)) => Ok(Some(Credentials { server, token })),
        _ => bail!("{} has no server and token: log in again", path.display()),
    }
}

/// Stores `credentials`, replacing any; the file is created 0600 (and the
/// directory 0700) before the token is written to it.
///
/// # Errors
/// The directory or file cannot be created or written.
pub fn store(dir: &Path, credentials: &Credentials) -> anyhow::Result<PathBuf> {
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder
        .create(dir)
        .with_context(|| format!("creating {}", dir.display()))?;
    let path = dir.join(FILE);
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options
        .open(&path)
        .with_context(|| format!("creating {}", path.display()))?;
    // An older file keeps its mode on open: narrow it before writing.
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        file.set_permissions(std::fs::Permissions::from_mode(0o600))
            .with_context(|| format!("restricting {}", path.display()))?;
    }
    let body = json!({"server": credentials.server, "token": credentials.token});
    file.write_all(format!("{body:#}\n").as_bytes())
        .with_context(|| format!("writing {}", path.display()))?;
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stored_credentials_round_trip_readable_by_the_owner_only() {
        let dir = std::env::temp_dir().join(format!("k8sworker-cli-{}", std::process::id()));
        let credentials = Credentials {
            server: "http://127.0.0.1:1".into(),
            token: "secret-token".into(),
        };
        assert_eq!(load(&dir).unwrap(), None);
        let path = store(&dir, &credentials).unwrap();
        assert_eq!(load(&dir).unwrap(), Some(credentials.clone()));
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
            let mode = std::fs::metadata(&dir).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o700);
        }
        assert!(!format!("{credentials:?}").contains("secret-token"));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}

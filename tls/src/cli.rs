//! The TLS flags every component takes (one `clap` struct, flattened into
//! each binary's configuration).

use std::path::PathBuf;
use std::time::Duration;

use crate::identity::Identity;
use crate::material::{Tls, TlsError, TlsFiles};

/// How a component secures its gRPC hop(s).
#[derive(Debug, Clone, PartialEq, Eq, clap::Args)]
pub struct TlsArgs {
    /// Directory with the component's `tls.crt`, `tls.key` and the CA's
    /// `ca.crt` (a mounted `kubernetes.io/tls` Secret; `xtask certs` writes
    /// them). The files are read again when they change.
    #[arg(long, env = "K8SWORKER_TLS_DIR", value_name = "DIR")]
    pub tls_dir: Option<PathBuf>,

    /// Serve and call without TLS, nobody authenticated. Refused unless
    /// every address this component listens on or calls is loopback.
    #[arg(long, env = "K8SWORKER_INSECURE_PLAINTEXT", conflicts_with = "tls_dir")]
    pub insecure_plaintext: bool,

    /// How often the TLS files are checked for a change, in seconds.
    #[arg(long, env = "K8SWORKER_TLS_RELOAD_SECONDS", default_value_t = 10)]
    pub tls_reload_seconds: u64,
}

impl Default for TlsArgs {
    /// Neither TLS files nor plaintext: [`TlsArgs::load`] refuses it.
    fn default() -> Self {
        TlsArgs {
            tls_dir: None,
            insecure_plaintext: false,
            tls_reload_seconds: 10,
        }
    }
}

/// Why the TLS flags cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum TlsArgsError {
    /// Neither `--tls-dir` nor `--insecure-plaintext`.
    #[error(
        "no TLS: give --tls-dir (K8SWORKER_TLS_DIR) with tls.crt, tls.key and ca.crt, or --insecure-plaintext on loopback"
    )]
    Missing,
    /// The certificate names another component.
    #[error("{path} names {found}, but this component is {expected}")]
    WrongIdentity {
        /// The certificate file.
        path: PathBuf,
        /// Whom it names.
        found: Identity,
        /// Whom it must name.
        expected: Identity,
    },
    /// The files cannot be used.
    #[error(transparent)]
    Tls(#[from] TlsError),
}

impl TlsArgs {
    /// TLS with the files of `dir`, checked every second (tests, the demo).
    pub fn dir(dir: impl Into<PathBuf>) -> TlsArgs {
        TlsArgs {
            tls_dir: Some(dir.into()),
            insecure_plaintext: false,
            tls_reload_seconds: 1,
        }
    }

    /// Plaintext (loopback only).
    pub fn plaintext() -> TlsArgs {
        TlsArgs {
            insecure_plaintext: true,
            ..TlsArgs::default()
        }
    }

    /// The component's TLS material, whose certificate must name `own`;
    /// `None` for plaintext (the caller checks its addresses are loopback
    /// with [`crate::plaintext_listen`] and [`crate::plaintext_url`]).
    ///
    /// # Errors
    /// [`TlsArgsError`]: no choice made, unusable files, or a certificate
    /// of another component.
    pub fn load(&self, own: &Identity) -> Result<Option<Tls>, TlsArgsError> {
        if self.insecure_plaintext {
            return Ok(None);
        }
        let dir = self.tls_dir.as_ref().ok_or(TlsArgsError::Missing)?;
        let tls = Tls::load(TlsFiles::in_dir(dir))?;
        if tls.identity() != *own {
            return Err(TlsArgsError::WrongIdentity {
                path: tls.files().cert.clone(),
                found: tls.identity(),
                expected: own.clone(),
            });
        }
        Ok(Some(tls))
    }

    /// How often to check the files.
    pub fn reload_interval(&self) -> Duration {
        Duration::from_secs(self.tls_reload_seconds.max(1))
    }
}

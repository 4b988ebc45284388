//! A component's certificate, key and CA, read from PEM files and read
//! again whenever their content changes.
//!
//! ```text
//! TlsFiles ──read──▶ Material ──▶ ServerConfig (built at once, shared by every accept)
//!                       │     └──▶ ClientConfig (built per connection, for the identity expected there)
//!    watch(interval): re-read; content changed and valid → swap; invalid → keep the old, warn
//! ```
//!
//! A Kubernetes Secret volume changes its files in place (an atomic symlink
//! swap), so polling the content finds a rotation without a file watcher;
//! connections opened after the swap use the new certificate, open ones keep
//! theirs.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock, Weak};
use std::time::Duration;

use rustls::{ClientConfig, RootCertStore, ServerConfig};
use rustls_pki_types::pem::PemObject as _;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use crate::identity::Identity;
use crate::peer::{PeerError, identity_of};
use crate::verify::IdentityVerifier;

/// The three PEM files of a component: what a mounted `kubernetes.io/tls`
/// Secret with a `ca.crt` holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    /// The component's certificate chain (end entity first).
    pub cert: PathBuf,
    /// Its private key (PKCS#8, SEC1 or PKCS#1).
    pub key: PathBuf,
    /// The CA every peer's certificate must chain to.
    pub ca: PathBuf,
}

impl TlsFiles {
    /// `tls.crt`, `tls.key` and `ca.crt` in `dir` (a mounted Secret).
    pub fn in_dir(dir: impl AsRef<Path>) -> TlsFiles {
        let dir = dir.as_ref();
        TlsFiles {
            cert: dir.join("tls.crt"),
            key: dir.join("tls.key"),
            ca: dir.join("ca.crt"),
        }
    }
}

/// Why TLS material could not be used. The message holds the underlying
/// error's, so it is not also the error's `source` (a report of the chain
/// would say it twice).
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A file could not be read.
    #[error("reading {path}: {error}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        error: std::io::Error,
    },
    /// A file holds no usable PEM of the expected kind.
    #[error("{path}: {what}")]
    Pem {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        what: String,
    },
    /// The component's own certificate names no k8sworker identity.
    #[error("{path}: {error}")]
    Identity {
        /// The certificate file.
        path: PathBuf,
        /// Why.
        error: PeerError,
    },
    /// A reloaded certificate names another identity than the one the
    /// component started with.
    #[error(
        "{path} now names {found}, but this component is {expected}; keeping the current certificate"
    )]
    IdentityChanged {
        /// The certificate file.
        path: PathBuf,
        /// Whom the new certificate names (boxed, as is the next: the
        /// error stays small).
        found: Box<Identity>,
        /// Whom the current one names.
        expected: Box<Identity>,
    },
    /// rustls refused the material (a key not matching the certificate, …).
    #[error("TLS configuration: {0}")]
    Rustls(#[from] rustls::Error),
    /// The CA could not verify client certificates.
    #[error("TLS client verification: {0}")]
    Verifier(#[from] rustls::server::VerifierBuilderError),
    /// Plaintext was asked for on an address that is not loopback.
    #[error(
        "--insecure-plaintext is allowed only on loopback, but {0} is not a loopback address: give the TLS certificate, key and CA instead"
    )]
    PlaintextNotLoopback(String),
}

/// The files' content, parsed.
#[derive(Debug)]
struct Material {
    identity: Identity,
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
    roots: Arc<RootCertStore>,
    server: Arc<ServerConfig>,
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn read(path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|error| TlsError::Read {
        path: path.to_owned(),
        error,
    })
}

impl Material {
    fn parse(files: &TlsFiles, content: &[Vec<u8>; 3]) -> Result<Material, TlsError> {
        let pem = |path: &Path, what: String| TlsError::Pem {
            path: path.to_owned(),
            what,
        };
        let chain = CertificateDer::pem_slice_iter(&content[0])
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| pem(&files.cert, e.to_string()))?;
        if chain.is_empty() {
            return Err(pem(&files.cert, "no CERTIFICATE in it".into()));
        }
        let identity = identity_of(&chain[0]).map_err(|error| TlsError::Identity {
            path: files.cert.clone(),
            error,
        })?;
        let key = PrivateKeyDer::from_pem_slice(&content[1])
            .map_err(|e| pem(&files.key, format!("no private key: {e}")))?;
        let mut roots = RootCertStore::empty();
        for cert in CertificateDer::pem_slice_iter(&content[2]) {
            let cert = cert.map_err(|e| pem(&files.ca, e.to_string()))?;
            roots
                .add(cert)
                .map_err(|e| pem(&files.ca, format!("not a CA certificate: {e}")))?;
        }
        if roots.is_empty() {
            return Err(pem(&files.ca, "no CERTIFICATE in it".into()));
        }
        let roots = Arc::new(roots);
        let provider = provider();
        // A caller without a certificate completes the handshake, so that
        // each call can be refused with a message naming who may make it
        // (crate::peer::authorize); a certificate that does not chain to
        // the CA fails the handshake.
        let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
            roots.clone(),
            provider.clone(),
        )
        .allow_unauthenticated()
        .build()?;
        let mut server = ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .with_client_cert_verifier(verifier)
            .with_single_cert(chain.clone(), key.clone_key())?;
        server.alpn_protocols = vec![b"h2".to_vec()];
        Ok(Material {
            identity,
            chain,
            key,
            roots,
            server: Arc::new(server),
        })
    }
}

/// A component's TLS material, reloaded when its files change; clones
/// share it.
#[derive(Debug, Clone)]
pub struct Tls {
    inner: Arc<Reloading>,
}

#[derive(Debug)]
struct Reloading {
    files: TlsFiles,
    current: RwLock<Arc<Material>>,
    content: Mutex<[Vec<u8>; 3]>,
}

impl Tls {
    /// Reads `files`.
    ///
    /// # Errors
    /// [`TlsError`] naming the file that is missing or unusable.
    pub fn load(files: TlsFiles) -> Result<Tls, TlsError> {
        let content = [read(&files.cert)?, read(&files.key)?, read(&files.ca)?];
        let material = Material::parse(&files, &content)?;
        Ok(Tls {
            inner: Arc::new(Reloading {
                files,
                current: RwLock::new(Arc::new(material)),
                content: Mutex::new(content),
            }),
        })
    }

    fn current(&self) -> Arc<Material> {
        self.inner
            .current
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// The identity the current certificate names.
    pub fn identity(&self) -> Identity {
        self.current().identity.clone()
    }

    /// The files read.
    pub fn files(&self) -> &TlsFiles {
        &self.inner.files
    }

    /// Reads the files again; when their content changed and is valid, it
    /// replaces the current material. Returns whether it did.
    ///
    /// # Errors
    /// The new content is unusable, or its certificate names another
    /// identity than the current one ([`TlsError::IdentityChanged`]: a
    /// component never changes who it is while running); the current
    /// material stays.
    pub fn reload(&self) -> Result<bool, TlsError> {
        let files = &self.inner.files;
        let content = [read(&files.cert)?, read(&files.key)?, read(&files.ca)?];
        let mut last = self.inner.content.lock().unwrap_or_else(|e| e.into_inner());
        if *last == content {
            return Ok(false);
        }
        let material = Material::parse(files, &content)?;
        let current = self.identity();
        if material.identity != current {
            return Err(TlsError::IdentityChanged {
                path: files.cert.clone(),
                found: Box::new(material.identity),
                expected: Box::new(current),
            });
        }
        *self
            .inner
            .current
            .write()
            .unwrap_or_else(|e| e.into_inner()) = Arc::new(material);
        *last = content;
        Ok(true)
    }

    /// Checks the files every `interval` in a background task and reloads
    /// them when they change; the task ends when every clone of this
    /// [`Tls`] is gone.
    pub fn watch(&self, interval: Duration) -> tokio::task::JoinHandle<()> {
        let weak: Weak<Reloading> = Arc::downgrade(&self.inner);
        tokio::spawn(async move {
            let mut ticks = tokio::time::interval(interval);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            ticks.tick().await;
            loop {
                ticks.tick().await;
                let Some(inner) = weak.upgrade() else { return };
                let tls = Tls { inner };
                match tls.reload() {
                    Ok(true) => tracing::info!(
                        identity = %tls.identity(),
                        cert = %tls.files().cert.display(),
                        "TLS certificate reloaded"
                    ),
                    Ok(false) => {}
                    Err(error) => tracing::warn!(
                        %error,
                        "TLS files changed but cannot be used; keeping the current certificate"
                    ),
                }
            }
        })
    }

    /// The server configuration of the current material.
    pub fn server_config(&self) -> Arc<ServerConfig> {
        self.current().server.clone()
    }

    /// A client configuration presenting the current certificate and
    /// accepting only a server whose certificate chains to the CA and names
    /// `expected`.
    ///
    /// # Errors
    /// rustls refused the material.
    pub fn client_config(&self, expected: Identity) -> Result<Arc<ClientConfig>, TlsError> {
        self.client_config_presenting(expected, true)
    }

    /// As [`Tls::client_config`], presenting the certificate only when
    /// `present` is true: without, the client is what an unauthenticated
    /// caller looks like (tests of refusals use it).
    ///
    /// # Errors
    /// rustls refused the material.
    pub fn client_config_presenting(
        &self,
        expected: Identity,
        present: bool,
    ) -> Result<Arc<ClientConfig>, TlsError> {
        let material = self.current();
        let provider = provider();
        let verifier = IdentityVerifier::new(material.roots.clone(), expected, provider.clone());
        let builder = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(verifier));
        let mut config = if present {
            builder.with_client_auth_cert(material.chain.clone(), material.key.clone_key())?
        } else {
            builder.with_no_client_auth()
        };
        config.alpn_protocols = vec![b"h2".to_vec()];
        Ok(Arc::new(config))
    }
}

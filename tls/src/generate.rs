//! Creating a CA and the components' certificates (rcgen), and the
//! Kubernetes Secrets that carry them: what `xtask certs` writes, and what
//! the tests and the demo use.
//!
//! Every component certificate is an ECDSA P-256 leaf with one URI SAN (its
//! [`Identity`]), usable as server and client (the planner is both), signed
//! by the CA; the CA's certificate travels as `ca.crt` beside each.

use std::path::Path;
use std::time::Duration;

use base64::Engine as _;
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType,
};

use crate::identity::{Identity, Role};
use crate::material::{Tls, TlsError, TlsFiles};

/// How long a CA is valid: ten years.
pub const CA_VALIDITY: Duration = Duration::from_secs(10 * 365 * 24 * 3600);
/// How long a component certificate is valid by default: one year.
pub const CERT_VALIDITY: Duration = Duration::from_secs(365 * 24 * 3600);

/// Why a certificate could not be made.
#[derive(Debug, thiserror::Error)]
pub enum GenerateError {
    /// rcgen refused.
    #[error("certificate generation: {0}")]
    Rcgen(#[from] rcgen::Error),
    /// The certificate written could not be read back.
    #[error(transparent)]
    Load(#[from] TlsError),
    /// Writing a file failed.
    #[error("writing {path}: {source}")]
    Write {
        /// The file.
        path: std::path::PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
}

/// A certificate authority: its certificate and key, in PEM.
#[derive(Debug)]
pub struct Ca {
    cert_pem: String,
    key_pem: String,
    issuer: Issuer<'static, KeyPair>,
}

fn validity(params: &mut CertificateParams, validity: Duration) {
    let now = time::OffsetDateTime::now_utc();
    // A minute back: clocks of the peers may be a little behind.
    params.not_before = now - time::Duration::minutes(1);
    params.not_after = now + validity;
}

impl Ca {
    /// A new CA named `name`, valid [`CA_VALIDITY`].
    ///
    /// # Errors
    /// rcgen refused.
    pub fn generate(name: &str) -> Result<Ca, GenerateError> {
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        params.distinguished_name = DistinguishedName::new();
        params.distinguished_name.push(DnType::CommonName, name);
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        validity(&mut params, CA_VALIDITY);
        let cert = params.self_signed(&key)?;
        let key_pem = key.serialize_pem();
        Ok(Ca {
            cert_pem: cert.pem(),
            key_pem,
            issuer: Issuer::new(params, key),
        })
    }

    /// A CA read back from its PEM certificate and key.
    ///
    /// # Errors
    /// Either is not valid PEM of its kind.
    pub fn from_pem(cert_pem: &str, key_pem: &str) -> Result<Ca, GenerateError> {
        let key = KeyPair::from_pem(key_pem)?;
        Ok(Ca {
            cert_pem: cert_pem.to_owned(),
            key_pem: key_pem.to_owned(),
            issuer: Issuer::from_ca_cert_pem(cert_pem, key)?,
        })
    }

    /// The CA certificate, PEM.
    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    /// The CA key, PEM: keep it secret, and out of the cluster.
    pub fn key_pem(&self) -> &str {
        &self.key_pem
    }

    /// A certificate for `identity`, valid `valid_for` from now.
    ///
    /// # Errors
    /// rcgen refused.
    pub fn issue(&self, identity: &Identity, valid_for: Duration) -> Result<Issued, GenerateError> {
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        params.distinguished_name = DistinguishedName::new();
        params
            .distinguished_name
            .push(DnType::CommonName, common_name(identity));
        params.subject_alt_names = vec![SanType::URI(identity.uri().try_into()?)];
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        params.use_authority_key_identifier_extension = true;
        validity(&mut params, valid_for);
        let cert = params.signed_by(&key, &self.issuer)?;
        Ok(Issued {
            identity: identity.clone(),
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
            ca_pem: self.cert_pem.clone(),
        })
    }
}

fn common_name(identity: &Identity) -> String {
    match identity {
        Identity::Gateway(tenant) => format!("k8sworker-gateway {tenant}"),
        Identity::Planner => "k8sworker-planner".into(),
        Identity::Executor { namespace } => format!("k8sworker-executor {namespace}"),
        Identity::Preview => "k8sworker-preview".into(),
    }
}

/// A component's certificate, key and CA certificate, PEM.
#[derive(Debug, Clone)]
pub struct Issued {
    /// Whom it names.
    pub identity: Identity,
    /// The certificate.
    pub cert_pem: String,
    /// Its private key.
    pub key_pem: String,
    /// The CA's certificate.
    pub ca_pem: String,
}

/// The Secret name of a component's certificate: `k8sworker-<role>-tls`.
pub fn secret_name(identity: &Identity) -> &'static str {
    match identity.role() {
        Role::Gateway => "k8sworker-gateway-tls",
        Role::Planner => "k8sworker-planner-tls",
        Role::Executor => "k8sworker-executor-tls",
        Role::Preview => "k8sworker-preview-tls",
    }
}

impl Issued {
    /// Writes `tls.crt`, `tls.key` (mode 0600) and `ca.crt` into `dir`
    /// (created if missing).
    ///
    /// # Errors
    /// A file could not be written.
    pub fn write(&self, dir: &Path) -> Result<TlsFiles, GenerateError> {
        let files = TlsFiles::in_dir(dir);
        let write = |path: &Path, content: &str| {
            std::fs::create_dir_all(dir)
                .and_then(|()| write_private(path, content))
                .map_err(|source| GenerateError::Write {
                    path: path.to_owned(),
                    source,
                })
        };
        write(&files.cert, &self.cert_pem)?;
        write(&files.key, &self.key_pem)?;
        write(&files.ca, &self.ca_pem)?;
        Ok(files)
    }

    /// The `kubernetes.io/tls` Secret (with `ca.crt`) carrying this
    /// certificate, named [`secret_name`], in `namespace`, as YAML.
    pub fn secret_manifest(&self, namespace: &str) -> String {
        self.secret_manifest_named(secret_name(&self.identity), namespace)
    }

    /// [`Issued::secret_manifest`] under another Secret name (`name`, a
    /// DNS-1123 subdomain): several gateways' Secrets in one namespace.
    pub fn secret_manifest_named(&self, name: &str, namespace: &str) -> String {
        let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
        format!(
            "apiVersion: v1\nkind: Secret\nmetadata:\n  name: {name}\n  namespace: {namespace}\n  \
             annotations:\n    k8sworker.io/identity: {uri}\ntype: kubernetes.io/tls\ndata:\n  \
             tls.crt: {cert}\n  tls.key: {key}\n  ca.crt: {ca}\n",
            uri = self.identity.uri(),
            cert = b64(&self.cert_pem),
            key = b64(&self.key_pem),
            ca = b64(&self.ca_pem),
        )
    }
}

/// Writes a file readable by its owner only (keys; the rest does not mind).
fn write_private(path: &Path, content: &str) -> std::io::Result<()> {
    use std::io::Write as _;
    #[cfg(unix)]
    use std::os::unix::fs::OpenOptionsExt as _;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    options.mode(0o600);
    // Write beside, then rename: a reader never sees half a file.
    let partial = path.with_extension("partial");
    let mut file = options.open(&partial)?;
    file.write_all(content.as_bytes())?;
    file.sync_all()?;
    std::fs::rename(&partial, path)
}

/// The name of `identity`'s directory (and of `xtask certs`' Secret
/// manifest file): its URI path with `/` as `-`, a gateway's tenant parts
/// with `%` written `%25` and `-` written `%2D` first, so that no two
/// tenants share one (`a-b/c` is `gateway-a%2Db-c`, `a/b-c` is
/// `gateway-a-b%2Dc`). Tenant parts hold no `/`, so the name is one path
/// component.
pub fn dir_name(identity: &Identity) -> String {
    let escape = |part: &str| part.replace('%', "%25").replace('-', "%2D");
    match identity {
        Identity::Gateway(tenant) => format!(
            "gateway-{}-{}",
            escape(&tenant.vantiq_namespace),
            escape(&tenant.cluster)
        ),
        Identity::Planner => "planner".into(),
        Identity::Executor { namespace } => format!("executor-{namespace}"),
        Identity::Preview => "preview".into(),
    }
}

/// A CA and the certificates it issued, each in its own directory under
/// one root: what the tests and the demo use.
#[derive(Debug)]
pub struct Pki {
    ca: Ca,
    dir: std::path::PathBuf,
}

impl Pki {
    /// A new CA; certificates go under `dir`.
    ///
    /// # Errors
    /// rcgen refused.
    pub fn new(dir: impl Into<std::path::PathBuf>) -> Result<Pki, GenerateError> {
        Ok(Pki::with_ca(Ca::generate("k8sworker CA")?, dir))
    }

    /// `ca`'s certificates, under `dir`.
    pub fn with_ca(ca: Ca, dir: impl Into<std::path::PathBuf>) -> Pki {
        Pki {
            ca,
            dir: dir.into(),
        }
    }

    /// The CA.
    pub fn ca(&self) -> &Ca {
        &self.ca
    }

    /// The directory of `identity`'s files (`planner`, `preview`,
    /// `executor-team-a`, `gateway-acme-prod`): see [`dir_name`].
    pub fn dir_of(&self, identity: &Identity) -> std::path::PathBuf {
        self.dir.join(dir_name(identity))
    }

    /// Issues a certificate for `identity` into [`Pki::dir_of`] (replacing
    /// one issued before) and loads it.
    ///
    /// # Errors
    /// Generation, writing or loading failed.
    pub fn tls(&self, identity: &Identity) -> Result<Tls, GenerateError> {
        let files = self.issue(identity, CERT_VALIDITY)?.1;
        Ok(Tls::load(files)?)
    }

    /// Issues a certificate for `identity`, valid `valid_for`, into
    /// [`Pki::dir_of`] (replacing one issued before).
    ///
    /// # Errors
    /// Generation or writing failed.
    pub fn issue(
        &self,
        identity: &Identity,
        valid_for: Duration,
    ) -> Result<(Issued, TlsFiles), GenerateError> {
        let issued = self.ca.issue(identity, valid_for)?;
        let files = issued.write(&self.dir_of(identity))?;
        Ok((issued, files))
    }
}

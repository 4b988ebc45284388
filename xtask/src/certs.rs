//! `xtask certs`: a CA and the components' certificates, as files and as
//! Kubernetes Secrets (`kubernetes.io/tls`, with `ca.crt`) to apply.
//!
//! ```text
//! <out>/ca/ca.crt, ca.key         the CA (made on the first run, reused after; keep ca.key off the cluster)
//! <out>/<component>/tls.crt, tls.key, ca.crt
//!                                 planner, preview, executor-<ns>, gateway-<vantiq-ns>-<cluster>
//! <out>/secrets/k8sworker.yaml    the planner's Secret (and the preview client's), namespace k8sworker
//! <out>/secrets/gateway-<vantiq-ns>-<cluster>.yaml   a gateway's, namespace k8sworker
//! <out>/secrets/executor-<ns>.yaml                   an executor's, in its namespace
//! ```
//!
//! In a gateway's names, `-` and `%` of its tenant's parts are written
//! `%2D` and `%25` ([`k8sworker_tls::generate::dir_name`]), so two tenants
//! never share a directory. One gateway's Secret is `k8sworker-gateway-tls`
//! (what `deploy/` mounts); with several `--gateway`, each is
//! `k8sworker-gateway-<16 hex digits of the SHA-256 of its identity URI>-tls`
//! ([`gateway_secret_name`]), so applying them keeps every one.
//!
//! Running it again with the same CA issues fresh certificates (a rotation:
//! apply the Secrets, the components read the new files without a restart).

use std::fs;
use std::io::Write as _;
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context as _;
use k8sworker_core::owner::Tenant;
use k8sworker_tls::Identity;
use k8sworker_tls::generate::{Ca, Issued, Pki, dir_name};

/// What `xtask certs` creates.
#[derive(Debug, clap::Args)]
pub struct CertsArgs {
    /// Where the CA, the certificates and the Secrets go.
    #[arg(long, default_value = "target/certs")]
    pub out: PathBuf,
    /// A namespace with an executor (repeatable; comma-separated works too).
    #[arg(
        long = "executor-namespace",
        value_name = "NAMESPACE",
        value_delimiter = ','
    )]
    pub executor_namespaces: Vec<String>,
    /// A gateway's tenant, `<vantiq-namespace>/<cluster>` (repeatable): its
    /// VANTIQ_NAMESPACE and CLUSTER_NAME.
    #[arg(long = "gateway", value_name = "VANTIQ_NAMESPACE/CLUSTER", value_delimiter = ',', value_parser = Tenant::parse)]
    pub gateways: Vec<Tenant>,
    /// Also a preview client's certificate (Render and Plan only), for CI.
    #[arg(long)]
    pub preview: bool,
    /// The namespace of the planner and gateways.
    #[arg(long, default_value = "k8sworker")]
    pub system_namespace: String,
    /// How long the component certificates are valid, in days.
    #[arg(long, default_value_t = 365)]
    pub valid_days: u64,
}

/// Creates (or reuses) the CA under `args.out` and issues every certificate
/// asked for, plus the planner's; returns the Pki for further use.
pub fn certs(args: &CertsArgs) -> anyhow::Result<Pki> {
    for namespace in &args.executor_namespaces {
        anyhow::ensure!(
            k8sworker_core::names::is_dns1123_label(namespace),
            "--executor-namespace `{namespace}` is not a namespace name"
        );
    }
    // Checked before anything is written: a URI SAN is an IA5String, so a
    // tenant outside ASCII fails only when its certificate is made, after
    // the CA and the planner's were already on disk.
    for tenant in &args.gateways {
        anyhow::ensure!(
            Identity::gateway(tenant.clone()).uri().is_ascii(),
            "--gateway `{tenant}`: a certificate's URI holds ASCII characters only"
        );
    }
    let mut names = std::collections::HashSet::new();
    for tenant in &args.gateways {
        let identity = Identity::gateway(tenant.clone());
        anyhow::ensure!(
            names.insert(gateway_secret_name(&identity)) && names.insert(dir_name(&identity)),
            "--gateway `{tenant}` is given twice"
        );
    }
    let ca_dir = args.out.join("ca");
    let (cert, key) = (ca_dir.join("ca.crt"), ca_dir.join("ca.key"));
    let ca = if cert.exists() && key.exists() {
        println!("reusing the CA in {}", ca_dir.display());
        Ca::from_pem(&fs::read_to_string(&cert)?, &fs::read_to_string(&key)?)
            .with_context(|| format!("reading the CA in {}", ca_dir.display()))?
    } else {
        let ca = Ca::generate("k8sworker CA")?;
        write_private(&cert, ca.cert_pem())?;
        write_private(&key, ca.key_pem())?;
        println!(
            "created a CA in {} (keep ca.key off the cluster)",
            ca_dir.display()
        );
        ca
    };
    let pki = Pki::with_ca(ca, &args.out);
    let valid_for = Duration::from_secs(args.valid_days.max(1) * 24 * 3600);
    let secrets = args.out.join("secrets");
    fs::create_dir_all(&secrets)?;
    let issue = |identity: &Identity| -> anyhow::Result<Issued> {
        let (issued, files) = pki.issue(identity, valid_for)?;
        println!(
            "{identity}: {}",
            files.cert.parent().unwrap_or(Path::new("")).display()
        );
        Ok(issued)
    };

    let mut system = issue(&Identity::Planner)?.secret_manifest(&args.system_namespace);
    if args.preview {
        system.push_str("---\n");
        system.push_str(&issue(&Identity::Preview)?.secret_manifest(&args.system_namespace));
    }
    write_private(&secrets.join("k8sworker.yaml"), &system)?;
    for tenant in &args.gateways {
        let identity = Identity::gateway(tenant.clone());
        let issued = issue(&identity)?;
        let manifest = if args.gateways.len() == 1 {
            issued.secret_manifest(&args.system_namespace)
        } else {
            issued.secret_manifest_named(&gateway_secret_name(&identity), &args.system_namespace)
        };
        let file = format!("{}.yaml", dir_name(&identity));
        write_private(&secrets.join(file), &manifest)?;
    }
    for namespace in &args.executor_namespaces {
        let manifest = issue(&Identity::executor(namespace.clone()))?.secret_manifest(namespace);
        write_private(
            &secrets.join(format!("executor-{namespace}.yaml")),
            &manifest,
        )?;
    }
    println!(
        "Secrets (kubernetes.io/tls with ca.crt) in {}: kubectl apply -f {}",
        secrets.display(),
        secrets.display()
    );
    Ok(pki)
}

/// The Secret name of one of several gateways: `k8sworker-gateway-<h>-tls`,
/// `<h>` the first 16 hex digits (64 bits) of the SHA-256 of its identity
/// URI. A DNS-1123 name whatever the tenant's characters (they may be
/// uppercase, `_`, `.`); the Secret's `k8sworker.io/identity` annotation
/// names the tenant.
pub fn gateway_secret_name(identity: &Identity) -> String {
    use sha2::Digest as _;
    let digest = sha2::Sha256::digest(identity.uri().as_bytes());
    let hex: String = digest[..8]
        .iter()
        .map(|byte| format!("{byte:02x}"))
        .collect();
    format!("k8sworker-gateway-{hex}-tls")
}

/// Writes a file readable by its owner only, creating its directory.
fn write_private(path: &Path, content: &str) -> anyhow::Result<()> {
    if let Some(dir) = path.parent() {
        fs::create_dir_all(dir)?;
    }
    write_secret(path, content).with_context(|| format!("writing {}", path.display()))
}

/// Writes `content` to `path`, readable by its owner only (mode 0600).
pub(crate) fn write_secret(path: &Path, content: &str) -> anyhow::Result<()> {
    let mut file = fs::OpenOptions::new()
        .create(true)
        .write(true)
        .truncate(true)
        .mode(0o600)
        .open(path)?;
    file.write_all(content.as_bytes())?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tenant_no_certificate_can_name_is_refused_before_anything_is_written() {
        let out = std::env::temp_dir().join(format!("xtask-certs-{}", uuid::Uuid::new_v4()));
        let args = CertsArgs {
            out: out.clone(),
            executor_namespaces: vec!["team-a".into()],
            gateways: vec![
                Tenant::new("acme", "prod").unwrap(),
                Tenant::new("\u{e4}rger", "prod").unwrap(),
            ],
            preview: false,
            system_namespace: "k8sworker".into(),
            valid_days: 1,
        };
        let refused = certs(&args).unwrap_err().to_string();
        assert!(
            refused.contains("--gateway `\u{e4}rger/prod`: a certificate's URI holds ASCII"),
            "{refused}"
        );
        assert!(!out.exists(), "nothing is written");
    }

    fn args(out: &Path, gateways: &[&str]) -> CertsArgs {
        CertsArgs {
            out: out.to_owned(),
            executor_namespaces: Vec::new(),
            gateways: gateways.iter().map(|g| Tenant::parse(g).unwrap()).collect(),
            preview: false,
            system_namespace: "k8sworker".into(),
            valid_days: 1,
        }
    }

    /// The `metadata.name` of a Secret manifest.
    fn secret_name_of(manifest: &str) -> String {
        let line = manifest
            .lines()
            .find(|line| line.starts_with("  name: "))
            .unwrap();
        line["  name: ".len()..].to_owned()
    }

    #[test]
    fn several_gateways_get_their_own_secret_and_directory() {
        let out = std::env::temp_dir().join(format!("xtask-certs-{}", uuid::Uuid::new_v4()));
        certs(&args(&out, &["a-b/c", "a/b-c", "A/b", "a%2Db/c"])).unwrap();
        let mut secret_names = std::collections::HashSet::new();
        for (tenant, dir) in [
            ("a-b/c", "gateway-a%2Db-c"),
            ("a/b-c", "gateway-a-b%2Dc"),
            ("A/b", "gateway-A-b"),
            ("a%2Db/c", "gateway-a%252Db-c"),
        ] {
            let cert = fs::read_to_string(out.join(dir).join("tls.crt")).unwrap();
            assert!(cert.contains("BEGIN CERTIFICATE"), "{dir}");
            let manifest =
                fs::read_to_string(out.join("secrets").join(format!("{dir}.yaml"))).unwrap();
            assert!(
                manifest.contains(&format!(
                    "k8sworker.io/identity: spiffe://k8sworker/gateway/{tenant}\n"
                )),
                "{manifest}"
            );
            let name = secret_name_of(&manifest);
            assert!(k8sworker_core::names::is_dns1123_label(&name), "{name}");
            assert!(
                secret_names.insert(name),
                "{tenant}: a Secret name is shared"
            );
        }
        let _ = fs::remove_dir_all(&out);

        // One gateway: the Secret deploy/ mounts.
        let out = std::env::temp_dir().join(format!("xtask-certs-{}", uuid::Uuid::new_v4()));
        certs(&args(&out, &["my-ns/my-cluster"])).unwrap();
        let manifest = fs::read_to_string(
            out.join("secrets")
                .join("gateway-my%2Dns-my%2Dcluster.yaml"),
        )
        .unwrap();
        assert_eq!(secret_name_of(&manifest), "k8sworker-gateway-tls");
        let _ = fs::remove_dir_all(&out);
    }

    #[test]
    fn a_gateway_given_twice_is_refused_before_anything_is_written() {
        let out = std::env::temp_dir().join(format!("xtask-certs-{}", uuid::Uuid::new_v4()));
        let refused = certs(&args(&out, &["acme/prod", "acme/prod"]))
            .unwrap_err()
            .to_string();
        assert!(
            refused.contains("--gateway `acme/prod` is given twice"),
            "{refused}"
        );
        assert!(!out.exists(), "nothing is written");
    }
}

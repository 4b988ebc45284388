//! TLS for the client: rustls on the `ring` provider (no C toolchain
//! needed; aws-lc-rs is deliberately not used), with the platform's trust
//! store (`rustls-platform-verifier`; on Linux the system's CA bundle, or
//! the files `SSL_CERT_FILE` / `SSL_CERT_DIR` name) plus any roots given to
//! [`ClientBuilder::root_certificates_pem`](crate::ClientBuilder::root_certificates_pem).
//!
//! The [`Client`](crate::Client) hands reqwest a finished rustls
//! configuration, so it needs no process-wide provider. reqwest is built
//! with `rustls-no-provider`, so any *other* reqwest client in the same
//! process needs one: [`install_default_provider`].

use std::sync::Arc;

use rustls::ClientConfig;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::CertificateDer;

/// The crypto provider every connection uses: `ring`.
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Installs `ring` as the process's default rustls provider, unless one is
/// installed already. Call it before building a plain `reqwest::Client` in
/// a process that links this crate (reqwest has no provider of its own here
/// and panics without one).
pub fn install_default_provider() {
    // Err only when a provider is installed already, which is what is wanted.
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// The client configuration: TLS 1.2 and 1.3 on `ring`, servers verified
/// against the platform's roots and `extra_roots`, no client certificate.
pub(crate) fn client_config(
    extra_roots: Vec<CertificateDer<'static>>,
) -> Result<ClientConfig, rustls::Error> {
    let provider = provider();
    let verifier = if extra_roots.is_empty() {
        rustls_platform_verifier::Verifier::new(Arc::clone(&provider))?
    } else {
        rustls_platform_verifier::Verifier::new_with_extra_roots(
            extra_roots,
            Arc::clone(&provider),
        )?
    };
    Ok(ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(verifier))
        .with_no_client_auth())
}

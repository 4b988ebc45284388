//! Who called: the identity in the verified certificate the peer presented,
//! checked against each call's rule.
//!
//! The TLS handshake has already verified the chain against our CA
//! ([`crate::server`]); this module reads the certificate's URI SAN
//! (x509-parser) and decides, per call, whether that identity may make it.
//! With TLS off (plaintext on loopback, [`Authentication::Off`]) nobody is
//! checked and the caller is unknown.

use std::net::SocketAddr;
use std::sync::Arc;

use rustls_pki_types::CertificateDer;
use tonic::{Request, Status};
use x509_parser::prelude::{FromDer as _, GeneralName, X509Certificate};

use crate::identity::{Identity, IdentityError, PREFIX, Role};

/// What a connection tells each request about its peer (the connection
/// info of [`crate::server::Incoming`]'s streams; tonic puts it in every
/// request's extensions).
#[derive(Debug, Clone, Default)]
pub struct PeerInfo {
    /// The peer's address.
    pub remote: Option<SocketAddr>,
    /// The chain the peer presented (end entity first), verified against
    /// the CA during the handshake; `None` over plaintext or without a
    /// client certificate.
    pub certs: Option<Arc<Vec<CertificateDer<'static>>>>,
}

/// Whether a server checks its callers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Authentication {
    /// Mutual TLS: every call is checked against its rule.
    Required,
    /// Plaintext on loopback (`--insecure-plaintext`): nobody is checked.
    Off,
}

/// Why a certificate names no identity.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PeerError {
    /// The certificate could not be read.
    #[error("the certificate cannot be read: {0}")]
    Unreadable(String),
    /// No URI SAN in the k8sworker trust domain.
    #[error("the certificate names no spiffe://k8sworker/ identity")]
    NoIdentity,
    /// More than one.
    #[error("the certificate names more than one spiffe://k8sworker/ identity")]
    SeveralIdentities,
    /// One that is not a k8sworker identity.
    #[error(transparent)]
    Bad(#[from] IdentityError),
}

/// The identity a certificate names: its one URI SAN under `spiffe://k8sworker/`.
///
/// # Errors
/// [`PeerError`] when the certificate is unreadable or names none, several,
/// or a malformed one.
pub fn identity_of(cert: &CertificateDer<'_>) -> Result<Identity, PeerError> {
    let (_, cert) = X509Certificate::from_der(cert.as_ref())
        .map_err(|e| PeerError::Unreadable(e.to_string()))?;
    let names = cert
        .subject_alternative_name()
        .map_err(|e| PeerError::Unreadable(e.to_string()))?;
    let mut uris = names
        .into_iter()
        .flat_map(|san| san.value.general_names.iter())
        .filter_map(|name| match name {
            GeneralName::URI(uri) if uri.starts_with(PREFIX) => Some(*uri),
            _ => None,
        });
    let uri = uris.next().ok_or(PeerError::NoIdentity)?;
    if uris.next().is_some() {
        return Err(PeerError::SeveralIdentities);
    }
    Ok(Identity::parse(uri)?)
}

/// Checks that the caller of `call` (e.g. `Executor.Apply`) has one of the
/// `allowed` roles, from the verified certificate of the connection.
/// Returns the caller's identity; `None` when authentication is off.
///
/// # Errors
/// `UNAUTHENTICATED` when the caller presented no certificate;
/// `PERMISSION_DENIED` when its certificate names no k8sworker identity or
/// one whose role is not allowed. Each message names the call, the caller
/// and who may make it.
pub fn authorize<T>(
    request: &Request<T>,
    authentication: Authentication,
    call: &str,
    allowed: &[Role],
) -> Result<Option<Identity>, Status> {
    if authentication == Authentication::Off {
        return Ok(None);
    }
    let who = || {
        allowed
            .iter()
            .map(|role| role.pattern())
            .collect::<Vec<_>>()
            .join(" or ")
    };
    let cert = request
        .extensions()
        .get::<PeerInfo>()
        .and_then(|peer| peer.certs.clone())
        .and_then(|certs| certs.first().cloned());
    let Some(cert) = cert else {
        return Err(Status::unauthenticated(format!(
            "{call} needs a client certificate: the caller presented none; only {} may call it",
            who()
        )));
    };
    let identity = identity_of(&cert).map_err(|error| {
        Status::permission_denied(format!(
            "{call} refused: {error}; only {} may call it",
            who()
        ))
    })?;
    if !allowed.contains(&identity.role()) {
        return Err(Status::permission_denied(format!(
            "{call} refused: the caller is {identity}; only {} may call it",
            who()
        )));
    }
    Ok(Some(identity))
}

/// A tonic interceptor that lets a request through only when [`authorize`]
/// admits its caller for `call`: for services whose handlers do not check
/// their callers themselves (gRPC server reflection), so that they are
/// refused to whoever may make no other call either.
pub fn admit(
    authentication: Authentication,
    call: &'static str,
    allowed: &'static [Role],
) -> impl FnMut(Request<()>) -> Result<Request<()>, Status> + Clone {
    move |request| authorize(&request, authentication, call, allowed).map(|_| request)
}

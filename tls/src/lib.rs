//! Mutual TLS between k8sworker's components (gateway → planner →
//! executor): who each one is, how a server checks each call's caller, and
//! certificates that are read again when their files change.
//!
//! ```text
//! cli        TlsArgs: --tls-dir, --insecure-plaintext, --tls-reload-seconds
//! identity   spiffe://k8sworker/… URIs: gateway/<vantiq-ns>/<cluster>, planner, executor/<ns>, preview
//! material   Tls: cert + key + CA from PEM files, reloaded on change; rustls server/client configs
//! transport  incoming(listener, tls) → accepted connections carrying PeerInfo;
//!            channel(endpoint, tls, expected) → a tonic channel that accepts only `expected`
//! peer       authorize(request, call, roles): the verified certificate's identity, or a refusal
//! health     serve_health: the plaintext port for probes, grpc.health.v1 only
//! generate   (feature `generate`) a CA and component certificates, as files or Secrets
//! ```
//!
//! A server's TLS handshake verifies the chain (rustls, ring); the identity
//! is read per call from the certificate (x509-parser), so one listener
//! serves calls with different rules (the planner's Render and Plan admit a
//! preview client, its Execute only gateways).

#![warn(missing_docs)]

pub mod cli;
#[cfg(feature = "generate")]
pub mod generate;
pub mod health;
pub mod identity;
pub mod material;
pub mod peer;
pub mod transport;
mod verify;

pub use cli::{TlsArgs, TlsArgsError};
pub use health::serve_health;
pub use identity::{Identity, Role};
pub use material::{Tls, TlsError, TlsFiles};
pub use peer::{Authentication, PeerInfo, admit, authorize};
pub use transport::{Incoming, channel, incoming, plaintext_listen, plaintext_url};

//! The control plane as its clients see it: the worker protocol's messages
//! (`docs/worker-protocol.md`), shared by the control plane that serves them
//! and the gateway that speaks them, and — behind the default feature
//! `http` — one HTTP client for the worker protocol and Vantiq's REST API.
//!
//! ```text
//! protocol    K8sManager.* parameters and answers, the claimed workitem,    always; serde only
//!             the installation report, the server version
//! documents   document metadata and the upload's multipart fields          always
//! vantiq      Vantiq's error body and the codes the protocol names          always
//! Client      reqwest + rustls (ring, the platform's trust store):          feature `http`
//!             bearer token, traceparent, typed errors
//! ```
//!
//! The control plane depends on this crate without `http`, so the server
//! links no HTTP client; the gateway, the end-to-end tests, the demo and the
//! benchmark use [`Client`].
//!
//! Field names are Vantiq's (camelCase), as the protocol document gives them.

#![warn(missing_docs)]

pub mod documents;
pub mod protocol;
pub mod vantiq;

#[cfg(feature = "http")]
mod client;
#[cfg(feature = "http")]
mod error;
#[cfg(feature = "http")]
pub mod tls;

#[cfg(feature = "http")]
pub use client::{Answer, Client, ClientBuilder};
#[cfg(feature = "http")]
pub use error::{BuildError, Error};
#[cfg(feature = "http")]
pub use reqwest::Method;

mod token;

pub use token::AccessToken;

//! The k8sworker control plane: a Vantiq-compatible REST server for K8s
//! clusters, installations, workitems, documents, secrets and tokens, with
//! durable SQLite storage and the worker protocol the gateway speaks.
//!
//! Data flow: an admin's command ([`operations`]) is validated with the
//! planner's rules and stored as a `REQUESTED` workitem with its
//! `traceparent` ([`trace_context`]); a worker claims it through a
//! `K8sManager` procedure ([`store::workitems`]) with a lease, receives the
//! resolved secrets and documents, and completes or fails it, which writes
//! the installation record in the same transaction. [`maintenance`] returns
//! expired leases, flags delayed work and schedules `verify` operations.
//!
//! Layers, each importing only those below it:
//!
//! ```text
//!   server  offline             wiring: store, router, sweep, shutdown /
//!                                 backup and key rotation
//!   api          maintenance    the HTTP edge (ApiError lives here) / the sweep
//!   state                       what handlers share (AppState)
//!   operations                  commands: checked, charged, enqueued
//!   store                       SQL; answers StoreError
//!   lifecycle  quota  query     pure decisions: workitem state machine,
//!   auth  audit  trace_context    self-cluster quota, selects, identity,
//!   secret_config  keyring        secret slots of a config / sealing
//!   templates                     the worker templates zip
//! ```
//!
//! Each layer has its own error type ([`store::StoreError`],
//! [`operations::OperationError`], [`quota::QuotaError`],
//! [`auth::Forbidden`], [`query::QueryError`]); [`api::error`] maps them to
//! HTTP statuses and Vantiq error codes, once.

#![warn(missing_docs)]

pub mod api;
pub mod audit;
pub mod auth;
pub mod config;
pub mod console;
pub mod keyring;
pub mod lifecycle;
pub mod maintenance;
pub mod metrics;
pub mod offline;
pub mod operations;
pub mod query;
pub mod quota;
pub mod secret_config;
pub mod server;
pub mod state;
pub mod store;
pub mod templates;
pub mod trace_context;

pub use config::Config;
pub use server::{Server, ServerError};

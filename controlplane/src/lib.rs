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
//! Layers: [`query`], [`quota`] and [`auth`] are pure; [`store`] owns SQL;
//! [`api`] is the axum edge; [`server`] wires them.

pub mod api;
pub mod audit;
pub mod auth;
pub mod config;
pub mod error;
pub mod lifecycle;
pub mod maintenance;
pub mod operations;
pub mod query;
pub mod quota;
pub mod server;
pub mod store;
pub mod trace_context;

pub use config::Config;
pub use server::{Server, ServerError};

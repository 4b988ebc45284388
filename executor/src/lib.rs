//! The k8sworker executor: the only component that writes to Kubernetes,
//! and only in its own namespace.
//!
//! ```text
//! API server ──watches (one paginated list per kind at start)──▶ cache
//! planner ──Observe──▶ observe (from the cache, no API call)
//!         ──Apply────▶ plan::validate ─▶ precondition::check_all ─▶ apply::execute ─▶ health::wait
//!                      (no API call)      (the cache; refuse if     (dry_run::check,   (watches; none
//!                                          stale or not owned)       then SSA, deletes, when nothing
//!                                                                    scale, in waves)   was written and
//!                                                                                       the cache shows
//!                                                                                       it settled)
//!         ◀──────────── one ApplyEvent per step, then the Ack (cached by plan id)
//!         ──FetchLogs─▶ logs
//! ```
//!
//! Every API call goes through [`client::KubeClients`]: a client-side rate
//! limit, a count per operation ([`calls::ApiCalls`]) and one span per call.
//! The pure parts ([`plan`], [`precondition::verdict`], [`health::assess`],
//! [`calls::classify`]) hold the decisions and are unit-tested without a
//! cluster; the rest is proven against a real API server in `tests/`.
//! During a deploy's health wait, `rollout` replaces the pods of a previous
//! revision that fail to start, which the StatefulSet controller never does
//! (which pods: `k8sworker_core::rollout`).

#![warn(missing_docs)]

pub mod ack_cache;
mod apply;
pub mod cache;
pub mod calls;
pub mod client;
pub(crate) mod dry_run;
pub mod error;
pub mod health;
pub mod kinds;
pub mod logs;
pub mod metrics;
pub mod observe;
pub mod plan;
pub mod precondition;
pub mod rbac;
mod reduce;
mod rollout;
pub mod server;
mod write;

pub use error::Error;
pub use server::{ExecutorConfig, ExecutorService, serve};

/// Where a pod finds its own namespace.
pub const POD_NAMESPACE_FILE: &str = "/var/run/secrets/kubernetes.io/serviceaccount/namespace";

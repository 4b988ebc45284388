//! The gateway: pulls the workitems of one K8s cluster from the control
//! plane, has the planner carry them out, and reports the outcome.
//!
//! ```text
//! control plane ──claim (lease)──▶ workitem ──task()──▶ Planner.Execute ──▶ outcome::decide
//!       ▲                                  (lease renewed meanwhile)              │
//!       └────────── complete (installation record) | fail | release ◀─────────────┘
//! ```
//!
//! Against a server without the claim protocol (`--protocol rest`, or
//! `auto` without a version endpoint) the claim is a listing of
//! `k8sworkitems` and a `PENDING` mark, and the report is the installation
//! record's upsert and the workitem's delete or status ([`rest`]); the
//! processing between is the same.
//!
//! [`config`] is the command line; [`workitem`] reads a claim and builds
//! the planner request; [`outcome`] maps the planner's answer to the report;
//! [`rest`] is the documented-REST protocol's queries and records;
//! [`logs`] names fetchLogs documents; [`backoff`] is the polling schedule;
//! [`retry`] the in-place retries of passing planner errors; [`limit`] the
//! adaptive bound on workitems in flight. Those are pure but for the
//! limit's semaphore. The HTTP edge is `k8sworker-client` (the worker
//! protocol's types and its client); [`gateway`] is the loop that wires
//! them, with the lease, the trace and the shutdown.
//!
//! The gateway holds no Kubernetes credentials, only the control-plane token
//! (profile `k8sWorker__system`), which it never logs.

#![warn(missing_docs)]

pub mod backoff;
pub mod config;
pub mod gateway;
pub mod limit;
pub mod logs;
pub mod metrics;
pub mod outcome;
pub mod rest;
pub mod retry;
pub mod workitem;

pub use config::{AccessToken, ClaimMode, Config, Protocol};
pub use gateway::{Event, Gateway, GatewayError, Report, ServerInfo, Summary};

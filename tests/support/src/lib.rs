//! Test support for everything that claims to work with Kubernetes: it runs
//! against the real test cluster (`tests/cluster/`), never a mock.
//!
//! ```text
//! TestCluster::get()        attach (env file of tests/cluster/up.sh, or KUBECONFIG),
//!                           or start it once via up.sh
//! with_temp_ns(hint, test)  a fresh namespace per test; state dumped when the
//!                           test panics; deleted afterwards
//! ExecutorIdentity::create  deploy/rbac/executor-role.yaml in that namespace and a
//!                           TokenRequest token for its ServiceAccount
//! RunningExecutor::start    the executor in-process on 127.0.0.1:0, on its own
//!                           runtime, with that token and its certificate (mutual
//!                           TLS: only the planner's may call); kill() drops it mid-flight
//! pki::*                    the tests' CA and a certificate per identity
//! plans::*                  real plans: Observe through the executor, render + diff
//!                           with the planner's pure core
//! network::*                what Services and NetworkPolicies select, from
//!                           the objects (no traffic)
//! ```
//!
//! Cluster tests are `#[ignore]`d so that `cargo test` stays offline; run
//! them with `cargo test -p <crate> -- --ignored` once `tests/cluster/up.sh`
//! has run (or let the first test start the cluster).

#![warn(missing_docs)]

pub mod cluster;
pub mod executor;
pub mod identity;
pub mod jaeger;
pub mod namespace;
pub mod network;
pub mod pki;
pub mod plans;
pub mod wait;

pub use cluster::TestCluster;
pub use executor::RunningExecutor;
pub use identity::ExecutorIdentity;
pub use namespace::with_temp_ns;
pub use wait::{eventually, init_logging};

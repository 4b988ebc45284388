//! The executor against the real test cluster, running with a real
//! ServiceAccount token bound by the namespace-scoped RoleBinding of
//! `deploy/rbac/executor-role.yaml`; plans come from the planner's render
//! and diff. Run with `cargo test -p k8sworker-executor -- --ignored`.

mod all_or_nothing;
mod apply;
mod cache;
mod crash;
mod health;
mod immutable;
mod managers;
mod memory;
mod observe_logs;
mod policy;
mod process;
mod refusals;
mod rename;
mod rollout;
mod support;
mod tenants;
mod tls;

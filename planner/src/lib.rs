//! The planner: the `Planner` gRPC service and its CLI, on top of the pure
//! core (`k8sworker-core`) and the protocol (`k8sworker-proto`).
//!
//! [`execute`] owns the one loop that carries out an operation through a
//! namespace's executor (observe → plan → apply → bounded re-plan), against
//! the [`execute::Executor`] trait; [`grpc_executor`] implements that trait
//! over gRPC; [`service`] serves Render, Plan and Execute.

#![warn(missing_docs)]

pub mod execute;
pub mod grpc_executor;
pub mod metrics;
pub mod service;

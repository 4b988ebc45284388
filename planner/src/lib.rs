//! The planner's pure core and its gRPC edge.
//!
//! Data flows one way: a Vantiq deploy request ([`model`]) is checked
//! ([`validate`]), turned into the desired Kubernetes objects ([`render`]),
//! and compared with what an executor observed ([`diff`]) to give a
//! [`plan::Plan`]: an ordered list of steps, each bound to the state it was
//! computed from. None of these modules does I/O; they import neither tonic
//! nor kube and are tested as plain functions.
//!
//! With the `server` feature (the default), [`convert`] maps the core types to
//! and from the `k8sworker.v1` protocol and [`service`] serves them over gRPC
//! and drives executors; the binary adds the CLI.

pub mod component;
pub mod diff;
pub mod model;
pub mod names;
pub mod plan;
pub mod quantity;
pub mod render;
pub mod validate;

#[cfg(feature = "server")]
pub mod convert;
#[cfg(feature = "server")]
pub mod service;

//! The pure domain of k8sworker: what an installation is, what it becomes in
//! Kubernetes, and what an operation must change. No module here does I/O;
//! the crate depends on neither tokio, tonic, prost, kube, hyper, reqwest,
//! axum nor rusqlite, and everything is tested as plain functions.
//!
//! Data flows one way: a Vantiq deploy request ([`model`]) is checked
//! ([`validate`], its errors in [`invalid`]), turned into the desired
//! Kubernetes objects ([`render`], named by [`names`], labelled by
//! [`labels`]), and compared with what an executor observed ([`diff`]) to
//! give a [`plan::Plan`]: an ordered list of steps, each bound to the state it
//! was computed from. [`operation`] ties these together for each operation
//! (what to observe, what a deploy refuses, what verify reports).
//! [`immutable`] names the fields an update may not change, so a plan
//! changing one is refused before any write.
//! [`managed`] tells another field manager's harmless edit from drift.
//! [`owner`] decides which observed objects are a tenant's installation's.
//! [`resource_quota`] predicts a ResourceQuota refusal of pods that a dry
//! run of their StatefulSet cannot see.
//! [`preview`] renders a request for a person to read, secrets masked.
//! [`policy`] is what an executor lets into its namespace (Pod Security
//! Standards baseline and k8sworker's own rules); render never breaks it.
//! [`rollout`] names the pods a deploy must replace because the StatefulSet
//! controller never will (a previous revision's pod that fails to start).

#![warn(missing_docs)]

pub mod component;
pub mod diff;
pub mod immutable;
pub mod invalid;
pub mod kind;
pub mod labels;
pub mod managed;
pub mod model;
pub mod names;
pub mod observed;
pub mod operation;
pub mod owner;
pub mod plan;
pub mod policy;
pub mod preview;
pub mod quantity;
pub mod render;
pub mod resource_quota;
pub mod rollout;
pub mod validate;

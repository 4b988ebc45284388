//! The `k8sworker.v1` protocol between gateway, planner and executor.
//!
//! The `.proto` files under `proto/k8sworker/v1/` are the source of truth and
//! carry the documentation of every service, RPC and field; this crate only
//! compiles them (at build time, without `protoc`). Generated code is never
//! edited by hand.
//!
//! [`convert`] maps `k8sworker-core`'s domain types to and from these
//! messages: the protocol is the edge that owns the conversions, so the core
//! stays free of tonic and prost.
//!
//! `k8sworker.v1` only grows compatibly (`docs/upgrade.md`): the tests in
//! `tests/compat.rs` decode the bytes every release wrote and check that no
//! released field, enum value or RPC changed.

#![warn(missing_docs)]

pub mod convert;

/// The compiled `.proto` files of `k8sworker.v1`: an encoded
/// `google.protobuf.FileDescriptorSet` (decode it with
/// `prost_types::FileDescriptorSet`), with source info, as protox produced it
/// when this crate was built.
pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("k8sworker_v1");

/// Package `k8sworker.v1`.
pub mod v1 {
    #![allow(
        missing_docs,
        missing_debug_implementations,
        clippy::all,
        clippy::pedantic
    )]
    tonic::include_proto!("k8sworker.v1");
}

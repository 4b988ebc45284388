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

/// gRPC server reflection (`grpc.reflection.v1` and, for older clients such
/// as some `grpcurl` releases, `v1alpha`) for a server of `services` (full
/// names, e.g. `k8sworker.v1.Planner`, `grpc.health.v1.Health`), so that
/// `grpcurl list` and `describe` work without the `.proto` files. It lists
/// `services` and the two reflection services, and describes every symbol
/// of `k8sworker.v1` and of the encoded descriptor sets in `also` (the
/// health service's, for one).
///
/// # Errors
/// A descriptor set could not be decoded or names a file it lacks.
pub fn reflection(
    services: &[&str],
    also: &[&'static [u8]],
) -> Result<
    (
        tonic_reflection::server::v1::ServerReflectionServer<
            impl tonic_reflection::server::v1::ServerReflection,
        >,
        tonic_reflection::server::v1alpha::ServerReflectionServer<
            impl tonic_reflection::server::v1alpha::ServerReflection,
        >,
    ),
    tonic_reflection::server::Error,
> {
    const REFLECTION: [&str; 2] = [
        "grpc.reflection.v1.ServerReflection",
        "grpc.reflection.v1alpha.ServerReflection",
    ];
    let builder = || {
        let builder = also.iter().fold(
            tonic_reflection::server::Builder::configure()
                .register_encoded_file_descriptor_set(FILE_DESCRIPTOR_SET),
            |builder, set| builder.register_encoded_file_descriptor_set(set),
        );
        services
            .iter()
            .chain(&REFLECTION)
            .fold(builder, |builder, name| builder.with_service_name(*name))
    };
    Ok((builder().build_v1()?, builder().build_v1alpha()?))
}

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

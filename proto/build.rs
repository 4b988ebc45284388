//! Compiles `proto/k8sworker/v1/*.proto` with a pure-Rust protobuf compiler
//! (protox), so a fresh machine needs no `protoc`, and keeps the compiled
//! descriptors (`k8sworker_v1.bin` in `OUT_DIR`) for the crate's
//! `FILE_DESCRIPTOR_SET`.

use prost::Message as _;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let files = [
        "proto/k8sworker/v1/installation.proto",
        "proto/k8sworker/v1/plan.proto",
        "proto/k8sworker/v1/executor.proto",
        "proto/k8sworker/v1/planner.proto",
    ];
    for file in files {
        println!("cargo:rerun-if-changed={file}");
    }
    let descriptors = protox::compile(files, ["proto"])?;
    let out_dir = std::path::PathBuf::from(std::env::var("OUT_DIR")?);
    std::fs::write(
        out_dir.join("k8sworker_v1.bin"),
        descriptors.encode_to_vec(),
    )?;
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .compile_fds(descriptors)?;
    Ok(())
}

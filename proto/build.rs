//! Compiles `proto/k8sworker/v1/*.proto` with a pure-Rust protobuf compiler
//! (protox), so a fresh machine needs no `protoc`.

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
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .compile_fds(descriptors)?;
    Ok(())
}

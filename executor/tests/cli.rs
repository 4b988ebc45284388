//! The executor binary's refusals at start, before any Kubernetes call.

use std::process::Command;

#[test]
fn plaintext_off_loopback_is_refused_naming_the_flag() {
    for (args, flag, address) in [
        (
            ["--listen", "0.0.0.0:0", "--health-listen", "127.0.0.1:0"],
            "--listen",
            "0.0.0.0:0",
        ),
        // The health port's default (0.0.0.0:8081) is what a new user trips on.
        (
            ["--listen", "127.0.0.1:0", "--allowed-tenant", "acme/prod"],
            "--health-listen",
            "0.0.0.0:8081",
        ),
    ] {
        let out = Command::new(env!("CARGO_BIN_EXE_k8sworker-executor"))
            .arg("serve")
            .args(args)
            .args(["--namespace", "team-a", "--insecure-plaintext"])
            .env_remove("K8SWORKER_TLS_DIR")
            .env_remove("K8SWORKER_HEALTH_LISTEN")
            .env("RUST_BACKTRACE", "0")
            .output()
            .expect("the executor binary runs");
        assert!(!out.status.success(), "{args:?}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            stderr.contains(&format!("Error: {flag}\n"))
                && stderr.contains(&format!(
                    "--insecure-plaintext is allowed only on loopback, but {address} is not a loopback address"
                )),
            "{args:?}: {stderr}"
        );
    }
}

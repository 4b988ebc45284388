//! The tests' certificates: one CA per test process, made with the same
//! library as `xtask certs`, and one certificate per identity, issued on
//! first use. Every gRPC hop of the tests is mutual TLS with them.

use std::collections::HashMap;
use std::sync::{Mutex, OnceLock};

use k8sworker_proto::v1::executor_client::ExecutorClient;
use k8sworker_tls::generate::Pki;
use k8sworker_tls::{Identity, Tls};
use tonic::transport::{Channel, Endpoint};

struct Certificates {
    pki: Pki,
    issued: Mutex<HashMap<Identity, Tls>>,
}

fn certificates() -> &'static Certificates {
    static CERTIFICATES: OnceLock<Certificates> = OnceLock::new();
    CERTIFICATES.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("k8sworker-test-pki-{}", std::process::id()));
        Certificates {
            pki: Pki::new(dir).expect("the tests' CA"),
            issued: Mutex::default(),
        }
    })
}

/// The tests' CA and where it issues certificates.
pub fn pki() -> &'static Pki {
    &certificates().pki
}

/// `identity`'s certificate (issued by the tests' CA on first use).
pub fn tls(identity: &Identity) -> Tls {
    let certificates = certificates();
    let mut issued = certificates
        .issued
        .lock()
        .unwrap_or_else(|e| e.into_inner());
    issued
        .entry(identity.clone())
        .or_insert_with(|| certificates.pki.tls(identity).expect("certificate issued"))
        .clone()
}

/// The directory with `identity`'s `tls.crt`, `tls.key` and `ca.crt`
/// (what `--tls-dir` takes).
pub fn dir(identity: &Identity) -> std::path::PathBuf {
    tls(identity);
    pki().dir_of(identity)
}

/// A lazily connecting TLS channel to `endpoint`, presenting `caller`'s
/// certificate (none when `None`) and expecting the server to be `server`.
pub fn channel(endpoint: &str, caller: Option<&Identity>, server: Identity) -> Channel {
    let endpoint = Endpoint::from_shared(endpoint.to_owned()).expect("endpoint");
    match caller {
        Some(caller) => k8sworker_tls::channel(endpoint, Some(&tls(caller)), server),
        None => endpoint
            .connect_with_connector_lazy(tls(&Identity::Preview).anonymous_connector(server)),
    }
}

/// A client of the executor of `namespace` at `endpoint`, calling as
/// `caller` (the planner, or an attacker's certificate, or none).
pub fn executor_client(
    endpoint: &str,
    namespace: &str,
    caller: Option<&Identity>,
) -> ExecutorClient<Channel> {
    ExecutorClient::new(channel(endpoint, caller, Identity::executor(namespace)))
}

//! The plaintext health port: `grpc.health.v1` and nothing else, for the
//! kubelet's probes, which cannot present a client certificate. The gRPC
//! port itself is TLS only.

use tokio::net::TcpListener;
use tokio_stream::wrappers::TcpListenerStream;
use tonic_health::ServingStatus;

/// Serves `grpc.health.v1` on `listener`, reporting the server overall
/// (`""`) and each of `services` (e.g. `k8sworker.v1.Executor`) as serving,
/// until `shutdown` completes.
///
/// # Errors
/// The transport failed while serving.
pub async fn serve_health(
    listener: TcpListener,
    services: &[&str],
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), tonic::transport::Error> {
    let (reporter, service) = tonic_health::server::health_reporter();
    for name in services {
        reporter
            .set_service_status(*name, ServingStatus::Serving)
            .await;
    }
    tonic::transport::Server::builder()
        .add_service(service)
        .serve_with_incoming_shutdown(TcpListenerStream::new(listener), shutdown)
        .await
}

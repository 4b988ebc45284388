//! Connections: a listener's stream of accepted connections (TLS, or
//! plaintext on loopback), and a client connector that speaks TLS to the
//! identity it expects.
//!
//! Each accepted connection tells its requests about the peer
//! ([`PeerInfo`]: address and verified certificate chain); handshakes run
//! in their own tasks, so a slow or silent client never holds up the others.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use hyper_util::rt::TokioIo;
use rustls_pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_rustls::{TlsAcceptor, TlsConnector};
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::server::Connected;
use tonic::transport::{Channel, Endpoint};

use crate::identity::Identity;
use crate::material::{Tls, TlsError};
use crate::peer::PeerInfo;

/// How long a client may take to complete the TLS handshake.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// One accepted connection.
#[derive(Debug)]
pub enum Conn {
    /// Plaintext (loopback only).
    Plain(TcpStream),
    /// Mutual TLS.
    Tls(Box<tokio_rustls::server::TlsStream<TcpStream>>),
}

/// The accepted connections of a listener, for tonic's
/// `serve_with_incoming_shutdown`.
pub type Incoming = ReceiverStream<Result<Conn, io::Error>>;

/// Accepts connections on `listener`: with `tls`, each completes a TLS
/// handshake (failures are logged and dropped); without, plaintext. The
/// accepting task ends when the returned stream is dropped.
pub fn incoming(listener: TcpListener, tls: Option<Tls>) -> Incoming {
    let (sender, receiver) = mpsc::channel(64);
    tokio::spawn(async move {
        loop {
            let accepted = tokio::select! {
                accepted = listener.accept() => accepted,
                () = sender.closed() => return,
            };
            let (tcp, remote) = match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    tracing::warn!(%error, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            let _ = tcp.set_nodelay(true);
            match &tls {
                None => {
                    if sender.send(Ok(Conn::Plain(tcp))).await.is_err() {
                        return;
                    }
                }
                Some(tls) => {
                    let acceptor = TlsAcceptor::from(tls.server_config());
                    let sender = sender.clone();
                    tokio::spawn(async move {
                        match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                            Ok(Ok(stream)) => {
                                let _ = sender.send(Ok(Conn::Tls(Box::new(stream)))).await;
                            }
                            Ok(Err(error)) => {
                                tracing::warn!(%error, %remote, "TLS handshake refused");
                            }
                            Err(_) => tracing::warn!(%remote, "TLS handshake timed out"),
                        }
                    });
                }
            }
        }
    });
    ReceiverStream::new(receiver)
}

impl Connected for Conn {
    type ConnectInfo = PeerInfo;

    fn connect_info(&self) -> PeerInfo {
        match self {
            Conn::Plain(tcp) => PeerInfo {
                remote: tcp.peer_addr().ok(),
                certs: None,
            },
            Conn::Tls(stream) => {
                let (tcp, session) = stream.get_ref();
                PeerInfo {
                    remote: tcp.peer_addr().ok(),
                    certs: session.peer_certificates().map(|certs| {
                        Arc::new(certs.iter().map(|c| c.clone().into_owned()).collect())
                    }),
                }
            }
        }
    }
}

impl AsyncRead for Conn {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Conn::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Conn::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Conn {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Conn::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Conn::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Conn::Plain(s) => Pin::new(s).poll_flush(cx),
            Conn::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Conn::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Conn::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Conn::Plain(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            Conn::Tls(s) => Pin::new(s.as_mut()).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            Conn::Plain(s) => s.is_write_vectored(),
            Conn::Tls(s) => s.is_write_vectored(),
        }
    }
}

/// Opens TLS connections for a tonic channel, presenting the component's
/// certificate and accepting only a server that names `expected`. The
/// URI's host and port are where to connect; its scheme is ignored.
#[derive(Debug, Clone)]
pub struct Connector {
    tls: Tls,
    expected: Identity,
    present_certificate: bool,
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

impl tower::Service<http::Uri> for Connector {
    type Response = TokioIo<tokio_rustls::client::TlsStream<TcpStream>>;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, BoxError>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, uri: http::Uri) -> Self::Future {
        let tls = self.tls.clone();
        let expected = self.expected.clone();
        let present = self.present_certificate;
        Box::pin(async move {
            let host = uri
                .host()
                .ok_or_else(|| format!("`{uri}` has no host"))?
                .trim_start_matches('[')
                .trim_end_matches(']')
                .to_owned();
            let port = uri.port_u16().unwrap_or(match uri.scheme_str() {
                Some("https") => 443,
                _ => 80,
            });
            let tcp = TcpStream::connect((host.as_str(), port)).await?;
            let _ = tcp.set_nodelay(true);
            let name = ServerName::try_from(host)?;
            let stream = TlsConnector::from(tls.client_config_presenting(expected, present)?)
                .connect(name, tcp)
                .await?;
            Ok(TokioIo::new(stream))
        })
    }
}

impl Tls {
    /// A connector for a tonic channel to the server named `expected`.
    pub fn connector(&self, expected: Identity) -> Connector {
        Connector {
            tls: self.clone(),
            expected,
            present_certificate: true,
        }
    }

    /// A connector that verifies the server as [`Tls::connector`] does but
    /// presents no certificate of its own: an unauthenticated caller.
    pub fn anonymous_connector(&self, expected: Identity) -> Connector {
        Connector {
            present_certificate: false,
            ..self.connector(expected)
        }
    }
}

/// A lazily connecting channel to `endpoint`: over TLS to `expected` with
/// `tls`, plaintext without.
pub fn channel(endpoint: Endpoint, tls: Option<&Tls>, expected: Identity) -> Channel {
    match tls {
        Some(tls) => endpoint.connect_with_connector_lazy(tls.connector(expected)),
        None => endpoint.connect_lazy(),
    }
}

/// Checks that a plaintext listener is on loopback.
///
/// # Errors
/// [`TlsError::PlaintextNotLoopback`] for any other address.
pub fn plaintext_listen(address: SocketAddr) -> Result<(), TlsError> {
    if address.ip().is_loopback() {
        Ok(())
    } else {
        Err(TlsError::PlaintextNotLoopback(address.to_string()))
    }
}

/// Checks that a plaintext connection goes to loopback: the URL's host is
/// `localhost` or a loopback IP.
///
/// # Errors
/// [`TlsError::PlaintextNotLoopback`] for any other host, or none.
pub fn plaintext_url(url: &str) -> Result<(), TlsError> {
    let refused = || TlsError::PlaintextNotLoopback(url.to_owned());
    let uri: http::Uri = url.parse().map_err(|_| refused())?;
    let host = uri
        .host()
        .ok_or_else(refused)?
        .trim_start_matches('[')
        .trim_end_matches(']');
    let loopback = host == "localhost"
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback());
    if loopback { Ok(()) } else { Err(refused()) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plaintext_only_on_loopback() {
        assert!(plaintext_listen("127.0.0.1:50051".parse().unwrap()).is_ok());
        assert!(plaintext_listen("[::1]:50051".parse().unwrap()).is_ok());
        let refused = plaintext_listen("0.0.0.0:50051".parse().unwrap()).unwrap_err();
        assert!(
            refused.to_string().contains("only on loopback"),
            "{refused}"
        );
        assert!(plaintext_url("http://127.0.0.1:50052").is_ok());
        assert!(plaintext_url("http://localhost:50052").is_ok());
        assert!(plaintext_url("http://[::1]:50052").is_ok());
        for url in [
            "http://k8sworker-executor.team-a.svc:50052",
            "http://10.0.0.1:1",
            "http://0.0.0.0:1",
            "nonsense",
        ] {
            assert!(plaintext_url(url).is_err(), "{url}");
        }
    }
}

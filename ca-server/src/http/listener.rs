//! Accept loops for the HTTPS and plain-HTTP listeners, with graceful shutdown: on the signal,
//! stop accepting, let in-flight requests finish within a grace period, then return. Each listener
//! holds at most [`Limits::max_connections`] connections (later ones are closed as they arrive),
//! gives a client [`Limits::header_read_timeout`] to send each request's headers (which also ends
//! idle keep-alive connections), and bounds HTTP/2 streams per connection.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto::Builder;
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_rustls::TlsAcceptor;
use tower::ServiceExt as _;

use super::limit::Limits;

/// A TLS handshake that takes longer than this is dropped (slow-loris protection).
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Facts about the connection a request arrived on, available to handlers as an extension.
#[derive(Debug, Clone)]
pub struct ConnectionInfo {
    /// The peer's address.
    pub remote: SocketAddr,
    /// Whether the connection is TLS.
    pub tls: bool,
    /// The client certificate chain presented in the TLS handshake, leaf first (not yet trusted:
    /// the Vault `cert` auth method verifies it against its roles).
    pub peer_certificates: Vec<rustls::pki_types::CertificateDer<'static>>,
}

/// Serves `router` on `listener` until `shutdown` turns true, then drains connections for at most
/// `grace`. `tls` = None serves plain HTTP.
pub async fn serve(
    listener: TcpListener,
    tls: Option<Arc<rustls::ServerConfig>>,
    router: Router,
    mut shutdown: watch::Receiver<bool>,
    grace: Duration,
    limits: Limits,
) {
    let acceptor = tls.map(TlsAcceptor::from);
    let graceful = GracefulShutdown::new();
    let connections = Arc::new(tokio::sync::Semaphore::new(limits.max_connections.max(1)));
    let mut builder = Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(limits.max_concurrent_streams)
        .keep_alive_interval(Duration::from_secs(30))
        .keep_alive_timeout(Duration::from_secs(10));
    loop {
        let (stream, remote) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(conn) => conn,
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = shutdown.changed() => break,
        };
        let Ok(slot) = Arc::clone(&connections).try_acquire_owned() else {
            tracing::debug!(%remote, "connection limit reached: closing a new connection");
            drop(stream);
            continue;
        };
        let _ = stream.set_nodelay(true);
        let router = router.clone();
        let service_for = move |info: ConnectionInfo| {
            TowerToHyperService::new(router.clone().map_request(
                move |mut req: hyper::Request<hyper::body::Incoming>| {
                    req.extensions_mut().insert(info.clone());
                    req
                },
            ))
        };
        let builder = builder.clone();
        match &acceptor {
            Some(acceptor) => {
                let acceptor = acceptor.clone();
                let watcher = graceful.watcher();
                tokio::spawn(async move {
                    let tls_stream = match tokio::time::timeout(
                        HANDSHAKE_TIMEOUT,
                        acceptor.accept(stream),
                    )
                    .await
                    {
                        Ok(Ok(s)) => s,
                        Ok(Err(e)) => {
                            tracing::debug!(%remote, error = %e, "TLS handshake failed");
                            return;
                        }
                        Err(_) => return,
                    };
                    let peer_certificates = tls_stream
                        .get_ref()
                        .1
                        .peer_certificates()
                        .map(|c| c.iter().map(|d| d.clone().into_owned()).collect())
                        .unwrap_or_default();
                    let service = service_for(ConnectionInfo {
                        remote,
                        tls: true,
                        peer_certificates,
                    });
                    let conn = builder
                        .serve_connection_with_upgrades(TokioIo::new(tls_stream), service)
                        .into_owned();
                    if let Err(e) = watcher.watch(conn).await {
                        tracing::debug!(%remote, error = %e, "connection ended with an error");
                    }
                    drop(slot);
                });
            }
            None => {
                let service = service_for(ConnectionInfo {
                    remote,
                    tls: false,
                    peer_certificates: Vec::new(),
                });
                let conn = builder
                    .serve_connection_with_upgrades(TokioIo::new(stream), service)
                    .into_owned();
                let conn = graceful.watch(conn);
                tokio::spawn(async move {
                    if let Err(e) = conn.await {
                        tracing::debug!(%remote, error = %e, "connection ended with an error");
                    }
                    drop(slot);
                });
            }
        }
    }
    drop(listener);
    if tokio::time::timeout(grace, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("grace period over; closing remaining connections");
    }
}

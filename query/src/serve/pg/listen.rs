//! Postgres connections: the accept loop, TLS from PEM files, and the watch on each socket
//! that notices a client gone while its query runs.

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::{PgFactory, PgHandlers};
use crate::serve::http::AppState;
use crate::serve::ServeError;

/// Accepts Postgres connections on `listener` until `shutdown`.
pub(crate) async fn serve_pg(
    state: Arc<AppState>,
    listener: tokio::net::TcpListener,
    tls: Option<pgwire::tokio::TlsAcceptor>,
    shutdown: CancellationToken,
) {
    let handlers = Arc::new(PgFactory(Arc::new(PgHandlers::new(state))));
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            _ = shutdown.cancelled() => break,
        };
        let (socket, peer) = match accepted {
            Ok(a) => a,
            Err(e) => {
                tracing::warn!(error = %e, "postgres: accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let handlers = Arc::clone(&handlers);
        let tls = tls.clone();
        let shutdown = shutdown.clone();
        tokio::spawn(async move {
            let _open = handlers.0.state.metrics.connection("postgres");
            // pgwire reads the socket only between messages, so a client that dies while its
            // query runs would go unnoticed until the answer is written, which for an
            // aggregate over years of logs is the end of the work. A second handle on the
            // socket watches for the peer's FIN or RST; dropping the connection drops its
            // running query, whose admission cancels the work and records "disconnected".
            let (socket, watch) = match watch_handle(socket) {
                Ok(pair) => pair,
                Err(e) => {
                    tracing::warn!(%peer, error = %e, "postgres: cannot watch the connection");
                    return;
                }
            };
            tokio::select! {
                r = pgwire::tokio::process_socket(socket, tls, handlers) => {
                    if let Err(e) = r {
                        tracing::debug!(%peer, error = %e, "postgres connection ended with an error");
                    }
                }
                () = peer_closed(&watch) => {
                    tracing::debug!(%peer, "postgres: the client closed the connection");
                }
                // Graceful stop: connections idle or not are closed once the service stops.
                _ = shutdown.cancelled() => {}
            }
        });
    }
}

/// The socket, and a second handle on it (a duplicated descriptor) for [`peer_closed`].
fn watch_handle(
    socket: tokio::net::TcpStream,
) -> std::io::Result<(tokio::net::TcpStream, tokio::net::TcpStream)> {
    let socket = socket.into_std()?;
    let watch = socket.try_clone()?;
    Ok((
        tokio::net::TcpStream::from_std(socket)?,
        tokio::net::TcpStream::from_std(watch)?,
    ))
}

/// Resolves once the peer has closed or reset the connection, without reading any of the
/// bytes the protocol handler has yet to read: readiness is edge-triggered, so
/// after a wake-up for data that stays unread it waits for the next event, the FIN or RST
/// among them.
async fn peer_closed(watch: &tokio::net::TcpStream) {
    use tokio::io::Interest;
    loop {
        match watch.ready(Interest::READABLE).await {
            Ok(ready) if ready.is_read_closed() => return,
            Ok(_) => {
                // Bytes for pgwire (a pipelined message): clear the readiness, keep waiting.
                let _ = watch.try_io(Interest::READABLE, || {
                    Err::<(), _>(std::io::ErrorKind::WouldBlock.into())
                });
            }
            Err(_) => return,
        }
    }
}

/// TLS for `pg_listen` from PEM files: a certificate chain and its private key.
pub(crate) fn tls_acceptor(
    cert: &std::path::Path,
    key: &std::path::Path,
) -> Result<pgwire::tokio::TlsAcceptor, ServeError> {
    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::{CertificateDer, PrivateKeyDer};
    let config_err = |what: &str, e: &dyn std::fmt::Display| {
        ServeError::Config(format!("serve.pg_tls_{what}: {e}"))
    };
    let certs = CertificateDer::pem_file_iter(cert)
        .map_err(|e| config_err("cert", &format!("{}: {e}", cert.display())))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| config_err("cert", &format!("{}: {e}", cert.display())))?;
    if certs.is_empty() {
        return Err(config_err(
            "cert",
            &format!("{} holds no certificate", cert.display()),
        ));
    }
    let key = PrivateKeyDer::from_pem_file(key)
        .map_err(|e| config_err("key", &format!("{}: {e}", key.display())))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .and_then(|b| b.with_no_client_auth().with_single_cert(certs, key))
        .map_err(|e| config_err("key", &e))?;
    Ok(pgwire::tokio::TlsAcceptor::from(Arc::new(config)))
}

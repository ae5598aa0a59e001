//! HTTPS for the console: the certificate from PEM files (a `kubernetes.io/tls` Secret
//! mounted into the Pod) or, without them, a self-signed one made at start, and the
//! accept loop that serves the router over TLS.
//!
//! The ring crypto provider is passed explicitly (no process-wide default is needed).
//! A generated certificate's SHA-256 fingerprint is logged so that the first visitor can
//! check what the browser shows. This module never logs key material.

use std::{net::SocketAddr, path::Path, sync::Arc, time::Duration};

use anyhow::Context as _;
use axum::{Router, extract::ConnectInfo};
use hyper_util::{
    rt::{TokioExecutor, TokioIo, TokioTimer},
    server::{conn::auto, graceful::GracefulShutdown},
    service::TowerToHyperService,
};
use rustls::{
    ServerConfig,
    pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject},
};
use sha2::{Digest, Sha256};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tower::ServiceExt as _;

/// A client has this long to finish the TLS handshake: slow-loris connections do not
/// pile up.
pub const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// A client has this long to send a request's headers (HTTP/1).
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(30);
/// How long requests in flight may finish after shutdown starts; below Kubernetes'
/// default 30 s termination grace period.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(20);
/// Pause after a failed `accept` (typically out of file descriptors) instead of spinning.
const ACCEPT_ERROR_BACKOFF: Duration = Duration::from_millis(100);

/// The TLS material the console serves with.
#[derive(Debug)]
pub struct TlsMaterial {
    /// rustls server configuration (HTTP/2 and HTTP/1.1 offered).
    pub config: Arc<ServerConfig>,
    /// SHA-256 of the leaf certificate (DER), hex with colons.
    pub fingerprint: String,
}

/// Reads a certificate chain and key from PEM files.
pub fn from_files(cert: &Path, key: &Path) -> anyhow::Result<TlsMaterial> {
    let cert_pem = std::fs::read(cert)
        .with_context(|| format!("reading TLS certificate {}", cert.display()))?;
    let key_pem =
        std::fs::read(key).with_context(|| format!("reading TLS key {}", key.display()))?;
    from_pem(&cert_pem, &key_pem)
}

/// A self-signed certificate for `names` (the Service's DNS names, `localhost`, ...).
pub fn self_signed(names: Vec<String>) -> anyhow::Result<TlsMaterial> {
    let certified = rcgen::generate_simple_self_signed(names)
        .context("generating a self-signed certificate")?;
    from_pem(
        certified.cert.pem().as_bytes(),
        certified.key_pair.serialize_pem().as_bytes(),
    )
}

fn from_pem(cert_pem: &[u8], key_pem: &[u8]) -> anyhow::Result<TlsMaterial> {
    let certs = CertificateDer::pem_slice_iter(cert_pem)
        .collect::<Result<Vec<_>, _>>()
        .context("certificate PEM")?;
    let leaf = certs
        .first()
        .context("the certificate file holds no certificate")?;
    let fingerprint = Sha256::digest(leaf.as_ref())
        .iter()
        .map(|b| format!("{b:02X}"))
        .collect::<Vec<_>>()
        .join(":");
    let key = PrivateKeyDer::from_pem_slice(key_pem).context("private key PEM")?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .context("certificate and key do not fit together")?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(TlsMaterial {
        config: Arc::new(config),
        fingerprint,
    })
}

/// Serves `app` over TLS on `listener` until `shutdown` resolves, then lets requests in
/// flight finish for up to [`SHUTDOWN_GRACE`]. Each request carries the client's
/// address as [`ConnectInfo`], like `into_make_service_with_connect_info`.
pub async fn serve(
    listener: TcpListener,
    tls: Arc<ServerConfig>,
    app: Router,
    shutdown: impl std::future::Future<Output = ()> + Send,
) -> anyhow::Result<()> {
    let acceptor = TlsAcceptor::from(tls);
    let graceful = GracefulShutdown::new();
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT);
    let builder = Arc::new(builder);
    tokio::pin!(shutdown);
    loop {
        let (tcp, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(conn) => conn,
                Err(err) => {
                    tracing::warn!(error = %err, "accept failed");
                    tokio::time::sleep(ACCEPT_ERROR_BACKOFF).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let acceptor = acceptor.clone();
        let builder = Arc::clone(&builder);
        let service =
            app.clone()
                .map_request(move |request: hyper::Request<hyper::body::Incoming>| {
                    let mut request = request.map(axum::body::Body::new);
                    request
                        .extensions_mut()
                        .insert(ConnectInfo::<SocketAddr>(peer));
                    request
                });
        let watcher = graceful.watcher();
        tokio::spawn(async move {
            let stream =
                match tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                    Ok(Ok(stream)) => stream,
                    Ok(Err(err)) => {
                        tracing::debug!(%peer, error = %err, "TLS handshake failed");
                        return;
                    }
                    Err(_) => {
                        tracing::debug!(%peer, "TLS handshake timed out");
                        return;
                    }
                };
            let conn = builder.serve_connection_with_upgrades(
                TokioIo::new(stream),
                TowerToHyperService::new(service),
            );
            if let Err(err) = watcher.watch(conn.into_owned()).await {
                tracing::debug!(%peer, error = %err, "connection ended with an error");
            }
        });
    }
    drop(listener);
    if tokio::time::timeout(SHUTDOWN_GRACE, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("requests still running after the grace period; stopping anyway");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn self_signed_material_loads_and_has_a_fingerprint() -> anyhow::Result<()> {
        let material = self_signed(vec!["localhost".to_owned()])?;
        assert_eq!(material.fingerprint.len(), 32 * 3 - 1);
        assert!(material.config.alpn_protocols.contains(&b"h2".to_vec()));
        Ok(())
    }
}

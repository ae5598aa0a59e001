//! TLS: the rustls server configuration from the PEM files of the task's Secret.
//!
//! The ring crypto provider is chosen explicitly (no process-wide default is installed,
//! so this never races other users of rustls in a test binary). The worker needs no
//! root certificates: it does not verify clients by certificate, the bearer token
//! authenticates them, and the operator pins the worker's certificate.

use std::path::Path;
use std::sync::Arc;

use rustls::ServerConfig;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

use crate::error::{Error, Result};

/// Builds the server configuration from a certificate chain and a private key in PEM
/// files. ALPN offers HTTP/2 and HTTP/1.1.
pub fn server_config(cert_path: &Path, key_path: &Path) -> Result<Arc<ServerConfig>> {
    let cert_pem = read(cert_path, "TLS certificate")?;
    let key_pem = read(key_path, "TLS private key")?;
    server_config_from_pem(&cert_pem, &key_pem)
}

/// Like [`server_config`], from PEM bytes.
pub fn server_config_from_pem(cert_pem: &[u8], key_pem: &[u8]) -> Result<Arc<ServerConfig>> {
    let certs = CertificateDer::pem_slice_iter(cert_pem)
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(|e| Error::TlsMaterial(format!("certificate PEM: {e}")))?;
    if certs.is_empty() {
        return Err(Error::TlsMaterial(
            "the certificate file holds no certificate".into(),
        ));
    }
    let key = PrivateKeyDer::from_pem_slice(key_pem)
        .map_err(|e| Error::TlsMaterial(format!("private key PEM: {e}")))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(certs, key)?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

fn read(path: &Path, what: &'static str) -> Result<Vec<u8>> {
    std::fs::read(path).map_err(|source| Error::ReadFile {
        what,
        path: path.to_owned(),
        source,
    })
}

//! `WorkerClient`: the operator's side of the worker protocol (`hostplug_api::protocol`;
//! docs/architecture.md, "Contracts"), and the credentials it uses.
//!
//! Every worker has its own self-signed certificate and bearer token, made here and
//! stored in the node's Secret. The client trusts exactly that certificate (pinned by
//! its DER bytes; no CA, no host name, since Pods are dialled by IP) and sends the token
//! on every call. This module never logs the token or the key.

use std::sync::Arc;
use std::time::Duration;

use hostplug_api::disruption::{NodeInfo, RebootAnswer, RebootRequest};
use hostplug_api::protocol::{
    ARTIFACT_SIGNATURE_HEADER, ENGINE_HEADER, ErrorKind, InvokeError, InvokeOutcome, InvokeRequest,
    RefusedCall, read_invoke_answer,
};
use hostplug_host::SignedArtifact;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::WebPkiSupportedAlgorithms;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};

use crate::{Error, Result};

/// Random bytes in a worker token: 32 (256 bits), well above the worker's 16-byte
/// minimum, so guessing is hopeless.
const TOKEN_BYTES: usize = 32;
/// How long connecting to a worker may take: 5 s. Pods are on the cluster network (or
/// loopback); a worker that does not accept within 5 s is unreachable.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Deadline of the digest check and the upload: 60 s, enough to send a 32 MiB module
/// over a slow link and have the worker compile it.
const UPLOAD_TIMEOUT: Duration = Duration::from_secs(60);
/// Extra time the client waits beyond the invocation's own deadline, for the worker to
/// report the timeout itself (its message is better than ours).
const INVOKE_SLACK: Duration = Duration::from_secs(5);
/// Longest worker error message kept: 2 KiB. Messages end up in the task's status.
const MAX_ERROR_MESSAGE: usize = 2048;
/// Largest worker answer the operator reads: 4 MiB. A real answer carries at most the
/// host's output and diff cap (256 KiB together) and 4 KiB of log tail, JSON-escaped
/// (at most 6× for control characters): about 1.6 MiB. Anything larger comes from a
/// broken or hostile worker, and reading it whole would let one node's worker exhaust
/// the operator's memory, so the node fails instead.
pub const MAX_WORKER_RESPONSE_BYTES: usize = 4 << 20;

/// A worker's credentials, as kept in its Secret.
#[derive(Clone)]
pub struct Credentials {
    /// Bearer token.
    pub token: String,
    /// Certificate, PEM.
    pub cert_pem: String,
    /// Private key, PEM (only the worker needs it; kept for the Secret).
    pub key_pem: String,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials").finish_non_exhaustive()
    }
}

impl Credentials {
    /// Fresh credentials for the worker `name` (used as the certificate's DNS name).
    pub fn generate(name: &str) -> Result<Self> {
        let certified =
            rcgen::generate_simple_self_signed(vec![name.to_owned(), "hostplug-worker".into()])
                .map_err(Error::Certificate)?;
        let token: [u8; TOKEN_BYTES] = rand::random();
        Ok(Self {
            token: hex::encode(token),
            cert_pem: certified.cert.pem(),
            key_pem: certified.key_pair.serialize_pem(),
        })
    }
}

/// Why a node's call did not produce an [`InvokeOutcome`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CallError {
    /// The worker could not be reached or did not answer in time.
    Unreachable(String),
    /// The plugin ran and failed: the node's result, with its typed kind and the tail of
    /// what the plugin logged.
    Plugin(InvokeError),
    /// Every invocation slot of the worker stayed taken (503 `busy`); nothing ran.
    Busy(String),
    /// The worker refused the request or failed.
    Worker(String),
    /// The operator did not send the call: what it needed for it was missing (e.g. the
    /// task's registry credentials Secret went away after validation).
    NotSent(String),
    /// The node's disruption cycle (`spec.disruption`: drain, reboot) failed; why.
    Disruption(String),
}

impl std::fmt::Display for CallError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Unreachable(m) => write!(f, "worker unreachable: {m}"),
            Self::Plugin(e) => write!(f, "plugin failed ({}): {}", e.kind, e.message),
            Self::Busy(m) => write!(f, "worker busy: {m}"),
            Self::Worker(m) => write!(f, "worker error: {m}"),
            Self::NotSent(m) => write!(f, "not sent: {m}"),
            Self::Disruption(m) => write!(f, "disruption: {m}"),
        }
    }
}

impl From<RefusedCall> for CallError {
    fn from(refused: RefusedCall) -> Self {
        let RefusedCall {
            status,
            kind,
            message,
        } = refused;
        let message = truncate(&message);
        if kind == Some(ErrorKind::Busy) {
            return Self::Busy(message);
        }
        Self::Worker(match kind {
            Some(kind) => format!("{status} {kind}: {message}"),
            None => format!("{status}: {message}"),
        })
    }
}

/// A client for one worker.
#[derive(Debug, Clone)]
pub struct WorkerClient {
    http: reqwest::Client,
    base: String,
    token: String,
}

impl WorkerClient {
    /// A client for the worker at `ip:port` that trusts only `cert_pem`.
    pub fn new(ip: &str, port: i32, creds: &Credentials) -> Result<Self> {
        let pinned = CertificateDer::from_pem_slice(creds.cert_pem.as_bytes())
            .map_err(|e| Error::Tls(format!("worker certificate: {e}")))?;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let verifier = PinnedCert {
            der: pinned.into_owned(),
            algorithms: provider.signature_verification_algorithms,
        };
        let tls = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| Error::Tls(e.to_string()))?
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(verifier))
            .with_no_client_auth();
        let http = reqwest::Client::builder()
            .use_preconfigured_tls(tls)
            .connect_timeout(CONNECT_TIMEOUT)
            .no_proxy()
            .build()
            .map_err(|e| Error::Tls(e.to_string()))?;
        let host = if ip.contains(':') {
            format!("[{ip}]")
        } else {
            ip.to_owned()
        };
        Ok(Self {
            http,
            base: format!("https://{host}:{port}"),
            token: creds.token.clone(),
        })
    }

    /// Uploads the module unless the worker holds it already. With `precompiled` (the
    /// artifact the operator compiled, signed with this process's key), that is sent
    /// first so the worker need not compile; when the worker does not take it (another
    /// engine, another key), the module follows.
    /// Returns how the worker got it: `None` (held already), `Some(true)` (precompiled),
    /// `Some(false)` (module, compiled by the worker).
    pub async fn ensure_module(
        &self,
        digest_hex: &str,
        module: &[u8],
        precompiled: Option<&SignedArtifact>,
    ) -> Result<Option<bool>, CallError> {
        let url = format!("{}/v1/plugins/{digest_hex}", self.base);
        let head = self
            .http
            .head(&url)
            .bearer_auth(&self.token)
            .timeout(UPLOAD_TIMEOUT)
            .send()
            .await
            .map_err(transport)?;
        match head.status().as_u16() {
            200 => return Ok(None),
            404 => {}
            s => return Err(CallError::Worker(format!("HEAD {url} answered {s}"))),
        }
        if let Some(artifact) = precompiled {
            let put = self
                .http
                .put(format!("{url}/precompiled"))
                .bearer_auth(&self.token)
                .timeout(UPLOAD_TIMEOUT)
                .header("content-type", "application/octet-stream")
                .header(ENGINE_HEADER, &artifact.fingerprint)
                .header(ARTIFACT_SIGNATURE_HEADER, artifact.signature.to_string())
                .body(artifact.bytes.clone())
                .send()
                .await
                .map_err(transport)?;
            if put.status().is_success() {
                return Ok(Some(true));
            }
            let refused = worker_error(put).await;
            tracing::info!(error = %refused, "the worker did not take the precompiled module; sending the module");
        }
        let put = self
            .http
            .put(&url)
            .bearer_auth(&self.token)
            .timeout(UPLOAD_TIMEOUT)
            .header("content-type", "application/wasm")
            .body(module.to_vec())
            .send()
            .await
            .map_err(transport)?;
        if put.status().is_success() {
            Ok(Some(false))
        } else {
            Err(worker_error(put).await)
        }
    }

    /// Runs one invocation and returns its outcome; a plugin that ran and failed is
    /// [`CallError::Plugin`] with the worker's typed error.
    pub async fn invoke(&self, req: &InvokeRequest) -> Result<InvokeOutcome, CallError> {
        self.post_call("/v1/invoke", req, req.timeout_ms).await
    }

    /// `POST /v1/revert`: restores what a task's call changed on the worker's node;
    /// answered and read like [`invoke`](Self::invoke) (a refused revert is the node's
    /// `Plugin` failure).
    pub async fn revert(
        &self,
        req: &hostplug_api::protocol::RevertRequest,
    ) -> Result<InvokeOutcome, CallError> {
        self.post_call("/v1/revert", req, req.timeout_ms).await
    }

    /// The one way a call-like request (one that runs under the node lock within the
    /// request's own timeout and answers an [`InvokeOutcome`] or a typed failure) is
    /// sent: the deadline is the request's timeout plus [`INVOKE_SLACK`], the body is
    /// read capped, and a failure's message is truncated before it reaches a status.
    async fn post_call<R: serde::Serialize>(
        &self,
        route: &str,
        req: &R,
        timeout_ms: Option<u64>,
    ) -> Result<InvokeOutcome, CallError> {
        let deadline = Duration::from_millis(timeout_ms.unwrap_or(0)) + INVOKE_SLACK;
        let resp = self
            .http
            .post(format!("{}{route}", self.base))
            .bearer_auth(&self.token)
            .timeout(deadline)
            .json(req)
            .send()
            .await
            .map_err(transport)?;
        let status = resp.status().as_u16();
        let body = read_capped(resp).await?;
        match read_invoke_answer(status, &body)? {
            Ok(outcome) => Ok(outcome),
            Err(mut failure) => {
                failure.message = truncate(&failure.message);
                Err(CallError::Plugin(failure))
            }
        }
    }
}

impl WorkerClient {
    /// `GET /v1/node`: the node's boot ID.
    pub async fn node_info(&self) -> Result<NodeInfo, CallError> {
        let resp = self
            .http
            .get(format!("{}/v1/node", self.base))
            .bearer_auth(&self.token)
            .timeout(NODE_ROUTE_TIMEOUT)
            .send()
            .await
            .map_err(transport)?;
        if !resp.status().is_success() {
            return Err(worker_error(resp).await);
        }
        let body = read_capped(resp).await?;
        serde_json::from_slice(&body)
            .map_err(|e| CallError::Worker(format!("GET /v1/node answered no NodeInfo: {e}")))
    }

    /// `POST /v1/node/reboot`: asks the worker to reboot its node (the operator's own
    /// action; no plugin can reach it).
    pub async fn reboot_node(&self, req: &RebootRequest) -> Result<RebootAnswer, CallError> {
        let resp = self
            .http
            .post(format!("{}/v1/node/reboot", self.base))
            .bearer_auth(&self.token)
            .timeout(NODE_ROUTE_TIMEOUT)
            .json(req)
            .send()
            .await
            .map_err(transport)?;
        if !resp.status().is_success() {
            return Err(worker_error(resp).await);
        }
        let body = read_capped(resp).await?;
        serde_json::from_slice(&body).map_err(|e| {
            CallError::Worker(format!(
                "POST /v1/node/reboot answered no RebootAnswer: {e}"
            ))
        })
    }
}

/// Deadline of `GET /v1/node` and `POST /v1/node/reboot`: 10 s. Both answer at once
/// (the reboot is only queued with systemd); a node going down may not answer at all.
const NODE_ROUTE_TIMEOUT: Duration = Duration::from_secs(10);

fn transport(e: reqwest::Error) -> CallError {
    let mut msg = e.to_string();
    let mut src = std::error::Error::source(&e);
    while let Some(s) = src {
        msg.push_str(": ");
        msg.push_str(&s.to_string());
        src = s.source();
    }
    if e.is_timeout() {
        CallError::Unreachable(format!("timed out ({msg})"))
    } else {
        CallError::Unreachable(msg)
    }
}

/// A worker's answer, read up to [`MAX_WORKER_RESPONSE_BYTES`]; a larger one is refused
/// (as soon as it is seen to be larger, so no more than the cap is ever held).
async fn read_capped(mut resp: reqwest::Response) -> Result<Vec<u8>, CallError> {
    let too_large = || {
        CallError::Worker(format!(
            "the worker's answer is larger than {} MiB, which no hostplug worker sends; \
             the answer was dropped",
            MAX_WORKER_RESPONSE_BYTES >> 20
        ))
    };
    if resp
        .content_length()
        .is_some_and(|n| n > MAX_WORKER_RESPONSE_BYTES as u64)
    {
        return Err(too_large());
    }
    let mut body = Vec::new();
    while let Some(chunk) = resp.chunk().await.map_err(transport)? {
        if body.len() + chunk.len() > MAX_WORKER_RESPONSE_BYTES {
            return Err(too_large());
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// The error of a failed upload (an upload's answer is never a node's result).
async fn worker_error(resp: reqwest::Response) -> CallError {
    let status = resp.status().as_u16();
    let body = read_capped(resp).await.unwrap_or_default();
    match read_invoke_answer(status, &body) {
        Err(refused) => refused.into(),
        Ok(_) => CallError::Worker(format!("{status}: unexpected answer to an upload")),
    }
}

fn truncate(s: &str) -> String {
    crate::status::truncate_str(s, MAX_ERROR_MESSAGE)
}

/// Trusts exactly one certificate, whatever name or address was dialled.
#[derive(Debug)]
struct PinnedCert {
    der: CertificateDer<'static>,
    algorithms: WebPkiSupportedAlgorithms,
}

impl ServerCertVerifier for PinnedCert {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        if end_entity.as_ref() == self.der.as_ref() {
            Ok(ServerCertVerified::assertion())
        } else {
            Err(rustls::Error::InvalidCertificate(
                rustls::CertificateError::ApplicationVerificationFailure,
            ))
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_are_fresh_and_debug_hides_them() -> Result<()> {
        let a = Credentials::generate("t-node1")?;
        let b = Credentials::generate("t-node1")?;
        assert_ne!(a.token, b.token);
        assert_eq!(a.token.len(), TOKEN_BYTES * 2);
        assert!(a.cert_pem.starts_with("-----BEGIN CERTIFICATE-----"));
        assert!(!format!("{a:?}").contains(&a.token));
        WorkerClient::new("127.0.0.1", 8443, &a)?;
        Ok(())
    }

    /// A TLS server with `creds` on loopback that answers one request with `body_len`
    /// bytes of JSON (a string), chunked; it stops writing when the client goes away.
    async fn answering_worker(
        creds: &Credentials,
        body_len: usize,
    ) -> std::result::Result<u16, Box<dyn std::error::Error>> {
        use rustls::pki_types::PrivateKeyDer;
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let cert = CertificateDer::from_pem_slice(creds.cert_pem.as_bytes())?;
        let key = PrivateKeyDer::from_pem_slice(creds.key_pem.as_bytes())?;
        let config = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(vec![cert], key)?;
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let port = listener.local_addr()?.port();
        tokio::spawn(async move {
            let Ok((tcp, _)) = listener.accept().await else {
                return;
            };
            let Ok(mut tls) = acceptor.accept(tcp).await else {
                return;
            };
            // The request: headers, then Content-Length bytes.
            let mut got = Vec::new();
            let mut buf = [0u8; 4096];
            loop {
                let Ok(n) = tls.read(&mut buf).await else {
                    return;
                };
                if n == 0 {
                    return;
                }
                got.extend_from_slice(&buf[..n]);
                let text = String::from_utf8_lossy(&got).to_ascii_lowercase();
                if let Some(end) = text.find("\r\n\r\n") {
                    let len = text
                        .lines()
                        .find_map(|l| l.strip_prefix("content-length:"))
                        .and_then(|v| v.trim().parse::<usize>().ok())
                        .unwrap_or(0);
                    if got.len() >= end + 4 + len {
                        break;
                    }
                }
            }
            let head = "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n\
                        transfer-encoding: chunked\r\n\r\n";
            if tls.write_all(head.as_bytes()).await.is_err() {
                return;
            }
            let piece = vec![b'x'; 64 << 10];
            let mut body = vec![b'"'];
            let mut sent = 0;
            while sent < body_len {
                let n = piece.len().min(body_len - sent);
                body.extend_from_slice(&piece[..n]);
                sent += n;
                if sent >= body_len {
                    body.push(b'"');
                }
                let chunk = format!("{:x}\r\n", body.len());
                if tls.write_all(chunk.as_bytes()).await.is_err()
                    || tls.write_all(&body).await.is_err()
                    || tls.write_all(b"\r\n").await.is_err()
                {
                    return;
                }
                body.clear();
            }
            let _ = tls.write_all(b"0\r\n\r\n").await;
            let _ = tls.shutdown().await;
        });
        Ok(port)
    }

    fn request() -> InvokeRequest {
        InvokeRequest {
            digest: format!("sha256:{}", "0".repeat(64)),
            method: "read".into(),
            params: serde_json::json!({}),
            dry_run: false,
            timeout_ms: Some(10_000),
            invocation_id: None,
            registry_auth: None,
            systemd: None,
            access: None,
            etc_scope: None,
            on_change: Vec::new(),
            task: None,
        }
    }

    #[tokio::test]
    async fn an_answer_over_the_cap_fails_the_call()
    -> std::result::Result<(), Box<dyn std::error::Error>> {
        let creds = Credentials::generate("big")?;
        // 64 MiB announced chunk by chunk: the client stops at the cap.
        let port = answering_worker(&creds, 64 << 20).await?;
        let client = WorkerClient::new("127.0.0.1", i32::from(port), &creds)?;
        let err = client.invoke(&request()).await.err();
        let msg = err.as_ref().map(ToString::to_string).unwrap_or_default();
        assert!(
            matches!(err, Some(CallError::Worker(_))) && msg.contains("larger than 4 MiB"),
            "{err:?}"
        );
        // Under the cap the same answer is read whole (and is not an outcome).
        let port = answering_worker(&creds, 1 << 20).await?;
        let client = WorkerClient::new("127.0.0.1", i32::from(port), &creds)?;
        let err = client.invoke(&request()).await.err();
        let msg = err.as_ref().map(ToString::to_string).unwrap_or_default();
        assert!(!msg.contains("larger than"), "{msg}");
        Ok(())
    }
}

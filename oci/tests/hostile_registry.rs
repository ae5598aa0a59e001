//! The OCI client against a hostile registry on loopback: every answer body it could be
//! made to buffer — an error's, a manifest's, a token's, a blob's — is 64 MiB, sent with
//! a `Content-Length` and without one (until the connection closes). The client must read
//! only its cap of each and hang up, so a registry cannot exhaust the operator's memory;
//! the server counts what it managed to send before the client hung up.
//!
//! The registry is a few lines of HTTP/1.1 over a real socket, because no real registry
//! sends 64 MiB bodies on request.

use std::net::SocketAddr;
use std::time::Duration;

use hostplug_oci::{Credentials, Error, Reference, RegistryClient};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;

/// What the hostile registry sends as each oversized body.
const BODY_BYTES: u64 = 64 << 20;
/// Largest module the tests ask for.
const MODULE_LIMIT: u64 = 1 << 20;
/// How long a connection may take to end once the client has its answer.
const HANG_UP_TIMEOUT: Duration = Duration::from_secs(30);

/// How the body's end is marked.
#[derive(Debug, Clone, Copy)]
enum Framing {
    /// `Content-Length: 64 MiB`.
    Length,
    /// No length: the body ends when the connection closes.
    Close,
}

/// What one connection did.
#[derive(Debug)]
struct Sent {
    path: String,
    bytes: u64,
    /// Whether the whole 64 MiB went out, i.e. the client read it all.
    complete: bool,
}

struct Hostile {
    addr: SocketAddr,
    sent: mpsc::UnboundedReceiver<Sent>,
}

/// The start of every oversized body, so a message quoting it is recognisable; an ANSI
/// escape included, which must not reach a status message.
const BODY_START: &[u8] = b"{\"errors\":[{\"code\":\"UNKNOWN\",\"message\":\"\x1b[2Jflood ";

/// The valid manifest the blob case starts from: one Wasm layer of 100 bytes.
fn small_manifest() -> Vec<u8> {
    serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.wasm.config.v0+json",
                   "digest": format!("sha256:{}", "a".repeat(64)), "size": 10},
        "layers": [{"mediaType": "application/wasm",
                    "digest": format!("sha256:{}", "b".repeat(64)), "size": 100}],
    })
    .to_string()
    .into_bytes()
}

impl Hostile {
    async fn start(framing: Framing) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let (tx, sent) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            while let Ok((conn, _)) = listener.accept().await {
                let tx = tx.clone();
                tokio::spawn(async move {
                    if let Some(s) = serve(conn, addr, framing).await {
                        let _ = tx.send(s);
                    }
                });
            }
        });
        Self { addr, sent }
    }

    fn client(&self, credentials: Option<Credentials>) -> RegistryClient {
        RegistryClient::new(&self.addr.to_string(), true, credentials).expect("client")
    }

    fn reference(&self, repository: &str) -> Reference {
        format!("{}/{repository}:1", self.addr)
            .parse()
            .expect("reference")
    }

    /// The record of the connection that served `path`, once it has ended.
    async fn sent_for(&mut self, path: &str) -> Sent {
        tokio::time::timeout(HANG_UP_TIMEOUT, async {
            loop {
                let s = self.sent.recv().await.expect("server running");
                if s.path.starts_with(path) {
                    return s;
                }
            }
        })
        .await
        .unwrap_or_else(|_| panic!("the connection for {path} did not end within {HANG_UP_TIMEOUT:?}: the client neither read on nor hung up"))
    }
}

/// Answers one request on `conn`; `None` for a connection that sent no request.
async fn serve(mut conn: TcpStream, addr: SocketAddr, framing: Framing) -> Option<Sent> {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        if conn.read(&mut byte).await.ok()? == 0 || head.len() > 16 << 10 {
            return None;
        }
        head.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&head).into_owned();
    let path = head.split(' ').nth(1).unwrap_or_default().to_owned();
    let authorized = head.to_ascii_lowercase().contains("\r\nauthorization:");
    let length = match framing {
        Framing::Length => format!("Content-Length: {BODY_BYTES}\r\n"),
        Framing::Close => String::new(),
    };
    let status = if path.starts_with("/v2/error/") {
        "500 Internal Server Error"
    } else if path.starts_with("/v2/token-flood/") && !authorized {
        let answer = format!(
            "HTTP/1.1 401 Unauthorized\r\nWWW-Authenticate: Bearer realm=\"http://{addr}/token\",service=\"hostile\"\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
        );
        conn.write_all(answer.as_bytes()).await.ok()?;
        return None;
    } else if path.starts_with("/v2/blob-flood/") && path.contains("/manifests/") {
        let manifest = small_manifest();
        let answer = format!(
            "HTTP/1.1 200 OK\r\nContent-Type: application/vnd.oci.image.manifest.v1+json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
            manifest.len()
        );
        conn.write_all(answer.as_bytes()).await.ok()?;
        conn.write_all(&manifest).await.ok()?;
        return None;
    } else {
        "200 OK"
    };
    let answer = format!("HTTP/1.1 {status}\r\n{length}Connection: close\r\n\r\n");
    conn.write_all(answer.as_bytes()).await.ok()?;
    let mut chunk = vec![b'x'; 64 << 10];
    chunk[..BODY_START.len()].copy_from_slice(BODY_START);
    let mut bytes = 0u64;
    while bytes < BODY_BYTES {
        if conn.write_all(&chunk).await.is_err() {
            return Some(Sent {
                path,
                bytes,
                complete: false,
            });
        }
        bytes += chunk.len() as u64;
        chunk[..BODY_START.len()].fill(b'x');
    }
    let _ = conn.shutdown().await;
    Some(Sent {
        path,
        bytes,
        complete: true,
    })
}

/// The client hung up early: the server could not send the whole body.
fn assert_hung_up(sent: &Sent) {
    eprintln!(
        "{}: the server sent {} KiB of {} MiB ({})",
        sent.path,
        sent.bytes >> 10,
        BODY_BYTES >> 20,
        if sent.complete {
            "all of it"
        } else {
            "then the client hung up"
        }
    );
    assert!(
        !sent.complete && sent.bytes < BODY_BYTES / 2,
        "the client read {} bytes of {}: {sent:?}",
        sent.bytes,
        BODY_BYTES
    );
}

#[tokio::test]
async fn a_64_mib_error_body_is_not_buffered() {
    for framing in [Framing::Length, Framing::Close] {
        let mut registry = Hostile::start(framing).await;
        let e = registry
            .client(None)
            .manifest(&registry.reference("error/plugin"))
            .await
            .expect_err("HTTP 500");
        let Error::Registry { status, body, .. } = &e else {
            panic!("{framing:?}: not a registry error: {e}");
        };
        assert_eq!(*status, 500, "{e}");
        assert_hung_up(&registry.sent_for("/v2/error/").await);
        // The start of the body, for the reader, in at most 200 characters and without
        // the registry's control characters.
        assert!(
            body.starts_with("{\"errors\":[{\"code\":\"UNKNOWN\""),
            "{e}"
        );
        assert!(body.contains("flood"), "{e}");
        assert!(body.chars().count() <= 200, "{} characters", body.len());
        assert!(!body.chars().any(char::is_control), "{body:?}");
    }
}

#[tokio::test]
async fn oversized_manifest_token_and_blob_bodies_are_refused_unread() {
    for framing in [Framing::Length, Framing::Close] {
        let mut registry = Hostile::start(framing).await;

        // A manifest: capped at 256 KiB.
        let e = registry
            .client(None)
            .manifest(&registry.reference("manifest-flood/plugin"))
            .await
            .expect_err("manifest too large");
        assert!(matches!(e, Error::TooLarge { .. }), "{framing:?}: {e}");
        assert_hung_up(&registry.sent_for("/v2/manifest-flood/").await);

        // A bearer token (from the realm the registry names): capped at 64 KiB.
        let credentials = Credentials {
            username: "u".into(),
            password: "p".into(),
        };
        let e = registry
            .client(Some(credentials))
            .manifest(&registry.reference("token-flood/plugin"))
            .await
            .expect_err("token too large");
        assert!(matches!(e, Error::TooLarge { .. }), "{framing:?}: {e}");
        assert_hung_up(&registry.sent_for("/token").await);

        // A module layer: capped at the caller's limit whatever its descriptor says.
        let e = registry
            .client(None)
            .pull_wasm(&registry.reference("blob-flood/plugin"), MODULE_LIMIT)
            .await
            .expect_err("blob too large");
        assert!(matches!(e, Error::TooLarge { .. }), "{framing:?}: {e}");
        assert_hung_up(&registry.sent_for("/v2/blob-flood/plugin/blobs/").await);
    }
}

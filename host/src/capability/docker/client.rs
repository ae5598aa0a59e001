//! [`DockerClient`]: the docker import's client for one call — the policy checked, the
//! dry-run rule applied and the size limit enforced before anything is sent, then one
//! request over the socket ([`super::http`]).
//!
//! It must never send a request the policy refused, a mutation in a dry run, or a
//! header other than the ones [`check_headers`] lets through.

use std::io::BufReader;
use std::path::{Path, PathBuf};
use std::time::Instant;

use super::http::{self, Response};
use super::policy::{DockerPolicy, REGISTRY_AUTH_HEADER, check_headers};
use crate::capability::CapabilityError;

/// The docker import's client for one invocation.
#[derive(Debug, Clone)]
pub(crate) struct DockerClient {
    pub(super) socket: PathBuf,
    pub(super) policy: DockerPolicy,
    /// In a dry run only `GET` requests go out: the sandbox, not the plugin, keeps a
    /// dry run from changing the node.
    pub(super) read_only: bool,
    /// The node's image archive directory as mounted, for `save-archive` and
    /// `load-archive`; `None` refuses both.
    pub(super) archives: Option<PathBuf>,
}

impl DockerClient {
    pub(crate) fn new(socket: &Path, policy: DockerPolicy, read_only: bool) -> Self {
        Self {
            socket: socket.to_path_buf(),
            policy,
            read_only,
            archives: None,
        }
    }

    /// This client with the image archive directory `dir`.
    pub(crate) fn with_archives(mut self, dir: Option<&Path>) -> Self {
        self.archives = dir.map(Path::to_path_buf);
        self
    }

    /// One request, no later than `deadline`.
    pub(crate) fn request(
        &self,
        method: &str,
        path: &str,
        body: Option<&[u8]>,
        deadline: Instant,
    ) -> Result<Response, CapabilityError> {
        self.request_with_headers(method, path, &[], body, deadline)
    }

    /// One request with extra headers (see [`check_headers`]), no later than
    /// `deadline`. Errors never quote a header value.
    pub(crate) fn request_with_headers(
        &self,
        method: &str,
        path: &str,
        headers: &[(String, String)],
        body: Option<&[u8]>,
        deadline: Instant,
    ) -> Result<Response, CapabilityError> {
        self.policy.check(method, path)?;
        let content_type = check_headers(headers)?;
        if self.read_only && !super::policy::changes_nothing(method, path) {
            return Err(CapabilityError::denied(format!(
                "{method} is not allowed in a read-only call (a dry run, or a method that \
                 does not declare itself mutating): only GET requests and the login check \
                 POST /auth are"
            )));
        }
        let body = body.unwrap_or_default();
        if body.len() > self.policy.max_request_bytes {
            return Err(CapabilityError::denied(format!(
                "request body of {} bytes exceeds the limit of {} bytes",
                body.len(),
                self.policy.max_request_bytes
            )));
        }
        let deadline = deadline.min(Instant::now() + self.policy.timeout);
        let mut head = format!(
            "{method} /{}{path} HTTP/1.1\r\nHost: docker\r\nUser-Agent: hostplug\r\nAccept: application/json\r\nConnection: close\r\n",
            self.policy.api_version
        );
        if !body.is_empty() || matches!(method, "POST" | "PUT") {
            head.push_str(&format!(
                "Content-Type: {}\r\n",
                content_type.unwrap_or("application/json")
            ));
            head.push_str(&format!("Content-Length: {}\r\n", body.len()));
        }
        for (name, value) in headers {
            if name.eq_ignore_ascii_case(REGISTRY_AUTH_HEADER) {
                head.push_str(&format!("{REGISTRY_AUTH_HEADER}: {value}\r\n"));
            }
        }
        head.push_str("\r\n");
        let mut stream = http::connect(&self.socket, deadline)?;
        http::send(&mut stream, head.as_bytes(), deadline)?;
        http::send(&mut stream, body, deadline)?;
        let mut reader = BufReader::new(stream);
        http::read_response(
            &mut reader,
            method,
            deadline,
            self.policy.max_response_bytes,
        )
    }
}

#[cfg(test)]
mod tests {
    use std::io::{Read, Write};
    use std::time::Duration;

    use super::*;
    use crate::capability::docker::http::MAX_CHUNK_LINE_BYTES;

    /// Serves one connection on a fresh socket with `response`, after `delay`.
    fn serve(response: impl Into<Vec<u8>>, delay: Duration) -> (tempfile::TempDir, PathBuf) {
        let response = response.into();
        let dir = tempfile::tempdir().expect("tempdir");
        let socket = dir.path().join("d.sock");
        let listener = std::os::unix::net::UnixListener::bind(&socket).expect("bind");
        std::thread::spawn(move || {
            if let Ok((mut stream, _)) = listener.accept() {
                let mut buf = [0u8; 4096];
                let _ = stream.read(&mut buf);
                std::thread::sleep(delay);
                let _ = stream.write_all(&response);
            }
        });
        (dir, socket)
    }

    fn get(socket: &Path, policy: DockerPolicy) -> Result<Response, CapabilityError> {
        DockerClient::new(socket, policy, false).request(
            "GET",
            "/_ping",
            None,
            Instant::now() + Duration::from_secs(5),
        )
    }

    #[test]
    fn response_framings() {
        for (raw, body) in [
            (&b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nOK"[..], &b"OK"[..]),
            (
                b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3;x=y\r\nabc\r\n2\r\nde\r\n0\r\nTrailer: t\r\n\r\n",
                b"abcde",
            ),
            (b"HTTP/1.0 404 Not Found\r\n\r\nno such image", b"no such image"),
            (b"HTTP/1.1 204 No Content\r\n\r\n", b""),
        ] {
            let (_dir, socket) = serve(raw, Duration::ZERO);
            let r = get(&socket, DockerPolicy::images()).expect("response");
            assert_eq!(r.body, body, "{}", String::from_utf8_lossy(raw));
        }
    }

    /// A pull's progress stream: one JSON message per chunk, 20 000 of them (an image of
    /// many layers). The chunk-size lines add up to about 80 KiB, more than the head
    /// budget, and must not be charged to it. The server is a loopback stand-in for the
    /// daemon that writes the stream the way Docker does.
    #[test]
    fn a_long_chunked_progress_stream_is_read_whole() {
        const CHUNKS: usize = 20_000;
        let mut raw = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
        let mut body = Vec::new();
        for i in 0..CHUNKS {
            let msg = format!("{{\"status\":\"Downloading\",\"id\":\"{i:05}\"}}\n");
            raw.extend_from_slice(format!("{:x}\r\n{msg}\r\n", msg.len()).as_bytes());
            body.extend_from_slice(msg.as_bytes());
        }
        raw.extend_from_slice(b"0\r\n\r\n");
        let (_dir, socket) = serve(raw, Duration::ZERO);
        let r = get(&socket, DockerPolicy::images()).expect("the whole stream");
        assert_eq!(r.status, 200);
        assert_eq!(r.body.len(), body.len());
        assert_eq!(r.body, body);

        // One absurd chunk-size line is still refused.
        let mut raw = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n1".to_vec();
        raw.extend(std::iter::repeat_n(b';', 2 * MAX_CHUNK_LINE_BYTES));
        raw.extend_from_slice(b"\r\nx\r\n0\r\n\r\n");
        let (_dir, socket) = serve(raw, Duration::ZERO);
        let e = get(&socket, DockerPolicy::images()).expect_err("long chunk line");
        assert!(e.message().contains("chunk line"), "{e}");
    }

    #[test]
    fn oversized_and_slow_responses_fail() {
        let small = DockerPolicy {
            max_response_bytes: 4,
            timeout: Duration::from_millis(200),
            ..DockerPolicy::images()
        };
        for raw in [
            &b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n12345"[..],
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n3\r\ndef\r\n0\r\n\r\n",
            b"HTTP/1.1 200 OK\r\n\r\n123456789",
        ] {
            let (_dir, socket) = serve(raw, Duration::ZERO);
            let e = get(&socket, small.clone()).expect_err("oversized");
            assert!(e.message().contains("exceeds"), "{e}");
        }
        let (_dir, socket) = serve(b"HTTP/1.1 200 OK\r\n\r\n", Duration::from_secs(2));
        let started = Instant::now();
        let e = get(&socket, small).expect_err("slow");
        assert!(e.message().contains("timed out"), "{e}");
        assert!(started.elapsed() < Duration::from_secs(1));
        let e = get(
            Path::new("/nonexistent/docker.sock"),
            DockerPolicy::images(),
        )
        .expect_err("no socket");
        assert!(e.message().contains("docker socket"), "{e}");
        assert!(matches!(e, CapabilityError::Failed(_)), "{e}");
    }

    /// A stand-in daemon that counts the connections it gets and answers each `200 OK`.
    fn counting_daemon() -> (
        tempfile::TempDir,
        PathBuf,
        std::sync::Arc<std::sync::atomic::AtomicUsize>,
    ) {
        use std::sync::atomic::{AtomicUsize, Ordering};
        let dir = tempfile::tempdir().expect("tempdir");
        let socket = dir.path().join("d.sock");
        let listener = std::os::unix::net::UnixListener::bind(&socket).expect("bind");
        let count = std::sync::Arc::new(AtomicUsize::new(0));
        let seen = count.clone();
        std::thread::spawn(move || {
            for mut stream in listener.incoming().flatten() {
                seen.fetch_add(1, Ordering::SeqCst);
                let mut buf = [0u8; 4096];
                let _ = stream.read(&mut buf);
                let _ = stream.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}");
            }
        });
        (dir, socket, count)
    }

    /// The host, not the plugin, refuses: the request never reaches the socket.
    #[test]
    fn refused_requests_never_reach_the_daemon() {
        use std::sync::atomic::Ordering;
        let (_dir, socket, count) = counting_daemon();
        let deadline = || Instant::now() + Duration::from_secs(5);
        let client = DockerClient::new(&socket, DockerPolicy::images(), false);
        let e = client
            .request(
                "POST",
                "/images/create?fromSrc=http://evil.example/rootfs.tar&repo=registry.k8s.io/pause&tag=3.10",
                None,
                deadline(),
            )
            .expect_err("an import from a URL");
        assert!(
            matches!(&e, CapabilityError::Denied(m) if m.contains("fromSrc")),
            "{e}"
        );
        assert_eq!(count.load(Ordering::SeqCst), 0);

        // A dry run with the socket mounted: reads go out, no mutation does.
        let dry = DockerClient::new(&socket, DockerPolicy::images(), true);
        for (method, path) in [
            ("POST", "/images/create?fromImage=nginx&tag=1"),
            ("POST", "/images/nginx/tag?repo=x&tag=1"),
            ("DELETE", "/images/nginx?force=true"),
            ("POST", "/images/prune"),
            ("POST", "/images/nginx/push?tag=1"),
        ] {
            let e = dry
                .request(method, path, None, deadline())
                .expect_err("a mutation in a dry run");
            assert!(
                matches!(&e, CapabilityError::Denied(m) if m.contains("dry run")),
                "{e}"
            );
        }
        assert_eq!(count.load(Ordering::SeqCst), 0);
        let r = dry
            .request("GET", "/images/json?all=true", None, deadline())
            .expect("a read in a dry run");
        assert_eq!(r.status, 200);
        assert_eq!(count.load(Ordering::SeqCst), 1);
        // The login check stores nothing: a read-only call may send it.
        let r = dry
            .request("POST", "/auth", None, deadline())
            .expect("a login check in a read-only call");
        assert_eq!(r.status, 200);
        assert_eq!(count.load(Ordering::SeqCst), 2);
        // The same pull outside a dry run does go out.
        client
            .request(
                "POST",
                "/images/create?fromImage=nginx&tag=1",
                None,
                deadline(),
            )
            .expect("a pull");
        assert_eq!(count.load(Ordering::SeqCst), 3);
    }

    /// The header goes out as sent, after the host's own; a refused one never reaches
    /// the daemon.
    #[test]
    fn registry_auth_header_reaches_the_daemon() {
        let dir = tempfile::tempdir().expect("tempdir");
        let socket = dir.path().join("d.sock");
        let listener = std::os::unix::net::UnixListener::bind(&socket).expect("bind");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for mut stream in listener.incoming().flatten() {
                let mut buf = [0u8; 4096];
                let n = stream.read(&mut buf).unwrap_or(0);
                let _ = tx.send(String::from_utf8_lossy(&buf[..n]).into_owned());
                let _ = stream.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}");
            }
        });
        let client = DockerClient::new(&socket, DockerPolicy::images(), false);
        let deadline = Instant::now() + Duration::from_secs(5);
        let r = client
            .request_with_headers(
                "POST",
                "/images/r.example/app/push?tag=1",
                &[("X-Registry-Auth".into(), "eyJ9".into())],
                None,
                deadline,
            )
            .expect("a push");
        assert_eq!(r.status, 200);
        let head = rx.recv_timeout(Duration::from_secs(5)).expect("request");
        assert!(
            head.starts_with("POST /v1.41/images/r.example/app/push?tag=1 HTTP/1.1\r\n"),
            "{head}"
        );
        assert!(head.contains("\r\nX-Registry-Auth: eyJ9\r\n"), "{head}");
        let e = client
            .request_with_headers(
                "POST",
                "/images/r.example/app/push?tag=1",
                &[("Cookie".into(), "x".into())],
                None,
                deadline,
            )
            .expect_err("refused");
        assert!(matches!(e, CapabilityError::Denied(_)), "{e}");
        assert!(rx.recv_timeout(Duration::from_millis(200)).is_err());
    }
}

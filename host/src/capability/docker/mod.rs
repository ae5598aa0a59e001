//! The `docker` capability: the `docker` import, the Docker Engine API over a Unix
//! socket, allow-listed, with its policy and limits.
//!
//! [`DockerPolicy`] says which methods and paths a plugin may use (image endpoints by
//! default), how big requests and responses may be and how long a call may take.
//! `DockerClient` is a small blocking HTTP/1.1 client over `std::os::unix::net::UnixStream`
//! (one connection per call, `Connection: close`, chunked and content-length bodies).
//!
//! It must never reach anything but the configured socket, never send a path that the
//! policy did not allow (no `..`, no control characters, no header injection), and never
//! read more than the response cap into memory.

use std::io::{BufRead, BufReader, ErrorKind as IoKind, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Default request body cap of the docker import: 1 MiB (image endpoints take JSON
/// parameters or nothing).
pub const DEFAULT_DOCKER_MAX_REQUEST_BYTES: usize = 1 << 20;

/// Default response body cap of the docker import: 16 MiB (an image list of a busy node
/// is a few MiB; a pull's progress stream is long but the plugin only needs its end).
pub const DEFAULT_DOCKER_MAX_RESPONSE_BYTES: usize = 16 << 20;

/// Default time limit of one docker call: 120 s (pulling a large image). A call never
/// runs past the invocation's deadline either.
pub const DEFAULT_DOCKER_TIMEOUT: Duration = Duration::from_secs(120);

/// Docker Engine API version prefixed to every path: 1.41 is what Docker 20.10+ and
/// Podman 4 both serve.
pub const DEFAULT_DOCKER_API_VERSION: &str = "v1.41";

/// Cap on the response status line and headers together: 64 KiB, far above what a
/// Docker or Podman daemon sends (a few hundred bytes). Trailers of a chunked body are
/// charged to what is left of it.
const MAX_HEAD_BYTES: usize = 64 << 10;

/// Cap on one chunk-size line of a chunked body: 1 KiB. The line is a hex size and an
/// optional extension (daemons send none). It is charged per line, not to the head
/// budget: a pull streams one small chunk per progress message, tens of thousands of
/// them, and the number of chunks is already bounded by the body cap (every chunk but
/// the last holds at least one byte) and the call's deadline.
const MAX_CHUNK_LINE_BYTES: usize = 1 << 10;

/// Cap on a path (with its query) a plugin may send: 8 KiB, the usual server limit.
const MAX_PATH_BYTES: usize = 8 << 10;

/// One allowed method, path pattern and set of query keys. In a pattern, `{name}` stands
/// for one or more path segments (image names contain `/`, e.g. `library/nginx:1.27`);
/// every other segment matches literally. A request matches when its method and path
/// match and every key of its query string is one of `query` (values are not checked:
/// they are the route's parameters, e.g. the image to pull). Keys are compared as sent,
/// so a percent-encoded or `+`-spelt key never matches an allowed one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DockerRoute {
    /// HTTP method, upper case.
    pub method: String,
    /// Path pattern relative to the API version, e.g. `/images/{name}/json`.
    pub path: String,
    /// Query keys the route accepts; a request with any other key is refused. Empty:
    /// no query string at all.
    pub query: Vec<String>,
}

impl DockerRoute {
    /// A route for `method` (any case) and `path` that accepts no query keys.
    pub fn new(method: &str, path: &str) -> Self {
        Self {
            method: method.to_ascii_uppercase(),
            path: path.to_owned(),
            query: Vec::new(),
        }
    }

    /// This route, also accepting the query keys `keys`.
    #[must_use]
    pub fn with_query<'k>(mut self, keys: impl IntoIterator<Item = &'k str>) -> Self {
        self.query.extend(keys.into_iter().map(str::to_owned));
        self
    }

    fn matches_path(&self, method: &str, segments: &[&str]) -> bool {
        let pattern: Vec<&str> = self.path.split('/').skip(1).collect();
        self.method == method && segments_match(&pattern, segments)
    }

    /// The first query key this route does not accept, if any.
    fn refused_key<'q>(&self, query: &'q str) -> Option<&'q str> {
        query
            .split('&')
            .map(|pair| pair.split_once('=').map_or(pair, |(k, _)| k))
            .find(|key| !self.query.iter().any(|allowed| allowed == key))
    }
}

/// What the docker import may do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DockerPolicy {
    /// API version path prefix without slashes, e.g. `v1.41`.
    pub api_version: String,
    /// Allowed method + path patterns; everything else is answered `denied: …`.
    pub allow: Vec<DockerRoute>,
    /// Cap on a request body, in bytes.
    pub max_request_bytes: usize,
    /// Cap on a response body, in bytes.
    pub max_response_bytes: usize,
    /// Time limit of one call (also bounded by the invocation's deadline).
    pub timeout: Duration,
}

impl DockerPolicy {
    /// The image endpoints: list, inspect, pull, tag, remove, prune, push, plus ping,
    /// version and `/auth` (a login check). No containers, exec, volumes, networks,
    /// build, save, load or system calls.
    ///
    /// Query keys are allow-listed per route too: `POST /images/create` takes only
    /// `fromImage`, `tag` and `platform` (a pull), never `fromSrc`, `repo`, `message` or
    /// `changes`, which make the daemon import a rootfs from an arbitrary URL under any
    /// image name and would poison the node's image cache.
    pub fn images() -> Self {
        let allow = [
            ("GET", "/_ping", &[][..]),
            ("GET", "/version", &[]),
            (
                "GET",
                "/images/json",
                &["all", "filters", "digests", "shared-size"],
            ),
            ("GET", "/images/{name}/json", &[]),
            ("POST", "/images/create", &["fromImage", "tag", "platform"]),
            ("POST", "/images/{name}/tag", &["repo", "tag"]),
            ("DELETE", "/images/{name}", &["force", "noprune"]),
            ("POST", "/images/prune", &["filters"]),
            // Push to a registry (credentials in X-Registry-Auth) and check credentials
            // against a registry (`/auth`, credentials in the body).
            ("POST", "/images/{name}/push", &["tag"]),
            ("POST", "/auth", &[]),
        ]
        .into_iter()
        .map(|(m, p, q)| DockerRoute::new(m, p).with_query(q.iter().copied()))
        .collect();
        Self {
            api_version: DEFAULT_DOCKER_API_VERSION.to_owned(),
            allow,
            max_request_bytes: DEFAULT_DOCKER_MAX_REQUEST_BYTES,
            max_response_bytes: DEFAULT_DOCKER_MAX_RESPONSE_BYTES,
            timeout: DEFAULT_DOCKER_TIMEOUT,
        }
    }

    /// Checks `method` and `path` (with optional query) against the policy. The error
    /// is the message the plugin receives, starting with `denied:`.
    pub fn check(&self, method: &str, path: &str) -> Result<(), String> {
        validate_method(method)?;
        validate_path(path)?;
        let (path_only, query) = match path.split_once('?') {
            Some((p, q)) => (p, (!q.is_empty()).then_some(q)),
            None => (path, None),
        };
        let segments: Vec<&str> = path_only.split('/').skip(1).collect();
        let routes: Vec<&DockerRoute> = self
            .allow
            .iter()
            .filter(|r| r.matches_path(method, &segments))
            .collect();
        if routes.is_empty() {
            return Err(format!(
                "denied: {method} {path_only} is not allowed by the host's docker policy"
            ));
        }
        let Some(query) = query else {
            return Ok(());
        };
        let mut refused = None;
        for route in routes {
            match route.refused_key(query) {
                None => return Ok(()),
                Some(key) => refused = Some(key),
            }
        }
        Err(format!(
            "denied: query parameter {:?} of {method} {path_only} is not allowed by the host's docker policy",
            refused
                .unwrap_or_default()
                .chars()
                .take(40)
                .collect::<String>()
        ))
    }
}

impl DockerPolicy {
    /// Checks the policy itself: an API version without slashes, upper-case methods and
    /// patterns that start with `/`. The error names the field.
    pub fn validate(&self) -> Result<(), String> {
        if self.api_version.is_empty()
            || !self
                .api_version
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'.')
        {
            return Err(format!(
                "docker policy api_version {:?}: expected e.g. v1.41",
                self.api_version
            ));
        }
        for r in &self.allow {
            validate_method(&r.method)
                .map_err(|e| format!("docker policy allow {} {}: {e}", r.method, r.path))?;
            if !r.path.starts_with('/') || r.path.contains('?') {
                return Err(format!(
                    "docker policy allow {} {}: a path pattern starts with '/' and has no query",
                    r.method, r.path
                ));
            }
        }
        Ok(())
    }
}

impl Default for DockerPolicy {
    fn default() -> Self {
        Self::images()
    }
}

fn validate_method(method: &str) -> Result<(), String> {
    if method.is_empty() || method.len() > 16 || !method.bytes().all(|b| b.is_ascii_uppercase()) {
        return Err(format!(
            "denied: invalid HTTP method {:?}",
            method.chars().take(20).collect::<String>()
        ));
    }
    Ok(())
}

/// Refuses anything that could escape the matched route or the request line: non-ASCII,
/// control characters, spaces, backslashes, fragments, empty or dot segments and
/// percent-encoded dots.
fn validate_path(path: &str) -> Result<(), String> {
    let deny = |why: &str| Err(format!("denied: path {why}"));
    if path.len() > MAX_PATH_BYTES {
        return deny("too long");
    }
    if !path.starts_with('/') {
        return deny("must start with '/'");
    }
    if !path
        .bytes()
        .all(|b| b.is_ascii_graphic() && b != b'\\' && b != b'#')
    {
        return deny("contains a character that is not allowed");
    }
    let lower = path.to_ascii_lowercase();
    if lower.contains("%2e") || lower.contains("%00") || lower.contains("%5c") {
        return deny("contains an encoded dot, NUL or backslash");
    }
    let path_only = path.split('?').next().unwrap_or(path);
    if path_only
        .split('/')
        .skip(1)
        .any(|s| s.is_empty() || s == "." || s == "..")
    {
        return deny("contains an empty, '.' or '..' segment");
    }
    Ok(())
}

/// Matches path segments against a pattern where `{…}` matches one or more segments.
fn segments_match(pattern: &[&str], path: &[&str]) -> bool {
    match pattern.split_first() {
        None => path.is_empty(),
        Some((p, rest)) if p.starts_with('{') && p.ends_with('}') => {
            (1..=path.len()).any(|n| segments_match(rest, &path[n..]))
        }
        Some((p, rest)) => path
            .split_first()
            .is_some_and(|(s, path_rest)| s == p && segments_match(rest, path_rest)),
    }
}

/// A docker response as the plugin sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Response {
    pub status: u16,
    pub body: Vec<u8>,
}

/// The docker import's client for one invocation.
#[derive(Debug, Clone)]
pub(crate) struct DockerClient {
    socket: PathBuf,
    policy: DockerPolicy,
    /// In a dry run only `GET` requests go out: the sandbox, not the plugin, keeps a
    /// dry run from changing the node.
    read_only: bool,
    /// The node's image archive directory as mounted, for `save-archive` and
    /// `load-archive`; `None` refuses both.
    archives: Option<PathBuf>,
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

    /// One request, no later than `deadline`. Errors are messages for the plugin.
    pub(crate) fn request(
        &self,
        method: &str,
        path: &str,
        body: Option<&[u8]>,
        deadline: Instant,
    ) -> Result<Response, String> {
        self.request_with_headers(method, path, &[], body, deadline)
    }

    /// One request with extra headers (see [`check_headers`]), no later than
    /// `deadline`. Errors are messages for the plugin; they never quote a header value.
    pub(crate) fn request_with_headers(
        &self,
        method: &str,
        path: &str,
        headers: &[(String, String)],
        body: Option<&[u8]>,
        deadline: Instant,
    ) -> Result<Response, String> {
        self.policy.check(method, path)?;
        let content_type = check_headers(headers)?;
        if self.read_only && method != "GET" {
            return Err(format!(
                "denied: {method} is not allowed in a dry run (only GET requests are)"
            ));
        }
        let body = body.unwrap_or_default();
        if body.len() > self.policy.max_request_bytes {
            return Err(format!(
                "denied: request body of {} bytes exceeds the limit of {} bytes",
                body.len(),
                self.policy.max_request_bytes
            ));
        }
        let deadline = deadline.min(Instant::now() + self.policy.timeout);
        let mut stream = UnixStream::connect(&self.socket)
            .map_err(|e| format!("docker socket {}: {e}", self.socket.display()))?;
        let io_err = |e: std::io::Error| {
            if matches!(e.kind(), IoKind::WouldBlock | IoKind::TimedOut) {
                "docker call timed out".to_owned()
            } else {
                format!("docker socket: {e}")
            }
        };
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
        set_timeouts(&stream, deadline)?;
        stream.write_all(head.as_bytes()).map_err(io_err)?;
        stream.write_all(body).map_err(io_err)?;
        stream.flush().map_err(io_err)?;
        let mut reader = BufReader::new(stream);
        read_response(
            &mut reader,
            method,
            deadline,
            self.policy.max_response_bytes,
        )
    }
}

/// The header a push or a private pull carries its credentials in.
pub const REGISTRY_AUTH_HEADER: &str = "X-Registry-Auth";

/// Content types a plugin may send: JSON (the default) and a tar archive
/// (`POST /images/load`).
const ALLOWED_CONTENT_TYPES: [&str; 2] = ["application/json", "application/x-tar"];

/// Cap on an `X-Registry-Auth` value: 16 KiB, room for a base64url JSON of a long token.
const MAX_REGISTRY_AUTH_BYTES: usize = 16 << 10;

/// Checks a plugin's extra headers: at most one `X-Registry-Auth` (base64url characters
/// only, so nothing can end the header line) and at most one `Content-Type` from
/// [`ALLOWED_CONTENT_TYPES`]; names compare case-insensitively. Returns the content
/// type asked for. Errors start with `denied:` and never quote a value.
pub(crate) fn check_headers(headers: &[(String, String)]) -> Result<Option<&'static str>, String> {
    let mut content_type = None;
    let mut auth = false;
    for (name, value) in headers {
        if name.eq_ignore_ascii_case(REGISTRY_AUTH_HEADER) {
            if std::mem::replace(&mut auth, true) {
                return Err(format!("denied: header {REGISTRY_AUTH_HEADER} given twice"));
            }
            if value.is_empty()
                || value.len() > MAX_REGISTRY_AUTH_BYTES
                || !value
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'='))
            {
                return Err(format!(
                    "denied: header {REGISTRY_AUTH_HEADER} must be 1 to {MAX_REGISTRY_AUTH_BYTES} base64url characters"
                ));
            }
        } else if name.eq_ignore_ascii_case("content-type") {
            let allowed = ALLOWED_CONTENT_TYPES
                .into_iter()
                .find(|t| value.eq_ignore_ascii_case(t))
                .ok_or_else(|| {
                    format!(
                        "denied: Content-Type must be one of {}",
                        ALLOWED_CONTENT_TYPES.join(", ")
                    )
                })?;
            if content_type.replace(allowed).is_some() {
                return Err("denied: header Content-Type given twice".to_owned());
            }
        } else {
            return Err(format!(
                "denied: header {:?} is not allowed (only {REGISTRY_AUTH_HEADER} and Content-Type)",
                name.chars().take(40).collect::<String>()
            ));
        }
    }
    Ok(content_type)
}

fn remaining(deadline: Instant) -> Result<Duration, String> {
    let left = deadline.saturating_duration_since(Instant::now());
    if left.is_zero() {
        Err("docker call timed out".to_owned())
    } else {
        Ok(left)
    }
}

fn set_timeouts(stream: &UnixStream, deadline: Instant) -> Result<(), String> {
    let left = remaining(deadline)?;
    stream
        .set_read_timeout(Some(left))
        .and_then(|()| stream.set_write_timeout(Some(left)))
        .map_err(|e| format!("docker socket: {e}"))
}

/// Parses an HTTP/1.1 response from `r`: status line, headers, then a body framed by
/// chunked transfer-encoding, content-length or the end of the connection.
fn read_response(
    r: &mut BufReader<UnixStream>,
    method: &str,
    deadline: Instant,
    max_body: usize,
) -> Result<Response, String> {
    let head = read_head(r, deadline)?;
    let mut body = Vec::new();
    read_body(r, method, &head, deadline, max_body as u64, &mut body)?;
    Ok(Response {
        status: head.status,
        body,
    })
}

/// A response's status and headers (names lower case), and what is left of the head
/// budget for trailers.
struct Head {
    status: u16,
    headers: Vec<(String, String)>,
    budget: usize,
}

impl Head {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// Reads the status line and headers, skipping interim 1xx responses.
fn read_head(r: &mut BufReader<UnixStream>, deadline: Instant) -> Result<Head, String> {
    let mut head_budget = MAX_HEAD_BYTES;
    loop {
        let line = read_line(r, deadline, &mut head_budget)?;
        let mut parts = line.splitn(3, ' ');
        let version = parts.next().unwrap_or_default();
        let status: u16 = parts
            .next()
            .and_then(|s| s.parse().ok())
            .filter(|_| version.starts_with("HTTP/1."))
            .ok_or_else(|| format!("docker: malformed status line {:?}", truncate(&line)))?;
        let mut headers = Vec::new();
        loop {
            let h = read_line(r, deadline, &mut head_budget)?;
            if h.is_empty() {
                break;
            }
            let (name, value) = h
                .split_once(':')
                .ok_or_else(|| format!("docker: malformed header {:?}", truncate(&h)))?;
            headers.push((name.trim().to_ascii_lowercase(), value.trim().to_owned()));
        }
        if (100..200).contains(&status) {
            continue;
        }
        return Ok(Head {
            status,
            headers,
            budget: head_budget,
        });
    }
}

/// Where a response body goes: memory, or a file being written.
trait Sink {
    /// Bytes taken so far.
    fn taken(&self) -> u64;
    /// Takes `bytes`.
    fn put(&mut self, bytes: &[u8]) -> Result<(), String>;
}

impl Sink for Vec<u8> {
    fn taken(&self) -> u64 {
        self.len() as u64
    }
    fn put(&mut self, bytes: &[u8]) -> Result<(), String> {
        self.extend_from_slice(bytes);
        Ok(())
    }
}

/// Reads the body of the response `head` into `sink`, at most `max_body` bytes.
fn read_body(
    r: &mut BufReader<UnixStream>,
    method: &str,
    head: &Head,
    deadline: Instant,
    max_body: u64,
    sink: &mut dyn Sink,
) -> Result<(), String> {
    let mut head_budget = head.budget;
    let too_big = || format!("docker: response body exceeds the limit of {max_body} bytes");
    if method == "HEAD" || head.status == 204 || head.status == 304 {
        // no body
    } else if head
        .header("transfer-encoding")
        .is_some_and(|v| v.to_ascii_lowercase().contains("chunked"))
    {
        loop {
            let mut line_budget = MAX_CHUNK_LINE_BYTES;
            let line = read_line(r, deadline, &mut line_budget)?;
            let size_hex = line.split(';').next().unwrap_or_default().trim();
            let size = u64::from_str_radix(size_hex, 16)
                .map_err(|_| format!("docker: malformed chunk size {:?}", truncate(&line)))?;
            if size == 0 {
                // Trailers, then the final empty line.
                while !read_line(r, deadline, &mut head_budget)?.is_empty() {}
                break;
            }
            if sink.taken().saturating_add(size) > max_body {
                return Err(too_big());
            }
            read_exact(r, sink, size, deadline)?;
            let mut crlf = [0u8; 2];
            set_timeouts(r.get_ref(), deadline)?;
            r.read_exact(&mut crlf)
                .map_err(|e| format!("docker: {e}"))?;
            if &crlf != b"\r\n" {
                return Err("docker: malformed chunk terminator".to_owned());
            }
        }
    } else if let Some(len) = head.header("content-length") {
        let len: u64 = len
            .parse()
            .map_err(|_| format!("docker: malformed content-length {len:?}"))?;
        if len > max_body {
            return Err(too_big());
        }
        read_exact(r, sink, len, deadline)?;
    } else {
        // Until the connection closes.
        loop {
            set_timeouts(r.get_ref(), deadline)?;
            let buf = r.fill_buf().map_err(|e| format!("docker: {e}"))?;
            if buf.is_empty() {
                break;
            }
            if sink.taken().saturating_add(buf.len() as u64) > max_body {
                return Err(too_big());
            }
            sink.put(buf)?;
            let n = buf.len();
            r.consume(n);
        }
    }
    Ok(())
}

fn read_exact(
    r: &mut BufReader<UnixStream>,
    out: &mut dyn Sink,
    mut n: u64,
    deadline: Instant,
) -> Result<(), String> {
    while n > 0 {
        set_timeouts(r.get_ref(), deadline)?;
        let buf = r.fill_buf().map_err(|e| format!("docker: {e}"))?;
        if buf.is_empty() {
            return Err("docker: connection closed in the middle of the body".to_owned());
        }
        let take = buf.len().min(usize::try_from(n).unwrap_or(usize::MAX));
        out.put(&buf[..take])?;
        r.consume(take);
        n -= take as u64;
    }
    Ok(())
}

/// Reads one CRLF- (or LF-) terminated line, charging its length to `budget`.
fn read_line(
    r: &mut BufReader<UnixStream>,
    deadline: Instant,
    budget: &mut usize,
) -> Result<String, String> {
    set_timeouts(r.get_ref(), deadline)?;
    let mut line = Vec::new();
    let limit = u64::try_from(*budget).unwrap_or(u64::MAX);
    let n = r
        .by_ref()
        .take(limit)
        .read_until(b'\n', &mut line)
        .map_err(|e| {
            if matches!(e.kind(), IoKind::WouldBlock | IoKind::TimedOut) {
                "docker call timed out".to_owned()
            } else {
                format!("docker: {e}")
            }
        })?;
    if n == 0 {
        return Err("docker: connection closed before the response was complete".to_owned());
    }
    if line.last() != Some(&b'\n') {
        return Err(format!(
            "docker: response head or chunk line exceeds its limit ({MAX_HEAD_BYTES} bytes for the head, {MAX_CHUNK_LINE_BYTES} per chunk line) or is cut off"
        ));
    }
    *budget -= n;
    line.pop();
    if line.last() == Some(&b'\r') {
        line.pop();
    }
    String::from_utf8(line).map_err(|_| "docker: response head is not UTF-8".to_owned())
}

fn truncate(s: &str) -> String {
    s.chars().take(100).collect()
}

/// Largest image archive `save-archive` writes and `load-archive` sends: 8 GiB. Node
/// images run to a few GiB; the bound keeps a plugin from filling the node's disk with
/// one call. The call's deadline bounds it too.
pub const MAX_ARCHIVE_BYTES: u64 = 8 << 30;

/// Longest archive file name: 128 bytes.
const MAX_ARCHIVE_NAME_BYTES: usize = 128;

/// What `save-archive` wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ArchiveInfo {
    pub bytes: u64,
    pub sha256: String,
    pub replaced: bool,
}

/// An archive file name: a plain name (letters, digits, `.`, `_`, `-`; not starting
/// with `.`) ending in `.tar`, so it can only ever name a file directly in the archive
/// directory. Errors start with `invalid:`.
pub(crate) fn check_archive_name(file: &str) -> Result<(), String> {
    let ok = file.len() <= MAX_ARCHIVE_NAME_BYTES
        && file.len() > ".tar".len()
        && file.ends_with(".tar")
        && !file.starts_with('.')
        && file
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "invalid: archive file {:?}: a plain file name of letters, digits, '.', '_' and '-', \
             not starting with '.', ending in .tar, at most {MAX_ARCHIVE_NAME_BYTES} bytes",
            file.chars().take(60).collect::<String>()
        ))
    }
}

/// Percent-encodes one path segment (an image reference holds `/` and `:`).
fn encode_segment(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for b in value.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Opens an existing file without following a symbolic link at its last component.
fn open_no_follow(path: &Path) -> std::io::Result<std::fs::File> {
    use std::os::unix::fs::OpenOptionsExt as _;
    std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(rustix::fs::OFlags::NOFOLLOW.bits() as i32)
        .open(path)
}

/// A file being written, hashed as it goes.
struct FileSink {
    file: std::fs::File,
    hasher: sha2::Sha256,
    taken: u64,
}

impl Sink for FileSink {
    fn taken(&self) -> u64 {
        self.taken
    }
    fn put(&mut self, bytes: &[u8]) -> Result<(), String> {
        use sha2::Digest as _;
        self.file
            .write_all(bytes)
            .map_err(|e| format!("writing the archive: {e}"))?;
        self.hasher.update(bytes);
        self.taken += bytes.len() as u64;
        Ok(())
    }
}

/// The sha256 of the regular file at `path` (not following a link), if there is one.
fn file_sha256(path: &Path) -> Option<(u64, String)> {
    use sha2::Digest as _;
    let mut f = open_no_follow(path).ok()?;
    if !f.metadata().ok()?.is_file() {
        return None;
    }
    let mut hasher = sha2::Sha256::new();
    let n = std::io::copy(&mut f, &mut hasher).ok()?;
    Some((n, format!("sha256:{}", hex::encode(hasher.finalize()))))
}

impl DockerClient {
    fn archive_dir(&self, what: &str) -> Result<&Path, String> {
        if self.read_only {
            return Err(format!(
                "denied: {what} is not allowed in a dry run (it changes the node)"
            ));
        }
        self.archives.as_deref().ok_or_else(|| {
            "denied: this worker has no image archive directory (it comes with the docker \
             capability when the node's /var/lib/hostplug/image-archives is mounted)"
                .to_owned()
        })
    }

    /// Connects and sends a request head (and nothing of a body yet).
    fn send_head(
        &self,
        method: &str,
        path: &str,
        extra: &str,
        deadline: Instant,
    ) -> Result<UnixStream, String> {
        validate_path(path)?;
        let mut stream = UnixStream::connect(&self.socket)
            .map_err(|e| format!("docker socket {}: {e}", self.socket.display()))?;
        let head = format!(
            "{method} /{}{path} HTTP/1.1\r\nHost: docker\r\nUser-Agent: hostplug\r\nConnection: close\r\n{extra}\r\n",
            self.policy.api_version
        );
        set_timeouts(&stream, deadline)?;
        stream
            .write_all(head.as_bytes())
            .map_err(|e| format!("docker socket: {e}"))?;
        Ok(stream)
    }

    /// `GET /images/{image}/get` streamed into `file` in the archive directory: written
    /// to a temporary file, hashed, then renamed over `file` unless `file` already held
    /// exactly these bytes (then nothing changes and `replaced` is false).
    pub(crate) fn save_archive(
        &self,
        image: &str,
        file: &str,
        deadline: Instant,
    ) -> Result<ArchiveInfo, String> {
        use sha2::Digest as _;
        let dir = self.archive_dir("save-archive")?.to_path_buf();
        check_archive_name(file)?;
        if image.is_empty() || image.len() > 512 {
            return Err("invalid: image must be 1 to 512 bytes".to_owned());
        }
        let deadline = deadline.min(Instant::now() + self.policy.timeout);
        let path = format!("/images/{}/get", encode_segment(image));
        let stream = self.send_head("GET", &path, "Accept: application/x-tar\r\n", deadline)?;
        let mut reader = BufReader::new(stream);
        let head = read_head(&mut reader, deadline)?;
        if head.status != 200 {
            let mut body = Vec::new();
            read_body(&mut reader, "GET", &head, deadline, 64 << 10, &mut body)?;
            let text = String::from_utf8_lossy(&body);
            let message = serde_json::from_str::<serde_json::Value>(&text)
                .ok()
                .and_then(|v| v["message"].as_str().map(str::to_owned))
                .unwrap_or_else(|| text.trim().to_owned());
            let kind = if head.status == 404 {
                "not-found: "
            } else {
                ""
            };
            return Err(format!(
                "{kind}docker: HTTP {}: {}",
                head.status,
                truncate(&message)
            ));
        }
        let tmp = dir.join(format!(
            ".{file}.{}.tmp",
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos())
                .unwrap_or_default()
        ));
        let created = {
            use std::os::unix::fs::OpenOptionsExt as _;
            std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&tmp)
                .map_err(|e| format!("creating {}: {e}", tmp.display()))?
        };
        let mut sink = FileSink {
            file: created,
            hasher: sha2::Sha256::new(),
            taken: 0,
        };
        let written = read_body(
            &mut reader,
            "GET",
            &head,
            deadline,
            MAX_ARCHIVE_BYTES,
            &mut sink,
        )
        .and_then(|()| {
            sink.file
                .sync_all()
                .map_err(|e| format!("writing the archive: {e}"))
        });
        if let Err(e) = written {
            let _ = std::fs::remove_file(&tmp);
            return Err(e);
        }
        let sha256 = format!("sha256:{}", hex::encode(sink.hasher.finalize()));
        let bytes = sink.taken;
        let target = dir.join(file);
        if file_sha256(&target).is_some_and(|(n, h)| n == bytes && h == sha256) {
            let _ = std::fs::remove_file(&tmp);
            return Ok(ArchiveInfo {
                bytes,
                sha256,
                replaced: false,
            });
        }
        std::fs::rename(&tmp, &target).map_err(|e| {
            let _ = std::fs::remove_file(&tmp);
            format!("saving {}: {e}", target.display())
        })?;
        Ok(ArchiveInfo {
            bytes,
            sha256,
            replaced: true,
        })
    }

    /// Sends `file` of the archive directory to `POST /images/load?quiet=1`; returns the
    /// daemon's answer (JSON lines such as `{"stream":"Loaded image: …"}`).
    pub(crate) fn load_archive(&self, file: &str, deadline: Instant) -> Result<String, String> {
        let dir = self.archive_dir("load-archive")?;
        check_archive_name(file)?;
        let path = dir.join(file);
        let mut f = open_no_follow(&path).map_err(|e| {
            if e.kind() == IoKind::NotFound {
                format!("not-found: no archive {file} in the image archive directory")
            } else {
                format!("opening {}: {e}", path.display())
            }
        })?;
        let meta = f
            .metadata()
            .map_err(|e| format!("reading {}: {e}", path.display()))?;
        if !meta.is_file() {
            return Err(format!("invalid: {file} is not a regular file"));
        }
        if meta.len() > MAX_ARCHIVE_BYTES {
            return Err(format!(
                "denied: {file} has {} bytes, more than the limit of {MAX_ARCHIVE_BYTES}",
                meta.len()
            ));
        }
        let deadline = deadline.min(Instant::now() + self.policy.timeout);
        let mut stream = self.send_head(
            "POST",
            "/images/load?quiet=1",
            &format!(
                "Accept: application/json\r\nContent-Type: application/x-tar\r\nContent-Length: {}\r\n",
                meta.len()
            ),
            deadline,
        )?;
        let mut left = meta.len();
        let mut buf = vec![0u8; 64 << 10];
        while left > 0 {
            set_timeouts(&stream, deadline)?;
            let n = f
                .read(&mut buf)
                .map_err(|e| format!("reading {}: {e}", path.display()))?;
            if n == 0 {
                return Err(format!("{file} shrank while it was being sent"));
            }
            let n = n.min(usize::try_from(left).unwrap_or(usize::MAX));
            stream.write_all(&buf[..n]).map_err(|e| {
                if matches!(e.kind(), IoKind::WouldBlock | IoKind::TimedOut) {
                    "docker call timed out".to_owned()
                } else {
                    format!("docker socket: {e}")
                }
            })?;
            left -= n as u64;
        }
        stream.flush().map_err(|e| format!("docker socket: {e}"))?;
        let mut reader = BufReader::new(stream);
        let r = read_response(
            &mut reader,
            "POST",
            deadline,
            self.policy.max_response_bytes,
        )?;
        let text = String::from_utf8_lossy(&r.body).into_owned();
        if r.status != 200 {
            let message = serde_json::from_str::<serde_json::Value>(&text)
                .ok()
                .and_then(|v| v["message"].as_str().map(str::to_owned))
                .unwrap_or_else(|| text.trim().to_owned());
            return Err(format!("docker: HTTP {}: {}", r.status, truncate(&message)));
        }
        Ok(text)
    }
}

/// The `docker` import: refused without the capability, otherwise the client of this
/// call (policy, dry-run rule, deadline).
impl crate::bindings::hostplug::plugin::docker::Host for crate::plugin::StoreState {
    fn request(
        &mut self,
        method: String,
        path: String,
        body: Option<Vec<u8>>,
    ) -> Result<crate::bindings::DockerResponse, String> {
        let Some(client) = &self.docker else {
            return Err("denied: this plugin has no docker capability".to_owned());
        };
        client
            .request(&method, &path, body.as_deref(), self.deadline)
            .map(|r| crate::bindings::DockerResponse {
                status: r.status,
                body: r.body,
            })
    }

    fn request_with_headers(
        &mut self,
        method: String,
        path: String,
        headers: Vec<(String, String)>,
        body: Option<Vec<u8>>,
    ) -> Result<crate::bindings::DockerResponse, String> {
        let Some(client) = &self.docker else {
            return Err("denied: this plugin has no docker capability".to_owned());
        };
        client
            .request_with_headers(&method, &path, &headers, body.as_deref(), self.deadline)
            .map(|r| crate::bindings::DockerResponse {
                status: r.status,
                body: r.body,
            })
    }

    fn save_archive(
        &mut self,
        image: String,
        file: String,
    ) -> Result<crate::bindings::DockerArchive, String> {
        let Some(client) = &self.docker else {
            return Err("denied: this plugin has no docker capability".to_owned());
        };
        client
            .save_archive(&image, &file, self.deadline)
            .map(|a| crate::bindings::DockerArchive {
                bytes: a.bytes,
                sha256: a.sha256,
                replaced: a.replaced,
            })
    }

    fn load_archive(&mut self, file: String) -> Result<String, String> {
        let Some(client) = &self.docker else {
            return Err("denied: this plugin has no docker capability".to_owned());
        };
        client.load_archive(&file, self.deadline)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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

    fn get(socket: &Path, policy: DockerPolicy) -> Result<Response, String> {
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
        assert!(e.contains("chunk line"), "{e}");
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
            assert!(e.contains("exceeds"), "{e}");
        }
        let (_dir, socket) = serve(b"HTTP/1.1 200 OK\r\n\r\n", Duration::from_secs(2));
        let started = Instant::now();
        let e = get(&socket, small).expect_err("slow");
        assert!(e.contains("timed out"), "{e}");
        assert!(started.elapsed() < Duration::from_secs(1));
        let e = get(
            Path::new("/nonexistent/docker.sock"),
            DockerPolicy::images(),
        )
        .expect_err("no socket");
        assert!(e.contains("docker socket"), "{e}");
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
        assert!(e.starts_with("denied:") && e.contains("fromSrc"), "{e}");
        assert_eq!(count.load(Ordering::SeqCst), 0);

        // A dry run with the socket mounted: reads go out, no mutation does.
        let dry = DockerClient::new(&socket, DockerPolicy::images(), true);
        for (method, path) in [
            ("POST", "/images/create?fromImage=nginx&tag=1"),
            ("POST", "/images/nginx/tag?repo=x&tag=1"),
            ("DELETE", "/images/nginx?force=true"),
            ("POST", "/images/prune"),
        ] {
            let e = dry
                .request(method, path, None, deadline())
                .expect_err("a mutation in a dry run");
            assert!(e.starts_with("denied:") && e.contains("dry run"), "{e}");
        }
        assert_eq!(count.load(Ordering::SeqCst), 0);
        let r = dry
            .request("GET", "/images/json?all=true", None, deadline())
            .expect("a read in a dry run");
        assert_eq!(r.status, 200);
        assert_eq!(count.load(Ordering::SeqCst), 1);
        // The same pull outside a dry run does go out.
        client
            .request(
                "POST",
                "/images/create?fromImage=nginx&tag=1",
                None,
                deadline(),
            )
            .expect("a pull");
        assert_eq!(count.load(Ordering::SeqCst), 2);
    }

    #[test]
    fn image_routes_are_allowed() {
        let p = DockerPolicy::images();
        for (m, path) in [
            ("GET", "/_ping"),
            ("GET", "/images/json?all=true"),
            ("GET", "/images/nginx/json"),
            ("GET", "/images/library/nginx:1.27/json"),
            ("GET", "/images/localhost:5000/team/app:v1/json"),
            ("POST", "/images/create?fromImage=nginx&tag=latest"),
            ("POST", "/images/nginx:1/tag?repo=mirror/nginx&tag=1"),
            ("DELETE", "/images/sha256:abcd?force=true"),
            ("POST", "/images/prune"),
            ("POST", "/images/prune?filters=%7B%7D"),
            (
                "POST",
                "/images/create?fromImage=nginx&tag=1&platform=linux%2Famd64",
            ),
            (
                "GET",
                "/images/json?all=false&filters=%7B%22dangling%22%3A%5B%22true%22%5D%7D",
            ),
            ("DELETE", "/images/nginx?force=false&noprune=false"),
            ("GET", "/version?"),
            ("POST", "/images/localhost:5000/team/app/push?tag=1.0"),
            ("POST", "/auth"),
        ] {
            assert_eq!(p.check(m, path), Ok(()), "{m} {path}");
        }
    }

    #[test]
    fn everything_else_is_denied() {
        let p = DockerPolicy::images();
        for (m, path) in [
            ("GET", "/containers/json"),
            ("POST", "/containers/create"),
            ("POST", "/images/load"),
            ("POST", "/build"),
            ("GET", "/images/../containers/json"),
            ("GET", "/images/x/../../containers/json"),
            ("GET", "/images/%2e%2e/json"),
            ("GET", "/images//json"),
            ("GET", "/images/json HTTP/1.1\r\nX: y"),
            ("GET", "images/json"),
            ("get", "/images/json"),
            ("DELETE", "/images"),
            ("GET", "/images/{name}/json#x"),
            // Query keys outside the route's list: an import from a URL under any name,
            // and keys spelt so that only the daemon would decode them.
            (
                "POST",
                "/images/create?fromSrc=http://evil.example/rootfs.tar&repo=registry.k8s.io/pause&tag=3.10",
            ),
            ("POST", "/images/create?fromImage=nginx&fromSrc=-"),
            ("POST", "/images/create?fromImage=nginx&tag=1&message=x"),
            ("POST", "/images/create?fromImage=nginx&changes=CMD%20sh"),
            ("POST", "/images/create?from%53rc=http://evil.example/x"),
            ("POST", "/images/create?fromImage=nginx&&fromSrc=x"),
            ("GET", "/_ping?x=1"),
            ("GET", "/images/nginx/json?x=1"),
            ("DELETE", "/images/nginx?force=true&filters=x"),
            ("POST", "/images/nginx/push?tag=1&all=true"),
            ("POST", "/auth?x=1"),
            ("GET", "/images/nginx/get"),
        ] {
            let r = p.check(m, path);
            assert!(
                r.as_ref().is_err_and(|e| e.starts_with("denied:")),
                "{m} {path}: {r:?}"
            );
        }
    }

    #[test]
    fn only_registry_auth_and_content_type_headers_pass() {
        let h = |pairs: &[(&str, &str)]| -> Vec<(String, String)> {
            pairs
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect()
        };
        assert_eq!(check_headers(&[]), Ok(None));
        assert_eq!(
            check_headers(&h(&[
                ("x-registry-auth", "eyJ1c2VybmFtZSI6InUifQ=="),
                ("Content-Type", "application/x-tar")
            ])),
            Ok(Some("application/x-tar"))
        );
        for bad in [
            h(&[("Authorization", "Bearer x")]),
            h(&[("X-Registry-Auth", "a\r\nX-Injected: 1")]),
            h(&[("X-Registry-Auth", "a b")]),
            h(&[("X-Registry-Auth", "")]),
            h(&[("X-Registry-Auth", "a"), ("x-registry-auth", "b")]),
            h(&[("Content-Type", "text/plain")]),
            h(&[("Host", "evil")]),
        ] {
            let e = check_headers(&bad).expect_err("refused");
            assert!(e.starts_with("denied:"), "{e}");
            assert!(!e.contains("X-Injected") && !e.contains("Bearer"), "{e}");
        }
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
        assert!(e.starts_with("denied:"), "{e}");
        assert!(rx.recv_timeout(Duration::from_millis(200)).is_err());
    }
}

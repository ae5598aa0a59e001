//! HTTP/1.1 over the daemon's Unix socket: one connection per call (`Connection:
//! close`), bodies framed by chunked transfer-encoding, content-length or the end of the
//! connection, every read and write bounded by the call's deadline.
//!
//! A small blocking client on `std::os::unix::net::UnixStream`: the import is
//! synchronous. It must never read more than the cap it is given into memory (a body
//! going to a file is bounded by the caller's [`Sink`]) and never wait past the deadline.
//! What goes out is decided by the caller; this module only frames and parses.

use std::io::{BufRead, BufReader, ErrorKind as IoKind, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::{Duration, Instant};

use crate::capability::CapabilityError;

/// Cap on the response status line and headers together: 64 KiB, far above what a
/// Docker or Podman daemon sends (a few hundred bytes). Trailers of a chunked body are
/// charged to what is left of it.
const MAX_HEAD_BYTES: usize = 64 << 10;

/// Cap on one chunk-size line of a chunked body: 1 KiB. The line is a hex size and an
/// optional extension (daemons send none). It is charged per line, not to the head
/// budget: a pull streams one small chunk per progress message, tens of thousands of
/// them, and the number of chunks is already bounded by the body cap (every chunk but
/// the last holds at least one byte) and the call's deadline.
pub(super) const MAX_CHUNK_LINE_BYTES: usize = 1 << 10;

/// A daemon's response as the plugin sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Response {
    pub status: u16,
    pub body: Vec<u8>,
}

/// A failure on the way to or from the daemon (never a refusal: those are decided
/// before anything is sent).
fn failed(message: impl Into<String>) -> CapabilityError {
    CapabilityError::failed(message)
}

/// An I/O error on the socket: a timeout says so, anything else names the socket.
pub(super) fn io_error(e: &std::io::Error) -> CapabilityError {
    if matches!(e.kind(), IoKind::WouldBlock | IoKind::TimedOut) {
        failed("docker call timed out")
    } else {
        failed(format!("docker socket: {e}"))
    }
}

/// Connects to `socket` with read and write timeouts up to `deadline`.
pub(super) fn connect(socket: &Path, deadline: Instant) -> Result<UnixStream, CapabilityError> {
    let stream = UnixStream::connect(socket)
        .map_err(|e| failed(format!("docker socket {}: {e}", socket.display())))?;
    set_timeouts(&stream, deadline)?;
    Ok(stream)
}

/// Writes `bytes` to the daemon, no later than `deadline`.
pub(super) fn send(
    stream: &mut UnixStream,
    bytes: &[u8],
    deadline: Instant,
) -> Result<(), CapabilityError> {
    set_timeouts(stream, deadline)?;
    stream.write_all(bytes).map_err(|e| io_error(&e))
}

fn remaining(deadline: Instant) -> Result<Duration, CapabilityError> {
    let left = deadline.saturating_duration_since(Instant::now());
    if left.is_zero() {
        Err(failed("docker call timed out"))
    } else {
        Ok(left)
    }
}

/// Bounds the next reads and writes on `stream` by what is left until `deadline`.
pub(super) fn set_timeouts(stream: &UnixStream, deadline: Instant) -> Result<(), CapabilityError> {
    let left = remaining(deadline)?;
    stream
        .set_read_timeout(Some(left))
        .and_then(|()| stream.set_write_timeout(Some(left)))
        .map_err(|e| failed(format!("docker socket: {e}")))
}

/// Parses an HTTP/1.1 response from `r`: status line, headers, then a body of at most
/// `max_body` bytes framed by chunked transfer-encoding, content-length or the end of the
/// connection.
pub(super) fn read_response(
    r: &mut BufReader<UnixStream>,
    method: &str,
    deadline: Instant,
    max_body: usize,
) -> Result<Response, CapabilityError> {
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
pub(super) struct Head {
    pub(super) status: u16,
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
pub(super) fn read_head(
    r: &mut BufReader<UnixStream>,
    deadline: Instant,
) -> Result<Head, CapabilityError> {
    let mut head_budget = MAX_HEAD_BYTES;
    loop {
        let line = read_line(r, deadline, &mut head_budget)?;
        let mut parts = line.splitn(3, ' ');
        let version = parts.next().unwrap_or_default();
        let status: u16 = parts
            .next()
            .and_then(|s| s.parse().ok())
            .filter(|_| version.starts_with("HTTP/1."))
            .ok_or_else(|| {
                failed(format!(
                    "docker: malformed status line {:?}",
                    truncate(&line)
                ))
            })?;
        let mut headers = Vec::new();
        loop {
            let h = read_line(r, deadline, &mut head_budget)?;
            if h.is_empty() {
                break;
            }
            let (name, value) = h
                .split_once(':')
                .ok_or_else(|| failed(format!("docker: malformed header {:?}", truncate(&h))))?;
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
pub(super) trait Sink {
    /// Bytes taken so far.
    fn taken(&self) -> u64;
    /// Takes `bytes`.
    fn put(&mut self, bytes: &[u8]) -> Result<(), CapabilityError>;
}

impl Sink for Vec<u8> {
    fn taken(&self) -> u64 {
        self.len() as u64
    }
    fn put(&mut self, bytes: &[u8]) -> Result<(), CapabilityError> {
        self.extend_from_slice(bytes);
        Ok(())
    }
}

/// Reads the body of the response `head` into `sink`, at most `max_body` bytes.
pub(super) fn read_body(
    r: &mut BufReader<UnixStream>,
    method: &str,
    head: &Head,
    deadline: Instant,
    max_body: u64,
    sink: &mut dyn Sink,
) -> Result<(), CapabilityError> {
    let mut head_budget = head.budget;
    let too_big = || {
        failed(format!(
            "docker: response body exceeds the limit of {max_body} bytes"
        ))
    };
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
            let size = u64::from_str_radix(size_hex, 16).map_err(|_| {
                failed(format!(
                    "docker: malformed chunk size {:?}",
                    truncate(&line)
                ))
            })?;
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
                .map_err(|e| failed(format!("docker: {e}")))?;
            if &crlf != b"\r\n" {
                return Err(failed("docker: malformed chunk terminator"));
            }
        }
    } else if let Some(len) = head.header("content-length") {
        let len: u64 = len
            .parse()
            .map_err(|_| failed(format!("docker: malformed content-length {len:?}")))?;
        if len > max_body {
            return Err(too_big());
        }
        read_exact(r, sink, len, deadline)?;
    } else {
        // Until the connection closes.
        loop {
            set_timeouts(r.get_ref(), deadline)?;
            let buf = r.fill_buf().map_err(|e| failed(format!("docker: {e}")))?;
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
) -> Result<(), CapabilityError> {
    while n > 0 {
        set_timeouts(r.get_ref(), deadline)?;
        let buf = r.fill_buf().map_err(|e| failed(format!("docker: {e}")))?;
        if buf.is_empty() {
            return Err(failed(
                "docker: connection closed in the middle of the body",
            ));
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
) -> Result<String, CapabilityError> {
    set_timeouts(r.get_ref(), deadline)?;
    let mut line = Vec::new();
    let limit = u64::try_from(*budget).unwrap_or(u64::MAX);
    let n = r
        .by_ref()
        .take(limit)
        .read_until(b'\n', &mut line)
        .map_err(|e| {
            if matches!(e.kind(), IoKind::WouldBlock | IoKind::TimedOut) {
                failed("docker call timed out")
            } else {
                failed(format!("docker: {e}"))
            }
        })?;
    if n == 0 {
        return Err(failed(
            "docker: connection closed before the response was complete",
        ));
    }
    if line.last() != Some(&b'\n') {
        return Err(failed(format!(
            "docker: response head or chunk line exceeds its limit ({MAX_HEAD_BYTES} bytes for the head, {MAX_CHUNK_LINE_BYTES} per chunk line) or is cut off"
        )));
    }
    *budget -= n;
    line.pop();
    if line.last() == Some(&b'\r') {
        line.pop();
    }
    String::from_utf8(line).map_err(|_| failed("docker: response head is not UTF-8"))
}

/// The daemon's own words in an error body: its JSON `message`, else the text.
pub(super) fn daemon_message(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    let message = serde_json::from_str::<serde_json::Value>(&text)
        .ok()
        .and_then(|v| v["message"].as_str().map(str::to_owned))
        .unwrap_or_else(|| text.trim().to_owned());
    truncate(&message)
}

/// The first 100 characters of `s`, for messages quoting what a daemon sent.
pub(super) fn truncate(s: &str) -> String {
    s.chars().take(100).collect()
}

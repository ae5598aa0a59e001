//! Output streams of files under /etc that remember why a write failed.
//!
//! wasmtime-wasi reports a failed stream write as `last-operation-failed` with the OS's
//! error inside, but the WASI preview 1 adapter that Rust's std writes go through turns
//! every such failure into `EIO` without asking `filesystem-error-code`: a plugin whose
//! write hit a full disk sees "I/O error" and nothing more. So the etc capability hands
//! out its file output streams wrapped in [`WatchedOutputStream`], which notes the first
//! failure of the call ([`FailedWrite`]: the file as the plugin names it, and the OS's
//! words); the call's logs and its error carry that note (`plugin.rs`).
//!
//! This module must never change what a stream does: every call goes to wasmtime-wasi's
//! stream unchanged, and its result back unchanged; the wrapper only looks at errors.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use wasmtime_wasi::p2::{DynOutputStream, OutputStream, Pollable, StreamError, StreamResult};

/// Longest note of a failed write, in characters: one line in a node's status message,
/// which also carries the plugin's own message; a path longer than that is cut.
const MAX_FAILED_WRITE_CHARS: usize = 300;

/// The first write to a file under /etc that failed in this call, as the host saw it.
/// Shared by the call's state and every stream it handed out.
#[derive(Debug, Default, Clone)]
pub(crate) struct FailedWrite(Arc<Mutex<Option<String>>>);

impl FailedWrite {
    /// Notes that writing `path` (relative to /etc; `None`: not known) failed with
    /// `error`, unless an earlier failure of this call is noted already.
    fn note(&self, path: Option<&Path>, error: &wasmtime::Error) {
        let mut first = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if first.is_some() {
            return;
        }
        let file = match path {
            Some(rel) => format!("/etc/{}", rel.display()),
            None => "a file in /etc".to_owned(),
        };
        *first = Some(one_line(&format!("writing {file} failed: {error}")));
    }

    /// The note, once the call has ended: `writing /etc/<file> failed: <the OS's words>`.
    pub(crate) fn get(&self) -> Option<String> {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

/// `text` as one line of at most [`MAX_FAILED_WRITE_CHARS`] characters: control
/// characters (a newline in a file name) become `?`, the rest is cut with `…`.
fn one_line(text: &str) -> String {
    let mut out: String = text
        .chars()
        .map(|c| if c.is_control() { '?' } else { c })
        .take(MAX_FAILED_WRITE_CHARS)
        .collect();
    if text.chars().count() > MAX_FAILED_WRITE_CHARS {
        out.pop();
        out.push('…');
    }
    out
}

/// A file's output stream, as wasmtime-wasi made it, with the file's path (relative to
/// /etc, where it was when the stream was opened) and the call's [`FailedWrite`].
pub(crate) struct WatchedOutputStream {
    inner: DynOutputStream,
    path: Option<PathBuf>,
    failed: FailedWrite,
}

impl WatchedOutputStream {
    pub(crate) fn new(inner: DynOutputStream, path: Option<PathBuf>, failed: FailedWrite) -> Self {
        Self {
            inner,
            path,
            failed,
        }
    }

    /// `result`, unchanged, after noting a failure of the last operation.
    fn watch<T>(&self, result: StreamResult<T>) -> StreamResult<T> {
        if let Err(StreamError::LastOperationFailed(e)) = &result {
            self.failed.note(self.path.as_deref(), e);
        }
        result
    }
}

#[wasmtime_wasi::async_trait]
impl OutputStream for WatchedOutputStream {
    fn write(&mut self, bytes: bytes::Bytes) -> StreamResult<()> {
        let r = self.inner.write(bytes);
        self.watch(r)
    }

    fn flush(&mut self) -> StreamResult<()> {
        let r = self.inner.flush();
        self.watch(r)
    }

    fn check_write(&mut self) -> StreamResult<usize> {
        let r = self.inner.check_write();
        self.watch(r)
    }

    async fn blocking_write_and_flush(&mut self, bytes: bytes::Bytes) -> StreamResult<()> {
        let r = self.inner.blocking_write_and_flush(bytes).await;
        self.watch(r)
    }

    fn write_zeroes(&mut self, nelem: usize) -> StreamResult<()> {
        let r = self.inner.write_zeroes(nelem);
        self.watch(r)
    }

    async fn write_ready(&mut self) -> StreamResult<usize> {
        let r = self.inner.write_ready().await;
        self.watch(r)
    }

    async fn cancel(&mut self) {
        self.inner.cancel().await;
    }
}

#[wasmtime_wasi::async_trait]
impl Pollable for WatchedOutputStream {
    async fn ready(&mut self) {
        self.inner.ready().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_failure_is_kept_as_one_bounded_line() {
        let failed = FailedWrite::default();
        let enospc = wasmtime::Error::from(std::io::Error::from_raw_os_error(28));
        failed.note(Some(Path::new(".a.conf.tmp")), &enospc);
        failed.note(Some(Path::new("b.conf")), &enospc);
        assert_eq!(
            failed.get().as_deref(),
            Some("writing /etc/.a.conf.tmp failed: No space left on device (os error 28)")
        );
        let long = FailedWrite::default();
        let name = format!("x\n{}", "y".repeat(1000));
        long.note(Some(Path::new(&name)), &enospc);
        let note = long.get().unwrap_or_default();
        assert_eq!(note.chars().count(), MAX_FAILED_WRITE_CHARS);
        assert!(
            note.starts_with("writing /etc/x?y") && note.ends_with('…'),
            "{note}"
        );
    }
}

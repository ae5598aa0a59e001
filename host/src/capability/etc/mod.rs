//! The `etc` capability: the node's /etc, preopened for WASI at `/etc` (read-only or
//! read-write), the `files` import for modes and owners, and the sensitive paths that
//! stay out of reach either way.
//!
//! * `sensitive.rs`: the policy ([`EtcPolicy`]): which paths are refused, for reads or
//!   for writes, unless a HostPlugin allows them explicitly.
//! * `wasi_fs.rs`: `wasi:filesystem/types` linked with a host implementation that checks
//!   every path call against the policy before (and every open after) handing it to
//!   wasmtime-wasi's own implementation.
//! * `files.rs`: the `files` import.
//!
//! Both import paths find out where a descriptor really is from the kernel
//! (`/proc/thread-self/fd`), so symbolic links planted in /etc lead nowhere the policy
//! refuses. This module must never grant more than the invocation's etc grant.

pub(crate) mod files;
pub(crate) mod sensitive;
pub(crate) mod wasi_fs;

use std::os::fd::{AsRawFd, BorrowedFd};
use std::path::{Path, PathBuf};

pub use sensitive::{DEFAULT_DENY, DEFAULT_DENY_WRITE, EtcPolicy};

/// Where the open descriptor `fd` really is, as the kernel sees it.
pub(crate) fn fd_path(fd: BorrowedFd<'_>) -> std::io::Result<PathBuf> {
    std::fs::read_link(format!("/proc/thread-self/fd/{}", fd.as_raw_fd()))
}

/// `path` relative to `root` (both real paths), or `None` when it is not inside.
pub(crate) fn rel_in_root(root: &Path, path: &Path) -> Option<PathBuf> {
    path.strip_prefix(root).ok().map(Path::to_path_buf)
}

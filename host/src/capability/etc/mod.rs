//! The `etc` capability: the node's /etc, preopened for WASI at `/etc` (read-only or
//! read-write), the `files` import for modes and owners, and the sensitive paths that
//! stay out of reach either way.
//!
//! * `sensitive.rs`: the policy ([`EtcPolicy`]): which paths are refused, for reads or
//!   for writes, unless a HostPlugin allows them explicitly.
//! * `wasi_fs.rs`: `wasi:filesystem/types` linked with a host implementation that checks
//!   every path call against the policy before (and every open after) handing it to
//!   wasmtime-wasi's own implementation.
//! * `streams.rs`: file output streams that note why a write failed (the plugin is told
//!   only "I/O error"), for the call's logs and error.
//! * `files.rs`: the `files` import.
//! * `record.rs`: the revert record of a mutating call (each touched path's prior state,
//!   noted by both imports before they change it) and the restore of one.
//! * here: the capability's per-call state ([`EtcState`]: the preopen, the guard and the
//!   `files` reach, prepared from the call's grant) and its view of a store
//!   ([`EtcView`]), on which both imports are implemented.
//!
//! Both import paths find out where a descriptor really is from the kernel
//! (`/proc/thread-self/fd`), so symbolic links planted in /etc lead nowhere the policy
//! refuses. This module must never grant more than the invocation's etc grant: no
//! preopen without one, read-only with a read grant and in every dry run.

pub(crate) mod files;
pub mod record;
pub(crate) mod sensitive;
pub(crate) mod streams;
pub(crate) mod wasi_fs;

use std::os::fd::{AsRawFd, BorrowedFd};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use wasmtime::component::{HasData, Linker};
use wasmtime_wasi::filesystem::WasiFilesystemCtxView;
use wasmtime_wasi::{FsPerms, WasiCtxBuilder};

pub use sensitive::{DEFAULT_DENY, DEFAULT_DENY_WRITE, EtcPolicy};

use self::files::EtcFiles;
use self::record::{ChangeRecord, Recorder};
use self::streams::FailedWrite;
use self::wasi_fs::EtcGuard;
use super::Call;
use super::log::LogSink;
use crate::{Error, ErrorKind, EtcAccess, InvokeError, Result};

/// The etc capability's state for one call: the guard every WASI path call passes and
/// the reach of the `files` import.
#[derive(Debug)]
pub(crate) struct EtcState {
    guard: EtcGuard,
    files: EtcFiles,
    /// The revert record of a mutating call with write access; `None` otherwise.
    recorder: Option<Recorder>,
    /// The first write through a file's output stream that failed in this call.
    pub(super) failed_write: FailedWrite,
}

impl EtcState {
    /// Prepare phase: preopens the granted etc directory as `/etc` in `wasi` (read-only
    /// for a read grant and in a dry run, nothing without a grant) and opens the guard
    /// on it.
    pub(crate) fn prepare(
        call: &Call<'_>,
        wasi: &mut WasiCtxBuilder,
    ) -> std::result::Result<Self, InvokeError> {
        let grants = call.grants;
        let perms = match (grants.etc, call.dry_run) {
            (EtcAccess::None, _) => None,
            (EtcAccess::Read, _) | (EtcAccess::Write, true) => Some(FsPerms::ReadOnly),
            (EtcAccess::Write, false) => Some(FsPerms::ReadWrite),
        };
        let mut etc_dir = None;
        if let Some(perms) = perms {
            let dir = grants.etc_dir.as_ref().ok_or_else(|| {
                InvokeError::new(
                    ErrorKind::Internal,
                    "the etc capability is granted but the host has no etc directory",
                )
            })?;
            wasi.preopened_dir(dir, "/etc", perms).map_err(|e| {
                InvokeError::new(
                    ErrorKind::Internal,
                    format!("cannot open the etc directory {}: {e}", dir.display()),
                )
            })?;
            etc_dir = Some(dir.as_path());
        }
        // The host's policy narrowed by this call's scope (its plugin's and policies'
        // /etc paths, its plugin's sensitive allowances).
        let policy = call
            .config
            .etc
            .scoped(grants.etc_scope.as_ref())
            .map_err(|e| InvokeError::new(ErrorKind::Denied, e))?;
        let policy = Arc::new(policy);
        let guard = EtcGuard::new(etc_dir, policy.clone()).map_err(|e| {
            InvokeError::new(
                ErrorKind::Internal,
                format!("cannot open the etc directory: {e}"),
            )
        })?;
        let files = EtcFiles::new(grants.etc, grants.etc_dir.as_deref(), call.dry_run, policy);
        let recorder = (perms == Some(FsPerms::ReadWrite) && !call.config.skip_change_records)
            .then(Recorder::default);
        Ok(Self {
            guard,
            files,
            recorder,
            failed_write: FailedWrite::default(),
        })
    }

    /// Notes, for the revert record, the path `path` below `dir_rel` (relative to /etc)
    /// that a call is about to change, where it really is (`follow`: through a final
    /// link). Nothing when this call records nothing.
    pub(crate) fn record_at(&mut self, dir_rel: &Path, path: &str, follow: bool, moves: bool) {
        let (Some(recorder), Some((root, _))) = (self.recorder.as_mut(), &self.guard.root) else {
            return;
        };
        if let Some(rel) = self.guard.real_target(dir_rel, path, follow) {
            recorder.note_use(root, &self.guard.policy, &rel, moves);
        }
    }

    /// Whether this call keeps a revert record.
    pub(crate) fn records(&self) -> bool {
        self.recorder.is_some()
    }

    /// The first write to a file under /etc that failed in this call, as the host saw it
    /// (`writing /etc/<file> failed: <the OS's words>`): the plugin itself was told only
    /// "I/O error" when it wrote through a stream.
    pub(crate) fn failed_write(&self) -> Option<String> {
        self.failed_write.get()
    }

    /// The revert record, once the call has ended; `None` for a call that keeps none
    /// (dry run, no write access).
    pub(crate) fn finish(self) -> Option<ChangeRecord> {
        let recorder = self.recorder?;
        let (root, _) = self.guard.root.as_ref()?;
        Some(recorder.finish(root))
    }
}

/// The etc capability's view of a store: wasmtime-wasi's filesystem view, this call's
/// [`EtcState`] and the call's logs (where refusals are noted). The guarded
/// `wasi:filesystem/types` (`wasi_fs.rs`) and the `files` import (`files.rs`) are
/// implemented on it, and see nothing else of the store.
pub(crate) struct EtcView<'a> {
    pub(crate) inner: WasiFilesystemCtxView<'a>,
    pub(crate) state: &'a mut EtcState,
    pub(crate) logs: &'a mut LogSink,
}

/// [`HasData`] of the etc capability, for `add_to_linker`.
#[derive(Debug)]
pub(crate) struct EtcCapability;

impl HasData for EtcCapability {
    type Data<'a> = EtcView<'a>;
}

/// Link phase: `wasi:filesystem/types` replaced by the guarded one (after the rest of
/// WASI is linked) and the `files` import, both on the view `view` projects out of the
/// store's data.
pub(crate) fn add_to_linker<T: Send + 'static>(
    linker: &mut Linker<T>,
    view: fn(&mut T) -> EtcView<'_>,
) -> Result<()> {
    linker.allow_shadowing(true);
    let guarded = wasmtime_wasi::p2::bindings::filesystem::types::add_to_linker::<T, EtcCapability>(
        linker, view,
    );
    linker.allow_shadowing(false);
    guarded.map_err(|e| Error::Engine(format!("linking the guarded filesystem: {e:#}")))?;
    crate::bindings::hostplug::plugin::files::add_to_linker::<T, EtcCapability>(linker, view)
        .map_err(|e| Error::Engine(format!("linking the files import: {e:#}")))
}

/// Where the open descriptor `fd` really is, as the kernel sees it.
pub(crate) fn fd_path(fd: BorrowedFd<'_>) -> std::io::Result<PathBuf> {
    std::fs::read_link(format!("/proc/thread-self/fd/{}", fd.as_raw_fd()))
}

/// `path` relative to `root` (both real paths), or `None` when it is not inside.
pub(crate) fn rel_in_root(root: &Path, path: &Path) -> Option<PathBuf> {
    path.strip_prefix(root).ok().map(Path::to_path_buf)
}

//! Files under the node's `/etc`: path checks, reads, atomic writes and backups.
//!
//! Inside the sandbox the node's /etc is preopened at `/etc` and `std::fs` works on it.
//! These helpers add what a careful plugin needs on top:
//!
//! - [`etc_path`] refuses, lexically, every path that does not stay under `/etc`. The
//!   sandbox refuses too (a path outside any preopen is not found, a `..` or a symlink
//!   leading out is denied); this is the first line of defence and gives a clear error.
//! - [`write_atomic`] writes a temporary file in the same directory and renames it over
//!   the target, so readers see the old or the new content, never a mix; the new file
//!   keeps the mode, owner and group of the one it replaces.
//! - [`write_atomic_if_unchanged`] compares the file with the content a change was
//!   computed from just before the rename, and does not rename when someone changed it
//!   meanwhile; [`edit_text`] then reads again and recomputes (up to
//!   [`MAX_EDIT_ATTEMPTS`] times) and reports a conflict after that, so a concurrent
//!   change is never silently overwritten. The compare and the rename are two steps:
//!   the worker's node lock keeps hostplug's own writers out of that window; the check
//!   catches the others (a person or a tool editing the file), except one landing in the
//!   microseconds between the two steps.
//! - [`stat`] and [`set_attributes`] read and set a file's mode, owner and group.
//!
//! # Modes and owners
//!
//! `wasi:filesystem` has no notion of Unix permissions or ownership
//! (`std::fs::set_permissions` and `std::os::unix` are not available on
//! `wasm32-wasip2`), so the host offers the `files` import for files under /etc:
//! [`stat`] needs the `etc` capability, [`set_attributes`] needs `etc: write` and is
//! refused in dry runs, and neither may set the setuid or setgid bits. A file created
//! through WASI gets the worker's defaults (mode `0666` less its umask, owned by the
//! worker's user); [`write_atomic`] therefore sets the mode, owner and group of the
//! file it replaces (or `0644` for a new file, or the mode asked for) on its temporary
//! file **before** writing any content into it, then renames it. Outside the host (in
//! native unit tests) the same helpers use `std::os::unix` directly.

use std::fs;
use std::io::{self, Write};
use std::path::{Component, Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use crate::{Error, Result};

/// The guest path at which the host preopens the node's /etc.
pub const ETC: &str = "/etc";

/// How many symbolic links [`resolve_symlinks`] follows before giving up, as a loop guard
/// (Linux allows 40; /etc rarely chains more than two).
pub const MAX_SYMLINK_HOPS: usize = 16;

/// Checks that `path` is absolute and, after lexical normalisation (`.` dropped, `..`
/// applied), lies strictly under `/etc`. Returns the normalised path.
///
/// Refused with [`Error::Denied`]: relative paths, paths that leave /etc (`/etc/../x`,
/// `/var/x`), `/etc` itself, paths with NUL bytes. Refused with
/// [`Error::InvalidParams`]: an empty path.
///
/// ```
/// use hostplug_sdk::fs::etc_path;
/// assert_eq!(etc_path("/etc/./ssh/../hosts").unwrap().to_str(), Some("/etc/hosts"));
/// assert!(etc_path("/etc/../root/.ssh/authorized_keys").is_err());
/// assert!(etc_path("hosts").is_err());
/// ```
pub fn etc_path(path: &str) -> Result<PathBuf> {
    if path.is_empty() {
        return Err(Error::invalid_params("path: must not be empty"));
    }
    if path.contains('\0') {
        return Err(Error::denied("path: contains a NUL byte"));
    }
    let p = Path::new(path);
    if !p.is_absolute() {
        return Err(Error::denied(format!(
            "{path}: not an absolute path; give the full path under /etc"
        )));
    }
    let mut parts: Vec<&std::ffi::OsStr> = Vec::new();
    for c in p.components() {
        match c {
            Component::RootDir | Component::CurDir => {}
            Component::ParentDir => {
                if parts.pop().is_none() {
                    return Err(outside(path));
                }
            }
            Component::Normal(s) => parts.push(s),
            Component::Prefix(_) => return Err(outside(path)),
        }
    }
    if parts.first().is_none_or(|first| *first != "etc") || parts.len() < 2 {
        return Err(outside(path));
    }
    let mut out = PathBuf::from("/");
    out.extend(parts);
    Ok(out)
}

fn outside(path: &str) -> Error {
    Error::denied(format!(
        "{path}: outside /etc; only files under /etc can be used"
    ))
}

/// Follows symbolic links at `path` (the last component only) while they stay under
/// /etc, so an edit lands on the link's target instead of replacing the link with a
/// regular file. Returns the final path; a link leading out of /etc is
/// [`Error::Denied`]. Links in the directories above are left to the sandbox, which
/// refuses those that lead out of /etc.
pub fn resolve_symlinks(path: &Path) -> Result<PathBuf> {
    let mut current = path.to_path_buf();
    for _ in 0..MAX_SYMLINK_HOPS {
        match fs::symlink_metadata(&current) {
            Ok(meta) if meta.file_type().is_symlink() => {
                let target = fs::read_link(&current).map_err(|e| Error::io(&current, &e))?;
                let joined = if target.is_absolute() {
                    target
                } else {
                    current
                        .parent()
                        .map_or_else(|| PathBuf::from("/"), Path::to_path_buf)
                        .join(target)
                };
                let text = joined.to_string_lossy().into_owned();
                current = etc_path(&text).map_err(|_| {
                    Error::denied(format!(
                        "{}: a symbolic link to {text}, which is outside /etc",
                        path.display()
                    ))
                })?;
            }
            Ok(_) => return Ok(current),
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(current),
            Err(e) => return Err(Error::io(&current, &e)),
        }
    }
    Err(Error::failed(format!(
        "{}: more than {MAX_SYMLINK_HOPS} symbolic links",
        path.display()
    )))
}

/// A file's permission bits (`mode & 0o7777`) and numeric owner and group.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Attributes {
    /// Permission bits, e.g. `0o640`.
    pub mode: u32,
    /// Numeric owner.
    pub uid: u32,
    /// Numeric group.
    pub gid: u32,
}

/// The mode of a file [`write_atomic`] creates when none is asked for.
pub const DEFAULT_MODE: u32 = 0o644;

/// The mode, owner and group of the file at `path` (symbolic links followed while they
/// stay under /etc); `Ok(None)` when it does not exist. Without the `etc` capability
/// this is [`Error::Denied`].
pub fn stat(path: &Path) -> Result<Option<Attributes>> {
    match imp::stat(path) {
        Ok(a) => Ok(Some(a)),
        Err(Error::NotFound(_)) => Ok(None),
        Err(e) => Err(e),
    }
}

/// Sets the mode (permission bits only, never setuid/setgid) and/or the owner and group
/// of the file at `path`; `None` keeps that attribute. Needs `etc: write`; refused
/// ([`Error::Denied`]) in dry runs and for a read-only grant.
pub fn set_attributes(
    path: &Path,
    mode: Option<u32>,
    uid: Option<u32>,
    gid: Option<u32>,
) -> Result<()> {
    imp::set_attributes(path, mode, uid, gid)
}

/// `mode` as four octal digits, e.g. `"0640"`.
pub fn format_mode(mode: u32) -> String {
    format!("{mode:04o}")
}

#[cfg(target_arch = "wasm32")]
mod imp {
    //! The host's `files` import; its typed errors map by kind (`From`), the messages
    //! (which name the path) as they are.
    use super::{Attributes, Path, Result};
    use crate::bindings::hostplug::plugin::files;

    pub(super) fn stat(path: &Path) -> Result<Attributes> {
        files::stat(&path.to_string_lossy())
            .map(|a| Attributes {
                mode: a.mode,
                uid: a.uid,
                gid: a.gid,
            })
            .map_err(Into::into)
    }

    pub(super) fn set_attributes(
        path: &Path,
        mode: Option<u32>,
        uid: Option<u32>,
        gid: Option<u32>,
    ) -> Result<()> {
        files::set_attributes(&path.to_string_lossy(), mode, uid, gid).map_err(Into::into)
    }
}

/// Natively (unit tests of plugins) the paths are the machine's own.
#[cfg(all(not(target_arch = "wasm32"), unix))]
mod imp {
    use super::{Attributes, Error, Path, Result};
    use std::os::unix::fs::{MetadataExt, PermissionsExt};

    pub(super) fn stat(path: &Path) -> Result<Attributes> {
        let m = std::fs::metadata(path).map_err(|e| Error::io(path, &e))?;
        Ok(Attributes {
            mode: m.mode() & 0o7777,
            uid: m.uid(),
            gid: m.gid(),
        })
    }

    pub(super) fn set_attributes(
        path: &Path,
        mode: Option<u32>,
        uid: Option<u32>,
        gid: Option<u32>,
    ) -> Result<()> {
        if uid.is_some() || gid.is_some() {
            std::os::unix::fs::chown(path, uid, gid).map_err(|e| Error::io(path, &e))?;
        }
        if let Some(mode) = mode {
            if mode & !0o1777 != 0 {
                return Err(Error::denied(format!(
                    "mode {mode:#o}: only permission bits, never setuid or setgid"
                )));
            }
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
                .map_err(|e| Error::io(path, &e))?;
        }
        Ok(())
    }
}

#[cfg(all(not(target_arch = "wasm32"), not(unix)))]
mod imp {
    use super::{Attributes, Error, Path, Result};

    pub(super) fn stat(path: &Path) -> Result<Attributes> {
        Err(Error::failed(format!(
            "{}: modes need Unix",
            path.display()
        )))
    }

    pub(super) fn set_attributes(
        path: &Path,
        _mode: Option<u32>,
        _uid: Option<u32>,
        _gid: Option<u32>,
    ) -> Result<()> {
        Err(Error::failed(format!(
            "{}: modes need Unix",
            path.display()
        )))
    }
}

/// Reads a UTF-8 text file; `Ok(None)` when it does not exist. A directory is
/// [`Error::InvalidParams`], a file that is not UTF-8 [`Error::Failed`].
pub fn read_text(path: &Path) -> Result<Option<String>> {
    match fs::read(path) {
        Ok(bytes) => String::from_utf8(bytes).map(Some).map_err(|_| {
            Error::failed(format!(
                "{}: not UTF-8 text; this operation edits text files only",
                path.display()
            ))
        }),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) if e.kind() == io::ErrorKind::IsADirectory || path.is_dir() => Err(
            Error::invalid_params(format!("{}: is a directory, not a file", path.display())),
        ),
        Err(e) => Err(Error::io(path, &e)),
    }
}

/// How a file's new content reaches the disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum WriteStrategy {
    /// Temporary file in the same directory, then rename over the target: readers never
    /// see a half-written file. The new file keeps the mode, owner and group of the old
    /// one; the inode (and so any hard link) is not kept.
    #[default]
    Atomic,
    /// Truncate and rewrite the existing file: keeps its mode, owner and inode (and hard
    /// links), but a reader may see a partial file while it is written.
    InPlace,
}

/// Writes `contents` to `path` with the given strategy.
pub fn write(path: &Path, contents: &[u8], strategy: WriteStrategy) -> Result<()> {
    write_with_mode(path, contents, strategy, None)
}

/// Writes `contents` to `path` with the given strategy and, when `mode` is given, leaves
/// the file with that mode (otherwise an existing file keeps its mode, a new one gets
/// [`DEFAULT_MODE`] when written atomically).
pub fn write_with_mode(
    path: &Path,
    contents: &[u8],
    strategy: WriteStrategy,
    mode: Option<u32>,
) -> Result<()> {
    match strategy {
        WriteStrategy::Atomic => write_atomic_with_mode(path, contents, mode),
        WriteStrategy::InPlace => {
            write_in_place(path, contents)?;
            match mode {
                Some(mode) => set_attributes(path, Some(mode), None, None),
                None => Ok(()),
            }
        }
    }
}

/// Replaces `path` atomically: creates a temporary file next to it (same directory, so the
/// rename cannot cross filesystems), gives it the mode, owner and group of the file it
/// replaces (a new file: mode [`DEFAULT_MODE`], the worker's owner), writes and flushes
/// the content, and renames it over `path`. On any error the temporary file is removed
/// and `path` is untouched.
pub fn write_atomic(path: &Path, contents: &[u8]) -> Result<()> {
    write_atomic_with_mode(path, contents, None)
}

/// [`write_atomic`], leaving the file with `mode` when given.
pub fn write_atomic_with_mode(path: &Path, contents: &[u8], mode: Option<u32>) -> Result<()> {
    replace_atomic(path, contents, stat(path)?, mode, None).map(|_| ())
}

/// How many times [`edit_text`] reads, recomputes and tries to write a file that keeps
/// changing under it: 5. Each attempt takes milliseconds; a file that changes five times
/// in a row while one edit is computed is being fought over, which is reported.
pub const MAX_EDIT_ATTEMPTS: usize = 5;

/// [`write_atomic_with_mode`], but only when `path` still holds `expected` (`None`: it
/// must still not exist) right before the rename. Returns `Ok(false)`, with `path`
/// untouched, when it does not: someone changed the file since `expected` was read.
pub fn write_atomic_if_unchanged(
    path: &Path,
    contents: &[u8],
    expected: Option<&[u8]>,
    mode: Option<u32>,
) -> Result<bool> {
    replace_atomic(path, contents, stat(path)?, mode, Some(expected))
}

/// The current bytes of `path`; `None` when it does not exist.
fn current_bytes(path: &Path) -> Result<Option<Vec<u8>>> {
    match fs::read(path) {
        Ok(b) => Ok(Some(b)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(Error::io(path, &e)),
    }
}

/// Atomically replaces (or creates) `path`, with the owner and group of `old` and
/// `mode`, or the mode of `old`, or [`DEFAULT_MODE`]. With `expected`, only when `path`
/// holds exactly that (`Some(None)`: does not exist) right before the rename; returns
/// whether it replaced.
fn replace_atomic(
    path: &Path,
    contents: &[u8],
    old: Option<Attributes>,
    mode: Option<u32>,
    expected: Option<Option<&[u8]>>,
) -> Result<bool> {
    let dir = path
        .parent()
        .ok_or_else(|| Error::invalid_params(format!("{}: has no directory", path.display())))?;
    let name = path
        .file_name()
        .ok_or_else(|| Error::invalid_params(format!("{}: has no file name", path.display())))?
        .to_string_lossy()
        .into_owned();
    let (tmp, mut file) = create_temp(dir, &name)?;
    // Attributes first, content second: the temporary file must never hold the new
    // content with looser permissions than the file it replaces (think /etc/shadow).
    if let Err(e) = copy_attributes(&tmp, old, mode) {
        drop(file);
        let _ = fs::remove_file(&tmp);
        return Err(e);
    }
    let written = file.write_all(contents).and_then(|()| file.sync_all());
    drop(file);
    if let Err(e) = written {
        let _ = fs::remove_file(&tmp);
        return Err(Error::io(path, &e));
    }
    if let Some(expected) = expected {
        let unchanged = current_bytes(path).map(|now| now.as_deref() == expected);
        match unchanged {
            Ok(true) => {}
            Ok(false) => {
                let _ = fs::remove_file(&tmp);
                return Ok(false);
            }
            Err(e) => {
                let _ = fs::remove_file(&tmp);
                return Err(e);
            }
        }
    }
    if let Err(e) = fs::rename(&tmp, path) {
        let _ = fs::remove_file(&tmp);
        return Err(Error::io(path, &e));
    }
    // Make the rename itself durable where the platform allows syncing a directory; not
    // all do, and the data is already safe, so a failure here is not an error.
    if let Ok(d) = fs::File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(true)
}

/// Gives the new temporary file `tmp` the owner and group of `old` (only where they
/// differ, so that no ownership change is asked for needlessly) and `mode`, or the mode
/// of `old`, or [`DEFAULT_MODE`].
fn copy_attributes(tmp: &Path, old: Option<Attributes>, mode: Option<u32>) -> Result<()> {
    let now = stat(tmp)?
        .ok_or_else(|| Error::failed(format!("{}: vanished while writing", tmp.display())))?;
    let (uid, gid) = match old {
        Some(old) => (
            (old.uid != now.uid).then_some(old.uid),
            (old.gid != now.gid).then_some(old.gid),
        ),
        None => (None, None),
    };
    let mode = mode.or(old.map(|o| o.mode)).unwrap_or(DEFAULT_MODE);
    let mode = (mode != now.mode || uid.is_some() || gid.is_some()).then_some(mode);
    if mode.is_none() && uid.is_none() && gid.is_none() {
        return Ok(());
    }
    set_attributes(tmp, mode, uid, gid)
}

/// Rewrites `path` in place (truncate, write, sync), creating it if missing. Keeps the
/// mode, owner and inode of an existing file; not atomic.
pub fn write_in_place(path: &Path, contents: &[u8]) -> Result<()> {
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .open(path)
        .map_err(|e| Error::io(path, &e))?;
    file.write_all(contents)
        .and_then(|()| file.sync_all())
        .map_err(|e| Error::io(path, &e))
}

fn create_temp(dir: &Path, name: &str) -> Result<(PathBuf, fs::File)> {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    let mut last = None;
    for attempt in 0..16u32 {
        let tmp = dir.join(format!(".{name}.hostplug-{nanos:09}-{attempt}.tmp"));
        match fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&tmp)
        {
            Ok(f) => return Ok((tmp, f)),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => last = Some(e),
            Err(e) => return Err(Error::io(dir.join(name), &e)),
        }
    }
    let e = last.unwrap_or_else(|| io::Error::from(io::ErrorKind::AlreadyExists));
    Err(Error::io(dir.join(name), &e))
}

/// Saves `contents` (the current content of `path`) as `<path>.<UTC timestamp>.bak`, e.g.
/// `/etc/chrony.conf.20260102T030405Z.bak`, adding `.1`, `.2`, … before `.bak` when that
/// name is taken. The backup gets the mode, owner and group of `path` (a copy of
/// /etc/shadow is as secret as the original). Returns the backup's path.
pub fn backup(path: &Path, contents: &[u8]) -> Result<PathBuf> {
    let attributes = stat(path)?;
    let stamp = utc_timestamp(SystemTime::now());
    let base = path.as_os_str().to_string_lossy().into_owned();
    for n in 0..1000u32 {
        let candidate = if n == 0 {
            PathBuf::from(format!("{base}.{stamp}.bak"))
        } else {
            PathBuf::from(format!("{base}.{stamp}.{n}.bak"))
        };
        match fs::symlink_metadata(&candidate) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                replace_atomic(&candidate, contents, attributes, None, None)?;
                return Ok(candidate);
            }
            Err(e) => return Err(Error::io(&candidate, &e)),
            Ok(_) => {}
        }
    }
    Err(Error::failed(format!(
        "{}: too many backups with timestamp {stamp}",
        path.display()
    )))
}

/// Options of [`edit_text`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct EditOptions {
    /// Report only: compute the change and its diff, write nothing (no backup either).
    pub dry_run: bool,
    /// Keep the old content with [`backup`] before changing an existing file.
    pub backup: bool,
    /// How an existing file is rewritten; a new file is always created atomically.
    pub strategy: WriteStrategy,
    /// The mode the file must have (permission bits); `None` keeps an existing file's
    /// mode and gives a new one [`DEFAULT_MODE`]. A mode that differs is a change even
    /// when the content does not.
    pub mode: Option<u32>,
}

/// What [`edit_text`] did (or, in a dry run, would do).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TextEdit {
    /// Whether the content changed (or would change).
    pub changed: bool,
    /// Whether the file did not exist before and was (or would be) created.
    pub created: bool,
    /// Size of the content after the edit, in bytes.
    pub bytes: usize,
    /// The backup made, if any.
    pub backup: Option<PathBuf>,
    /// The unified diff of the change, preceded by `old mode …`/`new mode …` lines (as
    /// in git) when the mode changes; `None` when nothing changed.
    pub diff: Option<String>,
    /// The file's mode after the edit (in a dry run: what it would be); `None` when the
    /// file does not exist afterwards.
    pub mode: Option<u32>,
}

/// The read-change-write cycle of an idempotent text edit: reads `path` (`None` when it
/// does not exist), lets `change` compute the new content (returning `None` leaves a
/// missing file missing), and when the content differs writes it with a backup if asked,
/// unless this is a dry run. The diff is labelled with `path`.
///
/// ```no_run
/// use hostplug_sdk::fs::{EditOptions, edit_text, etc_path};
/// let path = etc_path("/etc/motd")?;
/// let edit = edit_text(&path, EditOptions::default(), |_old| Ok(Some("hi\n".into())))?;
/// assert!(edit.diff.is_some() == edit.changed);
/// # Ok::<(), hostplug_sdk::Error>(())
/// ```
pub fn edit_text(
    path: &Path,
    options: EditOptions,
    mut change: impl FnMut(Option<&str>) -> Result<Option<String>>,
) -> Result<TextEdit> {
    if let Some(mode) = options.mode {
        check_mode(mode)?;
    }
    for _ in 0..MAX_EDIT_ATTEMPTS {
        if let Some(edit) = try_edit_text(path, options, &mut change)? {
            return Ok(edit);
        }
    }
    Err(Error::failed(format!(
        "{}: changed by someone else {MAX_EDIT_ATTEMPTS} times while this edit was computed; \
         nothing written",
        path.display()
    )))
}

/// What [`edit_files`] did (or, in a dry run, would do).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FilesEdit {
    /// Each file's edit, in the order given.
    pub edits: Vec<(PathBuf, TextEdit)>,
    /// Whether any file changed (or would change).
    pub changed: bool,
    /// The diffs of the changed files, one after the other; `None` when nothing changed.
    pub diff: Option<String>,
}

/// An idempotent edit of several files that belong together (a configuration file and
/// its drop-in, a unit and its environment file, …). Every file is read and every new
/// content computed first, so a `change` that fails for any of them writes nothing at
/// all; then each changed file is written as [`edit_text`] writes it (backup, mode,
/// compare-before-rename), in the order given, each only if it still holds what was read.
///
/// Not a transaction: a file system gives none. If a later write fails, the earlier ones
/// stay, and the error (kind `failed`) names the files already written.
pub fn edit_files(
    paths: &[PathBuf],
    options: EditOptions,
    mut change: impl FnMut(&Path, Option<&str>) -> Result<Option<String>>,
) -> Result<FilesEdit> {
    let mut planned = Vec::with_capacity(paths.len());
    for path in paths {
        let old = read_text(path)?;
        let new = change(path, old.as_deref())?;
        planned.push((path.clone(), old, new));
    }
    let mut edits: Vec<(PathBuf, TextEdit)> = Vec::with_capacity(planned.len());
    for (path, old, new) in planned {
        let edit = edit_text(&path, options, |current| {
            if current == old.as_deref() {
                Ok(new.clone())
            } else {
                Err(Error::failed(format!(
                    "{}: changed by someone else while the edit was computed",
                    path.display()
                )))
            }
        });
        match edit {
            Ok(e) => edits.push((path, e)),
            Err(e) => {
                let written: Vec<String> = edits
                    .iter()
                    .filter(|(_, e)| e.changed && !options.dry_run)
                    .map(|(p, _)| p.display().to_string())
                    .collect();
                if written.is_empty() {
                    return Err(e);
                }
                return Err(Error::failed(format!(
                    "{e}; already written: {}",
                    written.join(", ")
                )));
            }
        }
    }
    let diffs: Vec<&str> = edits
        .iter()
        .filter_map(|(_, e)| e.diff.as_deref())
        .collect();
    Ok(FilesEdit {
        changed: edits.iter().any(|(_, e)| e.changed),
        diff: (!diffs.is_empty()).then(|| diffs.concat()),
        edits,
    })
}

/// One read-change-write attempt of [`edit_text`]; `Ok(None)` when the file changed
/// between the read and the write (nothing was written; read again).
fn try_edit_text(
    path: &Path,
    options: EditOptions,
    change: &mut impl FnMut(Option<&str>) -> Result<Option<String>>,
) -> Result<Option<TextEdit>> {
    let old = read_text(path)?;
    let new = change(old.as_deref())?;
    let name = path.to_string_lossy();
    let old_mode = match &old {
        Some(_) => stat(path)?.map(|a| a.mode),
        None => None,
    };
    let content_diff = new
        .as_deref()
        .and_then(|new| crate::diff::unified(&name, old.as_deref(), Some(new)));
    // Only an existing file that stays can have its mode changed without new content.
    let mode_change = match (old_mode, options.mode) {
        (Some(was), Some(want)) if was != want && new.is_some() => Some((was, want)),
        _ => None,
    };
    let (Some(new), true) = (new, content_diff.is_some() || mode_change.is_some()) else {
        return Ok(Some(TextEdit {
            changed: false,
            created: false,
            bytes: old.as_ref().map_or(0, String::len),
            backup: None,
            diff: None,
            mode: old_mode,
        }));
    };
    let diff = match mode_change {
        Some((was, want)) => format!(
            "old mode {}\nnew mode {}\n{}",
            format_mode(was),
            format_mode(want),
            content_diff.as_deref().unwrap_or_default()
        ),
        None => content_diff.clone().unwrap_or_default(),
    };
    let created = old.is_none();
    let final_mode = options.mode.or(old_mode).unwrap_or(DEFAULT_MODE);
    let mut saved = None;
    if !options.dry_run {
        if content_diff.is_none() {
            // Same content, another mode: no rewrite needed.
            set_attributes(path, options.mode, None, None)?;
        } else {
            // A new file has no mode or owner to keep: always create it atomically.
            let strategy = if created {
                WriteStrategy::Atomic
            } else {
                options.strategy
            };
            let expected = old.as_deref().map(str::as_bytes);
            if strategy == WriteStrategy::InPlace && current_bytes(path)?.as_deref() != expected {
                return Ok(None);
            }
            if options.backup
                && let Some(old) = &old
            {
                saved = Some(backup(path, old.as_bytes())?);
            }
            match strategy {
                WriteStrategy::Atomic => {
                    if !write_atomic_if_unchanged(path, new.as_bytes(), expected, options.mode)? {
                        if let Some(b) = saved.take() {
                            let _ = fs::remove_file(b);
                        }
                        return Ok(None);
                    }
                }
                WriteStrategy::InPlace => {
                    write_with_mode(path, new.as_bytes(), strategy, options.mode)?;
                }
            }
        }
    }
    Ok(Some(TextEdit {
        changed: true,
        created,
        bytes: new.len(),
        backup: saved,
        diff: Some(diff),
        mode: Some(final_mode),
    }))
}

/// Checks that `mode` holds only permission bits and not the setuid or setgid bits, which
/// the host refuses to set (see `wit/hostplug.wit`).
pub fn check_mode(mode: u32) -> Result<()> {
    if mode & !0o7777 != 0 {
        return Err(Error::invalid_params(format!(
            "mode: {mode:#o} is not a file mode; give permission bits such as \"0644\""
        )));
    }
    if mode & 0o6000 != 0 {
        return Err(Error::invalid_params(format!(
            "mode: {} sets the setuid or setgid bit, which plugins may not set",
            format_mode(mode)
        )));
    }
    Ok(())
}

/// Parses an octal mode string such as `"0640"`, `"640"` or `"0o640"` (1 to 4 octal
/// digits after an optional `0o`) and checks it with [`check_mode`]. Errors name the
/// field `mode`.
pub fn parse_mode(text: &str) -> Result<u32> {
    let digits = text.strip_prefix("0o").unwrap_or(text);
    if digits.is_empty() || digits.len() > 4 || !digits.chars().all(|c| ('0'..='7').contains(&c)) {
        return Err(Error::invalid_params(format!(
            "mode: `{text}` is not an octal file mode such as \"0644\""
        )));
    }
    let mode = u32::from_str_radix(digits, 8)
        .map_err(|_| Error::invalid_params(format!("mode: `{text}` is not an octal file mode")))?;
    check_mode(mode)?;
    Ok(mode)
}

/// Removes the file at `path`; `Ok(false)` when it did not exist.
pub fn remove_file(path: &Path) -> Result<bool> {
    match fs::remove_file(path) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(Error::io(path, &e)),
    }
}

/// Cap on the entries [`list_dir`] returns: 10 000, far above any directory under /etc,
/// low enough that a planted directory of millions of files cannot exhaust the plugin's
/// memory.
pub const MAX_DIR_ENTRIES: usize = 10_000;

/// The names of the entries of directory `path`, sorted; `Ok(None)` when it does not
/// exist. A file is [`Error::InvalidParams`]; more than [`MAX_DIR_ENTRIES`] entries is
/// [`Error::Failed`].
pub fn list_dir(path: &Path) -> Result<Option<Vec<String>>> {
    let entries = match fs::read_dir(path) {
        Ok(e) => e,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) if e.kind() == io::ErrorKind::NotADirectory || path.is_file() => {
            return Err(Error::invalid_params(format!(
                "{}: is a file, not a directory",
                path.display()
            )));
        }
        Err(e) => return Err(Error::io(path, &e)),
    };
    let mut names = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| Error::io(path, &e))?;
        if names.len() == MAX_DIR_ENTRIES {
            return Err(Error::failed(format!(
                "{}: more than {MAX_DIR_ENTRIES} entries",
                path.display()
            )));
        }
        names.push(entry.file_name().to_string_lossy().into_owned());
    }
    names.sort();
    Ok(Some(names))
}

/// Creates directory `path` (its parent must exist) and gives it `mode` (through the
/// `files` import, since WASI cannot set modes); `Ok(false)` and nothing changed when a
/// directory is there already. Not for dry runs: check [`stat`] first and report instead.
pub fn create_dir(path: &Path, mode: u32) -> Result<bool> {
    check_mode(mode)?;
    match fs::create_dir(path) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists && path.is_dir() => return Ok(false),
        Err(e) => return Err(Error::io(path, &e)),
    }
    set_attributes(path, Some(mode), None, None)?;
    Ok(true)
}

/// `time` as `YYYYMMDDTHHMMSSZ` in UTC (times before 1970 read as 1970).
pub fn utc_timestamp(time: SystemTime) -> String {
    let secs = time.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let days = i64::try_from(secs / 86_400).unwrap_or(0);
    let rem = secs % 86_400;
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}{m:02}{d:02}T{:02}{:02}{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// Gregorian date of a day count since 1970-01-01 (the well-known era-based algorithm:
/// 400-year eras of 146097 days, years starting in March so leap days fall last).
fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

#[cfg(test)]
mod tests {
    #[cfg(not(target_arch = "wasm32"))]
    #[test]
    fn several_files_are_all_computed_before_any_is_written() {
        use super::{EditOptions, Error, edit_files};
        let tmp = std::env::temp_dir().join(format!("hostplug-sdk-files-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&tmp);
        std::fs::create_dir(&tmp).expect("mkdir");
        let a = tmp.join("a.conf");
        let b = tmp.join("b.conf");
        std::fs::write(&a, "x=1\n").expect("write");
        let paths = [a.clone(), b.clone()];
        // The second file's change fails: the first is not written either.
        let e = edit_files(&paths, EditOptions::default(), |p, _| {
            if p == b.as_path() {
                Err(Error::invalid_params("b: refused"))
            } else {
                Ok(Some("x=2\n".into()))
            }
        })
        .expect_err("refused");
        assert_eq!(e.kind(), "invalid-params");
        assert_eq!(std::fs::read_to_string(&a).expect("a"), "x=1\n");
        // A dry run reports both diffs and writes nothing.
        let set = |_: &std::path::Path, _: Option<&str>| Ok(Some("x=2\n".to_owned()));
        let dry = EditOptions {
            dry_run: true,
            ..EditOptions::default()
        };
        let r = edit_files(&paths, dry, set).expect("dry run");
        assert!(r.changed);
        let diff = r.diff.expect("diff");
        assert!(diff.contains("a.conf") && diff.contains("b.conf"), "{diff}");
        assert!(!b.exists());
        // For real, then again: idempotent.
        let r = edit_files(&paths, EditOptions::default(), set).expect("edit");
        assert!(r.changed && r.edits[1].1.created);
        assert_eq!(std::fs::read_to_string(&b).expect("b"), "x=2\n");
        let r = edit_files(&paths, EditOptions::default(), set).expect("again");
        assert!(!r.changed && r.diff.is_none());
        std::fs::remove_dir_all(&tmp).expect("cleanup");
    }

    /// Natively, where `set_attributes` uses the machine's own `chmod`.
    #[cfg(not(target_arch = "wasm32"))]
    #[test]
    fn lists_and_creates_directories() {
        let tmp = std::env::temp_dir().join(format!("hostplug-sdk-dir-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&tmp);
        assert_eq!(super::list_dir(&tmp).expect("missing"), None);
        assert!(super::create_dir(&tmp, 0o750).expect("created"));
        assert!(!super::create_dir(&tmp, 0o750).expect("exists"));
        std::fs::write(tmp.join("b.conf"), "").expect("write");
        std::fs::write(tmp.join("a.conf"), "").expect("write");
        assert_eq!(
            super::list_dir(&tmp).expect("lists"),
            Some(vec!["a.conf".to_owned(), "b.conf".to_owned()])
        );
        let e = super::list_dir(&tmp.join("a.conf")).expect_err("a file");
        assert_eq!(e.kind(), "invalid-params");
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(&tmp).expect("meta").permissions().mode() & 0o777;
        assert_eq!(mode, 0o750);
        std::fs::remove_dir_all(&tmp).expect("cleanup");
    }

    use super::*;
    use std::time::Duration;

    #[test]
    fn etc_paths() {
        let ok = |p: &str| etc_path(p).map(|p| p.to_string_lossy().into_owned());
        assert_eq!(ok("/etc/hosts").unwrap(), "/etc/hosts");
        assert_eq!(
            ok("/etc//ssh/./sshd_config").unwrap(),
            "/etc/ssh/sshd_config"
        );
        assert_eq!(ok("/etc/ssh/../hosts").unwrap(), "/etc/hosts");
        assert_eq!(ok("/x/../etc/hosts").unwrap(), "/etc/hosts");
        for bad in [
            "/etc",
            "/etc/",
            "/etc/..",
            "/etc/../etc",
            "/etc/../var/x",
            "/../../etc/../root",
            "/var/etc/x",
            "/etcetera/x",
            "etc/hosts",
            "./hosts",
            "/etc/a\0b",
        ] {
            let e = ok(bad).unwrap_err();
            assert_eq!(e.kind(), "denied", "{bad}: {e}");
        }
        assert_eq!(ok("").unwrap_err().kind(), "invalid-params");
    }

    #[test]
    fn modes() {
        assert_eq!(parse_mode("0640").expect("mode"), 0o640);
        assert_eq!(parse_mode("600").expect("mode"), 0o600);
        assert_eq!(parse_mode("0o1777").expect("mode"), 0o1777);
        for bad in ["", "0o", "0800", "12345", "4755", "2644", "rw-r--r--"] {
            let e = parse_mode(bad).expect_err(bad);
            assert!(e.message().starts_with("mode:"), "{bad}: {e}");
        }
        assert_eq!(format_mode(0o640), "0640");
        use crate::CapabilityError as C;
        assert_eq!(
            Error::from(C::Denied("no etc access".into())),
            Error::denied("no etc access")
        );
        assert_eq!(
            Error::from(C::NotFound("/etc/x".into())).kind(),
            "not-found"
        );
        assert_eq!(
            Error::from(C::Invalid("uid".into())).kind(),
            "invalid-params"
        );
        assert_eq!(Error::from(C::Failed("EIO".into())).kind(), "failed");
    }

    #[cfg(unix)]
    #[test]
    fn atomic_writes_keep_mode_and_owner() {
        use std::os::unix::fs::PermissionsExt;
        let dir = std::env::temp_dir().join(format!("hostplug-sdk-modes-{}", std::process::id()));
        fs::create_dir_all(&dir).expect("mkdir");
        let f = dir.join("shadow");
        write_atomic(&f, b"one\n").expect("write");
        let created = stat(&f).expect("stat").expect("exists");
        assert_eq!(created.mode, DEFAULT_MODE);
        fs::set_permissions(&f, fs::Permissions::from_mode(0o640)).expect("chmod");
        // As root (the CI), give the file another owner, which the write must keep.
        let owner = if created.uid == 0 {
            std::os::unix::fs::chown(&f, Some(1234), Some(1234)).expect("chown");
            (1234, 1234)
        } else {
            (created.uid, created.gid)
        };
        write_atomic(&f, b"two\n").expect("write");
        let a = stat(&f).expect("stat").expect("exists");
        assert_eq!((a.mode, a.uid, a.gid), (0o640, owner.0, owner.1));
        let saved = backup(&f, b"two\n").expect("backup");
        let b = stat(&saved).expect("stat").expect("exists");
        assert_eq!((b.mode, b.uid, b.gid), (0o640, owner.0, owner.1));
        fs::remove_file(saved).expect("rm");

        // Same content, another mode: a change with git-style mode lines only.
        let keep = |old: Option<&str>| Ok(old.map(str::to_owned));
        let opts = EditOptions {
            mode: Some(0o600),
            ..EditOptions::default()
        };
        let e = edit_text(&f, opts, keep).expect("edit");
        assert!(e.changed);
        assert_eq!(e.diff.as_deref(), Some("old mode 0640\nnew mode 0600\n"));
        assert_eq!(e.mode, Some(0o600));
        assert_eq!(stat(&f).expect("stat").map(|a| a.mode), Some(0o600));
        let e = edit_text(&f, opts, keep).expect("edit");
        assert!(!e.changed && e.diff.is_none());
        // New content and a mode.
        let opts = EditOptions {
            mode: Some(0o400),
            ..EditOptions::default()
        };
        let e = edit_text(&f, opts, |_| Ok(Some("three\n".into()))).expect("edit");
        assert!(
            e.diff
                .as_deref()
                .is_some_and(|d| d.starts_with("old mode 0600\nnew mode 0400\n---"))
        );
        let a = stat(&f).expect("stat").expect("exists");
        assert_eq!((a.mode, a.uid, a.gid), (0o400, owner.0, owner.1));
        assert_eq!(stat(&dir.join("missing")).expect("stat"), None);
        assert_eq!(fs::read_dir(&dir).expect("ls").count(), 1);
        fs::remove_dir_all(&dir).expect("rm");
    }

    #[test]
    fn timestamps() {
        assert_eq!(utc_timestamp(UNIX_EPOCH), "19700101T000000Z");
        // 2024-02-29T12:34:56Z, a leap day.
        let t = UNIX_EPOCH + Duration::from_secs(1_709_210_096);
        assert_eq!(utc_timestamp(t), "20240229T123456Z");
    }

    #[test]
    fn atomic_write_and_backup_in_a_temp_dir() {
        let dir = std::env::temp_dir().join(format!("hostplug-sdk-fs-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let f = dir.join("conf");
        write_atomic(&f, b"one\n").unwrap();
        write_atomic(&f, b"two\n").unwrap();
        assert_eq!(read_text(&f).unwrap().as_deref(), Some("two\n"));
        let b1 = backup(&f, b"two\n").unwrap();
        let b2 = backup(&f, b"two\n").unwrap();
        assert_ne!(b1, b2);
        assert!(b1.to_string_lossy().ends_with(".bak"));
        assert_eq!(fs::read(&b2).unwrap(), b"two\n");
        // Only the file and its two backups: no temporary file left behind.
        assert_eq!(fs::read_dir(&dir).unwrap().count(), 3);
        // edit_text: dry run reports, a real run writes with a backup, a repeat is a no-op.
        let upper = |old: Option<&str>| Ok(old.map(str::to_uppercase));
        let dry = EditOptions {
            dry_run: true,
            backup: true,
            ..EditOptions::default()
        };
        let e = edit_text(&f, dry, upper).unwrap();
        assert!(e.changed && e.backup.is_none());
        assert_eq!(read_text(&f).unwrap().as_deref(), Some("two\n"));
        let real = EditOptions {
            backup: true,
            ..EditOptions::default()
        };
        let e = edit_text(&f, real, upper).unwrap();
        assert!(e.changed && !e.created && e.diff.as_deref().is_some_and(|d| d.contains("+TWO")));
        let saved = e.backup.unwrap();
        assert_eq!(fs::read(&saved).unwrap(), b"two\n");
        fs::remove_file(saved).unwrap();
        assert_eq!(read_text(&f).unwrap().as_deref(), Some("TWO\n"));
        let e = edit_text(&f, real, upper).unwrap();
        assert!(!e.changed && e.diff.is_none() && e.backup.is_none());
        assert!(remove_file(&f).unwrap());
        assert!(!remove_file(&f).unwrap());
        assert_eq!(read_text(&f).unwrap(), None);
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_concurrent_change_is_never_overwritten() -> Result<()> {
        let dir = std::env::temp_dir().join(format!("hostplug-sdk-cas-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).map_err(|e| Error::io(&dir, &e))?;
        let path = dir.join("conf");
        fs::write(&path, "a\n").map_err(|e| Error::io(&path, &e))?;
        // The first computation races with another writer that appends "b"; the edit
        // must notice, read again and keep "b".
        let mut calls = 0;
        let edit = edit_text(&path, EditOptions::default(), |old| {
            calls += 1;
            if calls == 1 {
                fs::write(&path, "a\nb\n").map_err(|e| Error::io(&path, &e))?;
            }
            Ok(old.map(|o| format!("{o}c\n")))
        })?;
        assert_eq!(calls, 2);
        assert!(edit.changed);
        assert_eq!(fs::read_to_string(&path).ok().as_deref(), Some("a\nb\nc\n"));
        assert!(
            edit.diff
                .as_deref()
                .is_some_and(|d| d.contains("+c") && !d.contains("+b"))
        );

        // A writer that never stops wins: reported, and its content stays.
        let mut n = 0;
        let fought = edit_text(&path, EditOptions::default(), |old| {
            n += 1;
            fs::write(&path, format!("x{n}\n")).map_err(|e| Error::io(&path, &e))?;
            Ok(old.map(|o| format!("{o}mine\n")))
        });
        assert!(fought.is_err_and(|e| e.message().contains("changed by someone else")));
        assert_eq!(n, MAX_EDIT_ATTEMPTS);
        let left = fs::read_to_string(&path).map_err(|e| Error::io(&path, &e))?;
        assert!(!left.contains("mine"), "{left}");
        let stray = fs::read_dir(&dir)
            .map_err(|e| Error::io(&dir, &e))?
            .filter_map(|e| e.ok())
            .filter(|e| e.file_name().to_string_lossy().ends_with(".tmp"))
            .count();
        assert_eq!(stray, 0, "temporary files are removed");
        let _ = fs::remove_dir_all(&dir);
        Ok(())
    }
}

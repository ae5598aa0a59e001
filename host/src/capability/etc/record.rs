//! Revert records, kept by the host: what each file a mutating call touched under /etc
//! was before the call ([`PriorState`]: bytes, mode, owner, a link's target, or "did
//! not exist") and what it was when the call ended ([`PostState`]: a sha256 instead of
//! the bytes), and [`restore`], which puts the prior state back.
//!
//! The guarded filesystem (`wasi_fs.rs`) and the `files` import (`files.rs`) call
//! [`Recorder::note_use`] for every path a write, create, truncate, rename, link, removal or
//! attribute change names, *before* the call reaches the kernel (an open with
//! `O_TRUNC` empties the file at once); only the first touch of a path in a call counts.
//! Plugins write nothing for this: every /etc plugin gets it.
//!
//! Bounded ([`MAX_RECORD_FILE_BYTES`], [`MAX_RECORD_BYTES`], [`MAX_RECORD_PATHS`]): a
//! call beyond a bound still runs (refusing would make a large legitimate edit
//! impossible), and its record says "not revertible" with the reason. Sensitive paths
//! are never copied: a call that touches one (possible only where a HostPlugin allows
//! it explicitly) is not revertible.
//!
//! Files are read and restored through descriptors opened beneath the etc directory
//! with `RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS` for the parent and `O_NOFOLLOW` for the
//! name: neither recording nor restoring ever follows a link out of /etc. This module
//! must never read a path the call itself could not reach, nor restore anything but
//! exactly what it recorded.

use std::collections::HashSet;
use std::io::Read;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};

use rustix::fs::{AtFlags, FileType, Gid, Mode, OFlags, ResolveFlags, Uid};
use rustix::io::Errno;
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

use super::sensitive::{EtcPolicy, guest};

/// Most bytes of one file a record keeps: 1 MiB. Configuration files under /etc are
/// kilobytes; a file above this is data, not configuration, and keeping it would let
/// one call fill the node's record store.
pub const MAX_RECORD_FILE_BYTES: u64 = 1024 * 1024;
/// Most bytes of all files of one call's record: 8 MiB. It is held in the worker's
/// memory during the call and written to the node; 8 MiB is hundreds of typical
/// configuration files, within the worker's memory limit beside the plugin's.
pub const MAX_RECORD_BYTES: u64 = 8 * 1024 * 1024;
/// Most paths one call's record keeps: 256. A configuration change touches a handful
/// (each atomic write is two: the temporary file and the target); 256 bounds the work
/// of a revert and of the post-call hashing.
pub const MAX_RECORD_PATHS: usize = 256;

/// What a path was before the call.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum PriorState {
    /// Nothing was there: a revert removes what is there now.
    Absent,
    /// A regular file.
    File {
        /// Its content (base64 in JSON).
        #[serde(with = "base64_bytes")]
        bytes: Vec<u8>,
        /// Permission bits.
        mode: u32,
        /// Owner.
        uid: u32,
        /// Group.
        gid: u32,
    },
    /// A symbolic link (kept as a link, never followed).
    Symlink {
        /// The link's text.
        target: String,
        /// Owner.
        uid: u32,
        /// Group.
        gid: u32,
    },
    /// A directory (its entries are recorded one by one, where the call touched them).
    Directory {
        /// Permission bits.
        mode: u32,
        /// Owner.
        uid: u32,
        /// Group.
        gid: u32,
    },
}

/// What a path was when the call ended: enough to tell whether it changed since.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum PostState {
    /// Nothing.
    Absent,
    /// A regular file.
    File {
        /// sha256 of its content, hex.
        sha256: String,
        /// Permission bits.
        mode: u32,
        /// Owner.
        uid: u32,
        /// Group.
        gid: u32,
    },
    /// A symbolic link.
    Symlink {
        /// The link's text.
        target: String,
        /// Owner.
        uid: u32,
        /// Group.
        gid: u32,
    },
    /// A directory.
    Directory {
        /// Permission bits.
        mode: u32,
        /// Owner.
        uid: u32,
        /// Group.
        gid: u32,
    },
    /// Something else (a FIFO, a device): never restored over.
    Other,
}

impl PriorState {
    /// What this state looks like as a [`PostState`] (to compare with the present).
    pub fn as_post(&self) -> PostState {
        match self {
            Self::Absent => PostState::Absent,
            Self::File {
                bytes,
                mode,
                uid,
                gid,
            } => PostState::File {
                sha256: hex::encode(Sha256::digest(bytes)),
                mode: *mode,
                uid: *uid,
                gid: *gid,
            },
            Self::Symlink { target, uid, gid } => PostState::Symlink {
                target: target.clone(),
                uid: *uid,
                gid: *gid,
            },
            Self::Directory { mode, uid, gid } => PostState::Directory {
                mode: *mode,
                uid: *uid,
                gid: *gid,
            },
        }
    }
}

/// One path of a record, in the order the call first touched it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RecordedPath {
    /// The path as the plugin sees it, `/etc/…` (where the kernel resolved it).
    pub path: String,
    /// Before the call.
    pub prior: PriorState,
    /// When the call ended.
    pub post: PostState,
}

/// What one mutating call changed under /etc, as the host saw it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ChangeRecord {
    /// Every path the call touched, in the order of first touch.
    pub paths: Vec<RecordedPath>,
    /// Why this call cannot be reverted (a bound exceeded, a sensitive path, a file
    /// that could not be read); `None`: it can.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub not_revertible: Option<String>,
}

impl ChangeRecord {
    /// Whether a revert can restore this record.
    pub fn is_revertible(&self) -> bool {
        self.not_revertible.is_none()
    }

    /// Whether the call changed anything the record kept (prior and post differ).
    pub fn changed_anything(&self) -> bool {
        self.paths.iter().any(|p| p.prior.as_post() != p.post)
    }
}

/// Collects the prior states of one call (`EtcState` holds one for a mutating call with
/// /etc write access).
#[derive(Debug, Default)]
pub(crate) struct Recorder {
    entries: Vec<(PathBuf, PriorState)>,
    seen: HashSet<PathBuf>,
    bytes: u64,
    not_revertible: Option<String>,
}

impl Recorder {
    /// Notes the state of `rel` (relative to the etc directory `root`) unless this call
    /// touched it before. Never fails the call: what cannot be recorded makes the
    /// record not revertible.
    /// `moves`: `rel` is the source of a rename; a directory moved with what it holds is
    /// more than a record keeps, so it makes the call not revertible.
    pub(crate) fn note_use(&mut self, root: &OwnedFd, policy: &EtcPolicy, rel: &Path, moves: bool) {
        // /etc itself is never changed through a path (the files import refuses it,
        // WASI cannot write a directory); its entries are recorded one by one.
        if self.not_revertible.is_some() || rel.as_os_str().is_empty() || self.seen.contains(rel) {
            return;
        }
        self.seen.insert(rel.to_path_buf());
        if policy.is_sensitive(rel) {
            return self.give_up(format!(
                "{} is a sensitive path; its content is never recorded",
                guest(rel)
            ));
        }
        if self.entries.len() >= MAX_RECORD_PATHS {
            return self.give_up(format!(
                "the call touched more than {MAX_RECORD_PATHS} paths under /etc"
            ));
        }
        let room = MAX_RECORD_FILE_BYTES.min(MAX_RECORD_BYTES.saturating_sub(self.bytes));
        match read_prior(root, rel, room) {
            Ok(PriorState::Directory { .. }) if moves => self.give_up(format!(
                "the call renames the directory {}; a record keeps files, not trees",
                guest(rel)
            )),
            Ok(prior) => {
                if let PriorState::File { bytes, .. } = &prior {
                    self.bytes += bytes.len() as u64;
                }
                self.entries.push((rel.to_path_buf(), prior));
            }
            Err(why) => self.give_up(why),
        }
    }

    fn give_up(&mut self, why: String) {
        // The bytes are of no use any more: free them while the call goes on.
        self.entries = Vec::new();
        self.not_revertible = Some(why);
    }

    /// The record: each path's prior state and its state now (the call has ended).
    pub(crate) fn finish(self, root: &OwnedFd) -> ChangeRecord {
        if let Some(why) = self.not_revertible {
            return ChangeRecord {
                paths: Vec::new(),
                not_revertible: Some(why),
            };
        }
        let mut paths = Vec::with_capacity(self.entries.len());
        for (rel, prior) in self.entries {
            match read_post(root, &rel) {
                Ok(post) => paths.push(RecordedPath {
                    path: guest(&rel),
                    prior,
                    post,
                }),
                Err(why) => {
                    return ChangeRecord {
                        paths: Vec::new(),
                        not_revertible: Some(why),
                    };
                }
            }
        }
        ChangeRecord {
            paths,
            not_revertible: None,
        }
    }
}

/// The parent directory of `rel` beneath `root`, opened as a path, following no link;
/// `Ok(None)` when it does not exist.
fn open_parent(root: &OwnedFd, rel: &Path) -> Result<Option<OwnedFd>, Errno> {
    let parent = match rel.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    match rustix::fs::openat2(
        root,
        parent,
        OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
        ResolveFlags::BENEATH | ResolveFlags::NO_SYMLINKS | ResolveFlags::NO_MAGICLINKS,
    ) {
        Ok(fd) => Ok(Some(fd)),
        Err(Errno::NOENT) => Ok(None),
        Err(e) => Err(e),
    }
}

fn name_of(rel: &Path) -> &std::ffi::OsStr {
    rel.file_name().unwrap_or(rel.as_os_str())
}

/// What is at `rel` now, as a kind and `stat`; `None` when nothing is.
fn stat_of(root: &OwnedFd, rel: &Path) -> Result<Option<(OwnedFd, rustix::fs::Stat)>, String> {
    let what = guest(rel);
    let Some(dir) = open_parent(root, rel).map_err(|e| format!("{what}: {e}"))? else {
        return Ok(None);
    };
    match rustix::fs::statat(&dir, name_of(rel), AtFlags::SYMLINK_NOFOLLOW) {
        Ok(st) => Ok(Some((dir, st))),
        Err(Errno::NOENT) => Ok(None),
        Err(e) => Err(format!("{what}: {e}")),
    }
}

fn read_link(dir: &OwnedFd, rel: &Path) -> Result<String, String> {
    let target = rustix::fs::readlinkat(dir, name_of(rel), Vec::new())
        .map_err(|e| format!("{}: {e}", guest(rel)))?;
    target
        .into_string()
        .map_err(|_| format!("{}: the link's target is not UTF-8", guest(rel)))
}

fn open_file(dir: &OwnedFd, rel: &Path) -> Result<std::fs::File, String> {
    rustix::fs::openat(
        dir,
        name_of(rel),
        OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC | OFlags::NONBLOCK,
        Mode::empty(),
    )
    .map(std::fs::File::from)
    .map_err(|e| format!("{}: {e}", guest(rel)))
}

fn read_prior(root: &OwnedFd, rel: &Path, room: u64) -> Result<PriorState, String> {
    let Some((dir, st)) = stat_of(root, rel)? else {
        return Ok(PriorState::Absent);
    };
    let (mode, uid, gid) = (st.st_mode & 0o7777, st.st_uid, st.st_gid);
    match FileType::from_raw_mode(st.st_mode) {
        FileType::RegularFile => {
            let size = u64::try_from(st.st_size).unwrap_or(u64::MAX);
            if size > room {
                return Err(format!(
                    "{} is {size} bytes; a record keeps at most {MAX_RECORD_FILE_BYTES} bytes of a file and {MAX_RECORD_BYTES} bytes of a call",
                    guest(rel)
                ));
            }
            let mut bytes = Vec::new();
            open_file(&dir, rel)?
                .take(room + 1)
                .read_to_end(&mut bytes)
                .map_err(|e| format!("{}: {e}", guest(rel)))?;
            if bytes.len() as u64 > room {
                return Err(format!("{} grew while it was recorded", guest(rel)));
            }
            Ok(PriorState::File {
                bytes,
                mode,
                uid,
                gid,
            })
        }
        FileType::Symlink => Ok(PriorState::Symlink {
            target: read_link(&dir, rel)?,
            uid,
            gid,
        }),
        FileType::Directory => Ok(PriorState::Directory { mode, uid, gid }),
        _ => Err(format!(
            "{} is not a regular file, link or directory",
            guest(rel)
        )),
    }
}

fn read_post(root: &OwnedFd, rel: &Path) -> Result<PostState, String> {
    let Some((dir, st)) = stat_of(root, rel)? else {
        return Ok(PostState::Absent);
    };
    let (mode, uid, gid) = (st.st_mode & 0o7777, st.st_uid, st.st_gid);
    Ok(match FileType::from_raw_mode(st.st_mode) {
        FileType::RegularFile => {
            let mut hasher = Sha256::new();
            std::io::copy(&mut open_file(&dir, rel)?, &mut hasher)
                .map_err(|e| format!("{}: {e}", guest(rel)))?;
            PostState::File {
                sha256: hex::encode(hasher.finalize()),
                mode,
                uid,
                gid,
            }
        }
        FileType::Symlink => PostState::Symlink {
            target: read_link(&dir, rel)?,
            uid,
            gid,
        },
        FileType::Directory => PostState::Directory { mode, uid, gid },
        _ => PostState::Other,
    })
}

/// Why a revert did not happen.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RevertError {
    /// The record says the call cannot be reverted.
    #[error("not revertible: {0}")]
    NotRevertible(String),
    /// Files changed since the call; nothing was restored. Each with a unified diff of
    /// what the revert would do to it as it is now.
    #[error("{}", changed_message(.0))]
    ChangedSince(Vec<(String, String)>),
    /// Restoring failed part-way (I/O); the message names the path.
    #[error("restoring failed: {0}")]
    Failed(String),
}

fn changed_message(changed: &[(String, String)]) -> String {
    let names: Vec<&str> = changed.iter().map(|(p, _)| p.as_str()).collect();
    let mut m = format!(
        "refused: {} changed since the task ran (use force to restore anyway); the revert would change:\n",
        names.join(", ")
    );
    for (_, diff) in changed {
        m.push_str(diff);
    }
    m
}

/// What a revert did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Restored {
    /// The paths put back (those already in their prior state are left out).
    pub restored: Vec<String>,
    /// Unified diff of the files the revert changed, from how they were to how they are
    /// now.
    pub diff: Option<String>,
}

/// Lines of context in a diff: 3, as `diff -u`.
const DIFF_CONTEXT_LINES: usize = 3;

/// The unified diff of `path` from `old` to `new` (`None`: absent), text or not.
fn unified(path: &str, old: Option<&[u8]>, new: Option<&[u8]>) -> String {
    let name = path.trim_start_matches('/');
    let a = old.map_or_else(|| "/dev/null".to_owned(), |_| format!("a/{name}"));
    let b = new.map_or_else(|| "/dev/null".to_owned(), |_| format!("b/{name}"));
    let old = String::from_utf8_lossy(old.unwrap_or_default());
    let new = String::from_utf8_lossy(new.unwrap_or_default());
    let text = similar::TextDiff::from_lines(old.as_ref(), new.as_ref())
        .unified_diff()
        .context_radius(DIFF_CONTEXT_LINES)
        .header(&a, &b)
        .to_string();
    if text.is_empty() {
        format!("--- {a}\n+++ {b}\n")
    } else {
        text
    }
}

/// The content now at `rel` when it is a regular file (for a diff), bounded.
fn current_bytes(root: &OwnedFd, rel: &Path) -> Option<Vec<u8>> {
    let (dir, st) = stat_of(root, rel).ok()??;
    if FileType::from_raw_mode(st.st_mode) != FileType::RegularFile {
        return None;
    }
    let mut bytes = Vec::new();
    open_file(&dir, rel)
        .ok()?
        .take(MAX_RECORD_FILE_BYTES)
        .read_to_end(&mut bytes)
        .ok()?;
    Some(bytes)
}

fn describe(state: &PostState) -> String {
    match state {
        PostState::Absent => "does not exist".into(),
        PostState::File { mode, uid, gid, .. } => {
            format!("a file, mode {mode:o}, owner {uid}:{gid}")
        }
        PostState::Symlink { target, .. } => format!("a link to {target}"),
        PostState::Directory { mode, uid, gid } => {
            format!("a directory, mode {mode:o}, owner {uid}:{gid}")
        }
        PostState::Other => "neither a file, link nor directory".into(),
    }
}

/// Restores `record` under `etc_dir` (the directory plugins see as /etc): in reverse
/// order of first touch, every path back to its prior state — bytes, mode, owner; what
/// did not exist is removed, what was removed comes back. Before anything is restored,
/// each path is compared with the record's post-call state: one that changed since (and
/// is not already in its prior state) refuses the whole revert, naming the files with a
/// diff, unless `force`. Paths already in their prior state are left alone, so a second
/// revert of the same record restores nothing.
pub fn restore(
    etc_dir: &Path,
    record: &ChangeRecord,
    force: bool,
) -> Result<Restored, RevertError> {
    if let Some(why) = &record.not_revertible {
        return Err(RevertError::NotRevertible(why.clone()));
    }
    let root = rustix::fs::open(
        etc_dir,
        OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| RevertError::Failed(format!("cannot open {}: {e}", etc_dir.display())))?;
    let mut todo = Vec::new();
    let mut changed = Vec::new();
    for p in &record.paths {
        let rel = super::files::relative_to_etc(&p.path)
            .map_err(|e| RevertError::Failed(format!("the record is damaged: {e}")))?;
        let now = read_post(&root, &rel).map_err(RevertError::Failed)?;
        let prior = p.prior.as_post();
        if now == prior {
            continue;
        }
        if now != p.post && !force {
            let prior_bytes = match &p.prior {
                PriorState::File { bytes, .. } => Some(bytes.as_slice()),
                _ => None,
            };
            let current = current_bytes(&root, &rel);
            let mut diff = unified(&p.path, current.as_deref(), prior_bytes);
            if current.is_none() || prior_bytes.is_none() || diff.lines().count() <= 2 {
                diff = format!(
                    "{}: now {}; before the task {}\n{diff}",
                    p.path,
                    describe(&now),
                    describe(&prior)
                );
            }
            changed.push((p.path.clone(), diff));
        }
        todo.push((rel, p, now));
    }
    if !changed.is_empty() {
        return Err(RevertError::ChangedSince(changed));
    }
    let mut out = Restored::default();
    let mut diff = String::new();
    for (rel, p, now) in todo.into_iter().rev() {
        let before = current_bytes(&root, &rel);
        put_back(&root, &rel, &p.prior, &now)
            .map_err(|e| RevertError::Failed(format!("{}: {e}", p.path)))?;
        let after = match &p.prior {
            PriorState::File { bytes, .. } => Some(bytes.as_slice()),
            _ => None,
        };
        if before.as_deref() != after {
            diff.push_str(&unified(&p.path, before.as_deref(), after));
        }
        out.restored.push(p.path.clone());
    }
    out.diff = (!diff.is_empty()).then_some(diff);
    Ok(out)
}

/// Removes whatever is at `name` in `dir` (`now` says what): a file or link is
/// unlinked, a directory removed (only when empty).
fn remove(dir: &OwnedFd, name: &std::ffi::OsStr, now: &PostState) -> Result<(), Errno> {
    match now {
        PostState::Absent => Ok(()),
        PostState::Directory { .. } => rustix::fs::unlinkat(dir, name, AtFlags::REMOVEDIR),
        _ => rustix::fs::unlinkat(dir, name, AtFlags::empty()),
    }
}

fn put_back(root: &OwnedFd, rel: &Path, prior: &PriorState, now: &PostState) -> Result<(), String> {
    let dir = open_parent(root, rel)
        .map_err(|e| e.to_string())?
        .ok_or_else(|| "its directory does not exist".to_owned())?;
    let name = name_of(rel);
    let err = |e: Errno| e.to_string();
    match prior {
        PriorState::Absent => remove(&dir, name, now).map_err(err),
        PriorState::File {
            bytes,
            mode,
            uid,
            gid,
        } => {
            if matches!(now, PostState::Directory { .. }) {
                remove(&dir, name, now).map_err(err)?;
            }
            // A temporary file beside it, then a rename over it: readers never see a
            // half-restored file.
            let tmp = format!(".hostplug-revert-{}", name.to_string_lossy());
            let _ = rustix::fs::unlinkat(&dir, tmp.as_str(), AtFlags::empty());
            let fd = rustix::fs::openat(
                &dir,
                tmp.as_str(),
                OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                Mode::from_raw_mode(0o600),
            )
            .map_err(err)?;
            let written = (|| {
                let mut file = std::fs::File::from(fd);
                std::io::Write::write_all(&mut file, bytes).map_err(|e| e.to_string())?;
                rustix::fs::fchown(&file, Some(Uid::from_raw(*uid)), Some(Gid::from_raw(*gid)))
                    .map_err(err)?;
                rustix::fs::fchmod(&file, Mode::from_raw_mode(*mode)).map_err(err)?;
                file.sync_all().map_err(|e| e.to_string())?;
                rustix::fs::renameat(&dir, tmp.as_str(), &dir, name).map_err(err)
            })();
            if written.is_err() {
                let _ = rustix::fs::unlinkat(&dir, tmp.as_str(), AtFlags::empty());
            }
            written
        }
        PriorState::Symlink { target, uid, gid } => {
            remove(&dir, name, now).map_err(err)?;
            rustix::fs::symlinkat(target.as_str(), &dir, name).map_err(err)?;
            rustix::fs::chownat(
                &dir,
                name,
                Some(Uid::from_raw(*uid)),
                Some(Gid::from_raw(*gid)),
                AtFlags::SYMLINK_NOFOLLOW,
            )
            .map_err(err)
        }
        PriorState::Directory { mode, uid, gid } => {
            if !matches!(now, PostState::Directory { .. }) {
                remove(&dir, name, now).map_err(err)?;
                rustix::fs::mkdirat(&dir, name, Mode::from_raw_mode(0o700)).map_err(err)?;
            }
            let fd = rustix::fs::openat(
                &dir,
                name,
                OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                Mode::empty(),
            )
            .map_err(err)?;
            rustix::fs::fchown(&fd, Some(Uid::from_raw(*uid)), Some(Gid::from_raw(*gid)))
                .map_err(err)?;
            rustix::fs::fchmod(&fd, Mode::from_raw_mode(*mode)).map_err(err)
        }
    }
}

/// Bytes as base64 text in JSON.
mod base64_bytes {
    use base64::Engine as _;
    use base64::engine::general_purpose::STANDARD;
    use serde::{Deserialize, Deserializer, Serializer};

    pub(super) fn serialize<S: Serializer>(bytes: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&STANDARD.encode(bytes))
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        let text = String::deserialize(d)?;
        STANDARD.decode(text).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::{MetadataExt, PermissionsExt};

    fn root(dir: &Path) -> OwnedFd {
        rustix::fs::open(dir, OFlags::PATH | OFlags::DIRECTORY, Mode::empty()).expect("open")
    }

    #[test]
    fn records_and_restores_files_links_and_absence() {
        let tmp = tempfile::tempdir().expect("tmp");
        let etc = tmp.path();
        std::fs::write(etc.join("hosts"), "a\n").expect("w");
        std::fs::set_permissions(etc.join("hosts"), std::fs::Permissions::from_mode(0o640))
            .expect("chmod");
        std::os::unix::fs::symlink("hosts", etc.join("link")).expect("ln");
        let fd = root(etc);
        let mut r = Recorder::default();
        let policy = EtcPolicy::default();
        for p in ["hosts", "link", "new", "hosts"] {
            r.note_use(&fd, &policy, Path::new(p), false);
        }
        // The call: change, replace the link, create.
        std::fs::write(etc.join("hosts"), "b\n").expect("w");
        std::fs::remove_file(etc.join("link")).expect("rm");
        std::fs::write(etc.join("link"), "x").expect("w");
        std::fs::write(etc.join("new"), "n").expect("w");
        let record = r.finish(&fd);
        assert!(record.is_revertible());
        assert_eq!(record.paths.len(), 3);
        let json = serde_json::to_string(&record).expect("json");
        let back: ChangeRecord = serde_json::from_str(&json).expect("back");
        assert_eq!(back, record);

        // A hand edit: refused with a diff, then forced.
        std::fs::write(etc.join("hosts"), "hand\n").expect("w");
        let e = restore(etc, &record, false).expect_err("changed since");
        assert!(e.to_string().contains("/etc/hosts changed since"), "{e}");
        assert!(e.to_string().contains("-hand\n+a\n"), "{e}");
        let done = restore(etc, &record, true).expect("forced");
        assert_eq!(done.restored.len(), 3);
        assert_eq!(std::fs::read(etc.join("hosts")).expect("r"), b"a\n");
        assert_eq!(
            std::fs::metadata(etc.join("hosts")).expect("m").mode() & 0o7777,
            0o640
        );
        assert_eq!(
            std::fs::read_link(etc.join("link")).expect("link"),
            PathBuf::from("hosts")
        );
        assert!(!etc.join("new").exists());
        // Idempotent.
        let again = restore(etc, &record, false).expect("again");
        assert!(again.restored.is_empty());
    }

    #[test]
    fn bounds_and_sensitive_paths_make_a_call_not_revertible() {
        let tmp = tempfile::tempdir().expect("tmp");
        let etc = tmp.path();
        let big = vec![b'x'; usize::try_from(MAX_RECORD_FILE_BYTES).expect("fits") + 1];
        std::fs::write(etc.join("big"), big).expect("w");
        let fd = root(etc);
        let policy = EtcPolicy::default();
        let mut r = Recorder::default();
        r.note_use(&fd, &policy, Path::new("big"), false);
        let record = r.finish(&fd);
        assert!(
            record
                .not_revertible
                .as_deref()
                .is_some_and(|m| m.contains("at most")),
            "{record:?}"
        );
        assert!(matches!(
            restore(etc, &record, true),
            Err(RevertError::NotRevertible(_))
        ));
        let mut r = Recorder::default();
        r.note_use(&fd, &policy, Path::new("shadow"), false);
        assert!(
            r.finish(&fd)
                .not_revertible
                .is_some_and(|m| m.contains("sensitive"))
        );
        let mut r = Recorder::default();
        for i in 0..=MAX_RECORD_PATHS {
            r.note_use(&fd, &policy, Path::new(&format!("f{i}")), false);
        }
        assert!(
            r.finish(&fd)
                .not_revertible
                .is_some_and(|m| m.contains("paths"))
        );
    }
}

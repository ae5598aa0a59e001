//! `wasi:filesystem/types` with the sensitive paths taken out: a host implementation
//! that checks each path-taking call against the [`EtcPolicy`] and then hands it to
//! wasmtime-wasi's own implementation (which keeps its sandbox: the preopen, read-only
//! in dry runs, no `..` or links leading out).
//!
//! wasmtime-wasi's preopens have no path filter, so the check has to sit in front of
//! every call that names a path. For `descriptor + path` the host works out:
//! * where the descriptor really is (`/proc/thread-self/fd`: a directory renamed or
//!   reached through a link is seen where it is, not where the plugin thinks);
//! * the path lexically joined to it (`..` applied);
//! * the same with every symbolic link of the parent resolved by the kernel
//!   (`openat2(RESOLVE_IN_ROOT)` from the etc directory), and, when the call follows
//!   links, of the path itself.
//!
//! The call is refused (`access`, and a `host` log record naming the path) when any of
//! these is sensitive for what the call does, or outside the call's path scope (the
//! /etc paths its HostPlugin covers and its policies allow); a rename or removal is also
//! refused when it would move a directory holding sensitive paths, or, with a scope, a
//! directory not covered as a whole (`dir/**`). An opened descriptor is checked once
//! more where it really is, and closed if that is refused. With a scope, a directory
//! listing shows only the entries the call may read (covered paths and the directories
//! on the way to them). A plugin runs
//! single-threaded, so nothing of its own can change a link between the check and the
//! call. Two plugins writing the same /etc at once could race a link swap against each
//! other's creation of a file; reads and attribute changes are checked on the opened
//! descriptor and are not affected.
//!
//! In a mutating call, every call that changes what a path holds (open for write,
//! create or truncate; create, link, rename, remove) first has the path's prior state
//! noted for the revert record (`record.rs`), after the policy allowed it and before
//! wasmtime-wasi acts.
//!
//! Calls that take no path (read, write, stat of an open descriptor, ...) pass straight
//! through: their descriptor was checked when it was opened. A file's output stream is
//! handed out watched (`streams.rs`), so that the host can say why a write failed where
//! the plugin hears only "I/O error". This module must never widen what wasmtime-wasi
//! allows.

use std::os::fd::{AsFd, OwnedFd};
use std::path::{Component, Path, PathBuf};
use std::sync::Arc;

use rustix::fs::{Mode, OFlags, ResolveFlags};
use wasmtime::component::Resource;
use wasmtime_wasi::filesystem::Descriptor;
use wasmtime_wasi::p2::bindings::filesystem::types::{
    self, ErrorCode, HostDescriptor, HostDirectoryEntryStream,
};
use wasmtime_wasi::p2::{DynInputStream, DynOutputStream, FsError, FsResult};

use super::sensitive::{Access, EtcPolicy};
use super::streams::WatchedOutputStream;
use super::{EtcView, fd_path, rel_in_root};
use crate::capability::CapabilityError;

/// What the etc capability needs per store to check paths: the etc directory (opened
/// as a path only) and its real path, the policy, and where each open directory
/// listing of a narrowed call lists (relative to /etc), to filter its entries.
#[derive(Debug)]
pub(crate) struct EtcGuard {
    pub(super) root: Option<(OwnedFd, PathBuf)>,
    pub(super) policy: Arc<EtcPolicy>,
    listings: std::collections::HashMap<u32, PathBuf>,
}

impl EtcGuard {
    /// A guard for the etc directory `dir` (the one preopened as `/etc`), or for no
    /// directory when the invocation has no etc grant.
    pub(crate) fn new(dir: Option<&Path>, policy: Arc<EtcPolicy>) -> std::io::Result<Self> {
        let root = match dir {
            None => None,
            Some(dir) => {
                let fd = rustix::fs::open(
                    dir,
                    OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
                    Mode::empty(),
                )?;
                let real = fd_path(fd.as_fd())?;
                Some((fd, real))
            }
        };
        Ok(Self {
            root,
            policy,
            listings: std::collections::HashMap::new(),
        })
    }

    /// Whether `rel` (relative to /etc, as `targets` gives it) is a directory, without
    /// following a final link and without leaving the etc directory.
    fn is_dir(&self, rel: &Path) -> bool {
        let Some((root, _)) = &self.root else {
            return false;
        };
        let rel = if rel.as_os_str().is_empty() {
            Path::new(".")
        } else {
            rel
        };
        rustix::fs::openat2(
            root,
            rel,
            OFlags::PATH | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::empty(),
            ResolveFlags::IN_ROOT | ResolveFlags::NO_MAGICLINKS,
        )
        .and_then(|fd| rustix::fs::fstat(&fd))
        .is_ok_and(|st| {
            rustix::fs::FileType::from_raw_mode(st.st_mode) == rustix::fs::FileType::Directory
        })
    }

    /// Where the call on `path` below `dir_rel` really acts, relative to /etc: with
    /// `follow`, through a final link to something that exists; otherwise the name in
    /// its parent as the kernel resolves the parent.
    pub(super) fn real_target(&self, dir_rel: &Path, path: &str, follow: bool) -> Option<PathBuf> {
        // `targets` lists the lexical path, then the one with the parent resolved, then
        // (following) the one fully resolved, each only where it resolves.
        self.targets(dir_rel, path, follow).ok()?.pop()
    }

    /// Every path the call on `path` below `dir_rel` may reach, relative to /etc.
    fn targets(&self, dir_rel: &Path, path: &str, follow: bool) -> Result<Vec<PathBuf>, ErrorCode> {
        let Some((root, _)) = &self.root else {
            return Err(ErrorCode::NotPermitted);
        };
        let lexical = join_lexically(dir_rel, path).ok_or(ErrorCode::NotPermitted)?;
        let mut out = vec![lexical.clone()];
        let resolve = |rel: &Path, flags: OFlags| -> Option<PathBuf> {
            let rel = if rel.as_os_str().is_empty() {
                Path::new(".")
            } else {
                rel
            };
            let fd = rustix::fs::openat2(
                root,
                rel,
                flags | OFlags::PATH | OFlags::CLOEXEC,
                Mode::empty(),
                ResolveFlags::IN_ROOT | ResolveFlags::NO_MAGICLINKS,
            )
            .ok()?;
            let real = fd_path(fd.as_fd()).ok()?;
            rel_in_root(&self.root.as_ref()?.1, &real)
        };
        if let (Some(parent), Some(name)) = (lexical.parent(), lexical.file_name())
            && let Some(real_parent) = resolve(parent, OFlags::DIRECTORY)
        {
            out.push(real_parent.join(name));
        }
        if follow && let Some(real) = resolve(&lexical, OFlags::empty()) {
            out.push(real);
        }
        Ok(out)
    }
}

/// `path` (a WASI relative path) joined to `dir` with `.` and `..` applied; `None` when
/// it is absolute or climbs above /etc (wasmtime-wasi refuses those too).
fn join_lexically(dir: &Path, path: &str) -> Option<PathBuf> {
    if path.starts_with('/') {
        return None;
    }
    let joined = dir.join(path);
    let mut parts: Vec<&std::ffi::OsStr> = Vec::new();
    for c in joined.components() {
        match c {
            Component::Normal(s) => parts.push(s),
            Component::CurDir => {}
            Component::ParentDir => {
                parts.pop()?;
            }
            Component::RootDir | Component::Prefix(_) => return None,
        }
    }
    Some(parts.iter().collect())
}

/// How a call treats the path it names.
#[derive(Clone, Copy)]
enum Use {
    /// Read or write what is there.
    Plain(Access),
    /// Rename or remove it (with whatever it holds); `true`: what moves is a directory.
    Tree(bool),
}

impl EtcView<'_> {
    /// Where the descriptor `fd` really is, relative to /etc.
    fn dir_rel(&mut self, fd: &Resource<Descriptor>) -> FsResult<PathBuf> {
        let root = &self
            .state
            .guard
            .root
            .as_ref()
            .ok_or(ErrorCode::NotPermitted)?
            .1;
        let real = match self.inner.table.get(fd)? {
            Descriptor::Dir(d) => fd_path(d.dir.as_fd()),
            Descriptor::File(f) => fd_path(f.file.as_fd()),
        }
        .map_err(|_| ErrorCode::NotPermitted)?;
        Ok(rel_in_root(root, &real).ok_or(ErrorCode::NotPermitted)?)
    }

    /// Refuses the call on `path` below `fd` when any target of it is sensitive.
    fn check(
        &mut self,
        fd: &Resource<Descriptor>,
        path: &str,
        follow: bool,
        how: Use,
    ) -> FsResult<()> {
        let dir = self.dir_rel(fd)?;
        for target in self.state.guard.targets(&dir, path, follow)? {
            let verdict = match how {
                Use::Plain(access) => self.state.guard.policy.check(&target, access),
                Use::Tree(dir) => self.state.guard.policy.check_tree(&target, dir),
            };
            if let Err(refused) = verdict {
                return Err(self.refuse(refused));
            }
        }
        Ok(())
    }

    /// Whether `path` below `fd` is a directory (where the kernel resolves its parent).
    fn is_dir_at(&mut self, fd: &Resource<Descriptor>, path: &str) -> bool {
        self.dir_rel(fd)
            .ok()
            .and_then(|dir| self.state.guard.real_target(&dir, path, false))
            .is_some_and(|rel| self.state.guard.is_dir(&rel))
    }

    /// Notes `path` below `fd` for the revert record, before the call changes it.
    fn record(&mut self, fd: &Resource<Descriptor>, path: &str, follow: bool, moves: bool) {
        if !self.state.records() {
            return;
        }
        // A descriptor that is nowhere in /etc fails the call itself.
        if let Ok(dir) = self.dir_rel(fd) {
            self.state.record_at(&dir, path, follow, moves);
        }
    }

    /// `stream` (a file's output stream wasmtime-wasi just put in the table) replaced
    /// by the same stream watched for failed writes (`streams.rs`), at a new handle.
    /// wasmtime-wasi pushes it as a plain entry (no parent, no children yet), so taking
    /// it out and pushing the wrapper is all there is.
    fn watch(
        &mut self,
        stream: Resource<DynOutputStream>,
        path: Option<PathBuf>,
    ) -> FsResult<Resource<DynOutputStream>> {
        let inner = self.inner.table.delete(stream)?;
        let watched: DynOutputStream = Box::new(WatchedOutputStream::new(
            inner,
            path,
            self.state.failed_write.clone(),
        ));
        Ok(self.inner.table.push(watched)?)
    }

    /// Notes the policy's refusal in the call's logs and answers `access` (the WASI
    /// filesystem's own error code: WASI has no place for the host's reason).
    fn refuse(&mut self, refused: CapabilityError) -> FsError {
        self.logs.refusal(refused.message().to_owned());
        ErrorCode::Access.into()
    }
}

fn follows(flags: types::PathFlags) -> bool {
    flags.contains(types::PathFlags::SYMLINK_FOLLOW)
}

impl types::Host for EtcView<'_> {
    fn convert_error_code(&mut self, err: FsError) -> wasmtime::Result<ErrorCode> {
        types::Host::convert_error_code(&mut self.inner, err)
    }

    fn filesystem_error_code(
        &mut self,
        err: Resource<wasmtime::Error>,
    ) -> wasmtime::Result<Option<ErrorCode>> {
        types::Host::filesystem_error_code(&mut self.inner, err)
    }
}

impl HostDescriptor for EtcView<'_> {
    async fn advise(
        &mut self,
        fd: Resource<Descriptor>,
        offset: types::Filesize,
        len: types::Filesize,
        advice: types::Advice,
    ) -> FsResult<()> {
        HostDescriptor::advise(&mut self.inner, fd, offset, len, advice).await
    }

    async fn sync_data(&mut self, fd: Resource<Descriptor>) -> FsResult<()> {
        HostDescriptor::sync_data(&mut self.inner, fd).await
    }

    async fn get_flags(&mut self, fd: Resource<Descriptor>) -> FsResult<types::DescriptorFlags> {
        HostDescriptor::get_flags(&mut self.inner, fd).await
    }

    async fn get_type(&mut self, fd: Resource<Descriptor>) -> FsResult<types::DescriptorType> {
        HostDescriptor::get_type(&mut self.inner, fd).await
    }

    async fn set_size(&mut self, fd: Resource<Descriptor>, size: types::Filesize) -> FsResult<()> {
        HostDescriptor::set_size(&mut self.inner, fd, size).await
    }

    async fn set_times(
        &mut self,
        fd: Resource<Descriptor>,
        atim: types::NewTimestamp,
        mtim: types::NewTimestamp,
    ) -> FsResult<()> {
        HostDescriptor::set_times(&mut self.inner, fd, atim, mtim).await
    }

    async fn read(
        &mut self,
        fd: Resource<Descriptor>,
        len: types::Filesize,
        offset: types::Filesize,
    ) -> FsResult<(Vec<u8>, bool)> {
        HostDescriptor::read(&mut self.inner, fd, len, offset).await
    }

    async fn write(
        &mut self,
        fd: Resource<Descriptor>,
        buf: Vec<u8>,
        offset: types::Filesize,
    ) -> FsResult<types::Filesize> {
        HostDescriptor::write(&mut self.inner, fd, buf, offset).await
    }

    async fn read_directory(
        &mut self,
        fd: Resource<Descriptor>,
    ) -> FsResult<Resource<types::DirectoryEntryStream>> {
        // A narrowed call lists only what it may read: note where this listing lists.
        let dir = if self.state.guard.policy.narrows_reads() {
            Some(self.dir_rel(&fd)?)
        } else {
            None
        };
        let stream = HostDescriptor::read_directory(&mut self.inner, fd).await?;
        if let Some(dir) = dir {
            self.state.guard.listings.insert(stream.rep(), dir);
        }
        Ok(stream)
    }

    async fn sync(&mut self, fd: Resource<Descriptor>) -> FsResult<()> {
        HostDescriptor::sync(&mut self.inner, fd).await
    }

    async fn create_directory_at(
        &mut self,
        fd: Resource<Descriptor>,
        path: String,
    ) -> FsResult<()> {
        self.check(&fd, &path, false, Use::Plain(Access::Write))?;
        self.record(&fd, &path, false, false);
        HostDescriptor::create_directory_at(&mut self.inner, fd, path).await
    }

    async fn stat(&mut self, fd: Resource<Descriptor>) -> FsResult<types::DescriptorStat> {
        HostDescriptor::stat(&mut self.inner, fd).await
    }

    async fn stat_at(
        &mut self,
        fd: Resource<Descriptor>,
        path_flags: types::PathFlags,
        path: String,
    ) -> FsResult<types::DescriptorStat> {
        self.check(&fd, &path, follows(path_flags), Use::Plain(Access::Read))?;
        HostDescriptor::stat_at(&mut self.inner, fd, path_flags, path).await
    }

    async fn set_times_at(
        &mut self,
        fd: Resource<Descriptor>,
        path_flags: types::PathFlags,
        path: String,
        atim: types::NewTimestamp,
        mtim: types::NewTimestamp,
    ) -> FsResult<()> {
        self.check(&fd, &path, follows(path_flags), Use::Plain(Access::Write))?;
        HostDescriptor::set_times_at(&mut self.inner, fd, path_flags, path, atim, mtim).await
    }

    async fn link_at(
        &mut self,
        fd: Resource<Descriptor>,
        old_path_flags: types::PathFlags,
        old_path: String,
        new_descriptor: Resource<Descriptor>,
        new_path: String,
    ) -> FsResult<()> {
        // A second name for a sensitive file would be a way around every path check.
        self.check(
            &fd,
            &old_path,
            follows(old_path_flags),
            Use::Plain(Access::Write),
        )?;
        self.check(&new_descriptor, &new_path, false, Use::Plain(Access::Write))?;
        self.record(&new_descriptor, &new_path, false, false);
        HostDescriptor::link_at(
            &mut self.inner,
            fd,
            old_path_flags,
            old_path,
            new_descriptor,
            new_path,
        )
        .await
    }

    async fn open_at(
        &mut self,
        fd: Resource<Descriptor>,
        path_flags: types::PathFlags,
        path: String,
        oflags: types::OpenFlags,
        flags: types::DescriptorFlags,
    ) -> FsResult<Resource<Descriptor>> {
        let writes = flags
            .intersects(types::DescriptorFlags::WRITE | types::DescriptorFlags::MUTATE_DIRECTORY)
            || oflags.intersects(types::OpenFlags::CREATE | types::OpenFlags::TRUNCATE);
        let access = if writes { Access::Write } else { Access::Read };
        self.check(&fd, &path, follows(path_flags), Use::Plain(access))?;
        // Before the open: `O_TRUNC` empties the file at once. A directory opened to
        // create entries in it is not itself changed; its entries are noted one by one.
        if flags.contains(types::DescriptorFlags::WRITE)
            || oflags.intersects(types::OpenFlags::CREATE | types::OpenFlags::TRUNCATE)
        {
            self.record(&fd, &path, follows(path_flags), false);
        }
        let opened =
            HostDescriptor::open_at(&mut self.inner, fd, path_flags, path, oflags, flags).await?;
        // Where it really is, whatever the links said.
        let rel = self.dir_rel(&opened)?;
        if let Err(refused) = self.state.guard.policy.check(&rel, access) {
            HostDescriptor::drop(&mut self.inner, opened).map_err(FsError::trap)?;
            return Err(self.refuse(refused));
        }
        Ok(opened)
    }

    fn drop(&mut self, fd: Resource<Descriptor>) -> wasmtime::Result<()> {
        HostDescriptor::drop(&mut self.inner, fd)
    }

    async fn readlink_at(&mut self, fd: Resource<Descriptor>, path: String) -> FsResult<String> {
        self.check(&fd, &path, false, Use::Plain(Access::Read))?;
        HostDescriptor::readlink_at(&mut self.inner, fd, path).await
    }

    async fn remove_directory_at(
        &mut self,
        fd: Resource<Descriptor>,
        path: String,
    ) -> FsResult<()> {
        self.check(&fd, &path, false, Use::Tree(true))?;
        self.record(&fd, &path, false, false);
        HostDescriptor::remove_directory_at(&mut self.inner, fd, path).await
    }

    async fn rename_at(
        &mut self,
        fd: Resource<Descriptor>,
        old_path: String,
        new_fd: Resource<Descriptor>,
        new_path: String,
    ) -> FsResult<()> {
        // What moves is what the old name holds; the new name gets all of it.
        let dir = self.is_dir_at(&fd, &old_path);
        self.check(&fd, &old_path, false, Use::Tree(dir))?;
        self.check(&new_fd, &new_path, false, Use::Tree(dir))?;
        self.record(&fd, &old_path, false, true);
        self.record(&new_fd, &new_path, false, false);
        HostDescriptor::rename_at(&mut self.inner, fd, old_path, new_fd, new_path).await
    }

    async fn symlink_at(
        &mut self,
        fd: Resource<Descriptor>,
        src_path: String,
        dest_path: String,
    ) -> FsResult<()> {
        // The link's target is only text; whatever opens through the link is checked.
        self.check(&fd, &dest_path, false, Use::Plain(Access::Write))?;
        self.record(&fd, &dest_path, false, false);
        HostDescriptor::symlink_at(&mut self.inner, fd, src_path, dest_path).await
    }

    async fn unlink_file_at(&mut self, fd: Resource<Descriptor>, path: String) -> FsResult<()> {
        self.check(&fd, &path, false, Use::Plain(Access::Write))?;
        self.record(&fd, &path, false, false);
        HostDescriptor::unlink_file_at(&mut self.inner, fd, path).await
    }

    fn read_via_stream(
        &mut self,
        fd: Resource<Descriptor>,
        offset: types::Filesize,
    ) -> FsResult<Resource<DynInputStream>> {
        HostDescriptor::read_via_stream(&mut self.inner, fd, offset)
    }

    fn write_via_stream(
        &mut self,
        fd: Resource<Descriptor>,
        offset: types::Filesize,
    ) -> FsResult<Resource<DynOutputStream>> {
        let path = self.dir_rel(&fd).ok();
        let stream = HostDescriptor::write_via_stream(&mut self.inner, fd, offset)?;
        self.watch(stream, path)
    }

    fn append_via_stream(
        &mut self,
        fd: Resource<Descriptor>,
    ) -> FsResult<Resource<DynOutputStream>> {
        let path = self.dir_rel(&fd).ok();
        let stream = HostDescriptor::append_via_stream(&mut self.inner, fd)?;
        self.watch(stream, path)
    }

    async fn is_same_object(
        &mut self,
        a: Resource<Descriptor>,
        b: Resource<Descriptor>,
    ) -> wasmtime::Result<bool> {
        HostDescriptor::is_same_object(&mut self.inner, a, b).await
    }

    async fn metadata_hash(
        &mut self,
        fd: Resource<Descriptor>,
    ) -> FsResult<types::MetadataHashValue> {
        HostDescriptor::metadata_hash(&mut self.inner, fd).await
    }

    async fn metadata_hash_at(
        &mut self,
        fd: Resource<Descriptor>,
        path_flags: types::PathFlags,
        path: String,
    ) -> FsResult<types::MetadataHashValue> {
        self.check(&fd, &path, follows(path_flags), Use::Plain(Access::Read))?;
        HostDescriptor::metadata_hash_at(&mut self.inner, fd, path_flags, path).await
    }
}

impl HostDirectoryEntryStream for EtcView<'_> {
    async fn read_directory_entry(
        &mut self,
        stream: Resource<types::DirectoryEntryStream>,
    ) -> FsResult<Option<types::DirectoryEntry>> {
        let Some(dir) = self.state.guard.listings.get(&stream.rep()).cloned() else {
            return HostDirectoryEntryStream::read_directory_entry(&mut self.inner, stream).await;
        };
        loop {
            let rep = Resource::<types::DirectoryEntryStream>::new_borrow(stream.rep());
            match HostDirectoryEntryStream::read_directory_entry(&mut self.inner, rep).await? {
                Some(entry) if !self.state.guard.policy.lists(&dir.join(&entry.name)) => {}
                other => return Ok(other),
            }
        }
    }

    fn drop(&mut self, stream: Resource<types::DirectoryEntryStream>) -> wasmtime::Result<()> {
        self.state.guard.listings.remove(&stream.rep());
        HostDirectoryEntryStream::drop(&mut self.inner, stream)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lexical_joins() {
        let j = |d: &str, p: &str| join_lexically(Path::new(d), p);
        assert_eq!(j("", "shadow"), Some(PathBuf::from("shadow")));
        assert_eq!(j("ssh", "../shadow"), Some(PathBuf::from("shadow")));
        assert_eq!(
            j("a/b", "./../../kubernetes/./admin.conf"),
            Some(PathBuf::from("kubernetes/admin.conf"))
        );
        assert_eq!(j("", ".."), None);
        assert_eq!(j("ssh", "/etc/shadow"), None);
    }

    #[test]
    fn targets_follow_links_inside() {
        let tmp = tempfile::tempdir().expect("ok");
        let etc = tmp.path().join("etc");
        std::fs::create_dir_all(etc.join("kubernetes")).expect("ok");
        std::fs::write(etc.join("shadow"), "x").expect("ok");
        std::os::unix::fs::symlink("shadow", etc.join("innocent")).expect("ok");
        std::os::unix::fs::symlink("kubernetes", etc.join("k")).expect("ok");
        let guard = EtcGuard::new(Some(&etc), Arc::default()).expect("guard");
        let t = guard.targets(Path::new(""), "innocent", true).expect("ok");
        assert!(t.contains(&PathBuf::from("shadow")), "{t:?}");
        let t = guard
            .targets(Path::new(""), "k/admin.conf", false)
            .expect("ok");
        assert!(t.contains(&PathBuf::from("kubernetes/admin.conf")), "{t:?}");
        let t = guard.targets(Path::new(""), "innocent", false).expect("ok");
        assert!(!t.contains(&PathBuf::from("shadow")), "{t:?}");
    }
}

//! The `files` host import: mode and ownership of files under the guest's `/etc`, which
//! `wasi:filesystem` cannot read or set.
//!
//! Each call gets exactly the reach of the invocation's `etc` grant: no grant, no call;
//! a read grant (or any dry run) may `stat` but not `set-attributes`. A guest path is
//! checked lexically (absolute, under `/etc`), then opened beneath the host directory
//! preopened as `/etc` with `openat2(RESOLVE_BENEATH | RESOLVE_NO_MAGICLINKS)`: the
//! kernel follows symbolic links only while they stay inside and refuses absolute links
//! and `..` that lead out, atomically, so no race between a check and the use can escape.
//! The file is opened as a path only (`O_PATH`: no read or write access, so a mode-0000
//! file or a FIFO is no obstacle); where it really is (`/proc/thread-self/fd`) is checked
//! against the sensitive paths of [`EtcPolicy`]; attributes are then read and set on that
//! descriptor (`fstat`, `fchownat(AT_EMPTY_PATH)`, `chmod` of its `/proc` link), never by
//! the plugin's path.

use std::ffi::OsStr;
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Component, Path, PathBuf};
use std::sync::Arc;

use rustix::fs::{AtFlags, FileType, Gid, Mode, OFlags, ResolveFlags, Uid};
use rustix::io::Errno;

use super::sensitive::{Access, EtcPolicy};
use super::{fd_path, rel_in_root};
use crate::EtcAccess;
use crate::bindings::hostplug::plugin::files as wit;
use crate::capability::CapabilityError;

/// Permission bits a mode may hold.
pub(crate) const PERMISSION_BITS: u32 = 0o7777;
/// setuid and setgid: never set through the import (see the WIT).
pub(crate) const SET_ID_BITS: u32 = 0o6000;
/// Write permission for every user. Never set on a file under /etc: any local user could
/// then change what root reads (`/etc/passwd`, sudoers, unit files). Allowed on a
/// directory only together with the sticky bit (`0o1777`, the `/tmp` idiom).
pub(crate) const WORLD_WRITABLE_BIT: u32 = 0o002;
/// The sticky bit.
pub(crate) const STICKY_BIT: u32 = 0o1000;

/// A file's permission bits and numeric owner and group.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Attributes {
    pub(crate) mode: u32,
    pub(crate) uid: u32,
    pub(crate) gid: u32,
}

/// What one invocation may do through the `files` import.
#[derive(Debug, Clone, Default)]
pub(crate) struct EtcFiles {
    /// The host directory preopened as `/etc`; `None` without an etc grant.
    root: Option<PathBuf>,
    /// May set attributes: a write grant outside a dry run.
    writable: bool,
    dry_run: bool,
    /// The sensitive paths.
    policy: Arc<EtcPolicy>,
}

impl EtcFiles {
    /// The reach of an invocation with `access` to `root` (the grant's etc directory),
    /// with the sensitive paths of `policy` out of reach.
    pub(crate) fn new(
        access: EtcAccess,
        root: Option<&Path>,
        dry_run: bool,
        policy: Arc<EtcPolicy>,
    ) -> Self {
        let root = match access {
            EtcAccess::None => None,
            EtcAccess::Read | EtcAccess::Write => root.map(Path::to_path_buf),
        };
        Self {
            root,
            writable: access == EtcAccess::Write && !dry_run,
            dry_run,
            policy,
        }
    }

    /// `stat` of the import.
    pub(crate) fn stat(&self, path: &str) -> Result<Attributes, CapabilityError> {
        let fd = self.open(path, Access::Read)?;
        let st = rustix::fs::fstat(&fd).map_err(|e| errno(path, e))?;
        Ok(Attributes {
            mode: st.st_mode & PERMISSION_BITS,
            uid: st.st_uid,
            gid: st.st_gid,
        })
    }

    /// `set-attributes` of the import.
    pub(crate) fn set_attributes(
        &self,
        path: &str,
        mode: Option<u32>,
        uid: Option<u32>,
        gid: Option<u32>,
    ) -> Result<(), CapabilityError> {
        if self.root.is_none() {
            return Err(no_access());
        }
        if self.dry_run {
            return Err(CapabilityError::denied(format!(
                "{path}: a dry run cannot change modes or owners"
            )));
        }
        if !self.writable {
            return Err(CapabilityError::denied(format!(
                "{path}: /etc is read-only for this plugin (its etc capability is read)"
            )));
        }
        if let Some(mode) = mode {
            check_mode(mode)?;
        }
        for (name, id) in [("uid", uid), ("gid", gid)] {
            if id == Some(u32::MAX) {
                return Err(CapabilityError::invalid(format!(
                    "{name} 4294967295 is not an id; leave it out to keep the {name}"
                )));
            }
        }
        // A path-only descriptor: no read access is needed (a mode-0000 file can be
        // changed) and nothing is opened for I/O (a FIFO does not block).
        let fd = self.open(path, Access::Write)?;
        let st = rustix::fs::fstat(&fd).map_err(|e| errno(path, e))?;
        let kind = FileType::from_raw_mode(st.st_mode);
        if kind != FileType::RegularFile && kind != FileType::Directory {
            return Err(CapabilityError::denied(format!(
                "{path}: not a regular file or directory; only those can be changed"
            )));
        }
        if let Some(mode) = mode {
            check_mode_for(mode, kind)?;
        }
        if uid.is_some() || gid.is_some() {
            rustix::fs::chownat(
                &fd,
                "",
                uid.map(Uid::from_raw),
                gid.map(Gid::from_raw),
                AtFlags::EMPTY_PATH,
            )
            .map_err(|e| errno(path, e))?;
        }
        if let Some(mode) = mode {
            // chmod has no AT_EMPTY_PATH before Linux 6.6: go through the descriptor's
            // own /proc link, which names exactly the opened inode.
            let link = format!("/proc/thread-self/fd/{}", raw(&fd));
            rustix::fs::chmod(link.as_str(), Mode::from_raw_mode(mode))
                .map_err(|e| errno(path, e))?;
        }
        Ok(())
    }

    /// Opens `path` (a guest path) beneath the etc directory as a path-only descriptor
    /// and checks where it really is against the sensitive paths for `access`.
    fn open(&self, path: &str, access: Access) -> Result<OwnedFd, CapabilityError> {
        let root = self.root.as_ref().ok_or_else(no_access)?;
        let rel = relative_to_etc(path)?;
        self.policy.check(&rel, access)?;
        let dir = rustix::fs::open(
            root,
            OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| CapabilityError::failed(format!("cannot open the etc directory: {e}")))?;
        let fd = rustix::fs::openat2(
            &dir,
            &rel,
            OFlags::PATH | OFlags::CLOEXEC,
            Mode::empty(),
            ResolveFlags::BENEATH | ResolveFlags::NO_MAGICLINKS,
        )
        .map_err(|e| match e {
            Errno::XDEV => CapabilityError::denied(format!(
                "{path}: a symbolic link or `..` leads out of /etc"
            )),
            Errno::NOSYS => CapabilityError::failed(format!(
                "{path}: the kernel lacks openat2 (Linux 5.6 or later is needed to resolve paths safely)"
            )),
            e => errno(path, e),
        })?;
        // Where the links led: the real path, as the kernel resolved it.
        let root_real = fd_path(dir.as_fd()).map_err(|e| {
            CapabilityError::failed(format!("cannot resolve the etc directory: {e}"))
        })?;
        let real = fd_path(fd.as_fd())
            .map_err(|e| CapabilityError::failed(format!("{path}: cannot resolve: {e}")))?;
        let real_rel = rel_in_root(&root_real, &real)
            .ok_or_else(|| CapabilityError::denied(format!("{path}: resolves outside /etc")))?;
        self.policy.check(&real_rel, access)?;
        Ok(fd)
    }
}

fn raw(fd: &OwnedFd) -> i32 {
    use std::os::fd::AsRawFd;
    fd.as_raw_fd()
}

fn no_access() -> CapabilityError {
    CapabilityError::denied("no etc access: this plugin has no etc capability")
}

/// The path below `/etc` of a guest path: absolute, NUL-free and strictly under `/etc`
/// after lexical normalisation.
pub(crate) fn relative_to_etc(path: &str) -> Result<PathBuf, CapabilityError> {
    if path.contains('\0') {
        return Err(CapabilityError::invalid("the path contains a NUL byte"));
    }
    let p = Path::new(path);
    if !p.is_absolute() {
        return Err(CapabilityError::denied(format!(
            "{path}: not an absolute path; give the full path under /etc"
        )));
    }
    let mut parts: Vec<&OsStr> = Vec::new();
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
    if parts.len() < 2 || parts[0] != "etc" {
        return Err(outside(path));
    }
    Ok(parts[1..].iter().collect())
}

fn outside(path: &str) -> CapabilityError {
    CapabilityError::denied(format!(
        "{path}: outside /etc; only files under /etc can be used"
    ))
}

/// Refuses modes with bits beyond 0o7777 and the setuid/setgid bits.
pub(crate) fn check_mode(mode: u32) -> Result<(), CapabilityError> {
    if mode & !PERMISSION_BITS != 0 {
        return Err(CapabilityError::invalid(format!(
            "mode {mode:#o} has bits beyond the permission bits 0o7777"
        )));
    }
    if mode & SET_ID_BITS != 0 {
        return Err(CapabilityError::denied(format!(
            "mode {mode:#o} sets the setuid or setgid bit, which plugins may not set"
        )));
    }
    Ok(())
}

/// Refuses world-writable modes: on a regular file always, on a directory unless the
/// sticky bit is set too.
pub(crate) fn check_mode_for(mode: u32, kind: FileType) -> Result<(), CapabilityError> {
    let sticky_dir = kind == FileType::Directory && mode & STICKY_BIT != 0;
    if mode & WORLD_WRITABLE_BIT != 0 && !sticky_dir {
        return Err(CapabilityError::denied(format!(
            "mode {mode:#o} makes it writable by every user on the node, which plugins may not set"
        )));
    }
    Ok(())
}

fn errno(path: &str, e: Errno) -> CapabilityError {
    match e {
        Errno::NOENT | Errno::NOTDIR => {
            CapabilityError::not_found(format!("{path}: no such file or directory"))
        }
        Errno::ACCESS | Errno::PERM => CapabilityError::denied(format!("{path}: {e}")),
        Errno::ROFS => CapabilityError::denied(format!("{path}: read-only file system")),
        Errno::LOOP => CapabilityError::denied(format!("{path}: too many symbolic links")),
        e => CapabilityError::failed(format!("{path}: {e}")),
    }
}

/// The `files` import, with the reach of this call's etc grant.
impl wit::Host for super::EtcView<'_> {
    fn stat(&mut self, path: String) -> Result<wit::Attributes, wit::CapabilityError> {
        self.state
            .files
            .stat(&path)
            .map(|a| wit::Attributes {
                mode: a.mode,
                uid: a.uid,
                gid: a.gid,
            })
            .map_err(Into::into)
    }

    fn set_attributes(
        &mut self,
        path: String,
        mode: Option<u32>,
        uid: Option<u32>,
        gid: Option<u32>,
    ) -> Result<(), wit::CapabilityError> {
        // For the revert record, where the path really is (the import follows links
        // inside /etc); a path the import will refuse is noted harmlessly or not at all.
        if self.state.records()
            && let Ok(rel) = relative_to_etc(&path)
            && self.state.guard.policy.check(&rel, Access::Write).is_ok()
            && let Some(parent) = rel.parent()
            && let Some(name) = rel.file_name().and_then(|n| n.to_str())
        {
            self.state.record_at(parent, name, true, false);
        }
        self.state
            .files
            .set_attributes(&path, mode, uid, gid)
            .map_err(Into::into)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::{MetadataExt, PermissionsExt};

    #[test]
    fn guest_paths() {
        assert_eq!(
            relative_to_etc("/etc/./ssh/../hosts").expect("ok"),
            PathBuf::from("hosts")
        );
        assert_eq!(
            relative_to_etc("/etc/ssh/sshd_config").expect("ok"),
            PathBuf::from("ssh/sshd_config")
        );
        for bad in [
            "/etc",
            "/etc/..",
            "/etc/../x",
            "hosts",
            "/var/etc/x",
            "/etc/a\0",
        ] {
            assert!(relative_to_etc(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn modes() {
        assert!(check_mode(0o640).is_ok());
        assert!(check_mode(0o1777).is_ok());
        assert!(matches!(
            check_mode(0o4755),
            Err(CapabilityError::Denied(_))
        ));
        assert!(matches!(
            check_mode(0o2755),
            Err(CapabilityError::Denied(_))
        ));
        assert!(matches!(
            check_mode(0o10644),
            Err(CapabilityError::Invalid(_))
        ));
    }

    #[test]
    fn grants_and_links() {
        let tmp = tempfile::tempdir().expect("ok");
        let etc = tmp.path().join("etc");
        std::fs::create_dir_all(etc.join("sub")).expect("ok");
        std::fs::write(tmp.path().join("outside"), "x").expect("ok");
        std::fs::write(etc.join("f"), "x").expect("ok");
        std::os::unix::fs::symlink("f", etc.join("in-link")).expect("ok");
        std::os::unix::fs::symlink("../outside", etc.join("out-link")).expect("ok");
        std::os::unix::fs::symlink(tmp.path().join("outside"), etc.join("abs-link")).expect("ok");
        std::os::unix::fs::symlink("..", etc.join("sub/up")).expect("ok");
        std::fs::set_permissions(etc.join("f"), std::fs::Permissions::from_mode(0o640))
            .expect("ok");
        let outside_mode = || {
            std::fs::metadata(tmp.path().join("outside"))
                .expect("ok")
                .mode()
                & 0o7777
        };
        let before = outside_mode();

        let none = EtcFiles::new(EtcAccess::None, Some(&etc), false, Arc::default());
        assert!(matches!(
            none.stat("/etc/f"),
            Err(CapabilityError::Denied(m)) if m.starts_with("no etc access")
        ));
        assert!(
            none.set_attributes("/etc/f", Some(0o600), None, None)
                .is_err()
        );

        let read = EtcFiles::new(EtcAccess::Read, Some(&etc), false, Arc::default());
        assert_eq!(read.stat("/etc/f").expect("ok").mode, 0o640);
        assert_eq!(read.stat("/etc/in-link").expect("ok").mode, 0o640);
        assert!(matches!(
            read.stat("/etc/missing"),
            Err(CapabilityError::NotFound(_))
        ));
        assert!(matches!(
            read.set_attributes("/etc/f", Some(0o600), None, None),
            Err(CapabilityError::Denied(_))
        ));

        let dry = EtcFiles::new(EtcAccess::Write, Some(&etc), true, Arc::default());
        assert!(dry.stat("/etc/f").is_ok());
        assert!(matches!(
            dry.set_attributes("/etc/f", Some(0o600), None, None),
            Err(CapabilityError::Denied(_))
        ));

        let write = EtcFiles::new(EtcAccess::Write, Some(&etc), false, Arc::default());
        write
            .set_attributes("/etc/in-link", Some(0o600), None, None)
            .expect("ok");
        assert_eq!(write.stat("/etc/f").expect("ok").mode, 0o600);
        for escape in [
            "/etc/out-link",
            "/etc/abs-link",
            "/etc/sub/up/out-link",
            "/etc/../outside",
        ] {
            let e = write
                .set_attributes(escape, Some(0o777), Some(0), Some(0))
                .expect_err("refused");
            assert!(matches!(e, CapabilityError::Denied(_)), "{escape}: {e}");
            assert!(
                matches!(write.stat(escape), Err(CapabilityError::Denied(_))),
                "{escape}"
            );
        }
        assert!(matches!(
            write.set_attributes("/etc/f", Some(0o4755), None, None),
            Err(CapabilityError::Denied(_))
        ));
        assert_eq!(outside_mode(), before);
    }

    /// A tree with the sensitive files of a control-plane node and links to them
    /// planted in /etc.
    fn sensitive_tree() -> (tempfile::TempDir, PathBuf) {
        let tmp = tempfile::tempdir().expect("ok");
        let etc = tmp.path().join("etc");
        for dir in ["kubernetes/pki", "kubernetes/manifests", "ssh", "sub"] {
            std::fs::create_dir_all(etc.join(dir)).expect("ok");
        }
        for f in [
            "shadow",
            "kubernetes/admin.conf",
            "kubernetes/pki/ca.key",
            "kubernetes/manifests/etcd.yaml",
            "ssh/ssh_host_ed25519_key",
            "hosts",
        ] {
            std::fs::write(etc.join(f), "x").expect("ok");
        }
        for (link, target) in [
            ("innocent", "shadow"),
            ("sub/up-shadow", "../shadow"),
            ("k8s", "kubernetes"),
            ("admin-link", "kubernetes/admin.conf"),
            ("static", "kubernetes/manifests"),
        ] {
            std::os::unix::fs::symlink(target, etc.join(link)).expect("ok");
        }
        (tmp, etc)
    }

    #[test]
    fn sensitive_paths_are_refused_directly_and_through_links() {
        let (_tmp, etc) = sensitive_tree();
        let manifest = etc.join("kubernetes/manifests/etcd.yaml");
        std::fs::set_permissions(&manifest, std::fs::Permissions::from_mode(0o600)).expect("ok");
        let manifest_mode = || std::fs::metadata(&manifest).expect("ok").mode() & 0o7777;
        let before = manifest_mode();
        let write = EtcFiles::new(EtcAccess::Write, Some(&etc), false, Arc::default());
        for path in [
            "/etc/shadow",
            "/etc/kubernetes/admin.conf",
            "/etc/kubernetes/pki/ca.key",
            "/etc/kubernetes/pki",
            "/etc/ssh/ssh_host_ed25519_key",
            "/etc/innocent",
            "/etc/sub/up-shadow",
            "/etc/k8s/admin.conf",
            "/etc/k8s/pki/ca.key",
            "/etc/admin-link",
        ] {
            let e = write.stat(path).expect_err(path);
            assert!(
                matches!(&e, CapabilityError::Denied(m) if m.contains("sensitive")),
                "{path}: {e}"
            );
            let e = write
                .set_attributes(path, Some(0o644), None, None)
                .expect_err(path);
            assert!(
                matches!(&e, CapabilityError::Denied(m) if m.contains("sensitive")),
                "{path}: {e}"
            );
        }
        // Static Pod manifests: readable, never changed.
        for path in [
            "/etc/kubernetes/manifests/etcd.yaml",
            "/etc/static/etcd.yaml",
        ] {
            assert!(write.stat(path).is_ok(), "{path}");
            let e = write
                .set_attributes(path, Some(0o644), None, None)
                .expect_err(path);
            assert!(e.message().contains("sensitive"), "{path}: {e}");
        }
        assert_eq!(manifest_mode(), before);
        // An explicit allow opens exactly what it names.
        let allowed = EtcFiles::new(
            EtcAccess::Write,
            Some(&etc),
            false,
            Arc::new(EtcPolicy {
                sensitive_allow: vec!["/etc/kubernetes/manifests/*.yaml".to_owned()],
                ..EtcPolicy::default()
            }),
        );
        allowed
            .set_attributes("/etc/static/etcd.yaml", Some(0o600), None, None)
            .expect("allowed");
        assert!(allowed.stat("/etc/shadow").is_err());
        assert!(write.stat("/etc/hosts").is_ok());
    }

    #[test]
    fn world_writable_modes_are_refused() {
        let (_tmp, etc) = sensitive_tree();
        let write = EtcFiles::new(EtcAccess::Write, Some(&etc), false, Arc::default());
        for mode in [0o666, 0o777, 0o602, 0o1666] {
            let e = write
                .set_attributes("/etc/hosts", Some(mode), None, None)
                .expect_err("world-writable");
            assert!(
                matches!(&e, CapabilityError::Denied(m) if m.contains("every user")),
                "{mode:o}: {e}"
            );
        }
        let e = write
            .set_attributes("/etc/sub", Some(0o777), None, None)
            .expect_err("world-writable directory");
        assert!(e.message().contains("every user"), "{e}");
        write
            .set_attributes("/etc/sub", Some(0o1777), None, None)
            .expect("a sticky directory");
        write
            .set_attributes("/etc/hosts", Some(0o664), None, None)
            .expect("group-writable");
    }

    /// A mode-0000 file owned by an unprivileged user: its owner may change its mode
    /// without being able to read it. Run in a thread that drops to that user (the
    /// kernel keeps credentials per thread), so root's override does not hide the bug.
    #[test]
    fn a_mode_0000_file_can_be_changed_by_its_owner() {
        const NOBODY: u32 = 65534;
        let tmp = tempfile::tempdir().expect("ok");
        let etc = tmp.path().join("etc");
        std::fs::create_dir_all(&etc).expect("ok");
        let file = etc.join("locked");
        std::fs::write(&file, "x").expect("ok");
        std::fs::set_permissions(tmp.path(), std::fs::Permissions::from_mode(0o755)).expect("ok");
        std::os::unix::fs::chown(&file, Some(NOBODY), Some(NOBODY))
            .expect("chown (the test runs as root)");
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o000)).expect("ok");
        let files = EtcFiles::new(EtcAccess::Write, Some(&etc), false, Arc::default());
        let result = std::thread::spawn(move || {
            rustix::thread::set_thread_uid(Uid::from_raw(NOBODY)).expect("setuid in this thread");
            files.set_attributes("/etc/locked", Some(0o640), None, None)
        })
        .join()
        .expect("thread");
        result.expect("the owner changes the mode of an unreadable file");
        assert_eq!(std::fs::metadata(&file).expect("ok").mode() & 0o7777, 0o640);
    }
}

//! The `files` host import: mode and ownership of files under the guest's `/etc`, which
//! `wasi:filesystem` cannot read or set.
//!
//! Each call gets exactly the reach of the invocation's `etc` grant: no grant, no call;
//! a read grant (or any dry run) may `stat` but not `set-attributes`. A guest path is
//! checked lexically (absolute, under `/etc`), then opened beneath the host directory
//! preopened as `/etc` with `openat2(RESOLVE_BENEATH | RESOLVE_NO_MAGICLINKS)`: the
//! kernel follows symbolic links only while they stay inside and refuses absolute links
//! and `..` that lead out, atomically, so no race between a check and the use can escape.
//! Attributes are then read and set on that file descriptor (`fstat`, `fchown`,
//! `fchmod`), never by path.

use std::ffi::OsStr;
use std::os::fd::OwnedFd;
use std::path::{Component, Path, PathBuf};

use rustix::fs::{FileType, Gid, Mode, OFlags, ResolveFlags, Uid};
use rustix::io::Errno;

use crate::EtcAccess;

/// Permission bits a mode may hold.
pub(crate) const PERMISSION_BITS: u32 = 0o7777;
/// setuid and setgid: never set through the import (see the WIT).
pub(crate) const SET_ID_BITS: u32 = 0o6000;

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
}

impl EtcFiles {
    /// The reach of an invocation with `access` to `root` (the grant's etc directory).
    pub(crate) fn new(access: EtcAccess, root: Option<&Path>, dry_run: bool) -> Self {
        let root = match access {
            EtcAccess::None => None,
            EtcAccess::Read | EtcAccess::Write => root.map(Path::to_path_buf),
        };
        Self {
            root,
            writable: access == EtcAccess::Write && !dry_run,
            dry_run,
        }
    }

    /// `stat` of the import.
    pub(crate) fn stat(&self, path: &str) -> Result<Attributes, String> {
        let fd = self.open(path, OFlags::PATH)?;
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
    ) -> Result<(), String> {
        if self.root.is_none() {
            return Err(NO_ACCESS.to_owned());
        }
        if self.dry_run {
            return Err(format!(
                "denied: {path}: a dry run cannot change modes or owners"
            ));
        }
        if !self.writable {
            return Err(format!(
                "denied: {path}: /etc is read-only for this plugin (its etc capability is read)"
            ));
        }
        if let Some(mode) = mode {
            check_mode(mode)?;
        }
        for (name, id) in [("uid", uid), ("gid", gid)] {
            if id == Some(u32::MAX) {
                return Err(format!(
                    "invalid: {name} 4294967295 is not an id; leave it out to keep the {name}"
                ));
            }
        }
        // Read-only and non-blocking: opening never writes, and a FIFO does not block.
        let fd = self.open(path, OFlags::RDONLY | OFlags::NONBLOCK | OFlags::NOCTTY)?;
        let st = rustix::fs::fstat(&fd).map_err(|e| errno(path, e))?;
        let kind = FileType::from_raw_mode(st.st_mode);
        if kind != FileType::RegularFile && kind != FileType::Directory {
            return Err(format!(
                "denied: {path}: not a regular file or directory; only those can be changed"
            ));
        }
        if uid.is_some() || gid.is_some() {
            rustix::fs::fchown(&fd, uid.map(Uid::from_raw), gid.map(Gid::from_raw))
                .map_err(|e| errno(path, e))?;
        }
        if let Some(mode) = mode {
            rustix::fs::fchmod(&fd, Mode::from_raw_mode(mode)).map_err(|e| errno(path, e))?;
        }
        Ok(())
    }

    /// Opens `path` (a guest path) beneath the etc directory.
    fn open(&self, path: &str, flags: OFlags) -> Result<OwnedFd, String> {
        let root = self.root.as_ref().ok_or_else(|| NO_ACCESS.to_owned())?;
        let rel = relative_to_etc(path)?;
        let dir = rustix::fs::open(
            root,
            OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| format!("cannot open the etc directory: {e}"))?;
        rustix::fs::openat2(
            &dir,
            &rel,
            flags | OFlags::CLOEXEC,
            Mode::empty(),
            ResolveFlags::BENEATH | ResolveFlags::NO_MAGICLINKS,
        )
        .map_err(|e| match e {
            Errno::XDEV => format!(
                "denied: {path}: a symbolic link or `..` leads out of /etc"
            ),
            Errno::NOSYS => format!(
                "{path}: the kernel lacks openat2 (Linux 5.6 or later is needed to resolve paths safely)"
            ),
            e => errno(path, e),
        })
    }
}

const NO_ACCESS: &str = "denied: no etc access: this plugin has no etc capability";

/// The path below `/etc` of a guest path: absolute, NUL-free and strictly under `/etc`
/// after lexical normalisation.
pub(crate) fn relative_to_etc(path: &str) -> Result<PathBuf, String> {
    if path.contains('\0') {
        return Err("invalid: the path contains a NUL byte".to_owned());
    }
    let p = Path::new(path);
    if !p.is_absolute() {
        return Err(format!(
            "denied: {path}: not an absolute path; give the full path under /etc"
        ));
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

fn outside(path: &str) -> String {
    format!("denied: {path}: outside /etc; only files under /etc can be used")
}

/// Refuses modes with bits beyond 0o7777 and the setuid/setgid bits.
pub(crate) fn check_mode(mode: u32) -> Result<(), String> {
    if mode & !PERMISSION_BITS != 0 {
        return Err(format!(
            "invalid: mode {mode:#o} has bits beyond the permission bits 0o7777"
        ));
    }
    if mode & SET_ID_BITS != 0 {
        return Err(format!(
            "denied: mode {mode:#o} sets the setuid or setgid bit, which plugins may not set"
        ));
    }
    Ok(())
}

fn errno(path: &str, e: Errno) -> String {
    match e {
        Errno::NOENT | Errno::NOTDIR => format!("not-found: {path}: no such file or directory"),
        Errno::ACCESS | Errno::PERM => format!("denied: {path}: {e}"),
        Errno::ROFS => format!("denied: {path}: read-only file system"),
        Errno::LOOP => format!("denied: {path}: too many symbolic links"),
        e => format!("{path}: {e}"),
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
        assert!(
            check_mode(0o4755)
                .expect_err("refused")
                .starts_with("denied:")
        );
        assert!(
            check_mode(0o2755)
                .expect_err("refused")
                .starts_with("denied:")
        );
        assert!(
            check_mode(0o10644)
                .expect_err("refused")
                .starts_with("invalid:")
        );
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

        let none = EtcFiles::new(EtcAccess::None, Some(&etc), false);
        assert!(
            none.stat("/etc/f")
                .expect_err("refused")
                .starts_with("denied: no etc access")
        );
        assert!(
            none.set_attributes("/etc/f", Some(0o600), None, None)
                .is_err()
        );

        let read = EtcFiles::new(EtcAccess::Read, Some(&etc), false);
        assert_eq!(read.stat("/etc/f").expect("ok").mode, 0o640);
        assert_eq!(read.stat("/etc/in-link").expect("ok").mode, 0o640);
        assert!(
            read.stat("/etc/missing")
                .expect_err("refused")
                .starts_with("not-found:")
        );
        assert!(
            read.set_attributes("/etc/f", Some(0o600), None, None)
                .expect_err("refused")
                .starts_with("denied:")
        );

        let dry = EtcFiles::new(EtcAccess::Write, Some(&etc), true);
        assert!(dry.stat("/etc/f").is_ok());
        assert!(
            dry.set_attributes("/etc/f", Some(0o600), None, None)
                .expect_err("refused")
                .starts_with("denied:")
        );

        let write = EtcFiles::new(EtcAccess::Write, Some(&etc), false);
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
            assert!(e.starts_with("denied:"), "{escape}: {e}");
            assert!(
                write
                    .stat(escape)
                    .expect_err("refused")
                    .starts_with("denied:"),
                "{escape}"
            );
        }
        assert!(
            write
                .set_attributes("/etc/f", Some(0o4755), None, None)
                .expect_err("refused")
                .starts_with("denied:")
        );
        assert_eq!(outside_mode(), before);
    }
}

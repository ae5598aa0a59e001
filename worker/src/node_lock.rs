//! The node-wide lock of mutating invocations.
//!
//! Every worker Pod that may change its node (a read-write /etc or the docker socket)
//! mounts the same node directory (`/run/hostplug` on the node) and takes an exclusive
//! `flock` on one file in it for the whole of a mutating invocation. So mutating
//! invocations on one node never interleave, whichever task, plugin, access profile or
//! operator replica sent them; a read-only invocation (a read-only grant, or a dry run)
//! takes no lock and stays concurrent. The lock lives on the node, in the kernel: a
//! worker that dies releases it with its file descriptor.
//!
//! Anyone who can open the lock file can `flock` it and so stall every change on the
//! node, and a worker that followed a link planted in its place would create or lock
//! whatever file the link names, as root. So the file is the worker's alone: opened
//! without following a symbolic link (`O_NOFOLLOW`, relative to its directory opened the
//! same way), created with mode 0600, and refused — with an error naming the problem —
//! when it is not a regular file with one name owned by the worker's uid, or when its
//! directory is owned by another user or writable by group or others (anyone who can
//! write there can replace the file). A lock file of the worker's own with a wider mode
//! (one an earlier version made 0644) is narrowed to 0600.
//!
//! This module must never hold the lock past the invocation, never wait for it past
//! the invocation's deadline, and never follow a link or widen a mode.

use std::ffi::OsStr;
use std::fs::{File, TryLockError};
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use rustix::fs::{AtFlags, FileType, Mode, OFlags};
use rustix::io::Errno;

/// First pause between two attempts at a taken lock: 1 ms. A mutating invocation takes
/// a few milliseconds, so the lock is usually free again within that.
const FIRST_RETRY_PAUSE: Duration = Duration::from_millis(1);
/// Longest pause between two attempts: 20 ms; the pause doubles up to it, so a long queue
/// of writers costs little CPU yet a freed lock is seen within 20 ms.
const MAX_RETRY_PAUSE: Duration = Duration::from_millis(20);
/// The lock file's mode: read and write for its owner (the worker's uid) only, so nobody
/// else on the node can open it, and so nobody else can `flock` it.
pub const LOCK_FILE_MODE: u32 = 0o600;
/// Permission bits of the lock directory that would let someone other than its owner
/// replace the lock file: write for group or others.
const FOREIGN_WRITE_BITS: u32 = 0o022;

/// What to do about a lock file that is refused.
const REMOVE_IT: &str = "as root on the node, remove it (a worker creates the lock file anew)";

/// Why the lock was not taken.
#[derive(Debug, thiserror::Error)]
pub enum LockError {
    /// The lock file could not be opened.
    #[error("cannot open the node lock {path}: {source}")]
    Open {
        /// Lock file.
        path: PathBuf,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// The lock file or its directory is not safe to use: it could be opened, replaced
    /// or redirected by someone other than the worker.
    #[error("refusing the node lock {path}: {problem}")]
    Unsafe {
        /// Lock file.
        path: PathBuf,
        /// What is wrong, naming the file or directory at fault, and what to do.
        problem: String,
    },
    /// Locking failed for another reason than the lock being taken.
    #[error("cannot lock {path}: {source}")]
    Lock {
        /// Lock file.
        path: PathBuf,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// Another mutating invocation held the lock until the deadline.
    #[error(
        "another change on this node held the node lock for {waited_ms} ms, until the deadline"
    )]
    Timeout {
        /// How long it waited.
        waited_ms: u64,
    },
}

/// The node lock file.
#[derive(Debug, Clone)]
pub struct NodeLock {
    path: PathBuf,
}

/// A held lock; dropping it unlocks (closing the file releases the `flock`).
#[derive(Debug)]
pub struct NodeLockGuard {
    _file: File,
    /// How long taking it took.
    pub waited: Duration,
}

impl NodeLock {
    /// The lock at `path` (created on first use).
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Self { path: path.into() }
    }

    /// The lock file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Takes the lock exclusively, waiting at most `wait`. Blocking: call it from a
    /// blocking thread.
    pub fn acquire(&self, wait: Duration) -> Result<NodeLockGuard, LockError> {
        let started = Instant::now();
        // A fresh open file description per acquisition: flock locks conflict between
        // descriptions, so two invocations of this very process exclude each other too.
        let file = self.open()?;
        let mut pause = FIRST_RETRY_PAUSE;
        loop {
            match file.try_lock() {
                Ok(()) => {
                    return Ok(NodeLockGuard {
                        _file: file,
                        waited: started.elapsed(),
                    });
                }
                Err(TryLockError::WouldBlock) => {}
                Err(TryLockError::Error(source)) => {
                    return Err(LockError::Lock {
                        path: self.path.clone(),
                        source,
                    });
                }
            }
            let waited = started.elapsed();
            if waited >= wait {
                return Err(LockError::Timeout {
                    waited_ms: u64::try_from(waited.as_millis()).unwrap_or(u64::MAX),
                });
            }
            std::thread::sleep(pause.min(wait - waited));
            pause = (pause * 2).min(MAX_RETRY_PAUSE);
        }
    }

    fn refuse(&self, problem: String) -> LockError {
        LockError::Unsafe {
            path: self.path.clone(),
            problem,
        }
    }

    fn open_error(&self, e: Errno) -> LockError {
        LockError::Open {
            path: self.path.clone(),
            source: e.into(),
        }
    }

    /// Opens (creating it if need be) the lock file, after checking its directory, and
    /// checks the file itself; see the module's documentation for what is refused.
    fn open(&self) -> Result<File, LockError> {
        let (dir, name) = match (self.path.parent(), self.path.file_name()) {
            (Some(dir), Some(name)) => (
                if dir.as_os_str().is_empty() {
                    Path::new(".")
                } else {
                    dir
                },
                name,
            ),
            _ => return Err(self.refuse("the path names no file".to_owned())),
        };
        let uid = rustix::process::geteuid().as_raw();
        let dir_fd = self.open_dir(dir, uid)?;
        // NONBLOCK: a FIFO or device planted in the file's place must not hang the open;
        // it is refused below. (It changes nothing for a regular file or for flock.)
        let fd = rustix::fs::openat(
            &dir_fd,
            name,
            OFlags::RDWR | OFlags::CREATE | OFlags::NOFOLLOW | OFlags::CLOEXEC | OFlags::NONBLOCK,
            Mode::from_raw_mode(LOCK_FILE_MODE),
        )
        .map_err(|e| self.file_open_error(&dir_fd, name, uid, e))?;
        let st = rustix::fs::fstat(&fd).map_err(|e| self.open_error(e))?;
        let kind = FileType::from_raw_mode(st.st_mode);
        if kind != FileType::RegularFile {
            return Err(self.refuse(format!(
                "it is not a regular file but a {}; {REMOVE_IT}",
                kind_name(kind)
            )));
        }
        if st.st_uid != uid {
            return Err(self.refuse(format!(
                "it is owned by uid {}, not by this worker's uid {uid}, so its owner can \
                 lock it at will; {REMOVE_IT}",
                st.st_uid
            )));
        }
        if st.st_nlink != 1 {
            return Err(self.refuse(format!(
                "it has {} hard links: it is another file's second name; {REMOVE_IT}",
                st.st_nlink
            )));
        }
        let mode = st.st_mode & 0o7777;
        if mode != LOCK_FILE_MODE {
            rustix::fs::fchmod(&fd, Mode::from_raw_mode(LOCK_FILE_MODE))
                .map_err(|e| self.open_error(e))?;
            tracing::warn!(
                path = %self.path.display(),
                "the node lock had mode {mode:o}; narrowed to {LOCK_FILE_MODE:o} (a process \
                 that opened it before keeps its descriptor until it closes it)"
            );
        }
        Ok(File::from(fd))
    }

    /// Opens the lock's directory without following a link, and refuses one that someone
    /// other than root or this worker owns or that group or others may write.
    fn open_dir(&self, dir: &Path, uid: u32) -> Result<OwnedFd, LockError> {
        let fd = rustix::fs::open(
            dir,
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| match e {
            // ENOTDIR as well: O_DIRECTORY|O_NOFOLLOW on a link to a directory.
            Errno::LOOP | Errno::NOTDIR => self.refuse(format!(
                "its directory {} is a symbolic link or not a directory; as root on the \
                 node, make it a directory",
                dir.display()
            )),
            e => self.open_error(e),
        })?;
        let st = rustix::fs::fstat(&fd).map_err(|e| self.open_error(e))?;
        if st.st_uid != 0 && st.st_uid != uid {
            return Err(self.refuse(format!(
                "its directory {} is owned by uid {}, neither root nor this worker's uid \
                 {uid}, so its owner can replace the lock file; as root on the node, chown \
                 it to root",
                dir.display(),
                st.st_uid
            )));
        }
        let mode = st.st_mode & 0o7777;
        if mode & FOREIGN_WRITE_BITS != 0 {
            return Err(self.refuse(format!(
                "its directory {} has mode {mode:o}: writable by group or others, who could \
                 put their own file or a link in the lock's place; as root on the node, \
                 `chmod go-w` it (the kubelet makes the node's /run/hostplug 0755)",
                dir.display()
            )));
        }
        Ok(fd)
    }

    /// Turns a failed open of the lock file into the clearest error: a link is named as
    /// such, and a file the worker may not open because another user owns it says so.
    fn file_open_error(&self, dir: &OwnedFd, name: &OsStr, uid: u32, e: Errno) -> LockError {
        match e {
            Errno::LOOP => self.refuse(format!("it is a symbolic link; {REMOVE_IT}")),
            Errno::ACCESS | Errno::PERM => {
                match rustix::fs::statat(dir, name, AtFlags::SYMLINK_NOFOLLOW) {
                    Ok(st) if st.st_uid != uid => self.refuse(format!(
                        "it is owned by uid {}, not by this worker's uid {uid}, so its owner \
                         can lock it at will; {REMOVE_IT}",
                        st.st_uid
                    )),
                    _ => self.open_error(e),
                }
            }
            e => self.open_error(e),
        }
    }
}

/// What a file of type `kind` is called in a message.
fn kind_name(kind: FileType) -> &'static str {
    match kind {
        FileType::RegularFile => "regular file",
        FileType::Directory => "directory",
        FileType::Symlink => "symbolic link",
        FileType::Fifo => "FIFO",
        FileType::Socket => "socket",
        FileType::CharacterDevice => "character device",
        FileType::BlockDevice => "block device",
        _ => "file of unknown type",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[test]
    fn excludes_holders_and_times_out() -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let lock = NodeLock::new(dir.path().join("mutate.lock"));
        let held = lock.acquire(Duration::from_secs(1))?;
        let second = lock.acquire(Duration::from_millis(30));
        assert!(
            matches!(second, Err(LockError::Timeout { .. })),
            "{second:?}"
        );
        drop(held);
        lock.acquire(Duration::from_millis(30))?;
        Ok(())
    }

    #[test]
    fn holders_never_overlap() -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let lock = NodeLock::new(dir.path().join("mutate.lock"));
        let inside = Arc::new(AtomicUsize::new(0));
        let most = Arc::new(AtomicUsize::new(0));
        let threads: Vec<_> = (0..8)
            .map(|_| {
                let (lock, inside, most) = (lock.clone(), inside.clone(), most.clone());
                std::thread::spawn(move || -> Result<(), LockError> {
                    for _ in 0..10 {
                        let _g = lock.acquire(Duration::from_secs(10))?;
                        let now = inside.fetch_add(1, Ordering::SeqCst) + 1;
                        most.fetch_max(now, Ordering::SeqCst);
                        std::thread::sleep(Duration::from_micros(200));
                        inside.fetch_sub(1, Ordering::SeqCst);
                    }
                    Ok(())
                })
            })
            .collect();
        for t in threads {
            t.join().map_err(|_| "thread panicked")??;
        }
        assert_eq!(most.load(Ordering::SeqCst), 1);
        Ok(())
    }

    use std::os::unix::fs::{MetadataExt as _, PermissionsExt as _};
    use std::os::unix::process::CommandExt as _;

    /// An unprivileged uid (`nobody`) standing for another local user of the node.
    const OTHER_UID: u32 = 65534;

    /// A lock directory as the kubelet makes `/run/hostplug`: 0755, the test's own.
    fn lock_dir() -> Result<tempfile::TempDir, std::io::Error> {
        let dir = tempfile::tempdir()?;
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755))?;
        Ok(dir)
    }

    /// Whether this test runs as root (the worker's uid in a worker Pod), checked on a
    /// file it just made.
    fn running_as_root(dir: &Path) -> Result<bool, std::io::Error> {
        let probe = dir.join("probe");
        std::fs::write(&probe, b"")?;
        let uid = std::fs::metadata(&probe)?.uid();
        std::fs::remove_file(&probe)?;
        Ok(uid == 0)
    }

    fn mode(path: &Path) -> Result<u32, std::io::Error> {
        Ok(std::fs::symlink_metadata(path)?.mode() & 0o7777)
    }

    fn refusal(lock: &NodeLock) -> String {
        match lock.acquire(Duration::from_millis(30)) {
            Ok(_) => panic!("{} was locked", lock.path().display()),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn the_lock_file_is_its_owners_alone() -> Result<(), Box<dyn std::error::Error>> {
        let dir = lock_dir()?;
        let path = dir.path().join("mutate.lock");
        let lock = NodeLock::new(&path);
        drop(lock.acquire(Duration::from_secs(1))?);
        assert_eq!(mode(&path)?, 0o600, "a new lock file is 0600");

        // Another user of the node can neither open it nor, so, flock it and stall every
        // change on the node.
        if running_as_root(dir.path())? {
            let other = std::process::Command::new("cat")
                .arg(&path)
                .uid(OTHER_UID)
                .gid(OTHER_UID)
                .output()?;
            assert!(
                !other.status.success(),
                "uid {OTHER_UID} opened the lock file"
            );
        } else {
            eprintln!("not root: the open by another uid is not tried");
        }

        // A lock file left with a wider mode (by an earlier version) is narrowed.
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o666))?;
        drop(lock.acquire(Duration::from_secs(1))?);
        assert_eq!(mode(&path)?, 0o600, "a 0666 lock file is narrowed to 0600");
        Ok(())
    }

    #[test]
    fn a_symbolic_link_is_never_followed() -> Result<(), Box<dyn std::error::Error>> {
        let dir = lock_dir()?;
        let path = dir.path().join("mutate.lock");
        let lock = NodeLock::new(&path);

        // Dangling: following it would create the file it names.
        let target = dir.path().join("created-through-the-link");
        std::os::unix::fs::symlink(&target, &path)?;
        let e = refusal(&lock);
        assert!(e.contains("symbolic link"), "{e}");
        assert!(!target.exists(), "the link was followed: {e}");

        // To an existing file: it is neither locked nor changed.
        std::fs::remove_file(&path)?;
        let victim = dir.path().join("victim");
        std::fs::write(&victim, b"keep")?;
        std::fs::set_permissions(&victim, std::fs::Permissions::from_mode(0o644))?;
        std::os::unix::fs::symlink(&victim, &path)?;
        let e = refusal(&lock);
        assert!(e.contains("symbolic link"), "{e}");
        assert_eq!(mode(&victim)?, 0o644);
        assert_eq!(std::fs::read(&victim)?, b"keep");

        // The directory itself replaced by a link to another directory.
        let real = dir.path().join("real");
        std::fs::create_dir(&real)?;
        std::fs::set_permissions(&real, std::fs::Permissions::from_mode(0o755))?;
        let link = dir.path().join("link");
        std::os::unix::fs::symlink(&real, &link)?;
        let e = refusal(&NodeLock::new(link.join("mutate.lock")));
        assert!(e.contains("symbolic link"), "{e}");
        assert!(!real.join("mutate.lock").exists(), "{e}");
        Ok(())
    }

    #[test]
    fn a_directory_others_may_write_is_refused() -> Result<(), Box<dyn std::error::Error>> {
        for unsafe_mode in [0o777, 0o1777, 0o775] {
            let dir = lock_dir()?;
            std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(unsafe_mode))?;
            let path = dir.path().join("mutate.lock");
            let e = refusal(&NodeLock::new(&path));
            assert!(
                e.contains("writable by group or others"),
                "{unsafe_mode:o}: {e}"
            );
            assert!(
                !path.exists(),
                "{unsafe_mode:o}: created in an unsafe directory"
            );
        }
        Ok(())
    }

    #[test]
    fn a_lock_file_that_is_not_a_plain_file_of_ours_is_refused()
    -> Result<(), Box<dyn std::error::Error>> {
        // A FIFO.
        let dir = lock_dir()?;
        let path = dir.path().join("mutate.lock");
        let made = std::process::Command::new("mkfifo").arg(&path).status()?;
        assert!(made.success(), "mkfifo");
        let e = refusal(&NodeLock::new(&path));
        assert!(e.contains("not a regular file"), "{e}");

        // A second name of another file (a hard link).
        let dir = lock_dir()?;
        let path = dir.path().join("mutate.lock");
        let other = dir.path().join("other");
        std::fs::write(&other, b"")?;
        std::fs::set_permissions(&other, std::fs::Permissions::from_mode(0o600))?;
        std::fs::hard_link(&other, &path)?;
        let e = refusal(&NodeLock::new(&path));
        assert!(e.contains("hard links"), "{e}");

        // Pre-created by another user: whoever owns it may open and flock it at will.
        let dir = lock_dir()?;
        if !running_as_root(dir.path())? {
            eprintln!("not root: files of another owner are not tried");
            return Ok(());
        }
        let path = dir.path().join("mutate.lock");
        std::fs::write(&path, b"")?;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))?;
        std::os::unix::fs::chown(&path, Some(OTHER_UID), Some(OTHER_UID))?;
        let e = refusal(&NodeLock::new(&path));
        assert!(e.contains(&format!("owned by uid {OTHER_UID}")), "{e}");

        // And a directory of another user, however narrow its mode.
        let dir = lock_dir()?;
        std::os::unix::fs::chown(dir.path(), Some(OTHER_UID), Some(OTHER_UID))?;
        let e = refusal(&NodeLock::new(dir.path().join("mutate.lock")));
        assert!(e.contains(&format!("owned by uid {OTHER_UID}")), "{e}");
        Ok(())
    }
}

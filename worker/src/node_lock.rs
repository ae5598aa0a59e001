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
//! This module must never hold the lock past the invocation, and never wait for it past
//! the invocation's deadline.

use std::fs::{File, OpenOptions, TryLockError};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// First pause between two attempts at a taken lock: 1 ms. A mutating invocation takes
/// a few milliseconds, so the lock is usually free again within that.
const FIRST_RETRY_PAUSE: Duration = Duration::from_millis(1);
/// Longest pause between two attempts: 20 ms; the pause doubles up to it, so a long queue
/// of writers costs little CPU yet a freed lock is seen within 20 ms.
const MAX_RETRY_PAUSE: Duration = Duration::from_millis(20);

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
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&self.path)
            .map_err(|source| LockError::Open {
                path: self.path.clone(),
                source,
            })?;
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

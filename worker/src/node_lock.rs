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
}

//! The node's revert records: what each mutating call of a HostTask changed under /etc
//! (the host's [`ChangeRecord`]), stored under the task's identity in the worker's state
//! directory on the node, for `POST /v1/revert`.
//!
//! The directory is `revert/` beside the node lock file: a hostPath every worker Pod
//! that may change the node mounts, so a revert finds the record whichever worker ran the
//! call. It is outside the /etc preopen, so no plugin can read or change a record (the
//! sandbox gives plugins /etc only). It is created `0700` and each record `0600`: the
//! records hold prior contents of /etc files, readable by root on the node only.
//!
//! One file per task generation, named by the sha256 of the identity; the file holds
//! the identity too, and a load compares it, so a record of one task can never be used
//! for another. Bounded: records expire after [`RECORD_TTL`], and the directory holds
//! at most [`MAX_STORE_BYTES`] (the oldest go first). This module must never store a
//! record under another identity than the call's, nor serve an expired one.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use hostplug_api::protocol::TaskIdentity;
use hostplug_host::ChangeRecord;
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

/// How long a record is kept: 7 days. Long enough to notice a bad change after a
/// weekend and revert it; short enough that the store holds only recent changes, and a
/// revert of an old change (which later changes have likely built on) is refused.
pub const RECORD_TTL: Duration = Duration::from_secs(7 * 24 * 3600);

/// Most bytes all records on a node take: 256 MiB. One call's record is at most
/// `hostplug_host::MAX_RECORD_BYTES` (8 MiB, base64 adds a third); 256 MiB keeps at
/// least twenty of the largest and thousands of typical ones, on a directory that may
/// be a tmpfs.
pub const MAX_STORE_BYTES: u64 = 256 * 1024 * 1024;

/// The directory under the node lock's directory that holds the records.
pub const RECORDS_SUBDIR: &str = "revert";

/// A record as stored.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StoredRecord {
    /// The task generation whose call made the change.
    pub task: TaskIdentity,
    /// When it was stored, seconds since the epoch.
    pub stored_at: u64,
    /// What the call changed.
    pub record: ChangeRecord,
}

/// The node's revert records.
#[derive(Debug, Clone)]
pub struct RecordStore {
    dir: PathBuf,
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

impl RecordStore {
    /// The store in `dir` (created `0700` when missing).
    pub fn open(dir: &Path) -> std::io::Result<Self> {
        use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)?;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))?;
        Ok(Self {
            dir: dir.to_path_buf(),
        })
    }

    /// The directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn file(&self, task: &TaskIdentity) -> PathBuf {
        let key = format!(
            "{}\n{}\n{}\n{}",
            task.namespace, task.name, task.uid, task.generation
        );
        self.dir
            .join(format!("{}.json", hex::encode(Sha256::digest(key))))
    }

    /// Stores `record` under `task` (replacing an earlier one of the same generation),
    /// after dropping expired records and, when over [`MAX_STORE_BYTES`], the oldest.
    pub fn save(&self, task: &TaskIdentity, record: &ChangeRecord) -> std::io::Result<()> {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        let stored = StoredRecord {
            task: task.clone(),
            stored_at: now_secs(),
            record: record.clone(),
        };
        let bytes = serde_json::to_vec(&stored).map_err(std::io::Error::other)?;
        self.prune(bytes.len() as u64);
        let path = self.file(task);
        let tmp = path.with_extension("tmp");
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)?;
        f.write_all(&bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, &path)
    }

    /// The record of exactly `task`, unless there is none or it expired.
    pub fn load(&self, task: &TaskIdentity) -> std::io::Result<Option<StoredRecord>> {
        let bytes = match std::fs::read(self.file(task)) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e),
        };
        let stored: StoredRecord = serde_json::from_slice(&bytes)
            .map_err(|e| std::io::Error::other(format!("a damaged record: {e}")))?;
        if stored.task != *task || expired(stored.stored_at) {
            return Ok(None);
        }
        Ok(Some(stored))
    }

    /// Drops expired records, then the oldest until `incoming` more bytes fit within
    /// [`MAX_STORE_BYTES`].
    fn prune(&self, incoming: u64) {
        let Ok(entries) = std::fs::read_dir(&self.dir) else {
            return;
        };
        let mut files: Vec<(SystemTime, u64, PathBuf)> = entries
            .filter_map(Result::ok)
            .filter_map(|e| {
                let m = e.metadata().ok()?;
                Some((m.modified().ok()?, m.len(), e.path()))
            })
            .collect();
        files.sort();
        let mut total: u64 = files.iter().map(|f| f.1).sum::<u64>() + incoming;
        let cutoff = SystemTime::now().checked_sub(RECORD_TTL);
        for (modified, len, path) in files {
            let old = cutoff.is_some_and(|c| modified < c);
            if (old || total > MAX_STORE_BYTES) && std::fs::remove_file(&path).is_ok() {
                total = total.saturating_sub(len);
            }
        }
    }
}

fn expired(stored_at: u64) -> bool {
    now_secs().saturating_sub(stored_at) > RECORD_TTL.as_secs()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn task(uid: &str) -> TaskIdentity {
        TaskIdentity {
            namespace: "ns".into(),
            name: "t".into(),
            uid: uid.into(),
            generation: 1,
        }
    }

    #[test]
    fn a_record_is_found_only_under_its_own_identity() -> std::io::Result<()> {
        let tmp = tempfile::tempdir()?;
        let store = RecordStore::open(&tmp.path().join("revert"))?;
        let record = ChangeRecord::default();
        store.save(&task("a"), &record)?;
        assert!(store.load(&task("a"))?.is_some());
        assert!(store.load(&task("b"))?.is_none());
        let mut other_gen = task("a");
        other_gen.generation = 2;
        assert!(store.load(&other_gen)?.is_none());
        // A record copied under another task's name is refused by its content.
        std::fs::copy(store.file(&task("a")), store.file(&task("b")))?;
        assert!(store.load(&task("b"))?.is_none());
        Ok(())
    }
}

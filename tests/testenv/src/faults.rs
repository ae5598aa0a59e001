//! Faults a test injects into a node, for the "what happens when…" tests: a full disk
//! under a simulated node's `/etc`. (The API server's crash is
//! [`crate::Environment::restart_api_server`].)
//!
//! [`SmallDisk`] mounts a small tmpfs over a directory of the node's tree — in this
//! machine's mount namespace, so the worker Pods started afterwards bind-mount it as the
//! node's `/etc` — and fills it on request, so that a write there fails with `ENOSPC` as
//! on a node whose disk is full. It must be mounted before any worker Pod of that node
//! starts (a running container keeps the directory it bound). It never touches anything
//! but that directory, and unmounts on drop (lazily, so a container still holding it
//! cannot keep the mount alive on the host).

use std::fs::{self, File};
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::{Error, Result};

/// The file [`SmallDisk::fill`] takes the free space with; a test leaves it out of its
/// comparisons of the node's files.
pub const FILLER: &str = ".hostplug-test-filler";

/// Bytes [`SmallDisk::fill`] writes at a time: one tmpfs page.
const FILL_CHUNK: usize = 4096;

/// A tmpfs of a fixed size mounted over a node's directory, its files copied in.
#[derive(Debug)]
pub struct SmallDisk {
    dir: PathBuf,
    mounted: bool,
}

fn run(what: &str, cmd: &mut Command) -> Result<()> {
    let out = cmd
        .output()
        .map_err(|e| Error::io(format!("running {what}"), e))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(Error::io(
            what.to_owned(),
            std::io::Error::other(String::from_utf8_lossy(&out.stderr).into_owned()),
        ))
    }
}

impl SmallDisk {
    /// Mounts a tmpfs of `bytes` over `dir` (e.g. `nodes/<node>/root/etc`), holding a copy
    /// of what `dir` held (modes and owners kept).
    pub fn mount_over(dir: &Path, bytes: u64) -> Result<Self> {
        let saved = tempfile::tempdir().map_err(|e| Error::io("creating a tempdir", e))?;
        run(
            "cp -a (saving the directory)",
            Command::new("cp")
                .arg("-a")
                .arg(dir.join("."))
                .arg(saved.path()),
        )?;
        run(
            "mount -t tmpfs",
            Command::new("mount")
                .args(["-t", "tmpfs", "-o"])
                .arg(format!("size={bytes},mode=0755"))
                .arg("hostplug-small-disk")
                .arg(dir),
        )?;
        let disk = SmallDisk {
            dir: dir.to_owned(),
            mounted: true,
        };
        run(
            "cp -a (restoring the directory)",
            Command::new("cp")
                .arg("-a")
                .arg(saved.path().join("."))
                .arg(dir),
        )?;
        Ok(disk)
    }

    /// Takes all the free space but `leave` bytes (rounded to whole pages) with
    /// [`FILLER`]: a write of more than that fails with "No space left on device".
    pub fn fill(&self, leave: u64) -> Result<()> {
        let path = self.dir.join(FILLER);
        let mut f = File::create(&path)
            .map_err(|e| Error::io(format!("creating {}", path.display()), e))?;
        let chunk = [0u8; FILL_CHUNK];
        let mut written: u64 = 0;
        loop {
            match f.write(&chunk) {
                Ok(0) => break,
                Ok(n) => written += n as u64,
                Err(e) if e.kind() == std::io::ErrorKind::StorageFull => break,
                Err(e) => return Err(Error::io(format!("filling {}", path.display()), e)),
            }
        }
        f.set_len(written.saturating_sub(leave))
            .map_err(|e| Error::io(format!("truncating {}", path.display()), e))?;
        f.sync_all()
            .map_err(|e| Error::io(format!("syncing {}", path.display()), e))
    }

    /// Gives the space back (removes [`FILLER`]).
    pub fn unfill(&self) -> Result<()> {
        let path = self.dir.join(FILLER);
        match fs::remove_file(&path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(Error::io(format!("removing {}", path.display()), e)),
        }
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        if self.mounted {
            let _ = Command::new("umount").arg("-l").arg(&self.dir).status();
            self.mounted = false;
        }
    }
}

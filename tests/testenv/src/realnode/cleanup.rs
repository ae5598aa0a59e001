//! Finding and removing what a real node leaves behind: processes in its namespaces or
//! cgroups (container processes, runc shims, which detach from their parent), and its
//! cgroup directories. Also, at start, what a crashed earlier run left: only things that
//! are recognisably ours (named after a test process that no longer runs).

use std::fs;
use std::path::{Path, PathBuf};
use std::thread;
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

/// The cgroup v1 mount point.
const CGROUP_ROOT: &str = "/sys/fs/cgroup";

/// Every per-node cgroup root starts with this, then `<pid of the test process>-`.
pub(crate) const CGROUP_PREFIX: &str = "hostplug-rn-";

/// The file in a real-nodes directory naming the test process that owns it.
pub(crate) const OWNER_FILE: &str = "owner.pid";

/// The cgroup v1 hierarchies a node's cgroup root is created in: every mounted controller
/// except the unified (v2) one, each once (symlinks such as `cpu,cpuacct` skipped).
pub(crate) fn hierarchies() -> Vec<PathBuf> {
    let Ok(entries) = fs::read_dir(CGROUP_ROOT) else {
        return Vec::new();
    };
    let mut dirs: Vec<PathBuf> = entries
        .flatten()
        .filter(|e| e.file_name() != "unified")
        .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
        .map(|e| e.path())
        .collect();
    dirs.sort();
    dirs
}

/// The ids of the processes in cgroup `name` (a top-level directory) and below, in any
/// hierarchy.
pub(crate) fn cgroup_processes(name: &str) -> Vec<i32> {
    let mut pids = Vec::new();
    for h in hierarchies() {
        walk(&h.join(name), &mut |dir| {
            if let Ok(text) = fs::read_to_string(dir.join("cgroup.procs")) {
                pids.extend(text.lines().filter_map(|l| l.trim().parse::<i32>().ok()));
            }
        });
    }
    pids.sort_unstable();
    pids.dedup();
    pids
}

fn walk(dir: &Path, f: &mut dyn FnMut(&Path)) {
    if !dir.is_dir() {
        return;
    }
    f(dir);
    if let Ok(entries) = fs::read_dir(dir) {
        for e in entries.flatten() {
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                walk(&e.path(), f);
            }
        }
    }
}

/// SIGKILLs every process in cgroup `name` until none is left (or `timeout`).
pub(crate) fn kill_cgroup(name: &str, timeout: Duration) {
    let deadline = Instant::now() + timeout;
    loop {
        let pids = cgroup_processes(name);
        if pids.is_empty() || Instant::now() > deadline {
            return;
        }
        for pid in pids {
            let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
        }
        thread::sleep(Duration::from_millis(50));
    }
}

/// Removes cgroup `name` in every hierarchy, deepest directories first, retrying while the
/// kernel still counts dying processes (at most `timeout`). Returns the directories left.
pub(crate) fn remove_cgroup(name: &str, timeout: Duration) -> Vec<PathBuf> {
    let deadline = Instant::now() + timeout;
    loop {
        let mut left = Vec::new();
        for h in hierarchies() {
            let mut dirs = Vec::new();
            walk(&h.join(name), &mut |d| dirs.push(d.to_owned()));
            // Children were pushed after their parents.
            for d in dirs.iter().rev() {
                if fs::remove_dir(d).is_err() && d.exists() {
                    left.push(d.clone());
                }
            }
        }
        if left.is_empty() || Instant::now() > deadline {
            return left;
        }
        thread::sleep(Duration::from_millis(100));
    }
}

/// The namespace a process is in, as the kernel names it (`net:[4026532…]`).
pub(crate) fn namespace_of(pid: i32, kind: &str) -> Option<String> {
    fs::read_link(format!("/proc/{pid}/ns/{kind}"))
        .ok()
        .map(|p| p.to_string_lossy().into_owned())
}

/// The processes whose mount or network namespace is `mnt` or `net`.
pub(crate) fn processes_in_namespaces(mnt: &str, net: &str) -> Vec<i32> {
    all_pids()
        .into_iter()
        .filter(|&pid| {
            namespace_of(pid, "mnt").as_deref() == Some(mnt)
                || namespace_of(pid, "net").as_deref() == Some(net)
        })
        .collect()
}

/// SIGKILLs the processes of `pids()` until none is left (or `timeout`).
pub(crate) fn kill_until_gone(pids: impl Fn() -> Vec<i32>, timeout: Duration) -> Vec<i32> {
    let deadline = Instant::now() + timeout;
    loop {
        let left = pids();
        if left.is_empty() || Instant::now() > deadline {
            return left;
        }
        for pid in left {
            let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
        }
        thread::sleep(Duration::from_millis(50));
    }
}

fn all_pids() -> Vec<i32> {
    let me = std::process::id();
    fs::read_dir("/proc")
        .map(|entries| {
            entries
                .flatten()
                .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
                .filter(|&pid| u32::try_from(pid).ok() != Some(me))
                .collect()
        })
        .unwrap_or_default()
}

fn cmdline(pid: i32) -> Vec<String> {
    fs::read(format!("/proc/{pid}/cmdline"))
        .map(|b| {
            b.split(|&c| c == 0)
                .filter(|s| !s.is_empty())
                .map(|s| String::from_utf8_lossy(s).into_owned())
                .collect()
        })
        .unwrap_or_default()
}

fn alive(pid: i32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
}

/// Removes what crashed earlier runs left: runc shims serving a containerd of a real-nodes
/// directory whose owner is gone, and `hostplug-rn-<pid>-…` cgroups whose test process is
/// gone (their processes killed first). Returns what it removed, for the log.
pub(crate) fn clean_strays() -> Vec<String> {
    let mut removed = Vec::new();
    for pid in all_pids() {
        let args = cmdline(pid);
        if !args
            .first()
            .is_some_and(|a| a.ends_with("containerd-shim-runc-v2"))
        {
            continue;
        }
        let Some(address) = args
            .iter()
            .position(|a| a == "-address")
            .and_then(|i| args.get(i + 1))
        else {
            continue;
        };
        // <env>/realnodes/<node>/containerd/containerd.sock
        let address = Path::new(address);
        if !address.ends_with("containerd/containerd.sock") {
            continue;
        }
        let Some(realnodes) = address.ancestors().nth(3) else {
            continue;
        };
        if realnodes.file_name().is_none_or(|n| n != "realnodes")
            || !realnodes.to_string_lossy().contains("hostplug-env-")
        {
            continue;
        }
        let owner = fs::read_to_string(realnodes.join(OWNER_FILE))
            .ok()
            .and_then(|s| s.trim().parse::<i32>().ok());
        if owner.is_none_or(|o| !alive(o)) {
            let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
            removed.push(format!("shim {pid} of {}", address.display()));
        }
    }
    let mut stray_groups: Vec<String> = Vec::new();
    for h in hierarchies() {
        let Ok(entries) = fs::read_dir(&h) else {
            continue;
        };
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            let Some(rest) = name.strip_prefix(CGROUP_PREFIX) else {
                continue;
            };
            let owner = rest.split('-').next().and_then(|p| p.parse::<i32>().ok());
            if owner.is_some_and(|o| !alive(o)) && !stray_groups.contains(&name) {
                stray_groups.push(name);
            }
        }
    }
    for name in stray_groups {
        kill_cgroup(&name, Duration::from_secs(5));
        let left = remove_cgroup(&name, Duration::from_secs(5));
        if left.is_empty() {
            removed.push(format!("cgroup {name}"));
        } else {
            tracing::warn!(cgroup = %name, ?left, "could not remove a stray cgroup");
        }
    }
    removed
}

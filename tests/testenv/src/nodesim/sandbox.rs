//! Starting one container process in its own mount and UTS namespace, inside a small root.
//!
//! The root is a tmpfs mounted (inside the new namespace only) on an empty per-container
//! directory, filled with read-only bind mounts of the host's system directories, a minimal
//! `/dev`, `/proc`, a read-only `/sys`, the executable at [`EXECUTABLE_DIR`] and the Pod's
//! volumes; the process then `pivot_root`s into it and the old root is detached. Mount
//! propagation is made private first, so no mount ever reaches the host, and every mount
//! disappears with the namespace when the container's last process exits.
//!
//! Everything the child does between `fork` and `exec` is planned in the parent as a list of
//! [`Step`]s holding ready-made C strings, because only async-signal-safe system calls are
//! allowed there (the simulator's process is multi-threaded): no allocation, no locks.

use std::ffi::{CString, OsStr};
use std::os::fd::BorrowedFd;
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};
use std::process::Stdio;

use nix::errno::Errno;
use nix::fcntl::OFlag;
use nix::mount::{MntFlags, MsFlags};
use nix::sched::CloneFlags;
use nix::sys::stat::Mode;
use nix::unistd::{Gid, Uid};

/// Where the executable an image stands for appears inside the container.
pub(crate) const EXECUTABLE_DIR: &str = "/hostplug/bin";

/// The first line a failing setup step writes to the container log.
const SETUP_FAILED: &str = "hostplug-nodesim: container setup failed while ";

/// Errors preparing or starting a container process.
#[derive(Debug, thiserror::Error)]
pub(crate) enum SandboxError {
    /// A path in the Pod spec cannot be mounted (relative, `..`, NUL byte, …).
    #[error("invalid path {0:?}")]
    InvalidPath(String),
    /// The host side of a mount cannot be inspected.
    #[error("cannot use {path}: {source}")]
    Source {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The container log cannot be opened.
    #[error("cannot open the container log {path}: {source}")]
    Log {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The process could not be started; `step` is the setup step that failed, if known.
    #[error("{}{source}", step.as_deref().map(|s| format!("{s}: ")).unwrap_or_default())]
    Spawn {
        step: Option<String>,
        #[source]
        source: std::io::Error,
    },
}

/// A bind mount of a host path into the container.
#[derive(Clone, Debug)]
pub(crate) struct BindMount {
    /// The host path (file, directory or socket).
    pub(crate) source: PathBuf,
    /// The absolute path inside the container.
    pub(crate) target: String,
    pub(crate) read_only: bool,
}

/// Everything needed to start one container process.
#[derive(Debug)]
pub(crate) struct SandboxSpec {
    /// An empty host directory the container's root tmpfs is mounted on.
    pub(crate) rootfs: PathBuf,
    pub(crate) hostname: String,
    /// The host executable the image stands for.
    pub(crate) executable: PathBuf,
    pub(crate) argv0: String,
    pub(crate) args: Vec<String>,
    pub(crate) env: Vec<(String, String)>,
    pub(crate) working_dir: Option<String>,
    /// Volumes and per-Pod files (`/etc/hosts`, …).
    pub(crate) mounts: Vec<BindMount>,
    pub(crate) read_only_root: bool,
    pub(crate) no_new_privs: bool,
    /// Capability numbers to remove from the bounding set.
    pub(crate) drop_capabilities: Vec<u32>,
    /// `(uid, gid)` to switch to before `exec`.
    pub(crate) user: Option<(u32, u32)>,
    /// stdout and stderr are appended to this file.
    pub(crate) log: PathBuf,
}

impl SandboxSpec {
    /// The path of the executable inside the container.
    pub(crate) fn executable_in_container(&self) -> String {
        let name = self
            .executable
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "entrypoint".into());
        format!("{EXECUTABLE_DIR}/{name}")
    }
}

/// One planned setup operation, executed in the child between `fork` and `exec`.
#[derive(Debug)]
enum Op {
    /// `mkdir`, an existing directory is fine.
    Mkdir {
        path: CString,
        mode: u32,
    },
    /// Create an empty file as a mount point, an existing one is fine.
    Touch {
        path: CString,
    },
    Symlink {
        target: CString,
        link: CString,
    },
    Mount {
        source: Option<CString>,
        target: CString,
        fstype: Option<CString>,
        flags: MsFlags,
        data: Option<CString>,
    },
}

/// An [`Op`] and the words the log gets when it fails.
#[derive(Debug)]
struct Step {
    op: Op,
    what: Vec<u8>,
}

/// The planned setup of one container: the steps that build its root, then what happens
/// after `pivot_root`.
#[derive(Debug)]
struct Plan {
    root: PathBuf,
    root_c: CString,
    old_root: CString,
    steps: Vec<Step>,
    hostname: Vec<u8>,
    read_only_root: bool,
    working_dir: CString,
    no_new_privs: bool,
    drop_capabilities: Vec<u32>,
    user: Option<(u32, u32)>,
}

fn cstring(path: impl AsRef<OsStr>) -> Result<CString, SandboxError> {
    let bytes = path.as_ref().as_bytes();
    CString::new(bytes)
        .map_err(|_| SandboxError::InvalidPath(path.as_ref().to_string_lossy().into()))
}

/// The components of an absolute container path; `..`, `.` and relative paths are refused.
fn container_components(path: &str) -> Result<Vec<&str>, SandboxError> {
    let p = Path::new(path);
    if !p.is_absolute() {
        return Err(SandboxError::InvalidPath(path.into()));
    }
    let mut parts = Vec::new();
    for component in p.components() {
        match component {
            Component::RootDir => {}
            Component::Normal(s) => parts.push(
                s.to_str()
                    .ok_or_else(|| SandboxError::InvalidPath(path.into()))?,
            ),
            _ => return Err(SandboxError::InvalidPath(path.into())),
        }
    }
    Ok(parts)
}

impl Plan {
    fn new(spec: &SandboxSpec) -> Result<Self, SandboxError> {
        let root = spec.rootfs.clone();
        let working_dir = spec.working_dir.clone().unwrap_or_else(|| "/".into());
        container_components(&working_dir)?;
        Ok(Self {
            root_c: cstring(&root)?,
            old_root: cstring(root.join(".oldroot"))?,
            root,
            steps: Vec::new(),
            hostname: spec.hostname.as_bytes().to_vec(),
            read_only_root: spec.read_only_root,
            working_dir: cstring(&working_dir)?,
            no_new_privs: spec.no_new_privs,
            drop_capabilities: spec.drop_capabilities.clone(),
            user: spec.user,
        })
    }

    fn push(&mut self, op: Op, what: String) {
        let mut what = what.into_bytes();
        what.push(b'\n');
        self.steps.push(Step { op, what });
    }

    fn host_path(&self, container_path: &str) -> Result<PathBuf, SandboxError> {
        let mut path = self.root.clone();
        for part in container_components(container_path)? {
            path.push(part);
        }
        Ok(path)
    }

    /// `mkdir -p` of a container directory.
    fn mkdir_p(&mut self, container_path: &str, mode: u32) -> Result<(), SandboxError> {
        let mut path = self.root.clone();
        let parts = container_components(container_path)?;
        let last = parts.len();
        for (i, part) in parts.into_iter().enumerate() {
            path.push(part);
            let mode = if i + 1 == last { mode } else { 0o755 };
            let c = cstring(&path)?;
            self.push(
                Op::Mkdir { path: c, mode },
                format!("creating directory {}", path.display()),
            );
        }
        Ok(())
    }

    fn mount(
        &mut self,
        source: Option<&Path>,
        container_path: &str,
        fstype: Option<&str>,
        flags: MsFlags,
        data: Option<&str>,
        what: String,
    ) -> Result<(), SandboxError> {
        let target = cstring(self.host_path(container_path)?)?;
        let op = Op::Mount {
            source: source.map(cstring).transpose()?,
            target,
            fstype: fstype.map(cstring).transpose()?,
            flags,
            data: data.map(cstring).transpose()?,
        };
        self.push(op, what);
        Ok(())
    }

    fn tmpfs(
        &mut self,
        container_path: &str,
        mode: &str,
        flags: MsFlags,
    ) -> Result<(), SandboxError> {
        self.mkdir_p(container_path, 0o755)?;
        self.mount(
            Some(Path::new("tmpfs")),
            container_path,
            Some("tmpfs"),
            flags,
            Some(&format!("mode={mode}")),
            format!("mounting a tmpfs on {container_path}"),
        )
    }

    /// Bind-mounts a host file, directory or socket at a container path, read-only if asked.
    fn bind(
        &mut self,
        source: &Path,
        container_path: &str,
        read_only: bool,
    ) -> Result<(), SandboxError> {
        let meta = std::fs::metadata(source).map_err(|e| SandboxError::Source {
            path: source.to_path_buf(),
            source: e,
        })?;
        if meta.is_dir() {
            self.mkdir_p(container_path, 0o755)?;
        } else {
            if let Some(parent) = Path::new(container_path).parent() {
                let parent = parent.to_string_lossy().into_owned();
                if parent != "/" {
                    self.mkdir_p(&parent, 0o755)?;
                }
            }
            let path = cstring(self.host_path(container_path)?)?;
            self.push(
                Op::Touch { path },
                format!("creating mount point {container_path}"),
            );
        }
        self.mount(
            Some(source),
            container_path,
            None,
            MsFlags::MS_BIND | MsFlags::MS_REC,
            None,
            format!("bind-mounting {} on {container_path}", source.display()),
        )?;
        if read_only {
            self.mount(
                None,
                container_path,
                None,
                MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY,
                None,
                format!("making {container_path} read-only"),
            )?;
        }
        Ok(())
    }

    fn symlink(&mut self, target: &Path, container_path: &str) -> Result<(), SandboxError> {
        let link = cstring(self.host_path(container_path)?)?;
        self.push(
            Op::Symlink {
                target: cstring(target)?,
                link,
            },
            format!("linking {container_path} to {}", target.display()),
        );
        Ok(())
    }
}

/// Host top-level entries a dynamically linked program needs; symbolic links (merged /usr)
/// are recreated, directories bound read-only.
const HOST_SYSTEM_DIRS: [&str; 6] = ["bin", "sbin", "lib", "lib32", "lib64", "libx32"];

/// Files and directories of the host's `/etc` an image would normally bring along: the
/// dynamic linker cache, CA certificates, name service and user databases.
const HOST_ETC: [&str; 14] = [
    "ld.so.cache",
    "ld.so.conf",
    "ld.so.conf.d",
    "ssl",
    "ca-certificates",
    "ca-certificates.conf",
    "pki",
    "nsswitch.conf",
    "passwd",
    "group",
    "localtime",
    "alternatives",
    "services",
    "protocols",
];

/// Device nodes bound from the host's `/dev`.
const HOST_DEVICES: [&str; 6] = ["null", "zero", "full", "random", "urandom", "tty"];

fn build_plan(spec: &SandboxSpec) -> Result<Plan, SandboxError> {
    let mut plan = Plan::new(spec)?;
    let nosuid_nodev = MsFlags::MS_NOSUID | MsFlags::MS_NODEV;
    // The root itself.
    plan.push(
        Op::Mount {
            source: Some(cstring("tmpfs")?),
            target: plan.root_c.clone(),
            fstype: Some(cstring("tmpfs")?),
            flags: nosuid_nodev,
            data: Some(cstring("mode=755")?),
        },
        "mounting the root tmpfs".into(),
    );
    plan.bind(Path::new("/usr"), "/usr", true)?;
    for name in HOST_SYSTEM_DIRS {
        let host = Path::new("/").join(name);
        match std::fs::symlink_metadata(&host) {
            Ok(meta) if meta.file_type().is_symlink() => {
                let target = std::fs::read_link(&host).map_err(|e| SandboxError::Source {
                    path: host.clone(),
                    source: e,
                })?;
                plan.symlink(&target, &format!("/{name}"))?;
            }
            Ok(meta) if meta.is_dir() => plan.bind(&host, &format!("/{name}"), true)?,
            _ => {}
        }
    }
    plan.mkdir_p("/etc", 0o755)?;
    for name in HOST_ETC {
        let host = Path::new("/etc").join(name);
        if let Ok(real) = host.canonicalize() {
            plan.bind(&real, &format!("/etc/{name}"), true)?;
        }
    }
    plan.mkdir_p("/proc", 0o555)?;
    plan.mount(
        Some(Path::new("proc")),
        "/proc",
        Some("proc"),
        nosuid_nodev | MsFlags::MS_NOEXEC,
        None,
        "mounting /proc".into(),
    )?;
    plan.bind(Path::new("/sys"), "/sys", true)?;
    plan.tmpfs("/dev", "755", MsFlags::MS_NOSUID)?;
    for name in HOST_DEVICES {
        let host = Path::new("/dev").join(name);
        if host.exists() {
            plan.bind(&host, &format!("/dev/{name}"), false)?;
        }
    }
    for (link, target) in [
        ("/dev/fd", "/proc/self/fd"),
        ("/dev/stdin", "/proc/self/fd/0"),
        ("/dev/stdout", "/proc/self/fd/1"),
        ("/dev/stderr", "/proc/self/fd/2"),
    ] {
        plan.symlink(Path::new(target), link)?;
    }
    plan.tmpfs("/dev/shm", "1777", nosuid_nodev)?;
    // /tmp is part of the root file system, as in an image: read-only with
    // readOnlyRootFilesystem unless a volume is mounted there.
    for (dir, mode) in [
        ("/tmp", 0o1777),
        ("/var/tmp", 0o1777),
        ("/root", 0o700),
        ("/run", 0o755),
        ("/home", 0o755),
    ] {
        plan.mkdir_p(dir, mode)?;
    }
    plan.bind(&spec.executable, &spec.executable_in_container(), true)?;
    // Parents before children: a volume at /a/b must be mounted after one at /a.
    let mut mounts: Vec<&BindMount> = spec.mounts.iter().collect();
    mounts.sort_by_key(|m| Path::new(&m.target).components().count());
    for m in mounts {
        plan.bind(&m.source, &m.target, m.read_only)?;
    }
    plan.mkdir_p("/.oldroot", 0o700)?;
    Ok(plan)
}

fn log_failure(what: &[u8]) {
    // SAFETY: fd 2 is the container log, set up by std before pre_exec runs; it stays open
    // for the duration of this call.
    #[allow(unsafe_code)]
    let fd = unsafe { BorrowedFd::borrow_raw(2) };
    let _ = nix::unistd::write(fd, SETUP_FAILED.as_bytes());
    let _ = nix::unistd::write(fd, what);
}

fn errno_to_io(errno: Errno) -> std::io::Error {
    std::io::Error::from_raw_os_error(errno as i32)
}

fn run_step(step: &Step) -> Result<(), Errno> {
    match &step.op {
        Op::Mkdir { path, mode } => {
            match nix::unistd::mkdir(path.as_c_str(), Mode::from_bits_truncate(*mode)) {
                Ok(()) | Err(Errno::EEXIST) => Ok(()),
                Err(e) => Err(e),
            }
        }
        Op::Touch { path } => {
            match nix::fcntl::open(
                path.as_c_str(),
                OFlag::O_CREAT | OFlag::O_WRONLY | OFlag::O_CLOEXEC,
                Mode::from_bits_truncate(0o644),
            ) {
                Ok(_fd) => Ok(()),
                Err(e) => Err(e),
            }
        }
        Op::Symlink { target, link } => {
            match nix::unistd::symlinkat(target.as_c_str(), nix::fcntl::AT_FDCWD, link.as_c_str()) {
                Ok(()) | Err(Errno::EEXIST) => Ok(()),
                Err(e) => Err(e),
            }
        }
        Op::Mount {
            source,
            target,
            fstype,
            flags,
            data,
        } => nix::mount::mount(
            source.as_deref(),
            target.as_c_str(),
            fstype.as_deref(),
            *flags,
            data.as_deref(),
        ),
    }
}

/// Runs in the child between `fork` and `exec`: only async-signal-safe system calls on data
/// prepared by the parent.
fn enter_sandbox(plan: &Plan) -> std::io::Result<()> {
    let fail = |what: &[u8], e: Errno| {
        log_failure(what);
        errno_to_io(e)
    };
    nix::unistd::setsid().map_err(|e| fail(b"creating a session\n", e))?;
    nix::sched::unshare(CloneFlags::CLONE_NEWNS | CloneFlags::CLONE_NEWUTS)
        .map_err(|e| fail(b"creating the mount namespace\n", e))?;
    nix::mount::mount::<str, str, str, str>(
        None,
        "/",
        None,
        MsFlags::MS_REC | MsFlags::MS_PRIVATE,
        None,
    )
    .map_err(|e| fail(b"making mount propagation private\n", e))?;
    nix::unistd::sethostname(OsStr::from_bytes(&plan.hostname))
        .map_err(|e| fail(b"setting the hostname\n", e))?;
    // Exact modes for the directories the plan creates; restored before exec.
    nix::sys::stat::umask(Mode::empty());
    for step in &plan.steps {
        run_step(step).map_err(|e| fail(&step.what, e))?;
    }
    nix::unistd::pivot_root(plan.root_c.as_c_str(), plan.old_root.as_c_str())
        .map_err(|e| fail(b"pivoting to the container root\n", e))?;
    nix::unistd::chdir("/").map_err(|e| fail(b"entering the container root\n", e))?;
    nix::mount::umount2("/.oldroot", MntFlags::MNT_DETACH)
        .map_err(|e| fail(b"detaching the host root\n", e))?;
    // The empty mount point is left behind when removing it fails; it is harmless.
    let _ = nix::unistd::unlinkat(
        nix::fcntl::AT_FDCWD,
        "/.oldroot",
        nix::unistd::UnlinkatFlags::RemoveDir,
    );
    if plan.read_only_root {
        nix::mount::mount::<str, str, str, str>(
            None,
            "/",
            None,
            MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY,
            None,
        )
        .map_err(|e| fail(b"making the root file system read-only\n", e))?;
    }
    nix::unistd::chdir(plan.working_dir.as_c_str())
        .map_err(|e| fail(b"entering the working directory\n", e))?;
    nix::sys::stat::umask(Mode::from_bits_truncate(0o022));
    for cap in &plan.drop_capabilities {
        drop_bounding_capability(*cap).map_err(|e| fail(b"dropping capabilities\n", e))?;
    }
    if plan.no_new_privs {
        nix::sys::prctl::set_no_new_privs().map_err(|e| fail(b"setting no_new_privs\n", e))?;
    }
    if let Some((uid, gid)) = plan.user {
        let gid = Gid::from_raw(gid);
        nix::unistd::setgroups(&[gid]).map_err(|e| fail(b"setting supplementary groups\n", e))?;
        nix::unistd::setgid(gid).map_err(|e| fail(b"setting the group\n", e))?;
        nix::unistd::setuid(Uid::from_raw(uid)).map_err(|e| fail(b"setting the user\n", e))?;
    }
    Ok(())
}

#[allow(unsafe_code)]
fn drop_bounding_capability(cap: u32) -> Result<(), Errno> {
    // SAFETY: prctl(PR_CAPBSET_DROP, cap) takes two integer arguments and touches no memory
    // of this process; it is a plain system call, async-signal-safe.
    let res = unsafe {
        nix::libc::prctl(
            nix::libc::PR_CAPBSET_DROP,
            nix::libc::c_ulong::from(cap),
            0,
            0,
            0,
        )
    };
    Errno::result(res).map(drop)
}

/// Starts the container process: stdout and stderr to the log, stdin from /dev/null, in a
/// new session (its process group id is its pid), inside its own root.
#[allow(unsafe_code)]
pub(crate) fn spawn(spec: &SandboxSpec) -> Result<tokio::process::Child, SandboxError> {
    let plan = build_plan(spec)?;
    let log_err = |e| SandboxError::Log {
        path: spec.log.clone(),
        source: e,
    };
    if let Some(dir) = spec.log.parent() {
        std::fs::create_dir_all(dir).map_err(log_err)?;
    }
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&spec.log)
        .map_err(log_err)?;
    let log_len_before = log.metadata().map(|m| m.len()).unwrap_or(0);
    let stderr = log.try_clone().map_err(log_err)?;
    std::fs::create_dir_all(&spec.rootfs).map_err(|e| SandboxError::Source {
        path: spec.rootfs.clone(),
        source: e,
    })?;
    let mut command = tokio::process::Command::new(spec.executable_in_container());
    command
        .arg0(&spec.argv0)
        .args(&spec.args)
        .env_clear()
        .envs(spec.env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::null())
        .stdout(Stdio::from(log))
        .stderr(Stdio::from(stderr))
        .kill_on_drop(true);
    // SAFETY: the closure runs in the forked child before exec. `enter_sandbox` only makes
    // async-signal-safe system calls (setsid, unshare, mount, mkdir, open, symlinkat,
    // sethostname, pivot_root, chdir, umount2, unlinkat, umask, prctl, setgroups, setgid,
    // setuid, write) on C strings and integers prepared before the fork; it allocates
    // nothing and takes no locks.
    unsafe {
        command.pre_exec(move || enter_sandbox(&plan));
    }
    command.spawn().map_err(|source| SandboxError::Spawn {
        step: failed_step(&spec.log, log_len_before),
        source,
    })
}

/// The setup step the child reported as failed in the log, if it wrote one.
fn failed_step(log: &Path, offset: u64) -> Option<String> {
    let content = std::fs::read(log).ok()?;
    let start = usize::try_from(offset)
        .ok()
        .filter(|o| *o <= content.len())?;
    let text = String::from_utf8_lossy(&content[start..]);
    text.lines()
        .rev()
        .find_map(|l| l.strip_prefix(SETUP_FAILED))
        .map(str::to_owned)
}

/// The capability names of Linux, by number.
const CAPABILITIES: [&str; 41] = [
    "CHOWN",
    "DAC_OVERRIDE",
    "DAC_READ_SEARCH",
    "FOWNER",
    "FSETID",
    "KILL",
    "SETGID",
    "SETUID",
    "SETPCAP",
    "LINUX_IMMUTABLE",
    "NET_BIND_SERVICE",
    "NET_BROADCAST",
    "NET_ADMIN",
    "NET_RAW",
    "IPC_LOCK",
    "IPC_OWNER",
    "SYS_MODULE",
    "SYS_RAWIO",
    "SYS_CHROOT",
    "SYS_PTRACE",
    "SYS_PACCT",
    "SYS_ADMIN",
    "SYS_BOOT",
    "SYS_NICE",
    "SYS_RESOURCE",
    "SYS_TIME",
    "SYS_TTY_CONFIG",
    "MKNOD",
    "LEASE",
    "AUDIT_WRITE",
    "AUDIT_CONTROL",
    "SETFCAP",
    "MAC_OVERRIDE",
    "MAC_ADMIN",
    "SYSLOG",
    "WAKE_ALARM",
    "BLOCK_SUSPEND",
    "AUDIT_READ",
    "PERFMON",
    "BPF",
    "CHECKPOINT_RESTORE",
];

/// The capabilities containerd and CRI-O give a container by default.
const DEFAULT_CAPABILITIES: [&str; 14] = [
    "CHOWN",
    "DAC_OVERRIDE",
    "FSETID",
    "FOWNER",
    "MKNOD",
    "NET_RAW",
    "SETGID",
    "SETUID",
    "SETFCAP",
    "SETPCAP",
    "NET_BIND_SERVICE",
    "SYS_CHROOT",
    "KILL",
    "AUDIT_WRITE",
];

fn capability_number(name: &str) -> Option<u32> {
    let name = name.strip_prefix("CAP_").unwrap_or(name);
    CAPABILITIES
        .iter()
        .position(|c| c.eq_ignore_ascii_case(name))
        .and_then(|i| u32::try_from(i).ok())
}

/// The capabilities to drop from the bounding set for a container: everything the kernel
/// knows except the runtime default set, adjusted by `add` and `drop` (`ALL` allowed);
/// nothing for a privileged container.
pub(crate) fn capabilities_to_drop(privileged: bool, add: &[String], drop: &[String]) -> Vec<u32> {
    if privileged {
        return Vec::new();
    }
    let last = std::fs::read_to_string("/proc/sys/kernel/cap_last_cap")
        .ok()
        .and_then(|s| s.trim().parse::<u32>().ok())
        .unwrap_or(40);
    let all: Vec<u32> = (0..=last).collect();
    let mut kept: Vec<u32> = DEFAULT_CAPABILITIES
        .iter()
        .filter_map(|c| capability_number(c))
        .collect();
    if drop.iter().any(|d| d.eq_ignore_ascii_case("ALL")) {
        kept.clear();
    } else {
        let dropped: Vec<u32> = drop.iter().filter_map(|d| capability_number(d)).collect();
        kept.retain(|c| !dropped.contains(c));
    }
    if add.iter().any(|a| a.eq_ignore_ascii_case("ALL")) {
        kept.clone_from(&all);
    } else {
        kept.extend(add.iter().filter_map(|a| capability_number(a)));
    }
    all.into_iter().filter(|c| !kept.contains(c)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn container_paths_must_be_absolute_and_plain() {
        assert!(container_components("/etc/x").is_ok());
        assert!(container_components("etc").is_err());
        assert!(container_components("/etc/../x").is_err());
    }

    #[test]
    fn capabilities_follow_add_and_drop() {
        let n = |s: &str| capability_number(s).unwrap_or(u32::MAX);
        let dropped = capabilities_to_drop(false, &[], &[]);
        assert!(dropped.contains(&n("SYS_ADMIN")));
        assert!(!dropped.contains(&n("CHOWN")));
        let dropped = capabilities_to_drop(false, &["DAC_OVERRIDE".into()], &["ALL".into()]);
        assert!(dropped.contains(&n("CHOWN")));
        assert!(!dropped.contains(&n("CAP_DAC_OVERRIDE")));
        assert!(capabilities_to_drop(true, &[], &["ALL".into()]).is_empty());
    }
}

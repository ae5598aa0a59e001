//! A real containerd for tests: containerd v2 with its CRI plugin on a private Unix
//! socket, its root, state, configuration and registry hosts in a fresh temporary
//! directory, run inside a private mount namespace (`unshare --mount --propagation
//! private`) so nothing it mounts is seen outside and all of it goes when it exits.
//!
//! No kubelet: the tests talk CRI to it directly (through the code under test) and check
//! its state with `ctr`, never through the code under test. Images come from the loopback
//! registry of [`crate::DockerEnv`]: [`ContainerdOptions::registries`] lists the
//! registries it pulls from over plain HTTP (a `hosts.toml` per registry), and
//! [`ContainerdOptions::aliases`] names that resolve to one of them (so an example's
//! `registry.example:5000/team/app` is pulled from loopback and nothing leaves the
//! machine).
//!
//! The binaries are the ones `tests/nodes/build.sh` builds (containerd v2.4.2): found in
//! `$HOSTPLUG_CONTAINERD_BIN` (a directory holding `containerd` and `ctr`), else in
//! `~/.cache/hostplug/nodes/*/bin`. It uses the overlayfs snapshotter as a node does (its
//! mounts stay in the private mount namespace); the NRI plugin is off.
//!
//! This module must never touch the machine's containerd, its `/etc/containerd`, or any
//! path outside its temporary directory.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::{Error, Process, Result, err, wait_until};

/// Environment variable naming the directory with `containerd` and `ctr`.
pub const BIN_ENV: &str = "HOSTPLUG_CONTAINERD_BIN";

/// How containerd is started.
#[derive(Debug, Clone)]
pub struct ContainerdOptions {
    /// Start it under `setpriv --pdeathsig KILL` (default true).
    pub tie_to_thread: bool,
    /// Where its gRPC socket goes (its directory is created); `None` puts it in the
    /// temporary directory. Must stay under 108 bytes.
    pub socket: Option<PathBuf>,
    /// Registries (`host:port`) pulled from over plain HTTP.
    pub registries: Vec<String>,
    /// `(alias, registry)`: pulls of `alias/…` go to `registry` (one of `registries`).
    pub aliases: Vec<(String, String)>,
}

impl Default for ContainerdOptions {
    fn default() -> Self {
        Self {
            tie_to_thread: true,
            socket: None,
            registries: Vec::new(),
            aliases: Vec::new(),
        }
    }
}

/// A running containerd in a temporary directory; stopped and removed on drop.
#[derive(Debug)]
pub struct Containerd {
    process: Process,
    socket: PathBuf,
    bin: PathBuf,
    dir: tempfile::TempDir,
}

/// The directory with the containerd binaries: `$HOSTPLUG_CONTAINERD_BIN`, else the
/// finished build of `tests/nodes/build.sh` under `${HOSTPLUG_CACHE:-~/.cache/hostplug}/nodes`
/// (the newest, by name), or why there is none.
pub fn bin_dir() -> Result<PathBuf> {
    if let Some(dir) = std::env::var_os(BIN_ENV) {
        return Ok(PathBuf::from(dir));
    }
    let cache = std::env::var_os("HOSTPLUG_CACHE").map_or_else(
        || {
            std::env::var_os("HOME")
                .map_or_else(|| PathBuf::from("/root"), PathBuf::from)
                .join(".cache/hostplug")
        },
        PathBuf::from,
    );
    let nodes = cache.join("nodes");
    let mut found: Vec<PathBuf> = std::fs::read_dir(&nodes)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path().join("bin"))
        .filter(|b| {
            b.join(".build-complete").is_file()
                && b.join("containerd").is_file()
                && b.join("ctr").is_file()
        })
        .collect();
    found.sort();
    found.pop().ok_or_else(|| {
        Error(format!(
            "no containerd build: run tests/nodes/build.sh (scripts/setup.sh does; it caches \
             containerd under {}) or set {BIN_ENV} to a directory holding containerd and ctr",
            nodes.display()
        ))
    })
}

fn hosts_toml(registry: &str) -> String {
    format!(
        "server = \"http://{registry}\"\n\n[host.\"http://{registry}\"]\n  capabilities = [\"pull\", \"resolve\"]\n"
    )
}

impl Containerd {
    /// Starts containerd with `options` and waits until its socket answers.
    pub fn start(options: &ContainerdOptions) -> Result<Self> {
        let bin = bin_dir()?;
        let dir = tempfile::Builder::new()
            .prefix("hpc-")
            .tempdir()
            .map_err(err("creating the temporary directory"))?;
        let d = dir.path();
        let socket = match &options.socket {
            Some(path) => {
                if let Some(parent) = path.parent() {
                    std::fs::create_dir_all(parent)
                        .map_err(err(format!("creating {}", parent.display())))?;
                }
                path.clone()
            }
            None => d.join("containerd.sock"),
        };
        let certs = d.join("certs.d");
        for registry in &options.registries {
            let host_dir = certs.join(registry);
            std::fs::create_dir_all(&host_dir).map_err(err("creating certs.d"))?;
            std::fs::write(host_dir.join("hosts.toml"), hosts_toml(registry))
                .map_err(err("writing hosts.toml"))?;
        }
        for (alias, registry) in &options.aliases {
            let host_dir = certs.join(alias);
            std::fs::create_dir_all(&host_dir).map_err(err("creating certs.d"))?;
            std::fs::write(host_dir.join("hosts.toml"), hosts_toml(registry))
                .map_err(err("writing hosts.toml"))?;
        }
        for sub in ["root", "state", "opt", "cni-bin", "cni-conf"] {
            std::fs::create_dir_all(d.join(sub)).map_err(err(format!("creating {sub}")))?;
        }
        let p = |sub: &str| d.join(sub).display().to_string();
        let config = format!(
            "version = 3\n\
             root = '{root}'\n\
             state = '{state}'\n\
             [grpc]\n  address = '{socket}'\n\
             [ttrpc]\n  address = '{socket}.ttrpc'\n\
             [metrics]\n  address = ''\n\
             [plugins.'io.containerd.internal.v1.opt']\n  path = '{opt}'\n\
             [plugins.'io.containerd.nri.v1.nri']\n  disable = true\n\
             [plugins.'io.containerd.cri.v1.images']\n  snapshotter = 'overlayfs'\n\
             [plugins.'io.containerd.cri.v1.images'.registry]\n  config_path = '{certs}'\n\
             [plugins.'io.containerd.cri.v1.runtime'.cni]\n  bin_dirs = ['{cni_bin}']\n  conf_dir = '{cni_conf}'\n",
            root = p("root"),
            state = p("state"),
            socket = socket.display(),
            opt = p("opt"),
            certs = certs.display(),
            cni_bin = p("cni-bin"),
            cni_conf = p("cni-conf"),
        );
        std::fs::write(d.join("containerd.toml"), config)
            .map_err(err("writing containerd.toml"))?;
        let mut cmd = Command::new("unshare");
        cmd.args(["--mount", "--propagation", "private", "--"])
            .arg(bin.join("containerd"))
            .arg("--config")
            .arg(d.join("containerd.toml"));
        let mut process = Process::spawn(
            "containerd",
            cmd,
            d.join("containerd.log"),
            options.tie_to_thread,
        )?;
        let (ctr, sock) = (bin.join("ctr"), socket.clone());
        wait_until("containerd", &mut process, || {
            sock.exists()
                && Command::new(&ctr)
                    .arg("--address")
                    .arg(&sock)
                    .arg("version")
                    .output()
                    .is_ok_and(|o| o.status.success())
        })?;
        Ok(Self {
            process,
            socket,
            bin,
            dir,
        })
    }

    /// The gRPC socket (CRI is served on it).
    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// The temporary directory (its log is `containerd.log`).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Runs `ctr --address <socket> -n k8s.io ARGS` and returns its stdout: the check
    /// that does not go through the code under test.
    pub fn ctr(&self, args: &[&str]) -> Result<String> {
        let out = Command::new(self.bin.join("ctr"))
            .arg("--address")
            .arg(&self.socket)
            .args(["--namespace", "k8s.io"])
            .args(args)
            .output()
            .map_err(err("running ctr"))?;
        if !out.status.success() {
            return Err(Error(format!(
                "ctr {}: {}",
                args.join(" "),
                String::from_utf8_lossy(&out.stderr).trim()
            )));
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// The image names (references) in the `k8s.io` namespace, sorted. containerd keeps
    /// one record per name; CRI adds a `sha256:…` record per image ID and a `repo@sha256:…`
    /// one per digest, which are left out.
    pub fn image_names(&self) -> Result<Vec<String>> {
        let mut names: Vec<String> = self
            .ctr(&["images", "list", "--quiet"])?
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with("sha256:") && !l.contains('@'))
            .map(str::to_owned)
            .collect();
        names.sort();
        Ok(names)
    }

    /// Stops containerd (SIGTERM, then SIGKILL) and removes its directory.
    pub fn stop(mut self) {
        self.process.stop();
    }
}

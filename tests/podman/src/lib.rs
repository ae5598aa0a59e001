//! A real Docker Engine API for tests: Podman's Docker-compatible API service with its
//! own storage on a private Unix socket, and a local docker-registry on loopback that the
//! service treats as insecure (plain HTTP), so pulls work without any public registry.
//!
//! [`DockerEnv::start`] brings both up in a fresh temporary directory; dropping it stops
//! them (SIGTERM, then SIGKILL after [`STOP_GRACE`]) and removes the directory. As a
//! safety net for a test process that dies without unwinding, both processes are started
//! under `setpriv --pdeathsig KILL`, so the kernel kills them when the thread that started
//! them ends: a `DockerEnv` belongs to the thread that made it (set
//! [`Options::tie_to_thread`] to false to opt out, e.g. from a thread pool).
//!
//! Nothing here touches the machine's own Podman state: storage (`--root`), run state
//! (`--runroot`), temporary files, locks, events, `containers.conf`, `storage.conf` and
//! `registries.conf` all live in the temporary directory. See `tests/podman/README.md`
//! for the settings and why each is needed.
//!
//! This crate must never talk to anything but the processes it started.

pub mod containerd;
pub mod registry;

use std::fmt::Write as _;
use std::io::{self, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::thread::sleep;
use std::time::{Duration, Instant};

/// How long the service and the registry get to answer after they start. Podman's
/// service needs about a second on an idle machine; 60 s covers a busy 2-core CI box
/// compiling in parallel.
pub const START_TIMEOUT: Duration = Duration::from_secs(60);

/// How long a stopped process gets to exit after SIGTERM before it is killed.
pub const STOP_GRACE: Duration = Duration::from_secs(5);

/// Time limit of one HTTP request made by the fixture itself (not by the code under test).
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// Cap on a response the fixture reads: 16 MiB, far more than an image list of a test.
const MAX_RESPONSE_BYTES: u64 = 16 << 20;

/// How the environment is started.
#[derive(Debug, Clone)]
pub struct Options {
    /// Start the processes under `setpriv --pdeathsig KILL` (default true).
    pub tie_to_thread: bool,
    /// Where the temporary directory goes; `None` uses the system's temporary directory.
    /// The socket path must stay under 108 bytes, so keep this short.
    pub parent_dir: Option<PathBuf>,
    /// Where the Docker API socket goes (its directory is created); `None` puts it in
    /// the temporary directory. The end-to-end tests put it where a simulated node's
    /// hostPath `/var/run/docker.sock` resolves. It is removed with the environment.
    pub socket: Option<PathBuf>,
    /// Registry names (`host:port`) that pulls resolve to the local registry, through a
    /// `prefix`/`location` rewrite in `registries.conf`: an image named
    /// `registry.example:5000/team/app:1.0` in an example is pulled from the loopback
    /// registry as `team/app:1.0`, and nothing leaves the machine.
    pub registry_aliases: Vec<String>,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            tie_to_thread: true,
            parent_dir: None,
            socket: None,
            registry_aliases: Vec::new(),
        }
    }
}

/// Errors of the fixture: what failed, with the process's own output when there is one.
#[derive(Debug)]
pub struct Error(pub(crate) String);

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Error {}

/// The fixture's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

fn err(what: impl Into<String>) -> impl FnOnce(io::Error) -> Error {
    let what = what.into();
    move |e| Error(format!("{what}: {e}"))
}

/// A child process that is stopped when dropped.
#[derive(Debug)]
struct Process {
    name: &'static str,
    child: Child,
    log: PathBuf,
}

impl Process {
    fn spawn(name: &'static str, mut cmd: Command, log: PathBuf, tie: bool) -> Result<Self> {
        let out =
            std::fs::File::create(&log).map_err(err(format!("creating {}", log.display())))?;
        let out2 = out.try_clone().map_err(err("log file"))?;
        let mut full = if tie {
            let mut c = Command::new("setpriv");
            c.args(["--pdeathsig", "KILL", "--"]).arg(cmd.get_program());
            c.args(cmd.get_args());
            for (k, v) in cmd.get_envs() {
                match v {
                    Some(v) => c.env(k, v),
                    None => c.env_remove(k),
                };
            }
            c
        } else {
            std::mem::replace(&mut cmd, Command::new("true"))
        };
        full.stdin(Stdio::null()).stdout(out).stderr(out2);
        let child = full.spawn().map_err(err(format!(
            "starting {name} (is it installed? see tests/podman/README.md)"
        )))?;
        Ok(Self { name, child, log })
    }

    /// Fails with the process's log when it has exited.
    fn check_alive(&mut self) -> Result<()> {
        match self.child.try_wait() {
            Ok(Some(status)) => Err(Error(format!(
                "{} exited ({status}): {}",
                self.name,
                std::fs::read_to_string(&self.log)
                    .unwrap_or_default()
                    .trim()
            ))),
            Ok(None) => Ok(()),
            Err(e) => Err(Error(format!("{}: {e}", self.name))),
        }
    }

    fn stop(&mut self) {
        if let Ok(Some(_)) = self.child.try_wait() {
            return;
        }
        // SIGTERM lets Podman remove its socket and release its storage lock.
        let pid = self.child.id().to_string();
        let _ = Command::new("kill").args(["-TERM", &pid]).status();
        let deadline = Instant::now() + STOP_GRACE;
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A free TCP port on 127.0.0.1 (bound, then released: a small race, fine for tests).
fn free_port() -> Result<u16> {
    let l = TcpListener::bind("127.0.0.1:0").map_err(err("finding a free port"))?;
    Ok(l.local_addr().map_err(err("finding a free port"))?.port())
}

fn wait_until(what: &str, proc: &mut Process, mut ready: impl FnMut() -> bool) -> Result<()> {
    let deadline = Instant::now() + START_TIMEOUT;
    loop {
        proc.check_alive()?;
        if ready() {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(Error(format!(
                "{what} did not become ready within {START_TIMEOUT:?}: {}",
                std::fs::read_to_string(&proc.log)
                    .unwrap_or_default()
                    .trim()
            )));
        }
        sleep(Duration::from_millis(100));
    }
}

/// A response of [`DockerEnv::request`].
#[derive(Debug, Clone)]
pub struct Response {
    /// HTTP status.
    pub status: u16,
    /// The body as text.
    pub body: String,
}

/// Podman's Docker API service plus a registry, in one temporary directory.
#[derive(Debug)]
pub struct DockerEnv {
    // Drop order: the service and the registry stop before the directory goes.
    service: Process,
    registry: Process,
    registry_addr: String,
    down_registry_addr: String,
    socket: PathBuf,
    dir: tempfile::TempDir,
    counter: std::cell::Cell<u32>,
}

impl Drop for DockerEnv {
    fn drop(&mut self) {
        // Podman removes its socket on SIGTERM; a socket outside the directory must not
        // outlive the environment even when it was killed.
        self.service.stop();
        self.registry.stop();
        let _ = std::fs::remove_file(&self.socket);
    }
}

impl DockerEnv {
    /// Starts everything with the default [`Options`].
    pub fn start() -> Result<Self> {
        Self::start_with(&Options::default())
    }

    /// Starts the registry, then the Podman service configured to use it.
    pub fn start_with(options: &Options) -> Result<Self> {
        let mut builder = tempfile::Builder::new();
        builder.prefix("hpd-");
        let dir = match &options.parent_dir {
            Some(p) => builder.tempdir_in(p),
            None => builder.tempdir(),
        }
        .map_err(err("creating the temporary directory"))?;
        let d = dir.path();
        let registry_port = free_port()?;
        let down_port = free_port()?;
        let registry_addr = format!("127.0.0.1:{registry_port}");
        let down_registry_addr = format!("127.0.0.1:{down_port}");
        write_configs(
            d,
            &registry_addr,
            &down_registry_addr,
            &options.registry_aliases,
        )?;

        let mut cmd = Command::new("docker-registry");
        cmd.arg("serve").arg(d.join("registry.yml"));
        let mut registry = Process::spawn(
            "docker-registry",
            cmd,
            d.join("registry.log"),
            options.tie_to_thread,
        )?;
        let addr = registry_addr.clone();
        wait_until("docker-registry", &mut registry, || {
            http_get_tcp(&addr, "/v2/").is_ok_and(|r| r.status == 200)
        })?;

        let socket = match &options.socket {
            Some(path) => {
                if let Some(parent) = path.parent() {
                    std::fs::create_dir_all(parent)
                        .map_err(err(format!("creating {}", parent.display())))?;
                }
                path.clone()
            }
            None => d.join("docker.sock"),
        };
        let mut cmd = podman_command(d);
        cmd.args(["system", "service", "--time=0"])
            .arg(format!("unix://{}", socket.display()));
        let mut service = Process::spawn(
            "podman system service",
            cmd,
            d.join("service.log"),
            options.tie_to_thread,
        )?;
        let sock = socket.clone();
        wait_until("podman system service", &mut service, || {
            unix_request(&sock, "GET", "/_ping").is_ok_and(|r| r.status == 200)
        })?;
        Ok(Self {
            service,
            registry,
            registry_addr,
            down_registry_addr,
            socket,
            dir,
            counter: std::cell::Cell::new(0),
        })
    }

    /// The Docker Engine API socket.
    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// `127.0.0.1:<port>` of the running registry.
    pub fn registry(&self) -> &str {
        &self.registry_addr
    }

    /// Lets the service talk plain HTTP to `registry` (`host:port`, e.g. a
    /// [`registry::Registry`] with htpasswd started beside it): appends an `insecure` entry to its
    /// registries.conf, which Podman reads again on each pull or push.
    pub fn trust_registry(&self, registry: &str) -> Result<()> {
        let path = self.dir().join("registries.conf");
        let mut text = std::fs::read_to_string(&path).map_err(err("reading registries.conf"))?;
        let _ = write!(
            text,
            "[[registry]]\nlocation = \"{registry}\"\ninsecure = true\n"
        );
        std::fs::write(&path, text).map_err(err("writing registries.conf"))
    }

    /// `127.0.0.1:<port>` where nothing listens, marked insecure like the real one, so a
    /// pull from it fails the way a registry that is down does.
    pub fn down_registry(&self) -> &str {
        &self.down_registry_addr
    }

    /// The temporary directory holding everything.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Runs the `podman` command line on this environment's storage.
    pub fn podman(&self, args: &[&str]) -> Result<String> {
        let out: Output = podman_command(self.dir.path())
            .args(args)
            .stdin(Stdio::null())
            .output()
            .map_err(err("running podman"))?;
        if !out.status.success() {
            return Err(Error(format!(
                "podman {}: {}{}",
                args.join(" "),
                String::from_utf8_lossy(&out.stderr).trim(),
                String::from_utf8_lossy(&out.stdout).trim()
            )));
        }
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
    }

    /// Makes a tiny image named `name` (e.g. `localhost/tiny:1`) from a rootfs of two
    /// small files (no binaries: nothing here runs it), with `labels`. Every call makes a
    /// new image ID. Returns the ID (`sha256:…`).
    pub fn make_image(&self, name: &str, labels: &[(&str, &str)]) -> Result<String> {
        let n = self.counter.get() + 1;
        self.counter.set(n);
        let root = self.dir.path().join(format!("rootfs-{n}"));
        std::fs::create_dir_all(root.join("etc")).map_err(err("rootfs"))?;
        std::fs::write(root.join("etc/image"), format!("{name} #{n}\n")).map_err(err("rootfs"))?;
        std::fs::write(root.join("hello.txt"), "hello from hostplug's tests\n")
            .map_err(err("rootfs"))?;
        let tar = self.dir.path().join(format!("rootfs-{n}.tar"));
        let status = Command::new("tar")
            .arg("-C")
            .arg(&root)
            .arg("-cf")
            .arg(&tar)
            .arg(".")
            .status()
            .map_err(err("running tar"))?;
        if !status.success() {
            return Err(Error(format!("tar failed: {status}")));
        }
        let mut args: Vec<String> = vec!["import".into()];
        for (k, v) in labels {
            args.push("--change".into());
            args.push(format!("LABEL {k}={v}"));
        }
        args.push(tar.to_string_lossy().into_owned());
        args.push(name.to_owned());
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        let id = self.podman(&refs)?;
        let _ = std::fs::remove_dir_all(&root);
        let _ = std::fs::remove_file(&tar);
        Ok(if id.starts_with("sha256:") {
            id
        } else {
            format!("sha256:{id}")
        })
    }

    /// Pushes local image `local` to the registry as `<registry>/<remote>` (e.g.
    /// `tiny:1`) and returns that full reference.
    pub fn push(&self, local: &str, remote: &str) -> Result<String> {
        let target = format!("{}/{remote}", self.registry_addr);
        self.podman(&["push", "--tls-verify=false", local, &target])?;
        Ok(target)
    }

    /// One request to the Docker API (`path` without the version prefix), for checks
    /// that must not go through the code under test.
    pub fn request(&self, method: &str, path: &str) -> Result<Response> {
        unix_request(&self.socket, method, &format!("/v1.41{path}"))
            .map_err(err(format!("{method} {path}")))
    }

    /// The IDs of every image in the service's storage, sorted.
    pub fn image_ids(&self) -> Result<Vec<String>> {
        let mut ids: Vec<String> = self
            .podman(&["images", "--all", "--no-trunc", "--format", "{{.ID}}"])?
            .lines()
            .map(|l| {
                if l.starts_with("sha256:") {
                    l.to_owned()
                } else {
                    format!("sha256:{l}")
                }
            })
            .collect();
        ids.sort();
        ids.dedup();
        Ok(ids)
    }

    /// The image ID `name` points at, or `None`.
    pub fn image_id(&self, name: &str) -> Result<Option<String>> {
        match self.podman(&["image", "inspect", "--format", "{{.ID}}", name]) {
            Ok(id) if id.starts_with("sha256:") => Ok(Some(id)),
            Ok(id) => Ok(Some(format!("sha256:{id}"))),
            Err(e) if e.0.contains("not known") || e.0.contains("no such") => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Stops the service and the registry and removes the directory (what dropping
    /// does), reporting a failure to remove it.
    pub fn stop(self) -> Result<()> {
        let dir = self.dir.path().to_path_buf();
        drop(self);
        if dir.exists() {
            return Err(Error(format!("{} could not be removed", dir.display())));
        }
        Ok(())
    }
}

/// `podman` with every global flag that keeps it inside `dir`.
fn podman_command(dir: &Path) -> Command {
    let mut c = Command::new("podman");
    c.env("CONTAINERS_CONF", dir.join("containers.conf"))
        .env("CONTAINERS_STORAGE_CONF", dir.join("storage.conf"))
        .env("CONTAINERS_REGISTRIES_CONF", dir.join("registries.conf"))
        .env("TMPDIR", dir.join("tmp"))
        .arg("--root")
        .arg(dir.join("storage"))
        .arg("--runroot")
        .arg(dir.join("run"))
        .arg("--tmpdir")
        .arg(dir.join("tmp"))
        .args([
            "--storage-driver",
            "vfs",
            "--cgroup-manager",
            "cgroupfs",
            "--events-backend",
            "file",
        ]);
    c
}

/// Writes containers.conf, storage.conf, registries.conf and the registry's config.
fn write_configs(d: &Path, registry: &str, down: &str, aliases: &[String]) -> Result<()> {
    for sub in ["storage", "run", "tmp", "registry-data"] {
        std::fs::create_dir_all(d.join(sub)).map_err(err("creating directories"))?;
    }
    let mut containers = String::new();
    let _ = write!(
        containers,
        "# Written by hostplug-podman for one test run; see tests/podman/README.md.\n\
         [containers]\n\
         default_ulimits = [\"nofile=1024:1024\", \"nproc=1000:1000\"]\n\
         [engine]\n\
         cgroup_manager = \"cgroupfs\"\n\
         events_logger = \"file\"\n\
         events_logfile_path = \"{tmp}/events.log\"\n\
         image_copy_tmp_dir = \"{tmp}\"\n\
         lock_type = \"file\"\n\
         runtime = \"runc\"\n\
         tmp_dir = \"{tmp}\"\n",
        tmp = d.join("tmp").display()
    );
    let storage = format!(
        "[storage]\ndriver = \"vfs\"\ngraphroot = \"{}\"\nrunroot = \"{}\"\n",
        d.join("storage").display(),
        d.join("run").display()
    );
    let mut registries = format!(
        "unqualified-search-registries = []\n\
         [[registry]]\nlocation = \"{registry}\"\ninsecure = true\n\
         [[registry]]\nlocation = \"{down}\"\ninsecure = true\n"
    );
    for alias in aliases {
        let _ = write!(
            registries,
            "[[registry]]\nprefix = \"{alias}\"\nlocation = \"{registry}\"\ninsecure = true\n"
        );
    }
    let registry_yml = format!(
        "version: 0.1\n\
         log:\n  level: warn\n\
         storage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\n\
         http:\n  addr: {registry}\n",
        d.join("registry-data").display()
    );
    for (name, text) in [
        ("containers.conf", containers),
        ("storage.conf", storage),
        ("registries.conf", registries),
        ("registry.yml", registry_yml),
    ] {
        std::fs::write(d.join(name), text).map_err(err(format!("writing {name}")))?;
    }
    Ok(())
}

/// An HTTP/1.0 request (so the answer is never chunked) over `stream`.
fn http_exchange(mut stream: impl Read + Write, method: &str, path: &str) -> io::Result<Response> {
    write!(
        stream,
        "{method} {path} HTTP/1.0\r\nHost: localhost\r\nContent-Length: 0\r\n\r\n"
    )?;
    stream.flush()?;
    let mut raw = Vec::new();
    stream.take(MAX_RESPONSE_BYTES).read_to_end(&mut raw)?;
    let text = String::from_utf8_lossy(&raw);
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| io::Error::other(format!("malformed response: {head:?}")))?;
    Ok(Response {
        status,
        body: body.to_owned(),
    })
}

fn unix_request(socket: &Path, method: &str, path: &str) -> io::Result<Response> {
    let s = UnixStream::connect(socket)?;
    s.set_read_timeout(Some(REQUEST_TIMEOUT))?;
    s.set_write_timeout(Some(REQUEST_TIMEOUT))?;
    http_exchange(s, method, path)
}

fn http_get_tcp(addr: &str, path: &str) -> io::Result<Response> {
    let s = TcpStream::connect(addr)?;
    s.set_read_timeout(Some(REQUEST_TIMEOUT))?;
    s.set_write_timeout(Some(REQUEST_TIMEOUT))?;
    http_exchange(s, "GET", path)
}

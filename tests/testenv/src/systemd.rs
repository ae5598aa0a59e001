//! A node whose PID 1 is a real systemd with a real D-Bus system bus: [`SystemdNode`].
//!
//! The node is a Podman container (the store of `hostplug-images`, runc, no network) of
//! the image `tests/images/systemd-node.sh` makes from Debian's packages with mmdebstrap
//! (bookworm minbase + systemd, systemd-sysv, dbus — [`hostplug_images::SYSTEMD_NODE_IMAGE`],
//! cached by the script's hash). It runs `--systemd=always` with the ulimits this machine
//! needs; `/usr/local/sbin/hostplug-boot` waits for this boot's boot ID and execs
//! `/sbin/init`, so systemd is PID 1, and dbus, journald and the units start as on a
//! Debian machine.
//!
//! # What the host sees
//!
//! Three directories of the node are bind mounts of host directories under
//! [`SystemdNode::host_root`], laid out as on the node itself so that the root can serve
//! as a simulated node's file tree (hostPath `/etc` and `/run/dbus/system_bus_socket`
//! resolve to them, see [`crate::nodesim::NodeSimulator::node_root`]):
//!
//! | host path | in the node | what |
//! |---|---|---|
//! | `<root>/etc` | `/etc` | the node's `/etc`, seeded from the image at the first start; edits from the host are the node's edits (a worker that mounts this `/etc` edits the node's) |
//! | `<root>/run/dbus` | `/run/dbus` | the system bus socket: [`SystemdNode::bus_address`] reaches the node's dbus-daemon and through it systemd, as root (the same uid inside and outside, so the bus's policy for root applies) |
//! | `<root>/var/lib/hostplug-testenv` | same | what the environment and the node exchange: the boot ID of each boot, the verb of the last shutdown, the test service's state |
//!
//! Podman's own `/etc/hostname` covers the node's (holding the node name); `/etc/hosts`
//! and `/etc/resolv.conf` are the node's files (`--no-hosts`; with no network Podman
//! mounts no `resolv.conf`).
//!
//! # The test service
//!
//! [`DEMO_SERVICE`] reads `value=` from [`DEMO_CONF`] once, at start, and writes its PID,
//! that value and the boot ID it saw to the exchange directory ([`SystemdNode::demo_state`]).
//! A restart that took effect shows as a new PID and the file's new value; an edit
//! without a restart changes nothing there.
//!
//! # Reboots: real systemd, simulated power cycle
//!
//! `systemctl reboot` (or a D-Bus `Reboot()`) is handled by the node's real systemd: units
//! stop, systemd-shutdown runs its hooks (one records the verb), and PID 1 exits — which
//! ends the container. What a machine's firmware would do next is **simulated**: a
//! supervisor thread of the [`SystemdNode`] sees the container end after a `reboot`,
//! provides a **new boot ID** (a random UUID, bind-mounted over
//! `/proc/sys/kernel/random/boot_id` inside the node before systemd starts, since the
//! kernel's is the machine's) and starts the same container again: its writable layer and
//! `/etc` stay, as a disk does; `/run` and `/tmp` are fresh. After a `poweroff` or `halt`
//! the node stays off ([`PowerState::Off`]). [`SystemdNode::boot_ids`] lists every boot;
//! [`SystemdNode::reboot`] reboots and waits, [`SystemdNode::wait_rebooted`] waits for a
//! reboot someone else asked for (over the bus, say).
//!
//! # Options
//!
//! [`SystemdNode::start_with`] takes [`BootOptions`]: more `podman create` arguments, a
//! network other than none, files an installer writes into `/etc` before the first boot,
//! and hooks run before every power-on (outside) and after the container started but
//! before systemd does (inside). The real nodes booted by systemd
//! ([`crate::realnode::systemd_node`]) are built on them.
//!
//! # Cleanup
//!
//! [`SystemdNode::stop`] and `Drop` remove the container (`podman rm --force`); every
//! container carries [`OWNER_LABEL`] with the test process's PID, and [`SystemdNode::start`]
//! first removes containers whose owner no longer runs (a test that was killed).
//!
//! This module must never touch the machine's own systemd, bus or `/etc`, or any container
//! it did not start (strays are recognised by their label only).

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use hostplug_images::ImageStore;

use crate::realnode::node::NSENTER;
use crate::{Error, Result};

/// The test service in the image.
pub const DEMO_SERVICE: &str = "hostplug-demo.service";

/// The file [`DEMO_SERVICE`] reads at start (inside the node; on the host it is
/// `etc_dir().join("hostplug-demo.conf")`).
pub const DEMO_CONF: &str = "/etc/hostplug-demo.conf";

/// The system bus socket inside the node (D-Bus's default system bus address).
pub const BUS_SOCKET: &str = "/run/dbus/system_bus_socket";

/// The directory the node and the environment exchange files in (the same path inside
/// the node and under the host root).
pub const EXCHANGE_DIR: &str = "var/lib/hostplug-testenv";

/// The kernel's boot ID file, which each boot of the node gets its own copy of.
pub const BOOT_ID_FILE: &str = "/proc/sys/kernel/random/boot_id";

/// Label on every node container; its value is the PID of the test process that started
/// it, so a later run can remove what a killed one left.
pub const OWNER_LABEL: &str = "dev.hostplug.testenv.systemd-node.owner";

/// How long systemd may take from start to `systemctl is-system-running` = `running`.
/// About 1–5 s here; two minutes covers a 2-core CI box compiling at the same time.
pub const RUNNING_TIMEOUT: Duration = Duration::from_secs(120);

/// How long a reboot may take from the container's end to the node running again
/// (the power cycle plus systemd's start), for [`SystemdNode::wait_rebooted`] callers.
pub const POWER_CYCLE_TIMEOUT: Duration = Duration::from_secs(180);

/// Seconds `podman rm --force` gives systemd to shut down before SIGKILL: a node that is
/// being removed needs no clean shutdown, and tests should not wait for one.
const STOP_GRACE_SECONDS: &str = "2";

/// How often readiness is polled.
const POLL: Duration = Duration::from_millis(200);

/// Lines of container output quoted in an error.
const LOG_TAIL_LINES: &str = "30";

/// Tells nodes of one test process apart in container names.
static SEQUENCE: AtomicU32 = AtomicU32::new(0);

/// Whether the node is on, and if not why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PowerState {
    /// The container runs (systemd may still be starting or stopping).
    On,
    /// The container ended after a shutdown that was not a reboot; it stays off.
    Off {
        /// The verb systemd-shutdown was called with (`poweroff`, `halt`), or how the
        /// container ended when there was none.
        reason: String,
    },
    /// The simulated power cycle after a reboot failed.
    Failed {
        /// What failed.
        message: String,
    },
    /// [`SystemdNode::stop`] removed the container.
    Removed,
}

/// What [`DEMO_SERVICE`] reported when it started.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DemoState {
    /// Its PID inside the node (the unit's MainPID).
    pub pid: u32,
    /// The value it read from [`DEMO_CONF`] and uses.
    pub value: String,
    /// The boot ID it saw.
    pub boot_id: String,
}

#[derive(Debug)]
struct State {
    power: PowerState,
    boot_ids: Vec<String>,
    stopping: bool,
}

#[derive(Debug)]
struct Shared {
    name: String,
    container: String,
    root: PathBuf,
    store: ImageStore,
    options: BootOptions,
    state: Mutex<State>,
    changed: Condvar,
}

/// Writes into a node's host root before its first boot ([`BootOptions::provision`]).
pub type Provision = Arc<dyn Fn(&Path) -> Result<()> + Send + Sync>;

/// Runs outside a node before each power-on ([`BootOptions::before_power_on`]).
pub type PowerOnHook = Arc<dyn Fn() -> Result<()> + Send + Sync>;

/// What a node runs with beyond the defaults (for nodes that run more than the test
/// service, such as the kubelet nodes of [`crate::realnode::systemd_node`]).
#[derive(Clone, Default)]
pub struct BootOptions {
    /// `podman create` arguments added to the defaults (volumes, devices, capabilities).
    pub podman_args: Vec<String>,
    /// The container's network (`--network`); `none` when unset.
    pub network: Option<String>,
    /// A script run at every power-on inside the node's mount namespace, with the node's
    /// `/bin/sh`, after the container started and before systemd does (it waits for the
    /// boot ID, which is provided after this script). It runs in the node's PID
    /// namespace too (`/proc/self` is its own; PID 1 is the node's first process).
    pub at_power_on: Option<String>,
    /// Called once with the node's host root after its `/etc` is seeded and before the
    /// first boot: what an installer writes (units, configuration).
    pub provision: Option<Provision>,
    /// Called before every power-on (the first included), outside the container: resets
    /// what a power cycle resets that lives outside it.
    pub before_power_on: Option<PowerOnHook>,
}

impl std::fmt::Debug for BootOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BootOptions")
            .field("podman_args", &self.podman_args)
            .field("network", &self.network)
            .field("at_power_on", &self.at_power_on)
            .field("provision", &self.provision.is_some())
            .field("before_power_on", &self.before_power_on.is_some())
            .finish()
    }
}

/// A running node with a real systemd as PID 1; see the module documentation. Removed on
/// [`SystemdNode::stop`] and on drop.
#[derive(Debug)]
pub struct SystemdNode {
    shared: Arc<Shared>,
    supervisor: Option<JoinHandle<()>>,
}

fn fail(node: &str, message: impl Into<String>) -> Error {
    Error::SystemdNode {
        node: node.to_owned(),
        message: message.into(),
    }
}

impl SystemdNode {
    /// Starts node `name` with its host-visible directories under `host_root` (created if
    /// needed; `/etc` is seeded from the image unless an earlier node left one there),
    /// and waits until systemd says `running`. Makes and imports the image first when the
    /// cache has none ([`ImageStore::systemd_node`]). Needs root and Podman.
    pub fn start(name: &str, host_root: &Path) -> Result<Self> {
        Self::start_with(name, host_root, BootOptions::default())
    }

    /// [`Self::start`] with `options` (extra `podman create` arguments, a network, hooks
    /// at each power-on).
    pub fn start_with(name: &str, host_root: &Path, options: BootOptions) -> Result<Self> {
        if name.is_empty()
            || name.len() > 63
            || !name
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        {
            return Err(fail(
                name,
                "the node name must be 1–63 characters of a-z, 0-9 and '-' (it is the hostname)",
            ));
        }
        if !nix::unistd::geteuid().is_root() {
            return Err(fail(name, "a systemd node needs root (Podman, nsenter)"));
        }
        let store = ImageStore::open().map_err(|e| fail(name, format!("image store: {e}")))?;
        let image = store
            .systemd_node()
            .map_err(|e| fail(name, format!("image: {e}")))?;
        remove_strays(&store);

        let root = host_root.to_path_buf();
        let exchange = root.join(EXCHANGE_DIR);
        for dir in [root.join("etc"), root.join("run/dbus"), exchange.clone()] {
            fs::create_dir_all(&dir)
                .map_err(|e| Error::io(format!("creating {}", dir.display()), e))?;
        }
        let seeded = root.join(".systemd-node-etc");
        if !seeded.exists() {
            // The image's /etc, over whatever a simulated node seeded there.
            run_checked(
                name,
                Command::new("tar")
                    .args(["--extract", "--numeric-owner", "--file"])
                    .arg(&image.tar)
                    .arg("--directory")
                    .arg(&root)
                    .arg("./etc"),
                "extracting the image's /etc",
            )?;
            write_file(&root.join("etc/hostname"), &format!("{name}\n"))?;
            write_file(&seeded, &format!("{}\n", image.key))?;
        }
        if let Some(provision) = &options.provision {
            provision(&root)?;
        }
        // Left by an earlier node on this root: not this boot's.
        let _ = fs::remove_file(exchange.join("shutdown"));
        let _ = fs::remove_file(exchange.join("hostplug-demo.state"));

        let container = format!(
            "hostplug-sd-{}-{}-{name}",
            std::process::id(),
            SEQUENCE.fetch_add(1, Ordering::Relaxed)
        );
        let shared = Arc::new(Shared {
            name: name.to_owned(),
            container: container.clone(),
            root: root.clone(),
            store,
            options,
            state: Mutex::new(State {
                power: PowerState::On,
                boot_ids: Vec::new(),
                stopping: false,
            }),
            changed: Condvar::new(),
        });
        let boot_id = new_boot_id(&shared)?;
        let mut create = shared.store.podman();
        create
            .args(["create", "--name", &container, "--hostname", name])
            .args(["--label", &format!("{OWNER_LABEL}={}", std::process::id())])
            .args([
                "--network",
                shared.options.network.as_deref().unwrap_or("none"),
                "--no-hosts",
            ])
            .args(["--systemd", "always", "--runtime", "runc"])
            .args([
                "--ulimit",
                "nofile=1024:1024",
                "--ulimit",
                "nproc=1000:1000",
            ]);
        for (host, inside) in [
            (root.join("etc"), "/etc".to_owned()),
            (root.join("run/dbus"), "/run/dbus".to_owned()),
            (exchange.clone(), format!("/{EXCHANGE_DIR}")),
        ] {
            create
                .arg("--volume")
                .arg(format!("{}:{inside}", host.display()));
        }
        create.args(&shared.options.podman_args);
        create.arg(image.name).arg("/usr/local/sbin/hostplug-boot");
        run_checked(name, &mut create, "podman create")?;
        let mut node = SystemdNode {
            shared: shared.clone(),
            supervisor: None,
        };
        power_on(&shared, &boot_id)?;
        node.supervisor = Some(
            thread::Builder::new()
                .name(format!("systemd-node-{name}"))
                .spawn(move || supervise(&shared))
                .map_err(|e| Error::io("starting the power-cycle supervisor", e))?,
        );
        node.wait_running(RUNNING_TIMEOUT)?;
        Ok(node)
    }

    /// The node's name (also its hostname).
    pub fn name(&self) -> &str {
        &self.shared.name
    }

    /// The Podman container's name.
    pub fn container(&self) -> &str {
        &self.shared.container
    }

    /// The host directory the node's shared directories live under (see the module
    /// documentation for the layout).
    pub fn host_root(&self) -> &Path {
        &self.shared.root
    }

    /// The node's `/etc`, as a host directory.
    pub fn etc_dir(&self) -> PathBuf {
        self.shared.root.join("etc")
    }

    /// The node's system bus socket, as a host path.
    pub fn bus_socket(&self) -> PathBuf {
        self.shared.root.join(BUS_SOCKET.trim_start_matches('/'))
    }

    /// The D-Bus address of the node's system bus from the host
    /// (`unix:path=<root>/run/dbus/system_bus_socket`), for `busctl --address` or zbus.
    pub fn bus_address(&self) -> String {
        format!("unix:path={}", self.bus_socket().display())
    }

    /// The boot ID of the current (or last) boot.
    pub fn boot_id(&self) -> String {
        self.lock().boot_ids.last().cloned().unwrap_or_default()
    }

    /// The boot IDs of every boot so far, oldest first: one more per power cycle.
    pub fn boot_ids(&self) -> Vec<String> {
        self.lock().boot_ids.clone()
    }

    /// Whether the node is on.
    pub fn power_state(&self) -> PowerState {
        self.lock().power.clone()
    }

    /// The `podman exec` command that runs `args` inside the node (for callers that run
    /// it their own way, e.g. with `tokio::process`).
    pub fn exec_command(&self, args: &[&str]) -> Command {
        let mut cmd = self.shared.store.podman();
        cmd.args(["exec", &self.shared.container]).args(args);
        cmd
    }

    /// Runs a command inside the node (`podman exec`), returning its output whatever its
    /// exit status.
    pub fn exec(&self, args: &[&str]) -> Result<Output> {
        let mut cmd = self.exec_command(args);
        cmd.stdin(Stdio::null())
            .output()
            .map_err(|e| Error::io(format!("podman exec {}", args.join(" ")), e))
    }

    /// Runs a command inside the node and returns its standard output; fails naming the
    /// command and its standard error when it exits non-zero.
    pub fn exec_ok(&self, args: &[&str]) -> Result<String> {
        let out = self.exec(args)?;
        if !out.status.success() {
            return Err(fail(
                &self.shared.name,
                format!(
                    "`{}` exited {}: {}",
                    args.join(" "),
                    out.status,
                    String::from_utf8_lossy(&out.stderr).trim()
                ),
            ));
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// Waits until `systemctl is-system-running` says `running`. Fails at once when the
    /// node is off, when systemd says `degraded` (naming the failed units), and after
    /// `timeout` naming systemd's state and its queued jobs (what did not come up).
    pub fn wait_running(&self, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        let mut last = String::from("(no answer)");
        loop {
            match self.power_state() {
                PowerState::On => {}
                other => {
                    return Err(fail(
                        &self.shared.name,
                        format!(
                            "the node is not on ({other:?}) while waiting for systemd; \
                             container output:\n{}",
                            self.container_log()
                        ),
                    ));
                }
            }
            if let Ok(out) = self.exec(&["systemctl", "is-system-running"]) {
                last = String::from_utf8_lossy(&out.stdout).trim().to_owned();
                match last.as_str() {
                    "running" => return Ok(()),
                    "degraded" => {
                        let failed = self
                            .exec(&["systemctl", "--failed", "--no-legend", "--plain"])
                            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
                            .unwrap_or_default();
                        return Err(fail(
                            &self.shared.name,
                            format!("systemd is degraded; failed units:\n{failed}"),
                        ));
                    }
                    _ => {}
                }
            }
            if Instant::now() > deadline {
                let jobs = self
                    .exec(&["systemctl", "list-jobs", "--no-legend", "--plain"])
                    .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
                    .unwrap_or_default();
                return Err(fail(
                    &self.shared.name,
                    format!(
                        "systemd did not reach `running` within {timeout:?}: \
                         is-system-running says {last:?}; jobs still queued:\n{jobs}\n\
                         container output:\n{}",
                        self.container_log()
                    ),
                ));
            }
            thread::sleep(POLL);
        }
    }

    /// Waits until the node has booted again after the boot `previous` (a reboot and its
    /// simulated power cycle) and systemd says `running`; returns the new boot ID. Fails
    /// when the node powered off instead, or the power cycle failed.
    pub fn wait_rebooted(&self, previous: &str, timeout: Duration) -> Result<String> {
        let deadline = Instant::now() + timeout;
        let mut state = self.lock();
        loop {
            if let Some(id) = state.boot_ids.last()
                && id != previous
                && state.power == PowerState::On
            {
                let id = id.clone();
                drop(state);
                self.wait_running(deadline.saturating_duration_since(Instant::now()))?;
                return Ok(id);
            }
            if state.power != PowerState::On {
                return Err(fail(
                    &self.shared.name,
                    format!(
                        "waiting for a reboot after boot {previous}: {:?}",
                        state.power
                    ),
                ));
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(fail(
                    &self.shared.name,
                    format!("no new boot after boot {previous} within {timeout:?}"),
                ));
            }
            state = self
                .shared
                .changed
                .wait_timeout(state, left)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
    }

    /// Reboots the node as an administrator would (`systemctl reboot` inside it: real
    /// systemd shuts down) and waits for the simulated power cycle and for systemd to be
    /// `running` again; returns the new boot ID.
    pub fn reboot(&self) -> Result<String> {
        let previous = self.boot_id();
        // The exec may end with an error as the container ends under it.
        let _ = self.exec(&["systemctl", "reboot"])?;
        self.wait_rebooted(&previous, POWER_CYCLE_TIMEOUT)
    }

    /// Waits until the node is no longer on (it powered off, or a power cycle failed) and
    /// returns that state.
    pub fn wait_off(&self, timeout: Duration) -> Result<PowerState> {
        let state = self.lock();
        let (state, result) = self
            .shared
            .changed
            .wait_timeout_while(state, timeout, |s| s.power == PowerState::On)
            .unwrap_or_else(PoisonError::into_inner);
        if result.timed_out() {
            return Err(fail(
                &self.shared.name,
                format!("still on after {timeout:?}"),
            ));
        }
        Ok(state.power.clone())
    }

    /// What [`DEMO_SERVICE`] reported at its last start.
    pub fn demo_state(&self) -> Result<DemoState> {
        let path = self
            .shared
            .root
            .join(EXCHANGE_DIR)
            .join("hostplug-demo.state");
        let text = fs::read_to_string(&path)
            .map_err(|e| Error::io(format!("reading {}", path.display()), e))?;
        let field = |key: &str| {
            text.lines()
                .find_map(|l| l.strip_prefix(key)?.strip_prefix('='))
                .map(str::to_owned)
                .ok_or_else(|| fail(&self.shared.name, format!("{}: no {key}=", path.display())))
        };
        let pid = field("pid")?;
        Ok(DemoState {
            pid: pid.parse().map_err(|_| {
                fail(
                    &self.shared.name,
                    format!("{}: pid={pid:?} is not a number", path.display()),
                )
            })?,
            value: field("value")?,
            boot_id: field("boot_id")?,
        })
    }

    /// The last lines of the container's output (systemd's console).
    pub fn container_log(&self) -> String {
        let mut cmd = self.shared.store.podman();
        cmd.args(["logs", "--tail", LOG_TAIL_LINES, &self.shared.container]);
        match cmd.stdin(Stdio::null()).output() {
            Ok(out) => format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ),
            Err(e) => format!("(podman logs: {e})"),
        }
    }

    /// Removes the container (systemd gets [`STOP_GRACE_SECONDS`], then SIGKILL) and ends
    /// the supervisor. The host directories stay (they are the caller's).
    pub fn stop(mut self) -> Result<()> {
        self.stop_inner()
    }

    fn stop_inner(&mut self) -> Result<()> {
        {
            let mut state = self.lock();
            if state.stopping {
                return Ok(());
            }
            state.stopping = true;
        }
        let mut cmd = self.shared.store.podman();
        cmd.args([
            "rm",
            "--force",
            "--time",
            STOP_GRACE_SECONDS,
            &self.shared.container,
        ]);
        let result = run_checked(&self.shared.name, &mut cmd, "podman rm").map(|_| ());
        if let Some(handle) = self.supervisor.take() {
            let _ = handle.join();
        }
        let mut state = self.lock();
        state.power = PowerState::Removed;
        self.shared.changed.notify_all();
        result
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.shared
            .state
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }
}

impl Drop for SystemdNode {
    fn drop(&mut self) {
        if let Err(e) = self.stop_inner() {
            tracing::warn!(node = %self.shared.name, error = %e, "removing a systemd node");
        }
    }
}

/// Writes a fresh boot ID into the exchange directory (replacing the file, so a mount of
/// the previous one is left alone) and returns it.
fn new_boot_id(shared: &Shared) -> Result<String> {
    let id = fs::read_to_string("/proc/sys/kernel/random/uuid")
        .map_err(|e| Error::io("reading a random UUID from the kernel", e))?
        .trim()
        .to_owned();
    write_file(
        &shared.root.join(EXCHANGE_DIR).join("boot_id"),
        &format!("{id}\n"),
    )?;
    Ok(id)
}

/// Starts the (created or ended) container and bind-mounts the boot ID file over the
/// kernel's inside it; `hostplug-boot` then execs systemd.
fn power_on(shared: &Shared, boot_id: &str) -> Result<()> {
    let name = &shared.name;
    if let Some(before) = &shared.options.before_power_on {
        before()?;
    }
    let mut start = shared.store.podman();
    start.args(["start", &shared.container]);
    run_checked(name, &mut start, "podman start")?;
    let mut inspect = shared.store.podman();
    inspect.args(["inspect", "--format", "{{.State.Pid}}", &shared.container]);
    let pid = run_checked(name, &mut inspect, "podman inspect")?;
    let pid = pid.trim();
    if pid.is_empty() || pid == "0" {
        return Err(fail(name, "the container ended right after its start"));
    }
    if let Some(script) = &shared.options.at_power_on {
        run_checked(
            name,
            Command::new(NSENTER)
                .args(["--target", pid, "--mount", "--pid", "--"])
                .args(["/bin/sh", "-c", script]),
            "preparing the node at power-on (nsenter + sh)",
        )?;
    }
    let source = format!("/{EXCHANGE_DIR}/boot_id");
    run_checked(
        name,
        Command::new(NSENTER)
            .args(["--target", pid, "--mount", "--", "mount", "--bind"])
            .args([source.as_str(), BOOT_ID_FILE]),
        "providing the boot ID (nsenter + mount --bind)",
    )?;
    let mut state = shared.state.lock().unwrap_or_else(PoisonError::into_inner);
    state.boot_ids.push(boot_id.to_owned());
    state.power = PowerState::On;
    shared.changed.notify_all();
    Ok(())
}

/// The power-cycle supervisor: waits for the container to end; after a reboot starts it
/// again with a new boot ID, otherwise records why it is off. Ends when the node is
/// stopped or stays off.
fn supervise(shared: &Shared) {
    loop {
        let mut wait = shared.store.podman();
        wait.args(["wait", &shared.container]);
        let ended = wait.stdin(Stdio::null()).stderr(Stdio::null()).output();
        let mut state = shared.state.lock().unwrap_or_else(PoisonError::into_inner);
        if state.stopping {
            return;
        }
        let exit = match ended {
            Ok(out) => String::from_utf8_lossy(&out.stdout).trim().to_owned(),
            Err(e) => format!("(podman wait: {e})"),
        };
        let shutdown = shared.root.join(EXCHANGE_DIR).join("shutdown");
        let verb = fs::read_to_string(&shutdown)
            .map(|v| v.trim().to_owned())
            .unwrap_or_default();
        if verb != "reboot" {
            state.power = PowerState::Off {
                reason: if verb.is_empty() {
                    format!("the container ended (exit {exit}) without a shutdown")
                } else {
                    verb
                },
            };
            shared.changed.notify_all();
            return;
        }
        let _ = fs::remove_file(&shutdown);
        let _ = fs::remove_file(shared.root.join(EXCHANGE_DIR).join("hostplug-demo.state"));
        // The simulated power cycle. A stop() meanwhile removes the container before or
        // after this start; either way none is left.
        let result = new_boot_id(shared).and_then(|id| {
            drop(state);
            power_on(shared, &id)
        });
        let mut state = shared.state.lock().unwrap_or_else(PoisonError::into_inner);
        if let Err(e) = result {
            state.power = PowerState::Failed {
                message: e.to_string(),
            };
            shared.changed.notify_all();
            return;
        }
        tracing::info!(node = %shared.name, boot = state.boot_ids.len(), "power-cycled after a reboot");
    }
}

/// Removes node containers whose owner (the test process in [`OWNER_LABEL`]) has ended.
pub(crate) fn remove_strays(store: &ImageStore) {
    let mut ps = store.podman();
    ps.args([
        "ps",
        "--all",
        "--filter",
        &format!("label={OWNER_LABEL}"),
        "--format",
        &format!("{{{{.Names}}}} {{{{index .Labels \"{OWNER_LABEL}\"}}}}"),
    ]);
    let Ok(out) = ps.stdin(Stdio::null()).stderr(Stdio::null()).output() else {
        return;
    };
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let Some((container, owner)) = line.split_once(' ') else {
            continue;
        };
        if owner
            .parse::<u32>()
            .is_ok_and(|p| !Path::new(&format!("/proc/{p}")).exists())
        {
            let mut rm = store.podman();
            rm.args(["rm", "--force", "--time", "0", container]);
            if rm
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_ok()
            {
                tracing::warn!(%container, "removed a systemd node a killed test left");
            }
        }
    }
}

/// Runs `cmd`; its standard output on success, an error naming `what` and its standard
/// error otherwise.
fn run_checked(node: &str, cmd: &mut Command, what: &str) -> Result<String> {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .map_err(|e| Error::io(what.to_owned(), e))?;
    if !out.status.success() {
        return Err(fail(
            node,
            format!(
                "{what} failed ({}): {}",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            ),
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn write_file(path: &Path, text: &str) -> Result<()> {
    let partial = path.with_extension("partial");
    fs::write(&partial, text)
        .map_err(|e| Error::io(format!("writing {}", partial.display()), e))?;
    fs::rename(&partial, path).map_err(|e| Error::io(format!("writing {}", path.display()), e))
}

//! Real nodes booted by a real systemd: [`SystemdRealNode`] — kubelet and containerd run
//! as systemd units (`kubelet.service`, `containerd.service`) under the systemd that is
//! PID 1 of a [`SystemdNode`] container, so that a reboot asked of that systemd (over its
//! D-Bus system bus, `systemctl reboot`) stops them as on a machine, and the node comes
//! back with a new boot ID, its kubelet registering again and its Pods restarted.
//! Ask for them with [`crate::EnvConfig::with_systemd_real_nodes`]; reach them with
//! [`crate::Environment::systemd_real_nodes`]. Names: `sdreal1`, `sdreal2`, …
//!
//! # What is real
//!
//! - systemd (PID 1, Debian bookworm's, the image of `tests/images/systemd-node.sh`),
//!   journald, the D-Bus system bus; the units start at boot, in order, and stop at
//!   shutdown; a reboot is systemd's own (`Reboot()` on the bus, `systemctl reboot`).
//! - kubelet v1.36, containerd v2 and runc (the binaries of `tests/nodes/build.sh` and
//!   Debian's runc, bind-mounted read-only at [`NODE_BIN_DIR`] and `/usr/sbin/runc`), with
//!   the configuration the other real nodes get ([`super::node::NodeConfig`]), written
//!   into the node's `/etc` as an installer would: `/etc/kubernetes/`,
//!   `/etc/containerd/config.toml`, `/etc/cni/net.d/`, `/etc/systemd/system/*.service`.
//! - Pod networking as on the other real nodes: the node's network namespace has a veth
//!   into the environment's fabric with its node address `10.200.0.N/24`, its Pods get
//!   `10.244.N.0/24` through the CNI bridge, routes reach the other nodes' Pods; the
//!   `kubernetes` Service relay and the egress proxy (logs, exec) serve it as any real
//!   node ([`super::net`]).
//! - Disk: `/var/lib/containerd` (images, snapshots) and `/var/lib/kubelet` are host
//!   directories under the node's root and survive a reboot, as does the container's
//!   writable layer (the rest of `/var`, `/etc`); `/run` and `/tmp` are fresh per boot.
//!
//! # What is simulated
//!
//! - **The power cycle**: systemd's reboot ends the container (PID 1 exits); the
//!   [`SystemdNode`] supervisor provides a new boot ID and starts the same container again
//!   (see [`crate::systemd`]). Before that start this module does what a power cycle does
//!   to the node's kernel state that lives outside the container: it deletes every
//!   network interface in the node's namespace except `lo` and the fabric link `eth0`
//!   (the CNI bridge and any Pod veth), and removes the node's cgroups.
//! - **The machine's network**: the namespace with its fabric link, node address and
//!   routes is made by the environment once and kept across reboots (a switch port and a
//!   static network configuration); the node's systemd does not configure it.
//! - **Kernel tunables**: the files under `/proc/sys` the kubelet writes are per-boot
//!   scratch files (this machine's values copied at power-on), since the kernel is the
//!   machine's; `/proc/sys/net` is the node's network namespace's own.
//!
//! # Limits
//!
//! - Pods see this machine's boot ID (`/proc/sys/kernel/random/boot_id` in a Pod is a
//!   fresh `proc` mount, the kernel's): the node's boot ID is the kubelet's
//!   (`status.nodeInfo.bootID`), systemd's and journald's.
//! - The systemd image is Debian's minbase plus systemd and dbus: no iptables (the
//!   kubelet logs that it cannot make its canary chains; nothing here needs them), no
//!   kube-proxy (Services other than `kubernetes` have no ClusterIP path, as on the
//!   other real nodes), no DNS server on the fabric.
//! - An orderly shutdown (`systemctl reboot`, logind's `Reboot`, `StartUnit
//!   reboot.target`) is told from a power-off by [`SHUTDOWN_VERB_UNIT`], which records the
//!   verb while the exchange directory is mounted; an immediate `Reboot()` on systemd's
//!   manager by the image's systemd-shutdown hook.
//!
//! - Reboot times: an immediate `Reboot()` on systemd's manager takes the node to Ready
//!   again in ~3–14 s here (load-dependent); an orderly one (`systemctl reboot`, logind's
//!   `Reboot`) in ~14 s, of which ~10 s ([`UNIT_STOP_SECONDS`], the node's
//!   `DefaultTimeoutStopSec`) is systemd-shutdown waiting for Pod processes that ignore
//!   SIGTERM: the kubelet's graceful node shutdown is not configured, so it does not stop
//!   Pods first, as on a machine without it. The journal is kept on the node's disk
//!   (`<root>/var/log/journal`): `journalctl --boot=-1` shows the last shutdown.
//!
//! # Isolation
//!
//! The container is not `--privileged`: it gets capabilities (all but loading modules and
//! setting the clock), no seccomp filter, `/dev/kmsg`, and its cgroups: at each power-on
//! the cgroup v1 controllers mounted in it (its own subtree of each hierarchy, under
//! `hostplug-rn-<test pid>-<seq>-<node>` — the `--cgroup-parent`) are remounted
//! read-write; `/proc/sys` stays read-only but for the scratch files and `/proc/sys/net`.
//! Units that would change the machine from inside (`systemd-sysctl`, `systemd-binfmt`,
//! `systemd-modules-load`, …) are masked in its `/etc`. The container carries
//! [`crate::systemd::OWNER_LABEL`]; its cgroups carry the test process's PID in their
//! name: a killed test's leftovers are removed at the next start (containers by the
//! label, cgroups by [`super::cleanup`]). This module must never touch the machine's own
//! systemd, `/etc`, iptables or sysctls, or cgroups outside the node's own.

use std::fs::{self, File};
use std::net::{Ipv4Addr, SocketAddrV4};
use std::path::{Path, PathBuf};
use std::process::Output;
use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Node;
use kube::{Api, Client};
use tokio::task::JoinHandle;

use super::binaries::NodeBinaries;
use super::cleanup;
use super::net::{self, EgressTable};
use super::node::{
    KUBERNETES_SERVICE_PORT, NSENTER, NodeConfig, NodePlan, REAL_NODE_LABEL, UNSHARE, join_fabric,
    node_ip, pod_cidr, run,
};
use crate::controlplane::KUBERNETES_SERVICE_IP;
use crate::controlplane::pki::write_private;
use crate::controlplane::process::ManagedProcess;
use crate::systemd::{BootOptions, EXCHANGE_DIR, PowerState, SystemdNode};
use crate::{Error, Result};

/// The label (value `true`) of real nodes booted by systemd, beside [`REAL_NODE_LABEL`].
pub const SYSTEMD_NODE_LABEL: &str = "hostplug.test/systemd-node";

/// Where the node binaries (kubelet, containerd, ctr, the shim, `cni/`) are inside the
/// node: a read-only bind mount of `tests/nodes/build.sh`'s bin directory.
pub const NODE_BIN_DIR: &str = "/opt/hostplug/bin";

/// containerd's unit.
pub const CONTAINERD_UNIT: &str = "containerd.service";

/// The kubelet's unit.
pub const KUBELET_UNIT: &str = "kubelet.service";

/// The unit that records the verb of an orderly shutdown (`systemctl reboot`, logind's
/// `Reboot`, `StartUnit reboot.target`) for the power-cycle supervisor.
pub const SHUTDOWN_VERB_UNIT: &str = "hostplug-shutdown-verb.service";

/// containerd's socket inside the node (its default; the operator's default
/// `--node-containerd-socket`).
pub const CONTAINERD_SOCKET: &str = "/run/containerd/containerd.sock";

/// How long containerd may take after systemd says `running` to answer (it is started
/// by then; the first start makes its directories).
pub const CONTAINERD_TIMEOUT: Duration = Duration::from_secs(60);

/// How long a node may take from its power-on (or a reboot) to `Ready` in the API: the
/// boot, containerd, the kubelet's start and its first status. ~10–20 s here; three
/// minutes covers a loaded 2-core CI box.
pub const READY_TIMEOUT: Duration = Duration::from_secs(180);

/// The kernel tunables the kubelet writes (`/proc/sys/…`); each boot gets scratch files.
const SYSCTLS: [&str; 6] = [
    "vm/overcommit_memory",
    "vm/panic_on_oom",
    "kernel/panic",
    "kernel/panic_on_oops",
    "kernel/keys/root_maxkeys",
    "kernel/keys/root_maxbytes",
];

/// Units masked in the node's `/etc`: each would change the machine (its kernel
/// tunables, binfmt handlers, modules, clock) or needs hardware a container lacks.
const MASKED_UNITS: [&str; 8] = [
    "systemd-sysctl.service",
    "systemd-binfmt.service",
    "proc-sys-fs-binfmt_misc.automount",
    "proc-sys-fs-binfmt_misc.mount",
    "systemd-modules-load.service",
    "kmod-static-nodes.service",
    "systemd-pstore.service",
    "systemd-hwdb-update.service",
];

/// Capabilities the node does not get, though its kubelet and containerd have all others:
/// loading kernel modules and setting the clock act on the whole machine; rebooting is
/// handled by ending the container (see [`crate::systemd`]).
const DROPPED_CAPABILITIES: [&str; 3] = ["SYS_MODULE", "SYS_TIME", "SYS_BOOT"];

/// The cgroup part of the power-on script (run in the node's mount and PID namespaces,
/// before systemd starts: PID 1 is the container's first process). For each cgroup v1 hierarchy mounted in the node:
/// the mount becomes the node's own subtree, writable (Podman leaves some controllers —
/// here hugetlb, net_cls/net_prio, perf_event, the unified one — unmounted, and systemd
/// would mount them whole at boot: they are mounted here first; Podman mounts systemd's
/// hierarchy whole: these get
/// the subtree mounted over them, the container's first process moved into it); then,
/// as kind does on cgroup v1, the subtree is also mounted at its own path inside itself,
/// so the paths in `/proc/self/cgroup` (this machine's view) resolve under
/// `/sys/fs/cgroup/<controller>` for systemd, the kubelet and runc.
const CGROUP_SCRIPT: &str = r#"
own=$(awk -F: '$2 == "memory" { print $3 }' /proc/1/cgroup)
case "$own" in /hostplug-rn-*) ;; *) echo "unexpected own cgroup: $own" >&2; exit 1 ;; esac
umount /sys/fs/cgroup/systemd/release_agent 2>/dev/null || true
# What Podman leaves unmounted systemd would mount whole at boot: mount it first.
mount -o remount,rw /sys/fs/cgroup
for c in $UNMOUNTED; do
  [ -e "/sys/fs/cgroup/$c" ] && continue
  mkdir "/sys/fs/cgroup/$c"
  mount -t cgroup -o "$c" cgroup "/sys/fs/cgroup/$c" || rmdir "/sys/fs/cgroup/$c"
done
[ -e /sys/fs/cgroup/net_cls ] || ln -s net_cls,net_prio /sys/fs/cgroup/net_cls
[ -e /sys/fs/cgroup/net_prio ] || ln -s net_cls,net_prio /sys/fs/cgroup/net_prio
if [ ! -e /sys/fs/cgroup/unified ]; then
  mkdir /sys/fs/cgroup/unified
  mount -t cgroup2 -o nsdelegate cgroup2 /sys/fs/cgroup/unified
fi
mount -o remount,ro /sys/fs/cgroup
for m in /sys/fs/cgroup/*; do
  [ -d "$m" ] || continue
  top=$(awk -v m="$m" '$5 == m { r = $4 } END { print r }' /proc/1/mountinfo)
  [ -n "$top" ] || continue
  if [ "$top" = / ] && [ "$m" = /sys/fs/cgroup/systemd ]; then
    umount -l "$m"
    top=$(awk -v m="$m" '$5 == m { r = $4 } END { print r }' /proc/1/mountinfo)
  fi
  if [ "$top" = / ]; then
    mkdir -p "$m$own"
    echo 1 > "$m$own/cgroup.procs"
    mount --bind "$m$own" "$m"
  elif [ "$top" = "$own" ]; then
    mount -o remount,bind,rw "$m"
  else
    echo "$m: unexpected mount root $top (own cgroup $own)" >&2; exit 1
  fi
  mkdir -p "$m$own"
  mount --bind "$m" "$m$own"
done
"#;

/// Seconds a stopped unit (and, at shutdown, what is left) gets before SIGKILL: Pods
/// have short grace periods in tests.
pub const UNIT_STOP_SECONDS: u32 = 10;

/// How often the node's state is polled.
const POLL: Duration = Duration::from_millis(250);

/// A real node booted by systemd; see the module documentation. Stopped (and everything of
/// it removed) by the environment.
#[derive(Debug)]
pub struct SystemdRealNode {
    name: String,
    ip: Ipv4Addr,
    pod_cidr: String,
    root: PathBuf,
    cgroup: String,
    binaries: NodeBinaries,
    egress: EgressTable,
    netns: Option<Arc<File>>,
    relay: Option<JoinHandle<()>>,
    // Stopped before the namespace holder.
    node: Option<SystemdNode>,
    holder: Option<ManagedProcess>,
    started: Instant,
}

impl SystemdRealNode {
    /// Prepares the node's network namespace and `/etc`, boots it, and imports the pause
    /// and test images into its containerd. Does not wait for Ready.
    pub(crate) fn launch(plan: NodePlan<'_>) -> Result<Self> {
        let started = Instant::now();
        let name = plan.name.clone();
        let err = |message: String| Error::RealNode {
            node: name.clone(),
            message,
        };
        let root = plan.dir.clone();
        for sub in [
            "var/lib/containerd",
            "var/lib/kubelet",
            "var/log/journal",
            EXCHANGE_DIR,
            &format!("{EXCHANGE_DIR}/sysctl"),
            &format!("{EXCHANGE_DIR}/images"),
        ] {
            let d = root.join(sub);
            fs::create_dir_all(&d)
                .map_err(|e| Error::io(format!("creating {}", d.display()), e))?;
        }

        // The network namespace: made once, kept across reboots (the machine's network).
        let holder = ManagedProcess::spawn(
            &format!("{name} network namespace"),
            Path::new(UNSHARE),
            &[
                "--net".into(),
                "--".into(),
                "/bin/sleep".into(),
                "infinity".into(),
            ],
            &[],
            &root.join("namespace.log"),
        )?;
        let holder_pid = holder.id();
        wait_own_netns(holder_pid).map_err(&err)?;
        let netns = Arc::new(
            File::open(format!("/proc/{holder_pid}/ns/net"))
                .map_err(|e| Error::io(format!("opening the network namespace of {name}"), e))?,
        );
        let ip = node_ip(plan.index);
        let mut node = SystemdRealNode {
            name: name.clone(),
            ip,
            pod_cidr: pod_cidr(plan.index),
            root: root.clone(),
            cgroup: plan.cgroup.clone(),
            binaries: plan.binaries.clone(),
            egress: plan.egress.clone(),
            netns: Some(netns.clone()),
            relay: None,
            node: None,
            holder: Some(holder),
            started,
        };
        join_fabric(
            &name,
            holder_pid,
            plan.index,
            plan.count,
            plan.fabric_pid,
            plan.fabric_bridge,
        )?;
        let listen = SocketAddrV4::new(
            KUBERNETES_SERVICE_IP
                .parse()
                .map_err(|e| err(format!("KUBERNETES_SERVICE_IP: {e}")))?,
            KUBERNETES_SERVICE_PORT,
        );
        node.relay = Some(
            net::start_api_relay(plan.net, netns.clone(), listen, plan.api_server)
                .map_err(|e| Error::io(format!("starting the API relay of {name}"), e))?,
        );
        plan.egress.insert(&name, ip, netns);

        // What an installer writes into /etc: certificates, configuration, units.
        let client = plan.pki.issue_client(
            &root.join("pki"),
            "kubelet-client",
            &format!("system:node:{name}"),
            Some("system:nodes"),
        )?;
        let files = InstallFiles {
            ca: fs::read(&plan.pki.ca.cert)
                .map_err(|e| Error::io(format!("reading {}", plan.pki.ca.cert.display()), e))?,
            client_cert: fs::read(&client.cert)
                .map_err(|e| Error::io(format!("reading {}", client.cert.display()), e))?,
            client_key: fs::read(&client.key)
                .map_err(|e| Error::io(format!("reading {}", client.key.display()), e))?,
            config: node.config(),
        };
        let options = node.boot_options(holder_pid, files);
        let booted = SystemdNode::start_with(&name, &root, options)?;
        node.node = Some(booted);
        node.wait_containerd(CONTAINERD_TIMEOUT)?;
        for tar in [
            plan.binaries.pause_image(),
            plan.binaries.test_image().to_owned(),
        ] {
            node.import_image_blocking(&tar)?;
        }
        Ok(node)
    }

    /// The node's configuration as its kubelet and containerd see it (paths inside).
    fn config(&self) -> NodeConfig {
        let pki = Path::new("/etc/kubernetes/pki");
        NodeConfig {
            name: self.name.clone(),
            ip: self.ip,
            pod_cidr: self.pod_cidr.clone(),
            // The container's own cgroup is the root of each hierarchy it sees.
            cgroup_root: "/".into(),
            containerd_root: "/var/lib/containerd".into(),
            containerd_state: "/run/containerd".into(),
            containerd_opt: "/var/lib/containerd/opt".into(),
            containerd_socket: CONTAINERD_SOCKET.into(),
            runc: "/usr/sbin/runc".into(),
            runc_root: "/run/containerd/runc".into(),
            cni_bin: Path::new(NODE_BIN_DIR).join("cni"),
            cni_conf: "/etc/cni/net.d".into(),
            // Fresh per boot: the addresses of Pods that died with the last boot are free.
            cni_ipam: "/run/cni/ipam".into(),
            pod_logs: "/var/log/pods".into(),
            ca: pki.join("ca.crt"),
            client_cert: pki.join("kubelet-client.crt"),
            client_key: pki.join("kubelet-client.key"),
            kubelet_config: "/etc/kubernetes/kubelet-config.yaml".into(),
            kubeconfig: "/etc/kubernetes/kubelet.kubeconfig".into(),
            kubelet_root: "/var/lib/kubelet".into(),
            labels: vec![
                format!("{REAL_NODE_LABEL}=true"),
                format!("{SYSTEMD_NODE_LABEL}=true"),
            ],
        }
    }

    fn boot_options(&self, holder_pid: u32, files: InstallFiles) -> BootOptions {
        let mut podman_args: Vec<String> = vec![
            "--cap-add".into(),
            "ALL".into(),
            "--security-opt".into(),
            "seccomp=unconfined".into(),
            "--device".into(),
            "/dev/kmsg".into(),
            "--cgroup-parent".into(),
            format!("/{}", self.cgroup),
        ];
        for cap in DROPPED_CAPABILITIES {
            podman_args.push("--cap-drop".into());
            podman_args.push(cap.into());
        }
        for (host, inside, mode) in [
            (
                self.binaries.dir().to_owned(),
                NODE_BIN_DIR.to_owned(),
                ":ro",
            ),
            (
                self.binaries.runc().to_owned(),
                "/usr/sbin/runc".to_owned(),
                ":ro",
            ),
            (
                self.root.join("var/lib/containerd"),
                "/var/lib/containerd".to_owned(),
                "",
            ),
            (
                self.root.join("var/lib/kubelet"),
                "/var/lib/kubelet".to_owned(),
                "",
            ),
            // Podman puts a tmpfs there; the node's journal is kept (and readable here).
            (
                self.root.join("var/log/journal"),
                "/var/log/journal".to_owned(),
                "",
            ),
        ] {
            podman_args.push("--volume".into());
            podman_args.push(format!("{}:{inside}{mode}", host.display()));
        }

        let mut script = String::from("set -e\n");
        for key in SYSCTLS {
            script += &format!(
                "mount --bind /{EXCHANGE_DIR}/sysctl/{} /proc/sys/{key}\n",
                key.replace('/', ".")
            );
        }
        // The network namespace's own tunables (CNI's bridge sets some).
        script += "mount --bind /proc/sys/net /proc/sys/net\n\
                   mount -o remount,bind,rw /proc/sys/net\n";
        script += &format!("UNMOUNTED=\"{}\"\n", UNMOUNTED_HIERARCHIES.join(" "));
        script += CGROUP_SCRIPT;

        let root = self.root.clone();
        let name = self.name.clone();
        let cgroup = self.cgroup.clone();
        let provision_name = self.name.clone();
        BootOptions {
            podman_args,
            network: Some(format!("ns:/proc/{holder_pid}/ns/net")),
            at_power_on: Some(script),
            provision: Some(Arc::new(move |root: &Path| {
                install(&provision_name, root, &files)
            })),
            before_power_on: Some(Arc::new(move || {
                power_cycle_reset(&name, &root, &cgroup, holder_pid)
            })),
        }
    }

    /// The node's name (also its hostname).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The node's address (its InternalIP) on the environment's fabric network.
    pub fn ip(&self) -> Ipv4Addr {
        self.ip
    }

    /// The range this node's Pods get addresses from (`10.244.N.0/24`).
    pub fn pod_cidr(&self) -> &str {
        &self.pod_cidr
    }

    /// The systemd node underneath: its container, bus, boot IDs, reboots, `exec`.
    pub fn systemd(&self) -> &SystemdNode {
        self.node
            .as_ref()
            .expect("the systemd node runs until the real node is stopped")
    }

    /// The host directory the node's shared directories live under (`etc/`,
    /// `run/dbus/`, `var/lib/containerd/`, `var/lib/kubelet/`, the exchange directory).
    pub fn host_root(&self) -> &Path {
        &self.root
    }

    /// The node's `/etc`, as a host directory.
    pub fn etc_dir(&self) -> PathBuf {
        self.root.join("etc")
    }

    /// The node's system bus socket, as a host path.
    pub fn bus_socket(&self) -> PathBuf {
        self.systemd().bus_socket()
    }

    /// The D-Bus address of the node's system bus from the host, for `busctl --address`
    /// or zbus.
    pub fn bus_address(&self) -> String {
        self.systemd().bus_address()
    }

    /// The boot ID of the current (or last) boot.
    pub fn boot_id(&self) -> String {
        self.systemd().boot_id()
    }

    /// The boot IDs of every boot so far, oldest first: one more per power cycle.
    pub fn boot_ids(&self) -> Vec<String> {
        self.systemd().boot_ids()
    }

    /// When the environment started making this node (for boot-to-Ready times).
    pub fn started_at(&self) -> Instant {
        self.started
    }

    /// Reboots the node through its systemd (`systemctl reboot` inside) and waits for the
    /// power cycle and systemd `running`; returns the new boot ID. Blocking. The Node is
    /// Ready again only later: see [`Self::wait_ready`].
    pub fn reboot(&self) -> Result<String> {
        self.systemd().reboot()
    }

    /// Waits (blocking) for a reboot someone else asked for (over the bus, say) after boot
    /// `previous`, and for systemd `running`; returns the new boot ID.
    pub fn wait_rebooted(&self, previous: &str, timeout: Duration) -> Result<String> {
        self.systemd().wait_rebooted(previous, timeout)
    }

    /// Waits until the Node object says Ready with a heartbeat from the current boot (its
    /// `nodeInfo.bootID` is [`Self::boot_id`]); fails at once when the node is off, and
    /// after `timeout` with the kubelet's journal.
    pub async fn wait_ready(&self, client: &Client, timeout: Duration) -> Result<()> {
        let api: Api<Node> = Api::all(client.clone());
        let deadline = Instant::now() + timeout;
        loop {
            let power = self.systemd().power_state();
            if !matches!(power, PowerState::On) {
                return Err(Error::RealNode {
                    node: self.name.clone(),
                    message: format!("the node is not on ({power:?}) while waiting for Ready"),
                });
            }
            let boot = self.boot_id();
            if let Ok(Some(node)) = api.get_opt(&self.name).await {
                let status = node.status.unwrap_or_default();
                let booted = status.node_info.as_ref().is_some_and(|i| i.boot_id == boot);
                let ready = status
                    .conditions
                    .unwrap_or_default()
                    .iter()
                    .any(|c| c.type_ == "Ready" && c.status == "True");
                if booted && ready {
                    return Ok(());
                }
            }
            if Instant::now() > deadline {
                return Err(Error::RealNode {
                    node: self.name.clone(),
                    message: format!(
                        "not Ready with boot ID {boot} within {timeout:?}; kubelet's journal:\n{}",
                        self.journal(KUBELET_UNIT, 40)
                    ),
                });
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// The last `lines` lines of `unit`'s journal in this boot (or what went wrong
    /// reading it): for failure messages.
    pub fn journal(&self, unit: &str, lines: u32) -> String {
        let lines = lines.to_string();
        match self.systemd().exec(&[
            "journalctl",
            "--no-pager",
            "--boot",
            "--unit",
            unit,
            "--lines",
            &lines,
        ]) {
            Ok(out) => format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ),
            Err(e) => format!("(journalctl: {e})"),
        }
    }

    /// Runs a command inside the node (`podman exec`), whatever its exit status.
    pub fn exec(&self, args: &[&str]) -> Result<Output> {
        self.systemd().exec(args)
    }

    /// Runs `ctr` in the node against its containerd, namespace `k8s.io` (the
    /// kubelet's); its standard output. Blocking.
    pub fn ctr(&self, args: &[&str]) -> Result<String> {
        let ctr = format!("{NODE_BIN_DIR}/ctr");
        let mut full = vec![ctr.as_str(), "-a", CONTAINERD_SOCKET, "-n", "k8s.io"];
        full.extend_from_slice(args);
        self.systemd().exec_ok(&full)
    }

    /// Imports a docker-archive or OCI image tarball (`podman save`, a built hostplug
    /// image's archive) into the node's containerd, namespace `k8s.io`: Pods use it with
    /// `imagePullPolicy: Never` (or `IfNotPresent`). The image stays across reboots (it is
    /// on the node's disk). As [`super::RealNode::import_image`].
    pub async fn import_image(&self, tar: impl AsRef<Path>) -> Result<()> {
        let (staged, inside) = self.stage_image(tar.as_ref())?;
        let ctr = format!("{NODE_BIN_DIR}/ctr");
        let args = [
            ctr.as_str(),
            "-a",
            CONTAINERD_SOCKET,
            "-n",
            "k8s.io",
            "images",
            "import",
            inside.as_str(),
        ];
        let mut cmd = tokio::process::Command::from(self.systemd().exec_command(&args));
        let out = cmd
            .stdin(std::process::Stdio::null())
            .output()
            .await
            .map_err(|e| Error::io("podman exec ctr images import", e));
        let _ = fs::remove_file(&staged);
        let out = out?;
        if out.status.success() {
            Ok(())
        } else {
            Err(Error::RealNode {
                node: self.name.clone(),
                message: format!(
                    "importing {}: ctr exited {}: {}",
                    tar.as_ref().display(),
                    out.status,
                    String::from_utf8_lossy(&out.stderr).trim()
                ),
            })
        }
    }

    /// [`Self::import_image`], blocking.
    pub fn import_image_blocking(&self, tar: &Path) -> Result<()> {
        let (staged, inside) = self.stage_image(tar)?;
        let result = self.ctr(&["images", "import", &inside]);
        let _ = fs::remove_file(&staged);
        result.map(drop)
    }

    /// Puts `tar` into the exchange directory (a hard link when it is on the same file
    /// system, else a copy); returns its host path and its path inside the node.
    fn stage_image(&self, tar: &Path) -> Result<(PathBuf, String)> {
        // A symlink (the test image's is one) is staged as what it points to.
        let tar = &fs::canonicalize(tar)
            .map_err(|e| Error::io(format!("resolving {}", tar.display()), e))?;
        let file = tar
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "image.tar".into());
        let staged = self.root.join(EXCHANGE_DIR).join("images").join(&file);
        let _ = fs::remove_file(&staged);
        if fs::hard_link(tar, &staged).is_err() {
            fs::copy(tar, &staged).map_err(|e| {
                Error::io(
                    format!("copying {} to {}", tar.display(), staged.display()),
                    e,
                )
            })?;
        }
        Ok((staged, format!("/{EXCHANGE_DIR}/images/{file}")))
    }

    /// Waits until containerd answers inside the node.
    fn wait_containerd(&self, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            if self.ctr(&["version"]).is_ok() {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(Error::RealNode {
                    node: self.name.clone(),
                    message: format!(
                        "containerd did not answer within {timeout:?}; its journal:\n{}",
                        self.journal(CONTAINERD_UNIT, 40)
                    ),
                });
            }
            std::thread::sleep(POLL);
        }
    }

    /// Err when the node is off (it powered off, or a power cycle failed).
    pub(crate) fn check_running(&self) -> Result<()> {
        match self.node.as_ref().map(SystemdNode::power_state) {
            Some(PowerState::On) => Ok(()),
            other => Err(Error::RealNode {
                node: self.name.clone(),
                message: format!("the node is not on: {other:?}"),
            }),
        }
    }

    /// Removes the container, then whatever is left in the node's cgroups, its network
    /// namespace and relay. Blocking; idempotent.
    pub(crate) fn stop(&mut self) {
        if let Some(node) = self.node.take()
            && let Err(e) = node.stop()
        {
            tracing::warn!(node = %self.name, error = %e, "removing a systemd real node");
        }
        cleanup::kill_cgroup(&self.cgroup, Duration::from_secs(5));
        if let Some(relay) = self.relay.take() {
            relay.abort();
        }
        self.egress.remove(&self.name, self.ip);
        self.netns = None;
        if let Some(mut holder) = self.holder.take() {
            holder.kill();
        }
        let left = cleanup::remove_cgroup(&self.cgroup, Duration::from_secs(5));
        if !left.is_empty() {
            tracing::warn!(node = %self.name, ?left, "cgroups of a systemd real node could not be removed");
        }
        remove_unmounted_cgroups(&self.name, &self.cgroup);
    }
}

impl Drop for SystemdRealNode {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The certificate files and configuration [`install`] writes.
struct InstallFiles {
    ca: Vec<u8>,
    client_cert: Vec<u8>,
    client_key: Vec<u8>,
    config: NodeConfig,
}

/// Writes what an installer would into the node's `/etc` (`root/etc`): the PKI, the
/// kubelet's, containerd's and the CNI configuration, the units (enabled), the masks.
fn install(name: &str, root: &Path, files: &InstallFiles) -> Result<()> {
    let etc = root.join("etc");
    let inside = |p: &Path| etc.join(p.strip_prefix("/etc").unwrap_or(p));
    let c = &files.config;
    for dir in [
        etc.join("kubernetes/pki"),
        etc.join("containerd"),
        etc.join("cni/net.d"),
        etc.join("systemd/system/multi-user.target.wants"),
    ] {
        fs::create_dir_all(&dir)
            .map_err(|e| Error::io(format!("creating {}", dir.display()), e))?;
    }
    let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    write_private(&inside(&c.ca), &text(&files.ca))?;
    write_private(&inside(&c.client_cert), &text(&files.client_cert))?;
    write_private(&inside(&c.client_key), &text(&files.client_key))?;
    write_private(&inside(&c.kubeconfig), &c.kubeconfig())?;
    write_private(&inside(&c.kubelet_config), &c.kubelet_config())?;
    write_private(&etc.join("containerd/config.toml"), &c.containerd_toml())?;
    write_private(
        &etc.join("cni/net.d/10-bridge.conflist"),
        &c.cni_conflist()?,
    )?;
    // containerd copies /etc/hosts into every sandbox; the image has none (no netbase).
    let hosts = etc.join("hosts");
    if !hosts.exists() {
        let text = format!("127.0.0.1\tlocalhost\n::1\tlocalhost\n{}\t{name}\n", c.ip);
        fs::write(&hosts, text)
            .map_err(|e| Error::io(format!("writing {}", hosts.display()), e))?;
    }
    let path =
        format!("PATH={NODE_BIN_DIR}:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin");
    let containerd = format!(
        "[Unit]\n\
         Description=containerd container runtime (hostplug test node)\n\
         After=local-fs.target\n\n\
         [Service]\n\
         Environment={path}\n\
         ExecStart={NODE_BIN_DIR}/containerd --config /etc/containerd/config.toml\n\
         Type=notify\n\
         Delegate=yes\n\
         KillMode=process\n\
         Restart=always\n\
         RestartSec=1\n\
         TimeoutStopSec={UNIT_STOP_SECONDS}\n\
         LimitNOFILE=infinity\n\n\
         [Install]\n\
         WantedBy=multi-user.target\n"
    );
    let kubelet = format!(
        "[Unit]\n\
         Description=kubelet (hostplug test node)\n\
         Wants={CONTAINERD_UNIT}\n\
         After={CONTAINERD_UNIT}\n\n\
         [Service]\n\
         Environment={path}\n\
         ExecStart={NODE_BIN_DIR}/kubelet {}\n\
         Restart=always\n\
         RestartSec=1\n\
         TimeoutStopSec={UNIT_STOP_SECONDS}\n\n\
         [Install]\n\
         WantedBy=multi-user.target\n",
        c.kubelet_args().join(" ")
    );
    // The verb of an orderly shutdown, recorded while the exchange directory is still
    // mounted (systemd-shutdown's hook records it after an immediate Reboot(), but runs
    // after the orderly path has unmounted that directory).
    let record = format!(
        "[Unit]\n\
         Description=Record the shutdown verb for the test environment\n\
         RequiresMountsFor=/{EXCHANGE_DIR}\n\n\
         [Service]\n\
         Type=oneshot\n\
         RemainAfterExit=yes\n\
         ExecStart=/bin/true\n\
         ExecStop=/bin/sh -c 'for t in reboot kexec poweroff halt; do \
         if systemctl list-jobs --no-legend | grep -q \" $t.target \"; then \
         echo $t > /{EXCHANGE_DIR}/shutdown; exit 0; fi; done'\n\n\
         [Install]\n\
         WantedBy=multi-user.target\n"
    );
    // Stop timeouts of a test machine: systemd's default of 90 s per unit would let one
    // slow mount or scope hold a reboot for minutes.
    let manager = etc.join("systemd/system.conf.d");
    fs::create_dir_all(&manager)
        .map_err(|e| Error::io(format!("creating {}", manager.display()), e))?;
    let conf = manager.join("hostplug-testenv.conf");
    fs::write(
        &conf,
        format!("[Manager]\nDefaultTimeoutStopSec={UNIT_STOP_SECONDS}s\n"),
    )
    .map_err(|e| Error::io(format!("writing {}", conf.display()), e))?;
    // The journal on the node's disk, so the last boot's shutdown can be read after a
    // reboot (`journalctl --boot=-1`).
    let journald = etc.join("systemd/journald.conf.d");
    fs::create_dir_all(&journald)
        .map_err(|e| Error::io(format!("creating {}", journald.display()), e))?;
    let conf = journald.join("hostplug-testenv.conf");
    fs::write(&conf, "[Journal]\nStorage=persistent\n")
        .map_err(|e| Error::io(format!("writing {}", conf.display()), e))?;
    let units = [
        (CONTAINERD_UNIT, containerd.as_str()),
        (KUBELET_UNIT, kubelet.as_str()),
        (SHUTDOWN_VERB_UNIT, record.as_str()),
    ];
    for (unit, text) in units {
        let file = etc.join("systemd/system").join(unit);
        fs::write(&file, text).map_err(|e| Error::io(format!("writing {}", file.display()), e))?;
        let link = etc
            .join("systemd/system/multi-user.target.wants")
            .join(unit);
        let _ = fs::remove_file(&link);
        std::os::unix::fs::symlink(format!("/etc/systemd/system/{unit}"), &link)
            .map_err(|e| Error::io(format!("enabling {unit} ({})", link.display()), e))?;
    }
    for unit in MASKED_UNITS {
        let link = etc.join("systemd/system").join(unit);
        let _ = fs::remove_file(&link);
        std::os::unix::fs::symlink("/dev/null", &link)
            .map_err(|e| Error::io(format!("masking {unit} ({})", link.display()), e))?;
    }
    tracing::debug!(node = %name, "installed kubelet and containerd units");
    Ok(())
}

/// What a power cycle resets outside the container, before each power-on: the network
/// interfaces of the node's namespace but `lo` and `eth0`, the node's cgroups (empty once
/// the container ended), and this boot's scratch kernel tunables.
fn power_cycle_reset(name: &str, root: &Path, cgroup: &str, holder_pid: u32) -> Result<()> {
    let ip = super::binaries::ip_command().unwrap_or_else(|| PathBuf::from("ip"));
    let ip = ip.to_string_lossy().into_owned();
    let holder = holder_pid.to_string();
    let links = run(
        name,
        NSENTER,
        [
            "-t",
            holder.as_str(),
            "-n",
            "--",
            ip.as_str(),
            "-o",
            "link",
            "show",
        ],
    )?;
    for line in links.lines() {
        // `3: cni0: <…>` or `5: veth1@if2: <…>`
        let Some(link) = line
            .split(':')
            .nth(1)
            .map(|l| l.trim().split('@').next().unwrap_or("").to_owned())
        else {
            continue;
        };
        if link.is_empty() || link == "lo" || link == "eth0" {
            continue;
        }
        // A veth may already be gone with its peer.
        let _ = run(
            name,
            NSENTER,
            [
                "-t",
                holder.as_str(),
                "-n",
                "--",
                ip.as_str(),
                "link",
                "del",
                link.as_str(),
            ],
        );
    }
    cleanup::kill_cgroup(cgroup, Duration::from_secs(5));
    let left = cleanup::remove_cgroup(cgroup, Duration::from_secs(5));
    if !left.is_empty() {
        tracing::warn!(node = %name, ?left, "cgroups of the last boot could not be removed");
    }
    remove_unmounted_cgroups(name, cgroup);
    let dir = root.join(EXCHANGE_DIR).join("sysctl");
    for key in SYSCTLS {
        let value = fs::read_to_string(Path::new("/proc/sys").join(key)).unwrap_or_default();
        write_private(&dir.join(key.replace('/', ".")), &value)?;
    }
    Ok(())
}

/// The cgroup v1 hierarchies the node mounts that this machine may leave unmounted (see
/// [`CGROUP_SCRIPT`]).
const UNMOUNTED_HIERARCHIES: [&str; 3] = ["net_cls,net_prio", "perf_event", "hugetlb"];

/// Removes the node's cgroup (`cgroup`, a top-level directory) from the hierarchies this
/// machine does not mount ([`UNMOUNTED_HIERARCHIES`]), which [`cleanup::remove_cgroup`]
/// cannot see: each is mounted in a private mount namespace of a child process (never
/// in the machine's), the node's directories removed deepest first, and unmounted.
fn remove_unmounted_cgroups(name: &str, cgroup: &str) {
    if !cgroup.starts_with(cleanup::CGROUP_PREFIX) || cgroup.contains('/') {
        return;
    }
    let script = format!(
        "d=$(mktemp -d) || exit 1\n\
         for c in {}; do\n\
           [ -e \"/sys/fs/cgroup/$c\" ] && continue\n\
           mount -t cgroup -o \"$c\" cgroup \"$d\" 2>/dev/null || continue\n\
           [ -d \"$d/$1\" ] && find \"$d/$1\" -depth -type d -exec rmdir {{}} + 2>/dev/null\n\
           umount \"$d\"\n\
         done\n\
         rmdir \"$d\"\n",
        UNMOUNTED_HIERARCHIES.join(" ")
    );
    if let Err(e) = run(
        name,
        UNSHARE,
        [
            "--mount",
            "--propagation",
            "private",
            "--",
            "/bin/sh",
            "-c",
            script.as_str(),
            "sh",
            cgroup,
        ],
    ) {
        tracing::warn!(node = %name, error = %e, "removing the node's cgroups from unmounted hierarchies");
    }
}

/// Waits until process `pid` is in a network namespace other than this process's.
fn wait_own_netns(pid: u32) -> std::result::Result<(), String> {
    let p = i32::try_from(pid).map_err(|e| e.to_string())?;
    let me = i32::try_from(std::process::id()).map_err(|e| e.to_string())?;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let theirs = cleanup::namespace_of(p, "net");
        if theirs.is_some() && theirs != cleanup::namespace_of(me, "net") {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(format!(
                "process {pid} did not enter a network namespace of its own"
            ));
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

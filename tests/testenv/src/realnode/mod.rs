//! Real nodes: kubelet v1.36 and containerd v2 with Debian's runc, next to (or instead
//! of) the simulated nodes, for tests that need Pods as a real node runs them — images,
//! securityContext as runc applies it, hostPath mounts, Pod networking, in-cluster API
//! access. Ask for them with [`crate::EnvConfig::with_real_nodes`]; reach them with
//! [`crate::Environment::real_nodes`].
//!
//! Each node lives in mount, network and UTS namespaces of its own (see [`node`]), so it
//! never changes this machine's `/etc`, sysctls, iptables or cgroups outside its own cgroup
//! root. The pieces:
//!
//! - **Fabric**: a network namespace of the environment with a bridge; every node has a
//!   veth into it with its address `10.200.0.N/24`. Node N's Pods get addresses from
//!   `10.244.N.0/24` (a bridge CNI network inside the node's namespace), and each node
//!   routes the other nodes' Pod ranges via their node addresses, so Pods reach Pods on
//!   other nodes by Pod IP, without NAT.
//! - **API server for Pods** (the one test-only stand-in for kube-proxy): in every node the
//!   `kubernetes` Service's ClusterIP ([`KUBERNETES_SERVICE_IP`]) is a local address with
//!   a relay on port 443 to the API server (see [`net`]); the API server's certificate
//!   holds that address. The in-cluster configuration works unchanged.
//! - **logs/exec/port-forward**: the API server's egress selector sends its kubelet
//!   traffic to a unix-socket HTTP CONNECT proxy that only connects to the nodes' kubelets,
//!   from inside their namespaces.
//! - **Teardown**: kubelet, containers (by cgroup), containerd, runc shims, namespaces,
//!   cgroups — on shutdown, on drop and on panic; what a crashed run left (shims and
//!   cgroups named after a test process that is gone) is removed at the next start.
//!
//! Nodes booted by a real systemd (kubelet and containerd as units, reboots through
//! systemd) share the fabric, the relays and the configuration: see [`systemd_node`]
//! ([`crate::EnvConfig::with_systemd_real_nodes`]).
//!
//! Needs root (namespaces, mounts, cgroups) and the binaries of `tests/nodes/build.sh`.

pub mod binaries;
mod cleanup;
pub mod net;
pub mod node;
pub mod systemd_node;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Node;
use kube::{Api, Client};

pub use binaries::{NodeBinaries, PAUSE_IMAGE, TEST_IMAGE};
pub use node::{KUBERNETES_SERVICE_PORT, REAL_NODE_LABEL, RealNode};
pub use systemd_node::{SYSTEMD_NODE_LABEL, SystemdRealNode};

use crate::controlplane::ControlPlane;
pub use crate::controlplane::KUBERNETES_SERVICE_IP;
use crate::controlplane::pki::write_private;
use crate::controlplane::process::{ManagedProcess, log_tail};
use crate::{Error, Result};
use net::{EgressTable, NetRuntime};
use node::{NSENTER, NodePlan, UNSHARE};

/// How long all real nodes together may take to become Ready (~2 s each when warm).
pub const READY_TIMEOUT: Duration = Duration::from_secs(120);

/// At most this many real nodes per environment (node addresses are `10.200.0.N`).
pub const MAX_REAL_NODES: usize = 200;

/// The bridge in the fabric namespace.
const FABRIC_BRIDGE: &str = "fabric0";

/// Tells environments of one test process apart in cgroup names.
static SEQUENCE: AtomicU32 = AtomicU32::new(0);

/// The real nodes of one environment, and what connects them.
#[derive(Debug)]
pub struct RealNodes {
    dir: PathBuf,
    count: usize,
    systemd_count: usize,
    seq: u32,
    binaries: NodeBinaries,
    // Dropped in this order: nodes, fabric, then the network thread.
    nodes: Vec<RealNode>,
    systemd_nodes: Vec<SystemdRealNode>,
    fabric: Option<ManagedProcess>,
    egress: EgressTable,
    egress_config: PathBuf,
    net: Option<NetRuntime>,
}

impl RealNodes {
    /// Everything that must exist before the control plane starts: checks, the cleanup of
    /// crashed runs, the network thread, the fabric and the egress proxy (whose
    /// configuration file the API server is started with).
    pub(crate) fn prepare(env_dir: &Path, count: usize, systemd_count: usize) -> Result<Self> {
        let fail = |message: String| Error::RealNode {
            node: "-".into(),
            message,
        };
        if count + systemd_count > MAX_REAL_NODES {
            return Err(fail(format!(
                "at most {MAX_REAL_NODES} real nodes, not {}",
                count + systemd_count
            )));
        }
        if !nix::unistd::geteuid().is_root() {
            return Err(fail(
                "real nodes need root (namespaces, mounts, cgroups)".into(),
            ));
        }
        let binaries = NodeBinaries::locate()?;
        for removed in cleanup::clean_strays() {
            tracing::warn!(%removed, "removed what a crashed earlier run left");
        }
        if systemd_count > 0 {
            // The containers of systemd nodes a killed run left (their processes went
            // with their cgroups just now).
            let store = hostplug_images::ImageStore::open().map_err(|e| {
                fail(format!(
                    "the image store (Podman) for the systemd nodes: {e}"
                ))
            })?;
            crate::systemd::remove_strays(&store);
        }
        let dir = env_dir.join("realnodes");
        std::fs::create_dir_all(&dir)
            .map_err(|e| Error::io(format!("creating {}", dir.display()), e))?;
        write_private(
            &dir.join(cleanup::OWNER_FILE),
            &std::process::id().to_string(),
        )?;
        let net = NetRuntime::start().map_err(|e| Error::io("starting the network thread", e))?;
        let egress = EgressTable::default();
        let socket = dir.join("egress.sock");
        // The task lives as long as the network thread.
        net::start_egress_proxy(&net, &socket, egress.clone()).map_err(|e| {
            Error::io(
                format!("starting the egress proxy on {}", socket.display()),
                e,
            )
        })?;
        let egress_config = dir.join("egress-selector.yaml");
        write_private(
            &egress_config,
            &format!(
                "apiVersion: apiserver.k8s.io/v1beta1\n\
                 kind: EgressSelectorConfiguration\n\
                 egressSelections:\n\
                 - name: cluster\n  connection:\n    proxyProtocol: HTTPConnect\n    transport:\n      uds:\n        udsName: {}\n",
                socket.display()
            ),
        )?;
        let mut nodes = RealNodes {
            dir,
            count,
            systemd_count,
            seq: SEQUENCE.fetch_add(1, Ordering::Relaxed),
            binaries,
            nodes: Vec::new(),
            systemd_nodes: Vec::new(),
            fabric: None,
            egress,
            egress_config,
            net: Some(net),
        };
        nodes.start_fabric()?;
        Ok(nodes)
    }

    fn start_fabric(&mut self) -> Result<()> {
        let fabric = ManagedProcess::spawn(
            "fabric namespace",
            Path::new(UNSHARE),
            &[
                "--net".into(),
                "--".into(),
                "/bin/sleep".into(),
                "infinity".into(),
            ],
            &[],
            &self.dir.join("fabric.log"),
        )?;
        let pid = fabric.id();
        self.fabric = Some(fabric);
        let me = i32::try_from(std::process::id()).unwrap_or_default();
        let deadline = Instant::now() + Duration::from_secs(10);
        let pid_i = i32::try_from(pid).unwrap_or_default();
        while cleanup::namespace_of(pid_i, "net") == cleanup::namespace_of(me, "net") {
            if Instant::now() > deadline {
                return Err(Error::RealNode {
                    node: "-".into(),
                    message: "the fabric namespace did not come up".into(),
                });
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let ip = binaries::ip_command().unwrap_or_else(|| PathBuf::from("ip"));
        let ip = ip.to_string_lossy().into_owned();
        let pid = pid.to_string();
        for args in [
            vec!["link", "set", "lo", "up"],
            vec!["link", "add", FABRIC_BRIDGE, "type", "bridge"],
            vec!["link", "set", FABRIC_BRIDGE, "up"],
        ] {
            let mut full = vec!["-t", pid.as_str(), "-n", "--", ip.as_str()];
            full.extend(args);
            node::run("fabric", NSENTER, full)?;
        }
        Ok(())
    }

    /// The API server's `--egress-selector-config-file`.
    pub(crate) fn egress_selector_config(&self) -> &Path {
        &self.egress_config
    }

    /// Starts the nodes (`real1`, `real2`, …) against `control_plane` and waits until
    /// each is Ready.
    pub(crate) async fn start(
        &mut self,
        control_plane: &ControlPlane,
        admin: &Client,
    ) -> Result<()> {
        let api_server: SocketAddr = control_plane
            .server()
            .trim_start_matches("https://")
            .parse()
            .map_err(|e| Error::RealNode {
                node: "-".into(),
                message: format!("the API server's address {}: {e}", control_plane.server()),
            })?;
        let count = u8::try_from(self.count + self.systemd_count).unwrap_or(u8::MAX);
        let fabric_pid = self.fabric.as_ref().map_or(0, ManagedProcess::id);
        let started = Instant::now();
        let real = u8::try_from(self.count).unwrap_or(u8::MAX);
        for index in 1..=count {
            let name = if index <= real {
                format!("real{index}")
            } else {
                format!("sdreal{}", index - real)
            };
            let plan = NodePlan {
                name: name.clone(),
                index,
                count,
                dir: self.dir.join(&name),
                cgroup: format!(
                    "{}{}-{}-{name}",
                    cleanup::CGROUP_PREFIX,
                    std::process::id(),
                    self.seq
                ),
                binaries: &self.binaries,
                fabric_pid,
                fabric_bridge: FABRIC_BRIDGE,
                pki: control_plane.pki(),
                api_server,
                net: self.net.as_ref().ok_or_else(|| Error::RealNode {
                    node: name.clone(),
                    message: "the network thread has stopped".into(),
                })?,
                egress: &self.egress,
            };
            // Blocking (a few commands and waits); the relays run on their own thread.
            if index <= real {
                let node = RealNode::launch(plan)?;
                self.nodes.push(node);
            } else {
                let node = SystemdRealNode::launch(plan)?;
                self.systemd_nodes.push(node);
            }
        }
        let api: Api<Node> = Api::all(admin.clone());
        for i in 0..self.nodes.len() {
            loop {
                self.nodes[i].check_running()?;
                let name = self.nodes[i].name().to_owned();
                let ready = api.get_opt(&name).await.ok().flatten().is_some_and(|n| {
                    n.status
                        .and_then(|s| s.conditions)
                        .unwrap_or_default()
                        .iter()
                        .any(|c| c.type_ == "Ready" && c.status == "True")
                });
                if ready {
                    tracing::info!(node = %name, elapsed = ?started.elapsed(), "real node Ready");
                    break;
                }
                if started.elapsed() > READY_TIMEOUT {
                    let log = self.nodes[i].kubelet_log();
                    return Err(Error::StartTimeout {
                        what: format!("real node {name} Ready"),
                        timeout: READY_TIMEOUT,
                        tail: log_tail(&log),
                        log,
                    });
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
        for node in &self.systemd_nodes {
            node.check_running()?;
            node.wait_ready(admin, systemd_node::READY_TIMEOUT).await?;
            tracing::info!(
                node = %node.name(),
                elapsed = ?node.started_at().elapsed(),
                "systemd real node Ready"
            );
        }
        Ok(())
    }

    /// The nodes, in order (`real1` first).
    pub fn nodes(&self) -> &[RealNode] {
        &self.nodes
    }

    /// The nodes booted by systemd, in order (`sdreal1` first).
    pub fn systemd_nodes(&self) -> &[SystemdRealNode] {
        &self.systemd_nodes
    }

    /// Stops every node, then the fabric and the relays, and removes what they left.
    /// Blocking; idempotent.
    pub(crate) fn stop(&mut self) {
        while let Some(mut node) = self.systemd_nodes.pop() {
            node.stop();
        }
        while let Some(mut node) = self.nodes.pop() {
            node.stop();
        }
        if let Some(mut fabric) = self.fabric.take() {
            fabric.kill();
        }
        drop(self.net.take());
    }
}

impl Drop for RealNodes {
    fn drop(&mut self) {
        self.stop();
    }
}

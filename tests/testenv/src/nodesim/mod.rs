//! The node simulator: a named stand-in for the kubelet of several fake nodes.
//!
//! [`NodeSimulator`] plays the kubelet against a real kube-apiserver, so that the operator
//! under test sees Nodes, Pods, Pod IPs and Pod status exactly as it would in a cluster:
//!
//! - it registers one Node object per [`NodeSpec`] (Ready condition, addresses, capacity,
//!   nodeInfo, `kubernetes.io/hostname`, `kubernetes.io/os`, the control-plane role label
//!   and taint) and keeps the Ready heartbeat and the node Lease in `kube-node-lease`
//!   fresh, so kube-controller-manager's node lifecycle controller never marks them
//!   NotReady;
//! - it watches the Pods bound to its nodes (`spec.nodeName`) and runs every container as
//!   a local process. The image map ([`NodeSimConfig::image_map`]) says which local
//!   executable an image stands for; an image that is not in the map ends in
//!   `ErrImagePull` / `ImagePullBackOff` with a message;
//! - each container runs in its own mount and UTS namespace, inside a small root built from
//!   the host's system directories (`/usr` and the `/bin`, `/lib*` links read-only, a few
//!   files of the host's `/etc`, `/proc`, `/sys` read-only, a minimal `/dev`) with its
//!   volumes at their `mountPath`: hostPath → the node's own directory tree
//!   ([`NodeSimulator::node_root`]), Secret / ConfigMap / downward API / projected
//!   (service account token included) → files materialised per Pod, emptyDir → a per-Pod
//!   directory. `readOnly` is honoured by read-only bind mounts. Mount propagation is
//!   private, so nothing leaks to the host and every mount vanishes with the process;
//! - each Pod gets its own address in 127.0.0.0/8 (a /16 reserved per simulator instance
//!   with a lock file, so two environments can run at once) as `status.podIP`; containers
//!   share the host's network namespace, so binding that address makes the Pod reachable;
//! - readiness, liveness and startup probes (`httpGet` incl. HTTPS without certificate
//!   verification, `tcpSocket`, `exec` through `nsenter`) decide Ready and restarts;
//! - Pod status is reported like a kubelet does (phase, conditions, container states,
//!   restart counts, exit codes); `restartPolicy` is honoured with a capped back-off;
//! - a Pod being deleted gets SIGTERM, its grace period (capped at
//!   [`MAX_TERMINATION_GRACE`]) and SIGKILL, and is then released with a zero-grace delete.
//!
//! What it does **not** do — do not rely on it for these:
//! - no images: an image is only a name for a host executable; the root is the host's,
//!   not the image's (`/usr` is the host's `/usr`);
//! - no network isolation: every container shares the host network namespace (a Pod is
//!   only reachable on its own address because processes bind it), so NetworkPolicies,
//!   Services, kube-proxy and cluster DNS have no effect here;
//! - no PID namespace, cgroups, resource limits, seccomp or AppArmor; of the security
//!   context it honours `readOnlyRootFilesystem`, `allowPrivilegeEscalation: false`
//!   (no_new_privs), `capabilities` (bounding set) and `runAsUser` / `runAsGroup`;
//! - no kubelet API (logs, exec, port-forward): container output is in
//!   [`NodeSimulator::container_log`] files instead; no Events are recorded;
//! - Secret and ConfigMap volumes are written once when the Pod starts, not refreshed;
//!   `resourceFieldRef`, sidecar (restartable) init containers, ephemeral containers,
//!   `lifecycle` hooks and Service environment variables are not supported.
//!
//! It is given an admin client (system:masters): it stands in for every kubelet at once,
//! which the Node authorizer could not express for one identity. That only concerns the
//! simulator itself — the components under test run with their own ServiceAccounts.

mod container;
mod node;
mod pod;
mod probe;
mod sandbox;
mod volumes;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fs::File;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use k8s_openapi::api::core::v1::Taint;
use nix::fcntl::{Flock, FlockArg};
use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// The field manager the simulator writes Node, Lease and Pod status with.
pub const FIELD_MANAGER: &str = "hostplug-nodesim";

/// The longest termination grace period the simulator honours. Real kubelets wait up to
/// `terminationGracePeriodSeconds` (30 s by default); tests should not wait that long for a
/// process that ignores SIGTERM.
pub const MAX_TERMINATION_GRACE: Duration = Duration::from_secs(5);

/// How often the Node Lease is renewed and the Ready condition re-posted. The node lifecycle
/// controller waits `node-monitor-grace-period` (40–50 s) before marking a node NotReady;
/// the kubelet's default lease renewal is 10 s.
pub const HEARTBEAT_INTERVAL: Duration = Duration::from_secs(10);

/// Errors of the node simulator.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The configuration cannot work (duplicate node names, a missing executable, …).
    #[error("node simulator configuration: {0}")]
    Config(String),
    /// A Kubernetes API request failed.
    #[error("node simulator: {context}")]
    Kube {
        /// What the simulator was doing.
        context: String,
        /// The client error.
        #[source]
        source: kube::Error,
    },
    /// A file system operation on the simulator's work directory failed.
    #[error("node simulator: {context}: {path}")]
    Io {
        /// What the simulator was doing.
        context: &'static str,
        /// The path concerned.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// No free 127.x.0.0/16 block was left for this simulator's Pod addresses.
    #[error("node simulator: no free 127.x.0.0/16 address block (lock files in {0})")]
    NoAddressBlock(PathBuf),
    /// One of the simulator's background tasks panicked.
    #[error("node simulator: a background task failed")]
    Task(#[source] tokio::task::JoinError),
}

/// The result type of the node simulator.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    fn kube(context: impl Into<String>, source: kube::Error) -> Self {
        Self::Kube {
            context: context.into(),
            source,
        }
    }

    fn io(context: &'static str, path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Self::Io {
            context,
            path: path.into(),
            source,
        }
    }
}

/// What the simulator runs: its nodes, where it keeps their files, and what images mean.
#[derive(Clone, Debug)]
pub struct NodeSimConfig {
    /// The nodes to register and play the kubelet for.
    pub nodes: Vec<NodeSpec>,
    /// The simulator's directory: `nodes/<node>/root` (each node's file system tree),
    /// `pods/<uid>` (per-Pod files), `logs/<namespace>/<pod>/<container>.log`.
    pub work_dir: PathBuf,
    /// Image → the local executable the image stands for. An image matches a key exactly,
    /// or by repository (the image without `:tag` / `@digest`) when no key matches exactly.
    pub image_map: HashMap<String, PathBuf>,
}

impl NodeSimConfig {
    /// Three nodes as in a small cluster: `master` (control-plane role label and
    /// `NoSchedule` taint), `node1` and `node2`; an empty image map.
    pub fn default_nodes(work_dir: PathBuf) -> Self {
        Self {
            nodes: vec![
                NodeSpec::control_plane("master"),
                NodeSpec::worker("node1"),
                NodeSpec::worker("node2"),
            ],
            work_dir,
            image_map: HashMap::new(),
        }
    }

    /// Adds an image → executable mapping.
    #[must_use]
    pub fn with_image(mut self, image: impl Into<String>, executable: impl Into<PathBuf>) -> Self {
        self.image_map.insert(image.into(), executable.into());
        self
    }
}

/// One simulated node.
#[derive(Clone, Debug)]
pub struct NodeSpec {
    /// The Node's name (also its `kubernetes.io/hostname` label).
    pub name: String,
    /// Extra labels, on top of the ones every node gets.
    pub labels: BTreeMap<String, String>,
    /// Extra taints; a control-plane node also gets the control-plane `NoSchedule` taint.
    pub taints: Vec<Taint>,
    /// Whether the node carries the `node-role.kubernetes.io/control-plane` label and taint.
    pub control_plane: bool,
}

impl NodeSpec {
    /// A worker node without extra labels or taints.
    pub fn worker(name: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            labels: BTreeMap::new(),
            taints: Vec::new(),
            control_plane: false,
        }
    }

    /// A control-plane node.
    pub fn control_plane(name: impl Into<String>) -> Self {
        Self {
            control_plane: true,
            ..Self::worker(name)
        }
    }
}

/// The running simulator. Dropping it without [`NodeSimulator::shutdown`] still kills every
/// container process (SIGKILL), so a failing test leaves nothing running.
#[derive(Debug)]
pub struct NodeSimulator {
    runtime: Arc<Runtime>,
    tasks: Vec<JoinHandle<()>>,
    /// The API server's version, reported as each node's kubelet version.
    version: String,
}

impl NodeSimulator {
    /// Registers the nodes, starts their heartbeats and starts running the Pods bound to them.
    pub async fn start(client: kube::Client, config: NodeSimConfig) -> Result<NodeSimulator> {
        let runtime = Arc::new(Runtime::new(client, config)?);
        let version = runtime
            .client
            .apiserver_version()
            .await
            .map_err(|e| Error::kube("reading the API server version", e))?;
        let mut tasks = Vec::new();
        let nodes: Vec<SimNode> = runtime.nodes().values().cloned().collect();
        for node in &nodes {
            tasks.push(start_node(&runtime, node, &version.git_version).await?);
        }
        tasks.push(tokio::spawn(pod::run(runtime.clone())));
        tracing::info!(
            nodes = ?nodes.iter().map(|n| &n.spec.name).collect::<Vec<_>>(),
            block = %runtime.block,
            "node simulator started"
        );
        Ok(NodeSimulator {
            runtime,
            tasks,
            version: version.git_version,
        })
    }

    /// Adds a node while the simulator runs, as a machine joining the cluster: registers
    /// it (Ready, with its labels and taints), seeds its file tree and starts its
    /// heartbeat; Pods bound to it run from then on.
    pub async fn add_node(&mut self, spec: NodeSpec) -> Result<()> {
        let node = {
            let mut nodes = self.runtime.nodes_mut();
            let node = new_sim_node(&self.runtime.block, nodes.len(), spec)?;
            if nodes.contains_key(&node.spec.name) {
                return Err(Error::Config(format!(
                    "node {} appears twice",
                    node.spec.name
                )));
            }
            nodes.insert(node.spec.name.clone(), node.clone());
            node
        };
        let task = start_node(&self.runtime, &node, &self.version).await?;
        self.tasks.push(task);
        tracing::info!(node = %node.spec.name, ip = %node.ip, "node added");
        Ok(())
    }

    /// The root of a node's file system tree: hostPath volumes of Pods on that node resolve
    /// below it, so the node's `/etc` is `node_root(node).join("etc")`.
    pub fn node_root(&self, node: &str) -> PathBuf {
        self.runtime.node_root(node)
    }

    /// The file a container's stdout and stderr go to (appended across restarts).
    pub fn container_log(&self, namespace: &str, pod: &str, container: &str) -> PathBuf {
        self.runtime.container_log(namespace, pod, container)
    }

    /// The address of a node (`InternalIP`, and `status.hostIP` of its Pods).
    pub fn node_ip(&self, node: &str) -> Option<Ipv4Addr> {
        self.runtime.nodes().get(node).map(|n| n.ip)
    }

    /// Stops every container process (SIGKILL) and waits for it, stops the heartbeats and
    /// the Pod watch. Mounts vanish with the processes' namespaces. The Node objects stay.
    pub async fn shutdown(mut self) -> Result<()> {
        self.runtime.shutdown.cancel();
        let mut result = Ok(());
        for task in self.tasks.drain(..) {
            if let Err(e) = task.await {
                result = Err(Error::Task(e));
            }
        }
        self.runtime.processes.kill_all();
        result
    }
}

impl Drop for NodeSimulator {
    fn drop(&mut self) {
        self.runtime.shutdown.cancel();
        self.runtime.processes.kill_all();
        for task in &self.tasks {
            task.abort();
        }
    }
}

/// A node as the simulator runs it.
#[derive(Clone, Debug)]
pub(crate) struct SimNode {
    pub(crate) spec: NodeSpec,
    pub(crate) ip: Ipv4Addr,
}

/// State shared by the simulator's tasks.
pub(crate) struct Runtime {
    pub(crate) client: kube::Client,
    pub(crate) work_dir: PathBuf,
    image_map: HashMap<String, PathBuf>,
    /// The simulated nodes; [`NodeSimulator::add_node`] adds to them while running.
    nodes: std::sync::RwLock<BTreeMap<String, SimNode>>,
    block: AddressBlock,
    pub(crate) processes: ProcessTable,
    pub(crate) http: reqwest::Client,
    pub(crate) shutdown: CancellationToken,
}

impl std::fmt::Debug for Runtime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Runtime")
            .field("work_dir", &self.work_dir)
            .field("image_map", &self.image_map)
            .field("nodes", &self.nodes)
            .field("block", &self.block)
            .finish_non_exhaustive()
    }
}

impl Runtime {
    fn new(client: kube::Client, config: NodeSimConfig) -> Result<Self> {
        if config.nodes.is_empty() {
            return Err(Error::Config("no nodes".into()));
        }
        for (image, exe) in &config.image_map {
            if !exe.is_absolute() || !exe.is_file() {
                return Err(Error::Config(format!(
                    "image {image} maps to {}, which is not an absolute path to a file",
                    exe.display()
                )));
            }
        }
        std::fs::create_dir_all(&config.work_dir)
            .map_err(|e| Error::io("creating the work directory", &config.work_dir, e))?;
        let work_dir = config
            .work_dir
            .canonicalize()
            .map_err(|e| Error::io("resolving the work directory", &config.work_dir, e))?;
        let block = AddressBlock::reserve()?;
        let mut nodes = BTreeMap::new();
        for (i, spec) in config.nodes.into_iter().enumerate() {
            let node = new_sim_node(&block, i, spec)?;
            let name = node.spec.name.clone();
            if nodes.insert(name.clone(), node).is_some() {
                return Err(Error::Config(format!("node {name} appears twice")));
            }
        }
        let http = reqwest::Client::builder()
            .danger_accept_invalid_certs(true)
            .no_proxy()
            .build()
            .map_err(|e| Error::Config(format!("building the probe HTTP client: {e}")))?;
        Ok(Self {
            client,
            work_dir,
            image_map: config.image_map,
            nodes: std::sync::RwLock::new(nodes),
            block,
            processes: ProcessTable::default(),
            http,
            shutdown: CancellationToken::new(),
        })
    }

    pub(crate) fn node_root(&self, node: &str) -> PathBuf {
        self.work_dir.join("nodes").join(node).join("root")
    }

    /// The simulated nodes (a read lock: do not hold it across an await).
    pub(crate) fn nodes(&self) -> std::sync::RwLockReadGuard<'_, BTreeMap<String, SimNode>> {
        self.nodes.read().unwrap_or_else(PoisonError::into_inner)
    }

    fn nodes_mut(&self) -> std::sync::RwLockWriteGuard<'_, BTreeMap<String, SimNode>> {
        self.nodes.write().unwrap_or_else(PoisonError::into_inner)
    }

    pub(crate) fn container_log(&self, namespace: &str, pod: &str, container: &str) -> PathBuf {
        self.work_dir
            .join("logs")
            .join(namespace)
            .join(pod)
            .join(format!("{container}.log"))
    }

    pub(crate) fn pod_dir(&self, uid: &str) -> PathBuf {
        self.work_dir.join("pods").join(uid)
    }

    /// The executable an image stands for: an exact key, else the image's repository.
    pub(crate) fn resolve_image(&self, image: &str) -> Option<&Path> {
        if let Some(exe) = self.image_map.get(image) {
            return Some(exe);
        }
        let repo = image_repository(image);
        self.image_map
            .iter()
            .find(|(key, _)| key.as_str() == repo || image_repository(key) == repo)
            .map(|(_, exe)| exe.as_path())
    }

    pub(crate) fn known_images(&self) -> Vec<&str> {
        let mut images: Vec<&str> = self.image_map.keys().map(String::as_str).collect();
        images.sort_unstable();
        images
    }

    pub(crate) fn next_pod_ip(&self) -> Option<Ipv4Addr> {
        self.block.next_pod_address()
    }
}

/// The `index`th node (0-based) of `block`: its name checked, its address assigned.
fn new_sim_node(block: &AddressBlock, index: usize, spec: NodeSpec) -> Result<SimNode> {
    let host = u8::try_from(index + 1)
        .ok()
        .filter(|h| *h < 255)
        .ok_or_else(|| Error::Config("at most 254 nodes".into()))?;
    if spec.name.is_empty() || spec.name.contains('/') || spec.name.starts_with('.') {
        return Err(Error::Config(format!("invalid node name {:?}", spec.name)));
    }
    Ok(SimNode {
        ip: block.address(0, host),
        spec,
    })
}

/// Seeds a node's file tree, registers it and starts its heartbeat.
async fn start_node(
    runtime: &Arc<Runtime>,
    node: &SimNode,
    version: &str,
) -> Result<JoinHandle<()>> {
    node::seed_node_root(
        &runtime.node_root(&node.spec.name),
        &node.spec.name,
        node.ip,
    )?;
    node::register(&runtime.client, node, version).await?;
    Ok(tokio::spawn(node::heartbeat(
        runtime.client.clone(),
        node.clone(),
        version.to_owned(),
        runtime.shutdown.clone(),
    )))
}

/// An image reference without its `@digest` and `:tag`.
pub(crate) fn image_repository(image: &str) -> &str {
    let image = image.split('@').next().unwrap_or(image);
    let last_slash = image.rfind('/').map_or(0, |i| i + 1);
    match image[last_slash..].rfind(':') {
        Some(colon) => &image[..last_slash + colon],
        None => image,
    }
}

/// A 127.B.0.0/16 block reserved for one simulator with an exclusive lock file, so that two
/// environments on one machine never hand out the same Pod address.
#[derive(Debug)]
struct AddressBlock {
    second_octet: u8,
    next: Mutex<u16>,
    _lock: Flock<File>,
}

impl std::fmt::Display for AddressBlock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "127.{}.0.0/16", self.second_octet)
    }
}

/// The second octets the simulator may use: 127.0.0.0/16 holds localhost and is skipped,
/// 127.255.0.0/16 holds 127.255.255.255 which some tools treat as broadcast.
const FIRST_BLOCK: u8 = 16;
const LAST_BLOCK: u8 = 250;

impl AddressBlock {
    fn reserve() -> Result<Self> {
        let dir = std::env::temp_dir().join("hostplug-nodesim-addresses");
        std::fs::create_dir_all(&dir)
            .map_err(|e| Error::io("creating the address lock directory", &dir, e))?;
        let span = u32::from(LAST_BLOCK - FIRST_BLOCK) + 1;
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        let start = (std::process::id() ^ nanos) % span;
        for i in 0..span {
            let octet = FIRST_BLOCK + u8::try_from((start + i) % span).unwrap_or(0);
            let path = dir.join(format!("127.{octet}.lock"));
            let file = File::options()
                .create(true)
                .truncate(false)
                .write(true)
                .open(&path)
                .map_err(|e| Error::io("opening an address lock file", &path, e))?;
            if let Ok(lock) = Flock::lock(file, FlockArg::LockExclusiveNonblock) {
                return Ok(Self {
                    second_octet: octet,
                    next: Mutex::new(0),
                    _lock: lock,
                });
            }
        }
        Err(Error::NoAddressBlock(dir))
    }

    fn address(&self, third: u8, fourth: u8) -> Ipv4Addr {
        Ipv4Addr::new(127, self.second_octet, third, fourth)
    }

    /// Pod addresses are 127.B.1.1 … 127.B.254.254, never reused within one simulator.
    fn next_pod_address(&self) -> Option<Ipv4Addr> {
        let mut next = self.next.lock().unwrap_or_else(PoisonError::into_inner);
        let n = *next;
        let third = u8::try_from(n / 254 + 1).ok().filter(|t| *t < 255)?;
        let fourth = u8::try_from(n % 254 + 1).ok()?;
        *next = n.checked_add(1)?;
        Some(self.address(third, fourth))
    }
}

/// The process groups of every running container, so that they can be killed even when the
/// simulator is dropped in a panicking test.
#[derive(Debug, Default)]
pub(crate) struct ProcessTable {
    groups: Mutex<HashSet<i32>>,
}

impl ProcessTable {
    pub(crate) fn insert(&self, pgid: i32) {
        self.groups
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(pgid);
    }

    pub(crate) fn remove(&self, pgid: i32) {
        self.groups
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&pgid);
    }

    fn kill_all(&self) {
        let groups: Vec<i32> = self
            .groups
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .drain()
            .collect();
        for pgid in groups {
            // The group may already be gone; nothing else to do then.
            let _ = killpg(Pid::from_raw(pgid), Signal::SIGKILL);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn image_repository_strips_tag_and_digest() {
        assert_eq!(image_repository("ghcr.io/x/worker:1.2"), "ghcr.io/x/worker");
        assert_eq!(
            image_repository("localhost:5000/worker"),
            "localhost:5000/worker"
        );
        assert_eq!(
            image_repository("localhost:5000/worker:dev@sha256:abc"),
            "localhost:5000/worker"
        );
        assert_eq!(image_repository("busybox"), "busybox");
    }

    #[test]
    fn address_blocks_do_not_overlap() -> Result<()> {
        let a = AddressBlock::reserve()?;
        let b = AddressBlock::reserve()?;
        assert_ne!(a.second_octet, b.second_octet);
        let first = a.next_pod_address();
        assert_eq!(first, Some(Ipv4Addr::new(127, a.second_octet, 1, 1)));
        assert_ne!(a.next_pod_address(), first);
        Ok(())
    }
}

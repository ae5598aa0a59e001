//! One real node: kubelet and containerd (with Debian's runc) in mount, network and UTS
//! namespaces of their own, held open by a `sleep` started with `unshare`.
//!
//! Inside the node's mount namespace (private propagation, so nothing reaches the
//! machine's): `/etc` is a bind mount of a scratch copy in the node directory (a hostPath
//! `/etc` is the node's, never the machine's), `/var` an overlay whose upper layer is in the
//! node directory, `/run` a tmpfs (holding [`NODE_CONTAINERD_SOCKET`], a symlink to the
//! node's containerd socket: a hostPath of that path, as the containerd-image worker's,
//! reaches this node's containerd), and the `/proc/sys` files the kubelet writes are
//! covered by scratch files. The kubelet runs with the cgroupfs driver under a cgroup root of its
//! own (`hostplug-rn-<test pid>-<seq>-<node>`, made in every v1 hierarchy).

use std::ffi::OsStr;
use std::fs::{self, File};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::task::JoinHandle;

use super::binaries::{NodeBinaries, PAUSE_IMAGE};
use super::cleanup;
use super::net::{self, EgressTable, KUBELET_PORT, NetRuntime};
use crate::controlplane::KUBERNETES_SERVICE_IP;
use crate::controlplane::pki::{Pki, write_private};
use crate::controlplane::process::{ManagedProcess, log_tail};
use crate::{Error, Result};

/// The label every real node carries (value `true`), to tell them from simulated ones.
pub const REAL_NODE_LABEL: &str = "hostplug.test/real-node";

/// Where a node's containerd socket is (containerd's default, the operator's default
/// `--node-containerd-socket`): inside each node a symlink to the socket in the node
/// directory.
pub const NODE_CONTAINERD_SOCKET: &str = "/run/containerd/containerd.sock";

/// nsenter (util-linux).
pub(crate) const NSENTER: &str = "/usr/bin/nsenter";

/// unshare (util-linux).
pub(crate) const UNSHARE: &str = "/usr/bin/unshare";

/// The kernel tunables the kubelet sets at start; each node gets scratch files over them.
const SYSCTLS: [&str; 6] = [
    "vm/overcommit_memory",
    "vm/panic_on_oom",
    "kernel/panic",
    "kernel/panic_on_oops",
    "kernel/keys/root_maxkeys",
    "kernel/keys/root_maxbytes",
];

/// How long a stopped kubelet or containerd gets before SIGKILL.
const STOP_GRACE: Duration = Duration::from_secs(5);

/// How long containerd may take to answer after start.
const CONTAINERD_START_TIMEOUT: Duration = Duration::from_secs(30);

/// The API server's port as Pods and the kubelet see it (the `kubernetes` Service's port).
pub const KUBERNETES_SERVICE_PORT: u16 = 443;

/// What a node is started with (from [`super::RealNodes`]).
pub(crate) struct NodePlan<'a> {
    pub name: String,
    pub index: u8,
    pub count: u8,
    pub dir: PathBuf,
    pub cgroup: String,
    pub binaries: &'a NodeBinaries,
    pub fabric_pid: u32,
    pub fabric_bridge: &'a str,
    pub pki: &'a Pki,
    pub api_server: SocketAddr,
    pub net: &'a NetRuntime,
    pub egress: &'a EgressTable,
}

/// A running real node. Stopped (and everything of it removed) by the environment.
#[derive(Debug)]
pub struct RealNode {
    name: String,
    ip: Ipv4Addr,
    pod_cidr: String,
    dir: PathBuf,
    cgroup: String,
    binaries: NodeBinaries,
    holder_pid: u32,
    mnt_ns: String,
    net_ns: String,
    netns: Option<Arc<File>>,
    egress: EgressTable,
    holder: Option<ManagedProcess>,
    containerd: Option<ManagedProcess>,
    kubelet: Option<ManagedProcess>,
    relay: Option<JoinHandle<()>>,
}

/// The node address of node `index` (1-based) on the fabric.
pub fn node_ip(index: u8) -> Ipv4Addr {
    Ipv4Addr::new(10, 200, 0, index)
}

/// The Pod CIDR of node `index`.
pub fn pod_cidr(index: u8) -> String {
    format!("10.244.{index}.0/24")
}

impl RealNode {
    /// Sets up the namespaces, network and configuration of a node and starts containerd
    /// (with the pause and test images imported) and the kubelet. Does not wait for Ready.
    pub(crate) fn launch(plan: NodePlan<'_>) -> Result<Self> {
        let name = plan.name.clone();
        let err = |message: String| Error::RealNode {
            node: name.clone(),
            message,
        };
        let dir = plan.dir.clone();
        for sub in [
            "containerd",
            "kubelet",
            "pod-logs",
            "cni/net.d",
            "cni/ipam",
            "var-upper",
            "var-work",
            "sysctl",
            "pki",
        ] {
            let d = dir.join(sub);
            fs::create_dir_all(&d)
                .map_err(|e| Error::io(format!("creating {}", d.display()), e))?;
        }
        // The node's /etc: a copy of the machine's.
        run(
            &name,
            "/bin/cp",
            ["-a", "/etc"]
                .iter()
                .map(OsStr::new)
                .chain([dir.join("etc").as_os_str()]),
        )?;
        for key in SYSCTLS {
            let value = fs::read_to_string(Path::new("/proc/sys").join(key)).unwrap_or_default();
            write_private(&dir.join("sysctl").join(key.replace('/', ".")), &value)?;
        }
        for h in cleanup::hierarchies() {
            let d = h.join(&plan.cgroup);
            fs::create_dir_all(&d)
                .map_err(|e| Error::io(format!("creating cgroup {}", d.display()), e))?;
        }

        let holder = ManagedProcess::spawn(
            &format!("{name} namespaces"),
            Path::new(UNSHARE),
            &[
                "--mount".into(),
                "--net".into(),
                "--uts".into(),
                "--propagation".into(),
                "private".into(),
                "--".into(),
                "/bin/sleep".into(),
                "infinity".into(),
            ],
            &[],
            &dir.join("namespaces.log"),
        )?;
        let holder_pid = holder.id();
        let (mnt_ns, net_ns) = wait_unshared(holder_pid, &["mnt", "net"]).map_err(&err)?;
        let netns = Arc::new(
            File::open(format!("/proc/{holder_pid}/ns/net"))
                .map_err(|e| Error::io(format!("opening the network namespace of {name}"), e))?,
        );
        let ip = node_ip(plan.index);
        let mut node = RealNode {
            name: name.clone(),
            ip,
            pod_cidr: pod_cidr(plan.index),
            dir: dir.clone(),
            cgroup: plan.cgroup.clone(),
            binaries: plan.binaries.clone(),
            holder_pid,
            mnt_ns,
            net_ns,
            netns: Some(netns.clone()),
            egress: plan.egress.clone(),
            holder: Some(holder),
            containerd: None,
            kubelet: None,
            relay: None,
        };

        // Mounts, addresses and forwarding inside the namespaces.
        let d = dir.display();
        let mut script = format!(
            "set -e\n\
             hostname {name}\n\
             mount --bind {d}/etc /etc\n\
             mount -t overlay overlay -o lowerdir=/var,upperdir={d}/var-upper,workdir={d}/var-work /var\n\
             mount -t tmpfs -o mode=755 tmpfs /run\n\
             mkdir -p /run/containerd\n\
             ln -s {d}/containerd/containerd.sock {NODE_CONTAINERD_SOCKET}\n"
        );
        for key in SYSCTLS {
            script += &format!(
                "mount --bind {d}/sysctl/{} /proc/sys/{key}\n",
                key.replace('/', ".")
            );
        }
        node.run_inside("/bin/sh", ["-c", script.as_str()])?;

        join_fabric(
            &name,
            holder_pid,
            plan.index,
            plan.count,
            plan.fabric_pid,
            plan.fabric_bridge,
        )?;

        // The API server at the `kubernetes` Service's address inside the node.
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

        node.write_configs(&plan)?;
        node.start_containerd()?;
        node.import_image_blocking(&plan.binaries.pause_image())?;
        node.import_image_blocking(plan.binaries.test_image())?;
        node.start_kubelet()?;
        Ok(node)
    }

    fn write_configs(&self, plan: &NodePlan<'_>) -> Result<()> {
        let d = &self.dir;
        let client = plan.pki.issue_client(
            &d.join("pki"),
            "kubelet-client",
            &format!("system:node:{}", self.name),
            Some("system:nodes"),
        )?;
        let config = self.config(&plan.pki.ca.cert, &client.cert, &client.key);
        write_private(&d.join("kubelet.kubeconfig"), &config.kubeconfig())?;
        write_private(&d.join("containerd.toml"), &config.containerd_toml())?;
        write_private(
            &d.join("cni/net.d/10-bridge.conflist"),
            &config.cni_conflist()?,
        )?;
        write_private(&d.join("kubelet-config.yaml"), &config.kubelet_config())?;
        Ok(())
    }

    /// This node's configuration: every path is the machine's (the node shares its file
    /// system, with a directory of its own).
    fn config(&self, ca: &Path, client_cert: &Path, client_key: &Path) -> NodeConfig {
        let d = &self.dir;
        NodeConfig {
            name: self.name.clone(),
            ip: self.ip,
            pod_cidr: self.pod_cidr.clone(),
            cgroup_root: format!("/{}", self.cgroup),
            containerd_root: d.join("containerd/root"),
            containerd_state: d.join("containerd/state"),
            containerd_opt: d.join("containerd/opt"),
            containerd_socket: self.containerd_socket(),
            runc: self.binaries.runc().to_owned(),
            runc_root: d.join("containerd/runc"),
            cni_bin: self.binaries.cni_dir(),
            cni_conf: d.join("cni/net.d"),
            cni_ipam: d.join("cni/ipam"),
            pod_logs: d.join("pod-logs"),
            ca: ca.to_owned(),
            client_cert: client_cert.to_owned(),
            client_key: client_key.to_owned(),
            kubelet_config: d.join("kubelet-config.yaml"),
            kubeconfig: d.join("kubelet.kubeconfig"),
            kubelet_root: d.join("kubelet"),
            labels: vec![format!("{REAL_NODE_LABEL}=true")],
        }
    }

    fn path_env(&self) -> Vec<(String, String)> {
        vec![(
            "PATH".into(),
            format!(
                "{}:/usr/sbin:/usr/bin:/sbin:/bin",
                self.binaries.dir().display()
            ),
        )]
    }

    fn spawn_inside(&self, what: &str, program: &Path, args: &[String]) -> Result<ManagedProcess> {
        let mut full = vec![
            "-t".to_owned(),
            self.holder_pid.to_string(),
            "-m".into(),
            "-n".into(),
            "-u".into(),
            "--".into(),
            program.display().to_string(),
        ];
        full.extend_from_slice(args);
        ManagedProcess::spawn(
            &format!("{what} ({})", self.name),
            Path::new(NSENTER),
            &full,
            &self.path_env(),
            &self.dir.join(format!("{what}.log")),
        )
    }

    fn start_containerd(&mut self) -> Result<()> {
        let config = self.dir.join("containerd.toml");
        let mut p = self.spawn_inside(
            "containerd",
            &self.binaries.containerd(),
            &["--config".into(), config.display().to_string()],
        )?;
        let deadline = Instant::now() + CONTAINERD_START_TIMEOUT;
        loop {
            p.check_running()?;
            if self.containerd_socket().exists()
                && Command::new(self.binaries.ctr())
                    .arg("-a")
                    .arg(self.containerd_socket())
                    .arg("version")
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .status()
                    .is_ok_and(|s| s.success())
            {
                break;
            }
            if Instant::now() > deadline {
                return Err(Error::StartTimeout {
                    what: format!("containerd of {}", self.name),
                    timeout: CONTAINERD_START_TIMEOUT,
                    tail: log_tail(p.log()),
                    log: p.log().to_owned(),
                });
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        self.containerd = Some(p);
        Ok(())
    }

    fn start_kubelet(&mut self) -> Result<()> {
        let config = self.config(Path::new(""), Path::new(""), Path::new(""));
        let args = config.kubelet_args();
        self.kubelet = Some(self.spawn_inside("kubelet", &self.binaries.kubelet(), &args)?);
        Ok(())
    }

    /// Err with the log's tail when the kubelet or containerd has ended.
    pub(crate) fn check_running(&mut self) -> Result<()> {
        for p in [self.kubelet.as_mut(), self.containerd.as_mut()]
            .into_iter()
            .flatten()
        {
            p.check_running()?;
        }
        Ok(())
    }

    /// The node's name (also its hostname inside its UTS namespace).
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

    /// The node's directory (configuration, logs, containerd and kubelet state).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The directory this machine sees as the node's `/etc` (what a hostPath `/etc` of a Pod
    /// on this node is).
    pub fn etc_dir(&self) -> PathBuf {
        self.dir.join("etc")
    }

    /// containerd's socket (a path on this machine; the CRI and containerd APIs). Inside the
    /// node it is also at [`NODE_CONTAINERD_SOCKET`], a symlink.
    pub fn containerd_socket(&self) -> PathBuf {
        self.dir.join("containerd/containerd.sock")
    }

    /// The node's cgroup root (a top-level directory in every cgroup v1 hierarchy).
    pub fn cgroup_name(&self) -> &str {
        &self.cgroup
    }

    /// The kubelet's log file.
    pub fn kubelet_log(&self) -> PathBuf {
        self.dir.join("kubelet.log")
    }

    /// containerd's log file.
    pub fn containerd_log(&self) -> PathBuf {
        self.dir.join("containerd.log")
    }

    /// A command that runs `program` inside the node's mount, network and UTS namespaces
    /// (as the kubelet and containerd see the machine).
    pub fn command(&self, program: impl AsRef<OsStr>) -> Command {
        let mut c = Command::new(NSENTER);
        c.arg("-t")
            .arg(self.holder_pid.to_string())
            .args(["-m", "-n", "-u", "--"])
            .arg(program)
            .envs(self.path_env());
        c
    }

    /// Runs `ctr` against the node's containerd in its `k8s.io` namespace (the one the
    /// kubelet uses), inside the node's namespaces; returns its stdout.
    pub async fn ctr<I, S>(&self, args: I) -> Result<String>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let mut c = self.command(self.binaries.ctr());
        c.arg("-a")
            .arg(self.containerd_socket())
            .args(["-n", "k8s.io"])
            .args(args);
        output(&self.name, tokio::process::Command::from(c)).await
    }

    /// Imports a docker-archive or OCI image tarball (`podman save`, `docker save`) into
    /// the node's containerd, namespace `k8s.io`: Pods use it with
    /// `imagePullPolicy: Never` (or `IfNotPresent`).
    pub async fn import_image(&self, tar: impl AsRef<Path>) -> Result<()> {
        let mut c = tokio::process::Command::new(self.binaries.ctr());
        c.arg("-a")
            .arg(self.containerd_socket())
            .args(["-n", "k8s.io", "images", "import"])
            .arg(tar.as_ref());
        output(&self.name, c).await.map(drop)
    }

    fn import_image_blocking(&self, tar: &Path) -> Result<()> {
        let mut c = Command::new(self.binaries.ctr());
        c.arg("-a")
            .arg(self.containerd_socket())
            .args(["-n", "k8s.io", "images", "import"])
            .arg(tar);
        run_command(&self.name, c).map(drop)
    }

    fn run_inside<I, S>(&self, program: &str, args: I) -> Result<String>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let mut c = self.command(program);
        c.args(args);
        run_command(&self.name, c)
    }

    /// Stops the node and removes everything of it: the kubelet first, then every
    /// container (by cgroup), containerd, whatever is left in its namespaces (runc shims),
    /// the namespaces, and its cgroups. Blocking; idempotent.
    pub(crate) fn stop(&mut self) {
        if let Some(mut k) = self.kubelet.take() {
            k.stop_blocking(STOP_GRACE);
        }
        cleanup::kill_cgroup(&self.cgroup, STOP_GRACE);
        if let Some(mut c) = self.containerd.take() {
            c.stop_blocking(STOP_GRACE);
        }
        if let Some(mut h) = self.holder.take() {
            h.kill();
        }
        let (mnt, net) = (self.mnt_ns.clone(), self.net_ns.clone());
        let left =
            cleanup::kill_until_gone(|| cleanup::processes_in_namespaces(&mnt, &net), STOP_GRACE);
        if !left.is_empty() {
            tracing::warn!(node = %self.name, ?left, "processes of a real node survived SIGKILL");
        }
        cleanup::kill_cgroup(&self.cgroup, STOP_GRACE);
        if let Some(relay) = self.relay.take() {
            relay.abort();
        }
        self.egress.remove(&self.name, self.ip);
        self.netns = None;
        let left = cleanup::remove_cgroup(&self.cgroup, STOP_GRACE);
        if !left.is_empty() {
            tracing::warn!(node = %self.name, ?left, "cgroups of a real node could not be removed");
        }
    }
}

impl Drop for RealNode {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Everything a real node's configuration depends on, with every path as the node's
/// kubelet and containerd see it: the one place that writes the kubelet's, containerd's
/// and the CNI configuration, for the real nodes here and for the nodes booted by systemd
/// ([`super::systemd_node`]).
#[derive(Debug, Clone)]
pub(crate) struct NodeConfig {
    pub name: String,
    pub ip: Ipv4Addr,
    pub pod_cidr: String,
    /// The kubelet's `cgroupRoot` (cgroupfs driver).
    pub cgroup_root: String,
    pub containerd_root: PathBuf,
    pub containerd_state: PathBuf,
    pub containerd_opt: PathBuf,
    pub containerd_socket: PathBuf,
    pub runc: PathBuf,
    pub runc_root: PathBuf,
    pub cni_bin: PathBuf,
    pub cni_conf: PathBuf,
    pub cni_ipam: PathBuf,
    pub pod_logs: PathBuf,
    /// The cluster CA and the kubelet's client certificate and key.
    pub ca: PathBuf,
    pub client_cert: PathBuf,
    pub client_key: PathBuf,
    /// Where the kubelet finds [`Self::kubelet_config`] and [`Self::kubeconfig`].
    pub kubelet_config: PathBuf,
    pub kubeconfig: PathBuf,
    pub kubelet_root: PathBuf,
    /// `key=value` labels the node registers with.
    pub labels: Vec<String>,
}

impl NodeConfig {
    /// The kubelet's kubeconfig: the API server at the `kubernetes` Service's address
    /// (the relay in the node's network namespace).
    pub(crate) fn kubeconfig(&self) -> String {
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: hostplug\n  cluster:\n    server: https://{KUBERNETES_SERVICE_IP}:{KUBERNETES_SERVICE_PORT}\n    certificate-authority: {}\n\
             users:\n- name: node\n  user:\n    client-certificate: {}\n    client-key: {}\n\
             contexts:\n- name: hostplug\n  context: {{cluster: hostplug, user: node}}\ncurrent-context: hostplug\n",
            self.ca.display(),
            self.client_cert.display(),
            self.client_key.display()
        )
    }

    /// containerd's `config.toml` (CRI with runc, cgroupfs, the node's CNI bridge).
    pub(crate) fn containerd_toml(&self) -> String {
        format!(
            r#"version = 3
root = '{root}'
state = '{state}'
[grpc]
  address = '{sock}'
[ttrpc]
  address = '{sock}.ttrpc'
[metrics]
  address = ''
[plugins.'io.containerd.internal.v1.opt']
  path = '{opt}'
[plugins.'io.containerd.nri.v1.nri']
  disable = true
[plugins.'io.containerd.cri.v1.images']
  snapshotter = 'overlayfs'
  [plugins.'io.containerd.cri.v1.images'.pinned_images]
    sandbox = '{PAUSE_IMAGE}'
[plugins.'io.containerd.cri.v1.runtime']
  # root here lacks CAP_SYS_RESOURCE: lowering a sandbox's oom_score_adj fails in runc.
  restrict_oom_score_adj = true
  [plugins.'io.containerd.cri.v1.runtime'.containerd]
    default_runtime_name = 'runc'
    [plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runc]
      runtime_type = 'io.containerd.runc.v2'
      [plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runc.options]
        BinaryName = '{runc}'
        Root = '{runc_root}'
        SystemdCgroup = false
  [plugins.'io.containerd.cri.v1.runtime'.cni]
    bin_dirs = ['{cni}']
    conf_dir = '{cni_conf}'
"#,
            root = self.containerd_root.display(),
            state = self.containerd_state.display(),
            sock = self.containerd_socket.display(),
            opt = self.containerd_opt.display(),
            runc = self.runc.display(),
            runc_root = self.runc_root.display(),
            cni = self.cni_bin.display(),
            cni_conf = self.cni_conf.display(),
        )
    }

    /// The CNI network: a bridge with the node's Pod CIDR, the node as the Pods' gateway.
    pub(crate) fn cni_conflist(&self) -> Result<String> {
        let cni = serde_json::json!({
            "cniVersion": "1.0.0",
            "name": "hostplug-test",
            "plugins": [{
                "type": "bridge",
                "bridge": "cni0",
                "isGateway": true,
                "isDefaultGateway": true,
                "ipMasq": false,
                "hairpinMode": true,
                "ipam": {
                    "type": "host-local",
                    "ranges": [[{ "subnet": self.pod_cidr }]],
                    "dataDir": self.cni_ipam,
                },
            }],
        });
        Ok(serde_json::to_string_pretty(&cni)?)
    }

    /// The kubelet's `KubeletConfiguration`.
    pub(crate) fn kubelet_config(&self) -> String {
        format!(
            r#"apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
# This machine is cgroup v1.
failCgroupV1: false
cgroupDriver: cgroupfs
cgroupRoot: {cgroup}
failSwapOn: false
containerRuntimeEndpoint: unix://{sock}
podLogsDir: {logs}
address: {ip}
port: {KUBELET_PORT}
healthzBindAddress: 127.0.0.1
healthzPort: 10248
readOnlyPort: 0
authentication:
  anonymous: {{enabled: false}}
  webhook: {{enabled: false}}
  x509: {{clientCAFile: {ca}}}
authorization: {{mode: AlwaysAllow}}
resolvConf: /etc/resolv.conf
evictionHard: {{memory.available: 100Mi, nodefs.available: "1%", imagefs.available: "1%", nodefs.inodesFree: "1%"}}
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
"#,
            cgroup = self.cgroup_root,
            sock = self.containerd_socket.display(),
            logs = self.pod_logs.display(),
            ip = self.ip,
            ca = self.ca.display(),
        )
    }

    /// The kubelet's command-line arguments.
    pub(crate) fn kubelet_args(&self) -> Vec<String> {
        vec![
            format!("--config={}", self.kubelet_config.display()),
            format!("--kubeconfig={}", self.kubeconfig.display()),
            format!("--root-dir={}", self.kubelet_root.display()),
            format!("--cert-dir={}", self.kubelet_root.join("pki").display()),
            format!("--hostname-override={}", self.name),
            format!("--node-ip={}", self.ip),
            format!("--node-labels={}", self.labels.join(",")),
            "--v=1".into(),
        ]
    }
}

/// Connects the network namespace of process `holder_pid` to the fabric as node `index`
/// of `count`: loopback up with the `kubernetes` Service's address, forwarding on, a veth
/// `eth0` into the fabric bridge with the node address, and routes to the other nodes'
/// Pod CIDRs via their node addresses.
pub(crate) fn join_fabric(
    name: &str,
    holder_pid: u32,
    index: u8,
    count: u8,
    fabric_pid: u32,
    fabric_bridge: &str,
) -> Result<()> {
    let ip_cmd = super::binaries::ip_command().unwrap_or_else(|| PathBuf::from("ip"));
    let ip_cmd = ip_cmd.to_string_lossy().into_owned();
    let holder = holder_pid.to_string();
    let inside = |args: &[&str]| {
        let mut full = vec!["-t", holder.as_str(), "-n", "--"];
        full.extend_from_slice(args);
        run(name, NSENTER, full)
    };
    let service_ip = format!("{KUBERNETES_SERVICE_IP}/32");
    inside(&[&ip_cmd, "link", "set", "lo", "up"])?;
    inside(&[&ip_cmd, "addr", "add", &service_ip, "dev", "lo"])?;
    // /proc/sys/net is the namespace's own, as the writer sees it.
    inside(&["/bin/sh", "-c", "echo 1 > /proc/sys/net/ipv4/ip_forward"])?;
    let veth = format!("v{index}");
    let fabric = fabric_pid.to_string();
    for args in [
        vec![
            "link",
            "add",
            veth.as_str(),
            "type",
            "veth",
            "peer",
            "name",
            "eth0",
            "netns",
            holder.as_str(),
        ],
        vec!["link", "set", veth.as_str(), "master", fabric_bridge, "up"],
    ] {
        let mut full = vec!["-t", fabric.as_str(), "-n", "--", ip_cmd.as_str()];
        full.extend(args);
        run(name, NSENTER, full)?;
    }
    let ip_cidr = format!("{}/24", node_ip(index));
    inside(&[&ip_cmd, "addr", "add", &ip_cidr, "dev", "eth0"])?;
    inside(&[&ip_cmd, "link", "set", "eth0", "up"])?;
    for other in (1..=count).filter(|&o| o != index) {
        let via = node_ip(other).to_string();
        inside(&[&ip_cmd, "route", "add", &pod_cidr(other), "via", &via])?;
    }
    Ok(())
}

/// Waits until process `pid` is in namespaces of its own (of each `kinds`), and returns
/// their names.
fn wait_unshared(pid: u32, kinds: &[&str]) -> std::result::Result<(String, String), String> {
    let pid = i32::try_from(pid).map_err(|e| e.to_string())?;
    let me = i32::try_from(std::process::id()).map_err(|e| e.to_string())?;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let theirs: Vec<Option<String>> = kinds
            .iter()
            .map(|k| cleanup::namespace_of(pid, k))
            .collect();
        let done = kinds
            .iter()
            .zip(&theirs)
            .all(|(k, t)| t.is_some() && *t != cleanup::namespace_of(me, k));
        if done {
            let mnt = cleanup::namespace_of(pid, "mnt").unwrap_or_default();
            let net = cleanup::namespace_of(pid, "net").unwrap_or_default();
            return Ok((mnt, net));
        }
        if Instant::now() > deadline {
            return Err(format!(
                "process {pid} did not enter new namespaces ({kinds:?})"
            ));
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Runs `program args`, Ok(stdout) when it succeeds, else an error with its stderr.
pub(crate) fn run<P, I, S>(node: &str, program: P, args: I) -> Result<String>
where
    P: AsRef<OsStr>,
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    let mut c = Command::new(program);
    c.args(args);
    run_command(node, c)
}

fn run_command(node: &str, mut c: Command) -> Result<String> {
    let described = format!("{c:?}");
    let out = c
        .stdin(Stdio::null())
        .output()
        .map_err(|e| Error::io(format!("running {described}"), e))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(Error::RealNode {
            node: node.to_owned(),
            message: format!(
                "{described} failed ({}): {}",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            ),
        })
    }
}

async fn output(node: &str, mut c: tokio::process::Command) -> Result<String> {
    let described = format!("{c:?}");
    let out = c
        .stdin(Stdio::null())
        .output()
        .await
        .map_err(|e| Error::io(format!("running {described}"), e))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(Error::RealNode {
            node: node.to_owned(),
            message: format!(
                "{described} failed ({}): {}",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            ),
        })
    }
}

//! NetworkPolicy enforcement on the real nodes ([`crate::realnode`]): kube-router's
//! NetworkPolicy controller (`--run-firewall` only: no routing, no service proxy, no CNI),
//! built from its Go module by `tests/netpol/build.sh`, one process per real node, inside
//! that node's mount, network and UTS namespaces.
//!
//! kube-router programs iptables (Debian's, nf_tables backend) and ipset there — the
//! node's own network namespace, whose tables and sets vanish with it. It must never touch
//! this machine's: it is only ever started through [`RealNode::command`] (nsenter), and
//! [`machine_leftovers`] lets a test check that nothing of it reached the machine. Pod
//! traffic meets its rules both ways it flows between real nodes: routed from another node
//! over the fabric (the FORWARD chain) and bridged between Pods of one node
//! (`bridge-nf-call-iptables`, which is 1 by default in every new network namespace; nothing
//! here sets it).
//!
//! What the node namespaces give kube-router, and why nothing more is needed: `iptables`,
//! `iptables-save/-restore` and `ipset` from the machine's `/usr/sbin` (on the node's
//! `PATH`); `/run` is the node's tmpfs (the xtables lock, if any, lands there); the policy
//! controller writes no files and no sysctls, loads no modules (the kernel has ipset,
//! `xt_physdev`, `xt_set` and conntrack built in) and reads no CNI configuration or Pod
//! CIDR — it finds its Pods by their `hostIP`, the Node's InternalIP.
//!
//! It runs as ServiceAccount `kube-system/kube-router` with the read-only rules of
//! `tests/netpol/kube-router-rbac.yaml`, reaching the API server through the node's relay
//! at the `kubernetes` Service address, as a DaemonSet Pod would.

use std::marker::PhantomData;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::controlplane::SERVICE_CLUSTER_IP_RANGE;
use crate::controlplane::binaries::cache_root;
use crate::controlplane::pki::write_private;
use crate::controlplane::process::{ManagedProcess, STOP_GRACE, log_tail};
use crate::realnode::{KUBERNETES_SERVICE_IP, KUBERNETES_SERVICE_PORT, RealNode};
use crate::{Environment, Error, Result};

/// Points at a `kube-router` binary to use instead of the cached build.
pub const KUBE_ROUTER_ENV: &str = "HOSTPLUG_KUBE_ROUTER";
/// The kube-router version `tests/netpol/build.sh` builds (keep the two in step).
pub const KUBE_ROUTER_VERSION: &str = "2.1.0";
/// The RBAC of kube-router, relative to the repository root.
pub const RBAC_MANIFEST: &str = "tests/netpol/kube-router-rbac.yaml";
/// kube-router's ServiceAccount (namespace, name).
pub const SERVICE_ACCOUNT: (&str, &str) = ("kube-system", "kube-router");
/// How long kube-router may take to program a node's filter chains: about a second when
/// the machine is idle; room for a loaded 2-core CI machine.
pub const READY_TIMEOUT: Duration = Duration::from_secs(60);
/// The chains kube-router's policy controller hooks into INPUT, FORWARD and OUTPUT first.
pub const TOP_LEVEL_CHAINS: [&str; 3] = [
    "KUBE-ROUTER-INPUT",
    "KUBE-ROUTER-FORWARD",
    "KUBE-ROUTER-OUTPUT",
];
/// What kube-router's policy controller names its chains and ipsets with (`TMP-` sets
/// exist while it swaps sets; `inet6:` prefixes the IPv6 ones).
const NAME_PREFIXES: [&str; 6] = [
    "KUBE-ROUTER-",
    "KUBE-NWPLCY-",
    "KUBE-POD-FW-",
    "KUBE-SRC-",
    "KUBE-DST-",
    "TMP-",
];

/// Where `tests/netpol/build.sh` puts kube-router.
pub fn default_kube_router_path() -> PathBuf {
    cache_root().join(format!(
        "netpol/kube-router-{KUBE_ROUTER_VERSION}/bin/kube-router"
    ))
}

/// kube-router's NetworkPolicy controller running on every real node of an environment.
///
/// It borrows the environment, so it is always stopped (SIGTERM, then SIGKILL after
/// [`STOP_GRACE`]) before the environment — and with it the nodes' namespaces — goes:
/// on drop, also in a panicking test, and before [`Environment::shutdown`] can be called.
/// The rules and sets it made go with the nodes' network namespaces.
#[derive(Debug)]
pub struct PolicyEnforcer<'env> {
    processes: Vec<(String, ManagedProcess)>,
    environment: PhantomData<&'env Environment>,
}

impl<'env> PolicyEnforcer<'env> {
    /// Creates kube-router's ServiceAccount and RBAC, then starts it on every real node of
    /// `env` and waits until each has programmed its top-level chains.
    pub async fn start(env: &'env Environment, repo_root: &Path) -> Result<Self> {
        let fail = |message: String| Error::RealNode {
            node: "-".into(),
            message,
        };
        let binary = std::env::var_os(KUBE_ROUTER_ENV)
            .map(PathBuf::from)
            .unwrap_or_else(default_kube_router_path);
        if !binary.is_file() {
            return Err(fail(format!(
                "kube-router not found at {} — run `make setup` (it runs \
                 tests/netpol/build.sh), or point {KUBE_ROUTER_ENV} at one",
                binary.display()
            )));
        }
        if env.real_nodes().is_empty() {
            return Err(fail(
                "the environment has no real nodes (EnvConfig::with_real_nodes)".into(),
            ));
        }
        env.apply_yaml_file(repo_root.join(RBAC_MANIFEST)).await?;
        let kubeconfig = in_node_kubeconfig(env).await?;
        let mut enforcer = PolicyEnforcer {
            processes: Vec::new(),
            environment: PhantomData,
        };
        for node in env.real_nodes() {
            let process = spawn_on(node, &binary, &kubeconfig)?;
            enforcer.processes.push((node.name().to_owned(), process));
        }
        for node in env.real_nodes() {
            enforcer.wait_programmed(node).await?;
        }
        Ok(enforcer)
    }

    /// Waits until kube-router on `node` has hooked its top-level chains into the filter
    /// table (it does so before its first full sync of the policies).
    async fn wait_programmed(&mut self, node: &RealNode) -> Result<()> {
        let started = Instant::now();
        loop {
            if let Some((_, p)) = self.processes.iter_mut().find(|(n, _)| n == node.name()) {
                p.check_running()?;
            }
            let rules = iptables_rules(node).await.unwrap_or_default();
            if TOP_LEVEL_CHAINS
                .iter()
                .all(|c| rules.contains(&format!("-N {c}")))
            {
                tracing::info!(node = %node.name(), elapsed = ?started.elapsed(), "kube-router programmed its chains");
                return Ok(());
            }
            if started.elapsed() > READY_TIMEOUT {
                let log = self
                    .log(node.name())
                    .map(Path::to_owned)
                    .unwrap_or_default();
                return Err(Error::StartTimeout {
                    what: format!(
                        "kube-router's chains on {} (iptables -S there:\n{rules})",
                        node.name()
                    ),
                    timeout: READY_TIMEOUT,
                    tail: log_tail(&log),
                    log,
                });
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The log file of kube-router on `node`.
    pub fn log(&self, node: &str) -> Option<&Path> {
        self.processes
            .iter()
            .find(|(n, _)| n == node)
            .map(|(_, p)| p.log())
    }

    /// Stops every kube-router (blocking, at most [`STOP_GRACE`] each). Idempotent.
    pub fn stop(&mut self) {
        for (_, p) in &mut self.processes {
            p.stop_blocking(STOP_GRACE);
        }
        self.processes.clear();
    }
}

impl Drop for PolicyEnforcer<'_> {
    fn drop(&mut self) {
        self.stop();
    }
}

/// `iptables -S` (filter table) inside `node`'s network namespace.
pub async fn iptables_rules(node: &RealNode) -> Result<String> {
    let mut c = tokio::process::Command::from(node.command("iptables"));
    c.arg("-S");
    run(c, node.name()).await
}

/// `ipset list -n` inside `node`'s network namespace.
pub async fn ipsets(node: &RealNode) -> Result<String> {
    let mut c = tokio::process::Command::from(node.command("ipset"));
    c.args(["list", "-n"]);
    run(c, node.name()).await
}

/// The chains, rules and ipsets of kube-router's policy controller in *this machine's*
/// network namespace (`iptables -S`, `ipset list -n`, both only read): empty unless
/// something leaked out of the nodes.
pub async fn machine_leftovers() -> Result<Vec<String>> {
    let mut found = Vec::new();
    for (program, args) in [("iptables", &["-S"][..]), ("ipset", &["list", "-n"][..])] {
        let mut c = tokio::process::Command::new(program);
        c.args(args);
        let out = run(c, "-").await?;
        found.extend(
            out.lines()
                .filter(|l| NAME_PREFIXES.iter().any(|p| l.contains(p)))
                .map(|l| format!("{program}: {l}")),
        );
    }
    Ok(found)
}

async fn run(mut c: tokio::process::Command, node: &str) -> Result<String> {
    let described = format!("{:?}", c.as_std());
    let out = c
        .stdin(std::process::Stdio::null())
        .output()
        .await
        .map_err(|e| Error::io(format!("running {described}"), e))?;
    if !out.status.success() {
        return Err(Error::RealNode {
            node: node.to_owned(),
            message: format!(
                "{described} failed ({}): {}",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            ),
        });
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// A kubeconfig for kube-router's ServiceAccount that reaches the API server from inside
/// a node: the `kubernetes` Service address, which every real node relays (the machine's
/// loopback, where the API server listens, is not the node's).
async fn in_node_kubeconfig(env: &Environment) -> Result<PathBuf> {
    let (ns, name) = SERVICE_ACCOUNT;
    let path = env.service_account_kubeconfig(ns, name).await?;
    let text = std::fs::read_to_string(&path)
        .map_err(|e| Error::io(format!("reading {}", path.display()), e))?;
    let mut config: serde_yaml::Value = serde_yaml::from_str(&text)?;
    let server = format!("https://{KUBERNETES_SERVICE_IP}:{KUBERNETES_SERVICE_PORT}");
    let clusters = config
        .get_mut("clusters")
        .and_then(serde_yaml::Value::as_sequence_mut)
        .ok_or_else(|| Error::Manifest {
            index: 0,
            reason: format!("{} has no clusters", path.display()),
        })?;
    for cluster in clusters {
        if let Some(c) = cluster
            .get_mut("cluster")
            .and_then(serde_yaml::Value::as_mapping_mut)
        {
            c.insert("server".into(), server.clone().into());
        }
    }
    let out = path.with_file_name("kube-router-in-node.kubeconfig");
    write_private(&out, &serde_yaml::to_string(&config)?)?;
    Ok(out)
}

/// Starts kube-router on `node`: `setpriv` (parent-death signal) → `nsenter` into the
/// node's namespaces → kube-router, in a process group of its own.
fn spawn_on(node: &RealNode, binary: &Path, kubeconfig: &Path) -> Result<ManagedProcess> {
    let command = node.command(binary);
    let program = PathBuf::from(command.get_program());
    let mut args: Vec<String> = command
        .get_args()
        .map(|a| a.to_string_lossy().into_owned())
        .collect();
    args.extend(
        [
            // The policy controller alone.
            "--run-firewall=true",
            "--run-router=false",
            "--run-service-proxy=false",
            "--enable-cni=false",
            "--enable-ipv6=false",
            // No listeners: the test watches the chains, not a health endpoint.
            "--health-port=0",
            "--metrics-port=0",
            "-v=2",
        ]
        .map(String::from),
    );
    // Its default (10.96.0.0/12) is not the control plane's.
    args.push(format!(
        "--service-cluster-ip-range={SERVICE_CLUSTER_IP_RANGE}"
    ));
    args.push(format!("--kubeconfig={}", kubeconfig.display()));
    args.push(format!("--hostname-override={}", node.name()));
    let envs: Vec<(String, String)> = command
        .get_envs()
        .filter_map(|(k, v)| {
            Some((
                k.to_string_lossy().into_owned(),
                v?.to_string_lossy().into_owned(),
            ))
        })
        .collect();
    ManagedProcess::spawn(
        &format!("kube-router ({})", node.name()),
        &program,
        &args,
        &envs,
        &node.dir().join("kube-router.log"),
    )
}

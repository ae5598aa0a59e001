//! NetworkPolicy enforcement on the real nodes ([`crate::realnode`]): kube-router's
//! NetworkPolicy controller (`--run-firewall` only: no routing, no service proxy, no CNI),
//! built from its Go module by `tests/netpol/build.sh`, one process per real node, inside
//! that node's mount, network and UTS namespaces.
//!
//! kube-router programs iptables (Debian's, nf_tables backend) and ipset there — the
//! node's own network namespace, whose tables vanish with it; it never touches this
//! machine's. Pod traffic reaches those rules both ways it flows between real nodes:
//! routed from another node over the fabric (the FORWARD chain) and bridged between Pods
//! of one node (`bridge-nf-call-iptables`, which is 1 by default in every new network
//! namespace; the tests do not set it).
//!
//! It runs as ServiceAccount `kube-system/kube-router` with the read-only rules of
//! `tests/netpol/kube-router-rbac.yaml`, reaching the API server through the node's relay
//! at the `kubernetes` Service address, as a DaemonSet Pod would.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

use crate::Environment;
use crate::controlplane::binaries::CACHE_ENV;
use crate::controlplane::process::{ManagedProcess, STOP_GRACE, log_tail};
use crate::realnode::{KUBERNETES_SERVICE_IP, KUBERNETES_SERVICE_PORT, RealNode};

/// Points at a `kube-router` binary to use instead of the cached build.
pub const KUBE_ROUTER_ENV: &str = "HOSTPLUG_KUBE_ROUTER";
/// The kube-router version `tests/netpol/build.sh` builds (keep the two in step).
pub const KUBE_ROUTER_VERSION: &str = "2.1.0";
/// The RBAC of kube-router, relative to the repository root.
pub const RBAC_MANIFEST: &str = "tests/netpol/kube-router-rbac.yaml";
/// kube-router's ServiceAccount (namespace, name).
pub const SERVICE_ACCOUNT: (&str, &str) = ("kube-system", "kube-router");
/// How long kube-router may take to program a node's filter chains (~1 s warm).
pub const READY_TIMEOUT: Duration = Duration::from_secs(60);

/// Where `tests/netpol/build.sh` puts kube-router.
pub fn default_kube_router_path() -> PathBuf {
    let cache = match std::env::var_os(CACHE_ENV) {
        Some(c) => PathBuf::from(c),
        None => PathBuf::from(std::env::var_os("HOME").unwrap_or_default()).join(".cache/hostplug"),
    };
    cache.join(format!(
        "netpol/kube-router-{KUBE_ROUTER_VERSION}/bin/kube-router"
    ))
}

/// kube-router's NetworkPolicy controller running on every real node of an environment.
/// Stops (SIGTERM, then SIGKILL) on drop; the rules it made go with the nodes' namespaces.
#[derive(Debug)]
pub struct PolicyEnforcer {
    processes: Vec<(String, ManagedProcess)>,
}

impl PolicyEnforcer {
    /// Creates kube-router's ServiceAccount and RBAC, then starts it on every real node of
    /// `env` and waits until each has programmed its filter chains.
    pub async fn start(env: &Environment, repo_root: &Path) -> anyhow::Result<Self> {
        let binary = std::env::var_os(KUBE_ROUTER_ENV)
            .map(PathBuf::from)
            .unwrap_or_else(default_kube_router_path);
        if !binary.is_file() {
            bail!(
                "kube-router not found at {} — run `make setup` (it runs \
                 tests/netpol/build.sh), or point {KUBE_ROUTER_ENV} at one",
                binary.display()
            );
        }
        if env.real_nodes().is_empty() {
            bail!("the environment has no real nodes (EnvConfig::with_real_nodes)");
        }
        env.apply_yaml_file(repo_root.join(RBAC_MANIFEST))
            .await
            .with_context(|| format!("applying {RBAC_MANIFEST}"))?;
        let kubeconfig = in_node_kubeconfig(env).await?;
        let mut enforcer = PolicyEnforcer {
            processes: Vec::new(),
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

    /// Waits until kube-router on `node` has installed its top-level chains, i.e. has
    /// synced policies once.
    async fn wait_programmed(&mut self, node: &RealNode) -> anyhow::Result<()> {
        let started = Instant::now();
        loop {
            if let Some((_, p)) = self.processes.iter_mut().find(|(n, _)| n == node.name()) {
                p.check_running()
                    .with_context(|| format!("kube-router on {}", node.name()))?;
            }
            let rules = iptables_rules(node).await.unwrap_or_default();
            if rules.contains("KUBE-ROUTER-FORWARD") && rules.contains("KUBE-ROUTER-INPUT") {
                return Ok(());
            }
            if started.elapsed() > READY_TIMEOUT {
                let log = self
                    .log(node.name())
                    .map(log_tail)
                    .unwrap_or_default();
                bail!(
                    "kube-router on {} did not program its chains within {READY_TIMEOUT:?}; \
                     iptables -S:\n{rules}\nlog:\n{log}",
                    node.name()
                );
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// The log file of kube-router on `node`.
    pub fn log(&self, node: &str) -> Option<&Path> {
        self.processes
            .iter()
            .find(|(n, _)| n == node)
            .map(|(_, p)| p.log())
    }

    /// Stops every kube-router (blocking, at most [`STOP_GRACE`] each).
    pub fn stop(&mut self) {
        for (_, p) in &mut self.processes {
            p.stop_blocking(STOP_GRACE);
        }
        self.processes.clear();
    }
}

impl Drop for PolicyEnforcer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// `iptables -S` (filter table) inside `node`'s network namespace.
pub async fn iptables_rules(node: &RealNode) -> anyhow::Result<String> {
    let mut c = tokio::process::Command::from(node.command("iptables"));
    c.arg("-S");
    let out = c.output().await.context("running iptables -S in the node")?;
    if !out.status.success() {
        bail!("iptables -S: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// A kubeconfig for kube-router's ServiceAccount that reaches the API server from inside
/// a node: the `kubernetes` Service address, which every real node relays.
async fn in_node_kubeconfig(env: &Environment) -> anyhow::Result<PathBuf> {
    let (ns, name) = SERVICE_ACCOUNT;
    let path = env
        .service_account_kubeconfig(ns, name)
        .await
        .context("making kube-router's kubeconfig")?;
    let text = std::fs::read_to_string(&path)
        .with_context(|| format!("reading {}", path.display()))?;
    let mut config: serde_yaml::Value = serde_yaml::from_str(&text)?;
    let server = format!("https://{KUBERNETES_SERVICE_IP}:{KUBERNETES_SERVICE_PORT}");
    let clusters = config
        .get_mut("clusters")
        .and_then(serde_yaml::Value::as_sequence_mut)
        .context("the kubeconfig has no clusters")?;
    for cluster in clusters {
        if let Some(c) = cluster
            .get_mut("cluster")
            .and_then(serde_yaml::Value::as_mapping_mut)
        {
            c.insert("server".into(), server.clone().into());
        }
    }
    let out = path.with_file_name("kube-router-in-node.kubeconfig");
    crate::controlplane::pki::write_private(&out, &serde_yaml::to_string(&config)?)?;
    Ok(out)
}

fn spawn_on(node: &RealNode, binary: &Path, kubeconfig: &Path) -> anyhow::Result<ManagedProcess> {
    let command = node.command(binary);
    let program = PathBuf::from(command.get_program());
    let mut args: Vec<String> = command
        .get_args()
        .map(|a| a.to_string_lossy().into_owned())
        .collect();
    args.extend(
        [
            "--run-firewall=true",
            "--run-router=false",
            "--run-service-proxy=false",
            "--enable-cni=false",
            "--enable-ipv6=false",
            // Only the policy controller's health endpoint, on the node's own loopback.
            "--health-port=20244",
            "--metrics-port=0",
            "-v=2",
        ]
        .map(String::from),
    );
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
    let log = node.dir().join("kube-router.log");
    Ok(ManagedProcess::spawn(
        &format!("kube-router ({})", node.name()),
        &program,
        &args,
        &envs,
        &log,
    )?)
}

//! What the real-node e2e tests share: a control plane with two real nodes running our
//! images, hostplug installed on it with Helm or kustomize, and the checks of what a task
//! did on the nodes' disks and how its workers are confined.
// Each test binary that includes this module uses only part of it.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use hostplug_api::crd::{HostPlugin, HostTask, TaskState};
use hostplug_e2e::{
    BUILTIN_PLUGINS, NAMESPACE, Tree, changed_files, read_tree, repo_root, state_of,
};
use hostplug_images::{Binaries, ImageStore};
use hostplug_testenv::{EnvConfig, Environment};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Pod;
use kube::Api;
use kube::api::ListParams;

/// Real nodes: two, so the operator's replicas, the console and the workers spread over
/// nodes and a task runs on more than one node.
pub const REAL_NODES: usize = 2;
/// The test overlay of `deploy/`, relative to the repository root.
pub const OVERLAY: &str = "tests/e2e/overlays/real-nodes";
/// The node given the control-plane role, as a cluster's control-plane node has it: the
/// `targetType: Master` example runs there only.
pub const CONTROL_PLANE_NODE: &str = "real1";
/// How long the install may take until the operator and console Pods are Ready and the
/// built-in plugins registered: 4 min (debug binaries starting Pods on a loaded 2-core
/// machine; ~20 s when idle).
pub const INSTALL_TIMEOUT: Duration = Duration::from_secs(240);
/// How long a task may take to end: 3 min.
pub const TASK_TIMEOUT: Duration = Duration::from_secs(180);
/// The line the ensure-line examples add.
pub const NTP_LINE: &str = "server ntp.example.com iburst";
/// The file the ensure-line examples own (they create it: no node needs it beforehand).
pub const EXAMPLE_FILE: &str = "hostplug-example.conf";
/// The chrony configuration each node starts with (a node with chrony installed).
pub const CHRONY_CONF: &str = "# chrony of a test node\npool 2.debian.pool.ntp.org iburst\n";

/// Capability bits (linux/capability.h) of what an `etc: write` worker keeps.
pub const CAP_CHOWN: u64 = 1 << 0;
pub const CAP_FOWNER: u64 = 1 << 3;

/// One real-node test at a time: each runs a control plane and two real nodes, which two
/// at once would only slow down on a small machine.
pub static REAL_NODE_TESTS: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// The cluster of one test: our images built (or taken from the cache) and imported into
/// every real node's containerd, a chrony.conf in every node's /etc, real1 labelled as the
/// control-plane node.
pub struct RealCluster {
    pub env: Environment,
    pub nodes: Vec<String>,
    pub t0: Instant,
}

impl RealCluster {
    pub async fn start() -> anyhow::Result<Self> {
        let t0 = Instant::now();
        let images = tokio::task::spawn_blocking(|| {
            let store = ImageStore::open()?;
            store.build_all(&Binaries::of_this_build()?)
        })
        .await??;
        for i in &images {
            eprintln!(
                "image {}: {} in {:.1?}",
                i.name,
                if i.cached { "cached" } else { "built" },
                i.took
            );
        }
        let env = Environment::start(EnvConfig::control_plane_only().with_real_nodes(REAL_NODES))
            .await
            .context("starting the control plane and the real nodes")?;
        eprintln!(
            "control plane and {REAL_NODES} real nodes up at {:.1?}",
            t0.elapsed()
        );
        let nodes: Vec<String> = env
            .real_nodes()
            .iter()
            .map(|n| n.name().to_owned())
            .collect();
        ensure!(nodes.len() == REAL_NODES, "real nodes: {nodes:?}");
        let imported = Instant::now();
        for node in env.real_nodes() {
            for image in &images {
                node.import_image(&image.archive)
                    .await
                    .with_context(|| format!("importing {} into {}", image.name, node.name()))?;
            }
        }
        eprintln!(
            "images imported into {REAL_NODES} nodes in {:.1?}",
            imported.elapsed()
        );
        for node in env.real_nodes() {
            std::fs::write(node.etc_dir().join("chrony.conf"), CHRONY_CONF)?;
        }
        kubectl(
            &env,
            &[
                "label",
                "node",
                CONTROL_PLANE_NODE,
                "node-role.kubernetes.io/control-plane=",
            ],
        )
        .await?;
        Ok(RealCluster { env, nodes, t0 })
    }

    /// Installs hostplug `how`, waits until the operator's replicas and the console are
    /// Ready and the built-in plugins registered, and checks that every hostplug Pod runs
    /// on a real node.
    pub async fn install(&self, how: Install) -> anyhow::Result<()> {
        let env = &self.env;
        let install = Instant::now();
        match how {
            Install::Kustomize => {
                kubectl(env, &["apply", "--server-side", "-k", &path(OVERLAY)]).await?;
            }
            Install::Helm => {
                // The chart's own values for what the kustomize overlay patches: no pulls
                // (the images are imported), the console's database on an emptyDir (no
                // storage provisioner).
                hostplug_testenv::helm::helm_install(
                    env,
                    &repo_root(),
                    NAMESPACE,
                    HELM_VALUES,
                    &[],
                )
                .await?;
            }
        }
        let admin = env.admin_client();
        wait_deployment_ready(env, "hostplug-operator", 2).await?;
        wait_deployment_ready(env, "hostplug-web", 1).await?;
        let plugins: Api<HostPlugin> = Api::all(admin.clone());
        for name in BUILTIN_PLUGINS {
            wait_until(
                &format!("HostPlugin {name} ready"),
                INSTALL_TIMEOUT,
                || async {
                    Ok(plugins
                        .get_opt(name)
                        .await?
                        .and_then(|p| p.status)
                        .is_some_and(|s| s.ready))
                },
            )
            .await?;
        }
        eprintln!(
            "installed with {how:?} (Pods Ready, plugins registered) in {:.1?}",
            install.elapsed()
        );
        // The operator and console Pods run on the real nodes, from the images we built.
        let pods: Api<Pod> = Api::namespaced(admin, NAMESPACE);
        let ours = pods
            .list(&ListParams::default().labels("app.kubernetes.io/part-of=hostplug"))
            .await?;
        ensure!(ours.items.len() >= 3, "hostplug Pods: {}", ours.items.len());
        for p in ours {
            let node = p.spec.as_ref().and_then(|s| s.node_name.clone());
            ensure!(
                node.as_ref().is_some_and(|n| self.nodes.contains(n)),
                "{:?} on {node:?}",
                p.metadata.name
            );
        }
        Ok(())
    }

    pub fn pods(&self) -> Api<Pod> {
        Api::namespaced(self.env.admin_client(), NAMESPACE)
    }

    pub fn tasks(&self) -> Api<HostTask> {
        Api::namespaced(self.env.admin_client(), NAMESPACE)
    }

    /// `ensure-line-all-nodes.yaml` (new workers that may write /etc): Succeeded with
    /// exactly the example's file created with the NTP line on every node, nothing else
    /// changed (chrony.conf included), the
    /// write workers confined as their Pod spec says. Returns how long apply → Succeeded
    /// took and the worker Pod of each node.
    pub async fn ensure_line_on_every_node(
        &self,
    ) -> anyhow::Result<(Duration, BTreeMap<String, String>)> {
        let env = &self.env;
        let before = snapshot(env)?;
        let started = Instant::now();
        kubectl(
            env,
            &["apply", "-f", &example("ensure-line-all-nodes.yaml")],
        )
        .await?;
        let t = wait_finished(&self.tasks(), "ensure-ntp-server").await?;
        let took = started.elapsed();
        let st = t.status.clone().unwrap_or_default();
        ensure!(state_of(&t) == Some(TaskState::Succeeded), "{st:?}");
        ensure!(
            st.msg.as_deref() == Some("2/2 nodes succeeded, 2 changed"),
            "{:?}",
            st.msg
        );
        let expected: Vec<(String, String)> = self
            .nodes
            .iter()
            .map(|n| (n.clone(), EXAMPLE_FILE.to_owned()))
            .collect();
        ensure!(changed_files(&before, &snapshot(env)?) == expected);
        for node in env.real_nodes() {
            let conf = std::fs::read_to_string(node.etc_dir().join(EXAMPLE_FILE))?;
            ensure!(conf == format!("{NTP_LINE}\n"), "{}: {conf}", node.name());
        }
        let mut workers = BTreeMap::new();
        for n in &st.nodes {
            let pod = n.pod.clone().context("node result without a pod")?;
            let proc = worker_process(env, &self.pods(), &pod).await?;
            proc.check_confinement(CAP_CHOWN | CAP_FOWNER, false)
                .with_context(|| format!("write worker {pod} on {}", n.node))?;
            eprintln!(
                "write worker {pod} on {}: VmRSS {} after one task",
                n.node,
                proc.field("VmRSS")?
            );
            workers.insert(n.node.clone(), pod);
        }
        Ok((took, workers))
    }
}

/// How a test installs hostplug.
#[derive(Debug, Clone, Copy)]
pub enum Install {
    /// `kubectl apply --server-side -k tests/e2e/overlays/real-nodes` (deploy/ with the
    /// test cluster's two changes).
    Kustomize,
    /// `helm install hostplug deploy/helm/hostplug -n hostplug-system --create-namespace`
    /// with [`HELM_VALUES`].
    Helm,
}

/// The chart's values for the test cluster — the same two changes as the kustomize overlay
/// (docs/operations.md, "On the test cluster").
pub const HELM_VALUES: &[(&str, &str)] = &[
    ("images.operator.pullPolicy", "Never"),
    ("images.console.pullPolicy", "Never"),
    ("console.persistence.enabled", "false"),
];

/// Runs the environment's kubectl as the admin; fails with its output.
pub async fn kubectl(env: &Environment, args: &[&str]) -> anyhow::Result<String> {
    kubectl_stdin(env, args, "").await
}

pub async fn kubectl_stdin(
    env: &Environment,
    args: &[&str],
    stdin: &str,
) -> anyhow::Result<String> {
    use tokio::io::AsyncWriteExt;
    let mut child = tokio::process::Command::new(env.kubectl())
        .arg("--kubeconfig")
        .arg(env.kubeconfig_path())
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("starting kubectl")?;
    let mut input = child.stdin.take().context("kubectl stdin")?;
    input.write_all(stdin.as_bytes()).await?;
    drop(input);
    let out = child.wait_with_output().await?;
    if !out.status.success() {
        bail!(
            "kubectl {args:?}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

pub fn path(rel: &str) -> String {
    repo_root().join(rel).display().to_string()
}

pub fn example(file: &str) -> String {
    path(&format!("deploy/examples/{file}"))
}

/// Polls `cond` every 300 ms until it holds or `timeout` passes.
pub async fn wait_until<F, Fut>(what: &str, timeout: Duration, mut cond: F) -> anyhow::Result<()>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<bool>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if cond().await? {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("{what}: not within {timeout:?}");
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

pub async fn wait_deployment_ready(
    env: &Environment,
    name: &str,
    replicas: i32,
) -> anyhow::Result<()> {
    let deployments: Api<Deployment> = Api::namespaced(env.admin_client(), NAMESPACE);
    let waited = wait_until(
        &format!("Deployment {name} with {replicas} ready replicas"),
        INSTALL_TIMEOUT,
        || async {
            Ok(deployments
                .get_opt(name)
                .await?
                .and_then(|d| d.status)
                .and_then(|s| s.ready_replicas)
                == Some(replicas))
        },
    )
    .await;
    if let Err(e) = waited {
        let pods = kubectl(env, &["-n", NAMESPACE, "get", "pods", "-o", "wide"])
            .await
            .unwrap_or_default();
        let describe = kubectl(env, &["-n", NAMESPACE, "describe", "pods"])
            .await
            .unwrap_or_default();
        bail!("{e}\n{pods}\n{}", hostplug_e2e::tail(&describe, 80));
    }
    Ok(())
}

pub async fn wait_finished(tasks: &Api<HostTask>, name: &str) -> anyhow::Result<HostTask> {
    let deadline = Instant::now() + TASK_TIMEOUT;
    loop {
        if let Some(t) = tasks.get_opt(name).await?
            && t.status.as_ref().is_some_and(|s| {
                s.observed_generation == t.metadata.generation && s.state.is_finished()
            })
        {
            return Ok(t);
        }
        if Instant::now() > deadline {
            let t = tasks.get_opt(name).await?;
            bail!(
                "task {name} did not finish within {TASK_TIMEOUT:?}; status: {}",
                serde_json::to_string_pretty(&t.and_then(|t| t.status)).unwrap_or_default()
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Every real node's /etc, read into memory, by node name.
pub fn snapshot(env: &Environment) -> anyhow::Result<BTreeMap<String, Tree>> {
    let mut out = BTreeMap::new();
    for node in env.real_nodes() {
        let dir = node.etc_dir();
        let mut tree = Tree::new();
        read_tree(&dir, &dir, &mut tree)?;
        out.insert(node.name().to_owned(), tree);
    }
    Ok(out)
}

/// The worker process of a running worker Pod, seen from this machine.
pub struct WorkerProcess {
    pod: String,
    pid: u32,
    status: String,
    mountinfo: String,
}

/// Finds the worker container's process through the node's containerd (its task's PID;
/// the nodes share this machine's PID namespace) and reads its /proc files.
pub async fn worker_process(
    env: &Environment,
    pods: &Api<Pod>,
    pod: &str,
) -> anyhow::Result<WorkerProcess> {
    let p = pods.get(pod).await?;
    let node = p
        .spec
        .as_ref()
        .and_then(|s| s.node_name.clone())
        .context("pod without a node")?;
    let id = p
        .status
        .as_ref()
        .and_then(|s| s.container_statuses.as_ref())
        .and_then(|c| c.iter().find(|c| c.name == "worker"))
        .and_then(|c| c.container_id.clone())
        .context("no worker container id")?;
    let id = id
        .strip_prefix("containerd://")
        .with_context(|| format!("container id {id}"))?
        .to_owned();
    let real = env.real_node(&node).context("pod on a real node")?;
    let tasks = tokio::time::timeout(Duration::from_secs(60), real.ctr(["tasks", "ls"]))
        .await
        .with_context(|| format!("ctr tasks ls on {node}: no answer in 60 s"))??;
    let pid: u32 = tasks
        .lines()
        .find_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f.first() == Some(&id.as_str())).then(|| f.get(1)?.parse().ok())?
        })
        .with_context(|| format!("task {id} not in:\n{tasks}"))?;
    let read = |f: &str| {
        std::fs::read_to_string(format!("/proc/{pid}/{f}"))
            .with_context(|| format!("/proc/{pid}/{f} of {pod}"))
    };
    let proc = WorkerProcess {
        pod: pod.to_owned(),
        pid,
        status: read("status")?,
        mountinfo: read("mountinfo")?,
    };
    let cmdline = read("cmdline")?;
    ensure!(
        cmdline.starts_with("/usr/local/bin/hostplug-worker"),
        "pid {pid} of {pod} is {cmdline:?}"
    );
    Ok(proc)
}

impl WorkerProcess {
    pub fn field(&self, name: &str) -> anyhow::Result<&str> {
        self.status
            .lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(':'))
            .map(str::trim)
            .with_context(|| format!("no {name} in /proc/{}/status", self.pid))
    }

    pub fn caps(&self, name: &str) -> anyhow::Result<u64> {
        let v = self.field(name)?;
        u64::from_str_radix(v, 16).with_context(|| format!("{name}: {v}"))
    }

    /// The per-mount options of the mount at `target` (mountinfo field 6).
    pub fn mount_options(&self, target: &str) -> anyhow::Result<Vec<&str>> {
        self.mountinfo
            .lines()
            .filter_map(|l| {
                let f: Vec<&str> = l.split(' ').collect();
                (f.get(4) == Some(&target)).then(|| f.get(5).map(|o| o.split(',').collect()))?
            })
            .next_back()
            .with_context(|| format!("no mount at {target} in /proc/{}/mountinfo", self.pid))
    }

    /// What the operator's Pod spec asks of a worker, as the kernel holds it: exactly
    /// `caps` effective and in the bounding set (none permitted beyond), no_new_privs,
    /// a seccomp filter, a read-only root, /host/etc read-only when `etc_read_only`.
    pub fn check_confinement(&self, caps: u64, etc_read_only: bool) -> anyhow::Result<()> {
        let pod = &self.pod;
        ensure!(
            self.caps("CapEff")? == caps,
            "{pod}: CapEff {:#x}",
            self.caps("CapEff")?
        );
        ensure!(
            self.caps("CapPrm")? == caps,
            "{pod}: CapPrm {:#x}",
            self.caps("CapPrm")?
        );
        ensure!(
            self.caps("CapBnd")? == caps,
            "{pod}: CapBnd {:#x}",
            self.caps("CapBnd")?
        );
        ensure!(self.caps("CapAmb")? == 0, "{pod}: CapAmb");
        ensure!(self.field("NoNewPrivs")? == "1", "{pod}: NoNewPrivs");
        // 2 = SECCOMP_MODE_FILTER (RuntimeDefault).
        ensure!(
            self.field("Seccomp")? == "2",
            "{pod}: Seccomp {}",
            self.field("Seccomp")?
        );
        let root = self.mount_options("/")?;
        ensure!(root.contains(&"ro"), "{pod}: root mounted {root:?}");
        let etc = self.mount_options("/host/etc")?;
        ensure!(
            etc.contains(&"ro") == etc_read_only,
            "{pod}: /host/etc mounted {etc:?}"
        );
        Ok(())
    }
}

/// The processes of the Pod with uid `pod_uid` on this machine whose name (`comm`, at
/// most 15 bytes) starts with `comm`: the real nodes' containers are processes here, in
/// the Pod's cgroup as the kubelet made it (`…pod<uid>…`, with `-` or `_`).
pub fn pod_processes(pod_uid: &str, comm: &str) -> anyhow::Result<Vec<u32>> {
    let underscored = pod_uid.replace('-', "_");
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc")? {
        let Ok(pid) = entry?.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let name = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
        if !name.trim_end().starts_with(comm) {
            continue;
        }
        let cgroup = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap_or_default();
        if cgroup.contains(pod_uid) || cgroup.contains(&underscored) {
            found.push(pid);
        }
    }
    if found.is_empty() {
        bail!("no {comm}* process in the cgroup of Pod {pod_uid}");
    }
    Ok(found)
}

/// Sends signal `name` (`KILL`, `TERM`) to `pid`.
pub fn signal(pid: u32, name: &str) -> anyhow::Result<()> {
    let out = std::process::Command::new("kill")
        .arg(format!("-{name}"))
        .arg(pid.to_string())
        .output()?;
    anyhow::ensure!(out.status.success(), "kill -{name} {pid}: {out:?}");
    Ok(())
}

/// Publishes the plugin `file` of the plugin directory as HostPlugin `name` with /etc
/// access `etc`, as its author would (`hostplug plugin manifest`, applied server-side:
/// the module is larger than a client-side apply's annotation may be), and waits until
/// it is ready.
pub async fn publish_plugin(
    env: &Environment,
    file: &str,
    name: &str,
    etc: &str,
) -> anyhow::Result<()> {
    let cli = hostplug_e2e::workspace_binary("hostplug")?;
    let manifest = std::process::Command::new(&cli)
        .args(["plugin", "manifest"])
        .arg(hostplug_e2e::plugin_dir()?.join(file))
        .args(["--name", name, "--etc", etc])
        .output()?;
    ensure!(manifest.status.success(), "{manifest:?}");
    kubectl_stdin(
        env,
        &["apply", "--server-side", "-f", "-"],
        &String::from_utf8(manifest.stdout)?,
    )
    .await?;
    let plugins: Api<HostPlugin> = Api::all(env.admin_client());
    wait_until(
        &format!("HostPlugin {name} ready"),
        INSTALL_TIMEOUT,
        || async {
            Ok(plugins
                .get_opt(name)
                .await?
                .and_then(|p| p.status)
                .is_some_and(|s| s.ready))
        },
    )
    .await
}

/// `kubectl hostplug rerun TASK` in the operator's namespace (it waits for nothing).
pub async fn rerun(env: &Environment, task: &str) -> anyhow::Result<()> {
    let out = tokio::process::Command::new(hostplug_e2e::workspace_binary("kubectl-hostplug")?)
        .arg("--kubeconfig")
        .arg(env.kubeconfig_path())
        .args(["rerun", task, "-n", NAMESPACE])
        .output()
        .await?;
    ensure!(out.status.success(), "rerun {task}: {out:?}");
    Ok(())
}

/// The memory cgroup directory of process `pid` on this machine: the v1 `memory`
/// controller's (`/sys/fs/cgroup/memory/…`) where the machine has one, else the v2
/// unified one.
pub fn memory_cgroup(pid: u32) -> anyhow::Result<std::path::PathBuf> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/cgroup"))?;
    let v1 = text.lines().find_map(|l| {
        let mut parts = l.splitn(3, ':');
        let (_, controllers, path) = (parts.next()?, parts.next()?, parts.next()?);
        controllers.split(',').any(|c| c == "memory").then(|| {
            std::path::Path::new("/sys/fs/cgroup/memory").join(path.trim_start_matches('/'))
        })
    });
    let v2 = text.lines().find_map(|l| {
        l.strip_prefix("0::")
            .map(|p| std::path::Path::new("/sys/fs/cgroup").join(p.trim_start_matches('/')))
    });
    v1.filter(|d| d.is_dir())
        .or(v2)
        .with_context(|| format!("no memory cgroup for process {pid}: {text}"))
}

/// Lets the memory cgroup of process `pid` use only `headroom` bytes more than it uses
/// now: the next allocations beyond that meet the kernel's OOM killer.
pub fn squeeze_memory(pid: u32, headroom: u64) -> anyhow::Result<()> {
    let dir = memory_cgroup(pid)?;
    let (usage, limit) = if dir.join("memory.usage_in_bytes").exists() {
        ("memory.usage_in_bytes", "memory.limit_in_bytes")
    } else {
        ("memory.current", "memory.max")
    };
    let used: u64 = std::fs::read_to_string(dir.join(usage))?.trim().parse()?;
    std::fs::write(dir.join(limit), (used + headroom).to_string())
        .with_context(|| format!("setting {}", dir.join(limit).display()))
}

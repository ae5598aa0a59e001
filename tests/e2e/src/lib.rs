//! The end-to-end harness of hostplug: a real control plane and simulated nodes
//! (`hostplug-testenv`), the CRDs and the operator's RBAC from `deploy/`, and the
//! operator run as a separate `hostplug-operator` process under its own ServiceAccount —
//! so a verb missing from `deploy/rbac` fails a test. Worker Pods run the built
//! `hostplug-worker` binary (the node simulator maps the worker image to it).
//!
//! The binaries are taken from the target directory of the test executable
//! (`cargo test --workspace` builds them); the built-in plugins from
//! `HOSTPLUG_PLUGIN_DIR` or `target/plugins` (`make plugins`).

pub mod ansible;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context, bail};
use hostplug_api::crd::{HostPlugin, HostTask, TaskState};
use hostplug_api::worker::paths::{CONTAINERD_MOUNT, NODE_CONTAINERD_SOCKET};
use hostplug_testenv::hostplug::{
    OperatorInstall, install_operator, prepare_operator, start_environment,
};
use hostplug_testenv::nodesim::NodeSpec;
use hostplug_testenv::{EnvConfig, Environment};
use k8s_openapi::api::core::v1::{Pod, Secret, Service};
use k8s_openapi::api::events::v1::Event;
use kube::api::ListParams;
use kube::{Api, Client};

// The worker image, namespace, ServiceAccount and built-in plugins, shared with `make dev`.
pub use hostplug_testenv::hostplug::{BUILTIN_PLUGINS, NAMESPACE, OPERATOR_SA, WORKER_IMAGE};

/// Lease duration for tests: 4 s, so a restarted operator takes over quickly after a
/// kill (the production default is 15 s).
const TEST_LEASE_SECONDS: &str = "4";
/// How long a worker Pod may take to become Ready in tests: 30 s (a local process).
const TEST_POD_START_TIMEOUT_SECONDS: &str = "30";
/// How long a task may take to end in tests: 3 min on a loaded 2-core machine.
pub const TASK_TIMEOUT: Duration = Duration::from_secs(180);

/// The repository root.
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// A binary of the workspace, built next to the test executable.
pub fn workspace_binary(name: &str) -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe().context("locating the test executable")?;
    // target/<profile>/deps/<test> → target/<profile>/<name>
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .context("test executable outside a target directory")?;
    let path = profile_dir.join(name);
    if !path.is_file() {
        bail!(
            "{} not built; run `cargo build -p hostplug-operator -p hostplug-worker` \
             (or `cargo test --workspace`, which builds it)",
            path.display()
        );
    }
    Ok(path)
}

/// The built-in plugins directory.
pub fn plugin_dir() -> anyhow::Result<PathBuf> {
    let dir = std::env::var_os("HOSTPLUG_PLUGIN_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo_root().join("target/plugins"));
    if !dir.join("etc-file.wasm").is_file() {
        bail!("no etc-file.wasm in {}; run `make plugins`", dir.display());
    }
    Ok(dir)
}

/// A file tree: relative path → content.
pub type Tree = BTreeMap<String, Vec<u8>>;

/// The environment with the operator running.
pub struct Harness {
    /// Control plane and nodes.
    pub env: Environment,
    /// Admin client.
    pub admin: Client,
    operator: Option<tokio::process::Child>,
    operator_bin: PathBuf,
    install: OperatorInstall,
    plugin_dir: PathBuf,
    starts: u32,
    operator_env: Vec<(String, String)>,
}

impl std::fmt::Debug for Harness {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Harness")
            .field("env", &self.env)
            .field("operator_bin", &self.operator_bin)
            .finish_non_exhaustive()
    }
}

impl Harness {
    /// Starts everything and waits until the built-in etc-file plugin is ready.
    pub async fn start() -> anyhow::Result<Self> {
        Self::start_with_operator_env(&[]).await
    }

    /// Like [`Harness::start`], with extra environment for every operator start; it is
    /// set after the harness's own, so it overrides it (e.g. `HOSTPLUG_WORKER_IMAGE`).
    pub async fn start_with_operator_env(operator_env: &[(&str, &str)]) -> anyhow::Result<Self> {
        Self::start_with(None, operator_env).await
    }

    /// Like [`Harness::start_with_operator_env`] with `workers` worker nodes
    /// (`node1`…`nodeN`) next to `master` instead of the default two (`None`).
    pub async fn start_with(
        workers: Option<usize>,
        operator_env: &[(&str, &str)],
    ) -> anyhow::Result<Self> {
        let operator_bin = workspace_binary("hostplug-operator")?;
        let worker_bin = workspace_binary("hostplug-worker")?;
        let plugin_dir = plugin_dir()?;
        let env = match workers {
            None => start_environment(&worker_bin).await?,
            Some(n) => {
                let mut nodes = vec![NodeSpec::control_plane("master")];
                nodes.extend((1..=n).map(|i| NodeSpec::worker(format!("node{i}"))));
                Environment::start(
                    EnvConfig {
                        nodes: Some(nodes),
                        ..EnvConfig::default()
                    }
                    .with_image(WORKER_IMAGE, &worker_bin),
                )
                .await
                .context("starting the test environment")?
            }
        };
        let install = install_operator(&env, &repo_root(), &plugin_dir).await?;
        Self::with_installed(env, install, operator_bin, plugin_dir, operator_env).await
    }

    /// Like [`Harness::start`] in an environment made from `config` (the worker image is
    /// added to its image map), e.g. with more images for test workloads.
    pub async fn start_with_config(config: EnvConfig) -> anyhow::Result<Self> {
        let operator_bin = workspace_binary("hostplug-operator")?;
        let worker_bin = workspace_binary("hostplug-worker")?;
        let plugin_dir = plugin_dir()?;
        let env = Environment::start(config.with_image(WORKER_IMAGE, &worker_bin))
            .await
            .context("starting the test environment")?;
        let install = install_operator(&env, &repo_root(), &plugin_dir).await?;
        Self::with_installed(env, install, operator_bin, plugin_dir, &[]).await
    }

    /// Like [`Harness::start`], with hostplug installed by `helm install` of
    /// `deploy/helm/hostplug` (release `hostplug` in [`NAMESPACE`], `--set` `values`)
    /// instead of the manifests: the operator process then runs with the chart's RBAC.
    pub async fn start_helm(values: &[(&str, &str)]) -> anyhow::Result<Self> {
        let operator_bin = workspace_binary("hostplug-operator")?;
        let worker_bin = workspace_binary("hostplug-worker")?;
        let plugin_dir = plugin_dir()?;
        let env = start_environment(&worker_bin).await?;
        hostplug_testenv::helm::helm_install(&env, &repo_root(), NAMESPACE, values, &[])
            .await
            .context("installing the chart")?;
        let install = prepare_operator(&env, &plugin_dir).await?;
        Self::with_installed(env, install, operator_bin, plugin_dir, &[]).await
    }

    /// Starts the operator in an environment where hostplug is installed and waits until
    /// the built-in etc-file plugin is ready.
    async fn with_installed(
        env: Environment,
        install: OperatorInstall,
        operator_bin: PathBuf,
        plugin_dir: PathBuf,
        operator_env: &[(&str, &str)],
    ) -> anyhow::Result<Self> {
        let admin = env.admin_client();
        let mut h = Self {
            env,
            admin,
            operator: None,
            operator_bin,
            install,
            plugin_dir,
            starts: 0,
            operator_env: operator_env
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        };
        h.start_operator()?;
        h.wait_plugin_ready("etc-file").await?;
        Ok(h)
    }

    /// Starts the operator process (as its ServiceAccount).
    pub fn start_operator(&mut self) -> anyhow::Result<()> {
        self.starts += 1;
        let log_path = self
            .env
            .dir()
            .join(format!("logs/hostplug-operator-{}.log", self.starts));
        if let Some(p) = log_path.parent() {
            std::fs::create_dir_all(p)?;
        }
        let log = std::fs::File::create(&log_path)?;
        let mut cmd = self.install.command(&self.operator_bin);
        cmd.env("HOSTPLUG_HTTP_ADDR", "127.0.0.1:0")
            .env("HOSTPLUG_LEASE_SECONDS", TEST_LEASE_SECONDS)
            .env(
                "HOSTPLUG_POD_START_TIMEOUT_SECONDS",
                TEST_POD_START_TIMEOUT_SECONDS,
            )
            .env("POD_NAME", format!("operator-{}", self.starts))
            .env("RUST_LOG", "info,kube=warn,hostplug_operator=debug");
        cmd.envs(self.operator_env.iter().map(|(k, v)| (k, v)));
        let child = cmd
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("starting {}", self.operator_bin.display()))?;
        self.operator = Some(child);
        Ok(())
    }

    /// Sets an environment variable for the operator's next starts (an upgrade or a
    /// changed setting, as a new Deployment would bring).
    pub fn set_operator_env(&mut self, key: &str, value: &str) {
        self.operator_env.retain(|(k, _)| k != key);
        self.operator_env.push((key.to_owned(), value.to_owned()));
    }

    /// Starts a second operator replica next to the running one (same ServiceAccount);
    /// the caller owns it (dropping it kills it).
    pub fn start_replica(&mut self) -> anyhow::Result<tokio::process::Child> {
        let first = self.operator.take();
        self.start_operator()?;
        let replica = self.operator.take().context("replica not started")?;
        self.operator = first;
        Ok(replica)
    }

    /// The process id of the running operator.
    pub fn operator_pid(&self) -> Option<u32> {
        self.operator.as_ref().and_then(tokio::process::Child::id)
    }

    /// The number of operator starts so far (the log of the latest is `operator_log(n)`).
    pub fn operator_starts(&self) -> u32 {
        self.starts
    }

    /// Kills the operator (SIGKILL: no clean shutdown, the Lease is not released).
    pub async fn kill_operator(&mut self) -> anyhow::Result<()> {
        if let Some(mut c) = self.operator.take() {
            c.kill().await?;
        }
        Ok(())
    }

    /// The operator's log of its `n`th start (1-based).
    pub fn operator_log(&self, n: u32) -> String {
        std::fs::read_to_string(
            self.env
                .dir()
                .join(format!("logs/hostplug-operator-{n}.log")),
        )
        .unwrap_or_default()
    }

    /// The HostTask API of the namespace.
    pub fn tasks(&self) -> Api<HostTask> {
        Api::namespaced(self.admin.clone(), NAMESPACE)
    }

    /// Waits until a HostPlugin reports ready.
    pub async fn wait_plugin_ready(&self, name: &str) -> anyhow::Result<HostPlugin> {
        let api: Api<HostPlugin> = Api::all(self.admin.clone());
        let deadline = tokio::time::Instant::now() + TASK_TIMEOUT;
        loop {
            if let Some(hp) = api.get_opt(name).await?
                && hp.status.as_ref().is_some_and(|s| s.ready)
            {
                return Ok(hp);
            }
            if tokio::time::Instant::now() > deadline {
                bail!(
                    "HostPlugin {name} not ready; operator log:\n{}",
                    self.operator_log(self.starts)
                );
            }
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
    }

    /// The HostTask API of another namespace.
    pub fn tasks_in(&self, namespace: &str) -> Api<HostTask> {
        Api::namespaced(self.admin.clone(), namespace)
    }

    /// Waits until a task's current generation ended; returns it.
    pub async fn wait_finished(&self, name: &str) -> anyhow::Result<HostTask> {
        self.wait_finished_in(NAMESPACE, name).await
    }

    /// Like [`Harness::wait_finished`] for a task in `namespace`.
    pub async fn wait_finished_in(&self, namespace: &str, name: &str) -> anyhow::Result<HostTask> {
        self.wait_task_in(namespace, name, |t| {
            t.status.as_ref().is_some_and(|s| {
                s.observed_generation == t.metadata.generation && s.state.is_finished()
            })
        })
        .await
    }

    /// Waits until `cond` holds for a task.
    pub async fn wait_task(
        &self,
        name: &str,
        cond: impl Fn(&HostTask) -> bool,
    ) -> anyhow::Result<HostTask> {
        self.wait_task_in(NAMESPACE, name, cond).await
    }

    /// Like [`Harness::wait_task`] for a task in `namespace`.
    pub async fn wait_task_in(
        &self,
        namespace: &str,
        name: &str,
        cond: impl Fn(&HostTask) -> bool,
    ) -> anyhow::Result<HostTask> {
        let tasks = self.tasks_in(namespace);
        let deadline = tokio::time::Instant::now() + TASK_TIMEOUT;
        loop {
            if let Some(t) = tasks.get_opt(name).await?
                && cond(&t)
            {
                return Ok(t);
            }
            if tokio::time::Instant::now() > deadline {
                let t = tasks.get_opt(name).await?;
                bail!(
                    "task {name} did not reach the expected state; last status: {}\noperator log:\n{}",
                    serde_json::to_string_pretty(&t.and_then(|t| t.status)).unwrap_or_default(),
                    tail(&self.operator_log(self.starts), 60)
                );
            }
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
    }

    /// The Events about task `name` in [`NAMESPACE`], oldest first: (reason, note).
    pub async fn task_events(&self, name: &str) -> anyhow::Result<Vec<(String, String)>> {
        let api: Api<Event> = Api::namespaced(self.admin.clone(), NAMESPACE);
        let mut events: Vec<Event> = api
            .list(&ListParams::default())
            .await?
            .items
            .into_iter()
            .filter(|e| e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(name))
            .collect();
        events.sort_by_key(|e| e.metadata.creation_timestamp.clone());
        Ok(events
            .into_iter()
            .map(|e| (e.reason.unwrap_or_default(), e.note.unwrap_or_default()))
            .collect())
    }

    /// Waits (30 s at most) for an Event about task `name` with `reason` whose note
    /// satisfies `note`; returns the note. Events are recorded after the status is
    /// written, so a test that read a finished status waits for them here.
    pub async fn wait_task_event(
        &self,
        name: &str,
        reason: &str,
        note: impl Fn(&str) -> bool,
    ) -> anyhow::Result<String> {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            let all = self.task_events(name).await?;
            if let Some((_, n)) = all.iter().find(|(r, n)| r == reason && note(n)) {
                return Ok(n.clone());
            }
            if tokio::time::Instant::now() > deadline {
                bail!("no {reason} Event as expected on task {name}; its Events: {all:?}");
            }
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
    }

    /// Applies a file of `deploy/examples`.
    pub async fn apply_example(&self, file: &str) -> anyhow::Result<()> {
        self.env
            .apply_yaml_file(repo_root().join("deploy/examples").join(file))
            .await
            .with_context(|| format!("applying deploy/examples/{file}"))?;
        Ok(())
    }

    /// Applies YAML as the admin.
    pub async fn apply(&self, yaml: &str) -> anyhow::Result<()> {
        self.env.apply_yaml(yaml).await?;
        Ok(())
    }

    /// Publishes a module as its author would: `hostplug plugin manifest FILE --name NAME
    /// [--etc E]` applied as it is printed; waits until the operator has looked at it.
    pub async fn publish_plugin(
        &self,
        wasm: &str,
        name: &str,
        etc: &str,
    ) -> anyhow::Result<HostPlugin> {
        let cli = workspace_binary("hostplug")?;
        let out = std::process::Command::new(&cli)
            .args(["plugin", "manifest"])
            .arg(self.plugin_dir.join(wasm))
            .args(["--name", name, "--etc", etc])
            .output()
            .context("running hostplug plugin manifest")?;
        if !out.status.success() {
            bail!(
                "hostplug plugin manifest failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        self.apply(&String::from_utf8(out.stdout)?).await?;
        self.wait_plugin_status(name).await
    }

    /// Publishes a module like [`publish_plugin`](Self::publish_plugin), with
    /// `capabilities` (YAML lines at the indentation of `spec.capabilities`' fields, e.g.
    /// `"    docker: true\n"`) in place of the manifest's own: what an administrator writes
    /// for capabilities the CLI has no flag for (etcPaths, etcAllowSensitive).
    pub async fn publish_plugin_with(
        &self,
        wasm: &str,
        name: &str,
        capabilities: &str,
    ) -> anyhow::Result<HostPlugin> {
        let cli = workspace_binary("hostplug")?;
        let out = std::process::Command::new(&cli)
            .args(["plugin", "manifest"])
            .arg(self.plugin_dir.join(wasm))
            .args(["--name", name, "--etc", "none"])
            .output()
            .context("running hostplug plugin manifest")?;
        if !out.status.success() {
            bail!(
                "hostplug plugin manifest failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        let manifest = String::from_utf8(out.stdout)?;
        let printed = "  capabilities:\n    docker: false\n    etc: none\n";
        if !manifest.contains(printed) {
            bail!("hostplug plugin manifest no longer prints {printed:?}");
        }
        let manifest = manifest.replace(printed, &format!("  capabilities:\n{capabilities}"));
        self.apply(&manifest).await?;
        self.wait_plugin_status(name).await
    }

    /// Waits until a HostPlugin has a status for its current generation.
    pub async fn wait_plugin_status(&self, name: &str) -> anyhow::Result<HostPlugin> {
        let api: Api<HostPlugin> = Api::all(self.admin.clone());
        let deadline = tokio::time::Instant::now() + TASK_TIMEOUT;
        loop {
            if let Some(hp) = api.get_opt(name).await?
                && hp
                    .status
                    .as_ref()
                    .is_some_and(|s| s.observed_generation == hp.metadata.generation)
            {
                return Ok(hp);
            }
            if tokio::time::Instant::now() > deadline {
                bail!("HostPlugin {name} got no status");
            }
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
    }

    /// The names of the live (not being deleted) worker Pods, by node.
    pub async fn worker_pods(&self) -> anyhow::Result<BTreeMap<String, Vec<String>>> {
        let lp = ListParams::default().labels("app.kubernetes.io/component=worker");
        let mut out: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for p in Api::<Pod>::namespaced(self.admin.clone(), NAMESPACE)
            .list(&lp)
            .await?
            .items
        {
            if p.metadata.deletion_timestamp.is_some() {
                continue;
            }
            let node = p
                .spec
                .as_ref()
                .and_then(|s| s.node_name.clone())
                .unwrap_or_default();
            out.entry(node)
                .or_default()
                .push(p.metadata.name.unwrap_or_default());
        }
        Ok(out)
    }

    /// How many times worker logs say they started the invocation `id` (the operator's
    /// `<task uid>/<generation>/<node>`), over every worker Pod that ever ran (their logs
    /// outlive them).
    pub fn runs_of(&self, id: &str) -> usize {
        self.worker_log_count("invoking", id)
    }

    /// How many times worker logs say `message` (e.g. `"reverting"`: a revert that ran,
    /// not one answered from the stored outcome) for the invocation `id`, over every
    /// worker Pod that ever ran.
    pub fn worker_log_count(&self, message: &str, id: &str) -> usize {
        let Some(sim) = self.env.node_simulator() else {
            return 0;
        };
        // logs/<namespace>/<pod>/<container>.log: every Pod's directory under the namespace's.
        let probe = sim.container_log(NAMESPACE, "probe", "worker");
        let Some(ns_dir) = probe.parent().and_then(Path::parent) else {
            return 0;
        };
        // Quoted, as the JSON log line holds it: `…/node1` must not count `…/node10`.
        let quoted = format!("\"{id}\"");
        let mut n = 0;
        for entry in std::fs::read_dir(ns_dir).into_iter().flatten().flatten() {
            let log = std::fs::read_to_string(entry.path().join("worker.log")).unwrap_or_default();
            n += log
                .lines()
                .filter(|l| l.contains(&format!("\"{message}\"")) && l.contains(&quoted))
                .count();
        }
        n
    }

    /// The log of a worker Pod.
    pub fn worker_log(&self, pod: &str) -> String {
        self.env
            .node_simulator()
            .map(|n| n.container_log(NAMESPACE, pod, "worker"))
            .and_then(|p| std::fs::read_to_string(p).ok())
            .unwrap_or_default()
    }

    /// A node's /etc.
    pub fn etc(&self, node: &str) -> anyhow::Result<PathBuf> {
        Ok(self
            .env
            .node_root(node)
            .context("no node simulator")?
            .join("etc"))
    }

    /// Every node's /etc, read into memory.
    pub fn snapshot(&self) -> anyhow::Result<BTreeMap<String, Tree>> {
        let mut out = BTreeMap::new();
        for node in NODES {
            let dir = self.etc(node)?;
            let mut tree = Tree::new();
            read_tree(&dir, &dir, &mut tree)?;
            out.insert(node.to_string(), tree);
        }
        Ok(out)
    }

    /// Number of the task's Pods, Services and Secrets.
    pub async fn children(&self, task: &str) -> anyhow::Result<(usize, usize, usize)> {
        // Per-task workers carry `<namespace>.<name>` (`task::per_task_key`).
        let lp = ListParams::default().labels(&format!("hostplug.dev/task={NAMESPACE}.{task}"));
        let pods = Api::<Pod>::namespaced(self.admin.clone(), NAMESPACE)
            .list(&lp)
            .await?
            .items
            .into_iter()
            .filter(|p| p.metadata.deletion_timestamp.is_none())
            .count();
        let svcs = Api::<Service>::namespaced(self.admin.clone(), NAMESPACE)
            .list(&lp)
            .await?
            .items
            .len();
        let secrets = Api::<Secret>::namespaced(self.admin.clone(), NAMESPACE)
            .list(&lp)
            .await?
            .items
            .len();
        Ok((pods, svcs, secrets))
    }

    /// Stops everything.
    pub async fn shutdown(mut self) -> anyhow::Result<()> {
        self.kill_operator().await?;
        self.env.shutdown().await?;
        Ok(())
    }
}

/// The simulated nodes.
pub const NODES: [&str; 3] = ["master", "node1", "node2"];

/// Every regular file under `dir` into `out`, keyed by its path relative to `base`.
pub fn read_tree(base: &Path, dir: &Path, out: &mut Tree) -> anyhow::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let path = entry.path();
        let ft = entry.file_type()?;
        if ft.is_dir() {
            read_tree(base, &path, out)?;
        } else if ft.is_file() {
            let rel = path
                .strip_prefix(base)
                .map(|p| p.display().to_string())
                .unwrap_or_default();
            out.insert(rel, std::fs::read(&path)?);
        }
    }
    Ok(())
}

/// The files that differ between two snapshots: (node, path).
pub fn changed_files(
    before: &BTreeMap<String, Tree>,
    after: &BTreeMap<String, Tree>,
) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for (node, a) in after {
        let empty = Tree::new();
        let b = before.get(node).unwrap_or(&empty);
        for (path, content) in a {
            if b.get(path) != Some(content) {
                out.push((node.clone(), path.clone()));
            }
        }
        for path in b.keys() {
            if !a.contains_key(path) {
                out.push((node.clone(), path.clone()));
            }
        }
    }
    out
}

/// The last `n` lines of `s`.
pub fn tail(s: &str, n: usize) -> String {
    let lines: Vec<&str> = s.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// Whether a task ended with `state`.
pub fn state_of(t: &HostTask) -> Option<TaskState> {
    t.status.as_ref().map(|s| s.state)
}

/// Whether a worker Pod's spec mounts the node's containerd socket: a hostPath volume of
/// it, or a mount at the worker's containerd path.
pub fn mounts_containerd_socket(p: &Pod) -> bool {
    let (volume, mount) = containerd_socket_in_spec(p);
    volume.is_some() || mount
}

/// The hostPath type of a volume of the node's containerd socket, if the Pod has one, and
/// whether a container mounts something at the worker's containerd path.
pub fn containerd_socket_in_spec(p: &Pod) -> (Option<String>, bool) {
    let Some(spec) = p.spec.as_ref() else {
        return (None, false);
    };
    let volume = spec.volumes.iter().flatten().find_map(|v| {
        v.host_path
            .as_ref()
            .filter(|h| h.path == NODE_CONTAINERD_SOCKET)
            .map(|h| h.type_.clone().unwrap_or_default())
    });
    let mount = spec.containers.iter().any(|c| {
        c.volume_mounts
            .iter()
            .flatten()
            .any(|m| m.mount_path == CONTAINERD_MOUNT)
    });
    (volume, mount)
}

/// A worker Pod's profile (label `hostplug.dev/profile`, e.g. `etc-write-containerd`);
/// empty when it has none.
pub fn worker_profile(p: &Pod) -> String {
    p.metadata
        .labels
        .as_ref()
        .and_then(|l| l.get("hostplug.dev/profile").cloned())
        .unwrap_or_default()
}

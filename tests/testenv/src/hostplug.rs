//! Installing hostplug into an [`Environment`]: the steps the e2e harness
//! (`tests/e2e`) and `make dev` (`hostplug-dev`) share — the environment with the worker
//! image mapped to the built worker, the namespace, the CRDs and the operator's RBAC from
//! `deploy/`, the operator's ServiceAccount kubeconfig, and the built-in plugin directory.
//! Starting the operator process stays with the callers (they run it with different
//! settings); [`OperatorInstall::command`] sets what both give it.

use std::path::{Path, PathBuf};

use anyhow::Context;

use crate::{EnvConfig, Environment};

/// The worker image the operator puts into worker Pods; the node simulator runs the
/// local `hostplug-worker` binary for it.
pub const WORKER_IMAGE: &str = "ghcr.io/hostplug/worker:dev";
/// Namespace of the operator, its tasks and their children (deploy/namespace.yaml).
pub const NAMESPACE: &str = "hostplug-system";
/// The operator's ServiceAccount (deploy/rbac/operator.yaml).
pub const OPERATOR_SA: &str = "hostplug-operator";
/// The plugins the operator image ships (`deploy/operator/Dockerfile`).
pub const BUILTIN_PLUGINS: [&str; 4] = [
    "etc-file",
    "docker-image",
    "containerd-image",
    "systemd-unit",
];
/// The manifests applied before the operator starts, relative to the repository root, in
/// order: the namespace, the CRDs, the operator's RBAC.
pub const OPERATOR_MANIFESTS: [&str; 6] = [
    "deploy/namespace.yaml",
    "deploy/crds/hosttasks.hostplug.dev.yaml",
    "deploy/crds/hostplugins.hostplug.dev.yaml",
    "deploy/crds/hosttaskpolicies.hostplug.dev.yaml",
    "deploy/crds/hoststates.hostplug.dev.yaml",
    "deploy/rbac/operator.yaml",
];
/// The built-in plugin directory's name inside the environment directory.
const BUILTIN_DIR: &str = "builtin-plugins";

/// Starts the control plane and the simulated nodes, with [`WORKER_IMAGE`] mapped to
/// `worker_bin`.
pub async fn start_environment(worker_bin: &Path) -> anyhow::Result<Environment> {
    Environment::start(EnvConfig::default().with_image(WORKER_IMAGE, worker_bin))
        .await
        .context("starting the test environment")
}

/// What [`install_operator`] prepared for the operator process.
#[derive(Debug, Clone)]
pub struct OperatorInstall {
    /// A kubeconfig for the operator's ServiceAccount ([`NAMESPACE`]/[`OPERATOR_SA`]).
    pub sa_kubeconfig: PathBuf,
    /// The operator's built-in plugin directory (only [`BUILTIN_PLUGINS`]).
    pub builtin_dir: PathBuf,
}

impl OperatorInstall {
    /// A command running `operator_bin` as the operator's ServiceAccount, in [`NAMESPACE`],
    /// with [`WORKER_IMAGE`] and the built-in plugins; the caller adds the rest (HTTP
    /// address, Pod name, logging, stdio).
    pub fn command(&self, operator_bin: &Path) -> tokio::process::Command {
        let mut cmd = tokio::process::Command::new(operator_bin);
        cmd.env("KUBECONFIG", &self.sa_kubeconfig)
            .env("HOSTPLUG_NAMESPACE", NAMESPACE)
            .env("HOSTPLUG_WORKER_IMAGE", WORKER_IMAGE)
            .env("HOSTPLUG_PLUGIN_DIR", &self.builtin_dir);
        cmd
    }
}

/// Applies [`OPERATOR_MANIFESTS`] from `repo_root`, makes the operator's ServiceAccount
/// kubeconfig, and copies the [`BUILTIN_PLUGINS`] found in `plugin_dir` into a built-in
/// plugin directory in the environment directory.
///
/// Only the plugins the operator image ships go there; the test plugins next to them in
/// `plugin_dir` are published from ConfigMaps by whoever needs them.
pub async fn install_operator(
    env: &Environment,
    repo_root: &Path,
    plugin_dir: &Path,
) -> anyhow::Result<OperatorInstall> {
    for file in OPERATOR_MANIFESTS {
        env.apply_yaml_file(repo_root.join(file))
            .await
            .with_context(|| format!("applying {file}"))?;
    }
    prepare_operator(env, plugin_dir).await
}

/// The operator's ServiceAccount kubeconfig and its built-in plugin directory (as
/// [`install_operator`] makes them), for an environment where the namespace, CRDs and
/// RBAC are already installed — e.g. by `helm install` ([`crate::helm`]).
pub async fn prepare_operator(
    env: &Environment,
    plugin_dir: &Path,
) -> anyhow::Result<OperatorInstall> {
    let sa_kubeconfig = env
        .service_account_kubeconfig(NAMESPACE, OPERATOR_SA)
        .await
        .context("making the operator's kubeconfig")?;
    let builtin_dir = env.dir().join(BUILTIN_DIR);
    std::fs::create_dir_all(&builtin_dir).with_context(|| {
        format!(
            "creating the built-in plugin directory {}",
            builtin_dir.display()
        )
    })?;
    for name in BUILTIN_PLUGINS {
        // The module and the capabilities it declares (`make plugins` puts both there).
        for file in [format!("{name}.wasm"), format!("{name}.capabilities.json")] {
            let from = plugin_dir.join(&file);
            if from.is_file() {
                std::fs::copy(&from, builtin_dir.join(&file)).with_context(|| {
                    format!("copying {} to {}", from.display(), builtin_dir.display())
                })?;
            }
        }
    }
    Ok(OperatorInstall {
        sa_kubeconfig,
        builtin_dir,
    })
}

/// The registry the docker examples of `deploy/examples` name; [`start_node_docker`]
/// makes it resolve to a registry on loopback, so the examples run as printed.
pub const EXAMPLE_REGISTRY: &str = "registry.example:5000";
/// The nodes `make dev` gives a Docker Engine API (the docker examples target node1).
pub const DOCKER_NODES: [&str; 2] = ["node1", "node2"];
/// The images the docker examples pull, as `repository:tag` in [`EXAMPLE_REGISTRY`];
/// [`start_node_docker`] pushes each (a tiny image, nothing runs it).
pub const EXAMPLE_IMAGES: [&str; 1] = ["team/app:1.0"];

/// Gives simulated node `node` a Docker Engine API at its `/var/run/docker.sock`:
/// Podman's Docker API service with its own storage, and a registry on loopback that
/// [`EXAMPLE_REGISTRY`] resolves to, holding [`EXAMPLE_IMAGES`] (not on the node yet, so
/// the pull example pulls). Blocking (it waits for Podman): call it from
/// `tokio::task::block_in_place` in async code. Stopping: drop the returned value.
pub fn start_node_docker(
    env: &Environment,
    node: &str,
) -> anyhow::Result<hostplug_podman::DockerEnv> {
    let root = env
        .node_root(node)
        .with_context(|| format!("no simulated node {node}"))?;
    let docker = hostplug_podman::DockerEnv::start_with(&hostplug_podman::Options {
        socket: Some(root.join("var/run/docker.sock")),
        registry_aliases: vec![EXAMPLE_REGISTRY.to_owned()],
        // Stopped by drop; a thread-bound kill would fire when the runtime thread that
        // started it parks.
        tie_to_thread: false,
        ..hostplug_podman::Options::default()
    })
    .with_context(|| format!("starting Podman's Docker API for {node}"))?;
    for image in EXAMPLE_IMAGES {
        let local = format!("localhost/{image}");
        docker
            .make_image(&local, &[("hostplug.dev/example", "true")])
            .with_context(|| format!("making {local}"))?;
        docker
            .push(&local, image)
            .with_context(|| format!("pushing {image} to the loopback registry"))?;
        docker
            .podman(&["rmi", &local])
            .with_context(|| format!("removing {local} from {node}"))?;
    }
    Ok(docker)
}

/// Gives simulated node `node` a containerd at its `/run/containerd/containerd.sock` (the
/// hostPath the operator mounts for the `containerd` capability): containerd v2 with its
/// CRI plugin (tests/podman's `containerd` module, binaries from `tests/nodes/build.sh`),
/// pulling [`EXAMPLE_REGISTRY`] from `registry` (a loopback registry, e.g. that of
/// [`start_node_docker`], which holds [`EXAMPLE_IMAGES`]). Blocking; stopping: drop it.
pub fn start_node_containerd(
    env: &Environment,
    node: &str,
    registry: &str,
) -> anyhow::Result<hostplug_podman::containerd::Containerd> {
    let root = env
        .node_root(node)
        .with_context(|| format!("no simulated node {node}"))?;
    hostplug_podman::containerd::Containerd::start(
        &hostplug_podman::containerd::ContainerdOptions {
            socket: Some(root.join("run/containerd/containerd.sock")),
            registries: vec![registry.to_owned()],
            aliases: vec![(EXAMPLE_REGISTRY.to_owned(), registry.to_owned())],
            // Stopped by drop, as the Docker API above.
            tie_to_thread: false,
        },
    )
    .with_context(|| format!("starting containerd for {node}"))
}

/// The node `make dev` runs on a real systemd ([`start_node_systemd`]); the e2e tests pick
/// their own.
pub const SYSTEMD_NODES: [&str; 1] = ["node2"];

/// Puts simulated node `node` on a real systemd: a [`crate::systemd::SystemdNode`] whose
/// host directories are the node's file tree, so the node's `/etc` (a hostPath `/etc` of
/// a worker on it) is the systemd node's `/etc`, seeded from the Debian image over what
/// the simulator seeded (files the image lacks, such as `/etc/chrony.conf`, stay), and a
/// hostPath `/run/dbus/system_bus_socket` (or `/var/run/dbus/…`) is its system bus. The
/// Node object, its heartbeats and the worker Pods stay the simulator's: only `/etc`,
/// the bus and the units behind it are real. Blocking (it waits for systemd, ~1–5 s, and
/// makes the image on first use, ~1.5–4 min): call it from `tokio::task::block_in_place`
/// in async code. Stopping: drop it.
pub fn start_node_systemd(
    env: &Environment,
    node: &str,
) -> anyhow::Result<crate::systemd::SystemdNode> {
    let root = env
        .node_root(node)
        .with_context(|| format!("no simulated node {node}"))?;
    crate::systemd::SystemdNode::start(node, &root)
        .with_context(|| format!("starting a systemd node for {node}"))
}

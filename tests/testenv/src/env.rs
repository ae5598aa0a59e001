//! [`Environment`]: one control plane plus the node simulator, for one test (or for
//! `make cluster`), with the helpers tests need.
//!
//! Each environment lives in a directory of its own (certificates, etcd data, logs,
//! kubeconfigs, the simulated nodes' file trees) and on ports of its own, so tests in
//! parallel threads each start their own. Teardown happens on [`Environment::shutdown`]
//! and on drop — also when a test panics; then the directory is kept and its path printed,
//! so the logs can be read.

use std::collections::HashMap;
use std::fmt::Debug;
use std::path::{Path, PathBuf};
use std::time::Duration;

use k8s_openapi::api::authentication::v1::{TokenRequest, TokenRequestSpec};
use k8s_openapi::api::core::v1::ServiceAccount;
use kube::api::{DynamicObject, Patch, PatchParams, PostParams};
use kube::core::GroupVersionKind;
use kube::discovery::{self, ApiCapabilities, ApiResource, Scope};
use kube::runtime::wait::{Condition, await_condition};
use kube::{Api, Client, Resource};
use serde::Deserialize;
use serde::de::DeserializeOwned;

use crate::controlplane::{ControlPlane, ControlPlaneOptions, client_from_kubeconfig};
use crate::nodesim::{NodeSimConfig, NodeSimulator, NodeSpec};
use crate::realnode::{RealNode, RealNodes, SystemdRealNode};
use crate::{Error, Result};

/// The field manager of [`Environment::apply_yaml`].
pub const FIELD_MANAGER: &str = "hostplug-tests";

/// Set to keep an environment's directory after it stops (it is kept anyway when a test
/// panics).
pub const KEEP_ENV: &str = "HOSTPLUG_KEEP_ENV";

/// How long [`Environment::apply_yaml`] waits for a kind to become known: a manifest may
/// create a CustomResourceDefinition and, a few documents later, an object of its kind.
pub const KIND_DISCOVERY_TIMEOUT: Duration = Duration::from_secs(20);

/// The lifetime asked for service-account tokens: longer than any test or `make cluster`
/// session is expected to run.
pub const TOKEN_LIFETIME_SECONDS: i64 = 24 * 3600;

/// What to start.
#[derive(Debug, Clone)]
pub struct EnvConfig {
    /// The simulated nodes; `None` runs the control plane alone (no node simulator).
    pub nodes: Option<Vec<NodeSpec>>,
    /// Which local executable each container image stands for.
    pub image_map: HashMap<String, PathBuf>,
    /// Keep the environment's directory after it stops (also set by `HOSTPLUG_KEEP_ENV`).
    pub keep_dir: bool,
    /// How many real nodes (kubelet + containerd, see [`crate::realnode`]) to start next to
    /// the simulated ones: `real1`, `real2`, …
    pub real_nodes: usize,
    /// How many real nodes booted by a real systemd (kubelet and containerd as systemd
    /// units, reboots through systemd; see [`crate::realnode::systemd_node`]) to start:
    /// `sdreal1`, `sdreal2`, …
    pub systemd_real_nodes: usize,
}

impl Default for EnvConfig {
    /// The control plane and the default nodes: `master` (control plane), `node1`, `node2`.
    fn default() -> Self {
        EnvConfig {
            nodes: Some(NodeSimConfig::default_nodes(PathBuf::new()).nodes),
            image_map: HashMap::new(),
            keep_dir: std::env::var_os(KEEP_ENV).is_some_and(|v| !v.is_empty() && v != "0"),
            real_nodes: 0,
            systemd_real_nodes: 0,
        }
    }
}

impl EnvConfig {
    /// The control plane without any node: enough for API-only tests, and faster.
    pub fn control_plane_only() -> Self {
        EnvConfig {
            nodes: None,
            ..Self::default()
        }
    }

    /// Also starts `n` real nodes (`real1` … `realN`); see [`crate::realnode`].
    pub fn with_real_nodes(mut self, n: usize) -> Self {
        self.real_nodes = n;
        self
    }

    /// Also starts `n` real nodes booted by a real systemd (`sdreal1` … `sdrealN`); see
    /// [`crate::realnode::systemd_node`].
    pub fn with_systemd_real_nodes(mut self, n: usize) -> Self {
        self.systemd_real_nodes = n;
        self
    }

    /// Maps a container image to a local executable.
    pub fn with_image(mut self, image: impl Into<String>, executable: impl Into<PathBuf>) -> Self {
        self.image_map.insert(image.into(), executable.into());
        self
    }
}

/// Where the environment's files live: a temporary directory removed at the end, or kept.
#[derive(Debug)]
enum EnvDir {
    Temp(tempfile::TempDir),
    Kept(PathBuf),
}

impl EnvDir {
    fn path(&self) -> &Path {
        match self {
            EnvDir::Temp(t) => t.path(),
            EnvDir::Kept(p) => p,
        }
    }
}

/// A running control plane and node simulator. Stops everything on drop.
pub struct Environment {
    // Field order is drop order, but Drop below stops things explicitly anyway:
    // the nodes first (their Pods talk to the API server), then the control plane.
    nodes: Option<NodeSimulator>,
    real_nodes: Option<RealNodes>,
    control_plane: Option<ControlPlane>,
    admin: Client,
    kubeconfig: PathBuf,
    dir: Option<EnvDir>,
}

impl Debug for Environment {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Environment")
            .field("dir", &self.dir())
            .field("control_plane", &self.control_plane)
            .field("nodes", &self.nodes.is_some())
            .finish_non_exhaustive()
    }
}

impl Environment {
    /// Starts the control plane, then (unless `config.nodes` is `None`) the node simulator,
    /// in a fresh temporary directory.
    pub async fn start(config: EnvConfig) -> Result<Self> {
        let temp = tempfile::Builder::new()
            .prefix("hostplug-env-")
            .tempdir()
            .map_err(|e| Error::io("creating the environment directory", e))?;
        let dir = if config.keep_dir {
            EnvDir::Kept(temp.keep())
        } else {
            EnvDir::Temp(temp)
        };
        let mut real_nodes = None;
        if config.real_nodes + config.systemd_real_nodes > 0 {
            match RealNodes::prepare(dir.path(), config.real_nodes, config.systemd_real_nodes) {
                Ok(r) => real_nodes = Some(r),
                Err(e) => {
                    keep(dir);
                    return Err(e);
                }
            }
        }
        let options = ControlPlaneOptions {
            egress_selector_config: real_nodes
                .as_ref()
                .map(|r| r.egress_selector_config().to_owned()),
        };
        let control_plane = match ControlPlane::start_with(dir.path(), &options).await {
            Ok(control_plane) => control_plane,
            Err(e) => {
                // The error names log files: keep them.
                keep(dir);
                return Err(e);
            }
        };
        let admin = control_plane.admin_client().await?;
        let kubeconfig = control_plane.admin_kubeconfig().to_owned();
        let mut env = Environment {
            nodes: None,
            real_nodes: None,
            control_plane: Some(control_plane),
            admin,
            kubeconfig,
            dir: Some(dir),
        };
        if let Some(nodes) = config.nodes {
            let sim_config = NodeSimConfig {
                nodes,
                work_dir: env.dir().join("nodesim"),
                image_map: config.image_map,
            };
            match NodeSimulator::start(env.admin.clone(), sim_config).await {
                Ok(sim) => env.nodes = Some(sim),
                Err(e) => {
                    if let Some(dir) = env.dir.take() {
                        env.dir = Some(EnvDir::Kept(keep(dir)));
                    }
                    return Err(Error::NodeSim(Box::new(e)));
                }
            }
        }
        if let Some(mut real) = real_nodes {
            let started = real.start(env.control_plane(), &env.admin).await;
            env.real_nodes = Some(real);
            if let Err(e) = started {
                if let Some(dir) = env.dir.take() {
                    env.dir = Some(EnvDir::Kept(keep(dir)));
                }
                return Err(e);
            }
        }
        Ok(env)
    }

    /// The environment's directory (logs are in `logs/`).
    pub fn dir(&self) -> &Path {
        self.dir.as_ref().map_or(Path::new(""), EnvDir::path)
    }

    /// The admin kubeconfig file (its name contains `kubeconfig`).
    pub fn kubeconfig_path(&self) -> &Path {
        &self.kubeconfig
    }

    /// A client authenticated as the admin (group `system:masters`).
    pub fn admin_client(&self) -> Client {
        self.admin.clone()
    }

    /// The control plane.
    pub fn control_plane(&self) -> &ControlPlane {
        self.control_plane
            .as_ref()
            .expect("the control plane runs until shutdown consumes the environment")
    }

    /// Crashes the API server and etcd, keeps them down for `down` and starts them again
    /// with the same data ([`ControlPlane::restart_api_server`]); returns once the API
    /// server is ready again.
    pub async fn restart_api_server(&mut self, down: Duration) -> Result<()> {
        match self.control_plane.as_mut() {
            Some(cp) => cp.restart_api_server(down).await,
            None => Err(Error::io(
                "restarting the API server",
                std::io::Error::other("the environment was shut down"),
            )),
        }
    }

    /// The node simulator, unless the environment runs the control plane only.
    pub fn node_simulator(&self) -> Option<&NodeSimulator> {
        self.nodes.as_ref()
    }

    /// Adds a simulated node while the environment runs (a machine joining the cluster).
    pub async fn add_node(&mut self, spec: NodeSpec) -> Result<()> {
        let sim = self.nodes.as_mut().ok_or_else(|| {
            Error::NodeSim(Box::new(crate::nodesim::Error::Config(
                "the environment runs the control plane only".into(),
            )))
        })?;
        sim.add_node(spec)
            .await
            .map_err(|e| Error::NodeSim(Box::new(e)))
    }

    /// The real nodes, in order (`real1` first); empty unless
    /// [`EnvConfig::with_real_nodes`] asked for some.
    pub fn real_nodes(&self) -> &[RealNode] {
        self.real_nodes.as_ref().map_or(&[], RealNodes::nodes)
    }

    /// The real nodes booted by systemd, in order (`sdreal1` first); empty unless
    /// [`EnvConfig::with_systemd_real_nodes`] asked for some.
    pub fn systemd_real_nodes(&self) -> &[SystemdRealNode] {
        self.real_nodes
            .as_ref()
            .map_or(&[], RealNodes::systemd_nodes)
    }

    /// Real node `name` booted by systemd, if there is one.
    pub fn systemd_real_node(&self, name: &str) -> Option<&SystemdRealNode> {
        self.systemd_real_nodes().iter().find(|n| n.name() == name)
    }

    /// Real node `name`, if there is one.
    pub fn real_node(&self, name: &str) -> Option<&RealNode> {
        self.real_nodes().iter().find(|n| n.name() == name)
    }

    /// The root directory of simulated node `node` (its `etc/` is the node's /etc).
    pub fn node_root(&self, node: &str) -> Option<PathBuf> {
        self.nodes.as_ref().map(|n| n.node_root(node))
    }

    /// The kubectl built for this control plane's release.
    pub fn kubectl(&self) -> PathBuf {
        self.control_plane().binaries().kubectl()
    }

    /// Writes a kubeconfig that authenticates as ServiceAccount `namespace/name` (which
    /// must exist) with a token from the TokenRequest API, and returns its path — for a
    /// child process, such as the operator under test, to run with that account's rights.
    pub async fn service_account_kubeconfig(&self, namespace: &str, name: &str) -> Result<PathBuf> {
        let api: Api<ServiceAccount> = Api::namespaced(self.admin.clone(), namespace);
        let request = TokenRequest {
            spec: Some(TokenRequestSpec {
                expiration_seconds: Some(TOKEN_LIFETIME_SECONDS),
                ..Default::default()
            }),
            ..Default::default()
        };
        let response = api
            .create_token_request(name, &PostParams::default(), &request)
            .await?;
        let token = response.status.and_then(|s| s.token).unwrap_or_default();
        if token.is_empty() {
            return Err(Error::Io {
                context: format!("requesting a token for ServiceAccount {namespace}/{name}"),
                source: std::io::Error::other("the TokenRequest came back without a token"),
            });
        }
        let path = self.dir().join(format!("sa-{namespace}-{name}.kubeconfig"));
        let user = format!("system:serviceaccount:{namespace}:{name}");
        self.control_plane()
            .write_token_kubeconfig(&path, &user, &token)?;
        Ok(path)
    }

    /// A client authenticated as ServiceAccount `namespace/name` (which must exist); see
    /// [`Self::service_account_kubeconfig`].
    pub async fn service_account_client(&self, namespace: &str, name: &str) -> Result<Client> {
        let path = self.service_account_kubeconfig(namespace, name).await?;
        client_from_kubeconfig(&path).await
    }

    /// Applies a YAML file (see [`Self::apply_yaml`]).
    pub async fn apply_yaml_file(&self, path: impl AsRef<Path>) -> Result<Vec<DynamicObject>> {
        let path = path.as_ref();
        let text = tokio::fs::read_to_string(path)
            .await
            .map_err(|e| Error::io(format!("reading {}", path.display()), e))?;
        self.apply_yaml(&text).await
    }

    /// Applies every document of a (multi-document) YAML text with server-side apply as
    /// the admin, field manager [`FIELD_MANAGER`], forcing conflicts, in order. Namespaced
    /// objects without a namespace go to `default`. Kinds are looked up by discovery; a kind
    /// unknown at first (a CRD applied just before) is retried for
    /// [`KIND_DISCOVERY_TIMEOUT`]. Returns the objects as the server stored them.
    pub async fn apply_yaml(&self, yaml: &str) -> Result<Vec<DynamicObject>> {
        let mut applied = Vec::new();
        for (index, document) in serde_yaml::Deserializer::from_str(yaml).enumerate() {
            let value = serde_yaml::Value::deserialize(document)?;
            if value.is_null() {
                continue;
            }
            let object: DynamicObject = serde_yaml::from_value(value)?;
            applied.push(self.apply_object(index, object).await?);
        }
        Ok(applied)
    }

    async fn apply_object(&self, index: usize, object: DynamicObject) -> Result<DynamicObject> {
        let manifest_error = |reason: String| Error::Manifest { index, reason };
        let types = object
            .types
            .as_ref()
            .ok_or_else(|| manifest_error("no apiVersion and kind".into()))?;
        let gvk = GroupVersionKind::try_from(types).map_err(|e| manifest_error(e.to_string()))?;
        let name = object
            .metadata
            .name
            .clone()
            .ok_or_else(|| manifest_error("no metadata.name".into()))?;
        let params = PatchParams::apply(FIELD_MANAGER).force();
        let deadline = tokio::time::Instant::now() + KIND_DISCOVERY_TIMEOUT;
        loop {
            let attempt = async {
                let (resource, capabilities) = discovery::pinned_kind(&self.admin, &gvk).await?;
                let api = self.dynamic_api(&object, &resource, &capabilities);
                api.patch(&name, &params, &Patch::Apply(&object)).await
            };
            match attempt.await {
                Ok(stored) => return Ok(stored),
                // Unknown kind, or a CRD not yet serving: wait a little.
                Err(e) if kind_not_ready(&e) && tokio::time::Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                Err(e) => {
                    return Err(manifest_error(format!("applying {} {name}: {e}", gvk.kind)));
                }
            }
        }
    }

    fn dynamic_api(
        &self,
        object: &DynamicObject,
        resource: &ApiResource,
        capabilities: &ApiCapabilities,
    ) -> Api<DynamicObject> {
        if capabilities.scope == Scope::Namespaced {
            let namespace = object.metadata.namespace.as_deref().unwrap_or("default");
            Api::namespaced_with(self.admin.clone(), namespace, resource)
        } else {
            Api::all_with(self.admin.clone(), resource)
        }
    }

    /// Waits until `condition` holds for object `name` (see [`wait_for`]).
    pub async fn wait_for<K>(
        &self,
        api: &Api<K>,
        name: &str,
        condition: impl Condition<K>,
        timeout: Duration,
    ) -> Result<Option<K>>
    where
        K: Clone + Debug + Send + DeserializeOwned + Resource + 'static,
        K::DynamicType: Default,
    {
        wait_for(api, name, condition, timeout).await
    }

    /// Stops the node simulator, then the real nodes, then the control plane, and removes the directory (unless
    /// kept). Errors of the node simulator's shutdown are returned after everything stopped.
    pub async fn shutdown(mut self) -> Result<()> {
        let mut result = Ok(());
        if let Some(nodes) = self.nodes.take() {
            result = nodes
                .shutdown()
                .await
                .map_err(|e| Error::NodeSim(Box::new(e)));
        }
        if let Some(mut real) = self.real_nodes.take() {
            real.stop();
        }
        if let Some(control_plane) = self.control_plane.take() {
            control_plane.shutdown().await;
        }
        result
    }
}

impl Drop for Environment {
    fn drop(&mut self) {
        drop(self.nodes.take());
        drop(self.real_nodes.take());
        drop(self.control_plane.take());
        if std::thread::panicking()
            && let Some(dir) = self.dir.take()
        {
            keep(dir);
        }
    }
}

/// Keeps an environment's directory (after a failure) and says where it is.
fn keep(dir: EnvDir) -> PathBuf {
    let path = match dir {
        EnvDir::Temp(temp) => temp.keep(),
        EnvDir::Kept(path) => path,
    };
    eprintln!(
        "hostplug test environment kept for inspection: {} (logs in logs/)",
        path.display()
    );
    path
}

/// Waits until `condition` holds for object `name` of `api`, at most `timeout`. Returns the
/// object as it was when the condition held (`None` when the condition holds for a missing
/// object, as `is_deleted` does).
pub async fn wait_for<K>(
    api: &Api<K>,
    name: &str,
    condition: impl Condition<K>,
    timeout: Duration,
) -> Result<Option<K>>
where
    K: Clone + Debug + Send + DeserializeOwned + Resource + 'static,
    K::DynamicType: Default,
{
    match tokio::time::timeout(timeout, await_condition(api.clone(), name, condition)).await {
        Ok(result) => Ok(result?),
        Err(_) => Err(Error::Timeout {
            what: format!(
                "the condition on {} {name}",
                K::kind(&K::DynamicType::default())
            ),
            timeout,
        }),
    }
}

/// Whether an apply failed because its kind is not (yet) served.
fn kind_not_ready(e: &kube::Error) -> bool {
    match e {
        kube::Error::Api(status) => status.code == 404,
        kube::Error::Discovery(_) => true,
        _ => false,
    }
}

//! The hostplug operator: the controller that runs `HostTask`s on nodes through worker
//! Pods, keeps `HostState`s checked (and enforced) on their nodes, and reports
//! `HostPlugin`s. The resources themselves, the worker protocol and the
//! worker Pod's settings are defined in `hostplug-api`.
//!
//! The controller never touches a node itself: every host action happens inside a worker
//! Pod, in the Wasm sandbox, with the mounts the plugin's capabilities allow. The
//! operator's own Wasm engine only ever calls `describe`, with no host access.

pub mod caches;
pub mod client;
pub mod dispatch;
pub mod disruption;
mod error;
pub mod leader;
pub mod metrics;
pub mod oci;
pub mod plugins;
pub mod policy;
pub mod pool;
pub mod registry_auth;
pub mod report;
pub mod resources;
pub mod revert;
pub mod rollout;
pub mod state;
pub mod status;
pub mod task;
pub mod validate;
pub mod values;

pub use controller::*;
pub use error::{Error, Result};

mod controller {
    use std::net::SocketAddr;
    use std::path::PathBuf;
    use std::sync::Arc;
    use std::time::Duration;

    use hostplug_api::{LogFormat, NodeView};
    use k8s_openapi::api::core::v1::{Node, Pod};
    use kube::Client;
    use kube::runtime::reflector::{ObjectRef, Store};
    use tracing::{error, info};

    use crate::dispatch::{Artifacts, Calls};
    use crate::leader::{LeaderConfig, LeaderElector};
    use crate::metrics::Metrics;
    use crate::plugins::PluginStore;
    use crate::pool::{PoolConfig, WorkerPool};
    use crate::report::Events;
    use crate::task::RunKey;
    use crate::{Error, Result};
    use hostplug_api::crd::HostTask;

    /// The field manager of every server-side apply the operator makes.
    pub const FIELD_MANAGER: &str = "hostplug-operator";

    /// Default lease duration: 15 s, the Kubernetes components' default; a successor
    /// takes over within that after a crash.
    pub const DEFAULT_LEASE_SECONDS: u64 = 15;
    /// Default wait for a worker Pod to become Ready: 120 s, enough to pull a worker
    /// image on a fresh node; after that the node fails as "pending too long".
    pub const DEFAULT_POD_START_TIMEOUT_SECONDS: u64 = 120;
    /// Default time an unused worker Pod stays: 300 s. A warm worker costs ~32 MiB on its
    /// node; five minutes covers a burst of tasks (an operator applying several in a row)
    /// and a retry after a fix, while a quiet cluster sheds its workers soon.
    pub const DEFAULT_WORKER_IDLE_SECONDS: u64 = 300;
    /// Default number of worker Pods created at once: 50. Each creation is two API
    /// requests; 50 in flight starts a 200-node rollout's workers in a few rounds without
    /// flooding the API server.
    pub const DEFAULT_WORKER_START_PARALLEL: usize = 50;

    /// The operator's configuration (flags, each with an environment variable).
    #[derive(Debug, Clone, clap::Parser)]
    #[command(
        name = "hostplug-operator",
        version,
        about = "The hostplug operator: runs HostTasks on nodes through worker Pods."
    )]
    pub struct Config {
        /// Namespace of the worker Pods, their Secrets and the Lease. HostTasks are
        /// watched in every namespace; outside this one they need a HostTaskPolicy.
        #[arg(long, env = "HOSTPLUG_NAMESPACE", default_value = "hostplug-system")]
        pub namespace: String,
        /// Image of the worker Pods.
        #[arg(
            long,
            env = "HOSTPLUG_WORKER_IMAGE",
            default_value = "ghcr.io/hostplug/worker:dev"
        )]
        pub worker_image: String,
        /// Directory of the built-in plugins (`<name>.wasm`).
        #[arg(
            long,
            env = "HOSTPLUG_PLUGIN_DIR",
            default_value = "/usr/lib/hostplug/plugins"
        )]
        pub plugin_dir: PathBuf,
        /// Address of the metrics and health server.
        #[arg(long, env = "HOSTPLUG_HTTP_ADDR", default_value = "0.0.0.0:8080")]
        pub http_addr: SocketAddr,
        /// Name of the leader election Lease.
        #[arg(long, env = "HOSTPLUG_LEASE_NAME", default_value = "hostplug-operator")]
        pub lease_name: String,
        /// Seconds a Lease stays valid without renewal.
        #[arg(long, env = "HOSTPLUG_LEASE_SECONDS", default_value_t = DEFAULT_LEASE_SECONDS)]
        pub lease_seconds: u64,
        /// This replica's identity in the Lease (default: host name and pid).
        #[arg(long, env = "POD_NAME")]
        pub identity: Option<String>,
        /// Seconds a worker Pod may take to become Ready.
        #[arg(
            long,
            env = "HOSTPLUG_POD_START_TIMEOUT_SECONDS",
            default_value_t = DEFAULT_POD_START_TIMEOUT_SECONDS
        )]
        pub pod_start_timeout_seconds: u64,
        /// Where the operator's Wasm engine keeps precompiled modules (none: memory only).
        #[arg(long, env = "HOSTPLUG_CACHE_DIR")]
        pub cache_dir: Option<PathBuf>,
        /// Log format: `text` or `json` (one object per line, for a log pipeline).
        #[arg(long, env = "HOSTPLUG_LOG_FORMAT", default_value_t = LogFormat::Text)]
        pub log_format: LogFormat,
        /// Seconds an unused worker Pod stays before it is removed; 0 gives every task its
        /// own worker Pods, removed when the task ends.
        #[arg(
            long,
            env = "HOSTPLUG_WORKER_IDLE_SECONDS",
            default_value_t = DEFAULT_WORKER_IDLE_SECONDS
        )]
        pub worker_idle_seconds: u64,
        /// Worker Pods created at once.
        #[arg(
            long,
            env = "HOSTPLUG_WORKER_START_PARALLEL",
            default_value_t = DEFAULT_WORKER_START_PARALLEL
        )]
        pub worker_start_parallel: usize,
        /// The containerd socket on the nodes, mounted into the worker Pods of plugins
        /// with the `containerd` capability (k3s: /run/k3s/containerd/containerd.sock).
        #[arg(
            long,
            env = "HOSTPLUG_NODE_CONTAINERD_SOCKET",
            default_value = hostplug_api::worker::paths::NODE_CONTAINERD_SOCKET,
            value_parser = absolute_socket_path
        )]
        pub node_containerd_socket: String,
        /// The Docker API socket on the nodes, mounted into the worker Pods of plugins
        /// with the `docker` capability (rootless Docker or a Podman API socket live
        /// elsewhere).
        #[arg(
            long,
            env = "HOSTPLUG_NODE_DOCKER_SOCKET",
            default_value = hostplug_api::worker::paths::NODE_DOCKER_SOCKET,
            value_parser = absolute_socket_path
        )]
        pub node_docker_socket: String,
        /// Worker Pods on one node at most (every task's port and access profile makes
        /// its own): a new one replaces the node's least recently used idle worker, or
        /// waits while all are busy.
        #[arg(
            long,
            env = "HOSTPLUG_MAX_WORKERS_PER_NODE",
            default_value_t = crate::pool::DEFAULT_MAX_WORKERS_PER_NODE,
            value_parser = clap::value_parser!(u16).range(1..)
        )]
        pub max_workers_per_node: u16,
        /// A file of PEM public keys (ECDSA P-256): when set, every plugin that is not
        /// built in must come from an OCI registry and carry a cosign-format signature by
        /// one of them, in addition to its own `spec.signature`.
        #[arg(long, env = "HOSTPLUG_SIGNATURE_KEYS")]
        pub signature_keys: Option<PathBuf>,
        /// Whether HostTasks in the operator's own namespace (`--namespace`) run without
        /// a HostTaskPolicy. Tasks in any other namespace run only when a policy allows
        /// them; with `false`, the own namespace needs a policy too.
        #[arg(
            long,
            env = "HOSTPLUG_TRUST_OWN_NAMESPACE",
            default_value_t = true,
            action = clap::ArgAction::Set
        )]
        pub trust_own_namespace: bool,
    }

    /// `--node-containerd-socket`, `--node-docker-socket`: an absolute path without `..`,
    /// ending in `.sock`; it
    /// becomes a hostPath of type Socket, so nothing else on the node can be mounted
    /// through it.
    fn absolute_socket_path(s: &str) -> Result<String, String> {
        let p = std::path::Path::new(s);
        let ok = p.is_absolute()
            && s.ends_with(".sock")
            && p.components()
                .all(|c| !matches!(c, std::path::Component::ParentDir));
        if ok {
            Ok(s.to_owned())
        } else {
            Err(format!(
                "{s:?} is not an absolute socket path ending in .sock (e.g. /run/containerd/containerd.sock)"
            ))
        }
    }

    impl Config {
        /// How long a worker Pod may take to become Ready.
        pub fn pod_start_timeout(&self) -> Duration {
            Duration::from_secs(self.pod_start_timeout_seconds)
        }
    }

    /// What every reconcile shares.
    pub struct Context {
        /// API client (the operator's ServiceAccount).
        pub client: Client,
        /// Configuration.
        pub config: Config,
        /// The Event publisher.
        pub events: Events,
        /// Loaded plugins.
        pub plugins: PluginStore,
        /// Counters.
        pub metrics: Arc<Metrics>,
        /// The worker pool.
        pub pool: Arc<WorkerPool>,
        /// The Node cache.
        pub nodes: Store<Node>,
        /// The worker Pod cache.
        pub pods: Store<Pod>,
        /// Precompiled plugins for the workers.
        pub artifacts: Artifacts,
        /// Wakes a task's reconcile.
        pub wake: futures::channel::mpsc::UnboundedSender<ObjectRef<HostTask>>,
        /// The tasks' calls of this process.
        pub(crate) runs: Calls<RunKey>,
    }

    impl Context {
        /// One node as `$(node.…)` references see it, from the Node cache.
        pub fn node_view(&self, name: &str) -> Option<NodeView> {
            self.nodes
                .get(&ObjectRef::new(name))
                .and_then(|n| crate::validate::node_view(&n))
        }

        /// The cluster's nodes as selection sees them, from the Node cache.
        pub fn node_views(&self) -> Vec<NodeView> {
            self.nodes
                .state()
                .iter()
                .filter_map(|n| crate::validate::node_view(n))
                .collect()
        }
    }

    impl std::fmt::Debug for Context {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.debug_struct("Context")
                .field("config", &self.config)
                .field("plugins", &self.plugins)
                .finish_non_exhaustive()
        }
    }

    /// Runs the operator until SIGTERM/SIGINT or until the leader Lease is lost.
    pub async fn run(config: Config) -> Result<()> {
        let metrics = Arc::new(Metrics::default());
        let kube_config = kube::Config::infer().await.map_err(|e| Error::Kube {
            context: "reading the kubeconfig".into(),
            source: kube::Error::InferConfig(e),
        })?;
        let counter = metrics.clone();
        let client = kube::client::ClientBuilder::try_from(kube_config)
            .map_err(Error::kube("connecting to the API server"))?
            .with_layer(&tower::util::MapRequestLayer::new(
                move |req: http::Request<kube::client::Body>| {
                    counter.api_request();
                    req
                },
            ))
            .build();
        let http = tokio::spawn({
            let metrics = metrics.clone();
            let addr = config.http_addr;
            async move {
                if let Err(e) = crate::metrics::serve(addr, metrics).await {
                    error!(error = %e, %addr, "metrics server failed");
                }
            }
        });
        let identity = config.identity.clone().unwrap_or_else(|| {
            let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
                .map(|s| s.trim().to_owned())
                .unwrap_or_else(|_| "operator".into());
            format!("{host}-{}", std::process::id())
        });
        let elector = LeaderElector::new(
            client.clone(),
            LeaderConfig {
                name: config.lease_name.clone(),
                namespace: config.namespace.clone(),
                identity: identity.clone(),
                duration: Duration::from_secs(config.lease_seconds.max(2)),
                renew_every: Duration::from_secs((config.lease_seconds / 3).max(1)),
            },
        );
        tokio::select! {
            r = elector.acquire() => r?,
            _ = hostplug_process::shutdown_signal() => { http.abort(); return Ok(()); }
        }
        metrics.set_leader(true);

        let host = tokio::task::spawn_blocking({
            let cache_dir = config.cache_dir.clone();
            move || {
                hostplug_host::Host::new(hostplug_host::HostConfig {
                    cache_dir,
                    ..hostplug_host::HostConfig::default()
                })
            }
        })
        .await
        .map_err(Error::Join)?
        .map_err(|source| Error::Plugin {
            plugin: "(engine)".into(),
            source,
        })?;
        let cluster_keys = match &config.signature_keys {
            Some(path) => {
                crate::oci::OciSettings::read_cluster_keys(path).map_err(Error::Config)?
            }
            None => Vec::new(),
        };
        let plugins =
            PluginStore::new(host, config.plugin_dir.clone()).with_oci(crate::oci::OciSettings {
                namespace: config.namespace.clone(),
                cluster_keys,
            });
        if let Err(e) = crate::plugins::install_builtins(&client, &plugins).await {
            error!(error = %e, "installing the built-in plugins failed");
        }
        let events = crate::report::Events::new(client.clone(), identity);
        let (wake, wake_rx) = futures::channel::mpsc::unbounded();
        let (caches, writers) = crate::caches::stores();
        // This process's artifact key: made now, in memory only (see `Artifacts`).
        let artifacts = Artifacts::new()?;
        let pool = Arc::new(WorkerPool::new(
            client.clone(),
            PoolConfig {
                namespace: config.namespace.clone(),
                image: config.worker_image.clone(),
                idle: Duration::from_secs(config.worker_idle_seconds),
                start_parallel: config.worker_start_parallel,
                containerd_socket: config.node_containerd_socket.clone(),
                docker_socket: config.node_docker_socket.clone(),
                max_per_node: usize::from(config.max_workers_per_node),
                artifact_key: artifacts.public_key(),
            },
            caches.pods.clone(),
            caches.nodes.clone(),
            wake.clone(),
        ));
        // The caches first, then the previous process's workers, then the controllers:
        // a call resumed after a restart must reach the worker holding its outcome.
        let (node_changes, node_changed) = futures::channel::mpsc::unbounded();
        let cache_tasks = writers
            .run(
                &client,
                &config.namespace,
                &caches,
                Arc::clone(&pool),
                node_changes,
            )
            .await;
        pool.adopt_existing();
        let sweeper = tokio::spawn(Arc::clone(&pool).run_sweeper());
        let ctx = Arc::new(Context {
            client,
            config,
            events,
            plugins,
            metrics: metrics.clone(),
            pool,
            nodes: caches.nodes,
            pods: caches.pods,
            wake,
            artifacts,
            runs: Calls::default(),
        });
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        let stopped = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
            let _ = rx.wait_for(|s| *s).await;
        };
        info!("operator running");
        let tasks = tokio::spawn(crate::task::run_controller(
            ctx.clone(),
            wake_rx,
            stopped(stop_rx.clone()),
        ));
        let hps = tokio::spawn(crate::plugins::run_controller(
            ctx.clone(),
            stopped(stop_rx.clone()),
        ));
        let states = tokio::spawn(crate::state::run_controller(
            ctx.clone(),
            crate::caches::coalesced(node_changed),
            stopped(stop_rx),
        ));
        let outcome = tokio::select! {
            lost = elector.hold() => Err(lost),
            _ = hostplug_process::shutdown_signal() => Ok(()),
        };
        let _ = stop_tx.send(true);
        let _ = tasks.await;
        let _ = hps.await;
        let _ = states.await;
        sweeper.abort();
        for t in cache_tasks {
            t.abort();
        }
        metrics.set_leader(false);
        if outcome.is_ok() {
            elector.release().await;
        }
        http.abort();
        outcome
    }
}

//! The hostplug test environment: a real Kubernetes control plane on loopback and a node
//! simulator playing the kubelet, for the tests and for `make cluster`.
//!
//! - [`controlplane`] runs etcd, kube-apiserver and kube-controller-manager (built once by
//!   `tests/controlplane/build.sh`) with generated certificates, RBAC, Node authorization and
//!   service-account tokens on, on free loopback ports.
//! - [`nodesim`] registers fake nodes and runs the containers of their Pods as local
//!   processes.
//! - [`realnode`] runs real nodes — kubelet, containerd and runc, each node in namespaces
//!   of its own — next to the simulated ones, when a test asks for them.
//!   [`realnode::systemd_node`] boots such nodes under a real systemd (the [`systemd`]
//!   node's image, kubelet and containerd as its units), so that a reboot asked of that
//!   systemd stops them and the node comes back with a new boot ID.
//! - [`netpol`] enforces NetworkPolicies on the real nodes with kube-router's policy
//!   controller (built by `tests/netpol/build.sh`), inside each node's namespaces only.
//! - [`Environment`] puts both together for a test: clients as admin or as a
//!   ServiceAccount, server-side apply of YAML, waiting for conditions, and a teardown that
//!   leaves no process behind, also when the test fails or panics.
//! - [`systemd`] runs a node whose PID 1 is a real systemd with a real D-Bus system bus
//!   (a Podman container of a Debian image), its `/etc` and bus socket visible on the host,
//!   with a test service and reboots whose power cycle is simulated.
//! - [`hostplug`] installs hostplug's CRDs, RBAC and built-in plugins into an environment,
//!   for the e2e harness and `make dev`.
//! - [`helm`] renders, lints and installs the Helm chart (`deploy/helm/hostplug`) into an
//!   environment.
//! - [`faults`] injects faults into a node (a full disk under its `/etc`);
//!   [`Environment::restart_api_server`] crashes and restarts the API server and etcd.
//!
//! Nothing here is mocked, and nothing here may touch a real cluster: every client is built
//! from a kubeconfig this crate wrote for its own control plane.

pub mod controlplane;
pub mod env;
pub mod faults;
pub mod helm;
pub mod hostplug;
pub mod netpol;
pub mod nodesim;
pub mod realnode;
pub mod systemd;

use std::path::PathBuf;
use std::time::Duration;

pub use controlplane::{ControlPlane, K8S_VERSION};
pub use env::{EnvConfig, Environment, wait_for};

/// What can go wrong while starting, using or stopping a test environment.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The control-plane binaries have not been built (or not completely).
    #[error(
        "control-plane binaries missing in {dir}: {missing} — run `make setup` \
         (it runs tests/controlplane/build.sh), or point HOSTPLUG_CONTROLPLANE_BIN at them"
    )]
    BinariesMissing {
        /// The directory that was searched.
        dir: PathBuf,
        /// The binaries not found there.
        missing: String,
    },
    /// A file-system or process operation failed.
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// Certificate or key generation failed.
    #[error("generating certificates: {0}")]
    Certificate(#[from] rcgen::Error),
    /// A control-plane process ended while it should have been running.
    #[error("{name} exited ({status}); last lines of {}:\n{tail}", log.display())]
    ProcessExited {
        /// Which process.
        name: String,
        /// How it ended.
        status: String,
        /// Its log file.
        log: PathBuf,
        /// The last lines of that log.
        tail: String,
    },
    /// A process did not become ready in time.
    #[error("{what} not ready after {timeout:?}; last lines of {}:\n{tail}", log.display())]
    StartTimeout {
        /// What was awaited.
        what: String,
        /// How long it was awaited.
        timeout: Duration,
        /// The log file most likely to say why.
        log: PathBuf,
        /// The last lines of that log.
        tail: String,
    },
    /// A request to the Kubernetes API failed.
    #[error("Kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    /// A kubeconfig could not be read or turned into a client configuration.
    #[error("kubeconfig: {0}")]
    Kubeconfig(#[from] kube::config::KubeconfigError),
    /// Waiting for a condition failed (not a timeout: the watch itself).
    #[error("waiting: {0}")]
    Wait(#[from] kube::runtime::wait::Error),
    /// A condition did not hold within its time limit.
    #[error("timed out after {timeout:?} waiting for {what}")]
    Timeout {
        /// What was awaited.
        what: String,
        /// The time limit.
        timeout: Duration,
    },
    /// YAML could not be parsed or written.
    #[error("YAML: {0}")]
    Yaml(#[from] serde_yaml::Error),
    /// JSON could not be parsed or written.
    #[error("JSON: {0}")]
    Json(#[from] serde_json::Error),
    /// A manifest document cannot be applied as it stands.
    #[error("manifest document {index}: {reason}")]
    Manifest {
        /// The 0-based position of the document in its file.
        index: usize,
        /// What is wrong with it.
        reason: String,
    },
    /// The node simulator failed.
    #[error("node simulator: {0}")]
    NodeSim(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// A real node (kubelet + containerd, see [`realnode`]) could not start or be used.
    #[error("real node {node}: {message}")]
    RealNode {
        /// The node's name (`-` when it is about all of them).
        node: String,
        /// What went wrong.
        message: String,
    },
    /// A systemd node (see [`systemd`]) could not start or be used.
    #[error("systemd node {node}: {message}")]
    SystemdNode {
        /// The node's name.
        node: String,
        /// What went wrong.
        message: String,
    },
}

/// This crate's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// An [`Error::Io`] saying what was being done.
    pub fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        Error::Io {
            context: context.into(),
            source,
        }
    }
}

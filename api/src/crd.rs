//! The hostplug custom resources: `HostTask` (namespaced, one requested action) and
//! `HostPlugin` (cluster-scoped, one available plugin), group `hostplug.dev`, version
//! `v1alpha1`.
//!
//! These types are the API; the operator, the console and the tests read and write them
//! through this crate. The CRD YAML in `deploy/crds/` is generated from them by the
//! `crdgen` binary (`cargo run -p hostplug-api --bin crdgen -- deploy/crds`) and a test
//! fails when it drifts. Field names follow the seed design (`spec.workers`, `spec.targetType`,
//! `spec.http.{port,api,method,parameter}`, `status.state`, `status.msg`, `status.pods`);
//! renaming one is a breaking API change.
//!
//! Nothing here talks to a cluster or a node.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::{CustomResource, CustomResourceExt, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

pub use crate::call::{NodeTargets, PluginCall, TargetType};
pub use crate::plugin::{Capabilities, EtcAccess, MethodInfo, PluginInfo};
pub use crate::rollout::{Gate, HealthCheck, OnFailure, RolloutPhase, RolloutStatus, WaveSize};

/// API group of both resources.
pub const GROUP: &str = "hostplug.dev";
/// API version of both resources.
pub const VERSION: &str = "v1alpha1";

/// The worker port when `spec.http.port` is not given: the worker's own default port
/// ([`crate::worker::DEFAULT_PORT`]).
pub const DEFAULT_WORKER_PORT: i32 = crate::worker::DEFAULT_PORT as i32;
/// Lowest `spec.http.port`: 1024. Ports below are privileged, and the worker container
/// drops every capability including `NET_BIND_SERVICE` (and runs as a non-root user
/// when the plugin needs neither /etc nor docker), so it could not bind them: such a task
/// would fail on every node with a bind error instead of being refused up front.
pub const MIN_WORKER_PORT: i32 = 1024;
/// Per-node deadline when `spec.timeoutSeconds` is not given: long enough for a docker
/// pull on a slow link, short enough that a stuck node is noticed within a minute.
pub const DEFAULT_TIMEOUT_SECONDS: i32 = 60;
/// Upper bound of `spec.timeoutSeconds`: one hour. A host action that needs longer is not
/// a host action but a batch job; the bound also keeps a worker Pod from living for days.
pub const MAX_TIMEOUT_SECONDS: i32 = 3600;
/// Nodes in flight when `spec.rollout.maxParallel` is not given; 10 keeps a large rollout
/// moving while a bad change fails on at most 10 nodes before `maxFailures` stops it.
pub const DEFAULT_MAX_PARALLEL: i32 = 10;
/// Upper bound of `spec.rollout.maxParallel`: 1000. Each node in flight is a worker Pod,
/// a Service, a Secret and an open HTTPS call from the operator; beyond a thousand at
/// once the operator's connections and the API server's write rate are the bottleneck,
/// and a bad change would fail on that many nodes before `maxFailures` can stop it.
pub const MAX_MAX_PARALLEL: i32 = 1000;

/// What a task runs: the plugin call (`api`, `method`, `parameter`) and the worker's
/// port. The name `http` is the seed design's; the worker is indeed reached over HTTPS.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct HttpSpec {
    /// Port the worker Pod listens on, 1024 or above: the worker drops every capability
    /// (and runs as non-root for plugins without /etc or docker access), so it cannot
    /// bind a privileged port.
    #[serde(default = "default_port")]
    #[schemars(range(min = MIN_WORKER_PORT, max = 65535))]
    pub port: i32,
    /// The plugin, its method and the parameters.
    #[serde(flatten)]
    pub call: PluginCall,
}

impl HttpSpec {
    /// `call` on the default worker port.
    pub fn new(call: PluginCall) -> Self {
        Self {
            port: DEFAULT_WORKER_PORT,
            call,
        }
    }
}

fn default_port() -> i32 {
    DEFAULT_WORKER_PORT
}
fn default_timeout() -> i32 {
    DEFAULT_TIMEOUT_SECONDS
}
fn default_max_parallel() -> i32 {
    DEFAULT_MAX_PARALLEL
}

/// How a task spreads over its nodes.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RolloutSpec {
    /// At most this many nodes are in flight (worker starting or plugin running) at once.
    #[serde(default = "default_max_parallel")]
    #[schemars(range(min = 1, max = MAX_MAX_PARALLEL))]
    pub max_parallel: i32,
    /// Once more than this many nodes failed, no new node starts: without waves the
    /// nodes not started are Skipped and the task fails; with waves the rollout halts
    /// (`onFailure`).
    #[serde(default)]
    #[schemars(range(min = 0))]
    pub max_failures: i32,
    /// HostTask only (a HostState ignores it). Waves of nodes, in sorted node-name
    /// order: each entry is where a wave ends, counted from the first node — a number
    /// of nodes or a percentage (`[1, "25%", "100%"]`: one canary, then up to a
    /// quarter, then the rest). Each wave holds at least one node; the last takes every
    /// node left. A wave starts only once the one before ended and passed `gate`.
    /// Unset: every node in one wave.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = crate::rollout::MAX_WAVES))]
    pub waves: Option<Vec<WaveSize>>,
    /// HostTask only. What must hold after a wave before the next one starts (needs
    /// `waves`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gate: Option<Gate>,
    /// HostTask only. What a failed gate or more than `maxFailures` failed nodes do in
    /// a rollout with waves: `Pause` halts it until resumed or cancelled.
    #[serde(default, skip_serializing_if = "is_default")]
    pub on_failure: OnFailure,
    /// HostTask only. Pause, as a Deployment's `spec.paused`: nodes in flight finish,
    /// no node or health check starts. Changing it starts no new run.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub paused: bool,
    /// HostTask only. The rollout may go on past the gate of every wave up to this one
    /// even when the gate failed, too many nodes failed or it waits for approval (what
    /// `kubectl hostplug resume` sets). Changing it starts no new run.
    #[serde(default, skip_serializing_if = "is_zero_i32")]
    #[schemars(range(min = 0))]
    pub approved_wave: i32,
    /// HostTask only. Cancel the rollout: nodes in flight finish, nodes not started end
    /// Skipped, and the task fails naming the cancel. Changing it starts no new run.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub cancel: bool,
}

fn is_default<T: Default + PartialEq>(v: &T) -> bool {
    *v == T::default()
}

fn is_zero_i32(n: &i32) -> bool {
    *n == 0
}

impl Default for RolloutSpec {
    fn default() -> Self {
        Self {
            max_parallel: DEFAULT_MAX_PARALLEL,
            max_failures: 0,
            waves: None,
            gate: None,
            on_failure: OnFailure::default(),
            paused: false,
            approved_wave: 0,
            cancel: false,
        }
    }
}

/// One requested host action on a set of nodes.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "hostplug.dev",
    version = "v1alpha1",
    kind = "HostTask",
    plural = "hosttasks",
    namespaced,
    status = "HostTaskStatus",
    derive = "PartialEq",
    shortname = "ht",
    category = "hostplug",
    doc = "One requested host action: a plugin operation run on the selected nodes.",
    printcolumn = r#"{"name":"State","type":"string","jsonPath":".status.state"}"#,
    printcolumn = r#"{"name":"Plugin","type":"string","jsonPath":".spec.http.api"}"#,
    printcolumn = r#"{"name":"Method","type":"string","jsonPath":".spec.http.method"}"#,
    printcolumn = r#"{"name":"Reverts","type":"string","description":"a revert task: the task whose change it undoes","jsonPath":".spec.revert.task","priority":1}"#,
    printcolumn = r#"{"name":"Nodes","type":"string","description":"nodes done/total","jsonPath":".status.progress"}"#,
    printcolumn = r#"{"name":"Rollout","type":"string","description":"the wave and why the rollout waits, for a rollout with waves or one paused","jsonPath":".status.rollout.summary"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#,
    printcolumn = r#"{"name":"Message","type":"string","description":"the operator's summary, or why the task failed","jsonPath":".status.msg","priority":1}"#
)]
#[x_kube(validation = Rule::new("has(self.http) != has(self.revert)").message(
    "exactly one of spec.http (a plugin call) or spec.revert (undo another task's change) must be set"
))]
#[x_kube(validation = Rule::new(
    "has(self.revert) || ((has(self.workers) && size(self.workers) > 0) != has(self.targetType))"
).message("exactly one of spec.workers (node names) or spec.targetType (Master, Node, All) must be set"))]
#[x_kube(validation = Rule::new(
    "!has(self.revert) || (!(has(self.workers) && size(self.workers) > 0) && !has(self.targetType))"
).message("spec.revert names its nodes in spec.revert.nodes; spec.workers and spec.targetType cannot be set with it"))]
#[x_kube(validation = Rule::new(
    "!has(self.nodeSelector) || has(self.targetType)"
).message("spec.nodeSelector filters spec.targetType and cannot be combined with spec.workers"))]
#[serde(rename_all = "camelCase")]
pub struct HostTaskSpec {
    /// The nodes to run on (`workers`, or `targetType` with `nodeSelector`).
    #[serde(flatten)]
    pub targets: NodeTargets,
    /// The plugin operation to run. Unset for a revert task (`revert`), which calls no
    /// plugin.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http: Option<HttpSpec>,
    /// Report what would change and change nothing; /etc is mounted read-only.
    #[serde(default)]
    pub dry_run: bool,
    /// Deadline of one node's plugin call, in seconds.
    #[serde(default = "default_timeout")]
    #[schemars(range(min = 1, max = 3600))]
    pub timeout_seconds: i32,
    /// Parallelism and failure budget.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollout: Option<RolloutSpec>,
    /// The HostTask itself is deleted this many seconds after it finished (as Kubernetes
    /// does for a Job). Unset keeps it until someone deletes it. Worker Pods do not
    /// depend on it: they belong to the operator's pool and go when idle.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub ttl_seconds_after_finished: Option<i32>,
    /// Registry credentials for the plugin (its `registry-auth` import): a Secret in the
    /// task's namespace. Only plugins whose HostPlugin declares `registryAuth` may get
    /// them; the credentials go to the worker inside the call, never into the status.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub registry_auth: Option<RegistryAuth>,
    /// Raised by one to run the task again, unchanged, as a new generation (what
    /// `kubectl hostplug rerun` does): the API server raises `metadata.generation` only
    /// when the spec changes, and the operator runs every new generation on its nodes.
    /// It means nothing else; 0 (unset) for a task never re-run.
    #[serde(default, skip_serializing_if = "is_zero")]
    #[schemars(range(min = 0))]
    pub rerun: i64,
    /// Follow-up calls (handlers): on each node, after `http`'s call and only when it
    /// reported a change (in a dry run: would have, and they run as dry runs too), in
    /// order and under the same node lock, e.g. restart the service that reads the
    /// edited file. Each has its own result in the node's `onChange`; the first that
    /// fails fails the node and the rest do not run. Each gets only its own plugin's
    /// access.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = crate::protocol::MAX_FOLLOW_UPS))]
    pub on_change: Vec<PluginCall>,
    /// What the task may do to each node around its call: cordon and drain it before,
    /// reboot it after (`crate::disruption`). Unset: nothing disruptive.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disruption: Option<crate::disruption::DisruptionSpec>,
    /// Undo another task's change instead of calling a plugin: restore exactly what that
    /// task's current run changed under /etc on its nodes, from the records the nodes
    /// keep, through the same rollout as any task (`rollout` waves, gate, pause,
    /// `disruption`). Set instead of `http`, `workers` and `targetType`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revert: Option<RevertSpec>,
}

impl HostTaskSpec {
    /// The worker port of the task's calls: `http.port`, or the default one for a revert
    /// task.
    pub fn port(&self) -> i32 {
        self.http.as_ref().map_or(DEFAULT_WORKER_PORT, |h| h.port)
    }
}

/// What a revert task undoes (`spec.revert`).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RevertSpec {
    /// The HostTask, in this task's namespace, whose current run's change to undo. The
    /// run is pinned when the revert starts (`status.revertedRun`).
    #[schemars(length(min = 1, max = 253))]
    pub task: String,
    /// Only these nodes, each one the task ran on. Unset: every node the task changed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 5000))]
    pub nodes: Vec<String>,
    /// Restore files that changed since the task ran, too (their later edits are lost).
    /// Unset: such a node is not reverted and fails, naming the files with a diff.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub force: bool,
}

/// The run a revert task undoes, pinned when it started (`status.revertedRun`): the
/// identity the nodes keep that run's records under.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema, Default)]
#[serde(rename_all = "camelCase")]
pub struct RevertedRun {
    /// The reverted task's name (in this task's namespace).
    pub name: String,
    /// Its `metadata.uid`: a task recreated under the same name is another task.
    pub uid: String,
    /// The generation of its run (`status.runGeneration`).
    pub generation: i64,
}

fn is_zero(n: &i64) -> bool {
    *n == 0
}

/// Where a task's registry credentials are (`spec.registryAuth`).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RegistryAuth {
    /// Name of a Secret of type `kubernetes.io/dockerconfigjson` (key `.dockerconfigjson`,
    /// the imagePullSecrets format: `kubectl create secret docker-registry`) in the task's
    /// namespace. The operator reads it when it dispatches the task; a missing or
    /// malformed Secret fails the task.
    #[schemars(length(min = 1, max = 253))]
    pub secret_name: String,
}

/// Lifecycle of a task.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema, Default)]
pub enum TaskState {
    /// Accepted, nothing started yet.
    #[default]
    Pending,
    /// At least one node started and not every node ended.
    Running,
    /// Every node succeeded.
    Succeeded,
    /// Validation failed, or a node failed.
    Failed,
}

impl TaskState {
    /// Whether the task has ended (for its current generation).
    pub fn is_finished(self) -> bool {
        matches!(self, Self::Succeeded | Self::Failed)
    }
}

/// Lifecycle of one node of a task.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema, Default)]
pub enum NodePhase {
    /// Not started yet.
    #[default]
    Pending,
    /// Worker Pod created, waiting for it to become Ready.
    Starting,
    /// The plugin call was sent to the worker.
    Running,
    /// The plugin call returned an outcome.
    Succeeded,
    /// The node failed; `message` says why.
    Failed,
    /// Never started, because the rollout stopped (too many failures).
    Skipped,
}

impl NodePhase {
    /// Whether this node is done for the current generation.
    pub fn is_finished(self) -> bool {
        matches!(self, Self::Succeeded | Self::Failed | Self::Skipped)
    }
    /// Whether this node counts against `rollout.maxParallel`.
    pub fn is_in_flight(self) -> bool {
        matches!(self, Self::Starting | Self::Running)
    }
}

/// The result of a task on one node.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema, Default)]
#[serde(rename_all = "camelCase")]
pub struct NodeResult {
    /// Node name.
    pub node: String,
    /// The worker Pod's name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod: Option<String>,
    /// Where this node is.
    #[serde(default)]
    pub phase: NodePhase,
    /// Whether the node was changed (or, in a dry run, would have been).
    #[serde(default)]
    pub changed: bool,
    /// Unified diff of file changes, truncated when large.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub diff: Option<String>,
    /// The operation's JSON output (replaced by a note when large).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "any_json")]
    pub output: Option<serde_json::Value>,
    /// Why the node failed, or a note.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// The last lines the plugin logged on this node (its `log` import, stdout and
    /// stderr), oldest first, as `[level] source: text`; the worker sends at most
    /// `protocol::MAX_LOG_TAIL_LINES` of them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub logs: Vec<String>,
    /// The follow-up calls (`spec.onChange`) on this node, in order, once the main
    /// call returned: each `Succeeded`, `Failed` or `Skipped` (the main call changed
    /// nothing, or an earlier follow-up failed).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub on_change: Vec<FollowUpResult>,
    /// With `spec.disruption`: where the node is in its cycle (draining, rebooting,
    /// waiting for Ready) or why it waits to begin it (maintenance window, fleet budget).
    /// Absent when the node is not waiting for or in a cycle.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disruption: Option<crate::disruption::NodeDisruption>,
    /// The wave the node belongs to, from 1 (a rollout with waves): given once and
    /// kept, so a restart or a change of the node list never moves a node.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wave: Option<i32>,
    /// The gate's health checks (`spec.rollout.gate.checks`) on this node after its
    /// wave, in order: each `Pending`, `Running`, `Succeeded`, `Failed` (the message
    /// says what was found) or `Skipped`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub checks: Vec<FollowUpResult>,
    /// Whether what the call changed under /etc on this node can be reverted (the node
    /// keeps the record): `revertible: true`, or false with the reason. Absent for dry
    /// runs and calls without write access to /etc.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revert: Option<crate::protocol::Revertibility>,
    /// When the node started (worker Pod created).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "time_schema")]
    pub started_at: Option<Time>,
    /// When the node ended.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "time_schema")]
    pub finished_at: Option<Time>,
}

/// The result of one follow-up call (`onChange`) on a node.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema, Default)]
#[serde(rename_all = "camelCase")]
pub struct FollowUpResult {
    /// The plugin (HostPlugin) called.
    pub api: String,
    /// Its method.
    pub method: String,
    /// `Succeeded`, `Failed`, or `Skipped` (not run).
    #[serde(default)]
    pub phase: NodePhase,
    /// Whether it changed the node (in a dry run: would have).
    #[serde(default)]
    pub changed: bool,
    /// Its JSON output (replaced by a note when large).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "any_json")]
    pub output: Option<serde_json::Value>,
    /// Why it failed or was skipped.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// The last lines it logged.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub logs: Vec<String>,
}

/// The plugin a task resolved to.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema, Default)]
#[serde(rename_all = "camelCase")]
pub struct PluginRef {
    /// HostPlugin name.
    pub name: String,
    /// `sha256:<hex>` of the module that ran.
    pub digest: String,
}

/// Observed state of a HostTask. Written only by the operator, by server-side apply.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema, Default)]
#[serde(rename_all = "camelCase")]
pub struct HostTaskStatus {
    /// The generation this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Summary state.
    #[serde(default)]
    pub state: TaskState,
    /// Summary for people, e.g. "2/2 nodes succeeded, 1 changed".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub msg: Option<String>,
    /// The plugin that runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub plugin: Option<PluginRef>,
    /// Names of the worker Pods.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub pods: Vec<String>,
    /// Per-node results.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub nodes: Vec<NodeResult>,
    /// Number of nodes that ended (succeeded, failed or skipped).
    #[serde(default)]
    pub nodes_done: i32,
    /// Number of target nodes.
    #[serde(default)]
    pub nodes_total: i32,
    /// `nodesDone/nodesTotal`, for `kubectl get`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub progress: Option<String>,
    /// When the current generation ended; the TTL counts from here.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "time_schema")]
    pub finished_at: Option<Time>,
    /// Standard conditions (`Ready`: the task ended successfully).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(schema_with = "conditions_schema")]
    pub conditions: Vec<Condition>,
    /// The generation whose run `nodes` describe: `observedGeneration`, unless only
    /// the rollout's controls (`spec.rollout.paused`, `approvedWave`, `cancel`) changed
    /// since, which go on with the run instead of starting a new one. Invocation ids
    /// carry it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run_generation: Option<i64>,
    /// The sha256 of the spec the run started from, without the rollout's controls
    /// (`rollout::run_fingerprint`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run_fingerprint: Option<String>,
    /// The staged rollout: wave, gate, pause (a rollout with waves, or one paused or
    /// cancelled).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollout: Option<RolloutStatus>,
    /// A revert task: the run it undoes, pinned when it started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reverted_run: Option<RevertedRun>,
}

impl HostTaskStatus {
    /// The generation whose run the nodes describe (see `runGeneration`).
    pub fn run_generation(&self) -> Option<i64> {
        self.run_generation.or(self.observed_generation)
    }
}

/// A module held in a ConfigMap.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ConfigMapSource {
    /// Namespace of the ConfigMap.
    #[schemars(length(min = 1))]
    pub namespace: String,
    /// Name of the ConfigMap.
    #[schemars(length(min = 1))]
    pub name: String,
    /// Key in `binaryData` (or `data`) holding the module.
    #[serde(default = "default_key")]
    pub key: String,
}

fn default_key() -> String {
    "plugin.wasm".to_owned()
}

/// A module stored in an OCI registry as a Wasm artifact (the layout `wkg`, `wasm-tools`
/// and `hostplug plugin push` write: config `application/vnd.wasm.config.v0+json`, one
/// `application/wasm` layer).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct OciSource {
    /// `registry[:port]/repository[:tag][@sha256:<hex>]`. The registry is always named
    /// (there is no default registry). Pin it by manifest digest (`…@sha256:<hex>`, what
    /// `hostplug plugin push` prints), or name a tag and set `spec.sha256` to the
    /// module's digest.
    #[schemars(length(min = 1, max = 512))]
    pub image: String,
    /// Name of a Secret in the operator's namespace holding the registry credentials:
    /// type `kubernetes.io/dockerconfigjson` (`kubectl create secret docker-registry`; only
    /// the entry of the image's registry is used), or keys `registry`, `username` and
    /// `password` (used only when `registry` names the image's registry).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pull_secret: Option<String>,
    /// Talk plain HTTP to the registry (a registry on a trusted network without TLS).
    /// Digests are still checked.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub insecure: bool,
}

/// Where a plugin's module comes from; exactly one of the fields.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, KubeSchema)]
#[x_kube(validation = Rule::new(
    "(has(self.builtin) ? 1 : 0) + (has(self.configMap) ? 1 : 0) + (has(self.oci) ? 1 : 0) == 1"
).message("exactly one of spec.source.builtin, spec.source.configMap or spec.source.oci must be set"))]
#[serde(rename_all = "camelCase")]
pub struct PluginSource {
    /// A plugin shipped inside the operator image, by name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub builtin: Option<String>,
    /// A module stored in a ConfigMap.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config_map: Option<ConfigMapSource>,
    /// A module stored in an OCI registry.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub oci: Option<OciSource>,
}

/// Which signatures a module needs before it is used.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SignaturePolicy {
    /// PEM public keys (ECDSA P-256, `PUBLIC KEY`: `hostplug plugin keygen` or
    /// `cosign generate-key-pair` output). The artifact needs a cosign-format signature
    /// by at least one of them in its registry; otherwise the plugin is not ready.
    #[schemars(length(min = 1, max = 16))]
    pub public_keys: Vec<String>,
}

/// One available plugin.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "hostplug.dev",
    version = "v1alpha1",
    kind = "HostPlugin",
    plural = "hostplugins",
    status = "HostPluginStatus",
    derive = "PartialEq",
    shortname = "hp",
    category = "hostplug",
    doc = "One available plugin: a WebAssembly component, its source and its capabilities.",
    printcolumn = r#"{"name":"Ready","type":"boolean","jsonPath":".status.ready"}"#,
    printcolumn = r#"{"name":"Version","type":"string","jsonPath":".status.info.version"}"#,
    printcolumn = r#"{"name":"Etc","type":"string","jsonPath":".spec.capabilities.etc"}"#,
    printcolumn = r#"{"name":"Docker","type":"boolean","jsonPath":".spec.capabilities.docker"}"#,
    printcolumn = r#"{"name":"Containerd","type":"boolean","jsonPath":".spec.capabilities.containerd"}"#,
    printcolumn = r#"{"name":"Digest","type":"string","jsonPath":".status.digest","priority":1}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#,
    printcolumn = r#"{"name":"Message","type":"string","description":"why the plugin is not ready, or a note","jsonPath":".status.message","priority":1}"#
)]
#[x_kube(validation = Rule::new(
    "has(self.source.builtin) || has(self.sha256) || (has(self.source.oci) && self.source.oci.image.contains('@sha256:'))"
).message("spec.sha256 is required for a plugin that is not built in (or an OCI image pinned by @sha256:)"))]
#[x_kube(validation = Rule::new("!has(self.signature) || has(self.source.oci)")
    .message("spec.signature needs spec.source.oci: signatures are stored in the registry"))]
#[serde(rename_all = "camelCase")]
pub struct HostPluginSpec {
    /// Where the module comes from.
    pub source: PluginSource,
    /// Hex sha256 of the module (64 lowercase hex digits, an optional `sha256:` prefix is
    /// accepted); a module with another digest is refused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^(sha256:)?[0-9a-f]{64}$"))]
    pub sha256: Option<String>,
    /// What the plugin may touch on the node.
    #[serde(default)]
    pub capabilities: Capabilities,
    /// Signatures the module needs (OCI sources only); unset: none beyond the operator's
    /// cluster-wide keys, if it has any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signature: Option<SignaturePolicy>,
}

/// Observed state of a HostPlugin. Written only by the operator.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema, Default)]
#[serde(rename_all = "camelCase")]
pub struct HostPluginStatus {
    /// `sha256:<hex>` of the loaded module.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub digest: Option<String>,
    /// Module size in bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size: Option<i64>,
    /// Whether the module loaded and described itself; tasks can use it.
    #[serde(default)]
    pub ready: bool,
    /// Why the plugin is not ready, or a note.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// What `describe` returned.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub info: Option<PluginInfo>,
    /// The generation this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
}

/// Any JSON value, kept as it is by the API server.
pub(crate) fn any_json(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({
        "x-kubernetes-preserve-unknown-fields": true
    })
}

/// A `metav1.Time`: an RFC 3339 timestamp.
pub(crate) fn time_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({"type": "string", "format": "date-time"})
}

/// A standard `metav1.LabelSelector`.
pub(crate) fn label_selector_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({
        "type": "object",
        "description": "A standard label selector: matchLabels and matchExpressions, ANDed.",
        "properties": {
            "matchLabels": {"type": "object", "additionalProperties": {"type": "string"}},
            "matchExpressions": {
                "type": "array",
                "items": {
                    "type": "object",
                    "required": ["key", "operator"],
                    "properties": {
                        "key": {"type": "string"},
                        "operator": {"type": "string", "enum": ["In", "NotIn", "Exists", "DoesNotExist"]},
                        "values": {"type": "array", "items": {"type": "string"}}
                    }
                }
            }
        }
    })
}

/// A list of standard `metav1.Condition`s.
pub(crate) fn conditions_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({
        "type": "array",
        "items": {
            "type": "object",
            "required": ["type", "status", "lastTransitionTime", "reason", "message"],
            "properties": {
                "type": {"type": "string"},
                "status": {"type": "string", "enum": ["True", "False", "Unknown"]},
                "observedGeneration": {"type": "integer", "format": "int64"},
                "lastTransitionTime": {"type": "string", "format": "date-time"},
                "reason": {"type": "string"},
                "message": {"type": "string"}
            }
        }
    })
}

/// Annotations a HostTask or a HostState may carry.
pub mod annotations {
    /// `"true"`: the task's results are sensitive (e.g. a read of a file holding
    /// credentials). The operator never stores them: each node's output, diff and log
    /// tail are replaced in the status by their size and sha256 (equal hashes on two
    /// nodes still show equal content). Errors and the `changed` flag stay. On a
    /// HostState, each node's drift diff is kept the same way.
    pub const SENSITIVE_OUTPUT: &str = "hostplug.dev/sensitive-output";
}

/// Labels put on every object the operator creates for a task.
pub mod labels {
    /// `app.kubernetes.io/managed-by` value.
    pub const MANAGED_BY: &str = "hostplug-operator";
    /// Name of the owning HostTask.
    pub const TASK: &str = "hostplug.dev/task";
    /// Target node of a worker Pod, Service or Secret.
    pub const NODE: &str = "hostplug.dev/node";
    /// The task generation a worker Pod was made for.
    pub const GENERATION: &str = "hostplug.dev/generation";
    /// Marks worker Pods (the NetworkPolicy selects on it).
    pub const COMPONENT: &str = "app.kubernetes.io/component";
    /// Value of [`COMPONENT`] on worker Pods.
    pub const COMPONENT_WORKER: &str = "worker";
    /// The access profile of a pooled worker (`etc-none`, `etc-read`, `etc-write`, each
    /// with `-docker` when the docker socket is mounted).
    pub const PROFILE: &str = "hostplug.dev/profile";
    /// A hash of the Pod the operator made for a worker (everything but its name): an
    /// operator that would make it differently (an upgrade, other worker settings)
    /// replaces the worker once it is idle.
    pub const TEMPLATE: &str = "hostplug.dev/template";
}

/// The CRD YAML of the resources (HostTask, HostPlugin, HostTaskPolicy) as `deploy/crds/` holds it, one document each.
pub fn crd_yaml() -> Result<BTreeMap<&'static str, String>, serde_yaml::Error> {
    let mut out = BTreeMap::new();
    out.insert(
        "hosttasks.hostplug.dev.yaml",
        serde_yaml::to_string(&HostTask::crd())?,
    );
    out.insert(
        "hostplugins.hostplug.dev.yaml",
        serde_yaml::to_string(&HostPlugin::crd())?,
    );
    out.insert(
        "hosttaskpolicies.hostplug.dev.yaml",
        serde_yaml::to_string(&crate::policy::HostTaskPolicy::crd())?,
    );
    out.insert(
        "hoststates.hostplug.dev.yaml",
        serde_yaml::to_string(&crate::state::HostState::crd())?,
    );
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The checked-in CRDs — `deploy/crds/` and the Helm chart's `crds/` — are what the
    /// types generate; regenerate both with
    /// `cargo run -p hostplug-api --bin crdgen -- deploy/crds deploy/helm/hostplug/crds`.
    #[test]
    fn checked_in_crds_match_the_types() -> Result<(), Box<dyn std::error::Error>> {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        for dir in ["deploy/crds", "deploy/helm/hostplug/crds"] {
            for (file, yaml) in crd_yaml()? {
                let on_disk = std::fs::read_to_string(root.join(dir).join(file))?;
                assert!(
                    on_disk == yaml,
                    "{dir}/{file} drifted from the Rust types; run `cargo run -p \
                     hostplug-api --bin crdgen -- deploy/crds deploy/helm/hostplug/crds`"
                );
            }
        }
        Ok(())
    }

    #[test]
    fn seed_design_task_parses_with_defaults() -> Result<(), serde_yaml::Error> {
        let task: HostTask = serde_yaml::from_str(
            r#"
apiVersion: hostplug.dev/v1alpha1
kind: HostTask
metadata: {name: set-ntp, namespace: hostplug-system}
spec:
  workers: [node1, node2]
  http:
    api: etc-file
    method: ensure-line
    parameter: {path: /etc/chrony.conf, line: "server ntp.example.com iburst"}
"#,
        )?;
        assert_eq!(task.spec.port(), DEFAULT_WORKER_PORT);
        assert_eq!(task.spec.timeout_seconds, DEFAULT_TIMEOUT_SECONDS);
        assert!(!task.spec.dry_run);
        assert_eq!(task.spec.targets.workers, vec!["node1", "node2"]);
        Ok(())
    }

    /// The OpenAPI schema of `spec.<path>` in the HostTask CRD.
    fn task_field_schema(path: &[&str]) -> Result<serde_json::Value, serde_json::Error> {
        let crd = serde_json::to_value(HostTask::crd())?;
        let mut at = &crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"];
        for p in path {
            at = &at["properties"][*p];
        }
        Ok(at.clone())
    }

    /// `kubectl get -o wide` of every kind shows its message (priority 1: not in the
    /// default table, which stays narrow): a task's or state's summary, why a plugin is
    /// not ready, and for a policy — which has no status — the administrator's
    /// description.
    #[test]
    fn every_kind_shows_its_message_wide() -> Result<(), serde_json::Error> {
        use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
        let kinds: [(CustomResourceDefinition, &str); 4] = [
            (HostTask::crd(), ".status.msg"),
            (HostPlugin::crd(), ".status.message"),
            (crate::state::HostState::crd(), ".status.message"),
            (
                crate::policy::HostTaskPolicy::crd(),
                ".metadata.annotations.kubernetes\\.io/description",
            ),
        ];
        for (crd, path) in kinds {
            let v = serde_json::to_value(&crd)?;
            let columns = v["spec"]["versions"][0]["additionalPrinterColumns"]
                .as_array()
                .cloned()
                .unwrap_or_default();
            let wide: Vec<_> = columns.iter().filter(|c| c["jsonPath"] == path).collect();
            assert_eq!(wide.len(), 1, "{}: {columns:?}", crd.spec.names.kind);
            assert_eq!(wide[0]["priority"], 1, "{}", crd.spec.names.kind);
            assert_eq!(wide[0]["type"], "string", "{}", crd.spec.names.kind);
        }
        Ok(())
    }

    #[test]
    fn a_rerun_counter_is_absent_until_used() -> Result<(), serde_json::Error> {
        let mut task = HostTask::new(
            "t",
            HostTaskSpec {
                disruption: None,
                targets: NodeTargets::role(TargetType::All),
                http: Some(HttpSpec::new(PluginCall::new("etc-file", "read", None))),
                revert: None,
                dry_run: false,
                timeout_seconds: DEFAULT_TIMEOUT_SECONDS,
                rollout: None,
                ttl_seconds_after_finished: None,
                registry_auth: None,
                rerun: 0,
                on_change: Vec::new(),
            },
        );
        let spec = serde_json::to_value(&task.spec)?;
        assert!(spec.get("rerun").is_none(), "{spec}");
        task.spec.rerun = 3;
        assert_eq!(serde_json::to_value(&task.spec)?["rerun"], 3);
        let s = task_field_schema(&["rerun"])?;
        assert_eq!(s["minimum"].as_f64(), Some(0.0), "{s}");
        Ok(())
    }

    /// A revert task has no `http`; its YAML reads as a user writes it, and the schema
    /// says exactly one of `http` and `revert`.
    #[test]
    fn a_revert_task_has_no_call() -> Result<(), Box<dyn std::error::Error>> {
        let task: HostTask = serde_yaml::from_str(
            r#"
apiVersion: hostplug.dev/v1alpha1
kind: HostTask
metadata: {name: undo-ntp, namespace: hostplug-system}
spec:
  revert: {task: set-ntp, nodes: [node2]}
"#,
        )?;
        assert!(task.spec.http.is_none());
        let rv = task.spec.revert.as_ref().ok_or("no revert")?;
        assert_eq!(
            (rv.task.as_str(), rv.nodes.as_slice(), rv.force),
            ("set-ntp", &["node2".to_owned()][..], false)
        );
        let spec = serde_json::to_value(&task.spec)?;
        assert!(spec.get("http").is_none(), "{spec}");
        assert!(spec["revert"].get("force").is_none(), "{spec}");
        let crd = serde_json::to_string(&HostTask::crd())?;
        assert!(
            crd.contains("exactly one of spec.http (a plugin call) or spec.revert"),
            "{crd}"
        );
        Ok(())
    }

    #[test]
    fn max_parallel_has_a_maximum() -> Result<(), serde_json::Error> {
        let s = task_field_schema(&["rollout", "maxParallel"])?;
        assert_eq!(s["minimum"].as_f64(), Some(1.0), "{s}");
        assert_eq!(
            s["maximum"].as_f64(),
            Some(f64::from(MAX_MAX_PARALLEL)),
            "{s}"
        );
        Ok(())
    }

    #[test]
    fn worker_port_is_unprivileged() -> Result<(), serde_json::Error> {
        let s = task_field_schema(&["http", "port"])?;
        assert_eq!(
            s["minimum"].as_f64(),
            Some(f64::from(MIN_WORKER_PORT)),
            "{s}"
        );
        assert_eq!(s["maximum"].as_f64(), Some(65535.0), "{s}");
        let doc = s["description"].as_str().unwrap_or_default();
        assert!(doc.contains("1024"), "{doc}");
        const { assert!(DEFAULT_WORKER_PORT >= MIN_WORKER_PORT) };
        Ok(())
    }

    #[test]
    fn schema_has_enums_minimums_and_one_of_rules() -> Result<(), serde_json::Error> {
        let crd = serde_json::to_string(&HostTask::crd())?;
        assert!(crd.contains(r#""enum":["Master","Node","All"]"#), "{crd}");
        assert!(crd.contains("exactly one of spec.workers"));
        assert!(crd.contains("x-kubernetes-preserve-unknown-fields"));
        let hp = serde_json::to_string(&HostPlugin::crd())?;
        assert!(hp.contains(
            "exactly one of spec.source.builtin, spec.source.configMap or spec.source.oci"
        ));
        assert!(hp.contains("spec.signature needs spec.source.oci"));
        assert!(hp.contains(r#""enum":["none","read","write"]"#), "{hp}");
        Ok(())
    }
}

//! The console's view of the cluster, behind the [`Cluster`] trait.
//!
//! [`KubeCluster`] is the real thing: the Kubernetes API through kube-rs, with exactly the
//! verbs of the console's ClusterRole (get/list/watch HostTasks and HostPlugins,
//! create/delete HostTasks, list nodes). [`InMemoryCluster`] is a stand-in for unit tests
//! of rendering and authorisation only; end-to-end tests use the real implementation
//! against a real control plane.
//!
//! Handlers see plain view types ([`PluginView`], [`TaskView`], …) so templates and the
//! JSON API do not depend on how the CRD types nest their options; a task view keeps the
//! whole [`HostTaskSpec`] too, so that a task can be run again exactly as it was.

use std::{collections::BTreeMap, sync::Mutex};

use async_trait::async_trait;
use hostplug_api::crd::{HostPlugin, HostTask, HostTaskSpec, NodePhase, TargetType};
use hostplug_api::state::{HostState, StateMode};
use k8s_openapi::api::core::v1::Node;
use kube::{
    Api, Client, ResourceExt,
    api::{DeleteParams, ListParams, ObjectMeta, Patch, PatchParams, PostParams},
};
use serde::Serialize;

use crate::error::{AppError, AppResult};

/// Annotation recording which console user asked for a task.
pub const REQUESTED_BY_ANNOTATION: &str = "hostplug.dev/requested-by";
/// Label on tasks created through the console.
pub const CREATED_BY_LABEL: &str = "app.kubernetes.io/created-by";

/// One method of a plugin.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct MethodView {
    /// Operation name.
    pub name: String,
    /// What it does.
    pub description: String,
    /// Whether it can change the node.
    pub mutates: bool,
    /// JSON Schema of its parameters (`{}` when the plugin gave none).
    pub params_schema: serde_json::Value,
}

/// One plugin as the console shows it.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PluginView {
    /// HostPlugin name.
    pub name: String,
    /// Version from `describe`.
    pub version: String,
    /// Description from `describe`.
    pub description: String,
    /// `sha256:…` of the loaded module.
    pub digest: String,
    /// Module size in bytes.
    pub size: Option<i64>,
    /// Whether tasks can use it.
    pub ready: bool,
    /// Status message.
    pub message: String,
    /// `builtin:<name>`, `configmap:<ns>/<name>` or `oci:<image reference>`.
    pub source: String,
    /// `none`, `read` or `write`.
    pub etc: String,
    /// Whether the docker socket is granted.
    pub docker: bool,
    /// Operations.
    pub methods: Vec<MethodView>,
}

impl PluginView {
    /// The method called `name`.
    pub fn method(&self, name: &str) -> Option<&MethodView> {
        self.methods.iter().find(|m| m.name == name)
    }
}

/// One node's result within a task.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct NodeResultView {
    /// Node name.
    pub node: String,
    /// Worker Pod name.
    pub pod: String,
    /// Phase, e.g. `Succeeded`.
    pub phase: String,
    /// Whether something changed (or would have, in a dry run).
    pub changed: bool,
    /// Why it failed, or a note.
    pub message: String,
    /// Where the node is in a drain/reboot cycle, or why it waits for one
    /// (`status.nodes[].disruption.phase`, e.g. `Draining`, `WaitingForWindow`); empty
    /// when the node is in no cycle.
    pub cycle: String,
    /// Unified diff, if the plugin produced one.
    pub diff: Option<String>,
    /// The plugin's JSON output.
    pub output: Option<serde_json::Value>,
}

/// One task as the console shows it.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct TaskView {
    /// Task name.
    pub name: String,
    /// Namespace.
    pub namespace: String,
    /// Creation time, Unix seconds.
    pub created: Option<i64>,
    /// Who asked for it through the console, if it was created there.
    pub requested_by: Option<String>,
    /// Plugin (`spec.http.api`).
    pub plugin: String,
    /// Method.
    pub method: String,
    /// Parameters.
    pub params: serde_json::Value,
    /// Dry run?
    pub dry_run: bool,
    /// Explicit node names.
    pub workers: Vec<String>,
    /// Target by role.
    pub target_type: Option<String>,
    /// `Pending`, `Running`, `Succeeded` or `Failed`.
    pub state: String,
    /// Summary message.
    pub msg: String,
    /// Nodes ended.
    pub nodes_done: i64,
    /// Nodes targeted.
    pub nodes_total: i64,
    /// Per-node results.
    pub nodes: Vec<NodeResultView>,
    /// The spec's generation (1 when created; each edit adds one).
    pub generation: i64,
    /// The generation the status describes (behind `generation` until the operator has
    /// seen an edit).
    pub observed_generation: Option<i64>,
    /// Digest of the module that ran.
    pub digest: Option<String>,
    /// The whole spec, as stored.
    pub spec: HostTaskSpec,
    /// Whether the parameters and the node outputs and diffs were withheld from this
    /// caller (their role may not see file contents).
    pub results_hidden: bool,
    /// Where a staged (or paused) rollout is: wave, phase, why it waits.
    pub rollout: Option<hostplug_api::crd::RolloutStatus>,
}

impl TaskView {
    /// Withholds what may hold file contents or secrets: what the nodes returned
    /// (outputs and diffs) and the parameters (a line to write, a block, a path's
    /// content), in `params` and in the spec. Phases, `changed` and messages stay.
    pub fn hide_results(&mut self) {
        for node in &mut self.nodes {
            node.diff = None;
            node.output = None;
        }
        self.params = serde_json::Value::Null;
        if let Some(http) = self.spec.http.as_mut() {
            http.call.parameter = None;
        }
        self.results_hidden = true;
    }
}

/// One cluster node.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct NodeView {
    /// Node name.
    pub name: String,
    /// Whether it is a control-plane node.
    pub control_plane: bool,
    /// Whether its Ready condition is True.
    pub ready: bool,
    /// Its labels, for choosing a `nodeSelector`.
    pub labels: BTreeMap<String, String>,
}

/// The one request to create a task, from the form, the JSON API, "apply" after a dry
/// run and "run again": a name and the whole spec.
#[derive(Debug, Clone, PartialEq)]
pub struct TaskRequest {
    /// Task name (DNS-1123 label), or empty to generate one.
    pub name: String,
    /// Everything the task does, exactly as it will be stored.
    pub spec: HostTaskSpec,
}

impl TaskRequest {
    /// The same spec again under a generated name, with `dry_run` as given: what "apply"
    /// (after a dry run) and "run again" create. Nothing else changes.
    pub fn rerun(spec: &HostTaskSpec, dry_run: bool) -> Self {
        let mut spec = spec.clone();
        spec.dry_run = dry_run;
        Self {
            name: String::new(),
            spec,
        }
    }
}

/// What the console needs from Kubernetes.
#[async_trait]
pub trait Cluster: Send + Sync + std::fmt::Debug {
    /// All HostPlugins.
    async fn list_plugins(&self) -> AppResult<Vec<PluginView>>;
    /// HostTasks in the console's namespace, newest first.
    async fn list_tasks(&self) -> AppResult<Vec<TaskView>>;
    /// One HostTask.
    async fn get_task(&self, name: &str) -> AppResult<Option<TaskView>>;
    /// Replaces the spec of the HostTask `name` (a new generation: the operator runs it
    /// again), recording who asked.
    async fn update_task(
        &self,
        name: &str,
        spec: &HostTaskSpec,
        requested_by: &str,
    ) -> AppResult<TaskView>;
    /// Creates a HostTask named `name` (already checked) from `spec`, recording who asked.
    async fn create_task(
        &self,
        name: &str,
        spec: &HostTaskSpec,
        requested_by: &str,
    ) -> AppResult<TaskView>;
    /// Deletes a HostTask; `false` when it did not exist.
    async fn delete_task(&self, name: &str) -> AppResult<bool>;
    /// All nodes.
    async fn list_nodes(&self) -> AppResult<Vec<NodeView>>;
    /// Waits until some HostTask changes or `timeout` passes (used to refresh lists
    /// promptly without polling the API server from every browser).
    async fn wait_for_task_change(&self, timeout: std::time::Duration) -> AppResult<()>;
    /// All HostStates, by name.
    async fn list_states(&self) -> AppResult<Vec<HostState>>;
    /// Sets a HostState's `spec.mode` (a new generation: the operator checks at once);
    /// `false` when there is no such state.
    async fn set_state_mode(&self, name: &str, mode: StateMode) -> AppResult<bool>;
}

/// Builds the HostTask object: the spec as given, the console's label and who asked.
pub fn task_object(
    name: &str,
    spec: &HostTaskSpec,
    requested_by: &str,
    namespace: &str,
) -> HostTask {
    let mut object = HostTask::new(name, spec.clone());
    object.metadata = ObjectMeta {
        name: Some(name.to_owned()),
        namespace: Some(namespace.to_owned()),
        labels: Some([(CREATED_BY_LABEL.to_owned(), "hostplug-web".to_owned())].into()),
        annotations: Some([(REQUESTED_BY_ANNOTATION.to_owned(), requested_by.to_owned())].into()),
        ..ObjectMeta::default()
    };
    object
}

fn phase_name(phase: NodePhase) -> &'static str {
    match phase {
        NodePhase::Pending => "Pending",
        NodePhase::Starting => "Starting",
        NodePhase::Running => "Running",
        NodePhase::Succeeded => "Succeeded",
        NodePhase::Failed => "Failed",
        NodePhase::Skipped => "Skipped",
    }
}

fn target_name(target: TargetType) -> &'static str {
    match target {
        TargetType::Master => "Master",
        TargetType::Node => "Node",
        TargetType::All => "All",
    }
}

/// Parses `Master`, `Node` or `All`.
pub fn parse_target_type(s: &str) -> Option<TargetType> {
    match s {
        "Master" => Some(TargetType::Master),
        "Node" => Some(TargetType::Node),
        "All" => Some(TargetType::All),
        _ => None,
    }
}

/// Converts a HostTask into its view.
pub fn task_view(task: &HostTask) -> TaskView {
    let status = task.status.clone().unwrap_or_default();
    let state = serde_json::to_value(status.state)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_else(|| "Pending".to_owned());
    let nodes: Vec<NodeResultView> = status
        .nodes
        .iter()
        .map(|n| NodeResultView {
            node: n.node.clone(),
            pod: n.pod.clone().unwrap_or_default(),
            phase: phase_name(n.phase).to_owned(),
            changed: n.changed,
            message: n.message.clone().unwrap_or_default(),
            cycle: n
                .disruption
                .as_ref()
                .map(|d| d.phase.as_str().to_owned())
                .unwrap_or_default(),
            diff: n.diff.clone().filter(|d| !d.is_empty()),
            output: n.output.clone(),
        })
        .collect();
    let nodes_total = if status.nodes_total > 0 {
        i64::from(status.nodes_total)
    } else if !nodes.is_empty() {
        nodes.len() as i64
    } else {
        task.spec.targets.workers.len() as i64
    };
    let nodes_done = if status.nodes_done > 0 {
        i64::from(status.nodes_done)
    } else {
        status
            .nodes
            .iter()
            .filter(|n| n.phase.is_finished())
            .count() as i64
    };
    TaskView {
        name: task.name_any(),
        namespace: task.namespace().unwrap_or_default(),
        created: task
            .metadata
            .creation_timestamp
            .as_ref()
            .map(|t| t.0.as_second()),
        requested_by: task.annotations().get(REQUESTED_BY_ANNOTATION).cloned(),
        // A revert task calls no plugin: it shows as `revert` of its task.
        plugin: task
            .spec
            .http
            .as_ref()
            .map_or_else(|| "revert".to_owned(), |h| h.call.api.clone()),
        method: match (&task.spec.http, &task.spec.revert) {
            (Some(h), _) => h.call.method.clone(),
            (None, Some(rv)) => rv.task.clone(),
            (None, None) => String::new(),
        },
        params: task
            .spec
            .http
            .as_ref()
            .and_then(|h| h.call.parameter.clone())
            .unwrap_or(serde_json::Value::Null),
        dry_run: task.spec.dry_run,
        workers: task.spec.targets.workers.clone(),
        target_type: task
            .spec
            .targets
            .target_type
            .map(|t| target_name(t).to_owned()),
        state,
        msg: status.msg.unwrap_or_default(),
        nodes_done,
        nodes_total,
        nodes,
        digest: status.plugin.map(|p| p.digest),
        generation: task.metadata.generation.unwrap_or(1),
        observed_generation: status.observed_generation,
        spec: task.spec.clone(),
        results_hidden: false,
        rollout: status.rollout,
    }
}

/// Converts a HostPlugin into its view.
pub fn plugin_view(plugin: &HostPlugin) -> PluginView {
    let status = plugin.status.clone().unwrap_or_default();
    let info = status.info.unwrap_or_default();
    let source = if let Some(builtin) = &plugin.spec.source.builtin {
        format!("builtin:{builtin}")
    } else if let Some(cm) = &plugin.spec.source.config_map {
        format!("configmap:{}/{}", cm.namespace, cm.name)
    } else if let Some(oci) = &plugin.spec.source.oci {
        format!("oci:{}", oci.image)
    } else {
        "unknown".to_owned()
    };
    PluginView {
        name: plugin.name_any(),
        version: info.version,
        description: info.description,
        digest: status.digest.unwrap_or_default(),
        size: status.size,
        ready: status.ready,
        message: status.message.unwrap_or_default(),
        source,
        etc: plugin.spec.capabilities.etc.to_string(),
        docker: plugin.spec.capabilities.docker,
        methods: info
            .methods
            .into_iter()
            .map(|m| MethodView {
                name: m.name,
                description: m.description,
                mutates: m.mutates,
                params_schema: m
                    .params_schema
                    .unwrap_or_else(|| serde_json::json!({"type": "object"})),
            })
            .collect(),
    }
}

/// Converts a Node into its view.
pub fn node_view(node: &Node) -> NodeView {
    let labels = node.labels();
    NodeView {
        labels: labels.clone(),
        name: node.name_any(),
        // The operator's rule of what a control-plane node is.
        control_plane: hostplug_api::call::CONTROL_PLANE_LABELS
            .iter()
            .any(|l| labels.contains_key(*l)),
        ready: node
            .status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .is_some_and(|conds| {
                conds
                    .iter()
                    .any(|c| c.type_ == "Ready" && c.status == "True")
            }),
    }
}

/// The real cluster, through the Kubernetes API.
#[derive(Clone)]
pub struct KubeCluster {
    client: Client,
    namespace: String,
}

impl std::fmt::Debug for KubeCluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KubeCluster")
            .field("namespace", &self.namespace)
            .finish_non_exhaustive()
    }
}

impl KubeCluster {
    /// Uses `client`; tasks live in `namespace`.
    pub fn new(client: Client, namespace: impl Into<String>) -> Self {
        Self {
            client,
            namespace: namespace.into(),
        }
    }

    fn tasks(&self) -> Api<HostTask> {
        Api::namespaced(self.client.clone(), &self.namespace)
    }
}

fn map_kube_error(err: kube::Error) -> AppError {
    match &err {
        kube::Error::Api(status) if status.code == 404 => AppError::NotFound,
        kube::Error::Api(status) if status.code == 409 => {
            AppError::Conflict("a task with that name already exists".to_owned())
        }
        // Validation by the API server (CRD schema, CEL rules): its message names the
        // field and the rule, which is what the user needs.
        kube::Error::Api(status) if status.code == 422 || status.code == 400 => {
            AppError::BadRequest(format!("the cluster refused the task: {}", status.message))
        }
        _ => AppError::ClusterUnavailable(err.into()),
    }
}

#[async_trait]
impl Cluster for KubeCluster {
    async fn list_plugins(&self) -> AppResult<Vec<PluginView>> {
        let api: Api<HostPlugin> = Api::all(self.client.clone());
        let list = api
            .list(&ListParams::default())
            .await
            .map_err(map_kube_error)?;
        let mut plugins: Vec<PluginView> = list.items.iter().map(plugin_view).collect();
        plugins.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(plugins)
    }

    async fn list_tasks(&self) -> AppResult<Vec<TaskView>> {
        let list = self
            .tasks()
            .list(&ListParams::default())
            .await
            .map_err(map_kube_error)?;
        let mut tasks: Vec<TaskView> = list.items.iter().map(task_view).collect();
        tasks.sort_by(|a, b| b.created.cmp(&a.created).then(a.name.cmp(&b.name)));
        Ok(tasks)
    }

    async fn get_task(&self, name: &str) -> AppResult<Option<TaskView>> {
        let task = self.tasks().get_opt(name).await.map_err(map_kube_error)?;
        Ok(task.as_ref().map(task_view))
    }

    async fn create_task(
        &self,
        name: &str,
        spec: &HostTaskSpec,
        requested_by: &str,
    ) -> AppResult<TaskView> {
        let object = task_object(name, spec, requested_by, &self.namespace);
        let created = self
            .tasks()
            .create(&PostParams::default(), &object)
            .await
            .map_err(map_kube_error)?;
        Ok(task_view(&created))
    }

    async fn update_task(
        &self,
        name: &str,
        spec: &HostTaskSpec,
        requested_by: &str,
    ) -> AppResult<TaskView> {
        let api = self.tasks();
        // Read, change, replace: the resourceVersion makes a concurrent change a 409
        // instead of a lost update.
        let mut task = api.get(name).await.map_err(map_kube_error)?;
        task.spec = spec.clone();
        task.annotations_mut()
            .insert(REQUESTED_BY_ANNOTATION.to_owned(), requested_by.to_owned());
        task.status = None;
        let replaced = api
            .replace(name, &PostParams::default(), &task)
            .await
            .map_err(|err| match map_kube_error(err) {
                AppError::Conflict(_) => AppError::Conflict(
                    "the task changed meanwhile; reload it and edit again".to_owned(),
                ),
                other => other,
            })?;
        Ok(task_view(&replaced))
    }

    async fn delete_task(&self, name: &str) -> AppResult<bool> {
        match self.tasks().delete(name, &DeleteParams::background()).await {
            Ok(_) => Ok(true),
            Err(err) => match map_kube_error(err) {
                AppError::NotFound => Ok(false),
                other => Err(other),
            },
        }
    }

    async fn list_nodes(&self) -> AppResult<Vec<NodeView>> {
        let api: Api<Node> = Api::all(self.client.clone());
        let list = api
            .list(&ListParams::default())
            .await
            .map_err(map_kube_error)?;
        let mut nodes: Vec<NodeView> = list.items.iter().map(node_view).collect();
        nodes.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(nodes)
    }

    async fn list_states(&self) -> AppResult<Vec<HostState>> {
        let api: Api<HostState> = Api::all(self.client.clone());
        let mut states = api
            .list(&ListParams::default())
            .await
            .map_err(map_kube_error)?
            .items;
        states.sort_by_key(ResourceExt::name_any);
        Ok(states)
    }

    async fn set_state_mode(&self, name: &str, mode: StateMode) -> AppResult<bool> {
        let api: Api<HostState> = Api::all(self.client.clone());
        let patch = serde_json::json!({"spec": {"mode": mode}});
        match api
            .patch(name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
        {
            Ok(_) => Ok(true),
            Err(kube::Error::Api(e)) if e.code == 404 => Ok(false),
            Err(e) => Err(map_kube_error(e)),
        }
    }

    async fn wait_for_task_change(&self, timeout: std::time::Duration) -> AppResult<()> {
        use futures::StreamExt;
        use kube::api::{WatchEvent, WatchParams};
        let api = self.tasks();
        let list = api
            .list_metadata(&ListParams::default().limit(1))
            .await
            .map_err(map_kube_error)?;
        let version = list.metadata.resource_version.unwrap_or_default();
        let seconds = u32::try_from(timeout.as_secs().clamp(1, 290)).unwrap_or(30);
        let params = WatchParams::default().timeout(seconds);
        let stream = api.watch(&params, &version).await.map_err(map_kube_error)?;
        let mut stream = std::pin::pin!(stream);
        while let Some(event) = stream.next().await {
            match event.map_err(map_kube_error)? {
                WatchEvent::Bookmark(_) => continue,
                _ => return Ok(()),
            }
        }
        Ok(())
    }
}

/// A stand-in cluster held in memory, **for unit tests of rendering and authorisation
/// only**. It runs nothing: tasks stay `Pending` unless a test sets their status.
#[derive(Debug, Default)]
pub struct InMemoryCluster {
    /// Namespace tasks are created in.
    pub namespace: String,
    /// Plugins.
    pub plugins: Mutex<Vec<HostPlugin>>,
    /// Tasks.
    pub tasks: Mutex<Vec<HostTask>>,
    /// Nodes.
    pub nodes: Mutex<Vec<Node>>,
    /// HostStates.
    pub states: Mutex<Vec<HostState>>,
    /// How long a wait for a task change lasts at most (none: 50 ms); a test sets it to
    /// hold long polls open.
    pub change_wait: Mutex<Option<std::time::Duration>>,
    /// Waits for a task change in progress now.
    pub waiting: std::sync::atomic::AtomicUsize,
    /// The most waits for a task change seen in progress at once.
    pub most_waiting: std::sync::atomic::AtomicUsize,
}

impl InMemoryCluster {
    fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
        m.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[async_trait]
impl Cluster for InMemoryCluster {
    async fn list_plugins(&self) -> AppResult<Vec<PluginView>> {
        Ok(Self::lock(&self.plugins).iter().map(plugin_view).collect())
    }

    async fn list_tasks(&self) -> AppResult<Vec<TaskView>> {
        Ok(Self::lock(&self.tasks)
            .iter()
            .rev()
            .map(task_view)
            .collect())
    }

    async fn get_task(&self, name: &str) -> AppResult<Option<TaskView>> {
        Ok(Self::lock(&self.tasks)
            .iter()
            .find(|t| t.name_any() == name)
            .map(task_view))
    }

    async fn create_task(
        &self,
        name: &str,
        spec: &HostTaskSpec,
        requested_by: &str,
    ) -> AppResult<TaskView> {
        let mut tasks = Self::lock(&self.tasks);
        if tasks.iter().any(|t| t.name_any() == name) {
            return Err(AppError::Conflict(
                "a task with that name already exists".to_owned(),
            ));
        }
        let mut object = task_object(name, spec, requested_by, &self.namespace);
        object.metadata.generation = Some(1);
        object.metadata.creation_timestamp = Some(
            k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(jiff::Timestamp::now()),
        );
        let view = task_view(&object);
        tasks.push(object);
        Ok(view)
    }

    async fn update_task(
        &self,
        name: &str,
        spec: &HostTaskSpec,
        requested_by: &str,
    ) -> AppResult<TaskView> {
        let mut tasks = Self::lock(&self.tasks);
        let task = tasks
            .iter_mut()
            .find(|t| t.name_any() == name)
            .ok_or(AppError::NotFound)?;
        if task.spec != *spec {
            // As the API server does: a spec change is a new generation.
            task.metadata.generation = Some(task.metadata.generation.unwrap_or(1) + 1);
        }
        task.spec = spec.clone();
        task.annotations_mut()
            .insert(REQUESTED_BY_ANNOTATION.to_owned(), requested_by.to_owned());
        Ok(task_view(task))
    }

    async fn delete_task(&self, name: &str) -> AppResult<bool> {
        let mut tasks = Self::lock(&self.tasks);
        let before = tasks.len();
        tasks.retain(|t| t.name_any() != name);
        Ok(tasks.len() != before)
    }

    async fn list_nodes(&self) -> AppResult<Vec<NodeView>> {
        Ok(Self::lock(&self.nodes).iter().map(node_view).collect())
    }

    async fn list_states(&self) -> AppResult<Vec<HostState>> {
        let mut states = Self::lock(&self.states).clone();
        states.sort_by_key(ResourceExt::name_any);
        Ok(states)
    }

    async fn set_state_mode(&self, name: &str, mode: StateMode) -> AppResult<bool> {
        let mut states = Self::lock(&self.states);
        let Some(state) = states.iter_mut().find(|s| s.name_any() == name) else {
            return Ok(false);
        };
        state.spec.mode = mode;
        Ok(true)
    }

    async fn wait_for_task_change(&self, timeout: std::time::Duration) -> AppResult<()> {
        use std::sync::atomic::Ordering;
        let hold = Self::lock(&self.change_wait).unwrap_or(std::time::Duration::from_millis(50));
        let now = self.waiting.fetch_add(1, Ordering::SeqCst) + 1;
        self.most_waiting.fetch_max(now, Ordering::SeqCst);
        tokio::time::sleep(timeout.min(hold)).await;
        self.waiting.fetch_sub(1, Ordering::SeqCst);
        Ok(())
    }
}

#[cfg(test)]
mod source_tests {
    use super::*;
    use hostplug_api::crd::{Capabilities, HostPluginSpec, OciSource, PluginSource};

    #[test]
    fn an_oci_plugin_shows_its_image() {
        let hp = HostPlugin::new(
            "p",
            HostPluginSpec {
                source: PluginSource {
                    builtin: None,
                    config_map: None,
                    oci: Some(OciSource {
                        image: "r.example/p:1".into(),
                        pull_secret: None,
                        insecure: false,
                    }),
                },
                sha256: Some("a".repeat(64)),
                capabilities: Capabilities::default(),
                signature: None,
            },
        );
        assert_eq!(plugin_view(&hp).source, "oci:r.example/p:1");
    }
}

#[cfg(test)]
mod cycle_tests {
    use super::*;
    use hostplug_api::crd::{HostTaskSpec, HostTaskStatus, NodePhase, NodeResult};
    use hostplug_api::disruption::{DisruptionPhase, NodeDisruption};

    #[test]
    fn a_node_in_a_drain_or_reboot_cycle_shows_its_step() {
        let mut t = HostTask::new(
            "t",
            HostTaskSpec {
                disruption: None,
                targets: hostplug_api::NodeTargets {
                    workers: vec!["n1".into(), "n2".into()],
                    target_type: None,
                    node_selector: None,
                },
                http: None,
                revert: None,
                dry_run: false,
                timeout_seconds: 60,
                rollout: None,
                ttl_seconds_after_finished: None,
                registry_auth: None,
                rerun: 0,
                on_change: Vec::new(),
            },
        );
        t.status = Some(HostTaskStatus {
            nodes: vec![
                NodeResult {
                    node: "n1".into(),
                    phase: NodePhase::Running,
                    disruption: Some(NodeDisruption {
                        phase: DisruptionPhase::Draining,
                        message: None,
                    }),
                    ..Default::default()
                },
                NodeResult {
                    node: "n2".into(),
                    phase: NodePhase::Succeeded,
                    ..Default::default()
                },
            ],
            ..Default::default()
        });
        let view = task_view(&t);
        assert_eq!(view.nodes[0].cycle, "Draining");
        assert_eq!(view.nodes[1].cycle, "");
    }
}

//! The HostTask controller.
//!
//! Each reconcile drives a per-node state machine one step and returns: Pending → (Secret,
//! Pod, Service created) Starting → (Pod Ready; status written) Running → (plugin call
//! returned, in a spawned job) Succeeded | Failed; Skipped when the rollout stopped. Long
//! work (the plugin call) never blocks a reconcile: it runs in a spawned job whose
//! outcome waits in memory until the next reconcile writes it into the status.
//!
//! The status is the record, written in one place ([`write_status`]) by server-side
//! apply: a node is marked Running *before* its call is sent, and its outcome is written
//! before more nodes start. After an operator restart, a node found Running with no job
//! in memory is not called again (it may have run): it fails with "outcome unknown", so
//! no node ever runs twice for one generation.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use hostplug_api::protocol::{InvokeOutcome, InvokeRequest, LogRecord};
use hostplug_api::worker::secret_keys;
use k8s_openapi::api::core::v1::{Node, Pod, Secret, Service};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::api::{DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::events::{Event, EventType};
use kube::runtime::watcher;
use kube::{Api, Resource, ResourceExt};
use serde_json::json;
use tracing::{info, warn};

use crate::client::{CallError, Credentials, WorkerClient};
use crate::plugins::LoadedPlugin;
use crate::resources::{self, WorkerSpec};
use crate::validate::{self, Invalid, NodeView};
use crate::{Context, Error, FIELD_MANAGER, Result};
use hostplug_api::crd::{
    HostPlugin, HostTask, HostTaskStatus, NodePhase, NodeResult, PluginRef, RolloutSpec, TaskState,
    labels,
};

/// How often a task in flight is looked at even without a watch event: 2 s. Pod and
/// task events trigger reconciles sooner; this catches what no event announces (the
/// start timeout).
const POLL_INTERVAL: Duration = Duration::from_secs(2);
/// How often a task with plugin calls in flight is looked at: 500 ms. A finished call's
/// outcome waits in memory until then; this bounds the delay it adds per node.
const RUNNING_POLL_INTERVAL: Duration = Duration::from_millis(500);
/// Retry interval after a failed reconcile: 5 s, quick enough for a conflict, slow
/// enough not to hammer an API server that refuses.
const ERROR_REQUEUE: Duration = Duration::from_secs(5);
/// Container waiting reasons that mean the worker will never start.
const FATAL_WAITING_REASONS: [&str; 6] = [
    "ErrImagePull",
    "ImagePullBackOff",
    "InvalidImageName",
    "CreateContainerConfigError",
    "CreateContainerError",
    "CrashLoopBackOff",
];

/// Identifies one node's plugin call: task uid, generation, node.
pub type RunKey = (String, i64, String);

/// A node's plugin call as the spawned job sees it.
#[derive(Debug, Clone)]
pub enum Run {
    /// The call is in flight.
    InFlight,
    /// The call returned.
    Done(Box<NodeOutcome>),
}

/// What a node's call produced: the plugin's typed outcome, or why there is none (the
/// plugin failed with a typed kind, or the worker could not be reached or refused).
#[derive(Debug, Clone)]
pub struct NodeOutcome {
    /// The call's result, kept typed until it is written into the node's status.
    pub result: std::result::Result<InvokeOutcome, CallError>,
    /// When it ended.
    pub finished_at: Timestamp,
}

/// The plugin's log tail as the node's status shows it: `[level] source: text`.
fn log_lines(logs: &[LogRecord]) -> Vec<String> {
    logs.iter().map(ToString::to_string).collect()
}

fn now() -> Time {
    Time(Timestamp::now())
}

/// Writes a task's status: the only place that does. Server-side apply with the
/// operator's field manager; lists are replaced whole.
pub async fn write_status(api: &Api<HostTask>, name: &str, status: &HostTaskStatus) -> Result<()> {
    let patch = json!({
        "apiVersion": "hostplug.dev/v1alpha1",
        "kind": "HostTask",
        "status": status,
    });
    api.patch_status(
        name,
        &PatchParams::apply(FIELD_MANAGER).force(),
        &Patch::Apply(patch),
    )
    .await
    .map_err(Error::kube(format!("writing status of HostTask {name}")))?;
    Ok(())
}

/// Everything validation needs, fetched.
struct Resolved {
    plugin: HostPlugin,
    loaded: Arc<LoadedPlugin>,
    targets: Vec<String>,
}

async fn resolve(ctx: &Context, task: &HostTask) -> Result<Result<Resolved, Invalid>> {
    let spec = &task.spec;
    let name = &spec.http.api;
    let hp_api: Api<HostPlugin> = Api::all(ctx.client.clone());
    let hp = hp_api
        .get_opt(name)
        .await
        .map_err(Error::kube(format!("reading HostPlugin {name}")))?;
    let loaded = match &hp {
        Some(hp) => ctx.plugins.resolve(&ctx.client, hp).await,
        None => Err("no HostPlugin".into()),
    };
    let (info, ready, message) = match &loaded {
        Ok(l) => (Some(&l.info), true, None),
        Err(e) => (None, false, Some(e.as_str())),
    };
    let method = match validate::resolve_method(
        spec,
        name,
        hp.as_ref().map(|h| (&h.spec, info, ready, message)),
    ) {
        Ok(m) => m,
        Err(e) => return Ok(Err(e)),
    };
    let (Some(hp), Ok(loaded)) = (hp.clone(), loaded.clone()) else {
        return Ok(Err(Invalid {
            field: "spec.http.api".into(),
            problem: format!("plugin {name:?} is not ready"),
        }));
    };
    if let Err(e) = validate::check_params(spec, method) {
        return Ok(Err(e));
    }
    if let Err(e) = validate::check_capabilities(spec, name, &hp.spec, method) {
        return Ok(Err(e));
    }
    let nodes = list_nodes(ctx).await?;
    let targets = match validate::target_nodes(spec, &nodes) {
        Ok(t) => t,
        Err(e) => return Ok(Err(e)),
    };
    Ok(Ok(Resolved {
        plugin: hp,
        loaded,
        targets,
    }))
}

async fn list_nodes(ctx: &Context) -> Result<Vec<NodeView>> {
    let api: Api<Node> = Api::all(ctx.client.clone());
    let list = api
        .list(&ListParams::default())
        .await
        .map_err(Error::kube("listing nodes"))?;
    Ok(list.items.iter().filter_map(NodeView::from_node).collect())
}

async fn publish(ctx: &Context, task: &HostTask, type_: EventType, reason: &str, note: String) {
    let ev = Event {
        type_,
        reason: reason.into(),
        note: Some(crate::status::truncate_str(&note, 1000)),
        action: "Reconcile".into(),
        secondary: None,
    };
    if let Err(e) = ctx.recorder.publish(&ev, &task.object_ref(&())).await {
        warn!(error = %e, "publishing an event failed");
    }
}

/// Reconciles one HostTask.
async fn reconcile(cached: Arc<HostTask>, ctx: Arc<Context>) -> Result<Action> {
    ctx.metrics.reconcile();
    let ns = cached
        .namespace()
        .ok_or(Error::MissingObjectKey(".metadata.namespace"))?;
    let name = cached.name_any();
    let api: Api<HostTask> = Api::namespaced(ctx.client.clone(), &ns);
    // The cache may lag behind our own last status write; the status is the record, so
    // read the newest one.
    let Some(task) = api
        .get_opt(&name)
        .await
        .map_err(Error::kube(format!("reading HostTask {name}")))?
    else {
        return Ok(Action::await_change());
    };
    let uid = task.uid().ok_or(Error::MissingObjectKey(".metadata.uid"))?;
    if task.metadata.deletion_timestamp.is_some() {
        ctx.forget_runs(&uid);
        return Ok(Action::await_change());
    }
    let generation = task.metadata.generation.unwrap_or(0);
    let mut status = task.status.clone().unwrap_or_default();

    if status.observed_generation != Some(generation) {
        return start_generation(&ctx, &api, &task, generation).await;
    }
    if status.state.is_finished() {
        return after_finish(&ctx, &task, &status).await;
    }
    let plugin_api: Api<HostPlugin> = Api::all(ctx.client.clone());
    let hp = plugin_api
        .get_opt(&task.spec.http.api)
        .await
        .map_err(Error::kube("reading HostPlugin"))?;
    let loaded = match &hp {
        Some(hp) => ctx.plugins.resolve(&ctx.client, hp).await.ok(),
        None => None,
    };
    let pinned = status.plugin.as_ref().map(|p| p.digest.clone());
    let plugin_ok = match (&hp, &loaded) {
        (Some(_), Some(l)) => pinned.as_deref() == Some(l.digest.to_string().as_str()),
        _ => false,
    };

    let now_t = now();
    let key = |node: &str| -> RunKey { (uid.clone(), generation, node.to_owned()) };
    let mut newly_failed: Vec<(String, String)> = Vec::new();

    // 1. Outcomes of calls that returned.
    for n in status
        .nodes
        .iter_mut()
        .filter(|n| n.phase == NodePhase::Running)
    {
        match ctx.take_run(&key(&n.node)) {
            Some(Run::Done(out)) => {
                n.finished_at = Some(Time(out.finished_at));
                match out.result {
                    Ok(o) => {
                        n.phase = NodePhase::Succeeded;
                        n.changed = o.changed;
                        n.logs = log_lines(&o.logs);
                        n.diff = o.diff;
                        n.output = Some(o.output);
                        n.message = None;
                    }
                    Err(e) => {
                        n.phase = NodePhase::Failed;
                        n.changed = false;
                        n.diff = None;
                        n.output = None;
                        n.logs = match &e {
                            CallError::Plugin(ie) => log_lines(&ie.logs),
                            _ => Vec::new(),
                        };
                        let message = e.to_string();
                        newly_failed.push((n.node.clone(), message.clone()));
                        n.message = Some(message);
                    }
                }
            }
            Some(Run::InFlight) => {}
            None => {
                fail(
                    n,
                    "outcome unknown: the operator restarted while the plugin was running on \
                     this node; it is not run again so that it never runs twice for one generation",
                    &now_t,
                );
                newly_failed.push((n.node.clone(), n.message.clone().unwrap_or_default()));
            }
        }
    }

    // 2. Workers that are starting.
    let pods = list_children::<Pod>(&ctx, &ns, &name).await?;
    let node_names: Vec<String> = list_nodes(&ctx)
        .await?
        .into_iter()
        .map(|n| n.name)
        .collect();
    let mut to_run: Vec<(String, String, String)> = Vec::new(); // node, pod name, pod IP
    for n in status
        .nodes
        .iter_mut()
        .filter(|n| n.phase == NodePhase::Starting)
    {
        if !node_names.contains(&n.node) {
            fail(n, &format!("node {} no longer exists", n.node), &now_t);
            newly_failed.push((n.node.clone(), n.message.clone().unwrap_or_default()));
            continue;
        }
        let pod_name = resources::child_name(&name, &n.node);
        let pod = pods.get(&pod_name);
        match pod_state(pod, generation) {
            PodState::Ready(ip) => {
                if plugin_ok {
                    n.phase = NodePhase::Running;
                    to_run.push((n.node.clone(), pod_name, ip));
                } else {
                    fail(
                        n,
                        "the plugin changed or vanished during the rollout; not run",
                        &now_t,
                    );
                    newly_failed.push((n.node.clone(), n.message.clone().unwrap_or_default()));
                }
            }
            PodState::Broken(reason) => {
                fail(n, &format!("worker Pod cannot start: {reason}"), &now_t);
                newly_failed.push((n.node.clone(), n.message.clone().unwrap_or_default()));
            }
            PodState::Waiting(what) => {
                let started = n.started_at.as_ref().map_or(now_t.0, |t| t.0);
                let waited = now_t.0.duration_since(started);
                if waited
                    > SignedDuration::try_from(ctx.config.pod_start_timeout())
                        .unwrap_or(SignedDuration::MAX)
                {
                    fail(
                        n,
                        &format!(
                            "worker Pod not Ready after {}s ({what})",
                            ctx.config.pod_start_timeout().as_secs()
                        ),
                        &now_t,
                    );
                    newly_failed.push((n.node.clone(), n.message.clone().unwrap_or_default()));
                }
            }
        }
    }

    // 3. Start more nodes, or stop the rollout.
    let rollout = task.spec.rollout.clone().unwrap_or_default();
    let RolloutSpec {
        max_parallel,
        max_failures,
    } = rollout;
    let counts = crate::status::Counts::of(&status.nodes);
    let stop = counts.failed > usize::try_from(max_failures).unwrap_or(0);
    if stop {
        for n in status
            .nodes
            .iter_mut()
            .filter(|n| n.phase == NodePhase::Pending)
        {
            n.phase = NodePhase::Skipped;
            n.message = Some(format!(
                "not started: {} nodes failed, more than rollout.maxFailures {max_failures}",
                counts.failed
            ));
            n.finished_at = Some(now_t.clone());
        }
    } else if !plugin_ok {
        // The plugin vanished or changed under a running generation: nothing more starts.
        for n in status
            .nodes
            .iter_mut()
            .filter(|n| n.phase == NodePhase::Pending)
        {
            fail(
                n,
                "not started: the plugin changed or vanished during the rollout",
                &now_t,
            );
            newly_failed.push((n.node.clone(), n.message.clone().unwrap_or_default()));
        }
    } else if let Some(hp) = &hp {
        let mut in_flight = counts.in_flight;
        let max_parallel = usize::try_from(max_parallel).unwrap_or(1).max(1);
        for n in status
            .nodes
            .iter_mut()
            .filter(|n| n.phase == NodePhase::Pending)
        {
            if in_flight >= max_parallel {
                break;
            }
            if !node_names.contains(&n.node) {
                fail(n, &format!("node {} no longer exists", n.node), &now_t);
                newly_failed.push((n.node.clone(), n.message.clone().unwrap_or_default()));
                continue;
            }
            match ensure_children(&ctx, &task, hp, &n.node, generation, &pods).await? {
                true => {
                    n.phase = NodePhase::Starting;
                    n.pod = Some(resources::child_name(&name, &n.node));
                    n.started_at = Some(now_t.clone());
                    in_flight += 1;
                }
                false => {
                    // An old generation's Pod is still going away; try again soon.
                    in_flight += 1;
                }
            }
        }
    }

    // 4. Write the record before any call goes out.
    crate::status::cap_results(&mut status.nodes);
    crate::status::summarise(&mut status, task.spec.dry_run, &now_t);
    write_status(&api, &name, &status).await?;
    for (node, msg) in &newly_failed {
        ctx.metrics.node_finished(false);
        publish(
            &ctx,
            &task,
            EventType::Warning,
            "NodeFailed",
            format!("{node}: {msg}"),
        )
        .await;
    }

    // 5. Send the calls.
    if let Some(loaded) = &loaded {
        for (node, pod_name, ip) in to_run {
            spawn_run(&ctx, &task, loaded.clone(), key(&node), &pod_name, &ip).await?;
        }
    }

    if status.state.is_finished() {
        let ev_type = if status.state == TaskState::Succeeded {
            EventType::Normal
        } else {
            EventType::Warning
        };
        publish(
            &ctx,
            &task,
            ev_type,
            if status.state == TaskState::Succeeded {
                "Succeeded"
            } else {
                "Failed"
            },
            status.msg.clone().unwrap_or_default(),
        )
        .await;
        return after_finish(&ctx, &task, &status).await;
    }
    if status.nodes.iter().any(|n| n.phase == NodePhase::Running) {
        return Ok(Action::requeue(RUNNING_POLL_INTERVAL));
    }
    Ok(Action::requeue(POLL_INTERVAL))
}

fn fail(n: &mut NodeResult, message: &str, now: &Time) {
    n.phase = NodePhase::Failed;
    n.message = Some(message.to_owned());
    n.finished_at = Some(now.clone());
}

/// A new generation: validate, then record the target nodes as Pending (or the task as
/// Failed) before anything is created.
async fn start_generation(
    ctx: &Context,
    api: &Api<HostTask>,
    task: &HostTask,
    generation: i64,
) -> Result<Action> {
    let name = task.name_any();
    let ns = task.namespace().unwrap_or_default();
    // Children of an older generation are stale (their mounts may differ).
    delete_children(ctx, &ns, &name).await?;
    let now_t = now();
    let mut status = HostTaskStatus {
        observed_generation: Some(generation),
        ..HostTaskStatus::default()
    };
    match resolve(ctx, task).await? {
        Err(invalid) => {
            status.state = TaskState::Failed;
            status.msg = Some(invalid.to_string());
            status.finished_at = Some(now_t.clone());
            status.progress = Some("0/0".into());
            crate::status::set_conditions(
                &mut status,
                TaskState::Failed,
                &invalid.to_string(),
                &now_t,
            );
            write_status(api, &name, &status).await?;
            info!(task = %name, problem = %invalid, "task refused");
            publish(
                ctx,
                task,
                EventType::Warning,
                "ValidationFailed",
                invalid.to_string(),
            )
            .await;
            Ok(Action::await_change())
        }
        Ok(r) => {
            status.plugin = Some(PluginRef {
                name: r.plugin.name_any(),
                digest: r.loaded.digest.to_string(),
            });
            status.nodes = r
                .targets
                .iter()
                .map(|n| NodeResult {
                    node: n.clone(),
                    ..NodeResult::default()
                })
                .collect();
            crate::status::summarise(&mut status, task.spec.dry_run, &now_t);
            write_status(api, &name, &status).await?;
            publish(
                ctx,
                task,
                EventType::Normal,
                "Started",
                format!(
                    "running {}/{} on {} nodes{}",
                    task.spec.http.api,
                    task.spec.http.method,
                    r.targets.len(),
                    if task.spec.dry_run { " (dry run)" } else { "" }
                ),
            )
            .await;
            Ok(Action::requeue(Duration::ZERO))
        }
    }
}

/// A finished task: remove its children once the TTL passed.
async fn after_finish(ctx: &Context, task: &HostTask, status: &HostTaskStatus) -> Result<Action> {
    let Some(ttl) = task.spec.ttl_seconds_after_finished else {
        return Ok(Action::await_change());
    };
    let finished = status
        .finished_at
        .as_ref()
        .map_or(Timestamp::now(), |t| t.0);
    let due = finished + SignedDuration::from_secs(i64::from(ttl.max(0)));
    let left = Timestamp::now().duration_until(due);
    if left.is_positive() {
        return Ok(Action::requeue(
            Duration::try_from(left).unwrap_or(POLL_INTERVAL) + Duration::from_millis(100),
        ));
    }
    let ns = task.namespace().unwrap_or_default();
    delete_children(ctx, &ns, &task.name_any()).await?;
    Ok(Action::await_change())
}

/// Lists a task's children of one kind, by name.
async fn list_children<K>(ctx: &Context, ns: &str, task: &str) -> Result<BTreeMap<String, K>>
where
    K: Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug,
{
    let api: Api<K> = Api::namespaced(ctx.client.clone(), ns);
    let lp = ListParams::default().labels(&format!("{}={task}", labels::TASK));
    let list = api
        .list(&lp)
        .await
        .map_err(Error::kube(format!("listing children of {task}")))?;
    Ok(list
        .items
        .into_iter()
        .filter_map(|o| Some((o.meta().name.clone()?, o)))
        .collect())
}

/// Deletes every Pod, Service and Secret of a task.
async fn delete_children(ctx: &Context, ns: &str, task: &str) -> Result<()> {
    let dp = DeleteParams::background();
    macro_rules! delete_all {
        ($k:ty) => {{
            let api: Api<$k> = Api::namespaced(ctx.client.clone(), ns);
            for name in list_children::<$k>(ctx, ns, task).await?.into_keys() {
                match api.delete(&name, &dp).await {
                    Ok(_) => {}
                    Err(kube::Error::Api(e)) if e.code == 404 => {}
                    Err(e) => {
                        return Err(Error::Kube {
                            context: format!("deleting {name}"),
                            source: e,
                        });
                    }
                }
            }
        }};
    }
    delete_all!(Pod);
    delete_all!(Service);
    delete_all!(Secret);
    Ok(())
}

/// Creates the Secret, Pod and Service of a node unless they exist. Returns false when
/// an old generation's Pod of the same name is still there (it is being deleted).
async fn ensure_children(
    ctx: &Context,
    task: &HostTask,
    hp: &HostPlugin,
    node: &str,
    generation: i64,
    pods: &BTreeMap<String, Pod>,
) -> Result<bool> {
    let name = task.name_any();
    let ns = task.namespace().unwrap_or_default();
    let child = resources::child_name(&name, node);
    if let Some(p) = pods.get(&child) {
        let gen_label = p
            .labels()
            .get(labels::GENERATION)
            .and_then(|g| g.parse::<i64>().ok());
        if gen_label != Some(generation) {
            let api: Api<Pod> = Api::namespaced(ctx.client.clone(), &ns);
            if p.metadata.deletion_timestamp.is_none() {
                let _ = api.delete(&child, &DeleteParams::background()).await;
            }
            return Ok(false);
        }
    }
    let owner = task
        .controller_owner_ref(&())
        .ok_or(Error::MissingObjectKey(".metadata.uid"))?;
    let timeout_ms = u64::try_from(task.spec.timeout_seconds.max(1)).unwrap_or(60) * 1000;
    let spec = WorkerSpec {
        task: &name,
        namespace: &ns,
        owner,
        generation,
        node,
        image: &ctx.config.worker_image,
        port: task.spec.http.port,
        capabilities: &hp.spec.capabilities,
        dry_run: task.spec.dry_run,
        max_invoke_timeout_ms: timeout_ms,
    };
    let pp = PostParams {
        field_manager: Some(FIELD_MANAGER.into()),
        ..PostParams::default()
    };
    let secrets: Api<Secret> = Api::namespaced(ctx.client.clone(), &ns);
    if secrets
        .get_opt(&child)
        .await
        .map_err(Error::kube(format!("reading Secret {child}")))?
        .is_none()
    {
        let creds = Credentials::generate(&child)?;
        let secret = resources::secret(&spec, &creds.token, &creds.cert_pem, &creds.key_pem);
        create_if_absent(&secrets, &pp, &secret, &child).await?;
    }
    let services: Api<Service> = Api::namespaced(ctx.client.clone(), &ns);
    create_if_absent(&services, &pp, &resources::service(&spec), &child).await?;
    if !pods.contains_key(&child) {
        let pods_api: Api<Pod> = Api::namespaced(ctx.client.clone(), &ns);
        create_if_absent(&pods_api, &pp, &resources::pod(&spec), &child).await?;
    }
    Ok(true)
}

async fn create_if_absent<K>(api: &Api<K>, pp: &PostParams, obj: &K, name: &str) -> Result<()>
where
    K: Resource + Clone + serde::Serialize + serde::de::DeserializeOwned + std::fmt::Debug,
{
    match api.create(pp, obj).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(e)) if e.code == 409 => Ok(()),
        Err(e) => Err(Error::Kube {
            context: format!("creating {name}"),
            source: e,
        }),
    }
}

/// Where a worker Pod is.
#[derive(Debug, PartialEq, Eq)]
enum PodState {
    /// Ready, at this IP.
    Ready(String),
    /// Will never become Ready; why.
    Broken(String),
    /// Not Ready yet; what it is doing.
    Waiting(String),
}

fn pod_state(pod: Option<&Pod>, generation: i64) -> PodState {
    let Some(pod) = pod else {
        return PodState::Broken("the worker Pod disappeared".into());
    };
    let gen_label = pod
        .labels()
        .get(labels::GENERATION)
        .and_then(|g| g.parse::<i64>().ok());
    if gen_label != Some(generation) {
        return PodState::Waiting("an older worker Pod is going away".into());
    }
    if pod.metadata.deletion_timestamp.is_some() {
        return PodState::Broken("the worker Pod is being deleted".into());
    }
    let Some(st) = &pod.status else {
        return PodState::Waiting("no status yet".into());
    };
    let phase = st.phase.clone().unwrap_or_else(|| "Pending".into());
    if phase == "Failed" || phase == "Succeeded" {
        let reason = st
            .container_statuses
            .iter()
            .flatten()
            .filter_map(|c| c.state.as_ref()?.terminated.as_ref())
            .map(|t| {
                format!(
                    "exited with code {}{}",
                    t.exit_code,
                    t.reason
                        .as_ref()
                        .map(|r| format!(" ({r})"))
                        .unwrap_or_default()
                )
            })
            .next()
            .or_else(|| st.message.clone())
            .unwrap_or_default();
        return PodState::Broken(
            format!("the worker Pod ended ({phase}) {reason}")
                .trim_end()
                .to_owned(),
        );
    }
    for c in st.container_statuses.iter().flatten() {
        if let Some(w) = c.state.as_ref().and_then(|s| s.waiting.as_ref()) {
            let reason = w.reason.clone().unwrap_or_default();
            if FATAL_WAITING_REASONS.contains(&reason.as_str()) {
                return PodState::Broken(format!(
                    "{reason}: {}",
                    w.message.clone().unwrap_or_default()
                ));
            }
        }
    }
    let ready = st
        .conditions
        .iter()
        .flatten()
        .any(|c| c.type_ == "Ready" && c.status == "True");
    match (ready, &st.pod_ip) {
        (true, Some(ip)) if !ip.is_empty() => PodState::Ready(ip.clone()),
        _ => PodState::Waiting(format!("phase {phase}")),
    }
}

/// Starts one node's plugin call in the background.
async fn spawn_run(
    ctx: &Arc<Context>,
    task: &HostTask,
    loaded: Arc<LoadedPlugin>,
    key: RunKey,
    pod_name: &str,
    ip: &str,
) -> Result<()> {
    let ns = task.namespace().unwrap_or_default();
    let secrets: Api<Secret> = Api::namespaced(ctx.client.clone(), &ns);
    let secret = secrets
        .get_opt(pod_name)
        .await
        .map_err(Error::kube(format!("reading Secret {pod_name}")))?;
    let creds = secret.and_then(|s| {
        let data = s.data?;
        let get = |k: &str| {
            data.get(k)
                .and_then(|b| String::from_utf8(b.0.clone()).ok())
        };
        Some(Credentials {
            token: get(secret_keys::TOKEN)?,
            cert_pem: get(secret_keys::CERT)?,
            key_pem: String::new(),
        })
    });
    let req = InvokeRequest {
        digest: loaded.digest.to_string(),
        method: task.spec.http.method.clone(),
        params: validate::params_of(&task.spec),
        dry_run: task.spec.dry_run,
        timeout_ms: Some(u64::try_from(task.spec.timeout_seconds.max(1)).unwrap_or(60) * 1000),
    };
    let port = task.spec.http.port;
    let ip = ip.to_owned();
    ctx.insert_run(key.clone(), Run::InFlight);
    let ctx2 = ctx.clone();
    tokio::spawn(async move {
        let started = std::time::Instant::now();
        let result = match creds {
            None => Err(CallError::Worker(
                "the worker's Secret is missing or incomplete".into(),
            )),
            Some(creds) => match WorkerClient::new(&ip, port, &creds) {
                Err(e) => Err(CallError::Worker(e.to_string())),
                Ok(client) => {
                    match client
                        .ensure_module(&loaded.digest.hex(), &loaded.bytes)
                        .await
                    {
                        Err(e) => Err(e),
                        Ok(_) => client.invoke(&req).await,
                    }
                }
            },
        };
        ctx2.metrics.invocation(started.elapsed());
        if result.is_ok() {
            ctx2.metrics.node_finished(true);
        }
        let outcome = NodeOutcome {
            result,
            finished_at: Timestamp::now(),
        };
        // The next reconcile (at most RUNNING_POLL_INTERVAL away) writes it down.
        ctx2.insert_run(key, Run::Done(Box::new(outcome)));
    });
    Ok(())
}

fn error_policy(task: Arc<HostTask>, err: &Error, ctx: Arc<Context>) -> Action {
    warn!(task = %task.name_any(), error = %err, "HostTask reconcile failed");
    ctx.metrics.reconcile_error();
    Action::requeue(ERROR_REQUEUE)
}

/// Runs the HostTask controller until `shutdown` resolves.
pub async fn run_controller(
    ctx: Arc<Context>,
    shutdown: impl std::future::Future<Output = ()> + Send + Sync + 'static,
) {
    let ns = ctx.config.namespace.clone();
    let tasks: Api<HostTask> = Api::namespaced(ctx.client.clone(), &ns);
    let wc = watcher::Config::default().labels(&format!(
        "app.kubernetes.io/managed-by={}",
        labels::MANAGED_BY
    ));
    Controller::new(tasks, watcher::Config::default())
        .owns(Api::<Pod>::namespaced(ctx.client.clone(), &ns), wc.clone())
        .owns(
            Api::<Service>::namespaced(ctx.client.clone(), &ns),
            wc.clone(),
        )
        .owns(Api::<Secret>::namespaced(ctx.client.clone(), &ns), wc)
        .graceful_shutdown_on(shutdown)
        .run(reconcile, error_policy, ctx)
        .for_each(|_| futures::future::ready(()))
        .await;
}

/// In-memory runs of the process, shared by reconciles and spawned calls.
#[derive(Debug, Default)]
pub struct Runs(std::sync::Mutex<HashMap<RunKey, Run>>);

impl Runs {
    /// Records a run's state.
    pub fn insert(&self, key: RunKey, run: Run) {
        if let Ok(mut m) = self.0.lock() {
            m.insert(key, run);
        }
    }
    /// Takes a finished run, or reports one in flight (which stays).
    pub fn take(&self, key: &RunKey) -> Option<Run> {
        let mut m = self.0.lock().ok()?;
        match m.get(key)? {
            Run::InFlight => Some(Run::InFlight),
            Run::Done(_) => m.remove(key),
        }
    }
    /// Drops every run of a task.
    pub fn forget(&self, uid: &str) {
        if let Ok(mut m) = self.0.lock() {
            m.retain(|k, _| k.0 != uid);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{
        ContainerState, ContainerStateWaiting, ContainerStatus, PodCondition, PodStatus,
    };
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    fn pod(generation: i64, ready: bool, waiting: Option<&str>) -> Pod {
        Pod {
            metadata: ObjectMeta {
                labels: Some([(labels::GENERATION.to_string(), generation.to_string())].into()),
                ..ObjectMeta::default()
            },
            spec: None,
            status: Some(PodStatus {
                phase: Some("Running".into()),
                pod_ip: Some("127.0.1.2".into()),
                conditions: Some(vec![PodCondition {
                    type_: "Ready".into(),
                    status: if ready { "True" } else { "False" }.into(),
                    ..PodCondition::default()
                }]),
                container_statuses: waiting.map(|r| {
                    vec![ContainerStatus {
                        name: "worker".into(),
                        state: Some(ContainerState {
                            waiting: Some(ContainerStateWaiting {
                                reason: Some(r.into()),
                                message: Some("no such image".into()),
                            }),
                            ..ContainerState::default()
                        }),
                        ..ContainerStatus::default()
                    }]
                }),
                ..PodStatus::default()
            }),
        }
    }

    #[test]
    fn pod_states() {
        assert_eq!(
            pod_state(Some(&pod(2, true, None)), 2),
            PodState::Ready("127.0.1.2".into())
        );
        assert!(matches!(
            pod_state(Some(&pod(2, false, None)), 2),
            PodState::Waiting(_)
        ));
        assert!(matches!(
            pod_state(Some(&pod(1, true, None)), 2),
            PodState::Waiting(_)
        ));
        assert!(
            matches!(pod_state(Some(&pod(2, false, Some("ErrImagePull"))), 2), PodState::Broken(m) if m.contains("ErrImagePull"))
        );
        assert!(matches!(pod_state(None, 2), PodState::Broken(_)));
    }

    #[test]
    fn runs_keep_in_flight_and_hand_out_done_once() {
        let runs = Runs::default();
        let k: RunKey = ("u".into(), 1, "n".into());
        assert!(runs.take(&k).is_none());
        runs.insert(k.clone(), Run::InFlight);
        assert!(matches!(runs.take(&k), Some(Run::InFlight)));
        assert!(matches!(runs.take(&k), Some(Run::InFlight)));
        runs.insert(
            k.clone(),
            Run::Done(Box::new(NodeOutcome {
                result: Err(CallError::Worker("test".into())),
                finished_at: Timestamp::now(),
            })),
        );
        assert!(matches!(runs.take(&k), Some(Run::Done(_))));
        assert!(runs.take(&k).is_none());
        runs.insert(k.clone(), Run::InFlight);
        runs.forget("u");
        assert!(runs.take(&k).is_none());
    }
}

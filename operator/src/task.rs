//! The HostTask controller.
//!
//! Each reconcile reads the task, gathers what the rollout needs to know (the task's
//! pooled workers from the Pod cache, its calls from memory, the nodes from the Node
//! cache), lets the pure state machine [`crate::rollout::step`] decide, writes the status
//! and then carries out the decisions: ask the [`WorkerPool`] for workers, send calls.
//! A call runs in a spawned job; when it returns, its outcome waits in memory and the job
//! wakes the task's reconcile at once (through the controller's trigger channel), as does
//! a change of a worker Pod the task waits on. No poll drives the rollout; a slow
//! fallback requeue only catches what no event announces (the start timeout).
//!
//! The status is the record, written in one place ([`write_status`]) by server-side
//! apply, fenced by the resourceVersion the reconcile read: a deposed leader's write
//! fails instead of overwriting its successor's. A node is marked Running *before* its
//! call is sent. Every call carries the invocation id `<task uid>/<generation>/<node>`;
//! after an operator restart a Running node is resumed by sending the same call to the
//! same worker, which answers the stored outcome instead of running again. So a node
//! runs at most once per generation, and a restart fails no node whose worker lives.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use futures::channel::mpsc::UnboundedReceiver;
use hostplug_api::protocol::InvokeRequest;
use k8s_openapi::api::core::v1::{Node, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::api::{DeleteParams, Patch, PatchParams, Preconditions};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::events::{Event, EventType};
use kube::runtime::reflector::{self, ObjectRef, store::Writer};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Resource, ResourceExt};
use serde_json::json;
use tracing::{info, warn};

use crate::client::CallError;
use crate::plugins::LoadedPlugin;
use crate::pool::{Profile, WorkerKey, WorkerPool};
use crate::rollout::{self, Action as Step, CallState, NodeOutcome, Observed, Success};
use crate::validate::{self, Invalid, NodeView};
use crate::{Context, Error, FIELD_MANAGER, Result};
use hostplug_api::crd::{
    HostPlugin, HostTask, HostTaskStatus, NodePhase, NodeResult, PluginRef, TaskState, labels,
};

/// How often a task in flight is looked at without any event: 5 s. Call outcomes and
/// worker Pod changes wake the task at once; this only catches the start timeout and
/// nodes that vanish.
const FALLBACK_REQUEUE: Duration = Duration::from_secs(5);
/// Retry interval after a failed reconcile: 5 s, slow enough not to hammer an API
/// server that refuses.
const ERROR_REQUEUE: Duration = Duration::from_secs(5);
/// Retry after a status write lost to a newer one (409): 50 ms; the next reconcile reads
/// the newer status and decides again.
const CONFLICT_REQUEUE: Duration = Duration::from_millis(50);
/// Attempts at one call while the worker lives but the connection failed or the worker
/// was busy: 4. Safe because a repeated invocation id is answered from the worker's
/// outcome store, never run twice.
const CALL_ATTEMPTS: u32 = 4;
/// Pause before the second attempt; doubled for each further one (250 ms, 500 ms, 1 s).
const CALL_RETRY_PAUSE: Duration = Duration::from_millis(250);

/// Identifies one node's plugin call: task uid, generation, node.
pub type RunKey = (String, i64, String);

fn now() -> Time {
    Time(Timestamp::now())
}

/// Why a status write did not happen.
enum WriteError {
    /// Someone wrote the task since it was read (409): read again.
    Conflict,
    /// Anything else.
    Other(Error),
}

/// Writes a task's status: the only place that does. Server-side apply with the
/// operator's field manager, fenced by the resourceVersion of `task` (the object the
/// decision was made from); lists are replaced whole.
pub async fn write_status(
    api: &Api<HostTask>,
    task: &HostTask,
    status: &HostTaskStatus,
) -> Result<()> {
    match write_fenced(api, task, status).await {
        Ok(()) => Ok(()),
        Err(WriteError::Other(e)) => Err(e),
        Err(WriteError::Conflict) => Err(Error::Conflict(task.name_any())),
    }
}

async fn write_fenced(
    api: &Api<HostTask>,
    task: &HostTask,
    status: &HostTaskStatus,
) -> Result<(), WriteError> {
    let name = task.name_any();
    let patch = json!({
        "apiVersion": "hostplug.dev/v1alpha1",
        "kind": "HostTask",
        "metadata": {"resourceVersion": task.resource_version()},
        "status": status,
    });
    match api
        .patch_status(
            &name,
            &PatchParams::apply(FIELD_MANAGER).force(),
            &Patch::Apply(patch),
        )
        .await
    {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(e)) if e.code == 409 => Err(WriteError::Conflict),
        Err(e) => Err(WriteError::Other(Error::Kube {
            context: format!("writing status of HostTask {name}"),
            source: e,
        })),
    }
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
    if let Err(e) = crate::registry_auth::check_declared(spec, name, &hp.spec) {
        return Ok(Err(e));
    }
    // The Secret is read now so that a missing or malformed one fails the task before
    // any node is touched; the credentials are dropped here and read again per call.
    if let Err(e) =
        crate::registry_auth::read(&ctx.client, &task.namespace().unwrap_or_default(), spec).await
    {
        return Ok(Err(e));
    }
    let nodes = list_nodes(ctx);
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

/// The cluster's nodes, from the Node cache.
fn list_nodes(ctx: &Context) -> Vec<NodeView> {
    ctx.nodes
        .state()
        .iter()
        .filter_map(|n| NodeView::from_node(n))
        .collect()
}

/// Longest task name the event recorder can name an Event after: 236. It calls an Event
/// `<object name>.<nanoseconds in hex>` (up to 16 digits), and a name has at most 253
/// characters; a HostTask's name may have 253 itself.
const MAX_RECORDER_NAME: usize = 253 - 17;

async fn publish(ctx: &Context, task: &HostTask, type_: EventType, reason: &str, note: String) {
    let ev = Event {
        type_,
        reason: reason.into(),
        note: Some(crate::status::truncate_str(&note, 1000)),
        action: "Reconcile".into(),
        secondary: None,
    };
    let reference = task.object_ref(&());
    let published = if task.name_any().len() > MAX_RECORDER_NAME {
        publish_long_name(ctx, &ev, &reference).await
    } else {
        ctx.recorder
            .publish(&ev, &reference)
            .await
            .map_err(|e| e.to_string())
    };
    if let Err(e) = published {
        warn!(error = %e, "publishing an event failed");
    }
}

/// Creates an Event about an object whose name is too long for the recorder's naming:
/// the same fields, named like the recorder names them but after the shortened name.
async fn publish_long_name(
    ctx: &Context,
    ev: &Event,
    reference: &k8s_openapi::api::core::v1::ObjectReference,
) -> std::result::Result<(), String> {
    use k8s_openapi::api::events::v1::Event as ApiEvent;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
    let name = reference.name.clone().unwrap_or_default();
    let prefix: String = name.chars().take(MAX_RECORDER_NAME).collect();
    let prefix = prefix.trim_end_matches(['.', '-']);
    let ns = reference.namespace.clone().unwrap_or_default();
    let event = ApiEvent {
        metadata: ObjectMeta {
            // A cut valid subdomain without a trailing '.' or '-' is one; the suffix is
            // a label of its own, as the recorder makes it.
            name: Some(format!("{prefix}.{:x}", Timestamp::now().as_nanosecond())),
            namespace: Some(ns.clone()),
            ..ObjectMeta::default()
        },
        event_time: Some(MicroTime(Timestamp::now())),
        type_: Some(match ev.type_ {
            EventType::Normal => "Normal".into(),
            EventType::Warning => "Warning".into(),
        }),
        reason: Some(ev.reason.clone()),
        note: ev.note.clone(),
        action: Some(ev.action.clone()),
        regarding: Some(reference.clone()),
        reporting_controller: Some(FIELD_MANAGER.into()),
        reporting_instance: Some(
            ctx.config
                .identity
                .clone()
                .unwrap_or_else(|| FIELD_MANAGER.into()),
        ),
        ..ApiEvent::default()
    };
    Api::<ApiEvent>::namespaced(ctx.client.clone(), &ns)
        .create(&kube::api::PostParams::default(), &event)
        .await
        .map(|_| ())
        .map_err(|e| e.to_string())
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
    // read the newest one (its resourceVersion fences the write below).
    let Some(task) = api
        .get_opt(&name)
        .await
        .map_err(Error::kube(format!("reading HostTask {name}")))?
    else {
        if let Some(uid) = cached.uid() {
            ctx.runs.forget(&uid);
        }
        ctx.pool.forget_waiter(&ObjectRef::new(&name).within(&ns));
        if ctx.pool.per_task() {
            ctx.pool.release_task(&per_task_key(&ns, &name));
        }
        return Ok(Action::await_change());
    };
    let uid = task.uid().ok_or(Error::MissingObjectKey(".metadata.uid"))?;
    if task.metadata.deletion_timestamp.is_some() {
        ctx.runs.forget(&uid);
        return Ok(after_finish(&ctx, &task));
    }
    let generation = task.metadata.generation.unwrap_or(0);
    let mut status = task.status.clone().unwrap_or_default();

    if status.observed_generation != Some(generation) {
        return match start_generation(&ctx, &api, &task, generation).await {
            Err(Error::Conflict(_)) => Ok(Action::requeue(CONFLICT_REQUEUE)),
            other => other,
        };
    }
    if status.state.is_finished() {
        return expire(&ctx, &api, &task, &status).await;
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
    let caps = hp
        .as_ref()
        .map(|h| h.spec.capabilities.clone())
        .unwrap_or_default();
    let mutates = loaded
        .as_ref()
        .and_then(|l| l.info.method(&task.spec.http.method))
        .is_none_or(|m| m.mutates);
    let profile = Profile {
        etc: crate::resources::etc_access(&caps, task.spec.dry_run, mutates),
        docker: caps.docker,
        containerd: caps.containerd,
    };
    let key_of = |node: &str| WorkerKey {
        node: node.to_owned(),
        profile,
        port: task.spec.http.port,
        task: ctx.pool.per_task().then(|| per_task_key(&ns, &name)),
    };

    // What the rollout looks at.
    let me = ObjectRef::from_obj(&task);
    let existing: std::collections::HashSet<String> =
        ctx.nodes.state().iter().map(|n| n.name_any()).collect();
    let calls = ctx.runs.of(&uid, generation);
    let mut workers = BTreeMap::new();
    let mut pods = BTreeMap::new();
    for n in &status.nodes {
        if n.phase.is_finished() {
            continue;
        }
        if existing.contains(&n.node) {
            let current = ctx.pool.current(&key_of(&n.node), &me).map(|pod| {
                let st = ctx.pool.worker_state(&pod);
                (pod, st)
            });
            workers.insert(n.node.clone(), current);
        }
        if n.phase == NodePhase::Running
            && let Some(pod) = &n.pod
        {
            pods.insert(pod.clone(), ctx.pool.worker_state(pod));
        }
    }
    let observed = Observed {
        now: Timestamp::now(),
        plugin_ok,
        workers,
        pods,
        calls: calls.clone(),
        start_timeout: ctx.config.pod_start_timeout(),
    };
    let rollout_spec = task.spec.rollout.clone().unwrap_or_default();
    let steps = rollout::step(&mut status, &rollout_spec, &observed);

    // Workers first (they take seconds to start), then the record, then the calls.
    for s in &steps {
        if let Step::EnsureWorker { node } = s {
            let pod = ctx.pool.ensure(&key_of(node), me.clone());
            if let Some(n) = status
                .nodes
                .iter_mut()
                .find(|n| &n.node == node && n.phase == NodePhase::Starting)
            {
                n.pod = Some(pod);
            }
        }
    }
    if task
        .annotations()
        .get(hostplug_api::crd::annotations::SENSITIVE_OUTPUT)
        .is_some_and(|v| v == "true")
    {
        crate::status::redact(&mut status.nodes);
    }
    crate::status::cap_results(&mut status.nodes);
    crate::status::summarise(&mut status, task.spec.dry_run, &now());
    match write_fenced(&api, &task, &status).await {
        Ok(()) => {}
        Err(WriteError::Conflict) => {
            // Nothing was recorded, so nothing is sent; outcomes stay in memory.
            return Ok(Action::requeue(CONFLICT_REQUEUE));
        }
        Err(WriteError::Other(e)) => return Err(e),
    }
    // Outcomes now in the status leave memory.
    ctx.runs.written(&uid, generation, &status, &calls);

    for s in steps {
        match s {
            Step::EnsureWorker { .. } => {}
            Step::Call { node, pod, resume } => {
                if let Some(loaded) = &loaded {
                    spawn_run(
                        &ctx,
                        &task,
                        loaded.clone(),
                        &uid,
                        generation,
                        &node,
                        &pod,
                        resume,
                        caps.registry_auth,
                    );
                }
            }
            Step::NodeFailed { node, message } => {
                ctx.metrics.node_finished(false);
                publish(
                    &ctx,
                    &task,
                    EventType::Warning,
                    "NodeFailed",
                    format!("{node}: {message}"),
                )
                .await;
            }
            Step::NodeSucceeded { .. } => ctx.metrics.node_finished(true),
        }
    }

    if status.state.is_finished() {
        let ok = status.state == TaskState::Succeeded;
        publish(
            &ctx,
            &task,
            if ok {
                EventType::Normal
            } else {
                EventType::Warning
            },
            if ok { "Succeeded" } else { "Failed" },
            status.msg.clone().unwrap_or_default(),
        )
        .await;
        return expire(&ctx, &api, &task, &status).await;
    }
    Ok(Action::requeue(FALLBACK_REQUEUE))
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
    let now_t = now();
    let mut status = HostTaskStatus {
        observed_generation: Some(generation),
        ..HostTaskStatus::default()
    };
    // The namespace, plugin and method rules first: a namespace no policy covers learns
    // nothing about the plugins (validation would tell).
    if let Err(denied) = crate::policy::check(ctx, task, false, &[]).await? {
        return deny(ctx, api, task, status, &denied).await;
    }
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
            write_status(api, task, &status).await?;
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
            // The policy: may this namespace run this, there? Decided before any worker.
            let mutating = !task.spec.dry_run
                && r.loaded
                    .info
                    .method(&task.spec.http.method)
                    .is_none_or(|m| m.mutates);
            let nodes = list_nodes(ctx);
            let targets: Vec<NodeView> = nodes
                .into_iter()
                .filter(|n| r.targets.contains(&n.name))
                .collect();
            if let Err(denied) = crate::policy::check(ctx, task, mutating, &targets).await? {
                return deny(ctx, api, task, status, &denied).await;
            }
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
            write_status(api, task, &status).await?;
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

/// A task no policy allows: Failed with reason `PolicyDenied` and an Event, before any
/// worker is asked for.
async fn deny(
    ctx: &Context,
    api: &Api<HostTask>,
    task: &HostTask,
    mut status: HostTaskStatus,
    denied: &crate::policy::Denied,
) -> Result<Action> {
    let now_t = now();
    let msg = denied.to_string();
    status.state = TaskState::Failed;
    status.msg = Some(msg.clone());
    status.finished_at = Some(now_t.clone());
    status.progress = Some("0/0".into());
    crate::status::set_conditions(&mut status, TaskState::Failed, &msg, &now_t);
    for c in &mut status.conditions {
        c.reason = POLICY_DENIED.into();
    }
    write_status(api, task, &status).await?;
    info!(task = %task.name_any(), namespace = ?task.namespace(), problem = %msg, "task denied by policy");
    publish(ctx, task, EventType::Warning, POLICY_DENIED, msg).await;
    Ok(Action::await_change())
}

/// Reason of the conditions and the Event of a task no HostTaskPolicy allows.
pub const POLICY_DENIED: &str = "PolicyDenied";

/// A finished task: it no longer waits on workers; with per-task workers
/// (`--worker-idle-seconds 0`) they go now. Pooled workers outlive the task (the pool
/// removes them when idle), so `ttlSecondsAfterFinished` has nothing left to remove.
fn after_finish(ctx: &Context, task: &HostTask) -> Action {
    ctx.pool.forget_waiter(&ObjectRef::from_obj(task));
    if ctx.pool.per_task() {
        ctx.pool.release_task(&per_task_key(
            &task.namespace().unwrap_or_default(),
            &task.name_any(),
        ));
    }
    Action::await_change()
}

/// A finished task whose `ttlSecondsAfterFinished` has passed since `status.finishedAt`
/// is deleted, as Kubernetes deletes a finished Job; before that, the reconcile comes
/// back when it is due. Deletion is preconditioned on the task's uid, so a task created
/// again under the same name is never removed for its predecessor's TTL.
async fn expire(
    ctx: &Context,
    api: &Api<HostTask>,
    task: &HostTask,
    status: &HostTaskStatus,
) -> Result<Action> {
    let action = after_finish(ctx, task);
    let (Some(ttl), Some(finished)) = (
        task.spec.ttl_seconds_after_finished,
        status.finished_at.as_ref(),
    ) else {
        return Ok(action);
    };
    let due = finished.0.as_second().saturating_add(i64::from(ttl));
    let left = due.saturating_sub(Timestamp::now().as_second());
    if left > 0 {
        return Ok(Action::requeue(Duration::from_secs(left.unsigned_abs())));
    }
    let name = task.name_any();
    let params = DeleteParams {
        preconditions: Some(Preconditions {
            uid: task.uid(),
            resource_version: None,
        }),
        ..DeleteParams::default()
    };
    match api.delete(&name, &params).await {
        Ok(_) => info!(task = %name, ttl, "finished task deleted after ttlSecondsAfterFinished"),
        // Already gone, or a new task now holds the name.
        Err(kube::Error::Api(e)) if e.code == 404 || e.code == 409 => {}
        Err(e) => return Err(Error::kube(format!("deleting expired HostTask {name}"))(e)),
    }
    Ok(Action::await_change())
}

/// The key of a task's own workers (`--worker-idle-seconds 0`), as their
/// `hostplug.dev/task` label holds it: `<namespace>.<name>` (a namespace has no dots, so
/// two tasks of the same name in different namespaces differ), hashed when longer than a
/// label value may be. The label is read back when workers are adopted after a restart,
/// so the key is the label value itself.
pub fn per_task_key(namespace: &str, name: &str) -> String {
    crate::resources::label_value(&format!("{namespace}.{name}"))
}

/// The invocation id of a node's call: the same for every attempt and every operator
/// process, so a worker recognises a repeat.
pub fn invocation_id(uid: &str, generation: i64, node: &str) -> String {
    format!("{uid}/{generation}/{node}")
}

/// Sends one node's call in the background; its outcome goes to memory and wakes the
/// task.
#[allow(clippy::too_many_arguments)]
fn spawn_run(
    ctx: &Arc<Context>,
    task: &HostTask,
    loaded: Arc<LoadedPlugin>,
    uid: &str,
    generation: i64,
    node: &str,
    pod: &str,
    resume: bool,
    registry_auth_declared: bool,
) {
    let key: RunKey = (uid.to_owned(), generation, node.to_owned());
    let mut req = InvokeRequest {
        digest: loaded.digest.to_string(),
        method: task.spec.http.method.clone(),
        params: validate::params_of(&task.spec),
        dry_run: task.spec.dry_run,
        timeout_ms: Some(u64::try_from(task.spec.timeout_seconds.max(1)).unwrap_or(60) * 1000),
        invocation_id: Some(invocation_id(uid, generation, node)),
        registry_auth: None,
    };
    let namespace = task.namespace().unwrap_or_default();
    let spec = task.spec.clone();
    if resume {
        info!(task = %task.name_any(), %node, %pod, "resuming a call of an earlier operator process");
    }
    let port = task.spec.http.port;
    let pod = pod.to_owned();
    let me = ObjectRef::from_obj(task);
    ctx.runs.insert(key.clone(), CallState::InFlight);
    ctx.pool.begin_call(&pod);
    let ctx = Arc::clone(ctx);
    tokio::spawn(async move {
        let started = std::time::Instant::now();
        // The credentials are read per call (a rotated Secret is used at once) and live
        // only in this request; validation already checked the plugin declares them.
        let creds = if spec.registry_auth.is_some() && !registry_auth_declared {
            Err(Invalid {
                field: "spec.registryAuth".into(),
                problem: "the HostPlugin no longer declares the registryAuth capability".into(),
            })
        } else {
            crate::registry_auth::read(&ctx.client, &namespace, &spec).await
        };
        let outcome = match creds {
            Ok(creds) => {
                req.registry_auth = creds;
                call(&ctx, &pod, port, &loaded, &req).await
            }
            Err(invalid) => Err(CallError::NotSent(invalid.to_string())),
        };
        drop(req);
        ctx.metrics.invocation(started.elapsed());
        ctx.pool.end_call(&pod);
        // Only if still wanted: a call of a superseded generation or a deleted task
        // was dropped from the record meanwhile, and its outcome goes with it.
        ctx.runs
            .complete(key, CallState::Done(outcome, Timestamp::now()));
        let _ = ctx.wake.unbounded_send(me);
    });
}

/// One node's call, retried while the worker lives and the failure says nothing ran
/// to completion on our side (connection lost, busy). Repeats carry the same invocation
/// id, so the worker runs the plugin at most once. Also used by [`crate::state`].
pub(crate) async fn call(
    ctx: &Context,
    pod: &str,
    port: i32,
    loaded: &LoadedPlugin,
    req: &InvokeRequest,
) -> NodeOutcome {
    let pool: &WorkerPool = &ctx.pool;
    let artifact = ctx.artifacts.get(ctx.plugins.host(), &loaded.digest).await;
    let mut pause = CALL_RETRY_PAUSE;
    let mut attempt = 1;
    loop {
        let result = async {
            let conn = pool.conn(pod, port).await?;
            conn.ensure_module(
                &loaded.digest.hex(),
                &loaded.bytes,
                artifact.as_ref().map(|(f, a)| (f.as_str(), a.as_slice())),
            )
            .await?;
            conn.client.invoke(req).await
        }
        .await;
        match result {
            Ok(r) => return Ok(Success::from(r)),
            Err(e @ (CallError::Unreachable(_) | CallError::Busy(_)))
                if attempt < CALL_ATTEMPTS
                    && pool.worker_state(pod) == rollout::WorkerState::Ready =>
            {
                warn!(%pod, attempt, error = %e, "call failed; sending it again");
                tokio::time::sleep(pause).await;
                pause *= 2;
                attempt += 1;
            }
            Err(e) => return Err(e),
        }
    }
}

fn error_policy(task: Arc<HostTask>, err: &Error, ctx: Arc<Context>) -> Action {
    warn!(task = %task.name_any(), error = %err, "HostTask reconcile failed");
    ctx.metrics.reconcile_error();
    Action::requeue(ERROR_REQUEUE)
}

/// The caches the controller and the pool read, filled by [`run_controller`].
pub struct Caches {
    /// Writer of the worker Pod cache.
    pub pods: Writer<Pod>,
    /// Writer of the Node cache.
    pub nodes: Writer<Node>,
    /// Tasks to reconcile now (call finished, worker changed).
    pub wake: UnboundedReceiver<ObjectRef<HostTask>>,
}

impl std::fmt::Debug for Caches {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Caches").finish_non_exhaustive()
    }
}

/// Runs the HostTask controller, the worker Pod and Node reflectors and the pool's
/// sweeper until `shutdown` resolves.
pub async fn run_controller(
    ctx: Arc<Context>,
    caches: Caches,
    shutdown: impl std::future::Future<Output = ()> + Send + Sync + 'static,
) {
    let ns = ctx.config.namespace.clone();
    // Every namespace: a task outside the operator's own gets a status either way (run
    // under a HostTaskPolicy, or Failed with PolicyDenied).
    let tasks: Api<HostTask> = Api::all(ctx.client.clone());
    let wc = watcher::Config::default().labels(&format!(
        "app.kubernetes.io/managed-by={},{}={}",
        labels::MANAGED_BY,
        labels::COMPONENT,
        labels::COMPONENT_WORKER
    ));
    let pods = {
        let pool = Arc::clone(&ctx.pool);
        reflector::reflector(
            caches.pods,
            watcher(Api::<Pod>::namespaced(ctx.client.clone(), &ns), wc),
        )
        .default_backoff()
        .touched_objects()
        .for_each(move |p| {
            if let Ok(p) = p {
                pool.on_pod_event(&p);
            }
            futures::future::ready(())
        })
    };
    let nodes = reflector::reflector(
        caches.nodes,
        watcher(
            Api::<Node>::all(ctx.client.clone()),
            watcher::Config::default(),
        ),
    )
    .default_backoff()
    .touched_objects()
    .for_each(|_| futures::future::ready(()));
    let pods = tokio::spawn(pods);
    let nodes = tokio::spawn(nodes);
    if ctx.pods.wait_until_ready().await.is_err() || ctx.nodes.wait_until_ready().await.is_err() {
        warn!("the Pod or Node cache never filled");
    }
    ctx.pool.adopt_existing();
    let sweeper = tokio::spawn(Arc::clone(&ctx.pool).run_sweeper());
    Controller::new(tasks, watcher::Config::default())
        .reconcile_on(caches.wake)
        .graceful_shutdown_on(shutdown)
        .run(reconcile, error_policy, ctx)
        .for_each(|_| futures::future::ready(()))
        .await;
    sweeper.abort();
    pods.abort();
    nodes.abort();
}

/// In-memory calls of the process, shared by reconciles and spawned calls.
#[derive(Debug, Default)]
pub struct Runs(std::sync::Mutex<HashMap<RunKey, CallState>>);

impl Runs {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<RunKey, CallState>> {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
    /// Records a call's state.
    pub fn insert(&self, key: RunKey, run: CallState) {
        self.lock().insert(key, run);
    }
    /// Records a call's end, if the call is still recorded: one of a superseded
    /// generation or a forgotten task is dropped, not kept forever.
    pub fn complete(&self, key: RunKey, run: CallState) {
        if let Some(v) = self.lock().get_mut(&key) {
            *v = run;
        }
    }
    /// The calls of one task generation, by node.
    pub fn of(&self, uid: &str, generation: i64) -> BTreeMap<String, CallState> {
        self.lock()
            .iter()
            .filter(|(k, _)| k.0 == uid && k.1 == generation)
            .map(|(k, v)| (k.2.clone(), v.clone()))
            .collect()
    }
    /// Drops the finished calls whose outcome `status` now records (those in `seen`
    /// that were done and whose node is finished).
    pub fn written(
        &self,
        uid: &str,
        generation: i64,
        status: &HostTaskStatus,
        seen: &BTreeMap<String, CallState>,
    ) {
        let mut m = self.lock();
        for n in status.nodes.iter().filter(|n| n.phase.is_finished()) {
            if matches!(seen.get(&n.node), Some(CallState::Done(..))) {
                m.remove(&(uid.to_owned(), generation, n.node.clone()));
            }
        }
        // Older generations' calls are never read again.
        m.retain(|k, _| k.0 != uid || k.1 >= generation);
    }
    /// Drops every call of a task.
    pub fn forget(&self, uid: &str) {
        self.lock().retain(|k, _| k.0 != uid);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runs_keep_outcomes_until_written() {
        let runs = Runs::default();
        let k: RunKey = ("u".into(), 1, "n".into());
        assert!(runs.of("u", 1).is_empty());
        runs.insert(k.clone(), CallState::InFlight);
        assert_eq!(runs.of("u", 1).get("n"), Some(&CallState::InFlight));
        runs.insert(
            k.clone(),
            CallState::Done(
                Ok(Success {
                    changed: false,
                    diff: None,
                    output: serde_json::json!({}),
                    logs: vec![],
                }),
                Timestamp::now(),
            ),
        );
        let seen = runs.of("u", 1);
        // Not yet recorded (the node is still Running in the status): kept.
        let mut status = HostTaskStatus {
            nodes: vec![hostplug_api::crd::NodeResult {
                node: "n".into(),
                phase: NodePhase::Running,
                ..Default::default()
            }],
            ..Default::default()
        };
        runs.written("u", 1, &status, &seen);
        assert_eq!(runs.of("u", 1).len(), 1);
        status.nodes[0].phase = NodePhase::Succeeded;
        runs.written("u", 1, &status, &seen);
        assert!(runs.of("u", 1).is_empty());
        runs.insert(k.clone(), CallState::InFlight);
        runs.forget("u");
        assert!(runs.of("u", 1).is_empty());
        // A call that ends after its task was forgotten leaves nothing behind.
        runs.complete(k.clone(), CallState::InFlight);
        assert!(runs.of("u", 1).is_empty());
        assert_eq!(invocation_id("u", 3, "node1"), "u/3/node1");

        // A newer generation's record drops the older generation's calls, in flight or
        // done, and their late outcomes.
        runs.insert(k.clone(), CallState::InFlight);
        runs.insert(("other".into(), 1, "n".into()), CallState::InFlight);
        let newer = HostTaskStatus::default();
        runs.written("u", 2, &newer, &BTreeMap::new());
        assert!(runs.of("u", 1).is_empty());
        runs.complete(k, CallState::InFlight);
        assert!(runs.of("u", 1).is_empty());
        assert_eq!(runs.of("other", 1).len(), 1, "another task's call stays");
    }
}

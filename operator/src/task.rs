//! The HostTask controller.
//!
//! Each reconcile reads the task, gathers what the rollout needs to know (the task's
//! pooled workers from the Pod cache, its calls from memory, the nodes from the Node
//! cache), lets the pure state machine [`crate::rollout::step`] decide, writes the status
//! ([`crate::report::write_status`]) and then carries out the decisions: ask the
//! [`WorkerPool`] for workers, send calls through the one call path
//! ([`crate::dispatch::send`]) under a lease on the worker. A call runs in a spawned job;
//! when it returns, its outcome waits in memory and the job wakes the task's reconcile at
//! once (through the controller's trigger channel), as does a change of a worker Pod the
//! task waits on. No poll drives the rollout; a slow fallback requeue only catches what
//! no event announces (the start timeout).
//!
//! The status is the record, fenced by the resourceVersion the reconcile read: a deposed
//! leader's write fails instead of overwriting its successor's. A node is marked Running
//! *before* its call is sent. Every call carries the invocation id
//! `<task uid>/<generation>/<node>`; after an operator restart a Running node is resumed
//! by sending the same call to the same worker, which answers the stored outcome instead
//! of running again. So a node runs at most once per generation, and a restart fails no
//! node whose worker lives.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use futures::channel::mpsc::UnboundedReceiver;
use hostplug_api::AccessProfile;
use hostplug_api::protocol::InvokeRequest;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::api::{DeleteParams, Preconditions};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::events::EventType;
use kube::runtime::reflector::{self, ObjectRef};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, ResourceExt};
use tracing::{Instrument, info, info_span, warn};

use crate::client::CallError;
use crate::dispatch::{Calls, FollowUp};
use crate::plugins::LoadedPlugin;
use crate::pool::WorkerKey;
use crate::report::write_status;
use crate::rollout::{self, Action as Step, CallState, Observed};
use crate::validate::{self, CallSite, Invalid, NodeView, PluginView};
use crate::{Context, Error, Result};
use hostplug_api::crd::{
    HostPlugin, HostTask, HostTaskStatus, NodePhase, NodeResult, PluginRef, TaskState,
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

fn now() -> Time {
    Time(Timestamp::now())
}

/// Everything validation needs, fetched.
struct Resolved {
    plugin: HostPlugin,
    loaded: Arc<LoadedPlugin>,
    targets: Vec<String>,
    /// Target nodes the call cannot run on (a `$(node.…)` value they lack, parameters
    /// invalid once replaced), with why: they fail before anything is sent.
    unusable: BTreeMap<String, Invalid>,
    /// `spec.onChange`, resolved.
    follow_ups: Vec<FollowUp>,
}

/// A HostPlugin by name and its loaded module (or why it did not load).
async fn plugin_of(
    ctx: &Context,
    name: &str,
) -> Result<(
    Option<HostPlugin>,
    std::result::Result<Arc<LoadedPlugin>, String>,
)> {
    let hp_api: Api<HostPlugin> = Api::all(ctx.client.clone());
    let hp = hp_api
        .get_opt(name)
        .await
        .map_err(Error::kube(format!("reading HostPlugin {name}")))?;
    let loaded = match &hp {
        Some(hp) => ctx.plugins.resolve(&ctx.client, hp).await,
        None => Err("no HostPlugin".into()),
    };
    Ok((hp, loaded))
}

/// The task's follow-up calls with their plugins, as of now
/// ([`crate::dispatch::resolve_follow_up`]); the first one that is no longer valid (its
/// plugin missing or not loaded) is the error, naming it. Their values are read again
/// for each node's call.
async fn follow_ups_of(
    ctx: &Context,
    task: &HostTask,
) -> Result<std::result::Result<Vec<FollowUp>, String>> {
    let ns = task.namespace().unwrap_or_default();
    let mut out = Vec::with_capacity(task.spec.on_change.len());
    for (i, call) in task.spec.on_change.iter().enumerate() {
        let site = CallSite::TaskOnChange(i);
        match crate::dispatch::resolve_follow_up(ctx, call, site, task.spec.dry_run, Some(&ns))
            .await?
        {
            Ok((f, _)) => out.push(f),
            Err(invalid) => return Ok(Err(invalid.to_string())),
        }
    }
    Ok(Ok(out))
}

async fn resolve(ctx: &Context, task: &HostTask) -> Result<Result<Resolved, Invalid>> {
    let spec = &task.spec;
    let Some(http) = &spec.http else {
        return Ok(Err(Invalid::new(
            "spec.http",
            "set spec.http (a plugin call) or spec.revert (undo another task's change)",
        )));
    };
    let name = &http.call.api;
    let (hp, loaded) = plugin_of(ctx, name).await?;
    let view = PluginView {
        spec: hp.as_ref().map(|h| &h.spec),
        loaded: match &loaded {
            Ok(l) => Ok(&l.info),
            Err(e) => Err(e.as_str()),
        },
    };
    if let Err(e) = validate::check_call(&http.call, CallSite::Task, view, spec.dry_run) {
        return Ok(Err(e));
    }
    let (Some(hp), Ok(loaded)) = (hp.clone(), loaded.clone()) else {
        return Ok(Err(Invalid::new(
            "spec.http.api",
            format!("plugin {name:?} is not ready"),
        )));
    };
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
    // The vars are read now so that a missing ConfigMap, Secret or key fails the task
    // before any node is touched; they are read again for each node's call.
    let ns = task.namespace().unwrap_or_default();
    let values =
        match crate::values::read(&ctx.client, &http.call, CallSite::Task, Some(&ns)).await? {
            Ok(v) => v,
            Err(e) => return Ok(Err(e)),
        };
    // Disruption (issue 25): the maintenance windows parse.
    if let Some(d) = &spec.disruption
        && let Err(e) = crate::disruption::window::parse(&d.maintenance_windows)
    {
        return Ok(Err(e));
    }
    if let Some(r) = &spec.rollout {
        if let Err(e) = validate::check_rollout(r) {
            return Ok(Err(e));
        }
        for (i, c) in r.gate.iter().flat_map(|g| g.checks.iter()).enumerate() {
            let (c_hp, c_loaded) = plugin_of(ctx, &c.call.api).await?;
            let view = PluginView {
                spec: c_hp.as_ref().map(|h| &h.spec),
                loaded: match &c_loaded {
                    Ok(l) => Ok(&l.info),
                    Err(e) => Err(e.as_str()),
                },
            };
            if let Err(e) = validate::check_health_check(c, CallSite::GateCheck(i), view) {
                return Ok(Err(e));
            }
        }
    }
    let views = ctx.node_views();
    let targets = match spec.targets.select_for_task(&views) {
        Ok(t) => t,
        Err(e) => return Ok(Err(e)),
    };
    let mut unusable = BTreeMap::new();
    if let Some(method) = loaded.info.method(&http.call.method)
        && validate::has_references(&http.call.params())
    {
        for view in views.iter().filter(|v| targets.contains(&v.name)) {
            if let Err(e) = values.params_for(&http.call, CallSite::Task, method, view) {
                unusable.insert(view.name.clone(), e);
            }
        }
    }
    // The follow-ups, each checked as the main call is, naming `spec.onChange[i]`.
    let mut follow_ups = Vec::with_capacity(spec.on_change.len());
    for (i, call) in spec.on_change.iter().enumerate() {
        let site = CallSite::TaskOnChange(i);
        let (f, f_values) =
            match crate::dispatch::resolve_follow_up(ctx, call, site, spec.dry_run, Some(&ns))
                .await?
            {
                Ok(r) => r,
                Err(e) => return Ok(Err(e)),
            };
        if let Some(method) = f.loaded.info.method(&call.method)
            && validate::has_references(&call.params())
        {
            for view in views.iter().filter(|v| targets.contains(&v.name)) {
                if let Err(e) = f_values.params_for(call, site, method, view) {
                    unusable.entry(view.name.clone()).or_insert(e);
                }
            }
        }
        follow_ups.push(f);
    }
    Ok(Ok(Resolved {
        plugin: hp,
        loaded,
        targets,
        unusable,
        follow_ups,
    }))
}

/// Reconciles one HostTask, in a span naming it.
async fn reconcile(cached: Arc<HostTask>, ctx: Arc<Context>) -> Result<Action> {
    let span = info_span!(
        "reconcile",
        kind = "HostTask",
        namespace = cached.namespace().unwrap_or_default(),
        name = cached.name_any()
    );
    reconcile_task(cached, ctx).instrument(span).await
}

async fn reconcile_task(cached: Arc<HostTask>, ctx: Arc<Context>) -> Result<Action> {
    ctx.metrics.reconcile();
    let ns = cached
        .namespace()
        .ok_or(Error::MissingObjectKey(".metadata.namespace"))?;
    let name = cached.name_any();
    let api: Api<HostTask> = Api::namespaced(ctx.client.clone(), &ns);
    // The cache may lag behind our own last status write, and it keeps no status at all
    // (to save memory); the status is the record, so read the newest one (its
    // resourceVersion fences the write below).
    let Some(task) = api
        .get_opt(&name)
        .await
        .map_err(Error::kube(format!("reading HostTask {name}")))?
    else {
        if let Some(uid) = cached.uid() {
            forget_calls(&ctx.runs, &uid);
        }
        ctx.pool.forget_waiter(&ObjectRef::new(&name).within(&ns));
        if ctx.pool.per_task() {
            ctx.pool.release_task(&per_task_key(&ns, &name));
        }
        return Ok(Action::await_change());
    };
    let uid = task.uid().ok_or(Error::MissingObjectKey(".metadata.uid"))?;
    if task.metadata.deletion_timestamp.is_some() {
        forget_calls(&ctx.runs, &uid);
        return Ok(after_finish(&ctx, &task));
    }
    let generation = task.metadata.generation.unwrap_or(0);
    let mut status = task.status.clone().unwrap_or_default();
    // Only the rollout's controls changed (pause, resume, cancel): the run goes on.
    let adopted = status.observed_generation != Some(generation)
        && rollout::continues_run(&status, &task.spec);
    if adopted {
        status.run_generation = status.run_generation();
        status.observed_generation = Some(generation);
    }
    let run = status.run_generation().unwrap_or(generation);
    let outcome = if status.observed_generation != Some(generation) {
        start_generation(&ctx, &task, generation).await
    } else if status.state.is_finished() {
        if adopted {
            for c in &mut status.conditions {
                c.observed_generation = Some(generation);
            }
            write_status(&ctx.client, &task, &status).await?;
        }
        expire(&ctx, &api, &task, &status).await
    } else {
        advance(&ctx, &api, &task, &uid, run, status).await
    };
    match outcome {
        // Nothing was recorded, so nothing was sent; outcomes stay in memory.
        Err(Error::Conflict { .. }) => Ok(Action::requeue(CONFLICT_REQUEUE)),
        other => other,
    }
}

/// The worker key of `node` for a task whose calls have `profile`.
fn worker_key(ctx: &Context, task: &HostTask, node: &str, profile: AccessProfile) -> WorkerKey {
    WorkerKey {
        node: node.to_owned(),
        profile,
        port: task.spec.port(),
        task: ctx
            .pool
            .per_task()
            .then(|| per_task_key(&task.namespace().unwrap_or_default(), &task.name_any())),
    }
}

/// One step of a generation in flight: observe, decide ([`rollout::step`]), record,
/// then act.
async fn advance(
    ctx: &Arc<Context>,
    api: &Api<HostTask>,
    task: &HostTask,
    uid: &str,
    generation: i64,
    mut status: HostTaskStatus,
) -> Result<Action> {
    // A revert task calls no plugin: each node's "call" is the revert of the run its
    // status pinned when it started, on a worker that may write /etc.
    let revert = task
        .spec
        .revert
        .as_ref()
        .zip(status.reverted_run.as_ref())
        .map(|(rv, run)| {
            (
                crate::revert::run_identity(&task.namespace().unwrap_or_default(), run),
                rv.force,
            )
        });
    let (hp, loaded) = match &task.spec.http {
        Some(http) => plugin_of(ctx, &http.call.api).await?,
        None => (None, Err(String::new())),
    };
    let loaded = loaded.ok();
    let follow_ups = follow_ups_of(ctx, task).await?;
    let checks = checks_of(ctx, task).await?;
    let pinned = status.plugin.as_ref().map(|p| p.digest.clone());
    let plugin_ok = match (&hp, &loaded) {
        (Some(_), Some(l)) => pinned.as_deref() == Some(l.digest.to_string().as_str()),
        _ => revert.is_some(),
    };
    let caps = hp
        .as_ref()
        .map(|h| h.spec.capabilities.clone())
        .unwrap_or_default();
    let mutates = loaded
        .as_ref()
        .zip(task.spec.http.as_ref())
        .and_then(|(l, http)| l.info.method(&http.call.method))
        .is_none_or(|m| m.mutates);
    let main_access = if revert.is_some() {
        crate::revert::access()
    } else {
        AccessProfile::for_call(&caps, task.spec.dry_run, mutates)
    };
    // A call with follow-ups runs on a worker with the union of their access; each call
    // gets only its own (the request carries it).
    let profile = match &follow_ups {
        Ok(f) => crate::dispatch::sequence_profile(main_access, f),
        Err(_) => main_access,
    };
    // The gate's health checks run on the same worker (read-only access each).
    let profile = crate::dispatch::sequence_profile(profile, &checks);

    // What the rollout looks at.
    let me = ObjectRef::from_obj(task);
    let existing: HashSet<String> = ctx.nodes.state().iter().map(|n| n.name_any()).collect();
    let all_calls = ctx
        .runs
        .select(|k: &RunKey| (k.0 == uid && k.1 == generation).then(|| k.2.clone()));
    let (calls, check_calls) = split_check_calls(all_calls);
    let mut workers = BTreeMap::new();
    let mut pods = BTreeMap::new();
    for n in &status.nodes {
        if !rollout::watches_worker(&status, n) {
            continue;
        }
        if existing.contains(&n.node) {
            let key = worker_key(ctx, task, &n.node, profile);
            let current = ctx.pool.current(&key, &me).map(|pod| {
                let st = ctx.pool.worker_state(&pod);
                (pod, st)
            });
            // A NoExecute taint the worker does not tolerate: no worker can start there,
            // say so now rather than after the start timeout of Pods the kubelet refuses.
            let tainted = ctx
                .nodes
                .get(&ObjectRef::new(&n.node))
                .map(|node| crate::resources::untolerated_no_execute(&node))
                .unwrap_or_default();
            let current = match (current, tainted.first()) {
                (current, Some(taint)) => Some((
                    current.map(|(pod, _)| pod).unwrap_or_default(),
                    rollout::WorkerState::Broken(format!(
                        "node {} has the taint {taint}, which worker Pods do not tolerate \
                         (the kubelet refuses them and the taint manager evicts them)",
                        n.node
                    )),
                )),
                (current, None) => current,
            };
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
        checks: check_calls.clone(),
        ready: ctx
            .nodes
            .state()
            .iter()
            .map(|n| (n.name_any(), rollout::node_is_ready(n)))
            .collect(),
        start_timeout: ctx.config.pod_start_timeout(),
        follow_ups: task.spec.on_change.clone(),
    };
    let rollout_spec = task.spec.rollout.clone().unwrap_or_default();
    // Disruption (issue 25): maintenance windows and the fleet budget gate the start.
    let gate = crate::disruption::gate(
        task.spec.disruption.as_ref(),
        task.spec.dry_run,
        ctx.nodes.state().iter().map(AsRef::as_ref),
        uid,
        generation,
        usize::from(ctx.config.max_disrupted_nodes),
        observed.now,
    );
    let steps = rollout::step_gated(&mut status, &rollout_spec, &observed, gate.as_ref());

    // Workers first (they take seconds to start), then the record, then the calls.
    for s in &steps {
        if let Step::DiscardWorker { node, pod } = s {
            ctx.pool.discard(&worker_key(ctx, task, node, profile), pod);
        }
        if let Step::EnsureWorker { node } = s {
            let key = worker_key(ctx, task, node, profile);
            let ensured = ctx.pool.ensure(&key, Some(me.clone()));
            if let Some(n) = status
                .nodes
                .iter_mut()
                .find(|n| &n.node == node && n.phase == NodePhase::Starting)
            {
                match ensured {
                    Ok(pod) => {
                        n.pod = Some(pod);
                        n.message = None;
                    }
                    // The node is full of busy workers: it waits, and the start
                    // timeout counts from when its worker is asked for.
                    Err(full) => {
                        n.message = Some(full);
                        n.started_at = Some(now());
                    }
                }
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
    write_status(&ctx.client, task, &status).await?;
    // Outcomes now in the status leave memory.
    written(&ctx.runs, uid, generation, &status, &calls);
    written_checks(&ctx.runs, uid, generation, &status, &check_calls);

    for s in steps {
        match s {
            Step::EnsureWorker { .. } | Step::DiscardWorker { .. } => {}
            Step::Call { node, pod, resume } => {
                if let Some((target, force)) = &revert {
                    let key = (uid.to_owned(), generation, node);
                    spawn_revert(ctx, task, key, pod, resume, target.clone(), *force);
                } else if let Some(loaded) = &loaded {
                    let run = Run {
                        key: (uid.to_owned(), generation, node),
                        pod,
                        resume,
                        registry_auth_declared: caps.registry_auth,
                        access: main_access,
                        follow_ups: follow_ups.clone(),
                    };
                    spawn_run(ctx, task, Arc::clone(loaded), run);
                }
            }
            Step::NodeFailed { node, message } => {
                ctx.metrics.node_finished(false);
                ctx.events
                    .publish(
                        task,
                        EventType::Warning,
                        "NodeFailed",
                        None,
                        format!("{node}: {message}"),
                    )
                    .await;
            }
            Step::NodeSucceeded { .. } => ctx.metrics.node_finished(true),
            Step::Check { node, pod, check } => {
                if let Some(c) = checks.get(check) {
                    let key = (uid.to_owned(), generation, check_key(&node, check));
                    spawn_check(ctx, task, c.clone(), check, key, pod);
                }
            }
            // Carried out below from the record, which names the same nodes and, unlike
            // this action, still names them after an operator restart.
            Step::RevertWave { .. } => {}
            Step::Announce {
                warning,
                reason,
                message,
            } => {
                let kind = if warning {
                    EventType::Warning
                } else {
                    EventType::Normal
                };
                ctx.events.publish(task, kind, reason, None, message).await;
            }
        }
    }

    let to_revert = crate::revert::to_revert(&status, &rollout_spec, task.spec.dry_run);
    if !to_revert.is_empty() {
        let wave = status.rollout.as_ref().map_or(0, |r| r.wave);
        revert_wave(ctx, api, task, generation, profile, wave, &to_revert).await?;
    }

    if status.state.is_finished() {
        // A revert task tells the task it reverted (that task's status stays its own).
        crate::revert::announce(ctx, task, &status).await;
        let ok = status.state == TaskState::Succeeded;
        ctx.events
            .publish(
                task,
                if ok {
                    EventType::Normal
                } else {
                    EventType::Warning
                },
                if ok { "Succeeded" } else { "Failed" },
                None,
                status.msg.clone().unwrap_or_default(),
            )
            .await;
        return expire(ctx, api, task, &status).await;
    }
    // A closed maintenance window: look again when the next one opens.
    let wake = gate
        .and_then(|g| g.wake_at())
        .map(|t| Duration::try_from(t.duration_since(Timestamp::now())).unwrap_or_default())
        .map_or(FALLBACK_REQUEUE, |d| d.min(FALLBACK_REQUEUE));
    Ok(Action::requeue(wake))
}

/// A new generation: validate, then record the target nodes as Pending (or the task as
/// Failed) before anything is created.
async fn start_generation(ctx: &Context, task: &HostTask, generation: i64) -> Result<Action> {
    let now_t = now();
    let mut status = HostTaskStatus {
        observed_generation: Some(generation),
        run_generation: Some(generation),
        run_fingerprint: Some(hostplug_api::rollout::run_fingerprint(&task.spec)),
        ..HostTaskStatus::default()
    };
    if task.spec.revert.is_some() {
        return start_revert(ctx, task, status).await;
    }
    // The namespace, plugin and method rules first: a namespace no policy covers learns
    // nothing about the plugins (validation would tell).
    if let Err(denied) = crate::policy::check(ctx, task, &[], &[]).await? {
        return deny(ctx, task, status, &denied).await;
    }
    let Some(http) = &task.spec.http else {
        return refuse(
            ctx,
            task,
            status,
            &Invalid::new(
                "spec.http",
                "set spec.http (a plugin call) or spec.revert (undo another task's change)",
            ),
        )
        .await;
    };
    match resolve(ctx, task).await? {
        Err(invalid) => refuse(ctx, task, status, &invalid).await,
        Ok(r) => {
            // The policy: may this namespace run this, there? Decided before any worker.
            let main_mutates = r
                .loaded
                .info
                .method(&http.call.method)
                .is_none_or(|m| m.mutates);
            let mutating: Vec<bool> = std::iter::once(main_mutates)
                .chain(r.follow_ups.iter().map(|f| {
                    f.loaded
                        .info
                        .method(&f.call.method)
                        .is_none_or(|m| m.mutates)
                }))
                .map(|m| m && !task.spec.dry_run)
                .collect();
            let targets: Vec<NodeView> = ctx
                .node_views()
                .into_iter()
                .filter(|n| r.targets.contains(&n.name))
                .collect();
            if let Err(denied) = crate::policy::check(ctx, task, &mutating, &targets).await? {
                return deny(ctx, task, status, &denied).await;
            }
            status.plugin = Some(PluginRef {
                name: r.plugin.name_any(),
                digest: r.loaded.digest.to_string(),
            });
            status.nodes = r
                .targets
                .iter()
                .map(|n| match r.unusable.get(n) {
                    None => NodeResult {
                        node: n.clone(),
                        ..NodeResult::default()
                    },
                    // Nothing is sent to a node the call cannot run on.
                    Some(why) => NodeResult {
                        node: n.clone(),
                        phase: NodePhase::Failed,
                        message: Some(format!("not run: {why}")),
                        finished_at: Some(now_t.clone()),
                        ..NodeResult::default()
                    },
                })
                .collect();
            crate::status::summarise(&mut status, task.spec.dry_run, &now_t);
            write_status(&ctx.client, task, &status).await?;
            ctx.events
                .publish(
                    task,
                    EventType::Normal,
                    "Started",
                    None,
                    format!(
                        "running {}/{} on {} nodes{}",
                        http.call.api,
                        http.call.method,
                        r.targets.len(),
                        if task.spec.dry_run { " (dry run)" } else { "" }
                    ),
                )
                .await;
            Ok(Action::requeue(Duration::ZERO))
        }
    }
}

/// A task validation refused: Failed with the field and the problem, and an Event,
/// before any worker is asked for.
async fn refuse(
    ctx: &Context,
    task: &HostTask,
    mut status: HostTaskStatus,
    invalid: &Invalid,
) -> Result<Action> {
    let now_t = now();
    status.state = TaskState::Failed;
    status.msg = Some(invalid.to_string());
    status.finished_at = Some(now_t.clone());
    status.progress = Some("0/0".into());
    crate::status::set_conditions(&mut status, TaskState::Failed, &invalid.to_string(), &now_t);
    write_status(&ctx.client, task, &status).await?;
    info!(task = %task.name_any(), problem = %invalid, "task refused");
    ctx.events
        .publish(
            task,
            EventType::Warning,
            "ValidationFailed",
            None,
            invalid.to_string(),
        )
        .await;
    Ok(Action::await_change())
}

/// A new generation of a revert task (`spec.revert`): validate it, plan it from the
/// reverted task as it is now ([`crate::revert::plan`]), check the policy as for the
/// reverted task's call on those nodes, then pin the reverted run
/// (`status.revertedRun`) and record the nodes as Pending — or Failed with "not
/// revertible: …" where the reverted task's result says its record cannot be used.
async fn start_revert(
    ctx: &Context,
    task: &HostTask,
    mut status: HostTaskStatus,
) -> Result<Action> {
    let rv = match validate::check_revert_task(&task.spec) {
        Ok(rv) => rv,
        Err(invalid) => return refuse(ctx, task, status, &invalid).await,
    };
    let ns = task.namespace().unwrap_or_default();
    let api: Api<HostTask> = Api::namespaced(ctx.client.clone(), &ns);
    let target = api
        .get_opt(&rv.task)
        .await
        .map_err(Error::kube(format!("reading HostTask {}", rv.task)))?;
    let plan = match crate::revert::plan(rv, &task.name_any(), &ns, target.as_ref()) {
        Ok(p) => p,
        Err(invalid) => return refuse(ctx, task, status, &invalid).await,
    };
    // The policy sees the revert as the reverted task's own call on these nodes,
    // changing them: a namespace may undo only what it may do.
    let mut as_call = task.clone();
    as_call.spec.http = target.and_then(|t| t.spec.http).map(|mut h| {
        h.call.vars.clear();
        h
    });
    let targets: Vec<NodeView> = ctx
        .node_views()
        .into_iter()
        .filter(|n| plan.nodes.contains(&n.name))
        .collect();
    if let Err(denied) = crate::policy::check(ctx, &as_call, &[true], &targets).await? {
        return deny(ctx, task, status, &denied).await;
    }
    let now_t = now();
    status.nodes = plan
        .nodes
        .iter()
        .map(|n| match plan.not_revertible.get(n) {
            None => NodeResult {
                node: n.clone(),
                ..NodeResult::default()
            },
            Some(why) => NodeResult {
                node: n.clone(),
                phase: NodePhase::Failed,
                message: Some(why.clone()),
                finished_at: Some(now_t.clone()),
                ..NodeResult::default()
            },
        })
        .collect();
    let note = format!(
        "reverting {} (generation {}) on {} nodes{}",
        plan.run.name,
        plan.run.generation,
        plan.nodes.len(),
        if rv.force { ", forced" } else { "" }
    );
    status.reverted_run = Some(plan.run);
    crate::status::summarise(&mut status, false, &now_t);
    write_status(&ctx.client, task, &status).await?;
    ctx.events
        .publish(task, EventType::Normal, "Started", None, note)
        .await;
    Ok(Action::requeue(Duration::ZERO))
}

/// A task no policy allows: Failed with reason `PolicyDenied` and an Event, before any
/// worker is asked for.
async fn deny(
    ctx: &Context,
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
    write_status(&ctx.client, task, &status).await?;
    info!(task = %task.name_any(), namespace = ?task.namespace(), problem = %msg, "task denied by policy");
    ctx.events
        .publish(task, EventType::Warning, POLICY_DENIED, None, msg)
        .await;
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
    hostplug_api::protocol::task_invocation_id(uid, generation, node)
}

/// One node's call, as a step of the rollout decided it.
struct Run {
    key: RunKey,
    pod: String,
    /// Whether this resumes a call of an earlier operator process.
    resume: bool,
    /// Whether the HostPlugin declares `registryAuth` (as of this reconcile).
    registry_auth_declared: bool,
    /// What the main call may touch.
    access: AccessProfile,
    /// `spec.onChange` resolved, or why a plugin of it is not ready (the node fails).
    follow_ups: std::result::Result<Vec<FollowUp>, String>,
}

/// Sends one node's call in the background, under a lease on its worker; the outcome
/// goes to memory and wakes the task.
fn spawn_run(ctx: &Arc<Context>, task: &HostTask, loaded: Arc<LoadedPlugin>, run: Run) {
    let Run {
        key,
        pod,
        resume,
        registry_auth_declared,
        access,
        follow_ups,
    } = run;
    let (uid, generation, node) = &key;
    let Some(call) = task.spec.http.as_ref().map(|h| h.call.clone()) else {
        return;
    };
    let mut req = InvokeRequest::for_call(
        &loaded.digest,
        &call,
        task.spec.dry_run,
        task.spec.timeout_seconds,
        Some(invocation_id(uid, *generation, node)),
    );
    req.access = Some(access);
    // The node keeps what a mutating call changed under this identity, for a revert.
    req.task = Some(crate::revert::identity(task, *generation));
    let namespace = task.namespace().unwrap_or_default();
    let spec = task.spec.clone();
    if resume {
        info!(task = %task.name_any(), %node, %pod, "resuming a call of an earlier operator process");
    }
    let me = ObjectRef::from_obj(task);
    let lease = ctx.pool.lease(&pod, spec.port());
    ctx.runs.start(key.clone());
    let node = node.clone();
    let ctx = Arc::clone(ctx);
    let task_obj = task.clone();
    let (uid, generation) = (key.0.clone(), key.1);
    tokio::spawn(async move {
        let (uid, generation) = (uid.as_str(), &generation);
        let (outcome, values) = async {
            // The vars and the credentials are read per call (a rotated Secret is used at
            // once) and live only in this request; validation already checked the plugin
            // declares the credentials.
            let mut values =
                crate::values::read(&ctx.client, &call, CallSite::Task, Some(&namespace))
                    .await
                    .map_err(|e| CallError::NotSent(e.to_string()))?
                    .map_err(|invalid| CallError::NotSent(invalid.to_string()))?;
            let follow_ups = follow_ups.map_err(CallError::NotSent)?;
            let mut follow_up_values = Vec::with_capacity(follow_ups.len());
            for (i, f) in follow_ups.iter().enumerate() {
                let v = crate::values::read(
                    &ctx.client,
                    &f.call,
                    CallSite::TaskOnChange(i),
                    Some(&namespace),
                )
                .await
                .map_err(|e| CallError::NotSent(e.to_string()))?
                .map_err(|invalid| CallError::NotSent(invalid.to_string()))?;
                values.mask_also(&v);
                follow_up_values.push(v);
            }
            let send = async {
                let method = loaded
                    .info
                    .method(&call.method)
                    .ok_or_else(|| CallError::NotSent("the plugin lost its method".into()))?;
                let view = ctx
                    .node_view(&node)
                    .ok_or_else(|| CallError::NotSent(format!("node {node} no longer exists")))?;
                req.params = values
                    .params_for(&call, CallSite::Task, method, &view)
                    .map_err(|invalid| CallError::NotSent(invalid.to_string()))?;
                let creds = if spec.registry_auth.is_some() && !registry_auth_declared {
                    Err(Invalid::new(
                        "spec.registryAuth",
                        "the HostPlugin no longer declares the registryAuth capability",
                    ))
                } else {
                    crate::registry_auth::read(&ctx.client, &namespace, &spec).await
                };
                req.registry_auth =
                    creds.map_err(|invalid| CallError::NotSent(invalid.to_string()))?;
                req.on_change = crate::dispatch::follow_up_requests(
                    follow_ups.iter().zip(&follow_up_values),
                    CallSite::TaskOnChange,
                    &view,
                )?;
                let plugins: Vec<&LoadedPlugin> = std::iter::once(&*loaded)
                    .chain(follow_ups.iter().map(|f| &*f.loaded))
                    .collect();
                crate::dispatch::send(&ctx, &lease, &plugins, &req).await
            };
            let outcome = disrupted(&ctx, &task_obj, uid, *generation, &node, send).await;
            Ok::<_, CallError>((outcome, values))
        }
        .await
        .unwrap_or_else(|e| (Err(e), crate::values::CallValues::default()));
        drop(req);
        drop(lease);
        // Values from Secrets never reach the record.
        let outcome = values.mask_outcome(outcome);
        // Only if still wanted: a call of a superseded generation or a deleted task
        // was dropped from the record meanwhile, and its outcome goes with it.
        ctx.runs.complete(&key, outcome);
        let _ = ctx.wake.unbounded_send(me);
    });
}

/// Disruption hook (issue 25, `crate::disruption`): a task that may drain or reboot
/// takes the node through its cycle around `send` (the node's call or revert); any
/// other task just sends.
async fn disrupted(
    ctx: &Arc<Context>,
    task: &HostTask,
    uid: &str,
    generation: i64,
    node: &str,
    send: impl std::future::Future<Output = crate::dispatch::NodeOutcome>,
) -> crate::dispatch::NodeOutcome {
    let spec = &task.spec;
    match spec
        .disruption
        .as_ref()
        .filter(|d| d.disrupts(spec.dry_run))
    {
        Some(disruption) => {
            let task_ref = format!(
                "{}/{}",
                task.namespace().unwrap_or_default(),
                task.name_any()
            );
            let cycle = crate::disruption::Cycle {
                task: &task_ref,
                uid,
                generation,
                spec: disruption,
            };
            crate::disruption::node::run(ctx, task, cycle, node, spec.port(), || send).await
        }
        None => {
            crate::disruption::without_cycle(send.await, spec.disruption.as_ref(), spec.dry_run)
        }
    }
}

/// Sends one node's revert (a revert task, `spec.revert`) in the background, under a
/// lease on its worker, through the same disruption hook as a call: the reverted run's
/// record is restored by [`crate::revert::revert_on`] with this task's invocation id for
/// the node (`<uid>/<generation>/<node>`), so the worker restores at most once however
/// often an operator resends it. The outcome goes to memory and wakes the task.
fn spawn_revert(
    ctx: &Arc<Context>,
    task: &HostTask,
    key: RunKey,
    pod: String,
    resume: bool,
    target: hostplug_api::protocol::TaskIdentity,
    force: bool,
) {
    if resume {
        info!(task = %task.name_any(), node = %key.2, %pod, "resuming a revert of an earlier operator process");
    }
    let me = ObjectRef::from_obj(task);
    let lease = ctx.pool.lease(&pod, task.spec.port());
    let timeout = Duration::from_secs(u64::try_from(task.spec.timeout_seconds.max(1)).unwrap_or(1));
    ctx.runs.start(key.clone());
    let ctx = Arc::clone(ctx);
    let task_obj = task.clone();
    tokio::spawn(async move {
        let (uid, generation, node) = &key;
        let id = invocation_id(uid, *generation, node);
        let send = crate::revert::revert_on(&lease, &target, force, timeout, id);
        let outcome = disrupted(&ctx, &task_obj, uid, *generation, node, send).await;
        drop(lease);
        ctx.runs.complete(&key, outcome);
        let _ = ctx.wake.unbounded_send(me);
    });
}

/// `spec.rollout.onFailure: Revert` (issue 26, item 4): the rollout halted at wave
/// `wave`, and `nodes` (its nodes that ran, with no revert recorded yet) are put back to
/// what they were before this task's run `generation`: each through
/// [`crate::revert::revert_on`] on a lease on the node's worker of this task (the
/// worker of its calls, with their /etc write access), then every outcome is recorded
/// in the node's result ([`crate::revert::record`]) and announced. A node whose worker
/// is not Ready yet waits (its worker is asked for; its start wakes the task). A
/// repeat (a lost status write, an operator restart) sends the same revert invocation
/// id, which the worker answers with the stored outcome instead of reverting again.
async fn revert_wave(
    ctx: &Arc<Context>,
    api: &Api<HostTask>,
    task: &HostTask,
    generation: i64,
    profile: AccessProfile,
    wave: i32,
    nodes: &[String],
) -> Result<()> {
    let me = ObjectRef::from_obj(task);
    let target = crate::revert::identity(task, generation);
    let timeout = Duration::from_secs(u64::try_from(task.spec.timeout_seconds.max(1)).unwrap_or(1));
    let mut outcomes = Vec::with_capacity(nodes.len());
    for node in nodes {
        let key = worker_key(ctx, task, node, profile);
        let pod = match ctx.pool.current(&key, &me) {
            Some(pod) if ctx.pool.worker_state(&pod) == rollout::WorkerState::Ready => pod,
            _ => {
                if let Err(full) = ctx.pool.ensure(&key, Some(me.clone())) {
                    warn!(%node, %full, "no worker for the revert yet");
                }
                continue;
            }
        };
        let lease = ctx.pool.lease(&pod, task.spec.port());
        let id = crate::revert::revert_invocation_id(&target, node);
        let outcome = crate::revert::revert_on(&lease, &target, false, timeout, id).await;
        drop(lease);
        outcomes.push((node.clone(), outcome));
    }
    if outcomes.is_empty() {
        return Ok(());
    }
    // The status just written moved the resourceVersion on: record on the newest one.
    let Some(fresh) = api
        .get_opt(&task.name_any())
        .await
        .map_err(Error::kube(format!("reading HostTask {}", task.name_any())))?
    else {
        return Ok(());
    };
    if fresh.uid() != task.uid() {
        return Ok(());
    }
    let mut status = fresh.status.clone().unwrap_or_default();
    let (mut reverted, mut failed) = (Vec::new(), Vec::new());
    for (node, outcome) in &outcomes {
        let Some(n) = status.nodes.iter_mut().find(|n| &n.node == node) else {
            continue;
        };
        crate::revert::record(n, outcome);
        match outcome {
            Ok(_) => reverted.push(node.as_str()),
            Err(e) => failed.push(format!("{node}: {e}")),
        }
    }
    write_status(&ctx.client, &fresh, &status).await?;
    if !reverted.is_empty() {
        ctx.events
            .publish(
                task,
                EventType::Normal,
                "RolledBack",
                None,
                format!(
                    "wave {wave} halted and onFailure is Revert: reverted {}",
                    reverted.join(", ")
                ),
            )
            .await;
    }
    if !failed.is_empty() {
        ctx.events
            .publish(
                task,
                EventType::Warning,
                "RevertFailed",
                None,
                format!("wave {wave}: not reverted: {}", failed.join("; ")),
            )
            .await;
    }
    Ok(())
}

/// The gate's health checks with their plugins, as of now, each with read-only access
/// (validation refused mutating methods). A check whose plugin is gone is left out here
/// and fails on the node instead ([`spawn_check`] finds no plugin).
async fn checks_of(ctx: &Context, task: &HostTask) -> Result<Vec<FollowUp>> {
    let gate = task.spec.rollout.as_ref().and_then(|r| r.gate.as_ref());
    let mut out = Vec::new();
    for c in gate.iter().flat_map(|g| g.checks.iter()) {
        let (Some(hp), Ok(loaded)) = plugin_of(ctx, &c.call.api).await? else {
            continue;
        };
        out.push(FollowUp {
            call: c.call.clone(),
            access: AccessProfile::for_call(&hp.spec.capabilities, true, false),
            loaded,
        });
    }
    Ok(out)
}

/// The key under which a node's health check `i` is kept with the calls: node names
/// have no `/`, so it never meets a node's own key.
fn check_key(node: &str, i: usize) -> String {
    format!("{node}/check/{i}")
}

/// Splits this generation's calls into the nodes' calls and the health checks.
fn split_check_calls(
    all: BTreeMap<String, CallState>,
) -> (
    BTreeMap<String, CallState>,
    BTreeMap<(String, usize), CallState>,
) {
    let mut calls = BTreeMap::new();
    let mut checks = BTreeMap::new();
    for (k, v) in all {
        match k.split_once("/check/") {
            Some((node, i)) => {
                if let Ok(i) = i.parse() {
                    checks.insert((node.to_owned(), i), v);
                }
            }
            None => {
                calls.insert(k, v);
            }
        }
    }
    (calls, checks)
}

/// Drops the health-check outcomes `status` now records.
fn written_checks(
    runs: &Calls<RunKey>,
    uid: &str,
    generation: i64,
    status: &HostTaskStatus,
    seen: &BTreeMap<(String, usize), CallState>,
) {
    for ((node, i), state) in seen {
        let recorded = status
            .nodes
            .iter()
            .find(|n| &n.node == node)
            .and_then(|n| n.checks.get(*i))
            .is_none_or(|c| c.phase.is_finished());
        if recorded && matches!(state, CallState::Done(..)) {
            runs.remove(&(uid.to_owned(), generation, check_key(node, *i)));
        }
    }
}

/// Sends one health check to a node's worker in the background, as a dry run with
/// read-only access, through the one call path; the outcome goes to memory and wakes
/// the task. Its invocation id is the node's with `/check/<i>`.
fn spawn_check(
    ctx: &Arc<Context>,
    task: &HostTask,
    check: FollowUp,
    index: usize,
    key: RunKey,
    pod: String,
) {
    let (uid, generation, id_node) = &key;
    let Some(node) = id_node.split_once('/').map(|(n, _)| n.to_owned()) else {
        return;
    };
    let mut req = InvokeRequest::for_call(
        &check.loaded.digest,
        &check.call,
        true,
        task.spec.timeout_seconds,
        Some(invocation_id(uid, *generation, id_node)),
    );
    req.access = Some(check.access);
    let namespace = task.namespace().unwrap_or_default();
    let me = ObjectRef::from_obj(task);
    let lease = ctx.pool.lease(&pod, task.spec.port());
    ctx.runs.start(key.clone());
    let ctx = Arc::clone(ctx);
    tokio::spawn(async move {
        let site = CallSite::GateCheck(index);
        let (outcome, values) = async {
            let values = crate::values::read(&ctx.client, &check.call, site, Some(&namespace))
                .await
                .map_err(|e| CallError::NotSent(e.to_string()))?
                .map_err(|invalid| CallError::NotSent(invalid.to_string()))?;
            let method = check
                .loaded
                .info
                .method(&check.call.method)
                .ok_or_else(|| CallError::NotSent("the plugin lost its method".into()))?;
            let view = ctx
                .node_view(&node)
                .ok_or_else(|| CallError::NotSent(format!("node {node} no longer exists")))?;
            req.params = values
                .params_for(&check.call, site, method, &view)
                .map_err(|invalid| CallError::NotSent(invalid.to_string()))?;
            let outcome = crate::dispatch::send(&ctx, &lease, &[&*check.loaded], &req).await;
            Ok::<_, CallError>((outcome, values))
        }
        .await
        .unwrap_or_else(|e| (Err(e), crate::values::CallValues::default()));
        drop(lease);
        let outcome = values.mask_outcome(outcome);
        ctx.runs.complete(&key, outcome);
        let _ = ctx.wake.unbounded_send(me);
    });
}

fn error_policy(task: Arc<HostTask>, err: &Error, ctx: Arc<Context>) -> Action {
    warn!(task = %task.name_any(), error = %err, "HostTask reconcile failed");
    ctx.metrics.reconcile_error();
    Action::requeue(ERROR_REQUEUE)
}

/// Runs the HostTask controller until `shutdown` resolves. Tasks are woken by `wake`
/// (a call returned, a worker changed) besides their own changes. The controller's cache
/// keeps each task without its status: every reconcile reads the newest object anyway,
/// and 1000 finished tasks' per-node results would otherwise stay in memory.
pub async fn run_controller(
    ctx: Arc<Context>,
    wake: UnboundedReceiver<ObjectRef<HostTask>>,
    shutdown: impl std::future::Future<Output = ()> + Send + Sync + 'static,
) {
    // Every namespace: a task outside the operator's own gets a status either way (run
    // under a HostTaskPolicy, or Failed with PolicyDenied).
    let tasks: Api<HostTask> = Api::all(ctx.client.clone());
    let (reader, writer) = reflector::store();
    let stream = reflector::reflector(
        writer,
        watcher(tasks, watcher::Config::default())
            .default_backoff()
            .modify(|t| {
                t.status = None;
                t.metadata.managed_fields = None;
                t.metadata.annotations = None;
            }),
    )
    .applied_objects();
    Controller::for_stream(stream, reader)
        .reconcile_on(wake)
        .graceful_shutdown_on(shutdown)
        .run(reconcile, error_policy, ctx)
        .for_each(|_| futures::future::ready(()))
        .await;
}

/// The key of this process's record of one node's call: task uid, generation, node.
pub type RunKey = (String, i64, String);

/// Drops the finished calls whose outcome `status` now records (those in `seen` that
/// were done and whose node is finished), and every call of older generations.
fn written(
    runs: &Calls<RunKey>,
    uid: &str,
    generation: i64,
    status: &HostTaskStatus,
    seen: &BTreeMap<String, CallState>,
) {
    for n in status.nodes.iter().filter(|n| n.phase.is_finished()) {
        if matches!(seen.get(&n.node), Some(CallState::Done(..))) {
            runs.remove(&(uid.to_owned(), generation, n.node.clone()));
        }
    }
    runs.retain(|k, _| k.0 != uid || k.1 >= generation);
}

/// Drops every call of a task.
fn forget_calls(runs: &Calls<RunKey>, uid: &str) {
    runs.retain(|k, _| k.0 != uid);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dispatch::Success;

    fn of(runs: &Calls<RunKey>, uid: &str, generation: i64) -> BTreeMap<String, CallState> {
        runs.select(|k: &RunKey| (k.0 == uid && k.1 == generation).then(|| k.2.clone()))
    }

    #[test]
    fn runs_keep_outcomes_until_written() {
        let runs = Calls::<RunKey>::default();
        let k: RunKey = ("u".into(), 1, "n".into());
        assert!(of(&runs, "u", 1).is_empty());
        runs.start(k.clone());
        assert_eq!(of(&runs, "u", 1).get("n"), Some(&CallState::InFlight));
        runs.complete(
            &k,
            Ok(Success {
                changed: false,
                diff: None,
                output: serde_json::json!({}),
                logs: vec![],
                follow_ups: vec![],
                revert: None,
                reboot_required: None,
            }),
        );
        let seen = of(&runs, "u", 1);
        assert!(matches!(seen.get("n"), Some(CallState::Done(Ok(_), _))));
        // Not yet recorded (the node is still Running in the status): kept.
        let mut status = HostTaskStatus {
            nodes: vec![NodeResult {
                node: "n".into(),
                phase: NodePhase::Running,
                ..Default::default()
            }],
            ..Default::default()
        };
        written(&runs, "u", 1, &status, &seen);
        assert_eq!(of(&runs, "u", 1).len(), 1);
        status.nodes[0].phase = NodePhase::Succeeded;
        written(&runs, "u", 1, &status, &seen);
        assert!(of(&runs, "u", 1).is_empty());
        runs.start(k.clone());
        forget_calls(&runs, "u");
        assert!(of(&runs, "u", 1).is_empty());
        // A call that ends after its task was forgotten leaves nothing behind.
        runs.complete(&k, Err(CallError::NotSent("gone".into())));
        assert!(of(&runs, "u", 1).is_empty());
        assert_eq!(invocation_id("u", 3, "node1"), "u/3/node1");

        // A newer generation's record drops the older generation's calls, in flight or
        // done, and their late outcomes.
        runs.start(k.clone());
        runs.start(("other".into(), 1, "n".into()));
        let newer = HostTaskStatus::default();
        written(&runs, "u", 2, &newer, &BTreeMap::new());
        assert!(of(&runs, "u", 1).is_empty());
        runs.complete(&k, Err(CallError::NotSent("late".into())));
        assert!(of(&runs, "u", 1).is_empty());
        assert_eq!(of(&runs, "other", 1).len(), 1, "another task's call stays");
    }
}

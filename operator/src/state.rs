//! The HostState controller: continuous host state, checked on every selected node and
//! reported (`Audit`) or corrected (`Enforce`).
//!
//! One runner per HostState (started and stopped by [`run_controller`], which follows a
//! reflector cache of the states) runs *rounds*. A round starts when the state's
//! generation changes, when the set of selected nodes changes (a node joins, or its labels
//! move it into or out of the selector: the runner compares against the operator's Node
//! cache every [`TICK`]), and every `spec.intervalSeconds`. A round:
//!
//! 1. validates the steps (plugin ready, method known and mutating, parameters valid,
//!    capabilities) before any node is touched; a bad step ends the round with a status
//!    and an Event naming `spec.steps[i].<field>`;
//! 2. resends a correction an earlier operator process recorded as in flight (same
//!    invocation ids: the worker answers from its outcome store, so nothing runs twice);
//! 3. checks every selected node: each step as a dry run on the node's warm pool worker;
//!    a step that would change the node is drift;
//! 4. in `Enforce` mode corrects the drifted nodes `rollout.maxParallel` at a time: records
//!    them `Correcting` with their invocation id prefix
//!    `<uid>/<generation>/<node>/c<corrections>` *before* sending, runs the drifted steps
//!    for real (the worker holds the node lock for them), checks again;
//! 5. writes the status once, and only when something besides the check times changed.
//!
//! Two states whose steps touch the same file (same plugin, same `parameter.path`) on the
//! same node conflict: the node is reported on both and corrected by neither. The same
//! holds when a node corrected by one state is found drifted by another that corrected it
//! before (flip-flop between two states the path rule did not catch).
//!
//! Deleting a HostState stops its runner; nodes stay as they are (no finalizer).
//! Nothing here writes to a node except through a worker call.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use futures::StreamExt;
use hostplug_api::crd::{DEFAULT_WORKER_PORT, HostPlugin, HostTask, HostTaskSpec};
use hostplug_api::protocol::InvokeRequest;
use hostplug_api::state::{
    HostState, HostStateSpec, HostStateStatus, NodeStateStatus, NodeSync, StateMode, StateStep,
    StepDrift,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Patch, PatchParams};
use kube::runtime::events::{Event, EventType};
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Resource, ResourceExt};
use serde_json::json;
use tracing::{info, warn};

use crate::client::CallError;
use crate::plugins::LoadedPlugin;
use crate::pool::{Profile, WorkerKey};
use crate::rollout::{NodeOutcome, WorkerState};
use crate::validate::{self, Invalid, NodeView};
use crate::{Context, Error, FIELD_MANAGER, Result};

/// How often runners look at the state and Node caches for a new generation or a change
/// of the selected nodes: 1 s. Both are in-memory lookups; a second is well inside what
/// "at once" means for a node that just joined.
pub const TICK: Duration = Duration::from_secs(1);
/// Nodes of one state checked at once: 32. A check is a few millisecond-long calls on
/// warm workers; 32 in flight checks 200 nodes in a handful of batches without opening
/// hundreds of connections at once.
pub const CHECK_PARALLEL: usize = 32;
/// How often a runner looks at a worker it waits for: 200 ms (an in-memory cache lookup).
const WORKER_POLL: Duration = Duration::from_millis(200);
/// Pause before a round that failed (API error, lost write) is tried again: 5 s.
const ERROR_RETRY: Duration = Duration::from_secs(5);
/// Largest diff kept per drifted step: 4 KiB. Drift is usually a line or two; the diff
/// says which, not the whole file.
pub const MAX_DRIFT_DIFF_BYTES: usize = 4 * 1024;
/// Budget of all drift diffs in one status: 256 KiB. etcd refuses objects above 1.5 MiB;
/// beyond the budget drifted steps keep their index without the diff.
pub const MAX_DRIFT_TOTAL_BYTES: usize = 256 * 1024;
/// Longest node message: 1 KiB (a worker's error, or a conflict note).
const MAX_NODE_MESSAGE_BYTES: usize = 1024;
/// Nodes named in one Event: 20; the rest are counted ("and 180 more").
const MAX_EVENT_NODES: usize = 20;

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

fn now() -> Time {
    Time(Timestamp::now())
}

// ---------------------------------------------------------------------------------------
// Pure parts: selection, validation mapping, conflicts, status summary.
// ---------------------------------------------------------------------------------------

/// The nodes a state selects among `nodes`, sorted. Unlike a task, a state selecting no
/// node (or naming one that has not joined yet) is not an error: nodes may join later.
pub fn selected_nodes(spec: &HostStateSpec, nodes: &[NodeView]) -> Result<Vec<String>, Invalid> {
    let mut out = Vec::new();
    if !spec.workers.is_empty() {
        let wanted: BTreeSet<&str> = spec.workers.iter().map(String::as_str).collect();
        out.extend(
            nodes
                .iter()
                .filter(|n| wanted.contains(n.name.as_str()))
                .map(|n| n.name.clone()),
        );
    } else if let Some(target) = spec.target_type {
        for node in nodes {
            let by_role = match target {
                hostplug_api::crd::TargetType::All => true,
                hostplug_api::crd::TargetType::Master => node.is_control_plane(),
                hostplug_api::crd::TargetType::Node => !node.is_control_plane(),
            };
            let by_selector = match &spec.node_selector {
                Some(sel) => validate::selector_matches(sel, &node.labels)?,
                None => true,
            };
            if by_role && by_selector {
                out.push(node.name.clone());
            }
        }
    }
    out.sort();
    out.dedup();
    Ok(out)
}

/// A step seen as a HostTask spec, so HostTask's validation rules apply unchanged.
fn step_as_task(step: &StateStep, dry_run: bool) -> Result<HostTaskSpec, Invalid> {
    serde_json::from_value(json!({
        "targetType": "All",
        "http": {"api": step.api, "method": step.method, "parameter": step.parameter},
        "dryRun": dry_run,
    }))
    .map_err(|e| Invalid {
        field: "spec.steps".into(),
        problem: format!("cannot be read as a plugin call: {e}"),
    })
}

/// HostTask's field names (`spec.http.method`) as the step's (`spec.steps[2].method`).
fn step_field(i: usize, invalid: Invalid) -> Invalid {
    let field = match invalid.field.strip_prefix("spec.http.") {
        Some(rest) => format!("spec.steps[{i}].{rest}"),
        None => invalid.field,
    };
    Invalid {
        field,
        problem: invalid.problem,
    }
}

/// What a step's plugin looked like when the round resolved it.
#[derive(Debug)]
pub struct PluginView<'a> {
    /// The HostPlugin's spec, if there is one.
    pub spec: Option<&'a hostplug_api::crd::HostPluginSpec>,
    /// Its description when loaded, or why it is not.
    pub loaded: Result<&'a hostplug_api::PluginInfo, &'a str>,
}

/// Validates step `i` against its plugin: exists and ready, method known, the method
/// changes the node (only those have a dry run that can report drift), parameters match
/// its schema, and the plugin may write when the state enforces.
pub fn validate_step(
    i: usize,
    step: &StateStep,
    mode: StateMode,
    plugin: &PluginView<'_>,
) -> Result<(), Invalid> {
    let dry_run = mode == StateMode::Audit;
    let spec = step_as_task(step, dry_run).map_err(|e| step_field(i, e))?;
    let (info, ready, message) = match plugin.loaded {
        Ok(info) => (Some(info), true, None),
        Err(m) => (None, false, Some(m)),
    };
    let method = validate::resolve_method(
        &spec,
        &step.api,
        plugin.spec.map(|s| (s, info, ready, message)),
    )
    .map_err(|e| step_field(i, e))?;
    if !method.mutates {
        return Err(Invalid {
            field: format!("spec.steps[{i}].method"),
            problem: format!(
                "method {:?} of plugin {:?} does not change the node (mutates: false), so its \
                 dry run cannot report drift; a state step must name a mutating method",
                step.method, step.api
            ),
        });
    }
    validate::check_params(&spec, method).map_err(|e| step_field(i, e))?;
    if let Some(hp) = plugin.spec {
        validate::check_capabilities(&spec, &step.api, hp, method).map_err(|e| {
            let mut e = step_field(i, e);
            e.problem = e
                .problem
                .replace("run it with spec.dryRun: true", "use spec.mode: Audit");
            e
        })?;
    }
    Ok(())
}

/// What a step touches, for conflict detection: plugin and normalised `parameter.path`.
pub fn file_keys(spec: &HostStateSpec) -> BTreeSet<(String, String)> {
    spec.steps
        .iter()
        .filter_map(|s| {
            let path = s.parameter.as_ref()?.get("path")?.as_str()?;
            Some((s.api.clone(), normalise_path(path)))
        })
        .collect()
}

/// `/etc//a/./b` → `/etc/a/b` (`..` is left alone: the plugin refuses what escapes).
fn normalise_path(p: &str) -> String {
    let parts: Vec<&str> = p
        .split('/')
        .filter(|s| !s.is_empty() && *s != ".")
        .collect();
    format!("/{}", parts.join("/"))
}

/// One HostState as conflict detection sees it.
#[derive(Debug, Clone)]
pub struct StateFootprint {
    /// HostState name.
    pub name: String,
    /// The files its steps touch.
    pub files: BTreeSet<(String, String)>,
    /// Its selected nodes.
    pub nodes: BTreeSet<String>,
}

/// For `me`: the nodes shared with another state touching one of the same files, each
/// with the names of those states.
pub fn path_conflicts(
    me: &StateFootprint,
    others: &[StateFootprint],
) -> BTreeMap<String, BTreeSet<String>> {
    let mut out: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for o in others.iter().filter(|o| o.name != me.name) {
        if me.files.is_disjoint(&o.files) {
            continue;
        }
        for n in me.nodes.intersection(&o.nodes) {
            out.entry(n.clone()).or_default().insert(o.name.clone());
        }
    }
    out
}

/// Cuts diffs and messages to their limits, then to the status-wide diff budget.
pub fn cap_status(nodes: &mut [NodeStateStatus]) {
    let mut used = 0usize;
    for n in nodes.iter_mut() {
        if let Some(m) = n.message.take() {
            n.message = Some(crate::status::truncate_str(&m, MAX_NODE_MESSAGE_BYTES));
        }
        for d in &mut n.drift {
            if let Some(diff) = d.diff.take() {
                let diff = crate::status::truncate_str(&diff, MAX_DRIFT_DIFF_BYTES);
                if used + diff.len() <= MAX_DRIFT_TOTAL_BYTES {
                    used += diff.len();
                    d.diff = Some(diff);
                }
            }
        }
    }
}

/// Fills counts, summary, `sync` and the `InSync` condition from `status.nodes`.
pub fn summarise(status: &mut HostStateStatus, mode: StateMode, now: &Time) {
    let count = |s: &[NodeSync]| {
        i32::try_from(status.nodes.iter().filter(|n| s.contains(&n.sync)).count())
            .unwrap_or(i32::MAX)
    };
    status.nodes_total = i32::try_from(status.nodes.len()).unwrap_or(i32::MAX);
    status.nodes_in_sync = count(&[NodeSync::InSync]);
    status.nodes_drifted = count(&[NodeSync::Drifted, NodeSync::Correcting]);
    status.nodes_failed = count(&[NodeSync::Failed]);
    status.sync = Some(format!("{}/{}", status.nodes_in_sync, status.nodes_total));
    let (cond, reason, msg) = if status.nodes_total == 0 {
        ("True", "NoNodes", "no node is selected".to_owned())
    } else if !status.conflicts.is_empty() {
        (
            "False",
            "Conflict",
            format!(
                "steps touch the same file as HostState {} on some nodes; those nodes are not corrected",
                status.conflicts.join(", ")
            ),
        )
    } else if status.nodes_in_sync == status.nodes_total {
        (
            "True",
            "InSync",
            format!("{0}/{0} nodes in sync", status.nodes_total),
        )
    } else if status.nodes_failed > 0 {
        (
            "False",
            "Failed",
            format!(
                "{}/{} nodes in sync, {} drifted, {} failed ({})",
                status.nodes_in_sync,
                status.nodes_total,
                status.nodes_drifted,
                status.nodes_failed,
                mode
            ),
        )
    } else {
        (
            "False",
            "Drifted",
            format!(
                "{}/{} nodes in sync, {} drifted ({})",
                status.nodes_in_sync, status.nodes_total, status.nodes_drifted, mode
            ),
        )
    };
    status.message = Some(msg.clone());
    set_condition(
        &mut status.conditions,
        Condition {
            type_: "InSync".into(),
            status: cond.into(),
            reason: reason.into(),
            message: msg,
            observed_generation: status.observed_generation,
            last_transition_time: now.clone(),
        },
    );
}

/// Replaces the condition of the same type, keeping its transition time when its status
/// did not change.
fn set_condition(conds: &mut Vec<Condition>, mut new: Condition) {
    if let Some(old) = conds.iter_mut().find(|c| c.type_ == new.type_) {
        if old.status == new.status {
            new.last_transition_time = old.last_transition_time.clone();
        }
        *old = new;
    } else {
        conds.push(new);
    }
}

/// Whether two statuses differ in more than their check times (the rule for writing).
pub fn differs(a: &HostStateStatus, b: &HostStateStatus) -> bool {
    fn strip(s: &HostStateStatus) -> HostStateStatus {
        let mut s = s.clone();
        s.last_check_time = None;
        for n in &mut s.nodes {
            n.last_check_time = None;
        }
        s
    }
    strip(a) != strip(b)
}

/// The invocation id prefix of a node's `n`th correction; the step index is appended per
/// call (`…/s<step>`). Derived only from what the status records, so an operator that
/// restarts sends the same ids.
pub fn correction_id(uid: &str, generation: i64, node: &str, n: i64) -> String {
    format!("{uid}/{generation}/{node}/c{n}")
}

// ---------------------------------------------------------------------------------------
// Shared in-memory state: metrics and flip-flop detection.
// ---------------------------------------------------------------------------------------

/// Upper bounds (seconds) of the check latency histogram: one node's check, every step.
const LATENCY_BUCKETS: [f64; 11] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

#[derive(Debug, Default)]
struct MetricsInner {
    nodes: BTreeMap<String, [u64; 3]>,
    checks: BTreeMap<String, u64>,
    corrections: BTreeMap<String, u64>,
    rounds: BTreeMap<String, u64>,
    writes: BTreeMap<String, u64>,
    buckets: [u64; LATENCY_BUCKETS.len()],
    sum: f64,
    count: u64,
}

/// The HostState metrics (rendered with the operator's others).
#[derive(Debug, Default)]
pub struct StateMetrics(Mutex<MetricsInner>);

impl StateMetrics {
    /// One node's check of `state` took `d`.
    pub fn check(&self, state: &str, d: Duration) {
        let mut m = lock(&self.0);
        *m.checks.entry(state.to_owned()).or_default() += 1;
        let secs = d.as_secs_f64();
        for (i, le) in LATENCY_BUCKETS.iter().enumerate() {
            if secs <= *le {
                m.buckets[i] += 1;
            }
        }
        m.sum += secs;
        m.count += 1;
    }
    /// One node of `state` was corrected (successfully or not).
    pub fn correction(&self, state: &str) {
        *lock(&self.0)
            .corrections
            .entry(state.to_owned())
            .or_default() += 1;
    }
    /// A round of `state` started (after validation).
    pub fn round(&self, state: &str) {
        *lock(&self.0).rounds.entry(state.to_owned()).or_default() += 1;
    }
    /// A status write of `state` went through.
    pub fn status_write(&self, state: &str) {
        *lock(&self.0).writes.entry(state.to_owned()).or_default() += 1;
    }
    /// The node counts of `state` after a round.
    pub fn set_nodes(&self, state: &str, in_sync: i32, drifted: i32, failed: i32) {
        let c = |v: i32| u64::try_from(v).unwrap_or(0);
        lock(&self.0)
            .nodes
            .insert(state.to_owned(), [c(in_sync), c(drifted), c(failed)]);
    }
    /// `state` is gone: its gauges go (its counters stay, as counters do).
    pub fn forget(&self, state: &str) {
        lock(&self.0).nodes.remove(state);
    }

    /// The Prometheus text exposition of these metrics.
    pub fn render(&self) -> String {
        use std::fmt::Write;
        let m = lock(&self.0);
        let mut s = String::new();
        s.push_str("# HELP hostplug_state_nodes Nodes of a HostState by sync state.\n# TYPE hostplug_state_nodes gauge\n");
        for (name, [i, d, f]) in &m.nodes {
            let _ = writeln!(
                s,
                "hostplug_state_nodes{{state=\"{name}\",sync=\"in_sync\"}} {i}\n\
                 hostplug_state_nodes{{state=\"{name}\",sync=\"drifted\"}} {d}\n\
                 hostplug_state_nodes{{state=\"{name}\",sync=\"failed\"}} {f}"
            );
        }
        s.push_str("# HELP hostplug_state_checks_total Node checks (every step as a dry run) of a HostState.\n# TYPE hostplug_state_checks_total counter\n");
        for (name, v) in &m.checks {
            let _ = writeln!(s, "hostplug_state_checks_total{{state=\"{name}\"}} {v}");
        }
        s.push_str("# HELP hostplug_state_corrections_total Node corrections of a HostState.\n# TYPE hostplug_state_corrections_total counter\n");
        for (name, v) in &m.corrections {
            let _ = writeln!(
                s,
                "hostplug_state_corrections_total{{state=\"{name}\"}} {v}"
            );
        }
        s.push_str("# HELP hostplug_state_rounds_total Check rounds of a HostState.\n# TYPE hostplug_state_rounds_total counter\n");
        for (name, v) in &m.rounds {
            let _ = writeln!(s, "hostplug_state_rounds_total{{state=\"{name}\"}} {v}");
        }
        s.push_str("# HELP hostplug_state_status_writes_total Status writes of a HostState.\n# TYPE hostplug_state_status_writes_total counter\n");
        for (name, v) in &m.writes {
            let _ = writeln!(
                s,
                "hostplug_state_status_writes_total{{state=\"{name}\"}} {v}"
            );
        }
        s.push_str("# HELP hostplug_state_check_seconds Time of one node's check, every step.\n# TYPE hostplug_state_check_seconds histogram\n");
        for (le, n) in LATENCY_BUCKETS.iter().zip(m.buckets) {
            let _ = writeln!(s, "hostplug_state_check_seconds_bucket{{le=\"{le}\"}} {n}");
        }
        let _ = writeln!(
            s,
            "hostplug_state_check_seconds_bucket{{le=\"+Inf\"}} {0}\nhostplug_state_check_seconds_sum {1}\nhostplug_state_check_seconds_count {0}",
            m.count, m.sum
        );
        s
    }
}

/// Which state corrected which node when, to catch two states undoing each other.
#[derive(Debug, Default)]
pub struct FlipFlops {
    inner: Mutex<FlipInner>,
}

#[derive(Debug, Default)]
struct FlipInner {
    seq: u64,
    /// (node, state) → sequence number of the state's last correction of the node.
    last: HashMap<(String, String), u64>,
    /// Pairs of states (sorted) found undoing each other, with the nodes.
    pairs: BTreeMap<(String, String), BTreeSet<String>>,
}

impl FlipFlops {
    /// `state` is about to correct `node`: the other state that corrected it after
    /// `state` did (so the drift is likely its doing), recorded as a conflict pair.
    pub fn suspect(&self, node: &str, state: &str) -> Option<String> {
        let mut f = lock(&self.inner);
        let mine = *f.last.get(&(node.to_owned(), state.to_owned()))?;
        let other = f
            .last
            .iter()
            .filter(|((n, s), seq)| n == node && s != state && **seq > mine)
            .map(|((_, s), _)| s.clone())
            .next()?;
        let pair = if state < other.as_str() {
            (state.to_owned(), other.clone())
        } else {
            (other.clone(), state.to_owned())
        };
        f.pairs.entry(pair).or_default().insert(node.to_owned());
        Some(other)
    }
    /// `state` corrected `node`.
    pub fn corrected(&self, node: &str, state: &str) {
        let mut f = lock(&self.inner);
        f.seq += 1;
        let seq = f.seq;
        f.last.insert((node.to_owned(), state.to_owned()), seq);
    }
    /// The flip-flop conflicts of `state`: node → other states.
    pub fn of(&self, state: &str) -> BTreeMap<String, BTreeSet<String>> {
        let f = lock(&self.inner);
        let mut out: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        for ((a, b), nodes) in &f.pairs {
            let other = if a == state {
                b
            } else if b == state {
                a
            } else {
                continue;
            };
            for n in nodes {
                out.entry(n.clone()).or_default().insert(other.clone());
            }
        }
        out
    }
    /// `state` changed or went away: its records and conflicts are void.
    pub fn forget(&self, state: &str) {
        let mut f = lock(&self.inner);
        f.last.retain(|(_, s), _| s != state);
        f.pairs.retain(|(a, b), _| a != state && b != state);
    }
}

/// What the HostState runners share besides the operator's [`Context`].
#[derive(Debug, Default)]
pub struct Shared {
    flips: FlipFlops,
}

// ---------------------------------------------------------------------------------------
// Calls.
// ---------------------------------------------------------------------------------------

/// A validated step with its plugin and the worker profile it runs on.
struct Plan {
    index: usize,
    step: StateStep,
    loaded: Arc<LoadedPlugin>,
    profile: Profile,
}

/// A node's check: the drifted steps (empty: in sync), or why it could not be checked.
type Checked = Result<Vec<StepDrift>, String>;

/// The pool wants a task to wake when a worker changes; runners poll instead, under a
/// name no HostTask can have (`:` is not allowed in object names).
fn waiter(ctx: &Context, state: &str) -> ObjectRef<HostTask> {
    ObjectRef::new(&format!("hoststate:{state}")).within(&ctx.config.namespace)
}

async fn ready_worker(
    ctx: &Arc<Context>,
    key: &WorkerKey,
    who: &ObjectRef<HostTask>,
) -> Result<String, CallError> {
    let deadline = Instant::now() + ctx.config.pod_start_timeout();
    loop {
        let pod = ctx.pool.ensure(key, who.clone());
        match ctx.pool.worker_state(&pod) {
            WorkerState::Ready => return Ok(pod),
            WorkerState::Broken(m) => return Err(CallError::Worker(m)),
            WorkerState::Starting(_) | WorkerState::Gone => {}
        }
        if Instant::now() > deadline {
            return Err(CallError::Unreachable(format!(
                "worker Pod {pod} not ready within {:?}",
                ctx.config.pod_start_timeout()
            )));
        }
        tokio::time::sleep(WORKER_POLL).await;
    }
}

async fn call_step(
    ctx: &Arc<Context>,
    who: &ObjectRef<HostTask>,
    node: &str,
    plan: &Plan,
    timeout_seconds: i32,
    correction: Option<String>,
) -> NodeOutcome {
    let key = WorkerKey {
        node: node.to_owned(),
        profile: plan.profile,
        port: DEFAULT_WORKER_PORT,
        task: None,
    };
    let pod = ready_worker(ctx, &key, who).await?;
    let req = InvokeRequest {
        digest: plan.loaded.digest.to_string(),
        method: plan.step.method.clone(),
        params: plan.step.parameter.clone().unwrap_or_else(|| json!({})),
        dry_run: correction.is_none(),
        timeout_ms: Some(u64::try_from(timeout_seconds.max(1)).unwrap_or(60) * 1000),
        invocation_id: correction,
        registry_auth: None,
    };
    ctx.pool.begin_call(&pod);
    let started = Instant::now();
    let out = crate::task::call(ctx, &pod, DEFAULT_WORKER_PORT, &plan.loaded, &req).await;
    ctx.metrics.invocation(started.elapsed());
    ctx.pool.end_call(&pod);
    out
}

async fn check_node(
    ctx: &Arc<Context>,
    who: &ObjectRef<HostTask>,
    state: &str,
    node: &str,
    plans: &[Plan],
    timeout: i32,
) -> Checked {
    let started = Instant::now();
    let mut drift = Vec::new();
    for p in plans {
        match call_step(ctx, who, node, p, timeout, None).await {
            Ok(s) if s.changed => drift.push(StepDrift {
                step: i32::try_from(p.index).unwrap_or(i32::MAX),
                diff: s.diff,
            }),
            Ok(_) => {}
            Err(e) => {
                return Err(format!(
                    "checking step {} ({}/{}): {e}",
                    p.index, p.step.api, p.step.method
                ));
            }
        }
    }
    ctx.metrics.states.check(state, started.elapsed());
    Ok(drift)
}

/// Runs the drifted steps of a node for real, in order, with the ids under `prefix`, then
/// checks the node again.
#[allow(clippy::too_many_arguments)]
async fn correct_node(
    ctx: &Arc<Context>,
    who: &ObjectRef<HostTask>,
    state: &str,
    node: &str,
    plans: &[Plan],
    drift: &[StepDrift],
    prefix: &str,
    timeout: i32,
) -> Checked {
    for d in drift {
        let Some(p) = plans
            .iter()
            .find(|p| i32::try_from(p.index).ok() == Some(d.step))
        else {
            continue;
        };
        let id = format!("{prefix}/s{}", p.index);
        if let Err(e) = call_step(ctx, who, node, p, timeout, Some(id)).await {
            return Err(format!(
                "correcting step {} ({}/{}): {e}",
                p.index, p.step.api, p.step.method
            ));
        }
    }
    let after = check_node(ctx, who, state, node, plans, timeout).await?;
    if after.is_empty() {
        Ok(after)
    } else {
        let steps: Vec<String> = after.iter().map(|d| d.step.to_string()).collect();
        Err(format!(
            "still drifted after the correction (steps {}): something else keeps changing the node",
            steps.join(", ")
        ))
    }
}

// ---------------------------------------------------------------------------------------
// Status and events.
// ---------------------------------------------------------------------------------------

/// Writes a state's status: server-side apply fenced by the resourceVersion of `current`,
/// which is replaced by the written object.
async fn write_status(
    ctx: &Context,
    current: &mut HostState,
    status: &HostStateStatus,
) -> Result<()> {
    let name = current.name_any();
    let api: Api<HostState> = Api::all(ctx.client.clone());
    let patch = json!({
        "apiVersion": "hostplug.dev/v1alpha1",
        "kind": "HostState",
        "metadata": {"resourceVersion": current.resource_version()},
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
        Ok(written) => {
            ctx.metrics.states.status_write(&name);
            *current = written;
            Ok(())
        }
        Err(kube::Error::Api(e)) if e.code == 409 => Err(Error::Conflict(name)),
        Err(e) => Err(Error::Kube {
            context: format!("writing status of HostState {name}"),
            source: e,
        }),
    }
}

/// Publishes an Event about `state`; with `node`, the Node is its related object, so
/// repeats for one node are counted as a series of one Event, and distinct nodes are
/// distinct Events (the recorder merges Events of equal reason and objects).
async fn publish(
    ctx: &Context,
    state: &HostState,
    type_: EventType,
    reason: &str,
    node: Option<&str>,
    note: String,
) {
    let ev = Event {
        type_,
        reason: reason.into(),
        note: Some(crate::status::truncate_str(&note, 1000)),
        action: "Check".into(),
        secondary: node.map(|n| k8s_openapi::api::core::v1::ObjectReference {
            api_version: Some("v1".into()),
            kind: Some("Node".into()),
            name: Some(n.to_owned()),
            ..Default::default()
        }),
    };
    if let Err(e) = ctx.recorder.publish(&ev, &state.object_ref(&())).await {
        warn!(error = %e, "publishing an event failed");
    }
}

/// One Event per node for the first [`MAX_EVENT_NODES`] of `items` (node, note), then one
/// Event counting the rest.
async fn publish_nodes(
    ctx: &Context,
    state: &HostState,
    type_: EventType,
    reason: &str,
    items: &[(String, String)],
) {
    for (node, note) in items.iter().take(MAX_EVENT_NODES) {
        publish(ctx, state, type_, reason, Some(node), note.clone()).await;
    }
    if items.len() > MAX_EVENT_NODES {
        publish(
            ctx,
            state,
            type_,
            reason,
            None,
            format!("and {} more nodes", items.len() - MAX_EVENT_NODES),
        )
        .await;
    }
}

/// `step 0` or `steps 0, 2`.
fn steps_text(drift: &[StepDrift]) -> String {
    let steps: Vec<String> = drift.iter().map(|d| d.step.to_string()).collect();
    format!(
        "step{} {}",
        if steps.len() == 1 { "" } else { "s" },
        steps.join(", ")
    )
}

// ---------------------------------------------------------------------------------------
// The round.
// ---------------------------------------------------------------------------------------

/// A HostPlugin and its loaded module (or why it did not load).
type Resolved = (HostPlugin, Result<Arc<LoadedPlugin>, String>);

/// Resolves and validates every step: the plans, or the first problem.
async fn plan(ctx: &Context, state: &HostState) -> Result<Result<Vec<Plan>, Invalid>> {
    let hp_api: Api<HostPlugin> = Api::all(ctx.client.clone());
    let mut plugins: HashMap<String, Option<Resolved>> = HashMap::new();
    let mut plans = Vec::new();
    for (i, step) in state.spec.steps.iter().enumerate() {
        if !plugins.contains_key(&step.api) {
            let hp = hp_api
                .get_opt(&step.api)
                .await
                .map_err(Error::kube(format!("reading HostPlugin {}", step.api)))?;
            let entry = match hp {
                Some(hp) => {
                    let loaded = ctx.plugins.resolve(&ctx.client, &hp).await;
                    Some((hp, loaded))
                }
                None => None,
            };
            plugins.insert(step.api.clone(), entry);
        }
        let entry = plugins.get(&step.api).and_then(Option::as_ref);
        let view = PluginView {
            spec: entry.map(|(hp, _)| &hp.spec),
            loaded: match entry.map(|(_, l)| l) {
                Some(Ok(l)) => Ok(&l.info),
                Some(Err(e)) => Err(e.as_str()),
                None => Err("no HostPlugin"),
            },
        };
        if let Err(e) = validate_step(i, step, state.spec.mode, &view) {
            return Ok(Err(e));
        }
        let Some((hp, Ok(loaded))) = entry else {
            return Ok(Err(Invalid {
                field: format!("spec.steps[{i}].api"),
                problem: format!("plugin {:?} is not ready", step.api),
            }));
        };
        let dry_run = state.spec.mode == StateMode::Audit;
        plans.push(Plan {
            index: i,
            step: step.clone(),
            loaded: Arc::clone(loaded),
            profile: Profile {
                etc: crate::resources::etc_access(&hp.spec.capabilities, dry_run, true),
                docker: hp.spec.capabilities.docker,
                containerd: hp.spec.capabilities.containerd,
            },
        });
    }
    Ok(Ok(plans))
}

/// The cluster's nodes, from the Node cache.
fn node_views(ctx: &Context) -> Vec<NodeView> {
    ctx.nodes
        .state()
        .iter()
        .filter_map(|n| NodeView::from_node(n))
        .collect()
}

/// Every state's footprint, from the state cache and the Node cache.
fn footprints(states: &Store<HostState>, nodes: &[NodeView]) -> Vec<StateFootprint> {
    states
        .state()
        .iter()
        .filter(|s| s.metadata.deletion_timestamp.is_none())
        .map(|s| StateFootprint {
            name: s.name_any(),
            files: file_keys(&s.spec),
            nodes: selected_nodes(&s.spec, nodes)
                .unwrap_or_default()
                .into_iter()
                .collect(),
        })
        .collect()
}

/// One round for the state `name`. Returns the generation it checked.
async fn round(
    ctx: &Arc<Context>,
    shared: &Shared,
    states: &Store<HostState>,
    name: &str,
) -> Result<Option<i64>> {
    let api: Api<HostState> = Api::all(ctx.client.clone());
    let Some(mut current) = api
        .get_opt(name)
        .await
        .map_err(Error::kube(format!("reading HostState {name}")))?
    else {
        return Ok(None);
    };
    if current.metadata.deletion_timestamp.is_some() {
        return Ok(None);
    }
    let uid = current
        .uid()
        .ok_or(Error::MissingObjectKey(".metadata.uid"))?;
    let generation = current.metadata.generation.unwrap_or(0);
    let spec = current.spec.clone();
    let prior = current.status.clone().unwrap_or_default();
    let t = now();
    let who = waiter(ctx, name);

    let plans = match plan(ctx, &current).await? {
        Ok(p) => p,
        Err(invalid) => {
            let mut status = HostStateStatus {
                observed_generation: Some(generation),
                message: Some(invalid.to_string()),
                nodes: prior.nodes.clone(),
                conditions: prior.conditions.clone(),
                ..HostStateStatus::default()
            };
            summarise(&mut status, spec.mode, &t);
            status.message = Some(invalid.to_string());
            set_condition(
                &mut status.conditions,
                Condition {
                    type_: "InSync".into(),
                    status: "False".into(),
                    reason: "Invalid".into(),
                    message: invalid.to_string(),
                    observed_generation: Some(generation),
                    last_transition_time: t.clone(),
                },
            );
            if differs(&prior, &status) {
                write_status(ctx, &mut current, &status).await?;
                info!(state = %name, problem = %invalid, "state refused");
                publish(
                    ctx,
                    &current,
                    EventType::Warning,
                    "ValidationFailed",
                    None,
                    invalid.to_string(),
                )
                .await;
            }
            return Ok(Some(generation));
        }
    };

    ctx.metrics.states.round(name);
    let views = node_views(ctx);
    let selected = match selected_nodes(&spec, &views) {
        Ok(s) => s,
        Err(e) => {
            // An unknown selector operator: the API server's schema lets it through.
            let mut status = prior.clone();
            status.observed_generation = Some(generation);
            status.message = Some(e.to_string());
            if differs(&prior, &status) {
                write_status(ctx, &mut current, &status).await?;
                publish(
                    ctx,
                    &current,
                    EventType::Warning,
                    "ValidationFailed",
                    None,
                    e.to_string(),
                )
                .await;
            }
            return Ok(Some(generation));
        }
    };
    let all = footprints(states, &views);
    let me = StateFootprint {
        name: name.to_owned(),
        files: file_keys(&spec),
        nodes: selected.iter().cloned().collect(),
    };
    let mut conflicts = path_conflicts(&me, &all);
    for (n, others) in shared.flips.of(name) {
        if me.nodes.contains(&n) {
            conflicts.entry(n).or_default().extend(others);
        }
    }

    let prior_nodes: BTreeMap<String, NodeStateStatus> = prior
        .nodes
        .iter()
        .map(|n| (n.node.clone(), n.clone()))
        .collect();

    // An earlier process recorded corrections in flight: send the same ids again; the
    // worker answers the stored outcome (or runs a call that never arrived). The check
    // below records the result.
    let resumed: Vec<(String, NodeStateStatus)> = prior_nodes
        .values()
        .filter(|n| n.pending_correction.is_some() && me.nodes.contains(&n.node))
        .map(|n| (n.node.clone(), n.clone()))
        .collect();
    let mut resume_failed: BTreeMap<String, String> = BTreeMap::new();
    for (node, n) in &resumed {
        if let Some(prefix) = &n.pending_correction {
            info!(state = %name, %node, %prefix, "resuming a correction of an earlier operator process");
            if let Err(e) = correct_node(
                ctx,
                &who,
                name,
                node,
                &plans,
                &n.drift,
                prefix,
                spec.timeout_seconds,
            )
            .await
            {
                resume_failed.insert(node.clone(), e);
            }
        }
    }

    // Check every selected node.
    let checks: BTreeMap<String, Checked> = futures::stream::iter(selected.iter().cloned())
        .map(|node| {
            let (ctx, who, plans) = (ctx, &who, &plans);
            async move {
                let r = check_node(ctx, who, name, &node, plans, spec.timeout_seconds).await;
                (node, r)
            }
        })
        .buffer_unordered(CHECK_PARALLEL)
        .collect()
        .await;

    let mut status = HostStateStatus {
        observed_generation: Some(generation),
        conditions: prior.conditions.clone(),
        conflicts: conflicts
            .values()
            .flatten()
            .cloned()
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect(),
        ..HostStateStatus::default()
    };
    let mut newly_drifted: Vec<(String, Vec<StepDrift>)> = Vec::new();
    for node in &selected {
        let old = prior_nodes.get(node);
        let mut n = NodeStateStatus {
            node: node.clone(),
            corrections: old.map_or(0, |o| o.corrections),
            last_correction_time: old.and_then(|o| o.last_correction_time.clone()),
            last_check_time: Some(t.clone()),
            ..NodeStateStatus::default()
        };
        match checks.get(node) {
            Some(Ok(drift)) if drift.is_empty() => n.sync = NodeSync::InSync,
            Some(Ok(drift)) => {
                n.sync = NodeSync::Drifted;
                n.drift = drift.clone();
                if !old.is_some_and(|o| o.sync == NodeSync::Drifted && o.drift == n.drift) {
                    newly_drifted.push((node.clone(), drift.clone()));
                }
            }
            Some(Err(e)) => {
                n.sync = NodeSync::Failed;
                n.message = Some(e.clone());
            }
            None => n.sync = NodeSync::Pending,
        }
        if let Some(e) = resume_failed.get(node)
            && n.sync != NodeSync::InSync
        {
            n.sync = NodeSync::Failed;
            n.message = Some(e.clone());
        }
        if let Some(others) = conflicts.get(node) {
            let names: Vec<&str> = others.iter().map(String::as_str).collect();
            n.message = Some(format!(
                "conflict: HostState {} changes the same file here; not corrected by either",
                names.join(", ")
            ));
        }
        status.nodes.push(n);
    }
    let drift_notes: Vec<(String, String)> = newly_drifted
        .iter()
        .map(|(n, d)| {
            let note = format!(
                "{n}: {} would change the node{}",
                steps_text(d),
                if spec.mode == StateMode::Audit {
                    " (Audit: not corrected)"
                } else {
                    ""
                }
            );
            (n.clone(), note)
        })
        .collect();
    publish_nodes(
        ctx,
        &current,
        EventType::Warning,
        "DriftDetected",
        &drift_notes,
    )
    .await;

    if spec.mode == StateMode::Enforce {
        enforce(
            ctx,
            shared,
            &mut current,
            &mut status,
            &plans,
            &conflicts,
            &uid,
            generation,
        )
        .await?;
    }

    cap_status(&mut status.nodes);
    summarise(&mut status, spec.mode, &t);
    status.last_check_time = Some(t.clone());
    ctx.metrics.states.set_nodes(
        name,
        status.nodes_in_sync,
        status.nodes_drifted,
        status.nodes_failed,
    );
    let before = current.status.clone().unwrap_or_default();
    if differs(&before, &status) {
        write_status(ctx, &mut current, &status).await?;
    }
    if before.conflicts != status.conflicts && !status.conflicts.is_empty() {
        publish(
            ctx,
            &current,
            EventType::Warning,
            "Conflict",
            None,
            status
                .conditions
                .iter()
                .find(|c| c.type_ == "InSync")
                .map(|c| c.message.clone())
                .unwrap_or_default(),
        )
        .await;
    }
    Ok(Some(generation))
}

/// Corrects the drifted, unconflicted nodes of `status`, `maxParallel` at a time.
#[allow(clippy::too_many_arguments)]
async fn enforce(
    ctx: &Arc<Context>,
    shared: &Shared,
    current: &mut HostState,
    status: &mut HostStateStatus,
    plans: &[Plan],
    conflicts: &BTreeMap<String, BTreeSet<String>>,
    uid: &str,
    generation: i64,
) -> Result<()> {
    let name = current.name_any();
    let who = waiter(ctx, &name);
    let rollout = current.spec.rollout.clone().unwrap_or_default();
    let timeout = current.spec.timeout_seconds;
    let mut todo: Vec<String> = Vec::new();
    for n in &status.nodes {
        if n.sync != NodeSync::Drifted || conflicts.contains_key(&n.node) {
            continue;
        }
        if let Some(other) = shared.flips.suspect(&n.node, &name) {
            warn!(state = %name, node = %n.node, %other, "two states undo each other's corrections");
            continue;
        }
        todo.push(n.node.clone());
    }
    // Flip-flops found just now are conflicts of this round already.
    for (node, others) in shared.flips.of(&name) {
        if let Some(n) = status.nodes.iter_mut().find(|n| n.node == node) {
            let names: Vec<&str> = others.iter().map(String::as_str).collect();
            n.message = Some(format!(
                "conflict: HostState {} undid this state's correction here (or this one undid its); not corrected by either",
                names.join(", ")
            ));
            for o in others {
                if !status.conflicts.contains(&o) {
                    status.conflicts.push(o);
                }
            }
        }
    }
    status.conflicts.sort();
    let mut failures = 0i32;
    let batch = usize::try_from(rollout.max_parallel.max(1)).unwrap_or(1);
    let mut stopped = false;
    for chunk in todo.chunks(batch) {
        if stopped {
            for node in chunk {
                if let Some(n) = status.nodes.iter_mut().find(|n| &n.node == node) {
                    n.message = Some(format!(
                        "not corrected: more than rollout.maxFailures ({}) corrections failed in this round",
                        rollout.max_failures
                    ));
                }
            }
            continue;
        }
        // The record first: who is being corrected, with which ids.
        let mut work = Vec::new();
        for node in chunk {
            if let Some(n) = status.nodes.iter_mut().find(|n| &n.node == node) {
                n.corrections += 1;
                let prefix = correction_id(uid, generation, node, n.corrections);
                n.pending_correction = Some(prefix.clone());
                n.sync = NodeSync::Correcting;
                work.push((node.clone(), n.drift.clone(), prefix));
            }
        }
        let mut record = status.clone();
        summarise(&mut record, StateMode::Enforce, &now());
        cap_status(&mut record.nodes);
        write_status(ctx, current, &record).await?;
        let results: Vec<(String, Vec<StepDrift>, Checked)> =
            futures::future::join_all(work.into_iter().map(|(node, drift, prefix)| {
                let (who, plans, name) = (&who, plans, &name);
                async move {
                    let r =
                        correct_node(ctx, who, name, &node, plans, &drift, &prefix, timeout).await;
                    (node, drift, r)
                }
            }))
            .await;
        let mut fixed = Vec::new();
        let mut failed = Vec::new();
        for (node, drift, r) in results {
            ctx.metrics.states.correction(&name);
            shared.flips.corrected(&node, &name);
            let Some(n) = status.nodes.iter_mut().find(|n| n.node == node) else {
                continue;
            };
            n.pending_correction = None;
            n.last_correction_time = Some(now());
            match r {
                Ok(_) => {
                    n.sync = NodeSync::InSync;
                    n.drift.clear();
                    n.message = None;
                    fixed.push((node, drift));
                }
                Err(e) => {
                    n.sync = NodeSync::Failed;
                    n.message = Some(e.clone());
                    failures += 1;
                    failed.push((node, e));
                }
            }
        }
        let notes: Vec<(String, String)> = fixed
            .iter()
            .map(|(n, d)| (n.clone(), format!("{n}: corrected {}", steps_text(d))))
            .collect();
        publish_nodes(ctx, current, EventType::Normal, "Corrected", &notes).await;
        let notes: Vec<(String, String)> = failed
            .iter()
            .map(|(n, e)| (n.clone(), format!("{n}: {e}")))
            .collect();
        publish_nodes(ctx, current, EventType::Warning, "CorrectionFailed", &notes).await;
        if failures > rollout.max_failures {
            stopped = true;
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------
// Runners.
// ---------------------------------------------------------------------------------------

/// Runs rounds for one state until it is deleted (the supervisor then aborts the runner).
async fn run_state(ctx: Arc<Context>, shared: Arc<Shared>, states: Store<HostState>, name: String) {
    let mut last: Option<(i64, Vec<String>)> = None;
    let mut due = Instant::now();
    loop {
        let Some(state) = states.state().into_iter().find(|s| s.name_any() == name) else {
            return;
        };
        let generation = state.metadata.generation.unwrap_or(0);
        let selected = selected_nodes(&state.spec, &node_views(&ctx)).unwrap_or_default();
        let interval =
            Duration::from_secs(u64::try_from(state.spec.interval_seconds.max(1)).unwrap_or(300));
        let changed = match &last {
            None => true,
            Some((g, nodes)) => *g != generation || *nodes != selected,
        };
        if changed || Instant::now() >= due {
            if last.as_ref().is_some_and(|(g, _)| *g != generation) {
                shared.flips.forget(&name);
            }
            match round(&ctx, &shared, &states, &name).await {
                Ok(Some(_)) => {
                    last = Some((generation, selected));
                    due = Instant::now() + interval;
                }
                Ok(None) => return,
                Err(e) => {
                    warn!(state = %name, error = %e, "HostState round failed");
                    ctx.metrics.reconcile_error();
                    // Try again soon; a conflict usually means the spec just changed.
                    last = Some((generation, selected));
                    due = Instant::now() + ERROR_RETRY;
                }
            }
        }
        tokio::time::sleep(TICK).await;
    }
}

/// Runs the HostState controller until `shutdown` resolves: a reflector over the states
/// and one runner per state. The Node cache is filled by the task controller.
pub async fn run_controller(
    ctx: Arc<Context>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) {
    let (store, writer) = reflector::store();
    let api: Api<HostState> = Api::all(ctx.client.clone());
    let refl = tokio::spawn(
        reflector::reflector(writer, watcher(api, watcher::Config::default()))
            .default_backoff()
            .touched_objects()
            .for_each(|_| futures::future::ready(())),
    );
    let shared = Arc::new(Shared::default());
    let supervise = {
        let ctx = Arc::clone(&ctx);
        let store = store.clone();
        async move {
            if store.wait_until_ready().await.is_err() {
                warn!("the HostState cache never filled");
            }
            // The task controller fills the Node and worker Pod caches and then adopts the
            // previous process's workers; runners start after that, so a correction resumed
            // after a restart reaches the worker holding its outcome. (Waiting on those
            // caches here as well would steal the task controller's wake-up: a reflector
            // store wakes only the last of several concurrent waiters.)
            ctx.pool.wait_adopted().await;
            let mut runners: HashMap<String, (String, tokio::task::JoinHandle<()>)> =
                HashMap::new();
            loop {
                let live: HashMap<String, String> = store
                    .state()
                    .iter()
                    .filter(|s| s.metadata.deletion_timestamp.is_none())
                    .map(|s| (s.name_any(), s.uid().unwrap_or_default()))
                    .collect();
                runners.retain(|name, (uid, handle)| {
                    let keep = live.get(name) == Some(uid) && !handle.is_finished();
                    if !keep {
                        handle.abort();
                        ctx.metrics.states.forget(name);
                        shared.flips.forget(name);
                        ctx.pool.forget_waiter(&waiter(&ctx, name));
                        info!(state = %name, "HostState gone: no longer checked");
                    }
                    keep
                });
                for (name, uid) in live {
                    if runners.contains_key(&name) {
                        continue;
                    }
                    info!(state = %name, "checking a HostState");
                    let handle = tokio::spawn(run_state(
                        Arc::clone(&ctx),
                        Arc::clone(&shared),
                        store.clone(),
                        name.clone(),
                    ));
                    runners.insert(name, (uid, handle));
                }
                tokio::time::sleep(TICK).await;
            }
        }
    };
    let supervisor = tokio::spawn(supervise);
    shutdown.await;
    supervisor.abort();
    refl.abort();
}

#[cfg(test)]
mod tests {
    use super::*;
    use hostplug_api::crd::{Capabilities, EtcAccess, HostPluginSpec, MethodInfo, PluginInfo};

    fn spec(v: serde_json::Value) -> HostStateSpec {
        serde_json::from_value(v.clone()).unwrap_or_else(|e| panic!("{e}: {v}"))
    }

    fn view(name: &str, labels: &[(&str, &str)]) -> NodeView {
        NodeView {
            name: name.into(),
            labels: labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        }
    }

    fn nodes() -> Vec<NodeView> {
        vec![
            view("master", &[("node-role.kubernetes.io/control-plane", "")]),
            view("node1", &[("pool", "a")]),
            view("node2", &[("pool", "b")]),
        ]
    }

    #[test]
    fn selection_follows_hosttask_rules_without_failing_on_no_nodes() {
        let s = spec(json!({"targetType": "Node", "steps": [{"api": "x", "method": "y"}]}));
        assert_eq!(
            selected_nodes(&s, &nodes()),
            Ok(vec!["node1".into(), "node2".into()])
        );
        let s = spec(
            json!({"targetType": "All", "nodeSelector": {"matchLabels": {"pool": "b"}}, "steps": [{"api": "x", "method": "y"}]}),
        );
        assert_eq!(selected_nodes(&s, &nodes()), Ok(vec!["node2".into()]));
        let s =
            spec(json!({"workers": ["node1", "node9"], "steps": [{"api": "x", "method": "y"}]}));
        assert_eq!(selected_nodes(&s, &nodes()), Ok(vec!["node1".into()]));
        let s = spec(
            json!({"targetType": "All", "nodeSelector": {"matchLabels": {"pool": "z"}}, "steps": [{"api": "x", "method": "y"}]}),
        );
        assert_eq!(selected_nodes(&s, &nodes()), Ok(vec![]));
    }

    fn etc_file(etc: EtcAccess) -> (HostPluginSpec, PluginInfo) {
        let hp: HostPluginSpec = serde_json::from_value(json!({"source": {"builtin": "etc-file"}}))
            .unwrap_or_else(|e| panic!("{e}"));
        let hp = HostPluginSpec {
            capabilities: Capabilities {
                etc,
                docker: false,
                ..Default::default()
            },
            ..hp
        };
        let info = PluginInfo {
            name: "etc-file".into(),
            methods: vec![
                MethodInfo {
                    name: "ensure-line".into(),
                    mutates: true,
                    params_schema: Some(json!({
                        "type": "object", "required": ["path", "line"],
                        "properties": {"path": {"type": "string"}, "line": {"type": "string"}}
                    })),
                    ..MethodInfo::default()
                },
                MethodInfo {
                    name: "read".into(),
                    mutates: false,
                    ..MethodInfo::default()
                },
            ],
            ..PluginInfo::default()
        };
        (hp, info)
    }

    fn step(method: &str, parameter: serde_json::Value) -> StateStep {
        StateStep {
            api: "etc-file".into(),
            method: method.into(),
            parameter: Some(parameter),
        }
    }

    #[test]
    fn a_bad_step_is_named_with_its_field() {
        let (hp, info) = etc_file(EtcAccess::Write);
        let ok = PluginView {
            spec: Some(&hp),
            loaded: Ok(&info),
        };
        let good = step("ensure-line", json!({"path": "/etc/a", "line": "x"}));
        assert_eq!(validate_step(0, &good, StateMode::Enforce, &ok), Ok(()));

        let e = validate_step(
            2,
            &step("read", json!({"path": "/etc/a"})),
            StateMode::Audit,
            &ok,
        )
        .err()
        .map(|e| e.field);
        assert_eq!(e.as_deref(), Some("spec.steps[2].method"));

        let e = validate_step(1, &step("nope", json!({})), StateMode::Audit, &ok)
            .err()
            .map(|e| e.field);
        assert_eq!(e.as_deref(), Some("spec.steps[1].method"));

        let e = validate_step(
            3,
            &step("ensure-line", json!({"path": "/etc/a", "line": 5})),
            StateMode::Audit,
            &ok,
        )
        .err()
        .map(|e| e.field);
        assert_eq!(e.as_deref(), Some("spec.steps[3].parameter.line"));

        let missing = PluginView {
            spec: None,
            loaded: Err("no HostPlugin"),
        };
        let e = validate_step(0, &good, StateMode::Audit, &missing)
            .err()
            .map(|e| e.field);
        assert_eq!(e.as_deref(), Some("spec.steps[0].api"));

        // A read-only plugin may audit, not enforce.
        let (ro, info) = etc_file(EtcAccess::Read);
        let ro = PluginView {
            spec: Some(&ro),
            loaded: Ok(&info),
        };
        assert_eq!(validate_step(0, &good, StateMode::Audit, &ro), Ok(()));
        let e = validate_step(0, &good, StateMode::Enforce, &ro).err();
        assert!(
            e.as_ref()
                .is_some_and(|e| e.field == "spec.steps[0].method" && e.problem.contains("Audit")),
            "{e:?}"
        );
    }

    #[test]
    fn states_sharing_a_file_conflict_on_shared_nodes_only() {
        let a = spec(
            json!({"targetType": "All", "steps": [{"api": "etc-file", "method": "ensure-line", "parameter": {"path": "/etc/x.conf", "line": "a"}}]}),
        );
        let b = spec(
            json!({"workers": ["node2"], "steps": [{"api": "etc-file", "method": "ensure-line", "parameter": {"path": "/etc//./x.conf", "line": "b"}}]}),
        );
        let c = spec(
            json!({"targetType": "All", "steps": [{"api": "etc-file", "method": "ensure-line", "parameter": {"path": "/etc/y.conf", "line": "c"}}]}),
        );
        let fp = |name: &str, s: &HostStateSpec| StateFootprint {
            name: name.into(),
            files: file_keys(s),
            nodes: selected_nodes(s, &nodes())
                .unwrap_or_default()
                .into_iter()
                .collect(),
        };
        let all = vec![fp("a", &a), fp("b", &b), fp("c", &c)];
        let of_a = path_conflicts(&all[0], &all);
        assert_eq!(of_a.len(), 1, "{of_a:?}");
        assert_eq!(of_a.get("node2").map(|s| s.contains("b")), Some(true));
        assert_eq!(path_conflicts(&all[1], &all).len(), 1);
        assert!(path_conflicts(&all[2], &all).is_empty());
    }

    #[test]
    fn flip_flops_are_caught_on_the_second_round() {
        let f = FlipFlops::default();
        // a corrects, b corrects (first time: nothing to suspect), a finds drift again.
        assert_eq!(f.suspect("n1", "a"), None);
        f.corrected("n1", "a");
        assert_eq!(f.suspect("n1", "b"), None);
        f.corrected("n1", "b");
        assert_eq!(f.suspect("n1", "a").as_deref(), Some("b"));
        assert!(f.of("a").get("n1").is_some_and(|s| s.contains("b")));
        assert!(f.of("b").get("n1").is_some_and(|s| s.contains("a")));
        assert!(!f.of("a").contains_key("n2"));
        f.forget("b");
        assert!(f.of("a").is_empty());
        // A state that corrects the same node twice alone is no flip-flop.
        f.corrected("n2", "a");
        f.corrected("n2", "a");
        assert_eq!(f.suspect("n2", "a"), None);
    }

    #[test]
    fn summary_counts_and_condition() {
        let t = now();
        let node = |n: &str, sync| NodeStateStatus {
            node: n.into(),
            sync,
            ..NodeStateStatus::default()
        };
        let mut s = HostStateStatus {
            nodes: vec![
                node("a", NodeSync::InSync),
                node("b", NodeSync::Drifted),
                node("c", NodeSync::Correcting),
                node("d", NodeSync::Failed),
            ],
            ..HostStateStatus::default()
        };
        summarise(&mut s, StateMode::Enforce, &t);
        assert_eq!(
            (
                s.nodes_total,
                s.nodes_in_sync,
                s.nodes_drifted,
                s.nodes_failed
            ),
            (4, 1, 2, 1)
        );
        assert_eq!(s.sync.as_deref(), Some("1/4"));
        let c = s.conditions.iter().find(|c| c.type_ == "InSync").cloned();
        assert_eq!(
            c.map(|c| (c.status, c.reason)),
            Some(("False".into(), "Failed".into()))
        );
        for n in &mut s.nodes {
            n.sync = NodeSync::InSync;
        }
        summarise(&mut s, StateMode::Enforce, &t);
        let c = s.conditions.iter().find(|c| c.type_ == "InSync").cloned();
        assert_eq!(c.map(|c| c.status), Some("True".into()));
    }

    #[test]
    fn check_times_alone_are_no_reason_to_write() {
        let a = HostStateStatus {
            nodes: vec![NodeStateStatus {
                node: "n".into(),
                sync: NodeSync::InSync,
                ..NodeStateStatus::default()
            }],
            ..HostStateStatus::default()
        };
        let mut b = a.clone();
        b.last_check_time = Some(now());
        b.nodes[0].last_check_time = Some(now());
        assert!(!differs(&a, &b));
        b.nodes[0].sync = NodeSync::Drifted;
        assert!(differs(&a, &b));
    }

    #[test]
    fn capped_diffs_and_stable_correction_ids() {
        let mut nodes: Vec<NodeStateStatus> = (0..100)
            .map(|i| NodeStateStatus {
                node: format!("n{i}"),
                sync: NodeSync::Drifted,
                drift: vec![StepDrift {
                    step: 0,
                    diff: Some("+".repeat(10_000)),
                }],
                ..NodeStateStatus::default()
            })
            .collect();
        cap_status(&mut nodes);
        let total: usize = nodes
            .iter()
            .flat_map(|n| &n.drift)
            .filter_map(|d| d.diff.as_ref())
            .map(String::len)
            .sum();
        assert!(total <= MAX_DRIFT_TOTAL_BYTES, "{total}");
        assert!(
            nodes[0].drift[0]
                .diff
                .as_ref()
                .is_some_and(|d| d.len() < 5000)
        );
        assert_eq!(correction_id("u", 2, "node1", 3), "u/2/node1/c3");
    }

    #[test]
    fn metrics_render_gauges_counters_and_histogram() {
        let m = StateMetrics::default();
        m.check("chrony", Duration::from_millis(3));
        m.check("chrony", Duration::from_millis(300));
        m.correction("chrony");
        m.round("chrony");
        m.status_write("chrony");
        m.set_nodes("chrony", 2, 1, 0);
        let text = m.render();
        assert!(
            text.contains("hostplug_state_nodes{state=\"chrony\",sync=\"in_sync\"} 2\n"),
            "{text}"
        );
        assert!(text.contains("hostplug_state_checks_total{state=\"chrony\"} 2\n"));
        assert!(text.contains("hostplug_state_corrections_total{state=\"chrony\"} 1\n"));
        assert!(text.contains("hostplug_state_rounds_total{state=\"chrony\"} 1\n"));
        assert!(text.contains("hostplug_state_status_writes_total{state=\"chrony\"} 1\n"));
        assert!(text.contains("hostplug_state_check_seconds_bucket{le=\"0.005\"} 1\n"));
        assert!(text.contains("hostplug_state_check_seconds_bucket{le=\"0.5\"} 2\n"));
        assert!(text.contains("hostplug_state_check_seconds_count 2\n"));
        m.forget("chrony");
        assert!(!m.render().contains("sync=\"in_sync\""));
    }
}

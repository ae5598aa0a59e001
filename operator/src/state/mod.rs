//! The HostState controller: continuous host state, checked on every selected node and
//! reported (`Audit`) or corrected (`Enforce`).
//!
//! A kube-runtime `Controller`, like the HostTask one: each reconcile reads the state,
//! validates its steps (plugin ready, method known and mutating, parameters valid,
//! capabilities — the same rules as a task's call, [`crate::validate::check_call`]),
//! gathers what the round needs (selected nodes from the Node cache, conflicts with
//! other states, this process's round), lets the pure [`round::step`] decide, writes the
//! status ([`crate::report::write_status`], only when something besides the check times
//! changed) and then carries out the decisions: check or correct nodes in spawned jobs
//! that call workers through the one call path ([`crate::dispatch::send`]) under a lease
//! on a ready worker ([`crate::pool::WorkerPool::lease_ready`]). A job's result wakes the
//! state's reconcile; so do a change of the state, a node joining, leaving or changing
//! its labels, and the requeue at the next round's time. Nothing polls.
//!
//! A round starts when the state's generation changes, when the set of selected nodes
//! changes, and `spec.intervalSeconds` after the last one finished. Two states whose
//! steps touch the same file on the same node conflict ([`conflicts`]): the node is
//! reported on both and corrected by neither.
//!
//! Deleting a HostState stops its rounds; nodes stay as they are (no finalizer).
//! Nothing here writes to a node except through a worker call.

pub mod conflicts;
pub mod round;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use futures::channel::mpsc::{UnboundedReceiver, UnboundedSender};
use futures::{Stream, StreamExt};
use hostplug_api::crd::HealthCheck;
use hostplug_api::protocol::{InvokeRequest, TaskIdentity};
use hostplug_api::state::{HostState, HostStateStatus, StateMode, StateStep, StepDrift};
use hostplug_api::{AccessProfile, crd::DEFAULT_WORKER_PORT};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use k8s_openapi::jiff::Timestamp;
use kube::runtime::controller::{Action as Requeue, Controller};
use kube::runtime::events::EventType;
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, ResourceExt};
use tracing::{Instrument, info, info_span, warn};

use crate::client::CallError;
use crate::dispatch::{FollowUp, NodeOutcome};
use crate::disruption::window::{self, Window};
use crate::plugins::LoadedPlugin;
use crate::pool::WorkerKey;
use crate::report::{set_condition, write_status};
use crate::validate::{self, CallSite, Invalid, PluginView};
use crate::values::CallValues;
use crate::{Context, Error, Result};
use conflicts::{FlipFlops, StateFootprint, file_keys, path_conflicts};
use hostplug_api::crd::HostPlugin;
use hostplug_api::disruption::{DisruptionPhase, DisruptionSpec};
use round::{Action, Checked, Job, Observed, Round};

/// Retry after a failed reconcile (API error): 5 s.
const ERROR_REQUEUE: Duration = Duration::from_secs(5);
/// Retry after a status write lost to a newer one (409): 50 ms; the next reconcile reads
/// the newer object and decides again.
const CONFLICT_REQUEUE: Duration = Duration::from_millis(50);
/// Longest wait without any event while a round runs: 60 s. Every job's result wakes the
/// state at once; this only bounds what no event announces.
const FALLBACK_REQUEUE: Duration = Duration::from_secs(60);
/// Nodes named one by one in a reconcile's Events: 20; the rest are counted in one
/// Event ("and 180 more nodes"), so a round over 1000 nodes does not flood the API.
const MAX_EVENT_NODES: usize = 20;

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// What the HostState reconciles share besides the operator's [`Context`].
pub struct StateContext {
    /// The operator's context.
    pub ctx: Arc<Context>,
    /// Every HostState (the controller's cache), for conflicts between states.
    states: Store<HostState>,
    /// This process's round of each state, by uid.
    rounds: Mutex<HashMap<String, Round>>,
    /// Which state corrected which node when.
    flips: FlipFlops,
    /// Wakes a state's reconcile (a job returned).
    wake: UnboundedSender<ObjectRef<HostState>>,
}

impl std::fmt::Debug for StateContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StateContext").finish_non_exhaustive()
    }
}

/// A validated step (or health check) with its plugin, its method, the values of its
/// vars and the worker profile it runs on.
struct Plan {
    index: usize,
    /// Where the call is in the spec (`spec.steps[i]`, `spec.checks[i]`).
    site: CallSite,
    step: StateStep,
    loaded: Arc<LoadedPlugin>,
    method: hostplug_api::crd::MethodInfo,
    values: CallValues,
    profile: AccessProfile,
    /// The step's follow-ups with their values: sent with its corrections only.
    follow_ups: Vec<(FollowUp, CallValues)>,
}

/// Every step's plan, and each health check's with the check.
struct Plans {
    steps: Vec<Plan>,
    checks: Vec<(Plan, HealthCheck)>,
    /// `spec.disruption` with its windows parsed, when corrections disrupt (`Enforce`).
    disruption: Option<(DisruptionSpec, Vec<Window>)>,
}

/// The namespace of the identity a correction's change is kept under on the node
/// ([`correction_identity`]): `HostState`, not a valid namespace name (upper case), so
/// never a task's.
const CORRECTION_NAMESPACE: &str = "HostState";

/// Whether `identity` names a HostState correction ([`correction_identity`]), not a
/// task: no HostTaskPolicy governs it (a HostState is cluster-scoped and an
/// administrator's), so the policies' /etc paths do not narrow it.
pub fn is_correction(identity: &TaskIdentity) -> bool {
    identity.namespace == CORRECTION_NAMESPACE
}

/// The identity the node keeps the change of step `step` of the correction `prefix`
/// (`<state uid>/<generation>/<node>/c<n>`: one per correction of a node) of state
/// `state` under, for its revert when a health check fails after it.
fn correction_identity(state: &str, prefix: &str, step: usize) -> TaskIdentity {
    TaskIdentity {
        namespace: CORRECTION_NAMESPACE.to_owned(),
        name: state.to_owned(),
        uid: prefix.to_owned(),
        generation: i64::try_from(step).unwrap_or(i64::MAX),
    }
}

/// Resolves and validates every step and health check: the plans, or the first problem.
async fn plan(ctx: &Context, state: &HostState) -> Result<Result<Plans, Invalid>> {
    let hp_api: Api<HostPlugin> = Api::all(ctx.client.clone());
    type Found = Option<(HostPlugin, std::result::Result<Arc<LoadedPlugin>, String>)>;
    let mut plugins: HashMap<String, Found> = HashMap::new();
    let audit = state.spec.mode == StateMode::Audit;
    // Windows are refused in any mode (a state switched to Enforce later must not
    // surprise); they gate only corrections.
    let disruption = match &state.spec.disruption {
        Some(d) => match window::parse(&d.maintenance_windows) {
            Ok(w) => (!audit && d.disrupts(false)).then(|| (d.clone(), w)),
            Err(e) => return Ok(Err(e)),
        },
        None => None,
    };
    let mut plans = Vec::new();
    for (i, step) in state.spec.steps.iter().enumerate() {
        if !plugins.contains_key(&step.api) {
            let found = match hp_api
                .get_opt(&step.api)
                .await
                .map_err(Error::kube(format!("reading HostPlugin {}", step.api)))?
            {
                Some(hp) => {
                    let loaded = ctx.plugins.resolve(&ctx.client, &hp).await;
                    Some((hp, loaded))
                }
                None => None,
            };
            plugins.insert(step.api.clone(), found);
        }
        let found = plugins.get(&step.api).and_then(Option::as_ref);
        let view = PluginView {
            spec: found.map(|(hp, _)| &hp.spec),
            loaded: match found.map(|(_, l)| l) {
                Some(Ok(l)) => Ok(&l.info),
                Some(Err(e)) => Err(e.as_str()),
                None => Err("no HostPlugin"),
            },
        };
        if let Err(e) = check_step(i, step, state.spec.mode, view) {
            return Ok(Err(e));
        }
        let Some((hp, Ok(loaded))) = found else {
            return Ok(Err(Invalid::new(
                CallSite::Step(i).field("api"),
                format!("plugin {:?} is not ready", step.api),
            )));
        };
        let Some(method) = loaded.info.method(&step.method).cloned() else {
            return Ok(Err(Invalid::new(
                CallSite::Step(i).field("method"),
                format!("plugin {:?} has no method {:?}", step.api, step.method),
            )));
        };
        // Read at every reconcile: a changed ConfigMap or Secret starts a new round.
        let mut values =
            match crate::values::read(&ctx.client, step, CallSite::Step(i), None).await? {
                Ok(v) => v,
                Err(e) => return Ok(Err(e)),
            };
        let mut follow_ups = Vec::with_capacity(step.on_change.len());
        for (j, call) in step.on_change.iter().enumerate() {
            let site = CallSite::StepOnChange(i, j);
            match crate::dispatch::resolve_follow_up(ctx, call, site, audit, None).await? {
                Ok((f, f_values)) => {
                    values.mask_also(&f_values);
                    follow_ups.push((f, f_values));
                }
                Err(e) => return Ok(Err(e)),
            }
        }
        let main_access = AccessProfile::for_call(&hp.spec.capabilities, audit, true);
        let resolved: Vec<FollowUp> = follow_ups.iter().map(|(f, _)| f.clone()).collect();
        plans.push(Plan {
            index: i,
            site: CallSite::Step(i),
            step: step.clone(),
            loaded: Arc::clone(loaded),
            method,
            values,
            profile: crate::dispatch::sequence_profile(main_access, &resolved),
            follow_ups,
        });
    }
    let mut checks = Vec::with_capacity(state.spec.checks.len());
    for (i, check) in state.spec.checks.iter().enumerate() {
        let site = CallSite::StateCheck(i);
        let hp = hp_api
            .get_opt(&check.call.api)
            .await
            .map_err(Error::kube(format!(
                "reading HostPlugin {}",
                check.call.api
            )))?;
        let loaded = match &hp {
            Some(hp) => ctx.plugins.resolve(&ctx.client, hp).await,
            None => Err("no HostPlugin".into()),
        };
        let view = PluginView {
            spec: hp.as_ref().map(|h| &h.spec),
            loaded: match &loaded {
                Ok(l) => Ok(&l.info),
                Err(e) => Err(e.as_str()),
            },
        };
        let method = match validate::check_health_check(check, site, view) {
            Ok(m) => m.clone(),
            Err(e) => return Ok(Err(e)),
        };
        let (Some(hp), Ok(loaded)) = (hp, loaded) else {
            return Ok(Err(Invalid::new(
                site.field("api"),
                format!("plugin {:?} is not ready", check.call.api),
            )));
        };
        let values = match crate::values::read(&ctx.client, &check.call, site, None).await? {
            Ok(v) => v,
            Err(e) => return Ok(Err(e)),
        };
        checks.push((
            Plan {
                index: i,
                site,
                step: StateStep {
                    call: check.call.clone(),
                    on_change: Vec::new(),
                },
                loaded,
                method,
                values,
                profile: AccessProfile::for_call(&hp.spec.capabilities, true, false),
                follow_ups: Vec::new(),
            },
            check.clone(),
        ));
    }
    Ok(Ok(Plans {
        steps: plans,
        checks,
        disruption,
    }))
}

/// Validates step `i` against its plugin: the rules of every plugin call (plugin ready,
/// method known, parameters valid, a capability to write when the state enforces), and
/// the method changes the node: only those have a dry run that can report drift.
pub fn check_step(
    i: usize,
    step: &StateStep,
    mode: StateMode,
    plugin: PluginView<'_>,
) -> Result<(), Invalid> {
    let audit = mode == StateMode::Audit;
    let method = validate::check_call(step, CallSite::Step(i), plugin, audit)?;
    if !method.mutates {
        return Err(Invalid::new(
            CallSite::Step(i).field("method"),
            format!(
                "method {:?} of plugin {:?} does not change the node (mutates: false), so its \
                 dry run cannot report drift; a state step must name a mutating method",
                step.method, step.api
            ),
        ));
    }
    Ok(())
}

/// Reconciles one HostState, in a span naming it.
async fn reconcile(state: Arc<HostState>, sc: Arc<StateContext>) -> Result<Requeue> {
    let span = info_span!("reconcile", kind = "HostState", name = state.name_any());
    let outcome = reconcile_state(&state, &sc).instrument(span).await;
    match outcome {
        Err(Error::Conflict { .. }) => Ok(Requeue::requeue(CONFLICT_REQUEUE)),
        other => other,
    }
}

async fn reconcile_state(cached: &HostState, sc: &Arc<StateContext>) -> Result<Requeue> {
    let ctx = &sc.ctx;
    ctx.metrics.reconcile();
    let name = cached.name_any();
    let api: Api<HostState> = Api::all(ctx.client.clone());
    let current = api
        .get_opt(&name)
        .await
        .map_err(Error::kube(format!("reading HostState {name}")))?;
    let Some(state) = current.filter(|s| s.metadata.deletion_timestamp.is_none()) else {
        if let Some(uid) = cached.uid() {
            lock(&sc.rounds).remove(&uid);
        }
        sc.flips.forget(&name);
        ctx.metrics.forget_state(&name);
        info!(state = %name, "HostState gone: no longer checked");
        return Ok(Requeue::await_change());
    };
    let uid = state
        .uid()
        .ok_or(Error::MissingObjectKey(".metadata.uid"))?;
    let generation = state.metadata.generation.unwrap_or(0);
    let interval =
        Duration::from_secs(u64::try_from(state.spec.interval_seconds.max(1)).unwrap_or(300));
    let prior = state.status.clone().unwrap_or_default();

    let plans = match plan(ctx, &state).await? {
        Ok(p) => p,
        Err(invalid) => return refuse(ctx, &state, &prior, &invalid, interval).await,
    };
    let selected = match state.spec.targets.select(&ctx.node_views()) {
        Ok(s) => s.nodes,
        // An unknown selector operator: the API server's schema lets it through.
        Err(invalid) => return refuse(ctx, &state, &prior, &invalid, interval).await,
    };

    // This process's round: a new one when due.
    let now = Timestamp::now();
    let window_state = plans
        .disruption
        .as_ref()
        .and_then(|(_, w)| window::state(w, now));
    let window_hold = window::hold(window_state.as_ref());
    // A node left drifted for a closed window is corrected as soon as one opens.
    let window_opened = window_hold.is_none()
        && prior.nodes.iter().any(|n| {
            n.disruption
                .as_ref()
                .is_some_and(|d| d.phase == DisruptionPhase::WaitingForWindow)
        });
    let values = {
        use std::hash::{Hash, Hasher};
        let mut h = std::collections::hash_map::DefaultHasher::new();
        for p in &plans.steps {
            p.values.fingerprint().hash(&mut h);
        }
        h.finish()
    };
    let round = {
        let mut rounds = lock(&sc.rounds);
        let old = rounds.get(&uid);
        let reopened = window_opened && old.is_some_and(|r| r.finished);
        if reopened || round::round_due(old, generation, &selected, values, interval, now) {
            if old.is_some_and(|r| r.generation != generation) {
                sc.flips.forget(&name);
            }
            let id = old.map_or(1, |r| r.id + 1);
            ctx.metrics.state_round(&name);
            rounds.insert(
                uid.clone(),
                Round {
                    id,
                    generation,
                    started: now,
                    nodes: selected.clone(),
                    values,
                    jobs: BTreeMap::new(),
                    finished: false,
                },
            );
        }
        rounds.get(&uid).cloned()
    };
    let Some(round) = round else {
        return Ok(Requeue::requeue(ERROR_REQUEUE));
    };

    let conflicts = conflicts_of(sc, &state, &selected, &round);
    let rollout = state.spec.rollout.clone().unwrap_or_default();
    let mut status = prior.clone();
    let actions = round::step(
        &mut status,
        &Observed {
            now,
            uid: &uid,
            generation,
            mode: state.spec.mode,
            rollout: &rollout,
            selected: &selected,
            conflicts: &conflicts,
            round: &round,
            window_hold: window_hold.as_ref(),
        },
    );
    // A state whose drift is sensitive (a file holding credentials) keeps no diff: only
    // its size and hash, as a sensitive task's results.
    if state
        .annotations()
        .get(hostplug_api::crd::annotations::SENSITIVE_OUTPUT)
        .is_some_and(|v| v == "true")
    {
        for d in status.nodes.iter_mut().flat_map(|n| n.drift.iter_mut()) {
            d.diff = d.diff.as_deref().map(crate::status::redact_diff);
        }
    }
    let mut written = state.clone();
    if round::differs(&prior, &status) {
        written = write_status(&ctx.client, &state, &status).await?;
        ctx.metrics.state_status_write(&name);
    }
    if prior.conflicts != status.conflicts && !status.conflicts.is_empty() {
        let note = status
            .conditions
            .iter()
            .find(|c| c.type_ == "InSync")
            .map(|c| c.message.clone())
            .unwrap_or_default();
        ctx.events
            .publish(&written, EventType::Warning, "Conflict", None, note)
            .await;
    }
    act(sc, &written, &uid, round.id, actions, Arc::new(plans)).await;

    let finished = lock(&sc.rounds).get(&uid).is_some_and(|r| r.finished);
    if finished {
        let next = round
            .started
            .as_second()
            .saturating_add(i64::try_from(interval.as_secs()).unwrap_or(i64::MAX));
        // Nodes wait for a window: wake at its opening if that comes first.
        let opens = match &window_state {
            Some(window::WindowState::Closed {
                opens: Some(opens), ..
            }) if window_hold.is_some() => opens.as_second().saturating_add(1),
            _ => i64::MAX,
        };
        let left = next
            .min(opens)
            .saturating_sub(Timestamp::now().as_second())
            .max(1);
        Ok(Requeue::requeue(Duration::from_secs(left.unsigned_abs())))
    } else {
        Ok(Requeue::requeue(FALLBACK_REQUEUE))
    }
}

/// The nodes other states fight over: the same file on the same node, or a flip-flop
/// caught between two states' corrections.
fn conflicts_of(
    sc: &StateContext,
    state: &HostState,
    selected: &[String],
    round: &Round,
) -> BTreeMap<String, BTreeSet<String>> {
    let name = state.name_any();
    let views = sc.ctx.node_views();
    let others: Vec<StateFootprint> = sc
        .states
        .state()
        .iter()
        .filter(|s| s.metadata.deletion_timestamp.is_none())
        .map(|s| StateFootprint {
            name: s.name_any(),
            files: file_keys(&s.spec),
            nodes: s
                .spec
                .targets
                .select(&views)
                .map(|sel| sel.nodes)
                .unwrap_or_default()
                .into_iter()
                .collect(),
        })
        .collect();
    let me = StateFootprint {
        name: name.clone(),
        files: file_keys(&state.spec),
        nodes: selected.iter().cloned().collect(),
    };
    let mut conflicts = path_conflicts(&me, &others);
    if state.spec.mode == StateMode::Enforce {
        // A node found drifted again after another state corrected it since this one
        // did: the two undo each other.
        for (node, job) in &round.jobs {
            if matches!(job, Job::Checked(Ok(d)) if !d.is_empty())
                && !conflicts.contains_key(node)
                && let Some(other) = sc.flips.suspect(node, &name)
            {
                warn!(state = %name, %node, %other, "two states undo each other's corrections");
            }
        }
    }
    for (node, others) in sc.flips.of(&name) {
        if me.nodes.contains(&node) {
            conflicts.entry(node).or_default().extend(others);
        }
    }
    conflicts
}

/// A state whose steps or selector cannot be used: its status says which field and why
/// (and an Event, once), and nothing runs until the next change or interval.
async fn refuse(
    ctx: &Context,
    state: &HostState,
    prior: &HostStateStatus,
    invalid: &Invalid,
    interval: Duration,
) -> Result<Requeue> {
    let t = Time(Timestamp::now());
    let mut status = HostStateStatus {
        observed_generation: state.metadata.generation,
        nodes: prior.nodes.clone(),
        conditions: prior.conditions.clone(),
        conflicts: prior.conflicts.clone(),
        ..HostStateStatus::default()
    };
    round::summarise(&mut status, state.spec.mode, &t);
    status.message = Some(invalid.to_string());
    set_condition(
        &mut status.conditions,
        Condition {
            type_: "InSync".into(),
            status: "False".into(),
            reason: "Invalid".into(),
            message: invalid.to_string(),
            observed_generation: state.metadata.generation,
            last_transition_time: t,
        },
    );
    if round::differs(prior, &status) {
        let written = write_status(&ctx.client, state, &status).await?;
        ctx.metrics.state_status_write(&state.name_any());
        info!(state = %state.name_any(), problem = %invalid, "state refused");
        ctx.events
            .publish(
                &written,
                EventType::Warning,
                "ValidationFailed",
                None,
                invalid.to_string(),
            )
            .await;
    }
    Ok(Requeue::requeue(interval))
}

/// Carries out the decisions of one step: Events, then jobs (recorded in the round
/// before they start).
async fn act(
    sc: &Arc<StateContext>,
    state: &HostState,
    uid: &str,
    round_id: u64,
    actions: Vec<Action>,
    plans: Arc<Plans>,
) {
    let ctx = &sc.ctx;
    let name = state.name_any();
    let mut by_reason: BTreeMap<&'static str, Vec<(EventType, String, String)>> = BTreeMap::new();
    for a in actions {
        match a {
            Action::Event {
                type_,
                reason,
                node,
                note,
            } => by_reason
                .entry(reason)
                .or_default()
                .push((type_, node, note)),
            Action::RoundFinished => {
                if let Some(r) = lock(&sc.rounds).get_mut(uid) {
                    r.finished = true;
                }
                let st = state.status.clone().unwrap_or_default();
                ctx.metrics
                    .state_nodes(&name, st.nodes_in_sync, st.nodes_drifted, st.nodes_failed);
            }
            Action::Check { node } => {
                start_job(sc, state, uid, round_id, node, Job::Checking, &plans, None);
            }
            Action::Correct {
                node,
                drift,
                prefix,
                resume,
            } => {
                if resume {
                    info!(state = %name, %node, %prefix, "resuming a correction of an earlier operator process");
                }
                let correction = Some((drift, prefix, resume));
                start_job(
                    sc,
                    state,
                    uid,
                    round_id,
                    node,
                    Job::Correcting,
                    &plans,
                    correction,
                );
            }
        }
    }
    for (reason, items) in by_reason {
        for (type_, node, note) in items.iter().take(MAX_EVENT_NODES) {
            ctx.events
                .publish(state, *type_, reason, Some(node), note.clone())
                .await;
        }
        if items.len() > MAX_EVENT_NODES
            && let Some((type_, _, _)) = items.first()
        {
            let more = format!("and {} more nodes", items.len() - MAX_EVENT_NODES);
            ctx.events.publish(state, *type_, reason, None, more).await;
        }
    }
}

/// Records a job in the round and runs it in the background; its result goes into the
/// round (if it is still the current one) and wakes the state.
#[allow(clippy::too_many_arguments)]
fn start_job(
    sc: &Arc<StateContext>,
    state: &HostState,
    uid: &str,
    round_id: u64,
    node: String,
    job: Job,
    plans: &Arc<Plans>,
    correction: Option<(Vec<StepDrift>, String, bool)>,
) {
    if let Some(r) = lock(&sc.rounds).get_mut(uid).filter(|r| r.id == round_id) {
        r.jobs.insert(node.clone(), job);
    } else {
        return;
    }
    let sc = Arc::clone(sc);
    let plans = Arc::clone(plans);
    let (uid, name) = (uid.to_owned(), state.name_any());
    let timeout = state.spec.timeout_seconds;
    let me = ObjectRef::from_obj(state);
    let owner = state.clone();
    tokio::spawn(async move {
        let ctx = &sc.ctx;
        let done = match correction {
            None => Job::Checked(check_node(ctx, &name, &node, &plans.steps, timeout).await),
            Some((drift, prefix, resumes)) => {
                let r = correct_node(
                    ctx, &owner, &node, &plans, &drift, &prefix, timeout, resumes,
                )
                .await;
                ctx.metrics.state_correction(&name);
                sc.flips.corrected(&node, &name);
                Job::Corrected(r)
            }
        };
        if let Some(r) = lock(&sc.rounds).get_mut(&uid).filter(|r| r.id == round_id) {
            r.jobs.insert(node, done);
        }
        let _ = sc.wake.unbounded_send(me);
    });
}

/// One step's call on `node`: a dry run (`correction` none) or the correction with that
/// invocation id, its change kept on the node under `record` (for a revert), through
/// the pool's ready worker of the step's profile.
async fn call_step(
    ctx: &Context,
    node: &str,
    plan: &Plan,
    timeout_seconds: i32,
    correction: Option<(String, TaskIdentity)>,
    resumes: bool,
) -> NodeOutcome {
    let key = WorkerKey {
        node: node.to_owned(),
        profile: plan.profile,
        port: DEFAULT_WORKER_PORT,
        task: None,
    };
    let lease = ctx
        .pool
        .lease_ready(&key, ctx.config.pod_start_timeout(), resumes)
        .await?;
    let view = ctx
        .node_view(node)
        .ok_or_else(|| CallError::NotSent(format!("node {node} no longer exists")))?;
    let correcting = correction.is_some();
    let (id, record) = correction.unzip();
    let mut req = InvokeRequest::for_call(
        &plan.loaded.digest,
        &plan.step,
        !correcting,
        timeout_seconds,
        id,
    );
    req.task = record;
    req.params = plan
        .values
        .params_for(&plan.step, plan.site, &plan.method, &view)
        .map_err(|invalid| CallError::NotSent(invalid.to_string()))?;
    let mut plugins = vec![&*plan.loaded];
    // Follow-ups go with corrections only: a check is a dry run of the step alone.
    if correcting {
        req.on_change = crate::dispatch::follow_up_requests(
            plan.follow_ups.iter().map(|(f, v)| (f, v)),
            |j| CallSite::StepOnChange(plan.index, j),
            &view,
        )?;
        plugins.extend(plan.follow_ups.iter().map(|(f, _)| &*f.loaded));
    }
    let outcome = crate::dispatch::send(ctx, &lease, &plugins, &req).await;
    // Values from Secrets never reach the record.
    plan.values.mask_outcome(outcome)
}

/// Checks a node: every step as a dry run; a step that would change it is drift.
async fn check_node(
    ctx: &Context,
    state: &str,
    node: &str,
    plans: &[Plan],
    timeout: i32,
) -> Checked {
    let started = Instant::now();
    let mut drift = Vec::new();
    for p in plans {
        match call_step(ctx, node, p, timeout, None, false).await {
            Ok(s) if s.changed => drift.push(StepDrift {
                step: i32::try_from(p.index).unwrap_or(i32::MAX),
                diff: s
                    .diff
                    .map(|d| crate::status::truncate_str(&d, round::MAX_DRIFT_DIFF_BYTES)),
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
    ctx.metrics.state_check(state, started.elapsed());
    Ok(drift)
}

/// Runs the drifted steps of a node for real, in order, with the ids under `prefix` (each
/// step's change kept on the node, [`correction_identity`]) — inside the node's
/// disruption cycle when `spec.disruption` says so (drain before, reboot after; the
/// cycle is recorded on the Node under the correction's `prefix`, so a new leader
/// continues it and no node is rebooted twice for one correction) — then the health
/// checks (`spec.checks`): when one fails, the correction is reverted
/// ([`revert_correction`]) and the node fails naming the check. Otherwise the node is
/// checked again (what the check finds is the result). `resumes`: an earlier operator
/// process recorded this correction.
#[allow(clippy::too_many_arguments)]
async fn correct_node(
    ctx: &Arc<Context>,
    owner: &HostState,
    node: &str,
    plans: &Plans,
    drift: &[StepDrift],
    prefix: &str,
    timeout: i32,
    resumes: bool,
) -> Checked {
    let state = owner.name_any();
    let state = state.as_str();
    let corrected: Vec<&Plan> = drift
        .iter()
        .filter_map(|d| {
            plans
                .steps
                .iter()
                .find(|p| i32::try_from(p.index).ok() == Some(d.step))
        })
        .collect();
    // Why a step failed, in the state's words; the cycle passes the call's error on.
    let failure: Mutex<Option<String>> = Mutex::new(None);
    let apply = || async {
        let mut done: Option<crate::dispatch::Success> = None;
        for p in &corrected {
            let id = format!("{prefix}/s{}", p.index);
            let record = correction_identity(state, prefix, p.index);
            let what = format!(
                "correcting step {} ({}/{})",
                p.index, p.step.api, p.step.method
            );
            let s = match call_step(ctx, node, p, timeout, Some((id, record)), resumes).await {
                Ok(s) => s,
                Err(e) => {
                    *lock(&failure) = Some(format!("{what}: {e}"));
                    return Err(e);
                }
            };
            let calls: Vec<_> = p.step.on_change.clone();
            let results = crate::dispatch::follow_up_results(&calls, s.changed, &s.follow_ups);
            if let Some(why) = crate::dispatch::failed_follow_up(&results) {
                *lock(&failure) = Some(format!("{what}: {why}"));
                return Err(CallError::NotSent(why));
            }
            done = Some(match done {
                None => s,
                Some(mut all) => {
                    all.changed |= s.changed;
                    all.reboot_required = all.reboot_required.or(s.reboot_required);
                    all
                }
            });
        }
        done.ok_or_else(|| CallError::NotSent("no drifted step to correct".into()))
    };
    let applied = match &plans.disruption {
        _ if corrected.is_empty() => Ok(()),
        Some((spec, _)) => {
            let owner_ref = format!("{CORRECTION_NAMESPACE}/{state}");
            let cycle = crate::disruption::Cycle {
                task: &owner_ref,
                uid: prefix,
                generation: owner.metadata.generation.unwrap_or(0),
                spec,
            };
            crate::disruption::node::run(ctx, owner, cycle, node, DEFAULT_WORKER_PORT, apply)
                .await
                .map(drop)
        }
        None => apply().await.map(drop),
    };
    if let Err(e) = applied {
        return Err(lock(&failure).take().unwrap_or_else(|| e.to_string()));
    }
    if !corrected.is_empty() {
        for (p, check) in &plans.checks {
            let verdict = match call_step(ctx, node, p, timeout, None, false).await {
                Ok(s) => check.judge(&s.output),
                Err(e) => Err(e.to_string()),
            };
            if let Err(why) = verdict {
                let failed = format!(
                    "health check {} ({}/{}) failed after the correction: {why}",
                    p.site.field("").trim_end_matches('.'),
                    p.step.api,
                    p.step.method
                );
                let undone = revert_correction(ctx, state, node, &corrected, prefix, timeout).await;
                return Err(format!("{failed}; {undone}"));
            }
        }
    }
    check_node(ctx, state, node, &plans.steps, timeout).await
}

/// Reverts the correction `prefix` of `node` (its `corrected` steps, newest first) from
/// the records the node kept of them, through the worker route every revert takes
/// ([`crate::revert::revert_on`]), each with the invocation id `<step's id>/revert`, so a
/// repeat after an operator restart is answered, not run again. Says what it did.
async fn revert_correction(
    ctx: &Context,
    state: &str,
    node: &str,
    corrected: &[&Plan],
    prefix: &str,
    timeout: i32,
) -> String {
    let budget = Duration::from_secs(u64::try_from(timeout.max(1)).unwrap_or(1));
    let mut restored: Vec<String> = Vec::new();
    for p in corrected.iter().rev() {
        let key = WorkerKey {
            node: node.to_owned(),
            profile: p.profile,
            port: DEFAULT_WORKER_PORT,
            task: None,
        };
        let outcome = match ctx
            .pool
            .lease_ready(&key, ctx.config.pod_start_timeout(), false)
            .await
        {
            Ok(lease) => {
                let id = format!("{prefix}/s{}/revert", p.index);
                let target = correction_identity(state, prefix, p.index);
                crate::revert::revert_on(&lease, &target, false, budget, id).await
            }
            Err(e) => Err(e),
        };
        match outcome {
            Ok(s) => restored.extend(
                s.output
                    .get("restored")
                    .and_then(|r| r.as_array())
                    .into_iter()
                    .flatten()
                    .filter_map(|v| v.as_str().map(str::to_owned)),
            ),
            Err(e) => {
                warn!(%state, %node, step = p.index, error = %e, "reverting a correction failed");
                return format!("reverting the correction of step {} failed: {e}", p.index);
            }
        }
    }
    if restored.is_empty() {
        "the correction was reverted (nothing to restore)".to_owned()
    } else {
        format!(
            "the correction was reverted: restored {}",
            restored.join(", ")
        )
    }
}

fn error_policy(state: Arc<HostState>, err: &Error, sc: Arc<StateContext>) -> Requeue {
    warn!(state = %state.name_any(), error = %err, "HostState reconcile failed");
    sc.ctx.metrics.reconcile_error();
    Requeue::requeue(ERROR_REQUEUE)
}

/// Runs the HostState controller until `shutdown` resolves. States are reconciled on
/// their own changes, when `nodes_changed` says the nodes a state might select changed,
/// when a job returns, and at their next round's time.
pub async fn run_controller(
    ctx: Arc<Context>,
    nodes_changed: impl Stream<Item = ()> + Send + 'static,
    shutdown: impl std::future::Future<Output = ()> + Send + Sync + 'static,
) {
    let (wake, woken): (_, UnboundedReceiver<ObjectRef<HostState>>) =
        futures::channel::mpsc::unbounded();
    let (reader, writer) = reflector::store();
    let stream = reflector::reflector(
        writer,
        watcher(
            Api::<HostState>::all(ctx.client.clone()),
            watcher::Config::default(),
        )
        .default_backoff()
        .modify(|s| {
            // Reconciles read the newest object; conflicts need only the specs.
            s.status = None;
            s.metadata.managed_fields = None;
        }),
    )
    .applied_objects();
    let sc = Arc::new(StateContext {
        ctx,
        states: reader.clone(),
        rounds: Mutex::new(HashMap::new()),
        flips: FlipFlops::default(),
        wake,
    });
    Controller::for_stream(stream, reader)
        .reconcile_on(woken)
        .reconcile_all_on(nodes_changed)
        .graceful_shutdown_on(shutdown)
        .run(reconcile, error_policy, sc)
        .for_each(|_| futures::future::ready(()))
        .await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use hostplug_api::crd::{Capabilities, EtcAccess, HostPluginSpec, MethodInfo, PluginInfo};
    use serde_json::json;

    fn etc_file(etc: EtcAccess) -> (HostPluginSpec, PluginInfo) {
        let hp: HostPluginSpec = serde_json::from_value(json!({"source": {"builtin": "etc-file"}}))
            .unwrap_or_else(|e| panic!("{e}"));
        let hp = HostPluginSpec {
            capabilities: Capabilities {
                etc,
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
        StateStep::new("etc-file", method, Some(parameter))
    }

    fn field(r: Result<(), Invalid>) -> Option<String> {
        r.err().map(|e| e.field)
    }

    #[test]
    fn a_bad_step_is_named_with_its_field() {
        let (hp, info) = etc_file(EtcAccess::Write);
        let ok = PluginView {
            spec: Some(&hp),
            loaded: Ok(&info),
        };
        let good = step("ensure-line", json!({"path": "/etc/a", "line": "x"}));
        assert_eq!(check_step(0, &good, StateMode::Enforce, ok), Ok(()));
        let read = step("read", json!({"path": "/etc/a"}));
        assert_eq!(
            field(check_step(2, &read, StateMode::Audit, ok)).as_deref(),
            Some("spec.steps[2].method"),
            "a read-only method cannot report drift"
        );
        assert_eq!(
            field(check_step(
                1,
                &step("nope", json!({})),
                StateMode::Audit,
                ok
            ))
            .as_deref(),
            Some("spec.steps[1].method")
        );
        let bad = step("ensure-line", json!({"path": "/etc/a", "line": 5}));
        assert_eq!(
            field(check_step(3, &bad, StateMode::Audit, ok)).as_deref(),
            Some("spec.steps[3].parameter.line")
        );
        let missing = PluginView {
            spec: None,
            loaded: Err("no HostPlugin"),
        };
        assert_eq!(
            field(check_step(0, &good, StateMode::Audit, missing)).as_deref(),
            Some("spec.steps[0].api")
        );
        // A read-only plugin may audit, not enforce.
        let (ro, info) = etc_file(EtcAccess::Read);
        let ro = PluginView {
            spec: Some(&ro),
            loaded: Ok(&info),
        };
        assert_eq!(check_step(0, &good, StateMode::Audit, ro), Ok(()));
        let e = check_step(0, &good, StateMode::Enforce, ro).err();
        assert!(
            e.as_ref()
                .is_some_and(|e| e.field == "spec.steps[0].method" && e.problem.contains("Audit")),
            "{e:?}"
        );
    }
}

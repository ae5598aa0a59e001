//! The rollout of one task generation as a pure state machine: the status and what the
//! operator observes go in, the new status and the actions to take come out.
//!
//! Nothing here talks to the API server or a worker; [`crate::task`] gathers the
//! observations (worker Pods from the pool's cache, calls from memory, Node readiness),
//! calls [`step`], writes the status and then carries out the actions. So the rules are
//! unit-tested without a cluster:
//!
//! - Every node still to run gets its worker asked for at once ([`Action::EnsureWorker`]);
//!   worker start-up is bounded by the pool, not by the rollout.
//! - `maxParallel` bounds the nodes in flight (Starting or Running); a node starts its call
//!   as soon as it is admitted and its worker is Ready.
//! - More than `maxFailures` failed nodes stop the rollout: nodes not started are Skipped.
//! - Once per generation: a node is Running (recorded in the status) before its call goes
//!   out, and a Running node is never called afresh. After an operator restart a Running
//!   node with no call in memory is *resumed*: the same invocation id is sent to the same
//!   worker Pod, which answers the stored outcome (or waits for the run in flight) instead
//!   of running again. Only when that Pod is gone does the node end "outcome unknown".
//!
//! With `spec.rollout.waves` the nodes are split into waves (sorted by name, each node's
//! wave recorded in its result and never changed); only the current wave's nodes are
//! warmed and started. When a wave ended, its gate runs: the nodes Ready, the health
//! checks (read-only calls, [`Action::Check`]) passed on each node that succeeded, and an
//! approval when asked for. A failed gate or more than `maxFailures` failed nodes *halt*
//! the rollout instead of skipping the rest; `approvedWave` reaching the wave lets it go
//! on. `paused` starts nothing new; `cancel` skips every node not started. The phase is
//! derived from the record each step, so a restart resumes exactly where it was.

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::{SignedDuration, Timestamp};

use hostplug_api::crd::{
    FollowUpResult, HostTaskStatus, NodePhase, NodeResult, RolloutPhase, RolloutSpec, RolloutStatus,
};
use hostplug_api::disruption::DisruptionPhase;

use crate::client::CallError;
pub use crate::dispatch::{CallState, NodeOutcome, Success};
use crate::status::Counts;

/// How long the nodes of a wave that ended may take to be Ready at its gate: 5 minutes,
/// a reboot of a slow machine; past it the gate fails and the rollout halts.
pub const GATE_READY_TIMEOUT: Duration = Duration::from_secs(300);

/// Where a worker Pod is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WorkerState {
    /// Ready to take calls.
    Ready,
    /// Not Ready yet; what it is doing.
    Starting(String),
    /// Will never serve (ended, being deleted, cannot start); why.
    Broken(String),
    /// No such Pod.
    Gone,
}

/// Everything [`step`] looks at besides the status.
#[derive(Debug, Clone)]
pub struct Observed {
    /// Now.
    pub now: Timestamp,
    /// Whether the plugin the generation pinned is still there, unchanged.
    pub plugin_ok: bool,
    /// For each target node that still exists (and is still to run, or at its wave's
    /// gate, [`watches_worker`]): the pool worker serving this task there, by Pod name
    /// (`None`: not created yet), and its state.
    pub workers: BTreeMap<String, Option<(String, WorkerState)>>,
    /// The state of Pods named in the status (Running nodes' Pods), by name.
    pub pods: BTreeMap<String, WorkerState>,
    /// Calls of this generation in memory, by node.
    pub calls: BTreeMap<String, CallState>,
    /// Health-check calls of this generation in memory, by node and check index.
    pub checks: BTreeMap<(String, usize), CallState>,
    /// Whether each existing node's Ready condition is True, by name.
    pub ready: BTreeMap<String, bool>,
    /// How long a node may wait for its worker to become Ready.
    pub start_timeout: Duration,
    /// The task's follow-up calls (`spec.onChange`), to name their results.
    pub follow_ups: Vec<hostplug_api::PluginCall>,
}

/// What the operator must do after writing the new status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Make sure a worker for this task's profile runs on the node.
    EnsureWorker {
        /// Node.
        node: String,
    },
    /// The node's worker Pod `pod` cannot start (the node failed on it): the pool
    /// forgets it and deletes it, so that the next run (a rerun, another task) tries a
    /// new one once the cause is fixed, instead of failing on the same Pod.
    DiscardWorker {
        /// Node.
        node: String,
        /// The Pod.
        pod: String,
    },
    /// Send the node's call to this Pod. `resume`: the call may have been sent before
    /// (operator restart); the invocation id makes the worker answer the stored outcome.
    Call {
        /// Node.
        node: String,
        /// Worker Pod.
        pod: String,
        /// Whether this resumes a call of an earlier operator process.
        resume: bool,
    },
    /// Send the gate's health check `check` (`spec.rollout.gate.checks[check]`) to this
    /// Pod, as a read-only dry run.
    Check {
        /// Node.
        node: String,
        /// Worker Pod.
        pod: String,
        /// Index of the check.
        check: usize,
    },
    /// Tell people a node failed (an Event).
    NodeFailed {
        /// Node.
        node: String,
        /// Why.
        message: String,
    },
    /// Tell people a node succeeded (metrics).
    NodeSucceeded {
        /// Node.
        node: String,
    },
    /// `onFailure: Revert`: the wave `wave` halted; revert these nodes of it (those
    /// that ran) to what they were before this task. Sent once, when the rollout halts.
    RevertWave {
        /// The wave that halted.
        wave: i32,
        /// Its nodes that ran (Succeeded or Failed).
        nodes: Vec<String>,
    },
    /// Tell people the rollout moved: a wave started, it halted, paused, waits for an
    /// approval or was cancelled (an Event).
    Announce {
        /// Whether it is a Warning.
        warning: bool,
        /// The Event's reason.
        reason: &'static str,
        /// What happened.
        message: String,
    },
}

fn fail(n: &mut NodeResult, message: String, now: &Time, actions: &mut Vec<Action>) {
    n.phase = NodePhase::Failed;
    n.message = Some(message.clone());
    n.finished_at = Some(now.clone());
    actions.push(Action::NodeFailed {
        node: n.node.clone(),
        message,
    });
}

/// Whether a new generation of a task whose record is `status` goes on with the run in
/// progress: only the rollout's controls (`paused`, `approvedWave`, `cancel`) changed
/// since the run started ([`hostplug_api::rollout::run_fingerprint`]).
pub fn continues_run(status: &HostTaskStatus, spec: &hostplug_api::crd::HostTaskSpec) -> bool {
    status.run_fingerprint.as_deref() == Some(hostplug_api::rollout::run_fingerprint(spec).as_str())
        && status.observed_generation.is_some()
}

/// Whether a Node's `Ready` condition is True.
pub fn node_is_ready(node: &k8s_openapi::api::core::v1::Node) -> bool {
    node.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

/// Whether the operator must observe `n`'s worker: the node is still to run, or it is
/// at its wave's gate (its health checks need a worker).
pub fn watches_worker(status: &HostTaskStatus, n: &NodeResult) -> bool {
    if !n.phase.is_finished() {
        return true;
    }
    n.phase == NodePhase::Succeeded
        && n.wave.is_some()
        && n.wave == status.rollout.as_ref().map(|r| r.wave)
        && n.checks.iter().any(|c| !c.phase.is_finished())
}

/// Gives each node without one its wave (only with `waves`), and makes sure the
/// rollout status exists when the rollout is staged or was paused or cancelled. Nodes
/// are placed in sorted name order the first time; a node found later without a wave
/// (never, in one run) goes to the last wave, so no started wave is reshuffled.
fn plan(status: &mut HostTaskStatus, rollout: &RolloutSpec) {
    let staged = rollout.waves.is_some();
    if staged && status.nodes.iter().any(|n| n.wave.is_none()) {
        let waves = rollout.waves.clone().unwrap_or_default();
        if status.nodes.iter().all(|n| n.wave.is_none()) {
            let ends = hostplug_api::rollout::wave_ends(&waves, status.nodes.len());
            let mut order: Vec<usize> = (0..status.nodes.len()).collect();
            order.sort_by(|a, b| status.nodes[*a].node.cmp(&status.nodes[*b].node));
            for (rank, i) in order.into_iter().enumerate() {
                let wave = ends.iter().position(|end| rank < *end).unwrap_or(0) + 1;
                status.nodes[i].wave = i32::try_from(wave).ok();
            }
            let total = i32::try_from(ends.len().max(1)).unwrap_or(i32::MAX);
            status.rollout = Some(RolloutStatus {
                wave: 1,
                waves: total,
                ..RolloutStatus::default()
            });
        } else {
            let last = status
                .rollout
                .as_ref()
                .map(|r| r.waves)
                .or_else(|| status.nodes.iter().filter_map(|n| n.wave).max())
                .unwrap_or(1);
            for n in status.nodes.iter_mut().filter(|n| n.wave.is_none()) {
                n.wave = Some(last);
            }
        }
    }
    if status.rollout.is_none() && (staged || rollout.paused || rollout.cancel) {
        let waves = status
            .nodes
            .iter()
            .filter_map(|n| n.wave)
            .max()
            .unwrap_or(1);
        status.rollout = Some(RolloutStatus {
            wave: 1,
            waves,
            ..RolloutStatus::default()
        });
    }
}

/// Advances the rollout of the generation `status` describes by one step. Pure.
pub fn step(status: &mut HostTaskStatus, rollout: &RolloutSpec, obs: &Observed) -> Vec<Action> {
    step_gated(status, rollout, obs, None)
}

/// [`step`] for a task with a disruptive `spec.disruption` ([`crate::disruption::Gate`]):
/// outside its maintenance windows no node starts, and a node starts only while the
/// fleet-wide budget has room (its own nodes in flight hold budget from their start).
/// Nodes that wait say why (`status.nodes[].disruption` and their message); a node in
/// its cycle shows where it is. Nodes in flight are never stopped by a closing window.
pub fn step_gated(
    status: &mut HostTaskStatus,
    rollout: &RolloutSpec,
    obs: &Observed,
    disruption: Option<&crate::disruption::Gate>,
) -> Vec<Action> {
    let now = Time(obs.now);
    let mut actions = Vec::new();
    plan(status, rollout);
    let staged = rollout.waves.is_some();
    let before = status.rollout.as_ref().map(|r| (r.phase, r.wave));

    // 1. Running nodes: outcomes of returned calls; resume calls this process never sent.
    for n in status
        .nodes
        .iter_mut()
        .filter(|n| n.phase == NodePhase::Running)
    {
        match obs.calls.get(&n.node) {
            Some(CallState::Done(outcome, at)) => {
                n.finished_at = Some(Time(*at));
                match outcome {
                    Ok(s) => {
                        n.changed = s.changed;
                        n.diff = s.diff.clone();
                        n.revert = s.revert.clone();
                        n.output = Some(s.output.clone());
                        n.logs = s.logs.clone();
                        n.on_change = crate::dispatch::follow_up_results(
                            &obs.follow_ups,
                            s.changed,
                            &s.follow_ups,
                        );
                        // A failed follow-up fails the node; the main call's change and
                        // diff stay on record.
                        match crate::dispatch::failed_follow_up(&n.on_change) {
                            None => {
                                n.phase = NodePhase::Succeeded;
                                // A reboot the plugin asked for and nobody did: people
                                // must see that the node needs one.
                                n.message = s.reboot_required.clone();
                                actions.push(Action::NodeSucceeded {
                                    node: n.node.clone(),
                                });
                            }
                            Some(why) => fail(n, why, &Time(*at), &mut actions),
                        }
                    }
                    Err(e) => {
                        n.logs = match e {
                            CallError::Plugin(failure) => {
                                failure.logs.iter().map(ToString::to_string).collect()
                            }
                            _ => Vec::new(),
                        };
                        let msg = e.to_string();
                        fail(n, msg, &Time(*at), &mut actions);
                    }
                }
            }
            Some(CallState::InFlight) => {}
            None => {
                let pod = n.pod.clone().unwrap_or_default();
                match obs.pods.get(&pod).unwrap_or(&WorkerState::Gone) {
                    WorkerState::Ready => actions.push(Action::Call {
                        node: n.node.clone(),
                        pod,
                        resume: true,
                    }),
                    // Alive but not Ready (a failed probe): its outcome may still come.
                    WorkerState::Starting(_) => {}
                    WorkerState::Broken(why) => fail(
                        n,
                        format!(
                            "outcome unknown: the operator restarted while the plugin ran on \
                             this node and its worker Pod {pod} is gone ({why}); it is not run \
                             again so that it never runs twice for one generation"
                        ),
                        &now,
                        &mut actions,
                    ),
                    WorkerState::Gone => fail(
                        n,
                        format!(
                            "outcome unknown: the operator restarted while the plugin ran on \
                             this node and its worker Pod {pod} is gone; it is not run again so \
                             that it never runs twice for one generation"
                        ),
                        &now,
                        &mut actions,
                    ),
                }
            }
        }
    }

    // 2. Starting nodes: wait for the worker, then call.
    for n in status
        .nodes
        .iter_mut()
        .filter(|n| n.phase == NodePhase::Starting)
    {
        let Some(worker) = obs.workers.get(&n.node) else {
            fail(
                n,
                format!("node {} no longer exists", n.node),
                &now,
                &mut actions,
            );
            continue;
        };
        if !obs.plugin_ok {
            fail(
                n,
                "the plugin changed or vanished during the rollout; not run".into(),
                &now,
                &mut actions,
            );
            continue;
        }
        let waiting = match worker {
            Some((pod, WorkerState::Ready)) => {
                n.phase = NodePhase::Running;
                n.pod = Some(pod.clone());
                actions.push(Action::Call {
                    node: n.node.clone(),
                    pod: pod.clone(),
                    resume: false,
                });
                continue;
            }
            Some((pod, WorkerState::Broken(why))) => {
                actions.push(Action::DiscardWorker {
                    node: n.node.clone(),
                    pod: pod.clone(),
                });
                fail(
                    n,
                    format!("worker Pod cannot start: {why}"),
                    &now,
                    &mut actions,
                );
                continue;
            }
            Some((pod, WorkerState::Starting(what))) => {
                n.pod = Some(pod.clone());
                what.clone()
            }
            Some((_, WorkerState::Gone)) | None => {
                actions.push(Action::EnsureWorker {
                    node: n.node.clone(),
                });
                "the worker Pod is being created".to_owned()
            }
        };
        let started = n.started_at.as_ref().map_or(obs.now, |t| t.0);
        let limit = SignedDuration::try_from(obs.start_timeout).unwrap_or(SignedDuration::MAX);
        if obs.now.duration_since(started) > limit {
            let msg = format!(
                "worker Pod not Ready after {}s ({waiting})",
                obs.start_timeout.as_secs()
            );
            fail(n, msg, &now, &mut actions);
        }
    }

    // 3. The failure budget. An approval of the current wave accepts the failures so far.
    let max_failures = usize::try_from(rollout.max_failures).unwrap_or(0);
    let failed = Counts::of(&status.nodes).failed;
    let wave = status.rollout.as_ref().map_or(1, |r| r.wave);
    if let Some(r) = status.rollout.as_mut()
        && staged
        && rollout.approved_wave >= wave
    {
        r.accepted_failures = i32::try_from(failed).unwrap_or(i32::MAX);
    }
    let accepted = status
        .rollout
        .as_ref()
        .map_or(0, |r| usize::try_from(r.accepted_failures).unwrap_or(0));
    let over_budget = failed.saturating_sub(accepted) > max_failures;
    let mut halted: Option<Halt> = None;
    let mut gate: Gate = Gate::None;

    if rollout.cancel {
        skip_pending(
            status,
            "not started: the rollout was cancelled (spec.rollout.cancel)",
            &now,
        );
    } else if over_budget && !staged {
        skip_pending(
            status,
            &format!(
                "not started: {failed} nodes failed, more than rollout.maxFailures {max_failures}"
            ),
            &now,
        );
    } else if !obs.plugin_ok {
        for n in status
            .nodes
            .iter_mut()
            .filter(|n| n.phase == NodePhase::Pending)
        {
            fail(
                n,
                "not started: the plugin changed or vanished during the rollout".into(),
                &now,
                &mut actions,
            );
        }
    } else {
        if over_budget {
            let over = failed.saturating_sub(accepted);
            let nodes = if over == 1 { "node" } else { "nodes" };
            halted = Some(Halt {
                short: format!("{over} {nodes} failed"),
                why: format!(
                    "wave {wave} halted: {over} {nodes} failed, more than rollout.maxFailures \
                     {max_failures}; resume to accept them and go on, or cancel"
                ),
            });
        } else if staged {
            gate = run_gate(status, rollout, obs, &now, &mut actions);
            if let Gate::Failed(halt) = &gate {
                halted = Some(halt.clone());
            }
        }
        if halted.is_none() && !rollout.paused {
            admit(status, rollout, obs, disruption, &now, &mut actions);
        }
    }

    // The cycle of each node in one, from its mark; nothing once it ended.
    if let Some(g) = disruption {
        for n in status.nodes.iter_mut() {
            match n.phase {
                NodePhase::Running => {
                    n.disruption = g.of_started(&n.node);
                    let budget = Some(DisruptionPhase::WaitingForBudget);
                    if n.disruption.as_ref().map(|d| d.phase) == budget {
                        n.message = n.disruption.as_ref().and_then(|d| d.message.clone());
                    } else if n
                        .message
                        .as_deref()
                        .is_some_and(|m| m.starts_with(crate::disruption::BUDGET_WAIT))
                    {
                        n.message = None;
                    }
                }
                NodePhase::Pending => {}
                _ => n.disruption = None,
            }
        }
    }

    // 4. The phase, derived from the record, and what changed is announced.
    if let Some(r) = status.rollout.as_mut() {
        let all_done = status.nodes.iter().all(|n| n.phase.is_finished());
        let (phase, message) = if rollout.cancel {
            (
                RolloutPhase::Cancelled,
                Some("cancelled (spec.rollout.cancel): nodes not started were skipped".into()),
            )
        } else if all_done {
            (RolloutPhase::Completed, None)
        } else if let Some(halt) = &halted {
            (RolloutPhase::Halted, Some(halt.why.clone()))
        } else if rollout.paused {
            (
                RolloutPhase::Paused,
                Some(format!(
                    "wave {} paused (spec.rollout.paused): nodes in flight finish, nothing new \
                     starts",
                    r.wave
                )),
            )
        } else {
            match gate {
                Gate::Approval => (
                    RolloutPhase::AwaitingApproval,
                    Some(format!(
                        "wave {} passed its gate and waits for approval (kubectl hostplug \
                         resume, or spec.rollout.approvedWave: {})",
                        r.wave, r.wave
                    )),
                ),
                Gate::Verifying(what) => (RolloutPhase::Verifying, Some(what)),
                _ => (RolloutPhase::Progressing, None),
            }
        };
        r.phase = phase;
        r.message = message;
        let short = match phase {
            RolloutPhase::Halted => format!(
                "halted: {}",
                halted
                    .as_ref()
                    .map_or("see status.rollout.message", |h| &h.short)
            ),
            RolloutPhase::AwaitingApproval => "awaiting approval".into(),
            p => p.to_string().to_lowercase(),
        };
        r.summary = format!("wave {}/{}, {short}", r.wave, r.waves);
        if let Some((old_phase, old_wave)) = before {
            if r.wave != old_wave {
                actions.push(Action::Announce {
                    warning: false,
                    reason: "WaveStarted",
                    message: format!("wave {}/{} started", r.wave, r.waves),
                });
            }
            if phase != old_phase {
                let (warning, reason) = match phase {
                    RolloutPhase::Halted => (true, "RolloutHalted"),
                    RolloutPhase::Paused => (false, "RolloutPaused"),
                    RolloutPhase::AwaitingApproval => (false, "AwaitingApproval"),
                    RolloutPhase::Cancelled => (true, "RolloutCancelled"),
                    _ => (false, ""),
                };
                if !reason.is_empty() {
                    actions.push(Action::Announce {
                        warning,
                        reason,
                        message: r.message.clone().unwrap_or_default(),
                    });
                }
                if phase == RolloutPhase::Halted
                    && rollout.on_failure == hostplug_api::crd::OnFailure::Revert
                {
                    let wave = r.wave;
                    actions.push(Action::RevertWave {
                        wave,
                        nodes: status
                            .nodes
                            .iter()
                            .filter(|n| {
                                n.wave == Some(wave)
                                    && matches!(n.phase, NodePhase::Succeeded | NodePhase::Failed)
                            })
                            .map(|n| n.node.clone())
                            .collect(),
                    });
                }
            }
        }
    }
    actions
}

/// Why a rollout halted: the short form for the summary column (what failed and where)
/// and the whole reason.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Halt {
    short: String,
    why: String,
}

/// Every node not started ends Skipped with `why`; health checks not run are Skipped.
fn skip_pending(status: &mut HostTaskStatus, why: &str, now: &Time) {
    for n in status.nodes.iter_mut() {
        if n.phase == NodePhase::Pending {
            n.phase = NodePhase::Skipped;
            n.message = Some(why.to_owned());
            n.finished_at = Some(now.clone());
        }
        for c in n
            .checks
            .iter_mut()
            .filter(|c| c.phase == NodePhase::Pending)
        {
            c.phase = NodePhase::Skipped;
            c.message = Some(why.to_owned());
        }
    }
}

/// Warms and admits Pending nodes (of waves up to the current one) up to maxParallel.
fn admit(
    status: &mut HostTaskStatus,
    rollout: &RolloutSpec,
    obs: &Observed,
    gate: Option<&crate::disruption::Gate>,
    now: &Time,
    actions: &mut Vec<Action>,
) {
    let wave = status.rollout.as_ref().map(|r| r.wave);
    let mut in_flight = Counts::of(&status.nodes).in_flight;
    let max_parallel = usize::try_from(rollout.max_parallel).unwrap_or(1).max(1);
    // The disruption gate: a closed window starts nothing; the fleet budget counts the
    // nodes in a cycle anywhere and this task's nodes in flight.
    let window_hold = gate.and_then(crate::disruption::Gate::window_hold);
    let mut started: std::collections::BTreeSet<String> = status
        .nodes
        .iter()
        .filter(|n| matches!(n.phase, NodePhase::Starting | NodePhase::Running))
        .map(|n| n.node.clone())
        .collect();
    for n in status.nodes.iter_mut().filter(|n| {
        n.phase == NodePhase::Pending && (n.wave.is_none() || wave.is_none() || n.wave <= wave)
    }) {
        let Some(worker) = obs.workers.get(&n.node) else {
            fail(n, format!("node {} no longer exists", n.node), now, actions);
            continue;
        };
        let ready = match worker {
            Some((pod, WorkerState::Ready)) => Some(pod.clone()),
            Some((_, WorkerState::Starting(_))) => None,
            Some((pod, WorkerState::Broken(_))) => {
                // An earlier run's worker that will never serve (it ended, or never
                // started): a new one for this run.
                actions.push(Action::DiscardWorker {
                    node: n.node.clone(),
                    pod: pod.clone(),
                });
                actions.push(Action::EnsureWorker {
                    node: n.node.clone(),
                });
                None
            }
            Some((_, WorkerState::Gone)) | None => {
                actions.push(Action::EnsureWorker {
                    node: n.node.clone(),
                });
                None
            }
        };
        if in_flight >= max_parallel {
            continue;
        }
        if let Some(g) = gate {
            let hold = match &window_hold {
                Some(h) => Some(h.clone()),
                None if g.free(&started) == 0 => Some(g.budget_hold(&started)),
                None => None,
            };
            if let Some(hold) = hold {
                if n.disruption.as_ref().map(|d| d.phase) != Some(hold.phase) {
                    actions.push(Action::Announce {
                        warning: false,
                        reason: "DisruptionWaiting",
                        message: format!(
                            "{}: {}",
                            n.node,
                            hold.message.clone().unwrap_or_default()
                        ),
                    });
                }
                n.message.clone_from(&hold.message);
                n.disruption = Some(hold);
                continue;
            }
            started.insert(n.node.clone());
            n.disruption = None;
            n.message = None;
        }
        in_flight += 1;
        n.started_at = Some(now.clone());
        match ready {
            Some(pod) => {
                n.phase = NodePhase::Running;
                n.pod = Some(pod.clone());
                actions.push(Action::Call {
                    node: n.node.clone(),
                    pod,
                    resume: false,
                });
            }
            None => {
                n.phase = NodePhase::Starting;
                if let Some((pod, WorkerState::Starting(_))) = worker {
                    n.pod = Some(pod.clone());
                }
            }
        }
    }
}

/// Where the current wave's gate is.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Gate {
    /// No gate now: the wave runs, or it is the last one.
    None,
    /// Being checked: what it waits for.
    Verifying(String),
    /// Held; waits for an approval.
    Approval,
    /// Failed: why (the rollout halts).
    Failed(Halt),
}

/// The gate of the current wave, once every node of it (and of the waves before) ended:
/// approved (`approvedWave`) or passed, the next wave becomes current; otherwise it
/// reports what it waits for or why it failed. Health checks not yet sent are sent to
/// Ready workers (not while paused).
fn run_gate(
    status: &mut HostTaskStatus,
    rollout: &RolloutSpec,
    obs: &Observed,
    now: &Time,
    actions: &mut Vec<Action>,
) -> Gate {
    let Some((wave, waves)) = status.rollout.as_ref().map(|r| (r.wave, r.waves)) else {
        return Gate::None;
    };
    let ended = status
        .nodes
        .iter()
        .filter(|n| n.wave.is_some_and(|w| w <= wave))
        .all(|n| n.phase.is_finished());
    if wave >= waves || !ended {
        return Gate::None;
    }
    let gate = rollout.gate.clone().unwrap_or_default();
    let outcome = if rollout.approved_wave >= wave {
        for n in status.nodes.iter_mut().filter(|n| n.wave == Some(wave)) {
            for c in n.checks.iter_mut().filter(|c| !c.phase.is_finished()) {
                c.phase = NodePhase::Skipped;
                c.message = Some(format!(
                    "not needed: wave {wave} was approved (spec.rollout.approvedWave)"
                ));
            }
        }
        Gate::None
    } else {
        let started = status
            .rollout
            .as_mut()
            .map(|r| r.gate_started_at.get_or_insert_with(|| now.clone()).0)
            .unwrap_or(obs.now);
        check_gate(status, &gate, rollout.paused, obs, started, actions)
    };
    if outcome != Gate::None {
        return outcome;
    }
    if let Some(r) = status.rollout.as_mut() {
        r.wave += 1;
        r.gate_started_at = None;
    }
    Gate::None
}

/// The checks of a gate that has not been approved: `Gate::None` when it passed.
fn check_gate(
    status: &mut HostTaskStatus,
    gate: &hostplug_api::crd::Gate,
    paused: bool,
    obs: &Observed,
    started: Timestamp,
    actions: &mut Vec<Action>,
) -> Gate {
    let wave = status.rollout.as_ref().map_or(1, |r| r.wave);
    // Every node of the wave that exists is Ready.
    let not_ready: Vec<&str> = status
        .nodes
        .iter()
        .filter(|n| n.wave == Some(wave) && obs.ready.get(&n.node) == Some(&false))
        .map(|n| n.node.as_str())
        .collect();
    let limit = SignedDuration::try_from(GATE_READY_TIMEOUT).unwrap_or(SignedDuration::MAX);
    if let Some(first) = not_ready.first() {
        if obs.now.duration_since(started) > limit {
            return Gate::Failed(Halt {
                short: format!("gate failed on {first}"),
                why: format!(
                    "wave {wave} halted: gate failed on {first}: node {first} not Ready after \
                     {}s; resume to go on anyway, or cancel",
                    GATE_READY_TIMEOUT.as_secs()
                ),
            });
        }
        return Gate::Verifying(format!(
            "wave {wave} ended; its gate waits for node {first} to be Ready"
        ));
    }
    // The health checks on each node of the wave that succeeded.
    let mut waiting = None;
    for n in status
        .nodes
        .iter_mut()
        .filter(|n| n.wave == Some(wave) && n.phase == NodePhase::Succeeded)
    {
        if n.checks.len() != gate.checks.len() {
            n.checks = gate
                .checks
                .iter()
                .map(|c| FollowUpResult {
                    api: c.call.api.clone(),
                    method: c.call.method.clone(),
                    phase: NodePhase::Pending,
                    ..FollowUpResult::default()
                })
                .collect();
        }
        for (i, (c, spec)) in n.checks.iter_mut().zip(&gate.checks).enumerate() {
            if c.phase.is_finished() {
                continue;
            }
            match obs.checks.get(&(n.node.clone(), i)) {
                Some(CallState::Done(outcome, _)) => {
                    let verdict = match outcome {
                        Ok(s) => spec.judge(&s.output),
                        Err(e) => Err(e.to_string()),
                    };
                    c.logs = match outcome {
                        Ok(s) => s.logs.clone(),
                        Err(CallError::Plugin(f)) => {
                            f.logs.iter().map(ToString::to_string).collect()
                        }
                        Err(_) => Vec::new(),
                    };
                    match verdict {
                        Ok(()) => {
                            c.phase = NodePhase::Succeeded;
                            c.message = None;
                        }
                        Err(why) => {
                            c.phase = NodePhase::Failed;
                            c.message = Some(why);
                        }
                    }
                }
                Some(CallState::InFlight) => {
                    waiting.get_or_insert_with(|| n.node.clone());
                }
                None => {
                    waiting.get_or_insert_with(|| n.node.clone());
                    // Read-only: a check this process never sent (or lost to a
                    // restart) is simply sent again.
                    c.phase = NodePhase::Pending;
                    if paused {
                        continue;
                    }
                    match obs.workers.get(&n.node) {
                        None => {
                            c.phase = NodePhase::Failed;
                            c.message = Some(format!("node {} no longer exists", n.node));
                        }
                        Some(Some((pod, WorkerState::Ready))) => {
                            c.phase = NodePhase::Running;
                            actions.push(Action::Check {
                                node: n.node.clone(),
                                pod: pod.clone(),
                                check: i,
                            });
                        }
                        Some(Some((_, WorkerState::Starting(_)))) => {}
                        Some(Some((pod, WorkerState::Broken(why)))) => {
                            actions.push(Action::DiscardWorker {
                                node: n.node.clone(),
                                pod: pod.clone(),
                            });
                            c.phase = NodePhase::Failed;
                            c.message = Some(format!("worker Pod cannot start: {why}"));
                        }
                        Some(Some((_, WorkerState::Gone)) | None) => {
                            actions.push(Action::EnsureWorker {
                                node: n.node.clone(),
                            });
                        }
                    }
                }
            }
        }
    }
    let failed = status
        .nodes
        .iter()
        .filter(|n| n.wave == Some(wave))
        .find_map(|n| {
            n.checks
                .iter()
                .enumerate()
                .find(|(_, c)| c.phase == NodePhase::Failed)
                .map(|(i, c)| (n.node.clone(), i, c.clone()))
        });
    if let Some((node, i, c)) = failed {
        return Gate::Failed(Halt {
            short: format!("gate failed on {node}"),
            why: format!(
                "wave {wave} halted: gate failed on {node}: health check \
                 spec.rollout.gate.checks[{i}] ({}/{}): {}; resume to go on anyway, or cancel",
                c.api,
                c.method,
                c.message.as_deref().unwrap_or("failed")
            ),
        });
    }
    if let Some(node) = waiting {
        return Gate::Verifying(format!(
            "wave {wave} ended; its health checks run (waiting for {node})"
        ));
    }
    if gate.approval {
        return Gate::Approval;
    }
    Gate::None
}

#[cfg(test)]
mod tests {
    use super::*;
    use hostplug_api::crd::NodePhase::*;

    fn status(nodes: &[&str]) -> HostTaskStatus {
        HostTaskStatus {
            observed_generation: Some(1),
            nodes: nodes
                .iter()
                .map(|n| NodeResult {
                    node: (*n).into(),
                    ..NodeResult::default()
                })
                .collect(),
            ..HostTaskStatus::default()
        }
    }

    fn obs(nodes: &[(&str, Option<WorkerState>)]) -> Observed {
        Observed {
            now: Timestamp::now(),
            plugin_ok: true,
            workers: nodes
                .iter()
                .map(|(n, w)| ((*n).to_owned(), w.clone().map(|w| (format!("w-{n}"), w))))
                .collect(),
            pods: BTreeMap::new(),
            calls: BTreeMap::new(),
            checks: BTreeMap::new(),
            ready: nodes.iter().map(|(n, _)| ((*n).to_owned(), true)).collect(),
            start_timeout: Duration::from_secs(60),
            follow_ups: Vec::new(),
        }
    }

    fn phases(s: &HostTaskStatus) -> Vec<NodePhase> {
        s.nodes.iter().map(|n| n.phase).collect()
    }

    fn rollout(max_parallel: i32, max_failures: i32) -> RolloutSpec {
        RolloutSpec {
            max_parallel,
            max_failures,
            ..RolloutSpec::default()
        }
    }

    fn calls(actions: &[Action]) -> Vec<(String, bool)> {
        actions
            .iter()
            .filter_map(|a| match a {
                Action::Call { node, resume, .. } => Some((node.clone(), *resume)),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn workers_warm_everywhere_and_max_parallel_bounds_calls() {
        let mut s = status(&["a", "b", "c"]);
        let o = obs(&[("a", None), ("b", None), ("c", None)]);
        let actions = step(&mut s, &rollout(1, 0), &o);
        let ensured = actions
            .iter()
            .filter(|a| matches!(a, Action::EnsureWorker { .. }))
            .count();
        assert_eq!(ensured, 3, "every node's worker starts at once");
        assert_eq!(phases(&s), vec![Starting, Pending, Pending]);

        let ready = obs(&[
            ("a", Some(WorkerState::Ready)),
            ("b", Some(WorkerState::Ready)),
            ("c", Some(WorkerState::Ready)),
        ]);
        let actions = step(&mut s, &rollout(1, 0), &ready);
        assert_eq!(calls(&actions), vec![("a".into(), false)]);
        assert_eq!(phases(&s), vec![Running, Pending, Pending]);
        assert_eq!(s.nodes[0].pod.as_deref(), Some("w-a"));

        // Still in flight: nothing new starts, nothing is called twice.
        let mut o2 = ready.clone();
        o2.calls.insert("a".into(), CallState::InFlight);
        assert!(calls(&step(&mut s, &rollout(1, 0), &o2)).is_empty());

        // Done: the next node starts right away.
        o2.calls.insert(
            "a".into(),
            CallState::Done(
                Ok(Success {
                    changed: true,
                    diff: Some("+x".into()),
                    output: serde_json::json!({}),
                    logs: vec![],
                    follow_ups: vec![],
                    revert: None,
                    reboot_required: None,
                }),
                Timestamp::now(),
            ),
        );
        let actions = step(&mut s, &rollout(1, 0), &o2);
        assert_eq!(phases(&s), vec![Succeeded, Running, Pending]);
        assert!(s.nodes[0].changed);
        assert_eq!(calls(&actions), vec![("b".into(), false)]);

        let mut wide = status(&["a", "b", "c"]);
        let actions = step(&mut wide, &rollout(2, 0), &ready);
        assert_eq!(calls(&actions).len(), 2);
    }

    fn gate_of(
        window: Option<crate::disruption::window::WindowState>,
        budget: usize,
        held: &[&str],
    ) -> crate::disruption::Gate {
        crate::disruption::Gate {
            window,
            budget,
            held: held
                .iter()
                .map(|n| ((*n).to_owned(), "ns/other".to_owned()))
                .collect(),
            cycles: BTreeMap::new(),
            ended: std::collections::BTreeSet::new(),
        }
    }

    #[test]
    fn a_closed_window_starts_nothing_and_says_when_it_opens() {
        use crate::disruption::window::WindowState;
        use hostplug_api::disruption::DisruptionPhase;
        let opens: Timestamp = "2026-12-08T02:00:00Z".parse().expect("test setup");
        let closed = gate_of(
            Some(WindowState::Closed {
                opens: Some(opens),
                window: "0 2 * * * (UTC)".into(),
            }),
            5,
            &[],
        );
        let mut s = status(&["a", "b"]);
        let ready = obs(&[
            ("a", Some(WorkerState::Ready)),
            ("b", Some(WorkerState::Ready)),
        ]);
        let actions = step_gated(&mut s, &rollout(2, 0), &ready, Some(&closed));
        assert!(calls(&actions).is_empty(), "{actions:?}");
        assert_eq!(phases(&s), vec![Pending, Pending]);
        let d = s.nodes[0].disruption.clone().expect("a hold");
        assert_eq!(d.phase, DisruptionPhase::WaitingForWindow);
        let msg = s.nodes[0].message.clone().unwrap_or_default();
        assert!(msg.contains("2026-12-08T02:00:00Z"), "{msg}");
        assert_eq!(
            announced(&actions),
            vec!["DisruptionWaiting", "DisruptionWaiting"]
        );
        // Said once, not on every step.
        let actions = step_gated(&mut s, &rollout(2, 0), &ready, Some(&closed));
        assert!(announced(&actions).is_empty());
        // Open: both start, the hold is gone.
        let open = gate_of(Some(WindowState::Open { closes: opens }), 5, &[]);
        let actions = step_gated(&mut s, &rollout(2, 0), &ready, Some(&open));
        assert_eq!(calls(&actions).len(), 2);
        assert!(
            s.nodes
                .iter()
                .all(|n| n.disruption.is_none() && n.message.is_none())
        );
        // Closing again stops nothing in flight.
        let mut o = ready.clone();
        o.calls.insert("a".into(), CallState::InFlight);
        o.calls.insert("b".into(), CallState::InFlight);
        step_gated(&mut s, &rollout(2, 0), &o, Some(&closed));
        assert_eq!(phases(&s), vec![Running, Running]);
    }

    #[test]
    fn the_fleet_budget_bounds_nodes_beside_max_parallel() {
        use hostplug_api::disruption::DisruptionPhase;
        let ready = obs(&[
            ("a", Some(WorkerState::Ready)),
            ("b", Some(WorkerState::Ready)),
            ("c", Some(WorkerState::Ready)),
        ]);
        // Another task's node holds the only place: nothing starts, and each says so.
        let mut s = status(&["a", "b", "c"]);
        let full = gate_of(None, 1, &["x"]);
        let actions = step_gated(&mut s, &rollout(3, 0), &ready, Some(&full));
        assert!(calls(&actions).is_empty());
        let d = s.nodes[0].disruption.clone().expect("a hold");
        assert_eq!(d.phase, DisruptionPhase::WaitingForBudget);
        assert!(
            d.message
                .unwrap_or_default()
                .contains("x (HostTask ns/other)")
        );
        // Budget 2, maxParallel 3: two start.
        let two = gate_of(None, 2, &[]);
        let actions = step_gated(&mut s, &rollout(3, 0), &ready, Some(&two));
        assert_eq!(calls(&actions).len(), 2);
        assert_eq!(phases(&s), vec![Running, Running, Pending]);
        assert_eq!(
            s.nodes[2].disruption.as_ref().map(|d| d.phase),
            Some(DisruptionPhase::WaitingForBudget)
        );
        // Started before another task took the last place (the executor waits before
        // the first mark): the node says it waits for the budget.
        let mut o = ready.clone();
        o.calls.insert("a".into(), CallState::InFlight);
        o.calls.insert("b".into(), CallState::InFlight);
        let taken = gate_of(None, 1, &["x"]);
        step_gated(&mut s, &rollout(3, 0), &o, Some(&taken));
        assert_eq!(
            s.nodes[1].disruption.as_ref().map(|d| d.phase),
            Some(DisruptionPhase::WaitingForBudget)
        );
        assert!(
            s.nodes[1]
                .message
                .as_deref()
                .unwrap_or_default()
                .contains("x (HostTask")
        );
        // A node's cycle shows while it runs, and goes when it ended.
        let mut cycling = two.clone();
        cycling.cycles.insert(
            "a".into(),
            hostplug_api::disruption::NodeDisruption {
                phase: DisruptionPhase::Rebooting,
                message: None,
            },
        );
        let mut o = ready.clone();
        o.calls.insert("a".into(), CallState::InFlight);
        o.calls.insert("b".into(), CallState::InFlight);
        step_gated(&mut s, &rollout(3, 0), &o, Some(&cycling));
        assert_eq!(
            s.nodes[0].disruption.as_ref().map(|d| d.phase),
            Some(DisruptionPhase::Rebooting)
        );
        o.calls.insert(
            "a".into(),
            CallState::Done(
                Ok(Success {
                    changed: true,
                    diff: None,
                    output: serde_json::json!({}),
                    logs: vec![],
                    follow_ups: vec![],
                    revert: None,
                    reboot_required: Some(
                        "reboot requested by the plugin: x; not rebooted: y".into(),
                    ),
                }),
                Timestamp::now(),
            ),
        );
        step_gated(&mut s, &rollout(3, 0), &o, Some(&cycling));
        assert_eq!(s.nodes[0].phase, Succeeded);
        assert_eq!(s.nodes[0].disruption, None);
        assert!(
            s.nodes[0]
                .message
                .as_deref()
                .unwrap_or_default()
                .contains("not rebooted")
        );
    }

    #[test]
    fn max_failures_stops_the_rollout() {
        let mut s = status(&["a", "b", "c", "d"]);
        let mut o = obs(&[
            ("a", Some(WorkerState::Ready)),
            ("b", Some(WorkerState::Ready)),
            ("c", Some(WorkerState::Ready)),
            ("d", Some(WorkerState::Ready)),
        ]);
        step(&mut s, &rollout(1, 0), &o);
        o.calls.insert(
            "a".into(),
            CallState::Done(
                Err(CallError::Plugin(hostplug_api::InvokeError {
                    kind: hostplug_api::ErrorKind::NotFound,
                    message: "no file".into(),
                    logs: vec![hostplug_api::protocol::LogRecord {
                        level: hostplug_api::protocol::LogLevel::Error,
                        source: hostplug_api::protocol::LogSource::Log,
                        message: "looked everywhere".into(),
                    }],
                })),
                Timestamp::now(),
            ),
        );
        let actions = step(&mut s, &rollout(1, 0), &o);
        assert_eq!(phases(&s), vec![Failed, Skipped, Skipped, Skipped]);
        assert!(calls(&actions).is_empty());
        assert!(
            s.nodes[0]
                .message
                .as_deref()
                .is_some_and(|m| m.contains("not-found"))
        );
        assert_eq!(
            s.nodes[0].logs,
            vec!["[error] log: looked everywhere".to_owned()],
            "a failed node keeps the tail of what its plugin logged"
        );
        assert!(
            actions
                .iter()
                .any(|a| matches!(a, Action::NodeFailed { .. }))
        );

        // maxFailures 1 tolerates one failure.
        let mut s = status(&["a", "b"]);
        step(&mut s, &rollout(1, 1), &o);
        step(&mut s, &rollout(1, 1), &o);
        assert_eq!(phases(&s), vec![Failed, Running]);
    }

    #[test]
    fn a_running_node_is_resumed_after_a_restart_never_called_afresh() {
        let mut s = status(&["a", "b"]);
        s.nodes[0].phase = Running;
        s.nodes[0].pod = Some("w-a".into());
        s.nodes[1].phase = Running;
        s.nodes[1].pod = Some("old-b".into());
        let mut o = obs(&[
            ("a", Some(WorkerState::Ready)),
            ("b", Some(WorkerState::Ready)),
        ]);
        o.pods.insert("w-a".into(), WorkerState::Ready);
        // old-b is not in `pods`: that worker is gone (b now has another worker).
        let actions = step(&mut s, &rollout(2, 1), &o);
        assert_eq!(calls(&actions), vec![("a".into(), true)]);
        assert_eq!(phases(&s), vec![Running, Failed]);
        assert!(
            s.nodes[1]
                .message
                .as_deref()
                .is_some_and(|m| m.contains("outcome unknown"))
        );
        // Once resumed (in flight in memory), it is not sent again.
        o.calls.insert("a".into(), CallState::InFlight);
        assert!(calls(&step(&mut s, &rollout(2, 1), &o)).is_empty());
    }

    #[test]
    fn finished_nodes_stay_finished() {
        let mut s = status(&["a"]);
        s.nodes[0].phase = Succeeded;
        let o = obs(&[("a", Some(WorkerState::Ready))]);
        let actions = step(&mut s, &rollout(1, 0), &o);
        assert!(actions.is_empty());
        assert_eq!(phases(&s), vec![Succeeded]);
    }

    #[test]
    fn broken_workers_gone_nodes_and_timeouts_fail_their_node() {
        let mut s = status(&["a", "b", "c"]);
        let mut o = obs(&[
            ("a", Some(WorkerState::Broken("ErrImagePull".into()))),
            ("b", Some(WorkerState::Starting("phase Pending".into()))),
        ]);
        step(&mut s, &rollout(3, 3), &o);
        // c no longer exists; a is admitted and will learn its worker is broken.
        assert_eq!(phases(&s), vec![Starting, Starting, Failed]);
        let actions = step(&mut s, &rollout(3, 3), &o);
        assert_eq!(phases(&s)[0], Failed);
        assert!(
            s.nodes[0]
                .message
                .as_deref()
                .is_some_and(|m| m.contains("ErrImagePull"))
        );
        // The Pod that cannot start is discarded: a rerun gets a new one, not this one.
        let pod = s.nodes[0].pod.clone().unwrap_or_else(|| "w-a".into());
        assert!(
            actions.contains(&Action::DiscardWorker {
                node: "a".into(),
                pod
            }),
            "{actions:?}"
        );
        o.now += SignedDuration::from_secs(61);
        step(&mut s, &rollout(3, 3), &o);
        assert_eq!(phases(&s), vec![Failed, Failed, Failed]);
        assert!(
            s.nodes[1]
                .message
                .as_deref()
                .is_some_and(|m| m.contains("not Ready after 60s"))
        );
    }

    #[test]
    fn a_changed_plugin_starts_nothing_more() {
        let mut s = status(&["a", "b"]);
        s.nodes[0].phase = Starting;
        let mut o = obs(&[
            ("a", Some(WorkerState::Ready)),
            ("b", Some(WorkerState::Ready)),
        ]);
        o.plugin_ok = false;
        let actions = step(&mut s, &rollout(1, 5), &o);
        assert!(calls(&actions).is_empty());
        assert_eq!(phases(&s), vec![Failed, Failed]);
    }

    /// A node whose main call changed it and whose follow-up failed is Failed with the
    /// follow-up named, the main call's change on record and the follow-ups after it
    /// Skipped; a node that changed nothing has every follow-up Skipped and succeeds.
    #[test]
    fn a_failed_follow_up_fails_its_node_and_skips_the_rest() {
        use hostplug_api::PluginCall;
        use hostplug_api::protocol::{ErrorKind, FollowUpOutcome, InvokeError};
        let mut s = status(&["a", "b"]);
        step(&mut s, &rollout(2, 5), &obs(&[("a", None), ("b", None)]));
        let mut o = obs(&[
            ("a", Some(WorkerState::Ready)),
            ("b", Some(WorkerState::Ready)),
        ]);
        o.follow_ups = vec![
            PluginCall::new("systemd-unit", "restart", None),
            PluginCall::new("systemd-unit", "reload", None),
        ];
        step(&mut s, &rollout(2, 5), &o);
        assert_eq!(phases(&s), vec![Running, Running]);
        let done = |changed, follow_ups| {
            CallState::Done(
                Ok(Success {
                    changed,
                    diff: None,
                    output: serde_json::json!({}),
                    logs: vec![],
                    follow_ups,
                    revert: None,
                    reboot_required: None,
                }),
                Timestamp::now(),
            )
        };
        o.calls.insert(
            "a".into(),
            done(
                true,
                vec![FollowUpOutcome {
                    method: "restart".into(),
                    outcome: None,
                    error: Some(InvokeError::new(
                        ErrorKind::NotFound,
                        "no unit chrony.service",
                    )),
                }],
            ),
        );
        o.calls.insert("b".into(), done(false, vec![]));
        step(&mut s, &rollout(2, 5), &o);
        assert_eq!(phases(&s), vec![Failed, Succeeded]);
        let a = &s.nodes[0];
        assert!(a.changed, "the main call's change stays on record");
        let msg = a.message.clone().unwrap_or_default();
        assert!(
            msg.contains("onChange[0] (systemd-unit/restart) failed")
                && msg.contains("chrony.service"),
            "{msg}"
        );
        assert_eq!(
            a.on_change.iter().map(|f| f.phase).collect::<Vec<_>>(),
            vec![Failed, Skipped]
        );
        let b = &s.nodes[1];
        assert_eq!(
            b.on_change.iter().map(|f| f.phase).collect::<Vec<_>>(),
            vec![Skipped, Skipped]
        );
        assert!(
            b.on_change[0]
                .message
                .as_deref()
                .unwrap_or("")
                .contains("changed nothing")
        );
    }

    // ---- waves, gates, pause, cancel ----

    use hostplug_api::crd::{Gate, HealthCheck, WaveSize};
    use hostplug_api::rollout::Expect;

    fn ready_obs(nodes: &[&str]) -> Observed {
        let with: Vec<(&str, Option<WorkerState>)> = nodes
            .iter()
            .map(|n| (*n, Some(WorkerState::Ready)))
            .collect();
        obs(&with)
    }

    fn waved(waves: serde_json::Value, checks: Vec<HealthCheck>) -> RolloutSpec {
        RolloutSpec {
            max_parallel: 10,
            max_failures: 0,
            waves: serde_json::from_value::<Vec<WaveSize>>(waves).ok(),
            gate: Some(Gate {
                checks,
                approval: false,
            }),
            ..RolloutSpec::default()
        }
    }

    fn active_check() -> HealthCheck {
        HealthCheck {
            call: hostplug_api::PluginCall::new(
                "systemd-unit",
                "status",
                Some(serde_json::json!({"unit": "chrony.service"})),
            ),
            expect: Some(Expect {
                path: "/active".into(),
                equals: Some(serde_json::json!("active")),
            }),
        }
    }

    fn ok(output: serde_json::Value) -> CallState {
        CallState::Done(
            Ok(Success {
                changed: true,
                diff: None,
                output,
                logs: vec![],
                follow_ups: vec![],
                revert: None,
                reboot_required: None,
            }),
            Timestamp::now(),
        )
    }

    fn finish_running(s: &HostTaskStatus, o: &mut Observed) {
        for n in s.nodes.iter().filter(|n| n.phase == Running) {
            o.calls.insert(n.node.clone(), ok(serde_json::json!({})));
        }
    }

    fn checks_of(actions: &[Action]) -> Vec<(String, usize)> {
        actions
            .iter()
            .filter_map(|a| match a {
                Action::Check { node, check, .. } => Some((node.clone(), *check)),
                _ => None,
            })
            .collect()
    }

    fn announced(actions: &[Action]) -> Vec<&'static str> {
        actions
            .iter()
            .filter_map(|a| match a {
                Action::Announce { reason, .. } => Some(*reason),
                _ => None,
            })
            .collect()
    }

    fn phase_of(s: &HostTaskStatus) -> RolloutPhase {
        s.rollout.as_ref().map(|r| r.phase).unwrap_or_default()
    }

    /// Four nodes given in any order, waves [1, "100%"]: the first by name is the canary;
    /// only it is warmed and called; its health check passes; the other three follow.
    #[test]
    fn a_canary_runs_alone_then_its_gate_lets_the_rest_go() {
        let names = ["node3", "master", "node1", "node2"];
        let mut s = status(&names);
        let r = waved(serde_json::json!([1, "100%"]), vec![active_check()]);
        let mut o = ready_obs(&names);
        let actions = step(&mut s, &r, &o);
        assert_eq!(calls(&actions), vec![("master".into(), false)]);
        let waves: Vec<_> = s.nodes.iter().map(|n| (n.node.as_str(), n.wave)).collect();
        assert_eq!(
            waves,
            vec![
                ("node3", Some(2)),
                ("master", Some(1)),
                ("node1", Some(2)),
                ("node2", Some(2))
            ]
        );
        assert_eq!(s.rollout.as_ref().map(|r| (r.wave, r.waves)), Some((1, 2)));

        // The canary succeeded: its health check goes out, nothing else starts.
        finish_running(&s, &mut o);
        let actions = step(&mut s, &r, &o);
        assert!(calls(&actions).is_empty(), "{actions:?}");
        assert_eq!(checks_of(&actions), vec![("master".into(), 0)]);
        assert_eq!(phase_of(&s), RolloutPhase::Verifying);
        assert_eq!(s.nodes[1].checks[0].phase, Running);
        // In flight: not sent again.
        o.checks.insert(("master".into(), 0), CallState::InFlight);
        assert!(checks_of(&step(&mut s, &r, &o)).is_empty());

        // It passes: wave 2 starts at once, all three (maxParallel 10).
        o.checks.insert(
            ("master".into(), 0),
            ok(serde_json::json!({"active": "active"})),
        );
        let actions = step(&mut s, &r, &o);
        assert_eq!(s.nodes[1].checks[0].phase, Succeeded);
        assert_eq!(s.rollout.as_ref().map(|r| r.wave), Some(2));
        assert_eq!(calls(&actions).len(), 3);
        assert!(announced(&actions).contains(&"WaveStarted"));
        finish_running(&s, &mut o);
        step(&mut s, &r, &o);
        assert!(s.nodes.iter().all(|n| n.phase == Succeeded));
        assert_eq!(phase_of(&s), RolloutPhase::Completed);
        assert!(
            s.nodes
                .iter()
                .filter(|n| n.wave == Some(2))
                .all(|n| n.checks.is_empty()),
            "no gate after the last wave"
        );
    }

    /// A failed health check halts the rollout after the canary, with the node, the
    /// check and what was found; later waves stay Pending and get no worker; an approval
    /// of the wave lets it go on.
    #[test]
    fn a_failed_health_check_halts_until_the_wave_is_approved() {
        let names = ["a", "b", "c", "d"];
        let mut s = status(&names);
        let mut r = waved(serde_json::json!([1, "100%"]), vec![active_check()]);
        let mut o = ready_obs(&names);
        step(&mut s, &r, &o);
        finish_running(&s, &mut o);
        step(&mut s, &r, &o);
        o.checks
            .insert(("a".into(), 0), ok(serde_json::json!({"active": "failed"})));
        let actions = step(&mut s, &r, &o);
        assert_eq!(phase_of(&s), RolloutPhase::Halted);
        let msg = s
            .rollout
            .as_ref()
            .and_then(|r| r.message.clone())
            .unwrap_or_default();
        assert!(
            msg.contains("gate failed on a")
                && msg.contains("spec.rollout.gate.checks[0] (systemd-unit/status)")
                && msg.contains(r#""/active" is "failed", expected "active""#),
            "{msg}"
        );
        assert_eq!(
            s.rollout.as_ref().map(|r| r.summary.as_str()),
            Some("wave 1/2, halted: gate failed on a")
        );
        assert_eq!(announced(&actions), vec!["RolloutHalted"]);
        assert!(
            actions
                .iter()
                .all(|a| !matches!(a, Action::Call { .. } | Action::EnsureWorker { .. })),
            "{actions:?}"
        );
        // Still halted later: nothing starts, no second Event.
        let actions = step(&mut s, &r, &o);
        assert!(actions.is_empty(), "{actions:?}");
        assert_eq!(phases(&s), vec![Succeeded, Pending, Pending, Pending]);

        // Approved (kubectl hostplug resume): wave 2 goes.
        r.approved_wave = 1;
        let actions = step(&mut s, &r, &o);
        assert_eq!(calls(&actions).len(), 3);
        assert_eq!(phase_of(&s), RolloutPhase::Progressing);
        assert_eq!(
            s.nodes[0].checks[0].phase, Failed,
            "the failure stays on record"
        );
    }

    /// The gate waits for the wave's nodes to be Ready, and fails past the timeout; a
    /// gate asking for approval waits for it.
    #[test]
    fn the_gate_waits_for_ready_nodes_and_for_approval() {
        let names = ["a", "b"];
        let mut s = status(&names);
        let mut r = waved(serde_json::json!([1, 2]), vec![]);
        if let Some(g) = r.gate.as_mut() {
            g.approval = true;
        }
        let mut o = ready_obs(&names);
        step(&mut s, &r, &o);
        finish_running(&s, &mut o);
        o.ready.insert("a".into(), false);
        step(&mut s, &r, &o);
        assert_eq!(phase_of(&s), RolloutPhase::Verifying);
        o.now += SignedDuration::from_secs(301);
        step(&mut s, &r, &o);
        assert_eq!(phase_of(&s), RolloutPhase::Halted);
        assert!(
            s.rollout
                .as_ref()
                .and_then(|r| r.message.clone())
                .is_some_and(|m| m.contains("node a not Ready after 300s"))
        );
        o.ready.insert("a".into(), true);
        let actions = step(&mut s, &r, &o);
        assert_eq!(phase_of(&s), RolloutPhase::AwaitingApproval);
        assert_eq!(announced(&actions), vec!["AwaitingApproval"]);
        assert!(calls(&actions).is_empty());
        r.approved_wave = 1;
        let actions = step(&mut s, &r, &o);
        assert_eq!(calls(&actions), vec![("b".into(), false)]);
    }

    /// Pause: in-flight nodes finish, nothing new starts, no health check goes out;
    /// unpaused, it goes on. Cancel: nodes not started are Skipped, the in-flight one
    /// finishes, the rollout ends Cancelled.
    #[test]
    fn pause_lets_in_flight_nodes_finish_and_cancel_skips_the_rest() {
        let names = ["a", "b", "c"];
        let mut s = status(&names);
        let mut r = RolloutSpec {
            max_parallel: 1,
            ..RolloutSpec::default()
        };
        let mut o = ready_obs(&names);
        step(&mut s, &r, &o);
        o.calls.insert("a".into(), CallState::InFlight);
        r.paused = true;
        let actions = step(&mut s, &r, &o);
        assert_eq!(phase_of(&s), RolloutPhase::Paused);
        assert_eq!(announced(&actions), vec!["RolloutPaused"]);
        finish_running(&s, &mut o);
        let actions = step(&mut s, &r, &o);
        assert!(calls(&actions).is_empty());
        assert_eq!(phases(&s), vec![Succeeded, Pending, Pending]);
        r.paused = false;
        let actions = step(&mut s, &r, &o);
        assert_eq!(calls(&actions), vec![("b".into(), false)]);
        o.calls.insert("b".into(), CallState::InFlight);
        r.cancel = true;
        let actions = step(&mut s, &r, &o);
        assert!(calls(&actions).is_empty());
        assert_eq!(phases(&s), vec![Succeeded, Running, Skipped]);
        assert!(
            s.nodes[2]
                .message
                .as_deref()
                .is_some_and(|m| m.contains("cancelled"))
        );
        assert_eq!(announced(&actions), vec!["RolloutCancelled"]);
        finish_running(&s, &mut o);
        step(&mut s, &r, &o);
        assert_eq!(phases(&s), vec![Succeeded, Succeeded, Skipped]);
        assert_eq!(phase_of(&s), RolloutPhase::Cancelled);
        crate::status::summarise(&mut s, false, &Time(Timestamp::now()));
        assert_eq!(s.state, hostplug_api::crd::TaskState::Failed);
        let msg = s.msg.clone().unwrap_or_default();
        assert!(msg.starts_with("cancelled (spec.rollout.cancel)"), "{msg}");
        assert!(s.conditions.iter().all(|c| c.reason == "Cancelled"));
    }

    /// With waves, more than maxFailures failed nodes halt the rollout (nodes not
    /// started stay Pending, untouched) instead of skipping them; approving the wave
    /// accepts those failures.
    #[test]
    fn an_exhausted_failure_budget_halts_a_waved_rollout() {
        let names = ["a", "b", "c"];
        let mut s = status(&names);
        let mut r = waved(serde_json::json!([1, "100%"]), vec![]);
        let mut o = ready_obs(&names);
        step(&mut s, &r, &o);
        o.calls.insert(
            "a".into(),
            CallState::Done(Err(CallError::NotSent("boom".into())), Timestamp::now()),
        );
        step(&mut s, &r, &o);
        assert_eq!(phases(&s), vec![Failed, Pending, Pending]);
        assert_eq!(phase_of(&s), RolloutPhase::Halted);
        assert_eq!(
            s.rollout.as_ref().map(|r| r.summary.as_str()),
            Some("wave 1/2, halted: 1 node failed")
        );
        crate::status::summarise(&mut s, false, &Time(Timestamp::now()));
        let msg = s.msg.clone().unwrap_or_default();
        assert!(msg.contains("more than rollout.maxFailures 0"), "{msg}");
        assert!(
            s.conditions
                .iter()
                .any(|c| c.type_ == "Progressing" && c.status == "False" && c.reason == "Halted")
        );
        r.approved_wave = 1;
        let actions = step(&mut s, &r, &o);
        assert_eq!(calls(&actions).len(), 2);
        assert_eq!(s.rollout.as_ref().map(|r| r.accepted_failures), Some(1));
    }

    /// After a restart mid-wave a Running node of wave 2 is resumed (same call), not
    /// called afresh; a node list that changed does not move any node to another wave.
    #[test]
    fn a_restart_mid_wave_resumes_and_nothing_is_reshuffled() {
        let names = ["a", "b", "c", "d"];
        let mut s = status(&names);
        let r = waved(serde_json::json!([1, "50%", "100%"]), vec![]);
        let mut o = ready_obs(&names);
        step(&mut s, &r, &o);
        finish_running(&s, &mut o);
        step(&mut s, &r, &o);
        assert_eq!(s.rollout.as_ref().map(|r| r.wave), Some(2));
        assert_eq!(phases(&s), vec![Succeeded, Running, Pending, Pending]);
        let before: Vec<_> = s.nodes.iter().map(|n| n.wave).collect();

        // A new operator process: no calls in memory; b's worker lives.
        let mut fresh = ready_obs(&names);
        fresh.pods.insert("w-b".into(), WorkerState::Ready);
        let actions = step(&mut s, &r, &fresh);
        assert_eq!(calls(&actions), vec![("b".into(), true)]);

        // A node joins the record without a wave (and the list is now longer):
        // nobody moves; the newcomer goes last.
        s.nodes.push(NodeResult {
            node: "0-first-by-name".into(),
            ..NodeResult::default()
        });
        fresh.workers.insert(
            "0-first-by-name".into(),
            Some(("w-0".into(), WorkerState::Ready)),
        );
        step(&mut s, &r, &fresh);
        let after: Vec<_> = s.nodes.iter().take(4).map(|n| n.wave).collect();
        assert_eq!(before, after);
        assert_eq!(s.nodes[4].wave, Some(3));
        assert_eq!(s.nodes[4].phase, Pending, "wave 3 has not started");
    }

    /// `onFailure: Revert` names the nodes of the halted wave that ran, once.
    #[test]
    fn a_halt_with_on_failure_revert_names_the_wave_to_revert() {
        let names = ["a", "b", "c"];
        let mut s = status(&names);
        let mut r = waved(serde_json::json!([1, "100%"]), vec![active_check()]);
        r.on_failure = hostplug_api::crd::OnFailure::Revert;
        let mut o = ready_obs(&names);
        step(&mut s, &r, &o);
        finish_running(&s, &mut o);
        step(&mut s, &r, &o);
        o.checks
            .insert(("a".into(), 0), ok(serde_json::json!({"active": "failed"})));
        let actions = step(&mut s, &r, &o);
        let reverts: Vec<_> = actions
            .iter()
            .filter(|a| matches!(a, Action::RevertWave { .. }))
            .collect();
        assert_eq!(
            reverts,
            vec![&Action::RevertWave {
                wave: 1,
                nodes: vec!["a".into()]
            }]
        );
        let again = step(&mut s, &r, &o);
        assert!(!again.iter().any(|a| matches!(a, Action::RevertWave { .. })));
    }

    /// Without waves nothing of the staged rollout shows: no waves on nodes, no
    /// rollout status.
    #[test]
    fn without_waves_nothing_is_staged() {
        let names = ["a", "b"];
        let mut s = status(&names);
        let o = ready_obs(&names);
        step(&mut s, &rollout(10, 0), &o);
        assert!(s.rollout.is_none());
        assert!(s.nodes.iter().all(|n| n.wave.is_none()));
    }
}

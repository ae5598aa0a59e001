//! One HostState's round as a pure state machine, in the style of
//! [`crate::rollout::step`]: the status, the round this process runs and what it
//! observes go in; the new status and the actions to take come out.
//!
//! A round checks every selected node (each step as a dry run), at most
//! [`CHECK_PARALLEL`] at once, and in `Enforce` mode corrects drifted nodes that no other
//! state fights over. `rollout.maxParallel` means what it means for a HostTask: at most
//! that many nodes in flight (being corrected) at once, a sliding window; once more than
//! `rollout.maxFailures` corrections of the round failed, no further node is corrected.
//! A node is recorded `Correcting`, with the invocation id prefix of its correction,
//! *before* the correction is sent, so an operator that restarts resends the same ids
//! (the worker answers from its outcome store) instead of correcting twice.
//!
//! Nothing here talks to the API server or a worker; [`super`] gathers the observations,
//! calls [`step`], writes the status and then carries out the actions.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use hostplug_api::crd::RolloutSpec;
use hostplug_api::disruption::NodeDisruption;
use hostplug_api::state::{HostStateStatus, NodeStateStatus, NodeSync, StateMode, StepDrift};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::runtime::events::EventType;

use crate::report::set_condition;
use crate::status::truncate_str;

/// Nodes of one state checked at once: 32. A check is a few millisecond-long calls on
/// warm workers; 32 in flight checks 200 nodes in a handful of batches without opening
/// hundreds of connections at once.
pub const CHECK_PARALLEL: usize = 32;
/// Largest diff kept per drifted step: 4 KiB. Drift is usually a line or two; the diff
/// says which, not the whole file.
pub const MAX_DRIFT_DIFF_BYTES: usize = 4 * 1024;
/// Budget of all drift diffs in one status: 256 KiB. etcd refuses objects above 1.5 MiB;
/// beyond the budget drifted steps keep their index without the diff.
pub const MAX_DRIFT_TOTAL_BYTES: usize = 256 * 1024;
/// Longest node message: 1 KiB (a worker's error, or a conflict note).
const MAX_NODE_MESSAGE_BYTES: usize = 1024;

/// A node's check: the drifted steps (empty: in sync), or why it could not be checked.
pub type Checked = Result<Vec<StepDrift>, String>;

/// This process's knowledge of one node's job in the current round.
#[derive(Debug, Clone, PartialEq)]
pub enum Job {
    /// Being checked.
    Checking,
    /// Checked.
    Checked(Checked),
    /// Being corrected: the drifted steps run for real, then the node is checked again.
    Correcting,
    /// Corrected (or not), as the check after the correction found.
    Corrected(Checked),
}

impl Job {
    fn in_flight(&self) -> bool {
        matches!(self, Self::Checking | Self::Correcting)
    }
}

/// A round as this process runs it.
#[derive(Debug, Clone, PartialEq)]
pub struct Round {
    /// Numbers the rounds of one state in this process; a job's result is kept only for
    /// the round that started it.
    pub id: u64,
    /// The state's generation the round checks.
    pub generation: i64,
    /// When it started.
    pub started: Timestamp,
    /// The nodes it checks.
    pub nodes: Vec<String>,
    /// A fingerprint of the steps' var values (ConfigMaps, Secrets) it checks against.
    pub values: u64,
    /// The jobs it started, by node.
    pub jobs: BTreeMap<String, Job>,
    /// Whether every node is done.
    pub finished: bool,
}

/// Whether a new round starts now: when there is none yet (a new state, or a new
/// operator process), the state's generation, its selected nodes or the values its steps
/// read from ConfigMaps and Secrets changed, or the last round finished `interval` ago.
/// Never while a job of the current round is in flight: its result would be lost, and a
/// correction in flight must be recorded first.
pub fn round_due(
    round: Option<&Round>,
    generation: i64,
    selected: &[String],
    values: u64,
    interval: Duration,
    now: Timestamp,
) -> bool {
    let Some(r) = round else {
        return true;
    };
    if r.jobs.values().any(Job::in_flight) {
        return false;
    }
    let interval = SignedDuration::try_from(interval).unwrap_or(SignedDuration::MAX);
    r.generation != generation
        || r.nodes != selected
        || r.values != values
        || (r.finished && now.duration_since(r.started) >= interval)
}

/// Everything [`step`] looks at besides the status.
#[derive(Debug, Clone)]
pub struct Observed<'a> {
    /// Now.
    pub now: Timestamp,
    /// The state's uid (part of every correction's invocation id).
    pub uid: &'a str,
    /// The state's current generation.
    pub generation: i64,
    /// `spec.mode`.
    pub mode: StateMode,
    /// `spec.rollout`.
    pub rollout: &'a RolloutSpec,
    /// The nodes the state selects now.
    pub selected: &'a [String],
    /// Nodes another state fights over, with those states' names.
    pub conflicts: &'a BTreeMap<String, BTreeSet<String>>,
    /// The round this process runs.
    pub round: &'a Round,
    /// Why a correction that disrupts the node (`spec.disruption`, `Enforce`) may not
    /// start now: the maintenance windows are closed (`None`: nothing holds it).
    pub window_hold: Option<&'a NodeDisruption>,
}

/// What the controller must do after writing the new status.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// Check the node: every step as a dry run.
    Check {
        /// Node.
        node: String,
    },
    /// Correct the node: run its drifted steps for real with the invocation ids under
    /// `prefix`, then check it again.
    Correct {
        /// Node.
        node: String,
        /// The drifted steps.
        drift: Vec<StepDrift>,
        /// Invocation id prefix (`<uid>/<generation>/<node>/c<n>`).
        prefix: String,
        /// Whether an earlier operator process recorded this correction.
        resume: bool,
    },
    /// Tell people (an Event, with the node as its related object).
    Event {
        /// Normal or Warning.
        type_: EventType,
        /// Reason.
        reason: &'static str,
        /// Node.
        node: String,
        /// Note.
        note: String,
    },
    /// Every node of the round is done.
    RoundFinished,
}

/// The invocation id prefix of a node's `n`th correction; the step index is appended per
/// call (`…/s<step>`). Derived only from what the status records, so an operator that
/// restarts sends the same ids.
pub fn correction_id(uid: &str, generation: i64, node: &str, n: i64) -> String {
    format!("{uid}/{generation}/{node}/c{n}")
}

/// `step 0` or `steps 0, 2`.
pub fn steps_text(drift: &[StepDrift]) -> String {
    let steps: Vec<String> = drift.iter().map(|d| d.step.to_string()).collect();
    format!(
        "step{} {}",
        if steps.len() == 1 { "" } else { "s" },
        steps.join(", ")
    )
}

fn same_steps(a: &[StepDrift], b: &[StepDrift]) -> bool {
    a.iter().map(|d| d.step).eq(b.iter().map(|d| d.step))
}

/// Advances the round by one step. Pure.
pub fn step(status: &mut HostStateStatus, obs: &Observed<'_>) -> Vec<Action> {
    let round = obs.round;
    let now = Time(obs.now);
    let mut actions = Vec::new();
    // A round whose spec or nodes changed meanwhile starts nothing new: its calls in
    // flight are recorded, then the next round starts.
    let stale = round.generation != obs.generation || round.nodes != obs.selected;
    let max_parallel = usize::try_from(obs.rollout.max_parallel)
        .unwrap_or(1)
        .max(1);
    let max_failures = usize::try_from(obs.rollout.max_failures).unwrap_or(0);
    let mut checking = round.jobs.values().filter(|j| **j == Job::Checking).count();
    let mut correcting = round
        .jobs
        .values()
        .filter(|j| **j == Job::Correcting)
        .count();
    let failures = round
        .jobs
        .values()
        .filter(|j| matches!(j, Job::Corrected(Err(_))))
        .count();
    let enforce = obs.mode == StateMode::Enforce;
    let mut done = true;

    let mut prior: BTreeMap<String, NodeStateStatus> = std::mem::take(&mut status.nodes)
        .into_iter()
        .map(|n| (n.node.clone(), n))
        .collect();
    status.observed_generation = Some(round.generation);
    status.conflicts = obs
        .conflicts
        .iter()
        .filter(|(n, _)| round.nodes.contains(n))
        .flat_map(|(_, s)| s.iter().cloned())
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();

    for node in &round.nodes {
        let mut n = prior.remove(node).unwrap_or_else(|| NodeStateStatus {
            node: node.clone(),
            ..NodeStateStatus::default()
        });
        let conflicted = obs.conflicts.get(node);
        match round.jobs.get(node) {
            None => {
                done = false;
                if let Some(prefix) = n.pending_correction.clone() {
                    if !enforce {
                        // Audit now: the correction recorded in flight is not resumed;
                        // the node is checked and reported as it is.
                        n.pending_correction = None;
                    } else if !stale {
                        n.sync = NodeSync::Correcting;
                        correcting += 1;
                        actions.push(Action::Correct {
                            node: node.clone(),
                            drift: n.drift.clone(),
                            prefix,
                            resume: true,
                        });
                        status.nodes.push(n);
                        continue;
                    }
                }
                if !stale && checking < CHECK_PARALLEL {
                    checking += 1;
                    actions.push(Action::Check { node: node.clone() });
                }
            }
            Some(Job::Checking | Job::Correcting) => done = false,
            Some(Job::Checked(Ok(drift))) if drift.is_empty() => {
                n.sync = NodeSync::InSync;
                n.drift.clear();
                n.message = None;
                n.disruption = None;
                n.last_check_time = Some(now.clone());
            }
            Some(Job::Checked(Ok(drift))) => {
                let known = matches!(n.sync, NodeSync::Drifted | NodeSync::Correcting)
                    && same_steps(&n.drift, drift);
                if !known {
                    let note = format!(
                        "{node}: {} would change the node{}",
                        steps_text(drift),
                        if enforce {
                            ""
                        } else {
                            " (Audit: not corrected)"
                        }
                    );
                    actions.push(Action::Event {
                        type_: EventType::Warning,
                        reason: "DriftDetected",
                        node: node.clone(),
                        note,
                    });
                }
                let was_waiting = n.disruption.take().is_some();
                n.sync = NodeSync::Drifted;
                n.drift = drift.clone();
                n.message = None;
                n.last_check_time = Some(now.clone());
                if enforce && conflicted.is_none() && !stale {
                    if let Some(hold) = obs.window_hold {
                        // Reported, not corrected: the correction would disrupt the
                        // node outside every maintenance window. The round finishes;
                        // the controller wakes at the opening.
                        if !was_waiting {
                            actions.push(Action::Event {
                                type_: EventType::Normal,
                                reason: "DisruptionWaiting",
                                node: node.clone(),
                                note: format!(
                                    "{node}: correction {}",
                                    hold.message.as_deref().unwrap_or_default()
                                ),
                            });
                        }
                        n.disruption = Some(hold.clone());
                    } else if failures > max_failures {
                        n.message = Some(format!(
                            "not corrected: more than rollout.maxFailures ({max_failures}) \
                             corrections failed in this round"
                        ));
                    } else if correcting < max_parallel {
                        correcting += 1;
                        n.corrections += 1;
                        let prefix = correction_id(obs.uid, round.generation, node, n.corrections);
                        n.pending_correction = Some(prefix.clone());
                        n.sync = NodeSync::Correcting;
                        actions.push(Action::Correct {
                            node: node.clone(),
                            drift: drift.clone(),
                            prefix,
                            resume: false,
                        });
                        done = false;
                    } else {
                        // Waits for a free place in the window.
                        done = false;
                    }
                }
            }
            Some(Job::Checked(Err(e))) => {
                n.sync = NodeSync::Failed;
                n.message = Some(e.clone());
                n.last_check_time = Some(now.clone());
            }
            Some(Job::Corrected(result)) => {
                // Recorded once: the first step after the correction returned.
                if n.pending_correction.take().is_some() {
                    n.last_correction_time = Some(now.clone());
                    n.last_check_time = Some(now.clone());
                    match result {
                        Ok(after) if after.is_empty() => {
                            actions.push(Action::Event {
                                type_: EventType::Normal,
                                reason: "Corrected",
                                node: node.clone(),
                                note: format!("{node}: corrected {}", steps_text(&n.drift)),
                            });
                            n.sync = NodeSync::InSync;
                            n.drift.clear();
                            n.message = None;
                        }
                        Ok(after) => {
                            let msg = format!(
                                "still drifted after the correction ({}): something else keeps \
                                 changing the node",
                                steps_text(after)
                            );
                            actions.push(Action::Event {
                                type_: EventType::Warning,
                                reason: "CorrectionFailed",
                                node: node.clone(),
                                note: format!("{node}: {msg}"),
                            });
                            n.sync = NodeSync::Failed;
                            n.drift = after.clone();
                            n.message = Some(msg);
                        }
                        Err(e) => {
                            actions.push(Action::Event {
                                type_: EventType::Warning,
                                reason: "CorrectionFailed",
                                node: node.clone(),
                                note: format!("{node}: {e}"),
                            });
                            n.sync = NodeSync::Failed;
                            n.message = Some(e.clone());
                        }
                    }
                }
            }
        }
        if let Some(others) = conflicted {
            let names: Vec<&str> = others.iter().map(String::as_str).collect();
            n.message = Some(format!(
                "conflict: HostState {} changes the same file here (or undid this state's \
                 correction); not corrected by either",
                names.join(", ")
            ));
        }
        status.nodes.push(n);
    }

    if done && !round.finished {
        status.last_check_time = Some(Time(round.started));
        actions.push(Action::RoundFinished);
    }
    cap_status(&mut status.nodes);
    summarise(status, obs.mode, &now);
    actions
}

/// Cuts diffs and messages to their limits, then to the status-wide diff budget.
pub fn cap_status(nodes: &mut [NodeStateStatus]) {
    let mut used = 0usize;
    for n in nodes.iter_mut() {
        if let Some(m) = n.message.take() {
            n.message = Some(truncate_str(&m, MAX_NODE_MESSAGE_BYTES));
        }
        for d in &mut n.drift {
            if let Some(diff) = d.diff.take() {
                let diff = truncate_str(&diff, MAX_DRIFT_DIFF_BYTES);
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

#[cfg(test)]
#[path = "round_tests.rs"]
mod tests;

//! The node cycle of a disruptive call (`spec.disruption`): mark the node, cordon it
//! (only if it was schedulable), drain it through the Eviction API, apply the task's
//! call, reboot it through its worker and wait for a new boot ID, Ready and the worker
//! back, uncordon only what we cordoned, clear the mark.
//!
//! As in [`crate::rollout`], the rules are a pure function, [`next`]: what the node shows
//! (its mark, schedulability, Pods, boot ID) goes in, one [`Decision`] comes out, unit-
//! tested without a cluster. [`node`] carries decisions out against the API server and
//! the worker, one at a time, and observes again.
//!
//! Exactly once across operator restarts: every step is written on the Node
//! ([`MaintenanceMark`]) *before* it is taken, with the task's uid and generation; a new
//! leader reads the mark and continues. The mark of a reboot holds the boot ID seen
//! before it: a different boot ID means the reboot happened, and the worker refuses to
//! reboot twice for one request id within one boot. When the cycle ends its record moves
//! to [`LAST_CYCLE_ANNOTATION`], so a resumed call of a generation whose cycle already
//! ended is answered from it instead of draining and rebooting again.
//!
//! This module must never uncordon a node it did not cordon, never evict DaemonSet or
//! mirror Pods or hostplug's own workers, never delete a Pod (only ask the Eviction API,
//! which keeps PodDisruptionBudgets), and never take a step it has not recorded.

pub mod node;
pub mod window;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use k8s_openapi::api::core::v1::Node;
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::ResourceExt;
use serde::{Deserialize, Serialize};

use hostplug_api::disruption::{
    CycleStep, DisruptionPhase, DisruptionSpec, MaintenanceMark, NodeDisruption, RebootPolicy,
};

use window::WindowState;

pub use hostplug_api::disruption::MAINTENANCE_ANNOTATION;

/// Default of the operator's `--max-disrupted-nodes`: 1, one node drained or rebooting
/// at a time across the fleet, as kured's lock does. A disruption costs capacity
/// everywhere at once (workloads squeezed onto the other nodes); more is an
/// administrator's decision.
pub const DEFAULT_MAX_DISRUPTED_NODES: u16 = 1;

/// How the message of a node that waits for the fleet-wide budget begins.
pub const BUDGET_WAIT: &str = "waiting for the fleet-wide disruption budget";

/// The Node annotation with the record of the node's last finished cycle
/// ([`LastCycle`] as JSON): a resumed call of that generation ends from it.
pub const LAST_CYCLE_ANNOTATION: &str = "hostplug.dev/last-maintenance";

/// The record of a finished cycle on the Node.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct LastCycle {
    /// The task's uid.
    pub uid: String,
    /// Its generation.
    pub generation: i64,
    /// Whether the call changed the node, if it succeeded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub changed: Option<bool>,
    /// Why the node failed, if it did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure: Option<String>,
    /// What happened, for the node's status.
    pub summary: String,
    /// A reboot the plugin asked for and the cycle did not do: the sentence for the
    /// node's message ([`not_rebooted`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reboot_note: Option<String>,
}

/// The task generation a cycle belongs to.
#[derive(Debug, Clone)]
pub struct Cycle<'a> {
    /// `<namespace>/<name>`.
    pub task: &'a str,
    /// uid.
    pub uid: &'a str,
    /// generation.
    pub generation: i64,
    /// What the task allows.
    pub spec: &'a DisruptionSpec,
}

/// Where this process's call of the node is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CallObs {
    /// Not sent by this process.
    NotSent,
    /// The plugin succeeded.
    Succeeded {
        /// Whether it changed the node.
        changed: bool,
        /// Why the plugin asked for a reboot, if it did.
        reboot_requested: Option<String>,
    },
    /// The call failed; the message.
    Failed(String),
}

/// A Pod on the node that the drain must evict.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DrainPod {
    /// `<namespace>/<name>`.
    pub name: String,
    /// Already being deleted (evicted): waited for, not evicted again.
    pub terminating: bool,
}

/// What the node shows, as observed just now.
#[derive(Debug, Clone)]
pub struct NodeObs {
    /// Now.
    pub now: Timestamp,
    /// The mark on the node, if any (of any task).
    pub mark: Option<MaintenanceMark>,
    /// The last cycle's record, if any.
    pub last: Option<LastCycle>,
    /// `spec.unschedulable`.
    pub unschedulable: bool,
    /// The Ready condition is True (and, after a new boot, the node's worker answers).
    pub ready: bool,
    /// The node's boot ID (the kubelet's `status.nodeInfo.bootID`); `None`: unknown.
    pub boot_id: Option<String>,
    /// The Pods the drain must still evict ([`must_evict`]).
    pub to_evict: Vec<DrainPod>,
    /// Why evictions were refused, by Pod (a PodDisruptionBudget, named).
    pub blocked: BTreeMap<String, String>,
    /// This process's call.
    pub call: CallObs,
    /// Whether this process already asked the worker to reboot the node.
    pub reboot_sent: bool,
}

/// What to do next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Write this mark on the node (fenced by its resourceVersion), then observe again.
    Record(MaintenanceMark),
    /// Set `spec.unschedulable`.
    Cordon,
    /// Clear `spec.unschedulable`.
    Uncordon,
    /// Ask the Eviction API to evict these Pods (`<namespace>/<name>`), then wait a
    /// moment.
    Evict(Vec<String>),
    /// Send the task's call.
    Apply,
    /// Ask the node's worker to reboot it, for this reason.
    Reboot(String),
    /// Nothing to do now; why.
    Wait(String),
    /// The cycle ended: move the record to [`LAST_CYCLE_ANNOTATION`] and return it.
    Finish(LastCycle),
    /// A finished cycle of this generation was found: return it, change nothing.
    Done(LastCycle),
}

fn elapsed(since: &str, now: Timestamp) -> Duration {
    since
        .parse::<Timestamp>()
        .ok()
        .map(|t| now.duration_since(t))
        .and_then(|d| Duration::try_from(d.max(SignedDuration::ZERO)).ok())
        // An unreadable time counts as "just now": the timeout restarts rather than fire.
        .unwrap_or(Duration::ZERO)
}

fn secs(n: i32) -> Duration {
    Duration::from_secs(u64::try_from(n).unwrap_or(0))
}

/// Decides the next step of `cycle` on a node. Pure.
pub fn next(cycle: &Cycle<'_>, obs: &NodeObs) -> Decision {
    let now = obs.now.to_string();
    let mark = match &obs.mark {
        Some(m) if m.is_of(cycle.uid, cycle.generation) => m.clone(),
        Some(other) => {
            return Decision::Wait(format!(
                "the node is in a disruption cycle of HostTask {} (step {})",
                other.task,
                other.step.as_str()
            ));
        }
        None => {
            if let Some(last) = &obs.last
                && last.uid == cycle.uid
                && last.generation == cycle.generation
            {
                return Decision::Done(last.clone());
            }
            let drain = cycle.spec.drain;
            return Decision::Record(MaintenanceMark {
                task: cycle.task.to_owned(),
                uid: cycle.uid.to_owned(),
                generation: cycle.generation,
                step: if drain {
                    CycleStep::Draining
                } else {
                    CycleStep::Applying
                },
                // Cordoned by us only if it was schedulable: an administrator's cordon
                // stays after the cycle.
                cordoned: drain && !obs.unschedulable,
                since: now,
                boot_id: None,
                changed: None,
                reason: None,
                failure: None,
            });
        }
    };
    let to = |step: CycleStep, change: &dyn Fn(&mut MaintenanceMark)| {
        let mut m = mark.clone();
        m.step = step;
        m.since = now.clone();
        change(&mut m);
        Decision::Record(m)
    };
    match mark.step {
        CycleStep::Draining => {
            if mark.cordoned && !obs.unschedulable {
                return Decision::Cordon;
            }
            if obs.to_evict.is_empty() {
                return to(CycleStep::Applying, &|_| {});
            }
            let limit = secs(cycle.spec.drain_timeout_seconds);
            if elapsed(&mark.since, obs.now) > limit {
                let why = drain_failure(limit, obs);
                return to(CycleStep::Restoring, &|m| m.failure = Some(why.clone()));
            }
            let evict: Vec<String> = obs
                .to_evict
                .iter()
                .filter(|p| !p.terminating)
                .map(|p| p.name.clone())
                .collect();
            if evict.is_empty() {
                Decision::Wait(format!(
                    "waiting for {} evicted Pod(s) to end",
                    obs.to_evict.len()
                ))
            } else {
                Decision::Evict(evict)
            }
        }
        CycleStep::Applying => match &obs.call {
            CallObs::NotSent => Decision::Apply,
            CallObs::Failed(why) => to(CycleStep::Restoring, &|m| m.failure = Some(why.clone())),
            CallObs::Succeeded {
                changed,
                reboot_requested,
            } => {
                let changed = *changed;
                let reason = match cycle.spec.reboot {
                    RebootPolicy::Always => Some("spec.disruption.reboot is Always".to_owned()),
                    RebootPolicy::IfRequested => reboot_requested.clone(),
                    RebootPolicy::Never => None,
                };
                let Some(reason) = reason else {
                    let note = reboot_requested
                        .as_deref()
                        .map(|why| not_rebooted(why, Some(cycle.spec)));
                    return to(CycleStep::Restoring, &|m| {
                        m.changed = Some(changed);
                        m.reason.clone_from(&note);
                    });
                };
                match &obs.boot_id {
                    Some(boot) => to(CycleStep::Rebooting, &|m| {
                        m.changed = Some(changed);
                        m.boot_id = Some(boot.clone());
                        m.reason = Some(reason.clone());
                    }),
                    None if elapsed(&mark.since, obs.now)
                        > secs(cycle.spec.reboot_timeout_seconds) =>
                    {
                        to(CycleStep::Restoring, &|m| {
                            m.changed = Some(changed);
                            m.failure = Some(
                                "not rebooted: the node's worker did not report its boot ID".into(),
                            );
                        })
                    }
                    None => Decision::Wait("reading the node's boot ID before the reboot".into()),
                }
            }
        },
        CycleStep::Rebooting => {
            let before = mark.boot_id.clone().unwrap_or_default();
            let limit = secs(cycle.spec.reboot_timeout_seconds);
            match &obs.boot_id {
                Some(now_boot) if *now_boot != before => {
                    if obs.ready {
                        to(CycleStep::Restoring, &|_| {})
                    } else if elapsed(&mark.since, obs.now) > limit {
                        to(CycleStep::Restoring, &|m| {
                            m.failure = Some(format!(
                                "rebooted (boot ID {now_boot}) but not Ready within {}s",
                                limit.as_secs()
                            ));
                        })
                    } else {
                        Decision::Wait("rebooted; waiting for the node to be Ready".into())
                    }
                }
                _ if elapsed(&mark.since, obs.now) > limit => to(CycleStep::Restoring, &|m| {
                    m.failure = Some(format!(
                        "the node did not come back with a new boot ID within {}s \
                         (spec.disruption.rebootTimeoutSeconds)",
                        limit.as_secs()
                    ));
                }),
                // The same boot, and this process has not asked: ask (again, after a
                // restart — the worker answers a repeat of this request within one boot
                // without rebooting twice).
                Some(_) if !obs.reboot_sent => {
                    Decision::Reboot(mark.reason.clone().unwrap_or_default())
                }
                Some(_) => Decision::Wait("waiting for the node to go down".into()),
                None => Decision::Wait("waiting for the node's worker to answer again".into()),
            }
        }
        CycleStep::Restoring => {
            if mark.cordoned && obs.unschedulable {
                return Decision::Uncordon;
            }
            Decision::Finish(LastCycle {
                uid: mark.uid.clone(),
                generation: mark.generation,
                changed: mark.changed,
                failure: mark.failure.clone(),
                summary: summary(&mark, obs),
                reboot_note: mark.reason.clone().filter(|_| mark.boot_id.is_none()),
            })
        }
    }
}

/// What the cycle did, for the node's status.
fn summary(mark: &MaintenanceMark, obs: &NodeObs) -> String {
    let mut parts = Vec::new();
    if mark.cordoned {
        parts.push("cordoned, drained and uncordoned".to_owned());
    } else if mark.boot_id.is_some() || mark.failure.is_some() {
        parts.push("not cordoned by hostplug (it was unschedulable already, or no drain)".into());
    }
    if let Some(before) = &mark.boot_id {
        match &obs.boot_id {
            Some(after) if after != before => {
                parts.push(format!("rebooted (boot ID {before} → {after})"));
            }
            _ => parts.push(format!("reboot asked for (boot ID before: {before})")),
        }
    } else if let Some(note) = &mark.reason {
        parts.push(note.clone());
    }
    if let Some(f) = &mark.failure {
        parts.push(format!("failed: {f}"));
    }
    parts.join("; ")
}

/// The drain's failure after `limit`: the Pods left, and what blocked each.
fn drain_failure(limit: Duration, obs: &NodeObs) -> String {
    let mut pods: Vec<String> = obs
        .to_evict
        .iter()
        .take(MAX_PODS_NAMED)
        .map(|p| match obs.blocked.get(&p.name) {
            Some(why) => format!("Pod {} ({why})", p.name),
            None if p.terminating => format!("Pod {} (still terminating)", p.name),
            None => format!("Pod {}", p.name),
        })
        .collect();
    if obs.to_evict.len() > MAX_PODS_NAMED {
        pods.push(format!("and {} more", obs.to_evict.len() - MAX_PODS_NAMED));
    }
    format!(
        "drain did not finish within {}s (spec.disruption.drainTimeoutSeconds): {}",
        limit.as_secs(),
        pods.join(", ")
    )
}

/// The node's message when the plugin asked for a reboot (`why`) that hostplug does not
/// do for a task with `spec` (no `spec.disruption`, or `reboot: Never`): people must see
/// that the node needs one.
pub fn not_rebooted(why: &str, spec: Option<&DisruptionSpec>) -> String {
    let because = match spec {
        Some(s) if s.reboot == RebootPolicy::Never => "spec.disruption.reboot is Never",
        Some(_) => "a dry run disrupts nothing",
        None => "the task has no spec.disruption (reboot: IfRequested lets hostplug do it)",
    };
    format!("reboot requested by the plugin: {why}; not rebooted: {because}")
}

/// A call that ran without a cycle (no `spec.disruption`, or one that disrupts
/// nothing): a reboot the plugin asked for becomes the note for the node's message.
pub fn without_cycle(
    outcome: crate::dispatch::NodeOutcome,
    spec: Option<&DisruptionSpec>,
    dry_run: bool,
) -> crate::dispatch::NodeOutcome {
    outcome.map(|mut s| {
        s.reboot_required = s.reboot_required.take().map(|why| {
            if dry_run {
                format!("a reboot would be requested by the plugin: {why} (dry run)")
            } else {
                not_rebooted(&why, spec)
            }
        });
        s
    })
}

/// What the rollout of a task with a disruptive `spec.disruption` looks at besides
/// `maxParallel` ([`crate::rollout::Observed::disruption`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Gate {
    /// The maintenance windows' verdict now; `None`: the task has none (always open).
    pub window: Option<WindowState>,
    /// The fleet-wide budget: nodes in a cycle at once, of every task
    /// (`--max-disrupted-nodes`).
    pub budget: usize,
    /// The nodes in a cycle now (a mark on the Node, of any task), with its task.
    pub held: BTreeMap<String, String>,
    /// This task generation's nodes in a cycle, and where each is.
    pub cycles: BTreeMap<String, NodeDisruption>,
    /// This task generation's nodes whose cycle ended (`hostplug.dev/last-maintenance`).
    pub ended: BTreeSet<String>,
}

impl Gate {
    /// When the rollout must look again although nothing changes: the next window's
    /// opening.
    pub fn wake_at(&self) -> Option<Timestamp> {
        match &self.window {
            Some(WindowState::Closed { opens, .. }) => *opens,
            _ => None,
        }
    }

    /// Why Pending nodes may not begin now because of the window, if so.
    pub fn window_hold(&self) -> Option<NodeDisruption> {
        window::hold(self.window.as_ref())
    }

    /// How many more nodes may begin a cycle, with `in_flight` the task's own nodes
    /// started (they hold budget from their start, before their mark is written).
    pub fn free(&self, in_flight: &BTreeSet<String>) -> usize {
        let holding: BTreeSet<&String> = self.held.keys().chain(in_flight.iter()).collect();
        self.budget.saturating_sub(holding.len())
    }

    /// What a started node of this task shows: where its cycle is, or, before its first
    /// mark, that it waits for the budget the other nodes hold (the executor counts the
    /// marks again before it writes one, [`node`]).
    pub fn of_started(&self, node: &str) -> Option<NodeDisruption> {
        if let Some(c) = self.cycles.get(node) {
            return Some(c.clone());
        }
        let others = self.held.keys().filter(|n| *n != node).count();
        (!self.ended.contains(node) && others >= self.budget)
            .then(|| self.budget_hold(&BTreeSet::new()))
    }

    /// What a node that waits for the budget shows.
    pub fn budget_hold(&self, in_flight: &BTreeSet<String>) -> NodeDisruption {
        let mut holders: Vec<String> = self
            .held
            .iter()
            .map(|(n, t)| format!("{n} (HostTask {t})"))
            .collect();
        holders.extend(
            in_flight
                .iter()
                .filter(|n| !self.held.contains_key(*n))
                .map(|n| format!("{n} (this task)")),
        );
        NodeDisruption {
            phase: DisruptionPhase::WaitingForBudget,
            message: Some(format!(
                "{BUDGET_WAIT}: {} of {} node(s) in a cycle (operator setting \
                 --max-disrupted-nodes): {}",
                holders.len(),
                self.budget,
                holders.join(", ")
            )),
        }
    }
}

/// The gate of task generation `uid`/`generation` with `spec`, from the Node objects
/// `nodes` (their marks) at `now`; `None` when the task disrupts nothing.
pub fn gate<'a>(
    spec: Option<&DisruptionSpec>,
    dry_run: bool,
    nodes: impl IntoIterator<Item = &'a Node>,
    uid: &str,
    generation: i64,
    budget: usize,
    now: Timestamp,
) -> Option<Gate> {
    let spec = spec.filter(|d| d.disrupts(dry_run))?;
    // Validation refuses bad windows before any node is touched; an unparsable one
    // here (never) gates nothing rather than everything.
    let windows = window::parse(&spec.maintenance_windows).unwrap_or_default();
    let mut g = Gate {
        window: window::state(&windows, now),
        budget,
        ..Gate::default()
    };
    for node in nodes {
        if node
            .annotations()
            .get(LAST_CYCLE_ANNOTATION)
            .and_then(|v| serde_json::from_str::<LastCycle>(v).ok())
            .is_some_and(|l| l.uid == uid && l.generation == generation)
        {
            g.ended.insert(node.name_any());
        }
        let Some(mark) = node
            .annotations()
            .get(MAINTENANCE_ANNOTATION)
            .and_then(|v| MaintenanceMark::from_annotation(v).ok())
        else {
            continue;
        };
        let name = node.name_any();
        if mark.is_of(uid, generation) {
            let boot = node
                .status
                .as_ref()
                .and_then(|s| s.node_info.as_ref())
                .map(|i| i.boot_id.as_str());
            g.cycles.insert(name.clone(), cycle_phase(&mark, boot));
        }
        g.held.insert(name, mark.task);
    }
    Some(g)
}

/// Where a node is, from its mark and its current boot ID.
pub fn cycle_phase(mark: &MaintenanceMark, boot_id: Option<&str>) -> NodeDisruption {
    let (phase, message) = match mark.step {
        CycleStep::Draining => (
            DisruptionPhase::Draining,
            if mark.cordoned {
                "cordoned by hostplug; evicting its Pods".to_owned()
            } else {
                "evicting its Pods (it was cordoned already)".to_owned()
            },
        ),
        CycleStep::Applying => (DisruptionPhase::Applying, "the call runs".to_owned()),
        CycleStep::Rebooting => {
            let before = mark.boot_id.as_deref().unwrap_or_default();
            match boot_id {
                Some(now) if !now.is_empty() && now != before => (
                    DisruptionPhase::WaitingForReady,
                    format!(
                        "rebooted (boot ID {before} → {now}); waiting for the node to be Ready \
                         and its worker back"
                    ),
                ),
                _ => (
                    DisruptionPhase::Rebooting,
                    format!(
                        "rebooting ({}); boot ID before: {before}",
                        mark.reason.as_deref().unwrap_or("asked for")
                    ),
                ),
            }
        }
        CycleStep::Restoring => (
            DisruptionPhase::Restoring,
            if mark.cordoned {
                "handing the node back: uncordoning it".to_owned()
            } else {
                "handing the node back".to_owned()
            },
        ),
    };
    NodeDisruption {
        phase,
        message: Some(format!("since {}: {message}", mark.since)),
    }
}

/// Pods named in a drain failure: 5, enough to see the pattern, short enough for a
/// node's status message.
pub const MAX_PODS_NAMED: usize = 5;

/// Whether the drain must evict `pod` (as `kubectl drain --ignore-daemonsets` does):
/// not a DaemonSet's Pod (its controller would put it back at once), not a mirror Pod
/// (the kubelet's static Pods cannot be evicted), not one of hostplug's worker Pods
/// (the cycle needs them), not one that has ended.
pub fn must_evict(pod: &k8s_openapi::api::core::v1::Pod) -> bool {
    let meta = &pod.metadata;
    let daemonset = meta
        .owner_references
        .iter()
        .flatten()
        .any(|o| o.kind == "DaemonSet" && o.controller == Some(true));
    let mirror = meta
        .annotations
        .as_ref()
        .is_some_and(|a| a.contains_key("kubernetes.io/config.mirror"));
    let worker = meta.labels.as_ref().is_some_and(|l| {
        l.get("app.kubernetes.io/managed-by").map(String::as_str)
            == Some(hostplug_api::crd::labels::MANAGED_BY)
            && l.get(hostplug_api::crd::labels::COMPONENT)
                .map(String::as_str)
                == Some(hostplug_api::crd::labels::COMPONENT_WORKER)
    });
    let ended = pod
        .status
        .as_ref()
        .and_then(|s| s.phase.as_deref())
        .is_some_and(|p| p == "Succeeded" || p == "Failed");
    !(daemonset || mirror || worker || ended)
}

#[cfg(test)]
mod tests;

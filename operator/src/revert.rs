//! Revert of a HostTask's change, node by node, from the records the nodes keep.
//!
//! Every mutating call the task controller sends names its task ([`identity`]); the
//! worker stores what the call changed under /etc on the node under that identity (the
//! host records it, the plugin has no say). A revert sends `POST /v1/revert` naming the
//! same identity to a worker with write access to /etc on that node ([`revert_on`]);
//! the worker restores the record under the node lock, refuses (naming the files, with
//! a diff) when a file changed since unless `force`, and runs each revert invocation id
//! at most once, so a repeat after an operator restart is answered, not run again.
//!
//! For `rollout.onFailure: Revert`: revert the nodes of a wave with [`revert_on`] over
//! each node's worker lease, with [`revert_invocation_id`] naming the revert (the
//! task's uid and generation, the node) so that it runs once per node.
//!
//! A revert task (`spec.revert`, issue 26 item 3) is planned here from the reverted
//! task as read when it starts ([`plan`]: which run, which nodes, which of them say they
//! cannot be reverted), and each of its nodes is one [`revert_on`] with the revert
//! task's own invocation id (`<revert task uid>/<generation>/<node>`), sent by the task
//! controller through the rollout as any task's call. [`announce`] tells the reverted
//! task (an Event) once the revert ended; its status is never written.
//!
//! [`to_revert`] reads, from the status alone, which nodes of a halted wave still wait
//! for their revert (no `revert.reverted` recorded yet), so an operator restart between
//! the halt and the record resumes the revert (answered by the worker, not run again)
//! instead of losing it; [`record`] writes one node's revert outcome into its result.
//! This module never writes the status itself, and must never send a revert naming
//! another task than the one reverted.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use kube::ResourceExt as _;
use kube::runtime::events::EventType;

use crate::client::CallError;
use crate::dispatch::{NodeOutcome, Success};
use crate::pool::WorkerLease;
use crate::validate::Invalid;
use hostplug_api::AccessProfile;
use hostplug_api::crd::{
    EtcAccess, HostTask, HostTaskStatus, NodePhase, NodeResult, OnFailure, RevertSpec, RevertedRun,
    RolloutPhase, RolloutSpec,
};
use hostplug_api::protocol::{RevertRequest, Revertibility, TaskIdentity};

/// Attempts at one revert while the worker lives but the connection failed or it was
/// busy: 4, as for calls. Safe: the invocation id makes repeats answers, not runs.
const REVERT_ATTEMPTS: u32 = 4;
/// Pause before the second attempt, doubled after (250 ms, 500 ms, 1 s).
const REVERT_RETRY_PAUSE: Duration = Duration::from_millis(250);

/// The identity the node keeps `task`'s generation `generation` change under.
pub fn identity(task: &HostTask, generation: i64) -> TaskIdentity {
    TaskIdentity {
        namespace: task.namespace().unwrap_or_default(),
        name: task.name_any(),
        uid: task.uid().unwrap_or_default(),
        generation,
    }
}

/// The invocation id of the revert of `target` on `node`: `revert/<uid>/<generation>/<node>`,
/// the same for every attempt and every operator process.
pub fn revert_invocation_id(target: &TaskIdentity, node: &str) -> String {
    format!("revert/{}/{}/{node}", target.uid, target.generation)
}

/// The identity of a revert task's pinned run in `namespace`.
pub fn run_identity(namespace: &str, run: &RevertedRun) -> TaskIdentity {
    TaskIdentity {
        namespace: namespace.to_owned(),
        name: run.name.clone(),
        uid: run.uid.clone(),
        generation: run.generation,
    }
}

/// The access of a revert's worker: /etc writable (the restore writes files and takes
/// the node lock), nothing else.
pub fn access() -> AccessProfile {
    AccessProfile {
        etc: EtcAccess::Write,
        ..AccessProfile::default()
    }
}

/// What a revert task undoes, as decided when it starts.
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    /// The reverted run, pinned.
    pub run: RevertedRun,
    /// The nodes to revert, in the reverted task's order.
    pub nodes: Vec<String>,
    /// Nodes of `nodes` whose record the reverted task's status says cannot be
    /// reverted, with why: they fail without a call.
    pub not_revertible: BTreeMap<String, String>,
}

/// Why a node of the reverted task cannot be reverted, from its result: the worker's
/// reason, or none recorded (a call without write access to /etc, e.g. an image
/// operation).
fn not_revertible(n: &NodeResult) -> Option<String> {
    match &n.revert {
        Some(r) if r.revertible => None,
        Some(r) => Some(format!(
            "not revertible: {}",
            r.reason.as_deref().unwrap_or("the node gave no reason")
        )),
        None => Some(
            "not revertible: the task's call on this node kept no record (only changes \
             under /etc are recorded; image operations and calls without etc: write are not \
             revertible)"
                .to_owned(),
        ),
    }
}

/// Plans the revert `rv` of `target` (the task named `rv.task`, as read now; `None`: it
/// does not exist) for the revert task `own` in `namespace`. Refuses, naming the field:
/// a missing task, a task that is itself a revert or a dry run or has not run, a named
/// node the task did not run on or still runs on, a node named twice, and no node to
/// revert. Pure.
pub fn plan(
    rv: &RevertSpec,
    own: &str,
    namespace: &str,
    target: Option<&HostTask>,
) -> Result<Plan, Invalid> {
    let name = &rv.task;
    if name == own {
        return Err(Invalid::new(
            "spec.revert.task",
            "a task cannot revert itself",
        ));
    }
    let Some(t) = target else {
        return Err(Invalid::new(
            "spec.revert.task",
            format!("no HostTask {name:?} in namespace {namespace:?}"),
        ));
    };
    if t.spec.revert.is_some() {
        return Err(Invalid::new(
            "spec.revert.task",
            format!(
                "{name} is itself a revert task: what a revert restores is not recorded, so \
                 it cannot be undone (run the original change again instead)"
            ),
        ));
    }
    if t.spec.dry_run {
        return Err(Invalid::new(
            "spec.revert.task",
            format!("{name} is a dry run: it changed nothing"),
        ));
    }
    let status = t.status.clone().unwrap_or_default();
    let (Some(generation), Some(uid)) = (status.run_generation(), t.uid()) else {
        return Err(Invalid::new(
            "spec.revert.task",
            format!("{name} has not run yet: nothing to revert"),
        ));
    };
    let run = RevertedRun {
        name: name.clone(),
        uid,
        generation,
    };
    let ran = |n: &NodeResult| matches!(n.phase, NodePhase::Succeeded | NodePhase::Failed);
    let chosen: Vec<&NodeResult> = if rv.nodes.is_empty() {
        let changed: Vec<&NodeResult> = status
            .nodes
            .iter()
            .filter(|n| ran(n) && n.changed)
            .collect();
        if changed.is_empty() {
            return Err(Invalid::new(
                "spec.revert.task",
                format!(
                    "{name} changed no node in its current run (generation {generation}): \
                     nothing to revert"
                ),
            ));
        }
        changed
    } else {
        let mut seen = BTreeSet::new();
        let mut out = Vec::with_capacity(rv.nodes.len());
        for (i, node) in rv.nodes.iter().enumerate() {
            let field = format!("spec.revert.nodes[{i}]");
            if !seen.insert(node.as_str()) {
                return Err(Invalid::new(field, format!("node {node:?} is named twice")));
            }
            let Some(n) = status.nodes.iter().find(|n| &n.node == node) else {
                let known: Vec<&str> = status.nodes.iter().map(|n| n.node.as_str()).collect();
                return Err(Invalid::new(
                    field,
                    format!(
                        "task {name} did not run on node {node:?} (its nodes: {})",
                        known.join(", ")
                    ),
                ));
            };
            if n.phase.is_in_flight() {
                return Err(Invalid::new(
                    field,
                    format!("task {name} is still running on node {node}; revert it once it ended"),
                ));
            }
            if !ran(n) {
                return Err(Invalid::new(
                    field,
                    format!(
                        "task {name} did not run on node {node} (it is {:?})",
                        n.phase
                    ),
                ));
            }
            out.push(n);
        }
        out
    };
    Ok(Plan {
        run,
        nodes: chosen.iter().map(|n| n.node.clone()).collect(),
        not_revertible: chosen
            .iter()
            .filter_map(|n| Some((n.node.clone(), not_revertible(n)?)))
            .collect(),
    })
}

/// Tells the reverted task that the revert task `revert` (whose run ended with
/// `status`) reverted some of its nodes: one Event on the reverted task, `Reverted`
/// naming the nodes restored (Normal) or `RevertFailed` naming the others too
/// (Warning). Only when the reverted task is still the one pinned (same uid).
pub async fn announce(ctx: &crate::Context, revert: &HostTask, status: &HostTaskStatus) {
    let Some(run) = &status.reverted_run else {
        return;
    };
    let ns = revert.namespace().unwrap_or_default();
    let api: kube::Api<HostTask> = kube::Api::namespaced(ctx.client.clone(), &ns);
    let Ok(Some(target)) = api.get_opt(&run.name).await else {
        return;
    };
    if target.uid().as_deref() != Some(run.uid.as_str()) {
        return;
    }
    let by = format!("HostTask {ns}/{}", revert.name_any());
    let done: Vec<&str> = status
        .nodes
        .iter()
        .filter(|n| n.phase == NodePhase::Succeeded)
        .map(|n| n.node.as_str())
        .collect();
    let failed: Vec<&str> = status
        .nodes
        .iter()
        .filter(|n| n.phase != NodePhase::Succeeded)
        .map(|n| n.node.as_str())
        .collect();
    let (kind, reason, note) = if failed.is_empty() {
        (
            EventType::Normal,
            "Reverted",
            format!(
                "{by} reverted generation {} on {}",
                run.generation,
                done.join(", ")
            ),
        )
    } else {
        (
            EventType::Warning,
            "RevertFailed",
            format!(
                "{by} reverted generation {} on {} and not on {} (see its status)",
                run.generation,
                if done.is_empty() {
                    "no node".to_owned()
                } else {
                    done.join(", ")
                },
                failed.join(", ")
            ),
        )
    };
    ctx.events.publish(&target, kind, reason, None, note).await;
}

/// Sends the revert of `target` to the worker `lease` holds (on the node to revert),
/// retried while the worker lives and nothing was answered, under `invocation_id` (the
/// same for every attempt, so the worker restores at most once). `force` restores
/// files that changed since the task ran.
pub async fn revert_on(
    lease: &WorkerLease,
    target: &TaskIdentity,
    force: bool,
    timeout: Duration,
    invocation_id: String,
) -> NodeOutcome {
    let req = RevertRequest {
        task: target.clone(),
        force,
        invocation_id: Some(invocation_id),
        timeout_ms: Some(
            u64::try_from(timeout.as_millis())
                .unwrap_or(u64::MAX)
                .max(1),
        ),
    };
    let mut pause = REVERT_RETRY_PAUSE;
    let mut attempt = 1;
    loop {
        let result = async { lease.conn().await?.client.revert(&req).await }.await;
        match result {
            Ok(outcome) => return Ok(Success::from(outcome)),
            Err(e @ (CallError::Unreachable(_) | CallError::Busy(_)))
                if attempt < REVERT_ATTEMPTS && lease.is_ready() =>
            {
                tracing::warn!(pod = lease.pod(), attempt, error = %e, "revert failed; sending it again");
                tokio::time::sleep(pause).await;
                pause *= 2;
                attempt += 1;
            }
            Err(e) => return Err(e),
        }
    }
}

/// The nodes `rollout.onFailure: Revert` still has to revert: while the rollout is
/// halted, the halted wave's nodes that ran (Succeeded or Failed) and have no revert
/// outcome recorded. Empty for dry runs (nothing changed) and any other `onFailure`.
pub fn to_revert(status: &HostTaskStatus, rollout: &RolloutSpec, dry_run: bool) -> Vec<String> {
    let Some(r) = status.rollout.as_ref() else {
        return Vec::new();
    };
    if dry_run || rollout.on_failure != OnFailure::Revert || r.phase != RolloutPhase::Halted {
        return Vec::new();
    }
    status
        .nodes
        .iter()
        .filter(|n| {
            n.wave == Some(r.wave)
                && matches!(n.phase, NodePhase::Succeeded | NodePhase::Failed)
                && n.revert.as_ref().and_then(|v| v.reverted).is_none()
        })
        .map(|n| n.node.clone())
        .collect()
}

/// Records the outcome of `node`'s revert in its result: `revert.reverted` and
/// `revert.message`, and the node's message says it was reverted or why not.
pub fn record(n: &mut NodeResult, outcome: &NodeOutcome) {
    let (reverted, what) = match outcome {
        Ok(s) => {
            let restored: Vec<&str> = s
                .output
                .get("restored")
                .and_then(|r| r.as_array())
                .map(|a| a.iter().filter_map(|p| p.as_str()).collect())
                .unwrap_or_default();
            let what = if restored.is_empty() {
                "reverted (rollout.onFailure: Revert): nothing to restore".to_owned()
            } else {
                format!(
                    "reverted (rollout.onFailure: Revert): restored {}",
                    restored.join(", ")
                )
            };
            (true, what)
        }
        Err(e) => (
            false,
            format!("revert failed (rollout.onFailure: Revert): {e}"),
        ),
    };
    let v = n
        .revert
        .get_or_insert_with(|| Revertibility::no("the node's result carried no revert record"));
    v.reverted = Some(reverted);
    v.message = Some(what.clone());
    n.message = Some(match n.message.take() {
        Some(m) if !m.is_empty() => format!("{m}; {what}"),
        _ => what,
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dispatch::Success;
    use hostplug_api::crd::RolloutStatus;

    fn node(name: &str, wave: i32, phase: NodePhase) -> NodeResult {
        NodeResult {
            node: name.into(),
            wave: Some(wave),
            phase,
            revert: Some(Revertibility::yes()),
            ..NodeResult::default()
        }
    }

    fn halted(wave: i32, nodes: Vec<NodeResult>) -> HostTaskStatus {
        HostTaskStatus {
            nodes,
            rollout: Some(RolloutStatus {
                wave,
                waves: 2,
                phase: RolloutPhase::Halted,
                ..RolloutStatus::default()
            }),
            ..HostTaskStatus::default()
        }
    }

    /// Only the halted wave's nodes that ran and were not reverted yet are named; a
    /// recorded outcome (either way) takes a node out, so a restart resumes and never
    /// reverts a recorded node again.
    #[test]
    fn the_halted_wave_is_reverted_until_recorded() {
        let revert = RolloutSpec {
            on_failure: OnFailure::Revert,
            ..RolloutSpec::default()
        };
        let mut s = halted(
            1,
            vec![
                node("a", 1, NodePhase::Failed),
                node("b", 1, NodePhase::Succeeded),
                node("c", 1, NodePhase::Skipped),
                node("d", 2, NodePhase::Pending),
            ],
        );
        assert_eq!(to_revert(&s, &revert, false), vec!["a", "b"]);
        assert!(
            to_revert(&s, &revert, true).is_empty(),
            "a dry run changed nothing"
        );
        assert!(to_revert(&s, &RolloutSpec::default(), false).is_empty());

        record(
            &mut s.nodes[0],
            &Ok(Success {
                changed: true,
                diff: None,
                output: serde_json::json!({"restored": ["/etc/x.conf"]}),
                logs: Vec::new(),
                follow_ups: Vec::new(),
                revert: None,
                reboot_required: None,
            }),
        );
        record(
            &mut s.nodes[1],
            &Err(CallError::Worker("changed since".into())),
        );
        assert!(to_revert(&s, &revert, false).is_empty());
        let a = s.nodes[0].revert.as_ref().expect("recorded");
        assert_eq!(a.reverted, Some(true));
        assert!(
            s.nodes[0]
                .message
                .as_deref()
                .is_some_and(|m| m.contains("restored /etc/x.conf")),
            "{:?}",
            s.nodes[0].message
        );
        assert_eq!(
            s.nodes[1].revert.as_ref().and_then(|v| v.reverted),
            Some(false)
        );

        if let Some(r) = s.rollout.as_mut() {
            r.phase = RolloutPhase::Progressing;
        }
        s.nodes[0].revert = Some(Revertibility::yes());
        assert!(
            to_revert(&s, &revert, false).is_empty(),
            "not halted: nothing"
        );
    }

    fn reverted_task(nodes: Vec<NodeResult>) -> HostTask {
        let spec: hostplug_api::crd::HostTaskSpec = serde_json::from_value(serde_json::json!({
            "targetType": "All",
            "http": {"api": "etc-file", "method": "ensure-line", "parameter": {}},
        }))
        .expect("spec");
        let mut t = HostTask::new("edit", spec);
        t.metadata.uid = Some("u-edit".into());
        t.status = Some(HostTaskStatus {
            observed_generation: Some(2),
            run_generation: Some(2),
            nodes,
            ..HostTaskStatus::default()
        });
        t
    }

    fn ran(
        name: &str,
        phase: NodePhase,
        changed: bool,
        revert: Option<Revertibility>,
    ) -> NodeResult {
        NodeResult {
            node: name.into(),
            phase,
            changed,
            revert,
            ..NodeResult::default()
        }
    }

    fn spec(task: &str, nodes: &[&str]) -> RevertSpec {
        RevertSpec {
            task: task.into(),
            nodes: nodes.iter().map(|n| (*n).to_owned()).collect(),
            force: false,
        }
    }

    /// A revert task reverts the nodes the task changed (or those named), pins the run,
    /// and names the nodes whose record cannot be used with why; every refusal names
    /// its field.
    #[test]
    fn a_revert_is_planned_from_the_reverted_tasks_status() {
        let t = reverted_task(vec![
            ran("a", NodePhase::Succeeded, true, Some(Revertibility::yes())),
            ran("b", NodePhase::Succeeded, false, Some(Revertibility::yes())),
            ran(
                "c",
                NodePhase::Failed,
                true,
                Some(Revertibility::no("over 1 MiB")),
            ),
            ran("d", NodePhase::Succeeded, true, None),
            ran("e", NodePhase::Running, false, None),
            ran("f", NodePhase::Skipped, false, None),
        ]);
        let p = plan(&spec("edit", &[]), "undo", "ns", Some(&t)).expect("plan");
        assert_eq!(
            p.run,
            RevertedRun {
                name: "edit".into(),
                uid: "u-edit".into(),
                generation: 2
            }
        );
        assert_eq!(p.nodes, vec!["a", "c", "d"], "the nodes it changed");
        assert_eq!(
            p.not_revertible.get("c").map(String::as_str),
            Some("not revertible: over 1 MiB")
        );
        assert!(
            p.not_revertible
                .get("d")
                .is_some_and(|m| m.starts_with("not revertible:") && m.contains("image operations")),
            "{:?}",
            p.not_revertible
        );
        assert!(!p.not_revertible.contains_key("a"));
        // Named nodes, unchanged ones included.
        let p = plan(&spec("edit", &["b"]), "undo", "ns", Some(&t)).expect("plan");
        assert_eq!(p.nodes, vec!["b"]);

        let field = |rv: RevertSpec, target: Option<&HostTask>| {
            plan(&rv, "undo", "ns", target).map_err(|e| e.to_string())
        };
        let err = field(spec("edit", &["x"]), Some(&t)).expect_err("unknown node");
        assert!(
            err.starts_with("spec.revert.nodes[0]: task edit did not run on node \"x\""),
            "{err}"
        );
        let err = field(spec("edit", &["a", "e"]), Some(&t)).expect_err("in flight");
        assert!(
            err.starts_with("spec.revert.nodes[1]: task edit is still running on node e"),
            "{err}"
        );
        let err = field(spec("edit", &["f"]), Some(&t)).expect_err("skipped");
        assert!(
            err.starts_with("spec.revert.nodes[0]: task edit did not run on node f"),
            "{err}"
        );
        let err = field(spec("edit", &["a", "a"]), Some(&t)).expect_err("twice");
        assert!(
            err.starts_with("spec.revert.nodes[1]: node \"a\" is named twice"),
            "{err}"
        );
        let err = field(spec("edit", &[]), None).expect_err("missing");
        assert!(
            err.starts_with("spec.revert.task: no HostTask \"edit\" in namespace \"ns\""),
            "{err}"
        );
        let err = field(spec("undo", &[]), Some(&t)).expect_err("itself");
        assert!(
            err.starts_with("spec.revert.task: a task cannot revert itself"),
            "{err}"
        );
        let mut dry = t.clone();
        dry.spec.dry_run = true;
        let err = field(spec("edit", &[]), Some(&dry)).expect_err("dry run");
        assert!(err.contains("is a dry run"), "{err}");
        let mut undo = t.clone();
        undo.spec.http = None;
        undo.spec.revert = Some(spec("other", &[]));
        let err = field(spec("edit", &[]), Some(&undo)).expect_err("a revert");
        assert!(
            err.starts_with("spec.revert.task: edit is itself a revert task"),
            "{err}"
        );
        let unchanged = reverted_task(vec![ran("b", NodePhase::Succeeded, false, None)]);
        let err = field(spec("edit", &[]), Some(&unchanged)).expect_err("nothing");
        assert!(
            err.contains("changed no node in its current run (generation 2)"),
            "{err}"
        );
        let mut fresh = t.clone();
        fresh.status = None;
        let err = field(spec("edit", &[]), Some(&fresh)).expect_err("not run");
        assert!(err.contains("has not run yet"), "{err}");
    }

    #[test]
    fn a_revert_is_named_after_its_target_and_node() {
        let t = TaskIdentity {
            namespace: "ns".into(),
            name: "edit".into(),
            uid: "u1".into(),
            generation: 3,
        };
        assert_eq!(revert_invocation_id(&t, "node-a"), "revert/u1/3/node-a");
        assert_ne!(
            revert_invocation_id(&t, "node-a"),
            crate::task::invocation_id("u1", 3, "node-a")
        );
    }
}

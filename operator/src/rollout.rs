//! The rollout of one task generation as a pure state machine: the status and what the
//! operator observes go in, the new status and the actions to take come out.
//!
//! Nothing here talks to the API server or a worker; [`crate::task`] gathers the
//! observations (worker Pods from the pool's cache, calls from memory), calls [`step`],
//! writes the status and then carries out the actions. So the rules are unit-tested
//! without a cluster:
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

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::{SignedDuration, Timestamp};

use hostplug_api::crd::{HostTaskStatus, NodePhase, NodeResult, RolloutSpec};

use crate::client::CallError;
pub use crate::dispatch::{CallState, NodeOutcome, Success};
use crate::status::Counts;

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
    /// For each target node that still exists: the pool worker serving this task there,
    /// by Pod name (`None`: not created yet), and its state.
    pub workers: BTreeMap<String, Option<(String, WorkerState)>>,
    /// The state of Pods named in the status (Running nodes' Pods), by name.
    pub pods: BTreeMap<String, WorkerState>,
    /// Calls of this generation in memory, by node.
    pub calls: BTreeMap<String, CallState>,
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

/// Advances the rollout of the generation `status` describes by one step. Pure.
pub fn step(status: &mut HostTaskStatus, rollout: &RolloutSpec, obs: &Observed) -> Vec<Action> {
    let now = Time(obs.now);
    let mut actions = Vec::new();

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
                                n.message = None;
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
            Some((_, WorkerState::Broken(why))) => {
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

    // 3. Pending nodes: stop, or warm their workers and admit up to maxParallel.
    let RolloutSpec {
        max_parallel,
        max_failures,
    } = rollout.clone();
    let counts = Counts::of(&status.nodes);
    let max_failures = usize::try_from(max_failures).unwrap_or(0);
    if counts.failed > max_failures {
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
            n.finished_at = Some(now.clone());
        }
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
        let mut in_flight = counts.in_flight;
        let max_parallel = usize::try_from(max_parallel).unwrap_or(1).max(1);
        for n in status
            .nodes
            .iter_mut()
            .filter(|n| n.phase == NodePhase::Pending)
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
            let ready = match worker {
                Some((pod, WorkerState::Ready)) => Some(pod.clone()),
                Some((_, WorkerState::Starting(_))) => None,
                Some((_, WorkerState::Broken(_) | WorkerState::Gone)) | None => {
                    actions.push(Action::EnsureWorker {
                        node: n.node.clone(),
                    });
                    None
                }
            };
            if in_flight >= max_parallel {
                continue;
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
                    if let Some((pod, _)) = worker {
                        n.pod = Some(pod.clone());
                    }
                }
            }
        }
    }
    actions
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
        step(&mut s, &rollout(3, 3), &o);
        assert_eq!(phases(&s)[0], Failed);
        assert!(
            s.nodes[0]
                .message
                .as_deref()
                .is_some_and(|m| m.contains("ErrImagePull"))
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
}

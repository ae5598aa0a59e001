//! Summarising a HostTask's per-node results into its state, message, counters and
//! conditions, and capping what goes into the status so the object stays small.
//!
//! Pure functions; the controller writes the result in one place
//! ([`crate::task::write_status`]).

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

use hostplug_api::crd::{HostTaskStatus, NodePhase, NodeResult, RolloutPhase, TaskState};

/// Largest diff kept per node: 16 KiB. A task on 100 nodes then stays below ~1.6 MiB
/// only if diffs are rare; the total cap below guards the rest.
pub const MAX_DIFF_BYTES: usize = 16 * 1024;
/// Largest JSON output kept per node: 16 KiB, for the same reason as the diff.
pub const MAX_OUTPUT_BYTES: usize = 16 * 1024;
/// Largest message kept per node: 2 KiB; messages are a sentence or a worker's error.
pub const MAX_MESSAGE_BYTES: usize = 2 * 1024;
/// Budget for all diffs and outputs of one task: 512 KiB. etcd refuses objects above
/// 1.5 MiB; half a MiB of results leaves room for the spec, metadata and many nodes'
/// small entries. Beyond it, later nodes keep only their phase and message.
pub const MAX_TOTAL_RESULT_BYTES: usize = 512 * 1024;

/// Budget for a task's serialized `status.nodes` plus the `status.pods` list derived
/// from it: 1 MiB. etcd refuses objects above 1.5 MiB, after which every status write
/// fails and the task is stuck; the remaining half MiB holds the spec, metadata, managed
/// fields and the summary (message and conditions are each capped at
/// [`MAX_MESSAGE_BYTES`]). 5000 nodes with short entries take about 0.7 MiB.
pub const MAX_NODES_STATUS_BYTES: usize = 1024 * 1024;
/// A node message under budget pressure: 256 bytes, still enough for the first line of
/// a worker's error.
pub const MAX_MESSAGE_BYTES_UNDER_PRESSURE: usize = 256;

/// `s` cut to at most `max` bytes on a character boundary, with a note when cut.
pub fn truncate_str(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_owned();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!(
        "{}\n… (truncated: {} of {} bytes shown)",
        &s[..end],
        end,
        s.len()
    )
}

/// A node's output, replaced by a note when its JSON is larger than `max`.
pub fn cap_output(output: serde_json::Value, max: usize) -> serde_json::Value {
    let len = serde_json::to_string(&output).map(|s| s.len()).unwrap_or(0);
    if len <= max {
        output
    } else {
        serde_json::json!({
            "truncated": true,
            "note": format!("output of {len} bytes exceeds the {max}-byte status limit; see the worker's log"),
        })
    }
}

/// The note that replaces a sensitive task's log tail.
const REDACTED_LOGS: &str =
    "[info] hostplug: log tail not stored (the task's results are sensitive)";

/// Replaces every node's output, diff and log tail by their size and sha256, for a task
/// whose results are sensitive (`hostplug.dev/sensitive-output`): what the plugin saw
/// never reaches the status. Idempotent: redacted entries stay as they are.
pub fn redact(nodes: &mut [NodeResult]) {
    use sha2::{Digest as _, Sha256};
    let summary = |bytes: &[u8]| {
        serde_json::json!({
            "redacted": true,
            "bytes": bytes.len(),
            "sha256": hex::encode(Sha256::digest(bytes)),
        })
    };
    for n in nodes.iter_mut() {
        if let Some(o) = &n.output
            && o.get("redacted") != Some(&serde_json::Value::Bool(true))
        {
            let text = serde_json::to_string(o).unwrap_or_default();
            n.output = Some(summary(text.as_bytes()));
        }
        if let Some(d) = &n.diff {
            n.diff = Some(redact_diff(d));
        }
        if !n.logs.is_empty() && n.logs != [REDACTED_LOGS] {
            n.logs = vec![REDACTED_LOGS.to_owned()];
        }
        for c in n.checks.iter_mut() {
            if !c.logs.is_empty() && c.logs != [REDACTED_LOGS] {
                c.logs = vec![REDACTED_LOGS.to_owned()];
            }
        }
    }
}

/// A diff replaced by its size and sha256 (equal hashes still show equal changes);
/// idempotent.
pub fn redact_diff(d: &str) -> String {
    use sha2::{Digest as _, Sha256};
    if d.starts_with("(redacted") {
        return d.to_owned();
    }
    format!(
        "(redacted: {} bytes, sha256 {})",
        d.len(),
        hex::encode(Sha256::digest(d.as_bytes()))
    )
}

/// Caps sizes across all nodes: each entry's own limits, then the task-wide budget.
pub fn cap_results(nodes: &mut [NodeResult]) {
    let mut used = 0usize;
    for n in nodes.iter_mut() {
        if let Some(d) = n.diff.take() {
            n.diff = Some(truncate_str(&d, MAX_DIFF_BYTES));
        }
        if let Some(o) = n.output.take() {
            n.output = Some(cap_output(o, MAX_OUTPUT_BYTES));
        }
        if let Some(m) = n.message.take() {
            n.message = Some(truncate_str(&m, MAX_MESSAGE_BYTES));
        }
        let size = n.diff.as_ref().map_or(0, String::len)
            + n.output
                .as_ref()
                .and_then(|o| serde_json::to_string(o).ok())
                .map_or(0, |s| s.len());
        if used + size > MAX_TOTAL_RESULT_BYTES {
            n.diff = None;
            n.output = Some(serde_json::json!({
                "truncated": true,
                "note": "dropped: the task's results exceed the status size budget",
            }));
        } else {
            used += size;
        }
    }
    fit_nodes_budget(nodes);
}

/// Serialized size of `nodes` plus the `status.pods` list [`summarise`] derives from
/// them.
fn nodes_status_bytes(nodes: &[NodeResult]) -> usize {
    let entries = serde_json::to_vec(nodes).map_or(usize::MAX, |v| v.len());
    let pods: usize = nodes
        .iter()
        .filter_map(|n| n.pod.as_ref())
        .map(|p| p.len() + 3)
        .sum();
    entries.saturating_add(pods)
}

/// Makes `nodes` fit [`MAX_NODES_STATUS_BYTES`], dropping details in order of least
/// use: first everything but phase, pod and `changed` of succeeded nodes (so counts
/// stay), then the logs of the others, then their messages are shortened, and at last
/// messages, diffs, outputs and the times of ended nodes are dropped, except on the
/// first failed node, which the task's summary message quotes. Node entries themselves are never dropped: the controller
/// keeps its per-node bookkeeping in them.
fn fit_nodes_budget(nodes: &mut [NodeResult]) {
    let over = |nodes: &[NodeResult]| nodes_status_bytes(nodes) > MAX_NODES_STATUS_BYTES;
    if !over(nodes) {
        return;
    }
    for n in nodes.iter_mut().filter(|n| n.phase == NodePhase::Succeeded) {
        n.diff = None;
        n.output = None;
        n.message = None;
        n.logs.clear();
        n.started_at = None;
        n.finished_at = None;
    }
    if !over(nodes) {
        return;
    }
    for n in nodes.iter_mut() {
        n.logs.clear();
    }
    if !over(nodes) {
        return;
    }
    for n in nodes.iter_mut() {
        if let Some(m) = n.message.take() {
            n.message = Some(truncate_str(&m, MAX_MESSAGE_BYTES_UNDER_PRESSURE));
        }
    }
    if !over(nodes) {
        return;
    }
    let first_failed = nodes.iter().position(|n| n.phase == NodePhase::Failed);
    for (i, n) in nodes.iter_mut().enumerate() {
        n.diff = None;
        n.output = None;
        if Some(i) != first_failed {
            n.message = None;
            // Ended nodes only: a running node's start time is its deadline's origin.
            if matches!(n.phase, NodePhase::Failed | NodePhase::Skipped) {
                n.started_at = None;
                n.finished_at = None;
            }
        }
    }
}

/// Counts of node phases.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Counts {
    /// Nodes not started.
    pub pending: usize,
    /// Nodes starting or running.
    pub in_flight: usize,
    /// Nodes that succeeded.
    pub succeeded: usize,
    /// Nodes that failed.
    pub failed: usize,
    /// Nodes skipped after the rollout stopped.
    pub skipped: usize,
    /// Succeeded nodes that changed something.
    pub changed: usize,
}

impl Counts {
    /// Counts the phases of `nodes`.
    pub fn of(nodes: &[NodeResult]) -> Self {
        let mut c = Self::default();
        for n in nodes {
            match n.phase {
                NodePhase::Pending => c.pending += 1,
                NodePhase::Starting | NodePhase::Running => c.in_flight += 1,
                NodePhase::Succeeded => c.succeeded += 1,
                NodePhase::Failed => c.failed += 1,
                NodePhase::Skipped => c.skipped += 1,
            }
            if n.phase == NodePhase::Succeeded && n.changed {
                c.changed += 1;
            }
        }
        c
    }

    /// Nodes that ended.
    pub fn done(&self) -> usize {
        self.succeeded + self.failed + self.skipped
    }
}

/// Fills state, msg, counters and conditions of `status` from its nodes. `dry_run` only
/// changes the wording ("would change").
pub fn summarise(status: &mut HostTaskStatus, dry_run: bool, now: &Time) {
    let c = Counts::of(&status.nodes);
    let total = status.nodes.len();
    status.nodes_total = i32::try_from(total).unwrap_or(i32::MAX);
    status.nodes_done = i32::try_from(c.done()).unwrap_or(i32::MAX);
    status.progress = Some(format!("{}/{}", c.done(), total));
    status.pods = status.nodes.iter().filter_map(|n| n.pod.clone()).collect();
    let changed = if dry_run {
        format!("{} would change", c.changed)
    } else {
        format!("{} changed", c.changed)
    };
    let cancelled = status
        .rollout
        .as_ref()
        .is_some_and(|r| r.phase == RolloutPhase::Cancelled);
    let (state, msg) = if total > 0 && c.done() == total {
        if c.failed == 0 && c.skipped == 0 {
            (
                TaskState::Succeeded,
                format!("{}/{total} nodes succeeded, {changed}", c.succeeded),
            )
        } else {
            let mut msg = format!(
                "{}/{total} nodes succeeded, {} failed",
                c.succeeded, c.failed
            );
            if cancelled {
                msg.insert_str(0, "cancelled (spec.rollout.cancel): ");
            }
            if c.skipped > 0 {
                let why = if cancelled {
                    "cancelled"
                } else {
                    "too many failures"
                };
                msg.push_str(&format!(", {} skipped ({why})", c.skipped));
            }
            msg.push_str(&format!(", {changed}"));
            if let Some(first) = status.nodes.iter().find(|n| n.phase == NodePhase::Failed) {
                msg.push_str(&format!(
                    "; {}: {}",
                    first.node,
                    first.message.as_deref().unwrap_or("failed")
                ));
            }
            (TaskState::Failed, truncate_str(&msg, MAX_MESSAGE_BYTES))
        }
    } else if c.in_flight == 0 && c.done() == 0 {
        (TaskState::Pending, format!("0/{total} nodes started"))
    } else {
        (
            TaskState::Running,
            format!(
                "{}/{total} nodes done, {} in flight, {} failed",
                c.done(),
                c.in_flight,
                c.failed
            ),
        )
    };
    // A rollout that waits (or is being gated) says so first: why, and at which wave.
    let waiting = status
        .rollout
        .as_ref()
        .filter(|r| !state.is_finished() && r.message.is_some())
        .map(|r| (r.phase, r.message.clone().unwrap_or_default()));
    let msg = match &waiting {
        Some((_, why)) => truncate_str(&format!("{why}; {msg}"), MAX_MESSAGE_BYTES),
        None => msg,
    };
    status.state = state;
    status.msg = Some(msg.clone());
    if state.is_finished() && status.finished_at.is_none() {
        status.finished_at = Some(now.clone());
    }
    set_conditions(status, state, &msg, now);
    let generation = status.observed_generation.unwrap_or(0);
    if let Some((phase, _)) = waiting.filter(|(p, _)| p.waits()) {
        // Like a Deployment paused or past its progress deadline: not progressing, and
        // the reason says why.
        set_condition(
            &mut status.conditions,
            Condition {
                type_: "Progressing".into(),
                status: "False".into(),
                reason: phase.to_string(),
                message: msg.clone(),
                observed_generation: Some(generation),
                last_transition_time: now.clone(),
            },
        );
    }
    if cancelled && state.is_finished() {
        for c in &mut status.conditions {
            c.reason = "Cancelled".into();
        }
    }
}

/// Sets the `Ready` and `Progressing` conditions from `state`.
pub fn set_conditions(status: &mut HostTaskStatus, state: TaskState, msg: &str, now: &Time) {
    let generation = status.observed_generation.unwrap_or(0);
    let (ready, ready_reason) = match state {
        TaskState::Succeeded => ("True", "Succeeded"),
        TaskState::Failed => ("False", "Failed"),
        TaskState::Running => ("False", "Running"),
        TaskState::Pending => ("False", "Pending"),
    };
    let progressing = if state.is_finished() { "False" } else { "True" };
    set_condition(
        &mut status.conditions,
        Condition {
            type_: "Ready".into(),
            status: ready.into(),
            reason: ready_reason.into(),
            message: msg.into(),
            observed_generation: Some(generation),
            last_transition_time: now.clone(),
        },
    );
    set_condition(
        &mut status.conditions,
        Condition {
            type_: "Progressing".into(),
            status: progressing.into(),
            reason: ready_reason.into(),
            message: msg.into(),
            observed_generation: Some(generation),
            last_transition_time: now.clone(),
        },
    );
}

/// Replaces the condition of the same type, keeping its transition time when the status
/// did not change (the `meta.SetStatusCondition` rule).
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sensitive_results_are_replaced_by_size_and_hash() {
        let mut nodes = vec![NodeResult {
            node: "n1".into(),
            phase: NodePhase::Succeeded,
            changed: true,
            output: Some(serde_json::json!({"content": "password=hunter2"})),
            diff: Some("-a\n+password=hunter2\n".into()),
            logs: vec!["[info] plugin: read password=hunter2".into()],
            message: Some("ok".into()),
            ..NodeResult::default()
        }];
        redact(&mut nodes);
        let once = nodes.clone();
        redact(&mut nodes);
        assert_eq!(nodes, once, "redacting twice changes nothing");
        let text = serde_json::to_string(&nodes).unwrap_or_default();
        assert!(!text.contains("hunter2"), "{text}");
        let out = nodes[0].output.clone().unwrap_or_default();
        assert_eq!(out["redacted"], true);
        assert_eq!(out["sha256"].as_str().map(str::len), Some(64));
        assert!(nodes[0].changed);
        assert_eq!(nodes[0].message.as_deref(), Some("ok"));
    }

    fn now() -> Time {
        Time(k8s_openapi::jiff::Timestamp::UNIX_EPOCH)
    }

    fn node(name: &str, phase: NodePhase, changed: bool) -> NodeResult {
        NodeResult {
            node: name.into(),
            pod: Some(format!("t-{name}")),
            phase,
            changed,
            ..NodeResult::default()
        }
    }

    #[test]
    fn all_succeeded() {
        let mut s = HostTaskStatus {
            nodes: vec![
                node("a", NodePhase::Succeeded, true),
                node("b", NodePhase::Succeeded, false),
            ],
            ..HostTaskStatus::default()
        };
        summarise(&mut s, false, &now());
        assert_eq!(s.state, TaskState::Succeeded);
        assert_eq!(s.msg.as_deref(), Some("2/2 nodes succeeded, 1 changed"));
        assert_eq!(s.progress.as_deref(), Some("2/2"));
        assert_eq!(s.pods, vec!["t-a".to_string(), "t-b".to_string()]);
        assert!(s.finished_at.is_some());
        assert!(
            s.conditions
                .iter()
                .any(|c| c.type_ == "Ready" && c.status == "True")
        );
    }

    #[test]
    fn failure_and_skips_fail_the_task_and_name_the_node() {
        let mut failed = node("b", NodePhase::Failed, false);
        failed.message = Some("worker unreachable".into());
        let mut s = HostTaskStatus {
            nodes: vec![
                node("a", NodePhase::Succeeded, true),
                failed,
                node("c", NodePhase::Skipped, false),
            ],
            ..HostTaskStatus::default()
        };
        summarise(&mut s, true, &now());
        assert_eq!(s.state, TaskState::Failed);
        let msg = s.msg.unwrap_or_default();
        assert!(
            msg.contains("1 failed") && msg.contains("1 skipped"),
            "{msg}"
        );
        assert!(msg.contains("b: worker unreachable"), "{msg}");
        assert!(msg.contains("1 would change"), "{msg}");
    }

    #[test]
    fn running_and_pending() {
        let mut s = HostTaskStatus {
            nodes: vec![node("a", NodePhase::Pending, false)],
            ..HostTaskStatus::default()
        };
        summarise(&mut s, false, &now());
        assert_eq!(s.state, TaskState::Pending);
        s.nodes[0].phase = NodePhase::Starting;
        summarise(&mut s, false, &now());
        assert_eq!(s.state, TaskState::Running);
        assert!(s.finished_at.is_none());
    }

    #[test]
    fn status_of_5000_nodes_with_long_messages_fits_the_budget() {
        let long = "worker error: ".to_owned() + &"x".repeat(2 * MAX_MESSAGE_BYTES);
        let mut nodes: Vec<NodeResult> = (0..5000)
            .map(|i| {
                let phase = if i % 5 == 4 {
                    NodePhase::Failed
                } else {
                    NodePhase::Succeeded
                };
                let mut n = node(
                    &format!("worker-node-{i:05}.example.internal"),
                    phase,
                    i % 2 == 0,
                );
                n.pod = Some(format!(
                    "a-long-task-name-for-the-test-worker-node-{i:05}-7f3a9"
                ));
                n.message = Some(long.clone());
                n.diff = Some("-old\n+new\n".repeat(200));
                n.logs = (0..20)
                    .map(|l| format!("log line {l} {}", "y".repeat(100)))
                    .collect();
                n.started_at = Some(now());
                n.finished_at = Some(now());
                n
            })
            .collect();
        cap_results(&mut nodes);
        let mut s = HostTaskStatus {
            observed_generation: Some(1),
            nodes,
            ..HostTaskStatus::default()
        };
        summarise(&mut s, false, &now());
        let size = serde_json::to_vec(&s).map_or(usize::MAX, |v| v.len());
        eprintln!("status of 5000 nodes: {size} bytes");
        assert!(
            size <= MAX_NODES_STATUS_BYTES + 4 * MAX_MESSAGE_BYTES + 1024,
            "status is {size} bytes"
        );
        // Counts and phases survive; the summary still names the first failure.
        assert_eq!(s.nodes.len(), 5000);
        let msg = s.msg.clone().unwrap_or_default();
        assert!(
            msg.starts_with("4000/5000 nodes succeeded, 1000 failed, 2000 changed"),
            "{msg}"
        );
        assert!(
            msg.contains("worker-node-00004.example.internal: worker error"),
            "{msg}"
        );
        assert_eq!(s.pods.len(), 5000);
    }

    #[test]
    fn small_statuses_keep_all_details() {
        let mut n = node("a", NodePhase::Succeeded, true);
        n.message = Some("ok".into());
        n.logs = vec!["line".into()];
        let mut nodes = vec![n.clone()];
        cap_results(&mut nodes);
        assert_eq!(nodes[0], n);
    }

    #[test]
    fn sizes_are_capped() {
        let mut n = node("a", NodePhase::Succeeded, true);
        n.diff = Some("é".repeat(MAX_DIFF_BYTES));
        n.output = Some(serde_json::json!({"big": "x".repeat(MAX_OUTPUT_BYTES)}));
        let mut nodes = vec![n];
        cap_results(&mut nodes);
        let diff = nodes[0].diff.clone().unwrap_or_default();
        assert!(diff.len() < MAX_DIFF_BYTES + 100 && diff.contains("truncated"));
        assert_eq!(
            nodes[0].output.as_ref().and_then(|o| o.get("truncated")),
            Some(&serde_json::json!(true))
        );
        let mut many: Vec<NodeResult> = (0..100)
            .map(|i| {
                let mut n = node(&format!("n{i}"), NodePhase::Succeeded, true);
                n.diff = Some("x".repeat(MAX_DIFF_BYTES));
                n
            })
            .collect();
        cap_results(&mut many);
        let total: usize = many
            .iter()
            .map(|n| n.diff.as_ref().map_or(0, String::len))
            .sum();
        assert!(total <= MAX_TOTAL_RESULT_BYTES, "{total}");
        assert!(many[99].diff.is_none());
    }
}

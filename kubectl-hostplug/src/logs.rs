//! `logs TASK [--node N]`: what happened on each node of a task's current generation,
//! from the two places it is kept.
//!
//! 1. **The plugin's log tail**, which the operator stores in the task's status
//!    (`status.nodes[].logs`: the last lines the plugin logged on that node, at most
//!    `protocol::MAX_LOG_TAIL_LINES`). Always shown: reading it needs only `get` on the
//!    task.
//! 2. **The worker's own lines about this call**: the worker Pod's container log
//!    (`pods/log` in the operator's namespace), only the JSON lines whose
//!    `invocation_id` is this node's call, `<task uid>/<generation>/<node>`, from the
//!    node's start on — when the user may read Pod logs there and the worker Pod still
//!    exists. Otherwise a note says why they are missing, and the command still
//!    succeeds: the plugin's tail is the node's result, the worker's lines only say when
//!    and how the call reached it (deadline, node lock, a repeat answered from the
//!    worker's store after an operator restart).
//!
//! It reads and never writes; it never reaches a node or a worker itself (Pod logs come
//! through the API server). Text from the cluster passes through [`plain`] before it is
//! printed.

use std::fmt::Write as _;

use futures::StreamExt as _;
use hostplug_api::crd::{HostTask, NodePhase, NodeResult};
use k8s_openapi::api::core::v1::Pod;
use kube::Api;
use kube::api::LogParams;
use serde::Serialize;

use crate::Error;
use crate::terminal::plain;

/// The worker container's name in a worker Pod.
pub const WORKER_CONTAINER: &str = "worker";
/// Most bytes of one worker Pod's log read per node: 4 MiB. A pooled worker writes a few
/// hundred bytes per call, so this holds thousands of calls after the node's start, while
/// a worker that has served a HostState for days cannot make the command read without
/// end.
pub const MAX_WORKER_LOG_BYTES: i64 = 4 << 20;
/// Worker logs read at once for a task of many nodes: 8, enough to read a 200-node task
/// in seconds without a burst of hundreds of requests at the API server (each of which
/// it proxies to a kubelet).
pub const MAX_CONCURRENT_LOG_READS: usize = 8;
/// How far before a node's recorded start the worker's log is read: 2 s, since the
/// status keeps whole seconds.
const START_SLACK_SECONDS: i64 = 2;

/// What `logs` shows of one node.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct NodeLogs {
    /// Node name.
    pub node: String,
    /// The node's phase in the current generation.
    pub phase: NodePhase,
    /// Why it failed, or a note.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// The worker Pod that served the call.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pod: Option<String>,
    /// The call's invocation id, as the worker logs it.
    pub invocation_id: String,
    /// The plugin's log tail from the task's status, oldest first
    /// (`[level] source: text`).
    pub plugin: Vec<String>,
    /// The worker's lines about this call.
    pub worker: WorkerLines,
}

/// The worker's log lines about one call, or why there are none to show.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct WorkerLines {
    /// Each line as the worker wrote it (one JSON object per line).
    pub lines: Vec<serde_json::Value>,
    /// Why the worker's log was not read; absent when it was.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub unavailable: Option<String>,
}

impl WorkerLines {
    fn unavailable(why: impl Into<String>) -> Self {
        Self {
            lines: Vec::new(),
            unavailable: Some(why.into()),
        }
    }
}

/// The nodes `logs` shows: every node of the current generation, or the one asked for.
pub fn select<'t>(task: &'t HostTask, node: Option<&str>) -> Result<Vec<&'t NodeResult>, Error> {
    let nodes: Vec<&NodeResult> = task
        .status
        .as_ref()
        .map(|s| s.nodes.iter().collect())
        .unwrap_or_default();
    let Some(wanted) = node else {
        return Ok(nodes);
    };
    match nodes.iter().find(|n| n.node == wanted) {
        Some(n) => Ok(vec![*n]),
        None => Err(Error::UnknownNode {
            node: wanted.to_owned(),
            task: task.metadata.name.clone().unwrap_or_default(),
            known: if nodes.is_empty() {
                "none yet".to_owned()
            } else {
                nodes
                    .iter()
                    .map(|n| plain(&n.node))
                    .collect::<Vec<_>>()
                    .join(", ")
            },
        }),
    }
}

/// The generation whose calls the status describes (the one `status.nodes` belongs to).
pub fn described_generation(task: &HostTask) -> i64 {
    task.status
        .as_ref()
        .and_then(|s| s.run_generation())
        .or(task.metadata.generation)
        .unwrap_or_default()
}

/// The lines of a worker's log (JSON, one object a line) about the call `id`: those whose
/// `invocation_id` field is exactly `id`. Other lines, and lines that are not JSON, are
/// left out.
pub fn lines_of(log: &str, id: &str) -> Vec<serde_json::Value> {
    log.lines()
        .filter(|l| l.contains(id))
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v.get("invocation_id").and_then(serde_json::Value::as_str) == Some(id))
        .collect()
}

/// Why a worker's log could not be read, in the user's terms.
fn unreadable(e: &kube::Error, namespace: &str, pod: &str) -> (String, bool) {
    match e {
        kube::Error::Api(s) if s.code == 403 => (
            format!(
                "you may not read Pod logs in namespace {namespace} (`get` on `pods/log`); \
                 the plugin's lines above are all the task keeps"
            ),
            true,
        ),
        kube::Error::Api(s) if s.code == 404 => (
            format!(
                "worker Pod {pod} is gone (idle workers are removed after the operator's \
                 --worker-idle-seconds)"
            ),
            false,
        ),
        kube::Error::Api(s) => (
            format!(
                "the API server could not read the log of {pod}: {}",
                plain(&s.message)
            ),
            false,
        ),
        other => (
            format!("reading the log of {pod}: {}", plain(&other.to_string())),
            false,
        ),
    }
}

/// What `logs` shows of `nodes`: each node's plugin tail and, unless `worker_logs` is
/// off, its worker's lines about the call, read from `pods` (the operator's namespace).
/// A refusal to read Pod logs is asked once, not once per node.
pub async fn collect(
    task: &HostTask,
    nodes: &[&NodeResult],
    pods: &Api<Pod>,
    namespace: &str,
    worker_logs: bool,
) -> Vec<NodeLogs> {
    let uid = task.metadata.uid.clone().unwrap_or_default();
    let generation = described_generation(task);
    let mut out: Vec<NodeLogs> = nodes
        .iter()
        .map(|n| NodeLogs {
            node: n.node.clone(),
            phase: n.phase,
            message: n.message.clone(),
            pod: n.pod.clone(),
            invocation_id: hostplug_api::protocol::task_invocation_id(&uid, generation, &n.node),
            plugin: n.logs.clone(),
            worker: WorkerLines::default(),
        })
        .collect();
    if !worker_logs {
        for n in &mut out {
            n.worker = WorkerLines::unavailable("not asked for (--no-worker)");
        }
        return out;
    }
    // One read first: if Pod logs are forbidden, every node is told so without asking
    // the API server once per node.
    let mut todo: Vec<usize> = Vec::new();
    for (i, n) in nodes.iter().enumerate() {
        match (&n.pod, &n.started_at) {
            (Some(_), Some(_)) => todo.push(i),
            _ => {
                out[i].worker = WorkerLines::unavailable("the call has not started");
            }
        }
    }
    let ids: Vec<String> = out.iter().map(|n| n.invocation_id.clone()).collect();
    let read = |i: usize| {
        let n = nodes[i];
        let pod = n.pod.clone().unwrap_or_default();
        let since = n.started_at.as_ref().and_then(|t| {
            t.0.checked_sub(k8s_openapi::jiff::SignedDuration::from_secs(
                START_SLACK_SECONDS,
            ))
            .ok()
        });
        let params = LogParams {
            container: Some(WORKER_CONTAINER.to_owned()),
            limit_bytes: Some(MAX_WORKER_LOG_BYTES),
            since_time: since,
            ..LogParams::default()
        };
        let id = ids[i].clone();
        let pods = pods.clone();
        async move {
            let result = pods.logs(&pod, &params).await;
            (i, pod, id, result)
        }
    };
    let mut rest = todo.into_iter();
    if let Some(first) = rest.next() {
        let (i, pod, id, result) = read(first).await;
        match result {
            Ok(log) => out[i].worker.lines = lines_of(&log, &id),
            Err(e) => {
                let (why, everywhere) = unreadable(&e, namespace, &pod);
                if everywhere {
                    for n in out.iter_mut().filter(|n| n.worker.unavailable.is_none()) {
                        n.worker = WorkerLines::unavailable(why.clone());
                    }
                    return out;
                }
                out[i].worker = WorkerLines::unavailable(why);
            }
        }
    }
    let results: Vec<_> = futures::stream::iter(rest.map(read))
        .buffer_unordered(MAX_CONCURRENT_LOG_READS)
        .collect()
        .await;
    for (i, pod, id, result) in results {
        out[i].worker = match result {
            Ok(log) => WorkerLines {
                lines: lines_of(&log, &id),
                unavailable: None,
            },
            Err(e) => WorkerLines::unavailable(unreadable(&e, namespace, &pod).0),
        };
    }
    out
}

/// A worker's JSON log line as one line of text: time, level, message, then the other
/// fields as `key=value` (the invocation id, already in the heading, and the Rust
/// module left out).
pub fn worker_line(v: &serde_json::Value) -> String {
    let text = |key: &str| {
        v.get(key)
            .map(|x| match x {
                serde_json::Value::String(s) => s.clone(),
                other => other.to_string(),
            })
            .unwrap_or_default()
    };
    let mut line = format!(
        "{} {} {}",
        text("timestamp"),
        text("level"),
        text("message")
    );
    if let Some(fields) = v.as_object() {
        for (k, x) in fields {
            if matches!(
                k.as_str(),
                "timestamp" | "level" | "message" | "target" | "invocation_id"
            ) {
                continue;
            }
            let value = match x {
                serde_json::Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            let _ = write!(line, " {k}={value}");
        }
    }
    plain(line.trim())
}

/// The text `logs` prints: per node a heading, the plugin's lines, the worker's lines.
pub fn render(task: &HostTask, nodes: &[NodeLogs]) -> String {
    let mut out = String::new();
    if nodes.is_empty() {
        let status = task.status.clone().unwrap_or_default();
        let _ = writeln!(
            out,
            "No node has started yet ({:?}{}).",
            status.state,
            status
                .msg
                .as_deref()
                .map(|m| format!(": {}", plain(m)))
                .unwrap_or_default()
        );
        return out;
    }
    for (i, n) in nodes.iter().enumerate() {
        if i > 0 {
            out.push('\n');
        }
        let _ = writeln!(out, "== {} · {:?} ==", plain(&n.node), n.phase);
        if n.phase == NodePhase::Failed
            && let Some(m) = &n.message
        {
            let _ = writeln!(out, "error: {}", plain(m));
        }
        let _ = writeln!(out, "plugin (the tail the task's status keeps):");
        if n.plugin.is_empty() {
            let _ = writeln!(out, "  (nothing logged)");
        }
        for l in &n.plugin {
            let _ = writeln!(out, "  {}", plain(l));
        }
        let _ = writeln!(
            out,
            "worker{} (invocation {}):",
            n.pod
                .as_deref()
                .map(|p| format!(" {}", plain(p)))
                .unwrap_or_default(),
            plain(&n.invocation_id)
        );
        match &n.worker.unavailable {
            Some(why) => {
                let _ = writeln!(out, "  not shown: {}", plain(why));
            }
            None if n.worker.lines.is_empty() => {
                let _ = writeln!(out, "  (no line about this call)");
            }
            None => {
                for l in &n.worker.lines {
                    let _ = writeln!(out, "  {}", worker_line(l));
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use hostplug_api::crd::{HostTaskSpec, HostTaskStatus, HttpSpec};

    fn task() -> HostTask {
        let mut t = HostTask::new(
            "t",
            HostTaskSpec {
                disruption: None,
                targets: hostplug_api::NodeTargets::named(["node1", "node10"]),
                http: Some(HttpSpec::new(hostplug_api::PluginCall::new(
                    "etc-file", "read", None,
                ))),
                revert: None,
                dry_run: false,
                timeout_seconds: 60,
                rollout: None,
                ttl_seconds_after_finished: None,
                registry_auth: None,
                rerun: 0,
                on_change: Vec::new(),
            },
        );
        t.metadata.generation = Some(3);
        t.metadata.uid = Some("u-1".into());
        t.status = Some(HostTaskStatus {
            observed_generation: Some(2),
            nodes: ["node1", "node10"]
                .iter()
                .map(|n| NodeResult {
                    node: (*n).into(),
                    phase: NodePhase::Succeeded,
                    logs: vec![format!("[info] etc-file: read on {n}")],
                    ..NodeResult::default()
                })
                .collect(),
            ..HostTaskStatus::default()
        });
        t
    }

    #[test]
    fn one_node_or_all_and_an_unknown_one_names_the_others() {
        let t = task();
        assert_eq!(select(&t, None).map(|n| n.len()).ok(), Some(2));
        assert_eq!(
            select(&t, Some("node10")).map(|n| n[0].node.clone()).ok(),
            Some("node10".into())
        );
        let e = select(&t, Some("node2")).err().map(|e| e.to_string());
        let e = e.unwrap_or_default();
        assert!(e.contains("node2") && e.contains("node1, node10"), "{e}");
    }

    #[test]
    fn only_the_calls_own_lines_are_kept() {
        // The status describes generation 2 (the spec is at 3, not yet observed).
        let t = task();
        assert_eq!(described_generation(&t), 2);
        let id = hostplug_api::protocol::task_invocation_id("u-1", 2, "node1");
        let log = [
            r#"{"timestamp":"T1","level":"INFO","message":"invoking","invocation_id":"u-1/2/node1","method":"read","dry_run":false,"target":"hostplug_worker::server"}"#,
            r#"{"timestamp":"T2","level":"INFO","message":"invoking","invocation_id":"u-1/2/node10"}"#,
            r#"{"timestamp":"T3","level":"INFO","message":"invoking","invocation_id":"u-1/1/node1"}"#,
            "not json u-1/2/node1",
            r#"{"timestamp":"T4","level":"INFO","message":"repeated invocation: answering its stored outcome","invocation_id":"u-1/2/node1"}"#,
        ]
        .join("\n");
        let lines = lines_of(&log, &id);
        assert_eq!(lines.len(), 2, "{lines:?}");
        assert_eq!(
            worker_line(&lines[0]),
            "T1 INFO invoking dry_run=false method=read"
        );
    }

    #[test]
    fn the_text_says_where_each_part_comes_from_and_strips_control_sequences() {
        let t = task();
        let nodes = vec![NodeLogs {
            node: "node1".into(),
            phase: NodePhase::Failed,
            message: Some("plugin failed\u{1b}[2J".into()),
            pod: Some("hpw-node1".into()),
            invocation_id: "u-1/2/node1".into(),
            plugin: vec!["[warn] etc-file: \u{1b}]52;c;x\u{7}odd".into()],
            worker: WorkerLines::unavailable("you may not read Pod logs"),
        }];
        let text = render(&t, &nodes);
        assert!(
            !text.chars().any(|c| c.is_control() && c != '\n'),
            "{text:?}"
        );
        assert!(text.contains("== node1 · Failed =="), "{text}");
        assert!(text.contains("error: plugin failed"), "{text}");
        assert!(text.contains("[warn] etc-file: odd"), "{text}");
        assert!(
            text.contains(
                "worker hpw-node1 (invocation u-1/2/node1):\n  not shown: you may not read Pod logs"
            ),
            "{text}"
        );
    }
}

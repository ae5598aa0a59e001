//! Carries out [`super::next`]'s decisions for one node: reads the Node, its Pods and
//! its boot ID, writes the mark (a merge patch fenced by the Node's resourceVersion, so
//! two operator processes never both take a step), cordons and uncordons, evicts
//! through the Eviction API (a refusal — 429, a PodDisruptionBudget — is kept and
//! retried, never overridden), sends the call, and asks the node's worker to reboot.
//!
//! The reboot goes through a pooled worker of the one access profile that mounts the
//! system bus ([`reboot_profile`]); the worker's operator-only route calls systemd's
//! `Reboot`, which no plugin can reach. The boot ID is the kubelet's
//! (`status.nodeInfo.bootID`); the worker answering again after a new boot is part of
//! "the node is back". This module must never delete a
//! Pod, never patch anything of a Node but its `spec.unschedulable` and the two
//! annotations, and never ask for a reboot that is not recorded on the Node first.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Node, Pod};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::jiff::Timestamp;
use kube::api::{EvictParams, ListParams, Patch, PatchParams};
use kube::core::{Selector, SelectorExt};
use kube::runtime::events::EventType;
use kube::{Api, ResourceExt};
use serde_json::json;
use tracing::{info, warn};

use hostplug_api::AccessProfile;
use hostplug_api::disruption::{MaintenanceMark, RebootRequest};
use hostplug_api::systemd::SystemdAccess;

use super::{
    CallObs, Cycle, Decision, DrainPod, LAST_CYCLE_ANNOTATION, LastCycle, MAINTENANCE_ANNOTATION,
    NodeObs, must_evict, next,
};
use crate::Context;
use crate::client::CallError;
use crate::dispatch::{NodeOutcome, Success};
use crate::pool::WorkerKey;

/// Pause between two looks while waiting (Pods ending, a node rebooting): 1 s. Every
/// wait of a cycle ends on the next look, so this is paid once per step; at 2 s the
/// cycle bench measured hostplug ~6 s per node slower than the same cycle by hand.
/// Evictions are retried this often too (`kubectl drain` retries a 429 every 5 s). The
/// cost is a Node read (and, while draining, a Pod list) per second per node in a
/// cycle, and the fleet budget keeps those few.
pub const POLL: Duration = Duration::from_secs(1);

/// How long one look waits for the node's reboot worker to be Ready: 10 s. A node that
/// is rebooting has none; the cycle looks again after [`POLL`] until its own timeout.
pub const WORKER_WAIT: Duration = Duration::from_secs(10);

/// Longest wait for one eviction request (with the budgets read to name a refusal):
/// 10 s; the API server answers in milliseconds, and a drain must not hang on one Pod.
pub const API_TIMEOUT: Duration = Duration::from_secs(10);

/// Event reason of each step of a node's cycle on the task.
pub const EVENT_REASON: &str = "NodeMaintenance";

/// The access profile of the worker that reads a node's boot ID and reboots it: the
/// system bus and nothing else (no /etc, no container sockets).
pub fn reboot_profile() -> AccessProfile {
    AccessProfile {
        systemd: SystemdAccess::Manage,
        ..AccessProfile::default()
    }
}

fn failed(what: &str, node: &str) -> impl FnOnce(kube::Error) -> CallError {
    let what = format!("{what} of node {node}");
    move |e| CallError::Disruption(format!("{what} failed: {e}"))
}

/// One node's cycle for `owner` (the HostTask, or the HostState whose correction it
/// is; its Events go there); `apply` sends the call (at most once per process; the
/// invocation id makes a repeat across processes safe).
pub async fn run<K, F, Fut>(
    ctx: &Arc<Context>,
    owner: &K,
    cycle: Cycle<'_>,
    node: &str,
    port: i32,
    apply: F,
) -> NodeOutcome
where
    K: kube::Resource<DynamicType = ()>,
    F: FnOnce() -> Fut,
    Fut: Future<Output = NodeOutcome>,
{
    let nodes: Api<Node> = Api::all(ctx.client.clone());
    let key = WorkerKey {
        node: node.to_owned(),
        profile: reboot_profile(),
        port,
        task: None,
    };
    let evictor = eviction_client().await?;
    let mut apply = Some(apply);
    let mut outcome: Option<NodeOutcome> = None;
    let mut reboot_sent = false;
    let mut blocked = std::collections::BTreeMap::new();
    loop {
        let current = nodes.get(node).await.map_err(failed("reading", node))?;
        let annotations = current.metadata.annotations.clone().unwrap_or_default();
        let mark = match annotations.get(MAINTENANCE_ANNOTATION) {
            Some(v) => Some(
                MaintenanceMark::from_annotation(v)
                    .map_err(|e| CallError::Disruption(format!("node {node}: {e}")))?,
            ),
            None => None,
        };
        let last = annotations
            .get(LAST_CYCLE_ANNOTATION)
            .and_then(|v| serde_json::from_str::<LastCycle>(v).ok());
        let step = mark
            .as_ref()
            .filter(|m| m.is_of(cycle.uid, cycle.generation))
            .map(|m| m.step);
        let mark_boot = mark.as_ref().and_then(|m| m.boot_id.clone());
        use hostplug_api::disruption::CycleStep;
        let listed = if step == Some(CycleStep::Draining) {
            pods_to_evict(ctx, node).await?
        } else {
            Vec::new()
        };
        let labels: std::collections::BTreeMap<String, Labels> = listed
            .iter()
            .map(|(p, l)| (p.name.clone(), l.clone()))
            .collect();
        let to_evict: Vec<DrainPod> = listed.into_iter().map(|(p, _)| p).collect();
        blocked.retain(|pod: &String, _| to_evict.iter().any(|p| &p.name == pod));
        let call = match &outcome {
            None => CallObs::NotSent,
            Some(Ok(s)) => CallObs::Succeeded {
                changed: s.changed,
                reboot_requested: s.reboot_required.clone(),
            },
            Some(Err(e)) => CallObs::Failed(e.to_string()),
        };
        // The boot ID is the kubelet's (`status.nodeInfo.bootID`, read from the node's
        // /proc/sys/kernel/random/boot_id): the node's own, where a container's /proc
        // may show another kernel's (a node in a container).
        let boot_id = current
            .status
            .as_ref()
            .and_then(|s| s.node_info.as_ref())
            .map(|i| i.boot_id.clone())
            .filter(|b| !b.is_empty());
        // After a new boot, Ready means the node and its worker: the worker answers.
        let rebooted = step == Some(CycleStep::Rebooting)
            && boot_id.is_some()
            && boot_id.as_deref() != mark_boot.as_deref();
        let worker_back = !rebooted || worker_answers(ctx, &key).await;
        let obs = NodeObs {
            now: Timestamp::now(),
            mark,
            last,
            unschedulable: current
                .spec
                .as_ref()
                .and_then(|s| s.unschedulable)
                .unwrap_or(false),
            ready: is_ready(&current) && worker_back,
            boot_id,
            to_evict,
            blocked: blocked.clone(),
            call,
            reboot_sent,
        };
        let first = obs.mark.is_none();
        let decision = next(&cycle, &obs);
        let rv = current.resource_version();
        match decision {
            Decision::Record(m) => {
                // The first mark takes a place in the fleet-wide budget: counted from
                // the Nodes themselves and written under this process's lock, so two
                // tasks never both take the last place.
                let _held = if first {
                    let guard = BUDGET_LOCK.lock().await;
                    if let Some(why) = budget_full(ctx, node).await? {
                        tracing::debug!(%node, %why, "disruption: waiting");
                        drop(guard);
                        // Another task took the last place between this task's admission
                        // and now: the owner's status says so (its reconcile reads the
                        // marks from the Node cache, which may lag a look behind).
                        wake_owner(ctx, owner);
                        tokio::time::sleep(POLL).await;
                        continue;
                    }
                    Some(guard)
                } else {
                    None
                };
                info!(%node, step = m.step.as_str(), task = %cycle.task, "disruption: recording the next step");
                let body = json!({"metadata": {"resourceVersion": rv,
                    "annotations": {MAINTENANCE_ANNOTATION: m.to_annotation()}}});
                if !patch(&nodes, node, body).await? {
                    continue;
                }
                // The owner's status shows the new step now, not at its next reconcile.
                wake_owner(ctx, owner);
                let note = match (&m.failure, m.step) {
                    (Some(f), _) => format!("node {node}: {f}; handing it back"),
                    (None, s) => format!("node {node}: {}", s.as_str()),
                };
                let kind = if m.failure.is_some() {
                    EventType::Warning
                } else {
                    EventType::Normal
                };
                ctx.events
                    .publish(owner, kind, EVENT_REASON, Some(node), note)
                    .await;
            }
            Decision::Cordon | Decision::Uncordon => {
                let cordon = decision == Decision::Cordon;
                info!(%node, cordon, "disruption: setting spec.unschedulable");
                // A conflict writes nothing; the next look decides again.
                let body =
                    json!({"metadata": {"resourceVersion": rv}, "spec": {"unschedulable": cordon}});
                let _written = patch(&nodes, node, body).await?;
            }
            Decision::Evict(pods) => {
                for p in pods {
                    let none = Labels::new();
                    let asked = evict(ctx, &evictor, &p, labels.get(&p).unwrap_or(&none));
                    let why = match tokio::time::timeout(API_TIMEOUT, asked).await {
                        Ok(Ok(())) => continue,
                        Ok(Err(why)) => why,
                        Err(_) => format!("no answer from the Eviction API in {API_TIMEOUT:?}"),
                    };
                    info!(%node, pod = %p, %why, "disruption: not evicted yet");
                    blocked.insert(p, why);
                }
                tokio::time::sleep(POLL).await;
            }
            Decision::Apply => match apply.take() {
                Some(f) => outcome = Some(f().await),
                None => {
                    outcome = Some(Err(CallError::Disruption(
                        "the call was already sent by this process".into(),
                    )))
                }
            },
            Decision::Reboot(reason) => {
                let id = format!("{}/{}", cycle.uid, cycle.generation);
                match reboot(ctx, &key, &id, &reason).await {
                    Ok(()) => {
                        reboot_sent = true;
                        ctx.events
                            .publish(
                                owner,
                                EventType::Normal,
                                EVENT_REASON,
                                Some(node),
                                format!("node {node}: reboot asked for ({reason})"),
                            )
                            .await;
                    }
                    Err(e) => {
                        warn!(%node, error = %e, "disruption: the reboot request failed; asking again")
                    }
                }
                tokio::time::sleep(POLL).await;
            }
            Decision::Wait(why) => {
                tracing::debug!(%node, %why, "disruption: waiting");
                tokio::time::sleep(POLL).await;
            }
            Decision::Finish(last) => {
                if !patch(
                    &nodes,
                    node,
                    json!({"metadata": {"resourceVersion": rv, "annotations": {
                        MAINTENANCE_ANNOTATION: null,
                        LAST_CYCLE_ANNOTATION: serde_json::to_string(&last).unwrap_or_default(),
                    }}}),
                )
                .await?
                {
                    continue;
                }
                ctx.events
                    .publish(
                        owner,
                        if last.failure.is_some() {
                            EventType::Warning
                        } else {
                            EventType::Normal
                        },
                        EVENT_REASON,
                        Some(node),
                        format!("node {node}: cycle ended: {}", last.summary),
                    )
                    .await;
                return finish(outcome, last);
            }
            Decision::Done(last) => return finish(outcome, last),
        }
    }
}

/// Wakes the reconcile of `owner` when it is a HostTask, so that its status shows
/// where the node's cycle is (a HostState's status says only whether it waits for a
/// window, which its own requeue covers).
fn wake_owner<K: kube::Resource<DynamicType = ()>>(ctx: &Context, owner: &K) {
    use hostplug_api::crd::HostTask;
    if K::kind(&()) != <HostTask as kube::Resource>::kind(&()) {
        return;
    }
    let Some(name) = owner.meta().name.as_deref() else {
        return;
    };
    let mut task = kube::runtime::reflector::ObjectRef::<HostTask>::new(name);
    if let Some(ns) = owner.meta().namespace.as_deref() {
        task = task.within(ns);
    }
    let _ = ctx.wake.unbounded_send(task);
}

/// Serialises the first mark of every cycle in this process (the leader): the count of
/// marks and the write that adds one happen under it, so the fleet-wide budget is never
/// exceeded by two tasks at once. A new leader counts the marks its predecessor wrote.
static BUDGET_LOCK: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Why `node` may not begin its cycle now, when the other nodes in a cycle (a mark on
/// the Node, read from the API server, not the cache) use the whole budget.
async fn budget_full(ctx: &Context, node: &str) -> Result<Option<String>, CallError> {
    let nodes: Api<Node> = Api::all(ctx.client.clone());
    let list = nodes
        .list(&ListParams::default())
        .await
        .map_err(failed("listing the Nodes for the disruption budget", node))?;
    let held: Vec<String> = list
        .items
        .iter()
        .filter(|n| n.name_any() != node && n.annotations().contains_key(MAINTENANCE_ANNOTATION))
        .map(ResourceExt::name_any)
        .collect();
    let budget = usize::from(ctx.config.max_disrupted_nodes);
    Ok((held.len() >= budget).then(|| {
        format!(
            "{}: {} of {budget} node(s) in a cycle: {}",
            super::BUDGET_WAIT,
            held.len(),
            held.join(", ")
        )
    }))
}

/// The node's result: the call's own (its error, or its success with the cycle's
/// summary in the log tail), or the cycle's failure. A requested reboot the cycle did
/// not do stays in `reboot_required` as the sentence for the node's message.
fn finish(outcome: Option<NodeOutcome>, last: LastCycle) -> NodeOutcome {
    let line = format!("[info] disruption: {}", last.summary);
    match (outcome, last.failure) {
        (Some(Err(e)), _) => Err(e),
        (_, Some(f)) => Err(CallError::Disruption(f)),
        (Some(Ok(mut s)), None) => {
            s.logs.push(line);
            s.reboot_required = last.reboot_note;
            Ok(s)
        }
        (None, None) => Ok(Success {
            changed: last.changed.unwrap_or(false),
            diff: None,
            output: json!({"note": "the call's output was not kept across an operator restart \
                during the node's disruption cycle"}),
            logs: vec![line],
            follow_ups: Vec::new(),
            // Not kept either; the worker still holds the record under the task's
            // identity.
            revert: None,
            reboot_required: last.reboot_note,
        }),
    }
}

/// Patches the Node; `false` when its resourceVersion moved since it was read (the
/// kubelet's heartbeat, another writer): nothing was written, the cycle looks again.
async fn patch(nodes: &Api<Node>, node: &str, body: serde_json::Value) -> Result<bool, CallError> {
    match nodes
        .patch(node, &PatchParams::default(), &Patch::Merge(&body))
        .await
    {
        Ok(_) => Ok(true),
        Err(kube::Error::Api(e)) if e.code == 409 => {
            tracing::debug!(%node, "the node changed since it was read; looking again");
            Ok(false)
        }
        Err(e) => Err(failed("patching", node)(e)),
    }
}

fn is_ready(node: &Node) -> bool {
    node.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

/// The Pods on `node` a drain must evict.
async fn pods_to_evict(ctx: &Context, node: &str) -> Result<Vec<(DrainPod, Labels)>, CallError> {
    let pods: Api<Pod> = Api::all(ctx.client.clone());
    let list = pods
        .list(&ListParams::default().fields(&format!("spec.nodeName={node}")))
        .await
        .map_err(failed("listing the Pods", node))?;
    Ok(list
        .items
        .iter()
        .filter(|p| must_evict(p))
        .map(|p| {
            (
                DrainPod {
                    name: format!("{}/{}", p.namespace().unwrap_or_default(), p.name_any()),
                    terminating: p.metadata.deletion_timestamp.is_some(),
                },
                p.metadata.labels.clone().unwrap_or_default(),
            )
        })
        .collect())
}

/// A Pod's labels.
type Labels = std::collections::BTreeMap<String, String>;

/// Asks the Eviction API to evict `pod` (`<namespace>/<name>`, with `labels`); a refusal
/// is returned as why (the PodDisruptionBudgets that select the Pod, named).
async fn evict(
    ctx: &Context,
    evictor: &kube::Client,
    pod: &str,
    labels: &Labels,
) -> Result<(), String> {
    let (ns, name) = pod.split_once('/').unwrap_or(("", pod));
    let api: Api<Pod> = Api::namespaced(evictor.clone(), ns);
    match api.evict(name, &EvictParams::default()).await {
        Ok(_) => {
            info!(%pod, "disruption: evicted");
            Ok(())
        }
        // Already gone.
        Err(kube::Error::Api(e)) if e.code == 404 => Ok(()),
        Err(kube::Error::Api(e)) if e.code == 429 => {
            let pdbs = budgets_of(ctx, ns, labels).await;
            Err(if pdbs.is_empty() {
                format!("eviction refused: {}", e.message)
            } else {
                format!(
                    "blocked by PodDisruptionBudget {}: {}",
                    pdbs.join(", "),
                    e.message
                )
            })
        }
        Err(e) => Err(format!("eviction failed: {e}")),
    }
}

/// A client for the Eviction API that does not retry a 429: the operator's client
/// retries 429s (transient overload) for minutes, but an eviction's 429 is the
/// PodDisruptionBudget's answer, which the cycle records and asks again after [`POLL`].
async fn eviction_client() -> Result<kube::Client, CallError> {
    let mut config = kube::Config::infer()
        .await
        .map_err(|e| CallError::Disruption(format!("reading the kubeconfig: {e}")))?;
    config.default_retry = false;
    kube::Client::try_from(config)
        .map_err(|e| CallError::Disruption(format!("a client for the Eviction API: {e}")))
}

/// The PodDisruptionBudgets (`<namespace>/<name>`) of namespace `ns` that select a Pod
/// with `labels`.
async fn budgets_of(
    ctx: &Context,
    ns: &str,
    labels: &std::collections::BTreeMap<String, String>,
) -> Vec<String> {
    let api: Api<PodDisruptionBudget> = Api::namespaced(ctx.client.clone(), ns);
    let Ok(list) = api.list(&ListParams::default()).await else {
        return Vec::new();
    };
    list.items
        .into_iter()
        .filter(|b| {
            b.spec
                .as_ref()
                .and_then(|s| s.selector.clone())
                .and_then(|s| Selector::try_from(s).ok())
                .is_some_and(|s| !s.selects_all() && s.matches(labels))
        })
        .map(|b| format!("{ns}/{}", b.name_any()))
        .collect()
}

/// Whether the node's reboot worker answers (`GET /v1/node`) within [`WORKER_WAIT`].
async fn worker_answers(ctx: &Arc<Context>, key: &WorkerKey) -> bool {
    let Ok(lease) = ctx.pool.lease_ready(key, WORKER_WAIT, false).await else {
        return false;
    };
    let Ok(conn) = lease.conn().await else {
        return false;
    };
    match conn.client.node_info().await {
        Ok(info) => {
            tracing::debug!(node = %key.node, boot_id = %info.boot_id, "the worker is back");
            true
        }
        Err(e) => {
            tracing::debug!(node = %key.node, error = %e, "the worker does not answer yet");
            false
        }
    }
}

/// Asks the node's reboot worker to reboot it.
async fn reboot(
    ctx: &Arc<Context>,
    key: &WorkerKey,
    id: &str,
    reason: &str,
) -> Result<(), CallError> {
    let lease = ctx.pool.lease_ready(key, WORKER_WAIT, false).await?;
    let conn = lease.conn().await?;
    let answer = conn
        .client
        .reboot_node(&RebootRequest {
            id: id.to_owned(),
            reason: reason.to_owned(),
        })
        .await?;
    info!(node = %key.node, boot_id = %answer.boot_id, repeated = answer.repeated, "disruption: reboot accepted by the worker");
    Ok(())
}

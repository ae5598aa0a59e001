//! The operator's caches of Nodes and worker Pods: started in one place, before any
//! controller, and read by all of them (node selection, the pool's worker states).
//!
//! Each cache keeps only what the operator reads, so a large cluster costs little
//! memory: a Node keeps its name, labels, annotations, taints, unschedulable flag,
//! conditions, addresses and boot ID (not its images, volumes or managed fields); a worker Pod keeps what the pool
//! reads of it. Node changes that can change what a HostState selects (a node joins,
//! leaves, or its labels change) are announced on a stream.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use futures::StreamExt;
use futures::channel::mpsc::{UnboundedReceiver, UnboundedSender};
use k8s_openapi::api::core::v1::{Node, NodeStatus, NodeSystemInfo, Pod};
use kube::runtime::reflector::{self, Store, store::Writer};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client, ResourceExt};
use tokio::task::JoinHandle;
use tracing::warn;

use crate::pool::WorkerPool;
use hostplug_api::crd::labels;

/// The caches' read sides.
#[derive(Debug, Clone)]
pub struct Caches {
    /// Every Node.
    pub nodes: Store<Node>,
    /// The worker Pods in the operator's namespace.
    pub pods: Store<Pod>,
}

/// The caches' write sides, until [`Writers::run`] starts filling them.
pub struct Writers {
    nodes: Writer<Node>,
    pods: Writer<Pod>,
}

impl std::fmt::Debug for Writers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Writers").finish_non_exhaustive()
    }
}

/// Empty caches: the stores to hand out, and the writers to fill them.
pub fn stores() -> (Caches, Writers) {
    let (pods, pods_writer) = reflector::store();
    let (nodes, nodes_writer) = reflector::store();
    (
        Caches { nodes, pods },
        Writers {
            nodes: nodes_writer,
            pods: pods_writer,
        },
    )
}

/// A Node as the cache keeps it.
fn slim_node(node: &mut Node) {
    node.metadata.managed_fields = None;
    if let Some(spec) = node.spec.as_mut() {
        spec.config_source = None;
        spec.pod_cidrs = None;
    }
    if let Some(status) = node.status.take() {
        node.status = Some(NodeStatus {
            conditions: status.conditions,
            addresses: status.addresses,
            node_info: status.node_info.map(|i| NodeSystemInfo {
                boot_id: i.boot_id,
                ..NodeSystemInfo::default()
            }),
            ..NodeStatus::default()
        });
    }
}

/// A worker Pod as the cache keeps it.
fn slim_pod(pod: &mut Pod) {
    pod.metadata.managed_fields = None;
    pod.metadata.annotations = None;
    if let Some(spec) = pod.spec.as_mut() {
        spec.volumes = None;
        for c in &mut spec.containers {
            // Only the artifact key stays: dispatch reads it to tell whether the worker
            // trusts this process's precompiled artifacts.
            c.env = c.env.take().map(|env| {
                env.into_iter()
                    .filter(|e| e.name == hostplug_api::worker::env::ARTIFACT_KEY)
                    .collect()
            });
            c.volume_mounts = None;
            c.args = None;
            c.command = None;
        }
    }
}

impl Writers {
    /// Starts filling the caches and waits until both hold the cluster's objects. Worker
    /// Pod changes go to `pool`; `node_changes` hears of every node that joins, leaves or
    /// changes its labels. The returned tasks keep the caches until aborted.
    pub async fn run(
        self,
        client: &Client,
        namespace: &str,
        caches: &Caches,
        pool: Arc<WorkerPool>,
        node_changes: UnboundedSender<()>,
    ) -> Vec<JoinHandle<()>> {
        let wc = watcher::Config::default().labels(&format!(
            "app.kubernetes.io/managed-by={},{}={}",
            labels::MANAGED_BY,
            labels::COMPONENT,
            labels::COMPONENT_WORKER
        ));
        let pod_task = tokio::spawn(
            reflector::reflector(
                self.pods,
                watcher(Api::<Pod>::namespaced(client.clone(), namespace), wc)
                    .default_backoff()
                    .modify(slim_pod),
            )
            .touched_objects()
            .for_each(move |p| {
                if let Ok(p) = p {
                    pool.on_pod_event(&p);
                }
                futures::future::ready(())
            }),
        );
        let mut seen: HashMap<String, BTreeMap<String, String>> = HashMap::new();
        let node_task = tokio::spawn(
            reflector::reflector(
                self.nodes,
                watcher(Api::<Node>::all(client.clone()), watcher::Config::default())
                    .default_backoff()
                    .modify(slim_node),
            )
            .for_each(move |ev| {
                let changed = match ev {
                    Ok(watcher::Event::Apply(n) | watcher::Event::InitApply(n)) => {
                        let labels = n.labels().clone();
                        seen.insert(n.name_any(), labels.clone()) != Some(labels)
                    }
                    Ok(watcher::Event::Delete(n)) => seen.remove(&n.name_any()).is_some(),
                    Ok(watcher::Event::InitDone) => true,
                    Ok(watcher::Event::Init) | Err(_) => false,
                };
                if changed {
                    let _ = node_changes.unbounded_send(());
                }
                futures::future::ready(())
            }),
        );
        if caches.pods.wait_until_ready().await.is_err()
            || caches.nodes.wait_until_ready().await.is_err()
        {
            warn!("the Pod or Node cache never filled");
        }
        vec![pod_task, node_task]
    }
}

/// Coalesces node-change notices: the HostState controller needs one reconcile of every
/// state after a burst, not one per node.
pub fn coalesced(rx: UnboundedReceiver<()>) -> impl futures::Stream<Item = ()> {
    rx.ready_chunks(1024).map(|_| ())
}

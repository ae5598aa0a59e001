//! The worker pool: at most one warm worker Pod per node and access profile, shared by
//! every task and state, owned by the operator (by labels, not by owner references).
//!
//! Whoever needs a worker asks the pool: the task controller with [`WorkerPool::ensure`]
//! (its rollout watches the worker's state, and the pool wakes the task when the worker's
//! Pod changes), the HostState controller with [`WorkerPool::lease_ready`], which waits
//! on the worker's state (the Pod cache's events, never a poll) and returns a
//! [`WorkerLease`]. Every call to a worker holds a lease; the pool never removes or
//! replaces a worker while a lease on it lives, and a lease is released when dropped.
//!
//! The pool creates a worker's Secret and Pod in the background (bounded by
//! [`WorkerPool::start_parallel`]). Idle workers are removed after
//! `--worker-idle-seconds`; with 0, each task gets its own workers, removed when it ends
//! ([`WorkerPool::release_task`]). A worker whose Pod died is replaced on the next
//! request; the workers of a deleted node are removed.
//!
//! After an operator restart the pool adopts the worker Pods it finds (their labels say
//! node and profile; their Secret holds the credentials), so a new leader keeps using the
//! warm workers and can ask them for the outcomes of calls in flight. Each worker Pod is
//! labelled with a hash of the Pod the operator made ([`labels::TEMPLATE`]): an adopted
//! worker that differs from what this operator would make now (a new worker image, other
//! settings, an upgraded operator) serves no new call. It is *retiring*: kept while calls
//! to it are in flight, and for [`RETIRE_GRACE`] so that calls of the previous process can
//! be resumed on it, then removed; a fresh worker serves its node and profile instead.
//!
//! A node runs at most `--max-workers-per-node` worker Pods: a new one first replaces the
//! node's least recently used idle worker, and waits while every worker there is busy.

mod lease;
mod pod_state;

pub use lease::{WorkerConn, WorkerLease};
pub use pod_state::pod_state;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use futures::channel::mpsc::UnboundedSender;
use k8s_openapi::api::core::v1::{Node, Pod, Secret};
use kube::api::{DeleteParams, PostParams};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::{Api, Client, ResourceExt};
use tokio::sync::Semaphore;
use tracing::{info, warn};

use crate::client::{CallError, Credentials, WorkerClient};
use crate::resources::{self, WorkerSpec};
use crate::rollout::WorkerState;
use crate::{Error, FIELD_MANAGER, Result};
use hostplug_api::AccessProfile;
use hostplug_api::crd::{HostTask, labels};
use hostplug_api::worker::ArtifactKey;

/// Longest deadline a pooled worker accepts for one invocation: 24 h, the CRD's upper
/// bound of `timeoutSeconds`, since one worker serves every task of its node and profile.
pub const MAX_INVOKE_TIMEOUT_MS: u64 = 24 * 3600 * 1000;

/// Shortest time a worker stays up on its own without a request: 10 minutes. With
/// per-task workers (`--worker-idle-seconds 0`) the operator removes them when their task
/// ends; this bounds those it cannot remove (operator down) without cutting into the
/// pauses between a task's calls.
pub const MIN_WORKER_IDLE_EXIT: Duration = Duration::from_secs(600);

/// How long a worker with no request stays up on its own, when the operator does not
/// remove it (operator down, a removal lost): twice the pool's idle time plus a minute,
/// at least [`MIN_WORKER_IDLE_EXIT`]. While the operator runs, its own removal (at the
/// idle time, checked every [`MAX_SWEEP_INTERVAL`] at most) always comes first; the
/// worker's exit only bounds the workers nobody removes.
pub fn worker_idle_exit(idle: Duration) -> Duration {
    (idle.saturating_mul(2) + Duration::from_secs(60)).max(MIN_WORKER_IDLE_EXIT)
}

/// Shortest pause between two sweeps for idle and orphaned workers: 200 ms, so a test's
/// short idle time is honoured closely without spinning.
const MIN_SWEEP_INTERVAL: Duration = Duration::from_millis(200);
/// Longest pause between two sweeps: 10 s; a worker lingers at most that long past its
/// idle time.
const MAX_SWEEP_INTERVAL: Duration = Duration::from_secs(10);

/// How long a retiring worker (one an earlier operator made differently) stays after its
/// last call: 15 s, time for the new leader's first reconciles to resume the calls the
/// previous process left in flight on it, which only that worker can answer.
pub const RETIRE_GRACE: Duration = Duration::from_secs(15);

/// How long a worker must have gone unasked before it is removed to make room on its
/// node: 1 s, so a worker that just became Ready for someone is not taken away before
/// their call starts.
const MIN_EVICT_IDLE: Duration = Duration::from_secs(1);

/// Default of `--max-workers-per-node`: 12, every access profile at the default port
/// (/etc none, read or write × docker or not × containerd or not) at once; ports chosen
/// per task make more, and the cap keeps them from piling up as root Pods on a node.
pub const DEFAULT_MAX_WORKERS_PER_NODE: u16 = 12;

/// Which worker serves a call.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct WorkerKey {
    /// Node.
    pub node: String,
    /// Access profile.
    pub profile: AccessProfile,
    /// Worker port.
    pub port: i32,
    /// With `--worker-idle-seconds 0`: the task (name) the worker belongs to.
    pub task: Option<String>,
}

struct PoolWorker {
    pod: String,
    last_used: Instant,
    calls: usize,
    /// Created by this process and not yet seen in the Pod cache.
    creating: bool,
    /// Its Pod was Ready once: a later failure means it died (replace it), not that it
    /// cannot start (then its nodes fail with the reason instead of a loop of new Pods).
    was_ready: bool,
    /// Tasks to wake when the Pod changes.
    waiters: HashSet<ObjectRef<HostTask>>,
    /// Told whenever the Pod changes (and dropped with the worker), for those waiting
    /// on a lease.
    changed: tokio::sync::watch::Sender<()>,
}

impl PoolWorker {
    fn new(pod: String, creating: bool) -> Self {
        Self {
            pod,
            last_used: Instant::now(),
            calls: 0,
            creating,
            was_ready: !creating,
            waiters: HashSet::new(),
            changed: tokio::sync::watch::channel(()).0,
        }
    }
}

#[derive(Default)]
struct PoolState {
    /// The worker serving each key.
    workers: HashMap<WorkerKey, PoolWorker>,
    /// Workers that serve no new call (made differently than this process would), by
    /// Pod name, with their key.
    retiring: HashMap<String, (WorkerKey, PoolWorker)>,
    by_pod: HashMap<String, WorkerKey>,
    conns: HashMap<String, Arc<WorkerConn>>,
    /// Tasks waiting for room on a full node, first come first served, each with when
    /// it last asked.
    room_waiters: HashMap<String, std::collections::VecDeque<(ObjectRef<HostTask>, Instant)>>,
}

/// How long the task first in line for room on a node keeps its place without asking
/// again: 10 s. A woken task asks within a reconcile (milliseconds); one that does not
/// (deleted, finished, its node gone) must not block the line for the others.
const ROOM_TURN: Duration = Duration::from_secs(10);

impl PoolState {
    /// The worker whose Pod is `pod`, serving or retiring.
    fn worker_mut(&mut self, pod: &str) -> Option<&mut PoolWorker> {
        if let Some(w) = self
            .by_pod
            .get(pod)
            .and_then(|k| self.workers.get_mut(k))
            .filter(|w| w.pod == pod)
        {
            return Some(w);
        }
        self.retiring.get_mut(pod).map(|(_, w)| w)
    }

    /// Worker Pods on `node`, serving and retiring.
    fn on_node(&self, node: &str) -> usize {
        self.workers.keys().filter(|k| k.node == node).count()
            + self
                .retiring
                .values()
                .filter(|(k, _)| k.node == node)
                .count()
    }
}

/// The pool; shared by all reconciles.
pub struct WorkerPool {
    client: Client,
    namespace: String,
    image: String,
    containerd_socket: String,
    docker_socket: String,
    idle: Duration,
    max_per_node: usize,
    artifact_key: ArtifactKey,
    starts: Arc<Semaphore>,
    pods: Store<Pod>,
    nodes: Store<Node>,
    state: Mutex<PoolState>,
    wake: UnboundedSender<ObjectRef<HostTask>>,
}

impl std::fmt::Debug for WorkerPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WorkerPool")
            .field("namespace", &self.namespace)
            .field("idle", &self.idle)
            .finish_non_exhaustive()
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // Every critical section is a few map operations that leave the maps consistent.
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Settings of the pool.
#[derive(Debug, Clone)]
pub struct PoolConfig {
    /// Namespace of the worker Pods.
    pub namespace: String,
    /// Worker image.
    pub image: String,
    /// How long an unused worker stays; zero: per-task workers.
    pub idle: Duration,
    /// Worker Pods being created at once.
    pub start_parallel: usize,
    /// The containerd socket on the nodes (hostPath of the `containerd` capability).
    pub containerd_socket: String,
    /// The Docker API socket on the nodes (hostPath of the `docker` capability).
    pub docker_socket: String,
    /// Worker Pods per node at most.
    pub max_per_node: usize,
    /// This process's public key for precompiled artifacts, rendered into every worker
    /// Pod it creates (see [`WorkerPool::template`] for why it is not in the template).
    pub artifact_key: ArtifactKey,
}

impl WorkerPool {
    /// A pool over the worker Pod and Node caches; `wake` reaches the task controller.
    pub fn new(
        client: Client,
        config: PoolConfig,
        pods: Store<Pod>,
        nodes: Store<Node>,
        wake: UnboundedSender<ObjectRef<HostTask>>,
    ) -> Self {
        Self {
            client,
            namespace: config.namespace,
            image: config.image,
            containerd_socket: config.containerd_socket,
            docker_socket: config.docker_socket,
            idle: config.idle,
            max_per_node: config.max_per_node.max(1),
            artifact_key: config.artifact_key,
            starts: Arc::new(Semaphore::new(config.start_parallel.max(1))),
            pods,
            nodes,
            state: Mutex::new(PoolState::default()),
            wake,
        }
    }

    /// Whether each task gets its own workers (`--worker-idle-seconds 0`).
    pub fn per_task(&self) -> bool {
        self.idle.is_zero()
    }

    /// Worker Pods being created at once.
    pub fn start_parallel(&self) -> usize {
        self.starts.available_permits()
    }

    fn pod(&self, name: &str) -> Option<Arc<Pod>> {
        self.pods.get(&ObjectRef::new(name).within(&self.namespace))
    }

    /// Adopts the worker Pods in the cache (after a restart), so they are reused and
    /// swept like the ones this process made; those made differently than this process
    /// would make them now retire.
    pub fn adopt_existing(&self) {
        let mut st = lock(&self.state);
        for pod in self.pods.state() {
            let Some(name) = pod.metadata.name.clone() else {
                continue;
            };
            if st.by_pod.contains_key(&name) || pod.metadata.deletion_timestamp.is_some() {
                continue;
            }
            let l = pod.labels();
            let (Some(node), Some(profile)) = (
                pod.spec.as_ref().and_then(|s| s.node_name.clone()),
                l.get(labels::PROFILE)
                    .and_then(|p| AccessProfile::from_label(p)),
            ) else {
                continue;
            };
            let port = pod
                .spec
                .as_ref()
                .and_then(|s| s.containers.first())
                .and_then(|c| c.ports.as_ref()?.first().map(|p| p.container_port))
                .unwrap_or(8443);
            let key = WorkerKey {
                node,
                profile,
                port,
                task: l.get(labels::TASK).cloned(),
            };
            let current = l.get(labels::TEMPLATE) == Some(&self.template(&key));
            st.by_pod.insert(name.clone(), key.clone());
            if current && !st.workers.contains_key(&key) {
                info!(pod = %name, ?key, "adopting a worker");
                st.workers.insert(key, PoolWorker::new(name, false));
            } else {
                info!(pod = %name, ?key, "adopting a worker to retire: made differently than this operator makes them");
                st.retiring
                    .insert(name.clone(), (key, PoolWorker::new(name, false)));
            }
        }
    }

    /// The worker serving `key`, if there is one (never creates one); marks it used and
    /// `waiter` as waiting on it.
    pub fn current(&self, key: &WorkerKey, waiter: &ObjectRef<HostTask>) -> Option<String> {
        let mut st = lock(&self.state);
        let w = st.workers.get_mut(key)?;
        w.last_used = Instant::now();
        if !w.waiters.contains(waiter) {
            w.waiters.insert(waiter.clone());
        }
        Some(w.pod.clone())
    }

    /// The worker serving `key`, created when there is none (or it died); `waiter` is
    /// woken when its Pod changes. Returns the Pod name, or, when the node already runs
    /// `--max-workers-per-node` busy workers, why it must wait (`waiter` is woken when
    /// one is free).
    pub fn ensure(
        self: &Arc<Self>,
        key: &WorkerKey,
        waiter: Option<ObjectRef<HostTask>>,
    ) -> Result<String, String> {
        let mut st = lock(&self.state);
        if let Some(w) = st.workers.get_mut(key) {
            let dead = !w.creating
                && w.calls == 0
                && match self.state_of_pod(&w.pod, false) {
                    WorkerState::Gone => true,
                    // A Pod that ended (OOM-killed, its node rebooted: worker Pods are
                    // never restarted in place) is dead whether or not it was Ready; one
                    // that never started stays, so that its node fails naming why.
                    WorkerState::Broken(_) => w.was_ready || self.pod_ended(&w.pod),
                    WorkerState::Ready | WorkerState::Starting(_) => false,
                };
            if !dead {
                w.last_used = Instant::now();
                w.waiters.extend(waiter);
                return Ok(w.pod.clone());
            }
            let old = w.pod.clone();
            info!(pod = %old, node = %key.node, "replacing a dead worker");
            if let Some(old) = remove(&mut st, key) {
                self.spawn_delete(old);
            }
        }
        // On a full node, the least recently used idle worker makes room; it is deleted
        // before the new one is created, so the node never runs more. Tasks waiting for
        // room take it in the order they came.
        let mut make_room = None;
        if st.on_node(&key.node) >= self.max_per_node {
            let line = st.room_waiters.entry(key.node.clone()).or_default();
            while line
                .front()
                .is_some_and(|(_, asked)| asked.elapsed() > ROOM_TURN)
            {
                line.pop_front();
            }
            if let Some(w) = &waiter {
                match line.iter_mut().find(|(t, _)| t == w) {
                    Some(entry) => entry.1 = Instant::now(),
                    None => line.push_back((w.clone(), Instant::now())),
                }
            }
            let my_turn = match &waiter {
                Some(w) => line.front().is_some_and(|(t, _)| t == w),
                None => line.is_empty(),
            };
            let victim = if my_turn {
                self.evictable(&st, &key.node)
            } else {
                None
            };
            match victim {
                Some(victim) => {
                    if let Some(w) = &waiter
                        && let Some(line) = st.room_waiters.get_mut(&key.node)
                    {
                        line.retain(|(t, _)| t != w);
                    }
                    if let Some(pod) = remove_pod(&mut st, &victim) {
                        info!(pod = %pod, node = %key.node, "removing an idle worker to make room on its node");
                        make_room = Some(pod);
                    }
                }
                None => {
                    let ahead = waiter.as_ref().map_or(0, |w| {
                        st.room_waiters
                            .get(&key.node)
                            .and_then(|line| line.iter().position(|(t, _)| t == w))
                            .unwrap_or(0)
                    });
                    return Err(format!(
                        "node {} runs {} worker Pods, the most --max-workers-per-node allows; \
                         waiting for one to be free ({ahead} tasks ahead)",
                        key.node,
                        st.on_node(&key.node)
                    ));
                }
            }
        }
        let suffix: u32 = rand::random();
        let name = resources::child_name(
            "hpw",
            &format!("{}-{}-{suffix:08x}", key.node, key.profile.label()),
        );
        st.by_pod.insert(name.clone(), key.clone());
        st.workers.insert(
            key.clone(),
            PoolWorker {
                waiters: waiter.into_iter().collect(),
                ..PoolWorker::new(name.clone(), true)
            },
        );
        drop(st);
        let pool = Arc::clone(self);
        let key = key.clone();
        let pod = name.clone();
        tokio::spawn(async move {
            if let Some(old) = make_room {
                delete_worker(&pool.client, &pool.namespace, &old).await;
            }
            let permit = Arc::clone(&pool.starts).acquire_owned().await;
            let created = pool.create(&key, &pod).await;
            drop(permit);
            let waiters = {
                let mut st = lock(&pool.state);
                let waiters = match st.workers.get(&key) {
                    Some(w) if w.pod == pod => w.waiters.iter().cloned().collect(),
                    _ => Vec::new(),
                };
                if let Err(e) = &created {
                    warn!(pod = %pod, error = %e, "creating a worker failed");
                    st.workers.remove(&key);
                    st.by_pod.remove(&pod);
                }
                waiters
            };
            if created.is_err() {
                for w in waiters {
                    let _ = pool.wake.unbounded_send(w);
                }
            }
        });
        Ok(name)
    }

    /// The Pod of `node`'s least recently used worker that no call uses and nobody
    /// waits on (retiring ones past their grace first), if any.
    fn evictable(&self, st: &PoolState, node: &str) -> Option<String> {
        let retiring = st
            .retiring
            .iter()
            .filter(|(_, (k, w))| k.node == node && w.calls == 0)
            .filter(|(_, (_, w))| w.last_used.elapsed() > RETIRE_GRACE)
            .map(|(pod, _)| pod.clone())
            .next();
        retiring.or_else(|| {
            st.workers
                .iter()
                .filter(|(k, w)| k.node == node && w.calls == 0 && !w.creating)
                // Nobody waits on it (a task whose call is about to start does) and it
                // was not just asked for (a state's lease about to be taken).
                .filter(|(_, w)| w.waiters.is_empty() && w.last_used.elapsed() > MIN_EVICT_IDLE)
                .min_by_key(|(_, w)| w.last_used)
                .map(|(_, w)| w.pod.clone())
        })
    }

    /// A hash of the Pod this process makes for `key` (image, settings, mounts, security
    /// context: everything but the name and the artifact key), the [`labels::TEMPLATE`]
    /// label of its workers.
    ///
    /// The artifact key is left out: every operator process makes a new one, so with it
    /// every restart (or new leader) would retire every worker. A worker adopted from an
    /// earlier process keeps that process's key; it refuses this process's precompiled
    /// artifacts, so dispatch sends it modules, which it compiles itself
    /// (`dispatch::send`). Slower for a new plugin on such a worker, never wrong.
    pub fn template(&self, key: &WorkerKey) -> String {
        template_hash(self.worker_spec(key, "hostplug-worker", BTreeMap::new()))
    }

    fn worker_spec<'a>(
        &'a self,
        key: &'a WorkerKey,
        name: &'a str,
        labels: BTreeMap<String, String>,
    ) -> WorkerSpec<'a> {
        WorkerSpec {
            name,
            namespace: &self.namespace,
            labels,
            node: &key.node,
            image: &self.image,
            port: key.port,
            profile: key.profile,
            node_containerd_socket: &self.containerd_socket,
            node_docker_socket: &self.docker_socket,
            max_invoke_timeout_ms: MAX_INVOKE_TIMEOUT_MS,
            idle_exit_ms: u64::try_from(worker_idle_exit(self.idle).as_millis())
                .unwrap_or(u64::MAX),
            artifact_key: Some(self.artifact_key),
        }
    }

    async fn create(&self, key: &WorkerKey, name: &str) -> Result<()> {
        let mut labels = resources::worker_labels(&key.node, &key.profile.label());
        if let Some(task) = &key.task {
            labels.insert(labels::TASK.to_owned(), resources::label_value(task));
        }
        labels.insert(labels::TEMPLATE.to_owned(), self.template(key));
        let spec = self.worker_spec(key, name, labels);
        let creds = Credentials::generate(name)?;
        let pp = PostParams {
            field_manager: Some(FIELD_MANAGER.into()),
            ..PostParams::default()
        };
        let secrets: Api<Secret> = Api::namespaced(self.client.clone(), &self.namespace);
        secrets
            .create(
                &pp,
                &resources::secret(&spec, &creds.token, &creds.cert_pem, &creds.key_pem),
            )
            .await
            .map_err(Error::kube(format!("creating Secret {name}")))?;
        let pods: Api<Pod> = Api::namespaced(self.client.clone(), &self.namespace);
        pods.create(&pp, &resources::pod(&spec))
            .await
            .map_err(Error::kube(format!("creating Pod {name}")))?;
        info!(pod = %name, node = %key.node, profile = %key.profile.label(), "worker created");
        Ok(())
    }

    fn spawn_delete(&self, name: String) {
        let client = self.client.clone();
        let ns = self.namespace.clone();
        tokio::spawn(async move {
            delete_worker(&client, &ns, &name).await;
        });
    }

    /// Forgets the worker of `key` if its Pod is `pod` and no call holds it, and deletes
    /// the Pod: it cannot start (a node failed on it), and the next need makes a new one.
    pub fn discard(&self, key: &WorkerKey, pod: &str) {
        let mut st = lock(&self.state);
        let idle = st
            .workers
            .get(key)
            .is_some_and(|w| w.pod == pod && w.calls == 0 && !w.creating);
        if idle && let Some(old) = remove(&mut st, key) {
            drop(st);
            info!(pod = %old, node = %key.node, "discarding a worker that cannot start");
            self.spawn_delete(old);
        }
    }

    /// Whether the worker Pod `name` ended (phase `Failed` or `Succeeded`).
    fn pod_ended(&self, name: &str) -> bool {
        self.pod(name).is_some_and(|p| {
            p.status
                .as_ref()
                .and_then(|s| s.phase.as_deref())
                .is_some_and(|phase| phase == "Failed" || phase == "Succeeded")
        })
    }

    /// The state of the worker Pod `name` from the cache.
    pub fn worker_state(&self, name: &str) -> WorkerState {
        let creating = lock(&self.state)
            .worker_mut(name)
            .is_some_and(|w| w.creating);
        self.state_of_pod(name, creating)
    }

    fn state_of_pod(&self, name: &str, creating: bool) -> WorkerState {
        match self.pod(name) {
            Some(p) => pod_state(&p),
            None if creating => WorkerState::Starting("the worker Pod is being created".into()),
            None => WorkerState::Gone,
        }
    }

    /// The IP of a Ready worker Pod.
    pub fn pod_ip(&self, name: &str) -> Option<String> {
        self.pod(name)?
            .status
            .as_ref()?
            .pod_ip
            .clone()
            .filter(|ip| !ip.is_empty())
    }

    /// Wakes the tasks waiting on the worker Pod `pod` (a reflector event).
    pub fn on_pod_event(&self, pod: &Pod) {
        let Some(name) = pod.metadata.name.as_deref() else {
            return;
        };
        let mut st = lock(&self.state);
        let Some(w) = st.worker_mut(name) else {
            return;
        };
        w.creating = false;
        if pod_state(pod) == WorkerState::Ready {
            w.was_ready = true;
        }
        w.changed.send_replace(());
        for t in &w.waiters {
            let _ = self.wake.unbounded_send(t.clone());
        }
    }

    /// A task no longer waits on any worker (it finished or went away).
    pub fn forget_waiter(&self, task: &ObjectRef<HostTask>) {
        let mut st = lock(&self.state);
        for w in st.workers.values_mut() {
            w.waiters.remove(task);
        }
    }

    /// A call to `pod` starts: the worker is in use until [`Self::end_call`]. Only
    /// leases call these two, so every begin has its end.
    fn begin_call(&self, pod: &str) {
        if let Some(w) = lock(&self.state).worker_mut(pod) {
            w.calls += 1;
            w.last_used = Instant::now();
        }
    }

    /// A call to `pod` ended.
    fn end_call(&self, pod: &str) {
        let mut st = lock(&self.state);
        let Some(w) = st.worker_mut(pod) else {
            return;
        };
        w.calls = w.calls.saturating_sub(1);
        w.last_used = Instant::now();
        if w.calls == 0
            && let Some(node) = st.by_pod.get(pod).map(|k| k.node.clone())
        {
            // A worker free on a full node: whoever waits for room asks again.
            if let Some(line) = st.room_waiters.get_mut(&node) {
                for (t, asked) in line.iter_mut() {
                    *asked = Instant::now();
                    let _ = self.wake.unbounded_send(t.clone());
                }
            }
        }
    }

    /// The connection to worker `pod` (credentials read from its Secret once).
    async fn conn(&self, pod: &str, port: i32) -> Result<Arc<WorkerConn>, CallError> {
        if let Some(c) = lock(&self.state).conns.get(pod) {
            return Ok(Arc::clone(c));
        }
        let ip = self
            .pod_ip(pod)
            .ok_or_else(|| CallError::Unreachable(format!("worker Pod {pod} has no IP")))?;
        let secrets: Api<Secret> = Api::namespaced(self.client.clone(), &self.namespace);
        let secret = secrets
            .get_opt(pod)
            .await
            .map_err(|e| CallError::Worker(format!("reading the worker's Secret: {e}")))?;
        let creds = secret
            .and_then(|s| {
                let data = s.data?;
                let get = |k: &str| {
                    data.get(k)
                        .and_then(|b| String::from_utf8(b.0.clone()).ok())
                };
                Some(Credentials {
                    token: get(hostplug_api::worker::secret_keys::TOKEN)?,
                    cert_pem: get(hostplug_api::worker::secret_keys::CERT)?,
                    key_pem: String::new(),
                })
            })
            .ok_or_else(|| {
                CallError::Worker("the worker's Secret is missing or incomplete".into())
            })?;
        let client =
            WorkerClient::new(&ip, port, &creds).map_err(|e| CallError::Worker(e.to_string()))?;
        let conn = Arc::new(WorkerConn::new(client));
        lock(&self.state)
            .conns
            .insert(pod.to_owned(), Arc::clone(&conn));
        Ok(conn)
    }

    /// Removes the per-task workers of `task` (`--worker-idle-seconds 0`).
    pub fn release_task(&self, task: &str) {
        let gone: Vec<String> = {
            let mut st = lock(&self.state);
            let keys: Vec<WorkerKey> = st
                .workers
                .iter()
                .filter(|(k, w)| k.task.as_deref() == Some(task) && w.calls == 0)
                .map(|(k, _)| k.clone())
                .collect();
            keys.iter().filter_map(|k| remove(&mut st, k)).collect()
        };
        for pod in gone {
            info!(pod = %pod, %task, "removing the task's worker");
            self.spawn_delete(pod);
        }
    }

    /// One sweep: removes workers idle for longer than the idle time, workers of nodes
    /// that no longer exist, and dead workers nobody uses.
    pub fn sweep(&self) {
        let nodes: HashSet<String> = self.nodes.state().iter().map(|n| n.name_any()).collect();
        let gone: Vec<(String, &'static str)> = {
            let mut st = lock(&self.state);
            let keys: Vec<(WorkerKey, &'static str)> = st
                .workers
                .iter()
                .filter(|(_, w)| w.calls == 0 && !w.creating)
                .filter_map(|(k, w)| {
                    if !nodes.contains(&k.node) {
                        Some((k.clone(), "its node is gone"))
                    } else if k.task.is_none() && w.last_used.elapsed() > self.idle {
                        Some((k.clone(), "idle"))
                    } else if matches!(
                        self.state_of_pod(&w.pod, false),
                        WorkerState::Broken(_) | WorkerState::Gone
                    ) && w.last_used.elapsed() > MAX_SWEEP_INTERVAL
                    {
                        Some((k.clone(), "its Pod died"))
                    } else {
                        None
                    }
                })
                .collect();
            let mut gone: Vec<(String, &'static str)> = keys
                .iter()
                .filter_map(|(k, why)| remove(&mut st, k).map(|p| (p, *why)))
                .collect();
            let retired: Vec<String> = st
                .retiring
                .iter()
                .filter(|(_, (_, w))| w.calls == 0 && w.last_used.elapsed() > RETIRE_GRACE)
                .map(|(pod, _)| pod.clone())
                .collect();
            for pod in retired {
                if let Some(pod) = remove_pod(&mut st, &pod) {
                    gone.push((pod, "made differently than this operator makes workers"));
                }
            }
            gone
        };
        for (pod, why) in gone {
            info!(pod = %pod, reason = why, "removing a worker");
            self.spawn_delete(pod);
        }
    }

    /// Sweeps until the process ends.
    pub async fn run_sweeper(self: Arc<Self>) {
        let every = (self.idle / 2).clamp(MIN_SWEEP_INTERVAL, MAX_SWEEP_INTERVAL);
        loop {
            tokio::time::sleep(every).await;
            self.sweep();
        }
    }

    /// Pod names of the pool (serving and retiring) with their nodes.
    pub fn pods(&self) -> BTreeMap<String, String> {
        let st = lock(&self.state);
        st.workers
            .iter()
            .map(|(k, w)| (w.pod.clone(), k.node.clone()))
            .chain(
                st.retiring
                    .iter()
                    .map(|(p, (k, _))| (p.clone(), k.node.clone())),
            )
            .collect()
    }

    /// A retiring worker of `key` that is Ready: the one an earlier operator process sent
    /// its calls to, which alone can answer them when they are resumed.
    pub(crate) fn retiring_ready(&self, key: &WorkerKey) -> Option<String> {
        let pods: Vec<String> = lock(&self.state)
            .retiring
            .iter()
            .filter(|(_, (k, _))| k == key)
            .map(|(p, _)| p.clone())
            .collect();
        pods.into_iter()
            .find(|p| self.state_of_pod(p, false) == WorkerState::Ready)
    }
}

fn remove(st: &mut PoolState, key: &WorkerKey) -> Option<String> {
    let w = st.workers.remove(key)?;
    st.by_pod.remove(&w.pod);
    st.conns.remove(&w.pod);
    Some(w.pod)
}

/// Removes the worker whose Pod is `pod`, serving or retiring.
fn remove_pod(st: &mut PoolState, pod: &str) -> Option<String> {
    if let Some((_, w)) = st.retiring.remove(pod) {
        st.by_pod.remove(&w.pod);
        st.conns.remove(&w.pod);
        return Some(w.pod);
    }
    let key = st.by_pod.get(pod)?.clone();
    remove(st, &key)
}

async fn delete_worker(client: &Client, ns: &str, name: &str) {
    let dp = DeleteParams::background();
    let pods: Api<Pod> = Api::namespaced(client.clone(), ns);
    let secrets: Api<Secret> = Api::namespaced(client.clone(), ns);
    for r in [
        pods.delete(name, &dp).await.map(|_| ()),
        secrets.delete(name, &dp).await.map(|_| ()),
    ] {
        match r {
            Ok(()) => {}
            Err(kube::Error::Api(e)) if e.code == 404 => {}
            Err(e) => warn!(pod = %name, error = %e, "deleting a worker failed"),
        }
    }
}

/// The [`WorkerPool::template`] of the Pod `spec` makes: a hash of its spec without the
/// artifact key.
fn template_hash(mut spec: WorkerSpec<'_>) -> String {
    use sha2::{Digest as _, Sha256};
    spec.artifact_key = None;
    let pod = resources::pod(&spec);
    let text = serde_json::to_vec(&pod.spec).unwrap_or_default();
    hex::encode(&Sha256::digest(&text)[..8])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_template_ignores_the_artifact_key_and_nothing_else() {
        let spec = |image, key: Option<[u8; 32]>| WorkerSpec {
            name: "w",
            namespace: "hostplug-system",
            labels: BTreeMap::new(),
            node: "node1",
            image,
            port: 8443,
            profile: AccessProfile::default(),
            node_containerd_socket: "/run/containerd/containerd.sock",
            node_docker_socket: "/var/run/docker.sock",
            max_invoke_timeout_ms: MAX_INVOKE_TIMEOUT_MS,
            idle_exit_ms: 660_000,
            artifact_key: key.map(ArtifactKey::from_bytes),
        };
        let before_restart = template_hash(spec("worker:1", Some([1; 32])));
        assert_eq!(
            template_hash(spec("worker:1", Some([2; 32]))),
            before_restart,
            "a restarted operator (a new key) adopts the workers it finds"
        );
        assert_eq!(template_hash(spec("worker:1", None)), before_restart);
        assert_ne!(
            template_hash(spec("worker:2", Some([1; 32]))),
            before_restart,
            "a new worker image retires them"
        );
        // The key is in the Pod all the same.
        let pod = resources::pod(&spec("worker:1", Some([2; 32])));
        assert_eq!(
            resources::artifact_key(&pod),
            Some(ArtifactKey::from_bytes([2; 32]))
        );
    }

    #[test]
    fn workers_exit_on_their_own_only_after_the_pool_removes_them() {
        for idle in [0, 1, 60, 300, 3600] {
            let idle = Duration::from_secs(idle);
            let exit = worker_idle_exit(idle);
            assert!(exit >= MIN_WORKER_IDLE_EXIT);
            assert!(exit > idle + MAX_SWEEP_INTERVAL, "{idle:?} → {exit:?}");
        }
        assert_eq!(
            worker_idle_exit(Duration::from_secs(300)),
            Duration::from_secs(660)
        );
    }
}

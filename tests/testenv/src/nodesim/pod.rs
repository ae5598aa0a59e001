//! Pods bound to the simulated nodes: the watch, one worker per Pod, and Pod status.
//!
//! The dispatcher watches every Pod and hands those whose `spec.nodeName` is a simulated node
//! to a worker task (keyed by uid). The worker allocates the Pod's address, prepares its
//! volumes, runs init containers in order and then the app containers, writes the status
//! after every change, and on deletion stops the containers and releases the object.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::{
    Container, ContainerState, ContainerStateRunning, ContainerStateTerminated,
    ContainerStateWaiting, ContainerStatus, HostIP, Pod, PodCondition, PodIP, PodStatus,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, DeleteParams, Patch, PatchParams, Preconditions};
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher::{self, Event};
use serde_json::json;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

use super::Runtime;
use super::container::{self, ContainerRef, ContainerUpdate, Outcome, PodContext, Restart};
use super::sandbox::BindMount;
use super::volumes;

/// How often volume setup is retried while a Secret or ConfigMap is missing.
const VOLUME_RETRY: Duration = Duration::from_secs(2);

/// What the dispatcher tells a Pod worker.
#[derive(Clone, Debug)]
enum PodMsg {
    Present(Arc<Pod>),
    Gone,
}

#[derive(Debug)]
struct PodHandle {
    tx: watch::Sender<PodMsg>,
    task: JoinHandle<()>,
}

/// Watches Pods and runs a worker for each Pod bound to a simulated node, until shutdown.
pub(crate) async fn run(rt: Arc<Runtime>) {
    let api: Api<Pod> = Api::all(rt.client.clone());
    let stream = watcher::watcher(api, watcher::Config::default()).default_backoff();
    tokio::pin!(stream);
    let mut pods: HashMap<String, PodHandle> = HashMap::new();
    let mut listed: HashSet<String> = HashSet::new();
    loop {
        let event = tokio::select! {
            () = rt.shutdown.cancelled() => break,
            event = stream.next() => event,
        };
        match event {
            None => break,
            Some(Err(e)) => tracing::warn!(error = %e, "pod watch failed, retrying"),
            Some(Ok(Event::Init)) => listed.clear(),
            Some(Ok(Event::InitApply(pod))) => {
                if let Some(uid) = pod.metadata.uid.clone() {
                    listed.insert(uid);
                }
                apply(&rt, &mut pods, pod);
            }
            Some(Ok(Event::Apply(pod))) => apply(&rt, &mut pods, pod),
            Some(Ok(Event::Delete(pod))) => {
                if let Some(handle) = pod.metadata.uid.as_ref().and_then(|uid| pods.get(uid)) {
                    handle.tx.send_replace(PodMsg::Gone);
                }
            }
            Some(Ok(Event::InitDone)) => {
                for (uid, handle) in &pods {
                    if !listed.contains(uid) {
                        handle.tx.send_replace(PodMsg::Gone);
                    }
                }
            }
        }
        pods.retain(|_, h| !h.task.is_finished() || matches!(*h.tx.borrow(), PodMsg::Present(_)));
    }
    // Shutdown: every worker sees the cancelled token and kills its containers.
    for (_, handle) in pods {
        let _ = handle.task.await;
    }
}

fn apply(rt: &Arc<Runtime>, pods: &mut HashMap<String, PodHandle>, pod: Pod) {
    let Some(node) = pod.spec.as_ref().and_then(|s| s.node_name.as_deref()) else {
        return;
    };
    if !rt.nodes().contains_key(node) {
        return;
    }
    let Some(uid) = pod.metadata.uid.clone() else {
        return;
    };
    let pod = Arc::new(pod);
    if let Some(handle) = pods.get(&uid) {
        handle.tx.send_replace(PodMsg::Present(pod.clone()));
        if !handle.task.is_finished() {
            return;
        }
        // The worker ended but the object is still there (its release failed): start over,
        // the new worker only releases it.
        if pod.metadata.deletion_timestamp.is_none() {
            return;
        }
    }
    let (tx, rx) = watch::channel(PodMsg::Present(pod.clone()));
    let task = tokio::spawn(PodWorker::run(rt.clone(), pod, rx));
    pods.insert(uid, PodHandle { tx, task });
}

/// Events from a Pod's runner to its worker.
#[derive(Debug)]
enum RunnerEvent {
    VolumesFailed(String),
    VolumesReady,
    Initialized,
    InitFailed,
}

/// The status of one container as the worker tracks it.
#[derive(Clone, Debug)]
struct ContainerView {
    name: String,
    image: String,
    state: ContainerState,
    last_state: Option<ContainerState>,
    ready: bool,
    started: Option<bool>,
    runs: i32,
    /// A terminated container that will not run again (restart policy).
    finished: bool,
}

impl ContainerView {
    fn new(container: &Container, reason: &str) -> Self {
        Self {
            name: container.name.clone(),
            image: container.image.clone().unwrap_or_default(),
            state: waiting(reason, None),
            last_state: None,
            ready: false,
            started: Some(false),
            runs: 0,
            finished: false,
        }
    }

    fn apply(&mut self, update: ContainerUpdate, restart: Restart) {
        match update {
            ContainerUpdate::Waiting { reason, message } => {
                if self.state.terminated.is_some() {
                    self.last_state = Some(self.state.clone());
                }
                self.state = waiting(reason, message);
                self.ready = false;
                self.finished = false;
            }
            ContainerUpdate::Running { started_at } => {
                if self.state.terminated.is_some() {
                    self.last_state = Some(self.state.clone());
                }
                self.runs += 1;
                self.state = ContainerState {
                    running: Some(ContainerStateRunning {
                        started_at: Some(Time(started_at)),
                    }),
                    ..ContainerState::default()
                };
                self.finished = false;
            }
            ContainerUpdate::Terminated {
                exit_code,
                signal,
                reason,
                message,
                started_at,
                finished_at,
            } => {
                if self.runs == 0 {
                    // A start error counts as a run for the restart count.
                    self.runs = 1;
                } else if self.state.running.is_none() {
                    self.runs += 1;
                }
                self.state = ContainerState {
                    terminated: Some(ContainerStateTerminated {
                        exit_code,
                        signal,
                        reason: Some(reason.into()),
                        message,
                        started_at: started_at.map(Time),
                        finished_at: Some(Time(finished_at)),
                        container_id: None,
                    }),
                    ..ContainerState::default()
                };
                self.ready = false;
                self.started = Some(false);
                self.finished = match restart {
                    Restart::Always => false,
                    Restart::OnFailure => exit_code == 0,
                    Restart::Never => true,
                };
            }
            ContainerUpdate::Ready(ready) => self.ready = ready && self.state.running.is_some(),
            ContainerUpdate::Started(started) => self.started = Some(started),
        }
    }

    fn exit_code(&self) -> Option<i32> {
        self.state.terminated.as_ref().map(|t| t.exit_code)
    }

    fn status(&self, pod_uid: &str) -> ContainerStatus {
        ContainerStatus {
            name: self.name.clone(),
            image: self.image.clone(),
            image_id: format!("hostplug-nodesim://{}", self.image),
            container_id: (self.runs > 0)
                .then(|| format!("hostplug-nodesim://{pod_uid}/{}/{}", self.name, self.runs)),
            ready: self.ready,
            started: self.started,
            restart_count: (self.runs - 1).max(0),
            state: Some(self.state.clone()),
            last_state: self.last_state.clone(),
            ..ContainerStatus::default()
        }
    }
}

fn waiting(reason: &str, message: Option<String>) -> ContainerState {
    ContainerState {
        waiting: Some(ContainerStateWaiting {
            reason: Some(reason.into()),
            message,
        }),
        ..ContainerState::default()
    }
}

/// One Pod's worker: owns its status and its runner.
struct PodWorker {
    cx: Arc<PodContext>,
    restart: Restart,
    init: Vec<ContainerView>,
    app: Vec<ContainerView>,
    volumes_ready: bool,
    initialized: bool,
    init_failed: bool,
    start_time: Timestamp,
    conditions: BTreeMap<&'static str, (bool, Timestamp, Option<String>)>,
    terminal_phase: Option<&'static str>,
    last_written: Option<serde_json::Value>,
}

impl PodWorker {
    async fn run(rt: Arc<Runtime>, pod: Arc<Pod>, mut rx: watch::Receiver<PodMsg>) {
        let name = pod.metadata.name.clone().unwrap_or_default();
        let namespace = pod.metadata.namespace.clone().unwrap_or_default();
        let uid = pod.metadata.uid.clone().unwrap_or_default();
        let api: Api<Pod> = Api::namespaced(rt.client.clone(), &namespace);
        let spec = pod.spec.clone().unwrap_or_default();
        let node = spec.node_name.clone().unwrap_or_default();
        let host_ip = rt
            .nodes()
            .get(&node)
            .map_or(std::net::Ipv4Addr::LOCALHOST, |n| n.ip);
        let already_terminal = matches!(
            pod.status.as_ref().and_then(|s| s.phase.as_deref()),
            Some("Succeeded" | "Failed")
        );
        if pod.metadata.deletion_timestamp.is_some() || already_terminal {
            // Nothing to run: a Pod deleted before it started, or one a previous simulator
            // finished. Wait for its deletion and release it.
            if pod.metadata.deletion_timestamp.is_none() {
                let _ = rx.wait_for(|m| !matches!(m, PodMsg::Present(p) if p.metadata.deletion_timestamp.is_none())).await;
            }
            if matches!(*rx.borrow(), PodMsg::Present(_)) {
                release(&api, &name, &uid).await;
            }
            return;
        }
        let ip = if spec.host_network == Some(true) {
            Some(host_ip)
        } else {
            rt.next_pod_ip()
        };
        let Some(ip) = ip else {
            tracing::error!(pod = %name, "no Pod address left in the simulator's block");
            return;
        };
        let dir = rt.pod_dir(&uid);
        let hostname = spec
            .hostname
            .clone()
            .unwrap_or_else(|| name.chars().take(63).collect());
        let etc_files = match write_pod_etc(&dir, &hostname, ip) {
            Ok(files) => files,
            Err(e) => {
                tracing::error!(pod = %name, error = %e, "cannot write the Pod's /etc files");
                Vec::new()
            }
        };
        let cx = Arc::new(PodContext {
            rt: rt.clone(),
            pod: pod.clone(),
            name: name.clone(),
            namespace,
            uid: uid.clone(),
            hostname,
            ip,
            host_ip,
            dir: dir.clone(),
            etc_files,
        });
        let has_init = !spec
            .init_containers
            .as_deref()
            .unwrap_or_default()
            .is_empty();
        let app_reason = if has_init {
            "PodInitializing"
        } else {
            "ContainerCreating"
        };
        let mut worker = PodWorker {
            restart: Restart::of_pod(&pod),
            init: spec
                .init_containers
                .iter()
                .flatten()
                .map(|c| ContainerView::new(c, "PodInitializing"))
                .collect(),
            app: spec
                .containers
                .iter()
                .map(|c| ContainerView::new(c, app_reason))
                .collect(),
            cx: cx.clone(),
            volumes_ready: false,
            initialized: !has_init,
            init_failed: false,
            start_time: Timestamp::now(),
            conditions: BTreeMap::new(),
            terminal_phase: None,
            last_written: None,
        };
        worker.write_status(&api).await;

        let (stop_tx, stop_rx) = watch::channel(None::<Duration>);
        let (events_tx, mut events) = mpsc::unbounded_channel();
        let (runner_tx, mut runner_events) = mpsc::unbounded_channel();
        let mut runner = tokio::spawn(run_pod(cx.clone(), events_tx, runner_tx, stop_rx));
        let mut runner_done = false;
        let mut gone = false;
        let grace = loop {
            tokio::select! {
                () = rt.shutdown.cancelled() => {
                    stop_tx.send_replace(Some(Duration::ZERO));
                    if !runner_done {
                        let _ = runner.await;
                    }
                    let _ = std::fs::remove_dir_all(&dir);
                    return;
                }
                changed = rx.changed() => {
                    let msg = if changed.is_ok() { rx.borrow_and_update().clone() } else { PodMsg::Gone };
                    match msg {
                        PodMsg::Gone => { gone = true; break Duration::ZERO; }
                        PodMsg::Present(p) if p.metadata.deletion_timestamp.is_some() => break container::pod_grace(&p),
                        PodMsg::Present(_) => {}
                    }
                }
                Some((which, update)) = events.recv() => {
                    worker.container_update(which, update);
                    while let Ok((which, update)) = events.try_recv() {
                        worker.container_update(which, update);
                    }
                    worker.write_status(&api).await;
                }
                Some(event) = runner_events.recv() => {
                    worker.runner_event(event);
                    worker.write_status(&api).await;
                }
                _ = &mut runner, if !runner_done => { runner_done = true; }
            }
        };
        stop_tx.send_replace(Some(grace));
        if !runner_done {
            let _ = runner.await;
        }
        if !gone {
            release(&api, &name, &uid).await;
        }
        let _ = std::fs::remove_dir_all(&dir);
    }

    fn container_update(&mut self, which: ContainerRef, update: ContainerUpdate) {
        let (views, restart) = if which.init {
            let restart = if self.restart == Restart::Never {
                Restart::Never
            } else {
                Restart::OnFailure
            };
            (&mut self.init, restart)
        } else {
            (&mut self.app, self.restart)
        };
        if let Some(view) = views.get_mut(which.index) {
            view.apply(update, restart);
        }
    }

    fn runner_event(&mut self, event: RunnerEvent) {
        match event {
            RunnerEvent::VolumesFailed(message) => {
                for view in self.init.iter_mut().chain(self.app.iter_mut()) {
                    if view.runs == 0 {
                        let reason = view
                            .state
                            .waiting
                            .as_ref()
                            .and_then(|w| w.reason.clone())
                            .unwrap_or_else(|| "ContainerCreating".into());
                        view.state = waiting(
                            &reason,
                            Some(format!("MountVolume.SetUp failed: {message}")),
                        );
                    }
                }
            }
            RunnerEvent::VolumesReady => {
                self.volumes_ready = true;
                for view in self.init.iter_mut().chain(self.app.iter_mut()) {
                    if let Some(w) = view.state.waiting.as_mut() {
                        w.message = None;
                    }
                }
            }
            RunnerEvent::Initialized => self.initialized = true,
            RunnerEvent::InitFailed => self.init_failed = true,
        }
    }

    fn phase(&self) -> &'static str {
        if let Some(phase) = self.terminal_phase {
            return phase;
        }
        if self.init_failed {
            return "Failed";
        }
        if !self.initialized {
            return "Pending";
        }
        if !self.app.is_empty() && self.app.iter().all(|c| c.finished) {
            return if self.app.iter().all(|c| c.exit_code() == Some(0)) {
                "Succeeded"
            } else {
                "Failed"
            };
        }
        if self.app.iter().any(|c| c.runs > 0) {
            return "Running";
        }
        "Pending"
    }

    fn condition(
        &mut self,
        type_: &'static str,
        status: bool,
        reason: Option<&str>,
    ) -> PodCondition {
        let now = Timestamp::now();
        let entry =
            self.conditions
                .entry(type_)
                .or_insert((status, now, reason.map(str::to_owned)));
        if entry.0 != status {
            *entry = (status, now, reason.map(str::to_owned));
        }
        PodCondition {
            type_: type_.into(),
            status: if status { "True" } else { "False" }.into(),
            last_transition_time: Some(Time(entry.1)),
            reason: if status {
                None
            } else {
                reason.map(str::to_owned)
            },
            ..PodCondition::default()
        }
    }

    fn status(&mut self) -> PodStatus {
        let phase = self.phase();
        if matches!(phase, "Succeeded" | "Failed") {
            self.terminal_phase = Some(phase);
        }
        let terminal = self.terminal_phase.is_some();
        let all_ready = !self.app.is_empty() && self.app.iter().all(|c| c.ready) && !terminal;
        let not_ready_reason = if terminal {
            "PodCompleted"
        } else {
            "ContainersNotReady"
        };
        let conditions = vec![
            self.condition(
                "PodReadyToStartContainers",
                self.volumes_ready && !terminal,
                None,
            ),
            self.condition(
                "Initialized",
                self.initialized,
                Some("ContainersNotInitialized"),
            ),
            self.condition("Ready", all_ready, Some(not_ready_reason)),
            self.condition("ContainersReady", all_ready, Some(not_ready_reason)),
            self.condition("PodScheduled", true, None),
        ];
        let uid = self.cx.uid.clone();
        let ip = self.cx.ip.to_string();
        let host_ip = self.cx.host_ip.to_string();
        PodStatus {
            phase: Some(phase.into()),
            conditions: Some(conditions),
            host_ip: Some(host_ip.clone()),
            host_ips: Some(vec![HostIP { ip: host_ip }]),
            pod_ip: Some(ip.clone()),
            pod_ips: Some(vec![PodIP { ip }]),
            start_time: Some(Time(self.start_time)),
            init_container_statuses: (!self.init.is_empty())
                .then(|| self.init.iter().map(|c| c.status(&uid)).collect()),
            container_statuses: Some(self.app.iter().map(|c| c.status(&uid)).collect()),
            ..PodStatus::default()
        }
    }

    async fn write_status(&mut self, api: &Api<Pod>) {
        let status = self.status();
        let body = match serde_json::to_value(&status) {
            Ok(v) => v,
            Err(e) => {
                tracing::error!(error = %e, "cannot serialise a Pod status");
                return;
            }
        };
        if self.last_written.as_ref() == Some(&body) {
            return;
        }
        match api
            .patch_status(
                &self.cx.name,
                &PatchParams::default(),
                &Patch::Merge(json!({ "status": body })),
            )
            .await
        {
            Ok(_) => self.last_written = Some(body),
            Err(kube::Error::Api(e)) if e.code == 404 => {}
            Err(e) => {
                tracing::warn!(pod = %self.cx.name, error = %e, "cannot write the Pod status")
            }
        }
    }
}

/// Deletes a stopped Pod with grace period 0, as the kubelet does once its containers are gone.
async fn release(api: &Api<Pod>, name: &str, uid: &str) {
    let params = DeleteParams {
        grace_period_seconds: Some(0),
        preconditions: Some(Preconditions {
            uid: Some(uid.to_owned()),
            resource_version: None,
        }),
        ..DeleteParams::default()
    };
    for attempt in 0..5u64 {
        match api.delete(name, &params).await {
            Ok(_) => return,
            Err(kube::Error::Api(e)) if e.code == 404 || e.code == 409 => return,
            Err(e) => {
                tracing::warn!(pod = %name, error = %e, "cannot release the Pod, retrying");
                tokio::time::sleep(Duration::from_millis(200 * (attempt + 1))).await;
            }
        }
    }
}

/// Writes the Pod's `/etc/hosts`, `/etc/hostname` and `/etc/resolv.conf`.
fn write_pod_etc(
    dir: &std::path::Path,
    hostname: &str,
    ip: std::net::Ipv4Addr,
) -> std::io::Result<Vec<BindMount>> {
    let etc = dir.join("etc");
    std::fs::create_dir_all(&etc)?;
    let resolv = std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default();
    let files = [
        (
            "hosts",
            format!(
                "# Kubernetes-managed hosts file (hostplug node simulator).\n127.0.0.1\tlocalhost\n\
                 ::1\tlocalhost ip6-localhost ip6-loopback\n{ip}\t{hostname}\n"
            ),
        ),
        ("hostname", format!("{hostname}\n")),
        ("resolv.conf", resolv),
    ];
    let mut mounts = Vec::new();
    for (name, content) in files {
        let path = etc.join(name);
        std::fs::write(&path, content)?;
        mounts.push(BindMount {
            source: path,
            target: format!("/etc/{name}"),
            read_only: false,
        });
    }
    Ok(mounts)
}

/// Sets up the Pod's volumes, runs its init containers in order and then its containers.
async fn run_pod(
    cx: Arc<PodContext>,
    events: mpsc::UnboundedSender<(ContainerRef, ContainerUpdate)>,
    runner: mpsc::UnboundedSender<RunnerEvent>,
    mut stop: watch::Receiver<Option<Duration>>,
) {
    let node = cx
        .pod
        .spec
        .as_ref()
        .and_then(|s| s.node_name.clone())
        .unwrap_or_default();
    let volumes = loop {
        match volumes::prepare(&cx.rt, &cx.pod, &cx.namespace, &node, &cx.dir).await {
            Ok(v) => break Arc::new(v),
            Err(e) => {
                tracing::info!(pod = %cx.name, error = %e, "volume setup failed, retrying");
                let _ = runner.send(RunnerEvent::VolumesFailed(e.to_string()));
                if container::sleep_or_stop(&mut stop, VOLUME_RETRY).await {
                    return;
                }
            }
        }
    };
    let _ = runner.send(RunnerEvent::VolumesReady);
    let spec = cx.pod.spec.clone().unwrap_or_default();
    let restart = Restart::of_pod(&cx.pod);
    let init_restart = if restart == Restart::Never {
        Restart::Never
    } else {
        Restart::OnFailure
    };
    for (index, c) in spec
        .init_containers
        .unwrap_or_default()
        .into_iter()
        .enumerate()
    {
        let which = ContainerRef { init: true, index };
        match container::supervise(
            cx.clone(),
            volumes.clone(),
            which,
            c,
            init_restart,
            events.clone(),
            stop.clone(),
        )
        .await
        {
            Outcome::Succeeded => {}
            Outcome::Failed => {
                let _ = runner.send(RunnerEvent::InitFailed);
                return;
            }
            Outcome::Stopped => return,
        }
    }
    let _ = runner.send(RunnerEvent::Initialized);
    let containers = spec.containers.into_iter().enumerate().map(|(index, c)| {
        let which = ContainerRef { init: false, index };
        container::supervise(
            cx.clone(),
            volumes.clone(),
            which,
            c,
            restart,
            events.clone(),
            stop.clone(),
        )
    });
    futures::future::join_all(containers).await;
}

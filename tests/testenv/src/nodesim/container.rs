//! One container's life: image → executable, environment, start, probes, exit, restarts.

use std::collections::HashMap;
use std::net::Ipv4Addr;
use std::os::unix::process::ExitStatusExt;
use std::path::PathBuf;
use std::process::ExitStatus;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::{ConfigMap, Container, EnvVar, Pod, Secret};
use k8s_openapi::jiff::Timestamp;
use kube::api::Api;
use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use tokio::sync::{mpsc, watch};

use super::Runtime;
use super::probe;
use super::sandbox::{self, BindMount, SandboxSpec};
use super::volumes::{PreparedVolume, join_inside};

/// The first restart back-off; doubled after each restart.
const INITIAL_BACKOFF: Duration = Duration::from_secs(1);
/// The longest restart back-off. The kubelet's is 5 minutes; tests cannot wait that long.
const MAX_BACKOFF: Duration = Duration::from_secs(10);
/// How long a container stays in `ErrImagePull` before `ImagePullBackOff`.
const IMAGE_PULL_BACKOFF: Duration = Duration::from_secs(1);
/// How often a missing Secret or ConfigMap referenced by env is looked up again.
const CONFIG_RETRY: Duration = Duration::from_secs(2);
/// `PATH` when the container spec does not set one (what most images set).
const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Facts about a Pod its containers need.
#[derive(Debug)]
pub(crate) struct PodContext {
    pub(crate) rt: Arc<Runtime>,
    pub(crate) pod: Arc<Pod>,
    pub(crate) name: String,
    pub(crate) namespace: String,
    pub(crate) uid: String,
    pub(crate) hostname: String,
    pub(crate) ip: Ipv4Addr,
    pub(crate) host_ip: Ipv4Addr,
    pub(crate) dir: PathBuf,
    /// `/etc/hosts`, `/etc/hostname`, `/etc/resolv.conf` of the Pod.
    pub(crate) etc_files: Vec<BindMount>,
}

/// A change in one container's state, reported to the Pod worker.
#[derive(Clone, Debug)]
pub(crate) enum ContainerUpdate {
    Waiting {
        reason: &'static str,
        message: Option<String>,
    },
    Running {
        started_at: Timestamp,
    },
    Terminated {
        exit_code: i32,
        signal: Option<i32>,
        reason: &'static str,
        message: Option<String>,
        started_at: Option<Timestamp>,
        finished_at: Timestamp,
    },
    Ready(bool),
    Started(bool),
}

/// Which container an update is about.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct ContainerRef {
    pub(crate) init: bool,
    pub(crate) index: usize,
}

/// How a supervised container ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Outcome {
    Succeeded,
    Failed,
    /// The Pod is being stopped.
    Stopped,
}

/// When a container is restarted after it exited.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Restart {
    Always,
    OnFailure,
    Never,
}

impl Restart {
    pub(crate) fn of_pod(pod: &Pod) -> Self {
        match pod.spec.as_ref().and_then(|s| s.restart_policy.as_deref()) {
            Some("Never") => Self::Never,
            Some("OnFailure") => Self::OnFailure,
            _ => Self::Always,
        }
    }
}

/// A Pod field as `fieldRef` and the downward API see it; `addresses` are the Pod's and the
/// node's address (the status may not carry them yet).
pub(crate) fn pod_field(
    pod: &Pod,
    path: &str,
    addresses: Option<(Ipv4Addr, Ipv4Addr)>,
) -> Option<String> {
    let meta = &pod.metadata;
    let spec = pod.spec.as_ref();
    let status = pod.status.as_ref();
    let (pod_ip, host_ip) = match addresses {
        Some((p, h)) => (Some(p.to_string()), Some(h.to_string())),
        None => (
            status.and_then(|s| s.pod_ip.clone()),
            status.and_then(|s| s.host_ip.clone()),
        ),
    };
    let key = |prefix: &str| {
        path.strip_prefix(prefix)
            .and_then(|rest| rest.strip_prefix("['"))
            .and_then(|rest| rest.strip_suffix("']"))
    };
    if let Some(k) = key("metadata.labels") {
        return meta
            .labels
            .as_ref()
            .and_then(|l| l.get(k).cloned())
            .or(Some(String::new()));
    }
    if let Some(k) = key("metadata.annotations") {
        return meta
            .annotations
            .as_ref()
            .and_then(|a| a.get(k).cloned())
            .or(Some(String::new()));
    }
    match path {
        "metadata.name" => meta.name.clone(),
        "metadata.namespace" => meta.namespace.clone(),
        "metadata.uid" => meta.uid.clone(),
        "spec.nodeName" => spec.and_then(|s| s.node_name.clone()),
        "spec.serviceAccountName" => spec.and_then(|s| s.service_account_name.clone()),
        "status.podIP" | "status.podIPs" => pod_ip,
        "status.hostIP" | "status.hostIPs" => host_ip,
        _ => None,
    }
}

/// Expands `$(VAR)` references the way the kubelet does: defined variables are replaced,
/// `$$` escapes, undefined references stay as they are.
pub(crate) fn expand(input: &str, vars: &HashMap<String, String>) -> String {
    let mut out = String::with_capacity(input.len());
    let mut rest = input;
    while let Some(pos) = rest.find('$') {
        out.push_str(&rest[..pos]);
        let after = &rest[pos + 1..];
        if let Some(stripped) = after.strip_prefix('$') {
            out.push('$');
            rest = stripped;
        } else if let Some(inner) = after.strip_prefix('(')
            && let Some(end) = inner.find(')')
        {
            let name = &inner[..end];
            match vars.get(name) {
                Some(v) => out.push_str(v),
                None => {
                    out.push_str("$(");
                    out.push_str(name);
                    out.push(')');
                }
            }
            rest = &inner[end + 1..];
        } else {
            out.push('$');
            rest = after;
        }
    }
    out.push_str(rest);
    out
}

impl PodContext {
    async fn secret(&self, name: &str) -> Result<Option<Secret>, String> {
        let api: Api<Secret> = Api::namespaced(self.rt.client.clone(), &self.namespace);
        api.get_opt(name)
            .await
            .map_err(|e| format!("reading secret {name:?}: {e}"))
    }

    async fn config_map(&self, name: &str) -> Result<Option<ConfigMap>, String> {
        let api: Api<ConfigMap> = Api::namespaced(self.rt.client.clone(), &self.namespace);
        api.get_opt(name)
            .await
            .map_err(|e| format!("reading configmap {name:?}: {e}"))
    }

    async fn env_value(
        &self,
        var: &EnvVar,
        vars: &HashMap<String, String>,
    ) -> Result<Option<String>, String> {
        let Some(from) = &var.value_from else {
            return Ok(Some(expand(var.value.as_deref().unwrap_or_default(), vars)));
        };
        if let Some(field) = &from.field_ref {
            return pod_field(&self.pod, &field.field_path, Some((self.ip, self.host_ip)))
                .map(Some)
                .ok_or_else(|| {
                    format!(
                        "env {}: unsupported fieldPath {:?}",
                        var.name, field.field_path
                    )
                });
        }
        if let Some(sel) = &from.secret_key_ref {
            let optional = sel.optional.unwrap_or(false);
            return match self.secret(&sel.name).await? {
                Some(secret) => match secret.data.as_ref().and_then(|d| d.get(&sel.key)) {
                    Some(v) => Ok(Some(String::from_utf8_lossy(&v.0).into_owned())),
                    None if optional => Ok(None),
                    None => Err(format!(
                        "couldn't find key {} in Secret {}/{}",
                        sel.key, self.namespace, sel.name
                    )),
                },
                None if optional => Ok(None),
                None => Err(format!("secret {:?} not found", sel.name)),
            };
        }
        if let Some(sel) = &from.config_map_key_ref {
            let optional = sel.optional.unwrap_or(false);
            return match self.config_map(&sel.name).await? {
                Some(cm) => match cm.data.as_ref().and_then(|d| d.get(&sel.key)) {
                    Some(v) => Ok(Some(v.clone())),
                    None if optional => Ok(None),
                    None => Err(format!(
                        "couldn't find key {} in ConfigMap {}/{}",
                        sel.key, self.namespace, sel.name
                    )),
                },
                None if optional => Ok(None),
                None => Err(format!("configmap {:?} not found", sel.name)),
            };
        }
        Err(format!(
            "env {}: resourceFieldRef and fileKeyRef are not supported by the node simulator",
            var.name
        ))
    }

    /// The container's environment: defaults, `envFrom`, then `env` in order.
    pub(crate) async fn environment(
        &self,
        container: &Container,
    ) -> Result<Vec<(String, String)>, String> {
        let mut order: Vec<String> = Vec::new();
        let mut vars: HashMap<String, String> = HashMap::new();
        let set =
            |order: &mut Vec<String>, vars: &mut HashMap<String, String>, k: String, v: String| {
                if vars.insert(k.clone(), v).is_none() {
                    order.push(k);
                }
            };
        set(&mut order, &mut vars, "PATH".into(), DEFAULT_PATH.into());
        set(
            &mut order,
            &mut vars,
            "HOSTNAME".into(),
            self.hostname.clone(),
        );
        set(&mut order, &mut vars, "HOME".into(), "/root".into());
        for from in container.env_from.iter().flatten() {
            let prefix = from.prefix.clone().unwrap_or_default();
            if let Some(r) = &from.secret_ref {
                match self.secret(&r.name).await? {
                    Some(secret) => {
                        for (k, v) in secret.data.iter().flatten() {
                            set(
                                &mut order,
                                &mut vars,
                                format!("{prefix}{k}"),
                                String::from_utf8_lossy(&v.0).into_owned(),
                            );
                        }
                    }
                    None if r.optional.unwrap_or(false) => {}
                    None => return Err(format!("secret {:?} not found", r.name)),
                }
            }
            if let Some(r) = &from.config_map_ref {
                match self.config_map(&r.name).await? {
                    Some(cm) => {
                        for (k, v) in cm.data.iter().flatten() {
                            set(&mut order, &mut vars, format!("{prefix}{k}"), v.clone());
                        }
                    }
                    None if r.optional.unwrap_or(false) => {}
                    None => return Err(format!("configmap {:?} not found", r.name)),
                }
            }
        }
        for var in container.env.iter().flatten() {
            if let Some(value) = self.env_value(var, &vars).await? {
                set(&mut order, &mut vars, var.name.clone(), value);
            }
        }
        Ok(order
            .into_iter()
            .filter_map(|k| vars.get(&k).map(|v| (k.clone(), v.clone())))
            .collect())
    }

    /// The mounts of a container: the Pod's /etc files and its volume mounts.
    fn mounts(
        &self,
        container: &Container,
        volumes: &HashMap<String, PreparedVolume>,
    ) -> Result<Vec<BindMount>, String> {
        let mut mounts = self.etc_files.clone();
        for vm in container.volume_mounts.iter().flatten() {
            let volume = volumes
                .get(&vm.name)
                .ok_or_else(|| format!("volume mount {}: no volume of that name", vm.name))?;
            let mut source = volume.source.clone();
            if let Some(sub) = vm.sub_path.as_deref().filter(|s| !s.is_empty()) {
                source = join_inside(&source, sub)
                    .ok_or_else(|| format!("volume mount {}: invalid subPath {sub:?}", vm.name))?;
                if !source.exists() {
                    std::fs::create_dir_all(&source)
                        .map_err(|e| format!("creating subPath {sub:?}: {e}"))?;
                }
            }
            // A mount over one of the Pod's /etc files replaces it.
            mounts.retain(|m| m.target != vm.mount_path);
            mounts.push(BindMount {
                source,
                target: vm.mount_path.clone(),
                read_only: vm.read_only.unwrap_or(false) || volume.force_read_only,
            });
        }
        Ok(mounts)
    }

    /// Everything to start the container, given its executable and environment.
    fn sandbox_spec(
        &self,
        container: &Container,
        rootfs_name: &str,
        executable: PathBuf,
        env: Vec<(String, String)>,
        volumes: &HashMap<String, PreparedVolume>,
    ) -> Result<SandboxSpec, String> {
        let vars: HashMap<String, String> = env.iter().cloned().collect();
        let command: Vec<String> = container
            .command
            .iter()
            .flatten()
            .map(|c| expand(c, &vars))
            .collect();
        let args: Vec<String> = container
            .args
            .iter()
            .flatten()
            .map(|a| expand(a, &vars))
            .collect();
        let argv0 = command.first().cloned().unwrap_or_else(|| {
            executable
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default()
        });
        let args: Vec<String> = command.into_iter().skip(1).chain(args).collect();
        let pod_sc = self
            .pod
            .spec
            .as_ref()
            .and_then(|s| s.security_context.as_ref());
        let sc = container.security_context.as_ref();
        let run_as_user = sc
            .and_then(|s| s.run_as_user)
            .or(pod_sc.and_then(|s| s.run_as_user));
        let run_as_group = sc
            .and_then(|s| s.run_as_group)
            .or(pod_sc.and_then(|s| s.run_as_group));
        let id = |v: i64| u32::try_from(v).map_err(|_| format!("invalid user or group id {v}"));
        let user = match (run_as_user, run_as_group) {
            (None, None) => None,
            (u, g) => Some((id(u.unwrap_or(0))?, id(g.unwrap_or(0))?)),
        };
        let caps = sc.and_then(|s| s.capabilities.as_ref());
        let drop_capabilities = sandbox::capabilities_to_drop(
            sc.and_then(|s| s.privileged).unwrap_or(false),
            caps.and_then(|c| c.add.as_deref()).unwrap_or_default(),
            caps.and_then(|c| c.drop.as_deref()).unwrap_or_default(),
        );
        Ok(SandboxSpec {
            rootfs: self.dir.join("rootfs").join(rootfs_name),
            hostname: self.hostname.clone(),
            executable,
            argv0,
            args,
            env,
            working_dir: container.working_dir.clone().filter(|w| !w.is_empty()),
            mounts: self.mounts(container, volumes)?,
            read_only_root: sc
                .and_then(|s| s.read_only_root_filesystem)
                .unwrap_or(false),
            no_new_privs: sc.and_then(|s| s.allow_privilege_escalation) == Some(false),
            drop_capabilities,
            user,
            log: self
                .rt
                .container_log(&self.namespace, &self.name, &container.name),
        })
    }
}

/// Waits `duration` unless a stop is requested first; true when stopping.
pub(crate) async fn sleep_or_stop(
    stop: &mut watch::Receiver<Option<Duration>>,
    duration: Duration,
) -> bool {
    if stop.borrow().is_some() {
        return true;
    }
    tokio::select! {
        () = tokio::time::sleep(duration) => {}
        _ = stop.wait_for(Option::is_some) => return true,
    }
    stop.borrow().is_some()
}

/// Waits until a stop is requested and returns its grace period (zero when the Pod worker
/// is gone).
async fn wait_for_stop(stop: &mut watch::Receiver<Option<Duration>>) -> Duration {
    match stop.wait_for(Option::is_some).await {
        Ok(grace) => (*grace).unwrap_or_default(),
        Err(_) => Duration::ZERO,
    }
}

fn exit_code(status: ExitStatus) -> (i32, Option<i32>) {
    match (status.code(), status.signal()) {
        (Some(code), _) => (code, None),
        (None, Some(signal)) => (128 + signal, Some(signal)),
        (None, None) => (255, None),
    }
}

/// Stops a container: SIGTERM to its process group, `grace`, then SIGKILL. Whatever is left
/// of the group is killed once the main process is gone.
async fn terminate(
    rt: &Runtime,
    child: &mut tokio::process::Child,
    pgid: i32,
    grace: Duration,
) -> std::io::Result<ExitStatus> {
    let group = Pid::from_raw(pgid);
    let status = if grace.is_zero() {
        let _ = killpg(group, Signal::SIGKILL);
        child.wait().await
    } else {
        let _ = killpg(group, Signal::SIGTERM);
        if let Ok(status) = tokio::time::timeout(grace, child.wait()).await {
            status
        } else {
            let _ = killpg(group, Signal::SIGKILL);
            child.wait().await
        }
    };
    let _ = killpg(group, Signal::SIGKILL);
    rt.processes.remove(pgid);
    status
}

/// Runs one container until it ends for good or the Pod stops: starts it, restarts it per
/// `restart` with a capped back-off, and reports every state change.
pub(crate) async fn supervise(
    cx: Arc<PodContext>,
    volumes: Arc<HashMap<String, PreparedVolume>>,
    which: ContainerRef,
    container: Container,
    restart: Restart,
    tx: mpsc::UnboundedSender<(ContainerRef, ContainerUpdate)>,
    mut stop: watch::Receiver<Option<Duration>>,
) -> Outcome {
    let report = |update: ContainerUpdate| {
        let _ = tx.send((which, update));
    };
    let image = container.image.clone().unwrap_or_default();
    let Some(executable) = cx
        .rt
        .resolve_image(&image)
        .map(std::path::Path::to_path_buf)
    else {
        let message = format!(
            "failed to pull image {image:?}: the node simulator's image map has no entry for it (known images: {})",
            cx.rt.known_images().join(", ")
        );
        report(ContainerUpdate::Waiting {
            reason: "ErrImagePull",
            message: Some(message.clone()),
        });
        if sleep_or_stop(&mut stop, IMAGE_PULL_BACKOFF).await {
            return Outcome::Stopped;
        }
        report(ContainerUpdate::Waiting {
            reason: "ImagePullBackOff",
            message: Some(format!("Back-off pulling image {image:?}: {message}")),
        });
        let _ = stop.wait_for(Option::is_some).await;
        return Outcome::Stopped;
    };
    let rootfs_name = format!(
        "{}-{}",
        if which.init { "init" } else { "app" },
        container.name
    );
    let mut backoff = INITIAL_BACKOFF;
    loop {
        let env = match cx.environment(&container).await {
            Ok(env) => env,
            Err(message) => {
                report(ContainerUpdate::Waiting {
                    reason: "CreateContainerConfigError",
                    message: Some(message),
                });
                if sleep_or_stop(&mut stop, CONFIG_RETRY).await {
                    return Outcome::Stopped;
                }
                continue;
            }
        };
        if stop.borrow().is_some() {
            return Outcome::Stopped;
        }
        let started = Timestamp::now();
        let spawned = cx
            .sandbox_spec(
                &container,
                &rootfs_name,
                executable.clone(),
                env.clone(),
                &volumes,
            )
            .and_then(|spec| sandbox::spawn(&spec).map_err(|e| e.to_string()));
        let (exit_code, signal, message) = match spawned {
            Err(message) => {
                tracing::warn!(pod = %cx.name, container = %container.name, %message, "container failed to start");
                (128, None, Some(message))
            }
            Ok(mut child) => {
                let pgid = child
                    .id()
                    .and_then(|id| i32::try_from(id).ok())
                    .unwrap_or(0);
                if pgid > 0 {
                    cx.rt.processes.insert(pgid);
                }
                report(ContainerUpdate::Running {
                    started_at: started,
                });
                let target = probe::Target {
                    pod_ip: cx.ip,
                    pid: pgid,
                    env: env.clone(),
                };
                let probes = probe::watch(&cx.rt, &container, target, &report);
                tokio::pin!(probes);
                let grace_for_liveness = pod_grace(&cx.pod);
                let status = tokio::select! {
                    status = child.wait() => status,
                    grace = wait_for_stop(&mut stop) => {
                        let status = terminate(&cx.rt, &mut child, pgid, grace).await;
                        let (code, signal) = status.map(exit_code).unwrap_or((137, Some(9)));
                        report(ContainerUpdate::Terminated {
                            exit_code: code,
                            signal,
                            reason: if code == 0 { "Completed" } else { "Error" },
                            message: None,
                            started_at: Some(started),
                            finished_at: Timestamp::now(),
                        });
                        return Outcome::Stopped;
                    }
                    failure = &mut probes => {
                        tracing::info!(pod = %cx.name, container = %container.name, %failure, "probe failed, killing the container");
                        terminate(&cx.rt, &mut child, pgid, grace_for_liveness).await
                    }
                };
                // Whatever else the container started goes with it.
                let _ = killpg(Pid::from_raw(pgid), Signal::SIGKILL);
                cx.rt.processes.remove(pgid);
                match status {
                    Ok(status) => {
                        let (code, signal) = exit_code(status);
                        (code, signal, None)
                    }
                    Err(e) => (255, None, Some(format!("waiting for the process: {e}"))),
                }
            }
        };
        let failed = exit_code != 0;
        report(ContainerUpdate::Terminated {
            exit_code,
            signal,
            reason: match (&message, failed) {
                (Some(_), _) if exit_code == 128 => "StartError",
                (_, true) => "Error",
                (_, false) => "Completed",
            },
            message,
            started_at: Some(started),
            finished_at: Timestamp::now(),
        });
        let again = match restart {
            Restart::Always => true,
            Restart::OnFailure => failed,
            Restart::Never => false,
        };
        if !again {
            return if failed {
                Outcome::Failed
            } else {
                Outcome::Succeeded
            };
        }
        report(ContainerUpdate::Waiting {
            reason: "CrashLoopBackOff",
            message: Some(format!(
                "back-off {}s restarting failed container={} pod={}_{}({})",
                backoff.as_secs(),
                container.name,
                cx.name,
                cx.namespace,
                cx.uid
            )),
        });
        if sleep_or_stop(&mut stop, backoff).await {
            return Outcome::Stopped;
        }
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

/// The Pod's termination grace period, capped for tests.
pub(crate) fn pod_grace(pod: &Pod) -> Duration {
    let seconds = pod
        .metadata
        .deletion_grace_period_seconds
        .or_else(|| {
            pod.spec
                .as_ref()
                .and_then(|s| s.termination_grace_period_seconds)
        })
        .unwrap_or(30);
    Duration::from_secs(u64::try_from(seconds).unwrap_or(0)).min(super::MAX_TERMINATION_GRACE)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expand_follows_kubelet_rules() {
        let vars: HashMap<String, String> =
            [("A".to_owned(), "1".to_owned())].into_iter().collect();
        assert_eq!(expand("x$(A)y", &vars), "x1y");
        assert_eq!(expand("$(B)", &vars), "$(B)");
        assert_eq!(expand("$$(A)", &vars), "$(A)");
        assert_eq!(expand("cost $5", &vars), "cost $5");
        assert_eq!(expand("$(A", &vars), "$(A");
    }
}

//! The Kubernetes objects of one pooled worker (see [`crate::pool`]): a Secret with the
//! worker's token and TLS key pair, and the worker Pod.
//!
//! Pure builders, unit-tested per access profile. The worker's settings, the Secret's
//! keys and the mount paths are the worker Pod's contract in `hostplug_api::worker`: the
//! Pod's environment is [`WorkerSettings::env`], which the worker reads back. The Pod gets
//! only what its profile needs (/etc read-only or read-write; the docker socket only with
//! `docker`, the containerd socket only with `containerd`, the system bus socket's
//! directory only with `systemd`); it is never privileged, drops every Linux capability but the few that
//! writing root-owned files needs, has a read-only root filesystem and the RuntimeDefault
//! seccomp profile. A Pod that may change its node (read-write /etc or docker) also mounts
//! the node's lock directory, so its mutating invocations exclude every other worker's on
//! the node.

use std::collections::BTreeMap;

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::{
    Capabilities as LinuxCapabilities, Container, ContainerPort, EmptyDirVolumeSource, EnvVar,
    EnvVarSource, HTTPGetAction, HostPathVolumeSource, ObjectFieldSelector, Pod,
    PodSecurityContext, PodSpec, Probe, ResourceRequirements, SeccompProfile, Secret,
    SecretVolumeSource, SecurityContext, Toleration, Volume, VolumeMount,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use sha2::{Digest as _, Sha256};

use hostplug_api::AccessProfile;
use hostplug_api::crd::{EtcAccess, labels};
use hostplug_api::systemd::SystemdAccess;
use hostplug_api::worker::paths::{
    CACHE_MOUNT, CONTAINERD_MOUNT, DOCKER_MOUNT, ETC_MOUNT, NODE_ETC, NODE_LOCK_DIR,
    NODE_LOCK_MOUNT, NODE_SYSTEM_BUS_DIR, SECRET_MOUNT, SYSTEM_BUS_MOUNT,
};
use hostplug_api::worker::{ArtifactKey, WorkerSettings, secret_keys};

/// Size cap of the cache emptyDir: 256 MiB holds a few precompiled modules (a
/// precompiled component is a few times its module size) with room to spare.
const CACHE_SIZE_LIMIT: &str = "256Mi";
/// Memory request of an idle worker: 32 MiB (what an idle worker measures, rounded up).
const WORKER_MEMORY_REQUEST: &str = "32Mi";
/// CPU request: 10m. A worker idles between a few millisecond-long calls.
const WORKER_CPU_REQUEST: &str = "10m";
/// How often the readiness probe runs: 1 s, so a node starts its call within about a
/// second of the worker listening; the probe is a cheap local HTTPS GET.
const READINESS_PERIOD_SECONDS: i32 = 1;
/// Longest child object name: 63, the DNS-1035 label limit of Service names (Pods and
/// Secrets allow more, but one name for all three keeps them easy to find).
const MAX_CHILD_NAME: usize = 63;
/// Uid the worker runs as when it needs no root-owned files: the conventional
/// "nonroot" uid of distroless images.
const NON_ROOT_UID: i64 = 65532;

/// Everything the builders need to know about one pooled worker.
#[derive(Debug, Clone)]
pub struct WorkerSpec<'a> {
    /// Name of the Pod and its Secret.
    pub name: &'a str,
    /// Namespace of the operator.
    pub namespace: &'a str,
    /// Labels of both objects.
    pub labels: BTreeMap<String, String>,
    /// Target node.
    pub node: &'a str,
    /// Worker image.
    pub image: &'a str,
    /// Worker port.
    pub port: i32,
    /// What the worker may touch: how /etc is mounted, which sockets.
    pub profile: AccessProfile,
    /// The containerd socket on the node (the hostPath source).
    pub node_containerd_socket: &'a str,
    /// The Docker API socket on the node (the hostPath source).
    pub node_docker_socket: &'a str,
    /// Per-invocation deadline the worker accepts at most, ms.
    pub max_invoke_timeout_ms: u64,
    /// The worker exits after this long without a request, ms (0: never); see
    /// `pool::worker_idle_exit`.
    pub idle_exit_ms: u64,
    /// The operator process's public key for precompiled artifacts (`None`: the worker
    /// takes none and compiles every module).
    pub artifact_key: Option<ArtifactKey>,
}

/// The name of a task's child objects for one node: `<task>-<node>`, made a valid
/// DNS-1035 label; shortened with a hash suffix when too long.
pub fn child_name(task: &str, node: &str) -> String {
    let raw = format!("{task}-{node}");
    let mut name: String = raw
        .chars()
        .map(|c| {
            let c = c.to_ascii_lowercase();
            if c.is_ascii_alphanumeric() || c == '-' {
                c
            } else {
                '-'
            }
        })
        .collect();
    if !name.starts_with(|c: char| c.is_ascii_lowercase()) {
        name.insert(0, 'w');
    }
    if name.len() > MAX_CHILD_NAME || name != raw {
        let hash = hex::encode(&Sha256::digest(raw.as_bytes())[..4]);
        name.truncate(MAX_CHILD_NAME - hash.len() - 1);
        let name = name.trim_end_matches('-');
        return format!("{name}-{hash}");
    }
    name
}

/// Labels of every pooled worker object on `node` with access `profile`.
pub fn worker_labels(node: &str, profile: &str) -> BTreeMap<String, String> {
    [
        ("app.kubernetes.io/managed-by", labels::MANAGED_BY),
        ("app.kubernetes.io/name", "hostplug"),
        (labels::COMPONENT, labels::COMPONENT_WORKER),
        (labels::NODE, &label_value(node)),
        (labels::PROFILE, profile),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect()
}

/// A label value for an arbitrary string (node names may be up to 253 characters).
pub fn label_value(s: &str) -> String {
    if s.len() <= 63 {
        s.to_owned()
    } else {
        hex::encode(&Sha256::digest(s.as_bytes())[..16])
    }
}

fn meta(w: &WorkerSpec<'_>) -> ObjectMeta {
    ObjectMeta {
        name: Some(w.name.to_owned()),
        namespace: Some(w.namespace.to_owned()),
        labels: Some(w.labels.clone()),
        ..ObjectMeta::default()
    }
}

/// The Secret holding the worker's token and TLS key pair.
pub fn secret(w: &WorkerSpec<'_>, token: &str, cert_pem: &str, key_pem: &str) -> Secret {
    let data = [
        (secret_keys::TOKEN, token),
        (secret_keys::CERT, cert_pem),
        (secret_keys::KEY, key_pem),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), ByteString(v.as_bytes().to_vec())))
    .collect();
    Secret {
        metadata: meta(w),
        type_: Some("Opaque".to_owned()),
        data: Some(data),
        immutable: Some(true),
        ..Secret::default()
    }
}

/// The worker's settings in the Pod of `w`.
pub fn worker_settings(w: &WorkerSpec<'_>) -> WorkerSettings {
    let mut settings = WorkerSettings::in_pod(w.port, w.profile, w.max_invoke_timeout_ms);
    settings.limits.idle_exit_ms = w.idle_exit_ms;
    settings.artifact_key = w.artifact_key;
    settings
}

/// The artifact key a worker Pod was made with, read back from its container's
/// environment (`None`: none, or not one this operator renders).
pub fn artifact_key(pod: &Pod) -> Option<ArtifactKey> {
    pod.spec
        .as_ref()?
        .containers
        .iter()
        .flat_map(|c| c.env.iter().flatten())
        .find(|e| e.name == hostplug_api::worker::env::ARTIFACT_KEY)?
        .value
        .as_deref()?
        .parse()
        .ok()
}

/// A quantity of bytes in the binary unit Kubernetes prints (`640Mi`), or plain bytes
/// when it is not a whole number of MiB.
fn mebibytes(bytes: u64) -> Quantity {
    const MIB: u64 = 1024 * 1024;
    if bytes.is_multiple_of(MIB) {
        Quantity(format!("{}Mi", bytes / MIB))
    } else {
        Quantity(bytes.to_string())
    }
}

/// Linux capabilities the worker keeps, by what it may touch. The worker runs as uid 0
/// whenever it touches the node (files under /etc and the docker socket are root's), so
/// owner permission bits already let it read and write them; rewriting a file while
/// keeping its owner and mode needs CHOWN and FOWNER. Nothing else: no DAC_OVERRIDE, so
/// a file even root may not write (mode 0444) stays unwritable.
pub fn linux_capabilities(etc: EtcAccess) -> Vec<String> {
    let caps: &[&str] = match etc {
        EtcAccess::Write => &["CHOWN", "FOWNER"],
        EtcAccess::Read | EtcAccess::None => &[],
    };
    caps.iter().map(|s| (*s).to_owned()).collect()
}

/// The worker Pod, pinned to its node.
/// Taints every Pod tolerates for a while (the API server's `DefaultTolerationSeconds`
/// adds them, 300 s): a node briefly not Ready or unreachable (a reboot) is waited out.
const DEFAULT_TOLERATED_NO_EXECUTE: [&str; 2] = [
    "node.kubernetes.io/not-ready",
    "node.kubernetes.io/unreachable",
];

/// The `NoExecute` taints of `node` that a worker Pod ([`pod`]: it tolerates only the
/// control-plane `NoSchedule` taints) does not tolerate, as `key=value:NoExecute`: on
/// such a node the kubelet refuses the Pod and the taint manager evicts it, so no
/// worker can start there until the taint is gone.
pub fn untolerated_no_execute(node: &k8s_openapi::api::core::v1::Node) -> Vec<String> {
    node.spec
        .as_ref()
        .and_then(|s| s.taints.as_ref())
        .into_iter()
        .flatten()
        .filter(|t| t.effect == "NoExecute")
        .filter(|t| !DEFAULT_TOLERATED_NO_EXECUTE.contains(&t.key.as_str()))
        .map(|t| match &t.value {
            Some(v) if !v.is_empty() => format!("{}={v}:NoExecute", t.key),
            _ => format!("{}:NoExecute", t.key),
        })
        .collect()
}

pub fn pod(w: &WorkerSpec<'_>) -> Pod {
    let name = w.name.to_owned();
    let etc = w.profile.etc;
    // The docker and containerd sockets are root's (mode 0660, group root), like /etc.
    // So is the system bus socket (systemd trusts uid 0 without polkit).
    let needs_root = etc != EtcAccess::None
        || w.profile.docker
        || w.profile.containerd
        || w.profile.systemd != SystemdAccess::None;
    let settings = worker_settings(w);
    // POD_IP first: the kubelet expands `$(POD_IP)` in HOSTPLUG_LISTEN only from
    // variables defined before it.
    let mut env_vars = vec![EnvVar {
        name: "POD_IP".to_owned(),
        value: None,
        value_from: Some(EnvVarSource {
            field_ref: Some(ObjectFieldSelector {
                field_path: "status.podIP".to_owned(),
                api_version: None,
            }),
            ..EnvVarSource::default()
        }),
    }];
    env_vars.extend(settings.env().into_iter().map(|(name, value)| EnvVar {
        name: name.to_owned(),
        value: Some(value),
        value_from: None,
    }));
    let mut mounts = vec![
        VolumeMount {
            name: "secret".to_owned(),
            mount_path: SECRET_MOUNT.to_owned(),
            read_only: Some(true),
            ..VolumeMount::default()
        },
        VolumeMount {
            name: "cache".to_owned(),
            mount_path: CACHE_MOUNT.to_owned(),
            ..VolumeMount::default()
        },
    ];
    let mut volumes = vec![
        Volume {
            name: "secret".to_owned(),
            secret: Some(SecretVolumeSource {
                secret_name: Some(name.clone()),
                // Owner-only for a root worker; a non-root worker (uid 65532) needs the
                // read bit for others, which only the Pod's own processes can use.
                default_mode: Some(if needs_root { 0o400 } else { 0o444 }),
                ..SecretVolumeSource::default()
            }),
            ..Volume::default()
        },
        Volume {
            name: "cache".to_owned(),
            empty_dir: Some(EmptyDirVolumeSource {
                size_limit: Some(Quantity(CACHE_SIZE_LIMIT.to_owned())),
                medium: None,
            }),
            ..Volume::default()
        },
    ];
    if etc != EtcAccess::None {
        mounts.push(VolumeMount {
            name: "etc".to_owned(),
            mount_path: ETC_MOUNT.to_owned(),
            read_only: Some(etc != EtcAccess::Write),
            ..VolumeMount::default()
        });
        volumes.push(Volume {
            name: "etc".to_owned(),
            host_path: Some(HostPathVolumeSource {
                path: NODE_ETC.to_owned(),
                type_: Some("Directory".to_owned()),
            }),
            ..Volume::default()
        });
    }
    if let Some(lock) = &settings.node_lock_file {
        let dir = lock
            .parent()
            .map_or_else(|| NODE_LOCK_MOUNT.to_owned(), |d| d.display().to_string());
        mounts.push(VolumeMount {
            name: "node-lock".to_owned(),
            mount_path: dir,
            ..VolumeMount::default()
        });
        volumes.push(Volume {
            name: "node-lock".to_owned(),
            host_path: Some(HostPathVolumeSource {
                path: NODE_LOCK_DIR.to_owned(),
                type_: Some("DirectoryOrCreate".to_owned()),
            }),
            ..Volume::default()
        });
    }
    if w.profile.docker {
        mounts.push(VolumeMount {
            name: "docker".to_owned(),
            mount_path: DOCKER_MOUNT.to_owned(),
            ..VolumeMount::default()
        });
        volumes.push(Volume {
            name: "docker".to_owned(),
            host_path: Some(HostPathVolumeSource {
                path: w.node_docker_socket.to_owned(),
                type_: Some("Socket".to_owned()),
            }),
            ..Volume::default()
        });
        // The docker capability's image archive directory (save/load), on the node.
        mounts.push(VolumeMount {
            name: "image-archives".to_owned(),
            mount_path: hostplug_api::worker::paths::IMAGE_ARCHIVES_MOUNT.to_owned(),
            ..VolumeMount::default()
        });
        volumes.push(Volume {
            name: "image-archives".to_owned(),
            host_path: Some(HostPathVolumeSource {
                path: hostplug_api::worker::paths::NODE_IMAGE_ARCHIVES.to_owned(),
                type_: Some("DirectoryOrCreate".to_owned()),
            }),
            ..Volume::default()
        });
    }
    if w.profile.containerd {
        mounts.push(VolumeMount {
            name: "containerd".to_owned(),
            mount_path: CONTAINERD_MOUNT.to_owned(),
            ..VolumeMount::default()
        });
        volumes.push(Volume {
            name: "containerd".to_owned(),
            host_path: Some(HostPathVolumeSource {
                path: w.node_containerd_socket.to_owned(),
                type_: Some("Socket".to_owned()),
            }),
            ..Volume::default()
        });
    }
    if w.profile.systemd != SystemdAccess::None {
        // The directory of the system bus socket, read-write (connecting to a socket is
        // a write): a restarted dbus daemon's new socket appears in a running worker.
        mounts.push(VolumeMount {
            name: "system-bus".to_owned(),
            mount_path: SYSTEM_BUS_MOUNT.to_owned(),
            ..VolumeMount::default()
        });
        volumes.push(Volume {
            name: "system-bus".to_owned(),
            host_path: Some(HostPathVolumeSource {
                path: NODE_SYSTEM_BUS_DIR.to_owned(),
                type_: Some("Directory".to_owned()),
            }),
            ..Volume::default()
        });
    }
    let container = Container {
        name: "worker".to_owned(),
        image: Some(w.image.to_owned()),
        image_pull_policy: Some("IfNotPresent".to_owned()),
        env: Some(env_vars),
        ports: Some(vec![ContainerPort {
            name: Some("https".to_owned()),
            container_port: w.port,
            protocol: Some("TCP".to_owned()),
            ..ContainerPort::default()
        }]),
        readiness_probe: Some(Probe {
            http_get: Some(HTTPGetAction {
                path: Some("/healthz".to_owned()),
                port: IntOrString::Int(w.port),
                scheme: Some("HTTPS".to_owned()),
                ..HTTPGetAction::default()
            }),
            period_seconds: Some(READINESS_PERIOD_SECONDS),
            failure_threshold: Some(3),
            ..Probe::default()
        }),
        resources: Some(ResourceRequirements {
            requests: Some(
                [
                    ("cpu".to_owned(), Quantity(WORKER_CPU_REQUEST.to_owned())),
                    (
                        "memory".to_owned(),
                        Quantity(WORKER_MEMORY_REQUEST.to_owned()),
                    ),
                ]
                .into(),
            ),
            limits: Some(
                [(
                    "memory".to_owned(),
                    mebibytes(settings.limits.container_memory_bytes()),
                )]
                .into(),
            ),
            ..ResourceRequirements::default()
        }),
        security_context: Some(SecurityContext {
            privileged: Some(false),
            allow_privilege_escalation: Some(false),
            read_only_root_filesystem: Some(true),
            run_as_non_root: Some(!needs_root),
            run_as_user: Some(if needs_root { 0 } else { NON_ROOT_UID }),
            capabilities: Some(LinuxCapabilities {
                drop: Some(vec!["ALL".to_owned()]),
                add: Some(linux_capabilities(etc)).filter(|c| !c.is_empty()),
            }),
            seccomp_profile: Some(SeccompProfile {
                type_: "RuntimeDefault".to_owned(),
                localhost_profile: None,
            }),
            ..SecurityContext::default()
        }),
        volume_mounts: Some(mounts),
        ..Container::default()
    };
    Pod {
        metadata: meta(w),
        spec: Some(PodSpec {
            node_name: Some(w.node.to_owned()),
            restart_policy: Some("Never".to_owned()),
            automount_service_account_token: Some(false),
            enable_service_links: Some(false),
            host_network: Some(false),
            host_pid: Some(false),
            host_ipc: Some(false),
            tolerations: Some(
                hostplug_api::call::CONTROL_PLANE_LABELS
                    .iter()
                    .map(|key| Toleration {
                        key: Some((*key).to_owned()),
                        operator: Some("Exists".to_owned()),
                        effect: Some("NoSchedule".to_owned()),
                        ..Toleration::default()
                    })
                    .collect(),
            ),
            security_context: Some(PodSecurityContext {
                seccomp_profile: Some(SeccompProfile {
                    type_: "RuntimeDefault".to_owned(),
                    localhost_profile: None,
                }),
                ..PodSecurityContext::default()
            }),
            containers: vec![container],
            volumes: Some(volumes),
            ..PodSpec::default()
        }),
        status: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hostplug_api::crd::Capabilities;
    use hostplug_api::worker::paths::{NODE_CONTAINERD_SOCKET, NODE_DOCKER_SOCKET};

    fn spec(caps: &Capabilities, dry_run: bool) -> WorkerSpec<'static> {
        WorkerSpec {
            name: "hpw-node1-etc-write-1a2b3c",
            namespace: "hostplug-system",
            labels: worker_labels("node1", "etc-write"),
            node: "node1",
            image: "ghcr.io/hostplug/worker:dev",
            port: 8443,
            profile: AccessProfile::for_call(caps, dry_run, true),
            node_containerd_socket: NODE_CONTAINERD_SOCKET,
            node_docker_socket: NODE_DOCKER_SOCKET,
            max_invoke_timeout_ms: 60_000,
            idle_exit_ms: 660_000,
            artifact_key: Some(ArtifactKey::from_bytes([9; 32])),
        }
    }

    fn mounts(p: &Pod) -> Vec<(String, bool)> {
        let c = &p.spec.as_ref().expect("spec").containers[0];
        c.volume_mounts
            .iter()
            .flatten()
            .map(|m| (m.mount_path.clone(), m.read_only.unwrap_or(false)))
            .collect()
    }

    fn env_of(p: &Pod, name: &str) -> Option<String> {
        let c = &p.spec.as_ref().expect("spec").containers[0];
        c.env
            .iter()
            .flatten()
            .find(|e| e.name == name)
            .and_then(|e| e.value.clone())
    }

    fn sc(p: &Pod) -> SecurityContext {
        p.spec.as_ref().expect("spec").containers[0]
            .security_context
            .clone()
            .expect("security context")
    }

    #[test]
    fn write_capability_mounts_etc_rw_with_file_caps() {
        let caps = Capabilities {
            etc: EtcAccess::Write,
            docker: false,
            ..Default::default()
        };
        let p = pod(&spec(&caps, false));
        assert!(mounts(&p).contains(&(ETC_MOUNT.into(), false)));
        assert!(!mounts(&p).iter().any(|(m, _)| m == DOCKER_MOUNT));
        assert_eq!(env_of(&p, "HOSTPLUG_ETC_ACCESS").as_deref(), Some("write"));
        // The worker ends on its own if nobody removes it.
        assert_eq!(
            env_of(&p, "HOSTPLUG_IDLE_EXIT_MS").as_deref(),
            Some("660000")
        );
        let sc = sc(&p);
        assert_eq!(sc.privileged, Some(false));
        assert_eq!(sc.read_only_root_filesystem, Some(true));
        assert_eq!(sc.allow_privilege_escalation, Some(false));
        let caps = sc.capabilities.expect("caps");
        assert_eq!(caps.drop, Some(vec!["ALL".to_string()]));
        assert_eq!(caps.add, Some(vec!["CHOWN".into(), "FOWNER".into()]));
        assert_eq!(
            sc.seccomp_profile.map(|s| s.type_),
            Some("RuntimeDefault".into())
        );
        let ps = p.spec.expect("spec");
        assert_eq!(ps.node_name.as_deref(), Some("node1"));
        assert!(
            ps.tolerations
                .expect("tolerations")
                .iter()
                .any(|t| t.key.as_deref() == Some("node-role.kubernetes.io/control-plane"))
        );
        assert_eq!(ps.automount_service_account_token, Some(false));
    }

    #[test]
    fn dry_run_mounts_etc_read_only() {
        let caps = Capabilities {
            etc: EtcAccess::Write,
            docker: false,
            ..Default::default()
        };
        let p = pod(&spec(&caps, true));
        assert!(mounts(&p).contains(&(ETC_MOUNT.into(), true)));
        assert_eq!(env_of(&p, "HOSTPLUG_ETC_ACCESS").as_deref(), Some("read"));
        let add = sc(&p).capabilities.and_then(|c| c.add);
        assert_eq!(add, None);
    }

    #[test]
    fn no_etc_no_docker_mounts_nothing_of_the_host_and_runs_non_root() {
        let caps = Capabilities::default();
        let p = pod(&spec(&caps, false));
        let m = mounts(&p);
        assert!(!m.iter().any(|(p, _)| p == ETC_MOUNT || p == DOCKER_MOUNT));
        let sc = sc(&p);
        assert_eq!(sc.run_as_non_root, Some(true));
        assert_eq!(sc.capabilities.and_then(|c| c.add), None);
        assert!(
            p.spec
                .expect("spec")
                .volumes
                .expect("volumes")
                .iter()
                .all(|v| v.host_path.is_none())
        );
    }

    #[test]
    fn docker_capability_mounts_the_socket_and_the_archive_directory_only() {
        use hostplug_api::worker::paths::{IMAGE_ARCHIVES_MOUNT, NODE_IMAGE_ARCHIVES};
        let caps = Capabilities {
            etc: EtcAccess::None,
            docker: true,
            ..Default::default()
        };
        let p = pod(&spec(&caps, false));
        let m = mounts(&p);
        assert!(m.iter().any(|(p, _)| p == DOCKER_MOUNT));
        assert!(m.iter().any(|(p, _)| p == IMAGE_ARCHIVES_MOUNT));
        assert!(!m.iter().any(|(p, _)| p == ETC_MOUNT));
        let archives = p
            .spec
            .as_ref()
            .and_then(|s| s.volumes.as_ref())
            .and_then(|v| v.iter().find(|v| v.name == "image-archives"))
            .and_then(|v| v.host_path.as_ref())
            .map(|h| h.path.as_str());
        assert_eq!(archives, Some(NODE_IMAGE_ARCHIVES));
        // Without docker, no archive directory.
        let none = pod(&spec(&Capabilities::default(), false));
        assert!(!mounts(&none).iter().any(|(p, _)| p == IMAGE_ARCHIVES_MOUNT));
        assert_eq!(
            env_of(&p, "HOSTPLUG_DOCKER_SOCKET").as_deref(),
            Some(DOCKER_MOUNT)
        );
    }

    /// The containerd socket is a hostPath of type Socket, mounted only for a plugin that
    /// declares `containerd`, and the worker learns where it is; no other profile mounts
    /// it or names it in the environment.
    #[test]
    fn containerd_socket_is_mounted_only_when_declared() {
        let cri = Capabilities {
            containerd: true,
            ..Capabilities::default()
        };
        let p = pod(&spec(&cri, false));
        let m = mounts(&p);
        assert!(m.iter().any(|(p, _)| p == CONTAINERD_MOUNT));
        assert!(!m.iter().any(|(p, _)| p == ETC_MOUNT || p == DOCKER_MOUNT));
        assert_eq!(
            env_of(&p, "HOSTPLUG_CONTAINERD_SOCKET").as_deref(),
            Some(CONTAINERD_MOUNT)
        );
        let volumes = p.spec.clone().and_then(|s| s.volumes).unwrap_or_default();
        let host = volumes
            .iter()
            .find(|v| v.name == "containerd")
            .and_then(|v| v.host_path.clone())
            .expect("a containerd hostPath");
        assert_eq!(host.path, NODE_CONTAINERD_SOCKET);
        assert_eq!(host.type_.as_deref(), Some("Socket"));
        assert_eq!(sc(&p).run_as_user, Some(0), "the socket is root's");
        assert_eq!(sc(&p).capabilities.and_then(|c| c.add), None);

        for etc in EtcAccess::ALL {
            for docker in [false, true] {
                for dry_run in [false, true] {
                    let caps = Capabilities {
                        etc,
                        docker,
                        ..Default::default()
                    };
                    let p = pod(&spec(&caps, dry_run));
                    assert!(
                        !mounts(&p).iter().any(|(m, _)| m == CONTAINERD_MOUNT),
                        "{caps} dry_run={dry_run}"
                    );
                    assert_eq!(env_of(&p, "HOSTPLUG_CONTAINERD_SOCKET"), None, "{caps}");
                    let volumes = p.spec.and_then(|s| s.volumes).unwrap_or_default();
                    assert!(
                        volumes.iter().all(|v| v
                            .host_path
                            .as_ref()
                            .is_none_or(|h| h.path != NODE_CONTAINERD_SOCKET)),
                        "{caps}"
                    );
                }
            }
        }
    }

    /// `--node-containerd-socket` and `--node-docker-socket` (k3s, RKE2, microk8s,
    /// rootless Docker keep their sockets elsewhere) become the hostPath sources; the
    /// paths inside the Pod, and so the worker's settings, stay the same.
    #[test]
    fn node_socket_paths_are_the_hostpath_sources() {
        let caps = Capabilities {
            docker: true,
            containerd: true,
            ..Capabilities::default()
        };
        let mut s = spec(&caps, false);
        s.node_containerd_socket = "/run/k3s/containerd/containerd.sock";
        s.node_docker_socket = "/run/user/1000/docker.sock";
        let p = pod(&s);
        let volumes = p.spec.clone().and_then(|s| s.volumes).unwrap_or_default();
        let host = |name: &str| {
            volumes
                .iter()
                .find(|v| v.name == name)
                .and_then(|v| v.host_path.clone())
                .map(|h| (h.path, h.type_))
        };
        assert_eq!(
            host("containerd"),
            Some((
                "/run/k3s/containerd/containerd.sock".to_owned(),
                Some("Socket".to_owned())
            ))
        );
        assert_eq!(
            host("docker"),
            Some((
                "/run/user/1000/docker.sock".to_owned(),
                Some("Socket".to_owned())
            ))
        );
        assert_eq!(
            env_of(&p, "HOSTPLUG_DOCKER_SOCKET").as_deref(),
            Some(DOCKER_MOUNT)
        );
        assert_eq!(
            env_of(&p, "HOSTPLUG_CONTAINERD_SOCKET").as_deref(),
            Some(CONTAINERD_MOUNT)
        );
    }

    /// The system bus socket's directory is mounted only when the plugin declares
    /// `systemd` (for reads too: a dry run reads unit states), and the worker learns
    /// where it is and what it may do; no other profile mounts it or names it.
    #[test]
    fn system_bus_is_mounted_only_when_declared() {
        use hostplug_api::systemd::{SystemdAction, SystemdCapability};
        let caps = Capabilities {
            systemd: Some(SystemdCapability {
                units: vec!["chrony.service".into()],
                actions: vec![SystemdAction::Status, SystemdAction::Restart],
            }),
            ..Capabilities::default()
        };
        for (dry_run, access) in [(false, "manage"), (true, "read")] {
            let p = pod(&spec(&caps, dry_run));
            assert!(mounts(&p).iter().any(|(m, _)| m == SYSTEM_BUS_MOUNT));
            assert_eq!(
                env_of(&p, "HOSTPLUG_SYSTEMD_SOCKET").as_deref(),
                Some(hostplug_api::worker::paths::SYSTEM_BUS_SOCKET)
            );
            assert_eq!(
                env_of(&p, "HOSTPLUG_SYSTEMD_ACCESS").as_deref(),
                Some(access)
            );
            let volumes = p.spec.clone().and_then(|s| s.volumes).unwrap_or_default();
            let host = volumes
                .iter()
                .find(|v| v.name == "system-bus")
                .and_then(|v| v.host_path.clone())
                .expect("a system bus hostPath");
            assert_eq!(host.path, NODE_SYSTEM_BUS_DIR);
            assert_eq!(sc(&p).run_as_user, Some(0), "the bus trusts root");
        }
        for etc in EtcAccess::ALL {
            for (docker, containerd) in [(false, false), (true, false), (false, true)] {
                for dry_run in [false, true] {
                    let caps = Capabilities {
                        etc,
                        docker,
                        containerd,
                        ..Default::default()
                    };
                    let p = pod(&spec(&caps, dry_run));
                    assert!(
                        !mounts(&p).iter().any(|(m, _)| m == SYSTEM_BUS_MOUNT),
                        "{caps} dry_run={dry_run}"
                    );
                    assert_eq!(env_of(&p, "HOSTPLUG_SYSTEMD_SOCKET"), None, "{caps}");
                    let volumes = p.spec.and_then(|s| s.volumes).unwrap_or_default();
                    assert!(
                        volumes.iter().all(|v| v
                            .host_path
                            .as_ref()
                            .is_none_or(|h| h.path != NODE_SYSTEM_BUS_DIR)),
                        "{caps}"
                    );
                }
            }
        }
    }

    /// The worker reads back exactly the settings the operator meant, from the Pod as
    /// rendered, for every capability combination.
    #[test]
    fn the_worker_reads_back_the_pods_settings() -> Result<(), hostplug_api::Error> {
        for etc in EtcAccess::ALL {
            for (docker, containerd) in [(false, false), (true, false), (false, true)] {
                for dry_run in [false, true] {
                    let caps = Capabilities {
                        etc,
                        docker,
                        containerd,
                        ..Default::default()
                    };
                    let w = spec(&caps, dry_run);
                    let p = pod(&w);
                    let container = &p.spec.as_ref().expect("spec").containers[0];
                    let vars: Vec<(String, String)> = container
                        .env
                        .iter()
                        .flatten()
                        .filter_map(|e| Some((e.name.clone(), e.value.clone()?)))
                        .collect();
                    let read = WorkerSettings::from_env(|name| {
                        vars.iter().find(|(n, _)| n == name).map(|(_, v)| v.clone())
                    })?;
                    assert_eq!(read, worker_settings(&w), "{caps} dry_run={dry_run}");
                    assert_eq!(read.artifact_key, w.artifact_key, "the operator's key");
                    assert_eq!(artifact_key(&p), w.artifact_key);
                    assert_eq!(
                        read.etc_access,
                        AccessProfile::for_call(&caps, dry_run, true).etc
                    );
                    assert_eq!(read.listen, "$(POD_IP):8443");
                    assert_eq!(
                        container
                            .env
                            .as_ref()
                            .and_then(|e| e.first())
                            .map(|e| e.name.as_str()),
                        Some("POD_IP"),
                        "POD_IP must precede HOSTPLUG_LISTEN for $(POD_IP) to expand"
                    );
                    let mounted: Vec<String> = mounts(&p).into_iter().map(|(m, _)| m).collect();
                    for file in [&read.tls_cert, &read.tls_key, &read.token_file] {
                        assert!(file.starts_with(SECRET_MOUNT), "{}", file.display());
                    }
                    assert!(mounted.contains(&read.cache_dir.display().to_string()));
                    if read.etc_access != EtcAccess::None {
                        assert!(mounted.contains(&read.etc_dir.display().to_string()));
                    }
                    if let Some(socket) = &read.docker_socket {
                        assert!(mounted.contains(&socket.display().to_string()));
                    }
                    if let Some(socket) = &read.containerd_socket {
                        assert!(mounted.contains(&socket.display().to_string()));
                    }
                    let memory = container
                        .resources
                        .as_ref()
                        .and_then(|r| r.limits.as_ref())
                        .and_then(|l| l.get("memory"))
                        .map(|q| q.0.clone());
                    assert_eq!(memory.as_deref(), Some("640Mi"));
                }
            }
        }
        Ok(())
    }

    #[test]
    fn names_are_valid_and_labels_say_node_and_profile() {
        assert_eq!(child_name("set-ntp", "node1"), "set-ntp-node1");
        let long = child_name(&"t".repeat(60), "node.example.com");
        assert!(long.len() <= MAX_CHILD_NAME, "{long}");
        assert!(
            long.chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        );
        assert_ne!(
            child_name("a", "b.c"),
            child_name("a", "b-c"),
            "distinct nodes must not share workers"
        );
        let caps = Capabilities::default();
        let w = spec(&caps, false);
        let p = pod(&w);
        let sec = secret(&w, "tok", "cert", "key");
        assert_eq!(sec.metadata.name, p.metadata.name);
        let l = p.metadata.labels.clone().unwrap_or_default();
        assert_eq!(l.get(labels::NODE).map(String::as_str), Some("node1"));
        assert_eq!(
            l.get(labels::PROFILE).map(String::as_str),
            Some("etc-write")
        );
        assert_eq!(
            l.get(labels::COMPONENT).map(String::as_str),
            Some(labels::COMPONENT_WORKER)
        );
        assert!(
            p.metadata.owner_references.is_none(),
            "the pool owns workers, not a task"
        );
    }

    #[test]
    fn only_workers_that_may_change_the_node_mount_the_node_lock() {
        let write = Capabilities {
            etc: EtcAccess::Write,
            docker: false,
            ..Default::default()
        };
        let p = pod(&spec(&write, false));
        assert!(mounts(&p).contains(&(NODE_LOCK_MOUNT.into(), false)));
        assert_eq!(
            env_of(&p, "HOSTPLUG_NODE_LOCK_FILE").as_deref(),
            Some(hostplug_api::worker::paths::NODE_LOCK_FILE)
        );
        for (caps, dry_run) in [(write.clone(), true), (Capabilities::default(), false)] {
            let p = pod(&spec(&caps, dry_run));
            assert!(!mounts(&p).iter().any(|(m, _)| m == NODE_LOCK_MOUNT));
            assert_eq!(env_of(&p, "HOSTPLUG_NODE_LOCK_FILE"), None);
        }
        // A read-only method of a write plugin runs read-only.
        assert_eq!(
            AccessProfile::for_call(&write, false, false).etc,
            EtcAccess::Read
        );
        assert_eq!(
            AccessProfile::for_call(&write, false, true).etc,
            EtcAccess::Write
        );
    }
}

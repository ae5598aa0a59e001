//! The Kubernetes objects the operator creates per task and node: a Secret with the
//! worker's token and TLS key pair, the worker Pod and a headless Service.
//!
//! Pure builders, unit-tested per capability. The Pod gets only what the plugin's
//! capabilities need (/etc read-only or read-write, read-only for dry runs; the docker
//! socket only with `docker`); it is never privileged, drops every Linux capability but
//! the few that writing root-owned files needs, has a read-only root filesystem and the
//! RuntimeDefault seccomp profile.

use std::collections::BTreeMap;

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::{
    Capabilities as LinuxCapabilities, Container, ContainerPort, EmptyDirVolumeSource, EnvVar,
    EnvVarSource, HTTPGetAction, HostPathVolumeSource, ObjectFieldSelector, Pod,
    PodSecurityContext, PodSpec, Probe, ResourceRequirements, SeccompProfile, Secret,
    SecretVolumeSource, SecurityContext, Service, ServicePort, ServiceSpec, Toleration, Volume,
    VolumeMount,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use sha2::{Digest as _, Sha256};

use crate::crd::{Capabilities, EtcAccess, labels};

/// Secret key of the bearer token.
pub const SECRET_TOKEN_KEY: &str = "token";
/// Secret key of the worker's certificate (PEM).
pub const SECRET_CERT_KEY: &str = "tls.crt";
/// Secret key of the worker's private key (PEM).
pub const SECRET_KEY_KEY: &str = "tls.key";

/// Where the task Secret is mounted in the worker.
const SECRET_MOUNT: &str = "/run/hostplug/secret";
/// Where the node's /etc is mounted in the worker (the worker's default `--etc-dir`).
const ETC_MOUNT: &str = "/host/etc";
/// The Docker socket on a node.
pub const NODE_DOCKER_SOCKET: &str = "/var/run/docker.sock";
/// Where the Docker socket is mounted in the worker.
const DOCKER_MOUNT: &str = "/host/run/docker.sock";
/// The worker's module cache (an emptyDir, since the root filesystem is read-only).
const CACHE_MOUNT: &str = "/var/cache/hostplug";
/// Size cap of the cache emptyDir: 256 MiB holds a few precompiled modules (a
/// precompiled component is a few times its module size) with room to spare.
const CACHE_SIZE_LIMIT: &str = "256Mi";
/// Memory limit of a worker container: 640 MiB = the worker's 4 invocation slots × 128
/// MiB linear memory plus ~128 MiB for the runtime, compiled code and buffers.
const WORKER_MEMORY_LIMIT: &str = "640Mi";
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

/// Everything the builders need to know about one task on one node.
#[derive(Debug, Clone)]
pub struct WorkerSpec<'a> {
    /// Task name.
    pub task: &'a str,
    /// Task namespace (children live next to the task).
    pub namespace: &'a str,
    /// Owner reference to the task.
    pub owner: OwnerReference,
    /// Task generation the Pod is made for.
    pub generation: i64,
    /// Target node.
    pub node: &'a str,
    /// Worker image.
    pub image: &'a str,
    /// Worker port.
    pub port: i32,
    /// The plugin's capabilities.
    pub capabilities: &'a Capabilities,
    /// Whether the task is a dry run (then /etc is read-only whatever the capability).
    pub dry_run: bool,
    /// Per-invocation deadline the worker accepts at most, ms.
    pub max_invoke_timeout_ms: u64,
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

/// Labels of every child object of `task` for `node`.
pub fn child_labels(task: &str, node: &str) -> BTreeMap<String, String> {
    [
        ("app.kubernetes.io/managed-by", labels::MANAGED_BY),
        ("app.kubernetes.io/name", "hostplug"),
        (labels::TASK, task),
        (labels::NODE, &label_value(node)),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect()
}

/// A label value for an arbitrary string (node names may be up to 253 characters).
fn label_value(s: &str) -> String {
    if s.len() <= 63 {
        s.to_owned()
    } else {
        hex::encode(&Sha256::digest(s.as_bytes())[..16])
    }
}

fn meta(w: &WorkerSpec<'_>, extra: &[(&str, &str)]) -> ObjectMeta {
    let mut labels = child_labels(w.task, w.node);
    for (k, v) in extra {
        labels.insert((*k).to_owned(), (*v).to_owned());
    }
    ObjectMeta {
        name: Some(child_name(w.task, w.node)),
        namespace: Some(w.namespace.to_owned()),
        labels: Some(labels),
        owner_references: Some(vec![w.owner.clone()]),
        ..ObjectMeta::default()
    }
}

/// The Secret holding the worker's token and TLS key pair.
pub fn secret(w: &WorkerSpec<'_>, token: &str, cert_pem: &str, key_pem: &str) -> Secret {
    let data = [
        (SECRET_TOKEN_KEY, token),
        (SECRET_CERT_KEY, cert_pem),
        (SECRET_KEY_KEY, key_pem),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), ByteString(v.as_bytes().to_vec())))
    .collect();
    Secret {
        metadata: meta(w, &[]),
        type_: Some("Opaque".to_owned()),
        data: Some(data),
        immutable: Some(true),
        ..Secret::default()
    }
}

/// How the worker may reach /etc on this node for this task.
pub fn etc_access(caps: &Capabilities, dry_run: bool) -> EtcAccess {
    match (caps.etc, dry_run) {
        (EtcAccess::Write, true) => EtcAccess::Read,
        (e, _) => e,
    }
}

fn etc_flag(e: EtcAccess) -> &'static str {
    match e {
        EtcAccess::None => "none",
        EtcAccess::Read => "read",
        EtcAccess::Write => "write",
    }
}

fn env(name: &str, value: impl Into<String>) -> EnvVar {
    EnvVar {
        name: name.to_owned(),
        value: Some(value.into()),
        value_from: None,
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
pub fn pod(w: &WorkerSpec<'_>) -> Pod {
    let name = child_name(w.task, w.node);
    let etc = etc_access(w.capabilities, w.dry_run);
    let needs_root = etc != EtcAccess::None || w.capabilities.docker;
    let generation = w.generation.to_string();
    let mut env_vars = vec![
        EnvVar {
            name: "POD_IP".to_owned(),
            value: None,
            value_from: Some(EnvVarSource {
                field_ref: Some(ObjectFieldSelector {
                    field_path: "status.podIP".to_owned(),
                    api_version: None,
                }),
                ..EnvVarSource::default()
            }),
        },
        env("HOSTPLUG_LISTEN", format!("$(POD_IP):{}", w.port)),
        env(
            "HOSTPLUG_TLS_CERT",
            format!("{SECRET_MOUNT}/{SECRET_CERT_KEY}"),
        ),
        env(
            "HOSTPLUG_TLS_KEY",
            format!("{SECRET_MOUNT}/{SECRET_KEY_KEY}"),
        ),
        env(
            "HOSTPLUG_TOKEN_FILE",
            format!("{SECRET_MOUNT}/{SECRET_TOKEN_KEY}"),
        ),
        env("HOSTPLUG_ETC_DIR", ETC_MOUNT),
        env("HOSTPLUG_ETC_ACCESS", etc_flag(etc)),
        env("HOSTPLUG_CACHE_DIR", CACHE_MOUNT),
        env("HOSTPLUG_LOG_FORMAT", "json"),
        env(
            "HOSTPLUG_MAX_INVOKE_TIMEOUT_MS",
            w.max_invoke_timeout_ms.to_string(),
        ),
    ];
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
                path: "/etc".to_owned(),
                type_: Some("Directory".to_owned()),
            }),
            ..Volume::default()
        });
    }
    if w.capabilities.docker {
        env_vars.push(env("HOSTPLUG_DOCKER_SOCKET", DOCKER_MOUNT));
        mounts.push(VolumeMount {
            name: "docker".to_owned(),
            mount_path: DOCKER_MOUNT.to_owned(),
            ..VolumeMount::default()
        });
        volumes.push(Volume {
            name: "docker".to_owned(),
            host_path: Some(HostPathVolumeSource {
                path: NODE_DOCKER_SOCKET.to_owned(),
                type_: Some("Socket".to_owned()),
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
                    Quantity(WORKER_MEMORY_LIMIT.to_owned()),
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
        metadata: meta(
            w,
            &[
                (labels::COMPONENT, labels::COMPONENT_WORKER),
                (labels::GENERATION, &generation),
            ],
        ),
        spec: Some(PodSpec {
            node_name: Some(w.node.to_owned()),
            restart_policy: Some("Never".to_owned()),
            automount_service_account_token: Some(false),
            enable_service_links: Some(false),
            host_network: Some(false),
            host_pid: Some(false),
            host_ipc: Some(false),
            tolerations: Some(
                crate::validate::CONTROL_PLANE_LABELS
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

/// The headless Service in front of the worker Pod (DNS name for people and tools; the
/// operator itself dials the Pod IP and pins the certificate).
pub fn service(w: &WorkerSpec<'_>) -> Service {
    let mut selector = child_labels(w.task, w.node);
    selector.remove("app.kubernetes.io/managed-by");
    selector.remove("app.kubernetes.io/name");
    Service {
        metadata: meta(w, &[]),
        spec: Some(ServiceSpec {
            cluster_ip: Some("None".to_owned()),
            selector: Some(selector),
            ports: Some(vec![ServicePort {
                name: Some("https".to_owned()),
                port: w.port,
                target_port: Some(IntOrString::String("https".to_owned())),
                protocol: Some("TCP".to_owned()),
                ..ServicePort::default()
            }]),
            ..ServiceSpec::default()
        }),
        status: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec<'a>(caps: &'a Capabilities, dry_run: bool) -> WorkerSpec<'a> {
        WorkerSpec {
            task: "set-ntp",
            namespace: "hostplug-system",
            owner: OwnerReference {
                api_version: "hostplug.dev/v1alpha1".into(),
                kind: "HostTask".into(),
                name: "set-ntp".into(),
                uid: "u1".into(),
                controller: Some(true),
                block_owner_deletion: Some(true),
            },
            generation: 3,
            node: "node1",
            image: "ghcr.io/hostplug/worker:dev",
            port: 8443,
            capabilities: caps,
            dry_run,
            max_invoke_timeout_ms: 60_000,
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
        };
        let p = pod(&spec(&caps, false));
        assert!(mounts(&p).contains(&(ETC_MOUNT.into(), false)));
        assert!(!mounts(&p).iter().any(|(m, _)| m == DOCKER_MOUNT));
        assert_eq!(env_of(&p, "HOSTPLUG_ETC_ACCESS").as_deref(), Some("write"));
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
    fn docker_capability_mounts_the_socket_only() {
        let caps = Capabilities {
            etc: EtcAccess::None,
            docker: true,
        };
        let p = pod(&spec(&caps, false));
        let m = mounts(&p);
        assert!(m.iter().any(|(p, _)| p == DOCKER_MOUNT));
        assert!(!m.iter().any(|(p, _)| p == ETC_MOUNT));
        assert_eq!(
            env_of(&p, "HOSTPLUG_DOCKER_SOCKET").as_deref(),
            Some(DOCKER_MOUNT)
        );
    }

    #[test]
    fn children_share_a_valid_name_and_owner() {
        let caps = Capabilities::default();
        let w = spec(&caps, false);
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
            "distinct nodes must not share children"
        );
        let s = service(&w);
        assert_eq!(s.metadata.name.as_deref(), Some("set-ntp-node1"));
        assert_eq!(
            s.metadata
                .owner_references
                .as_ref()
                .map(|o| o[0].uid.as_str()),
            Some("u1")
        );
        let sec = secret(&w, "tok", "cert", "key");
        assert_eq!(sec.metadata.name, s.metadata.name);
        assert_eq!(pod(&w).metadata.name, s.metadata.name);
    }
}

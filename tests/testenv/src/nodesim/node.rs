//! Node registration and heartbeats: the Node object, its status and its Lease.
//!
//! Everything is written with the simulator's field manager; the Ready condition and the
//! Lease are refreshed every [`HEARTBEAT_INTERVAL`] until the simulator shuts down.

use std::net::Ipv4Addr;
use std::path::Path;

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Node;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, Time};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, Patch, PatchParams};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use super::{Error, FIELD_MANAGER, HEARTBEAT_INTERVAL, Result, SimNode};

/// The role label (and taint key) of control-plane nodes.
pub(crate) const CONTROL_PLANE_ROLE: &str = "node-role.kubernetes.io/control-plane";

/// The capacity every simulated node reports. Nothing enforces it; it only has to be large
/// enough that nothing in the control plane refuses to place Pods.
const CAPACITY: [(&str, &str); 4] = [
    ("cpu", "8"),
    ("memory", "16Gi"),
    ("pods", "110"),
    ("ephemeral-storage", "100Gi"),
];

/// How long a Lease stays valid without renewal (the kubelet's default).
const LEASE_DURATION_SECONDS: i32 = 40;

/// Creates a node's file system tree with a few files a real node has, keeping files that
/// already exist.
pub(crate) fn seed_node_root(root: &Path, node: &str, ip: Ipv4Addr) -> Result<()> {
    let files = [
        ("etc/hostname", format!("{node}\n")),
        (
            "etc/hosts",
            format!("127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n{ip}\t{node}\n"),
        ),
        (
            "etc/chrony.conf",
            "# chrony configuration of a simulated node\npool 2.debian.pool.ntp.org iburst\n\
             driftfile /var/lib/chrony/chrony.drift\nmakestep 1 3\nrtcsync\n"
                .to_owned(),
        ),
        (
            "etc/os-release",
            "PRETTY_NAME=\"hostplug simulated node\"\nNAME=\"hostplug-nodesim\"\nID=hostplug-nodesim\n"
                .to_owned(),
        ),
        ("etc/resolv.conf", "nameserver 127.0.0.53\n".to_owned()),
    ];
    for dir in ["etc", "var/lib", "var/log", "run", "tmp"] {
        let path = root.join(dir);
        std::fs::create_dir_all(&path)
            .map_err(|e| Error::io("creating a node directory", &path, e))?;
    }
    // As on a real node, /var/run is a link to /run: a socket placed at either path is
    // found by a hostPath of the other.
    let var_run = root.join("var/run");
    if std::fs::symlink_metadata(&var_run).is_err() {
        std::os::unix::fs::symlink("../run", &var_run)
            .map_err(|e| Error::io("linking /var/run to /run", &var_run, e))?;
    }
    for (rel, content) in files {
        let path = root.join(rel);
        if !path.exists() {
            std::fs::write(&path, content)
                .map_err(|e| Error::io("seeding a node file", &path, e))?;
        }
    }
    Ok(())
}

fn architecture() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    }
}

fn node_object(node: &SimNode) -> Value {
    let spec = &node.spec;
    let mut labels = serde_json::Map::new();
    labels.insert("kubernetes.io/hostname".into(), json!(spec.name));
    labels.insert("kubernetes.io/os".into(), json!("linux"));
    labels.insert("kubernetes.io/arch".into(), json!(architecture()));
    labels.insert("beta.kubernetes.io/os".into(), json!("linux"));
    labels.insert("beta.kubernetes.io/arch".into(), json!(architecture()));
    if spec.control_plane {
        labels.insert(CONTROL_PLANE_ROLE.into(), json!(""));
    }
    for (k, v) in &spec.labels {
        labels.insert(k.clone(), json!(v));
    }
    let mut taints: Vec<Value> = Vec::new();
    if spec.control_plane {
        taints.push(json!({"key": CONTROL_PLANE_ROLE, "effect": "NoSchedule"}));
    }
    for taint in &spec.taints {
        if let Ok(t) = serde_json::to_value(taint) {
            taints.push(t);
        }
    }
    json!({
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": spec.name,
            "labels": labels,
            "annotations": {"node.alpha.kubernetes.io/ttl": "0"},
        },
        "spec": {"taints": taints},
    })
}

fn node_status(node: &SimNode, version: &str, now: Timestamp, transition: Timestamp) -> Value {
    let capacity: serde_json::Map<String, Value> = CAPACITY
        .iter()
        .map(|(k, v)| ((*k).to_owned(), json!(v)))
        .collect();
    let condition = |type_: &str, status: &str, reason: &str, message: &str| {
        json!({
            "type": type_, "status": status, "reason": reason, "message": message,
            "lastHeartbeatTime": Time(now), "lastTransitionTime": Time(transition),
        })
    };
    json!({
        "status": {
            "conditions": [
                condition("MemoryPressure", "False", "KubeletHasSufficientMemory", "kubelet has sufficient memory available"),
                condition("DiskPressure", "False", "KubeletHasNoDiskPressure", "kubelet has no disk pressure"),
                condition("PIDPressure", "False", "KubeletHasSufficientPID", "kubelet has sufficient PID available"),
                condition("Ready", "True", "KubeletReady", "hostplug node simulator is posting ready status"),
            ],
            "addresses": [
                {"type": "InternalIP", "address": node.ip.to_string()},
                {"type": "Hostname", "address": node.spec.name},
            ],
            "capacity": capacity,
            "allocatable": capacity,
            "daemonEndpoints": {"kubeletEndpoint": {"Port": 10250}},
            "nodeInfo": {
                "machineID": format!("hostplug-nodesim-{}", node.spec.name),
                "systemUUID": format!("hostplug-nodesim-{}", node.spec.name),
                "bootID": format!("hostplug-nodesim-{}-{}", node.spec.name, transition.as_second()),
                "kernelVersion": kernel_version(),
                "osImage": "hostplug node simulator",
                "containerRuntimeVersion": "hostplug-nodesim://0.1.0",
                "kubeletVersion": version,
                "kubeProxyVersion": "",
                "operatingSystem": "linux",
                "architecture": architecture(),
            },
        }
    })
}

fn kernel_version() -> String {
    std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_owned())
        .unwrap_or_default()
}

/// Creates or updates the Node object and posts its Ready status.
pub(crate) async fn register(client: &kube::Client, node: &SimNode, version: &str) -> Result<()> {
    let api: Api<Node> = Api::all(client.clone());
    let name = &node.spec.name;
    let params = PatchParams::apply(FIELD_MANAGER).force();
    api.patch(name, &params, &Patch::Apply(node_object(node)))
        .await
        .map_err(|e| Error::kube(format!("registering node {name}"), e))?;
    let now = Timestamp::now();
    post_status(&api, node, version, now, now).await?;
    renew_lease(client, node).await
}

async fn post_status(
    api: &Api<Node>,
    node: &SimNode,
    version: &str,
    now: Timestamp,
    transition: Timestamp,
) -> Result<()> {
    let name = &node.spec.name;
    // A merge patch replaces the condition list as a whole, as the kubelet's status does.
    api.patch_status(
        name,
        &PatchParams::default(),
        &Patch::Merge(node_status(node, version, now, transition)),
    )
    .await
    .map_err(|e| Error::kube(format!("posting the status of node {name}"), e))?;
    Ok(())
}

async fn renew_lease(client: &kube::Client, node: &SimNode) -> Result<()> {
    let name = &node.spec.name;
    let nodes: Api<Node> = Api::all(client.clone());
    let uid = nodes
        .get(name)
        .await
        .map_err(|e| Error::kube(format!("reading node {name}"), e))?
        .metadata
        .uid;
    let mut lease = json!({
        "apiVersion": "coordination.k8s.io/v1",
        "kind": "Lease",
        "metadata": {"name": name, "namespace": "kube-node-lease"},
        "spec": {
            "holderIdentity": name,
            "leaseDurationSeconds": LEASE_DURATION_SECONDS,
            "renewTime": MicroTime(Timestamp::now()),
        },
    });
    if let Some(uid) = uid {
        lease["metadata"]["ownerReferences"] =
            json!([{"apiVersion": "v1", "kind": "Node", "name": name, "uid": uid}]);
    }
    let leases: Api<Lease> = Api::namespaced(client.clone(), "kube-node-lease");
    leases
        .patch(
            name,
            &PatchParams::apply(FIELD_MANAGER).force(),
            &Patch::Apply(lease),
        )
        .await
        .map_err(|e| Error::kube(format!("renewing the lease of node {name}"), e))?;
    Ok(())
}

/// Renews the Lease and re-posts the Ready condition until `shutdown`; re-registers the
/// Node when it was deleted.
pub(crate) async fn heartbeat(
    client: kube::Client,
    node: SimNode,
    version: String,
    shutdown: CancellationToken,
) {
    let api: Api<Node> = Api::all(client.clone());
    let transition = Timestamp::now();
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(HEARTBEAT_INTERVAL) => {}
        }
        let exists = matches!(api.get_opt(&node.spec.name).await, Ok(Some(_)));
        let result = if exists {
            match post_status(&api, &node, &version, Timestamp::now(), transition).await {
                Ok(()) => renew_lease(&client, &node).await,
                Err(e) => Err(e),
            }
        } else {
            register(&client, &node, &version).await
        };
        if let Err(e) = result
            && !shutdown.is_cancelled()
        {
            tracing::warn!(node = %node.spec.name, error = %e, "node heartbeat failed");
        }
    }
}

//! The node simulator against a real control plane (built by `make setup`): nodes, Pods run
//! as sandboxed local processes, volumes, probes, status and deletion. Each test starts a
//! private environment with the default nodes (`master`, `node1`, `node2`).

use std::time::Duration;

use hostplug_testenv::{EnvConfig, Environment};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{ConfigMap, Node, Pod, Secret, ServiceAccount};
use kube::api::{DeleteParams, ListParams, PostParams};
use kube::{Api, ResourceExt};
use serde_json::json;

/// An image that stands for the host's `/bin/sh`.
const SHELL_IMAGE: &str = "registry.example/shell:1";
/// An image that stands for the host's Python, for a small HTTP server.
const PYTHON_IMAGE: &str = "registry.example/python:3";
const TIMEOUT: Duration = Duration::from_secs(60);

async fn start() -> Environment {
    let python = std::fs::canonicalize("/usr/bin/python3").expect("python3 in /usr/bin");
    let config = EnvConfig::default()
        .with_image(SHELL_IMAGE, "/bin/sh")
        .with_image(PYTHON_IMAGE, python);
    let env = Environment::start(config)
        .await
        .expect("start the environment");
    // Pods can only be created once the ServiceAccount controller made `default`.
    let accounts: Api<ServiceAccount> = Api::namespaced(env.admin_client(), "default");
    let exists = |sa: Option<&ServiceAccount>| sa.is_some();
    env.wait_for(&accounts, "default", exists, TIMEOUT)
        .await
        .expect("the default ServiceAccount");
    env
}

fn shell_pod(name: &str, node: &str, script: &str, extra: serde_json::Value) -> Pod {
    let mut pod = json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": "default"},
        "spec": {
            "nodeName": node,
            "restartPolicy": "Never",
            "terminationGracePeriodSeconds": 2,
            "containers": [{
                "name": "main",
                "image": SHELL_IMAGE,
                "command": ["/bin/sh", "-c", script],
            }],
        },
    });
    merge(&mut pod, extra);
    serde_json::from_value(pod).expect("a valid Pod")
}

fn merge(into: &mut serde_json::Value, from: serde_json::Value) {
    match (into, from) {
        (serde_json::Value::Object(a), serde_json::Value::Object(b)) => {
            for (k, v) in b {
                merge(a.entry(k).or_insert(serde_json::Value::Null), v);
            }
        }
        (a, b) => *a = b,
    }
}

fn phase(pod: &Pod) -> &str {
    pod.status
        .as_ref()
        .and_then(|s| s.phase.as_deref())
        .unwrap_or("")
}

fn terminal(pod: Option<&Pod>) -> bool {
    pod.is_some_and(|p| matches!(phase(p), "Succeeded" | "Failed"))
}

async fn wait_pod(
    env: &Environment,
    name: &str,
    cond: impl Fn(Option<&Pod>) -> bool + Send + 'static,
) -> Pod {
    let pods: Api<Pod> = Api::namespaced(env.admin_client(), "default");
    match env.wait_for(&pods, name, cond, TIMEOUT).await {
        Ok(Some(pod)) => pod,
        other => {
            let pod = pods.get_opt(name).await.ok().flatten();
            let log = env
                .node_simulator()
                .map(|s| s.container_log("default", name, "main"))
                .and_then(|p| std::fs::read_to_string(p).ok())
                .unwrap_or_default();
            panic!(
                "waiting for pod {name}: {other:?}\nstatus: {:#?}\nlog:\n{log}",
                pod.and_then(|p| p.status)
            );
        }
    }
}

fn main_state(pod: &Pod) -> k8s_openapi::api::core::v1::ContainerState {
    pod.status
        .as_ref()
        .and_then(|s| s.container_statuses.as_ref())
        .and_then(|c| c.first())
        .and_then(|c| c.state.clone())
        .unwrap_or_default()
}

#[tokio::test]
async fn nodes_are_registered_ready_and_keep_their_leases() {
    let env = start().await;
    let nodes: Api<Node> = Api::all(env.admin_client());
    for name in ["master", "node1", "node2"] {
        let node = nodes.get(name).await.expect("the node exists");
        let ready = node
            .status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .and_then(|c| c.iter().find(|c| c.type_ == "Ready"))
            .map(|c| c.status.clone());
        assert_eq!(ready.as_deref(), Some("True"), "{name}");
        let labels = node.labels();
        assert_eq!(
            labels.get("kubernetes.io/hostname").map(String::as_str),
            Some(name)
        );
        assert_eq!(
            labels.get("kubernetes.io/os").map(String::as_str),
            Some("linux")
        );
        let control_plane = labels.contains_key("node-role.kubernetes.io/control-plane");
        assert_eq!(control_plane, name == "master");
        let tainted = node
            .spec
            .as_ref()
            .and_then(|s| s.taints.as_ref())
            .is_some_and(|t| {
                t.iter().any(|t| {
                    t.key == "node-role.kubernetes.io/control-plane" && t.effect == "NoSchedule"
                })
            });
        assert_eq!(tainted, name == "master");
        let addresses = node
            .status
            .as_ref()
            .and_then(|s| s.addresses.clone())
            .unwrap_or_default();
        assert!(
            addresses
                .iter()
                .any(|a| a.type_ == "InternalIP" && a.address.starts_with("127.")),
            "{addresses:?}"
        );
    }
    let leases: Api<Lease> = Api::namespaced(env.admin_client(), "kube-node-lease");
    let names: Vec<String> = leases
        .list(&ListParams::default())
        .await
        .expect("list leases")
        .into_iter()
        .map(|l| l.name_any())
        .collect();
    for name in ["master", "node1", "node2"] {
        assert!(names.iter().any(|n| n == name), "{names:?}");
    }
    let renewed = |lease: &Lease| lease.spec.as_ref().and_then(|s| s.renew_time.clone());
    let first = renewed(&leases.get("node1").await.expect("node1's lease"));
    assert!(first.is_some());
    // The heartbeat (every 10 s) renews the lease, and the node lifecycle controller has
    // put no not-ready or unreachable taint on any node meanwhile.
    tokio::time::sleep(Duration::from_secs(15)).await;
    let second = renewed(&leases.get("node1").await.expect("node1's lease"));
    assert!(second > first, "{first:?} → {second:?}");
    for name in ["master", "node1", "node2"] {
        let node = nodes.get(name).await.expect("the node exists");
        let not_ready_taint = node
            .spec
            .as_ref()
            .and_then(|s| s.taints.as_ref())
            .is_some_and(|t| t.iter().any(|t| t.key.starts_with("node.kubernetes.io/")));
        assert!(
            !not_ready_taint,
            "{name}: {:?}",
            node.spec.and_then(|s| s.taints)
        );
    }
    env.shutdown().await.expect("shutdown");
}

#[tokio::test]
async fn volumes_host_path_per_node_read_only_secret_and_env() {
    let env = start().await;
    let client = env.admin_client();
    let secrets: Api<Secret> = Api::namespaced(client.clone(), "default");
    let secret: Secret = serde_json::from_value(json!({
        "metadata": {"name": "creds"},
        "stringData": {"token": "s3cret", "user": "alice"},
    }))
    .expect("a Secret");
    secrets
        .create(&PostParams::default(), &secret)
        .await
        .expect("create the Secret");
    let configmaps: Api<ConfigMap> = Api::namespaced(client.clone(), "default");
    let configmap: ConfigMap = serde_json::from_value(json!({
        "metadata": {"name": "settings"},
        "data": {"greeting": "hello", "other": "not mounted"},
    }))
    .expect("a ConfigMap");
    configmaps
        .create(&PostParams::default(), &configmap)
        .await
        .expect("create the ConfigMap");

    let script = r#"
        set -u
        echo "written by $POD_NAME on $NODE" > /host/etc/written-by-pod
        cat /host/etc/hostname
        if echo x > /ro/etc/should-fail 2>/dev/null; then echo "READONLY-BROKEN"; exit 10; fi
        test "$(cat /secret/token)" = s3cret || exit 11
        test "$(cat /secret/user)" = alice || exit 12
        test "$TOKEN" = s3cret || exit 13
        test "$POD_IP" != "" || exit 14
        test "$(hostname)" = "$POD_NAME" || exit 15
        test -s /var/run/secrets/kubernetes.io/serviceaccount/token || exit 16
        test -s /var/run/secrets/kubernetes.io/serviceaccount/ca.crt || exit 17
        ls /proc/self >/dev/null || exit 18
        grep -q "CapBnd:.*00000000a80425fb" /proc/self/status || exit 19
        test "$(cat /config/greeting.txt)" = hello || exit 20
        test ! -e /config/other || exit 21
        echo scratch > /scratch/file || exit 22
        exit 0
    "#;
    let extra = json!({
        "spec": {
            "containers": [{
                "name": "main",
                "image": SHELL_IMAGE,
                "command": ["/bin/sh", "-c", script],
                "env": [
                    {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
                    {"name": "NODE", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}},
                    {"name": "POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
                    {"name": "TOKEN", "valueFrom": {"secretKeyRef": {"name": "creds", "key": "token"}}},
                ],
                "volumeMounts": [
                    {"name": "etc", "mountPath": "/host/etc"},
                    {"name": "etc", "mountPath": "/ro/etc", "readOnly": true},
                    {"name": "secret", "mountPath": "/secret"},
                    {"name": "config", "mountPath": "/config"},
                    {"name": "scratch", "mountPath": "/scratch"},
                ],
            }],
            "volumes": [
                {"name": "etc", "hostPath": {"path": "/etc", "type": "Directory"}},
                {"name": "secret", "secret": {"secretName": "creds", "defaultMode": 0o400}},
                {"name": "config", "configMap": {"name": "settings", "items": [{"key": "greeting", "path": "greeting.txt"}]}},
                {"name": "scratch", "emptyDir": {}},
            ],
        },
    });
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let pod = shell_pod("writer", "node1", script, extra);
    pods.create(&PostParams::default(), &pod)
        .await
        .expect("create the Pod");
    let done = wait_pod(&env, "writer", terminal).await;
    let log = std::fs::read_to_string(
        env.node_simulator()
            .expect("nodes")
            .container_log("default", "writer", "main"),
    )
    .unwrap_or_default();
    assert_eq!(phase(&done), "Succeeded", "{:#?}\nlog:\n{log}", done.status);
    assert!(
        log.contains("node1"),
        "the Pod saw node1's /etc/hostname: {log}"
    );
    let terminated = main_state(&done).terminated.expect("terminated");
    assert_eq!(terminated.exit_code, 0);
    assert_eq!(terminated.reason.as_deref(), Some("Completed"));

    let node1 = env
        .node_root("node1")
        .expect("node1")
        .join("etc/written-by-pod");
    let node2 = env
        .node_root("node2")
        .expect("node2")
        .join("etc/written-by-pod");
    let content = std::fs::read_to_string(&node1).expect("the file is in node1's tree");
    assert_eq!(content, "written by writer on node1\n");
    assert!(!node2.exists(), "node2's /etc is untouched");
    assert!(
        !env.node_root("node1")
            .expect("node1")
            .join("etc/should-fail")
            .exists()
    );
    assert!(
        !std::path::Path::new("/etc/written-by-pod").exists(),
        "the host's /etc is untouched"
    );

    // A Socket hostPath reaches a real socket in the node's tree (as a Docker socket would).
    let socket = env.node_root("node2").expect("node2").join("run/test.sock");
    let listener =
        std::os::unix::net::UnixListener::bind(&socket).expect("bind a socket in node2's tree");
    let reader = std::thread::spawn(move || {
        let (mut stream, _) = listener.accept().expect("the Pod connects");
        let mut got = String::new();
        std::io::Read::read_to_string(&mut stream, &mut got).expect("read");
        got
    });
    let client_pod: Pod = serde_json::from_value(json!({
        "metadata": {"name": "socket-client", "namespace": "default"},
        "spec": {
            "nodeName": "node2",
            "restartPolicy": "Never",
            "automountServiceAccountToken": false,
            "containers": [{
                "name": "main",
                "image": PYTHON_IMAGE,
                "command": ["python3", "-c",
                    "import socket; s = socket.socket(socket.AF_UNIX); s.connect('/var/run/docker.sock'); s.sendall(b'ping from pod'); s.close()"],
                "volumeMounts": [{"name": "sock", "mountPath": "/var/run/docker.sock"}],
            }],
            "volumes": [{"name": "sock", "hostPath": {"path": "/run/test.sock", "type": "Socket"}}],
        },
    }))
    .expect("a Pod");
    pods.create(&PostParams::default(), &client_pod)
        .await
        .expect("create the Pod");
    let done = wait_pod(&env, "socket-client", terminal).await;
    assert_eq!(phase(&done), "Succeeded", "{:#?}", done.status);
    assert_eq!(reader.join().expect("the reader thread"), "ping from pod");
    env.shutdown().await.expect("shutdown");
}

#[tokio::test]
async fn a_server_pod_becomes_ready_answers_on_its_ip_and_stops_when_deleted() {
    let env = start().await;
    let pods: Api<Pod> = Api::namespaced(env.admin_client(), "default");
    let pod: Pod = serde_json::from_value(json!({
        "metadata": {"name": "web", "namespace": "default"},
        "spec": {
            "nodeName": "node2",
            "terminationGracePeriodSeconds": 3,
            "containers": [{
                "name": "main",
                "image": PYTHON_IMAGE,
                "args": ["-m", "http.server", "--bind", "$(POD_IP)", "--directory", "/www", "8080"],
                "env": [{"name": "POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}}],
                "ports": [{"name": "http", "containerPort": 8080}],
                "readinessProbe": {"httpGet": {"path": "/", "port": "http"}, "periodSeconds": 1},
                "livenessProbe": {"tcpSocket": {"port": 8080}, "periodSeconds": 2, "initialDelaySeconds": 2},
                "volumeMounts": [{"name": "www", "mountPath": "/www"}],
                "securityContext": {"readOnlyRootFilesystem": true, "allowPrivilegeEscalation": false, "capabilities": {"drop": ["ALL"]}},
            }],
            "volumes": [{"name": "www", "hostPath": {"path": "/srv/www", "type": "DirectoryOrCreate"}}],
        },
    }))
    .expect("a Pod");
    let www = env.node_root("node2").expect("node2").join("srv/www");
    std::fs::create_dir_all(&www).expect("create the web root");
    std::fs::write(www.join("hello.txt"), "hello from node2\n").expect("write a page");
    pods.create(&PostParams::default(), &pod)
        .await
        .expect("create the Pod");

    let ready = |p: Option<&Pod>| {
        p.and_then(|p| p.status.as_ref())
            .and_then(|s| s.conditions.as_ref())
            .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
    };
    let running = wait_pod(&env, "web", ready).await;
    assert_eq!(phase(&running), "Running");
    let status = running.status.clone().expect("status");
    let ip = status.pod_ip.clone().expect("a Pod IP");
    assert!(ip.starts_with("127."), "{ip}");
    assert_ne!(
        Some(ip.clone()),
        status.host_ip,
        "the Pod has its own address"
    );
    assert!(status.start_time.is_some());

    let body = reqwest::get(format!("http://{ip}:8080/hello.txt"))
        .await
        .expect("the Pod answers on its IP")
        .text()
        .await
        .expect("a body");
    assert_eq!(body, "hello from node2\n");
    assert!(processes_with(&ip).len() == 1, "one server process");

    pods.delete("web", &DeleteParams::default())
        .await
        .expect("delete the Pod");
    wait_pod_gone(&env, "web").await;
    assert!(processes_with(&ip).is_empty(), "the server process is gone");
    let refused = reqwest::get(format!("http://{ip}:8080/hello.txt")).await;
    assert!(refused.is_err(), "nothing answers on the Pod IP any more");

    // HTTPS readiness (no certificate verification, like the kubelet) with the server's
    // certificate from a TLS Secret, gated by an exec startup probe inside the container.
    let certified =
        rcgen::generate_simple_self_signed(vec!["tls".to_owned()]).expect("a certificate");
    let secrets: Api<Secret> = Api::namespaced(env.admin_client(), "default");
    let secret: Secret = serde_json::from_value(json!({
        "metadata": {"name": "tls"},
        "type": "kubernetes.io/tls",
        "stringData": {"tls.crt": certified.cert.pem(), "tls.key": certified.key_pair.serialize_pem()},
    }))
    .expect("a Secret");
    secrets
        .create(&PostParams::default(), &secret)
        .await
        .expect("create the Secret");
    let server = "import http.server, os, ssl\n\
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)\n\
        ctx.load_cert_chain('/tls/tls.crt', '/tls/tls.key')\n\
        srv = http.server.HTTPServer((os.environ['POD_IP'], 8443), http.server.SimpleHTTPRequestHandler)\n\
        srv.socket = ctx.wrap_socket(srv.socket, server_side=True)\n\
        srv.serve_forever()\n";
    let tls_pod: Pod = serde_json::from_value(json!({
        "metadata": {"name": "tls", "namespace": "default"},
        "spec": {
            "nodeName": "node1",
            "terminationGracePeriodSeconds": 1,
            "containers": [{
                "name": "main",
                "image": PYTHON_IMAGE,
                "command": ["python3", "-c", server],
                "env": [{"name": "POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}}],
                "startupProbe": {"exec": {"command": ["/bin/sh", "-c", "test -s /tls/tls.crt && test \"$(hostname)\" = tls"]}, "periodSeconds": 1},
                "readinessProbe": {"httpGet": {"path": "/", "port": 8443, "scheme": "HTTPS"}, "periodSeconds": 1},
                "volumeMounts": [{"name": "tls", "mountPath": "/tls", "readOnly": true}],
            }],
            "volumes": [{"name": "tls", "secret": {"secretName": "tls", "defaultMode": 0o400}}],
        },
    }))
    .expect("a Pod");
    pods.create(&PostParams::default(), &tls_pod)
        .await
        .expect("create the Pod");
    let ready_tls = wait_pod(&env, "tls", ready).await;
    let started = ready_tls
        .status
        .and_then(|s| s.container_statuses)
        .and_then(|c| c.first().and_then(|c| c.started));
    assert_eq!(started, Some(true));
    pods.delete("tls", &DeleteParams::default())
        .await
        .expect("delete the Pod");
    wait_pod_gone(&env, "tls").await;
    env.shutdown().await.expect("shutdown");
}

async fn wait_pod_gone(env: &Environment, name: &str) {
    let pods: Api<Pod> = Api::namespaced(env.admin_client(), "default");
    env.wait_for(&pods, name, |p: Option<&Pod>| p.is_none(), TIMEOUT)
        .await
        .expect("the Pod is released");
}

/// The pids of processes whose command line contains `needle`.
fn processes_with(needle: &str) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|e| e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()))
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline"))
                .map(|c| {
                    String::from_utf8_lossy(&c)
                        .replace('\0', " ")
                        .contains(needle)
                })
                .unwrap_or(false)
        })
        .collect()
}

#[tokio::test]
async fn exit_codes_restarts_and_unknown_images_are_reported() {
    let env = start().await;
    let pods: Api<Pod> = Api::namespaced(env.admin_client(), "default");

    let failing = shell_pod("fails", "node1", "echo bye; exit 3", json!({}));
    pods.create(&PostParams::default(), &failing)
        .await
        .expect("create");
    let restarting = shell_pod(
        "restarts",
        "node2",
        "exit 1",
        json!({"spec": {"restartPolicy": "OnFailure"}}),
    );
    pods.create(&PostParams::default(), &restarting)
        .await
        .expect("create");
    let unknown: Pod = serde_json::from_value(json!({
        "metadata": {"name": "no-image", "namespace": "default"},
        "spec": {"nodeName": "node1", "containers": [{"name": "main", "image": "registry.example/missing:1"}]},
    }))
    .expect("a Pod");
    pods.create(&PostParams::default(), &unknown)
        .await
        .expect("create");

    let failed = wait_pod(&env, "fails", terminal).await;
    assert_eq!(phase(&failed), "Failed");
    let terminated = main_state(&failed).terminated.expect("terminated");
    assert_eq!(terminated.exit_code, 3);
    assert_eq!(terminated.reason.as_deref(), Some("Error"));
    let log = std::fs::read_to_string(
        env.node_simulator()
            .expect("nodes")
            .container_log("default", "fails", "main"),
    )
    .expect("a log");
    assert!(log.contains("bye"), "{log}");

    let restarted = wait_pod(&env, "restarts", |p| {
        p.and_then(|p| p.status.as_ref())
            .and_then(|s| s.container_statuses.as_ref())
            .and_then(|c| c.first())
            .is_some_and(|c| c.restart_count >= 1)
    })
    .await;
    assert_ne!(phase(&restarted), "Succeeded");

    let pulling = wait_pod(&env, "no-image", |p| {
        p.map(main_state)
            .and_then(|s| s.waiting)
            .is_some_and(|w| w.reason.as_deref() == Some("ImagePullBackOff"))
    })
    .await;
    assert_eq!(phase(&pulling), "Pending");
    let message = main_state(&pulling)
        .waiting
        .and_then(|w| w.message)
        .unwrap_or_default();
    assert!(message.contains("registry.example/missing:1"), "{message}");

    // A Pod deleted outright (grace period 0) disappears at once: its process is killed.
    let sleeper = shell_pod("sleeper", "node1", "exec sleep 987654", json!({}));
    pods.create(&PostParams::default(), &sleeper)
        .await
        .expect("create");
    wait_pod(&env, "sleeper", |p| {
        p.is_some_and(|p| phase(p) == "Running")
    })
    .await;
    assert_eq!(processes_with("sleep 987654").len(), 1);
    let now = DeleteParams {
        grace_period_seconds: Some(0),
        ..DeleteParams::default()
    };
    pods.delete("sleeper", &now).await.expect("delete");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !processes_with("sleep 987654").is_empty() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the process outlived its Pod"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // Pods that never ran or already ended are released at once.
    for name in ["fails", "restarts", "no-image"] {
        pods.delete(name, &DeleteParams::default())
            .await
            .expect("delete");
    }
    for name in ["fails", "restarts", "no-image"] {
        wait_pod_gone(&env, name).await;
    }
    env.shutdown().await.expect("shutdown");
}

#[tokio::test]
async fn a_node_added_while_running_joins_ready_with_its_labels() {
    let mut env = start().await;
    let mut spec = hostplug_testenv::nodesim::NodeSpec::worker("node3");
    spec.labels.insert("pool".into(), "late".into());
    env.add_node(spec.clone()).await.expect("add node3");
    let nodes: Api<Node> = Api::all(env.admin_client());
    let node = nodes.get("node3").await.expect("node3 is registered");
    assert_eq!(node.labels().get("pool").map(String::as_str), Some("late"));
    let ready = node
        .status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .and_then(|c| c.iter().find(|c| c.type_ == "Ready"))
        .map(|c| c.status.clone());
    assert_eq!(ready.as_deref(), Some("True"));
    let root = env.node_root("node3").expect("a node simulator");
    assert!(root.join("etc/hostname").is_file(), "{}", root.display());
    let sim = env.node_simulator().expect("a node simulator");
    assert_ne!(sim.node_ip("node3"), sim.node_ip("node2"));
    assert!(sim.node_ip("node3").is_some());
    // A name already taken is refused, and nothing changes.
    assert!(env.add_node(spec).await.is_err());
    // A Pod bound to the new node runs there.
    let pods: Api<Pod> = Api::namespaced(env.admin_client(), "default");
    let pod: Pod = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "on-node3"},
        "spec": {"nodeName": "node3", "restartPolicy": "Never",
                 "containers": [{"name": "c", "image": SHELL_IMAGE, "command": ["/bin/sh", "-c", "exit 0"]}]}
    }))
    .expect("a Pod");
    pods.create(&PostParams::default(), &pod)
        .await
        .expect("create the Pod");
    let done = |p: Option<&Pod>| {
        p.and_then(|p| p.status.as_ref())
            .and_then(|s| s.phase.as_deref())
            == Some("Succeeded")
    };
    env.wait_for(&pods, "on-node3", done, TIMEOUT)
        .await
        .expect("the Pod on node3 ran");
    env.shutdown().await.expect("shutdown");
}

//! Real nodes (kubelet + containerd + runc, see `hostplug_testenv::realnode`): Pods run as
//! a real cluster runs them, and nothing of the nodes touches or outlives the machine.
//! Needs root and `make setup` (tests/nodes/build.sh).

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use hostplug_testenv::realnode::{KUBERNETES_SERVICE_IP, REAL_NODE_LABEL, TEST_IMAGE};
use hostplug_testenv::{EnvConfig, Environment};
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::{ListParams, LogParams, PostParams};
use kube::runtime::conditions::is_pod_running;
use kube::{Api, ResourceExt};
use serde_json::json;

const POD_TIMEOUT: Duration = Duration::from_secs(90);

/// A Pod of the busybox test image on node `node`, running `script` with `sh -c`.
fn pod(name: &str, node: &str, script: &str, restart: &str) -> serde_json::Value {
    json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": { "name": name },
        "spec": {
            "nodeName": node,
            "restartPolicy": restart,
            "terminationGracePeriodSeconds": 1,
            "containers": [{
                "name": "main",
                "image": TEST_IMAGE,
                "imagePullPolicy": "Never",
                "command": ["/bin/sh", "-c", script],
            }],
        },
    })
}

async fn create(env: &Environment, pod: serde_json::Value) -> Pod {
    let api: Api<Pod> = Api::namespaced(env.admin_client(), "default");
    let pod: Pod = serde_json::from_value(pod).expect("a Pod");
    api.create(&PostParams::default(), &pod)
        .await
        .expect("create the Pod")
}

/// Waits until Pod `name` has succeeded; on failure, says what the Pod and its logs say.
async fn wait_succeeded(env: &Environment, name: &str) -> Pod {
    let api: Api<Pod> = Api::namespaced(env.admin_client(), "default");
    let done = env
        .wait_for(
            &api,
            name,
            |p: Option<&Pod>| {
                p.and_then(|p| p.status.as_ref())
                    .and_then(|s| s.phase.as_deref())
                    .is_some_and(|ph| ph == "Succeeded" || ph == "Failed")
            },
            POD_TIMEOUT,
        )
        .await;
    let pod = api.get(name).await.expect("get the Pod");
    let logs = api
        .logs(name, &LogParams::default())
        .await
        .unwrap_or_else(|e| format!("(no logs: {e})"));
    let phase = pod.status.as_ref().and_then(|s| s.phase.clone());
    assert!(
        done.is_ok() && phase.as_deref() == Some("Succeeded"),
        "Pod {name} did not succeed ({done:?}): {:?}\nlogs:\n{logs}",
        pod.status
    );
    pod
}

async fn wait_running(env: &Environment, name: &str) -> Pod {
    let api: Api<Pod> = Api::namespaced(env.admin_client(), "default");
    env.wait_for(&api, name, is_pod_running(), POD_TIMEOUT)
        .await
        .unwrap_or_else(|e| panic!("Pod {name} not running: {e}"))
        .expect("the Pod exists")
}

async fn logs(env: &Environment, name: &str) -> String {
    let api: Api<Pod> = Api::namespaced(env.admin_client(), "default");
    api.logs(name, &LogParams::default())
        .await
        .expect("read the Pod's logs")
}

async fn kubectl(env: &Environment, args: &[&str]) -> String {
    let out = tokio::process::Command::new(env.kubectl())
        .args(args)
        .env("KUBECONFIG", env.kubeconfig_path())
        .output()
        .await
        .expect("run kubectl");
    assert!(
        out.status.success(),
        "kubectl {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pods_on_two_real_nodes_see_their_node_each_other_and_the_api_server() {
    let env = Environment::start(EnvConfig::control_plane_only().with_real_nodes(2))
        .await
        .expect("start the control plane and two real nodes");
    let [real1, real2] = env.real_nodes() else {
        panic!("two real nodes, not {}", env.real_nodes().len());
    };

    // Both nodes are registered, Ready and labelled, with their fabric address.
    let nodes: Api<Node> = Api::all(env.admin_client());
    for n in [real1, real2] {
        let node = nodes.get(n.name()).await.expect("the Node object");
        let labels: BTreeMap<String, String> = node.labels().clone();
        assert_eq!(
            labels.get(REAL_NODE_LABEL).map(String::as_str),
            Some("true")
        );
        let status = node.status.expect("a status");
        assert!(
            status
                .conditions
                .unwrap_or_default()
                .iter()
                .any(|c| c.type_ == "Ready" && c.status == "True"),
            "{} is not Ready",
            n.name()
        );
        let ip = n.ip().to_string();
        assert!(
            status
                .addresses
                .unwrap_or_default()
                .iter()
                .any(|a| a.type_ == "InternalIP" && a.address == ip),
            "{} does not report InternalIP {ip}",
            n.name()
        );
        // containerd holds the images it was started with.
        let images = n.ctr(["images", "ls", "-q"]).await.expect("ctr images ls");
        assert!(images.contains(TEST_IMAGE), "{images}");
    }

    // hostPath /etc: the Pod on real1 reads and writes real1's scratch /etc, and only that.
    let marker = format!("hostplug-realnode-test-{}", std::process::id());
    std::fs::write(
        real1.etc_dir().join(format!("{marker}.in")),
        "from the test\n",
    )
    .expect("write into real1's /etc");
    let mut etc_pod = pod(
        "etc",
        real1.name(),
        &format!(
            "cat /host/etc/{marker}.in > /host/etc/{marker}.out && echo written by the pod >> /host/etc/{marker}.out"
        ),
        "Never",
    );
    etc_pod["spec"]["volumes"] =
        json!([{ "name": "etc", "hostPath": { "path": "/etc", "type": "Directory" } }]);
    etc_pod["spec"]["containers"][0]["volumeMounts"] =
        json!([{ "name": "etc", "mountPath": "/host/etc" }]);
    create(&env, etc_pod).await;
    wait_succeeded(&env, "etc").await;
    let written = std::fs::read_to_string(real1.etc_dir().join(format!("{marker}.out")))
        .expect("the Pod's file in real1's /etc");
    assert_eq!(written, "from the test\nwritten by the pod\n");
    assert!(
        !Path::new("/etc").join(format!("{marker}.out")).exists(),
        "the machine's /etc was written"
    );
    assert!(
        !real2.etc_dir().join(format!("{marker}.out")).exists(),
        "real2's /etc was written"
    );

    // Pod to Pod across nodes, by Pod IP.
    create(
        &env,
        pod(
            "server",
            real2.name(),
            "mkdir -p /www && echo hello from $(hostname) > /www/index.html && exec httpd -f -p 8080 -h /www",
            "Always",
        ),
    )
    .await;
    let server = wait_running(&env, "server").await;
    let server_ip = server
        .status
        .and_then(|s| s.pod_ip)
        .expect("the server has a Pod IP");
    assert!(
        server_ip.starts_with("10.244.2."),
        "server IP {server_ip} not in {}",
        real2.pod_cidr()
    );
    create(
        &env,
        pod(
            "client",
            real1.name(),
            &format!("wget -q -T 10 -O - http://{server_ip}:8080/"),
            "Never",
        ),
    )
    .await;
    let client = wait_succeeded(&env, "client").await;
    let client_ip = client.status.and_then(|s| s.pod_ip).unwrap_or_default();
    assert!(client_ip.starts_with("10.244.1."), "client IP {client_ip}");
    assert_eq!(logs(&env, "client").await, "hello from server\n");

    // The API server with the in-cluster configuration (KUBERNETES_SERVICE_HOST/PORT, the
    // ServiceAccount token and kube-root-ca.crt): kubectl from a hostPath, which verifies
    // the server's certificate against the mounted CA.
    let kubectl_dir = env
        .kubectl()
        .parent()
        .expect("kubectl's directory")
        .display()
        .to_string();
    let mut in_cluster = pod(
        "in-cluster",
        real1.name(),
        "echo host=$KUBERNETES_SERVICE_HOST port=$KUBERNETES_SERVICE_PORT && /k/kubectl auth whoami -o jsonpath='{.status.userInfo.username}'",
        "Never",
    );
    in_cluster["spec"]["volumes"] =
        json!([{ "name": "k", "hostPath": { "path": kubectl_dir, "type": "Directory" } }]);
    in_cluster["spec"]["containers"][0]["volumeMounts"] =
        json!([{ "name": "k", "mountPath": "/k", "readOnly": true }]);
    create(&env, in_cluster).await;
    wait_succeeded(&env, "in-cluster").await;
    assert_eq!(
        logs(&env, "in-cluster").await,
        format!("host={KUBERNETES_SERVICE_IP} port=443\nsystem:serviceaccount:default:default")
    );

    // kubectl logs and exec go through the egress proxy to the kubelet.
    assert_eq!(
        kubectl(&env, &["logs", "client"]).await,
        "hello from server\n"
    );
    assert_eq!(
        kubectl(&env, &["exec", "server", "--", "cat", "/www/index.html"]).await,
        "hello from server\n"
    );
    env.shutdown().await.expect("stop the environment");
}

/// Processes whose command line mentions `needle`.
fn processes_mentioning(needle: &str) -> Vec<String> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").expect("read /proc").flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        if pid == std::process::id() {
            continue;
        }
        if let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) {
            let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
            if cmdline.contains(needle) {
                found.push(format!("{pid}: {cmdline}"));
            }
        }
    }
    found
}

fn cgroup_dirs(name: &str) -> Vec<String> {
    std::fs::read_dir("/sys/fs/cgroup")
        .expect("read /sys/fs/cgroup")
        .flatten()
        .map(|h| h.path().join(name))
        .filter(|p| p.exists())
        .map(|p| p.display().to_string())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_environment_leaves_no_process_cgroup_or_mount_and_strays_are_removed() {
    // What a crashed run would leave: a cgroup named after a test process that is gone.
    let dead = std::process::Command::new("/bin/true")
        .spawn()
        .and_then(|mut c| c.wait().map(|_| c.id()))
        .expect("run true");
    let stray = format!("hostplug-rn-{dead}-0-real1");
    let stray_dir = Path::new("/sys/fs/cgroup/pids").join(&stray);
    std::fs::create_dir_all(stray_dir.join("kubepods")).expect("make a stray cgroup");

    let env = Environment::start(EnvConfig::control_plane_only().with_real_nodes(1))
        .await
        .expect("start the control plane and a real node");
    assert!(
        !stray_dir.exists(),
        "the stray cgroup {} is still there",
        stray_dir.display()
    );
    let node = &env.real_nodes()[0];
    create(
        &env,
        pod("sleeper", node.name(), "exec sleep 3600", "Always"),
    )
    .await;
    wait_running(&env, "sleeper").await;
    let dir = node.dir().display().to_string();
    let cgroup = node.cgroup_name().to_owned();
    assert!(
        !cgroup_dirs(&cgroup).is_empty(),
        "the node has no cgroup {cgroup}"
    );
    let shims = processes_mentioning(&dir);
    assert!(
        shims.iter().any(|p| p.contains("containerd-shim-runc-v2")),
        "no shim of the node runs: {shims:?}"
    );
    let pods: Api<Pod> = Api::namespaced(env.admin_client(), "default");
    assert_eq!(
        pods.list(&ListParams::default())
            .await
            .expect("list")
            .items
            .len(),
        1
    );

    // Drop, as a failing test would: no shutdown call.
    drop(env);
    assert_eq!(
        processes_mentioning(&dir),
        Vec::<String>::new(),
        "processes of the node survived"
    );
    assert_eq!(
        cgroup_dirs(&cgroup),
        Vec::<String>::new(),
        "cgroups of the node survived"
    );
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").expect("read mountinfo");
    assert!(
        !mounts.contains(&dir),
        "a mount of the node is left: {mounts}"
    );
}

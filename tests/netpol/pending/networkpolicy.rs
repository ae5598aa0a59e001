//! deploy/'s NetworkPolicy (`deploy/operator/networkpolicy.yaml`, applied as it stands)
//! enforced on real nodes by kube-router's policy controller
//! ([`hostplug_testenv::netpol`]): only a Pod labelled as the operator reaches a worker
//! Pod's `https` port — from another node and from the worker's own node — and any other
//! Pod does not. First, without the enforcer, every Pod reaches the worker, so the
//! blocking seen afterwards is the policy's doing.
//!
//! The worker and the clients are busybox Pods (the real-node test image) carrying exactly
//! the labels and the named port the operator gives worker Pods, and the operator's Pod
//! label: the policy is what is under test here, not the images.
//! Needs root and `make setup` (tests/nodes/build.sh, tests/netpol/build.sh).

use std::path::Path;
use std::time::{Duration, Instant};

use hostplug_testenv::netpol::PolicyEnforcer;
use hostplug_testenv::realnode::TEST_IMAGE;
use hostplug_testenv::{EnvConfig, Environment};
use k8s_openapi::api::core::v1::Pod;
use kube::Api;
use kube::api::PostParams;
use kube::runtime::conditions::is_pod_running;
use serde_json::json;

const NAMESPACE: &str = "hostplug-system";
const POD_TIMEOUT: Duration = Duration::from_secs(90);
/// How long one probe waits for the worker's answer.
const PROBE_TIMEOUT_SECONDS: u32 = 3;
/// How long the policy may take to be in force after the enforcer reports its chains.
const ENFORCE_TIMEOUT: Duration = Duration::from_secs(60);

fn repo_root() -> &'static Path {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../.."))
}

fn pod(name: &str, node: &str, labels: serde_json::Value, script: &str, port: bool) -> Pod {
    let mut container = json!({
        "name": "main",
        "image": TEST_IMAGE,
        "imagePullPolicy": "Never",
        "command": ["/bin/sh", "-c", script],
    });
    if port {
        container["ports"] = json!([{"name": "https", "containerPort": 8443, "protocol": "TCP"}]);
    }
    serde_json::from_value(json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": NAMESPACE, "labels": labels},
        "spec": {
            "nodeName": node,
            "terminationGracePeriodSeconds": 1,
            "containers": [container],
        },
    }))
    .expect("a valid Pod")
}

/// Whether `client` gets the worker's page at `ip`:8443 (busybox wget in the client Pod).
async fn reaches(env: &Environment, client: &str, ip: &str) -> bool {
    let out = tokio::process::Command::new(env.kubectl())
        .env("KUBECONFIG", env.kubeconfig_path())
        .args(["exec", "-n", NAMESPACE, client, "--", "wget", "-q", "-O", "-"])
        .arg(format!("-T{PROBE_TIMEOUT_SECONDS}"))
        .arg(format!("http://{ip}:8443/"))
        .output()
        .await
        .expect("kubectl exec runs");
    out.status.success() && String::from_utf8_lossy(&out.stdout).contains("hostplug-worker")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_the_operator_reaches_a_worker() -> anyhow::Result<()> {
    let env = Environment::start(EnvConfig::control_plane_only().with_real_nodes(2)).await?;
    env.apply_yaml_file(repo_root().join("deploy/namespace.yaml")).await?;
    let pods: Api<Pod> = Api::namespaced(env.admin_client(), NAMESPACE);

    // The worker on real1, answering on its `https` port (plain HTTP: the port is what
    // the policy is about).
    let worker_labels = json!({
        "app.kubernetes.io/managed-by": "hostplug-operator",
        "app.kubernetes.io/component": "worker",
    });
    let serve = "mkdir -p /tmp/www && echo hostplug-worker > /tmp/www/index.html && \
                 exec httpd -f -p 8443 -h /tmp/www";
    let idle = "exec sleep 3600";
    let operator = json!({"app.kubernetes.io/name": "hostplug-operator"});
    let other = json!({"app.kubernetes.io/name": "something-else"});
    for p in [
        pod("worker", "real1", worker_labels, serve, true),
        pod("operator-remote", "real2", operator.clone(), idle, false),
        pod("operator-local", "real1", operator, idle, false),
        pod("intruder-remote", "real2", other.clone(), idle, false),
        pod("intruder-local", "real1", other, idle, false),
    ] {
        pods.create(&PostParams::default(), &p).await?;
    }
    for name in ["worker", "operator-remote", "operator-local", "intruder-remote", "intruder-local"] {
        env.wait_for(&pods, name, is_pod_running(), POD_TIMEOUT).await?;
    }
    let worker = pods.get("worker").await?;
    let ip = worker
        .status
        .and_then(|s| s.pod_ip)
        .expect("a running Pod has an IP");

    // No policy yet: everybody reaches the worker.
    for client in ["operator-remote", "operator-local", "intruder-remote", "intruder-local"] {
        assert!(reaches(&env, client, &ip).await, "{client} does not reach the worker without a policy");
    }

    // deploy's policy, and an enforcer.
    env.apply_yaml_file(repo_root().join("deploy/operator/networkpolicy.yaml")).await?;
    let started = Instant::now();
    let enforcer = PolicyEnforcer::start(&env, repo_root()).await?;
    eprintln!("kube-router programmed both nodes in {:?}", started.elapsed());

    // The intruders are cut off (within ENFORCE_TIMEOUT of the enforcer's start) …
    for client in ["intruder-remote", "intruder-local"] {
        let deadline = Instant::now() + ENFORCE_TIMEOUT;
        while reaches(&env, client, &ip).await {
            assert!(
                Instant::now() < deadline,
                "{client} still reaches the worker {ENFORCE_TIMEOUT:?} after the policy; \
                 kube-router log: {:?}",
                enforcer.log("real1")
            );
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }
    eprintln!("policy in force {:?} after the enforcer started", started.elapsed());
    // … and stay cut off, while the operator's Pods, local and remote, get through.
    for _ in 0..3 {
        for client in ["intruder-remote", "intruder-local"] {
            assert!(!reaches(&env, client, &ip).await, "{client} reaches the worker");
        }
        for client in ["operator-remote", "operator-local"] {
            assert!(reaches(&env, client, &ip).await, "{client} is blocked");
        }
    }
    drop(enforcer);
    env.shutdown().await?;
    Ok(())
}

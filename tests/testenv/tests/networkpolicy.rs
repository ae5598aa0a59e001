//! deploy/'s NetworkPolicy (`deploy/operator/networkpolicy.yaml`, applied as it stands)
//! enforced on real nodes by kube-router's policy controller
//! ([`hostplug_testenv::netpol`]): only a Pod labelled as the operator reaches a worker
//! Pod's `https` port — from another node and from the worker's own node — and any other
//! Pod does not. First, without the enforcer, every Pod reaches the worker, so the
//! blocking seen afterwards is the policy's doing. Throughout, this machine's own iptables
//! and ipsets carry nothing of kube-router: it runs inside the nodes' namespaces only.
//!
//! The worker and the clients are busybox Pods (the real-node test image) carrying exactly
//! the labels and the named port the operator gives worker Pods, and the operator's Pod
//! label: the policy is what is under test here, not the images.
//! Needs root and `make setup` (tests/nodes/build.sh, tests/netpol/build.sh).

use std::path::Path;
use std::time::{Duration, Instant};

use hostplug_testenv::netpol::{self, PolicyEnforcer};
use hostplug_testenv::realnode::TEST_IMAGE;
use hostplug_testenv::{EnvConfig, Environment};
use k8s_openapi::api::core::v1::{Pod, ServiceAccount};
use kube::Api;
use kube::api::PostParams;
use kube::runtime::conditions::is_pod_running;
use serde_json::json;

const NAMESPACE: &str = "hostplug-system";
const POD_TIMEOUT: Duration = Duration::from_secs(90);
/// How long one probe waits for the worker's answer (a dropped packet shows as a timeout;
/// kube-router rejects, which fails at once).
const PROBE_TIMEOUT_SECONDS: u32 = 3;
/// How long the worker's httpd may take to answer once its container runs.
const SERVE_TIMEOUT: Duration = Duration::from_secs(20);
/// How long the policy may take to be in force after the enforcer reports its chains.
const ENFORCE_TIMEOUT: Duration = Duration::from_secs(60);
/// The worker's port (its container port named `https`, which the policy names).
const WORKER_PORT: u16 = 8443;
/// What the worker answers with.
const WORKER_PAGE: &str = "hostplug-worker";

const CLIENTS: [&str; 4] = [
    "operator-remote",
    "operator-local",
    "intruder-remote",
    "intruder-local",
];
const OPERATORS: [&str; 2] = ["operator-remote", "operator-local"];
const INTRUDERS: [&str; 2] = ["intruder-remote", "intruder-local"];

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
        container["ports"] =
            json!([{"name": "https", "containerPort": WORKER_PORT, "protocol": "TCP"}]);
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

/// Whether `client` gets the worker's page at `ip` (busybox wget in the client Pod, under
/// busybox `timeout`: Debian's static busybox 1.35 wget segfaults when given `-T`).
/// Panics when the probe itself fails (kubectl exec, not the connection).
async fn reaches(env: &Environment, client: &str, ip: &str) -> bool {
    let out = tokio::process::Command::new(env.kubectl())
        .env("KUBECONFIG", env.kubeconfig_path())
        .args(["exec", "-n", NAMESPACE, client, "--", "timeout"])
        .arg(PROBE_TIMEOUT_SECONDS.to_string())
        .args(["wget", "-q", "-O", "-"])
        .arg(format!("http://{ip}:{WORKER_PORT}/"))
        .output()
        .await
        .expect("kubectl exec runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    if out.status.success() && stdout.contains(WORKER_PAGE) {
        return true;
    }
    // Refused ("wget: can't connect …") or timed out (`timeout` ends wget with SIGTERM).
    assert!(
        stderr.contains("wget: ") || stderr.contains("exit code 143"),
        "probing from {client} failed before connecting ({}): {stdout}{stderr}",
        out.status
    );
    false
}

async fn assert_machine_clean(when: &str) {
    let leftovers = netpol::machine_leftovers()
        .await
        .expect("read this machine's iptables and ipsets");
    assert!(
        leftovers.is_empty(),
        "kube-router's chains or sets on this machine {when}: {leftovers:#?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_the_operator_reaches_a_worker() -> anyhow::Result<()> {
    assert_machine_clean("before the test").await;
    let env = Environment::start(EnvConfig::control_plane_only().with_real_nodes(2)).await?;
    env.apply_yaml_file(repo_root().join("deploy/namespace.yaml"))
        .await?;
    // Pods can be created once the namespace has its default ServiceAccount.
    let accounts: Api<ServiceAccount> = Api::namespaced(env.admin_client(), NAMESPACE);
    env.wait_for(
        &accounts,
        "default",
        |sa: Option<&ServiceAccount>| sa.is_some(),
        POD_TIMEOUT,
    )
    .await?;
    let pods: Api<Pod> = Api::namespaced(env.admin_client(), NAMESPACE);

    // The worker on real1, answering on its `https` port (plain HTTP: the port is what
    // the policy is about).
    let worker_labels = json!({
        "app.kubernetes.io/managed-by": "hostplug-operator",
        "app.kubernetes.io/component": "worker",
    });
    let serve = format!(
        "mkdir -p /tmp/www && echo {WORKER_PAGE} > /tmp/www/index.html && \
         exec httpd -f -p {WORKER_PORT} -h /tmp/www"
    );
    let idle = "exec sleep 3600";
    let operator = json!({"app.kubernetes.io/name": "hostplug-operator"});
    let other = json!({"app.kubernetes.io/name": "something-else"});
    for p in [
        pod("worker", "real1", worker_labels, &serve, true),
        pod("operator-remote", "real2", operator.clone(), idle, false),
        pod("operator-local", "real1", operator, idle, false),
        pod("intruder-remote", "real2", other.clone(), idle, false),
        pod("intruder-local", "real1", other, idle, false),
    ] {
        pods.create(&PostParams::default(), &p).await?;
    }
    for name in std::iter::once("worker").chain(CLIENTS) {
        env.wait_for(&pods, name, is_pod_running(), POD_TIMEOUT)
            .await?;
    }
    let ip = pods
        .get("worker")
        .await?
        .status
        .and_then(|s| s.pod_ip)
        .expect("a running Pod has an IP");

    // No enforcer yet: everybody reaches the worker (once its httpd listens: Running
    // only says its container started).
    let deadline = Instant::now() + SERVE_TIMEOUT;
    while !reaches(&env, CLIENTS[0], &ip).await {
        assert!(
            Instant::now() < deadline,
            "the worker does not answer {SERVE_TIMEOUT:?} after it started"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    for client in CLIENTS {
        assert!(
            reaches(&env, client, &ip).await,
            "{client} does not reach the worker without an enforcer"
        );
    }

    // deploy's policy, and an enforcer.
    env.apply_yaml_file(repo_root().join("deploy/operator/networkpolicy.yaml"))
        .await?;
    let started = Instant::now();
    let enforcer = PolicyEnforcer::start(&env, repo_root()).await?;
    eprintln!(
        "kube-router programmed its chains on both nodes {:?} after its start",
        started.elapsed()
    );

    // The intruders are cut off (within ENFORCE_TIMEOUT of the enforcer's start) …
    let mut got_through = 0;
    for client in INTRUDERS {
        while reaches(&env, client, &ip).await {
            got_through += 1;
            assert!(
                started.elapsed() < ENFORCE_TIMEOUT,
                "{client} still reaches the worker {ENFORCE_TIMEOUT:?} after the enforcer \
                 started; kube-router's log: {:?}",
                enforcer.log("real1")
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    eprintln!(
        "the policy was in force {:?} after kube-router's start ({got_through} intruder \
         probes got through after its chains were there; a probe is one kubectl exec)",
        started.elapsed()
    );
    // … and stay cut off, while the operator's Pods, local and remote, get through.
    for _ in 0..3 {
        for client in INTRUDERS {
            assert!(
                !reaches(&env, client, &ip).await,
                "{client} reaches the worker"
            );
        }
        for client in OPERATORS {
            assert!(
                reaches(&env, client, &ip).await,
                "{client} is blocked; kube-router's log: {:?}",
                enforcer.log("real1")
            );
        }
    }

    // kube-router's rules and sets are in the nodes' namespaces, none on this machine.
    let [real1, _] = env.real_nodes() else {
        panic!("two real nodes, not {}", env.real_nodes().len());
    };
    let rules = netpol::iptables_rules(real1).await?;
    assert!(
        rules.contains("KUBE-POD-FW-") && rules.contains("KUBE-NWPLCY-"),
        "no policy chains on real1:\n{rules}"
    );
    let sets = netpol::ipsets(real1).await?;
    assert!(
        sets.contains("KUBE-"),
        "no kube-router ipsets on real1:\n{sets}"
    );
    assert_machine_clean("while kube-router runs").await;

    drop(enforcer);
    env.shutdown().await?;
    assert_machine_clean("after the test").await;
    Ok(())
}

//! hostplug installed as a user installs it, on real nodes (kubelet + containerd + runc,
//! `hostplug-testenv`'s real nodes), running the images built from our Dockerfiles
//! (`hostplug-images`), imported into every node's containerd:
//!
//! - installed with `helm install` of `deploy/helm/hostplug` (the chart's values for the
//!   test cluster: no pulls, the console's database on an emptyDir), the operator (two
//!   replicas) and the console run as Pods, the operator registers its built-in plugins,
//!   the console answers through `kubectl port-forward` (there is no kube-proxy for a
//!   NodePort), and the examples of `deploy/examples` that fit a containerd node run with
//!   `kubectl apply -f`: the dry run changes nothing on any node's disk, the others end
//!   Succeeded with exactly the expected change in each node's /etc (read from the node's
//!   own /etc directory, not from the status);
//! - installed with `kubectl apply -k` of the test overlay (`tests/e2e/overlays/real-nodes`,
//!   which says what it changes and why), a write task changes every node's /etc;
//! - the worker's securityContext holds inside the running container: capabilities,
//!   no_new_privs, seccomp from `/proc/<pid>/status`, the read-only root and /etc mounts
//!   from `/proc/<pid>/mountinfo` of the worker process;
//! - apply → Succeeded is measured on the first task (the worker image has never run) and
//!   on a task served by running workers; the numbers are printed.
//!
//! The two installs run one after the other (each brings its own control plane and nodes).

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context, ensure};
use common::{
    CONTROL_PLANE_NODE, Install, OVERLAY, REAL_NODE_TESTS, REAL_NODES, RealCluster, example,
    kubectl, kubectl_stdin, snapshot, wait_finished, worker_process,
};
use hostplug_api::crd::TaskState;
use hostplug_e2e::{NAMESPACE, changed_files, repo_root, state_of};
use hostplug_testenv::Environment;
use hostplug_testenv::netpol::PolicyEnforcer;
use k8s_openapi::api::networking::v1::NetworkPolicy;
use kube::Api;
use tokio::io::AsyncBufReadExt;

/// The whole tour on real nodes, installed with Helm, with deploy's NetworkPolicy enforced:
/// the console answers, the examples run (dry run, a write on every node, the
/// control-plane node alone, reading two named nodes), each worker confined as its Pod
/// spec says, apply → Succeeded measured.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn helm_installed_hostplug_runs_the_examples_on_real_nodes() -> anyhow::Result<()> {
    let _one_at_a_time = REAL_NODE_TESTS.lock().await;
    let cluster = RealCluster::start().await?;
    cluster.install(Install::Helm).await?;
    let env = &cluster.env;
    let nodes = &cluster.nodes;
    let pods = cluster.pods();
    let tasks = cluster.tasks();

    // deploy's NetworkPolicy (the chart installs it) enforced by kube-router on both
    // nodes (hostplug_testenv::netpol): every task below reaches its workers through it,
    // as the operator must on a cluster whose network plugin enforces policies.
    let policies: Api<NetworkPolicy> = Api::namespaced(env.admin_client(), NAMESPACE);
    ensure!(
        policies.get_opt("hostplug-workers").await?.is_some(),
        "the chart installed no NetworkPolicy hostplug-workers"
    );
    let enforcer = PolicyEnforcer::start(env, &repo_root()).await?;

    // --- the console, through kubectl port-forward -----------------------------------------
    tokio::time::timeout(Duration::from_secs(120), console_answers(env))
        .await
        .context("the console through port-forward: no answer in 120 s")??;
    eprintln!("console answered through kubectl port-forward");

    // --- the examples -------------------------------------------------------------------
    // Dry run first (the first task: the worker image has never run on these nodes).
    let before = snapshot(env)?;
    let started = Instant::now();
    kubectl(env, &["apply", "-f", &example("ensure-line-dry-run.yaml")]).await?;
    let t = wait_finished(&tasks, "ensure-ntp-server-dry-run").await?;
    let cold_dry_run = started.elapsed();
    eprintln!("dry run ended after {cold_dry_run:.1?}");
    let st = t.status.clone().unwrap_or_default();
    ensure!(
        state_of(&t) == Some(TaskState::Succeeded),
        "dry run: {st:?}"
    );
    ensure!(st.nodes.len() == REAL_NODES, "{st:?}");
    ensure!(
        st.nodes.iter().all(|n| n.changed && n.diff.is_some()),
        "every node would change: {st:?}"
    );
    ensure!(
        changed_files(&before, &snapshot(env)?).is_empty(),
        "a dry run changed files"
    );
    // The dry run's workers read /etc and may not write it: no capabilities, /etc
    // read-only, inside the running container.
    for n in &st.nodes {
        let pod = n.pod.clone().context("node result without a pod")?;
        let proc = worker_process(env, &pods, &pod).await?;
        proc.check_confinement(0, true)
            .with_context(|| format!("dry-run worker {pod} on {}", n.node))?;
        eprintln!(
            "dry-run worker {pod} on {}: VmRSS {} after one task",
            n.node,
            proc.field("VmRSS")?
        );
    }
    eprintln!("dry-run workers confined");
    // The policy is in force for those workers: kube-router made its per-policy chain on
    // each node that runs one, so the answers above came through it.
    for n in &st.nodes {
        let node = env.real_node(&n.node).context("a real node")?;
        let rules = hostplug_testenv::netpol::iptables_rules(node).await?;
        ensure!(
            rules.contains("KUBE-NWPLCY-"),
            "no policy chain on {}:\n{rules}",
            n.node
        );
    }

    // The real thing on every node: new workers that may write /etc (new Pods).
    let (cold_write, write_workers) = cluster.ensure_line_on_every_node().await?;
    eprintln!("write on every node ended after {cold_write:.1?}; workers confined");

    // The control plane's /etc/hosts (real1 only), served by the running write worker
    // (warm).
    let before = snapshot(env)?;
    let started = Instant::now();
    kubectl(env, &["apply", "-f", &example("edit-control-plane.yaml")]).await?;
    let t = wait_finished(&tasks, "control-plane-hosts").await?;
    let warm_write = started.elapsed();
    let st = t.status.clone().unwrap_or_default();
    ensure!(state_of(&t) == Some(TaskState::Succeeded), "{st:?}");
    ensure!(
        st.nodes.len() == 1 && st.nodes[0].node == CONTROL_PLANE_NODE,
        "{st:?}"
    );
    ensure!(
        st.nodes[0].pod.as_ref() == write_workers.get(CONTROL_PLANE_NODE),
        "the running worker was not reused: {:?} vs {write_workers:?}",
        st.nodes[0].pod
    );
    ensure!(
        changed_files(&before, &snapshot(env)?)
            == vec![(CONTROL_PLANE_NODE.to_owned(), "hosts".to_owned())]
    );
    let hosts = std::fs::read_to_string(
        env.real_node(CONTROL_PLANE_NODE)
            .context("control-plane node")?
            .etc_dir()
            .join("hosts"),
    )?;
    ensure!(
        hosts.contains(
            "# BEGIN hostplug registry\n10.0.0.10\tregistry.internal\n# END hostplug registry\n"
        ),
        "{hosts}"
    );

    // Reading two named nodes: the example names node1 and node2; here they are real1
    // and real2 (the only change).
    let yaml = std::fs::read_to_string(example("read-two-nodes.yaml"))?.replace(
        "workers: [node1, node2]",
        &format!("workers: [{}]", nodes.join(", ")),
    );
    ensure!(
        yaml.contains(&nodes.join(", ")),
        "read-two-nodes.yaml changed shape"
    );
    let before = snapshot(env)?;
    kubectl_stdin(env, &["apply", "-f", "-"], &yaml).await?;
    let t = wait_finished(&tasks, "read-hostname").await?;
    let st = t.status.clone().unwrap_or_default();
    ensure!(state_of(&t) == Some(TaskState::Succeeded), "{st:?}");
    for n in &st.nodes {
        let node = env.real_node(&n.node).context("a real node")?;
        let hostname = std::fs::read_to_string(node.etc_dir().join("hostname"))?;
        let content = n.output.as_ref().map(|o| o["content"].clone());
        ensure!(
            content == Some(serde_json::json!(hostname)),
            "{}: output {content:?}, /etc/hostname {hostname:?}",
            n.node
        );
    }
    ensure!(changed_files(&before, &snapshot(env)?).is_empty());

    eprintln!(
        "apply → Succeeded on {REAL_NODES} real nodes: first task (dry run, worker image \
         never ran) {cold_dry_run:.1?}; first write task (new worker Pods) {cold_write:.1?}; \
         write task on a running worker {warm_write:.1?}"
    );
    eprintln!("whole test {:.1?}", cluster.t0.elapsed());
    drop(enforcer);
    cluster.env.shutdown().await?;
    Ok(())
}

/// `kubectl apply -k` of deploy/ (through the test overlay) on real nodes: the operator
/// and the console come up as Pods and a write task changes every node's /etc.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kustomize_installed_hostplug_writes_every_real_node() -> anyhow::Result<()> {
    let _one_at_a_time = REAL_NODE_TESTS.lock().await;
    let cluster = RealCluster::start().await?;
    cluster.install(Install::Kustomize).await?;
    let (took, _) = cluster.ensure_line_on_every_node().await?;
    eprintln!("apply → Succeeded (new worker Pods) {took:.1?}");
    eprintln!("whole test {:.1?}", cluster.t0.elapsed());
    cluster.env.shutdown().await?;
    Ok(())
}

/// `kubectl port-forward` to the console's Service; its health endpoint and login page
/// answer over HTTPS (the console's self-signed certificate).
async fn console_answers(env: &Environment) -> anyhow::Result<()> {
    let mut child = tokio::process::Command::new(env.kubectl())
        .arg("--kubeconfig")
        .arg(env.kubeconfig_path())
        .args([
            "-n",
            NAMESPACE,
            "port-forward",
            "--address=127.0.0.1",
            "svc/hostplug-web",
            ":443",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .context("starting kubectl port-forward")?;
    let stdout = child.stdout.take().context("port-forward stdout")?;
    let mut lines = tokio::io::BufReader::new(stdout).lines();
    // "Forwarding from 127.0.0.1:PORT -> 8443"
    let line = tokio::time::timeout(Duration::from_secs(60), lines.next_line())
        .await
        .context("kubectl port-forward printed nothing in 60 s")??
        .context("kubectl port-forward ended")?;
    let port: u16 = line
        .split_whitespace()
        .find_map(|w| w.strip_prefix("127.0.0.1:"))
        .and_then(|p| p.parse().ok())
        .with_context(|| format!("no port in {line:?}"))?;
    let client = reqwest::Client::builder()
        .danger_accept_invalid_certs(true)
        .timeout(Duration::from_secs(30))
        .build()?;
    let health = client
        .get(format!("https://127.0.0.1:{port}/healthz"))
        .send()
        .await?;
    ensure!(health.status().is_success(), "healthz: {}", health.status());
    ensure!(health.text().await?.trim() == "ok");
    let login = client
        .get(format!("https://127.0.0.1:{port}/login"))
        .send()
        .await?;
    let status = login.status();
    let body = login.text().await?;
    ensure!(
        status.is_success() && body.to_lowercase().contains("hostplug"),
        "login page: {status} {}",
        hostplug_e2e::tail(&body, 5)
    );
    child.kill().await.ok();
    Ok(())
}

/// The overlay changes exactly what it says: rendered with kubectl's kustomize next to
/// `deploy/`, the only differences are the two Deployments' `imagePullPolicy: Never`,
/// the console's data volume on an emptyDir, and the missing claim.
#[tokio::test]
async fn the_overlay_changes_only_what_it_says() -> anyhow::Result<()> {
    let kubectl = hostplug_testenv::controlplane::binaries::Binaries::locate()?.kubectl();
    let render = |dir: &Path| -> anyhow::Result<Vec<serde_yaml::Value>> {
        let out = std::process::Command::new(&kubectl)
            .arg("kustomize")
            .arg(dir)
            .output()?;
        ensure!(
            out.status.success(),
            "kubectl kustomize {}: {}",
            dir.display(),
            String::from_utf8_lossy(&out.stderr)
        );
        let text = String::from_utf8(out.stdout)?;
        let mut docs = Vec::new();
        for doc in serde_yaml::Deserializer::from_str(&text) {
            docs.push(serde::Deserialize::deserialize(doc)?);
        }
        Ok(docs)
    };
    let key = |d: &serde_yaml::Value| {
        format!(
            "{}/{}",
            d["kind"].as_str().unwrap_or_default(),
            d["metadata"]["name"].as_str().unwrap_or_default()
        )
    };
    let base: BTreeMap<String, serde_yaml::Value> = render(&repo_root().join("deploy"))?
        .into_iter()
        .map(|d| (key(&d), d))
        .collect();
    let mut overlay: BTreeMap<String, serde_yaml::Value> = render(&repo_root().join(OVERLAY))?
        .into_iter()
        .map(|d| (key(&d), d))
        .collect();
    let mut expected = base.clone();
    ensure!(
        expected
            .remove("PersistentVolumeClaim/hostplug-web-data")
            .is_some()
    );
    for (deployment, pvc_volume) in [("hostplug-operator", false), ("hostplug-web", true)] {
        let d = expected
            .get_mut(&format!("Deployment/{deployment}"))
            .context("deployment")?;
        let spec = &mut d["spec"]["template"]["spec"];
        spec["containers"][0]["imagePullPolicy"] = "Never".into();
        if pvc_volume {
            let volumes = spec["volumes"].as_sequence_mut().context("volumes")?;
            let data = volumes
                .iter_mut()
                .find(|v| v["name"] == "data")
                .context("data volume")?;
            *data = serde_yaml::from_str("{name: data, emptyDir: {}}")?;
        }
    }
    for (k, want) in &expected {
        let got = overlay.remove(k).with_context(|| format!("{k} missing"))?;
        ensure!(
            &got == want,
            "{k} differs:\n{}\nvs\n{}",
            serde_yaml::to_string(&got)?,
            serde_yaml::to_string(want)?
        );
    }
    ensure!(overlay.is_empty(), "extra objects: {:?}", overlay.keys());
    Ok(())
}

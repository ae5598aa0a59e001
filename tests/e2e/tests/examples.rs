//! Every example of `deploy/examples` applied as people would, ending as expected, with
//! the simulated nodes' /etc trees changing exactly as expected; then cleanup by TTL and
//! by deletion. The first examples (ensure-line-*) own their file: no node has it before.
//! And every file of `deploy/examples` applied unmodified, all at once, to the environment
//! `make dev` sets up (a Docker API on node1 and node2, a containerd on node1, the
//! examples' registry on loopback, node2 on a real systemd): each HostTask (in any
//! namespace) ends Succeeded, and the nodes end as each example says — the example file
//! on every node, the HostState's line on the worker nodes only, master's /etc/hosts
//! block, the pulled image, the restarted service; the read-only policy's team task
//! reads every node; the ConfigMap HostPlugin says what is missing until its ConfigMap
//! and digest are there, then loads.

use std::time::Duration;

use hostplug_api::crd::{HostPlugin, NodePhase, TaskState};
use hostplug_api::state::{HostState, NodeSync};
use hostplug_e2e::{Harness, NODES, changed_files, repo_root, state_of};
use hostplug_testenv::hostplug::{
    DOCKER_NODES, EXAMPLE_IMAGES, EXAMPLE_REGISTRY, SYSTEMD_NODES, start_node_containerd,
    start_node_docker, start_node_systemd,
};
use k8s_openapi::api::core::v1::{ConfigMap, Pod};
use kube::Api;
use kube::api::{DeleteParams, Patch, PatchParams, PostParams};

/// The file the ensure-line examples and the HostState example own (they create it).
const EXAMPLE_FILE: &str = "hostplug-example.conf";
/// The line they hold there.
const NTP_LINE: &str = "server ntp.example.com iburst";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn examples_end_as_expected() -> anyhow::Result<()> {
    let h = Harness::start().await?;

    // No node has the examples' file: they create it.
    for node in NODES {
        assert!(!h.etc(node)?.join(EXAMPLE_FILE).exists(), "{node}");
    }
    // Dry run first: every node would change, nothing is written.
    let before = h.snapshot()?;
    h.apply_example("ensure-line-dry-run.yaml").await?;
    let t = h.wait_finished("ensure-ntp-server-dry-run").await?;
    let st = t.status.clone().unwrap_or_default();
    assert_eq!(state_of(&t), Some(TaskState::Succeeded), "{:?}", st.msg);
    assert_eq!(st.nodes.len(), NODES.len());
    assert!(
        st.nodes.iter().all(|n| n.changed && n.diff.is_some()),
        "{st:?}"
    );
    assert_eq!(
        changed_files(&before, &h.snapshot()?),
        vec![],
        "a dry run changed files"
    );

    // The real thing on all nodes: exactly the example's file on each node, created.
    let before = h.snapshot()?;
    h.apply_example("ensure-line-all-nodes.yaml").await?;
    let t = h.wait_finished("ensure-ntp-server").await?;
    let st = t.status.clone().unwrap_or_default();
    assert_eq!(state_of(&t), Some(TaskState::Succeeded), "{:?}", st.msg);
    assert_eq!(st.msg.as_deref(), Some("3/3 nodes succeeded, 3 changed"));
    // What the plugin logged on each node reaches the node's result.
    for n in &st.nodes {
        assert!(
            n.logs
                .iter()
                .any(|l| l.contains("ensure-line") && l.contains(EXAMPLE_FILE)),
            "{}: logs {:?}",
            n.node,
            n.logs
        );
    }
    let changed = changed_files(&before, &h.snapshot()?);
    let expected: Vec<(String, String)> = NODES
        .iter()
        .map(|n| (n.to_string(), EXAMPLE_FILE.to_string()))
        .collect();
    assert_eq!(changed, expected);
    for node in NODES {
        let conf = std::fs::read_to_string(h.etc(node)?.join(EXAMPLE_FILE))?;
        assert_eq!(conf, format!("{NTP_LINE}\n"), "{node}");
    }

    // A new generation runs again, with Pods made for it.
    let before = h.snapshot()?;
    h.tasks()
        .patch(
            "ensure-ntp-server",
            &PatchParams::default(),
            &Patch::Merge(serde_json::json!({"spec": {"http": {"parameter": {
                "line": "server ntp.example.com iburst prefer"}}}})),
        )
        .await?;
    let t = h.wait_finished("ensure-ntp-server").await?;
    let st = t.status.clone().unwrap_or_default();
    assert_eq!(st.observed_generation, Some(2));
    assert_eq!(st.msg.as_deref(), Some("3/3 nodes succeeded, 3 changed"));
    assert_eq!(changed_files(&before, &h.snapshot()?).len(), 3);
    for node in NODES {
        let conf = std::fs::read_to_string(h.etc(node)?.join(EXAMPLE_FILE))?;
        assert_eq!(
            conf.matches("server ntp.example.com").count(),
            1,
            "{node}: {conf}"
        );
        assert!(
            conf.contains("server ntp.example.com iburst prefer\n"),
            "{node}: {conf}"
        );
    }

    // Control-plane nodes only: /etc/hosts on master, nothing else anywhere.
    let before = h.snapshot()?;
    h.apply_example("edit-control-plane.yaml").await?;
    let t = h.wait_finished("control-plane-hosts").await?;
    let st = t.status.clone().unwrap_or_default();
    assert_eq!(state_of(&t), Some(TaskState::Succeeded), "{:?}", st.msg);
    assert_eq!(
        st.nodes.iter().map(|n| n.node.as_str()).collect::<Vec<_>>(),
        vec!["master"]
    );
    assert_eq!(
        changed_files(&before, &h.snapshot()?),
        vec![("master".to_string(), "hosts".to_string())]
    );

    // Read from two named nodes: outputs carry the file, nothing changes.
    let before = h.snapshot()?;
    h.apply_example("read-two-nodes.yaml").await?;
    let t = h.wait_finished("read-hostname").await?;
    let st = t.status.clone().unwrap_or_default();
    assert_eq!(state_of(&t), Some(TaskState::Succeeded), "{:?}", st.msg);
    assert_eq!(st.nodes.len(), 2);
    for n in &st.nodes {
        assert_eq!(n.phase, NodePhase::Succeeded);
        assert!(!n.changed);
        let content = n.output.as_ref().map(|o| o["content"].clone());
        assert_eq!(
            content,
            Some(serde_json::json!(format!("{}\n", n.node))),
            "{n:?}"
        );
    }
    assert_eq!(changed_files(&before, &h.snapshot()?), vec![]);

    // A worker refuses requests without its token.
    let pods: Api<Pod> = Api::namespaced(h.admin.clone(), hostplug_e2e::NAMESPACE);
    let node1_pod = st
        .nodes
        .iter()
        .find(|n| n.node == "node1")
        .and_then(|n| n.pod.clone())
        .unwrap_or_default();
    let pod = pods.get(&node1_pod).await?;
    let ip = pod.status.and_then(|s| s.pod_ip).unwrap_or_default();
    let http = reqwest::Client::builder()
        .danger_accept_invalid_certs(true)
        .no_proxy()
        .build()?;
    let resp = http
        .post(format!("https://{ip}:8443/v1/invoke"))
        .json(&serde_json::json!({"digest": "0".repeat(64), "method": "read", "params": {"path": "/etc/hostname"}}))
        .send()
        .await?;
    assert_eq!(resp.status().as_u16(), 401);
    let resp = http
        .post(format!("https://{ip}:8443/v1/invoke"))
        .bearer_auth("not-the-token-not-the-token")
        .json(&serde_json::json!({"digest": "0".repeat(64), "method": "read"}))
        .send()
        .await?;
    assert_eq!(resp.status().as_u16(), 401);

    // The workers belong to the operator's pool, not to the task: deleting the task
    // leaves them warm for the next one (the pool removes them when idle).
    h.tasks()
        .delete("read-hostname", &DeleteParams::foreground())
        .await?;
    wait_task_gone(&h, "read-hostname").await?;
    let workers = h.worker_pods().await?;
    assert!(
        workers.values().flatten().any(|p| p == &node1_pod),
        "{workers:?}"
    );

    h.shutdown().await
}

async fn wait_task_gone(h: &Harness, task: &str) -> anyhow::Result<()> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        if h.tasks().get_opt(task).await?.is_none() {
            return Ok(());
        }
        if tokio::time::Instant::now() > deadline {
            anyhow::bail!("task {task} remains");
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// `kubectl apply -f deploy/examples/` in `make dev`, as it prints it: every HostTask of
/// every file ends Succeeded, and the pull example's image is on node1 afterwards.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_example_succeeds_in_the_make_dev_setup() -> anyhow::Result<()> {
    let h = Harness::start().await?;
    h.wait_plugin_ready("docker-image").await?;
    // The same set-up `hostplug-dev` makes.
    let dockers = tokio::task::block_in_place(|| {
        DOCKER_NODES
            .iter()
            .map(|n| start_node_docker(&h.env, n))
            .collect::<anyhow::Result<Vec<_>>>()
    })?;
    // node1's containerd, pulling from node1's registry (the containerd examples).
    let containerd = tokio::task::block_in_place(|| {
        start_node_containerd(&h.env, DOCKER_NODES[0], dockers[0].registry())
    })?;
    // node2 on a real systemd (the restart example).
    let systemd_nodes = tokio::task::block_in_place(|| {
        SYSTEMD_NODES
            .iter()
            .map(|n| start_node_systemd(&h.env, n))
            .collect::<anyhow::Result<Vec<_>>>()
    })?;
    let demo_before = systemd_nodes[0].demo_state()?;

    let dir = repo_root().join("deploy/examples");
    let mut files: Vec<String> = std::fs::read_dir(&dir)?
        .filter_map(|e| e.ok().map(|e| e.file_name().to_string_lossy().into_owned()))
        .filter(|f| f.ends_with(".yaml") || f.ends_with(".yml"))
        .collect();
    files.sort();
    assert!(files.len() >= 6, "{files:?}");
    let mut tasks = Vec::new();
    for file in &files {
        let text = std::fs::read_to_string(dir.join(file))?;
        for doc in serde_yaml::Deserializer::from_str(&text) {
            let v = <serde_yaml::Value as serde::Deserialize>::deserialize(doc)?;
            if v["kind"].as_str() == Some("HostTask") {
                let name = v["metadata"]["name"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned();
                let namespace = v["metadata"]["namespace"]
                    .as_str()
                    .unwrap_or(hostplug_e2e::NAMESPACE)
                    .to_owned();
                tasks.push((file.clone(), namespace, name));
            }
        }
        h.apply_example(file).await?;
    }
    assert!(
        tasks.iter().any(|(f, _, _)| f.contains("docker")),
        "no docker example among {tasks:?}"
    );
    for (file, namespace, name) in &tasks {
        let t = h.wait_finished_in(namespace, name).await?;
        let st = t.status.clone().unwrap_or_default();
        assert_eq!(
            state_of(&t),
            Some(TaskState::Succeeded),
            "deploy/examples/{file} ({name}): {:?} {:?}",
            st.msg,
            st.nodes
                .iter()
                .map(|n| (&n.node, n.phase, &n.message))
                .collect::<Vec<_>>()
        );
        assert!(!st.nodes.is_empty(), "{file}: no node ran");
    }
    // The read-only policy's team task read every node, in its own namespace.
    let t = h
        .wait_finished_in("team-read", "team-read-hostname")
        .await?;
    let st = t.status.clone().unwrap_or_default();
    assert_eq!(st.nodes.len(), NODES.len(), "{st:?}");
    for n in &st.nodes {
        assert!(!n.changed, "{n:?}");
        assert_eq!(
            n.output.as_ref().map(|o| o["content"].clone()),
            Some(serde_json::json!(format!("{}\n", n.node))),
            "{n:?}"
        );
    }
    // The node selector picked every (Linux) node.
    let t = h.wait_finished("read-hostname-linux").await?;
    assert_eq!(
        t.status.unwrap_or_default().nodes.len(),
        NODES.len(),
        "node-selector.yaml"
    );

    // The HostState holds its line on the worker nodes, not on master; the tasks put it
    // on every node: the file holds the one line everywhere.
    let states: Api<HostState> = Api::all(h.admin.clone());
    let deadline = tokio::time::Instant::now() + hostplug_e2e::TASK_TIMEOUT;
    loop {
        let s = states.get("chrony-ntp-server").await?;
        let st = s.status.unwrap_or_default();
        let mut synced: Vec<&str> = st
            .nodes
            .iter()
            .filter(|n| n.sync == NodeSync::InSync)
            .map(|n| n.node.as_str())
            .collect();
        synced.sort_unstable();
        if synced == ["node1", "node2"] {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "hoststate-chrony-enforce.yaml: not in sync on node1 and node2: {:?}",
            st.nodes
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    for node in NODES {
        let conf = std::fs::read_to_string(h.etc(node)?.join(EXAMPLE_FILE))?;
        assert_eq!(conf, format!("{NTP_LINE}\n"), "{node}");
    }
    let hosts = std::fs::read_to_string(h.etc("master")?.join("hosts"))?;
    assert!(hosts.contains("10.0.0.10\tregistry.internal"), "{hosts}");
    for node in ["node1", "node2"] {
        let hosts = std::fs::read_to_string(h.etc(node)?.join("hosts"))?;
        assert!(!hosts.contains("registry.internal"), "{node}: {hosts}");
    }

    // The ConfigMap HostPlugin, as printed: not ready, the message names what is missing.
    let plugins: Api<HostPlugin> = Api::all(h.admin.clone());
    let message = |hp: &HostPlugin| {
        hp.status
            .as_ref()
            .and_then(|s| s.message.clone())
            .unwrap_or_default()
    };
    let hp = h.wait_plugin_status("hello").await?;
    assert!(!hp.status.as_ref().is_some_and(|s| s.ready), "{hp:?}");
    assert!(
        message(&hp).contains("ConfigMap hostplug-system/hello-plugin does not exist"),
        "{}",
        message(&hp)
    );
    // The ConfigMap as its first comment line makes it (a module we have: etc-file's).
    let wasm = std::fs::read(hostplug_e2e::plugin_dir()?.join("etc-file.wasm"))?;
    let digest = {
        use sha2::Digest as _;
        hex::encode(sha2::Sha256::digest(&wasm))
    };
    let cm: ConfigMap = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "hello-plugin", "namespace": hostplug_e2e::NAMESPACE},
        "binaryData": {"plugin.wasm": k8s_openapi::ByteString(wasm)},
    }))?;
    Api::<ConfigMap>::namespaced(h.admin.clone(), hostplug_e2e::NAMESPACE)
        .create(&PostParams::default(), &cm)
        .await?;
    // Touched (the operator does not watch ConfigMaps): the digest is the next message.
    plugins
        .patch(
            "hello",
            &PatchParams::default(),
            &Patch::Merge(serde_json::json!({"metadata": {"annotations": {"touched": "1"}}})),
        )
        .await?;
    let deadline = tokio::time::Instant::now() + hostplug_e2e::TASK_TIMEOUT;
    loop {
        let hp = plugins.get("hello").await?;
        if message(&hp).contains("sha256 mismatch") {
            assert!(message(&hp).contains(&digest), "{}", message(&hp));
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no sha256 mismatch: {}",
            message(&hp)
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    // Its sha256 in spec.sha256: the plugin loads.
    plugins
        .patch(
            "hello",
            &PatchParams::default(),
            &Patch::Merge(serde_json::json!({"spec": {"sha256": digest}})),
        )
        .await?;
    h.wait_plugin_ready("hello").await?;

    let image = format!("{EXAMPLE_REGISTRY}/{}", EXAMPLE_IMAGES[0]);
    assert!(
        dockers[0].image_id(&image)?.is_some(),
        "{image} not on node1 after the pull example"
    );
    assert!(
        containerd.image_names()?.contains(&image),
        "{image} not in node1's containerd after the containerd pull example"
    );
    // The restart example took effect: the service was restarted and uses the value.
    // (The service writes its state just after it started: allow it a moment.)
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let demo = loop {
        let demo = systemd_nodes[0].demo_state()?;
        if demo.pid != demo_before.pid || tokio::time::Instant::now() > deadline {
            break demo;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_ne!(
        demo.pid, demo_before.pid,
        "restart-on-change.yaml: no restart"
    );
    assert_eq!(demo.value, "from-the-example");
    tokio::task::block_in_place(|| {
        drop(systemd_nodes);
        drop(containerd);
        drop(dockers);
    });
    h.shutdown().await
}

//! Every example of `deploy/examples` applied as people would, ending as expected, with
//! the simulated nodes' /etc trees changing exactly as expected; then cleanup by TTL and
//! by deletion. And every file of `deploy/examples` applied unmodified, all at once, to
//! the environment `make dev` sets up (a Docker API on node1 and node2, a containerd on
//! node1, the examples' registry on loopback, node2 on a real systemd), each ending
//! Succeeded.

use std::time::Duration;

use hostplug_api::crd::{NodePhase, TaskState};
use hostplug_e2e::{Harness, NODES, changed_files, repo_root, state_of};
use hostplug_testenv::hostplug::{
    DOCKER_NODES, EXAMPLE_IMAGES, EXAMPLE_REGISTRY, SYSTEMD_NODES, start_node_containerd,
    start_node_docker, start_node_systemd,
};
use k8s_openapi::api::core::v1::Pod;
use kube::Api;
use kube::api::{DeleteParams, Patch, PatchParams};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn examples_end_as_expected() -> anyhow::Result<()> {
    let h = Harness::start().await?;

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

    // The real thing on all nodes: exactly chrony.conf on each node.
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
                .any(|l| l.contains("ensure-line") && l.contains("chrony.conf")),
            "{}: logs {:?}",
            n.node,
            n.logs
        );
    }
    let changed = changed_files(&before, &h.snapshot()?);
    let expected: Vec<(String, String)> = NODES
        .iter()
        .map(|n| (n.to_string(), "chrony.conf".to_string()))
        .collect();
    assert_eq!(changed, expected);
    for node in NODES {
        let conf = std::fs::read_to_string(h.etc(node)?.join("chrony.conf"))?;
        assert!(
            conf.contains("server ntp.example.com iburst\n"),
            "{node}: {conf}"
        );
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
        let conf = std::fs::read_to_string(h.etc(node)?.join("chrony.conf"))?;
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
                tasks.push((file.clone(), name));
            }
        }
        h.apply_example(file).await?;
    }
    assert!(
        tasks.iter().any(|(f, _)| f.contains("docker")),
        "no docker example among {tasks:?}"
    );
    for (file, name) in &tasks {
        let t = h.wait_finished(name).await?;
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

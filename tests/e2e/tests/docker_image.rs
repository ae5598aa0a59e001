//! The docker-image plugin through the whole system: a HostTask from `deploy/examples`
//! on a simulated node whose `/var/run/docker.sock` is Podman's Docker API service
//! (tests/podman), pulling from a registry on loopback. The task must end Succeeded with
//! the image ID in its status, the daemon must hold that image, a second run must
//! change nothing, and a dry-run prune must report IDs and remove none.

use hostplug_api::crd::{NodePhase, TaskState};
use hostplug_e2e::{Harness, state_of};
use hostplug_podman::{DockerEnv, Options};

/// The registry address the docker examples use; the test puts its own in its place.
const EXAMPLE_REGISTRY: &str = "registry.example:5000";

fn example(file: &str, registry: &str) -> anyhow::Result<String> {
    let path = hostplug_e2e::repo_root().join("deploy/examples").join(file);
    let text = std::fs::read_to_string(&path)?;
    anyhow::ensure!(
        text.contains(EXAMPLE_REGISTRY) || !file.starts_with("pull"),
        "{file} no longer names {EXAMPLE_REGISTRY}"
    );
    Ok(text.replace(EXAMPLE_REGISTRY, registry))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn docker_image_task_pulls_on_a_node() -> anyhow::Result<()> {
    let h = Harness::start().await?;
    h.wait_plugin_ready("docker-image").await?;

    // node1's Docker socket: Podman's API service, with an image in the registry.
    let node_root = h
        .env
        .node_root("node1")
        .ok_or_else(|| anyhow::anyhow!("no node simulator"))?;
    let docker = tokio::task::block_in_place(|| {
        DockerEnv::start_with(&Options {
            socket: Some(node_root.join("var/run/docker.sock")),
            ..Options::default()
        })
    })?;
    let id = tokio::task::block_in_place(|| -> anyhow::Result<String> {
        let id = docker.make_image("localhost/app:1.0", &[("team", "a")])?;
        docker.push("localhost/app:1.0", "team/app:1.0")?;
        docker.podman(&["rmi", "localhost/app:1.0"])?;
        Ok(id)
    })?;
    assert!(docker.image_ids()?.is_empty());
    let remote = format!("{}/team/app:1.0", docker.registry());

    // Pull: Succeeded, changed, the image ID in the node's output.
    h.apply(&example("pull-image-docker.yaml", docker.registry())?)
        .await?;
    let t = h.wait_finished("pull-app-image").await?;
    let st = t.status.clone().unwrap_or_default();
    assert_eq!(state_of(&t), Some(TaskState::Succeeded), "{st:?}");
    assert_eq!(st.nodes.len(), 1, "{st:?}");
    let n = &st.nodes[0];
    assert_eq!((n.node.as_str(), n.phase), ("node1", NodePhase::Succeeded));
    assert!(n.changed, "{n:?}");
    let output = n.output.clone().unwrap_or_default();
    assert_eq!(output["id"], id, "{output}");
    assert_eq!(output["image"], remote, "{output}");
    assert_eq!(docker.image_id(&remote)?, Some(id.clone()));

    // The same task again, under another name: present, nothing changes.
    let again = example("pull-image-docker.yaml", docker.registry())?
        .replace("name: pull-app-image", "name: pull-app-image-again");
    h.apply(&again).await?;
    let t = h.wait_finished("pull-app-image-again").await?;
    let st = t.status.clone().unwrap_or_default();
    assert_eq!(state_of(&t), Some(TaskState::Succeeded), "{st:?}");
    assert!(!st.nodes[0].changed, "{st:?}");
    assert_eq!(
        st.nodes[0].output.as_ref().map(|o| o["pulled"].clone()),
        Some(serde_json::json!(false))
    );

    // A dry-run prune of every unused image names it and removes nothing.
    h.apply_example("prune-images-docker-dry-run.yaml").await?;
    let t = h.wait_finished("prune-unused-images-dry-run").await?;
    let st = t.status.clone().unwrap_or_default();
    assert_eq!(state_of(&t), Some(TaskState::Succeeded), "{st:?}");
    let n = &st.nodes[0];
    assert!(n.changed, "{n:?}");
    assert_eq!(
        n.output.as_ref().map(|o| o["deleted"].clone()),
        Some(serde_json::json!([id]))
    );
    assert_eq!(docker.image_ids()?, vec![id]);

    tokio::task::block_in_place(|| docker.stop())?;
    h.shutdown().await?;
    Ok(())
}

//! The containerd-image plugin through the whole system: HostTasks from `deploy/examples`
//! on a simulated node whose `/run/containerd/containerd.sock` is a real containerd (v2,
//! CRI plugin, tests/podman's `containerd` module), pulling from a registry on loopback.
//! The pull must end Succeeded with the image ID in its status and the image in
//! containerd (read with `ctr`), a second run must change nothing, a dry-run prune must
//! name the image and remove nothing. And the worker Pods: only the containerd-image
//! worker mounts the containerd socket.

use hostplug_api::crd::{NodePhase, TaskState};
use hostplug_e2e::{Harness, mounts_containerd_socket, state_of, worker_profile};
use hostplug_testenv::hostplug::{EXAMPLE_IMAGES, EXAMPLE_REGISTRY, start_node_containerd};
use k8s_openapi::api::core::v1::Pod;
use kube::Api;
use kube::api::ListParams;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn containerd_image_tasks_on_a_node() -> anyhow::Result<()> {
    let h = Harness::start().await?;
    h.wait_plugin_ready("containerd-image").await?;

    // The loopback registry (with Podman to push into it) and node1's containerd.
    let (docker, containerd) = tokio::task::block_in_place(|| -> anyhow::Result<_> {
        let docker = hostplug_podman::DockerEnv::start_with(&hostplug_podman::Options {
            tie_to_thread: false,
            ..hostplug_podman::Options::default()
        })?;
        let local = format!("localhost/{}", EXAMPLE_IMAGES[0]);
        docker.make_image(&local, &[])?;
        docker.push(&local, EXAMPLE_IMAGES[0])?;
        let containerd = start_node_containerd(&h.env, "node1", docker.registry())?;
        Ok((docker, containerd))
    })?;
    let image = format!("{EXAMPLE_REGISTRY}/{}", EXAMPLE_IMAGES[0]);
    assert!(containerd.image_names()?.is_empty());

    // Pull: Succeeded, changed, the image ID in the node's output, the image in containerd.
    h.apply_example("pull-image-containerd.yaml").await?;
    let t = h.wait_finished("pull-app-image-containerd").await?;
    let st = t.status.clone().unwrap_or_default();
    assert_eq!(state_of(&t), Some(TaskState::Succeeded), "{st:?}");
    assert_eq!(st.nodes.len(), 1, "{st:?}");
    let n = &st.nodes[0];
    assert_eq!((n.node.as_str(), n.phase), ("node1", NodePhase::Succeeded));
    assert!(n.changed, "{n:?}");
    let output = n.output.clone().unwrap_or_default();
    assert_eq!(output["image"], image.as_str(), "{output}");
    let id = output["id"].as_str().unwrap_or_default().to_owned();
    assert!(id.starts_with("sha256:"), "{output}");
    assert_eq!(containerd.image_names()?, vec![image.clone()]);

    // The same task again under another name: present, nothing changes.
    let again = std::fs::read_to_string(
        hostplug_e2e::repo_root().join("deploy/examples/pull-image-containerd.yaml"),
    )?
    .replace(
        "name: pull-app-image-containerd",
        "name: pull-app-image-containerd-again",
    );
    h.apply(&again).await?;
    let t = h.wait_finished("pull-app-image-containerd-again").await?;
    let st = t.status.clone().unwrap_or_default();
    assert_eq!(state_of(&t), Some(TaskState::Succeeded), "{st:?}");
    assert!(!st.nodes[0].changed, "{st:?}");

    // A dry-run prune names the image and removes nothing.
    h.apply_example("prune-images-containerd-dry-run.yaml")
        .await?;
    let t = h.wait_finished("prune-images-containerd-dry-run").await?;
    let st = t.status.clone().unwrap_or_default();
    assert_eq!(state_of(&t), Some(TaskState::Succeeded), "{st:?}");
    let n = &st.nodes[0];
    assert!(n.changed, "{n:?}");
    assert_eq!(
        n.output.as_ref().map(|o| o["deleted"].clone()),
        Some(serde_json::json!([id]))
    );
    assert_eq!(containerd.image_names()?, vec![image.clone()]);

    // The worker Pods: the containerd socket is mounted into the containerd-image
    // worker and into no other (etc-file's of Harness::start, for one).
    let pods = Api::<Pod>::namespaced(h.admin.clone(), "hostplug-system")
        .list(&ListParams::default().labels("app.kubernetes.io/component=worker"))
        .await?;
    let mut with_socket = 0;
    for p in &pods.items {
        let profile = worker_profile(p);
        let mounts_it = mounts_containerd_socket(p);
        assert_eq!(
            mounts_it,
            profile.contains("-containerd"),
            "{profile}: {:?}",
            hostplug_e2e::containerd_socket_in_spec(p)
        );
        with_socket += usize::from(mounts_it);
    }
    assert!(with_socket >= 1, "no worker mounted the containerd socket");

    tokio::task::block_in_place(|| {
        containerd.stop();
        docker.stop()
    })?;
    h.shutdown().await?;
    Ok(())
}

/// Issue 21 #2 for containerd: a method that declares itself read-only gets the CRI
/// image service for reads only, through the operator's path. test-image-sneak's
/// `containerd-pull` says `mutates: false` and pulls through the containerd import
/// anyway: the node fails with the host's refusal and containerd holds no image (read
/// with `ctr`). (Before the fix the read-only method pulled.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_only_method_cannot_pull_through_containerd() -> anyhow::Result<()> {
    let h = Harness::start().await?;
    let (docker, containerd) = tokio::task::block_in_place(|| -> anyhow::Result<_> {
        let docker = hostplug_podman::DockerEnv::start_with(&hostplug_podman::Options {
            tie_to_thread: false,
            ..hostplug_podman::Options::default()
        })?;
        let local = format!("localhost/{}", EXAMPLE_IMAGES[0]);
        docker.make_image(&local, &[])?;
        docker.push(&local, EXAMPLE_IMAGES[0])?;
        let containerd = start_node_containerd(&h.env, "node1", docker.registry())?;
        Ok((docker, containerd))
    })?;
    let image = format!("{EXAMPLE_REGISTRY}/{}", EXAMPLE_IMAGES[0]);
    let hp = h
        .publish_plugin_with(
            "test-image-sneak.wasm",
            "test-image-sneak",
            "    containerd: true\n",
        )
        .await?;
    anyhow::ensure!(
        hp.status.as_ref().is_some_and(|s| s.ready),
        "test-image-sneak not ready: {:?}",
        hp.status
    );
    h.apply(&format!(
        "apiVersion: hostplug.dev/v1alpha1\nkind: HostTask\nmetadata: {{name: sneak-cri-pull, namespace: hostplug-system}}\nspec:\n  workers: [node1]\n  http: {{api: test-image-sneak, method: containerd-pull, parameter: {{image: '{image}'}}}}\n"
    ))
    .await?;
    let t = h.wait_finished("sneak-cri-pull").await?;
    let st = t.status.clone().unwrap_or_default();
    assert_eq!(state_of(&t), Some(TaskState::Failed), "{st:?}");
    let msg = st.nodes[0].message.clone().unwrap_or_default();
    assert!(
        msg.contains("pulling an image is not allowed in a read-only call"),
        "the node names the refusal: {msg}"
    );
    assert!(containerd.image_names()?.is_empty(), "nothing was pulled");

    // Its worker Pod was made for reads only, too.
    let pods = Api::<Pod>::namespaced(h.admin.clone(), "hostplug-system")
        .list(&ListParams::default().labels("app.kubernetes.io/component=worker"))
        .await?;
    assert!(
        pods.items
            .iter()
            .any(|p| worker_profile(p) == "etc-none-containerd-images-read"),
        "{:?}",
        pods.items.iter().map(worker_profile).collect::<Vec<_>>()
    );

    tokio::task::block_in_place(|| {
        containerd.stop();
        docker.stop()
    })?;
    h.shutdown().await
}

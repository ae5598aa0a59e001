//! The containerd-image plugin on a real node (kubelet + containerd v2, `hostplug-testenv`'s
//! real nodes), hostplug installed with Helm, pulling through the node's own containerd
//! (the CRI image service on `/run/containerd/containerd.sock`) from a registry that
//! requires credentials, with the credentials from a `kubernetes.io/dockerconfigjson`
//! Secret named by the task's `spec.registryAuth.secretName`:
//!
//! - the registry: Podman builds a tiny image and pushes it to a registry on this machine's
//!   loopback; a second docker-registry, read-only and with htpasswd authentication, serves
//!   the same storage inside real1's network namespace at `127.0.0.1:5000` (the node's own
//!   loopback, which containerd reaches over plain HTTP, as it does any loopback registry
//!   without a hosts.toml). Nothing leaves the machine's loopback or the node's namespace;
//! - a pull without `registryAuth`, and one with a Secret holding a wrong password, end
//!   Failed with containerd's authorization error and pull nothing (`ctr images ls`);
//! - a pull with the right Secret ends Succeeded and changed, with the pushed image's ID in
//!   the node's output, the image in real1's containerd and not in real2's; again it changes
//!   nothing, and with `policy: always` it pulls again with the credentials, unchanged;
//! - the containerd-image worker Pod mounts the node's containerd socket, the etc-file
//!   workers do not (their Pod specs);
//! - apply → finished is printed for each task.

mod common;

use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use common::{Install, REAL_NODE_TESTS, RealCluster, kubectl_stdin, wait_finished};
use hostplug_api::crd::{HostTask, NodePhase, TaskState};
use hostplug_api::worker::paths::{CONTAINERD_MOUNT, NODE_CONTAINERD_SOCKET};
use hostplug_e2e::{
    NAMESPACE, containerd_socket_in_spec, mounts_containerd_socket, state_of, worker_profile,
};
use hostplug_testenv::realnode::RealNode;
use kube::api::ListParams;

/// The node that pulls (the registry runs inside its network namespace).
const PULL_NODE: &str = "real1";
/// The node that must not get the image.
const OTHER_NODE: &str = "real2";
/// The registry as real1's containerd reaches it: its own loopback. A loopback registry
/// with a port other than 443 is plain HTTP to containerd without any hosts.toml.
const REGISTRY: &str = "127.0.0.1:5000";
/// The repository and tag pushed and pulled.
const REPOSITORY: &str = "team/app";
const TAG: &str = "1.0";
/// The registry's user and the passwords of the two Secrets.
const USER: &str = "puller";
const PASSWORD: &str = "pull-password-for-the-test";
const WRONG_PASSWORD: &str = "not-the-password";
/// How long the registry inside the node may take to answer.
const REGISTRY_START_TIMEOUT: Duration = Duration::from_secs(30);
/// A `ctr` call on a node: bounded, so a hung containerd fails the test instead of
/// blocking it.
const CTR_TIMEOUT: Duration = Duration::from_secs(60);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn containerd_image_pulls_with_secret_credentials_on_a_real_node() -> anyhow::Result<()> {
    let _one_at_a_time = REAL_NODE_TESTS.lock().await;
    let cluster = RealCluster::start().await?;
    cluster.install(Install::Helm).await?;
    let env = &cluster.env;
    let real1 = env.real_node(PULL_NODE).context("real1")?;
    let real2 = env.real_node(OTHER_NODE).context("real2")?;
    let image = format!("{REGISTRY}/{REPOSITORY}:{TAG}");

    // --- the registry ---------------------------------------------------------------------
    // Podman pushes to its registry on this machine's loopback; the node's registry serves
    // the same storage, read-only, with htpasswd.
    let (docker, pushed_id) = tokio::task::block_in_place(|| -> anyhow::Result<_> {
        let docker = hostplug_podman::DockerEnv::start_with(&hostplug_podman::Options {
            tie_to_thread: false,
            ..hostplug_podman::Options::default()
        })?;
        let local = format!("localhost/{REPOSITORY}:{TAG}");
        let id = docker.make_image(&local, &[])?;
        docker.push(&local, &format!("{REPOSITORY}:{TAG}"))?;
        eprintln!("pushed {local} ({id}) to the loopback registry");
        Ok((docker, id))
    })?;
    let mut registry =
        NodeRegistry::start(real1, &docker.dir().join("registry-data"), USER, PASSWORD).await?;
    eprintln!("registry with htpasswd in {PULL_NODE} at {REGISTRY}");
    ensure!(
        !holds(real1, REPOSITORY).await?,
        "{PULL_NODE} holds {REPOSITORY} before any pull"
    );

    // --- no credentials: the registry refuses, nothing pulled ------------------------------
    let (t, anonymous) = run_task(&cluster, &pull_task("pull-no-credentials", None)?).await?;
    expect_refused(&t)?;
    ensure!(
        !holds(real1, REPOSITORY).await?,
        "an anonymous pull left an image"
    );
    eprintln!("pull without registryAuth: Failed as expected after {anonymous:.1?}");

    // --- a Secret with a wrong password: refused, nothing pulled ---------------------------
    kubectl_stdin(
        env,
        &["apply", "-f", "-"],
        &pull_secret("registry-wrong-password", WRONG_PASSWORD),
    )
    .await?;
    let (t, wrong) = run_task(
        &cluster,
        &pull_task("pull-wrong-password", Some("registry-wrong-password"))?,
    )
    .await?;
    expect_refused(&t)?;
    ensure!(
        !holds(real1, REPOSITORY).await?,
        "a pull with a wrong password left an image"
    );
    eprintln!("pull with a wrong password: Failed as expected after {wrong:.1?}");

    // --- the right Secret: pulled on real1 only ---------------------------------------------
    kubectl_stdin(
        env,
        &["apply", "-f", "-"],
        &pull_secret("registry-credentials", PASSWORD),
    )
    .await?;
    let (t, pulled) = run_task(
        &cluster,
        &pull_task("pull-with-credentials", Some("registry-credentials"))?,
    )
    .await?;
    let st = t.status.clone().unwrap_or_default();
    ensure!(state_of(&t) == Some(TaskState::Succeeded), "{st:?}");
    ensure!(
        st.nodes.len() == 1 && st.nodes[0].node == PULL_NODE,
        "{st:?}"
    );
    let n = &st.nodes[0];
    ensure!(n.phase == NodePhase::Succeeded && n.changed, "{n:?}");
    let output = n.output.clone().unwrap_or_default();
    ensure!(output["image"] == image.as_str(), "{output}");
    ensure!(output["pulled"] == true, "{output}");
    ensure!(output["authenticated"] == true, "{output}");
    let id = output["id"].as_str().unwrap_or_default().to_owned();
    ensure!(id == pushed_id, "pulled {id}, pushed {pushed_id}: {output}");
    let on_real1 = images(real1).await?;
    ensure!(
        on_real1.contains(&image) && on_real1.contains(&id),
        "{PULL_NODE}'s containerd lacks {image} ({id}): {on_real1:?}"
    );
    ensure!(
        !holds(real2, REPOSITORY).await?,
        "{OTHER_NODE} got the image"
    );
    eprintln!("pull with the Secret's credentials: Succeeded after {pulled:.1?}, {image} is {id}");

    // --- again: present, nothing pulled; with `policy: always`, pulled again (the registry
    // asked with the credentials once more), the same image, unchanged ------------------------
    let (t, present) = run_task(
        &cluster,
        &pull_task("pull-with-credentials-again", Some("registry-credentials"))?,
    )
    .await?;
    let again = expect_unchanged(&t, &id)?;
    ensure!(again["pulled"] == false, "{again}");
    let (name, yaml) = pull_task("pull-with-credentials-always", Some("registry-credentials"))?;
    let always = (
        name,
        replace_once(&yaml, "policy: if-not-present\n", "policy: always\n")?,
    );
    let (t, repulled) = run_task(&cluster, &always).await?;
    let out = expect_unchanged(&t, &id)?;
    ensure!(
        out["pulled"] == true && out["authenticated"] == true,
        "{out}"
    );
    eprintln!(
        "again: present, not pulled, after {present:.1?}; policy always: pulled with the \
         credentials, unchanged, after {repulled:.1?}"
    );

    // --- the worker Pods: the containerd socket only in the containerd-image worker -----
    let pods = cluster.pods();
    let pull_pod = n.pod.clone().context("node result without a pod")?;
    let p = pods.get(&pull_pod).await?;
    ensure!(
        containerd_socket_in_spec(&p) == (Some("Socket".to_owned()), true),
        "{pull_pod} does not mount {NODE_CONTAINERD_SOCKET} (hostPath type Socket) at \
         {CONTAINERD_MOUNT}: {:?}",
        containerd_socket_in_spec(&p)
    );
    ensure!(
        p.spec.as_ref().and_then(|s| s.node_name.as_deref()) == Some(PULL_NODE),
        "{pull_pod} not on {PULL_NODE}"
    );
    let (write, write_workers) = cluster.ensure_line_on_every_node().await?;
    eprintln!("etc-file write on every node: Succeeded after {write:.1?}");
    for pod in write_workers.values() {
        ensure!(
            !mounts_containerd_socket(&pods.get(pod).await?),
            "etc-file worker {pod} mounts the containerd socket"
        );
    }
    let workers = pods
        .list(&ListParams::default().labels("app.kubernetes.io/component=worker"))
        .await?;
    for p in &workers.items {
        let profile = worker_profile(p);
        ensure!(
            mounts_containerd_socket(p) == profile.contains("-containerd"),
            "worker {:?} of profile {profile}: socket mounted {}",
            p.metadata.name,
            mounts_containerd_socket(p)
        );
    }

    eprintln!(
        "apply → finished on a real node, containerd-image pull: without credentials \
         (first containerd task, new worker Pod) {anonymous:.1?} (Failed); wrong password \
         {wrong:.1?} (Failed); with the Secret's credentials {pulled:.1?} (Succeeded); \
         present {present:.1?}; pulled again (policy always) {repulled:.1?}"
    );
    eprintln!("whole test {:.1?}", cluster.t0.elapsed());
    registry.stop().await;
    tokio::task::block_in_place(|| docker.stop())?;
    cluster.env.shutdown().await?;
    Ok(())
}

/// A docker-registry inside a real node's mount, network and UTS namespaces, serving a
/// registry storage directory read-only at the node's `127.0.0.1:5000`, with htpasswd
/// authentication. Killed when dropped (and with the node in any case).
struct NodeRegistry {
    child: tokio::process::Child,
    _dir: tempfile::TempDir,
}

impl NodeRegistry {
    async fn start(
        node: &RealNode,
        storage: &Path,
        user: &str,
        password: &str,
    ) -> anyhow::Result<Self> {
        // In /tmp, which the node's mount namespace shares with this machine.
        let dir = tempfile::Builder::new().prefix("hpnr-").tempdir()?;
        let d = dir.path();
        hostplug_podman::registry::write_htpasswd(&d.join("htpasswd"), user, password)?;
        std::fs::write(
            d.join("registry.yml"),
            format!(
                "version: 0.1\n\
                 log:\n  level: info\n\
                 storage:\n  filesystem:\n    rootdirectory: {}\n  maintenance:\n    readonly:\n      enabled: true\n\
                 http:\n  addr: {REGISTRY}\n\
                 auth:\n  htpasswd:\n    realm: hostplug-test\n    path: {}\n",
                storage.display(),
                d.join("htpasswd").display()
            ),
        )?;
        let log_path = d.join("registry.log");
        let log = std::fs::File::create(&log_path)?;
        let mut cmd = node.command("/usr/bin/docker-registry");
        cmd.arg("serve")
            .arg(d.join("registry.yml"))
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log);
        let mut child = tokio::process::Command::from(cmd)
            .kill_on_drop(true)
            .spawn()
            .context("starting docker-registry in the node")?;
        let deadline = Instant::now() + REGISTRY_START_TIMEOUT;
        loop {
            if let Some(status) = child.try_wait()? {
                bail!(
                    "docker-registry in {} exited ({status}): {}",
                    node.name(),
                    read_log(&log_path)
                );
            }
            // Asked from inside the node: 401 is a registry that wants credentials.
            let mut curl = node.command("/usr/bin/curl");
            curl.args([
                "-s",
                "-o",
                "/dev/null",
                "-w",
                "%{http_code}",
                "--max-time",
                "5",
                &format!("http://{REGISTRY}/v2/"),
            ]);
            let out = tokio::process::Command::from(curl).output().await?;
            if String::from_utf8_lossy(&out.stdout) == "401" {
                break;
            }
            if Instant::now() > deadline {
                bail!(
                    "docker-registry in {} did not answer 401 within {REGISTRY_START_TIMEOUT:?}: {}",
                    node.name(),
                    read_log(&log_path)
                );
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        Ok(NodeRegistry { child, _dir: dir })
    }

    async fn stop(&mut self) {
        let _ = self.child.kill().await;
    }
}

fn read_log(path: &Path) -> String {
    hostplug_e2e::tail(&std::fs::read_to_string(path).unwrap_or_default(), 20)
}

/// `deploy/examples/pull-image-containerd.yaml` as this test runs it: named `name`, on
/// real1, the image of the node's registry, with `spec.registryAuth` naming `secret`.
fn pull_task(name: &str, secret: Option<&str>) -> anyhow::Result<(String, String)> {
    let mut yaml = std::fs::read_to_string(common::example("pull-image-containerd.yaml"))?;
    let auth = secret
        .map(|s| format!("  registryAuth:\n    secretName: {s}\n"))
        .unwrap_or_default();
    for (from, to) in [
        (
            "name: pull-app-image-containerd\n".to_owned(),
            format!("name: {name}\n"),
        ),
        (
            "workers: [node1]\n".to_owned(),
            format!("workers: [{PULL_NODE}]\n{auth}"),
        ),
        (
            "image: registry.example:5000/team/app\n".to_owned(),
            format!("image: {REGISTRY}/{REPOSITORY}\n"),
        ),
        ("tag: \"1.0\"\n".to_owned(), format!("tag: \"{TAG}\"\n")),
    ] {
        yaml = replace_once(&yaml, &from, &to)?;
    }
    Ok((name.to_owned(), yaml))
}

/// A `kubernetes.io/dockerconfigjson` Secret in the operator's namespace with `password`
/// for the node's registry.
fn pull_secret(name: &str, password: &str) -> String {
    let config = serde_json::json!({
        "auths": { REGISTRY: { "username": USER, "password": password } }
    });
    format!(
        "apiVersion: v1\nkind: Secret\nmetadata:\n  name: {name}\n  namespace: {NAMESPACE}\n\
         type: kubernetes.io/dockerconfigjson\nstringData:\n  .dockerconfigjson: '{config}'\n"
    )
}

/// Applies a task and waits until it ends; returns it and how long apply → finished took.
async fn run_task(
    cluster: &RealCluster,
    (name, yaml): &(String, String),
) -> anyhow::Result<(HostTask, Duration)> {
    let started = Instant::now();
    kubectl_stdin(&cluster.env, &["apply", "-f", "-"], yaml).await?;
    let t = wait_finished(&cluster.tasks(), name).await?;
    Ok((t, started.elapsed()))
}

/// The task failed on real1 alone, unchanged, with the registry's refusal in its message.
fn expect_refused(t: &HostTask) -> anyhow::Result<()> {
    let st = t.status.clone().unwrap_or_default();
    ensure!(state_of(t) == Some(TaskState::Failed), "{st:?}");
    ensure!(
        st.nodes.len() == 1 && st.nodes[0].node == PULL_NODE,
        "{st:?}"
    );
    let n = &st.nodes[0];
    ensure!(n.phase == NodePhase::Failed && !n.changed, "{n:?}");
    let message = n.message.clone().unwrap_or_default();
    let lower = message.to_lowercase();
    ensure!(
        ["unauthorized", "authoriz", "authenticat"]
            .iter()
            .any(|w| lower.contains(w)),
        "the error does not name the refused authentication: {message}"
    );
    eprintln!("  {}: {message}", n.node);
    Ok(())
}

/// The task succeeded on real1 alone without changing it, the image still `id`; returns
/// the node's output.
fn expect_unchanged(t: &HostTask, id: &str) -> anyhow::Result<serde_json::Value> {
    let st = t.status.clone().unwrap_or_default();
    ensure!(state_of(t) == Some(TaskState::Succeeded), "{st:?}");
    ensure!(
        st.nodes.len() == 1 && st.nodes[0].node == PULL_NODE,
        "{st:?}"
    );
    let n = &st.nodes[0];
    ensure!(n.phase == NodePhase::Succeeded && !n.changed, "{n:?}");
    let output = n.output.clone().unwrap_or_default();
    ensure!(output["id"] == id, "{output}");
    Ok(output)
}

/// `text` with the one occurrence of `from` replaced by `to`; an error when `from` is not
/// there exactly once (the example changed shape).
fn replace_once(text: &str, from: &str, to: &str) -> anyhow::Result<String> {
    ensure!(
        text.matches(from).count() == 1,
        "pull-image-containerd.yaml changed shape: {from:?}"
    );
    Ok(text.replace(from, to))
}

/// Every image name of the node's containerd in `k8s.io` (`ctr images ls -q`): names,
/// digest references and the `sha256:` image IDs CRI adds.
async fn images(node: &RealNode) -> anyhow::Result<Vec<String>> {
    let out = tokio::time::timeout(CTR_TIMEOUT, node.ctr(["images", "ls", "-q"]))
        .await
        .with_context(|| {
            format!(
                "ctr images ls on {}: no answer in {CTR_TIMEOUT:?}",
                node.name()
            )
        })??;
    Ok(out.lines().map(str::to_owned).collect())
}

/// Whether any image name of the node's containerd holds `repository`.
async fn holds(node: &RealNode, repository: &str) -> anyhow::Result<bool> {
    Ok(images(node)
        .await?
        .iter()
        .any(|i| i.contains(&format!("/{repository}"))))
}

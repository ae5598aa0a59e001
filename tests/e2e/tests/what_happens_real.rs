//! "What happens when…" (docs/operations.md) for the rows that need real nodes: kubelet
//! and containerd as systemd units of a real systemd (`EnvConfig::with_systemd_real_nodes`;
//! the power cycle of a reboot is the test environment's stand-in), hostplug installed with
//! Helm from this build's images. One environment, two nodes, the scenarios in turn:
//!
//! - **A node reboots mid-task**: a slow call in flight on `sdreal1` (the plugin sleeps
//!   before it writes) when the node reboots under it. What the user sees on that node,
//!   and its file: the old content, nothing half-written; the other node's call
//!   completes; after the reboot the same change applied again (`rerun`) succeeds there,
//!   through a worker the pool makes anew.
//! - **A node gets a `NoExecute` taint**: a slow call in flight on `sdreal2` when it is
//!   tainted: the taint manager (kube-controller-manager) evicts the worker Pod; what the
//!   user sees, and the file. Then a new task there fails at once naming the taint the
//!   worker Pods do not tolerate (no Pod left to time out), nothing written; with the
//!   taint removed, `rerun` runs it.
//! - **A worker is OOM-killed**: the kernel's OOM killer ends the worker as the next call
//!   (a plugin that allocates) reaches it — its memory cgroup squeezed to 48 MiB above
//!   its use is the stand-in for a node short of memory: the node fails `worker
//!   unreachable`, the Pod shows `OOMKilled`, and a later run gets a new worker.

mod common;
mod systemd_cluster;

use std::time::{Duration, Instant};

use anyhow::{Context, ensure};
use common::{REAL_NODE_TESTS, kubectl, kubectl_stdin};
use hostplug_api::crd::{HostTask, NodePhase, NodeResult};
use hostplug_e2e::{NAMESPACE, tail};
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::{Api, ResourceExt};

/// How long one scenario's task may take.
const TIMEOUT: Duration = Duration::from_secs(300);
/// The plugin's sleep before it writes: long enough to act while the call is in flight.
const SLEEP_MS: u64 = 30_000;

fn slow_task(name: &str, nodes: &str, path: &str, ms: u64) -> String {
    format!(
        r#"
apiVersion: hostplug.dev/v1alpha1
kind: HostTask
metadata: {{name: {name}, namespace: {NAMESPACE}}}
spec:
  workers: [{nodes}]
  timeoutSeconds: 90
  rollout: {{maxParallel: 2, maxFailures: 2}}
  http:
    api: test-slow-write
    method: set
    parameter: {{path: {path}, content: "new\n", ms: {ms}}}
"#
    )
}

fn node_of<'a>(t: &'a HostTask, node: &str) -> Option<&'a NodeResult> {
    t.status.as_ref()?.nodes.iter().find(|n| n.node == node)
}

async fn wait_task(
    tasks: &Api<HostTask>,
    name: &str,
    what: &str,
    cond: impl Fn(&HostTask) -> bool,
) -> anyhow::Result<HostTask> {
    let started = Instant::now();
    loop {
        if let Some(t) = tasks.get_opt(name).await?
            && cond(&t)
        {
            return Ok(t);
        }
        if started.elapsed() > TIMEOUT {
            let t = tasks.get_opt(name).await?;
            anyhow::bail!(
                "task {name}: {what} not seen within {TIMEOUT:?}; status: {:?}",
                t.and_then(|t| t.status)
            );
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

fn finished(t: &HostTask) -> bool {
    t.status
        .as_ref()
        .is_some_and(|s| s.observed_generation == t.metadata.generation && s.state.is_finished())
}

/// Files of `/etc` whose name says they are a temporary file of a write.
fn temp_files(etc: &std::path::Path) -> anyhow::Result<Vec<String>> {
    Ok(std::fs::read_dir(etc)?
        .filter_map(Result::ok)
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains(".hostplug-") && n.ends_with(".tmp"))
        .collect())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_happens_on_real_nodes() -> anyhow::Result<()> {
    let _one_at_a_time = REAL_NODE_TESTS.lock().await;
    let env = systemd_cluster::start(2).await?;
    let admin = env.admin_client();
    let tasks: Api<HostTask> = Api::namespaced(admin.clone(), NAMESPACE);
    let nodes: Api<Node> = Api::all(admin.clone());

    common::publish_plugin(&env, "test-slow-write.wasm", "test-slow-write", "write").await?;
    let [n1, n2] = env.systemd_real_nodes() else {
        anyhow::bail!("two systemd real nodes expected");
    };
    for n in [n1, n2] {
        std::fs::write(n.etc_dir().join("slow.conf"), "old\n")?;
        std::fs::write(n.etc_dir().join("taint.conf"), "old\n")?;
    }

    // --- a node reboots mid-task ----------------------------------------------------
    let started = Instant::now();
    kubectl_stdin(
        &env,
        &["apply", "-f", "-"],
        &slow_task("reboot-mid", "sdreal1, sdreal2", "/etc/slow.conf", SLEEP_MS),
    )
    .await?;
    wait_task(&tasks, "reboot-mid", "both nodes Running", |t| {
        ["sdreal1", "sdreal2"]
            .iter()
            .all(|n| node_of(t, n).is_some_and(|r| r.phase == NodePhase::Running))
    })
    .await?;
    // Both calls are in the plugin's sleep now (it writes only after it).
    tokio::time::sleep(Duration::from_secs(2)).await;
    let boots = n1.boot_ids().len();
    tokio::task::block_in_place(|| n1.reboot())?;
    eprintln!("sdreal1 rebooted mid-call at {:.1?}", started.elapsed());
    let t = wait_task(&tasks, "reboot-mid", "the end", finished).await?;
    let r1 = node_of(&t, "sdreal1").context("sdreal1")?.clone();
    let r2 = node_of(&t, "sdreal2").context("sdreal2")?.clone();
    eprintln!(
        "after the reboot ({:.1?}): sdreal1 {:?} {:?}; sdreal2 {:?}",
        started.elapsed(),
        r1.phase,
        r1.message,
        r2.phase
    );
    ensure!(n1.boot_ids().len() == boots + 1, "sdreal1 rebooted once");
    ensure!(r1.phase == NodePhase::Failed, "{r1:?}");
    let m1 = r1.message.clone().unwrap_or_default();
    // The worker died with the node: the operator lost its connection, or — when the
    // leader ran on the rebooted node too — the next leader found the worker Pod gone.
    // Either way the call is not run again.
    ensure!(
        m1.starts_with("worker unreachable: ")
            || (m1.starts_with("outcome unknown: ") && m1.contains("is not run again")),
        "{m1}"
    );
    ensure!(r2.phase == NodePhase::Succeeded, "{r2:?}");
    // The rebooted node: the old content, nothing half-written, never written.
    ensure!(std::fs::read_to_string(n1.etc_dir().join("slow.conf"))? == "old\n");
    ensure!(!n1.etc_dir().join("slow.conf.writes").exists());
    ensure!(temp_files(&n1.etc_dir())?.is_empty());
    ensure!(std::fs::read_to_string(n2.etc_dir().join("slow.conf"))? == "new\n");
    // Back up: the same change again runs there, through a new worker.
    n1.wait_ready(&admin, TIMEOUT).await?;
    common::rerun(&env, "reboot-mid").await?;
    let t = wait_task(&tasks, "reboot-mid", "the rerun's end", |t| {
        finished(t) && t.metadata.generation.unwrap_or(1) > 1
    })
    .await?;
    ensure!(
        node_of(&t, "sdreal1").is_some_and(|r| r.phase == NodePhase::Succeeded),
        "{:?}",
        t.status
    );
    ensure!(std::fs::read_to_string(n1.etc_dir().join("slow.conf"))? == "new\n");
    ensure!(std::fs::read_to_string(n1.etc_dir().join("slow.conf.writes"))? == "write\n");
    eprintln!("node reboot mid-task: {:.1?}", started.elapsed());

    // --- a node gets a NoExecute taint ---------------------------------------------------
    let started = Instant::now();
    kubectl_stdin(
        &env,
        &["apply", "-f", "-"],
        &slow_task("taint-mid", "sdreal2", "/etc/taint.conf", SLEEP_MS),
    )
    .await?;
    wait_task(&tasks, "taint-mid", "sdreal2 Running", |t| {
        node_of(t, "sdreal2").is_some_and(|r| r.phase == NodePhase::Running)
    })
    .await?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    kubectl(
        &env,
        &[
            "taint",
            "node",
            "sdreal2",
            "hostplug.test/out=yes:NoExecute",
        ],
    )
    .await?;
    let t = wait_task(&tasks, "taint-mid", "the end", finished).await?;
    let r = node_of(&t, "sdreal2").context("sdreal2")?.clone();
    eprintln!(
        "tainted mid-call ({:.1?}): {:?} {:?}",
        started.elapsed(),
        r.phase,
        r.message
    );
    let text = std::fs::read_to_string(n2.etc_dir().join("taint.conf"))?;
    let writes =
        std::fs::read_to_string(n2.etc_dir().join("taint.conf.writes")).unwrap_or_default();
    match r.phase {
        // The worker finished the call in its grace period.
        NodePhase::Succeeded => ensure!(
            text == "new\n" && writes == "write\n",
            "{text:?} {writes:?}"
        ),
        // Or it was stopped first: nothing written.
        NodePhase::Failed => ensure!(text == "old\n" && writes.is_empty(), "{text:?} {writes:?}"),
        other => anyhow::bail!("sdreal2 ended {other:?}: {r:?}"),
    }
    ensure!(temp_files(&n2.etc_dir())?.is_empty());
    // A new task on the tainted node: its worker Pod is not admitted.
    kubectl_stdin(
        &env,
        &["apply", "-f", "-"],
        &slow_task("taint-after", "sdreal2", "/etc/taint-after.conf", 0),
    )
    .await?;
    let t = wait_task(&tasks, "taint-after", "the end", finished).await?;
    let r = node_of(&t, "sdreal2").context("sdreal2")?.clone();
    eprintln!(
        "a task on the tainted node ({:.1?}): {:?} {:?}",
        started.elapsed(),
        r.phase,
        r.message
    );
    ensure!(r.phase == NodePhase::Failed, "{r:?}");
    ensure!(
        r.message.as_deref()
            == Some(
                "worker Pod cannot start: node sdreal2 has the taint \
                 hostplug.test/out=yes:NoExecute, which worker Pods do not tolerate (the \
                 kubelet refuses them and the taint manager evicts them)"
            ),
        "{r:?}"
    );
    ensure!(!n2.etc_dir().join("taint-after.conf").exists());
    // Untainted, the same task runs.
    kubectl(
        &env,
        &[
            "taint",
            "node",
            "sdreal2",
            "hostplug.test/out=yes:NoExecute-",
        ],
    )
    .await?;
    let n = nodes.get("sdreal2").await?;
    ensure!(
        n.spec
            .as_ref()
            .and_then(|s| s.taints.as_ref())
            .is_none_or(|t| t.iter().all(|t| t.effect != "NoExecute")),
        "still tainted"
    );
    common::rerun(&env, "taint-after").await?;
    let t = wait_task(&tasks, "taint-after", "the rerun's end", |t| {
        finished(t) && t.metadata.generation.unwrap_or(1) > 1
    })
    .await
    .map_err(|e| anyhow::anyhow!("{e}\n{}", tail(&n2.journal("kubelet.service", 20), 20)))?;
    ensure!(
        node_of(&t, "sdreal2").is_some_and(|r| r.phase == NodePhase::Succeeded),
        "{:?}",
        t.status
    );
    ensure!(std::fs::read_to_string(n2.etc_dir().join("taint-after.conf"))? == "new\n");
    eprintln!("NoExecute taint: {:.1?}", started.elapsed());

    // --- a worker is OOM-killed ------------------------------------------------
    // The kernel's OOM killer, for real: the worker's memory cgroup may grow only 48 MiB
    // more (the stand-in for a node short of memory, or a limit set too low), then a
    // plugin allocates 1 MiB after 1 MiB (`test-hog`; a plugin's own limit is 128 MiB).
    let started = Instant::now();
    common::publish_plugin(&env, "test-hog.wasm", "test-hog", "none").await?;
    let hog = |name: &str, method: &str| {
        format!(
            "apiVersion: hostplug.dev/v1alpha1\nkind: HostTask\nmetadata: {{name: {name}, namespace: {NAMESPACE}}}\nspec:\n  workers: [sdreal1]\n  http: {{api: test-hog, method: {method}}}\n"
        )
    };
    kubectl_stdin(&env, &["apply", "-f", "-"], &hog("hog-warm", "ok")).await?;
    let t = wait_task(&tasks, "hog-warm", "the end", finished).await?;
    let r = node_of(&t, "sdreal1").context("sdreal1")?.clone();
    ensure!(r.phase == NodePhase::Succeeded, "{r:?}");
    let pod = r.pod.clone().context("the worker Pod")?;
    let pods: Api<Pod> = Api::namespaced(admin.clone(), NAMESPACE);
    let uid = pods
        .get(&pod)
        .await?
        .uid()
        .context("the worker Pod's uid")?;
    let pid = common::pod_processes(&uid, "hostplug-worker")?
        .into_iter()
        .next()
        .context("the worker process")?;
    common::squeeze_memory(pid, 48 << 20)?;
    kubectl_stdin(&env, &["apply", "-f", "-"], &hog("hog-oom", "hog")).await?;
    let t = wait_task(&tasks, "hog-oom", "the end", finished).await?;
    let r = node_of(&t, "sdreal1").context("sdreal1")?.clone();
    let mut terminated = Vec::new();
    for _ in 0..50 {
        terminated = pods
            .get_opt(&pod)
            .await?
            .and_then(|p| p.status)
            .and_then(|s| s.container_statuses)
            .unwrap_or_default()
            .into_iter()
            .filter_map(|c| c.state?.terminated?.reason)
            .collect();
        if !terminated.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    eprintln!(
        "OOM-killed ({:.1?}): {:?} {:?}; the worker Pod's container: {terminated:?}",
        started.elapsed(),
        r.phase,
        r.message
    );
    ensure!(r.phase == NodePhase::Failed, "{r:?}");
    ensure!(r.pod.as_deref() == Some(pod.as_str()), "{r:?}");
    let m = r.message.clone().unwrap_or_default();
    ensure!(m.starts_with("worker unreachable: "), "{m}");
    ensure!(terminated == ["OOMKilled"], "{terminated:?}");
    // A later run gets a new worker. (A run started right after the kill may still be
    // handed the dead Pod and fail `worker Pod cannot start: … (OOMKilled)`, which
    // discards it: seen in some runs here, so up to three runs, counted.)
    let mut runs = 0;
    let r = loop {
        runs += 1;
        common::rerun(&env, "hog-warm").await?;
        let t = wait_task(&tasks, "hog-warm", "the rerun's end", |t| {
            finished(t) && t.metadata.generation.unwrap_or(1) > runs
        })
        .await?;
        let r = node_of(&t, "sdreal1").context("sdreal1")?.clone();
        if r.phase == NodePhase::Succeeded || runs == 3 {
            break r;
        }
        eprintln!("run {runs} after the OOM kill: {:?}", r.message);
        ensure!(
            r.message
                .as_deref()
                .is_some_and(|m| m.starts_with("worker Pod cannot start: ")),
            "{r:?}"
        );
        tokio::time::sleep(Duration::from_secs(2)).await;
    };
    eprintln!("a new worker after {runs} run(s)");
    ensure!(r.phase == NodePhase::Succeeded, "{r:?}");
    ensure!(
        r.pod.as_deref() != Some(pod.as_str()),
        "the OOM-killed worker served again"
    );
    eprintln!("worker OOM-killed: {:.1?}", started.elapsed());

    Ok(())
}

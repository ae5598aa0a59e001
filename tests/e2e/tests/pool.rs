//! The worker pool, the node lock and exactly-once delivery, end to end: concurrent
//! tasks editing one file on the same nodes lose no line; warm workers are reused,
//! replaced when they die and removed when idle (or per task with idle 0); an operator
//! SIGKILLed while calls are in flight resumes them without running any node twice; a
//! finished task goes after its `ttlSecondsAfterFinished`; workers load only their own
//! operator process's signed precompiled artifacts and get modules after a restart.

use std::collections::BTreeMap;
use std::time::Duration;

use hostplug_api::crd::{HostTask, NodePhase, TaskState};
use hostplug_e2e::{Harness, state_of};
use k8s_openapi::api::core::v1::Pod;
use kube::api::DeleteParams;
use kube::{Api, ResourceExt};

fn task(name: &str, spec: &str) -> String {
    format!(
        "apiVersion: hostplug.dev/v1alpha1\nkind: HostTask\nmetadata: {{name: {name}, namespace: hostplug-system}}\nspec:\n{spec}"
    )
}

async fn wait_until<F, Fut>(timeout: Duration, mut f: F) -> anyhow::Result<()>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<bool>>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    while !f().await? {
        if tokio::time::Instant::now() > deadline {
            anyhow::bail!("condition not met within {timeout:?}");
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    Ok(())
}

/// Applies all tasks at once, waits for each and checks it succeeded on every node with
/// a diff adding `expect(i)`; returns the finished tasks.
async fn run_concurrently(
    h: &Harness,
    tasks: &[(String, String)],
) -> anyhow::Result<Vec<HostTask>> {
    let yamls: Vec<String> = tasks.iter().map(|(name, spec)| task(name, spec)).collect();
    futures::future::try_join_all(yamls.iter().map(|y| h.apply(y))).await?;
    let mut done = Vec::new();
    for (name, _) in tasks {
        let t = h.wait_finished(name).await?;
        let st = t.status.clone().unwrap_or_default();
        assert_eq!(st.state, TaskState::Succeeded, "{name}: {:?}", st.msg);
        assert_eq!(st.nodes.len(), 3, "{name}");
        done.push(t);
    }
    Ok(done)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_writes_are_never_lost() -> anyhow::Result<()> {
    let h = Harness::start().await?;
    const TASKS: usize = 20;

    // 20 tasks, each adding its own line to one file on the same three nodes.
    let tasks: Vec<(String, String)> = (0..TASKS)
        .map(|i| {
            (
                format!("line-{i}"),
                format!(
                    "  targetType: All\n  rollout: {{maxParallel: 3}}\n  http: {{api: etc-file, method: ensure-line, parameter: {{path: /etc/concurrent.conf, line: line-{i}, create: true}}}}\n"
                ),
            )
        })
        .collect();
    let done = run_concurrently(&h, &tasks).await?;
    for node in hostplug_e2e::NODES {
        let file = std::fs::read_to_string(h.etc(node)?.join("concurrent.conf"))?;
        for i in 0..TASKS {
            assert!(
                file.lines().any(|l| l == format!("line-{i}")),
                "{node} lost line-{i}:\n{file}"
            );
        }
        assert_eq!(file.lines().count(), TASKS, "{node}:\n{file}");
    }
    // Each node's reported change agrees with the file: every task added its line.
    for (i, t) in done.iter().enumerate() {
        for n in &t.status.clone().unwrap_or_default().nodes {
            assert_eq!(n.phase, NodePhase::Succeeded);
            assert!(n.changed, "line-{i} on {}: {n:?}", n.node);
            let diff = n.diff.clone().unwrap_or_default();
            assert!(
                diff.lines().any(|l| l == format!("+line-{i}")),
                "line-{i} on {}: {diff}",
                n.node
            );
            let added = diff
                .lines()
                .filter(|l| l.starts_with('+') && !l.starts_with("+++"))
                .count();
            assert_eq!(
                added, 1,
                "line-{i} on {} added more than its line: {diff}",
                n.node
            );
        }
    }

    // Two different methods on one file at once: lines and blocks, none lost.
    let mut tasks = Vec::new();
    for i in 0..8 {
        tasks.push((
            format!("mixed-line-{i}"),
            format!(
                "  targetType: All\n  http: {{api: etc-file, method: ensure-line, parameter: {{path: /etc/mixed.conf, line: keep-{i}, create: true}}}}\n"
            ),
        ));
        tasks.push((
            format!("mixed-block-{i}"),
            format!(
                "  targetType: All\n  http: {{api: etc-file, method: ensure-block, parameter: {{path: /etc/mixed.conf, marker: \"# {{mark}} block-{i}\", block: \"value-{i}\", create: true}}}}\n"
            ),
        ));
    }
    run_concurrently(&h, &tasks).await?;
    for node in hostplug_e2e::NODES {
        let file = std::fs::read_to_string(h.etc(node)?.join("mixed.conf"))?;
        for i in 0..8 {
            assert!(
                file.lines().any(|l| l == format!("keep-{i}")),
                "{node} lost keep-{i}:\n{file}"
            );
            assert!(
                file.lines().any(|l| l == format!("value-{i}")),
                "{node} lost block-{i}:\n{file}"
            );
        }
    }
    h.shutdown().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workers_are_reused_replaced_and_removed_when_idle() -> anyhow::Result<()> {
    const IDLE: u64 = 8;
    let h = Harness::start_with(None, &[("HOSTPLUG_WORKER_IDLE_SECONDS", "8")]).await?;
    let read = "  targetType: All\n  http: {api: etc-file, method: read, parameter: {path: /etc/hostname}}\n";

    h.apply(&task("first", read)).await?;
    let first = h.wait_finished("first").await?;
    assert_eq!(state_of(&first), Some(TaskState::Succeeded));
    let warm = h.worker_pods().await?;
    assert_eq!(warm.len(), 3, "{warm:?}");

    // A second task runs on the same Pods; none is created.
    h.apply(&task("second", read)).await?;
    let second = h.wait_finished("second").await?;
    assert_eq!(state_of(&second), Some(TaskState::Succeeded));
    assert_eq!(
        h.worker_pods().await?,
        warm,
        "the second task made new workers"
    );
    let served: Vec<String> = second.status.clone().unwrap_or_default().pods;
    for p in &served {
        assert!(
            warm.values().flatten().any(|w| w == p),
            "{p} is not a warm worker"
        );
    }

    // A worker killed between tasks is replaced.
    let killed = warm["node1"][0].clone();
    let pods: Api<Pod> = Api::namespaced(h.admin.clone(), hostplug_e2e::NAMESPACE);
    pods.delete(&killed, &DeleteParams::default().grace_period(0))
        .await?;
    wait_until(Duration::from_secs(30), || async {
        Ok(!h
            .worker_pods()
            .await?
            .values()
            .flatten()
            .any(|p| p == &killed))
    })
    .await?;
    h.apply(&task("third", read)).await?;
    let third = h.wait_finished("third").await?;
    let st = third.status.clone().unwrap_or_default();
    assert_eq!(st.state, TaskState::Succeeded, "{:?}", st.msg);
    let node1 = st.nodes.iter().find(|n| n.node == "node1").cloned();
    let node1_pod = node1.and_then(|n| n.pod).unwrap_or_default();
    assert!(!node1_pod.is_empty() && node1_pod != killed, "{node1_pod}");

    // Idle workers go after the idle time.
    let idle_from = tokio::time::Instant::now();
    wait_until(Duration::from_secs(IDLE + 30), || async {
        Ok(h.worker_pods().await?.is_empty())
    })
    .await?;
    assert!(
        idle_from.elapsed() >= Duration::from_secs(IDLE - 2),
        "workers went before their idle time: {:?}",
        idle_from.elapsed()
    );
    h.shutdown().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_zero_gives_each_task_its_own_workers() -> anyhow::Result<()> {
    let h = Harness::start_with(None, &[("HOSTPLUG_WORKER_IDLE_SECONDS", "0")]).await?;
    let read = "  workers: [node1, node2]\n  http: {api: etc-file, method: read, parameter: {path: /etc/hostname}}\n";
    h.apply(&task("own-1", read)).await?;
    let one = h.wait_finished("own-1").await?;
    assert_eq!(state_of(&one), Some(TaskState::Succeeded));
    let pods_one = one.status.clone().unwrap_or_default().pods;
    assert_eq!(pods_one.len(), 2);
    // Removed when the task ends.
    wait_until(Duration::from_secs(30), || async {
        let live = h.worker_pods().await?;
        Ok(!live.values().flatten().any(|p| pods_one.contains(p)))
    })
    .await?;
    h.apply(&task("own-2", read)).await?;
    let two = h.wait_finished("own-2").await?;
    assert_eq!(state_of(&two), Some(TaskState::Succeeded));
    for p in two.status.clone().unwrap_or_default().pods {
        assert!(!pods_one.contains(&p), "{p} served both tasks");
    }
    h.shutdown().await
}

/// `ttlSecondsAfterFinished` deletes the finished task, as Kubernetes does for a Job; a
/// task without it stays. The warm worker that served it stays in the pool.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_finished_task_is_deleted_after_its_ttl() -> anyhow::Result<()> {
    let h = Harness::start().await?;
    let read = "  workers: [node1]\n  http: {api: etc-file, method: read, parameter: {path: /etc/hostname}}\n";
    h.apply(&task("keep", read)).await?;
    h.apply(&task(
        "expire",
        &format!("{read}  ttlSecondsAfterFinished: 2\n"),
    ))
    .await?;
    let kept = h.wait_finished("keep").await?;
    assert_eq!(state_of(&kept), Some(TaskState::Succeeded));
    let expired = h.wait_finished("expire").await?;
    assert_eq!(state_of(&expired), Some(TaskState::Succeeded));
    let served = expired.status.clone().unwrap_or_default().pods;
    wait_until(Duration::from_secs(30), || async {
        Ok(h.tasks().get_opt("expire").await?.is_none())
    })
    .await?;
    assert!(
        h.tasks().get_opt("keep").await?.is_some(),
        "a task without a TTL stays"
    );
    let live = h.worker_pods().await?;
    for p in &served {
        assert!(
            live.values().flatten().any(|l| l == p),
            "worker {p} went with the task"
        );
    }
    h.shutdown().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_killed_mid_rollout_runs_no_node_twice() -> anyhow::Result<()> {
    const NODES: usize = 20;
    let mut h = Harness::start_with(Some(NODES), &[]).await?;
    h.publish_plugin("test-spin.wasm", "test-spin", "none")
        .await?;
    h.apply(&task(
        "restart-20",
        "  targetType: All\n  timeoutSeconds: 60\n  rollout: {maxParallel: 10, maxFailures: 0}\n  http: {api: test-spin, method: sleep, parameter: {ms: 4000}}\n",
    ))
    .await?;
    let uid = h.tasks().get("restart-20").await?.uid().unwrap_or_default();
    let id = |node: &str| format!("{uid}/1/{node}");
    // Wait until at least five nodes are mid-call: Running and started in their worker.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    let in_call: Vec<String> = loop {
        let t = h.tasks().get("restart-20").await?;
        let mid: Vec<String> = t
            .status
            .unwrap_or_default()
            .nodes
            .into_iter()
            .filter(|n| n.phase == NodePhase::Running && h.runs_of(&id(&n.node)) == 1)
            .map(|n| n.node)
            .collect();
        if mid.len() >= 5 {
            break mid;
        }
        if tokio::time::Instant::now() > deadline {
            anyhow::bail!("never 5 nodes mid-call: {mid:?}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    h.kill_operator().await?;
    h.start_operator()?;
    let t = h.wait_finished("restart-20").await?;
    let st = t.status.unwrap_or_default();
    assert_eq!(st.state, TaskState::Succeeded, "{:?}", st.msg);
    assert_eq!(st.nodes.len(), NODES + 1, "every node, master included");
    let mut runs = BTreeMap::new();
    for n in &st.nodes {
        assert_eq!(n.phase, NodePhase::Succeeded, "{n:?}");
        runs.insert(n.node.clone(), h.runs_of(&id(&n.node)));
    }
    assert!(
        runs.values().all(|r| *r == 1),
        "every node runs exactly once: {runs:?} (mid-call at the kill: {in_call:?})"
    );
    h.shutdown().await
}

/// The digest (hex) of a published plugin.
fn digest_hex(hp: &hostplug_api::crd::HostPlugin) -> String {
    let digest = hp.status.as_ref().and_then(|s| s.digest.clone());
    let digest = digest.unwrap_or_default();
    digest.trim_start_matches("sha256:").to_owned()
}

/// Whether a worker's log has a line with `message` naming the module `hex`.
fn logged(log: &str, message: &str, hex: &str) -> bool {
    log.lines().any(|l| l.contains(message) && l.contains(hex))
}

/// Precompiled artifacts are native code, so a worker takes only those signed with the
/// key of the operator process that made it (issue 21, finding 1): the workers of the
/// first process load its artifacts without compiling. A restarted operator has a new
/// key and adopts those workers all the same (the key is not part of the template);
/// they would refuse its artifacts, so it sends them the module of a new plugin, which
/// they compile and run. No worker is replaced, no call fails.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workers_take_only_their_operators_artifacts_and_modules_after_a_restart()
-> anyhow::Result<()> {
    let mut h = Harness::start().await?;
    let trap = digest_hex(
        &h.publish_plugin("test-trap.wasm", "test-trap", "none")
            .await?,
    );
    let spin = digest_hex(
        &h.publish_plugin("test-spin.wasm", "test-spin", "none")
            .await?,
    );
    assert!(!trap.is_empty() && !spin.is_empty());

    h.apply(&task(
        "signed-before",
        "  targetType: All\n  http: {api: test-trap, method: ok}\n",
    ))
    .await?;
    let t = h.wait_finished("signed-before").await?;
    assert_eq!(state_of(&t), Some(TaskState::Succeeded), "{:?}", t.status);
    let workers = h.worker_pods().await?;
    assert_eq!(workers.len(), 3, "{workers:?}");
    for pod in workers.values().flatten() {
        let log = h.worker_log(pod);
        assert!(
            logged(&log, "precompiled plugin loaded", &trap),
            "{pod} did not load the operator's signed artifact:\n{log}"
        );
    }

    h.kill_operator().await?;
    h.start_operator()?;
    h.apply(&task(
        "signed-after",
        "  targetType: All\n  http: {api: test-spin, method: ok}\n",
    ))
    .await?;
    let t = h.wait_finished("signed-after").await?;
    assert_eq!(state_of(&t), Some(TaskState::Succeeded), "{:?}", t.status);
    assert_eq!(
        h.worker_pods().await?,
        workers,
        "the restarted operator adopts the workers, whatever its key"
    );
    for pod in workers.values().flatten() {
        let log = h.worker_log(pod);
        assert!(
            logged(&log, "plugin module loaded", &spin),
            "{pod} did not get test-spin's module:\n{log}"
        );
        assert!(
            !logged(&log, "precompiled plugin loaded", &spin),
            "{pod} took an artifact signed with a key it was not made with:\n{log}"
        );
        assert!(
            !log.contains("precompiled artifact refused"),
            "the operator sent an artifact its adopted worker cannot take:\n{log}"
        );
    }
    h.shutdown().await
}

/// The HostState API.
fn states(h: &Harness) -> Api<hostplug_api::state::HostState> {
    Api::all(h.admin.clone())
}

/// The nodes of a HostState and their sync state, once its status is of its generation.
async fn state_nodes(
    h: &Harness,
    name: &str,
) -> anyhow::Result<Vec<hostplug_api::state::NodeStateStatus>> {
    let s = states(h).get(name).await?;
    Ok(s.status
        .filter(|st| st.observed_generation == s.metadata.generation)
        .map(|st| st.nodes)
        .unwrap_or_default())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workers_follow_an_operator_upgrade_without_losing_or_repeating_a_call()
-> anyhow::Result<()> {
    use hostplug_api::state::NodeSync;
    let mut h = Harness::start().await?;
    h.publish_plugin("test-slow-write.wasm", "test-slow-write", "write")
        .await?;
    // Each correction takes 6 s in its worker: long enough to restart the operator,
    // with other worker settings, while all three are in flight.
    h.apply(
        "apiVersion: hostplug.dev/v1alpha1\nkind: HostState\nmetadata: {name: upgrade}\nspec:\n  targetType: All\n  mode: Enforce\n  intervalSeconds: 10\n  rollout: {maxParallel: 3}\n  steps:\n  - {api: test-slow-write, method: set, parameter: {path: /etc/upgrade.conf, content: \"v1\\n\", ms: 6000}}\n",
    )
    .await?;
    // The corrections in flight, once each runs in its worker.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    let ids: Vec<(String, String)> = loop {
        let ids: Vec<(String, String)> = state_nodes(&h, "upgrade")
            .await?
            .into_iter()
            .filter_map(|n| Some((n.node, format!("{}/s0", n.pending_correction?))))
            .collect();
        if !ids.is_empty() && ids.iter().all(|(_, id)| h.runs_of(id) == 1) {
            break ids;
        }
        anyhow::ensure!(
            tokio::time::Instant::now() < deadline,
            "no correction ran: {ids:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let old: Vec<String> = h.worker_pods().await?.into_values().flatten().collect();
    h.kill_operator().await?;
    // A new operator that makes its workers differently (another idle time in their
    // settings): the old workers retire.
    h.set_operator_env("HOSTPLUG_WORKER_IDLE_SECONDS", "301");
    h.start_operator()?;
    wait_until(Duration::from_secs(120), || async {
        let nodes = state_nodes(&h, "upgrade").await?;
        Ok(nodes.len() == 3 && nodes.iter().all(|n| n.sync == NodeSync::InSync))
    })
    .await?;
    for (node, id) in &ids {
        assert_eq!(h.runs_of(id), 1, "{node}: the correction ran again");
        assert_eq!(
            std::fs::read_to_string(h.etc(node)?.join("upgrade.conf.writes"))?,
            "write\n",
            "{node}: written more than once"
        );
    }
    // Within one interval and the retiring grace, every worker is a new one.
    wait_until(Duration::from_secs(60), || async {
        let now: Vec<String> = h.worker_pods().await?.into_values().flatten().collect();
        Ok(now.len() >= 3 && now.iter().all(|p| !old.contains(p)))
    })
    .await
    .map_err(|e| anyhow::anyhow!("old workers stay: {e}; old {old:?}"))?;
    // The new workers serve: a hand edit is put back by them.
    std::fs::write(h.etc("node1")?.join("upgrade.conf"), "edited\n")?;
    wait_until(Duration::from_secs(60), || async {
        Ok(std::fs::read_to_string(h.etc("node1")?.join("upgrade.conf"))? == "v1\n")
    })
    .await?;
    let log = h.operator_log(2);
    assert!(
        log.contains("adopting a worker to retire"),
        "the new operator did not retire the old workers"
    );
    assert!(
        log.contains("resuming a correction of an earlier operator process"),
        "the new operator did not resume"
    );
    h.shutdown().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_runs_at_most_the_cap_of_worker_pods_whatever_the_ports() -> anyhow::Result<()> {
    const CAP: usize = 4;
    const PORTS: u16 = 100;
    let h = Harness::start_with_operator_env(&[("HOSTPLUG_MAX_WORKERS_PER_NODE", "4")]).await?;
    // One task per port, all at once, on node1: each port needs a worker of its own.
    let names: Vec<String> = (0..PORTS).map(|i| format!("port-{i}")).collect();
    let yamls: Vec<String> = (0..PORTS)
        .map(|i| {
            task(
                &format!("port-{i}"),
                &format!(
                    "  workers: [node1]\n  http: {{port: {}, api: etc-file, method: read, parameter: {{path: /etc/hostname}}}}\n",
                    20000 + i
                ),
            )
        })
        .collect();
    let most = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let watch = {
        let (admin, most) = (h.admin.clone(), std::sync::Arc::clone(&most));
        tokio::spawn(async move {
            let pods: Api<Pod> = Api::namespaced(admin, hostplug_e2e::NAMESPACE);
            let lp = kube::api::ListParams::default().labels("app.kubernetes.io/component=worker");
            loop {
                if let Ok(list) = pods.list(&lp).await {
                    let live = list
                        .items
                        .iter()
                        .filter(|p| p.metadata.deletion_timestamp.is_none())
                        .filter(|p| {
                            p.spec.as_ref().and_then(|s| s.node_name.as_deref()) == Some("node1")
                        })
                        .count();
                    most.fetch_max(live, std::sync::atomic::Ordering::Relaxed);
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        })
    };
    futures::future::try_join_all(yamls.iter().map(|y| h.apply(y))).await?;
    for name in &names {
        let t = h.wait_finished(name).await?;
        assert_eq!(
            state_of(&t),
            Some(TaskState::Succeeded),
            "{name}: {:?}",
            t.status.and_then(|s| s.msg)
        );
    }
    watch.abort();
    let most = most.load(std::sync::atomic::Ordering::Relaxed);
    assert!(
        (1..=CAP).contains(&most),
        "node1 ran {most} worker Pods at once, cap {CAP}"
    );
    h.shutdown().await
}

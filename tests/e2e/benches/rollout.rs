//! `make bench`: apply → every node Succeeded, hostplug against Ansible `lineinfile` on the
//! same machine in the same run. Prints numbers, asserts nothing.
//!
//! hostplug: a real control plane and simulated nodes (the e2e harness), the release
//! operator and worker binaries. For N target nodes: cold (no worker Pods) and warm (the
//! pool's workers from the cold run), then 100 tasks × 10 nodes at once, the operator's
//! peak RSS and its API requests per task-node.
//!
//! Ansible: ansible-core from PyPI in a venv under `~/.cache/hostplug/ansible-venv`
//! (made on first use), `connection: local`, one etc directory per host, forks 10, the
//! same one-line edit.
//!
//! Then the operator's memory with 1000 finished tasks kept (900 more tasks × 10 nodes on
//! warm workers), and, on a control plane of its own, one task over 1000 simulated nodes
//! (cold, then warm): the time, the operator's peak RSS and its API requests per node.
//!
//! `HOSTPLUG_BENCH_SIZES` (default `3,10,50,200`) picks the node counts;
//! `HOSTPLUG_BENCH_SCALE_NODES` (default 1000, 0 skips it) the large run.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use hostplug_api::crd::TaskState;
use hostplug_e2e::Harness;
use k8s_openapi::api::core::v1::Pod;
use kube::Api;
use kube::api::{DeleteParams, ListParams};

/// The operator's metrics address in the bench (fixed, so the bench can read it).
const METRICS_ADDR: &str = "127.0.0.1:18093";
/// Tasks in the throughput round.
const MANY_TASKS: usize = 100;
/// Nodes of each task in the throughput round.
const MANY_NODES: usize = 10;
/// Ansible's forks (its default is 5; 10 as in the measurement).
const ANSIBLE_FORKS: usize = 10;
/// Finished tasks the operator keeps when its memory is measured.
const KEPT_TASKS: usize = 1000;
/// The figure before the one-engine operator, for comparison: 200 MiB peak RSS after 108
/// finished tasks (README, measured in the second round).
const EARLIER_PEAK_MIB: f64 = 200.0;

fn task(name: &str, nodes: usize, line: &str) -> String {
    let workers: Vec<String> = (1..=nodes).map(|i| format!("node{i}")).collect();
    format!(
        "apiVersion: hostplug.dev/v1alpha1\nkind: HostTask\nmetadata: {{name: {name}, namespace: hostplug-system}}\nspec:\n  workers: [{}]\n  rollout: {{maxParallel: {}}}\n  http: {{api: etc-file, method: ensure-line, parameter: {{path: /etc/bench.conf, line: {line}, create: true}}}}\n",
        workers.join(", "),
        nodes.max(1)
    )
}

async fn wait_all(h: &Harness, names: &[String]) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(900);
    let mut left: Vec<&String> = names.iter().collect();
    while !left.is_empty() {
        let list = h.tasks().list(&ListParams::default()).await?;
        left.retain(|n| {
            !list.items.iter().any(|t| {
                t.metadata.name.as_deref() == Some(n.as_str())
                    && t.status.as_ref().is_some_and(|s| s.state.is_finished())
            })
        });
        for t in &list.items {
            if let Some(s) = &t.status
                && s.state == TaskState::Failed
                && names
                    .iter()
                    .any(|n| Some(n.as_str()) == t.metadata.name.as_deref())
            {
                bail!("{:?} failed: {:?}", t.metadata.name, s.msg);
            }
        }
        if Instant::now() > deadline {
            bail!("tasks not finished: {left:?}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(())
}

async fn apply_and_wait(
    h: &Harness,
    names: &[String],
    yamls: &[String],
) -> anyhow::Result<Duration> {
    let started = Instant::now();
    futures::future::try_join_all(yamls.iter().map(|y| h.apply(y))).await?;
    wait_all(h, names).await?;
    Ok(started.elapsed())
}

async fn delete_workers(h: &Harness) -> anyhow::Result<()> {
    let pods: Api<Pod> = Api::namespaced(h.admin.clone(), hostplug_e2e::NAMESPACE);
    pods.delete_collection(
        &DeleteParams::default().grace_period(0),
        &ListParams::default().labels("app.kubernetes.io/component=worker"),
    )
    .await?;
    let deadline = Instant::now() + Duration::from_secs(120);
    while !h.worker_pods().await?.is_empty() {
        if Instant::now() > deadline {
            bail!("worker Pods did not go away");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    Ok(())
}

async fn api_requests() -> anyhow::Result<u64> {
    let text = reqwest::Client::builder()
        .no_proxy()
        .build()?
        .get(format!("http://{METRICS_ADDR}/metrics"))
        .send()
        .await?
        .text()
        .await?;
    text.lines()
        .find_map(|l| l.strip_prefix("hostplug_api_requests_total "))
        .and_then(|v| v.trim().parse().ok())
        .context("no hostplug_api_requests_total in the operator's metrics")
}

/// A `/proc/<pid>/status` figure in KiB (`VmHWM`: peak RSS, `VmRSS`: now).
fn status_kib(pid: Option<u32>, field: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{}/status", pid?)).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

fn mib(kib: Option<u64>) -> String {
    kib.map_or_else(
        || "unknown".into(),
        |k| format!("{:.1} MiB", k as f64 / 1024.0),
    )
}

/// One task over `nodes` simulated nodes on a control plane of its own: cold (workers
/// start), then warm. Prints time, the operator's peak RSS and API requests per node.
async fn scale(nodes: usize) -> anyhow::Result<()> {
    eprintln!("starting a control plane with {nodes} simulated nodes …");
    let h = Harness::start_with(
        Some(nodes),
        &[("HOSTPLUG_HTTP_ADDR", METRICS_ADDR), ("RUST_LOG", "warn")],
    )
    .await?;
    let cold = "scale-cold".to_owned();
    let cold_t = apply_and_wait(
        &h,
        std::slice::from_ref(&cold),
        &[task(&cold, nodes, &cold)],
    )
    .await?;
    let before = api_requests().await?;
    let warm = "scale-warm".to_owned();
    let warm_t = apply_and_wait(
        &h,
        std::slice::from_ref(&warm),
        &[task(&warm, nodes, &warm)],
    )
    .await?;
    let requests = api_requests().await? - before;
    println!(
        "\n1 task × {nodes} nodes: cold {:.2} s, warm {:.2} s; warm: {:.2} operator API requests per node; operator peak RSS {}",
        cold_t.as_secs_f64(),
        warm_t.as_secs_f64(),
        requests as f64 / nodes as f64,
        mib(status_kib(h.operator_pid(), "VmHWM")),
    );
    h.shutdown().await
}

/// Runs Ansible's `lineinfile` over `n` local hosts, each with its own etc directory.
fn ansible_run(playbook: &Path, dir: &Path, n: usize, line: &str) -> anyhow::Result<Duration> {
    let mut inv = String::from("all:\n  hosts:\n");
    for i in 0..n {
        let etc = dir.join(format!("host{i}/etc"));
        std::fs::create_dir_all(&etc)?;
        inv.push_str(&format!(
            "    host{i}:\n      ansible_connection: local\n      ansible_python_interpreter: {}\n      etc_dir: {}\n",
            hostplug_e2e::ansible::python_of(playbook).display(),
            etc.display()
        ));
    }
    let inv_path = dir.join("inventory.yaml");
    std::fs::write(&inv_path, inv)?;
    let play = dir.join("play.yaml");
    std::fs::write(
        &play,
        format!(
            "- hosts: all\n  gather_facts: false\n  tasks:\n    - ansible.builtin.lineinfile:\n        path: \"{{{{ etc_dir }}}}/bench.conf\"\n        line: {line}\n        create: true\n"
        ),
    )?;
    let started = Instant::now();
    let out = std::process::Command::new(playbook)
        .arg("-i")
        .arg(&inv_path)
        .arg("-f")
        .arg(ANSIBLE_FORKS.to_string())
        .arg(&play)
        .env("ANSIBLE_HOST_KEY_CHECKING", "False")
        .env("ANSIBLE_LOCAL_TEMP", dir.join("tmp"))
        .env("ANSIBLE_HOME", dir.join("home"))
        .output()?;
    let took = started.elapsed();
    if !out.status.success() {
        bail!(
            "ansible-playbook failed:\n{}",
            String::from_utf8_lossy(&out.stdout)
        );
    }
    Ok(took)
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let sizes: Vec<usize> = std::env::var("HOSTPLUG_BENCH_SIZES")
        .unwrap_or_else(|_| "3,10,50,200".into())
        .split(',')
        .filter_map(|s| s.trim().parse().ok())
        .collect();
    let biggest = sizes.iter().copied().max().unwrap_or(3).max(MANY_NODES);
    let playbook = hostplug_e2e::ansible::ansible_playbook()?;
    let scratch = tempfile::tempdir()?;

    eprintln!("starting a control plane with {biggest} simulated nodes …");
    let h = Harness::start_with(
        Some(biggest),
        &[("HOSTPLUG_HTTP_ADDR", METRICS_ADDR), ("RUST_LOG", "warn")],
    )
    .await?;

    println!(
        "| apply → every node done | hostplug cold | hostplug warm | Ansible lineinfile | Ansible ÷ hostplug warm |"
    );
    println!("|---|---|---|---|---|");
    for &n in &sizes {
        delete_workers(&h).await?;
        let cold = format!("cold-{n}");
        let cold_t =
            apply_and_wait(&h, std::slice::from_ref(&cold), &[task(&cold, n, &cold)]).await?;
        let warm = format!("warm-{n}");
        let warm_t =
            apply_and_wait(&h, std::slice::from_ref(&warm), &[task(&warm, n, &warm)]).await?;
        let dir = scratch.path().join(format!("ansible-{n}"));
        std::fs::create_dir_all(&dir)?;
        let ansible_t = ansible_run(&playbook, &dir, n, &format!("ansible-{n}"))?;
        println!(
            "| 1 task × {n} nodes | {:.2} s | {:.2} s | {:.2} s | {:.1}× |",
            cold_t.as_secs_f64(),
            warm_t.as_secs_f64(),
            ansible_t.as_secs_f64(),
            ansible_t.as_secs_f64() / warm_t.as_secs_f64()
        );
    }

    // Throughput: 100 tasks × 10 nodes at once, on warm workers.
    let before = api_requests().await?;
    let names: Vec<String> = (0..MANY_TASKS).map(|i| format!("many-{i}")).collect();
    let yamls: Vec<String> = names.iter().map(|n| task(n, MANY_NODES, n)).collect();
    let many_t = apply_and_wait(&h, &names, &yamls).await?;
    let requests = api_requests().await? - before;
    let task_nodes = (MANY_TASKS * MANY_NODES) as f64;
    let dir = scratch.path().join("ansible-many");
    std::fs::create_dir_all(&dir)?;
    let ansible_one = ansible_run(&playbook, &dir, MANY_NODES, "ansible-many")?;
    println!(
        "| {MANY_TASKS} tasks × {MANY_NODES} nodes (warm) | | {:.2} s ({:.1} ms per task-node) | {:.2} s per task ({:.0} s for {MANY_TASKS} in a row) | {:.1}× |",
        many_t.as_secs_f64(),
        many_t.as_secs_f64() * 1000.0 / task_nodes,
        ansible_one.as_secs_f64(),
        ansible_one.as_secs_f64() * MANY_TASKS as f64,
        ansible_one.as_secs_f64() * MANY_TASKS as f64 / many_t.as_secs_f64()
    );
    println!(
        "\noperator API requests per task-node (100 × 10 round): {:.2}",
        requests as f64 / task_nodes
    );
    // Memory with KEPT_TASKS finished tasks kept: more rounds of 100 tasks × 10 nodes.
    let mut round = 0;
    while h.tasks().list(&ListParams::default()).await?.items.len() < KEPT_TASKS {
        round += 1;
        let names: Vec<String> = (0..MANY_TASKS)
            .map(|i| format!("kept-{round}-{i}"))
            .collect();
        let yamls: Vec<String> = names.iter().map(|n| task(n, MANY_NODES, n)).collect();
        apply_and_wait(&h, &names, &yamls).await?;
    }
    let finished = h.tasks().list(&ListParams::default()).await?.items.len();
    println!(
        "operator with {biggest} nodes and {finished} finished tasks kept: peak RSS (VmHWM) {}, RSS now {} (before the one-engine operator: {EARLIER_PEAK_MIB:.0} MiB after 108 tasks)",
        mib(status_kib(h.operator_pid(), "VmHWM")),
        mib(status_kib(h.operator_pid(), "VmRSS")),
    );
    h.shutdown().await?;

    let scale_nodes = std::env::var("HOSTPLUG_BENCH_SCALE_NODES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1000usize);
    if scale_nodes > 0 {
        scale(scale_nodes).await?;
    }
    Ok(())
}

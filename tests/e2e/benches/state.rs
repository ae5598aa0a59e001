//! `make bench`: one HostState of 3 steps on N simulated worker nodes, checked every
//! 30 s, against a real control plane with the release operator and workers. Prints
//! numbers, asserts nothing:
//!
//! - the time from `kubectl apply` to every node in sync (cold: workers start),
//! - per quiet round (nothing drifted): the operator's CPU time, its status writes and
//!   API requests, and a node check's mean latency (its histogram),
//! - the operator's memory (VmRSS, VmHWM),
//! - the time from a manual edit on one node to its correction.
//!
//! `HOSTPLUG_BENCH_STATE_NODES` (default 200) and `HOSTPLUG_BENCH_STATE_INTERVAL`
//! (seconds, default 30) change the size and the interval; `HOSTPLUG_BENCH_STATE_ROUNDS`
//! (default 3) the quiet rounds measured.

use std::time::{Duration, Instant};

use anyhow::Context;
use hostplug_api::state::{HostState, NodeSync};
use hostplug_e2e::Harness;
use kube::Api;

/// The operator's metrics address in this bench (fixed, so the bench can read it; not
/// the rollout bench's, so both can run one after the other without a clash).
const METRICS_ADDR: &str = "127.0.0.1:18094";
/// Clock ticks per second of `/proc/<pid>/stat` (`USER_HZ`, 100 on Linux).
const USER_HZ: f64 = 100.0;

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn state_yaml(interval: u64) -> String {
    let steps: Vec<String> = (1..=3)
        .map(|i| {
            format!(
                "  - {{api: etc-file, method: ensure-line, parameter: {{path: /etc/bench-state-{i}.conf, line: \"setting-{i}=on\", regexp: \"^setting-{i}=\", create: true}}}}"
            )
        })
        .collect();
    format!(
        "apiVersion: hostplug.dev/v1alpha1\nkind: HostState\nmetadata: {{name: bench}}\nspec:\n  targetType: Node\n  mode: Enforce\n  intervalSeconds: {interval}\n  rollout: {{maxParallel: 50}}\n  steps:\n{}\n",
        steps.join("\n")
    )
}

async fn metrics() -> anyhow::Result<String> {
    Ok(reqwest::Client::builder()
        .no_proxy()
        .build()?
        .get(format!("http://{METRICS_ADDR}/metrics"))
        .send()
        .await?
        .text()
        .await?)
}

/// The value of the first metric line starting with `prefix` (labels included).
fn metric(text: &str, prefix: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(prefix))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0.0)
}

/// The operator's CPU time (user + system) in seconds.
fn cpu_seconds(pid: u32) -> anyhow::Result<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // Fields after the command (which may hold spaces) start after the last ')'.
    let rest = stat.rsplit_once(')').context("odd /proc stat")?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| -> f64 { fields.get(i).and_then(|v| v.parse().ok()).unwrap_or(0.0) };
    // utime and stime are fields 14 and 15 of the whole line: 12 and 13 after the ')'.
    Ok((ticks(11) + ticks(12)) / USER_HZ)
}

fn memory_kib(pid: u32, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix(field))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        })
        .unwrap_or(0)
}

async fn wait_in_sync(api: &Api<HostState>, nodes: usize) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(1800);
    loop {
        if let Some(s) = api.get_opt("bench").await?
            && let Some(st) = &s.status
            && st.nodes.len() == nodes
            && st.nodes.iter().all(|n| n.sync == NodeSync::InSync)
        {
            return Ok(());
        }
        anyhow::ensure!(Instant::now() < deadline, "never in sync");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let nodes = usize::try_from(env_or("HOSTPLUG_BENCH_STATE_NODES", 200))?;
    let interval = env_or("HOSTPLUG_BENCH_STATE_INTERVAL", 30);
    let rounds = env_or("HOSTPLUG_BENCH_STATE_ROUNDS", 3);
    eprintln!("starting a control plane with {nodes} simulated worker nodes …");
    let h = Harness::start_with(
        Some(nodes),
        &[
            ("HOSTPLUG_HTTP_ADDR", METRICS_ADDR),
            ("RUST_LOG", "warn"),
            // The production lease (renewed every 5 s), not the harness's 4 s one that
            // renews every second and would dominate the API requests counted per round.
            ("HOSTPLUG_LEASE_SECONDS", "15"),
        ],
    )
    .await?;
    let pid = h.operator_pid().context("no operator process")?;
    let api: Api<HostState> = Api::all(h.admin.clone());

    let started = Instant::now();
    h.apply(&state_yaml(interval)).await?;
    wait_in_sync(&api, nodes).await?;
    let converge = started.elapsed();

    // Quiet rounds: nothing drifts.
    let text = metrics().await?;
    let key = "{state=\"bench\"}";
    let (r0, w0, q0) = (
        metric(&text, &format!("hostplug_state_rounds_total{key} ")),
        metric(&text, &format!("hostplug_state_status_writes_total{key} ")),
        metric(&text, "hostplug_api_requests_total "),
    );
    let (s0, c0) = (
        metric(&text, "hostplug_state_check_seconds_sum "),
        metric(&text, "hostplug_state_check_seconds_count "),
    );
    let cpu0 = cpu_seconds(pid)?;
    tokio::time::sleep(Duration::from_secs(interval * rounds + 2)).await;
    let text = metrics().await?;
    let cpu = cpu_seconds(pid)? - cpu0;
    let done = metric(&text, &format!("hostplug_state_rounds_total{key} ")) - r0;
    let writes = metric(&text, &format!("hostplug_state_status_writes_total{key} ")) - w0;
    let requests = metric(&text, "hostplug_api_requests_total ") - q0;
    let checks = metric(&text, "hostplug_state_check_seconds_count ") - c0;
    let check_secs = metric(&text, "hostplug_state_check_seconds_sum ") - s0;
    let per = |v: f64| if done > 0.0 { v / done } else { f64::NAN };

    // A manual edit on one node, until corrected.
    let file = h.etc("node1")?.join("bench-state-2.conf");
    let edited = Instant::now();
    std::fs::write(&file, "setting-2=off\n")?;
    let deadline = edited + Duration::from_secs(interval * 3 + 60);
    while std::fs::read_to_string(&file)? != "setting-2=on\n" {
        anyhow::ensure!(Instant::now() < deadline, "the edit was never corrected");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let corrected = edited.elapsed();

    println!("| HostState of 3 steps, {nodes} nodes, every {interval} s | value |");
    println!("|---|---|");
    println!(
        "| apply → every node in sync (cold workers) | {:.1} s |",
        converge.as_secs_f64()
    );
    println!("| quiet rounds measured | {done} |");
    println!(
        "| operator CPU per quiet round | {:.0} ms |",
        per(cpu) * 1000.0
    );
    println!("| status writes per quiet round | {:.2} |", per(writes));
    println!(
        "| API requests per quiet round (lease renewals included) | {:.1} |",
        per(requests)
    );
    println!(
        "| node check (3 dry runs), mean | {:.1} ms |",
        if checks > 0.0 {
            check_secs / checks * 1000.0
        } else {
            f64::NAN
        }
    );
    println!(
        "| operator memory VmRSS / VmHWM | {} / {} MiB |",
        memory_kib(pid, "VmRSS:") / 1024,
        memory_kib(pid, "VmHWM:") / 1024
    );
    println!(
        "| manual edit → corrected | {:.1} s (interval {interval} s) |",
        corrected.as_secs_f64()
    );
    h.shutdown().await
}

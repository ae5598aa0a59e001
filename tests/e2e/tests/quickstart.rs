//! docs/quickstart.md, run as printed against the real-node environment: `make images`
//! (its cargo steps skipped: the binaries are this test run's),
//! the containerd import of each archive on every node (the "kubeadm or any node with
//! containerd" commands; kind and k3s have no node here), `helm install` with the printed
//! values, the waits, the first dry run and reading its result, and the clean-up
//! (`helm uninstall`, the CRDs deleted). Every command of the page's `sh` blocks runs,
//! in order, with the environment's `kubectl` and `helm` (`KUBECONFIG` set to it) and
//! the repository as the working directory; each node's `ctr` gets the archive from
//! `target/images` (the files "copied to the node": the node sees this machine's
//! filesystem). A command the page adds later that this test does not know fails it.
//!
//! Checked on the nodes: the images are in each node's containerd under the names the
//! chart uses, the operator's Pods run them, the dry run changed no file on any node, and
//! after the clean-up no hostplug object is left in the API.

mod common;

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use common::{REAL_NODE_TESTS, REAL_NODES, snapshot};
use hostplug_e2e::{changed_files, repo_root};
use hostplug_testenv::helm::HelmChart;
use hostplug_testenv::{EnvConfig, Environment};

/// The page.
const PAGE: &str = "docs/quickstart.md";
/// How long one printed command may take: 30 min for `make images` on a cold target
/// directory; the others end in seconds or carry their own `--timeout`.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(1800);

/// The page's `sh` blocks, as command lines (continuations joined, comments dropped).
fn commands(page: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut in_sh = false;
    let mut pending = String::new();
    for line in page.lines() {
        let t = line.trim_start();
        if let Some(lang) = t.strip_prefix("```") {
            in_sh = !in_sh && lang.trim() == "sh";
            continue;
        }
        if !in_sh {
            continue;
        }
        let code = match t.find(" #") {
            Some(i) => &t[..i],
            None if t.starts_with('#') => "",
            None => t,
        };
        let code = code.trim_end();
        if let Some(part) = code.strip_suffix('\\') {
            pending.push_str(part);
            pending.push(' ');
            continue;
        }
        pending.push_str(code);
        let full = pending.trim().to_owned();
        pending.clear();
        if !full.is_empty() {
            out.push(full);
        }
    }
    out
}

/// Runs `cmd` in the repository with the environment's kubeconfig; its stdout.
async fn run(
    mut cmd: tokio::process::Command,
    env: &Environment,
    line: &str,
) -> anyhow::Result<String> {
    cmd.current_dir(repo_root())
        .env("KUBECONFIG", env.kubeconfig_path())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let started = Instant::now();
    let out = tokio::time::timeout(COMMAND_TIMEOUT, cmd.output())
        .await
        .with_context(|| format!("{line}: no end within {COMMAND_TIMEOUT:?}"))?
        .with_context(|| format!("running {line}"))?;
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    ensure!(
        out.status.success(),
        "{line} failed ({}):\n{stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    eprintln!("$ {line}   ({:.1?})\n{stdout}", started.elapsed());
    Ok(stdout)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_quickstart_runs_as_printed_on_real_nodes() -> anyhow::Result<()> {
    let _one_at_a_time = REAL_NODE_TESTS.lock().await;
    let page = std::fs::read_to_string(repo_root().join(PAGE))?;
    let lines = commands(&page);
    ensure!(lines.len() > 10, "{PAGE}: {lines:?}");
    let env = Environment::start(EnvConfig::control_plane_only().with_real_nodes(REAL_NODES))
        .await
        .context("starting the control plane and the real nodes")?;
    let home = tempfile::tempdir()?;
    let helm = HelmChart::new(&repo_root(), home.path())?;
    let images_dir: PathBuf = repo_root().join("target/images");
    let mut before = None;
    let mut ran = Vec::new();

    for line in &lines {
        let words = shlex::split(line).with_context(|| format!("{PAGE}: cannot split {line}"))?;
        let args: Vec<&str> = words.iter().map(String::as_str).collect();
        match args.as_slice() {
            ["make", "images"] => {
                // As printed, but with the binaries this test run was built with:
                // `cargo test` holds the target directory's lock while tests run, so the
                // `cargo build` steps of the target would wait for it forever.
                // `CARGO=true` makes them no-ops; the plugins, the images and the
                // archives are made as the target says.
                let mut c = tokio::process::Command::new("make");
                c.args(["images", "CARGO=true"]);
                run(c, &env, line).await?;
            }
            ["ls", "target/images/"] => {
                for f in ["operator.tar", "web.tar", "worker.tar"] {
                    ensure!(images_dir.join(f).is_file(), "no target/images/{f}");
                }
            }
            // No kind cluster and no k3s node here: the containerd commands stand for all.
            ["kind", ..] | ["sudo", "k3s", ..] => continue,
            ["sudo", "ctr", rest @ ..] => {
                let file = rest.last().context("ctr without a file")?;
                let archive = images_dir.join(Path::new(file));
                let mut ctr_args: Vec<String> = rest[..rest.len() - 1]
                    .iter()
                    .map(|s| (*s).to_owned())
                    .collect();
                ctr_args.push(archive.display().to_string());
                for node in env.real_nodes() {
                    let started = Instant::now();
                    node.ctr(&ctr_args)
                        .await
                        .with_context(|| format!("{line} on {}", node.name()))?;
                    eprintln!("$ {line}   (on {}, {:.1?})", node.name(), started.elapsed());
                }
            }
            ["helm", rest @ ..] => {
                let mut c = helm.command();
                c.args(rest);
                run(c, &env, line).await?;
            }
            ["kubectl", rest @ ..] => {
                if rest.first() == Some(&"apply") && before.is_none() {
                    before = Some(snapshot(&env)?);
                }
                let mut c = tokio::process::Command::new(env.kubectl());
                c.args(rest);
                let out = run(c, &env, line).await?;
                if rest.first() == Some(&"get") && rest.get(1) == Some(&"hostplugins") {
                    for name in [
                        "etc-file",
                        "docker-image",
                        "containerd-image",
                        "systemd-unit",
                    ] {
                        ensure!(out.contains(name), "get hostplugins: {out}");
                    }
                }
            }
            _ => bail!("{PAGE}: a command this test does not know how to run: {line}"),
        }
        ran.push(line.clone());
    }

    // The images came from the archives: in every node's containerd by the chart's names.
    for node in env.real_nodes() {
        let list = node.ctr(["images", "ls", "-q"]).await?;
        for image in [
            "ghcr.io/hostplug/operator:dev",
            "ghcr.io/hostplug/web:dev",
            "ghcr.io/hostplug/worker:dev",
        ] {
            ensure!(
                list.contains(image),
                "{} lacks {image}:\n{list}",
                node.name()
            );
        }
    }
    // The dry run wrote nothing on any node.
    let before = before.context("the page applied nothing")?;
    ensure!(
        changed_files(&before, &snapshot(&env)?).is_empty(),
        "the dry run changed files on the nodes"
    );
    ensure!(
        ran.iter().any(|l| l.contains("ensure-line-dry-run.yaml")),
        "{ran:?}"
    );
    // Clean: the uninstall and the CRDs' deletion leave no hostplug kind in the API.
    let kinds = {
        let mut c = tokio::process::Command::new(env.kubectl());
        c.args(["api-resources", "--api-group=hostplug.dev", "-o", "name"]);
        run(c, &env, "kubectl api-resources --api-group=hostplug.dev").await?
    };
    ensure!(kinds.trim().is_empty(), "left after the clean-up: {kinds}");
    env.shutdown().await?;
    Ok(())
}

//! `make dev`: the whole hostplug system on this machine — the control plane, the
//! simulated nodes (worker image mapped to the built `hostplug-worker`), the CRDs, the
//! operator's RBAC, and the operator itself, run as its ServiceAccount with the built-in
//! plugins. Prints the kubeconfig and what to type next; Ctrl-C stops everything.
//!
//! The web console runs too, as its own ServiceAccount, on https://127.0.0.1:18081.
//! node1 and node2 get a Docker Engine API at their `/var/run/docker.sock` (Podman's
//! Docker API service) and `registry.example:5000` resolves to a registry on loopback
//! holding the images the docker examples pull; node1 also gets a containerd (CRI) at its
//! `/run/containerd/containerd.sock` pulling from that registry, so every file of
//! `deploy/examples` runs as printed. node2 runs on a real systemd
//! (`hostplug_testenv::systemd`): its `/etc` is that systemd node's, its system bus is at
//! its `/run/dbus/system_bus_socket`, and the test service `hostplug-demo.service` runs
//! there.
//!
//! The operator, worker and console binaries are expected next to this one (`make dev` builds
//! them); the built-in plugins in `HOSTPLUG_PLUGIN_DIR` (default `target/plugins`).

use std::path::{Path, PathBuf};
use std::process::Stdio;

use anyhow::{Context, bail};
use hostplug_testenv::hostplug::{
    DOCKER_NODES, EXAMPLE_REGISTRY, NAMESPACE, OPERATOR_SA, SYSTEMD_NODES, install_operator,
    start_environment, start_node_containerd, start_node_docker, start_node_systemd,
};

/// Where the operator serves /metrics and /healthz in the dev environment.
const OPERATOR_HTTP_ADDR: &str = "127.0.0.1:18080";
/// The web console's ServiceAccount (deploy/web/rbac.yaml).
const CONSOLE_SA: &str = "hostplug-web";
/// Where the web console listens in the dev environment.
const CONSOLE_ADDR: &str = "127.0.0.1:18081";

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// A binary built next to this one (target/debug/NAME).
fn sibling_binary(name: &str) -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe().context("locating hostplug-dev")?;
    let dir = exe.parent().context("hostplug-dev has no directory")?;
    let path = dir.join(name);
    if !path.is_file() {
        bail!(
            "{} not found; build it first: cargo build -p hostplug-operator -p hostplug-worker -p hostplug-web",
            path.display()
        );
    }
    Ok(path)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let root = repo_root();
    let operator_bin = sibling_binary("hostplug-operator")?;
    let worker_bin = sibling_binary("hostplug-worker")?;
    let console_bin = sibling_binary("hostplug-web")?;
    let plugin_dir = std::env::var_os("HOSTPLUG_PLUGIN_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("target/plugins"));
    if !plugin_dir.join("etc-file.wasm").is_file() {
        bail!(
            "no built-in plugins in {} — run `make plugins` first",
            plugin_dir.display()
        );
    }

    let started = std::time::Instant::now();
    eprintln!("starting the control plane and the simulated nodes…");
    let env = start_environment(&worker_bin).await?;
    let install = install_operator(&env, &root, &plugin_dir).await?;
    eprintln!("starting Podman's Docker API on {DOCKER_NODES:?} and a registry on loopback…");
    let mut dockers = Vec::new();
    for node in DOCKER_NODES {
        match tokio::task::block_in_place(|| start_node_docker(&env, node)) {
            Ok(d) => dockers.push((node, d)),
            // Everything else still works; only the docker examples need it.
            Err(e) => eprintln!(
                "warning: no Docker API on {node} (the docker examples will fail there): {e:#}"
            ),
        }
    }
    // node1's containerd, pulling from node1's registry (the containerd examples).
    let containerd = match dockers.first() {
        Some((node, d)) => {
            match tokio::task::block_in_place(|| start_node_containerd(&env, node, d.registry())) {
                Ok(c) => Some(c),
                Err(e) => {
                    eprintln!(
                        "warning: no containerd on {node} (the containerd examples will fail there): {e:#}"
                    );
                    None
                }
            }
        }
        None => None,
    };
    eprintln!("starting systemd on {SYSTEMD_NODES:?} (the image is made on first use)…");
    let mut systemd_nodes = Vec::new();
    for node in SYSTEMD_NODES {
        match tokio::task::block_in_place(|| start_node_systemd(&env, node)) {
            Ok(n) => systemd_nodes.push(n),
            // Everything else still works: the node keeps the simulator's /etc.
            Err(e) => eprintln!("warning: no systemd on {node}: {e:#}"),
        }
    }
    let log_path = env.dir().join("logs/hostplug-operator.log");
    if let Some(parent) = log_path.parent() {
        std::fs::create_dir_all(parent).context("creating the log directory")?;
    }
    let log = std::fs::File::create(&log_path).context("creating the operator log")?;
    let mut operator = install
        .command(&operator_bin)
        .env("HOSTPLUG_HTTP_ADDR", OPERATOR_HTTP_ADDR)
        .env("POD_NAME", "hostplug-operator-dev")
        .env(
            "RUST_LOG",
            std::env::var("RUST_LOG").unwrap_or_else(|_| "info,kube=warn".into()),
        )
        .stdin(Stdio::null())
        .stdout(log.try_clone().context("duplicating the log file")?)
        .stderr(log)
        .kill_on_drop(true)
        .spawn()
        .with_context(|| format!("starting {}", operator_bin.display()))?;

    // The web console, as its own ServiceAccount (deploy/web/rbac.yaml), plain HTTP on
    // loopback (so its cookies are not marked Secure), database in the environment dir.
    env.apply_yaml_file(root.join("deploy/web/rbac.yaml"))
        .await
        .context("applying deploy/web/rbac.yaml")?;
    let console_kubeconfig = env
        .service_account_kubeconfig(NAMESPACE, CONSOLE_SA)
        .await
        .context("making the console's kubeconfig")?;
    let console_log_path = env.dir().join("logs/hostplug-web.log");
    let console_log =
        std::fs::File::create(&console_log_path).context("creating the console log")?;
    let mut console = tokio::process::Command::new(&console_bin)
        .args(["--listen", CONSOLE_ADDR, "--namespace", NAMESPACE])
        .arg("--db-path")
        .arg(env.dir().join("console/console.db"))
        .arg("--kubeconfig")
        .arg(&console_kubeconfig)
        .env(
            "RUST_LOG",
            std::env::var("RUST_LOG").unwrap_or_else(|_| "info,kube=warn".into()),
        )
        .stdin(Stdio::null())
        .stdout(
            console_log
                .try_clone()
                .context("duplicating the console log")?,
        )
        .stderr(console_log)
        .kill_on_drop(true)
        .spawn()
        .with_context(|| format!("starting {}", console_bin.display()))?;

    let kubectl = env.kubectl();
    let kubectl_dir = kubectl
        .parent()
        .map(|p| p.display().to_string())
        .unwrap_or_default();
    println!(
        "\nhostplug is running ({:.1}s): control plane, nodes master/node1/node2, the operator \
         as ServiceAccount {NAMESPACE}/{OPERATOR_SA} with the plugins of {plugins}.\n\n\
         In another shell:\n\
         \x20 export KUBECONFIG={kubeconfig}\n\
         \x20 export PATH={kubectl_dir}:$PATH\n\
         \x20 kubectl get hostplugins\n\
         \x20 kubectl apply -f {root}/deploy/examples/ensure-line-all-nodes.yaml\n\
         \x20 kubectl -n {NAMESPACE} get hosttasks -w\n\
         \x20 kubectl -n {NAMESPACE} get hosttask ensure-ntp-server -o yaml\n\
         \x20 kubectl apply -f {root}/deploy/examples/    # every example, docker ones too\n\
         \x20 kubectl hostplug plugins                  # after `make install`\n\n\
         Operator log:     {log}\n\
         Operator metrics: http://{OPERATOR_HTTP_ADDR}/metrics\n\
         Web console:      https://{CONSOLE_ADDR}/ (self-signed certificate; the first admin \
         registers with the setup token printed in the console log)\n\
         Console log:      {console_log}\n\
         Docker API:       {docker} (images pulled from {EXAMPLE_REGISTRY} come from a \
         registry on loopback)\n\
         systemd:          {systemd}\n\
         Files and logs:   {dir}\n\
         Ctrl-C stops everything.",
        started.elapsed().as_secs_f64(),
        plugins = plugin_dir.display(),
        kubeconfig = env.kubeconfig_path().display(),
        root = root.canonicalize().unwrap_or(root.clone()).display(),
        log = log_path.display(),
        console_log = console_log_path.display(),
        dir = env.dir().display(),
        docker = if dockers.is_empty() {
            "none (see the warnings above)".to_owned()
        } else {
            dockers
                .iter()
                .map(|(n, _)| format!("{n}:/var/run/docker.sock"))
                .collect::<Vec<_>>()
                .join(", ")
        },
        systemd = if systemd_nodes.is_empty() {
            "none (see the warnings above)".to_owned()
        } else {
            systemd_nodes
                .iter()
                .map(|n| {
                    format!(
                        "{}: real systemd, bus {}, `podman exec {} systemctl status` \
                         (Podman store ~/.cache/hostplug/images/podman)",
                        n.name(),
                        n.bus_address(),
                        n.container()
                    )
                })
                .collect::<Vec<_>>()
                .join("; ")
        },
    );
    println!("Each simulated node's /etc:");
    for node in ["master", "node1", "node2"] {
        if let Some(p) = env.node_root(node) {
            println!("  {node}: {}/etc", p.display());
        }
    }

    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("listening for SIGTERM")?;
    tokio::select! {
        r = tokio::signal::ctrl_c() => r.context("listening for Ctrl-C")?,
        _ = terminate.recv() => {}
        status = operator.wait() => {
            eprintln!("the operator exited ({status:?}); see {}", log_path.display());
        }
        status = console.wait() => {
            eprintln!("the console exited ({status:?}); see {}", console_log_path.display());
        }
    }
    eprintln!("\nstopping…");
    let _ = console.kill().await;
    let _ = operator.kill().await;
    tokio::task::block_in_place(|| {
        drop(containerd);
        drop(dockers);
        drop(systemd_nodes);
    });
    env.shutdown()
        .await
        .context("stopping the test environment")?;
    eprintln!("stopped.");
    Ok(())
}

//! `make cluster`: a control plane and the simulated nodes in the foreground, for people.
//! Prints the kubeconfig and how to use kubectl with it; Ctrl-C (or SIGTERM) stops
//! everything. `REAL_NODES=N` also starts N real nodes (kubelet + containerd, see
//! `hostplug_testenv::realnode`; needs root and `make setup`). Warnings of the harness and the node simulator go to stderr (`RUST_LOG`
//! selects more).

use anyhow::Context;
use hostplug_testenv::{EnvConfig, Environment};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                // kube's client logs every refused /readyz poll during start-up.
                .unwrap_or_else(|_| {
                    tracing_subscriber::EnvFilter::new("warn,kube_client::client::builder=off")
                }),
        )
        .with_writer(std::io::stderr)
        .init();
    let started = std::time::Instant::now();
    let real_nodes: usize = match std::env::var("REAL_NODES") {
        Ok(v) if !v.is_empty() => v
            .parse()
            .with_context(|| format!("REAL_NODES={v:?} is not a number"))?,
        _ => 0,
    };
    eprintln!("starting the control plane, the simulated nodes and {real_nodes} real node(s)…");
    let env = Environment::start(EnvConfig::default().with_real_nodes(real_nodes))
        .await
        .context("starting the test environment")?;
    let kubectl = env.kubectl();
    let kubectl_dir = kubectl
        .parent()
        .map(|p| p.display().to_string())
        .unwrap_or_default();
    println!(
        "\nhostplug cluster ready in {:.1}s (Kubernetes {}).\n\n\
         kubeconfig: {kubeconfig}\n\
         kubectl:    {kubectl}\n\n\
         In another shell:\n\
         \x20 export KUBECONFIG={kubeconfig}\n\
         \x20 export PATH={kubectl_dir}:$PATH\n\
         \x20 kubectl get nodes\n\n\
         Files and logs: {dir}{real}\n\
         Ctrl-C stops everything.",
        started.elapsed().as_secs_f64(),
        hostplug_testenv::K8S_VERSION,
        kubeconfig = env.kubeconfig_path().display(),
        kubectl = kubectl.display(),
        dir = env.dir().display(),
        real = env
            .real_nodes()
            .iter()
            .map(|n| format!(
                "\nReal node {}: {} (Pods {}), /etc = {}, containerd = {}",
                n.name(),
                n.ip(),
                n.pod_cidr(),
                n.etc_dir().display(),
                n.containerd_socket().display()
            ))
            .collect::<String>(),
    );
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("listening for SIGTERM")?;
    tokio::select! {
        r = tokio::signal::ctrl_c() => r.context("listening for Ctrl-C")?,
        _ = terminate.recv() => {}
    }
    eprintln!("\nstopping…");
    env.shutdown()
        .await
        .context("stopping the test environment")?;
    eprintln!("stopped.");
    Ok(())
}

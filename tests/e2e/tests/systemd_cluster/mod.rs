//! A cluster of real nodes booted by a real systemd, with hostplug installed by Helm from
//! images of this build: what the reboot test and the cycle bench share. Needs the
//! including crate to have `mod common` (tests/e2e/tests/common).
#![allow(dead_code)]

use std::time::Instant;

use anyhow::Context;
use hostplug_api::crd::HostPlugin;
use hostplug_e2e::{BUILTIN_PLUGINS, NAMESPACE, repo_root};
use hostplug_images::{Binaries, ImageStore};
use hostplug_testenv::{EnvConfig, Environment};
use kube::Api;

use crate::common::{HELM_VALUES, INSTALL_TIMEOUT, wait_deployment_ready, wait_until};

/// Starts `n` systemd real nodes (`sdreal1`…), imports this build's images into each
/// one's containerd, installs hostplug with Helm and waits until its operator replicas
/// are Ready and the built-in plugins registered.
pub async fn start(n: usize) -> anyhow::Result<Environment> {
    let t0 = Instant::now();
    let images = tokio::task::spawn_blocking(|| {
        let store = ImageStore::open()?;
        store.build_all(&Binaries::of_this_build()?)
    })
    .await??;
    let env = Environment::start(EnvConfig::control_plane_only().with_systemd_real_nodes(n))
        .await
        .context("starting the control plane and the systemd real nodes")?;
    for node in env.systemd_real_nodes() {
        for image in &images {
            node.import_image(&image.archive)
                .await
                .with_context(|| format!("importing {} into {}", image.name, node.name()))?;
        }
    }
    eprintln!(
        "{n} systemd real nodes up, images imported at {:.1?}",
        t0.elapsed()
    );
    hostplug_testenv::helm::helm_install(&env, &repo_root(), NAMESPACE, HELM_VALUES, &[]).await?;
    wait_deployment_ready(&env, "hostplug-operator", 2).await?;
    let plugins: Api<HostPlugin> = Api::all(env.admin_client());
    for name in BUILTIN_PLUGINS {
        wait_until(
            &format!("HostPlugin {name} ready"),
            INSTALL_TIMEOUT,
            || async {
                Ok(plugins
                    .get_opt(name)
                    .await?
                    .and_then(|p| p.status)
                    .is_some_and(|s| s.ready))
            },
        )
        .await?;
    }
    eprintln!("hostplug installed with Helm at {:.1?}", t0.elapsed());
    Ok(env)
}

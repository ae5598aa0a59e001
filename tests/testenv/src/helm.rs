//! Helm for the tests: the `helm` binary `tests/helm/build.sh` builds, and the chart in
//! `deploy/helm/hostplug` rendered, linted or installed into an [`Environment`] as a user
//! would install it (`helm install -n hostplug-system --create-namespace`).
//!
//! Helm runs with its config, cache and data directories in a directory of its own, so
//! nothing of the user's Helm setup (repositories, plugins, registry logins) affects a
//! test, and with `KUBECONFIG` pointing at the environment's admin kubeconfig only — it
//! can never reach another cluster.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};

use crate::Environment;
use crate::controlplane::binaries::cache_root;

/// Points at a `helm` binary to use instead of the cached build.
pub const HELM_ENV: &str = "HOSTPLUG_HELM";
/// The Helm version `tests/helm/build.sh` builds (keep in step with `HELM_VERSION` there).
pub const HELM_VERSION: &str = "4.3.1";
/// The chart, relative to the repository root.
pub const CHART_DIR: &str = "deploy/helm/hostplug";
/// The release name the tests and the docs use.
pub const RELEASE: &str = "hostplug";

/// Where `tests/helm/build.sh` puts `helm`:
/// `${HOSTPLUG_CACHE:-$HOME/.cache/hostplug}/helm/helm-<HELM_VERSION>/bin/helm`.
pub fn default_helm_path() -> PathBuf {
    cache_root().join(format!("helm/helm-{HELM_VERSION}/bin/helm"))
}

/// The chart at `repo_root`/[`CHART_DIR`] and the `helm` that renders and installs it.
#[derive(Debug, Clone)]
pub struct HelmChart {
    helm: PathBuf,
    chart: PathBuf,
    /// Helm's config, cache and data directories (`HELM_*_HOME`).
    home: PathBuf,
}

impl HelmChart {
    /// The chart in `repo_root`, with `helm` from [`HELM_ENV`] or [`default_helm_path`];
    /// Helm's own directories go under `home` (created when missing).
    pub fn new(repo_root: &Path, home: &Path) -> anyhow::Result<Self> {
        let helm = std::env::var_os(HELM_ENV)
            .map(PathBuf::from)
            .unwrap_or_else(default_helm_path);
        if !helm.is_file() {
            bail!(
                "helm not found at {} — run `make setup` (it runs tests/helm/build.sh), or \
                 point {HELM_ENV} at a helm binary",
                helm.display()
            );
        }
        let chart = repo_root.join(CHART_DIR);
        if !chart.join("Chart.yaml").is_file() {
            bail!("no chart at {}", chart.display());
        }
        std::fs::create_dir_all(home)
            .with_context(|| format!("creating Helm's directory {}", home.display()))?;
        Ok(HelmChart {
            helm,
            chart,
            home: home.to_owned(),
        })
    }

    /// The chart directory.
    pub fn chart_dir(&self) -> &Path {
        &self.chart
    }

    /// A `helm` command with Helm's directories set and no kubeconfig (add one for the
    /// commands that talk to a cluster).
    pub fn command(&self) -> tokio::process::Command {
        let mut cmd = tokio::process::Command::new(&self.helm);
        cmd.env("HELM_CONFIG_HOME", self.home.join("config"))
            .env("HELM_CACHE_HOME", self.home.join("cache"))
            .env("HELM_DATA_HOME", self.home.join("data"))
            .env("KUBECONFIG", self.home.join("no-kubeconfig"))
            .env_remove("HELM_KUBECONTEXT")
            .env_remove("HELM_NAMESPACE")
            .kill_on_drop(true);
        cmd
    }

    /// `helm template RELEASE CHART -n namespace --include-crds` with `--set` `values`:
    /// the manifests, CRDs included.
    pub async fn template(
        &self,
        namespace: &str,
        values: &[(&str, &str)],
    ) -> anyhow::Result<String> {
        let mut cmd = self.command();
        cmd.arg("template").arg(RELEASE).arg(&self.chart).args([
            "--namespace",
            namespace,
            "--include-crds",
        ]);
        add_values(&mut cmd, values);
        run(cmd, "helm template").await
    }

    /// `helm lint --strict` with `--set` `values`: its output, or an error with it.
    pub async fn lint(&self, values: &[(&str, &str)]) -> anyhow::Result<String> {
        let mut cmd = self.command();
        cmd.arg("lint").arg("--strict").arg(&self.chart);
        add_values(&mut cmd, values);
        run(cmd, "helm lint").await
    }

    /// Installs the chart into `env` as release [`RELEASE`] in `namespace` (created by
    /// Helm, then labelled by the chart), with `--set` `values` and any `extra_args`
    /// (e.g. `--wait`, `-f values.yaml`). Returns Helm's output.
    pub async fn install(
        &self,
        env: &Environment,
        namespace: &str,
        values: &[(&str, &str)],
        extra_args: &[&str],
    ) -> anyhow::Result<String> {
        let mut cmd = self.command();
        cmd.env("KUBECONFIG", env.kubeconfig_path())
            .arg("install")
            .arg(RELEASE)
            .arg(&self.chart)
            .args(["--namespace", namespace, "--create-namespace"]);
        add_values(&mut cmd, values);
        cmd.args(extra_args);
        run(cmd, "helm install").await
    }

    /// `helm get manifest RELEASE -n namespace` from `env`: what the release installed
    /// (without the CRDs, which Helm does not track).
    pub async fn installed_manifest(
        &self,
        env: &Environment,
        namespace: &str,
    ) -> anyhow::Result<String> {
        let mut cmd = self.command();
        cmd.env("KUBECONFIG", env.kubeconfig_path()).args([
            "get",
            "manifest",
            RELEASE,
            "--namespace",
            namespace,
        ]);
        run(cmd, "helm get manifest").await
    }
}

/// Installs hostplug into `env` with Helm as a user would (`helm install hostplug
/// deploy/helm/hostplug -n namespace --create-namespace`), with `--set` `values` and
/// `extra_args`; Helm's directories go into the environment's directory. The shortcut for
/// tests that need hostplug installed from the chart.
pub async fn helm_install(
    env: &Environment,
    repo_root: &Path,
    namespace: &str,
    values: &[(&str, &str)],
    extra_args: &[&str],
) -> anyhow::Result<HelmChart> {
    let chart = HelmChart::new(repo_root, &env.dir().join("helm"))?;
    chart.install(env, namespace, values, extra_args).await?;
    Ok(chart)
}

fn add_values(cmd: &mut tokio::process::Command, values: &[(&str, &str)]) {
    for (key, value) in values {
        cmd.arg("--set").arg(format!("{key}={value}"));
    }
}

/// Runs `cmd` and returns its stdout; an error with its stderr when it fails.
async fn run(mut cmd: tokio::process::Command, what: &str) -> anyhow::Result<String> {
    let program = cmd.as_std().get_program().to_owned();
    let args: Vec<String> = cmd
        .as_std()
        .get_args()
        .map(OsStr::to_string_lossy)
        .map(String::from)
        .collect();
    let out = cmd
        .output()
        .await
        .with_context(|| format!("running {}", Path::new(&program).display()))?;
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    if !out.status.success() {
        bail!(
            "{what} failed ({}): {} {}\n--- stderr\n{}\n--- stdout\n{}",
            out.status,
            Path::new(&program).display(),
            args.join(" "),
            String::from_utf8_lossy(&out.stderr),
            stdout
        );
    }
    Ok(stdout)
}

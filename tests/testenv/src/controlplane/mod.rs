//! A Kubernetes control plane on loopback: etcd, kube-apiserver, kube-controller-manager and
//! kube-scheduler as child processes, started in a directory of their own.
//!
//! Ports are picked free at start, so several control planes can run at once (tests run in
//! parallel threads). The API server runs with RBAC and Node authorization, signs
//! service-account tokens, and kube-controller-manager runs the default controllers with
//! per-controller service-account credentials — the garbage collector included.
//!
//! It never talks to any cluster but its own, and never uses the machine's kubectl.

pub mod binaries;
pub mod pki;
pub mod process;

use std::collections::HashSet;
use std::net::{Ipv4Addr, TcpListener};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use k8s_openapi::api::core::v1::ServiceAccount;
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Api, Client, Config};
use serde_json::json;

pub use binaries::{Binaries, K8S_VERSION};
use pki::{CertFiles, Pki, write_private};
use process::{ManagedProcess, STOP_GRACE, log_tail, stop_all};

use crate::{Error, Result};

/// How long etcd, the API server and the controller manager together may take to start.
/// A warm start takes a few seconds; this leaves room for a loaded 2-core CI machine.
pub const START_TIMEOUT: Duration = Duration::from_secs(120);

/// The Service cluster IP range. Nothing routes it (there is no kube-proxy); Services get
/// addresses from it and tests reach Pods by Pod IP.
pub const SERVICE_CLUSTER_IP_RANGE: &str = "10.96.0.0/16";

/// The first address of [`SERVICE_CLUSTER_IP_RANGE`]: the `kubernetes` Service's ClusterIP,
/// which the kubelet hands to Pods as `KUBERNETES_SERVICE_HOST`. It is in the API server's
/// certificate; real nodes answer on it (see [`crate::realnode`]).
pub const KUBERNETES_SERVICE_IP: &str = "10.96.0.1";

/// The issuer of service-account tokens.
pub const SERVICE_ACCOUNT_ISSUER: &str = "https://kubernetes.default.svc.cluster.local";

/// How many times a start is tried when a port picked free was taken meanwhile.
pub const START_ATTEMPTS: u32 = 3;

/// How often start-up polls for readiness.
const POLL: Duration = Duration::from_millis(100);

/// Choices of how the control plane starts; the default is what tests without real nodes
/// get.
#[derive(Debug, Clone, Default)]
pub struct ControlPlaneOptions {
    /// An `--egress-selector-config-file` for the API server: with real nodes, its traffic to
    /// kubelets (logs, exec, port-forward) goes through the environment's proxy, never from
    /// this machine's network. Also makes the API server present the admin certificate to
    /// kubelets and reach them by their InternalIP.
    pub egress_selector_config: Option<PathBuf>,
}

/// A running control plane. Dropping it stops every process (see [`process`]).
#[derive(Debug)]
pub struct ControlPlane {
    dir: PathBuf,
    binaries: Binaries,
    server: String,
    pki: Pki,
    admin_kubeconfig: PathBuf,
    /// In start order: etcd, kube-apiserver, kube-controller-manager, kube-scheduler.
    /// Stopped in reverse.
    processes: Vec<ManagedProcess>,
    /// How each process was started (name, program, arguments), in the same order: what
    /// [`ControlPlane::restart_api_server`] starts again.
    commands: Vec<(String, PathBuf, Vec<String>)>,
}

impl ControlPlane {
    /// Starts a control plane in `dir` (created if needed; certificates, data, logs and
    /// kubeconfigs go there) and waits until the API server is ready and the controllers
    /// run (the `default` ServiceAccount exists).
    ///
    /// A port picked free can be taken by another program before the process binds it;
    /// then the start is retried with new ports, up to [`START_ATTEMPTS`] times.
    pub async fn start(dir: &Path) -> Result<Self> {
        Self::start_with(dir, &ControlPlaneOptions::default()).await
    }

    /// [`Self::start`] with `options`.
    pub async fn start_with(dir: &Path, options: &ControlPlaneOptions) -> Result<Self> {
        let mut attempt = 1;
        loop {
            match Self::start_once(dir, options).await {
                Err(e) if attempt < START_ATTEMPTS && is_port_clash(&e) => {
                    tracing::warn!(attempt, error = %e, "control plane lost a port; retrying");
                    // etcd bootstrapped with the old URLs cannot start with new ones.
                    let data = dir.join("etcd");
                    std::fs::remove_dir_all(&data)
                        .map_err(|e| Error::io(format!("removing {}", data.display()), e))?;
                    attempt += 1;
                }
                result => return result,
            }
        }
    }

    async fn start_once(dir: &Path, options: &ControlPlaneOptions) -> Result<Self> {
        let binaries = Binaries::locate()?;
        for sub in ["pki", "etcd", "logs", "apiserver"] {
            let d = dir.join(sub);
            std::fs::create_dir_all(&d)
                .map_err(|e| Error::io(format!("creating {}", d.display()), e))?;
        }
        let pki = Pki::generate(&dir.join("pki"))?;
        let etcd_client_port = free_port()?;
        let etcd_peer_port = free_port()?;
        let api_port = free_port()?;
        let server = format!("https://127.0.0.1:{api_port}");
        let admin_kubeconfig = dir.join("admin.kubeconfig");
        write_cert_kubeconfig(
            &admin_kubeconfig,
            &server,
            &pki.ca.cert,
            "admin",
            &pki.admin,
        )?;
        let kcm_kubeconfig = dir.join("kube-controller-manager.kubeconfig");
        write_cert_kubeconfig(
            &kcm_kubeconfig,
            &server,
            &pki.ca.cert,
            "system:kube-controller-manager",
            &pki.controller_manager,
        )?;

        let scheduler_kubeconfig = dir.join("kube-scheduler.kubeconfig");
        write_cert_kubeconfig(
            &scheduler_kubeconfig,
            &server,
            &pki.ca.cert,
            "system:kube-scheduler",
            &pki.scheduler,
        )?;

        let mut cp = ControlPlane {
            dir: dir.to_owned(),
            binaries,
            server,
            pki,
            admin_kubeconfig,
            processes: Vec::new(),
            commands: Vec::new(),
        };

        // etcd: plain HTTP on loopback, no fsync (the data is thrown away anyway).
        let etcd_client = format!("http://127.0.0.1:{etcd_client_port}");
        let etcd_peer = format!("http://127.0.0.1:{etcd_peer_port}");
        let etcd_args = vec![
            "--name=default".to_owned(),
            format!("--data-dir={}", dir.join("etcd").display()),
            format!("--listen-client-urls={etcd_client}"),
            format!("--advertise-client-urls={etcd_client}"),
            format!("--listen-peer-urls={etcd_peer}"),
            format!("--initial-advertise-peer-urls={etcd_peer}"),
            format!("--initial-cluster=default={etcd_peer}"),
            "--unsafe-no-fsync=true".to_owned(),
            "--log-level=warn".to_owned(),
        ];
        cp.spawn("etcd", &cp.binaries.etcd(), &etcd_args)?;
        cp.wait_for_port(etcd_client_port, "etcd").await?;

        let pki = &cp.pki;
        let mut apiserver_args = vec![
            format!("--etcd-servers={etcd_client}"),
            "--bind-address=127.0.0.1".to_owned(),
            "--advertise-address=127.0.0.1".to_owned(),
            format!("--secure-port={api_port}"),
            format!("--cert-dir={}", dir.join("apiserver").display()),
            format!("--tls-cert-file={}", pki.apiserver.cert.display()),
            format!("--tls-private-key-file={}", pki.apiserver.key.display()),
            format!("--client-ca-file={}", pki.ca.cert.display()),
            "--authorization-mode=Node,RBAC".to_owned(),
            format!("--service-account-issuer={SERVICE_ACCOUNT_ISSUER}"),
            format!(
                "--service-account-key-file={}",
                pki.service_account_pub.display()
            ),
            format!(
                "--service-account-signing-key-file={}",
                pki.service_account_key.display()
            ),
            format!("--service-cluster-ip-range={SERVICE_CLUSTER_IP_RANGE}"),
            "--allow-privileged=true".to_owned(),
            // The Endpoints of the `kubernetes` Service may not hold a loopback address, and
            // nothing here routes Service IPs anyway.
            "--endpoint-reconciler-type=none".to_owned(),
            "--profiling=false".to_owned(),
            "--v=1".to_owned(),
        ];
        if let Some(egress) = &options.egress_selector_config {
            apiserver_args.extend([
                format!("--egress-selector-config-file={}", egress.display()),
                format!("--kubelet-client-certificate={}", pki.admin.cert.display()),
                format!("--kubelet-client-key={}", pki.admin.key.display()),
                "--kubelet-preferred-address-types=InternalIP".to_owned(),
            ]);
        }
        cp.spawn(
            "kube-apiserver",
            &cp.binaries.kube_apiserver(),
            &apiserver_args,
        )?;
        let admin = cp.admin_client().await?;
        cp.wait_until_ready(&admin).await?;

        let pki = &cp.pki;
        let kcm_args = vec![
            format!("--kubeconfig={}", kcm_kubeconfig.display()),
            format!("--authentication-kubeconfig={}", kcm_kubeconfig.display()),
            format!("--authorization-kubeconfig={}", kcm_kubeconfig.display()),
            "--bind-address=127.0.0.1".to_owned(),
            // No serving port: nothing scrapes it, and it saves a port.
            "--secure-port=0".to_owned(),
            "--leader-elect=false".to_owned(),
            "--controllers=*".to_owned(),
            "--use-service-account-credentials=true".to_owned(),
            format!(
                "--service-account-private-key-file={}",
                pki.service_account_key.display()
            ),
            format!("--root-ca-file={}", pki.ca.cert.display()),
            format!("--cluster-signing-cert-file={}", pki.ca.cert.display()),
            format!("--cluster-signing-key-file={}", pki.ca.key.display()),
            format!("--service-cluster-ip-range={SERVICE_CLUSTER_IP_RANGE}"),
            "--profiling=false".to_owned(),
            "--v=1".to_owned(),
        ];
        cp.spawn(
            "kube-controller-manager",
            &cp.binaries.kube_controller_manager(),
            &kcm_args,
        )?;
        let scheduler_args = vec![
            format!("--kubeconfig={}", scheduler_kubeconfig.display()),
            format!(
                "--authentication-kubeconfig={}",
                scheduler_kubeconfig.display()
            ),
            format!(
                "--authorization-kubeconfig={}",
                scheduler_kubeconfig.display()
            ),
            "--bind-address=127.0.0.1".to_owned(),
            "--secure-port=0".to_owned(),
            "--leader-elect=false".to_owned(),
            "--profiling=false".to_owned(),
            "--v=1".to_owned(),
        ];
        cp.spawn(
            "kube-scheduler",
            &cp.binaries.kube_scheduler(),
            &scheduler_args,
        )?;
        cp.wait_for_controllers(&admin).await?;
        Ok(cp)
    }

    fn spawn(&mut self, name: &str, program: &Path, args: &[String]) -> Result<()> {
        let log = self.dir.join("logs").join(format!("{name}.log"));
        let p = ManagedProcess::spawn(name, program, args, &[], &log)?;
        self.processes.push(p);
        self.commands
            .push((name.to_owned(), program.to_owned(), args.to_vec()));
        Ok(())
    }

    /// The API server and its etcd crash and come back, as after a power cut of a
    /// single-node control plane: both are killed (SIGKILL, API server first), stay down
    /// for `down`, then start again with the same data, ports, certificates and logs
    /// (appended), and this returns once the API server is ready. Clients see refused
    /// connections meanwhile and their watches end; the controller manager, the scheduler
    /// and the node simulator keep running and reconnect by themselves.
    pub async fn restart_api_server(&mut self, down: Duration) -> Result<()> {
        const RESTARTED: [&str; 2] = ["kube-apiserver", "etcd"];
        for name in RESTARTED {
            if let Some(p) = self.processes.iter_mut().find(|p| p.name() == name) {
                p.kill();
            }
        }
        tokio::time::sleep(down).await;
        for name in RESTARTED.iter().rev() {
            let (i, (_, program, args)) = self
                .commands
                .iter()
                .enumerate()
                .find(|(_, (n, _, _))| n == name)
                .ok_or_else(|| {
                    Error::io(
                        format!("restarting {name}"),
                        std::io::Error::other("it was never started"),
                    )
                })?;
            let log = self.dir.join("logs").join(format!("{name}.log"));
            let p = ManagedProcess::spawn(name, program, args, &[], &log)?;
            // The killed process is reaped already; dropping it signals nothing.
            self.processes[i] = p;
        }
        let admin = self.admin_client().await?;
        self.wait_until_ready(&admin).await
    }

    /// Err when any process has ended.
    fn check_processes(&mut self) -> Result<()> {
        self.processes
            .iter_mut()
            .try_for_each(ManagedProcess::check_running)
    }

    fn timeout_error(&self, what: &str, log_of: &str) -> Error {
        let log = self.dir.join("logs").join(format!("{log_of}.log"));
        Error::StartTimeout {
            what: what.to_owned(),
            timeout: START_TIMEOUT,
            tail: log_tail(&log),
            log,
        }
    }

    async fn wait_for_port(&mut self, port: u16, what: &str) -> Result<()> {
        let deadline = tokio::time::Instant::now() + START_TIMEOUT;
        loop {
            self.check_processes()?;
            if tokio::net::TcpStream::connect((Ipv4Addr::LOCALHOST, port))
                .await
                .is_ok()
            {
                return Ok(());
            }
            if tokio::time::Instant::now() > deadline {
                return Err(self.timeout_error(what, what));
            }
            tokio::time::sleep(POLL).await;
        }
    }

    async fn wait_until_ready(&mut self, admin: &Client) -> Result<()> {
        let deadline = tokio::time::Instant::now() + START_TIMEOUT;
        loop {
            self.check_processes()?;
            let request = http::Request::get("/readyz")
                .body(Vec::new())
                .map_err(|e| Error::io("building a /readyz request", std::io::Error::other(e)))?;
            if let Ok(body) = admin.request_text(request).await
                && body.trim() == "ok"
            {
                return Ok(());
            }
            if tokio::time::Instant::now() > deadline {
                return Err(self.timeout_error("kube-apiserver /readyz", "kube-apiserver"));
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// The service-account controller creating `default/default` shows the controller
    /// manager is up; Pods cannot be admitted before their ServiceAccount exists anyway.
    async fn wait_for_controllers(&mut self, admin: &Client) -> Result<()> {
        let api: Api<ServiceAccount> = Api::namespaced(admin.clone(), "default");
        let deadline = tokio::time::Instant::now() + START_TIMEOUT;
        loop {
            self.check_processes()?;
            if api.get_opt("default").await.ok().flatten().is_some() {
                return Ok(());
            }
            if tokio::time::Instant::now() > deadline {
                return Err(self.timeout_error(
                    "kube-controller-manager (the default ServiceAccount)",
                    "kube-controller-manager",
                ));
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// The directory holding this control plane's files.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The API server's URL (`https://127.0.0.1:<port>`).
    pub fn server(&self) -> &str {
        &self.server
    }

    /// The CA certificate file (PEM) clients must trust.
    pub fn ca_file(&self) -> &Path {
        &self.pki.ca.cert
    }

    /// The generated certificates and keys.
    pub fn pki(&self) -> &Pki {
        &self.pki
    }

    /// The binaries this control plane runs (kubectl among them).
    pub fn binaries(&self) -> &Binaries {
        &self.binaries
    }

    /// A kubeconfig file for the admin (group `system:masters`).
    pub fn admin_kubeconfig(&self) -> &Path {
        &self.admin_kubeconfig
    }

    /// A client authenticated as the admin.
    pub async fn admin_client(&self) -> Result<Client> {
        client_from_kubeconfig(&self.admin_kubeconfig).await
    }

    /// Writes a kubeconfig at `path` that authenticates with a bearer `token` as `user`.
    pub fn write_token_kubeconfig(&self, path: &Path, user: &str, token: &str) -> Result<()> {
        let user_entry = json!({ "token": token });
        write_kubeconfig(path, &self.server, &self.pki.ca.cert, user, user_entry)
    }

    /// The log file of a process (`etcd`, `kube-apiserver`, `kube-controller-manager`,
    /// `kube-scheduler`).
    pub fn log_file(&self, process: &str) -> PathBuf {
        self.dir.join("logs").join(format!("{process}.log"))
    }

    /// The process ids of etcd, kube-apiserver, kube-controller-manager and kube-scheduler
    /// (each also the id of its process group).
    pub fn process_ids(&self) -> Vec<u32> {
        self.processes.iter().map(ManagedProcess::id).collect()
    }

    /// Stops every process, last started first, each with a grace period.
    pub async fn shutdown(mut self) {
        self.processes.reverse();
        stop_all(&mut self.processes, STOP_GRACE).await;
        self.processes.clear();
    }
}

impl Drop for ControlPlane {
    fn drop(&mut self) {
        // Reverse start order; each ManagedProcess stops itself on drop.
        while let Some(mut p) = self.processes.pop() {
            p.stop_blocking(STOP_GRACE);
        }
    }
}

/// Whether a start failed because a process could not bind its port.
fn is_port_clash(e: &Error) -> bool {
    matches!(e, Error::ProcessExited { tail, .. } if tail.contains("address already in use"))
}

/// Builds a client from a kubeconfig file this crate wrote.
pub async fn client_from_kubeconfig(path: &Path) -> Result<Client> {
    let kubeconfig = Kubeconfig::read_from(path)?;
    let config = Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default()).await?;
    Ok(Client::try_from(config)?)
}

fn write_cert_kubeconfig(
    path: &Path,
    server: &str,
    ca: &Path,
    user: &str,
    cert: &CertFiles,
) -> Result<()> {
    let user_entry = json!({
        "client-certificate": cert.cert,
        "client-key": cert.key,
    });
    write_kubeconfig(path, server, ca, user, user_entry)
}

/// Writes a kubeconfig with one cluster (`hostplug`), one user and one context. File paths
/// in it are absolute, so it works from any directory.
fn write_kubeconfig(
    path: &Path,
    server: &str,
    ca: &Path,
    user: &str,
    user_entry: serde_json::Value,
) -> Result<()> {
    let doc = json!({
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{
            "name": "hostplug",
            "cluster": { "server": server, "certificate-authority": ca },
        }],
        "users": [{ "name": user, "user": user_entry }],
        "contexts": [{
            "name": "hostplug",
            "context": { "cluster": "hostplug", "user": user, "namespace": "default" },
        }],
        "current-context": "hostplug",
    });
    write_private(path, &serde_yaml::to_string(&doc)?)
}

/// A loopback TCP port that was free a moment ago and that this process has not handed out
/// before (so parallel environments in one test binary never pick the same one).
pub fn free_port() -> Result<u16> {
    static HANDED_OUT: OnceLock<Mutex<HashSet<u16>>> = OnceLock::new();
    let handed_out = HANDED_OUT.get_or_init(|| Mutex::new(HashSet::new()));
    for _ in 0..100 {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .map_err(|e| Error::io("finding a free port", e))?;
        let port = listener
            .local_addr()
            .map_err(|e| Error::io("finding a free port", e))?
            .port();
        let mut set = handed_out
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if set.insert(port) {
            return Ok(port);
        }
    }
    Err(Error::io(
        "finding a free port",
        std::io::Error::other("no new free port after 100 tries"),
    ))
}

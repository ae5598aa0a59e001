//! Startup, readiness and liveness probes, run against the Pod's address like the kubelet.
//!
//! `httpGet` (HTTPS without certificate verification, as the kubelet does), `tcpSocket`
//! and `exec` (through `nsenter` into the container's mount and UTS namespaces and root)
//! are supported; gRPC probes always fail with a message.

use std::net::Ipv4Addr;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Container, Probe};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::Runtime;
use super::container::ContainerUpdate;

/// Where probes go.
#[derive(Debug)]
pub(crate) struct Target {
    pub(crate) pod_ip: Ipv4Addr,
    /// The container's main process (exec probes enter its namespaces).
    pub(crate) pid: i32,
    pub(crate) env: Vec<(String, String)>,
}

fn seconds(v: Option<i32>, default: i32) -> Duration {
    Duration::from_secs(u64::try_from(v.unwrap_or(default)).unwrap_or(0))
}

fn threshold(v: Option<i32>) -> u32 {
    v.and_then(|v| u32::try_from(v).ok())
        .filter(|v| *v > 0)
        .unwrap_or(1)
}

fn resolve_port(container: &Container, port: &IntOrString) -> Result<u16, String> {
    match port {
        IntOrString::Int(p) => u16::try_from(*p).map_err(|_| format!("invalid port {p}")),
        IntOrString::String(name) => {
            if let Ok(p) = name.parse::<u16>() {
                return Ok(p);
            }
            container
                .ports
                .iter()
                .flatten()
                .find(|p| p.name.as_deref() == Some(name))
                .and_then(|p| u16::try_from(p.container_port).ok())
                .ok_or_else(|| format!("no container port named {name:?}"))
        }
    }
}

/// One probe attempt.
async fn probe_once(
    rt: &Runtime,
    container: &Container,
    probe: &Probe,
    target: &Target,
) -> Result<(), String> {
    let timeout = seconds(probe.timeout_seconds, 1).max(Duration::from_millis(100));
    if let Some(http) = &probe.http_get {
        let port = resolve_port(container, &http.port)?;
        let scheme = http
            .scheme
            .as_deref()
            .unwrap_or("HTTP")
            .to_ascii_lowercase();
        let host = http
            .host
            .clone()
            .unwrap_or_else(|| target.pod_ip.to_string());
        let path = http.path.as_deref().unwrap_or("/");
        let path = if path.starts_with('/') {
            path.to_owned()
        } else {
            format!("/{path}")
        };
        let url = format!("{scheme}://{host}:{port}{path}");
        let mut request = rt.http.get(&url).timeout(timeout);
        for header in http.http_headers.iter().flatten() {
            request = request.header(&header.name, &header.value);
        }
        let response = request
            .send()
            .await
            .map_err(|e| format!("Get {url:?}: {e}"))?;
        let status = response.status();
        return if (200..400).contains(&status.as_u16()) {
            Ok(())
        } else {
            Err(format!(
                "HTTP probe failed with statuscode: {}",
                status.as_u16()
            ))
        };
    }
    if let Some(tcp) = &probe.tcp_socket {
        let port = resolve_port(container, &tcp.port)?;
        let host = tcp
            .host
            .clone()
            .unwrap_or_else(|| target.pod_ip.to_string());
        return match tokio::time::timeout(
            timeout,
            tokio::net::TcpStream::connect((host.as_str(), port)),
        )
        .await
        {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) => Err(format!("dial tcp {host}:{port}: {e}")),
            Err(_) => Err(format!("dial tcp {host}:{port}: i/o timeout")),
        };
    }
    if let Some(exec) = &probe.exec {
        let command = exec.command.clone().unwrap_or_default();
        if command.is_empty() {
            return Err("exec probe without a command".into());
        }
        let mut cmd = tokio::process::Command::new("nsenter");
        cmd.arg(format!("--target={}", target.pid))
            .args(["--mount", "--uts", "--root", "--wd", "--"])
            .args(&command)
            .env_clear()
            .envs(target.env.iter().map(|(k, v)| (k, v)))
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .kill_on_drop(true);
        return match tokio::time::timeout(timeout, cmd.status()).await {
            Ok(Ok(status)) if status.success() => Ok(()),
            Ok(Ok(status)) => Err(format!("command {command:?} exited with {status}")),
            Ok(Err(e)) => Err(format!("running nsenter: {e}")),
            Err(_) => Err(format!("command {command:?} timed out")),
        };
    }
    Err("this probe type is not supported by the node simulator".into())
}

/// Runs `probe` until it succeeds `successThreshold` times (Ok) or fails `failureThreshold`
/// times in a row (Err with the last failure).
async fn until_decided(
    rt: &Runtime,
    container: &Container,
    probe: &Probe,
    target: &Target,
    want_success: bool,
) -> Result<(), String> {
    tokio::time::sleep(seconds(probe.initial_delay_seconds, 0)).await;
    let period = seconds(probe.period_seconds, 10).max(Duration::from_millis(100));
    let success_threshold = if want_success {
        threshold(probe.success_threshold)
    } else {
        1
    };
    let failure_threshold = threshold(probe.failure_threshold.or(Some(3)));
    let (mut successes, mut failures) = (0, 0);
    loop {
        match probe_once(rt, container, probe, target).await {
            Ok(()) => {
                failures = 0;
                successes += 1;
                if want_success && successes >= success_threshold {
                    return Ok(());
                }
            }
            Err(e) => {
                successes = 0;
                failures += 1;
                if failures >= failure_threshold {
                    return Err(e);
                }
            }
        }
        tokio::time::sleep(period).await;
    }
}

/// Runs the container's probes, reporting `Started` and `Ready`. Returns only when the
/// container must be killed (startup or liveness probe failed), with the reason.
pub(crate) async fn watch(
    rt: &Runtime,
    container: &Container,
    target: Target,
    report: impl Fn(ContainerUpdate),
) -> String {
    if let Some(startup) = &container.startup_probe {
        report(ContainerUpdate::Started(false));
        if let Err(e) = until_decided(rt, container, startup, &target, true).await {
            return format!("Startup probe failed: {e}");
        }
    }
    report(ContainerUpdate::Started(true));
    let readiness = async {
        let Some(probe) = &container.readiness_probe else {
            report(ContainerUpdate::Ready(true));
            return std::future::pending::<()>().await;
        };
        tokio::time::sleep(seconds(probe.initial_delay_seconds, 0)).await;
        let period = seconds(probe.period_seconds, 10).max(Duration::from_millis(100));
        let success_threshold = threshold(probe.success_threshold);
        let failure_threshold = threshold(probe.failure_threshold.or(Some(3)));
        let (mut ready, mut successes, mut failures) = (false, 0, 0);
        loop {
            match probe_once(rt, container, probe, &target).await {
                Ok(()) => {
                    failures = 0;
                    successes += 1;
                    if !ready && successes >= success_threshold {
                        ready = true;
                        report(ContainerUpdate::Ready(true));
                    }
                }
                Err(e) => {
                    successes = 0;
                    failures += 1;
                    if ready && failures >= failure_threshold {
                        tracing::debug!(container = %container.name, error = %e, "readiness probe failed");
                        ready = false;
                        report(ContainerUpdate::Ready(false));
                    }
                }
            }
            tokio::time::sleep(period).await;
        }
    };
    let liveness = async {
        let Some(probe) = &container.liveness_probe else {
            return std::future::pending::<String>().await;
        };
        match until_decided(rt, container, probe, &target, false).await {
            Err(e) => format!("Liveness probe failed: {e}"),
            Ok(()) => std::future::pending::<String>().await,
        }
    };
    tokio::select! {
        () = readiness => String::new(),
        reason = liveness => reason,
    }
}

//! [`HostRuntime`]: the [`PluginRuntime`] over `hostplug-host`, with this worker's grants.
//!
//! The grants are fixed at start-up from the configuration (one worker serves one task,
//! and its Pod mounts exactly what that task's plugin may touch); no request can widen
//! them. Host errors are translated into wire kinds here and nowhere else.

use std::sync::Arc;
use std::time::Duration;

use hostplug_host::{
    ErrorKind as HostKind, Grants, Host, HostConfig, Invocation, InvokeError, InvokeOutcome,
    LogLevel, LogRecord, LogSource,
};

use crate::config::{Config, EtcAccess};
use crate::error::{Error, Result};
use crate::runtime::{Call, Digest, Loaded, PluginRuntime, RuntimeError};
use crate::types::{ErrorKind, InvokeResponse, LogLine};

/// The plugin runtime of a real worker: one [`Host`] (engine, in-memory and on-disk
/// component cache) and the grants of this worker.
#[derive(Debug, Clone)]
pub struct HostRuntime {
    host: Host,
    grants: Arc<Grants>,
}

impl HostRuntime {
    /// A runtime for `config`: its cache dir, memory limit, deadlines and grants. Fails
    /// when /etc access is granted but the etc dir is not a directory, so a Pod with a
    /// wrong mount fails at start, not at the first invocation.
    pub fn new(config: &Config) -> Result<Self> {
        let etc = match config.etc_access {
            EtcAccess::None => hostplug_host::EtcAccess::None,
            EtcAccess::Read => hostplug_host::EtcAccess::Read,
            EtcAccess::Write => hostplug_host::EtcAccess::Write,
        };
        if etc != hostplug_host::EtcAccess::None && !config.etc_dir.is_dir() {
            return Err(Error::Config(format!(
                "etc access is {} but {} is not a directory",
                etc.as_str(),
                config.etc_dir.display()
            )));
        }
        std::fs::create_dir_all(&config.cache_dir).map_err(|source| Error::ReadFile {
            what: "cache directory",
            path: config.cache_dir.clone(),
            source,
        })?;
        let limits = &config.limits;
        let host_config = HostConfig {
            cache_dir: Some(config.cache_dir.clone()),
            limits: hostplug_host::Limits {
                max_memory_bytes: limits.memory_limit_bytes,
                default_deadline: Duration::from_millis(limits.invoke_timeout_ms),
                max_deadline: Duration::from_millis(limits.max_invoke_timeout_ms),
                ..hostplug_host::Limits::default()
            },
            ..HostConfig::default()
        };
        let host = Host::new(host_config).map_err(Error::Host)?;
        let grants = Grants {
            etc,
            etc_dir: (etc != hostplug_host::EtcAccess::None).then(|| config.etc_dir.clone()),
            docker: config.docker_socket.clone(),
        };
        Ok(Self {
            host,
            grants: Arc::new(grants),
        })
    }

    /// The underlying host.
    pub fn host(&self) -> &Host {
        &self.host
    }
}

impl PluginRuntime for HostRuntime {
    fn holds(&self, digest: &Digest) -> bool {
        self.host.cached(digest).is_some()
    }

    fn load(&self, digest: &Digest, bytes: &[u8]) -> Result<Loaded, RuntimeError> {
        if self.host.cached(digest).is_some() {
            return Ok(Loaded::AlreadyHeld);
        }
        match self.host.load(bytes, Some(digest)) {
            Ok(plugin) => {
                tracing::debug!(%digest, source = ?plugin.source(), load_ms = plugin.load_duration().as_millis() as u64, "module ready");
                Ok(Loaded::Compiled)
            }
            Err(e) => Err(RuntimeError::new(kind(e.kind()), e.to_string())),
        }
    }

    fn load_precompiled(
        &self,
        digest: &Digest,
        fingerprint: &str,
        artifact: &[u8],
    ) -> Result<Loaded, RuntimeError> {
        if self.host.cached(digest).is_some() {
            return Ok(Loaded::AlreadyHeld);
        }
        match self.host.load_precompiled(digest, fingerprint, artifact) {
            Ok(plugin) => {
                tracing::debug!(%digest, source = ?plugin.source(), load_ms = plugin.load_duration().as_millis() as u64, "precompiled module ready");
                Ok(Loaded::Compiled)
            }
            Err(e) => Err(RuntimeError::new(kind(e.kind()), e.to_string())),
        }
    }

    fn invoke(&self, digest: &Digest, call: &Call) -> Result<InvokeResponse, RuntimeError> {
        let Some(plugin) = self.host.cached(digest) else {
            return Err(RuntimeError::new(
                ErrorKind::UnknownPlugin,
                format!("this worker does not hold plugin {digest}; upload it first"),
            ));
        };
        let invocation = Invocation {
            method: call.method.clone(),
            params: call.params.clone(),
            dry_run: call.dry_run,
            deadline: Some(call.timeout),
        };
        plugin
            .invoke(&invocation, &self.grants)
            .map(response)
            .map_err(invoke_error)
    }
}

fn response(outcome: InvokeOutcome) -> InvokeResponse {
    InvokeResponse {
        changed: outcome.changed,
        output: outcome.output,
        diff: outcome.diff,
        logs: outcome.logs.into_iter().map(log_line).collect(),
        duration_ms: u64::try_from(outcome.duration.as_millis()).unwrap_or(u64::MAX),
    }
}

fn invoke_error(e: InvokeError) -> RuntimeError {
    RuntimeError {
        kind: kind(e.kind),
        message: e.message,
        logs: e.logs.into_iter().map(log_line).collect(),
    }
}

fn log_line(record: LogRecord) -> LogLine {
    let level = match record.level {
        LogLevel::Debug => "debug",
        LogLevel::Info => "info",
        LogLevel::Warn => "warn",
        LogLevel::Error => "error",
    };
    let source = match record.source {
        LogSource::Log => "log",
        LogSource::Stdout => "stdout",
        LogSource::Stderr => "stderr",
        LogSource::Host => "host",
    };
    LogLine {
        level: level.into(),
        source: source.into(),
        message: record.message,
    }
}

/// The wire kind of a host error kind (the names are the same; the worker adds its own).
fn kind(kind: HostKind) -> ErrorKind {
    match kind {
        HostKind::InvalidParams => ErrorKind::InvalidParams,
        HostKind::NotFound => ErrorKind::NotFound,
        HostKind::Denied => ErrorKind::Denied,
        HostKind::Failed => ErrorKind::Failed,
        HostKind::BadModule => ErrorKind::BadModule,
        HostKind::DigestMismatch => ErrorKind::DigestMismatch,
        HostKind::Trap => ErrorKind::Trap,
        HostKind::Timeout => ErrorKind::Timeout,
        HostKind::ResourceLimit => ErrorKind::ResourceLimit,
        HostKind::Internal => ErrorKind::Internal,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_host_kind_keeps_its_wire_name() {
        for host_kind in HostKind::ALL {
            assert_eq!(kind(host_kind).as_str(), host_kind.as_str());
        }
    }
}

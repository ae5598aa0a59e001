//! The worker's configuration: [`WorkerSettings`] (the worker Pod's contract, defined in
//! `hostplug-api`, read from the `HOSTPLUG_*` environment variables the operator sets),
//! and the worker's own fixed timings.
//!
//! Every limit is a named constant with the reason for its value; the settings only let
//! a deployment move them. Nothing here reads files: loading the token and the TLS
//! material happens in [`crate::auth`] and [`crate::tls`], where errors become
//! [`crate::Error`]s.

use std::time::Duration;

pub use hostplug_api::worker::{
    DEFAULT_INVOKE_TIMEOUT_MS, DEFAULT_MAX_CONCURRENT_INVOCATIONS, DEFAULT_MAX_INVOKE_TIMEOUT_MS,
    DEFAULT_MAX_MODULE_BYTES, DEFAULT_MAX_REQUEST_BYTES, DEFAULT_MEMORY_LIMIT_BYTES,
    DEFAULT_QUEUE_WAIT_MS, Limits, LogFormat, MIN_TOKEN_BYTES, WorkerSettings,
};

use crate::error::{Error, Result};

/// Compilations running at once: 1. Compiling is CPU-bound (Cranelift uses the cores
/// it gets) and happens once per module per worker; one at a time keeps invocations
/// responsive and makes "compile each digest once" hold under concurrent uploads.
pub const MAX_CONCURRENT_COMPILES: usize = 1;

/// Pause after a failed `accept` (typically EMFILE) before trying again: 100 ms, so the
/// accept loop does not spin while connections close and free descriptors.
pub const ACCEPT_ERROR_BACKOFF: Duration = Duration::from_millis(100);

/// How long a client has to complete the TLS handshake: 10 s. Keeps half-open
/// connections from piling up; a handshake on loopback or in-cluster takes milliseconds.
pub const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// How long a client has to send an HTTP/1 request head: 30 s, for the same reason.
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(30);

/// Connections served at once: 64. The operator holds a few per worker (one pool of
/// HTTP/2 or keep-alive connections); every connection costs a task and TLS buffers, so
/// a peer opening thousands (only the operator may reach the port, but a NetworkPolicy
/// can be missing) must not exhaust the worker's memory or descriptors. Connections
/// beyond are closed at once, before the TLS handshake.
pub const MAX_CONNECTIONS: usize = 64;

/// HTTP/2 keep-alive ping interval: 20 s, and the time a ping may go unanswered: 10 s.
/// A peer that vanished (its node rebooted, a half-open connection) frees its
/// connection within half a minute instead of never.
pub const H2_KEEP_ALIVE_INTERVAL: Duration = Duration::from_secs(20);
/// See [`H2_KEEP_ALIVE_INTERVAL`].
pub const H2_KEEP_ALIVE_TIMEOUT: Duration = Duration::from_secs(10);

/// HTTP/2 streams one connection may open at once: 32, well above the invocation slots
/// (the rest wait as 503 `busy` anyway), far below hyper's default of 200.
pub const H2_MAX_CONCURRENT_STREAMS: u32 = 32;

/// Largest HTTP/2 header list: 16 KiB. The protocol's requests carry a few short
/// headers (a bearer token, a content type, an engine fingerprint).
pub const H2_MAX_HEADER_LIST_BYTES: u32 = 16 * 1024;

/// Longest pause between two looks at whether the worker has been idle for its
/// `idle_exit_ms`: 5 s, so it exits at most that long late.
pub const MAX_IDLE_CHECK_INTERVAL: Duration = Duration::from_secs(5);

/// How long a shutdown (SIGTERM) waits for requests in flight: 20 s, inside the 30 s
/// default `terminationGracePeriodSeconds` of a Pod.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(20);

/// The settings from this process's environment (what the operator put into the Pod).
/// A missing or malformed variable is an error naming it.
pub fn from_process_env() -> Result<WorkerSettings> {
    WorkerSettings::from_env(|name| std::env::var(name).ok())
        .map_err(|e| Error::Config(e.to_string()))
}

/// The text of `hostplug-worker --help`: every variable the worker reads.
pub fn help() -> String {
    let mut text = format!(
        "hostplug-worker {}: runs plugin invocations on this node over HTTPS.\n\n\
         Configured only through the environment:\n",
        env!("CARGO_PKG_VERSION")
    );
    for (name, what) in hostplug_api::worker::env::ALL {
        text.push_str(&format!("  {name:<38} {what}\n"));
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn help_names_every_variable() {
        let help = help();
        for (name, _) in hostplug_api::worker::env::ALL {
            assert!(help.contains(name), "{name} missing from --help");
        }
    }
}

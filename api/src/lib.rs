//! `hostplug-api`: the contracts between the parts of hostplug, each defined once.
//!
//! * [`call`]: the vocabulary of a plugin call every resource shares: [`PluginCall`]
//!   (plugin, method, parameters), [`NodeTargets`] (which nodes), [`AccessProfile`]
//!   (what a call may touch, and so which worker serves it), [`Invalid`] (a field error).
//! * [`expand`]: `$(…)` references in a call's parameters, replaced per node (vars from
//!   literals, ConfigMaps and Secrets; the node's name, labels, annotations, addresses),
//!   and the masking of values that came from Secrets.
//! * [`crd`]: the `HostTask` and `HostPlugin` custom resources (CEL rules, printer
//!   columns; `deploy/crds/` is generated from them by the `crdgen` binary).
//! * [`policy`]: the `HostTaskPolicy` resource (which namespaces may run what, where).
//! * [`state`]: the `HostState` custom resource (a desired host state, checked and
//!   optionally enforced on every selected node).
//! * [`plugin`]: what a plugin is and may do: [`Digest`], [`Capabilities`],
//!   [`EtcAccess`], [`PluginInfo`], [`MethodInfo`].
//! * [`protocol`]: the worker protocol between operator and worker, and the shapes the
//!   Wasm host produces ([`InvokeOutcome`], [`InvokeError`], [`ErrorKind`], [`LogRecord`]).
//! * [`registry_auth`]: registry credentials of a task (`spec.registryAuth`), parsed from
//!   a `.dockerconfigjson`, with `Debug` forms that never show a password.
//! * [`schema`]: the one reader of a method's parameter schema (fields, kinds, enums in
//!   every form schemars writes, one field order) and the check of parameters against
//!   it, naming the field; the console, `kubectl hostplug`, the operator and the host use
//!   it.
//! * [`systemd`]: the `systemd` capability as declared (unit patterns, actions), the
//!   access one call gets, and the rules about unit names the operator and the host share.
//! * [`selector`]: label selectors as people type them (`kubectl -l` syntax), for the
//!   console and `kubectl hostplug`.
//! * [`worker`]: the worker Pod's contract ([`WorkerSettings`]: variable names, Secret
//!   keys, mount paths, limits).
//!
//! Types and pure functions only: serde, schemars, the kube derive and (for the schema
//! check) jsonschema without remote references. This crate must never depend on a
//! Kubernetes client, an async runtime, an HTTP framework or the Wasm engine, so that
//! every part (the console included) can use it cheaply. Every value with a text form
//! has exactly one `Display` and one `FromStr`.

/// Implements `Display` (the type's `as_str`) and `FromStr` (its inverse over the type's
/// `ALL`) for an enum with a text form: the one place that says how every such value of
/// the API prints and parses, and what a bad one is told.
macro_rules! text_form {
    ($ty:ty, $what:literal, $expected:literal) => {
        impl ::std::fmt::Display for $ty {
            fn fmt(&self, f: &mut ::std::fmt::Formatter<'_>) -> ::std::fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl ::std::str::FromStr for $ty {
            type Err = $crate::Error;

            fn from_str(s: &str) -> Result<Self, $crate::Error> {
                Self::ALL
                    .into_iter()
                    .find(|v| v.as_str() == s)
                    .ok_or_else(|| $crate::Error::InvalidValue {
                        what: $what,
                        input: s.chars().take(80).collect(),
                        expected: $expected,
                    })
            }
        }
    };
}

pub mod call;
pub mod crd;
pub mod disruption;
pub mod expand;
pub mod plugin;
pub mod policy;
pub mod protocol;
pub mod registry_auth;
pub mod rollout;
pub mod schema;
pub mod selector;
pub mod state;
pub mod systemd;
pub mod worker;

pub use call::{AccessProfile, Invalid, NodeTargets, NodeView, PluginCall, TargetType};
pub use plugin::{Capabilities, Digest, EtcAccess, MethodInfo, PluginInfo};
pub use protocol::{
    ErrorKind, InvokeError, InvokeOutcome, InvokeResult, LogLevel, LogRecord, LogSource,
};
pub use worker::{LogFormat, WorkerSettings};

/// Values that do not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// A string that should have been a sha256 digest was not.
    #[error("invalid digest {input:?}: expected 64 hex digits, optionally prefixed by `sha256:`")]
    InvalidDigest {
        /// The offending input (cut to 80 characters).
        input: String,
    },
    /// A value is not one of its type's text forms.
    #[error("invalid {what} {input:?}: expected {expected}")]
    InvalidValue {
        /// What was parsed, e.g. "etc access".
        what: &'static str,
        /// The offending input (cut to 80 characters).
        input: String,
        /// The accepted forms.
        expected: &'static str,
    },
    /// A worker setting is missing or wrong.
    #[error("{name} {problem}")]
    Setting {
        /// The environment variable.
        name: &'static str,
        /// What is wrong with it.
        problem: String,
    },
}

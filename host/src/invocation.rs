//! The data of one call: what is asked (`Invocation`), what comes back
//! (`InvokeOutcome`, `LogRecord`) and what a plugin says about itself (`PluginInfo`).
//!
//! These are the serialised shapes the worker sends and the operator stores (camelCase
//! JSON); changing a field name changes the protocol. No behaviour lives here.

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// One requested operation.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Invocation {
    /// The plugin's method, e.g. `ensure-line`.
    pub method: String,
    /// The parameters, a JSON document (passed to the plugin as it is).
    pub params: String,
    /// Report what would change, change nothing. /etc is then read-only whatever the
    /// grants say.
    pub dry_run: bool,
    /// Wall-clock deadline; `None` uses `Limits::default_deadline`. Capped at
    /// `Limits::max_deadline`.
    pub deadline: Option<Duration>,
}

impl Invocation {
    /// An invocation of `method` with `params` (JSON), not a dry run, default deadline.
    pub fn new(method: impl Into<String>, params: impl Into<String>) -> Self {
        Self {
            method: method.into(),
            params: params.into(),
            ..Self::default()
        }
    }
}

/// Result of a successful invocation. Serialises as
/// `{"changed", "output", "diff", "logs", "durationMs"}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct InvokeOutcome {
    /// The node was changed (or, in a dry run, would have been).
    pub changed: bool,
    /// The method's result. A plugin's output that is not JSON arrives as a JSON string.
    pub output: serde_json::Value,
    /// Unified diff of file changes, when the method edits files.
    pub diff: Option<String>,
    /// What the plugin logged, in order: log import records first-come, then stdout and
    /// stderr lines.
    pub logs: Vec<LogRecord>,
    /// Wall-clock time of the invocation, store creation included.
    #[serde(rename = "durationMs", with = "duration_ms")]
    pub duration: Duration,
}

/// Severity of a log record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogLevel {
    /// Detail for plugin authors.
    Debug,
    /// Normal progress.
    Info,
    /// Something odd, the operation went on.
    Warn,
    /// Something failed.
    Error,
}

/// Where a log record came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogSource {
    /// The `log` import.
    Log,
    /// The guest's stdout (one record per line).
    Stdout,
    /// The guest's stderr (one record per line).
    Stderr,
    /// The host itself (e.g. that logs were truncated).
    Host,
}

/// One log line of an invocation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogRecord {
    /// Severity.
    pub level: LogLevel,
    /// Origin.
    pub source: LogSource,
    /// The text.
    pub message: String,
}

/// One operation of a plugin, as the operator stores it in HostPlugin `status.info`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MethodInfo {
    /// Method name, kebab-case.
    pub name: String,
    /// One sentence.
    pub description: String,
    /// Whether the method can change the node.
    pub mutates: bool,
    /// JSON Schema of the parameters, parsed.
    pub params_schema: serde_json::Value,
}

/// What a plugin says about itself (`describe`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PluginInfo {
    /// Plugin name.
    pub name: String,
    /// Semantic version.
    pub version: String,
    /// What the plugin is for.
    pub description: String,
    /// Its operations.
    pub methods: Vec<MethodInfo>,
}

impl PluginInfo {
    /// The method called `name`, if the plugin has one.
    pub fn method(&self, name: &str) -> Option<&MethodInfo> {
        self.methods.iter().find(|m| m.name == name)
    }
}

mod duration_ms {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        u64::deserialize(d).map(Duration::from_millis)
    }
}

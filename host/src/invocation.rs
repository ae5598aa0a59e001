//! What one call asks for (`Invocation`). What comes back (`InvokeOutcome`, `InvokeError`,
//! `LogRecord`) and what a plugin says about itself (`PluginInfo`) are the worker
//! protocol's types, defined once in `hostplug-api`. No behaviour lives here.

use std::time::Duration;

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

//! Logging into the invocation's result, over the host's `log` import.
//!
//! Log lines come back with the outcome (the worker returns them as `logs`), so they are
//! for people reading a task's result: say what was decided and why, briefly. Outside the
//! Wasm sandbox (native unit tests) the lines go to stderr instead.

/// How important a log line is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Level {
    /// Detail for debugging a plugin.
    Debug,
    /// Normal progress.
    Info,
    /// Something surprising that did not stop the operation.
    Warn,
    /// Something failed.
    Error,
}

/// Logs `message` at `level`.
pub fn log(level: Level, message: impl AsRef<str>) {
    imp(level, message.as_ref());
}

/// Logs at debug level.
pub fn debug(message: impl AsRef<str>) {
    log(Level::Debug, message);
}

/// Logs at info level.
pub fn info(message: impl AsRef<str>) {
    log(Level::Info, message);
}

/// Logs at warn level.
pub fn warn(message: impl AsRef<str>) {
    log(Level::Warn, message);
}

/// Logs at error level.
pub fn error(message: impl AsRef<str>) {
    log(Level::Error, message);
}

#[cfg(target_arch = "wasm32")]
fn imp(level: Level, message: &str) {
    use crate::bindings::hostplug::plugin::log::{Level as L, log};
    let level = match level {
        Level::Debug => L::Debug,
        Level::Info => L::Info,
        Level::Warn => L::Warn,
        Level::Error => L::Error,
    };
    log(level, message);
}

#[cfg(not(target_arch = "wasm32"))]
fn imp(level: Level, message: &str) {
    // No host to log to outside the sandbox: native unit tests see the lines on stderr.
    eprintln!("[{level:?}] {message}");
}

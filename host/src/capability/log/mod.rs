//! The `log` capability: structured log records from the plugin (the `log` import), its
//! captured stdout and stderr, and the host's own notes, all in one capped list that
//! travels with the invocation's result.
//!
//! Every plugin has it; the only limit is the byte cap ([`Limits::max_log_bytes`]):
//! beyond it records are cut and the drop is noted in a final `host` record. This module
//! must never write anywhere but its buffer.
//!
//! [`Limits::max_log_bytes`]: crate::Limits::max_log_bytes

use crate::{LogLevel, LogRecord, LogSource};

/// Log records of one call, capped in total bytes.
#[derive(Debug)]
pub(crate) struct LogSink {
    records: Vec<LogRecord>,
    bytes: usize,
    cap: usize,
    dropped: usize,
    /// The first refusal a capability made in this call, for the error message.
    first_refusal: Option<String>,
}

impl LogSink {
    pub(crate) fn new(cap: usize) -> Self {
        Self {
            records: Vec::new(),
            bytes: 0,
            cap,
            dropped: 0,
            first_refusal: None,
        }
    }

    /// Notes that a capability refused something (a `host` warning), and remembers the
    /// first such message.
    pub(crate) fn refusal(&mut self, message: String) {
        if self.first_refusal.is_none() {
            self.first_refusal = Some(message.clone());
        }
        self.push(LogLevel::Warn, LogSource::Host, message);
    }

    /// The first refusal of this call, if any.
    pub(crate) fn first_refusal(&self) -> Option<&str> {
        self.first_refusal.as_deref()
    }

    pub(crate) fn push(&mut self, level: LogLevel, source: LogSource, mut message: String) {
        let room = self.cap.saturating_sub(self.bytes);
        if message.len() > room {
            let mut cut = room;
            while !message.is_char_boundary(cut) {
                cut -= 1;
            }
            self.dropped += message.len() - cut;
            message.truncate(cut);
        }
        if message.is_empty() {
            return;
        }
        self.bytes += message.len();
        self.records.push(LogRecord {
            level,
            source,
            message,
        });
    }

    /// Appends stdout and stderr line by line, then notes what was dropped.
    pub(crate) fn finish(
        mut self,
        stdout: (Vec<u8>, usize),
        stderr: (Vec<u8>, usize),
    ) -> Vec<LogRecord> {
        for ((bytes, dropped), source, level) in [
            (stdout, LogSource::Stdout, LogLevel::Info),
            (stderr, LogSource::Stderr, LogLevel::Warn),
        ] {
            self.dropped += dropped;
            for line in String::from_utf8_lossy(&bytes).lines() {
                if !line.is_empty() {
                    self.push(level, source, line.to_owned());
                }
            }
        }
        if self.dropped > 0 {
            self.records.push(LogRecord {
                level: LogLevel::Warn,
                source: LogSource::Host,
                message: format!(
                    "logs truncated: {} bytes dropped beyond the limit of {} bytes",
                    self.dropped, self.cap
                ),
            });
        }
        self.records
    }
}

/// The level of the `log` import as a [`LogLevel`].
pub(crate) fn level(level: crate::bindings::Level) -> LogLevel {
    use crate::bindings::Level;
    match level {
        Level::Debug => LogLevel::Debug,
        Level::Info => LogLevel::Info,
        Level::Warn => LogLevel::Warn,
        Level::Error => LogLevel::Error,
    }
}

/// The `log` import.
impl crate::bindings::hostplug::plugin::log::Host for crate::plugin::StoreState {
    fn log(&mut self, level: crate::bindings::Level, message: String) {
        self.logs.push(self::level(level), LogSource::Log, message);
    }
}

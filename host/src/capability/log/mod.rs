//! The `log` capability: structured log records from the plugin (the `log` import), its
//! captured stdout and stderr (`stdio.rs`), and the host's own notes, all in one capped
//! list that travels with the invocation's result.
//!
//! Every plugin has it; the only limit is the byte cap ([`Limits::max_log_bytes`]):
//! beyond it records are cut and the drop is noted in a final `host` record. The import
//! is implemented on [`LogSink`], the capability's per-call state. This module must never
//! write anywhere but its buffers.
//!
//! [`Limits::max_log_bytes`]: crate::Limits::max_log_bytes

mod stdio;

use wasmtime::component::{HasSelf, Linker};
use wasmtime_wasi::WasiCtxBuilder;

use self::stdio::CappedPipe;
use super::Call;
use crate::bindings::hostplug::plugin::log as wit;
use crate::{Error, LogLevel, LogRecord, LogSource, Result};

/// Log records of one call, capped in total bytes, and the call's stdout and stderr.
#[derive(Debug)]
pub(crate) struct LogSink {
    records: Vec<LogRecord>,
    bytes: usize,
    cap: usize,
    dropped: usize,
    /// The first refusal a capability made in this call, for the error message.
    first_refusal: Option<String>,
    stdout: CappedPipe,
    stderr: CappedPipe,
}

impl LogSink {
    /// The sink of one call, capped at `cap` bytes of records (stdout and stderr are
    /// captured up to `cap` bytes each, then cut to what is left when the call ends).
    pub(crate) fn new(cap: usize) -> Self {
        Self {
            records: Vec::new(),
            bytes: 0,
            cap,
            dropped: 0,
            first_refusal: None,
            stdout: CappedPipe::new(cap),
            stderr: CappedPipe::new(cap),
        }
    }

    /// Prepare phase: the sink of `call`, with the guest's stdout and stderr captured
    /// into it (nothing else of WASI's stdio is given: no stdin, no terminal).
    pub(crate) fn prepare(call: &Call<'_>, wasi: &mut WasiCtxBuilder) -> Self {
        let sink = Self::new(call.config.limits.max_log_bytes);
        wasi.stdout(sink.stdout.clone()).stderr(sink.stderr.clone());
        sink
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

    /// Ends the call's logging: appends stdout and stderr line by line, notes what was
    /// dropped, and returns the records with the last two meaningful stderr lines (for a
    /// Rust panic, where and what), which an error message may quote.
    pub(crate) fn finish(mut self) -> (Vec<LogRecord>, Option<String>) {
        let stdout = self.stdout.take();
        let stderr = self.stderr.take();
        let tail = stderr_tail(&stderr.0);
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
        (self.records, tail)
    }
}

/// The last two meaningful stderr lines: for a Rust panic, where and what.
fn stderr_tail(bytes: &[u8]) -> Option<String> {
    let text = String::from_utf8_lossy(bytes);
    let lines: Vec<&str> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with("note: run with `RUST_BACKTRACE"))
        .collect();
    let tail = lines[lines.len().saturating_sub(2)..].join(" ");
    (!tail.is_empty()).then_some(tail)
}

/// The level of the `log` import as a [`LogLevel`].
fn level(level: wit::Level) -> LogLevel {
    match level {
        wit::Level::Debug => LogLevel::Debug,
        wit::Level::Info => LogLevel::Info,
        wit::Level::Warn => LogLevel::Warn,
        wit::Level::Error => LogLevel::Error,
    }
}

/// The `log` import, on the call's sink.
impl wit::Host for LogSink {
    fn log(&mut self, level: wit::Level, message: String) {
        self.push(self::level(level), LogSource::Log, message);
    }
}

/// Link phase: the `log` import, on the sink `sink` projects out of the store's data.
pub(crate) fn add_to_linker<T: 'static>(
    linker: &mut Linker<T>,
    sink: fn(&mut T) -> &mut LogSink,
) -> Result<()> {
    wit::add_to_linker::<T, HasSelf<LogSink>>(linker, sink)
        .map_err(|e| Error::Engine(format!("linking the log import: {e:#}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_are_capped_and_the_drop_is_noted() {
        let mut sink = LogSink::new(10);
        sink.push(LogLevel::Info, LogSource::Log, "12345678".into());
        sink.push(LogLevel::Info, LogSource::Log, "abcdef".into());
        sink.refusal("no".into());
        let (records, tail) = sink.finish();
        let messages: Vec<&str> = records.iter().map(|r| r.message.as_str()).collect();
        assert_eq!(
            messages,
            [
                "12345678",
                "ab",
                "logs truncated: 6 bytes dropped beyond the limit of 10 bytes"
            ]
        );
        assert_eq!(tail, None);
    }

    #[test]
    fn the_stderr_tail_is_the_last_two_lines() {
        assert_eq!(
            stderr_tail(b"x\nthread 'main' panicked at src/lib.rs:3:5:\nboom\n\nnote: run with `RUST_BACKTRACE=1`\n")
                .as_deref(),
            Some("thread 'main' panicked at src/lib.rs:3:5: boom")
        );
        assert_eq!(stderr_tail(b"\n \n"), None);
    }
}

//! `hostplug-process`: what every hostplug binary (operator, worker, console) does the
//! same way at its edges — where its log lines go and in what form ([`init_tracing`]),
//! and when it stops ([`shutdown_signal`]).
//!
//! Only process plumbing lives here: no configuration of a particular binary, no
//! business logic. Libraries never call [`init_tracing`]; their binaries' `main` does,
//! once.

pub use hostplug_api::LogFormat;

/// The log filter of the operator and the console when `RUST_LOG` is unset: `info`, with
/// kube-rs's own chatter (every watch restart) only from `warn`.
pub const DEFAULT_FILTER: &str = "info,kube=warn";

/// Installs the global tracing subscriber: lines on stderr in `format`, filtered by
/// `RUST_LOG` when it is set and valid, else by `default_filter` (for example
/// [`DEFAULT_FILTER`]). A second call leaves the first subscriber in place, so tests may
/// call it freely.
pub fn init_tracing(format: LogFormat, default_filter: &str) {
    use tracing_subscriber::EnvFilter;
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_filter));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _already_set = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    };
}

/// Resolves on SIGTERM (what Kubernetes sends to stop a Pod) or Ctrl-C (SIGINT). A signal
/// that cannot be listened for is logged and then never fires; the other still does.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        if let Err(e) = tokio::signal::ctrl_c().await {
            tracing::warn!(error = %e, "cannot listen for Ctrl-C");
            std::future::pending::<()>().await;
        }
    };
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    tokio::select! {
        () = ctrl_c => {},
        () = term => {},
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// SIGTERM sent to this process ends the wait (and, being handled, does not kill
    /// the test binary).
    #[tokio::test]
    async fn sigterm_resolves_the_shutdown_signal() {
        let waiting = tokio::spawn(shutdown_signal());
        // Let the handler install before the signal is sent.
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        let sent = std::process::Command::new("kill")
            .args(["-TERM", &std::process::id().to_string()])
            .status();
        assert!(
            sent.as_ref().is_ok_and(|s| s.success()),
            "kill -TERM failed: {sent:?}"
        );
        let done = tokio::time::timeout(std::time::Duration::from_secs(5), waiting).await;
        assert!(
            matches!(done, Ok(Ok(()))),
            "shutdown_signal did not resolve"
        );
    }
}

//! The operator's metrics in the Prometheus text format, and its small HTTP server
//! (`/metrics`, `/healthz`, `/readyz`). Counters are plain atomics; nothing here talks
//! to the cluster.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;

/// Counters of one operator process.
#[derive(Debug, Default)]
pub struct Metrics {
    reconciles: AtomicU64,
    reconcile_errors: AtomicU64,
    nodes_succeeded: AtomicU64,
    nodes_failed: AtomicU64,
    invocations: AtomicU64,
    invocation_micros: AtomicU64,
    api_requests: AtomicU64,
    leader: AtomicBool,
    /// The HostState controller's metrics (per state), rendered after these.
    pub states: crate::state::StateMetrics,
}

impl Metrics {
    /// One reconcile started.
    pub fn reconcile(&self) {
        self.reconciles.fetch_add(1, Ordering::Relaxed);
    }
    /// One reconcile failed.
    pub fn reconcile_error(&self) {
        self.reconcile_errors.fetch_add(1, Ordering::Relaxed);
    }
    /// One node ended.
    pub fn node_finished(&self, ok: bool) {
        let c = if ok {
            &self.nodes_succeeded
        } else {
            &self.nodes_failed
        };
        c.fetch_add(1, Ordering::Relaxed);
    }
    /// One plugin call (upload included) took `d`.
    pub fn invocation(&self, d: Duration) {
        self.invocations.fetch_add(1, Ordering::Relaxed);
        self.invocation_micros.fetch_add(
            u64::try_from(d.as_micros()).unwrap_or(u64::MAX),
            Ordering::Relaxed,
        );
    }
    /// One request to the Kubernetes API server (watches count once, when opened).
    pub fn api_request(&self) {
        self.api_requests.fetch_add(1, Ordering::Relaxed);
    }
    /// Whether this replica leads.
    pub fn set_leader(&self, leader: bool) {
        self.leader.store(leader, Ordering::Relaxed);
    }

    /// The Prometheus text exposition.
    pub fn render(&self) -> String {
        let g = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let secs = g(&self.invocation_micros) as f64 / 1e6;
        let mut out = format!(
            "# HELP hostplug_reconciles_total HostTask reconciles started.\n\
             # TYPE hostplug_reconciles_total counter\n\
             hostplug_reconciles_total {}\n\
             # HELP hostplug_reconcile_errors_total Reconciles that failed and were retried.\n\
             # TYPE hostplug_reconcile_errors_total counter\n\
             hostplug_reconcile_errors_total {}\n\
             # HELP hostplug_nodes_total Task nodes that ended, by result.\n\
             # TYPE hostplug_nodes_total counter\n\
             hostplug_nodes_total{{result=\"succeeded\"}} {}\n\
             hostplug_nodes_total{{result=\"failed\"}} {}\n\
             # HELP hostplug_invocations_total Plugin calls sent to workers.\n\
             # TYPE hostplug_invocations_total counter\n\
             hostplug_invocations_total {}\n\
             # HELP hostplug_invocation_seconds_total Time spent in plugin calls, upload included.\n\
             # TYPE hostplug_invocation_seconds_total counter\n\
             hostplug_invocation_seconds_total {secs}\n\
             # HELP hostplug_api_requests_total Requests sent to the Kubernetes API server.\n\
             # TYPE hostplug_api_requests_total counter\n\
             hostplug_api_requests_total {}\n\
             # HELP hostplug_leader Whether this replica holds the leader lease.\n\
             # TYPE hostplug_leader gauge\n\
             hostplug_leader {}\n",
            g(&self.reconciles),
            g(&self.reconcile_errors),
            g(&self.nodes_succeeded),
            g(&self.nodes_failed),
            g(&self.invocations),
            g(&self.api_requests),
            u8::from(self.leader.load(Ordering::Relaxed)),
        );
        out.push_str(&self.states.render());
        out
    }
}

/// The HTTP routes.
pub fn app(metrics: Arc<Metrics>) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(|| async { "ok" }))
        .route(
            "/metrics",
            get(|State(m): State<Arc<Metrics>>| async move {
                (
                    StatusCode::OK,
                    [("content-type", "text/plain; version=0.0.4")],
                    m.render(),
                )
            }),
        )
        .with_state(metrics)
}

/// Serves [`app`] on `addr` until the process ends.
pub async fn serve(addr: SocketAddr, metrics: Arc<Metrics>) -> std::io::Result<()> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    axum::serve(listener, app(metrics)).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_counters() {
        let m = Metrics::default();
        m.reconcile();
        m.node_finished(false);
        m.invocation(Duration::from_millis(1500));
        let text = m.render();
        assert!(text.contains("hostplug_reconciles_total 1\n"));
        assert!(text.contains("hostplug_nodes_total{result=\"failed\"} 1\n"));
        assert!(text.contains("hostplug_invocation_seconds_total 1.5\n"));
    }
}

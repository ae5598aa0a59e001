//! The operator's metrics, one [`prometheus_client`] registry for every controller, and
//! its small HTTP server (`/metrics`, `/healthz`, `/readyz`). Nothing here talks to the
//! cluster.
//!
//! Names (the exposition adds `_total` to counters): `hostplug_reconciles_total`,
//! `hostplug_reconcile_errors_total`, `hostplug_nodes_total{result}`,
//! `hostplug_invocations_total`, `hostplug_invocation_seconds_total`,
//! `hostplug_api_requests_total`, `hostplug_leader`, and per HostState
//! `hostplug_state_nodes{state,sync}`, `hostplug_state_checks_total{state}`,
//! `hostplug_state_corrections_total{state}`, `hostplug_state_rounds_total{state}`,
//! `hostplug_state_status_writes_total{state}` and the histogram
//! `hostplug_state_check_seconds`.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

/// Upper bounds (seconds) of the check latency histogram: one node's check, every step.
/// From a warm worker's few milliseconds to a cold worker's start.
const CHECK_BUCKETS: [f64; 11] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabel {
    result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StateLabel {
    state: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StateSyncLabels {
    state: String,
    sync: &'static str,
}

/// Every metric of one operator process, registered once.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    reconciles: Counter,
    reconcile_errors: Counter,
    nodes: Family<ResultLabel, Counter>,
    invocations: Counter,
    invocation_seconds: Counter<f64, AtomicU64>,
    api_requests: Counter,
    leader: Gauge,
    state_nodes: Family<StateSyncLabels, Gauge>,
    state_checks: Family<StateLabel, Counter>,
    state_corrections: Family<StateLabel, Counter>,
    state_rounds: Family<StateLabel, Counter>,
    state_writes: Family<StateLabel, Counter>,
    state_check_seconds: Histogram,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::default();
        let m = Self {
            reconciles: Counter::default(),
            reconcile_errors: Counter::default(),
            nodes: Family::default(),
            invocations: Counter::default(),
            invocation_seconds: Counter::default(),
            api_requests: Counter::default(),
            leader: Gauge::default(),
            state_nodes: Family::default(),
            state_checks: Family::default(),
            state_corrections: Family::default(),
            state_rounds: Family::default(),
            state_writes: Family::default(),
            state_check_seconds: Histogram::new(CHECK_BUCKETS),
            registry: Registry::default(),
        };
        registry.register(
            "hostplug_reconciles",
            "Reconciles started (HostTasks and HostStates)",
            m.reconciles.clone(),
        );
        registry.register(
            "hostplug_reconcile_errors",
            "Reconciles that failed and were retried",
            m.reconcile_errors.clone(),
        );
        registry.register(
            "hostplug_nodes",
            "Task nodes that ended, by result",
            m.nodes.clone(),
        );
        registry.register(
            "hostplug_invocations",
            "Plugin calls sent to workers",
            m.invocations.clone(),
        );
        registry.register(
            "hostplug_invocation_seconds",
            "Time spent in plugin calls, upload included",
            m.invocation_seconds.clone(),
        );
        registry.register(
            "hostplug_api_requests",
            "Requests sent to the Kubernetes API server",
            m.api_requests.clone(),
        );
        registry.register(
            "hostplug_leader",
            "Whether this replica holds the leader lease",
            m.leader.clone(),
        );
        registry.register(
            "hostplug_state_nodes",
            "Nodes of a HostState by sync state",
            m.state_nodes.clone(),
        );
        registry.register(
            "hostplug_state_checks",
            "Node checks (every step as a dry run) of a HostState",
            m.state_checks.clone(),
        );
        registry.register(
            "hostplug_state_corrections",
            "Node corrections of a HostState",
            m.state_corrections.clone(),
        );
        registry.register(
            "hostplug_state_rounds",
            "Check rounds of a HostState",
            m.state_rounds.clone(),
        );
        registry.register(
            "hostplug_state_status_writes",
            "Status writes of a HostState",
            m.state_writes.clone(),
        );
        registry.register(
            "hostplug_state_check_seconds",
            "Time of one node's check, every step",
            m.state_check_seconds.clone(),
        );
        Self { registry, ..m }
    }
}

fn state(name: &str) -> StateLabel {
    StateLabel {
        state: name.to_owned(),
    }
}

impl Metrics {
    /// One reconcile started.
    pub fn reconcile(&self) {
        self.reconciles.inc();
    }
    /// One reconcile failed.
    pub fn reconcile_error(&self) {
        self.reconcile_errors.inc();
    }
    /// One task node ended.
    pub fn node_finished(&self, ok: bool) {
        let result = if ok { "succeeded" } else { "failed" };
        self.nodes.get_or_create(&ResultLabel { result }).inc();
    }
    /// One plugin call (upload included) took `d`.
    pub fn invocation(&self, d: Duration) {
        self.invocations.inc();
        self.invocation_seconds.inc_by(d.as_secs_f64());
    }
    /// One request to the Kubernetes API server (watches count once, when opened).
    pub fn api_request(&self) {
        self.api_requests.inc();
    }
    /// Whether this replica leads.
    pub fn set_leader(&self, leader: bool) {
        self.leader.set(i64::from(leader));
    }
    /// One node's check of `state` took `d`.
    pub fn state_check(&self, name: &str, d: Duration) {
        self.state_checks.get_or_create(&state(name)).inc();
        self.state_check_seconds.observe(d.as_secs_f64());
    }
    /// One node of `state` was corrected (successfully or not).
    pub fn state_correction(&self, name: &str) {
        self.state_corrections.get_or_create(&state(name)).inc();
    }
    /// A round of `state` started.
    pub fn state_round(&self, name: &str) {
        self.state_rounds.get_or_create(&state(name)).inc();
    }
    /// A status write of `state` went through.
    pub fn state_status_write(&self, name: &str) {
        self.state_writes.get_or_create(&state(name)).inc();
    }
    /// The node counts of `state` after a round.
    pub fn state_nodes(&self, name: &str, in_sync: i32, drifted: i32, failed: i32) {
        for (sync, v) in [
            ("in_sync", in_sync),
            ("drifted", drifted),
            ("failed", failed),
        ] {
            self.state_nodes
                .get_or_create(&StateSyncLabels {
                    state: name.to_owned(),
                    sync,
                })
                .set(i64::from(v));
        }
    }
    /// `state` is gone: its gauges go (its counters stay, as counters do).
    pub fn forget_state(&self, name: &str) {
        for sync in ["in_sync", "drifted", "failed"] {
            self.state_nodes.remove(&StateSyncLabels {
                state: name.to_owned(),
                sync,
            });
        }
    }

    /// The exposition, in the OpenMetrics text format.
    pub fn render(&self) -> String {
        let mut out = String::new();
        if let Err(e) = prometheus_client::encoding::text::encode(&mut out, &self.registry) {
            tracing::warn!(error = %e, "encoding the metrics failed");
        }
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
                    [(
                        "content-type",
                        "application/openmetrics-text; version=1.0.0; charset=utf-8",
                    )],
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
    fn renders_counters_gauges_and_the_histogram() {
        let m = Metrics::default();
        m.reconcile();
        m.node_finished(false);
        m.invocation(Duration::from_millis(1500));
        m.set_leader(true);
        m.state_check("chrony", Duration::from_millis(3));
        m.state_check("chrony", Duration::from_millis(300));
        m.state_correction("chrony");
        m.state_round("chrony");
        m.state_status_write("chrony");
        m.state_nodes("chrony", 2, 1, 0);
        let text = m.render();
        for line in [
            "hostplug_reconciles_total 1\n",
            "hostplug_nodes_total{result=\"failed\"} 1\n",
            "hostplug_invocation_seconds_total 1.5\n",
            "hostplug_leader 1\n",
            "hostplug_state_nodes{state=\"chrony\",sync=\"in_sync\"} 2\n",
            "hostplug_state_checks_total{state=\"chrony\"} 2\n",
            "hostplug_state_corrections_total{state=\"chrony\"} 1\n",
            "hostplug_state_rounds_total{state=\"chrony\"} 1\n",
            "hostplug_state_status_writes_total{state=\"chrony\"} 1\n",
            "hostplug_state_check_seconds_bucket{le=\"0.005\"} 1\n",
            "hostplug_state_check_seconds_bucket{le=\"0.5\"} 2\n",
            "hostplug_state_check_seconds_count 2\n",
        ] {
            assert!(text.contains(line), "no {line:?} in\n{text}");
        }
        m.forget_state("chrony");
        assert!(!m.render().contains("sync=\"in_sync\""));
    }
}

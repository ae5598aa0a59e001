//! The `HostState` custom resource (cluster-scoped, group `hostplug.dev`): a desired host
//! state that holds — ordered plugin steps checked on every selected node as dry runs,
//! and in `Enforce` mode corrected when a check finds drift, new nodes included.
//!
//! It speaks the vocabulary of [`crate::call`], as HostTask does: node selection is
//! [`NodeTargets`] (`workers` / `targetType` / `nodeSelector`), a step is a
//! [`PluginCall`] (`api`, `method`, `parameter`: HostTask's `http` without the port), and
//! enforcement uses HostTask's [`RolloutSpec`], with the same meaning. The CRD YAML
//! (`deploy/crds/hoststates.hostplug.dev.yaml`) is generated from these types by
//! `crdgen` with the others.
//!
//! Nothing here talks to a cluster or a node.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::call::{NodeTargets, PluginCall};
use crate::crd::RolloutSpec;

/// Check interval when `spec.intervalSeconds` is not given: 240 s. A hand edit is
/// corrected (or reported) within four minutes, a 1000-node cluster costs about four
/// dry-run calls per second per state, and the interval stays below the operator's
/// default worker idle time (300 s), so the pooled workers stay warm between rounds.
pub const DEFAULT_INTERVAL_SECONDS: i32 = 240;
/// Shortest `spec.intervalSeconds`: 10 s. A round on a large cluster takes seconds;
/// a shorter interval would start the next round before the last one ended.
pub const MIN_INTERVAL_SECONDS: i32 = 10;
/// Longest `spec.intervalSeconds`: one day. A state checked less often is a HostTask.
pub const MAX_INTERVAL_SECONDS: i32 = 86_400;
/// Most steps in one state: 32. Every step is a call per node per round; a longer list
/// belongs in several states (or a plugin method that does more).
pub const MAX_STEPS: usize = 32;

/// What a state does when a check finds drift.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema, Default)]
pub enum StateMode {
    /// Report drift (status, Events, metrics); never change a node.
    #[default]
    Audit,
    /// Report drift and correct it: run the drifted steps for real, then check again.
    Enforce,
}

impl StateMode {
    /// Every mode, for parsing.
    pub const ALL: [StateMode; 2] = [Self::Audit, Self::Enforce];

    /// The text form, as in the API.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Audit => "Audit",
            Self::Enforce => "Enforce",
        }
    }
}

text_form!(StateMode, "state mode", "Audit or Enforce");

/// One step of a state: a plugin call whose method changes the node (`mutates: true`),
/// since only those have a dry run that reports drift, and the follow-up calls a
/// correction of it runs where it changed the node.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct StateStep {
    /// The call.
    #[serde(flatten)]
    pub call: PluginCall,
    /// Follow-up calls (handlers) of a correction: run after this step's correction
    /// changed the node, in order and under the same node lock (e.g. restart the service
    /// that reads the corrected file), each with only its own plugin's access; the first
    /// that fails fails the node's correction. Checks (dry runs) never run them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = crate::protocol::MAX_FOLLOW_UPS))]
    pub on_change: Vec<PluginCall>,
}

impl StateStep {
    /// A step of `api`'s `method` with `parameter`, without follow-ups.
    pub fn new(
        api: impl Into<String>,
        method: impl Into<String>,
        parameter: Option<serde_json::Value>,
    ) -> Self {
        Self {
            call: PluginCall::new(api, method, parameter),
            on_change: Vec::new(),
        }
    }
}

impl std::ops::Deref for StateStep {
    type Target = PluginCall;
    fn deref(&self) -> &PluginCall {
        &self.call
    }
}

fn default_interval() -> i32 {
    DEFAULT_INTERVAL_SECONDS
}
fn default_timeout() -> i32 {
    crate::crd::DEFAULT_TIMEOUT_SECONDS
}

/// A desired host state.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "hostplug.dev",
    version = "v1alpha1",
    kind = "HostState",
    plural = "hoststates",
    status = "HostStateStatus",
    derive = "PartialEq",
    shortname = "hs",
    category = "hostplug",
    doc = "A desired host state: plugin steps checked by dry run on every selected node, reported (Audit) or corrected (Enforce).",
    printcolumn = r#"{"name":"Mode","type":"string","jsonPath":".spec.mode"}"#,
    printcolumn = r#"{"name":"In-Sync","type":"string","description":"nodes in sync/selected","jsonPath":".status.sync"}"#,
    printcolumn = r#"{"name":"Drifted","type":"integer","jsonPath":".status.nodesDrifted"}"#,
    printcolumn = r#"{"name":"Failed","type":"integer","jsonPath":".status.nodesFailed"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#,
    printcolumn = r#"{"name":"Message","type":"string","description":"the operator's summary, or why the state is refused","jsonPath":".status.message","priority":1}"#
)]
#[x_kube(validation = Rule::new(
    "(has(self.workers) && size(self.workers) > 0) != has(self.targetType)"
).message("exactly one of spec.workers (node names) or spec.targetType (Master, Node, All) must be set"))]
#[x_kube(validation = Rule::new(
    "!has(self.nodeSelector) || has(self.targetType)"
).message("spec.nodeSelector filters spec.targetType and cannot be combined with spec.workers"))]
#[serde(rename_all = "camelCase")]
pub struct HostStateSpec {
    /// The nodes to hold the state on (`workers`, or `targetType` with `nodeSelector`);
    /// a named node that does not exist yet, or one that joins later and matches, is
    /// checked once it is there.
    #[serde(flatten)]
    pub targets: NodeTargets,
    /// The steps (plugin calls of mutating methods), checked (and corrected) in order.
    #[schemars(length(min = 1, max = MAX_STEPS))]
    pub steps: Vec<StateStep>,
    /// `Audit` (report drift) or `Enforce` (correct it).
    #[serde(default)]
    pub mode: StateMode,
    /// Seconds between two check rounds; changes of the state and of the selected nodes
    /// start a round at once.
    #[serde(default = "default_interval")]
    #[schemars(range(min = MIN_INTERVAL_SECONDS, max = MAX_INTERVAL_SECONDS))]
    pub interval_seconds: i32,
    /// Deadline of one plugin call on one node, in seconds.
    #[serde(default = "default_timeout")]
    #[schemars(range(min = 1, max = 3600))]
    pub timeout_seconds: i32,
    /// Nodes corrected at once, and the failed corrections after which a round stops
    /// correcting (`Enforce` only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollout: Option<RolloutSpec>,
    /// Health checks after each correction (`Enforce` only): read-only plugin calls, each
    /// with an optional expectation on its output, as a rollout gate's
    /// (`spec.rollout.gate.checks` of a HostTask). When one fails on a node, the
    /// correction is reverted there (every file it changed under /etc back to what it
    /// was, from the record the node keeps) and the node is `Failed`, naming the check.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = crate::rollout::MAX_HEALTH_CHECKS))]
    pub checks: Vec<crate::rollout::HealthCheck>,
    /// What a correction may do to a node (`Enforce` only), as a HostTask's
    /// `spec.disruption`: drain the node before it, reboot it after it (`Always`, or
    /// `IfRequested` when a step's plugin asks). A correction that disrupts starts only
    /// inside a maintenance window and within the operator's fleet-wide budget
    /// (`--max-disrupted-nodes`, shared with every task); until then the node stays
    /// `Drifted`, its drift reported, with `disruption.phase: WaitingForWindow`. The
    /// health checks and the check that ends a correction run after the reboot.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disruption: Option<crate::disruption::DisruptionSpec>,
}

/// Where one node stands against the state.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema, Default)]
pub enum NodeSync {
    /// Not checked yet.
    #[default]
    Pending,
    /// Every step's dry run reported no change.
    InSync,
    /// At least one step would change the node; `drift` says how.
    Drifted,
    /// A correction was sent and its outcome is not recorded yet.
    Correcting,
    /// A check or a correction failed; `message` says why.
    Failed,
}

impl NodeSync {
    /// Every value, for parsing.
    pub const ALL: [NodeSync; 5] = [
        Self::Pending,
        Self::InSync,
        Self::Drifted,
        Self::Correcting,
        Self::Failed,
    ];

    /// The text form, as in the API.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "Pending",
            Self::InSync => "InSync",
            Self::Drifted => "Drifted",
            Self::Correcting => "Correcting",
            Self::Failed => "Failed",
        }
    }
}

text_form!(
    NodeSync,
    "node sync state",
    "Pending, InSync, Drifted, Correcting or Failed"
);

/// How one step differs from the node.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema, Default)]
#[serde(rename_all = "camelCase")]
pub struct StepDrift {
    /// Index of the step in `spec.steps`.
    pub step: i32,
    /// The dry run's unified diff, truncated when large.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub diff: Option<String>,
}

/// One selected node.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema, Default)]
#[serde(rename_all = "camelCase")]
pub struct NodeStateStatus {
    /// Node name.
    pub node: String,
    /// Where the node stands.
    #[serde(default)]
    pub sync: NodeSync,
    /// The drifted steps, with their diffs (capped).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub drift: Vec<StepDrift>,
    /// Why the node failed, or a note (a conflict with another state).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// Corrections sent to this node so far; part of every correction's invocation id,
    /// so a correction repeated after an operator restart is recognised by the worker.
    #[serde(default)]
    pub corrections: i64,
    /// The invocation id prefix of the correction in flight (state `Correcting`): after an
    /// operator restart the same ids are sent again and answered from the worker's store.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pending_correction: Option<String>,
    /// When the node was last checked (as of the last status write: rounds that change
    /// nothing are not written).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "crate::crd::time_schema")]
    pub last_check_time: Option<Time>,
    /// When the node was last corrected.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "crate::crd::time_schema")]
    pub last_correction_time: Option<Time>,
    /// Why a correction that disrupts the node (`spec.disruption`) has not started:
    /// `WaitingForWindow`, with when the next maintenance window opens.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disruption: Option<crate::disruption::NodeDisruption>,
}

/// Observed state of a HostState. Written only by the operator, and only when something
/// besides the check times changed.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema, Default)]
#[serde(rename_all = "camelCase")]
pub struct HostStateStatus {
    /// The generation this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Summary for people, or why the state is refused (naming the field).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// Per-node results, by node name.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub nodes: Vec<NodeStateStatus>,
    /// Selected nodes.
    #[serde(default)]
    pub nodes_total: i32,
    /// Nodes in sync.
    #[serde(default)]
    pub nodes_in_sync: i32,
    /// Nodes drifted (or being corrected).
    #[serde(default)]
    pub nodes_drifted: i32,
    /// Nodes failed.
    #[serde(default)]
    pub nodes_failed: i32,
    /// `nodesInSync/nodesTotal`, for `kubectl get`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sync: Option<String>,
    /// Other HostStates whose steps touch the same file on some of the same nodes; those
    /// nodes are reported, never corrected, while the conflict lasts.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conflicts: Vec<String>,
    /// When the last round whose result was written ended.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "crate::crd::time_schema")]
    pub last_check_time: Option<Time>,
    /// Standard conditions: `InSync` (every selected node in sync).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(schema_with = "crate::crd::conditions_schema")]
    pub conditions: Vec<Condition>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use kube::CustomResourceExt;

    #[test]
    fn a_state_parses_with_defaults() -> Result<(), serde_yaml::Error> {
        let s: HostState = serde_yaml::from_str(
            r#"
apiVersion: hostplug.dev/v1alpha1
kind: HostState
metadata: {name: chrony}
spec:
  targetType: Node
  steps:
    - {api: etc-file, method: ensure-line, parameter: {path: /etc/chrony.conf, line: "server ntp.example.com iburst"}}
"#,
        )?;
        assert_eq!(s.spec.mode, StateMode::Audit);
        assert_eq!(s.spec.interval_seconds, DEFAULT_INTERVAL_SECONDS);
        assert_eq!(s.spec.steps.len(), 1);
        assert_eq!(
            s.spec.targets.target_type,
            Some(crate::call::TargetType::Node)
        );
        Ok(())
    }

    #[test]
    fn schema_is_cluster_scoped_with_limits_and_columns() -> Result<(), serde_json::Error> {
        let crd = HostState::crd();
        assert_eq!(crd.spec.scope, "Cluster");
        let v = serde_json::to_value(&crd)?;
        let spec = &v["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"];
        let interval = &spec["properties"]["intervalSeconds"];
        assert_eq!(
            interval["minimum"].as_f64(),
            Some(f64::from(MIN_INTERVAL_SECONDS))
        );
        assert_eq!(
            interval["maximum"].as_f64(),
            Some(f64::from(MAX_INTERVAL_SECONDS))
        );
        assert_eq!(
            spec["properties"]["steps"]["maxItems"].as_u64(),
            Some(MAX_STEPS as u64)
        );
        let text = v.to_string();
        assert!(text.contains(r#""enum":["Audit","Enforce"]"#), "{text}");
        assert!(text.contains("exactly one of spec.workers"));
        assert!(text.contains(".status.sync"));
        Ok(())
    }

    #[test]
    fn modes_and_sync_states_round_trip() {
        for m in StateMode::ALL {
            assert_eq!(m.as_str().parse::<StateMode>(), Ok(m));
        }
        for s in NodeSync::ALL {
            assert_eq!(s.as_str().parse::<NodeSync>(), Ok(s));
        }
        assert!("enforce".parse::<StateMode>().is_err());
    }
}

//! The vocabulary of a plugin call, shared by every resource that runs plugins: *what*
//! runs ([`PluginCall`]: plugin, method, parameters), *where* ([`NodeTargets`]: node
//! names, or a role with a label selector, chosen among [`NodeView`]s), and *with which
//! access* ([`AccessProfile`]: how /etc is mounted, which sockets).
//!
//! `HostTask` and `HostState` embed these types (flattened, so their YAML keeps its
//! field names), and the operator's validation, node selection, policy checks and worker
//! pool take them, so a rule about any of them is written once. Field errors are
//! [`Invalid`], naming the field as people wrote it (`spec.workers[2]`).
//!
//! Pure types and functions: nothing here talks to a cluster or a node.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use kube::KubeSchema;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::plugin::{Capabilities, EtcAccess};
use crate::systemd::SystemdAccess;

/// Why a resource cannot run: the field at fault and the problem, for people.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {problem}")]
pub struct Invalid {
    /// Path of the offending field, e.g. `spec.http.parameter.path`.
    pub field: String,
    /// What is wrong with it.
    pub problem: String,
}

impl Invalid {
    /// An error about `field`.
    pub fn new(field: impl Into<String>, problem: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            problem: problem.into(),
        }
    }
}

/// One plugin operation with its parameters: a HostTask's `spec.http` (beside the port)
/// and each of a HostState's `spec.steps`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PluginCall {
    /// Name of the plugin (a HostPlugin) to run.
    #[schemars(length(min = 1, max = 253))]
    pub api: String,
    /// The plugin operation to call; one of the HostPlugin's `status.info.methods`.
    #[schemars(length(min = 1, max = 128))]
    pub method: String,
    /// Parameters of the operation, checked against the method's JSON Schema before any
    /// node is touched (per node, after `$(…)` references in its strings are replaced).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "crate::crd::any_json")]
    pub parameter: Option<serde_json::Value>,
    /// Values for `$(name)` references in the strings of `parameter`: each a literal
    /// `value` or `valueFrom` a ConfigMap or Secret key, as a container's `env`. The
    /// node's own values need no entry: `$(node.name)`, `$(node.labels['KEY'])`,
    /// `$(node.annotations['KEY'])`, `$(node.addresses.TYPE)` (e.g. `InternalIP`).
    /// `$$(` is a literal `$(`. A value from a Secret never appears in a status, an
    /// Event or a log: it is masked there.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = MAX_VARS))]
    pub vars: Vec<CallVar>,
}

/// Most `vars` of one call: 32, beyond any real template; each is a read per call.
pub const MAX_VARS: usize = 32;

/// A value for `$(name)` references in a call's parameters.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, KubeSchema)]
#[x_kube(validation = Rule::new("has(self.value) != has(self.valueFrom)")
    .message("a var has exactly one of value or valueFrom"))]
#[serde(rename_all = "camelCase")]
pub struct CallVar {
    /// The name `$(name)` refers to: a letter or `_`, then letters, digits or `_`
    /// (`node` is taken).
    #[schemars(regex(pattern = r"^[A-Za-z_][A-Za-z0-9_]*$"), length(max = 63))]
    pub name: String,
    /// A literal value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
    /// Where the value comes from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value_from: Option<VarSource>,
}

/// A ConfigMap or a Secret key holding a var's value.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, KubeSchema)]
#[x_kube(validation = Rule::new("has(self.configMapKeyRef) != has(self.secretKeyRef)")
    .message("valueFrom has exactly one of configMapKeyRef or secretKeyRef"))]
#[serde(rename_all = "camelCase")]
pub struct VarSource {
    /// A key of a ConfigMap.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config_map_key_ref: Option<KeyRef>,
    /// A key of a Secret: its value is masked wherever the operator reports.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_key_ref: Option<KeyRef>,
}

/// One key of a ConfigMap or a Secret.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct KeyRef {
    /// Its namespace: a HostTask's own (left out, or the same); a HostState (which has
    /// no namespace) must name one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 63))]
    pub namespace: Option<String>,
    /// The object's name.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
    /// The key in its `data` (or a ConfigMap's `binaryData`, as UTF-8).
    #[schemars(length(min = 1, max = 253))]
    pub key: String,
}

impl PluginCall {
    /// A call of `api`'s `method` with `parameter`.
    pub fn new(
        api: impl Into<String>,
        method: impl Into<String>,
        parameter: Option<serde_json::Value>,
    ) -> Self {
        Self {
            api: api.into(),
            method: method.into(),
            parameter,
            vars: Vec::new(),
        }
    }

    /// The parameters as sent to the worker (`{}` when absent).
    pub fn params(&self) -> serde_json::Value {
        self.parameter
            .clone()
            .unwrap_or_else(|| serde_json::Value::Object(serde_json::Map::new()))
    }
}

/// Which nodes a task targets by role when `spec.workers` is empty.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum TargetType {
    /// Control-plane nodes (label `node-role.kubernetes.io/control-plane`).
    Master,
    /// Nodes that are not control-plane nodes.
    Node,
    /// Every node.
    All,
}

impl TargetType {
    /// Whether a node of this role is selected.
    pub fn selects(self, node: &NodeView) -> bool {
        match self {
            Self::All => true,
            Self::Master => node.is_control_plane(),
            Self::Node => !node.is_control_plane(),
        }
    }
}

/// Labels that mark a control-plane node (the second is the pre-1.24 spelling).
pub const CONTROL_PLANE_LABELS: [&str; 2] = [
    "node-role.kubernetes.io/control-plane",
    "node-role.kubernetes.io/master",
];

/// A node as selection and `$(node.…)` references see it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct NodeView {
    /// Node name.
    pub name: String,
    /// Node labels.
    pub labels: BTreeMap<String, String>,
    /// Node annotations.
    pub annotations: BTreeMap<String, String>,
    /// `status.addresses`: (type, address), e.g. (`InternalIP`, `10.0.0.5`).
    pub addresses: Vec<(String, String)>,
}

impl NodeView {
    /// Whether the node is a control-plane node.
    pub fn is_control_plane(&self) -> bool {
        CONTROL_PLANE_LABELS
            .iter()
            .any(|l| self.labels.contains_key(*l))
    }
}

/// The nodes a resource runs on: explicit names, or a role filtered by a label selector.
/// Exactly one of `workers` and `targetType` is set (the CRDs' CEL rules say so).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema, Default)]
#[serde(rename_all = "camelCase")]
pub struct NodeTargets {
    /// Explicit node names.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 5000))]
    pub workers: Vec<String>,
    /// Select nodes by role when `workers` is empty.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_type: Option<TargetType>,
    /// Extra filter on the nodes chosen by `targetType` (a standard label selector).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "crate::crd::label_selector_schema")]
    pub node_selector: Option<LabelSelector>,
}

/// The nodes [`NodeTargets::select`] chose.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Selection {
    /// Selected existing nodes: `workers` in the order given (without repeats), a role's
    /// nodes sorted by name.
    pub nodes: Vec<String>,
    /// Named workers that are not among the nodes, with their index in `workers`.
    pub unknown: Vec<(usize, String)>,
}

impl NodeTargets {
    /// Targets by role.
    pub fn role(target_type: TargetType) -> Self {
        Self {
            target_type: Some(target_type),
            ..Self::default()
        }
    }

    /// Targets by name.
    pub fn named(workers: impl IntoIterator<Item = impl Into<String>>) -> Self {
        Self {
            workers: workers.into_iter().map(Into::into).collect(),
            ..Self::default()
        }
    }

    /// The nodes among `nodes` these targets select. Fails only on a selector that
    /// cannot be evaluated (an unknown operator, which the API server lets through).
    pub fn select(&self, nodes: &[NodeView]) -> Result<Selection, Invalid> {
        let mut out = Selection::default();
        if !self.workers.is_empty() {
            let known: BTreeSet<&str> = nodes.iter().map(|n| n.name.as_str()).collect();
            let mut seen = BTreeSet::new();
            for (i, w) in self.workers.iter().enumerate() {
                if !known.contains(w.as_str()) {
                    out.unknown.push((i, w.clone()));
                } else if seen.insert(w.as_str()) {
                    out.nodes.push(w.clone());
                }
            }
            return Ok(out);
        }
        let Some(target) = self.target_type else {
            return Ok(out);
        };
        for node in nodes {
            if target.selects(node) && self.selector_allows(node)? {
                out.nodes.push(node.name.clone());
            }
        }
        out.nodes.sort();
        out.nodes.dedup();
        Ok(out)
    }

    /// The nodes a task runs on: every named worker must exist and something must be
    /// selected; the error names the field.
    pub fn select_for_task(&self, nodes: &[NodeView]) -> Result<Vec<String>, Invalid> {
        let sel = self.select(nodes)?;
        if let Some((i, w)) = sel.unknown.first() {
            return Err(Invalid::new(
                format!("spec.workers[{i}]"),
                format!("node {w:?} does not exist"),
            ));
        }
        if !sel.nodes.is_empty() {
            return Ok(sel.nodes);
        }
        match self.target_type {
            None => Err(Invalid::new(
                "spec.workers",
                "set spec.workers (node names) or spec.targetType (Master, Node, All)",
            )),
            Some(target) => {
                let field = if self.node_selector.is_some() {
                    "spec.nodeSelector"
                } else {
                    "spec.targetType"
                };
                Err(Invalid::new(
                    field,
                    format!(
                        "no node matches targetType {target:?}{}",
                        if self.node_selector.is_some() {
                            " and the node selector"
                        } else {
                            ""
                        }
                    ),
                ))
            }
        }
    }

    fn selector_allows(&self, node: &NodeView) -> Result<bool, Invalid> {
        match &self.node_selector {
            Some(sel) => selector_matches(sel, &node.labels, "spec.nodeSelector"),
            None => Ok(true),
        }
    }
}

/// Whether `labels` match a standard label selector; `field` names the selector in the
/// error about an operator that cannot be evaluated.
pub fn selector_matches(
    sel: &LabelSelector,
    labels: &BTreeMap<String, String>,
    field: &str,
) -> Result<bool, Invalid> {
    for (k, v) in sel.match_labels.iter().flatten() {
        if labels.get(k) != Some(v) {
            return Ok(false);
        }
    }
    for (i, expr) in sel.match_expressions.iter().flatten().enumerate() {
        let values = expr.values.as_deref().unwrap_or_default();
        let have = labels.get(&expr.key);
        let ok = match expr.operator.as_str() {
            "In" => have.is_some_and(|v| values.contains(v)),
            "NotIn" => !have.is_some_and(|v| values.contains(v)),
            "Exists" => have.is_some(),
            "DoesNotExist" => have.is_none(),
            other => {
                return Err(Invalid::new(
                    format!("{field}.matchExpressions[{i}].operator"),
                    format!("unknown operator {other:?} (use In, NotIn, Exists, DoesNotExist)"),
                ));
            }
        };
        if !ok {
            return Ok(false);
        }
    }
    Ok(true)
}

/// What one call may touch on its node, and so which worker serves it: how /etc is
/// mounted, whether the docker and containerd sockets are, and whether the system bus
/// socket is (and for what). Calls with the same profile on a node share a pooled
/// worker; the worker Pod mounts exactly this. A call with follow-ups (`onChange`) runs
/// on a worker with the [`union`](Self::union) of their profiles, and each call of the
/// sequence carries its own profile in the invoke request, to which the worker narrows
/// its grants: no call gets more than its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AccessProfile {
    /// The /etc mount.
    pub etc: EtcAccess,
    /// The docker socket.
    pub docker: bool,
    /// The containerd socket.
    pub containerd: bool,
    /// The system bus socket (systemd): none, for reads only, or for the declared
    /// actions. Which units and actions comes with each call, from its HostPlugin.
    #[serde(default)]
    pub systemd: SystemdAccess,
    /// Whether docker and containerd may change images (pull, tag, remove, push, load,
    /// save to the archive directory). False: reads only (list, inspect), the host
    /// refuses everything else — a dry run, or a method whose `describe` does not declare
    /// it mutating. Decided by the operator from the plugin's method metadata
    /// ([`for_call`](Self::for_call)), never by the plugin at call time. Meaningless
    /// without `docker` or `containerd` (always false then).
    #[serde(default)]
    pub image_writes: bool,
    /// Whether the call may be allowed sensitive /etc paths (its HostPlugin names some
    /// in `etcAllowSensitive`). Only a worker Pod made for such calls honours the
    /// allowances a request carries, so no request widens an ordinary worker's
    /// sensitive-path list. Meaningless without /etc (always false then).
    #[serde(default)]
    pub etc_sensitive: bool,
}

impl AccessProfile {
    /// The access of one call of a plugin with `caps`: its grant, but /etc read-only,
    /// docker and containerd for reads only and systemd for reads only in a dry run and
    /// for a method that does not change the node.
    pub fn for_call(caps: &Capabilities, dry_run: bool, mutates: bool) -> Self {
        Self {
            etc: caps.etc.for_run(dry_run || !mutates),
            docker: caps.docker,
            containerd: caps.containerd,
            systemd: SystemdAccess::for_call(caps.systemd.is_some(), dry_run, mutates),
            image_writes: (caps.docker || caps.containerd) && !dry_run && mutates,
            etc_sensitive: caps.etc != EtcAccess::None && !caps.etc_allow_sensitive.is_empty(),
        }
    }

    /// Whether docker and containerd are for reads only in calls with this access.
    pub fn image_reads_only(self) -> bool {
        !self.image_writes
    }

    /// The least profile that grants everything `self` and `other` do: the worker of a
    /// call with follow-ups.
    pub fn union(self, other: Self) -> Self {
        Self {
            etc: self.etc.max(other.etc),
            docker: self.docker || other.docker,
            containerd: self.containerd || other.containerd,
            systemd: self.systemd.max(other.systemd),
            image_writes: self.image_writes || other.image_writes,
            etc_sensitive: self.etc_sensitive || other.etc_sensitive,
        }
    }

    /// The profile that grants only what both `self` and `other` do: a call's access on
    /// a worker whose Pod grants `other`.
    pub fn intersect(self, other: Self) -> Self {
        Self {
            etc: self.etc.min(other.etc),
            docker: self.docker && other.docker,
            containerd: self.containerd && other.containerd,
            systemd: self.systemd.min(other.systemd),
            image_writes: self.image_writes && other.image_writes,
            etc_sensitive: self.etc_sensitive && other.etc_sensitive,
        }
        .normalised()
    }

    /// `image_writes` only with a container runtime socket, `etc_sensitive` only with
    /// /etc (one profile, one label).
    fn normalised(mut self) -> Self {
        self.image_writes &= self.docker || self.containerd;
        self.etc_sensitive &= self.etc != EtcAccess::None;
        self
    }

    /// Whether calls with this access may change the node (/etc writable, a socket of a
    /// container runtime, or systemd's actions): such calls take the node lock. A
    /// runtime socket for reads only counts too: the worker Pod has the whole socket.
    pub fn may_change_node(self) -> bool {
        self.etc == EtcAccess::Write
            || self.docker
            || self.containerd
            || self.systemd == SystemdAccess::Manage
    }

    /// The label value (`hostplug.dev/profile`), e.g. `etc-write`, `etc-none-docker`,
    /// `etc-none-docker-images-read` (docker for reads only), `etc-none-containerd`,
    /// `etc-write-systemd`, `etc-read-sensitive` (allowed sensitive paths honoured) or
    /// `etc-read-systemd-read`.
    pub fn label(self) -> String {
        let mut label = format!("etc-{}", self.etc);
        if self.etc_sensitive && self.etc != EtcAccess::None {
            label.push_str("-sensitive");
        }
        if self.docker {
            label.push_str("-docker");
        }
        if self.containerd {
            label.push_str("-containerd");
        }
        if (self.docker || self.containerd) && !self.image_writes {
            label.push_str("-images-read");
        }
        match self.systemd {
            SystemdAccess::None => {}
            SystemdAccess::Read => label.push_str("-systemd-read"),
            SystemdAccess::Manage => label.push_str("-systemd"),
        }
        label
    }

    /// The profile a label value names.
    pub fn from_label(s: &str) -> Option<Self> {
        let (s, systemd) = if let Some(rest) = s.strip_suffix("-systemd-read") {
            (rest, SystemdAccess::Read)
        } else if let Some(rest) = s.strip_suffix("-systemd") {
            (rest, SystemdAccess::Manage)
        } else {
            (s, SystemdAccess::None)
        };
        let (s, images_read) = match s.strip_suffix("-images-read") {
            Some(rest) => (rest, true),
            None => (s, false),
        };
        let (s, containerd) = match s.strip_suffix("-containerd") {
            Some(rest) => (rest, true),
            None => (s, false),
        };
        let (etc, docker) = match s.strip_suffix("-docker") {
            Some(rest) => (rest, true),
            None => (s, false),
        };
        let (etc, etc_sensitive) = match etc.strip_suffix("-sensitive") {
            Some(rest) => (rest, true),
            None => (etc, false),
        };
        let etc: EtcAccess = etc.strip_prefix("etc-")?.parse().ok()?;
        if (images_read && !(docker || containerd)) || (etc_sensitive && etc == EtcAccess::None) {
            return None;
        }
        Some(Self {
            etc,
            docker,
            containerd,
            systemd,
            image_writes: (docker || containerd) && !images_read,
            etc_sensitive,
        })
    }
}

impl fmt::Display for AccessProfile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.label())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn view(name: &str, labels: &[(&str, &str)]) -> NodeView {
        NodeView {
            name: name.into(),
            labels: labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            ..NodeView::default()
        }
    }

    fn nodes() -> Vec<NodeView> {
        vec![
            view("node2", &[("pool", "b")]),
            view("master", &[("node-role.kubernetes.io/control-plane", "")]),
            view("node1", &[("pool", "a")]),
        ]
    }

    fn targets(v: serde_json::Value) -> NodeTargets {
        serde_json::from_value(v.clone()).unwrap_or_else(|e| panic!("{e}: {v}"))
    }

    #[test]
    fn roles_and_selectors_select_sorted_nodes() {
        let sel = |v| targets(v).select(&nodes()).map(|s| s.nodes);
        assert_eq!(
            sel(serde_json::json!({"targetType": "Node"})),
            Ok(vec!["node1".into(), "node2".into()])
        );
        assert_eq!(
            sel(serde_json::json!({"targetType": "Master"})),
            Ok(vec!["master".into()])
        );
        assert_eq!(
            sel(serde_json::json!({"targetType": "All",
                "nodeSelector": {"matchExpressions": [{"key": "pool", "operator": "In", "values": ["b"]}]}})),
            Ok(vec!["node2".into()])
        );
        let bad = sel(serde_json::json!({"targetType": "All",
            "nodeSelector": {"matchExpressions": [{"key": "pool", "operator": "Near"}]}}));
        assert_eq!(
            bad.err().map(|e| e.field),
            Some("spec.nodeSelector.matchExpressions[0].operator".into())
        );
    }

    #[test]
    fn named_workers_keep_their_order_and_report_unknown_ones() {
        let t = NodeTargets::named(["node2", "node9", "node1", "node2"]);
        let s = t.select(&nodes());
        assert_eq!(
            s,
            Ok(Selection {
                nodes: vec!["node2".into(), "node1".into()],
                unknown: vec![(1, "node9".into())],
            })
        );
        let e = t.select_for_task(&nodes()).err();
        assert_eq!(
            e,
            Some(Invalid::new(
                "spec.workers[1]",
                "node \"node9\" does not exist"
            ))
        );
        let none = targets(serde_json::json!({"targetType": "All",
            "nodeSelector": {"matchLabels": {"pool": "z"}}}));
        assert_eq!(none.select(&nodes()).map(|s| s.nodes), Ok(vec![]));
        assert_eq!(
            none.select_for_task(&nodes()).err().map(|e| e.field),
            Some("spec.nodeSelector".into())
        );
    }

    #[test]
    fn profiles_round_trip_through_labels() {
        for etc in EtcAccess::ALL {
            for docker in [false, true] {
                for containerd in [false, true] {
                    for systemd in SystemdAccess::ALL {
                        for (image_writes, etc_sensitive) in
                            [(false, false), (true, false), (false, true), (true, true)]
                        {
                            let p = AccessProfile {
                                etc,
                                docker,
                                containerd,
                                systemd,
                                image_writes: image_writes && (docker || containerd),
                                etc_sensitive: etc_sensitive && etc != EtcAccess::None,
                            };
                            assert_eq!(AccessProfile::from_label(&p.label()), Some(p), "{p}");
                        }
                    }
                }
            }
        }
        assert_eq!(
            AccessProfile {
                etc: EtcAccess::Write,
                docker: true,
                containerd: false,
                systemd: SystemdAccess::None,
                image_writes: true,
                etc_sensitive: true,
            }
            .label(),
            "etc-write-sensitive-docker"
        );
        assert_eq!(AccessProfile::from_label("etc-none-sensitive"), None);
        assert_eq!(AccessProfile::from_label("etc-none-images-read"), None);
        assert_eq!(AccessProfile::from_label("etc-all"), None);
        assert_eq!(AccessProfile::from_label("write"), None);
    }

    #[test]
    fn a_call_gets_write_access_only_when_it_may_write() {
        let caps = Capabilities {
            etc: EtcAccess::Write,
            docker: true,
            ..Capabilities::default()
        };
        assert_eq!(
            AccessProfile::for_call(&caps, false, true).etc,
            EtcAccess::Write
        );
        assert_eq!(
            AccessProfile::for_call(&caps, true, true).etc,
            EtcAccess::Read
        );
        assert_eq!(
            AccessProfile::for_call(&caps, false, false).etc,
            EtcAccess::Read
        );
        assert!(AccessProfile::for_call(&caps, true, true).docker);
    }

    /// Docker and containerd change images only in a call of a mutating method that is
    /// not a dry run; the operator decides from the method's declaration.
    #[test]
    fn a_call_gets_image_writes_only_when_it_may_change_the_node() {
        let caps = Capabilities {
            docker: true,
            containerd: true,
            ..Capabilities::default()
        };
        let run = |dry_run, mutates| AccessProfile::for_call(&caps, dry_run, mutates);
        assert!(run(false, true).image_writes);
        assert!(run(true, true).image_reads_only(), "dry run");
        assert!(run(false, false).image_reads_only(), "read-only method");
        assert_eq!(
            run(false, false).label(),
            "etc-none-docker-containerd-images-read"
        );
        assert_eq!(run(false, true).label(), "etc-none-docker-containerd");
        // A call narrows the worker's union to its own: reads only stay reads only.
        assert!(
            run(false, true)
                .intersect(run(false, false))
                .image_reads_only()
        );
        assert!(run(false, false).union(run(false, true)).image_writes);
        assert!(
            !AccessProfile::for_call(&Capabilities::default(), false, true).image_writes,
            "no socket, nothing to write with"
        );
    }

    /// The bus socket only for a plugin declaring systemd; its actions only in a call
    /// that may change the node (the host refuses them otherwise).
    #[test]
    fn a_call_gets_systemd_actions_only_when_it_may_change_the_node() {
        let none = Capabilities::default();
        assert_eq!(
            AccessProfile::for_call(&none, false, true).systemd,
            SystemdAccess::None
        );
        let caps = Capabilities {
            systemd: Some(crate::systemd::SystemdCapability {
                units: vec!["chrony.service".into()],
                actions: vec![crate::systemd::SystemdAction::Restart],
            }),
            ..Capabilities::default()
        };
        let run = |dry_run, mutates| AccessProfile::for_call(&caps, dry_run, mutates);
        assert_eq!(run(false, true).systemd, SystemdAccess::Manage);
        assert!(run(false, true).may_change_node());
        assert_eq!(run(true, true).systemd, SystemdAccess::Read, "dry run");
        assert_eq!(
            run(false, false).systemd,
            SystemdAccess::Read,
            "read-only method"
        );
        assert!(!run(false, false).may_change_node());
        assert_eq!(run(false, true).label(), "etc-none-systemd");
        assert_eq!(run(true, true).label(), "etc-none-systemd-read");
    }
}

//! Validation of a HostTask before any node is touched: the plugin exists and is ready,
//! the method exists, the parameters match the method's JSON Schema, the plugin has the
//! capability the method needs, and the target nodes exist.
//!
//! Pure functions over already-fetched objects, so every rule is unit-tested without a
//! cluster. A failure is a [`Invalid`] naming the field (`spec.http.method`, …) and the
//! problem; the controller turns it into state Failed and creates nothing.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use k8s_openapi::api::core::v1::Node;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;

use hostplug_api::crd::{
    EtcAccess, HostPluginSpec, HostTaskSpec, MethodInfo, PluginInfo, TargetType,
};

/// Labels that mark a control-plane node (the second is the pre-1.24 spelling).
pub const CONTROL_PLANE_LABELS: [&str; 2] = [
    "node-role.kubernetes.io/control-plane",
    "node-role.kubernetes.io/master",
];

/// Why a task cannot run: the field at fault and the problem, for people.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invalid {
    /// JSON path of the offending field, e.g. `spec.http.parameter.path`.
    pub field: String,
    /// What is wrong with it.
    pub problem: String,
}

impl Invalid {
    fn new(field: impl Into<String>, problem: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            problem: problem.into(),
        }
    }
}

impl fmt::Display for Invalid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.field, self.problem)
    }
}

/// A node as validation sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeView {
    /// Node name.
    pub name: String,
    /// Node labels.
    pub labels: BTreeMap<String, String>,
}

impl NodeView {
    /// The view of a Node object (nodes without a name are skipped by the caller).
    pub fn from_node(node: &Node) -> Option<Self> {
        Some(Self {
            name: node.metadata.name.clone()?,
            labels: node.metadata.labels.clone().unwrap_or_default(),
        })
    }

    /// Whether the node is a control-plane node.
    pub fn is_control_plane(&self) -> bool {
        CONTROL_PLANE_LABELS
            .iter()
            .any(|l| self.labels.contains_key(*l))
    }
}

/// The plugin method a task calls, once the plugin and method are known.
pub fn resolve_method<'a>(
    spec: &HostTaskSpec,
    plugin_name: &str,
    plugin: Option<(&HostPluginSpec, Option<&'a PluginInfo>, bool, Option<&str>)>,
) -> Result<&'a MethodInfo, Invalid> {
    let Some((_, info, ready, message)) = plugin else {
        return Err(Invalid::new(
            "spec.http.api",
            format!("plugin {plugin_name:?} does not exist (no HostPlugin of that name)"),
        ));
    };
    let info = match (ready, info) {
        (true, Some(info)) => info,
        _ => {
            return Err(Invalid::new(
                "spec.http.api",
                format!(
                    "plugin {plugin_name:?} is not ready: {}",
                    message.unwrap_or("it has not been loaded yet")
                ),
            ));
        }
    };
    info.method(&spec.http.method).ok_or_else(|| {
        let known: Vec<&str> = info.methods.iter().map(|m| m.name.as_str()).collect();
        Invalid::new(
            "spec.http.method",
            format!(
                "plugin {plugin_name:?} has no method {:?} (it has: {})",
                spec.http.method,
                known.join(", ")
            ),
        )
    })
}

/// The task's parameters as sent to the worker (`{}` when absent).
pub fn params_of(spec: &HostTaskSpec) -> serde_json::Value {
    spec.http
        .parameter
        .clone()
        .unwrap_or_else(|| serde_json::Value::Object(serde_json::Map::new()))
}

/// Checks the parameters against the method's JSON Schema, with the check `hostplug
/// plugin run` applies too ([`hostplug_host::params`]).
pub fn check_params(spec: &HostTaskSpec, method: &MethodInfo) -> Result<(), Invalid> {
    use hostplug_host::params::{self, ParamsError};
    params::check_params(
        method.params_schema.as_ref(),
        &method.name,
        &params_of(spec),
        PARAMS_FIELD,
    )
    .map_err(|e| match e {
        e @ ParamsError::BadSchema { .. } => Invalid::new("spec.http.method", e.to_string()),
        ParamsError::Invalid { field, problem } => Invalid::new(field, problem),
    })
}

/// Where a task's parameters are, as errors name them.
const PARAMS_FIELD: &str = "spec.http.parameter";

/// `spec.http.parameter` plus a JSON pointer, in dotted form (`/a/0/b` → `.a[0].b`).
#[cfg(test)]
fn field_of_pointer(pointer: &str) -> String {
    hostplug_host::params::field_of_pointer(PARAMS_FIELD, pointer)
}

/// Checks that the plugin may do what the method does: a method that changes the node
/// needs `etc: write`, `docker` or `containerd`, unless the task is a dry run.
pub fn check_capabilities(
    spec: &HostTaskSpec,
    plugin_name: &str,
    plugin: &HostPluginSpec,
    method: &MethodInfo,
) -> Result<(), Invalid> {
    let caps = &plugin.capabilities;
    if method.mutates
        && !spec.dry_run
        && caps.etc != EtcAccess::Write
        && !caps.docker
        && !caps.containerd
    {
        return Err(Invalid::new(
            "spec.http.method",
            format!(
                "method {:?} changes the node, but HostPlugin {plugin_name:?} grants only etc: {}, \
                 docker: {}, containerd: {}; run it with spec.dryRun: true or grant the plugin \
                 etc: write",
                method.name,
                etc_name(caps.etc),
                caps.docker,
                caps.containerd
            ),
        ));
    }
    Ok(())
}

fn etc_name(e: EtcAccess) -> &'static str {
    match e {
        EtcAccess::None => "none",
        EtcAccess::Read => "read",
        EtcAccess::Write => "write",
    }
}

/// The nodes a task runs on, in a stable order, or why there are none.
pub fn target_nodes(spec: &HostTaskSpec, nodes: &[NodeView]) -> Result<Vec<String>, Invalid> {
    let by_name: BTreeMap<&str, &NodeView> = nodes.iter().map(|n| (n.name.as_str(), n)).collect();
    if !spec.workers.is_empty() {
        let mut seen = BTreeSet::new();
        let mut out = Vec::new();
        for (i, w) in spec.workers.iter().enumerate() {
            if !by_name.contains_key(w.as_str()) {
                return Err(Invalid::new(
                    format!("spec.workers[{i}]"),
                    format!("node {w:?} does not exist"),
                ));
            }
            if seen.insert(w.as_str()) {
                out.push(w.clone());
            }
        }
        return Ok(out);
    }
    let Some(target) = spec.target_type else {
        return Err(Invalid::new(
            "spec.workers",
            "set spec.workers (node names) or spec.targetType (Master, Node, All)",
        ));
    };
    let mut out = Vec::new();
    for node in nodes {
        let by_role = match target {
            TargetType::All => true,
            TargetType::Master => node.is_control_plane(),
            TargetType::Node => !node.is_control_plane(),
        };
        let by_selector = match &spec.node_selector {
            Some(sel) => selector_matches(sel, &node.labels)?,
            None => true,
        };
        if by_role && by_selector {
            out.push(node.name.clone());
        }
    }
    out.sort();
    if out.is_empty() {
        let field = if spec.node_selector.is_some() {
            "spec.nodeSelector"
        } else {
            "spec.targetType"
        };
        return Err(Invalid::new(
            field,
            format!(
                "no node matches targetType {target:?}{}",
                if spec.node_selector.is_some() {
                    " and the node selector"
                } else {
                    ""
                }
            ),
        ));
    }
    Ok(out)
}

/// Whether `labels` match a standard label selector.
pub fn selector_matches(
    sel: &LabelSelector,
    labels: &BTreeMap<String, String>,
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
                    format!("spec.nodeSelector.matchExpressions[{i}].operator"),
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

#[cfg(test)]
mod tests {
    use super::*;
    use hostplug_api::crd::{Capabilities, HttpSpec, PluginSource};
    use serde_json::json;

    fn spec(method: &str, params: serde_json::Value) -> HostTaskSpec {
        HostTaskSpec {
            workers: vec![],
            target_type: Some(TargetType::All),
            node_selector: None,
            http: HttpSpec {
                port: 8443,
                api: "etc-file".into(),
                method: method.into(),
                parameter: Some(params),
            },
            dry_run: false,
            timeout_seconds: 60,
            rollout: None,
            ttl_seconds_after_finished: None,
            registry_auth: None,
        }
    }

    fn info() -> PluginInfo {
        PluginInfo {
            name: "etc-file".into(),
            version: "0.1.0".into(),
            description: String::new(),
            methods: vec![
                MethodInfo {
                    name: "ensure-line".into(),
                    description: String::new(),
                    mutates: true,
                    params_schema: Some(json!({
                        "type": "object",
                        "required": ["path", "line"],
                        "properties": {"path": {"type": "string", "pattern": "^/etc/"}, "line": {"type": "string"}},
                        "additionalProperties": false
                    })),
                },
                MethodInfo {
                    name: "read".into(),
                    description: String::new(),
                    mutates: false,
                    params_schema: Some(json!({"type": "object", "required": ["path"]})),
                },
            ],
        }
    }

    fn plugin(etc: EtcAccess) -> HostPluginSpec {
        HostPluginSpec {
            source: PluginSource {
                builtin: Some("etc-file".into()),
                config_map: None,
                oci: None,
            },
            sha256: None,
            capabilities: Capabilities {
                etc,
                docker: false,
                ..Default::default()
            },
            signature: None,
        }
    }

    fn nodes() -> Vec<NodeView> {
        let mk = |name: &str, cp: bool| NodeView {
            name: name.into(),
            labels: if cp {
                [(CONTROL_PLANE_LABELS[0].to_string(), String::new())].into()
            } else {
                [("zone".to_string(), name.to_string())].into()
            },
        };
        vec![mk("master", true), mk("node1", false), mk("node2", false)]
    }

    #[test]
    fn unknown_plugin_names_api() {
        let s = spec("read", json!({}));
        let err = resolve_method(&s, "nope", None).err();
        assert_eq!(err.map(|e| e.field), Some("spec.http.api".to_string()));
    }

    #[test]
    fn unready_plugin_is_refused_with_its_message() {
        let s = spec("read", json!({}));
        let p = plugin(EtcAccess::Read);
        let err = resolve_method(&s, "etc-file", Some((&p, None, false, Some("bad module"))));
        assert!(matches!(err, Err(e) if e.problem.contains("bad module")));
    }

    #[test]
    fn unknown_method_lists_the_known_ones() {
        let s = spec("frobnicate", json!({}));
        let p = plugin(EtcAccess::Read);
        let i = info();
        let err = resolve_method(&s, "etc-file", Some((&p, Some(&i), true, None)));
        match err {
            Err(e) => {
                assert_eq!(e.field, "spec.http.method");
                assert!(e.problem.contains("ensure-line, read"), "{e}");
            }
            Ok(_) => panic!("accepted an unknown method"),
        }
    }

    #[test]
    fn params_errors_name_the_field() {
        let i = info();
        let m = i.method("ensure-line").expect("method");
        let bad = spec("ensure-line", json!({"path": "/tmp/x", "line": "a"}));
        let e = check_params(&bad, m).expect_err("bad path accepted");
        assert_eq!(e.field, "spec.http.parameter.path");
        let missing = spec("ensure-line", json!({"path": "/etc/x"}));
        let e = check_params(&missing, m).expect_err("missing line accepted");
        assert_eq!(e.field, "spec.http.parameter");
        assert!(e.problem.contains("line"), "{e}");
        let ok = spec("ensure-line", json!({"path": "/etc/x", "line": "a"}));
        assert_eq!(check_params(&ok, m), Ok(()));
    }

    #[test]
    fn pointer_to_field() {
        assert_eq!(field_of_pointer(""), "spec.http.parameter");
        assert_eq!(
            field_of_pointer("/a/0/b~1c"),
            "spec.http.parameter.a[0].b/c"
        );
    }

    #[test]
    fn mutating_method_needs_write_unless_dry_run() {
        let i = info();
        let m = i.method("ensure-line").expect("method");
        let mut s = spec("ensure-line", json!({}));
        assert!(check_capabilities(&s, "etc-file", &plugin(EtcAccess::Read), m).is_err());
        assert!(check_capabilities(&s, "etc-file", &plugin(EtcAccess::Write), m).is_ok());
        s.dry_run = true;
        assert!(check_capabilities(&s, "etc-file", &plugin(EtcAccess::Read), m).is_ok());
        let read = i.method("read").expect("method");
        s.dry_run = false;
        assert!(check_capabilities(&s, "etc-file", &plugin(EtcAccess::Read), read).is_ok());
    }

    #[test]
    fn targets_by_role_and_name() {
        let n = nodes();
        let mut s = spec("read", json!({}));
        assert_eq!(
            target_nodes(&s, &n),
            Ok(vec!["master".into(), "node1".into(), "node2".into()])
        );
        s.target_type = Some(TargetType::Master);
        assert_eq!(target_nodes(&s, &n), Ok(vec!["master".into()]));
        s.target_type = Some(TargetType::Node);
        assert_eq!(
            target_nodes(&s, &n),
            Ok(vec!["node1".into(), "node2".into()])
        );
        s.node_selector = Some(LabelSelector {
            match_labels: Some([("zone".into(), "node2".into())].into()),
            match_expressions: None,
        });
        assert_eq!(target_nodes(&s, &n), Ok(vec!["node2".into()]));
        s.node_selector = Some(LabelSelector {
            match_labels: Some([("zone".into(), "mars".into())].into()),
            match_expressions: None,
        });
        assert_eq!(
            target_nodes(&s, &n).map_err(|e| e.field),
            Err("spec.nodeSelector".to_string())
        );
        s.node_selector = None;
        s.target_type = None;
        s.workers = vec!["node2".into(), "node1".into(), "node2".into()];
        assert_eq!(
            target_nodes(&s, &n),
            Ok(vec!["node2".into(), "node1".into()])
        );
        s.workers = vec!["node1".into(), "node9".into()];
        let e = target_nodes(&s, &n).expect_err("unknown node accepted");
        assert_eq!(e.field, "spec.workers[1]");
        assert!(e.problem.contains("node9"));
    }
}

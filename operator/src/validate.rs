//! Validation of a plugin call before any node is touched: the plugin exists and is
//! ready, the method exists, the parameters match the method's JSON Schema, and the
//! plugin has the capability the method needs. HostTask and HostState validate their
//! calls ([`PluginCall`]) with the same rules; only the field names differ, which the
//! [`CallSite`] gives (`spec.http.method`, `spec.steps[2].method`).
//!
//! Pure functions over already-fetched objects, so every rule is unit-tested without a
//! cluster. A failure is an [`Invalid`] naming the field and the problem; the controller
//! turns it into a status and an Event and creates nothing. Node selection is
//! [`hostplug_api::NodeTargets`]'s.

use k8s_openapi::api::core::v1::Node;

pub use hostplug_api::call::{Invalid, NodeView};
use hostplug_api::crd::{
    EtcAccess, HostPluginSpec, HostTaskSpec, MethodInfo, OnFailure, PluginCall, PluginInfo,
    RevertSpec, RolloutSpec,
};

/// Where a plugin call sits in its resource.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CallSite {
    /// A HostTask's `spec.http`.
    Task,
    /// A HostState's `spec.steps[i]`.
    Step(usize),
    /// A HostTask's `spec.onChange[i]`.
    TaskOnChange(usize),
    /// A HostState's `spec.steps[i].onChange[j]`.
    StepOnChange(usize, usize),
    /// A HostTask's `spec.rollout.gate.checks[i]` (a health check).
    GateCheck(usize),
    /// A HostState's `spec.checks[i]` (a health check after a correction).
    StateCheck(usize),
}

impl CallSite {
    /// The path of the call's field `name` (`api`, `method`, `parameter`).
    pub fn field(self, name: &str) -> String {
        match self {
            Self::Task => format!("spec.http.{name}"),
            Self::Step(i) => format!("spec.steps[{i}].{name}"),
            Self::TaskOnChange(i) => format!("spec.onChange[{i}].{name}"),
            Self::StepOnChange(i, j) => format!("spec.steps[{i}].onChange[{j}].{name}"),
            Self::GateCheck(i) => format!("spec.rollout.gate.checks[{i}].{name}"),
            Self::StateCheck(i) => format!("spec.checks[{i}].{name}"),
        }
    }

    /// How the resource runs a mutating method without writing.
    fn without_writing(self) -> &'static str {
        match self {
            Self::Task | Self::TaskOnChange(_) => "run it with spec.dryRun: true",
            Self::Step(_) | Self::StepOnChange(..) => "use spec.mode: Audit",
            Self::GateCheck(_) | Self::StateCheck(_) => {
                "a health check must call a read-only method"
            }
        }
    }
}

/// A call's plugin as it was found: its HostPlugin's spec (none: no such HostPlugin) and
/// its description once loaded (or why it is not).
#[derive(Debug, Clone, Copy)]
pub struct PluginView<'a> {
    /// The HostPlugin's spec.
    pub spec: Option<&'a HostPluginSpec>,
    /// Its description, or why it did not load.
    pub loaded: Result<&'a PluginInfo, &'a str>,
}

/// The view of a Node object (nodes without a name are skipped by the caller).
pub fn node_view(node: &Node) -> Option<NodeView> {
    Some(NodeView {
        name: node.metadata.name.clone()?,
        labels: node.metadata.labels.clone().unwrap_or_default(),
        annotations: node.metadata.annotations.clone().unwrap_or_default(),
        addresses: node
            .status
            .as_ref()
            .and_then(|s| s.addresses.as_ref())
            .map(|a| {
                a.iter()
                    .map(|a| (a.type_.clone(), a.address.clone()))
                    .collect()
            })
            .unwrap_or_default(),
    })
}

/// Validates `call` at `site` against its plugin: the HostPlugin exists and is ready,
/// the method exists, the parameters match its schema, and a method that changes the node
/// has a capability to do so unless the call is a `dry_run`. Returns the method.
pub fn check_call<'a>(
    call: &PluginCall,
    site: CallSite,
    plugin: PluginView<'a>,
    dry_run: bool,
) -> Result<&'a MethodInfo, Invalid> {
    let name = &call.api;
    let Some(spec) = plugin.spec else {
        return Err(Invalid::new(
            site.field("api"),
            format!("plugin {name:?} does not exist (no HostPlugin of that name)"),
        ));
    };
    let info = plugin.loaded.map_err(|why| {
        Invalid::new(
            site.field("api"),
            format!("plugin {name:?} is not ready: {why}"),
        )
    })?;
    let method = info.method(&call.method).ok_or_else(|| {
        let known: Vec<&str> = info.methods.iter().map(|m| m.name.as_str()).collect();
        Invalid::new(
            site.field("method"),
            format!(
                "plugin {name:?} has no method {:?} (it has: {})",
                call.method,
                known.join(", ")
            ),
        )
    })?;
    // Parameters with `$(…)` references are checked per node, once replaced
    // ([`crate::values::CallValues::params_for`]).
    if !has_references(&call.params()) {
        check_params_value(&call.params(), site, method)?;
    }
    check_capabilities(call, site, spec, method, dry_run)?;
    Ok(method)
}

/// Checks a HostTask's `spec.rollout` beyond what the schema says: the waves
/// ([`hostplug_api::rollout::check_waves`]), a gate only between waves, each health
/// check's `expect.path` a JSON pointer. The checks' plugins and methods are checked by
/// [`check_health_check`].
pub fn check_rollout(rollout: &RolloutSpec) -> Result<(), Invalid> {
    // Revert takes back a halted wave; without waves nothing halts by wave.
    if rollout.on_failure == hostplug_api::crd::OnFailure::Revert && rollout.waves.is_none() {
        return Err(Invalid::new(
            "spec.rollout.onFailure",
            "Revert reverts the nodes of a halted wave and needs spec.rollout.waves",
        ));
    }
    if let Some(waves) = &rollout.waves {
        hostplug_api::rollout::check_waves(waves)?;
    }
    if let Some(gate) = &rollout.gate {
        if rollout.waves.is_none() {
            return Err(Invalid::new(
                "spec.rollout.gate",
                "a gate stands between two waves: set spec.rollout.waves too (e.g. [1, \"100%\"])",
            ));
        }
        for (i, c) in gate.checks.iter().enumerate() {
            if let Some(e) = &c.expect {
                e.check(&CallSite::GateCheck(i).field("expect"))?;
            }
        }
    }
    Ok(())
}

/// Checks a revert task's spec (`spec.revert`) for what a revert cannot combine with,
/// naming the field: a call of its own (`spec.http`), node selection other than
/// `spec.revert.nodes`, a dry run, follow-up calls, registry credentials, and
/// `rollout.onFailure: Revert` (a revert is not recorded, so it cannot be reverted).
/// What depends on the reverted task is `crate::revert::plan`'s.
pub fn check_revert_task(spec: &HostTaskSpec) -> Result<&RevertSpec, Invalid> {
    let Some(rv) = &spec.revert else {
        return Err(Invalid::new("spec.revert", "not a revert task"));
    };
    let refuse = |field: &str, why: &str| Err(Invalid::new(field, why.to_owned()));
    if spec.http.is_some() {
        return refuse(
            "spec.http",
            "a revert task calls no plugin: set spec.http or spec.revert, not both",
        );
    }
    if !spec.targets.workers.is_empty() {
        return refuse(
            "spec.workers",
            "a revert task reverts nodes the reverted task ran on: name them in spec.revert.nodes",
        );
    }
    if spec.targets.target_type.is_some() {
        return refuse(
            "spec.targetType",
            "a revert task reverts nodes the reverted task ran on: name them in spec.revert.nodes",
        );
    }
    if spec.targets.node_selector.is_some() {
        return refuse(
            "spec.nodeSelector",
            "a revert task reverts nodes the reverted task ran on: name them in spec.revert.nodes",
        );
    }
    if spec.dry_run {
        return refuse(
            "spec.dryRun",
            "a revert cannot be a dry run; the reverted task's status shows what it changed \
             (each node's diff)",
        );
    }
    if !spec.on_change.is_empty() {
        return refuse(
            "spec.onChange",
            "a revert task runs no follow-up calls; run them in a task of their own after it",
        );
    }
    if spec.registry_auth.is_some() {
        return refuse("spec.registryAuth", "a revert task calls no plugin");
    }
    if spec
        .rollout
        .as_ref()
        .is_some_and(|r| r.on_failure == OnFailure::Revert)
    {
        return refuse(
            "spec.rollout.onFailure",
            "Revert cannot undo a revert: what a revert restores is not recorded (use Pause)",
        );
    }
    for (i, n) in rv.nodes.iter().enumerate() {
        if n.trim().is_empty() {
            return refuse(
                &format!("spec.revert.nodes[{i}]"),
                "a node name cannot be empty",
            );
        }
    }
    Ok(rv)
}

/// Validates a health check at `site` (a gate's or a HostState's): its call as a dry run
/// (it gets read-only access), refusing a method that declares it changes the node (a
/// check only looks), and its `expect.path`. Returns the method.
pub fn check_health_check<'a>(
    check: &hostplug_api::crd::HealthCheck,
    site: CallSite,
    plugin: PluginView<'a>,
) -> Result<&'a MethodInfo, Invalid> {
    let call = &check.call;
    if let Some(e) = &check.expect {
        e.check(&site.field("expect"))?;
    }
    let method = check_call(call, site, plugin, true)?;
    if method.mutates {
        return Err(Invalid::new(
            site.field("method"),
            format!(
                "method {:?} of plugin {:?} changes the node; {}",
                method.name,
                call.api,
                site.without_writing()
            ),
        ));
    }
    Ok(method)
}

/// Whether any string of `params` holds a `$(…)` reference.
pub fn has_references(params: &serde_json::Value) -> bool {
    match params {
        serde_json::Value::String(s) => s.contains("$("),
        serde_json::Value::Array(a) => a.iter().any(has_references),
        serde_json::Value::Object(o) => o.values().any(has_references),
        _ => false,
    }
}

/// Checks the parameters against the method's JSON Schema with the one schema reader
/// ([`hostplug_api::schema`]), which the console, `kubectl hostplug` and `hostplug
/// plugin run` use too.
pub fn check_params_value(
    params: &serde_json::Value,
    site: CallSite,
    method: &MethodInfo,
) -> Result<(), Invalid> {
    use hostplug_api::schema::{self, ParamsError};
    schema::check_params(
        method.params_schema.as_ref(),
        &method.name,
        params,
        &site.field("parameter"),
    )
    .map_err(|e| match e {
        e @ ParamsError::BadSchema { .. } => Invalid::new(site.field("method"), e.to_string()),
        ParamsError::Invalid { field, problem } => Invalid::new(field, problem),
    })
}

/// A method that changes the node needs `etc: write`, `docker` or `containerd`, unless
/// the call is a dry run.
fn check_capabilities(
    call: &PluginCall,
    site: CallSite,
    plugin: &HostPluginSpec,
    method: &MethodInfo,
    dry_run: bool,
) -> Result<(), Invalid> {
    let caps = &plugin.capabilities;
    if method.mutates
        && !dry_run
        && caps.etc != EtcAccess::Write
        && !caps.docker
        && !caps.containerd
    {
        return Err(Invalid::new(
            site.field("method"),
            format!(
                "method {:?} changes the node, but HostPlugin {:?} grants only etc: {}, \
                 docker: {}, containerd: {}; {} or grant the plugin etc: write",
                method.name,
                call.api,
                caps.etc,
                caps.docker,
                caps.containerd,
                site.without_writing(),
            ),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use hostplug_api::crd::{Capabilities, PluginSource};
    use serde_json::json;

    /// Every field a revert task cannot combine with is named.
    #[test]
    fn a_revert_task_refuses_what_it_cannot_combine_with() {
        let base: HostTaskSpec =
            serde_json::from_value(json!({"revert": {"task": "edit"}})).expect("spec");
        assert!(check_revert_task(&base).is_ok());
        let cases: Vec<(serde_json::Value, &str)> = vec![
            (
                json!({"http": {"api": "etc-file", "method": "read"}}),
                "spec.http",
            ),
            (json!({"workers": ["n1"]}), "spec.workers"),
            (json!({"targetType": "All"}), "spec.targetType"),
            (
                json!({"nodeSelector": {"matchLabels": {"a": "b"}}}),
                "spec.nodeSelector",
            ),
            (json!({"dryRun": true}), "spec.dryRun"),
            (
                json!({"onChange": [{"api": "systemd-unit", "method": "restart"}]}),
                "spec.onChange",
            ),
            (
                json!({"registryAuth": {"secretName": "s"}}),
                "spec.registryAuth",
            ),
            (
                json!({"rollout": {"waves": [1], "onFailure": "Revert"}}),
                "spec.rollout.onFailure",
            ),
            (
                json!({"revert": {"task": "edit", "nodes": ["a", " "]}}),
                "spec.revert.nodes[1]",
            ),
        ];
        for (extra, field) in cases {
            let mut v = json!({"revert": {"task": "edit"}});
            for (k, x) in extra.as_object().into_iter().flatten() {
                v[k] = x.clone();
            }
            let spec: HostTaskSpec = serde_json::from_value(v).expect("spec");
            let e = check_revert_task(&spec).expect_err(field);
            assert_eq!(e.field, field, "{e}");
        }
    }

    fn call(method: &str, params: serde_json::Value) -> PluginCall {
        PluginCall::new("etc-file", method, Some(params))
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
                ..Default::default()
            },
            signature: None,
        }
    }

    fn check(
        c: &PluginCall,
        site: CallSite,
        etc: EtcAccess,
        dry_run: bool,
    ) -> Result<String, Invalid> {
        let (p, i) = (plugin(etc), info());
        let view = PluginView {
            spec: Some(&p),
            loaded: Ok(&i),
        };
        check_call(c, site, view, dry_run).map(|m| m.name.clone())
    }

    #[test]
    fn unknown_and_unready_plugins_name_api() {
        let c = call("read", json!({"path": "/etc/a"}));
        let missing = PluginView {
            spec: None,
            loaded: Err("no HostPlugin"),
        };
        let e = check_call(&c, CallSite::Task, missing, false).err();
        assert_eq!(e.map(|e| e.field), Some("spec.http.api".to_string()));
        let p = plugin(EtcAccess::Read);
        let unready = PluginView {
            spec: Some(&p),
            loaded: Err("bad module"),
        };
        let e = check_call(&c, CallSite::Step(3), unready, false).err();
        assert!(
            e.as_ref()
                .is_some_and(|e| e.field == "spec.steps[3].api" && e.problem.contains("bad module")),
            "{e:?}"
        );
    }

    #[test]
    fn unknown_method_lists_the_known_ones() {
        let e = check(
            &call("frobnicate", json!({})),
            CallSite::Task,
            EtcAccess::Read,
            false,
        );
        match e {
            Err(e) => {
                assert_eq!(e.field, "spec.http.method");
                assert!(e.problem.contains("ensure-line, read"), "{e}");
            }
            Ok(_) => panic!("accepted an unknown method"),
        }
    }

    #[test]
    fn params_errors_name_the_field_where_the_call_sits() {
        let w = EtcAccess::Write;
        let bad = call("ensure-line", json!({"path": "/tmp/x", "line": "a"}));
        let e = check(&bad, CallSite::Task, w, false).expect_err("bad path accepted");
        assert_eq!(e.field, "spec.http.parameter.path");
        let e = check(&bad, CallSite::Step(2), w, false).expect_err("bad path accepted");
        assert_eq!(e.field, "spec.steps[2].parameter.path");
        let missing = call("ensure-line", json!({"path": "/etc/x"}));
        let e = check(&missing, CallSite::Task, w, false).expect_err("missing line accepted");
        assert_eq!(e.field, "spec.http.parameter");
        assert!(e.problem.contains("line"), "{e}");
        let ok = call("ensure-line", json!({"path": "/etc/x", "line": "a"}));
        assert_eq!(
            check(&ok, CallSite::Task, w, false),
            Ok("ensure-line".into())
        );
    }

    #[test]
    fn health_checks_must_be_read_only_and_name_their_field() {
        let (p, i) = (plugin(EtcAccess::Write), info());
        let view = PluginView {
            spec: Some(&p),
            loaded: Ok(&i),
        };
        let check = |call: PluginCall| hostplug_api::crd::HealthCheck { call, expect: None };
        let read = check(call("read", json!({"path": "/etc/x"})));
        assert!(check_health_check(&read, CallSite::GateCheck(0), view).is_ok());
        let write = check(call("ensure-line", json!({"path": "/etc/x", "line": "a"})));
        let e = check_health_check(&write, CallSite::GateCheck(1), view)
            .expect_err("a mutating check ran");
        assert_eq!(e.field, "spec.rollout.gate.checks[1].method");
        assert!(e.problem.contains("read-only"), "{e}");
        let e = check_health_check(&write, CallSite::StateCheck(2), view).expect_err("state");
        assert_eq!(e.field, "spec.checks[2].method");
        let bad = check(call("read", json!({})));
        let e = check_health_check(&bad, CallSite::GateCheck(0), view).expect_err("bad params");
        assert_eq!(e.field, "spec.rollout.gate.checks[0].parameter");
        let mut no_pointer = read.clone();
        no_pointer.expect = Some(hostplug_api::rollout::Expect {
            path: "size".into(),
            equals: None,
        });
        let e = check_health_check(&no_pointer, CallSite::StateCheck(0), view)
            .expect_err("not a pointer");
        assert_eq!(e.field, "spec.checks[0].expect.path");
    }

    #[test]
    fn rollouts_with_bad_waves_or_a_lone_gate_are_refused() {
        use hostplug_api::crd::{Gate, HealthCheck, WaveSize};
        use hostplug_api::rollout::Expect;
        let mut r = RolloutSpec {
            waves: Some(vec![WaveSize::Nodes(1), WaveSize::Percent("150%".into())]),
            ..RolloutSpec::default()
        };
        let e = check_rollout(&r).expect_err("150% accepted");
        assert_eq!(e.field, "spec.rollout.waves[1]");
        r.waves = None;
        r.gate = Some(Gate::default());
        let e = check_rollout(&r).expect_err("a gate without waves");
        assert_eq!(e.field, "spec.rollout.gate");
        r.waves = Some(vec![WaveSize::Nodes(1)]);
        r.gate = Some(Gate {
            checks: vec![HealthCheck {
                call: call("read", json!({"path": "/etc/x"})),
                expect: Some(Expect {
                    path: "active".into(),
                    equals: None,
                }),
            }],
            approval: false,
        });
        let e = check_rollout(&r).expect_err("not a pointer");
        assert_eq!(e.field, "spec.rollout.gate.checks[0].expect.path");
        assert!(check_rollout(&RolloutSpec::default()).is_ok());
        let revert = RolloutSpec {
            on_failure: hostplug_api::crd::OnFailure::Revert,
            ..RolloutSpec::default()
        };
        let e = check_rollout(&revert).expect_err("Revert without waves");
        assert_eq!(e.field, "spec.rollout.onFailure");
        assert!(e.problem.contains("spec.rollout.waves"), "{e}");
        let revert = RolloutSpec {
            waves: Some(vec![WaveSize::Nodes(1), WaveSize::Percent("100%".into())]),
            ..revert
        };
        check_rollout(&revert).expect("Revert with waves is valid");
    }

    #[test]
    fn mutating_method_needs_write_unless_dry_run() {
        let m = call("ensure-line", json!({"path": "/etc/x", "line": "a"}));
        let e = check(&m, CallSite::Task, EtcAccess::Read, false).expect_err("read-only wrote");
        assert!(e.problem.contains("spec.dryRun: true"), "{e}");
        let e = check(&m, CallSite::Step(0), EtcAccess::Read, false).expect_err("read-only wrote");
        assert!(
            e.field == "spec.steps[0].method" && e.problem.contains("spec.mode: Audit"),
            "{e}"
        );
        assert!(check(&m, CallSite::Task, EtcAccess::Write, false).is_ok());
        assert!(check(&m, CallSite::Task, EtcAccess::Read, true).is_ok());
        let read = call("read", json!({"path": "/etc/x"}));
        assert!(check(&read, CallSite::Task, EtcAccess::Read, false).is_ok());
    }
}

//! `HostTaskPolicy` (cluster-scoped, group `hostplug.dev`): which namespaces may run which
//! plugins and methods, mutating or not, on which nodes.
//!
//! Creating a `HostTask` is running a plugin as root on nodes, so the right to create
//! one in a namespace is not enough: the operator runs a task outside its own namespace
//! only when a policy covers it. Each policy is one grant; a task runs when at least one
//! policy allows all of it (namespace, plugin, method, mutating, nodes). Without any
//! policy, a namespace runs nothing. The operator's own namespace runs everything unless
//! the operator is started with `--trust-own-namespace=false`.
//!
//! Types only; the operator evaluates them (`hostplug_operator::policy`) before any node
//! is touched and says which rule was missing.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::call::{Invalid, NodeView, TargetType, selector_matches};

/// The value that matches any plugin or method name in a policy.
pub const ANY: &str = "*";

/// Upper bound of each list of a policy (namespaces, plugins, methods): 256. A policy
/// longer than that is several grants in one and belongs in several policies; the bound
/// keeps the evaluation per task cheap and the object far below etcd's size limit.
pub const MAX_POLICY_LIST: usize = 256;

/// One grant: HostTasks in these namespaces may run these plugins' methods on these
/// nodes.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "hostplug.dev",
    version = "v1alpha1",
    kind = "HostTaskPolicy",
    plural = "hosttaskpolicies",
    derive = "PartialEq",
    shortname = "htp",
    category = "hostplug",
    doc = "Which namespaces may run which plugins and methods, mutating or not, on which nodes. \
           HostTasks outside the operator's namespace run only when a policy allows them.",
    printcolumn = r#"{"name":"Namespaces","type":"string","jsonPath":".spec.namespaces"}"#,
    printcolumn = r#"{"name":"Plugins","type":"string","jsonPath":".spec.plugins"}"#,
    printcolumn = r#"{"name":"Methods","type":"string","jsonPath":".spec.methods"}"#,
    printcolumn = r#"{"name":"Mutating","type":"boolean","jsonPath":".spec.allowMutating"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#,
    printcolumn = r#"{"name":"Node-Roles","type":"string","jsonPath":".spec.nodes.targetTypes","priority":1}"#,
    printcolumn = r#"{"name":"Description","type":"string","description":"a policy has no status: its message is the administrator's kubernetes.io/description annotation","jsonPath":".metadata.annotations.kubernetes\\.io/description","priority":1}"#
)]
#[x_kube(validation = Rule::new(
    "(has(self.namespaces) && size(self.namespaces) > 0) || has(self.namespaceSelector)"
).message("a HostTaskPolicy must name its namespaces: spec.namespaces or spec.namespaceSelector"))]
#[serde(rename_all = "camelCase")]
pub struct HostTaskPolicySpec {
    /// Namespaces, by name, whose HostTasks this policy covers.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = MAX_POLICY_LIST))]
    pub namespaces: Vec<String>,
    /// Namespaces, by label, whose HostTasks this policy covers (in addition to
    /// `namespaces`). An empty selector `{}` matches every namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "crate::crd::label_selector_schema")]
    pub namespace_selector: Option<LabelSelector>,
    /// HostPlugin names these namespaces may run; `*` is any plugin.
    #[schemars(length(min = 1, max = MAX_POLICY_LIST))]
    pub plugins: Vec<String>,
    /// Method names they may call; `*` (the default) is any method of those plugins.
    #[serde(default = "any_method")]
    #[schemars(length(min = 1, max = MAX_POLICY_LIST))]
    pub methods: Vec<String>,
    /// Whether methods that change nodes may run. Off by default: the namespaces may
    /// only run read-only methods, and dry runs of the others (a dry run mounts /etc
    /// read-only and changes nothing).
    #[serde(default)]
    pub allow_mutating: bool,
    /// The nodes their tasks may target.
    #[serde(default)]
    pub nodes: NodeRule,
    /// Secret names these namespaces' tasks may name in `spec.registryAuth.secretName`
    /// (always a Secret in the task's own namespace); `*` is any. Empty (the default):
    /// tasks with `spec.registryAuth` are not allowed by this policy, since the operator
    /// reads the Secret with its own rights and hands the credentials to a plugin.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = MAX_POLICY_LIST))]
    pub registry_auth_secrets: Vec<String>,
    /// Secret names these namespaces' tasks may take parameter values from
    /// (`spec.http.vars[].valueFrom.secretKeyRef`, always a Secret in the task's own
    /// namespace); `*` is any. Empty (the default): tasks whose vars read a Secret are not
    /// allowed by this policy. ConfigMaps need no grant here.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = MAX_POLICY_LIST))]
    pub secrets: Vec<String>,
    /// Narrows the /etc paths these namespaces' tasks may read and write, below what each
    /// plugin's HostPlugin covers. Absent: everything the plugins cover.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub etc: Option<EtcPathRule>,
}

/// The /etc paths a policy lets its tasks reach (`spec.etc`). Patterns are relative to
/// /etc, as in a HostPlugin's `spec.capabilities.etcPaths` (`*`, `?`, `**`).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema, Default)]
#[serde(rename_all = "camelCase")]
pub struct EtcPathRule {
    /// Paths the tasks may read (and write, unless `writePaths` says otherwise).
    /// Absent: every path their plugins cover.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = crate::plugin::MAX_ETC_PATHS))]
    pub paths: Option<Vec<String>>,
    /// Paths the tasks may write (create, change, rename, remove); `[]`: none. Absent:
    /// `paths`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = crate::plugin::MAX_ETC_PATHS))]
    pub write_paths: Option<Vec<String>>,
    /// Refuse writes to the root-equivalent paths ([`ROOT_EQUIVALENT_WRITES`]: cron,
    /// systemd units, sudoers, passwd and shadow, ld.so.preload, profile.d, PAM, ...),
    /// whatever `paths` and the plugins cover. Writing any of them is root on the node.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub exclude_root_equivalent: bool,
}

impl EtcPathRule {
    /// Checks every pattern; the error names the entry (`spec.etc.paths[0]`).
    pub fn validate(&self) -> Result<(), Invalid> {
        if let Some(p) = &self.paths {
            crate::plugin::check_etc_patterns("spec.etc.paths", p, false)?;
        }
        if let Some(p) = &self.write_paths {
            crate::plugin::check_etc_patterns("spec.etc.writePaths", p, false)?;
        }
        Ok(())
    }

    /// What this rule grants.
    pub fn grant(&self) -> EtcPathGrant {
        EtcPathGrant {
            read: self.paths.clone(),
            write: self.write_paths.clone().or_else(|| self.paths.clone()),
            exclude_root_equivalent: self.exclude_root_equivalent,
        }
    }
}

/// What the policies that allow one call grant under /etc, together: each policy is a
/// grant, so a path is reachable when one of them allows it ([`union`](Self::union)).
/// `None` lists: no narrowing.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct EtcPathGrant {
    /// Readable paths; `None`: any the plugin covers.
    pub read: Option<Vec<String>>,
    /// Writable paths; `None`: any the plugin covers.
    pub write: Option<Vec<String>>,
    /// Writes to [`ROOT_EQUIVALENT_WRITES`] refused.
    pub exclude_root_equivalent: bool,
}

impl EtcPathGrant {
    /// The grant of a policy without `spec.etc`: no narrowing.
    pub fn unrestricted() -> Self {
        Self::default()
    }

    /// What `self` and `other` grant together (either policy allows the call).
    pub fn union(self, other: Self) -> Self {
        let either = |a: Option<Vec<String>>, b: Option<Vec<String>>| match (a, b) {
            (Some(mut a), Some(b)) => {
                a.extend(b);
                Some(a)
            }
            _ => None,
        };
        Self {
            read: either(self.read, other.read),
            write: either(self.write, other.write),
            exclude_root_equivalent: self.exclude_root_equivalent && other.exclude_root_equivalent,
        }
    }
}

/// Paths under /etc whose write is root on the node (relative to /etc): whoever may
/// write one can run code as root or become root — schedule a job (cron), define or
/// override a service (systemd units, init scripts, rc.local), change who is root
/// (passwd, group, shadow, sudoers, PAM, login.defs, security/), inject code into every
/// process (ld.so.preload, ld.so.conf) or every login shell (profile, profile.d,
/// bash.bashrc, environment), load kernel modules or udev rules, change the SSH daemon,
/// the container runtimes' configuration (runtimes are binaries they run as root) or the
/// kubelet's static Pods. A HostTaskPolicy with `spec.etc.excludeRootEquivalent` refuses
/// writes to all of them. SECURITY.md names them too.
pub const ROOT_EQUIVALENT_WRITES: &[&str] = &[
    "crontab",
    "cron.d/**",
    "cron.hourly/**",
    "cron.daily/**",
    "cron.weekly/**",
    "cron.monthly/**",
    "anacrontab",
    "systemd/**",
    "init.d/**",
    "rc.local",
    "passwd",
    "passwd-",
    "group",
    "group-",
    "shadow",
    "gshadow",
    "sudoers",
    "sudoers.d/**",
    "sudo.conf",
    "doas.conf",
    "pam.d/**",
    "security/**",
    "login.defs",
    "ld.so.preload",
    "ld.so.conf",
    "ld.so.conf.d/**",
    "profile",
    "profile.d/**",
    "bash.bashrc",
    "environment",
    "modprobe.d/**",
    "modules-load.d/**",
    "modules",
    "udev/**",
    "ssh/sshd_config",
    "ssh/sshd_config.d/**",
    "polkit-1/**",
    "containerd/**",
    "docker/daemon.json",
    "crio/**",
    "containers/**",
    "kubernetes/manifests/**",
    "rancher/**",
    "default/kubelet",
    "sysconfig/kubelet",
    "apt/apt.conf.d/**",
    "dnf/plugins/**",
    "yum/pluginconf.d/**",
];

/// The nodes a policy lets its tasks target. Every node a task selects must stay
/// within: a task that selects one node outside is refused as a whole.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct NodeRule {
    /// Roles of the nodes: `Node` (not control plane, the default), `Master` (control
    /// plane, which holds the cluster's keys: grant it on purpose) or `All`.
    #[serde(default = "default_target_types")]
    #[schemars(length(min = 1, max = 3))]
    pub target_types: Vec<TargetType>,
    /// Every target node must also match this selector.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "crate::crd::label_selector_schema")]
    pub node_selector: Option<LabelSelector>,
}

impl NodeRule {
    /// Whether a task may target `node`: its role is one of `targetTypes` and it matches
    /// `nodeSelector`. A selector that cannot be evaluated allows nothing (the error
    /// names `spec.nodes.nodeSelector`).
    pub fn allows(&self, node: &NodeView) -> Result<bool, Invalid> {
        let by_role = self.target_types.iter().any(|t| t.selects(node));
        Ok(by_role
            && match &self.node_selector {
                Some(sel) => selector_matches(sel, &node.labels, "spec.nodes.nodeSelector")?,
                None => true,
            })
    }
}

impl Default for NodeRule {
    fn default() -> Self {
        Self {
            target_types: default_target_types(),
            node_selector: None,
        }
    }
}

fn any_method() -> Vec<String> {
    vec![ANY.to_owned()]
}

fn default_target_types() -> Vec<TargetType> {
    vec![TargetType::Node]
}

/// Whether a policy list (`plugins`, `methods`) holds `name` or [`ANY`].
pub fn list_allows(list: &[String], name: &str) -> bool {
    list.iter().any(|p| p == ANY || p == name)
}

#[cfg(test)]
mod tests {
    use super::*;
    use kube::CustomResourceExt;

    #[test]
    fn defaults_are_read_only_on_worker_nodes() -> Result<(), serde_yaml::Error> {
        let p: HostTaskPolicy = serde_yaml::from_str(
            r#"
apiVersion: hostplug.dev/v1alpha1
kind: HostTaskPolicy
metadata: {name: team-a-read}
spec:
  namespaces: [team-a]
  plugins: [etc-file]
"#,
        )?;
        assert_eq!(p.spec.methods, vec!["*"]);
        assert!(!p.spec.allow_mutating);
        assert_eq!(p.spec.nodes.target_types, vec![TargetType::Node]);
        assert!(p.spec.nodes.node_selector.is_none());
        assert!(list_allows(&p.spec.methods, "read"));
        assert!(list_allows(&p.spec.plugins, "etc-file"));
        assert!(!list_allows(&p.spec.plugins, "docker-image"));
        assert!(p.spec.registry_auth_secrets.is_empty());
        assert_eq!(p.spec.etc, None);
        assert!(!list_allows(&p.spec.registry_auth_secrets, "creds"));
        Ok(())
    }

    #[test]
    fn etc_rules_narrow_and_unite() -> Result<(), serde_yaml::Error> {
        let rule: EtcPathRule =
            serde_yaml::from_str("{paths: [chrony.conf], excludeRootEquivalent: true}")?;
        assert_eq!(rule.validate(), Ok(()));
        let g = rule.grant();
        assert_eq!(g.write, g.read, "writePaths defaults to paths");
        let read_only: EtcPathRule = serde_yaml::from_str("{paths: [hosts], writePaths: []}")?;
        let u = g.clone().union(read_only.grant());
        assert_eq!(u.read, Some(vec!["chrony.conf".into(), "hosts".into()]));
        assert_eq!(u.write, Some(vec!["chrony.conf".into()]));
        assert!(
            !u.exclude_root_equivalent,
            "one policy does not exclude them"
        );
        assert_eq!(
            g.union(EtcPathGrant::unrestricted()),
            EtcPathGrant::default()
        );
        let bad: EtcPathRule = serde_yaml::from_str("{paths: [ok], writePaths: [/etc/x]}")?;
        assert_eq!(
            bad.validate().err().map(|e| e.field),
            Some("spec.etc.writePaths[0]".into())
        );
        for p in ROOT_EQUIVALENT_WRITES {
            assert_eq!(crate::plugin::check_etc_pattern(p, false), Ok(()), "{p}");
        }
        Ok(())
    }

    #[test]
    fn schema_requires_namespaces_and_plugins() -> Result<(), serde_json::Error> {
        let crd = serde_json::to_string(&HostTaskPolicy::crd())?;
        assert!(crd.contains("must name its namespaces"), "{crd}");
        assert!(crd.contains(r#""scope":"Cluster""#), "{crd}");
        assert!(crd.contains(r#""required":["plugins"]"#), "{crd}");
        Ok(())
    }
}

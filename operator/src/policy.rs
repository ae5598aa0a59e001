//! Evaluation of `HostTaskPolicy`s: may this task, in this namespace, run this plugin's
//! method, mutating or not, on these nodes?
//!
//! Pure functions over already-fetched objects (unit-tested without a cluster), and
//! [`check`], which fetches them. The controller calls it before any worker is asked
//! for; a refusal is a [`Denied`] naming the rule that is missing ([`Missing`]), which
//! ends the task Failed with reason `PolicyDenied` and an Event. Nothing here ever
//! allows more than a policy says: no policy, no run (outside the operator's own
//! namespace when `--trust-own-namespace` is on).

use std::collections::BTreeMap;
use std::fmt;

use hostplug_api::call::selector_matches;
use hostplug_api::crd::HostTask;
use hostplug_api::policy::{EtcPathGrant, EtcPathRule, HostTaskPolicy, list_allows};
use k8s_openapi::api::core::v1::Namespace;
use kube::api::ListParams;
use kube::{Api, ResourceExt};

use crate::validate::NodeView;
use crate::{Context, Error, Result};

/// The rule a task lacks, in the order they are checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Missing {
    /// No policy covers the task's namespace.
    Namespace,
    /// Policies cover the namespace but not the plugin.
    Plugin,
    /// … nor the method.
    Method,
    /// … the task names a registry credentials Secret no policy lists.
    RegistryAuth,
    /// … the task's vars read a Secret no policy lists.
    Secrets,
    /// … the method changes nodes and no policy allows mutating methods.
    Mutating,
    /// … a target node is outside every policy's nodes.
    Nodes,
    /// … the only policies that would allow it have an invalid `spec.etc`.
    Etc,
}

impl Missing {
    /// The rule's name in messages and the condition (`namespace`, `plugin`, …).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Namespace => "namespace",
            Self::Plugin => "plugin",
            Self::Method => "method",
            Self::RegistryAuth => "registryAuth",
            Self::Secrets => "secrets",
            Self::Mutating => "mutating",
            Self::Nodes => "nodes",
            Self::Etc => "etc",
        }
    }
}

/// Why no policy allows a task.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Denied {
    /// The rule no policy grants (the furthest any policy got).
    pub missing: Missing,
    /// What exactly, for people.
    pub detail: String,
}

impl fmt::Display for Denied {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "denied by HostTaskPolicy: no {} rule allows it: {}",
            self.missing.as_str(),
            self.detail
        )
    }
}

/// What a policy is asked about.
#[derive(Debug, Clone)]
pub struct Request<'a> {
    /// The task's namespace.
    pub namespace: &'a str,
    /// Its labels (only read when a policy has a namespace selector).
    pub namespace_labels: &'a BTreeMap<String, String>,
    /// The HostPlugin.
    pub plugin: &'a str,
    /// The method.
    pub method: &'a str,
    /// The Secret the task's `spec.registryAuth` names, if any.
    pub registry_secret: Option<&'a str>,
    /// The Secrets the task's vars read values from.
    pub value_secrets: Vec<&'a str>,
    /// Whether the call may change nodes (a mutating method, not a dry run).
    pub mutating: bool,
    /// The nodes the task selected.
    pub targets: &'a [NodeView],
}

/// Whether `policy` covers `namespace`.
pub fn covers_namespace(
    policy: &HostTaskPolicy,
    namespace: &str,
    labels: &BTreeMap<String, String>,
) -> bool {
    policy.spec.namespaces.iter().any(|n| n == namespace)
        || policy.spec.namespace_selector.as_ref().is_some_and(|sel| {
            selector_matches(sel, labels, "spec.namespaceSelector").unwrap_or(false)
        })
}

/// The first target node outside `policy`'s nodes, if any.
fn node_outside<'a>(policy: &HostTaskPolicy, targets: &'a [NodeView]) -> Option<&'a NodeView> {
    targets
        .iter()
        .find(|n| !policy.spec.nodes.allows(n).unwrap_or(false))
}

/// Evaluates `req` against every policy: the name of one that allows it all, or the
/// furthest rule any policy reached, explained.
pub fn evaluate<'p>(policies: &'p [HostTaskPolicy], req: &Request<'_>) -> Result<&'p str, Denied> {
    let mut best: Option<Denied> = None;
    let mut note = |d: Denied| {
        if best.as_ref().is_none_or(|b| d.missing > b.missing) {
            best = Some(d);
        }
    };
    for p in policies {
        let name = p.metadata.name.as_deref().unwrap_or("");
        if !covers_namespace(p, req.namespace, req.namespace_labels) {
            continue;
        }
        if !list_allows(&p.spec.plugins, req.plugin) {
            note(Denied {
                missing: Missing::Plugin,
                detail: format!(
                    "HostTaskPolicy {name} covers namespace {:?} but not plugin {:?}",
                    req.namespace, req.plugin
                ),
            });
            continue;
        }
        if !list_allows(&p.spec.methods, req.method) {
            note(Denied {
                missing: Missing::Method,
                detail: format!(
                    "HostTaskPolicy {name} allows plugin {:?} but not its method {:?}",
                    req.plugin, req.method
                ),
            });
            continue;
        }
        if let Some(secret) = req.registry_secret
            && !list_allows(&p.spec.registry_auth_secrets, secret)
        {
            note(Denied {
                missing: Missing::RegistryAuth,
                detail: format!(
                    "the task names registry credentials Secret {secret:?}                      (spec.registryAuth.secretName) and HostTaskPolicy {name} does not list                      it in registryAuthSecrets"
                ),
            });
            continue;
        }
        if let Some(secret) = req
            .value_secrets
            .iter()
            .find(|s| !list_allows(&p.spec.secrets, s))
        {
            note(Denied {
                missing: Missing::Secrets,
                detail: format!(
                    "the task's vars read Secret {secret:?} and HostTaskPolicy {name} does not \
                     list it in secrets"
                ),
            });
            continue;
        }
        if req.mutating && !p.spec.allow_mutating {
            note(Denied {
                missing: Missing::Mutating,
                detail: format!(
                    "method {:?} of {:?} changes nodes and HostTaskPolicy {name} allows \
                     only read-only methods and dry runs",
                    req.method, req.plugin
                ),
            });
            continue;
        }
        if let Some(n) = node_outside(p, req.targets) {
            note(Denied {
                missing: Missing::Nodes,
                detail: format!(
                    "node {:?}{} is outside the nodes HostTaskPolicy {name} allows \
                     (targetTypes {:?}{})",
                    n.name,
                    if n.is_control_plane() {
                        " (control plane)"
                    } else {
                        ""
                    },
                    p.spec.nodes.target_types,
                    if p.spec.nodes.node_selector.is_some() {
                        " and its nodeSelector"
                    } else {
                        ""
                    }
                ),
            });
            continue;
        }
        // Its /etc paths are applied per call (`etc_grant`); a policy whose paths are
        // not valid grants nothing.
        if let Some(Err(invalid)) = p.spec.etc.as_ref().map(EtcPathRule::validate) {
            note(Denied {
                missing: Missing::Etc,
                detail: format!("HostTaskPolicy {name} is invalid: {invalid}"),
            });
            continue;
        }
        return Ok(name);
    }
    Err(best.unwrap_or_else(|| Denied {
        missing: Missing::Namespace,
        detail: format!(
            "no HostTaskPolicy covers namespace {:?}; an administrator must create one \
             (see docs/operations.md)",
            req.namespace
        ),
    }))
}

/// What the policies that allow `req` grant under /etc, together (each allowing policy
/// is a grant: their path lists add up, and one without `spec.etc` narrows nothing).
/// When none allows it any more, nothing: no path at all.
pub fn etc_grant(policies: &[HostTaskPolicy], req: &Request<'_>) -> EtcPathGrant {
    policies
        .iter()
        .filter(|p| evaluate(std::slice::from_ref(*p), req).is_ok())
        .map(|p| {
            p.spec
                .etc
                .as_ref()
                .map_or_else(EtcPathGrant::unrestricted, EtcPathRule::grant)
        })
        .reduce(EtcPathGrant::union)
        .unwrap_or(EtcPathGrant {
            read: Some(Vec::new()),
            write: Some(Vec::new()),
            exclude_root_equivalent: true,
        })
}

/// The /etc grant of each call of one invoke request (the main call, then each
/// follow-up, of `plugins` in that order) of a task in `namespace` on `node`: `None`
/// for every call when no policy applies (the operator's own namespace with
/// `--trust-own-namespace`). `dry_run` and each method's declaration say whether a call
/// is mutating. `Err`: the policies could not be read.
pub async fn etc_grants(
    ctx: &Context,
    namespace: &str,
    node: &str,
    dry_run: bool,
    calls: &[(&str, &str, bool)],
) -> Result<Vec<Option<EtcPathGrant>>> {
    if ctx.config.trust_own_namespace && namespace == ctx.config.namespace {
        return Ok(vec![None; calls.len()]);
    }
    let policies = Api::<HostTaskPolicy>::all(ctx.client.clone())
        .list(&ListParams::default())
        .await
        .map_err(Error::kube("listing HostTaskPolicies"))?
        .items;
    let namespace_labels = if policies.iter().any(|p| p.spec.namespace_selector.is_some()) {
        Api::<Namespace>::all(ctx.client.clone())
            .get_opt(namespace)
            .await
            .map_err(Error::kube(format!("reading Namespace {namespace}")))?
            .map(|n| n.labels().clone())
            .unwrap_or_default()
    } else {
        BTreeMap::new()
    };
    let targets: Vec<NodeView> = ctx.node_view(node).into_iter().collect();
    Ok(calls
        .iter()
        .map(|(plugin, method, mutates)| {
            let req = Request {
                namespace,
                namespace_labels: &namespace_labels,
                plugin,
                method,
                // Secrets were checked with the task; the paths follow plugin, method,
                // mutating and nodes.
                registry_secret: None,
                value_secrets: Vec::new(),
                mutating: *mutates && !dry_run,
                targets: &targets,
            };
            Some(etc_grant(&policies, &req))
        })
        .collect())
}

/// Whether the operator may run `task` on `targets`: always in its own namespace when
/// `--trust-own-namespace` is on, else only when a `HostTaskPolicy` allows it all.
/// Every call of the task is checked: `spec.http`'s, then each of `spec.onChange`;
/// `mutating[i]` says whether the i-th of them changes the node (missing: no). With no
/// `mutating` and no `targets` only the namespace, plugin and method rules are checked
/// (the controller does so before it looks the plugins up).
/// `Ok(Err(_))` is a refusal; `Err(_)` an API failure (the reconcile is retried).
pub async fn check(
    ctx: &Context,
    task: &HostTask,
    mutating: &[bool],
    targets: &[NodeView],
) -> Result<Result<(), Denied>> {
    let ns = task.namespace().unwrap_or_default();
    if ctx.config.trust_own_namespace && ns == ctx.config.namespace {
        return Ok(Ok(()));
    }
    let policies = Api::<HostTaskPolicy>::all(ctx.client.clone())
        .list(&ListParams::default())
        .await
        .map_err(Error::kube("listing HostTaskPolicies"))?
        .items;
    let namespace_labels = if policies.iter().any(|p| p.spec.namespace_selector.is_some()) {
        Api::<Namespace>::all(ctx.client.clone())
            .get_opt(&ns)
            .await
            .map_err(Error::kube(format!("reading Namespace {ns}")))?
            .map(|n| n.labels().clone())
            .unwrap_or_default()
    } else {
        BTreeMap::new()
    };
    // The main call, then each follow-up (`spec.onChange`): every plugin the task runs
    // must be allowed, each as mutating as its own method.
    let calls = task
        .spec
        .http
        .iter()
        .map(|h| &h.call)
        .chain(&task.spec.on_change);
    for (i, call) in calls.enumerate() {
        let req = Request {
            namespace: &ns,
            namespace_labels: &namespace_labels,
            plugin: &call.api,
            method: &call.method,
            registry_secret: task
                .spec
                .registry_auth
                .as_ref()
                .filter(|_| i == 0)
                .map(|a| a.secret_name.as_str()),
            value_secrets: call
                .vars
                .iter()
                .filter_map(|v| v.value_from.as_ref()?.secret_key_ref.as_ref())
                .map(|r| r.name.as_str())
                .collect(),
            mutating: mutating.get(i).copied().unwrap_or(false),
            targets,
        };
        if let Err(denied) = evaluate(&policies, &req) {
            return Ok(Err(denied));
        }
    }
    Ok(Ok(()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use hostplug_api::policy::HostTaskPolicySpec;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;

    fn policy(name: &str, yaml: &str) -> HostTaskPolicy {
        let spec: HostTaskPolicySpec = match serde_yaml::from_str(yaml) {
            Ok(s) => s,
            Err(e) => panic!("bad test policy {name}: {e}"),
        };
        HostTaskPolicy::new(name, spec)
    }

    fn node(name: &str, cp: bool, labels: &[(&str, &str)]) -> NodeView {
        let mut l: BTreeMap<String, String> = labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        if cp {
            l.insert(
                "node-role.kubernetes.io/control-plane".into(),
                String::new(),
            );
        }
        NodeView {
            name: name.into(),
            labels: l,
            ..NodeView::default()
        }
    }

    fn req<'a>(
        ns: &'a str,
        labels: &'a BTreeMap<String, String>,
        plugin: &'a str,
        method: &'a str,
        mutating: bool,
        targets: &'a [NodeView],
    ) -> Request<'a> {
        Request {
            namespace: ns,
            namespace_labels: labels,
            plugin,
            method,
            registry_secret: None,
            value_secrets: Vec::new(),
            mutating,
            targets,
        }
    }

    #[test]
    fn values_from_secrets_need_the_secret_listed() {
        let none = BTreeMap::new();
        let n = [node("n1", false, &[])];
        let open = policy(
            "open",
            "{namespaces: [team-a], plugins: ['*'], allowMutating: true}",
        );
        let listed = policy(
            "listed",
            "{namespaces: [team-a], plugins: ['*'], allowMutating: true, secrets: [registry-password]}",
        );
        let mut r = req("team-a", &none, "etc-file", "write", true, &n);
        assert_eq!(evaluate(std::slice::from_ref(&open), &r), Ok("open"));
        r.value_secrets = vec!["registry-password"];
        let d = evaluate(std::slice::from_ref(&open), &r).expect_err("not listed");
        assert_eq!(d.missing, Missing::Secrets);
        assert!(d.to_string().contains("\"registry-password\""), "{d}");
        assert_eq!(evaluate(&[open, listed.clone()], &r), Ok("listed"));
        r.value_secrets = vec!["registry-password", "other"];
        let d = evaluate(&[listed], &r).expect_err("another Secret");
        assert!(d.to_string().contains("\"other\""), "{d}");
    }

    #[test]
    fn registry_auth_needs_the_secret_listed() {
        let none = BTreeMap::new();
        let n = [node("n1", false, &[])];
        let open = policy(
            "open",
            "{namespaces: [team-a], plugins: ['*'], allowMutating: true}",
        );
        let listed = policy(
            "listed",
            "{namespaces: [team-a], plugins: ['*'], allowMutating: true, registryAuthSecrets: [push-creds]}",
        );
        let mut r = req("team-a", &none, "docker-image", "push", true, &n);
        assert_eq!(evaluate(std::slice::from_ref(&open), &r), Ok("open"));
        r.registry_secret = Some("push-creds");
        let d = evaluate(std::slice::from_ref(&open), &r).expect_err("not listed");
        assert_eq!(d.missing, Missing::RegistryAuth);
        assert!(d.to_string().contains("\"push-creds\""), "{d}");
        assert_eq!(evaluate(&[open.clone(), listed.clone()], &r), Ok("listed"));
        r.registry_secret = Some("other");
        let d = evaluate(&[listed], &r).expect_err("another Secret");
        assert!(d.to_string().contains("registryAuthSecrets"), "{d}");
    }

    #[test]
    fn no_policy_denies_the_namespace() {
        let none = BTreeMap::new();
        let nodes = [node("node1", false, &[])];
        let d = evaluate(
            &[],
            &req("team-a", &none, "etc-file", "read", false, &nodes),
        );
        let d = d.err().map(|d| (d.missing, d.to_string()));
        assert!(
            matches!(&d, Some((Missing::Namespace, m)) if m.contains("\"team-a\"")),
            "{d:?}"
        );
        // A policy for another namespace does not help.
        let p = [policy("b", "namespaces: [team-b]\nplugins: ['*']")];
        let d = evaluate(&p, &req("team-a", &none, "etc-file", "read", false, &nodes));
        assert_eq!(d.err().map(|d| d.missing), Some(Missing::Namespace));
    }

    #[test]
    fn each_rule_is_named_when_missing() {
        let none = BTreeMap::new();
        let workers = [node("node1", false, &[]), node("node2", false, &[])];
        let with_master = [node("master", true, &[]), node("node1", false, &[])];
        let p = [policy(
            "team-a-read",
            "namespaces: [team-a]\nplugins: [etc-file]\nmethods: [read, ensure-line]",
        )];
        let cases = [
            (
                req("team-a", &none, "docker-image", "list", false, &workers),
                Missing::Plugin,
            ),
            (
                req("team-a", &none, "etc-file", "write", false, &workers),
                Missing::Method,
            ),
            (
                req("team-a", &none, "etc-file", "ensure-line", true, &workers),
                Missing::Mutating,
            ),
            (
                req("team-a", &none, "etc-file", "read", false, &with_master),
                Missing::Nodes,
            ),
        ];
        for (r, want) in cases {
            let got = evaluate(&p, &r);
            assert_eq!(got.as_ref().err().map(|d| d.missing), Some(want), "{got:?}");
            let msg = got.err().map(|d| d.to_string()).unwrap_or_default();
            assert!(msg.contains(want.as_str()), "{msg}");
            assert!(msg.contains("team-a-read"), "{msg}");
        }
        // Dry runs of mutating methods are not mutating.
        assert_eq!(
            evaluate(
                &p,
                &req("team-a", &none, "etc-file", "ensure-line", false, &workers)
            ),
            Ok("team-a-read")
        );
        assert_eq!(
            evaluate(
                &p,
                &req("team-a", &none, "etc-file", "read", false, &workers)
            ),
            Ok("team-a-read")
        );
    }

    #[test]
    fn the_furthest_policy_explains_and_any_one_allows() {
        let none = BTreeMap::new();
        let workers = [node("node1", false, &[])];
        let p = [
            policy(
                "plugins-only",
                "namespaces: [team-a]\nplugins: [docker-image]",
            ),
            policy("read", "namespaces: [team-a]\nplugins: [etc-file]"),
        ];
        let d = evaluate(
            &p,
            &req("team-a", &none, "etc-file", "ensure-line", true, &workers),
        );
        assert_eq!(d.err().map(|d| d.missing), Some(Missing::Mutating));
        let p2 = [
            p[1].clone(),
            policy(
                "write",
                "namespaces: [team-a]\nplugins: ['*']\nallowMutating: true",
            ),
        ];
        assert_eq!(
            evaluate(
                &p2,
                &req("team-a", &none, "etc-file", "ensure-line", true, &workers)
            ),
            Ok("write")
        );
    }

    #[test]
    fn nodes_must_stay_within_roles_and_selector() {
        let none = BTreeMap::new();
        let p = [policy(
            "pool-a",
            "namespaces: [team-a]\nplugins: ['*']\nnodes:\n  targetTypes: [All]\n  nodeSelector: {matchLabels: {pool: a}}",
        )];
        let in_a = [
            node("master", true, &[("pool", "a")]),
            node("n1", false, &[("pool", "a")]),
        ];
        assert!(evaluate(&p, &req("team-a", &none, "etc-file", "read", false, &in_a)).is_ok());
        let mixed = [
            node("n1", false, &[("pool", "a")]),
            node("n2", false, &[("pool", "b")]),
        ];
        let d = evaluate(&p, &req("team-a", &none, "etc-file", "read", false, &mixed));
        let d = d.err().map(|d| (d.missing, d.detail));
        assert!(
            matches!(&d, Some((Missing::Nodes, m)) if m.contains("\"n2\"") && m.contains("nodeSelector")),
            "{d:?}"
        );
        let masters = policy(
            "cp",
            "namespaces: [team-a]\nplugins: ['*']\nnodes: {targetTypes: [Master]}",
        );
        let d = evaluate(
            std::slice::from_ref(&masters),
            &req(
                "team-a",
                &none,
                "etc-file",
                "read",
                false,
                &[node("n1", false, &[])],
            ),
        );
        assert_eq!(d.err().map(|d| d.missing), Some(Missing::Nodes));
    }

    #[test]
    fn namespace_selector_matches_labels() {
        let mut p = policy("sel", "plugins: ['*']");
        p.spec.namespace_selector = Some(LabelSelector {
            match_labels: Some([("hostplug.dev/tasks".to_owned(), "read".to_owned())].into()),
            ..LabelSelector::default()
        });
        let labelled: BTreeMap<String, String> =
            [("hostplug.dev/tasks".to_owned(), "read".to_owned())].into();
        let none = BTreeMap::new();
        let nodes = [node("n1", false, &[])];
        let p = [p];
        assert!(evaluate(&p, &req("x", &labelled, "etc-file", "read", false, &nodes)).is_ok());
        assert_eq!(
            evaluate(&p, &req("x", &none, "etc-file", "read", false, &nodes))
                .err()
                .map(|d| d.missing),
            Some(Missing::Namespace)
        );
    }
}

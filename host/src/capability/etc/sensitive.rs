//! Sensitive paths under /etc: files a plugin with the `etc` capability still may not
//! touch unless its HostPlugin allows them by name (`EtcPolicy::sensitive_allow`), and
//! the call's path scope: the /etc paths its HostPlugin covers (`etcPaths`) and the
//! HostTaskPolicies allow (`spec.etc`), outside of which nothing is reached either.
//!
//! The host enforces this, outside the plugin, for every WASI filesystem call
//! (`wasi_fs.rs`) and for the `files` import (`files.rs`). This module only decides:
//! it matches paths below /etc against glob patterns and must never touch the file
//! system.
//!
//! A call's policy is the host's ([`EtcPolicy`], from its configuration) narrowed by the
//! call's scope ([`EtcPolicy::scoped`]): its covers added, its extra write denials added,
//! its exact sensitive allowances taken out of the deny lists.
//!
//! Patterns are absolute guest paths under `/etc`. A `*` matches any run of characters
//! inside one path component, `?` one character, and a component `**` any number of
//! components (none included), so `/etc/kubernetes/pki/**` covers the directory and
//! everything in it.

use std::path::{Component, Path};

use crate::capability::CapabilityError;

/// Never read, listed or written without an explicit allow: password hashes (and the
/// backups `shadow-`, `gshadow-` that `shadow-utils` keeps), the cluster's CA and
/// component keys, the kubeconfigs holding admin and component credentials, and the
/// node's SSH host keys (whoever holds them can impersonate the node).
///
/// For k3s and RKE2 (`/etc/rancher`): the admin kubeconfigs `k3s.yaml` / `rke2.yaml`
/// (cluster-admin), `registries.yaml` (registry credentials and client keys), the
/// configuration files `config.yaml` and `config.yaml.d/` (they hold the cluster join
/// `token`, `agent-token` and datastore credentials), and the node password
/// (`rancher/node/password`, with which a node proves it is the node it registered as).
/// For containerd and docker: the registry client keys in `certs.d/<host>/` (`*.key`;
/// one level, the layout both use, so renames beside them, such as an atomic replace of
/// `hosts.toml`, stay possible).
/// Kubernetes encryption-at-rest configurations (their `secret:` fields decrypt every
/// Secret in etcd), under the names kubeadm setups and the Kubernetes docs use
/// (`/etc/kubernetes/enc/`, `/etc/kubernetes/encryption*`; RKE2 and k3s keep theirs
/// under /var/lib/rancher, outside /etc). Elsewhere below /etc/kubernetes they are not
/// covered: a pattern that could match anywhere below a directory makes every directory
/// there unmovable; an administrator adds such a path to the worker's deny list.
pub const DEFAULT_DENY: &[&str] = &[
    "/etc/shadow",
    "/etc/shadow-",
    "/etc/gshadow",
    "/etc/gshadow-",
    "/etc/kubernetes/pki/**",
    "/etc/kubernetes/*.conf",
    "/etc/ssh/ssh_host_*",
    "/etc/rancher/k3s/k3s.yaml",
    "/etc/rancher/rke2/rke2.yaml",
    "/etc/rancher/k3s/registries.yaml",
    "/etc/rancher/rke2/registries.yaml",
    "/etc/rancher/k3s/config.yaml",
    "/etc/rancher/rke2/config.yaml",
    "/etc/rancher/k3s/config.yaml.d/**",
    "/etc/rancher/rke2/config.yaml.d/**",
    "/etc/rancher/node/password",
    "/etc/containerd/certs.d/*/*.key",
    "/etc/docker/certs.d/*/*.key",
    "/etc/kubernetes/encryption*",
    "/etc/kubernetes/enc/**",
];

/// Readable but never written without an explicit allow: a file in the kubelet's
/// static Pod directory becomes a Pod with whatever privileges it asks for (kubeadm's
/// `/etc/kubernetes/manifests`; k3s and RKE2 keep theirs under /var/lib/rancher, outside
/// /etc).
pub const DEFAULT_DENY_WRITE: &[&str] = &["/etc/kubernetes/manifests/**"];

/// What a call does to a path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Access {
    /// Reads content, attributes, a link or a directory listing.
    Read,
    /// Creates, changes, renames, links or removes.
    Write,
}

/// The `etc` capability's host policy: which paths under /etc stay out of reach even
/// with the capability granted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EtcPolicy {
    /// Patterns refused for any access. Default: [`DEFAULT_DENY`].
    pub deny: Vec<String>,
    /// Patterns refused for writes. Default: [`DEFAULT_DENY_WRITE`].
    pub deny_write: Vec<String>,
    /// Patterns taken back out of both deny lists: what an administrator allows one
    /// plugin on purpose (e.g. `/etc/kubernetes/manifests/**` for a plugin that manages
    /// static Pods). Empty by default.
    pub sensitive_allow: Vec<String>,
    /// Lists of patterns that each must cover a path for it to be read (or lead to a
    /// covered path: a directory on the way can be opened, and lists only those
    /// entries). Empty by default: no narrowing. Set per call ([`Self::scoped`]).
    pub read_cover: Vec<Vec<String>>,
    /// Lists of patterns that each must cover a path for it to be written. Empty by
    /// default.
    pub write_cover: Vec<Vec<String>>,
}

impl Default for EtcPolicy {
    fn default() -> Self {
        Self {
            deny: DEFAULT_DENY.iter().map(|s| (*s).to_owned()).collect(),
            deny_write: DEFAULT_DENY_WRITE.iter().map(|s| (*s).to_owned()).collect(),
            sensitive_allow: Vec::new(),
            read_cover: Vec::new(),
            write_cover: Vec::new(),
        }
    }
}

/// `rel` (a pattern relative to /etc, as HostPlugins and policies write them) as a host
/// pattern.
fn absolute(rel: &str) -> String {
    format!("/etc/{rel}")
}

/// Whether some pattern of `list` covers `parts`.
fn covered(list: &[String], parts: &[String]) -> bool {
    list.iter().any(|p| matches_pattern(p, parts))
}

/// Whether some pattern of `list` covers `parts` or something below it (a directory on
/// the way to a covered path).
fn on_the_way(list: &[String], parts: &[String]) -> bool {
    list.iter().any(|p| {
        pattern_components(p)
            .is_ok_and(|pat| match_components(&pat, parts) || could_match_below(&pat, parts))
    })
}

/// Whether some pattern of `list` covers `parts` and everything below it (`dir/**`).
fn covers_tree(list: &[String], parts: &[String]) -> bool {
    list.iter().any(|p| {
        pattern_components(p).is_ok_and(|pat| {
            (0..=parts.len()).any(|n| {
                pat.len() == n + 1 && pat[n] == "**" && match_components(&pat[..n], &parts[..n])
            })
        })
    })
}

impl EtcPolicy {
    /// Checks that every pattern is an absolute path under `/etc` without `.` or `..`
    /// components. The error names the field and the pattern.
    pub fn validate(&self) -> Result<(), String> {
        for (field, patterns) in [
            ("deny", &self.deny),
            ("deny_write", &self.deny_write),
            ("sensitive_allow", &self.sensitive_allow),
        ] {
            for p in patterns {
                pattern_components(p).map_err(|why| format!("etc policy {field}: {p:?}: {why}"))?;
            }
        }
        Ok(())
    }

    /// This policy narrowed by one call's `scope` (relative patterns, validated by the
    /// operator and checked again here): its covers and write denials added, its exact
    /// sensitive allowances (no wildcards) allowed. `None`: this policy as it is.
    pub fn scoped(&self, scope: Option<&hostplug_api::plugin::EtcScope>) -> Result<Self, String> {
        let mut policy = self.clone();
        let Some(scope) = scope else {
            return Ok(policy);
        };
        let check = |field: &str, list: &[String], exact: bool| {
            for p in list {
                hostplug_api::plugin::check_etc_pattern(p, exact)
                    .map_err(|why| format!("the call's etc scope {field}: {why}"))?;
            }
            Ok::<_, String>(list.iter().map(|p| absolute(p)).collect::<Vec<_>>())
        };
        for list in &scope.read {
            policy.read_cover.push(check("read", list, false)?);
        }
        for list in &scope.write {
            policy.write_cover.push(check("write", list, false)?);
        }
        policy
            .deny_write
            .extend(check("denyWrite", &scope.deny_write, false)?);
        policy
            .sensitive_allow
            .extend(check("allowSensitive", &scope.allow_sensitive, true)?);
        Ok(policy)
    }

    /// Whether `rel` (a path relative to /etc, already normalised) may be used for
    /// `access`. The error is what the plugin gets: [`CapabilityError::Denied`].
    pub(crate) fn check(&self, rel: &Path, access: Access) -> Result<(), CapabilityError> {
        let parts = rel_components(rel);
        let hit = |patterns: &[String]| patterns.iter().any(|p| matches_pattern(p, &parts));
        let denied = hit(&self.deny) || (access == Access::Write && hit(&self.deny_write));
        if denied && !hit(&self.sensitive_allow) {
            return Err(refusal(rel));
        }
        self.check_cover(&parts, rel, access)
    }

    /// The scope part of [`check`](Self::check): every cover list of `access` covers
    /// `parts` (for reads, or leads to what it covers).
    fn check_cover(
        &self,
        parts: &[String],
        rel: &Path,
        access: Access,
    ) -> Result<(), CapabilityError> {
        let inside = match access {
            Access::Read => self.read_cover.iter().all(|l| on_the_way(l, parts)),
            Access::Write => self.write_cover.iter().all(|l| covered(l, parts)),
        };
        if inside {
            Ok(())
        } else {
            Err(outside(rel, access))
        }
    }

    /// Whether a directory listing shows the entry `rel`: what the call may read (the
    /// covered paths and the directories on the way to them). Names the sensitive-path
    /// list refuses stay listed, as without a scope: the list hides contents, not names.
    pub(crate) fn lists(&self, rel: &Path) -> bool {
        let parts = rel_components(rel);
        self.read_cover.iter().all(|l| on_the_way(l, &parts))
    }

    /// Whether this policy narrows reads at all (directory listings are filtered then).
    pub(crate) fn narrows_reads(&self) -> bool {
        !self.read_cover.is_empty()
    }

    /// Whether `rel` is covered by a deny pattern at all, allowed or not: such a path's
    /// bytes are never copied into a revert record (`record.rs`).
    pub(crate) fn is_sensitive(&self, rel: &Path) -> bool {
        let parts = rel_components(rel);
        self.deny
            .iter()
            .chain(&self.deny_write)
            .any(|p| matches_pattern(p, &parts))
    }

    /// Whether a rename or removal of the directory `rel` would move or drop something
    /// a deny pattern covers (renaming `/etc/kubernetes` would make `pki/` readable under
    /// a new name). A pattern that matches `rel` itself was already decided by
    /// [`check`](Self::check) (an allowed `manifests/**` covers what is below too);
    /// otherwise allows are not consulted: moving a protected tree is never needed.
    ///
    /// A directory (`dir`) moved or removed takes everything below it along: with a
    /// scope, a pattern must cover the whole tree (`dir/**`).
    pub(crate) fn check_tree(&self, rel: &Path, dir: bool) -> Result<(), CapabilityError> {
        self.check(rel, Access::Write)?;
        let parts = rel_components(rel);
        // A file holds nothing below it.
        if !dir {
            return Ok(());
        }
        if !self.write_cover.iter().all(|l| covers_tree(l, &parts)) {
            return Err(CapabilityError::denied(format!(
                "{}: the directory holds paths outside the /etc paths this call may write; \
                 the host refuses to move or remove it",
                guest(rel)
            )));
        }
        let below = self.deny.iter().chain(&self.deny_write).any(|p| {
            pattern_components(p)
                .is_ok_and(|pat| !match_components(&pat, &parts) && could_match_below(&pat, &parts))
        });
        if below {
            return Err(CapabilityError::denied(format!(
                "{}: holds sensitive paths; the host refuses to move or remove it",
                guest(rel)
            )));
        }
        Ok(())
    }
}

/// What a refused plugin gets.
pub(crate) fn refusal(rel: &Path) -> CapabilityError {
    CapabilityError::denied(format!(
        "{} is a sensitive path; the host refuses it unless the plugin's HostPlugin allows it explicitly",
        guest(rel)
    ))
}

/// What a plugin gets for a path outside its call's scope.
pub(crate) fn outside(rel: &Path, access: Access) -> CapabilityError {
    let what = match access {
        Access::Read => "read",
        Access::Write => "write",
    };
    CapabilityError::denied(format!(
        "{} is outside the /etc paths this call may {what} (its HostPlugin's \
         spec.capabilities.etcPaths and the HostTaskPolicy's spec.etc)",
        guest(rel)
    ))
}

/// `rel` as the guest sees it.
pub(crate) fn guest(rel: &Path) -> String {
    if rel.as_os_str().is_empty() {
        "/etc".to_owned()
    } else {
        format!("/etc/{}", rel.display())
    }
}

fn rel_components(rel: &Path) -> Vec<String> {
    rel.components()
        .filter_map(|c| match c {
            Component::Normal(s) => Some(s.to_string_lossy().into_owned()),
            _ => None,
        })
        .collect()
}

/// The components of a pattern below `/etc`.
fn pattern_components(pattern: &str) -> Result<Vec<&str>, &'static str> {
    let rest = pattern
        .strip_prefix("/etc/")
        .ok_or("not an absolute path under /etc")?;
    let parts: Vec<&str> = rest.split('/').collect();
    if parts
        .iter()
        .any(|p| p.is_empty() || *p == "." || *p == "..")
    {
        return Err("has an empty, '.' or '..' component");
    }
    Ok(parts)
}

fn matches_pattern(pattern: &str, path: &[String]) -> bool {
    pattern_components(pattern).is_ok_and(|pat| match_components(&pat, path))
}

fn match_components(pattern: &[&str], path: &[String]) -> bool {
    match pattern.split_first() {
        None => path.is_empty(),
        Some((&"**", rest)) => (0..=path.len()).any(|n| match_components(rest, &path[n..])),
        Some((p, rest)) => path.split_first().is_some_and(|(s, path_rest)| {
            glob(p.as_bytes(), s.as_bytes()) && match_components(rest, path_rest)
        }),
    }
}

/// Whether some path strictly below `path` could match `pattern`.
fn could_match_below(pattern: &[&str], path: &[String]) -> bool {
    match (pattern.split_first(), path.split_first()) {
        (Some((&"**", _)), _) => true,
        (Some(_), None) => true,
        (None, _) => false,
        (Some((p, rest)), Some((s, path_rest))) => {
            glob(p.as_bytes(), s.as_bytes()) && could_match_below(rest, path_rest)
        }
    }
}

/// `*` and `?` wildcards inside one component.
fn glob(pattern: &[u8], s: &[u8]) -> bool {
    match pattern.split_first() {
        None => s.is_empty(),
        Some((b'*', rest)) => (0..=s.len()).any(|n| glob(rest, &s[n..])),
        Some((b'?', rest)) => !s.is_empty() && glob(rest, &s[1..]),
        Some((c, rest)) => s.first() == Some(c) && glob(rest, &s[1..]),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(p: &EtcPolicy, rel: &str, access: Access) -> bool {
        p.check(Path::new(rel), access).is_ok()
    }

    #[test]
    fn default_deny_list() {
        let p = EtcPolicy::default();
        p.validate().expect("valid");
        for rel in [
            "shadow",
            "gshadow",
            "shadow-",
            "kubernetes/pki",
            "kubernetes/pki/ca.key",
            "kubernetes/pki/etcd/server.key",
            "kubernetes/admin.conf",
            "kubernetes/kubelet.conf",
            "ssh/ssh_host_ed25519_key",
            "ssh/ssh_host_rsa_key.pub",
            "rancher/k3s/k3s.yaml",
            "rancher/rke2/rke2.yaml",
            "rancher/k3s/registries.yaml",
            "rancher/rke2/registries.yaml",
            "rancher/k3s/config.yaml",
            "rancher/rke2/config.yaml.d/50-token.yaml",
            "rancher/node/password",
            "containerd/certs.d/registry.example:5000/client.key",
            "docker/certs.d/registry.example/client.key",
            "kubernetes/enc/enc.yaml",
            "kubernetes/encryption-config.yaml",
        ] {
            assert!(!check(&p, rel, Access::Read), "{rel} read");
            assert!(!check(&p, rel, Access::Write), "{rel} write");
        }
        for rel in ["kubernetes/manifests/x.yaml", "kubernetes/manifests"] {
            assert!(check(&p, rel, Access::Read), "{rel} read");
            assert!(!check(&p, rel, Access::Write), "{rel} write");
        }
        for rel in [
            "hosts",
            "passwd",
            "shadow.d/x",
            "kubernetes",
            "kubernetes/sub/admin.conf",
            "ssh/sshd_config",
            "rancher/k3s/k3s.yaml.bak.d/x",
            "containerd/config.toml",
            "containerd/certs.d/registry.example/hosts.toml",
            "containerd/certs.d/registry.example/client.cert",
            "docker/certs.d/registry.example/ca.crt",
            "",
        ] {
            assert!(check(&p, rel, Access::Write), "{rel}");
        }
        let e = p
            .check(Path::new("shadow"), Access::Read)
            .expect_err("refused");
        assert!(
            e.to_string()
                .starts_with("denied: /etc/shadow is a sensitive path"),
            "{e}"
        );
    }

    #[test]
    fn allows_override_and_trees_stay_protected() {
        let p = EtcPolicy {
            sensitive_allow: vec!["/etc/kubernetes/manifests/*.yaml".to_owned()],
            ..EtcPolicy::default()
        };
        assert!(check(&p, "kubernetes/manifests/x.yaml", Access::Write));
        assert!(!check(&p, "kubernetes/manifests/x.json", Access::Write));
        assert!(!check(&p, "shadow", Access::Read));
        for tree in [
            "kubernetes",
            "kubernetes/manifests",
            "ssh",
            "kubernetes/pki/etcd",
        ] {
            assert!(p.check_tree(Path::new(tree), true).is_err(), "{tree}");
        }
        let manifests = EtcPolicy {
            sensitive_allow: vec!["/etc/kubernetes/manifests/**".to_owned()],
            ..EtcPolicy::default()
        };
        assert!(
            manifests
                .check_tree(Path::new("kubernetes/manifests/.x.tmp"), true)
                .is_ok()
        );
        assert!(manifests.check_tree(Path::new("kubernetes"), true).is_err());
        assert!(
            EtcPolicy::default()
                .check_tree(Path::new("kubernetes/manifests/x"), true)
                .is_err()
        );
        for tree in ["default", "kubernetes/addons", "ssh/sshd_config.d"] {
            assert!(p.check_tree(Path::new(tree), true).is_ok(), "{tree}");
        }
        // A file beside sensitive ones moves (an atomic replace of hosts.toml); the
        // directory holding client keys does not.
        let tmp = "containerd/certs.d/registry.example/.hosts.toml.tmp";
        assert!(p.check_tree(Path::new(tmp), false).is_ok());
        assert!(
            p.check_tree(Path::new("containerd/certs.d/registry.example"), true)
                .is_err()
        );
    }

    #[test]
    fn patterns_are_validated() {
        for bad in ["shadow", "/var/x", "/etc/../x", "/etc//x", "/etc/"] {
            let p = EtcPolicy {
                sensitive_allow: vec![bad.to_owned()],
                ..EtcPolicy::default()
            };
            let e = p.validate().expect_err(bad);
            assert!(e.contains("sensitive_allow"), "{e}");
        }
    }
}

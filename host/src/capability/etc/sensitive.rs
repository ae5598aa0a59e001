//! Sensitive paths under /etc: files a plugin with the `etc` capability still may not
//! touch unless its HostPlugin allows them by name (`EtcPolicy::sensitive_allow`).
//!
//! The host enforces this, outside the plugin, for every WASI filesystem call
//! (`wasi_fs.rs`) and for the `files` import (`files.rs`). This module only decides:
//! it matches paths below /etc against glob patterns and must never touch the file
//! system.
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
pub const DEFAULT_DENY: &[&str] = &[
    "/etc/shadow",
    "/etc/shadow-",
    "/etc/gshadow",
    "/etc/gshadow-",
    "/etc/kubernetes/pki/**",
    "/etc/kubernetes/*.conf",
    "/etc/ssh/ssh_host_*",
];

/// Readable but never written without an explicit allow: a file in the kubelet's
/// static Pod directory becomes a Pod with whatever privileges it asks for.
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
}

impl Default for EtcPolicy {
    fn default() -> Self {
        Self {
            deny: DEFAULT_DENY.iter().map(|s| (*s).to_owned()).collect(),
            deny_write: DEFAULT_DENY_WRITE.iter().map(|s| (*s).to_owned()).collect(),
            sensitive_allow: Vec::new(),
        }
    }
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

    /// Whether `rel` (a path relative to /etc, already normalised) may be used for
    /// `access`. The error is what the plugin gets: [`CapabilityError::Denied`].
    pub(crate) fn check(&self, rel: &Path, access: Access) -> Result<(), CapabilityError> {
        let parts = rel_components(rel);
        let hit = |patterns: &[String]| patterns.iter().any(|p| matches_pattern(p, &parts));
        let denied = hit(&self.deny) || (access == Access::Write && hit(&self.deny_write));
        if denied && !hit(&self.sensitive_allow) {
            return Err(refusal(rel));
        }
        Ok(())
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
    pub(crate) fn check_tree(&self, rel: &Path) -> Result<(), CapabilityError> {
        self.check(rel, Access::Write)?;
        let parts = rel_components(rel);
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
            assert!(p.check_tree(Path::new(tree)).is_err(), "{tree}");
        }
        let manifests = EtcPolicy {
            sensitive_allow: vec!["/etc/kubernetes/manifests/**".to_owned()],
            ..EtcPolicy::default()
        };
        assert!(
            manifests
                .check_tree(Path::new("kubernetes/manifests/.x.tmp"))
                .is_ok()
        );
        assert!(manifests.check_tree(Path::new("kubernetes")).is_err());
        assert!(
            EtcPolicy::default()
                .check_tree(Path::new("kubernetes/manifests/x"))
                .is_err()
        );
        for tree in ["default", "kubernetes/addons", "ssh/sshd_config.d"] {
            assert!(p.check_tree(Path::new(tree)).is_ok(), "{tree}");
        }
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

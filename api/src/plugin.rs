//! What a plugin is and may do: its module's [`Digest`], its [`Capabilities`] (with
//! [`EtcAccess`]) and what it says about itself ([`PluginInfo`], [`MethodInfo`]).
//!
//! These appear in the HostPlugin resource (spec and status), in the worker's settings
//! and routes, in the host's grants and in the console. Each has exactly one text form,
//! given by its `Display` and `FromStr`. Nothing here decides whether a module is trusted
//! or grants anything: callers compare digests and build grants from these values.

use std::fmt;
use std::str::FromStr;

use schemars::JsonSchema;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use sha2::{Digest as _, Sha256};

use crate::Error;
pub use crate::systemd::{SystemdAccess, SystemdAction, SystemdCapability};

/// The sha256 digest of a module's bytes, the one key by which modules are pinned,
/// cached and addressed (HostPlugin `spec.sha256`, the worker's `/v1/plugins/{sha256}`
/// route, the on-disk cache).
///
/// Displays as `sha256:<64 lowercase hex>`; parses from that form or from the bare hex,
/// 64 hex digits of either case.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Digest([u8; 32]);

impl Digest {
    /// Prefix of the display form.
    pub const PREFIX: &'static str = "sha256:";

    /// The digest of `bytes`.
    pub fn of(bytes: &[u8]) -> Self {
        Self(Sha256::digest(bytes).into())
    }

    /// The 64 lowercase hex characters, without the `sha256:` prefix.
    pub fn hex(&self) -> String {
        hex::encode(self.0)
    }

    /// The raw 32 bytes.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }
}

impl FromStr for Digest {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self, Error> {
        let hex_part = s.strip_prefix(Self::PREFIX).unwrap_or(s);
        let invalid = || Error::InvalidDigest {
            input: s.chars().take(80).collect(),
        };
        if hex_part.len() != 64 {
            return Err(invalid());
        }
        let mut out = [0u8; 32];
        hex::decode_to_slice(hex_part, &mut out).map_err(|_| invalid())?;
        Ok(Self(out))
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}{}", Self::PREFIX, self.hex())
    }
}

impl fmt::Debug for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl Serialize for Digest {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Digest {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let s = String::deserialize(deserializer)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// How a plugin may reach the node's /etc (HostPlugin `spec.capabilities.etc`, the
/// worker's `HOSTPLUG_ETC_ACCESS`, the host's grants). Text form: `none`, `read`, `write`.
#[derive(
    Serialize,
    Deserialize,
    Clone,
    Copy,
    Debug,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    JsonSchema,
    Default,
)]
#[serde(rename_all = "lowercase")]
pub enum EtcAccess {
    /// /etc is not mounted. (The variants are in order of increasing access, which
    /// `Ord` follows.)
    #[default]
    None,
    /// /etc is mounted and preopened read-only.
    Read,
    /// /etc is mounted read-write (read-only for dry runs).
    Write,
}

impl EtcAccess {
    /// Every value, in order of increasing access.
    pub const ALL: [EtcAccess; 3] = [Self::None, Self::Read, Self::Write];

    /// The lowercase name (`none`, `read`, `write`), as serialised.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::None => "none",
            Self::Read => "read",
            Self::Write => "write",
        }
    }

    /// The access one invocation gets: a dry run never writes, so `write` becomes `read`.
    pub const fn for_run(self, dry_run: bool) -> Self {
        match (self, dry_run) {
            (Self::Write, true) => Self::Read,
            (access, _) => access,
        }
    }
}

/// What a plugin is allowed to touch on the node.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema, Default)]
#[serde(rename_all = "camelCase")]
pub struct Capabilities {
    /// Access to the node's /etc.
    #[serde(default)]
    pub etc: EtcAccess,
    /// Whether the node's Docker socket is mounted and the docker import works.
    #[serde(default)]
    pub docker: bool,
    /// Whether the plugin may receive registry credentials (its `registry-auth` import)
    /// from a task's `spec.registryAuth` Secret. Without it a task naming a Secret is
    /// refused, and the import answers nothing.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub registry_auth: bool,
    /// Whether the node's containerd socket is mounted and the containerd import (the CRI
    /// image service: list, inspect, pull, remove images; read which images containers
    /// use) works.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub containerd: bool,
    /// The node's systemd over D-Bus (the system bus socket is mounted and the `systemd`
    /// import works): which units (name patterns) and which actions. Absent: no bus
    /// socket, every `systemd` call refused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub systemd: Option<SystemdCapability>,
    /// The /etc paths the `etc` capability covers, as globs relative to /etc
    /// (`chrony.conf`, `chrony/**`; `*` and `?` inside one component, `**` any number of
    /// components). Empty (the default): all of /etc outside the host's sensitive paths.
    /// The host enforces them on every path the plugin opens, creates, renames or
    /// removes, where it really is (links and `..` resolved); directories on the way to
    /// a covered path can be opened and list only what leads to covered paths.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = MAX_ETC_PATHS))]
    pub etc_paths: Vec<String>,
    /// Sensitive paths (on the host's deny list, e.g. `rancher/k3s/k3s.yaml`) this
    /// plugin may use anyway: each one exact path relative to /etc, no wildcards, so an
    /// allowance never widens to the whole list. Still subject to `etcPaths` and to
    /// HostTaskPolicies.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = MAX_ETC_PATHS))]
    pub etc_allow_sensitive: Vec<String>,
}

/// Most patterns in one /etc path list (`etcPaths`, `etcAllowSensitive`, a policy's
/// `etc.paths`/`etc.writePaths`): 64. A plugin covers a handful of files; the host checks
/// every path a plugin touches against each list, so the bound keeps that cheap.
pub const MAX_ETC_PATHS: usize = 64;

/// Longest /etc path pattern: 256 bytes, far above any real configuration path.
pub const MAX_ETC_PATH_BYTES: usize = 256;

/// Checks one /etc path pattern (relative to /etc, `/`-separated, no empty, `.` or `..`
/// component, `**` only as a whole component); `exact` also refuses wildcards. The
/// error says what is wrong, for `field: …`.
pub fn check_etc_pattern(pattern: &str, exact: bool) -> Result<(), String> {
    if pattern.is_empty() {
        return Err("is empty".into());
    }
    if pattern.len() > MAX_ETC_PATH_BYTES {
        return Err(format!("is longer than {MAX_ETC_PATH_BYTES} bytes"));
    }
    if pattern.starts_with('/') {
        return Err(format!(
            "{pattern:?} is absolute; write it relative to /etc (e.g. {:?})",
            pattern
                .trim_start_matches('/')
                .strip_prefix("etc/")
                .unwrap_or("chrony.conf")
        ));
    }
    if pattern.chars().any(char::is_control) {
        return Err(format!("{pattern:?} has a control character"));
    }
    for part in pattern.split('/') {
        if part.is_empty() || part == "." || part == ".." {
            return Err(format!("{pattern:?} has an empty, '.' or '..' component"));
        }
        if exact && part.contains(['*', '?']) {
            return Err(format!(
                "{pattern:?} has a wildcard; name one exact path (an allowance never \
                 covers more than the file it names)"
            ));
        }
        if part.contains("**") && part != "**" {
            return Err(format!(
                "{pattern:?}: '**' must be a whole path component (e.g. \"chrony/**\")"
            ));
        }
    }
    Ok(())
}

/// Checks an /etc path list under `field` (e.g. `spec.capabilities.etcPaths`): at most
/// [`MAX_ETC_PATHS`] patterns, each valid; the error names the entry
/// (`spec.capabilities.etcPaths[0]`).
pub fn check_etc_patterns(
    field: &str,
    patterns: &[String],
    exact: bool,
) -> Result<(), crate::call::Invalid> {
    if patterns.len() > MAX_ETC_PATHS {
        return Err(crate::call::Invalid::new(
            field,
            format!("has {} entries; at most {MAX_ETC_PATHS}", patterns.len()),
        ));
    }
    for (i, p) in patterns.iter().enumerate() {
        check_etc_pattern(p, exact)
            .map_err(|why| crate::call::Invalid::new(format!("{field}[{i}]"), why))?;
    }
    Ok(())
}

impl Capabilities {
    /// Checks what cannot be said in the CRD's schema alone; the error names the field
    /// under `field` (e.g. `spec.capabilities`).
    pub fn validate(&self, field: &str) -> Result<(), crate::call::Invalid> {
        if let Some(systemd) = &self.systemd {
            systemd.validate(&format!("{field}.systemd"))?;
        }
        check_etc_patterns(&format!("{field}.etcPaths"), &self.etc_paths, false)?;
        check_etc_patterns(
            &format!("{field}.etcAllowSensitive"),
            &self.etc_allow_sensitive,
            true,
        )?;
        if self.etc == EtcAccess::None
            && !(self.etc_paths.is_empty() && self.etc_allow_sensitive.is_empty())
        {
            let which = if self.etc_paths.is_empty() {
                "etcAllowSensitive"
            } else {
                "etcPaths"
            };
            return Err(crate::call::Invalid::new(
                format!("{field}.{which}"),
                "is set but etc is none; declare etc: read or etc: write",
            ));
        }
        Ok(())
    }
}

/// The /etc paths one call may reach, beyond its [`EtcAccess`]: computed by the
/// operator in one place ([`EtcScope::for_call`]) from the HostPlugin's declaration and
/// the HostTaskPolicies that allow the call, sent with the call, and enforced by the
/// host on every path the plugin uses, together with the host's sensitive-path list.
///
/// Patterns are relative to /etc, as in `spec.capabilities.etcPaths`. A path may be read
/// when every list of `read` covers it (or leads to something it covers: directories on
/// the way), written when every list of `write` covers it; no list: no narrowing.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "camelCase")]
pub struct EtcScope {
    /// Lists that each must cover a path for it to be read.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub read: Vec<Vec<String>>,
    /// Lists that each must cover a path for it to be written (created, changed,
    /// renamed, removed).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub write: Vec<Vec<String>>,
    /// Patterns never written in this call, on top of the host's own list (a policy's
    /// `excludeRootEquivalent`: [`crate::policy::ROOT_EQUIVALENT_WRITES`]).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub deny_write: Vec<String>,
    /// Exact sensitive paths this call may use anyway (the HostPlugin's
    /// `etcAllowSensitive`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allow_sensitive: Vec<String>,
}

impl EtcScope {
    /// The scope of one call of a plugin with `caps` that `policy` allows (`None`: no
    /// policy applies, e.g. the operator's own namespace). The only place that combines
    /// them.
    pub fn for_call(caps: &Capabilities, policy: Option<&crate::policy::EtcPathGrant>) -> Self {
        let mut scope = Self::default();
        if !caps.etc_paths.is_empty() {
            scope.read.push(caps.etc_paths.clone());
            scope.write.push(caps.etc_paths.clone());
        }
        if let Some(grant) = policy {
            if let Some(read) = &grant.read {
                scope.read.push(read.clone());
            }
            if let Some(write) = &grant.write {
                scope.write.push(write.clone());
            }
            if grant.exclude_root_equivalent {
                scope.deny_write = crate::policy::ROOT_EQUIVALENT_WRITES
                    .iter()
                    .map(|s| (*s).to_owned())
                    .collect();
            }
        }
        scope.allow_sensitive = caps.etc_allow_sensitive.clone();
        scope
    }

    /// True when this scope narrows nothing and allows nothing extra.
    pub fn is_unrestricted(&self) -> bool {
        *self == Self::default()
    }
}

text_form!(EtcAccess, "etc access", "none, read or write");

impl fmt::Display for Capabilities {
    /// `etc=<access>,docker=<bool>`, e.g. `etc=write,docker=false`, then
    /// `,containerd=true`, `,registryAuth=true` and `,systemd=<units>:<actions>` when
    /// declared.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "etc={},docker={}", self.etc, self.docker)?;
        if self.containerd {
            f.write_str(",containerd=true")?;
        }
        if self.registry_auth {
            f.write_str(",registryAuth=true")?;
        }
        if let Some(systemd) = &self.systemd {
            write!(f, ",systemd={systemd}")?;
        }
        if !self.etc_paths.is_empty() {
            write!(f, ",etcPaths={}", self.etc_paths.join("|"))?;
        }
        if !self.etc_allow_sensitive.is_empty() {
            write!(
                f,
                ",etcAllowSensitive={}",
                self.etc_allow_sensitive.join("|")
            )?;
        }
        Ok(())
    }
}

impl FromStr for Capabilities {
    type Err = Error;

    /// The [`Display`](fmt::Display) form; either part may be left out (default: none).
    fn from_str(s: &str) -> Result<Self, Error> {
        let invalid = || Error::InvalidValue {
            what: "capabilities",
            input: s.chars().take(80).collect(),
            expected: "etc=<none|read|write>,docker=<true|false>[,containerd=<true|false>][,registryAuth=<true|false>][,systemd=<unit>|…:<action>|…][,etcPaths=<glob>|…][,etcAllowSensitive=<path>|…]",
        };
        let mut caps = Self::default();
        for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            match part.split_once('=') {
                Some(("etc", v)) => caps.etc = v.parse()?,
                Some(("docker", v)) => caps.docker = v.parse().map_err(|_| invalid())?,
                Some(("registryAuth", v)) => {
                    caps.registry_auth = v.parse().map_err(|_| invalid())?;
                }
                Some(("containerd", v)) => caps.containerd = v.parse().map_err(|_| invalid())?,
                Some(("systemd", v)) => caps.systemd = Some(v.parse()?),
                Some(("etcPaths", v)) => caps.etc_paths = v.split('|').map(String::from).collect(),
                Some(("etcAllowSensitive", v)) => {
                    caps.etc_allow_sensitive = v.split('|').map(String::from).collect();
                }
                _ => return Err(invalid()),
            }
        }
        Ok(caps)
    }
}

/// One operation of a plugin, as its `describe` export reports it.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema, Default)]
#[serde(rename_all = "camelCase")]
pub struct MethodInfo {
    /// Operation name, used in `HostTask.spec.http.method`.
    pub name: String,
    /// One sentence for people.
    #[serde(default)]
    pub description: String,
    /// Whether the operation can change the node.
    #[serde(default)]
    pub mutates: bool,
    /// JSON Schema of the parameters.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "crate::crd::any_json")]
    pub params_schema: Option<serde_json::Value>,
}

impl fmt::Display for MethodInfo {
    /// `name`, with ` (mutates)` when the operation can change the node.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name)?;
        if self.mutates {
            f.write_str(" (mutates)")?;
        }
        Ok(())
    }
}

/// What a plugin says about itself.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema, Default)]
#[serde(rename_all = "camelCase")]
pub struct PluginInfo {
    /// The plugin's own name.
    #[serde(default)]
    pub name: String,
    /// Semantic version.
    #[serde(default)]
    pub version: String,
    /// What the plugin is for.
    #[serde(default)]
    pub description: String,
    /// Its operations.
    #[serde(default)]
    pub methods: Vec<MethodInfo>,
}

impl PluginInfo {
    /// The method called `name`, if the plugin has one.
    pub fn method(&self, name: &str) -> Option<&MethodInfo> {
        self.methods.iter().find(|m| m.name == name)
    }
}

impl fmt::Display for PluginInfo {
    /// `name version: N methods`, as the HostPlugin's status message says it.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} {}: {} methods",
            self.name,
            self.version,
            self.methods.len()
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Each bad /etc path names its field and entry.
    #[test]
    fn etc_paths_are_validated_naming_the_entry() {
        let caps = |paths: &[&str], sensitive: &[&str]| Capabilities {
            etc: EtcAccess::Read,
            etc_paths: paths.iter().map(|s| (*s).to_owned()).collect(),
            etc_allow_sensitive: sensitive.iter().map(|s| (*s).to_owned()).collect(),
            ..Capabilities::default()
        };
        let field = |c: Capabilities| c.validate("spec.capabilities").err().map(|e| e.field);
        assert_eq!(field(caps(&["chrony.conf", "chrony/**"], &[])), None);
        for (bad, at) in [
            (&["/etc/chrony.conf"][..], "spec.capabilities.etcPaths[0]"),
            (&["ok", "a/../shadow"], "spec.capabilities.etcPaths[1]"),
            (&["a//b"], "spec.capabilities.etcPaths[0]"),
            (&["a**"], "spec.capabilities.etcPaths[0]"),
            (&[""], "spec.capabilities.etcPaths[0]"),
        ] {
            assert_eq!(field(caps(bad, &[])), Some(at.to_owned()), "{bad:?}");
        }
        let e = caps(&["/etc/chrony.conf"], &[])
            .validate("spec.capabilities")
            .err()
            .map(|e| e.to_string());
        assert!(
            e.as_deref()
                .is_some_and(|e| e.contains("relative to /etc") && e.contains("\"chrony.conf\"")),
            "{e:?}"
        );
        assert_eq!(field(caps(&[], &["rancher/k3s/k3s.yaml"])), None);
        for bad in ["kubernetes/*.conf", "**", "kubernetes/pki/**", "shado?"] {
            assert_eq!(
                field(caps(&[], &["ok", bad])),
                Some("spec.capabilities.etcAllowSensitive[1]".to_owned()),
                "{bad}"
            );
        }
        let none = Capabilities {
            etc: EtcAccess::None,
            ..caps(&["chrony.conf"], &[])
        };
        assert_eq!(field(none), Some("spec.capabilities.etcPaths".to_owned()));
        let many: Vec<String> = (0..=MAX_ETC_PATHS).map(|i| format!("f{i}")).collect();
        let long = Capabilities {
            etc_paths: many,
            ..caps(&[], &[])
        };
        assert_eq!(field(long), Some("spec.capabilities.etcPaths".to_owned()));
    }

    /// The plugin's declaration and every policy list narrow; allowances come from the
    /// plugin only.
    #[test]
    fn a_calls_scope_combines_plugin_and_policy() {
        let caps = Capabilities {
            etc: EtcAccess::Write,
            etc_paths: vec!["chrony/**".into()],
            etc_allow_sensitive: vec!["rancher/k3s/k3s.yaml".into()],
            ..Capabilities::default()
        };
        assert_eq!(
            EtcScope::for_call(&caps, None),
            EtcScope {
                read: vec![vec!["chrony/**".into()]],
                write: vec![vec!["chrony/**".into()]],
                deny_write: vec![],
                allow_sensitive: vec!["rancher/k3s/k3s.yaml".into()],
            }
        );
        let grant = crate::policy::EtcPathGrant {
            read: Some(vec!["chrony/chrony.conf".into()]),
            write: Some(vec![]),
            exclude_root_equivalent: true,
        };
        let s = EtcScope::for_call(&caps, Some(&grant));
        assert_eq!(s.read.len(), 2);
        assert_eq!(s.write[1], Vec::<String>::new(), "nothing writable");
        assert!(s.deny_write.iter().any(|p| p == "sudoers"));
        assert!(EtcScope::for_call(&Capabilities::default(), None).is_unrestricted());
    }

    #[test]
    fn digest_display_and_parse_round_trip() -> Result<(), Error> {
        let d = Digest::of(b"abc");
        assert_eq!(
            d.to_string(),
            "sha256:ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert_eq!(d.to_string().parse::<Digest>()?, d);
        assert_eq!(d.hex().to_uppercase().parse::<Digest>()?, d);
        assert_eq!(
            serde_json::to_value(d).map_err(|_| Error::InvalidDigest { input: "".into() })?,
            serde_json::json!(d.to_string())
        );
        Ok(())
    }

    #[test]
    fn digest_rejects_garbage() {
        for bad in [
            "",
            "sha256:",
            "sha256:xyz",
            "md5:00",
            &"0".repeat(63),
            &"g".repeat(64),
        ] {
            assert!(bad.parse::<Digest>().is_err(), "{bad:?} parsed");
        }
    }

    #[test]
    fn etc_access_has_one_text_form() -> Result<(), Box<dyn std::error::Error>> {
        for access in EtcAccess::ALL {
            assert_eq!(access.to_string().parse::<EtcAccess>()?, access);
            assert_eq!(
                serde_json::to_value(access)?,
                serde_json::json!(access.to_string())
            );
        }
        let err = "rw".parse::<EtcAccess>().err().map(|e| e.to_string());
        assert!(
            err.as_deref()
                .is_some_and(|e| e.contains("etc access") && e.contains("none, read or write")),
            "{err:?}"
        );
        assert_eq!(EtcAccess::Write.for_run(true), EtcAccess::Read);
        assert_eq!(EtcAccess::Write.for_run(false), EtcAccess::Write);
        assert_eq!(EtcAccess::None.for_run(true), EtcAccess::None);
        Ok(())
    }

    #[test]
    fn capabilities_round_trip() -> Result<(), Error> {
        let caps = Capabilities {
            etc: EtcAccess::Read,
            docker: true,
            ..Capabilities::default()
        };
        assert_eq!(caps.to_string(), "etc=read,docker=true");
        assert_eq!(caps.to_string().parse::<Capabilities>()?, caps);
        let auth = Capabilities {
            registry_auth: true,
            ..caps.clone()
        };
        assert_eq!(auth.to_string(), "etc=read,docker=true,registryAuth=true");
        assert_eq!(auth.to_string().parse::<Capabilities>()?, auth);
        let cri = Capabilities {
            containerd: true,
            ..Capabilities::default()
        };
        assert_eq!(cri.to_string(), "etc=none,docker=false,containerd=true");
        assert_eq!(cri.to_string().parse::<Capabilities>()?, cri);
        assert_eq!("".parse::<Capabilities>()?, Capabilities::default());
        assert!("etc=read,net=true".parse::<Capabilities>().is_err());
        let units = Capabilities {
            etc: EtcAccess::Write,
            systemd: Some(SystemdCapability {
                units: vec!["chrony.service".into(), "hostplug-*.service".into()],
                actions: vec![SystemdAction::Status, SystemdAction::Restart],
            }),
            ..Capabilities::default()
        };
        assert_eq!(
            units.to_string(),
            "etc=write,docker=false,systemd=chrony.service|hostplug-*.service:status|restart"
        );
        assert_eq!(units.to_string().parse::<Capabilities>()?, units);
        let scoped = Capabilities {
            etc: EtcAccess::Read,
            etc_paths: vec!["chrony.conf".into(), "chrony/**".into()],
            etc_allow_sensitive: vec!["rancher/k3s/k3s.yaml".into()],
            ..Capabilities::default()
        };
        assert_eq!(
            scoped.to_string(),
            "etc=read,docker=false,etcPaths=chrony.conf|chrony/**,etcAllowSensitive=rancher/k3s/k3s.yaml"
        );
        assert_eq!(scoped.to_string().parse::<Capabilities>()?, scoped);
        let json: Capabilities = serde_json::from_value(serde_json::json!({
            "etc": "write",
            "systemd": {"units": ["chrony.service"], "actions": ["status", "try-reload-or-restart"]}
        }))
        .map_err(|_| Error::InvalidDigest {
            input: "json".into(),
        })?;
        assert_eq!(
            json.systemd.map(|s| s.actions),
            Some(vec![
                SystemdAction::Status,
                SystemdAction::TryReloadOrRestart
            ])
        );
        Ok(())
    }
}

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
}

impl Capabilities {
    /// Checks what cannot be said in the CRD's schema alone; the error names the field
    /// under `field` (e.g. `spec.capabilities`).
    pub fn validate(&self, field: &str) -> Result<(), crate::call::Invalid> {
        if let Some(systemd) = &self.systemd {
            systemd.validate(&format!("{field}.systemd"))?;
        }
        Ok(())
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
            expected: "etc=<none|read|write>,docker=<true|false>[,containerd=<true|false>][,registryAuth=<true|false>][,systemd=<unit>|…:<action>|…]",
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

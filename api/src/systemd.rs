//! The `systemd` capability as a HostPlugin declares it ([`SystemdCapability`]: unit name
//! patterns and [`SystemdAction`]s), how one call may use it ([`SystemdAccess`]), and the
//! rules about unit names both the operator and the host apply: what a unit name and a
//! pattern may look like ([`check_unit_name`], [`check_pattern`]), which pattern allows a
//! unit ([`SystemdCapability::pattern_for`]) and which units no declaration ever reaches
//! ([`FORBIDDEN_UNITS`]: the power and rescue targets and their services).
//!
//! Pure types and functions: nothing here talks to a bus. The D-Bus calls the host makes
//! are written out once in the host (`capability/systemd/bus.rs`).

use std::fmt;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::call::Invalid;

/// Most unit patterns one HostPlugin may declare: 64. A plugin manages a handful of
/// services; a longer list is a sign that a broad pattern was meant.
pub const MAX_UNIT_PATTERNS: usize = 64;

/// Longest unit name or pattern: 255 bytes, systemd's own limit on a unit name
/// (`UNIT_NAME_MAX`).
pub const MAX_UNIT_NAME_BYTES: usize = 255;

/// The unit types a pattern may name: the ones that start, stop and restart. Devices,
/// slices and scopes are not managed that way.
pub const UNIT_TYPES: [&str; 8] = [
    "service",
    "socket",
    "timer",
    "path",
    "mount",
    "automount",
    "swap",
    "target",
];

/// Units no HostPlugin may act on or read, whatever its patterns say: starting one of
/// them powers the node off, reboots, suspends or isolates it into rescue mode — the
/// power actions the capability never offers, reached by the back door of a unit name.
pub const FORBIDDEN_UNITS: [&str; 27] = [
    "reboot.target",
    "poweroff.target",
    "halt.target",
    "kexec.target",
    "soft-reboot.target",
    "ctrl-alt-del.target",
    "shutdown.target",
    "final.target",
    "exit.target",
    "rescue.target",
    "emergency.target",
    "sleep.target",
    "suspend.target",
    "hibernate.target",
    "hybrid-sleep.target",
    "suspend-then-hibernate.target",
    "systemd-reboot.service",
    "systemd-poweroff.service",
    "systemd-halt.service",
    "systemd-kexec.service",
    "systemd-soft-reboot.service",
    "systemd-exit.service",
    "systemd-suspend.service",
    "systemd-hibernate.service",
    "systemd-hybrid-sleep.service",
    "systemd-suspend-then-hibernate.service",
    "rescue.service",
];

/// What a plugin may do with a unit through the `systemd` import.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum SystemdAction {
    /// Read a unit's state (ActiveState, SubState, MainPID, timestamps, unit file state).
    Status,
    /// Start a unit.
    Start,
    /// Stop a unit.
    Stop,
    /// Restart a unit (start it when it is not running).
    Restart,
    /// Reload a unit's configuration (the unit must support it).
    Reload,
    /// Reload when the unit supports it, else restart; only when it is running.
    TryReloadOrRestart,
    /// Reload systemd's own configuration (after a unit file or drop-in changed).
    DaemonReload,
    /// Enable a unit whose unit file is under /etc.
    Enable,
    /// Disable a unit whose unit file is under /etc.
    Disable,
}

impl SystemdAction {
    /// Every action, in the order of the docs.
    pub const ALL: [SystemdAction; 9] = [
        Self::Status,
        Self::Start,
        Self::Stop,
        Self::Restart,
        Self::Reload,
        Self::TryReloadOrRestart,
        Self::DaemonReload,
        Self::Enable,
        Self::Disable,
    ];

    /// The kebab-case name, as declared and serialised.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Status => "status",
            Self::Start => "start",
            Self::Stop => "stop",
            Self::Restart => "restart",
            Self::Reload => "reload",
            Self::TryReloadOrRestart => "try-reload-or-restart",
            Self::DaemonReload => "daemon-reload",
            Self::Enable => "enable",
            Self::Disable => "disable",
        }
    }

    /// Whether the action changes the node (everything but `status`): refused in a dry
    /// run and in a method that does not declare itself mutating.
    pub const fn mutates(self) -> bool {
        !matches!(self, Self::Status)
    }

    /// Whether the action names a unit (everything but `daemon-reload`).
    pub const fn names_unit(self) -> bool {
        !matches!(self, Self::DaemonReload)
    }
}

text_form!(
    SystemdAction,
    "systemd action",
    "status, start, stop, restart, reload, try-reload-or-restart, daemon-reload, enable or disable"
);

/// The `systemd` capability of a HostPlugin (`spec.capabilities.systemd`): which units
/// its plugin may touch and what it may do with them. Absent: no bus socket, every
/// `systemd` call refused.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema, Default)]
#[serde(rename_all = "camelCase")]
pub struct SystemdCapability {
    /// Unit name patterns, e.g. `chrony.service` or `hostplug-*.service`: the characters
    /// of a unit name (`A-Z a-z 0-9 : _ . @ \ -`) and `*` (any run of them), ending in a
    /// unit type (`.service`, `.socket`, `.timer`, `.path`, `.mount`, `.automount`,
    /// `.swap`, `.target`). The power and rescue targets (`reboot.target`, …) and their
    /// services are never allowed, whatever the patterns.
    #[schemars(schema_with = "unit_patterns_schema")]
    pub units: Vec<String>,
    /// What the plugin may do: `status`, `start`, `stop`, `restart`, `reload`,
    /// `try-reload-or-restart`, `daemon-reload`, `enable`, `disable` (the last two only
    /// for units whose unit file is under /etc).
    #[schemars(length(min = 1))]
    pub actions: Vec<SystemdAction>,
}

/// The regular expression of one unit pattern (the CRD's and [`check_pattern`]'s rule).
pub const UNIT_PATTERN_REGEX: &str =
    r"^[A-Za-z0-9:_.@\\*-]+\.(service|socket|timer|path|mount|automount|swap|target)$";

fn unit_patterns_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({
        "type": "array",
        "minItems": 1,
        "maxItems": MAX_UNIT_PATTERNS,
        "items": {
            "type": "string",
            "minLength": 1,
            "maxLength": MAX_UNIT_NAME_BYTES,
            "pattern": UNIT_PATTERN_REGEX,
        }
    })
}

fn is_unit_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, ':' | '_' | '.' | '@' | '\\' | '-')
}

fn unit_type(name: &str) -> Option<&str> {
    name.rsplit_once('.')
        .map(|(_, t)| t)
        .filter(|t| UNIT_TYPES.contains(t))
}

/// Checks a unit name as a plugin passes it: not empty, at most
/// [`MAX_UNIT_NAME_BYTES`], only the characters of a unit name, a name before the type
/// and one of [`UNIT_TYPES`]. The message says what is wrong (the caller names the field).
pub fn check_unit_name(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("the unit name is empty".into());
    }
    if name.len() > MAX_UNIT_NAME_BYTES {
        return Err(format!(
            "the unit name is longer than {MAX_UNIT_NAME_BYTES} bytes"
        ));
    }
    if let Some(c) = name.chars().find(|c| !is_unit_char(*c)) {
        return Err(format!(
            "unit name {name:?} holds {c:?}: only letters, digits and : _ . @ \\ - are allowed"
        ));
    }
    match (unit_type(name), name.rsplit_once('.')) {
        (Some(_), Some((stem, _))) if !stem.is_empty() && !stem.starts_with('.') => Ok(()),
        _ => Err(format!(
            "unit name {name:?} does not end in a unit type ({})",
            UNIT_TYPES.map(|t| format!(".{t}")).join(", ")
        )),
    }
}

/// Checks a unit pattern as a HostPlugin declares it: a unit name in which `*` stands for
/// any run of unit-name characters (see [`UNIT_PATTERN_REGEX`]).
pub fn check_pattern(pattern: &str) -> Result<(), String> {
    if pattern.is_empty() {
        return Err("the pattern is empty".into());
    }
    if pattern.len() > MAX_UNIT_NAME_BYTES {
        return Err(format!(
            "the pattern is longer than {MAX_UNIT_NAME_BYTES} bytes"
        ));
    }
    if let Some(c) = pattern.chars().find(|c| *c != '*' && !is_unit_char(*c)) {
        return Err(format!(
            "pattern {pattern:?} holds {c:?}: only the characters of a unit name and * are allowed"
        ));
    }
    if unit_type(pattern).is_none() || pattern.rsplit_once('.').is_some_and(|(s, _)| s.is_empty()) {
        return Err(format!(
            "pattern {pattern:?} does not end in a unit type ({})",
            UNIT_TYPES.map(|t| format!(".{t}")).join(", ")
        ));
    }
    Ok(())
}

/// Whether `name` matches `pattern`, where `*` matches any run of characters (none
/// included) and everything else matches itself.
pub fn pattern_matches(pattern: &str, name: &str) -> bool {
    let (p, n) = (pattern.as_bytes(), name.as_bytes());
    // Iterative glob: remember the last `*` and where it started matching.
    let (mut pi, mut ni) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while ni < n.len() {
        match p.get(pi) {
            Some(b'*') => {
                star = Some((pi, ni));
                pi += 1;
            }
            Some(&c) if c == n[ni] => {
                pi += 1;
                ni += 1;
            }
            _ => match star {
                Some((sp, sn)) => {
                    pi = sp + 1;
                    ni = sn + 1;
                    star = Some((sp, sn + 1));
                }
                None => return false,
            },
        }
    }
    p[pi..].iter().all(|&c| c == b'*')
}

impl SystemdCapability {
    /// Checks the declaration; the error names the field under `field` (e.g.
    /// `spec.capabilities.systemd`).
    pub fn validate(&self, field: &str) -> Result<(), Invalid> {
        if self.units.is_empty() {
            return Err(Invalid::new(
                format!("{field}.units"),
                "declare at least one unit pattern, e.g. chrony.service",
            ));
        }
        if self.units.len() > MAX_UNIT_PATTERNS {
            return Err(Invalid::new(
                format!("{field}.units"),
                format!("at most {MAX_UNIT_PATTERNS} patterns"),
            ));
        }
        for (i, p) in self.units.iter().enumerate() {
            check_pattern(p).map_err(|e| Invalid::new(format!("{field}.units[{i}]"), e))?;
        }
        if self.actions.is_empty() {
            return Err(Invalid::new(
                format!("{field}.actions"),
                "declare at least one action, e.g. status",
            ));
        }
        Ok(())
    }

    /// The first declared pattern that allows `unit`, or `None`. Never one of
    /// [`FORBIDDEN_UNITS`].
    pub fn pattern_for(&self, unit: &str) -> Option<&str> {
        if FORBIDDEN_UNITS.contains(&unit) {
            return None;
        }
        self.units
            .iter()
            .map(String::as_str)
            .find(|p| pattern_matches(p, unit))
    }

    /// Whether `action` is declared.
    pub fn allows(&self, action: SystemdAction) -> bool {
        self.actions.contains(&action)
    }

    /// The patterns as a list for messages: `chrony.service, hostplug-*.service`.
    pub fn patterns(&self) -> String {
        self.units.join(", ")
    }

    /// The declared actions as a list for messages.
    pub fn action_list(&self) -> String {
        self.actions
            .iter()
            .map(|a| a.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    }
}

impl fmt::Display for SystemdCapability {
    /// `<pattern>|<pattern>:<action>|<action>`, e.g. `chrony.service:status|restart`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:", self.units.join("|"))?;
        let actions: Vec<_> = self.actions.iter().map(|a| a.as_str()).collect();
        f.write_str(&actions.join("|"))
    }
}

impl std::str::FromStr for SystemdCapability {
    type Err = crate::Error;

    /// The [`Display`](fmt::Display) form.
    fn from_str(s: &str) -> Result<Self, crate::Error> {
        let invalid = || crate::Error::InvalidValue {
            what: "systemd capability",
            input: s.chars().take(80).collect(),
            expected: "<unit pattern>|…:<action>|…",
        };
        let (units, actions) = s.split_once(':').ok_or_else(invalid)?;
        let split = |v: &str| -> Vec<String> {
            v.split('|')
                .map(str::trim)
                .filter(|p| !p.is_empty())
                .map(str::to_owned)
                .collect()
        };
        Ok(Self {
            units: split(units),
            actions: split(actions)
                .iter()
                .map(|a| a.parse())
                .collect::<Result<_, _>>()?,
        })
    }
}

/// How one call may use the systemd capability, and so which worker serves it: no bus
/// socket, the bus socket for reads only (a dry run, or a method that does not declare
/// itself mutating), or the bus socket for the declared actions.
/// Ordered by access: `none` < `read` < `manage` (the union of two profiles takes the
/// larger, their intersection the smaller).
#[derive(
    Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, Default, PartialOrd, Ord,
)]
#[serde(rename_all = "lowercase")]
pub enum SystemdAccess {
    /// No bus socket.
    #[default]
    None,
    /// The bus socket; only `status` reaches it.
    Read,
    /// The bus socket; every declared action reaches it.
    Manage,
}

impl SystemdAccess {
    /// Every value.
    pub const ALL: [SystemdAccess; 3] = [Self::None, Self::Read, Self::Manage];

    /// The lowercase name.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::None => "none",
            Self::Read => "read",
            Self::Manage => "manage",
        }
    }

    /// The access one call of a plugin declaring the capability (`declared`) gets:
    /// `read` for a dry run and for a method that does not change the node.
    pub const fn for_call(declared: bool, dry_run: bool, mutates: bool) -> Self {
        match (declared, dry_run || !mutates) {
            (false, _) => Self::None,
            (true, true) => Self::Read,
            (true, false) => Self::Manage,
        }
    }
}

text_form!(SystemdAccess, "systemd access", "none, read or manage");

#[cfg(test)]
mod tests {
    use super::*;

    fn cap(units: &[&str], actions: &[SystemdAction]) -> SystemdCapability {
        SystemdCapability {
            units: units.iter().map(|s| s.to_string()).collect(),
            actions: actions.to_vec(),
        }
    }

    #[test]
    fn patterns_match_whole_names() {
        for (p, n, m) in [
            ("chrony.service", "chrony.service", true),
            ("chrony.service", "chronyd.service", false),
            ("hostplug-*.service", "hostplug-web.service", true),
            ("hostplug-*.service", "hostplug-.service", true),
            ("hostplug-*.service", "hostplug-web.socket", false),
            ("hostplug-*.service", "xhostplug-web.service", false),
            ("*.service", "a.b.service", true),
            ("a*b*c.service", "aXbYbZc.service", true),
            ("a*b*c.service", "aXcYb.service", false),
            ("getty@*.service", "getty@tty1.service", true),
        ] {
            assert_eq!(pattern_matches(p, n), m, "{p} ~ {n}");
        }
    }

    #[test]
    fn forbidden_units_stay_out_whatever_the_patterns() {
        let all = cap(&["*.target", "*.service"], &[SystemdAction::Start]);
        for unit in FORBIDDEN_UNITS {
            assert_eq!(all.pattern_for(unit), None, "{unit}");
            assert!(check_unit_name(unit).is_ok(), "{unit} is a unit name");
        }
        assert_eq!(
            all.pattern_for("multi-user.target"),
            Some("*.target"),
            "other targets follow the patterns"
        );
        assert_eq!(all.pattern_for("chrony.service"), Some("*.service"));
    }

    #[test]
    fn validation_names_the_field() {
        let field = "spec.capabilities.systemd";
        let ok = cap(
            &["chrony.service", "hostplug-*.service"],
            &[SystemdAction::Status, SystemdAction::Restart],
        );
        assert_eq!(ok.validate(field), Ok(()));
        for (bad, at) in [
            (cap(&[], &[SystemdAction::Status]), "units"),
            (cap(&["chrony"], &[SystemdAction::Status]), "units[0]"),
            (
                cap(&["a.service", "b c.service"], &[SystemdAction::Status]),
                "units[1]",
            ),
            (
                cap(&["a.service", ".service"], &[SystemdAction::Status]),
                "units[1]",
            ),
            (cap(&["sda.device"], &[SystemdAction::Status]), "units[0]"),
            (cap(&["a.service"], &[]), "actions"),
        ] {
            let e = bad.validate(field).err();
            assert_eq!(
                e.as_ref().map(|e| e.field.as_str()),
                Some(format!("{field}.{at}").as_str()),
                "{bad:?}: {e:?}"
            );
        }
        let too_many = SystemdCapability {
            units: (0..=MAX_UNIT_PATTERNS)
                .map(|i| format!("u{i}.service"))
                .collect(),
            actions: vec![SystemdAction::Status],
        };
        assert!(too_many.validate(field).is_err());
    }

    #[test]
    fn unit_names_are_checked() {
        for ok in [
            "chrony.service",
            "getty@tty1.service",
            "a-b_c:d.socket",
            "x.mount",
        ] {
            assert_eq!(check_unit_name(ok), Ok(()), "{ok}");
        }
        for bad in [
            "",
            "chrony",
            ".service",
            "a/b.service",
            "a b.service",
            "a*.service",
            "sda.device",
            "-.slice",
            &"a".repeat(300),
        ] {
            assert!(check_unit_name(bad).is_err(), "{bad:?}");
        }
    }

    /// The CRD's regular expression and [`check_pattern`] agree.
    #[test]
    fn the_schema_regex_agrees_with_check_pattern() {
        let re = jsonschema::validator_for(&serde_json::json!({
            "type": "string", "pattern": UNIT_PATTERN_REGEX
        }))
        .expect("the pattern compiles");
        for p in [
            "chrony.service",
            "hostplug-*.service",
            "*.target",
            "chrony",
            "a b.service",
            "a/b.service",
            "sda.device",
            "x.service.d",
        ] {
            assert_eq!(
                re.is_valid(&serde_json::json!(p)),
                check_pattern(p).is_ok(),
                "{p}"
            );
        }
    }

    #[test]
    fn text_forms_round_trip() -> Result<(), crate::Error> {
        for a in SystemdAction::ALL {
            assert_eq!(a.to_string().parse::<SystemdAction>()?, a);
            assert_eq!(
                serde_json::to_value(a).ok(),
                Some(serde_json::json!(a.as_str()))
            );
        }
        let c = cap(
            &["chrony.service", "hostplug-*.service"],
            &[SystemdAction::Status, SystemdAction::TryReloadOrRestart],
        );
        assert_eq!(
            c.to_string(),
            "chrony.service|hostplug-*.service:status|try-reload-or-restart"
        );
        assert_eq!(c.to_string().parse::<SystemdCapability>()?, c);
        for a in SystemdAccess::ALL {
            assert_eq!(a.to_string().parse::<SystemdAccess>()?, a);
        }
        assert_eq!(
            SystemdAccess::for_call(true, true, true),
            SystemdAccess::Read
        );
        assert_eq!(
            SystemdAccess::for_call(true, false, false),
            SystemdAccess::Read
        );
        assert_eq!(
            SystemdAccess::for_call(true, false, true),
            SystemdAccess::Manage
        );
        assert_eq!(
            SystemdAccess::for_call(false, false, true),
            SystemdAccess::None
        );
        Ok(())
    }
}

//! Every D-Bus call the host makes to systemd, written out once: the methods
//! ([`ALLOWED_METHODS`]) and the properties read ([`ALLOWED_PROPERTIES`]) of
//! `org.freedesktop.systemd1`, and [`Bus`], the one connection type, whose every call
//! passes [`check_method`] or [`check_property`] before a message is built.
//!
//! This module must never send a call that is not in these tables: no power actions
//! (`Reboot`, `PowerOff`, `Halt`, `KExec`, `SoftReboot`), no transient units
//! (`StartTransientUnit`), no property changes (`SetUnitProperties`), no signals
//! (`KillUnit`), no `Subscribe`, no `Isolate` job mode, no call on any other service.
//! Its callers (`client.rs`) decide which unit and action a plugin may use; this module
//! is the last fence, and it holds even against a bug in them.

use std::path::Path;

use zbus::zvariant::{OwnedObjectPath, OwnedValue, Value};

use crate::capability::CapabilityError;

/// systemd's bus name.
pub const DESTINATION: &str = "org.freedesktop.systemd1";
/// The manager's object.
pub const MANAGER_PATH: &str = "/org/freedesktop/systemd1";
/// The manager's interface.
pub const MANAGER: &str = "org.freedesktop.systemd1.Manager";
/// A unit's interface.
pub const UNIT: &str = "org.freedesktop.systemd1.Unit";
/// The standard properties interface (only its `Get`).
pub const PROPERTIES: &str = "org.freedesktop.DBus.Properties";
/// A service unit's own interface (for `MainPID`).
pub const SERVICE_UNIT: &str = "org.freedesktop.systemd1.Service";

/// The job mode of every job the host queues: `replace`, what `systemctl` uses. Never
/// `isolate` (which stops every other unit) nor `replace-irreversibly`.
pub const JOB_MODE: &str = "replace";

/// One D-Bus method the host may call, and why.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BusMethod {
    /// Interface.
    pub interface: &'static str,
    /// Member.
    pub member: &'static str,
    /// What the host uses it for.
    pub purpose: &'static str,
}

/// The methods the host calls, and nothing else.
pub const ALLOWED_METHODS: [BusMethod; 10] = [
    BusMethod {
        interface: MANAGER,
        member: "LoadUnit",
        purpose: "the object path of a unit (loading its file if needed), for status",
    },
    BusMethod {
        interface: MANAGER,
        member: "StartUnit",
        purpose: "start",
    },
    BusMethod {
        interface: MANAGER,
        member: "StopUnit",
        purpose: "stop",
    },
    BusMethod {
        interface: MANAGER,
        member: "RestartUnit",
        purpose: "restart",
    },
    BusMethod {
        interface: MANAGER,
        member: "ReloadUnit",
        purpose: "reload",
    },
    BusMethod {
        interface: MANAGER,
        member: "ReloadOrTryRestartUnit",
        purpose: "try-reload-or-restart",
    },
    BusMethod {
        interface: MANAGER,
        member: "Reload",
        purpose: "daemon-reload",
    },
    BusMethod {
        interface: MANAGER,
        member: "EnableUnitFiles",
        purpose: "enable (unit files under /etc only)",
    },
    BusMethod {
        interface: MANAGER,
        member: "DisableUnitFiles",
        purpose: "disable (unit files under /etc only)",
    },
    BusMethod {
        interface: PROPERTIES,
        member: "Get",
        purpose: "one property of ALLOWED_PROPERTIES",
    },
];

/// The properties the host reads (with `org.freedesktop.DBus.Properties.Get`), and
/// nothing else: (interface, property).
pub const ALLOWED_PROPERTIES: [(&str, &str); 13] = [
    (UNIT, "LoadState"),
    (UNIT, "ActiveState"),
    (UNIT, "SubState"),
    (UNIT, "ActiveEnterTimestamp"),
    (UNIT, "ActiveExitTimestamp"),
    (UNIT, "UnitFileState"),
    (UNIT, "FragmentPath"),
    (UNIT, "DropInPaths"),
    (UNIT, "NeedDaemonReload"),
    (UNIT, "Job"),
    (UNIT, "Id"),
    (SERVICE_UNIT, "MainPID"),
    (SERVICE_UNIT, "Result"),
];

/// Refuses every method outside [`ALLOWED_METHODS`], before anything is sent.
pub fn check_method(interface: &str, member: &str) -> Result<(), CapabilityError> {
    if ALLOWED_METHODS
        .iter()
        .any(|m| m.interface == interface && m.member == member)
    {
        Ok(())
    } else {
        Err(CapabilityError::denied(format!(
            "the D-Bus call {interface}.{member} is not one the host makes (only unit status, \
             start, stop, restart, reload, try-reload-or-restart, daemon-reload, enable and \
             disable reach systemd)"
        )))
    }
}

/// Refuses every property outside [`ALLOWED_PROPERTIES`], before anything is sent.
pub fn check_property(interface: &str, name: &str) -> Result<(), CapabilityError> {
    if ALLOWED_PROPERTIES.contains(&(interface, name)) {
        Ok(())
    } else {
        Err(CapabilityError::denied(format!(
            "the property {interface}.{name} is not one the host reads"
        )))
    }
}

/// A connection to the system bus, whose calls are only those of the tables above.
#[derive(Debug)]
pub(crate) struct Bus {
    conn: zbus::Connection,
}

/// Opens a connection to the system bus at `socket` (EXTERNAL authentication as this
/// process's user): the one connect both the plugins' [`Bus`] and the operator's
/// [`super::power`] use. A missing socket or a failed handshake is `failed` naming it.
pub(super) async fn open(socket: &Path) -> Result<zbus::Connection, CapabilityError> {
    let stream = tokio::net::UnixStream::connect(socket).await.map_err(|e| {
        CapabilityError::failed(format!(
            "cannot reach the D-Bus system bus socket {}: {e} (is the node's \
             /run/dbus mounted into this worker, and is dbus running?)",
            socket.display()
        ))
    })?;
    zbus::connection::Builder::unix_stream(stream)
        .build()
        .await
        .map_err(|e| {
            CapabilityError::failed(format!(
                "D-Bus handshake on {} failed: {e}",
                socket.display()
            ))
        })
}

impl Bus {
    /// Connects to the bus socket `socket` (EXTERNAL authentication as this process's
    /// user). A missing socket is `failed` naming it.
    pub(crate) async fn connect(socket: &Path) -> Result<Self, CapabilityError> {
        Ok(Self {
            conn: open(socket).await?,
        })
    }

    /// Calls `interface.member` on `path` of systemd with `body`, after [`check_method`].
    pub(crate) async fn call<B, R>(
        &self,
        path: &str,
        interface: &'static str,
        member: &'static str,
        body: &B,
    ) -> Result<R, CapabilityError>
    where
        B: serde::Serialize + zbus::zvariant::DynamicType,
        R: for<'d> zbus::zvariant::DynamicDeserialize<'d>,
    {
        self.call_checked(path, interface, member, body).await
    }

    /// [`Bus::call`] with names not known at compile time: a tool's or a test's way to
    /// show that a call outside the table never reaches the bus.
    pub(crate) async fn call_checked<B, R>(
        &self,
        path: &str,
        interface: &str,
        member: &str,
        body: &B,
    ) -> Result<R, CapabilityError>
    where
        B: serde::Serialize + zbus::zvariant::DynamicType,
        R: for<'d> zbus::zvariant::DynamicDeserialize<'d>,
    {
        check_method(interface, member)?;
        let reply = self
            .conn
            .call_method(Some(DESTINATION), path, Some(interface), member, body)
            .await
            .map_err(|e| bus_error(member, e))?;
        reply.body().deserialize::<R>().map_err(|e| {
            CapabilityError::failed(format!("systemd's answer to {member} did not parse: {e}"))
        })
    }

    /// Reads the property `interface.name` of the object `path`, after
    /// [`check_property`].
    pub(crate) async fn property(
        &self,
        path: &str,
        interface: &'static str,
        name: &'static str,
    ) -> Result<OwnedValue, CapabilityError> {
        check_property(interface, name)?;
        self.call(path, PROPERTIES, "Get", &(interface, name)).await
    }

    /// The object path of `unit` (loaded if needed).
    pub(crate) async fn load_unit(&self, unit: &str) -> Result<String, CapabilityError> {
        let path: OwnedObjectPath = self
            .call(MANAGER_PATH, MANAGER, "LoadUnit", &(unit,))
            .await?;
        Ok(path.as_str().to_owned())
    }
}

/// systemd's error as a capability error: unknown units are `not-found`, refusals of
/// the bus or polkit `denied`, everything else `failed`; the message names the call.
fn bus_error(member: &str, e: zbus::Error) -> CapabilityError {
    let (name, detail) = match &e {
        zbus::Error::MethodError(name, detail, _) => {
            (name.as_str().to_owned(), detail.clone().unwrap_or_default())
        }
        zbus::Error::FDO(fdo) => (String::new(), fdo.to_string()),
        other => (String::new(), other.to_string()),
    };
    let message = if name.is_empty() {
        format!("systemd {member}: {detail}")
    } else {
        format!("systemd {member}: {detail} ({name})")
    };
    match name.as_str() {
        "org.freedesktop.systemd1.NoSuchUnit" | "org.freedesktop.DBus.Error.FileNotFound" => {
            CapabilityError::not_found(message)
        }
        "org.freedesktop.DBus.Error.AccessDenied" | "org.freedesktop.systemd1.UnitMasked" => {
            CapabilityError::denied(message)
        }
        _ if message.contains("AccessDenied") => CapabilityError::denied(message),
        _ => CapabilityError::failed(message),
    }
}

/// A string property's value.
pub(crate) fn as_string(v: &OwnedValue) -> String {
    match &**v {
        Value::Str(s) => s.as_str().to_owned(),
        Value::ObjectPath(p) => p.as_str().to_owned(),
        _ => String::new(),
    }
}

/// An integer property's value (u32 or u64).
pub(crate) fn as_u64(v: &OwnedValue) -> u64 {
    match &**v {
        Value::U64(n) => *n,
        Value::U32(n) => u64::from(*n),
        _ => 0,
    }
}

/// A boolean property's value.
pub(crate) fn as_bool(v: &OwnedValue) -> bool {
    matches!(&**v, Value::Bool(true))
}

/// A string-array property's value.
pub(crate) fn as_strings(v: &OwnedValue) -> Vec<String> {
    match &**v {
        Value::Array(a) => a
            .inner()
            .iter()
            .filter_map(|v| match v {
                Value::Str(s) => Some(s.as_str().to_owned()),
                _ => None,
            })
            .collect(),
        _ => Vec::new(),
    }
}

/// The job id of a unit's `Job` property (`(uo)`); 0: no job.
pub(crate) fn job_id(v: &OwnedValue) -> u32 {
    match &**v {
        Value::Structure(s) => match s.fields().first() {
            Some(Value::U32(id)) => *id,
            _ => 0,
        },
        _ => 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The calls the issue names, and the rest of the Manager's dangerous surface: each
    /// is refused by the one gate every call passes.
    pub(crate) const FORBIDDEN: [(&str, &str); 20] = [
        (MANAGER, "Reboot"),
        (MANAGER, "PowerOff"),
        (MANAGER, "Halt"),
        (MANAGER, "KExec"),
        (MANAGER, "SoftReboot"),
        (MANAGER, "Exit"),
        (MANAGER, "SwitchRoot"),
        (MANAGER, "StartTransientUnit"),
        (MANAGER, "SetUnitProperties"),
        (MANAGER, "KillUnit"),
        (MANAGER, "QueueSignalUnit"),
        (MANAGER, "StartUnitReplace"),
        (MANAGER, "MaskUnitFiles"),
        (MANAGER, "LinkUnitFiles"),
        (MANAGER, "SetEnvironment"),
        (MANAGER, "Subscribe"),
        (MANAGER, "AttachProcessesToUnit"),
        (MANAGER, "CleanUnit"),
        ("org.freedesktop.login1.Manager", "Reboot"),
        (PROPERTIES, "Set"),
    ];

    #[test]
    fn forbidden_methods_are_refused_by_the_gate() {
        for (interface, member) in FORBIDDEN {
            let e = check_method(interface, member).expect_err(member);
            assert!(matches!(e, CapabilityError::Denied(_)), "{member}: {e}");
            assert!(e.message().contains(member), "{e}");
        }
        for m in ALLOWED_METHODS {
            assert_eq!(check_method(m.interface, m.member), Ok(()));
        }
        assert!(check_property(UNIT, "ActiveState").is_ok());
        assert!(check_property(UNIT, "ExecStart").is_err());
        assert!(check_property(MANAGER, "Environment").is_err());
    }
}

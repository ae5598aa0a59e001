//! [`SystemdClient`]: the systemd import's client for one call — the HostPlugin's
//! declaration (unit patterns, actions), the read-only rule (dry runs, methods that do
//! not declare themselves mutating) and the unit-name rules checked before anything is
//! sent, then a few calls of [`bus`](super::bus)'s table over the system bus socket.
//!
//! One D-Bus connection per import call, on a thread of its own with a current-thread
//! tokio runtime (the import is synchronous and runs inside the host's runtime, which
//! must not be entered twice), bounded by the policy's timeout and the invocation's
//! deadline. A job (start, restart, …) is waited for until it leaves the unit.
//!
//! It must never act on a unit no declared pattern allows (nor on a power or rescue
//! unit whatever the patterns), never use an action that is not declared, and never
//! send anything but `status` reads in a dry run or a read-only method.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::time::Instant;

use hostplug_api::systemd::{SystemdAction, SystemdCapability, check_unit_name};
use zbus::zvariant::OwnedObjectPath;

use super::bus::{self, Bus, JOB_MODE, MANAGER, MANAGER_PATH, SERVICE_UNIT, UNIT};
use super::{JOB_POLL_INTERVAL, JOB_REPORT_MARGIN, SystemdPolicy, UnitAction, UnitStatus};
use crate::capability::CapabilityError;

/// Why a client only reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReadOnly {
    /// Every declared action reaches systemd.
    No,
    /// A dry run: only `status`.
    DryRun,
    /// A method that does not declare itself mutating: only `status`.
    ReadOnlyMethod,
}

/// The systemd import's client for one invocation. Public so that tests and tools can
/// drive the capability exactly as a plugin does.
#[derive(Debug, Clone)]
pub struct SystemdClient {
    socket: PathBuf,
    capability: SystemdCapability,
    policy: SystemdPolicy,
    read_only: ReadOnly,
}

impl SystemdClient {
    /// A client of the bus socket `socket` for a plugin that declared `capability`,
    /// under `policy`; `read_only` says whether (and why) only `status` is allowed.
    pub fn new(
        socket: &Path,
        capability: SystemdCapability,
        policy: SystemdPolicy,
        read_only: ReadOnly,
    ) -> Self {
        Self {
            socket: socket.to_path_buf(),
            capability,
            policy,
            read_only,
        }
    }

    /// Checks `action` on `unit` (`None` for `daemon-reload`) against the declaration
    /// and the read-only rule; the first refusal wins, naming what was declared.
    fn check(&self, action: SystemdAction, unit: Option<&str>) -> Result<(), CapabilityError> {
        if !self.capability.allows(action) {
            return Err(CapabilityError::denied(format!(
                "the systemd action {action} is not declared by this plugin's HostPlugin \
                 (spec.capabilities.systemd.actions: {})",
                self.capability.action_list()
            )));
        }
        if let Some(unit) = unit {
            check_unit_name(unit).map_err(CapabilityError::invalid)?;
            if hostplug_api::systemd::FORBIDDEN_UNITS.contains(&unit) {
                return Err(CapabilityError::denied(format!(
                    "unit {unit} powers off, reboots, suspends or isolates the node: no \
                     HostPlugin may use it"
                )));
            }
            if self.capability.pattern_for(unit).is_none() {
                return Err(CapabilityError::denied(format!(
                    "unit {unit} matches none of this plugin's unit patterns \
                     (spec.capabilities.systemd.units: {})",
                    self.capability.patterns()
                )));
            }
        }
        if action.mutates() {
            match self.read_only {
                ReadOnly::No => {}
                ReadOnly::DryRun => {
                    return Err(CapabilityError::denied(format!(
                        "{action} is not allowed in a dry run (only status is)"
                    )));
                }
                ReadOnly::ReadOnlyMethod => {
                    return Err(CapabilityError::denied(format!(
                        "{action} is not allowed: this method does not declare itself \
                         mutating (only status is)"
                    )));
                }
            }
        }
        Ok(())
    }

    /// The state of `unit`.
    pub fn status(&self, unit: &str, deadline: Instant) -> Result<UnitStatus, CapabilityError> {
        self.check(SystemdAction::Status, Some(unit))?;
        let unit = unit.to_owned();
        self.on_bus(deadline, "status", move |bus| async move {
            status_of(&bus, &unit).await
        })
    }

    /// Queues `action` on `unit`, waits for its job and returns the unit's state after.
    pub fn run(
        &self,
        unit: &str,
        action: UnitAction,
        deadline: Instant,
    ) -> Result<UnitStatus, CapabilityError> {
        self.check(action.declared_as(), Some(unit))?;
        let unit = unit.to_owned();
        // The job is given up a little before the call's end, so that the error can say
        // where the unit is (e.g. `deactivating/final-sigterm`: a process that does not
        // stop, which systemd waits TimeoutStopSec for).
        let give_up = deadline
            .min(Instant::now() + self.policy.timeout)
            .checked_sub(JOB_REPORT_MARGIN)
            .unwrap_or_else(Instant::now);
        self.on_bus(
            deadline,
            action.declared_as().as_str(),
            move |bus| async move {
                // An unknown unit is `not-found` naming it, before any job.
                status_of(&bus, &unit).await?;
                let job: OwnedObjectPath = bus
                    .call(
                        MANAGER_PATH,
                        MANAGER,
                        action.member(),
                        &(unit.as_str(), JOB_MODE),
                    )
                    .await?;
                let unit_path = bus.load_unit(&unit).await?;
                let ours = job_id_of(job.as_str());
                loop {
                    let job = bus.property(&unit_path, UNIT, "Job").await?;
                    let now = bus::job_id(&job);
                    if now == 0 || Some(now) != ours {
                        break;
                    }
                    if Instant::now() >= give_up {
                        let state = status_of(&bus, &unit).await?;
                        return Err(CapabilityError::failed(format!(
                            "{} of {unit} did not finish in time: its job is still running \
                             and the unit is {}/{}",
                            action.declared_as(),
                            state.active_state,
                            state.sub_state
                        )));
                    }
                    tokio::time::sleep(JOB_POLL_INTERVAL).await;
                }
                let after = status_of(&bus, &unit).await?;
                // A oneshot service that ran and exited is `inactive` after a good
                // start: its Result says how it went.
                let result = if unit.ends_with(".service") {
                    let path = bus.load_unit(&unit).await?;
                    bus::as_string(&bus.property(&path, SERVICE_UNIT, "Result").await?)
                } else {
                    String::new()
                };
                action.check_result(&after, &result)?;
                Ok(after)
            },
        )
    }

    /// Reloads systemd's configuration (`systemctl daemon-reload`).
    pub fn daemon_reload(&self, deadline: Instant) -> Result<(), CapabilityError> {
        self.check(SystemdAction::DaemonReload, None)?;
        self.on_bus(deadline, "daemon-reload", |bus| async move {
            bus.call::<_, ()>(MANAGER_PATH, MANAGER, "Reload", &())
                .await
        })
    }

    /// Enables `unit` (its unit file must be under /etc), then reloads systemd when
    /// something changed, as `systemctl enable` does; true when something changed.
    pub fn enable(&self, unit: &str, deadline: Instant) -> Result<bool, CapabilityError> {
        self.check(SystemdAction::Enable, Some(unit))?;
        let unit = unit.to_owned();
        self.on_bus(deadline, "enable", move |bus| async move {
            unit_file_under_etc(&bus, &unit, "enable").await?;
            let (_, changes): (bool, Vec<(String, String, String)>) = bus
                .call(
                    MANAGER_PATH,
                    MANAGER,
                    "EnableUnitFiles",
                    &(vec![unit.as_str()], false, false),
                )
                .await?;
            // As systemctl does: systemd reads the changed links (and the unit file
            // state it reports) only on a reload.
            if !changes.is_empty() {
                bus.call::<_, ()>(MANAGER_PATH, MANAGER, "Reload", &())
                    .await?;
            }
            Ok(!changes.is_empty())
        })
    }

    /// Disables `unit` (its unit file must be under /etc), then reloads systemd when
    /// something changed, as `systemctl disable` does; true when something changed.
    pub fn disable(&self, unit: &str, deadline: Instant) -> Result<bool, CapabilityError> {
        self.check(SystemdAction::Disable, Some(unit))?;
        let unit = unit.to_owned();
        self.on_bus(deadline, "disable", move |bus| async move {
            unit_file_under_etc(&bus, &unit, "disable").await?;
            let changes: Vec<(String, String, String)> = bus
                .call(
                    MANAGER_PATH,
                    MANAGER,
                    "DisableUnitFiles",
                    &(vec![unit.as_str()], false),
                )
                .await?;
            // As systemctl does: systemd reads the changed links (and the unit file
            // state it reports) only on a reload.
            if !changes.is_empty() {
                bus.call::<_, ()>(MANAGER_PATH, MANAGER, "Reload", &())
                    .await?;
            }
            Ok(!changes.is_empty())
        })
    }

    /// Calls `interface.member` on systemd's manager object with no arguments, through
    /// the one gate every call of the host passes ([`bus::check_method`]): what a plugin
    /// would need for any call outside the table (`Reboot`, `PowerOff`,
    /// `StartTransientUnit`, `KillUnit`, …) is refused there, before a message is built.
    /// For tools and tests that show this against a real bus; needs a client that may
    /// change the node, since every call in the table but the reads does.
    pub fn call_manager(
        &self,
        interface: &str,
        member: &str,
        deadline: Instant,
    ) -> Result<(), CapabilityError> {
        bus::check_method(interface, member)?;
        if self.read_only != ReadOnly::No {
            return Err(CapabilityError::denied(format!(
                "{interface}.{member} is not allowed in a read-only call"
            )));
        }
        let (interface, member) = (interface.to_owned(), member.to_owned());
        self.on_bus(deadline, "call", move |bus| async move {
            bus.call_checked::<_, ()>(MANAGER_PATH, &interface, &member, &())
                .await
        })
    }

    /// Runs `work` on a fresh connection, on a thread of its own, no later than
    /// `deadline` (and the policy's timeout).
    fn on_bus<T, F, Fut>(
        &self,
        deadline: Instant,
        what: &str,
        work: F,
    ) -> Result<T, CapabilityError>
    where
        T: Send + 'static,
        F: FnOnce(Bus) -> Fut + Send + 'static,
        Fut: Future<Output = Result<T, CapabilityError>>,
    {
        let left = deadline
            .saturating_duration_since(Instant::now())
            .min(self.policy.timeout);
        let timed_out = format!(
            "systemd {what} did not finish within {} ms",
            left.as_millis()
        );
        if left.is_zero() {
            return Err(CapabilityError::failed(timed_out));
        }
        let socket = self.socket.clone();
        let worker = std::thread::Builder::new()
            .name("hostplug-dbus".into())
            .spawn(move || -> Result<T, CapabilityError> {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .map_err(|e| {
                        CapabilityError::failed(format!(
                            "systemd: starting the client runtime: {e}"
                        ))
                    })?;
                rt.block_on(async move {
                    let run = async move {
                        let bus = Bus::connect(&socket).await?;
                        work(bus).await
                    };
                    match tokio::time::timeout(left, run).await {
                        Ok(r) => r,
                        Err(_) => Err(CapabilityError::failed(timed_out)),
                    }
                })
            })
            .map_err(|e| {
                CapabilityError::failed(format!("systemd: starting the client thread: {e}"))
            })?;
        worker
            .join()
            .map_err(|_| CapabilityError::failed("systemd: the client thread panicked"))?
    }
}

/// The numeric id at the end of a job's object path (`/org/freedesktop/systemd1/job/42`).
fn job_id_of(path: &str) -> Option<u32> {
    path.rsplit('/').next().and_then(|id| id.parse().ok())
}

/// `unit`'s state; `not-found` when systemd has no such unit.
async fn status_of(bus: &Bus, unit: &str) -> Result<UnitStatus, CapabilityError> {
    let path = bus.load_unit(unit).await?;
    let get = |name: &'static str| bus.property(&path, UNIT, name);
    let load_state = bus::as_string(&get("LoadState").await?);
    if load_state == "not-found" {
        return Err(CapabilityError::not_found(format!(
            "systemd has no unit {unit}"
        )));
    }
    let main_pid = if unit.ends_with(".service") {
        u32::try_from(bus::as_u64(
            &bus.property(&path, SERVICE_UNIT, "MainPID").await?,
        ))
        .unwrap_or(0)
    } else {
        0
    };
    Ok(UnitStatus {
        name: unit.to_owned(),
        load_state,
        active_state: bus::as_string(&get("ActiveState").await?),
        sub_state: bus::as_string(&get("SubState").await?),
        main_pid,
        active_enter_timestamp: bus::as_u64(&get("ActiveEnterTimestamp").await?),
        active_exit_timestamp: bus::as_u64(&get("ActiveExitTimestamp").await?),
        unit_file_state: bus::as_string(&get("UnitFileState").await?),
        fragment_path: bus::as_string(&get("FragmentPath").await?),
        drop_in_paths: bus::as_strings(&get("DropInPaths").await?),
        need_daemon_reload: bus::as_bool(&get("NeedDaemonReload").await?),
    })
}

/// Refuses enable/disable of a unit whose unit file is not under /etc: files under
/// /usr or /lib belong to the node's packages.
async fn unit_file_under_etc(bus: &Bus, unit: &str, what: &str) -> Result<(), CapabilityError> {
    let status = status_of(bus, unit).await?;
    if status.fragment_path.starts_with("/etc/") {
        Ok(())
    } else {
        Err(CapabilityError::denied(format!(
            "{what} is only for units whose unit file is under /etc; {unit}'s is {}",
            if status.fragment_path.is_empty() {
                "generated (no file)".to_owned()
            } else {
                status.fragment_path
            }
        )))
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn client(read_only: ReadOnly) -> SystemdClient {
        SystemdClient::new(
            Path::new("/nonexistent/system_bus_socket"),
            SystemdCapability {
                units: vec!["chrony.service".into(), "hostplug-*.service".into()],
                actions: vec![SystemdAction::Status, SystemdAction::Restart],
            },
            SystemdPolicy::default(),
            read_only,
        )
    }

    fn soon() -> Instant {
        Instant::now() + Duration::from_secs(5)
    }

    /// Refusals are decided before the socket: a client of a socket that does not exist
    /// answers `denied`/`invalid`, never the `failed` of a missing socket.
    #[test]
    fn refusals_come_before_the_bus() {
        let c = client(ReadOnly::No);
        let e = c
            .run("sshd.service", UnitAction::Restart, soon())
            .expect_err("outside");
        assert!(
            matches!(&e, CapabilityError::Denied(m) if m.contains("chrony.service, hostplug-*.service")),
            "{e}"
        );
        let e = c
            .run("chrony.service", UnitAction::Stop, soon())
            .expect_err("undeclared");
        assert!(
            matches!(&e, CapabilityError::Denied(m) if m.contains("stop") && m.contains("status, restart")),
            "{e}"
        );
        let e = c.daemon_reload(soon()).expect_err("undeclared");
        assert!(matches!(e, CapabilityError::Denied(_)), "{e}");
        let e = c.status("chrony", soon()).expect_err("not a unit name");
        assert!(matches!(e, CapabilityError::Invalid(_)), "{e}");
        let e = c
            .status("../x.service", soon())
            .expect_err("not a unit name");
        assert!(matches!(e, CapabilityError::Invalid(_)), "{e}");

        let dry = client(ReadOnly::DryRun);
        let e = dry
            .run("chrony.service", UnitAction::Restart, soon())
            .expect_err("dry");
        assert!(
            matches!(&e, CapabilityError::Denied(m) if m.contains("dry run")),
            "{e}"
        );
        let ro = client(ReadOnly::ReadOnlyMethod);
        let e = ro
            .run("hostplug-a.service", UnitAction::Restart, soon())
            .expect_err("ro");
        assert!(
            matches!(&e, CapabilityError::Denied(m) if m.contains("does not declare itself mutating")),
            "{e}"
        );
        // The power units, whatever the patterns say.
        let all = SystemdClient::new(
            Path::new("/nonexistent/system_bus_socket"),
            SystemdCapability {
                units: vec!["*.target".into(), "*.service".into()],
                actions: SystemdAction::ALL.to_vec(),
            },
            SystemdPolicy::default(),
            ReadOnly::No,
        );
        for unit in ["reboot.target", "poweroff.target", "systemd-kexec.service"] {
            let e = all.run(unit, UnitAction::Start, soon()).expect_err(unit);
            assert!(
                matches!(&e, CapabilityError::Denied(m) if m.contains("powers off")),
                "{e}"
            );
        }
        for (interface, member) in [(MANAGER, "Reboot"), (MANAGER, "KillUnit")] {
            let e = all
                .call_manager(interface, member, soon())
                .expect_err(member);
            assert!(matches!(e, CapabilityError::Denied(_)), "{e}");
        }
        // An allowed status reaches for the socket, and its absence is a clear failure.
        let e = c.status("chrony.service", soon()).expect_err("no socket");
        assert!(
            matches!(&e, CapabilityError::Failed(m) if m.contains("system bus socket /nonexistent/system_bus_socket")),
            "{e}"
        );
    }

    #[test]
    fn job_ids_come_from_the_path() {
        assert_eq!(job_id_of("/org/freedesktop/systemd1/job/42"), Some(42));
        assert_eq!(job_id_of("/"), None);
    }
}

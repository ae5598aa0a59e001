//! The `systemd` capability: the `systemd` import, the node's systemd over the D-Bus
//! system bus socket, limited to the units and actions the plugin's HostPlugin declares.
//!
//! * `bus.rs`: every D-Bus call the host makes, written out once (methods and properties
//!   of `org.freedesktop.systemd1`), and the one connection type that refuses anything
//!   else before a message is built.
//! * `client.rs`: [`SystemdClient`], the import's client for one call — the declaration,
//!   the read-only rule and the unit names checked first, then the calls.
//! * `power.rs`: the operator's node reboot (the worker's `POST /v1/node/reboot`), the
//!   only power call the host makes; apart from `bus.rs`, whose table keeps refusing
//!   `Reboot` to plugins, and linked into no plugin's store.
//! * here: the policy, the unit state, the actions and the import itself.
//!
//! It must never reach anything but the granted socket, never act in a dry run or in a
//! method that does not declare itself mutating (only `status` reads then), and never
//! offer a power action, a transient unit, a property change or a signal to a process.

mod bus;
mod client;
pub mod power;

use std::time::{Duration, Instant};

pub use bus::{ALLOWED_METHODS, ALLOWED_PROPERTIES, BusMethod, check_method, check_property};
pub use client::{ReadOnly, SystemdClient};
use hostplug_api::systemd::SystemdAction;
use wasmtime::component::{HasSelf, Linker};

use super::{Call, CapabilityError};
use crate::bindings::hostplug::plugin::systemd as wit;
use crate::{Error, Result};

/// Default time limit of one systemd call: 90 s, systemd's own default start timeout
/// (`DefaultTimeoutStartSec`): a restart that takes longer has failed in systemd's eyes
/// too. A call never runs past the invocation's deadline either.
pub const DEFAULT_SYSTEMD_TIMEOUT: Duration = Duration::from_secs(90);

/// How often a queued job is checked for completion: 20 ms. A restart of a small service
/// takes tens of milliseconds; each check is one property read on a local socket.
pub const JOB_POLL_INTERVAL: Duration = Duration::from_millis(20);

/// How long before a call's end the wait for a job is given up, to read and report
/// the unit's state: 500 ms, a few status reads on a local socket with room to spare.
pub const JOB_REPORT_MARGIN: Duration = Duration::from_millis(500);

/// What the systemd import may do (beyond each plugin's declaration).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SystemdPolicy {
    /// Time limit of one call, a job's wait included (also bounded by the invocation's
    /// deadline).
    pub timeout: Duration,
}

impl Default for SystemdPolicy {
    fn default() -> Self {
        Self {
            timeout: DEFAULT_SYSTEMD_TIMEOUT,
        }
    }
}

impl SystemdPolicy {
    /// Checks the policy itself; the error names the field.
    pub fn validate(&self) -> Result<(), String> {
        if self.timeout.is_zero() {
            return Err("systemd policy timeout: must be more than zero".to_owned());
        }
        Ok(())
    }
}

/// A job the `run` import queues on a unit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UnitAction {
    /// StartUnit.
    Start,
    /// StopUnit.
    Stop,
    /// RestartUnit.
    Restart,
    /// ReloadUnit.
    Reload,
    /// ReloadOrTryRestartUnit.
    TryReloadOrRestart,
}

impl UnitAction {
    /// The action a HostPlugin declares for it.
    pub fn declared_as(self) -> SystemdAction {
        match self {
            Self::Start => SystemdAction::Start,
            Self::Stop => SystemdAction::Stop,
            Self::Restart => SystemdAction::Restart,
            Self::Reload => SystemdAction::Reload,
            Self::TryReloadOrRestart => SystemdAction::TryReloadOrRestart,
        }
    }

    /// The Manager method that queues it (in `bus.rs`'s table).
    fn member(self) -> &'static str {
        match self {
            Self::Start => "StartUnit",
            Self::Stop => "StopUnit",
            Self::Restart => "RestartUnit",
            Self::Reload => "ReloadUnit",
            Self::TryReloadOrRestart => "ReloadOrTryRestartUnit",
        }
    }

    /// Whether the unit ended where the job should have left it (`result`: a service's
    /// `Result`, `success` for a oneshot service that ran and exited); `failed` names
    /// the states otherwise.
    fn check_result(self, after: &UnitStatus, result: &str) -> Result<(), CapabilityError> {
        let state = after.active_state.as_str();
        let ok = match self {
            Self::Start | Self::Restart => {
                matches!(state, "active" | "reloading" | "activating")
                    || (state == "inactive" && result == "success")
            }
            Self::Reload => matches!(state, "active" | "reloading" | "activating"),
            Self::Stop => !matches!(state, "active" | "activating" | "reloading"),
            Self::TryReloadOrRestart => state != "failed",
        };
        if ok {
            Ok(())
        } else {
            Err(CapabilityError::failed(format!(
                "{} of {} finished with ActiveState={} SubState={}{}",
                self.declared_as(),
                after.name,
                after.active_state,
                after.sub_state,
                if result.is_empty() {
                    String::new()
                } else {
                    format!(" Result={result}")
                }
            )))
        }
    }
}

/// A unit's state, as systemd reports it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct UnitStatus {
    /// The unit's name.
    pub name: String,
    /// `loaded`, `masked`, `error`, …
    pub load_state: String,
    /// `active`, `inactive`, `failed`, `activating`, `deactivating`, `reloading`.
    pub active_state: String,
    /// The type-specific state (`running`, `dead`, `exited`, …).
    pub sub_state: String,
    /// The main process of a service; 0: none.
    pub main_pid: u32,
    /// When the unit last became active, µs since the Unix epoch; 0: never.
    pub active_enter_timestamp: u64,
    /// When the unit last stopped being active, µs since the Unix epoch; 0: never.
    pub active_exit_timestamp: u64,
    /// `enabled`, `disabled`, `static`, …; empty when there is none.
    pub unit_file_state: String,
    /// The unit file; empty for a generated unit.
    pub fragment_path: String,
    /// The drop-ins in effect.
    pub drop_in_paths: Vec<String>,
    /// A unit file or drop-in changed since systemd read it.
    pub need_daemon_reload: bool,
}

impl From<UnitStatus> for wit::UnitStatus {
    fn from(s: UnitStatus) -> Self {
        Self {
            name: s.name,
            load_state: s.load_state,
            active_state: s.active_state,
            sub_state: s.sub_state,
            main_pid: s.main_pid,
            active_enter_timestamp: s.active_enter_timestamp,
            active_exit_timestamp: s.active_exit_timestamp,
            unit_file_state: s.unit_file_state,
            fragment_path: s.fragment_path,
            drop_in_paths: s.drop_in_paths,
            need_daemon_reload: s.need_daemon_reload,
        }
    }
}

/// The systemd capability's state for one call: the client when the call was granted
/// the bus socket, and when the call must end.
#[derive(Debug)]
pub(crate) struct SystemdState {
    client: Option<SystemdClient>,
    deadline: Instant,
}

impl SystemdState {
    /// Prepare phase: a client of the granted socket with the plugin's declaration,
    /// reads only in a dry run or for a read-only grant; none without a grant.
    pub(crate) fn prepare(call: &Call<'_>) -> Self {
        let client = call.grants.systemd.as_ref().map(|grant| {
            let read_only = if call.dry_run {
                ReadOnly::DryRun
            } else if grant.read_only {
                ReadOnly::ReadOnlyMethod
            } else {
                ReadOnly::No
            };
            SystemdClient::new(
                &grant.socket,
                grant.capability.clone(),
                call.config.systemd.clone(),
                read_only,
            )
        });
        Self {
            client,
            deadline: call.deadline,
        }
    }

    fn client(&self) -> Result<&SystemdClient, CapabilityError> {
        self.client
            .as_ref()
            .ok_or_else(|| CapabilityError::denied("this plugin has no systemd capability"))
    }
}

/// The `systemd` import: refused without the capability, otherwise the client of this
/// call (declaration, read-only rule, deadline).
impl wit::Host for SystemdState {
    fn status(&mut self, unit: String) -> Result<wit::UnitStatus, wit::CapabilityError> {
        self.client()
            .and_then(|c| c.status(&unit, self.deadline))
            .map(Into::into)
            .map_err(Into::into)
    }

    fn run(
        &mut self,
        unit: String,
        action: wit::Action,
    ) -> Result<wit::UnitStatus, wit::CapabilityError> {
        let action = match action {
            wit::Action::Start => UnitAction::Start,
            wit::Action::Stop => UnitAction::Stop,
            wit::Action::Restart => UnitAction::Restart,
            wit::Action::Reload => UnitAction::Reload,
            wit::Action::TryReloadOrRestart => UnitAction::TryReloadOrRestart,
        };
        self.client()
            .and_then(|c| c.run(&unit, action, self.deadline))
            .map(Into::into)
            .map_err(Into::into)
    }

    fn daemon_reload(&mut self) -> Result<(), wit::CapabilityError> {
        self.client()
            .and_then(|c| c.daemon_reload(self.deadline))
            .map_err(Into::into)
    }

    fn enable(&mut self, unit: String) -> Result<bool, wit::CapabilityError> {
        self.client()
            .and_then(|c| c.enable(&unit, self.deadline))
            .map_err(Into::into)
    }

    fn disable(&mut self, unit: String) -> Result<bool, wit::CapabilityError> {
        self.client()
            .and_then(|c| c.disable(&unit, self.deadline))
            .map_err(Into::into)
    }
}

/// Link phase: the `systemd` import, on the state `state` projects out of the store's
/// data.
pub(crate) fn add_to_linker<T: 'static>(
    linker: &mut Linker<T>,
    state: fn(&mut T) -> &mut SystemdState,
) -> Result<()> {
    wit::add_to_linker::<T, HasSelf<SystemdState>>(linker, state)
        .map_err(|e| Error::Engine(format!("linking the systemd import: {e:#}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state(active: &str) -> UnitStatus {
        UnitStatus {
            name: "x.service".into(),
            active_state: active.into(),
            ..UnitStatus::default()
        }
    }

    #[test]
    fn a_job_succeeds_when_the_unit_ends_where_it_should() {
        assert!(
            UnitAction::Restart
                .check_result(&state("active"), "success")
                .is_ok()
        );
        assert!(
            UnitAction::Start
                .check_result(&state("inactive"), "success")
                .is_ok(),
            "a oneshot service that ran"
        );
        let e = UnitAction::Restart
            .check_result(&state("failed"), "exit-code")
            .expect_err("failed");
        assert!(
            matches!(&e, CapabilityError::Failed(m) if m.contains("ActiveState=failed") && m.contains("Result=exit-code")),
            "{e}"
        );
        assert!(
            UnitAction::Stop
                .check_result(&state("inactive"), "success")
                .is_ok()
        );
        assert!(
            UnitAction::Stop
                .check_result(&state("active"), "success")
                .is_err()
        );
        assert!(
            UnitAction::Reload
                .check_result(&state("inactive"), "success")
                .is_err()
        );
        assert!(
            UnitAction::TryReloadOrRestart
                .check_result(&state("inactive"), "")
                .is_ok()
        );
    }
}

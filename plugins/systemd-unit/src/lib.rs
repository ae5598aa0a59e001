//! systemd-unit: the built-in hostplug plugin for systemd units.
//!
//! Methods (parameters in [`params`]):
//!
//! - `status`: a unit's state (read-only).
//! - `start`, `stop`: idempotent — nothing happens (`changed: false`) when the unit is
//!   already active, or already inactive.
//! - `restart`, `reload`: always act (`changed: true`).
//! - `daemon-reload`: systemd reads its unit files and drop-ins again.
//! - `ensure-drop-in`: `/etc/systemd/system/<unit>.d/<name>.conf` with the given
//!   content; only when the file changed: `daemon-reload`, then the unit is restarted
//!   (or reloaded, per `onChange`).
//! - `ensure-unit-file`: the same for `/etc/systemd/system/<unit>`.
//! - `remove-drop-in`: deletes the drop-in; only when it existed: `daemon-reload` and
//!   the restart.
//!
//! Every mutating method reports `changed` the way etc-file does (a repeated call
//! reports `false` and restarts nothing) with a unified diff of the files it edits. In a
//! dry run it reports the diff and what it would do (`"would restart chrony.service"`)
//! and changes nothing: it only reads the unit's state, and the host refuses every other
//! systemd call in a dry run anyway. Which units it may touch is the HostPlugin's
//! `spec.capabilities.systemd`; an unknown unit is `not-found` naming it.

#![warn(missing_docs)]

pub mod params;

use std::path::{Path, PathBuf};

use hostplug_sdk::fs::{self, EditOptions, WriteStrategy};
use hostplug_sdk::systemd::{self, Action, UnitStatus};
use hostplug_sdk::{
    Context, Definition, Error, NoParams, Outcome, Plugin, Result, export_plugin, log,
};
use serde::Serialize;

use crate::params::OnChange;

/// Where unit files and drop-ins of the administrator live.
pub const UNIT_DIR: &str = "/etc/systemd/system";

/// Mode of a drop-in directory the plugin creates: 0755, as systemctl edit makes it.
const DROP_IN_DIR_MODE: u32 = 0o755;

/// The systemd-unit plugin.
#[derive(Debug)]
pub struct SystemdUnit;

impl Plugin for SystemdUnit {
    fn definition() -> Definition {
        Definition::new(
            "systemd-unit",
            env!("CARGO_PKG_VERSION"),
            "systemd units: status, start, stop, restart, reload, daemon-reload, and drop-ins \
             and unit files under /etc/systemd/system with a restart only when they changed.",
        )
        .read_only("status", "Reads a unit's state: ActiveState, SubState, MainPID, timestamps, unit file state.", status)
        .mutating("start", "Starts a unit (nothing to do when it is active).", start)
        .mutating("stop", "Stops a unit (nothing to do when it is inactive).", stop)
        .mutating("restart", "Restarts a unit (starts it when it is not running).", restart)
        .mutating("reload", "Reloads a unit's configuration (the unit must support it).", reload)
        .mutating("daemon-reload", "Makes systemd read its unit files and drop-ins again.", daemon_reload)
        .mutating(
            "ensure-drop-in",
            "Makes sure /etc/systemd/system/<unit>.d/<name>.conf has the given content; when it changed, daemon-reload and restart the unit.",
            ensure_drop_in,
        )
        .mutating(
            "ensure-unit-file",
            "Makes sure /etc/systemd/system/<unit> has the given content; when it changed, daemon-reload and restart the unit.",
            ensure_unit_file,
        )
        .mutating(
            "remove-drop-in",
            "Removes /etc/systemd/system/<unit>.d/<name>.conf; when it existed, daemon-reload and restart the unit.",
            remove_drop_in,
        )
    }
}

export_plugin!(SystemdUnit);

/// A unit's state as the outputs show it.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct State {
    /// The unit.
    pub unit: String,
    /// `loaded`, `masked`, …
    pub load_state: String,
    /// `active`, `inactive`, `failed`, …
    pub active_state: String,
    /// `running`, `dead`, `exited`, …
    pub sub_state: String,
    /// The main process (0: none).
    pub main_pid: u32,
    /// When it last became active, µs since the Unix epoch (0: never).
    pub active_enter_timestamp: u64,
    /// When it last stopped being active, µs since the Unix epoch (0: never).
    pub active_exit_timestamp: u64,
    /// `enabled`, `disabled`, `static`, …
    pub unit_file_state: String,
    /// The unit file.
    pub fragment_path: String,
    /// The drop-ins in effect.
    pub drop_in_paths: Vec<String>,
    /// A unit file or drop-in changed since systemd read it.
    pub need_daemon_reload: bool,
}

impl From<UnitStatus> for State {
    fn from(s: UnitStatus) -> Self {
        Self {
            unit: s.name,
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

/// Output of `start`, `stop`, `restart`, `reload` and `daemon-reload`.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct ActionOutput {
    /// The unit (none for `daemon-reload`).
    unit: Option<String>,
    /// The action.
    action: &'static str,
    /// What happened, or in a dry run what would: `restarted chrony.service`,
    /// `would restart chrony.service`, `chrony.service is already active`.
    message: String,
    /// The unit's state before.
    before: Option<State>,
    /// The unit's state after (none in a dry run or when nothing was done).
    after: Option<State>,
}

/// Output of `ensure-drop-in`, `ensure-unit-file` and `remove-drop-in`.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct FileOutput {
    /// The file.
    path: String,
    /// The unit.
    unit: String,
    /// Whether the file changed (in a dry run: would change).
    changed: bool,
    /// Whether systemd was (would be) reloaded.
    daemon_reload: bool,
    /// What was (would be) done to the unit: `restart`, `reload`,
    /// `try-reload-or-restart`, or none.
    unit_action: Option<&'static str>,
    /// What happened, or in a dry run what would, e.g. `would daemon-reload and restart
    /// chrony.service`; `unchanged` when the file already held the content.
    message: String,
    /// The unit's state before (none for a unit that did not exist).
    before: Option<State>,
    /// The unit's state after (none in a dry run or when nothing was done).
    after: Option<State>,
}

/// Checks a unit name before it becomes part of a path: the unit-name characters only
/// (no `/`), not starting with `.`.
fn check_unit(unit: &str) -> Result<()> {
    let ok = !unit.is_empty()
        && unit.len() <= 255
        && !unit.starts_with('.')
        && unit
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, ':' | '_' | '.' | '@' | '\\' | '-'))
        && unit.contains('.');
    if ok {
        Ok(())
    } else {
        Err(Error::invalid_params(format!(
            "unit: {unit:?} is not a unit name such as chrony.service"
        )))
    }
}

/// The drop-in's file name for `name` (`.conf` added unless given).
fn drop_in_file(name: &str) -> Result<String> {
    let stem = name.strip_suffix(".conf").unwrap_or(name);
    let ok = !stem.is_empty()
        && stem.len() <= 100
        && !stem.starts_with('.')
        && stem
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '@' | '-'));
    if ok {
        Ok(format!("{stem}.conf"))
    } else {
        Err(Error::invalid_params(format!(
            "name: {name:?} is not a drop-in name (letters, digits, _ . @ -)"
        )))
    }
}

fn drop_in_dir(unit: &str) -> PathBuf {
    PathBuf::from(format!("{UNIT_DIR}/{unit}.d"))
}

fn status(p: params::Unit, _cx: &Context) -> Result<Outcome> {
    check_unit(&p.unit)?;
    let state = State::from(systemd::status(&p.unit)?);
    Ok(Outcome::unchanged(state))
}

/// `action` on `unit`: unless `needed` says the unit is already where the action would
/// take it; in a dry run only reported.
fn act(
    cx: &Context,
    unit: &str,
    action: Action,
    name: &'static str,
    needed: impl Fn(&State) -> Option<String>,
) -> Result<Outcome> {
    check_unit(unit)?;
    let before = State::from(systemd::status(unit)?);
    if let Some(why) = needed(&before) {
        return Ok(Outcome::unchanged(ActionOutput {
            unit: Some(unit.to_owned()),
            action: name,
            message: why,
            before: Some(before),
            after: None,
        }));
    }
    if cx.dry_run() {
        let message = format!("would {name} {unit}");
        log::info(&message);
        return Ok(Outcome::changed(ActionOutput {
            unit: Some(unit.to_owned()),
            action: name,
            message,
            before: Some(before),
            after: None,
        }));
    }
    let after = State::from(systemd::run(unit, action)?);
    log::info(format!(
        "{name} {unit}: MainPID {} → {}",
        before.main_pid, after.main_pid
    ));
    Ok(Outcome::changed(ActionOutput {
        unit: Some(unit.to_owned()),
        action: name,
        message: format!("{} {unit}", past(name)),
        before: Some(before),
        after: Some(after),
    }))
}

/// The past tense of an action, for messages.
fn past(action: &str) -> &'static str {
    match action {
        "start" => "started",
        "stop" => "stopped",
        "restart" => "restarted",
        "reload" => "reloaded",
        _ => "done:",
    }
}

fn start(p: params::Unit, cx: &Context) -> Result<Outcome> {
    act(cx, &p.unit, Action::Start, "start", |s| {
        (s.active_state == "active").then(|| format!("{} is already active", s.unit))
    })
}

fn stop(p: params::Unit, cx: &Context) -> Result<Outcome> {
    act(cx, &p.unit, Action::Stop, "stop", |s| {
        matches!(s.active_state.as_str(), "inactive" | "failed")
            .then(|| format!("{} is already {}", s.unit, s.active_state))
    })
}

fn restart(p: params::Unit, cx: &Context) -> Result<Outcome> {
    act(cx, &p.unit, Action::Restart, "restart", |_| None)
}

fn reload(p: params::Unit, cx: &Context) -> Result<Outcome> {
    act(cx, &p.unit, Action::Reload, "reload", |_| None)
}

fn daemon_reload(_: NoParams, cx: &Context) -> Result<Outcome> {
    let message = if cx.dry_run() {
        "would daemon-reload".to_owned()
    } else {
        systemd::daemon_reload()?;
        "daemon-reload done".to_owned()
    };
    Ok(Outcome::changed(ActionOutput {
        unit: None,
        action: "daemon-reload",
        message,
        before: None,
        after: None,
    }))
}

/// What `on_change` does to the unit, as a job and its name.
fn unit_job(on_change: OnChange) -> Option<(Action, &'static str)> {
    match on_change {
        OnChange::Restart => Some((Action::Restart, "restart")),
        OnChange::TryReloadOrRestart => Some((Action::TryReloadOrRestart, "try-reload-or-restart")),
        OnChange::Reload => Some((Action::Reload, "reload")),
        OnChange::None => None,
    }
}

/// After a file of `unit` changed (or, in a dry run, would): daemon-reload and the
/// `on_change` job; the output either way.
fn follow_up(
    cx: &Context,
    path: &str,
    unit: &str,
    changed: bool,
    on_change: OnChange,
    before: Option<State>,
) -> Result<FileOutput> {
    let job = unit_job(on_change);
    let mut out = FileOutput {
        path: path.to_owned(),
        unit: unit.to_owned(),
        changed,
        daemon_reload: changed,
        unit_action: if changed { job.map(|(_, n)| n) } else { None },
        message: "unchanged".to_owned(),
        before,
        after: None,
    };
    if !changed {
        return Ok(out);
    }
    let what = match job {
        Some((_, name)) => format!("daemon-reload and {name} {unit}"),
        None => "daemon-reload".to_owned(),
    };
    if cx.dry_run() {
        out.message = format!("would {what}");
        log::info(format!("{path}: {}", out.message));
        return Ok(out);
    }
    systemd::daemon_reload()?;
    if let Some((action, _)) = job {
        out.after = Some(State::from(systemd::run(unit, action)?));
    }
    out.message = format!("{what}: done");
    log::info(format!("{path}: {}", out.message));
    Ok(out)
}

fn write_file(cx: &Context, path: &Path, content: &str) -> Result<fs::TextEdit> {
    fs::edit_text(
        path,
        EditOptions {
            dry_run: cx.dry_run(),
            backup: false,
            strategy: WriteStrategy::Atomic,
            mode: Some(0o644),
        },
        |_| Ok(Some(content.to_owned())),
    )
}

fn ensure_drop_in(p: params::EnsureDropIn, cx: &Context) -> Result<Outcome> {
    check_unit(&p.unit)?;
    let file = drop_in_file(&p.name)?;
    // An unknown unit is `not-found` naming it, before anything is written.
    let before = State::from(systemd::status(&p.unit)?);
    let dir = drop_in_dir(&p.unit);
    if !cx.dry_run() {
        fs::create_dir(&dir, DROP_IN_DIR_MODE)?;
    }
    let path = dir.join(file);
    let edit = write_file(cx, &path, &p.content)?;
    let out = follow_up(
        cx,
        &path.to_string_lossy(),
        &p.unit,
        edit.changed,
        p.on_change,
        Some(before),
    )?;
    Ok(Outcome::new(edit.changed, out).with_diff(edit.diff))
}

fn ensure_unit_file(p: params::EnsureUnitFile, cx: &Context) -> Result<Outcome> {
    check_unit(&p.unit)?;
    // A new unit has no state yet; any other error (a unit outside the patterns) stops
    // here, before anything is written.
    let before = match systemd::status(&p.unit) {
        Ok(s) => Some(State::from(s)),
        Err(Error::NotFound(_)) => None,
        Err(e) => return Err(e),
    };
    let path = PathBuf::from(format!("{UNIT_DIR}/{}", p.unit));
    let edit = write_file(cx, &path, &p.content)?;
    let out = follow_up(
        cx,
        &path.to_string_lossy(),
        &p.unit,
        edit.changed,
        p.on_change,
        before,
    )?;
    Ok(Outcome::new(edit.changed, out).with_diff(edit.diff))
}

fn remove_drop_in(p: params::RemoveDropIn, cx: &Context) -> Result<Outcome> {
    check_unit(&p.unit)?;
    let file = drop_in_file(&p.name)?;
    let before = State::from(systemd::status(&p.unit)?);
    let path = drop_in_dir(&p.unit).join(file);
    let old = fs::read_text(&path)?;
    let existed = old.is_some();
    if existed && !cx.dry_run() {
        fs::remove_file(&path)?;
    }
    let diff = hostplug_sdk::diff::unified(&path.to_string_lossy(), old.as_deref(), None);
    let out = follow_up(
        cx,
        &path.to_string_lossy(),
        &p.unit,
        existed,
        p.on_change,
        Some(before),
    )?;
    Ok(Outcome::new(existed, out).with_diff(diff))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_that_would_leave_the_unit_directory_are_refused() {
        for bad in ["", "../x.service", "a/b.service", ".service", "x"] {
            assert!(check_unit(bad).is_err(), "{bad:?}");
        }
        assert!(check_unit("chrony.service").is_ok());
        assert_eq!(
            drop_in_file("10-server").ok().as_deref(),
            Some("10-server.conf")
        );
        assert_eq!(
            drop_in_file("10-server.conf").ok().as_deref(),
            Some("10-server.conf")
        );
        for bad in ["", "../x", "a/b", ".hidden", "a b"] {
            assert!(drop_in_file(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn every_method_has_a_schema_and_says_whether_it_mutates() {
        let d = SystemdUnit::definition();
        let names: Vec<_> = d
            .methods()
            .iter()
            .map(|m| (m.name().to_owned(), m.mutates()))
            .collect();
        assert_eq!(
            names,
            [
                ("status", false),
                ("start", true),
                ("stop", true),
                ("restart", true),
                ("reload", true),
                ("daemon-reload", true),
                ("ensure-drop-in", true),
                ("ensure-unit-file", true),
                ("remove-drop-in", true),
            ]
            .map(|(n, m)| (n.to_owned(), m))
        );
        let ensure = d
            .methods()
            .iter()
            .find(|m| m.name() == "ensure-drop-in")
            .map(|m| m.params_schema().to_owned())
            .unwrap_or_default();
        for field in ["unit", "name", "content", "onChange"] {
            assert!(ensure.contains(field), "{field}: {ensure}");
        }
    }
}

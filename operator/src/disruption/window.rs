//! Maintenance windows (`spec.disruption.maintenanceWindows`): when the nodes of a
//! disruptive task may begin their cycle. Each window opens at every time its cron
//! `schedule` names in its `timeZone` and stays open for its `duration`; any one open
//! window is enough.
//!
//! Pure: [`parse`] checks a task's windows (errors name the field and the problem) and
//! [`state`] says, for a given instant, whether a window is open and until when, or when
//! the next one opens. The rollout gates on it ([`crate::rollout`]); nothing here
//! reads a clock or talks to the API server.

use cronexpr::Crontab;
use k8s_openapi::jiff::{SignedDuration, Timestamp, tz::TimeZone};

use hostplug_api::call::Invalid;
use hostplug_api::disruption::{
    DisruptionPhase, MAX_MAINTENANCE_WINDOWS, MAX_WINDOW_DURATION_SECONDS,
    MIN_WINDOW_DURATION_SECONDS, MaintenanceWindow, NodeDisruption,
};

/// A window, parsed.
#[derive(Debug, Clone)]
pub struct Window {
    crontab: Crontab,
    duration: SignedDuration,
    /// `<schedule> (<timeZone>)`, for messages.
    label: String,
}

/// Whether the windows allow a cycle to begin now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WindowState {
    /// A window is open until `closes`.
    Open {
        /// When the open window (the one open longest from now) closes.
        closes: Timestamp,
    },
    /// No window is open; the next opens at `opens` (`None`: none opens within the
    /// four years the cron library looks ahead).
    Closed {
        /// When the next window opens.
        opens: Option<Timestamp>,
        /// Which one, `<schedule> (<timeZone>)`.
        window: String,
    },
}

fn field(i: usize, name: &str) -> String {
    format!("spec.disruption.maintenanceWindows[{i}].{name}")
}

/// Parses a task's windows; an error names the field and the problem.
pub fn parse(windows: &[MaintenanceWindow]) -> Result<Vec<Window>, Invalid> {
    if windows.len() > MAX_MAINTENANCE_WINDOWS {
        return Err(Invalid::new(
            "spec.disruption.maintenanceWindows",
            format!(
                "{} windows; at most {MAX_MAINTENANCE_WINDOWS}",
                windows.len()
            ),
        ));
    }
    windows
        .iter()
        .enumerate()
        .map(|(i, w)| {
            let fields = w.schedule.split_whitespace().count();
            if fields != 5 {
                return Err(Invalid::new(
                    field(i, "schedule"),
                    format!(
                        "{:?} has {fields} fields; a cron expression has five: minute, hour, \
                         day of month, month, day of week (e.g. \"0 2 * * SAT\")",
                        w.schedule
                    ),
                ));
            }
            if let Err(e) = TimeZone::get(&w.time_zone) {
                return Err(Invalid::new(
                    field(i, "timeZone"),
                    format!(
                        "{:?} is not an IANA time zone (e.g. \"Europe/Berlin\", \"UTC\"): {e}",
                        w.time_zone
                    ),
                ));
            }
            let crontab = cronexpr::parse_crontab(&format!("{} {}", w.schedule, w.time_zone))
                .map_err(|e| {
                    Invalid::new(
                        field(i, "schedule"),
                        format!("{:?} is not a cron expression: {e}", w.schedule),
                    )
                })?;
            let duration = parse_duration(&w.duration)
                .map_err(|problem| Invalid::new(field(i, "duration"), problem))?;
            // A schedule that names no time (e.g. February 30th) never opens.
            if crontab.find_next(Timestamp::now()).is_err() {
                return Err(Invalid::new(
                    field(i, "schedule"),
                    format!("{:?} names no time in the next four years", w.schedule),
                ));
            }
            Ok(Window {
                crontab,
                duration,
                label: format!("{} ({})", w.schedule.trim(), w.time_zone),
            })
        })
        .collect()
}

/// `2h`, `90m`, `1h30m`, `PT2H`: between [`MIN_WINDOW_DURATION_SECONDS`] and
/// [`MAX_WINDOW_DURATION_SECONDS`].
fn parse_duration(text: &str) -> Result<SignedDuration, String> {
    let d: SignedDuration = text.trim().parse().map_err(|e| {
        format!("{text:?} is not a duration (e.g. \"2h\", \"90m\", \"1h30m\"): {e}")
    })?;
    let secs = d.as_secs();
    if !(MIN_WINDOW_DURATION_SECONDS..=MAX_WINDOW_DURATION_SECONDS).contains(&secs) {
        return Err(format!(
            "{text:?} is {secs}s; a window lasts from 1 minute to 168 hours"
        ));
    }
    Ok(d)
}

/// Whether `windows` let a cycle begin at `now`; `None` when there are none (always).
pub fn state(windows: &[Window], now: Timestamp) -> Option<WindowState> {
    if windows.is_empty() {
        return None;
    }
    let mut closes: Option<Timestamp> = None;
    let mut next: Option<(Timestamp, &str)> = None;
    for w in windows {
        // The first opening after `now - duration`: at or before `now`, it is open.
        let Some(since) = now.checked_sub(w.duration).ok() else {
            continue;
        };
        let Ok(opening) = w.crontab.find_next(since) else {
            continue;
        };
        let opening = opening.timestamp();
        if opening <= now {
            let end = opening.checked_add(w.duration).unwrap_or(Timestamp::MAX);
            closes = Some(closes.map_or(end, |c| c.max(end)));
        } else if next.is_none_or(|(t, _)| opening < t) {
            next = Some((opening, &w.label));
        }
    }
    Some(match closes {
        Some(closes) => WindowState::Open { closes },
        None => WindowState::Closed {
            opens: next.map(|(t, _)| t),
            window: next.map_or_else(
                || windows.first().map(|w| w.label.clone()).unwrap_or_default(),
                |(_, l)| l.to_owned(),
            ),
        },
    })
}

/// The sentence for a node that waits for a window.
pub fn waiting_message(opens: Option<Timestamp>, window: &str) -> String {
    match opens {
        Some(t) => format!(
            "waiting for the maintenance window: nothing disruptive starts outside \
             spec.disruption.maintenanceWindows; the next opens at {t} ({window})"
        ),
        None => format!("waiting for the maintenance window: {window} opens not within four years"),
    }
}

/// What holds a node whose cycle may not begin in `state`: `WaitingForWindow` with the
/// next opening while every window is closed, nothing otherwise.
pub fn hold(state: Option<&WindowState>) -> Option<NodeDisruption> {
    match state {
        Some(WindowState::Closed { opens, window }) => Some(NodeDisruption {
            phase: DisruptionPhase::WaitingForWindow,
            message: Some(waiting_message(*opens, window)),
        }),
        _ => None,
    }
}

//! Disruption: what a HostTask allows around its call on a node (`spec.disruption`:
//! cordon and drain before, a reboot after), and the record the operator keeps on the
//! Node while it takes a node through that cycle ([`MaintenanceMark`], the
//! [`MAINTENANCE_ANNOTATION`]).
//!
//! The mark is the contract between the operator processes that follow each other as
//! leader: each step is written on the Node *before* it is taken, so a new leader
//! continues where its predecessor stopped, and a node is never rebooted twice for one
//! task generation (the mark holds the boot ID seen before the reboot; a different one
//! means it happened). Console and `kubectl hostplug` may read it to show why a node
//! waits.
//!
//! Types only: nothing here talks to the API server or a node.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// The Node annotation that holds a [`MaintenanceMark`] as JSON while a node is in a
/// disruption cycle; removed when the cycle ends.
pub const MAINTENANCE_ANNOTATION: &str = "hostplug.dev/maintenance";

/// Default of `spec.disruption.drainTimeoutSeconds`: 300 s, kubectl drain's habit of
/// minutes rather than seconds — long enough for Pods with the default 30 s grace period
/// to go and for a PodDisruptionBudget's replacement replica to become Ready elsewhere.
pub const DEFAULT_DRAIN_TIMEOUT_SECONDS: i32 = 300;

/// Longest `drainTimeoutSeconds`: one hour. A drain that cannot finish in an hour is
/// blocked (a PDB that cannot be satisfied), and the node stays cordoned meanwhile.
pub const MAX_DRAIN_TIMEOUT_SECONDS: i32 = 3600;

/// Default of `spec.disruption.rebootTimeoutSeconds`: 600 s, for a machine's firmware,
/// boot loader, systemd, kubelet and the worker Pod to come back; a physical server's
/// POST alone may take minutes.
pub const DEFAULT_REBOOT_TIMEOUT_SECONDS: i32 = 600;

/// Longest `rebootTimeoutSeconds`: two hours.
pub const MAX_REBOOT_TIMEOUT_SECONDS: i32 = 7200;

/// When a node is rebooted after its call (`spec.disruption.reboot`).
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema, Default)]
pub enum RebootPolicy {
    /// Only when the plugin's call asks for a reboot.
    #[default]
    IfRequested,
    /// After every successful call that is not a dry run.
    Always,
    /// Never; a requested reboot is reported ("reboot required") and not done.
    Never,
}

impl RebootPolicy {
    /// Every value.
    pub const ALL: [RebootPolicy; 3] = [Self::IfRequested, Self::Always, Self::Never];

    /// The spelling in a HostTask.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::IfRequested => "IfRequested",
            Self::Always => "Always",
            Self::Never => "Never",
        }
    }
}

text_form!(
    RebootPolicy,
    "reboot policy",
    "IfRequested, Always or Never"
);

/// What a task may do to a node around its call (`spec.disruption`). Unset: nothing —
/// the call runs on a schedulable node under its workloads and no reboot happens.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DisruptionSpec {
    /// Cordon the node (only if it was schedulable; it is uncordoned afterwards only
    /// then) and evict its Pods through the Eviction API before the call, as
    /// `kubectl drain` does: PodDisruptionBudgets are respected, DaemonSet Pods, mirror
    /// Pods and hostplug's own workers stay.
    #[serde(default)]
    pub drain: bool,
    /// Whether the node is rebooted after a successful call.
    #[serde(default)]
    pub reboot: RebootPolicy,
    /// How long the drain may take before the node fails (naming the Pod and the
    /// PodDisruptionBudget that blocked it) and is uncordoned.
    #[serde(default = "default_drain_timeout")]
    #[schemars(range(min = 1, max = MAX_DRAIN_TIMEOUT_SECONDS))]
    pub drain_timeout_seconds: i32,
    /// How long a reboot may take until the node reports a new boot ID, is Ready and
    /// its worker answers.
    #[serde(default = "default_reboot_timeout")]
    #[schemars(range(min = 1, max = MAX_REBOOT_TIMEOUT_SECONDS))]
    pub reboot_timeout_seconds: i32,
    /// When nodes may start their cycle (recurring windows; any one open is enough).
    /// Empty: at any time. Outside every window no node is drained or rebooted, and no
    /// call of this task starts (its effect may need the reboot); a node whose cycle
    /// began before a window closed finishes it, then the rollout waits for the next
    /// opening.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = MAX_MAINTENANCE_WINDOWS))]
    pub maintenance_windows: Vec<MaintenanceWindow>,
}

/// Most `spec.disruption.maintenanceWindows`: 16, a window per weekday and then some;
/// each is evaluated on every reconcile of the task.
pub const MAX_MAINTENANCE_WINDOWS: usize = 16;

/// Longest `duration` of a maintenance window: 7 days (`168h`), a weekly schedule that is
/// always open; longer would overlap itself.
pub const MAX_WINDOW_DURATION_SECONDS: i64 = 7 * 24 * 3600;

/// Shortest `duration` of a maintenance window: 1 minute, cron's resolution.
pub const MIN_WINDOW_DURATION_SECONDS: i64 = 60;

/// A recurring maintenance window: it opens at each time `schedule` names, in
/// `timeZone`, and stays open for `duration`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct MaintenanceWindow {
    /// When the window opens: a cron expression of five fields (minute, hour, day of
    /// month, month, day of week), e.g. `0 2 * * SAT` (Saturdays at 02:00).
    pub schedule: String,
    /// How long it stays open: `2h`, `90m`, `1h30m` (1 minute to 168 hours).
    pub duration: String,
    /// The IANA time zone of `schedule`, e.g. `Europe/Berlin` (daylight saving time
    /// included). Default: `UTC`.
    #[serde(default = "default_time_zone")]
    pub time_zone: String,
}

fn default_time_zone() -> String {
    "UTC".to_owned()
}

fn default_drain_timeout() -> i32 {
    DEFAULT_DRAIN_TIMEOUT_SECONDS
}

fn default_reboot_timeout() -> i32 {
    DEFAULT_REBOOT_TIMEOUT_SECONDS
}

impl Default for DisruptionSpec {
    fn default() -> Self {
        Self {
            drain: false,
            reboot: RebootPolicy::default(),
            drain_timeout_seconds: DEFAULT_DRAIN_TIMEOUT_SECONDS,
            reboot_timeout_seconds: DEFAULT_REBOOT_TIMEOUT_SECONDS,
            maintenance_windows: Vec::new(),
        }
    }
}

impl DisruptionSpec {
    /// Whether a node needs a cycle at all for a call that is (or is not) a dry run: a
    /// drain, or a reboot that may happen. A dry run disrupts nothing.
    pub fn disrupts(&self, dry_run: bool) -> bool {
        !dry_run && (self.drain || self.reboot != RebootPolicy::Never)
    }
}

/// The step of a node's cycle, as recorded on the Node before it is taken.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum CycleStep {
    /// Cordoned (if it was schedulable) and its Pods are being evicted.
    Draining,
    /// The task's call is being sent (the worker answers a repeat of its invocation id
    /// with the stored outcome, so resuming this step never runs the plugin twice).
    Applying,
    /// A reboot was (or is being) asked for; `bootId` is the boot before it.
    Rebooting,
    /// The node is being handed back: uncordoned if we cordoned it, mark removed.
    Restoring,
}

impl CycleStep {
    /// The spelling in the mark.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Draining => "Draining",
            Self::Applying => "Applying",
            Self::Rebooting => "Rebooting",
            Self::Restoring => "Restoring",
        }
    }
}

/// The operator's record on a Node in a disruption cycle (the JSON value of
/// [`MAINTENANCE_ANNOTATION`]). One task generation holds a node at a time.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct MaintenanceMark {
    /// `<namespace>/<name>` of the HostTask, or `HostState/<name>` for a HostState's
    /// correction.
    pub task: String,
    /// Its uid.
    pub uid: String,
    /// Its generation.
    pub generation: i64,
    /// The step being taken.
    pub step: CycleStep,
    /// Whether the operator cordoned the node (it was schedulable): only then is it
    /// uncordoned at the end.
    pub cordoned: bool,
    /// When the current step began (RFC 3339); the drain and reboot timeouts count
    /// from it.
    pub since: String,
    /// From `Rebooting` on: the node's boot ID before the reboot.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub boot_id: Option<String>,
    /// From `Rebooting` on: whether the call changed the node (the outcome's details
    /// may not survive the reboot; this does).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub changed: Option<bool>,
    /// Why the reboot was asked for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// In `Restoring`: why the node failed, if it did (the node is handed back either
    /// way).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure: Option<String>,
}

impl MaintenanceMark {
    /// Whether this mark belongs to that task generation.
    pub fn is_of(&self, uid: &str, generation: i64) -> bool {
        self.uid == uid && self.generation == generation
    }

    /// The mark as the annotation's value.
    pub fn to_annotation(&self) -> String {
        // A struct of strings, numbers and options always serializes.
        serde_json::to_string(self).unwrap_or_default()
    }

    /// The mark from the annotation's value; a malformed one is an error naming the
    /// annotation (someone edited it by hand).
    pub fn from_annotation(value: &str) -> Result<Self, crate::Error> {
        serde_json::from_str(value).map_err(|e| crate::Error::InvalidValue {
            what: "node annotation hostplug.dev/maintenance",
            input: format!("{}: {e}", value.chars().take(80).collect::<String>()),
            expected: "the JSON the operator writes (remove the annotation to release the node)",
        })
    }
}

/// Where a node of a disruptive task is in its cycle, or why it waits to begin it
/// (`status.nodes[].disruption.phase` of a HostTask).
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum DisruptionPhase {
    /// Not started: no maintenance window is open (the message says when one opens).
    WaitingForWindow,
    /// Not started: the fleet-wide budget of nodes in a cycle at once is used (the
    /// operator's `--max-disrupted-nodes`); the message names the nodes holding it.
    WaitingForBudget,
    /// Cordoned; its Pods are being evicted.
    Draining,
    /// The task's call is running.
    Applying,
    /// A reboot was asked for; waiting for the node to come back with a new boot ID.
    Rebooting,
    /// Rebooted (a new boot ID); waiting for the node to be Ready and its worker back.
    WaitingForReady,
    /// Being handed back: uncordoned if hostplug cordoned it.
    Restoring,
}

impl DisruptionPhase {
    /// The spelling in the status.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::WaitingForWindow => "WaitingForWindow",
            Self::WaitingForBudget => "WaitingForBudget",
            Self::Draining => "Draining",
            Self::Applying => "Applying",
            Self::Rebooting => "Rebooting",
            Self::WaitingForReady => "WaitingForReady",
            Self::Restoring => "Restoring",
        }
    }
}

/// A node's cycle as a HostTask's status shows it (`status.nodes[].disruption`), while
/// the node waits for or goes through it; absent otherwise.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct NodeDisruption {
    /// The step, or why the node waits.
    pub phase: DisruptionPhase,
    /// Details for people: when the window opens, which nodes hold the budget, the
    /// boot ID before the reboot.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// `GET /v1/node`: what a worker reports about its node.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct NodeInfo {
    /// The kernel's boot ID (`/proc/sys/kernel/random/boot_id`): a new one after every
    /// boot.
    pub boot_id: String,
}

/// `POST /v1/node/reboot`: the operator asks the worker to reboot its node through
/// systemd (never a plugin: no WIT import reaches this).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct RebootRequest {
    /// `<task uid>/<generation>`: a repeat within one boot is answered without a second
    /// reboot.
    pub id: String,
    /// Why, for the node's journal and the worker's log.
    pub reason: String,
}

/// The answer to a [`RebootRequest`] (202).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct RebootAnswer {
    /// The boot the reboot ends.
    pub boot_id: String,
    /// Whether this request id had already been accepted in this boot (nothing new was
    /// asked of systemd).
    pub repeated: bool,
}

/// Longest [`RebootRequest::id`] and [`RebootRequest::reason`]: 512 bytes each, room for a
/// uid, a generation and a sentence; the worker refuses longer ones.
pub const MAX_REBOOT_FIELD_BYTES: usize = 512;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_spec_defaults_and_spellings() {
        let s: DisruptionSpec = serde_json::from_str("{}").expect("test setup");
        assert_eq!(s, DisruptionSpec::default());
        assert!(s.disrupts(false), "IfRequested may reboot");
        assert!(!s.disrupts(true), "a dry run disrupts nothing");
        let never: DisruptionSpec =
            serde_json::from_str(r#"{"reboot":"Never"}"#).expect("test setup");
        assert!(!never.disrupts(false));
        let s: DisruptionSpec =
            serde_json::from_str(r#"{"drain":true,"reboot":"Always","drainTimeoutSeconds":5}"#)
                .expect("test setup");
        assert!(s.drain && s.reboot == RebootPolicy::Always && s.drain_timeout_seconds == 5);
        assert_eq!(
            "Always".parse::<RebootPolicy>().expect("test setup"),
            RebootPolicy::Always
        );
        assert!("always".parse::<RebootPolicy>().is_err());
    }

    #[test]
    fn the_mark_round_trips_and_a_bad_one_names_the_annotation() {
        let m = MaintenanceMark {
            task: "ns/t".into(),
            uid: "u".into(),
            generation: 2,
            step: CycleStep::Rebooting,
            cordoned: true,
            since: "2026-12-07T16:00:00Z".into(),
            boot_id: Some("b1".into()),
            changed: Some(true),
            reason: Some("kernel".into()),
            failure: None,
        };
        let text = m.to_annotation();
        assert!(text.contains(r#""step":"Rebooting""#), "{text}");
        assert_eq!(
            MaintenanceMark::from_annotation(&text).expect("test setup"),
            m
        );
        assert!(m.is_of("u", 2) && !m.is_of("u", 3));
        let e = MaintenanceMark::from_annotation("{")
            .expect_err("must fail")
            .to_string();
        assert!(e.contains("hostplug.dev/maintenance"), "{e}");
    }
}

//! A HostTask's staged rollout (`spec.rollout`): waves of nodes, the gate between two
//! waves (health checks, node Ready, manual approval), and the controls a person sets
//! to pause, resume or cancel it — with what the operator reports about it
//! (`status.rollout`).
//!
//! The controls are spec fields a person (or `kubectl hostplug pause|resume|cancel`)
//! patches; the operator only reads them and never writes the spec. Changing only them
//! does not start a new run of the task ([`run_fingerprint`]).
//!
//! Pure types and functions: the state machine that uses them is the operator's
//! `rollout::step`. Nothing here talks to a cluster or a node.

use std::fmt;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::call::{Invalid, PluginCall};

/// Most waves of one rollout: 20. Each wave ends at a gate a person may have to look at;
/// twenty stops are already more than anyone reviews, and the list stays readable.
pub const MAX_WAVES: usize = 20;
/// Most health checks of one gate: 8. Each is a plugin call on every node of the wave
/// that just ended; a few checks (a unit active, a file parses) say what a gate needs to
/// know, more would mostly slow every wave down.
pub const MAX_HEALTH_CHECKS: usize = 8;
/// Longest JSON value quoted in a failed expectation's message: 200 bytes, enough to
/// show the value a person expected to see without copying a whole file into the status.
pub const MAX_QUOTED_VALUE_BYTES: usize = 200;

/// One entry of `spec.rollout.waves`: where a wave ends, counted from the first node —
/// a number of nodes (`1`) or a percentage of the task's nodes (`"25%"`, rounded up).
/// Each wave holds at least one node; the last wave takes every node left.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(untagged)]
pub enum WaveSize {
    /// A number of nodes, from 1.
    Nodes(i32),
    /// A percentage, `"1%"` to `"100%"`.
    Percent(String),
}

impl JsonSchema for WaveSize {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "WaveSize".into()
    }
    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "x-kubernetes-int-or-string": true,
            "description": "Where the wave ends, counted from the first node: a number of nodes (1) or a percentage of the task's nodes (\"25%\", rounded up)."
        })
    }
}

impl fmt::Display for WaveSize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Nodes(n) => write!(f, "{n}"),
            Self::Percent(p) => write!(f, "{p:?}"),
        }
    }
}

/// A wave size as checked: nodes or percent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Size {
    Nodes(u32),
    Percent(u32),
}

impl WaveSize {
    fn parse(&self) -> Result<Size, String> {
        match self {
            Self::Nodes(n) if *n >= 1 => Ok(Size::Nodes(n.unsigned_abs())),
            Self::Nodes(n) => Err(format!("{n} nodes: a wave holds at least 1 node")),
            Self::Percent(p) => {
                let digits = p.strip_suffix('%').ok_or_else(|| {
                    format!("{p:?} is neither a number of nodes nor a percentage like \"25%\"")
                })?;
                let v: u32 = digits
                    .parse()
                    .map_err(|_| format!("{p:?} is not a percentage like \"25%\""))?;
                match v {
                    0 => Err(format!("{p:?}: a wave holds at least 1% of the nodes")),
                    1..=100 => Ok(Size::Percent(v)),
                    _ => Err(format!("{p:?}: a wave cannot end past 100% of the nodes")),
                }
            }
        }
    }

    /// Where the wave ends among `total` nodes (not yet bumped or capped).
    fn end(size: Size, total: usize) -> usize {
        match size {
            Size::Nodes(n) => usize::try_from(n).unwrap_or(usize::MAX),
            Size::Percent(p) => {
                let p = usize::try_from(p).unwrap_or(100);
                (total * p).div_ceil(100)
            }
        }
    }
}

/// Checks `spec.rollout.waves`: at least one entry, each a number of nodes from 1 or a
/// percentage from 1% to 100%, each ending after the one before (among entries of the
/// same kind; a number and a percentage are compared once the task's nodes are known,
/// and a wave that would be empty gets one node), none after 100%.
pub fn check_waves(waves: &[WaveSize]) -> Result<(), Invalid> {
    const FIELD: &str = "spec.rollout.waves";
    if waves.is_empty() {
        return Err(Invalid::new(
            FIELD,
            "lists no wave; leave it out to run every node in one wave",
        ));
    }
    if waves.len() > MAX_WAVES {
        return Err(Invalid::new(
            FIELD,
            format!("{} waves; at most {MAX_WAVES}", waves.len()),
        ));
    }
    let mut last_nodes: Option<u32> = None;
    let mut last_percent: Option<u32> = None;
    for (i, w) in waves.iter().enumerate() {
        let field = format!("{FIELD}[{i}]");
        let size = w.parse().map_err(|p| Invalid::new(&field, p))?;
        if last_percent == Some(100) {
            return Err(Invalid::new(
                field,
                "comes after a wave ending at \"100%\" and would never run",
            ));
        }
        match size {
            Size::Nodes(n) => {
                if let Some(prev) = last_nodes.filter(|p| *p >= n) {
                    return Err(Invalid::new(
                        field,
                        format!(
                            "{n} does not end after the wave before ({prev}); waves count \
                             from the first node, so each must be larger"
                        ),
                    ));
                }
                last_nodes = Some(n);
            }
            Size::Percent(p) => {
                if let Some(prev) = last_percent.filter(|q| *q >= p) {
                    return Err(Invalid::new(
                        field,
                        format!(
                            "\"{p}%\" does not end after the wave before (\"{prev}%\"); waves \
                             count from the first node, so each must be larger"
                        ),
                    ));
                }
                last_percent = Some(p);
            }
        }
    }
    Ok(())
}

/// Where each wave ends among `total` nodes (cumulative counts, strictly increasing,
/// the last one `total`): each wave gets at least one node, a wave past the last node is
/// dropped, and the last wave takes the rest. Entries that do not parse are skipped
/// (validation refused them before). `total` 0: no wave.
pub fn wave_ends(waves: &[WaveSize], total: usize) -> Vec<usize> {
    let mut ends = Vec::new();
    let mut prev = 0usize;
    for w in waves {
        if prev >= total {
            break;
        }
        let Ok(size) = w.parse() else { continue };
        let end = WaveSize::end(size, total).max(prev + 1).min(total);
        ends.push(end);
        prev = end;
    }
    match ends.last_mut() {
        Some(last) => *last = total,
        None if total > 0 => ends.push(total),
        None => {}
    }
    ends
}

/// What the rollout does when a gate fails or more than `maxFailures` nodes failed.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema, Default)]
pub enum OnFailure {
    /// Stop starting nodes and wait, with the reason in the status and an Event, until
    /// someone resumes (which accepts the wave as it is) or cancels.
    #[default]
    Pause,
    /// Halt as `Pause`, and revert the nodes of the wave that halted to what they were
    /// before this task (issue 26). Not available yet: the operator refuses it (naming
    /// `spec.rollout.onFailure`) until the revert engine lands; the rollout already
    /// tells the operator which nodes to revert (its `RevertWave` action).
    Revert,
}

/// The gate between two waves: everything must hold for the nodes of the wave that
/// ended before the next wave starts.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema, Default)]
#[serde(rename_all = "camelCase")]
pub struct Gate {
    /// Read-only plugin calls run on each node of the wave that ended (those that
    /// succeeded), as dry runs with read-only access; each must succeed and meet its
    /// `expect`. The method must not change the node (its plugin says so).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = MAX_HEALTH_CHECKS))]
    pub checks: Vec<HealthCheck>,
    /// Wait for a person after each gate: the next wave starts only once
    /// `spec.rollout.approvedWave` reaches the wave that ended (`kubectl hostplug
    /// resume TASK`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub approval: bool,
}

/// A health check: a plugin call and, optionally, what its output must hold.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct HealthCheck {
    /// The read-only call (`api`, `method`, `parameter`, `vars`).
    #[serde(flatten)]
    pub call: PluginCall,
    /// What the call's JSON output must hold; unset: success is enough.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expect: Option<Expect>,
}

impl HealthCheck {
    /// The verdict on this check from its call's JSON `output`: what `expect` asks, or
    /// success alone. The one evaluator of health checks (a rollout's gate and a
    /// HostState's checks); a call that failed is a failed check before this.
    pub fn judge(&self, output: &serde_json::Value) -> Result<(), String> {
        self.expect.as_ref().map_or(Ok(()), |e| e.holds(output))
    }
}

/// An assertion on a health check's JSON output.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Expect {
    /// A JSON pointer (RFC 6901) into the output, e.g. `/active`; `""` is the whole
    /// output.
    #[schemars(length(max = 512))]
    pub path: String,
    /// The value found there must equal this JSON value; unset: it must exist.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "crate::crd::any_json")]
    pub equals: Option<serde_json::Value>,
}

impl Expect {
    /// Checks `path` is a JSON pointer.
    pub fn check(&self, field: &str) -> Result<(), Invalid> {
        if self.path.is_empty() || self.path.starts_with('/') {
            Ok(())
        } else {
            Err(Invalid::new(
                format!("{field}.path"),
                format!(
                    "{:?} is not a JSON pointer: it starts with \"/\" (or is \"\" for the \
                     whole output)",
                    self.path
                ),
            ))
        }
    }

    /// Whether `output` meets this expectation; otherwise what was found.
    pub fn holds(&self, output: &serde_json::Value) -> Result<(), String> {
        let quote = |v: &serde_json::Value| {
            let s = v.to_string();
            if s.len() <= MAX_QUOTED_VALUE_BYTES {
                s
            } else {
                let mut end = MAX_QUOTED_VALUE_BYTES;
                while !s.is_char_boundary(end) {
                    end -= 1;
                }
                format!("{}…", &s[..end])
            }
        };
        match (output.pointer(&self.path), &self.equals) {
            (None, _) => Err(format!("the output has no {:?}", self.path)),
            (Some(_), None) => Ok(()),
            (Some(found), Some(want)) if found == want => Ok(()),
            (Some(found), Some(want)) => Err(format!(
                "{:?} is {}, expected {}",
                self.path,
                quote(found),
                quote(want)
            )),
        }
    }
}

/// Where a staged rollout is (`status.rollout.phase`).
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema, Default)]
pub enum RolloutPhase {
    /// Nodes of the current wave run.
    #[default]
    Progressing,
    /// The current wave ended; its gate is being checked.
    Verifying,
    /// The gate held; waiting for `spec.rollout.approvedWave` to reach the wave.
    AwaitingApproval,
    /// A gate failed or too many nodes failed: nothing new starts until resumed
    /// (`approvedWave` reaches the wave) or cancelled. `message` says why.
    Halted,
    /// `spec.rollout.paused`: nodes in flight finish, nothing new starts.
    Paused,
    /// `spec.rollout.cancel`: nodes not started were Skipped.
    Cancelled,
    /// Every node ended.
    Completed,
}

impl RolloutPhase {
    /// Whether the rollout waits on a person before it goes on.
    pub fn waits(self) -> bool {
        matches!(self, Self::AwaitingApproval | Self::Halted | Self::Paused)
    }
}

impl fmt::Display for RolloutPhase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

/// What the operator reports about a staged rollout (`status.rollout`): present when
/// the task has waves, or was paused or cancelled.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema, Default)]
#[serde(rename_all = "camelCase")]
pub struct RolloutStatus {
    /// The wave whose nodes may run now, from 1.
    pub wave: i32,
    /// How many waves the task's nodes fall into.
    pub waves: i32,
    /// Where the rollout is.
    #[serde(default)]
    pub phase: RolloutPhase,
    /// Why it waits (a failed gate names the node, the check and what was found).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// Failed nodes an approval accepted: the failure budget (`maxFailures`) counts
    /// only failures beyond them.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub accepted_failures: i32,
    /// When the current wave's gate started (the wait for its nodes to be Ready counts
    /// from here).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "crate::crd::time_schema")]
    pub gate_started_at: Option<Time>,
    /// One line for `kubectl get`, e.g. `wave 1/2, Halted: gate failed on node1`.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub summary: String,
}

/// A person's control of a task's rollout: `kubectl hostplug pause|resume|cancel` and
/// the console's buttons, one meaning for both.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Control {
    /// Nodes in flight finish; nothing new starts (`spec.rollout.paused`).
    Pause,
    /// Clears `paused` and, when the rollout waits at a gate, approves that wave.
    Resume,
    /// Nodes not started end Skipped (`spec.rollout.cancel`).
    Cancel,
}

/// The fields of `spec.rollout` a [`Control`] sets: `Some(v)` sets the field to `v`
/// (`paused: Some(false)` clears it), `None` leaves it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ControlChange {
    /// `spec.rollout.paused`.
    pub paused: Option<bool>,
    /// `spec.rollout.approvedWave`.
    pub approved_wave: Option<i32>,
    /// `spec.rollout.cancel`.
    pub cancel: Option<bool>,
}

impl Control {
    /// What this control changes, given where the rollout is (`status`), and what it
    /// did in words (`paused`, `resumed (wave 1 approved)`, `cancelled`).
    pub fn change(self, status: Option<&RolloutStatus>) -> (ControlChange, String) {
        match self {
            Self::Pause => (
                ControlChange {
                    paused: Some(true),
                    ..ControlChange::default()
                },
                "paused".into(),
            ),
            Self::Cancel => (
                ControlChange {
                    cancel: Some(true),
                    ..ControlChange::default()
                },
                "cancelled".into(),
            ),
            Self::Resume => {
                let at_gate = status.filter(|r| {
                    matches!(
                        r.phase,
                        RolloutPhase::Halted | RolloutPhase::AwaitingApproval
                    )
                });
                let change = ControlChange {
                    paused: Some(false),
                    approved_wave: at_gate.map(|r| r.wave),
                    cancel: None,
                };
                let did = match at_gate {
                    Some(r) => format!("resumed (wave {} approved)", r.wave),
                    None => "resumed".into(),
                };
                (change, did)
            }
        }
    }
}

impl ControlChange {
    /// Applies the change to a task's `spec.rollout` (made when unset).
    pub fn apply(self, rollout: &mut Option<crate::crd::RolloutSpec>) {
        let r = rollout.get_or_insert_with(crate::crd::RolloutSpec::default);
        if let Some(p) = self.paused {
            r.paused = p;
        }
        if let Some(w) = self.approved_wave {
            r.approved_wave = w;
        }
        if let Some(c) = self.cancel {
            r.cancel = c;
        }
    }
}

fn is_zero(n: &i32) -> bool {
    *n == 0
}

/// The fingerprint of what a run of `spec` does: the sha256 of the spec without the
/// rollout's controls (`paused`, `approvedWave`, `cancel`). A new generation with the
/// same fingerprint only paused, resumed or cancelled the run in progress, which goes
/// on; any other change starts a new run.
pub fn run_fingerprint<S: Serialize>(spec: &S) -> String {
    use sha2::{Digest as _, Sha256};
    let mut v = serde_json::to_value(spec).unwrap_or_default();
    if let Some(r) = v.get_mut("rollout").and_then(|r| r.as_object_mut()) {
        for control in ["paused", "approvedWave", "cancel"] {
            r.remove(control);
        }
    }
    hex::encode(Sha256::digest(v.to_string().as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn waves(v: serde_json::Value) -> Vec<WaveSize> {
        serde_json::from_value(v).unwrap_or_default()
    }

    #[test]
    fn waves_parse_from_numbers_and_percentages() {
        assert_eq!(
            waves(json!([1, "25%", "100%"])),
            vec![
                WaveSize::Nodes(1),
                WaveSize::Percent("25%".into()),
                WaveSize::Percent("100%".into())
            ]
        );
        assert!(check_waves(&waves(json!([1, "25%", "100%"]))).is_ok());
        assert!(check_waves(&waves(json!([2, 5]))).is_ok());
    }

    #[test]
    fn bad_waves_name_the_entry() {
        for (w, field, problem) in [
            (
                json!([0, "100%"]),
                "spec.rollout.waves[0]",
                "at least 1 node",
            ),
            (json!([1, "150%"]), "spec.rollout.waves[1]", "past 100%"),
            (json!(["0%"]), "spec.rollout.waves[0]", "at least 1%"),
            (json!([]), "spec.rollout.waves", "no wave"),
            (json!([3, 2]), "spec.rollout.waves[1]", "does not end after"),
            (
                json!(["50%", "50%"]),
                "spec.rollout.waves[1]",
                "does not end after",
            ),
            (json!(["100%", 1]), "spec.rollout.waves[1]", "never run"),
            (json!(["ten"]), "spec.rollout.waves[0]", "percentage"),
            (json!(["x%"]), "spec.rollout.waves[0]", "percentage"),
            (json!([-1]), "spec.rollout.waves[0]", "at least 1 node"),
        ] {
            let e = check_waves(&waves(w.clone())).expect_err(&w.to_string());
            assert_eq!(e.field, field, "{w}: {e}");
            assert!(e.problem.contains(problem), "{w}: {e}");
        }
    }

    #[test]
    fn wave_ends_give_every_wave_a_node_and_the_last_the_rest() {
        let w = waves(json!([1, "25%", "100%"]));
        assert_eq!(
            wave_ends(&w, 4),
            vec![1, 2, 4],
            "25% of 4 is 1: bumped to 2"
        );
        assert_eq!(wave_ends(&w, 20), vec![1, 5, 20]);
        assert_eq!(wave_ends(&w, 1), vec![1], "one node: one wave");
        assert_eq!(wave_ends(&w, 0), Vec::<usize>::new());
        assert_eq!(wave_ends(&waves(json!([1, "50%"])), 10), vec![1, 10]);
        assert_eq!(wave_ends(&waves(json!([5])), 3), vec![3]);
        assert_eq!(wave_ends(&[], 3), vec![3]);
    }

    #[test]
    fn expectations_compare_json_at_a_pointer() {
        let out = json!({"active": "active", "n": 3});
        let e = |path: &str, equals: Option<serde_json::Value>| Expect {
            path: path.into(),
            equals,
        };
        assert!(e("/active", Some(json!("active"))).holds(&out).is_ok());
        assert!(e("/n", None).holds(&out).is_ok());
        let msg = e("/active", Some(json!("inactive")))
            .holds(&out)
            .expect_err("differs");
        assert_eq!(msg, r#""/active" is "active", expected "inactive""#);
        assert!(e("/missing", None).holds(&out).is_err());
        assert!(
            e("active", None)
                .check("spec.rollout.gate.checks[0].expect")
                .is_err()
        );
    }

    #[test]
    fn the_fingerprint_ignores_only_the_controls() {
        let a = json!({"http": {"api": "x"}, "rollout": {"maxParallel": 1, "waves": [1]}});
        let mut b = a.clone();
        b["rollout"]["paused"] = json!(true);
        b["rollout"]["approvedWave"] = json!(2);
        b["rollout"]["cancel"] = json!(true);
        assert_eq!(run_fingerprint(&a), run_fingerprint(&b));
        let mut c = a.clone();
        c["rollout"]["waves"] = json!([2]);
        assert_ne!(run_fingerprint(&a), run_fingerprint(&c));
    }
}

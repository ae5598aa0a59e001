//! The rules of a HostState round, without a cluster.

use super::*;

const UID: &str = "u";

fn at(s: i64) -> Timestamp {
    Timestamp::from_second(1_700_000_000 + s).unwrap_or(Timestamp::UNIX_EPOCH)
}

fn nodes(n: usize) -> Vec<String> {
    (1..=n).map(|i| format!("node{i}")).collect()
}

fn round(nodes: &[String]) -> Round {
    Round {
        id: 1,
        generation: 1,
        started: at(0),
        nodes: nodes.to_vec(),
        values: 0,
        jobs: BTreeMap::new(),
        finished: false,
    }
}

fn drift(step: i32) -> Vec<StepDrift> {
    vec![StepDrift {
        step,
        diff: Some(format!("-old\n+new {step}\n")),
    }]
}

struct World {
    status: HostStateStatus,
    round: Round,
    selected: Vec<String>,
    conflicts: BTreeMap<String, BTreeSet<String>>,
    mode: StateMode,
    rollout: RolloutSpec,
    window_hold: Option<NodeDisruption>,
}

impl World {
    fn new(n: usize, mode: StateMode, max_parallel: i32, max_failures: i32) -> Self {
        let selected = nodes(n);
        Self {
            status: HostStateStatus::default(),
            round: round(&selected),
            selected,
            conflicts: BTreeMap::new(),
            mode,
            rollout: RolloutSpec {
                max_parallel,
                max_failures,
                ..RolloutSpec::default()
            },
            window_hold: None,
        }
    }

    /// One step, with the actions' effect on the round (jobs started) applied, as the
    /// controller does after writing the status.
    fn step(&mut self) -> Vec<Action> {
        let obs = Observed {
            now: at(1),
            uid: UID,
            generation: 1,
            mode: self.mode,
            rollout: &self.rollout,
            selected: &self.selected,
            conflicts: &self.conflicts,
            round: &self.round,
            window_hold: self.window_hold.as_ref(),
        };
        let actions = step(&mut self.status, &obs);
        for a in &actions {
            match a {
                Action::Check { node } => {
                    self.round.jobs.insert(node.clone(), Job::Checking);
                }
                Action::Correct { node, .. } => {
                    self.round.jobs.insert(node.clone(), Job::Correcting);
                }
                Action::RoundFinished => self.round.finished = true,
                Action::Event { .. } => {}
            }
        }
        actions
    }

    fn finish(&mut self, node: &str, job: Job) {
        self.round.jobs.insert(node.to_owned(), job);
    }

    fn node(&self, node: &str) -> &NodeStateStatus {
        self.status
            .nodes
            .iter()
            .find(|n| n.node == node)
            .unwrap_or_else(|| panic!("{node} not in the status"))
    }

    fn correcting(&self) -> usize {
        self.round
            .jobs
            .values()
            .filter(|j| **j == Job::Correcting)
            .count()
    }
}

fn corrections(actions: &[Action]) -> Vec<String> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Correct { node, .. } => Some(node.clone()),
            _ => None,
        })
        .collect()
}

fn events(actions: &[Action], reason: &str) -> usize {
    actions
        .iter()
        .filter(|a| matches!(a, Action::Event { reason: r, .. } if *r == reason))
        .count()
}

#[test]
fn max_parallel_is_a_sliding_window_over_corrections() {
    let mut w = World::new(5, StateMode::Enforce, 2, 10);
    let checks = w.step();
    assert_eq!(
        checks
            .iter()
            .filter(|a| matches!(a, Action::Check { .. }))
            .count(),
        5
    );
    for n in nodes(5) {
        w.finish(&n, Job::Checked(Ok(drift(0))));
    }
    let first = w.step();
    assert_eq!(corrections(&first), ["node1", "node2"]);
    assert_eq!(events(&first, "DriftDetected"), 5);
    // Recorded Correcting, with the ids, before anything is sent.
    assert_eq!(w.node("node1").sync, NodeSync::Correcting);
    assert_eq!(
        w.node("node1").pending_correction.as_deref(),
        Some("u/1/node1/c1")
    );
    assert_eq!(w.node("node3").sync, NodeSync::Drifted);
    // Nothing more while both are in flight; no second DriftDetected.
    let again = w.step();
    assert!(corrections(&again).is_empty(), "{again:?}");
    assert_eq!(events(&again, "DriftDetected"), 0);
    // One returns: exactly one more starts (a window, not a batch with a barrier).
    w.finish("node1", Job::Corrected(Ok(vec![])));
    let next = w.step();
    assert_eq!(corrections(&next), ["node3"]);
    assert_eq!(events(&next, "Corrected"), 1);
    assert_eq!(w.node("node1").sync, NodeSync::InSync);
    assert_eq!(w.node("node1").pending_correction, None);
    assert_eq!(w.correcting(), 2);
    for n in ["node2", "node3"] {
        w.finish(n, Job::Corrected(Ok(vec![])));
    }
    assert_eq!(corrections(&w.step()), ["node4", "node5"]);
    assert!(w.correcting() <= 2);
    for n in ["node4", "node5"] {
        w.finish(n, Job::Corrected(Ok(vec![])));
    }
    let last = w.step();
    assert!(last.contains(&Action::RoundFinished), "{last:?}");
    assert_eq!(w.status.nodes_in_sync, 5);
    assert_eq!(w.status.last_check_time, Some(Time(at(0))));
    for n in nodes(5) {
        assert_eq!(w.node(&n).corrections, 1, "{n}");
    }
}

#[test]
fn a_correction_recorded_by_an_earlier_process_is_resumed_with_its_ids() {
    let mut w = World::new(2, StateMode::Enforce, 1, 0);
    w.status.nodes = vec![NodeStateStatus {
        node: "node1".into(),
        sync: NodeSync::Correcting,
        drift: drift(0),
        corrections: 3,
        pending_correction: Some("u/1/node1/c3".into()),
        ..NodeStateStatus::default()
    }];
    let actions = w.step();
    assert!(
        actions.contains(&Action::Correct {
            node: "node1".into(),
            drift: drift(0),
            prefix: "u/1/node1/c3".into(),
            resume: true,
        }),
        "{actions:?}"
    );
    assert!(actions.contains(&Action::Check {
        node: "node2".into()
    }));
    w.finish("node1", Job::Corrected(Ok(vec![])));
    w.step();
    assert_eq!(
        w.node("node1").corrections,
        3,
        "a resume is no new correction"
    );
    assert_eq!(w.node("node1").sync, NodeSync::InSync);
    // In Audit, a recorded correction is dropped, not resumed.
    let mut audit = World::new(1, StateMode::Audit, 1, 0);
    audit.status.nodes = w.status.nodes.clone();
    audit.status.nodes[0].pending_correction = Some("u/1/node1/c4".into());
    let actions = audit.step();
    assert!(corrections(&actions).is_empty());
    assert_eq!(audit.node("node1").pending_correction, None);
}

#[test]
fn failures_beyond_the_budget_stop_the_corrections_of_the_round() {
    let mut w = World::new(3, StateMode::Enforce, 1, 0);
    w.step();
    for n in nodes(3) {
        w.finish(&n, Job::Checked(Ok(drift(1))));
    }
    assert_eq!(corrections(&w.step()), ["node1"]);
    w.finish(
        "node1",
        Job::Corrected(Err("correcting step 1: denied".into())),
    );
    let actions = w.step();
    assert_eq!(events(&actions, "CorrectionFailed"), 1);
    assert!(corrections(&actions).is_empty(), "{actions:?}");
    assert!(actions.contains(&Action::RoundFinished));
    assert_eq!(w.node("node1").sync, NodeSync::Failed);
    for n in ["node2", "node3"] {
        assert!(
            w.node(n)
                .message
                .as_deref()
                .is_some_and(|m| m.contains("maxFailures")),
            "{:?}",
            w.node(n)
        );
        assert_eq!(w.node(n).corrections, 0);
    }
}

#[test]
fn audit_and_conflicts_report_without_correcting() {
    let mut audit = World::new(2, StateMode::Audit, 5, 0);
    audit.step();
    for n in nodes(2) {
        audit.finish(&n, Job::Checked(Ok(drift(0))));
    }
    let actions = audit.step();
    assert!(corrections(&actions).is_empty());
    assert!(actions.contains(&Action::RoundFinished));
    assert_eq!(audit.status.nodes_drifted, 2);

    let mut fight = World::new(2, StateMode::Enforce, 5, 0);
    fight
        .conflicts
        .insert("node2".into(), ["other".to_owned()].into());
    fight.step();
    for n in nodes(2) {
        fight.finish(&n, Job::Checked(Ok(drift(0))));
    }
    assert_eq!(corrections(&fight.step()), ["node1"]);
    assert!(
        fight
            .node("node2")
            .message
            .as_deref()
            .is_some_and(|m| m.contains("other"))
    );
    assert_eq!(fight.status.conflicts, ["other"]);
}

#[test]
fn a_changed_spec_starts_nothing_new_until_the_next_round() {
    let mut w = World::new(2, StateMode::Enforce, 5, 0);
    w.step();
    w.finish("node1", Job::Checked(Ok(drift(0))));
    // The spec changed: node1's drift is recorded, nothing is corrected, and the next
    // round waits for node2's check in flight.
    let obs_generation = 2;
    let obs = Observed {
        now: at(2),
        uid: UID,
        generation: obs_generation,
        mode: w.mode,
        rollout: &w.rollout,
        selected: &w.selected,
        conflicts: &w.conflicts,
        round: &w.round,
        window_hold: None,
    };
    let actions = step(&mut w.status, &obs);
    assert!(corrections(&actions).is_empty(), "{actions:?}");
    assert!(!round_due(
        Some(&w.round),
        2,
        &w.selected,
        0,
        Duration::from_secs(10),
        at(2)
    ));
    w.finish("node2", Job::Checked(Ok(vec![])));
    assert!(round_due(
        Some(&w.round),
        2,
        &w.selected,
        0,
        Duration::from_secs(10),
        at(2)
    ));
}

#[test]
fn rounds_come_at_the_interval_after_the_last_one_finished() {
    let sel = nodes(1);
    let ten = Duration::from_secs(10);
    assert!(round_due(None, 1, &sel, 0, ten, at(0)));
    let mut r = round(&sel);
    r.jobs.insert("node1".into(), Job::Checked(Ok(vec![])));
    assert!(
        !round_due(Some(&r), 1, &sel, 0, ten, at(20)),
        "not finished"
    );
    r.finished = true;
    assert!(!round_due(Some(&r), 1, &sel, 0, ten, at(5)));
    assert!(round_due(Some(&r), 1, &sel, 0, ten, at(10)));
    assert!(
        round_due(Some(&r), 2, &sel, 0, ten, at(1)),
        "new generation"
    );
    assert!(
        round_due(Some(&r), 1, &nodes(2), 0, ten, at(1)),
        "a node joined"
    );
    assert!(
        round_due(Some(&r), 1, &sel, 7, ten, at(1)),
        "a ConfigMap or Secret its steps read changed"
    );
}

#[test]
fn summary_counts_and_condition() {
    let t = Time(at(0));
    let node = |n: &str, sync| NodeStateStatus {
        node: n.into(),
        sync,
        ..NodeStateStatus::default()
    };
    let mut s = HostStateStatus {
        nodes: vec![
            node("a", NodeSync::InSync),
            node("b", NodeSync::Drifted),
            node("c", NodeSync::Correcting),
            node("d", NodeSync::Failed),
        ],
        ..HostStateStatus::default()
    };
    summarise(&mut s, StateMode::Enforce, &t);
    assert_eq!(
        (
            s.nodes_total,
            s.nodes_in_sync,
            s.nodes_drifted,
            s.nodes_failed
        ),
        (4, 1, 2, 1)
    );
    assert_eq!(s.sync.as_deref(), Some("1/4"));
    let c = s.conditions.iter().find(|c| c.type_ == "InSync").cloned();
    assert_eq!(
        c.map(|c| (c.status, c.reason)),
        Some(("False".into(), "Failed".into()))
    );
    for n in &mut s.nodes {
        n.sync = NodeSync::InSync;
    }
    summarise(&mut s, StateMode::Enforce, &t);
    let c = s.conditions.iter().find(|c| c.type_ == "InSync").cloned();
    assert_eq!(c.map(|c| c.status), Some("True".into()));
}

#[test]
fn check_times_alone_are_no_reason_to_write() {
    let a = HostStateStatus {
        nodes: vec![NodeStateStatus {
            node: "n".into(),
            sync: NodeSync::InSync,
            ..NodeStateStatus::default()
        }],
        ..HostStateStatus::default()
    };
    let mut b = a.clone();
    b.last_check_time = Some(Time(at(1)));
    b.nodes[0].last_check_time = Some(Time(at(1)));
    assert!(!differs(&a, &b));
    b.nodes[0].sync = NodeSync::Drifted;
    assert!(differs(&a, &b));
}

#[test]
fn capped_diffs_and_stable_correction_ids() {
    let mut nodes: Vec<NodeStateStatus> = (0..100)
        .map(|i| NodeStateStatus {
            node: format!("n{i}"),
            sync: NodeSync::Drifted,
            drift: vec![StepDrift {
                step: 0,
                diff: Some("+".repeat(10_000)),
            }],
            ..NodeStateStatus::default()
        })
        .collect();
    cap_status(&mut nodes);
    let total: usize = nodes
        .iter()
        .flat_map(|n| &n.drift)
        .filter_map(|d| d.diff.as_ref())
        .map(String::len)
        .sum();
    assert!(total <= MAX_DRIFT_TOTAL_BYTES, "{total}");
    assert!(
        nodes[0].drift[0]
            .diff
            .as_ref()
            .is_some_and(|d| d.len() < 5000)
    );
    assert_eq!(correction_id("u", 2, "node1", 3), "u/2/node1/c3");
}

#[test]
fn a_closed_window_reports_drift_and_corrects_nothing_until_it_opens() {
    use hostplug_api::disruption::DisruptionPhase;
    let mut w = World::new(2, StateMode::Enforce, 2, 10);
    let hold = NodeDisruption {
        phase: DisruptionPhase::WaitingForWindow,
        message: Some("waiting for the maintenance window: the next opens at …".into()),
    };
    w.window_hold = Some(hold.clone());
    w.step();
    w.finish("node1", Job::Checked(Ok(drift(0))));
    w.finish("node2", Job::Checked(Ok(Vec::new())));
    let actions = w.step();
    // Drift reported, nothing corrected, the round ends (other nodes keep being checked).
    assert!(corrections(&actions).is_empty(), "{actions:?}");
    assert_eq!(events(&actions, "DriftDetected"), 1);
    assert_eq!(events(&actions, "DisruptionWaiting"), 1);
    assert!(actions.contains(&Action::RoundFinished), "{actions:?}");
    assert_eq!(w.node("node1").sync, NodeSync::Drifted);
    assert_eq!(w.node("node1").disruption.as_ref(), Some(&hold));
    assert_eq!(w.node("node1").corrections, 0);
    assert_eq!(w.node("node2").disruption, None);

    // The next round, still closed: reported again without a second Event.
    w.round = round(&w.selected);
    w.step();
    w.finish("node1", Job::Checked(Ok(drift(0))));
    w.finish("node2", Job::Checked(Ok(Vec::new())));
    let actions = w.step();
    assert!(corrections(&actions).is_empty(), "{actions:?}");
    assert_eq!(events(&actions, "DisruptionWaiting"), 0, "{actions:?}");

    // Open: the drifted node is corrected, and no longer waits.
    w.window_hold = None;
    w.round = round(&w.selected);
    w.step();
    w.finish("node1", Job::Checked(Ok(drift(0))));
    w.finish("node2", Job::Checked(Ok(Vec::new())));
    let actions = w.step();
    assert_eq!(corrections(&actions), vec!["node1".to_owned()]);
    assert_eq!(w.node("node1").disruption, None);
    assert_eq!(w.node("node1").sync, NodeSync::Correcting);
}

//! The cycle's rules without a cluster: a whole cycle driven by applying each decision
//! to a model of the node, restarts in the middle, the admin's cordon, a blocked drain.

use super::*;
use k8s_openapi::api::core::v1::Pod;

/// A node as the executor would see it, changed by the decisions as the executor
/// would change it.
#[derive(Debug, Clone)]
struct Model {
    mark: Option<MaintenanceMark>,
    last: Option<LastCycle>,
    unschedulable: bool,
    ready: bool,
    boot_id: Option<String>,
    pods: Vec<DrainPod>,
    evictable: bool,
    call: CallObs,
    reboot_sent: bool,
    /// What the node did, in order.
    log: Vec<String>,
    reboots: usize,
    now: Timestamp,
}

impl Model {
    fn new(pods: usize) -> Self {
        Self {
            mark: None,
            last: None,
            unschedulable: false,
            ready: true,
            boot_id: Some("boot-1".into()),
            pods: (0..pods)
                .map(|i| DrainPod {
                    name: format!("default/p{i}"),
                    terminating: false,
                })
                .collect(),
            evictable: true,
            call: CallObs::NotSent,
            reboot_sent: false,
            log: Vec::new(),
            reboots: 0,
            now: "2026-12-07T16:00:00Z".parse().expect("test setup"),
        }
    }

    fn obs(&self) -> NodeObs {
        let blocked = if self.evictable {
            BTreeMap::new()
        } else {
            self.pods
                .iter()
                .map(|p| {
                    (
                        p.name.clone(),
                        "blocked by PodDisruptionBudget default/web".to_owned(),
                    )
                })
                .collect()
        };
        NodeObs {
            now: self.now,
            mark: self.mark.clone(),
            last: self.last.clone(),
            unschedulable: self.unschedulable,
            ready: self.ready,
            boot_id: self.boot_id.clone(),
            to_evict: self.pods.clone(),
            blocked,
            call: self.call.clone(),
            reboot_sent: self.reboot_sent,
        }
    }

    /// An operator restart: this process's memory is gone, the node is as it was.
    fn restart(&mut self) {
        self.reboot_sent = false;
        if !matches!(
            self.mark.as_ref().map(|m| m.step),
            Some(CycleStep::Applying)
        ) {
            self.call = CallObs::NotSent;
        }
    }

    /// Applies one decision; returns the finished record when the cycle ended.
    fn apply(&mut self, d: Decision, reboot_requested: Option<&str>) -> Option<LastCycle> {
        self.now += SignedDuration::from_secs(1);
        match d {
            Decision::Record(m) => {
                self.log.push(format!("record {}", m.step.as_str()));
                self.mark = Some(m);
            }
            Decision::Cordon => {
                self.log.push("cordon".into());
                self.unschedulable = true;
            }
            Decision::Uncordon => {
                self.log.push("uncordon".into());
                self.unschedulable = false;
            }
            Decision::Evict(pods) => {
                if self.evictable {
                    self.log.push(format!("evict {}", pods.len()));
                    self.pods.clear();
                }
            }
            Decision::Apply => {
                self.log.push("apply".into());
                self.call = CallObs::Succeeded {
                    changed: true,
                    reboot_requested: reboot_requested.map(str::to_owned),
                };
            }
            Decision::Reboot(_) => {
                self.reboot_sent = true;
                self.log.push("reboot".into());
                self.reboots += 1;
                self.boot_id = Some(format!("boot-{}", self.reboots + 1));
            }
            Decision::Wait(_) => {}
            Decision::Finish(last) => {
                self.log.push("finish".into());
                self.mark = None;
                self.last = Some(last.clone());
                return Some(last);
            }
            Decision::Done(last) => return Some(last),
        }
        None
    }
}

fn spec(drain: bool, reboot: RebootPolicy) -> DisruptionSpec {
    DisruptionSpec {
        drain,
        reboot,
        drain_timeout_seconds: 30,
        reboot_timeout_seconds: 60,
        maintenance_windows: Vec::new(),
    }
}

fn cycle(spec: &DisruptionSpec) -> Cycle<'_> {
    Cycle {
        task: "ns/t",
        uid: "u1",
        generation: 1,
        spec,
    }
}

/// Runs the cycle to its end (at most 100 steps), restarting the operator before the
/// steps named in `restart_at` (by the count of decisions taken).
fn run(
    m: &mut Model,
    spec: &DisruptionSpec,
    requested: Option<&str>,
    restart_at: &[usize],
) -> LastCycle {
    for i in 0..100 {
        if restart_at.contains(&i) {
            m.restart();
        }
        let d = next(&cycle(spec), &m.obs());
        if let Some(last) = m.apply(d, requested) {
            return last;
        }
    }
    panic!("the cycle did not end: {:?}", m.log);
}

#[test]
fn a_whole_cycle_in_order_and_exactly_one_reboot() {
    let s = spec(true, RebootPolicy::Always);
    let mut m = Model::new(2);
    let last = run(&mut m, &s, None, &[]);
    assert_eq!(
        m.log,
        vec![
            "record Draining",
            "cordon",
            "evict 2",
            "record Applying",
            "apply",
            "record Rebooting",
            "reboot",
            "record Restoring",
            "uncordon",
            "finish"
        ]
    );
    assert_eq!(m.reboots, 1);
    assert!(!m.unschedulable && m.mark.is_none());
    assert_eq!(last.failure, None);
    assert_eq!(last.changed, Some(true));
    assert!(last.summary.contains("boot-1 → boot-2"), "{}", last.summary);
    // The same generation again (a resumed call after the status was lost): nothing.
    let again = next(&cycle(&s), &m.obs());
    assert!(matches!(again, Decision::Done(_)), "{again:?}");
}

#[test]
fn restarts_at_every_step_never_reboot_twice_and_always_hand_the_node_back() {
    let s = spec(true, RebootPolicy::Always);
    for at in 0..12 {
        let mut m = Model::new(1);
        let last = run(&mut m, &s, None, &[at]);
        assert_eq!(m.reboots, 1, "restart before step {at}: {:?}", m.log);
        assert!(!m.unschedulable, "restart before step {at}: {:?}", m.log);
        assert_eq!(last.failure, None);
    }
    // A restart while the node is down (no boot ID) and then back with a new one: no
    // second reboot.
    let mut m = Model::new(0);
    for _ in 0..6 {
        let d = next(&cycle(&s), &m.obs());
        m.apply(d, None);
    }
    assert_eq!(m.reboots, 1, "{:?}", m.log);
    m.restart();
    m.boot_id = None;
    assert!(matches!(next(&cycle(&s), &m.obs()), Decision::Wait(_)));
    m.boot_id = Some("boot-9".into());
    let d = next(&cycle(&s), &m.obs());
    assert!(
        matches!(&d, Decision::Record(mk) if mk.step == CycleStep::Restoring),
        "{d:?}"
    );
}

#[test]
fn an_admins_cordon_stays() {
    let s = spec(true, RebootPolicy::Never);
    let mut m = Model::new(1);
    m.unschedulable = true;
    run(&mut m, &s, None, &[]);
    assert!(m.unschedulable, "{:?}", m.log);
    assert!(!m.log.iter().any(|l| l == "cordon" || l == "uncordon"));
    assert_eq!(m.reboots, 0);
}

#[test]
fn a_blocked_drain_fails_naming_the_pdb_and_uncordons() {
    let s = spec(true, RebootPolicy::Always);
    let mut m = Model::new(1);
    m.evictable = false;
    let mut last = None;
    for _ in 0..20 {
        let d = next(&cycle(&s), &m.obs());
        if let Some(l) = m.apply(d, None) {
            last = Some(l);
            break;
        }
        m.now += SignedDuration::from_secs(5);
    }
    let last = last.expect("the cycle ends");
    let why = last.failure.unwrap_or_default();
    assert!(
        why.contains("within 30s") && why.contains("default/p0") && why.contains("default/web"),
        "{why}"
    );
    assert!(!m.unschedulable);
    assert!(
        !m.log.iter().any(|l| l == "apply"),
        "never applied: {:?}",
        m.log
    );
}

#[test]
fn reboot_policies() {
    // IfRequested without a request: no reboot, no drain.
    let s = spec(false, RebootPolicy::IfRequested);
    let mut m = Model::new(1);
    run(&mut m, &s, None, &[]);
    assert_eq!(m.reboots, 0);
    assert_eq!(
        m.log,
        vec!["record Applying", "apply", "record Restoring", "finish"]
    );
    // IfRequested with a request: one reboot, the reason kept.
    let mut m = Model::new(0);
    run(&mut m, &s, Some("kernel arguments changed"), &[]);
    assert_eq!(m.reboots, 1);
    // Never with a request: reported, not done.
    let s = spec(false, RebootPolicy::Never);
    let mut m = Model::new(0);
    let last = run(&mut m, &s, Some("kernel arguments changed"), &[]);
    assert_eq!(m.reboots, 0);
    let note = "reboot requested by the plugin: kernel arguments changed; not rebooted: \
                spec.disruption.reboot is Never";
    assert!(last.summary.contains(note), "{}", last.summary);
    assert_eq!(last.reboot_note.as_deref(), Some(note));
    // A reboot that happened leaves no note for the node's message.
    let s = spec(true, RebootPolicy::IfRequested);
    let mut m = Model::new(1);
    let last = run(&mut m, &s, Some("kernel arguments changed"), &[]);
    assert_eq!((m.reboots, last.reboot_note), (1, None));
}

#[test]
fn a_reboot_request_without_a_cycle_is_reported_on_the_node() {
    let ok = |why: Option<&str>| {
        Ok(crate::dispatch::Success {
            changed: true,
            diff: None,
            output: serde_json::Value::Null,
            logs: Vec::new(),
            follow_ups: Vec::new(),
            revert: None,
            reboot_required: why.map(str::to_owned),
        })
    };
    let note = |o: crate::dispatch::NodeOutcome| o.ok().and_then(|s| s.reboot_required);
    let never = spec(false, RebootPolicy::Never);
    assert_eq!(
        note(without_cycle(ok(Some("grub")), Some(&never), false)).as_deref(),
        Some("reboot requested by the plugin: grub; not rebooted: spec.disruption.reboot is Never")
    );
    let none = note(without_cycle(ok(Some("grub")), None, false)).unwrap_or_default();
    assert!(none.contains("no spec.disruption"), "{none}");
    let dry = note(without_cycle(ok(Some("grub")), None, true)).unwrap_or_default();
    assert!(
        dry.contains("would be requested") && dry.contains("dry run"),
        "{dry}"
    );
    assert_eq!(note(without_cycle(ok(None), Some(&never), false)), None);
}

fn ts(s: &str) -> Timestamp {
    s.parse().expect("test setup")
}

fn windows(list: &[(&str, &str, &str)]) -> Vec<window::Window> {
    let w: Vec<hostplug_api::disruption::MaintenanceWindow> = list
        .iter()
        .map(
            |(schedule, duration, tz)| hostplug_api::disruption::MaintenanceWindow {
                schedule: (*schedule).into(),
                duration: (*duration).into(),
                time_zone: (*tz).into(),
            },
        )
        .collect();
    window::parse(&w).expect("test setup")
}

#[test]
fn a_window_is_open_from_its_opening_for_its_duration_in_its_time_zone() {
    // Saturdays 02:00 Berlin time for 2 hours. 2026-12-05 is a Saturday; Berlin is UTC+1
    // in December, so the window is 01:00–03:00 UTC.
    let w = windows(&[("0 2 * * SAT", "2h", "Europe/Berlin")]);
    assert_eq!(
        window::state(&w, ts("2026-12-05T01:30:00Z")),
        Some(WindowState::Open {
            closes: ts("2026-12-05T03:00:00Z")
        })
    );
    assert_eq!(
        window::state(&w, ts("2026-12-05T00:59:59Z")),
        Some(WindowState::Closed {
            opens: Some(ts("2026-12-05T01:00:00Z")),
            window: "0 2 * * SAT (Europe/Berlin)".into()
        })
    );
    // Closed at its end, exactly; the next opening is a week later.
    assert_eq!(
        window::state(&w, ts("2026-12-05T03:00:00Z")),
        Some(WindowState::Closed {
            opens: Some(ts("2026-12-12T01:00:00Z")),
            window: "0 2 * * SAT (Europe/Berlin)".into()
        })
    );
    // In July Berlin is UTC+2: 00:00–02:00 UTC.
    assert!(matches!(
        window::state(&w, ts("2026-07-04T00:10:00Z")),
        Some(WindowState::Open { .. })
    ));
    // No windows: no gate.
    assert_eq!(window::state(&[], ts("2026-12-05T01:30:00Z")), None);
    // Two windows: the earliest next opening, and open when either is.
    let two = windows(&[
        ("0 2 * * SAT", "2h", "Europe/Berlin"),
        ("30 22 * * *", "30m", "UTC"),
    ]);
    assert_eq!(
        window::state(&two, ts("2026-12-07T12:00:00Z")),
        Some(WindowState::Closed {
            opens: Some(ts("2026-12-07T22:30:00Z")),
            window: "30 22 * * * (UTC)".into()
        })
    );
    assert!(matches!(
        window::state(&two, ts("2026-12-07T22:45:00Z")),
        Some(WindowState::Open { .. })
    ));
}

#[test]
fn bad_windows_name_the_field_and_the_problem() {
    let bad = |schedule: &str, duration: &str, tz: &str| {
        let w = vec![hostplug_api::disruption::MaintenanceWindow {
            schedule: schedule.into(),
            duration: duration.into(),
            time_zone: tz.into(),
        }];
        window::parse(&w).map(|_| ()).expect_err("must fail")
    };
    let e = bad("0 2 * *", "2h", "UTC");
    assert_eq!(e.field, "spec.disruption.maintenanceWindows[0].schedule");
    assert!(e.problem.contains("five"), "{}", e.problem);
    let e = bad("0 25 * * *", "2h", "UTC");
    assert_eq!(e.field, "spec.disruption.maintenanceWindows[0].schedule");
    let e = bad("0 2 30 2 *", "2h", "UTC");
    assert!(e.problem.contains("no time"), "{}", e.problem);
    let e = bad("0 2 * * *", "2 hours please", "UTC");
    assert_eq!(e.field, "spec.disruption.maintenanceWindows[0].duration");
    let e = bad("0 2 * * *", "30s", "UTC");
    assert!(e.problem.contains("1 minute"), "{}", e.problem);
    let e = bad("0 2 * * *", "200h", "UTC");
    assert_eq!(e.field, "spec.disruption.maintenanceWindows[0].duration");
    let e = bad("0 2 * * *", "2h", "Mars/Olympus");
    assert_eq!(e.field, "spec.disruption.maintenanceWindows[0].timeZone");
    assert!(windows(&[("0 2 * * *", "1h30m", "UTC")]).len() == 1);
}

fn node_with(name: &str, mark: Option<&MaintenanceMark>, boot: &str) -> Node {
    let mut n = Node::default();
    n.metadata.name = Some(name.into());
    if let Some(m) = mark {
        n.metadata.annotations = Some(BTreeMap::from([(
            MAINTENANCE_ANNOTATION.to_owned(),
            m.to_annotation(),
        )]));
    }
    n.status = Some(k8s_openapi::api::core::v1::NodeStatus {
        node_info: Some(k8s_openapi::api::core::v1::NodeSystemInfo {
            boot_id: boot.into(),
            ..Default::default()
        }),
        ..Default::default()
    });
    n
}

fn mark_of(task: &str, uid: &str, step: CycleStep, boot: Option<&str>) -> MaintenanceMark {
    MaintenanceMark {
        task: task.into(),
        uid: uid.into(),
        generation: 1,
        step,
        cordoned: true,
        since: "2026-12-07T16:00:00Z".into(),
        boot_id: boot.map(str::to_owned),
        changed: None,
        reason: Some("kernel".into()),
        failure: None,
    }
}

#[test]
fn the_gate_counts_every_tasks_marks_and_shows_this_tasks_phases() {
    let now = ts("2026-12-07T16:00:00Z");
    let nodes = [
        node_with(
            "a",
            Some(&mark_of("ns/other", "u9", CycleStep::Draining, None)),
            "b1",
        ),
        node_with(
            "b",
            Some(&mark_of("ns/t", "u1", CycleStep::Rebooting, Some("b1"))),
            "b1",
        ),
        node_with(
            "c",
            Some(&mark_of("ns/t", "u1", CycleStep::Rebooting, Some("b1"))),
            "b2",
        ),
        node_with("d", None, "b1"),
    ];
    let s = spec(true, RebootPolicy::IfRequested);
    // A task that disrupts nothing has no gate.
    let never = spec(false, RebootPolicy::Never);
    assert!(gate(Some(&never), false, &nodes, "u1", 1, 1, now).is_none());
    assert!(gate(Some(&s), true, &nodes, "u1", 1, 1, now).is_none());
    assert!(gate(None, false, &nodes, "u1", 1, 1, now).is_none());
    let g = gate(Some(&s), false, &nodes, "u1", 1, 3, now).expect("a gate");
    assert_eq!(g.held.len(), 3);
    assert_eq!(g.cycles["b"].phase, DisruptionPhase::Rebooting);
    assert_eq!(g.cycles["c"].phase, DisruptionPhase::WaitingForReady);
    assert!(!g.cycles.contains_key("a"), "another task's node");
    assert_eq!(g.window, None);
    assert_eq!(g.wake_at(), None);
    // Budget 3: a, b, c hold it; this task's in-flight b counts once; d waits.
    let in_flight = BTreeSet::from(["b".to_owned()]);
    assert_eq!(g.free(&in_flight), 0);
    let hold = g.budget_hold(&in_flight);
    assert_eq!(hold.phase, DisruptionPhase::WaitingForBudget);
    let msg = hold.message.unwrap_or_default();
    assert!(
        msg.contains("3 of 3") && msg.contains("a (HostTask ns/other)"),
        "{msg}"
    );
    // A started node without a mark yet holds budget too.
    let g4 = Gate {
        budget: 4,
        ..g.clone()
    };
    assert_eq!(g4.free(&BTreeSet::from(["d".to_owned()])), 0);
    assert_eq!(g4.free(&BTreeSet::new()), 1);
}

#[test]
fn a_closed_window_holds_and_says_when_it_opens() {
    let mut s = spec(true, RebootPolicy::IfRequested);
    s.maintenance_windows = vec![hostplug_api::disruption::MaintenanceWindow {
        schedule: "0 2 * * *".into(),
        duration: "1h".into(),
        time_zone: "UTC".into(),
    }];
    let g = gate(Some(&s), false, &[], "u1", 1, 1, ts("2026-12-07T16:00:00Z")).expect("a gate");
    assert_eq!(g.wake_at(), Some(ts("2026-12-08T02:00:00Z")));
    let hold = g.window_hold().expect("closed");
    assert_eq!(hold.phase, DisruptionPhase::WaitingForWindow);
    let msg = hold.message.unwrap_or_default();
    assert!(msg.contains("2026-12-08T02:00:00Z"), "{msg}");
    let g = gate(Some(&s), false, &[], "u1", 1, 1, ts("2026-12-08T02:10:00Z")).expect("a gate");
    assert!(g.window_hold().is_none() && g.wake_at().is_none());
}

#[test]
fn a_failed_call_is_not_rebooted_and_another_tasks_mark_waits() {
    let s = spec(true, RebootPolicy::Always);
    let mut m = Model::new(0);
    m.apply(next(&cycle(&s), &m.obs()), None); // Draining
    m.apply(next(&cycle(&s), &m.obs()), None); // cordon
    m.apply(next(&cycle(&s), &m.obs()), None); // Applying
    m.call = CallObs::Failed("plugin failed (denied): no".into());
    let last = run(&mut m, &s, None, &[]);
    assert_eq!(m.reboots, 0);
    assert!(last.failure.unwrap_or_default().contains("denied"));
    assert!(!m.unschedulable);

    let mut m = Model::new(0);
    m.mark = Some(MaintenanceMark {
        task: "other/x".into(),
        uid: "u2".into(),
        generation: 1,
        step: CycleStep::Draining,
        cordoned: true,
        since: "2026-12-07T16:00:00Z".into(),
        boot_id: None,
        changed: None,
        reason: None,
        failure: None,
    });
    let d = next(&cycle(&s), &m.obs());
    assert!(
        matches!(&d, Decision::Wait(w) if w.contains("other/x")),
        "{d:?}"
    );
}

#[test]
fn a_reboot_that_never_comes_back_fails_after_the_timeout() {
    let s = spec(false, RebootPolicy::Always);
    let mut m = Model::new(0);
    for _ in 0..3 {
        let d = next(&cycle(&s), &m.obs());
        m.apply(d, None);
    }
    assert_eq!(m.mark.as_ref().map(|m| m.step), Some(CycleStep::Rebooting));
    m.reboot_sent = true;
    m.boot_id = None;
    m.now += SignedDuration::from_secs(61);
    let d = next(&cycle(&s), &m.obs());
    assert!(
        matches!(&d, Decision::Record(mk) if mk.failure.as_deref().is_some_and(|f| f.contains("60s"))),
        "{d:?}"
    );
}

#[test]
fn which_pods_a_drain_evicts() {
    let pod =
        |json: serde_json::Value| -> Pod { serde_json::from_value(json).expect("test setup") };
    assert!(must_evict(&pod(
        serde_json::json!({"metadata": {"name": "web"}})
    )));
    assert!(!must_evict(&pod(
        serde_json::json!({"metadata": {"name": "ds",
        "ownerReferences": [{"apiVersion": "apps/v1", "kind": "DaemonSet", "name": "x",
            "uid": "1", "controller": true}]}})
    )));
    assert!(!must_evict(&pod(
        serde_json::json!({"metadata": {"name": "static",
        "annotations": {"kubernetes.io/config.mirror": "abc"}}})
    )));
    assert!(!must_evict(&pod(
        serde_json::json!({"metadata": {"name": "w",
        "labels": {"app.kubernetes.io/managed-by": "hostplug-operator",
                   "app.kubernetes.io/component": "worker"}}})
    )));
    assert!(!must_evict(&pod(
        serde_json::json!({"metadata": {"name": "done"},
        "status": {"phase": "Succeeded"}})
    )));
}

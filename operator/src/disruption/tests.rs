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
    assert!(last.summary.contains("reboot required"), "{}", last.summary);
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

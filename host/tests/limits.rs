//! Limits, through the real host and the real `test-trap`, `test-spin`, `test-hog` and
//! `test-noisy` components: a trap, a timeout or an out-of-memory ends that invocation
//! only, with the right error kind, and the next invocation works; output and log caps.

mod common;

use std::sync::OnceLock;
use std::time::{Duration, Instant};

use common::{host, load, module};
use hostplug_host::{ErrorKind, Grants, Host, HostConfig, Invocation, Limits, LogSource, Plugin};
use serde_json::json;

/// A host with small limits, shared by the tests of this binary.
fn small_host() -> &'static Host {
    static HOST: OnceLock<Host> = OnceLock::new();
    HOST.get_or_init(|| {
        Host::new(HostConfig {
            limits: Limits {
                max_memory_bytes: 32 << 20,
                max_output_bytes: 4096,
                max_log_bytes: 10_000,
                ..Limits::default()
            },
            ..HostConfig::default()
        })
        .expect("host")
    })
}

fn assert_next_call_works(plugin: &Plugin) {
    let o = plugin
        .invoke(&Invocation::new("ok", "{}"), &Grants::none())
        .expect("the call after a failure");
    assert_eq!(o.output, json!({"ok": true}));
}

#[test]
fn a_trap_ends_the_call_only() {
    let plugin = load(host(), "test-trap");
    for method in ["panic", "unreachable", "recurse"] {
        let e = plugin
            .invoke(&Invocation::new(method, "{}"), &Grants::none())
            .expect_err("trap");
        assert_eq!(e.kind, ErrorKind::Trap, "{method}: {e}");
        assert_next_call_works(&plugin);
    }
    let e = plugin
        .invoke(&Invocation::new("panic", "{}"), &Grants::none())
        .expect_err("trap");
    assert!(
        e.message.contains("test-trap was asked to panic"),
        "the panic message should be in the error: {e}"
    );
    assert!(
        e.logs.iter().any(|l| l.source == LogSource::Stderr),
        "{e:?}"
    );
}

#[test]
fn a_plugin_that_loops_forever_times_out() {
    let plugin = load(host(), "test-spin");
    let mut inv = Invocation::new("spin", "{}");
    inv.deadline = Some(Duration::from_millis(300));
    let started = Instant::now();
    let e = plugin.invoke(&inv, &Grants::none()).expect_err("spin");
    let took = started.elapsed();
    assert_eq!(e.kind, ErrorKind::Timeout, "{e}");
    assert!(
        took >= Duration::from_millis(300),
        "stopped too early: {took:?}"
    );
    assert!(took < Duration::from_secs(3), "stopped too late: {took:?}");
    assert_next_call_works(&plugin);
}

#[test]
fn a_plugin_that_allocates_without_bound_hits_the_memory_limit() {
    let plugin = load(small_host(), "test-hog");
    let e = plugin
        .invoke(&Invocation::new("hog", "{}"), &Grants::none())
        .expect_err("hog");
    assert_eq!(e.kind, ErrorKind::ResourceLimit, "{e}");
    assert!(e.message.contains("memory"), "{e}");
    assert_next_call_works(&plugin);
}

#[test]
fn plugins_fail_independently_at_the_same_time() {
    let spin = load(host(), "test-spin");
    let trap = load(host(), "test-trap");
    let t = std::thread::spawn(move || {
        let mut inv = Invocation::new("spin", "{}");
        inv.deadline = Some(Duration::from_millis(500));
        spin.invoke(&inv, &Grants::none())
    });
    for _ in 0..5 {
        assert_next_call_works(&trap);
    }
    let e = t.join().expect("thread").expect_err("spin");
    assert_eq!(e.kind, ErrorKind::Timeout);
}

#[test]
fn output_over_the_cap_is_a_resource_limit() {
    let plugin = load(small_host(), "test-noisy");
    let o = plugin
        .invoke(
            &Invocation::new("output", r#"{"bytes":100}"#),
            &Grants::none(),
        )
        .expect("small output");
    assert_eq!(o.output["text"].as_str().map(str::len), Some(100));
    let e = plugin
        .invoke(
            &Invocation::new("output", r#"{"bytes":5000}"#),
            &Grants::none(),
        )
        .expect_err("big output");
    assert_eq!(e.kind, ErrorKind::ResourceLimit, "{e}");
    assert!(e.message.contains("output"), "{e}");
}

#[test]
fn logs_are_captured_and_capped() {
    let plugin = load(host(), "test-noisy");
    let o = plugin
        .invoke(
            &Invocation::new(
                "chatter",
                r#"{"stdout":250,"stderr":150,"logs":4,"logSize":10}"#,
            ),
            &Grants::none(),
        )
        .expect("chatter");
    let count = |s: LogSource| o.logs.iter().filter(|l| l.source == s).count();
    assert_eq!(count(LogSource::Log), 4, "{:?}", o.logs);
    assert_eq!(count(LogSource::Stdout), 3, "{:?}", o.logs);
    assert_eq!(count(LogSource::Stderr), 2, "{:?}", o.logs);
    assert_eq!(count(LogSource::Host), 0, "{:?}", o.logs);

    let plugin = load(small_host(), "test-noisy");
    let o = plugin
        .invoke(
            &Invocation::new(
                "chatter",
                json!({"stdout": 1 << 20, "stderr": 1 << 20, "logs": 1000, "logSize": 100})
                    .to_string(),
            ),
            &Grants::none(),
        )
        .expect("chatter within caps");
    let total: usize = o
        .logs
        .iter()
        .filter(|l| l.source != LogSource::Host)
        .map(|l| l.message.len())
        .sum();
    assert!(total <= 10_000, "logs of {total} bytes exceed the cap");
    let last = o.logs.last().expect("a record");
    assert_eq!(last.source, LogSource::Host);
    assert!(last.message.contains("truncated"), "{last:?}");
}

#[test]
fn each_call_gets_a_fresh_store() {
    // A plugin that trapped mid-call leaves nothing behind: many calls in a row on one
    // plugin keep working and memory does not accumulate across them.
    let plugin = load(small_host(), "test-hog");
    for _ in 0..3 {
        let e = plugin
            .invoke(&Invocation::new("hog", "{}"), &Grants::none())
            .expect_err("hog");
        assert_eq!(e.kind, ErrorKind::ResourceLimit);
    }
    assert_next_call_works(&plugin);
    assert!(!module("test-hog").is_empty());
}

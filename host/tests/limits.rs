//! Limits, through the real host and the real `test-trap`, `test-spin`, `test-hog`,
//! `test-noisy` and `test-slow-describe` components (and a hand-written component with
//! several memories): a trap, a timeout or an out-of-memory ends that invocation only,
//! with the right error kind, and the next invocation works; deadlines also end a plugin
//! waiting in a host call; the memory cap holds for the whole store; output and log
//! caps.

mod common;

use std::sync::OnceLock;
use std::time::{Duration, Instant};

use common::{host, load, module};
use hostplug_host::{
    Error, ErrorKind, Grants, Host, HostConfig, Invocation, Limits, LogSource, Plugin,
};
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

/// `sleep` waits an hour inside one WASI call (`poll` on a monotonic-clock
/// subscription): guest code does not run, so only the timer around the call can end it.
#[test]
fn a_plugin_sleeping_in_a_host_call_times_out() {
    let plugin = load(host(), "test-spin");
    let mut inv = Invocation::new("sleep", "{}");
    inv.deadline = Some(Duration::from_millis(300));
    let started = Instant::now();
    let e = plugin.invoke(&inv, &Grants::none()).expect_err("sleep");
    let took = started.elapsed();
    assert_eq!(e.kind, ErrorKind::Timeout, "{e}");
    assert!(
        took >= Duration::from_millis(300),
        "stopped too early: {took:?}"
    );
    assert!(took < Duration::from_secs(3), "stopped too late: {took:?}");
    assert_next_call_works(&plugin);
}

/// The operator describes every HostPlugin: a module whose `describe` sleeps must not
/// hold it.
#[test]
fn a_describe_that_sleeps_times_out() {
    let host = Host::new(HostConfig {
        limits: Limits {
            describe_deadline: Duration::from_millis(500),
            ..Limits::default()
        },
        ..HostConfig::default()
    })
    .expect("host");
    let plugin = load(&host, "test-slow-describe");
    let started = Instant::now();
    let e = plugin.describe().expect_err("a describe that sleeps");
    let took = started.elapsed();
    assert!(
        matches!(&e, Error::Invoke(ie) if ie.kind == ErrorKind::Timeout),
        "{e}"
    );
    assert!(took < Duration::from_secs(3), "stopped too late: {took:?}");
    assert_next_call_works(&plugin);
}

/// A component whose core module has three linear memories; `describe` and `invoke`
/// grow the second and third by `PAGES` 64 KiB pages each, and trap if a grow fails.
/// Each memory alone stays under a 32 MiB cap; together they do not.
fn multi_memory_component(pages: u32) -> String {
    format!(
        r#"(component
  (core module $m
    (memory (export "memory") 1)
    (memory $a 0)
    (memory $b 0)
    (global $heap (mut i32) (i32.const 1024))
    (func (export "realloc") (param i32 i32 i32 i32) (result i32)
      (local $p i32)
      (local.set $p (i32.and
        (i32.add (global.get $heap) (i32.sub (local.get 2) (i32.const 1)))
        (i32.sub (i32.const 0) (local.get 2))))
      (global.set $heap (i32.add (local.get $p) (local.get 3)))
      (if (i32.gt_u (global.get $heap) (i32.const 65536)) (then unreachable))
      (local.get $p))
    (func $grow_all
      (if (i32.eq (memory.grow $a (i32.const {pages})) (i32.const -1)) (then unreachable))
      (if (i32.eq (memory.grow $b (i32.const {pages})) (i32.const -1)) (then unreachable)))
    (data (memory 0) (i32.const 16) "\40\00\00\00\03\00\00\00\40\00\00\00\03\00\00\00\40\00\00\00\03\00\00\00\00\00\00\00\00\00\00\00")
    (data (memory 0) (i32.const 64) "wat")
    (data (memory 0) (i32.const 128) "\00\00\00\00\00\00\00\00\44\00\00\00\02\00\00\00\00\00\00\00\00\00\00\00\00\00\00\00")
    (data (memory 0) (i32.const 68) "{{}}")
    (func (export "describe") (result i32) (call $grow_all) (i32.const 16))
    (func (export "invoke") (param i32 i32 i32 i32 i32) (result i32)
      (call $grow_all) (i32.const 128)))
  (core instance $i (instantiate $m))
  (type $mi (record (field "name" string) (field "description" string)
    (field "mutates" bool) (field "params-schema" string)))
  (export $mi-e "method-info" (type $mi))
  (type $pi (record (field "name" string) (field "version" string)
    (field "description" string) (field "methods" (list $mi-e))))
  (export $pi-e "plugin-info" (type $pi))
  (type $oc (record (field "changed" bool) (field "output" string)
    (field "diff" (option string)) (field "reboot-required" (option string))))
  (export $oc-e "outcome" (type $oc))
  (type $pe (variant (case "invalid-params" string) (case "not-found" string)
    (case "denied" string) (case "failed" string)))
  (export $pe-e "plugin-error" (type $pe))
  (func $describe (result $pi-e)
    (canon lift (core func $i "describe") (memory (core memory $i "memory"))))
  (export "describe" (func $describe))
  (func $invoke (param "method" string) (param "params" string) (param "dry-run" bool)
    (result (result $oc-e (error $pe-e)))
    (canon lift (core func $i "invoke") (memory (core memory $i "memory"))
      (realloc (core func $i "realloc"))))
  (export "invoke" (func $invoke))
)"#
    )
}

#[test]
fn the_memory_limit_covers_every_memory_of_a_store() {
    // 2 Ã 16 MiB, plus the first memory's 64 KiB: over 32 MiB together.
    let wat = multi_memory_component(256);
    let plugin = small_host()
        .load(wat.as_bytes(), None)
        .expect("the multi-memory component loads");
    let e = plugin
        .invoke(&Invocation::new("any", "{}"), &Grants::none())
        .expect_err("three memories over the cap together");
    assert_eq!(e.kind, ErrorKind::ResourceLimit, "{e}");
    assert!(e.message.contains("memory"), "{e}");

    // Under the cap together, the same component works: the limit is what failed.
    let small = multi_memory_component(16);
    let plugin = small_host().load(small.as_bytes(), None).expect("loads");
    let o = plugin
        .invoke(&Invocation::new("any", "{}"), &Grants::none())
        .expect("2 Ã 1 MiB is fine");
    assert_eq!(o.output, json!({}));
    assert_eq!(plugin.describe().expect("describe").name, "wat");
}

/// `describe` has a cap of its own (32 MiB by default), for the operator's sake.
#[test]
fn a_describe_that_allocates_too_much_is_a_resource_limit() {
    let wat = multi_memory_component(256);
    let plugin = host().load(wat.as_bytes(), None).expect("loads");
    let e = plugin.describe().expect_err("describe over its cap");
    assert!(
        matches!(&e, Error::Invoke(ie) if ie.kind == ErrorKind::ResourceLimit),
        "{e}"
    );
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

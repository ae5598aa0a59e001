//! `make bench`: numbers of the Wasm host on the real etc-file component.
//!
//! Prints the first compile time, the load time from the on-disk cache after a restart,
//! and invocation latency (median, p99; a fresh Store per call) of `read` and
//! `ensure-line`, with the on-demand and with the pooling instance allocator, and what the
//! revert record (the prior state of every /etc path a call changes) costs a
//! write-heavy call: p50 and p99 with and without recording, side by side. Uses
//! `target/plugins/etc-file.wasm` (or `$HOSTPLUG_PLUGIN_DIR`); run `make plugins` first.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use hostplug_host::{EtcAccess, Grants, Host, HostConfig, Invocation, LoadSource};

const CALLS: usize = 1000;

fn plugin_dir() -> PathBuf {
    std::env::var_os("HOSTPLUG_PLUGIN_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/plugins"))
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let idx = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[idx.min(sorted.len() - 1)]
}

fn measure(
    label: &str,
    plugin: &hostplug_host::Plugin,
    inv: &Invocation,
    grants: &Grants,
) -> anyhow::Result<()> {
    for _ in 0..20 {
        plugin.invoke(inv, grants)?;
    }
    let mut times = Vec::with_capacity(CALLS);
    for _ in 0..CALLS {
        let t = Instant::now();
        plugin.invoke(inv, grants)?;
        times.push(t.elapsed());
    }
    times.sort();
    println!(
        "{label:<44} median {:>8.1} µs   p99 {:>8.1} µs   ({CALLS} calls)",
        percentile(&times, 0.5).as_secs_f64() * 1e6,
        percentile(&times, 0.99).as_secs_f64() * 1e6,
    );
    Ok(())
}

fn main() -> anyhow::Result<()> {
    let path = plugin_dir().join("etc-file.wasm");
    let bytes = std::fs::read(&path)
        .map_err(|e| anyhow::anyhow!("{}: {e} — run `make plugins` first", path.display()))?;
    println!("component: {} ({} bytes)", path.display(), bytes.len());

    let cache = tempfile::tempdir()?;
    let etc = tempfile::tempdir()?;
    let hosts = (0..40)
        .map(|i| {
            format!(
                "10.0.{}.{} host{i}.example.internal host{i}\n",
                i / 250,
                i % 250
            )
        })
        .collect::<String>();
    std::fs::write(etc.path().join("hosts"), hosts)?;
    let grants = Grants::etc(etc.path(), EtcAccess::Write);
    let read = Invocation::new("read", r#"{"path":"/etc/hosts"}"#);
    let ensure = Invocation::new(
        "ensure-line",
        r#"{"path":"/etc/hosts","line":"192.0.2.10 bench.example.internal"}"#,
    );

    for pooling in [false, true] {
        let config = || HostConfig {
            cache_dir: Some(cache.path().join(if pooling { "pool" } else { "demand" })),
            pooling_allocator: pooling,
            ..HostConfig::default()
        };
        println!(
            "\n== instance allocator: {}",
            if pooling { "pooling" } else { "on-demand" }
        );
        let t = Instant::now();
        let host = Host::new(config())?;
        let plugin = host.load(&bytes, None)?;
        anyhow::ensure!(plugin.source() == LoadSource::Compiled);
        println!(
            "{:<44} {:>8.1} ms (host start + load {:.1} ms)",
            "first compile (compile + pre-instantiate)",
            plugin.load_duration().as_secs_f64() * 1e3,
            t.elapsed().as_secs_f64() * 1e3
        );
        drop(plugin);
        drop(host);

        let t = Instant::now();
        let host = Host::new(config())?;
        let plugin = host.load(&bytes, None)?;
        anyhow::ensure!(plugin.source() == LoadSource::DiskCache);
        println!(
            "{:<44} {:>8.1} ms (host start + sha256 + load {:.1} ms)",
            "load from the on-disk cache after a restart",
            plugin.load_duration().as_secs_f64() * 1e3,
            t.elapsed().as_secs_f64() * 1e3
        );
        let t = Instant::now();
        plugin.describe()?;
        println!(
            "{:<44} {:>8.1} ms",
            "first describe",
            t.elapsed().as_secs_f64() * 1e3
        );

        measure("invoke read /etc/hosts", &plugin, &read, &grants)?;
        let first = plugin.invoke(&ensure, &grants)?;
        anyhow::ensure!(
            first.changed || pooling,
            "ensure-line should change the file once"
        );
        measure(
            "invoke ensure-line (already present)",
            &plugin,
            &ensure,
            &grants,
        )?;
        let mut dry = ensure.clone();
        dry.dry_run = true;
        measure("invoke ensure-line, dry run", &plugin, &dry, &grants)?;
    }

    // The revert record: `write` of a file, alternating two contents so that every call
    // replaces it (the host notes its prior bytes, mode and owner before, and its state
    // after), on a host that records and one that does not. The two take turns call by
    // call, each on its own file, so both see the same machine (other builds, the disk).
    let hosts = [true, false].map(|skip| {
        Host::new(HostConfig {
            cache_dir: Some(cache.path().join("demand")),
            skip_change_records: skip,
            ..HostConfig::default()
        })
    });
    let [Ok(off_host), Ok(on_host)] = hosts else {
        anyhow::bail!("a host did not start");
    };
    let off = off_host.load(&bytes, None)?;
    let on = on_host.load(&bytes, None)?;
    for size in RECORD_BENCH_BYTES {
        let writes = |file: &str| {
            ['a', 'b'].map(|c| {
                let line: String = std::iter::repeat_n(c, 63).chain(std::iter::once('\n')).collect();
                Invocation::new(
                    "write",
                    serde_json::json!({"path": format!("/etc/{file}"), "content": line.repeat(size / 64)})
                        .to_string(),
                )
            })
        };
        let (off_writes, on_writes) = (writes("bench-off.conf"), writes("bench-on.conf"));
        let (_, record) = off.invoke_recorded(&off_writes[0], &grants);
        anyhow::ensure!(record.is_none(), "recording should be off");
        let (_, record) = on.invoke_recorded(&on_writes[0], &grants);
        anyhow::ensure!(record.is_some(), "recording should be on");
        let [off_times, on_times] = take_turns([(&off, &off_writes), (&on, &on_writes)], &grants)?;
        println!(
            "\n== revert records: write of a {} KiB file under /etc, every call a change ({CALLS} calls each, on-demand allocator)",
            size / 1024
        );
        let us = |d: Duration| d.as_secs_f64() * 1e6;
        println!(
            "{:<12} {:>16} {:>16} {:>12}",
            "", "not recorded", "recorded", "overhead"
        );
        for (label, p) in [("p50", 0.5), ("p99", 0.99)] {
            let (a, b) = (percentile(&off_times, p), percentile(&on_times, p));
            println!(
                "{label:<12} {:>13.1} µs {:>13.1} µs {:>+10.1} %",
                us(a),
                us(b),
                (us(b) / us(a) - 1.0) * 100.0
            );
        }
    }
    Ok(())
}

/// Sizes of the file the revert-record benchmark rewrites: 1 KiB (a typical config
/// file) and 64 KiB (a large one); the record copies the prior bytes and hashes the
/// file after the call, so its cost grows with the size.
const RECORD_BENCH_BYTES: [usize; 2] = [1024, 64 * 1024];

/// The sorted latencies of `CALLS` invocations on each plugin, taking turns call by
/// call, each plugin going through its own invocations in turn.
fn take_turns(
    runs: [(&hostplug_host::Plugin, &[Invocation; 2]); 2],
    grants: &Grants,
) -> anyhow::Result<[Vec<Duration>; 2]> {
    let mut times = [Vec::with_capacity(CALLS), Vec::with_capacity(CALLS)];
    for i in 0..(CALLS + 20) {
        for (k, (plugin, invs)) in runs.iter().enumerate() {
            let t = Instant::now();
            // Each file holds the first content already (the check above wrote it).
            let out = plugin.invoke(&invs[(i + 1) % 2], grants)?;
            let took = t.elapsed();
            anyhow::ensure!(out.changed, "every write should change the file");
            if i >= 20 {
                times[k].push(took);
            }
        }
    }
    for t in &mut times {
        t.sort();
    }
    Ok(times)
}

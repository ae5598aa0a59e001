//! A full disk under /etc, through the real host and the real `etc-file` component: a
//! small tmpfs is the etc directory (`hostplug_testenv::faults::SmallDisk`, mounted by
//! this test and unmounted when it ends), filled but for a few KiB, and a write larger
//! than that fails. The plugin writes through a WASI output stream and is told only "I/O
//! error"; the host saw the real cause, and the error a user reads names it ("No space
//! left on device") with the file it was writing. The old file is intact byte for byte
//! and no temporary file is left.

mod common;

use common::{host, load};
use hostplug_host::{ErrorKind, EtcAccess, Grants, Invocation, LogLevel, LogSource};
use hostplug_testenv::faults::{FILLER, SmallDisk};
use serde_json::json;

/// The disk: 256 KiB, room for the old file before it is filled.
const DISK_BYTES: u64 = 256 << 10;
/// What the disk keeps free when filled: 8 KiB, less than the write that must fail.
const LEFT_FREE: u64 = 8 << 10;

#[test]
fn a_full_disk_is_named_and_the_old_file_is_kept() {
    let dir = tempfile::tempdir().expect("tempdir");
    let etc = dir.path().join("etc");
    std::fs::create_dir(&etc).expect("mkdir");
    let disk = SmallDisk::mount_over(&etc, DISK_BYTES).expect("mounting a tmpfs (as root)");
    let old: String = (0..100).map(|i| format!("old line {i}\n")).collect();
    std::fs::write(etc.join("big.conf"), &old).expect("write");
    disk.fill(LEFT_FREE).expect("fill");

    let content: String = (0..2048).map(|i| format!("new line {i:026}\n")).collect();
    assert!(content.len() as u64 > 4 * LEFT_FREE);
    let plugin = load(host(), "etc-file");
    let params = json!({"path": "/etc/big.conf", "content": content});
    let e = plugin
        .invoke(
            &Invocation::new("write", params.to_string()),
            &Grants::etc(&etc, EtcAccess::Write),
        )
        .expect_err("a write larger than the free space fails");

    assert_eq!(e.kind, ErrorKind::Failed, "{e}");
    // The plugin's words, then what the host saw: the temporary file it was writing and
    // the OS's reason.
    let (plugin_said, host_saw) = e
        .message
        .split_once("; the host saw: ")
        .unwrap_or_else(|| panic!("the host's observation is missing: {}", e.message));
    assert!(plugin_said.starts_with("/etc/big.conf: "), "{}", e.message);
    assert!(
        host_saw.starts_with("writing /etc/.big.conf.hostplug-")
            && host_saw.ends_with(".tmp failed: No space left on device (os error 28)"),
        "{}",
        e.message
    );
    assert!(!e.message.contains('\n'), "one line: {}", e.message);
    // The same note in the call's logs, as the host's warning.
    assert!(
        e.logs.iter().any(|r| r.source == LogSource::Host
            && r.level == LogLevel::Warn
            && r.message == host_saw),
        "{:?}",
        e.logs
    );

    // The old content byte for byte, and no temporary file left.
    assert_eq!(
        std::fs::read_to_string(etc.join("big.conf")).expect("read"),
        old
    );
    let mut names: Vec<String> = std::fs::read_dir(&etc)
        .expect("read_dir")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(names, [FILLER, "big.conf"]);

    // Space again: the same write goes through.
    disk.unfill().expect("unfill");
    plugin
        .invoke(
            &Invocation::new("write", params.to_string()),
            &Grants::etc(&etc, EtcAccess::Write),
        )
        .expect("the write, with space");
    assert_eq!(
        std::fs::read_to_string(etc.join("big.conf")).expect("read"),
        content
    );
    drop(disk);
}

//! Loading: digest pinning, bad modules, the on-disk cache across host restarts and
//! `describe`. The `hostplug` CLI on the same components is tested in `cli/tests`.

mod common;

use common::{Tree, module};
use hostplug_host::{Digest, Error, ErrorKind, Grants, Host, HostConfig, Invocation, LoadSource};

#[test]
fn a_digest_mismatch_is_refused() {
    let host = Host::new(HostConfig::default()).expect("host");
    let bytes = module("test-trap");
    let wrong = Digest::of(b"something else");
    match host.load(&bytes, Some(&wrong)) {
        Err(e @ Error::DigestMismatch { .. }) => {
            assert_eq!(e.kind(), ErrorKind::DigestMismatch);
            assert!(e.to_string().contains(&wrong.to_string()), "{e}");
        }
        other => panic!("expected a digest mismatch, got {other:?}"),
    }
    assert!(host.digests().is_empty(), "a refused module was kept");
    let right = Digest::of(&bytes);
    let plugin = host
        .load(&bytes, Some(&right))
        .expect("load with the right digest");
    assert_eq!(plugin.digest(), &right);
}

#[test]
fn a_bad_module_fails_alone() {
    let host = Host::new(HostConfig::default()).expect("host");
    let core_module = b"\0asm\x01\0\0\0".to_vec();
    let mut truncated = module("test-trap");
    truncated.truncate(truncated.len() / 2);
    for bad in [b"not wasm at all".to_vec(), core_module, truncated] {
        let e = host.load(&bad, None).expect_err("bad module loaded");
        assert_eq!(e.kind(), ErrorKind::BadModule, "{e}");
    }
    let plugin = host
        .load(&module("test-trap"), None)
        .expect("a good module still loads");
    plugin
        .invoke(&Invocation::new("ok", "{}"), &Grants::none())
        .expect("and runs");
}

#[test]
fn the_disk_cache_survives_a_restart() {
    let cache = tempfile::tempdir().expect("tempdir");
    let config = || HostConfig {
        cache_dir: Some(cache.path().to_path_buf()),
        ..HostConfig::default()
    };
    let bytes = module("test-escape");
    let digest = Digest::of(&bytes);
    {
        let host = Host::new(config()).expect("host");
        assert!(host.cached(&digest).is_none());
        let p = host.load(&bytes, Some(&digest)).expect("load");
        assert_eq!(p.source(), LoadSource::Compiled);
        // Second load: the same plugin from memory.
        let again = host.load(&bytes, Some(&digest)).expect("load");
        assert!(std::sync::Arc::ptr_eq(&p, &again));
    }
    // A new host (a restarted worker) finds the precompiled artifact.
    let host = Host::new(config()).expect("host");
    let p = host.cached(&digest).expect("cached after restart");
    assert_eq!(p.source(), LoadSource::DiskCache);
    let tree = Tree::new();
    let o = p
        .invoke(
            &Invocation::new("read", r#"{"path":"/etc/hosts"}"#),
            &Grants::etc(tree.etc(), hostplug_host::EtcAccess::Read),
        )
        .expect("invoke the cached plugin");
    assert_eq!(o.output["content"], common::HOSTS);
    // load() of the same bytes on a fresh host also skips compilation.
    let host = Host::new(config()).expect("host");
    assert_eq!(
        host.load(&bytes, None).expect("load").source(),
        LoadSource::DiskCache
    );
    // A corrupt artifact is discarded and the module recompiled.
    for entry in walk(cache.path()) {
        std::fs::write(&entry, b"garbage").expect("corrupt");
    }
    // Plugins already loaded do not depend on the file.
    p.invoke(
        &Invocation::new("read", r#"{"path":"/etc/hosts"}"#),
        &Grants::etc(tree.etc(), hostplug_host::EtcAccess::Read),
    )
    .expect("invoke after the artifact was overwritten");
    let host = Host::new(config()).expect("host");
    assert!(host.cached(&digest).is_none());
    assert_eq!(
        host.load(&bytes, None).expect("load").source(),
        LoadSource::Compiled
    );
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).expect("read_dir").flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else if p.extension().is_some_and(|x| x == "cwasm") {
            out.push(p);
        }
    }
    out
}

#[test]
fn describe_reports_the_plugin_info_as_camel_case_json() {
    let host = Host::new(HostConfig::default()).expect("host");
    let plugin = common::load(&host, "test-escape");
    let info = plugin.describe().expect("describe");
    assert_eq!(info.name, "test-escape");
    let write = info.method("write").expect("write method");
    assert!(write.mutates);
    let json = serde_json::to_value(&info).expect("json");
    assert_eq!(
        json["methods"][0]["paramsSchema"],
        serde_json::json!({"type": "object"})
    );
}

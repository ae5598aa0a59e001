//! Shipping precompiled components: a host with the same engine settings loads another
//! host's artifact without compiling and runs it; a foreign fingerprint or a damaged
//! artifact is refused (the caller then compiles the module).

mod common;

use common::module;
use hostplug_host::{Digest, ErrorKind, Grants, Host, HostConfig, Invocation, LoadSource};

#[test]
fn an_artifact_from_a_twin_host_loads_without_compiling() {
    let compiler = Host::new(HostConfig::default()).expect("host");
    let bytes = module("test-trap");
    let digest = Digest::of(&bytes);
    compiler.load(&bytes, Some(&digest)).expect("compile");
    let artifact = compiler
        .precompiled_artifact(&digest)
        .expect("held")
        .expect("serialized");
    assert!(compiler.precompiled_artifact(&Digest::of(b"x")).is_none());

    let worker = Host::new(HostConfig::default()).expect("host");
    assert_eq!(worker.engine_fingerprint(), compiler.engine_fingerprint());
    let p = worker
        .load_precompiled(&digest, &compiler.engine_fingerprint(), &artifact)
        .expect("load the artifact");
    assert_eq!(p.source(), LoadSource::Shipped);
    p.invoke(&Invocation::new("ok", "{}"), &Grants::none())
        .expect("and run it");
    assert!(worker.cached(&digest).is_some());
}

#[test]
fn foreign_or_damaged_artifacts_are_refused() {
    let compiler = Host::new(HostConfig::default()).expect("host");
    let bytes = module("test-trap");
    let digest = Digest::of(&bytes);
    compiler.load(&bytes, None).expect("compile");
    let artifact = compiler
        .precompiled_artifact(&digest)
        .expect("held")
        .expect("serialized");
    let worker = Host::new(HostConfig::default()).expect("host");
    let e = worker
        .load_precompiled(&digest, "0000000000000000", &artifact)
        .expect_err("a foreign fingerprint");
    assert_eq!(e.kind(), ErrorKind::BadModule, "{e}");
    let mut damaged = artifact.clone();
    damaged.truncate(damaged.len() / 2);
    for bad in [b"garbage".to_vec(), damaged, bytes.clone()] {
        let e = worker
            .load_precompiled(&digest, &worker.engine_fingerprint(), &bad)
            .expect_err("a damaged artifact");
        assert_eq!(e.kind(), ErrorKind::BadModule, "{e}");
    }
    assert!(worker.cached(&digest).is_none(), "nothing refused was kept");
}

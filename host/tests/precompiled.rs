//! Shipping precompiled components: a host with the same engine settings that trusts the
//! signer's key loads another host's signed artifact without compiling and runs it.
//! Everything else is refused before a byte of it is deserialized — another plugin's
//! artifact under this digest (even one the trusted key signed for its own digest), an
//! artifact signed by another key, a foreign fingerprint, damaged bytes — and nothing
//! refused is kept (the caller then compiles the module).

mod common;

use common::module;
use hostplug_host::{
    ArtifactSigner, Digest, ErrorKind, Grants, Host, HostConfig, Invocation, LoadSource,
    SignedArtifact,
};

/// A host holding the component `name`, and its digest.
fn compiled(name: &str) -> (Host, Digest) {
    let host = Host::new(HostConfig::default()).expect("host");
    let bytes = module(name);
    let digest = Digest::of(&bytes);
    host.load(&bytes, Some(&digest)).expect("compile");
    (host, digest)
}

fn signed(host: &Host, digest: &Digest, signer: &ArtifactSigner) -> SignedArtifact {
    host.signed_artifact(digest, signer)
        .expect("held")
        .expect("serialized")
}

#[test]
fn a_signed_artifact_from_a_twin_host_loads_without_compiling() {
    let (compiler, digest) = compiled("test-trap");
    let signer = ArtifactSigner::generate().expect("key");
    let artifact = signed(&compiler, &digest, &signer);
    assert_eq!(artifact.fingerprint, compiler.engine_fingerprint());
    assert!(
        compiler
            .signed_artifact(&Digest::of(b"x"), &signer)
            .is_none()
    );

    let worker = Host::new(HostConfig::default()).expect("host");
    assert_eq!(worker.engine_fingerprint(), compiler.engine_fingerprint());
    let p = worker
        .load_precompiled(
            &digest,
            &artifact.fingerprint,
            &artifact.signature,
            &artifact.bytes,
            &signer.public_key(),
        )
        .expect("load the artifact");
    assert_eq!(p.source(), LoadSource::Shipped);
    p.invoke(&Invocation::new("ok", "{}"), &Grants::none())
        .expect("and run it");
    assert!(worker.cached(&digest).is_some());
}

/// Issue 21, finding 1: an artifact is native code, so only the trusted signer's
/// artifact of exactly this digest is ever loaded.
#[test]
fn artifacts_of_another_plugin_key_engine_or_content_are_refused() {
    let (compiler, trap) = compiled("test-trap");
    let etc_file = module("etc-file");
    let etc_digest = Digest::of(&etc_file);
    let signer = ArtifactSigner::generate().expect("key");
    let trusted = signer.public_key();
    let artifact = signed(&compiler, &trap, &signer);
    let worker = Host::new(HostConfig::default()).expect("host");
    let own = worker.engine_fingerprint();
    let refuse = |digest: &Digest, fingerprint: &str, a: &SignedArtifact, bytes: &[u8], why| {
        let e = worker
            .load_precompiled(digest, fingerprint, &a.signature, bytes, &trusted)
            .expect_err(why);
        assert_eq!(e.kind(), ErrorKind::BadModule, "{why}: {e}");
        e.to_string()
    };

    // The trusted signer's genuine artifact of test-trap, under etc-file's digest.
    let e = refuse(
        &etc_digest,
        &own,
        &artifact,
        &artifact.bytes,
        "another plugin's artifact",
    );
    assert!(e.contains("not signed as"), "{e}");
    // The same artifact signed by anyone else (a token holder's own key).
    let stranger = ArtifactSigner::generate().expect("key");
    let forged = signed(&compiler, &trap, &stranger);
    refuse(&trap, &own, &forged, &forged.bytes, "another key");
    let forged = SignedArtifact {
        signature: stranger.sign(&etc_digest, &own, &artifact.bytes),
        ..artifact.clone()
    };
    refuse(
        &etc_digest,
        &own,
        &forged,
        &forged.bytes,
        "another key, this digest",
    );
    // Another engine, damaged bytes, the module itself as an artifact.
    let e = refuse(
        &trap,
        "0000000000000000",
        &artifact,
        &artifact.bytes,
        "a foreign fingerprint",
    );
    assert!(e.contains("compiled for engine"), "{e}");
    let mut damaged = artifact.bytes.clone();
    damaged.truncate(damaged.len() / 2);
    for bad in [b"garbage".to_vec(), damaged, module("test-trap")] {
        refuse(&trap, &own, &artifact, &bad, "changed bytes");
    }
    // Signed garbage is still not a component: wasmtime's own check.
    let garbage = SignedArtifact {
        signature: signer.sign(&trap, &own, b"garbage"),
        bytes: b"garbage".to_vec(),
        ..artifact.clone()
    };
    let e = refuse(&trap, &own, &garbage, &garbage.bytes, "signed garbage");
    assert!(e.contains("not a precompiled component"), "{e}");

    assert!(
        worker.cached(&etc_digest).is_none(),
        "nothing refused was kept"
    );
    assert!(worker.cached(&trap).is_none(), "nothing refused was kept");
    // The module itself is what makes etc-file loadable, compiled here.
    let p = worker.load(&etc_file, Some(&etc_digest)).expect("compile");
    assert_eq!(p.source(), LoadSource::Compiled);
    assert_eq!(p.describe().expect("describe").name, "etc-file");
}

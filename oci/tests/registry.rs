//! The OCI client and cosign signatures against a real docker-registry on loopback:
//! push and pull, htpasswd authentication, missing tags, unknown digests, a registry that
//! is down, and signatures by trusted, untrusted and no keys.

use hostplug_oci::client::MAX_SMALL_BLOB_BYTES;
use hostplug_oci::{Credentials, Error, Reference, RegistryClient, SigningKey, cosign};
use hostplug_podman::registry::Registry;

const LIMIT: u64 = 1 << 20;

fn reference(s: &str) -> Reference {
    s.parse().expect("reference")
}

fn creds(user: &str, password: &str) -> Option<Credentials> {
    Some(Credentials {
        username: user.into(),
        password: password.into(),
    })
}

#[tokio::test]
async fn push_then_pull_pins_the_manifest_and_checks_every_digest() {
    let registry = Registry::start(None).expect("registry");
    let client = RegistryClient::new(registry.addr(), true, None).expect("client");
    let module = b"\0asm\x0d\0\x01\0 not really a component".to_vec();
    let tagged = reference(&format!("{}/plugins/demo:1.0", registry.addr()));
    let pinned = client.push_wasm(&tagged, &module).await.expect("push");
    let digest = pinned.digest.clone().expect("pinned");
    assert!(hostplug_oci::is_sha256_digest(&digest));
    assert_eq!(pinned.tag.as_deref(), Some("1.0"));

    // The same module pushed again gives the same digest (reproducible config).
    let again = client
        .push_wasm(&tagged, &module)
        .await
        .expect("push again");
    assert_eq!(again.digest.as_deref(), Some(digest.as_str()));

    // By digest and by tag: the module, pinned to the manifest digest.
    for r in [pinned.clone(), tagged.clone()] {
        let pulled = client.pull_wasm(&r, LIMIT).await.expect("pull");
        assert_eq!(pulled.bytes, module);
        assert_eq!(pulled.manifest_digest, digest);
    }

    // The manifest follows the Wasm OCI artifact layout.
    let m = client.manifest(&pinned).await.expect("manifest").manifest;
    assert_eq!(m.config.media_type, "application/vnd.wasm.config.v0+json");
    assert_eq!(m.layers.len(), 1);
    assert_eq!(m.layers[0].media_type, "application/wasm");
    let config = client
        .blob(&pinned, &m.config, MAX_SMALL_BLOB_BYTES)
        .await
        .expect("config");
    let config: serde_json::Value = serde_json::from_slice(&config).expect("json");
    assert_eq!(config["architecture"], "wasm");
    assert_eq!(config["os"], "wasip2");
    assert_eq!(config["layerDigests"][0], m.layers[0].digest);

    // A size limit below the module refuses it before reading.
    let e = client.pull_wasm(&pinned, 8).await.expect_err("too large");
    assert!(matches!(e, Error::TooLarge { .. }), "{e}");

    // A missing tag, and a digest the registry does not have.
    let e = client
        .pull_wasm(
            &reference(&format!("{}/plugins/demo:2.0", registry.addr())),
            LIMIT,
        )
        .await
        .expect_err("missing tag");
    assert!(matches!(e, Error::NotFound { .. }), "{e}");
    assert!(e.to_string().contains("plugins/demo:2.0"), "{e}");
    let wrong = tagged.with_digest(&format!("sha256:{}", "0".repeat(64)));
    let e = client
        .pull_wasm(&wrong, LIMIT)
        .await
        .expect_err("unknown digest");
    assert!(matches!(e, Error::NotFound { .. }), "{e}");

    // Not a Wasm artifact: a signature manifest is an OCI image, not a component.
    let (key, _) = SigningKey::generate().expect("key");
    let tag = cosign::sign(&client, &pinned, &key).await.expect("sign");
    let e = client
        .pull_wasm(
            &reference(&format!("{}/plugins/demo:{tag}", registry.addr())),
            LIMIT,
        )
        .await
        .expect_err("not wasm");
    assert!(matches!(e, Error::NotWasm { .. }), "{e}");
}

#[tokio::test]
async fn htpasswd_registry_needs_the_right_credentials() {
    let registry = Registry::start(Some(("plugin-ci", "s3cret-pw"))).expect("registry");
    let r = reference(&format!("{}/team/p:1", registry.addr()));
    let module = b"module bytes".to_vec();

    let anonymous = RegistryClient::new(registry.addr(), true, None).expect("client");
    let e = anonymous
        .push_wasm(&r, &module)
        .await
        .expect_err("anonymous");
    assert!(matches!(e, Error::Unauthorized { .. }), "{e}");
    assert!(e.to_string().contains("none were given"), "{e}");

    let wrong =
        RegistryClient::new(registry.addr(), true, creds("plugin-ci", "guess")).expect("client");
    let e = wrong
        .push_wasm(&r, &module)
        .await
        .expect_err("wrong password");
    assert!(matches!(e, Error::Unauthorized { .. }), "{e}");
    assert!(e.to_string().contains("credentials were rejected"), "{e}");
    assert!(!e.to_string().contains("guess"), "{e}");

    let right = RegistryClient::new(registry.addr(), true, creds("plugin-ci", "s3cret-pw"))
        .expect("client");
    let pinned = right.push_wasm(&r, &module).await.expect("push");
    assert_eq!(
        right.pull_wasm(&pinned, LIMIT).await.expect("pull").bytes,
        module
    );
    let e = anonymous
        .pull_wasm(&pinned, LIMIT)
        .await
        .expect_err("anonymous pull");
    assert!(matches!(e, Error::Unauthorized { .. }), "{e}");
}

#[tokio::test]
async fn registry_down_and_https_only_are_clear_errors() {
    let mut registry = Registry::start(None).expect("registry");
    let r = reference(&format!("{}/p:1", registry.addr()));
    // Not marked insecure: HTTPS to a plain-HTTP registry fails, nothing falls back.
    let secure = RegistryClient::new(registry.addr(), false, None).expect("client");
    let e = secure
        .pull_wasm(&r, LIMIT)
        .await
        .expect_err("tls to plain http");
    assert!(matches!(e, Error::Unreachable { .. }), "{e}");
    registry.stop();
    let client = RegistryClient::new(registry.addr(), true, None).expect("client");
    let e = client.pull_wasm(&r, LIMIT).await.expect_err("down");
    assert!(matches!(e, Error::Unreachable { .. }), "{e}");
    assert!(e.to_string().contains(registry.addr()), "{e}");
    assert!(e.to_string().to_lowercase().contains("connect"), "{e}");
}

#[tokio::test]
async fn signatures_verify_only_for_trusted_keys_and_the_signed_artifact() {
    let registry = Registry::start(None).expect("registry");
    let client = RegistryClient::new(registry.addr(), true, None).expect("client");
    let tagged = reference(&format!("{}/plugins/signed:1", registry.addr()));
    let pinned = client
        .push_wasm(&tagged, b"version one")
        .await
        .expect("push");
    let digest = pinned.digest.clone().expect("pinned");
    let (trusted, _) = SigningKey::generate().expect("key");
    let (stranger, _) = SigningKey::generate().expect("key");
    let keys = [trusted.public_key()];

    // Unsigned.
    let e = cosign::verify(&client, &pinned, &digest, &keys)
        .await
        .expect_err("unsigned");
    assert!(matches!(e, Error::Unsigned { .. }), "{e}");
    assert!(e.to_string().contains(".sig"), "{e}");

    // Signed by a key nobody trusts.
    cosign::sign(&client, &pinned, &stranger)
        .await
        .expect("sign");
    let e = cosign::verify(&client, &pinned, &digest, &keys)
        .await
        .expect_err("stranger");
    assert!(matches!(e, Error::BadSignature { .. }), "{e}");
    assert!(e.to_string().contains("none of the trusted keys"), "{e}");

    // Also signed by the trusted key: verifies (the stranger's signature is kept).
    cosign::sign(&client, &pinned, &trusted)
        .await
        .expect("sign");
    let by = cosign::verify(&client, &pinned, &digest, &keys)
        .await
        .expect("verifies");
    assert_eq!(by, trusted.public_key());
    let sigs = client
        .manifest(&reference(&format!(
            "{}/plugins/signed:{}",
            registry.addr(),
            cosign::signature_tag(&digest)
        )))
        .await
        .expect("signature manifest");
    assert_eq!(sigs.manifest.layers.len(), 2);

    // The tag moved to another module: its digest has no signature.
    let moved = client
        .push_wasm(&tagged, b"version two, tampered")
        .await
        .expect("push");
    let moved_digest = moved.digest.clone().expect("pinned");
    assert_ne!(moved_digest, digest);
    let e = cosign::verify(&client, &moved, &moved_digest, &keys)
        .await
        .expect_err("moved");
    assert!(matches!(e, Error::Unsigned { .. }), "{e}");

    // A signature manifest copied from the signed artifact onto the tampered one: the
    // signatures verify, but for the other digest.
    let copy = client
        .manifest(&reference(&format!(
            "{}/plugins/signed:{}",
            registry.addr(),
            cosign::signature_tag(&digest)
        )))
        .await
        .expect("signatures");
    client
        .push_manifest(
            &moved,
            Some(&cosign::signature_tag(&moved_digest)),
            &copy.manifest,
        )
        .await
        .expect("copy");
    let e = cosign::verify(&client, &moved, &moved_digest, &keys)
        .await
        .expect_err("copied");
    assert!(e.to_string().contains("another artifact"), "{e}");
}

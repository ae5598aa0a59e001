//! Shipping precompiled components between hosts with an identical engine, so a plugin
//! is compiled once per cluster instead of once per worker — and only ever loading one
//! that the operator signed.
//!
//! A precompiled artifact is native code: loaded, it runs with everything the process
//! can reach, outside the Wasm sandbox (no sensitive-path list, no docker or CRI
//! allow-list). The engine fingerprint says only which engine an artifact is for; anyone
//! can compute it from the public image, so it is no proof of origin. The proof is a
//! signature: the operator makes an Ed25519 key pair when it starts ([`ArtifactSigner`];
//! the private half lives in its memory only, never in a file, a Secret or a log), puts
//! the public half into each worker Pod it creates (`HOSTPLUG_ARTIFACT_KEY`, an
//! [`ArtifactKey`]), and signs each artifact it ships: the signature covers the module's
//! digest, the engine fingerprint and the artifact's sha256 ([`statement`]).
//! [`Host::load_precompiled`] checks all three against the trusted key before it looks
//! at the bytes, so an artifact of another plugin, one for another digest, one signed by
//! anyone else, or one changed on the way is refused, and the caller sends the module
//! (which the host compiles after checking its digest). Whoever holds a worker's bearer
//! token can therefore upload Wasm, which the sandbox confines, but no native code.
//!
//! This module must never load an artifact whose signature it did not verify with the
//! key its caller trusts, and never from anywhere but its caller: never from a path,
//! never found on disk (the on-disk cache is `cache.rs`, holding only what this host
//! compiled or verified).

use std::sync::Arc;
use std::time::Instant;

use ring::signature::{ED25519, Ed25519KeyPair, KeyPair as _, UnparsedPublicKey};
use sha2::{Digest as _, Sha256};
use wasmtime::component::Component;

pub use hostplug_api::protocol::ArtifactSignature;
pub use hostplug_api::worker::ArtifactKey;

use crate::cache::engine_fingerprint;
use crate::plugin::{LoadSource, Plugin};
use crate::{Digest, Error, Host, Result};

/// What every signature covers first: the purpose and the layout's version, so that a
/// signature made for anything else (or for a later layout) never verifies as one of
/// these.
const STATEMENT_CONTEXT: &[u8] = b"hostplug precompiled artifact v1\n";

/// The bytes an artifact's signature covers: [`STATEMENT_CONTEXT`], the module digest
/// (32 bytes), the engine fingerprint (its length as 4 bytes big-endian, then its
/// bytes), and the sha256 of the artifact (32 bytes). Fixed-size or length-prefixed
/// fields, so no two different triples give the same bytes.
fn statement(digest: &Digest, fingerprint: &str, artifact: &[u8]) -> Vec<u8> {
    let fp = fingerprint.as_bytes();
    let fp_len = u32::try_from(fp.len()).unwrap_or(u32::MAX);
    let mut s = Vec::with_capacity(STATEMENT_CONTEXT.len() + 32 + 4 + fp.len() + 32);
    s.extend_from_slice(STATEMENT_CONTEXT);
    s.extend_from_slice(digest.as_bytes());
    s.extend_from_slice(&fp_len.to_be_bytes());
    s.extend_from_slice(fp);
    s.extend_from_slice(&Sha256::digest(artifact));
    s
}

/// The operator's signing key for precompiled artifacts: an Ed25519 key pair made in
/// memory by [`ArtifactSigner::generate`], never serialized; a new process makes a new
/// one. `Debug` shows the public key only.
pub struct ArtifactSigner {
    pair: Ed25519KeyPair,
}

impl std::fmt::Debug for ArtifactSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ArtifactSigner")
            .field("public_key", &self.public_key())
            .finish_non_exhaustive()
    }
}

impl ArtifactSigner {
    /// A fresh key pair from the system's random source. Errors: `Engine` when the
    /// random source fails.
    pub fn generate() -> Result<Self> {
        let rng = ring::rand::SystemRandom::new();
        let pkcs8 = Ed25519KeyPair::generate_pkcs8(&rng)
            .map_err(|e| Error::Engine(format!("making the artifact signing key: {e}")))?;
        let pair = Ed25519KeyPair::from_pkcs8(pkcs8.as_ref())
            .map_err(|e| Error::Engine(format!("reading the artifact signing key: {e}")))?;
        Ok(Self { pair })
    }

    /// The public half, for the workers' settings.
    pub fn public_key(&self) -> ArtifactKey {
        let mut bytes = [0u8; 32];
        bytes.copy_from_slice(self.pair.public_key().as_ref());
        ArtifactKey::from_bytes(bytes)
    }

    /// The signature of `artifact` as the precompiled form of `digest` for engine
    /// `fingerprint`.
    pub fn sign(&self, digest: &Digest, fingerprint: &str, artifact: &[u8]) -> ArtifactSignature {
        let sig = self.pair.sign(&statement(digest, fingerprint, artifact));
        let mut bytes = [0u8; 64];
        bytes.copy_from_slice(sig.as_ref());
        ArtifactSignature::from_bytes(bytes)
    }
}

/// Whether `signature` is `key`'s signature of `artifact` as the precompiled form of
/// `digest` for engine `fingerprint`.
fn verifies(
    key: &ArtifactKey,
    signature: &ArtifactSignature,
    digest: &Digest,
    fingerprint: &str,
    artifact: &[u8],
) -> bool {
    UnparsedPublicKey::new(&ED25519, key.as_bytes())
        .verify(
            &statement(digest, fingerprint, artifact),
            signature.as_bytes(),
        )
        .is_ok()
}

/// A signed precompiled artifact, as the operator ships it.
#[derive(Clone, PartialEq, Eq)]
pub struct SignedArtifact {
    /// The engine fingerprint it was compiled for ([`Host::engine_fingerprint`]).
    pub fingerprint: String,
    /// The serialized component.
    pub bytes: Vec<u8>,
    /// The signer's signature of digest, fingerprint and bytes.
    pub signature: ArtifactSignature,
}

impl std::fmt::Debug for SignedArtifact {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SignedArtifact")
            .field("fingerprint", &self.fingerprint)
            .field("bytes", &self.bytes.len())
            .finish_non_exhaustive()
    }
}

impl Host {
    /// The fingerprint of this host's engine settings (16 hex digits): an artifact is
    /// only usable by a host with the same fingerprint.
    pub fn engine_fingerprint(&self) -> String {
        engine_fingerprint(&self.inner.engine)
    }

    /// The serialized (precompiled) form of a plugin this host holds, signed by
    /// `signer`, for [`Host::load_precompiled`] on a host with the same fingerprint that
    /// trusts the signer's public key. `None` when this host does not hold `digest`.
    pub fn signed_artifact(
        &self,
        digest: &Digest,
        signer: &ArtifactSigner,
    ) -> Option<Result<SignedArtifact>> {
        let plugin = self.cached(digest)?;
        let fingerprint = self.engine_fingerprint();
        Some(
            plugin
                .component
                .serialize()
                .map_err(|e| Error::Engine(format!("serializing {digest}: {e:#}")))
                .map(|bytes| SignedArtifact {
                    signature: signer.sign(digest, &fingerprint, &bytes),
                    fingerprint,
                    bytes,
                }),
        )
    }

    /// Loads the plugin `digest` from `artifact`, compiled for engine `fingerprint`,
    /// when `signature` is `trusted`'s signature of exactly that (see the module docs).
    /// Nothing about the artifact is looked at before the signature verified. A foreign
    /// fingerprint, a signature that does not verify (another digest, another artifact,
    /// another key), a damaged artifact or one that does not link is a `BadModule`
    /// error, and nothing is kept: the caller compiles the module instead.
    #[allow(unsafe_code)] // loading native code; see the SAFETY note
    pub fn load_precompiled(
        &self,
        digest: &Digest,
        fingerprint: &str,
        signature: &ArtifactSignature,
        artifact: &[u8],
        trusted: &ArtifactKey,
    ) -> Result<Arc<Plugin>> {
        if let Some(p) = self.cached(digest) {
            return Ok(p);
        }
        let bad = |message: String| Error::BadModule {
            digest: *digest,
            message,
        };
        let own = self.engine_fingerprint();
        if fingerprint != own {
            return Err(bad(format!(
                "the artifact was compiled for engine {fingerprint}, this host is {own}"
            )));
        }
        let started = Instant::now();
        if !verifies(trusted, signature, digest, fingerprint, artifact) {
            return Err(bad(format!(
                "the artifact is not signed as {digest} by the key this host trusts \
                 ({trusted}); precompiled code is loaded only from the operator that \
                 made this worker"
            )));
        }
        if wasmtime::Engine::detect_precompiled(artifact) != Some(wasmtime::Precompiled::Component)
        {
            return Err(bad("not a precompiled component".into()));
        }
        // SAFETY: the signature verified with the key the caller trusts (the public half
        // of the operator's in-memory key, from the worker's Pod spec), over this digest,
        // this engine and these exact bytes: they are what that operator serialized from
        // a component it compiled itself after checking the module's digest. wasmtime
        // validates the header and the engine compatibility again before use.
        let component = unsafe { Component::deserialize(&self.inner.engine, artifact) }
            .map_err(|e| bad(format!("{e:#}")))?;
        let plugin = self.prepare(*digest, component, LoadSource::Shipped, started)?;
        if let Some(disk) = &self.inner.disk {
            disk.store(digest, &plugin.component);
        }
        Ok(self.remember(plugin))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_signature_covers_digest_engine_and_bytes_under_one_key() -> Result<()> {
        let signer = ArtifactSigner::generate()?;
        let key = signer.public_key();
        let (a, b) = (Digest::of(b"a"), Digest::of(b"b"));
        let sig = signer.sign(&a, "0123456789abcdef", b"native");
        assert!(verifies(&key, &sig, &a, "0123456789abcdef", b"native"));
        assert!(!verifies(&key, &sig, &b, "0123456789abcdef", b"native"));
        assert!(!verifies(&key, &sig, &a, "0123456789abcdee", b"native"));
        assert!(!verifies(&key, &sig, &a, "0123456789abcdef", b"nativE"));
        let other = ArtifactSigner::generate()?;
        assert_ne!(other.public_key(), key, "each signer is new");
        assert!(!verifies(
            &other.public_key(),
            &sig,
            &a,
            "0123456789abcdef",
            b"native"
        ));
        assert!(format!("{signer:?}").contains(&key.to_string()));
        Ok(())
    }
}

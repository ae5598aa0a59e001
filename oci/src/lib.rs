//! Plugins as OCI artifacts: pushing and pulling a WebAssembly component in the Wasm OCI
//! artifact layout (the one `wkg`, `wasm-tools` and the `oci-wasm` crate use), and
//! key-based signatures in cosign's format, stored next to it.
//!
//! Used by the operator (to resolve `HostPlugin.spec.source.oci`) and by the `hostplug`
//! CLI (`plugin push|sign|verify|keygen`). Everything a registry returns is checked
//! against a digest before it is used: a manifest against the digest of the reference
//! (when it names one), a layer against the digest in its manifest, a signature payload
//! against the digest of its layer. Sizes are capped before anything is read in full, an
//! error answer's body included (see [`client`]).
//!
//! Why not `oci-client` + `oci-wasm`: both were checked (December 2026). `oci-wasm` 0.6
//! needs `oci-client` 0.17, which brings reqwest 0.13 and either OpenSSL (`native-tls`)
//! or aws-lc-rs through `jsonwebtoken` (`rustls-tls`), plus a second `wit-component` /
//! `wasmparser` generation; hostplug builds with rustls on ring only. The subset needed
//! here (distribution API v2: blob upload, manifest put/get, basic and bearer auth) is
//! small, and the layout constants below are the ones `oci-wasm` defines.
//!
//! This crate must never follow a reference it was not given (no search registries, no
//! Docker Hub default) and never talk plain HTTP unless the caller marked the registry
//! insecure.

pub mod client;
pub mod cosign;
pub mod reference;

pub use client::{Credentials, Pulled, RegistryClient};
pub use cosign::{PublicKey, SigningKey};
pub use reference::Reference;

/// Media type of the manifest of a Wasm artifact (a plain OCI image manifest).
pub const MANIFEST_MEDIA_TYPE: &str = "application/vnd.oci.image.manifest.v1+json";
/// Media type of a Docker v2 manifest, accepted when pulling signatures.
pub const DOCKER_MANIFEST_MEDIA_TYPE: &str = "application/vnd.docker.distribution.manifest.v2+json";
/// Media type of the config blob of a Wasm artifact.
pub const WASM_CONFIG_MEDIA_TYPE: &str = "application/vnd.wasm.config.v0+json";
/// Media type of the layer holding the component.
pub const WASM_LAYER_MEDIA_TYPE: &str = "application/wasm";
/// `architecture` of a Wasm artifact's config.
pub const WASM_ARCHITECTURE: &str = "wasm";
/// `os` of a component's config (a core module would be `wasip1`).
pub const COMPONENT_OS: &str = "wasip2";

/// Errors of registry access and of signatures. Each message names the reference or the
/// registry and says what to do where there is something to do.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The reference does not parse.
    #[error("{reference:?} is not an image reference: {problem}")]
    InvalidReference {
        /// What was given.
        reference: String,
        /// Why it is refused.
        problem: String,
    },
    /// No connection to the registry.
    #[error("registry {registry} is unreachable: {detail}")]
    Unreachable {
        /// `host[:port]`.
        registry: String,
        /// The transport error with its causes.
        detail: String,
    },
    /// The registry refused the request for lack of (valid) credentials.
    #[error("registry {registry} refused {what}: {detail}")]
    Unauthorized {
        /// `host[:port]`.
        registry: String,
        /// What was asked for.
        what: String,
        /// What to check.
        detail: String,
    },
    /// A manifest or blob the reference names does not exist.
    #[error("{what} not found in registry {registry}")]
    NotFound {
        /// `host[:port]`.
        registry: String,
        /// What was asked for.
        what: String,
    },
    /// Content whose digest is not the one it was asked for.
    #[error("digest mismatch for {what}: expected {expected}, got {actual}; refused")]
    DigestMismatch {
        /// What was checked.
        what: String,
        /// The digest asked for.
        expected: String,
        /// The digest of what arrived.
        actual: String,
    },
    /// The artifact is not a Wasm component artifact.
    #[error("{reference} is not a Wasm artifact: {problem}")]
    NotWasm {
        /// The reference pulled.
        reference: String,
        /// What is missing or different.
        problem: String,
    },
    /// Content larger than allowed.
    #[error("{what} is {size} bytes, above the {limit}-byte limit")]
    TooLarge {
        /// What was refused.
        what: String,
        /// Its size.
        size: u64,
        /// The limit.
        limit: u64,
    },
    /// Any other answer of the registry.
    #[error("registry {registry} answered HTTP {status} to {what}: {body}")]
    Registry {
        /// `host[:port]`.
        registry: String,
        /// What was asked for.
        what: String,
        /// HTTP status.
        status: u16,
        /// The start of the answer's body (at most 200 characters, control characters
        /// as spaces; only its first 4 KiB is ever read).
        body: String,
    },
    /// A key does not parse.
    #[error("invalid key: {0}")]
    InvalidKey(String),
    /// The artifact has no signature at all.
    #[error("{reference} is not signed: no signature at {signature_tag}")]
    Unsigned {
        /// The reference whose signature was looked for.
        reference: String,
        /// The tag looked at.
        signature_tag: String,
    },
    /// Signatures exist but none verifies with the given keys.
    #[error("{reference} has no valid signature by any of the {keys} trusted key(s): {detail}")]
    BadSignature {
        /// The reference.
        reference: String,
        /// How many keys were tried.
        keys: usize,
        /// Why each signature failed (first few).
        detail: String,
    },
}

/// Result of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// `sha256:<hex>` of `bytes`, the digest form OCI uses.
pub fn sha256_digest(bytes: &[u8]) -> String {
    use sha2::Digest as _;
    format!("sha256:{}", hex::encode(sha2::Sha256::digest(bytes)))
}

/// Whether `s` is `sha256:` followed by 64 lowercase hex digits.
pub fn is_sha256_digest(s: &str) -> bool {
    s.strip_prefix("sha256:").is_some_and(|h| {
        h.len() == 64
            && h.bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    })
}

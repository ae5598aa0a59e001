//! Key-based signatures of an artifact in cosign's format.
//!
//! The format is cosign's (`cosign sign --key`): for an artifact whose manifest digest
//! is `sha256:<hex>`, a manifest at tag `sha256-<hex>.sig` in the same repository has
//! one layer per signature. Each layer is a *simple signing* payload
//! (`application/vnd.dev.cosign.simplesigning.v1+json`) naming the manifest digest, and
//! carries the base64 ASN.1 ECDSA P-256/SHA-256 signature of that payload in the
//! annotation `dev.cosignproject.cosign/signature`. Keys are PEM: the public key as
//! SubjectPublicKeyInfo (`PUBLIC KEY`, what `cosign generate-key-pair` writes to
//! `cosign.pub`), the private key as unencrypted PKCS#8 (`PRIVATE KEY`, which
//! `cosign import-key-pair` accepts). The format follows cosign's published layout
//! (`pkg/oci/static`, `pkg/cosign/payload`); it has not been cross-checked against a cosign
//! binary here (none is available offline). Expected interplay: `cosign verify --key
//! hostplug.pub --insecure-ignore-tlog` accepts what `hostplug plugin sign` wrote (there is
//! no Rekor entry), and hostplug accepts what `cosign sign --key` wrote (its Rekor bundle
//! annotation is ignored).
//!
//! Not covered: keyless signing (Fulcio certificates) and the Rekor transparency log, which
//! need the public Sigstore services; cosign's encrypted private-key format; signatures of
//! other key types. Verification is offline against the configured public keys only.
//!
//! Implemented on `ring` (already in the build through rustls) rather than the `sigstore`
//! crate, whose dependency tree (OpenSSL or aws-lc, tough, a second HTTP stack) is far
//! larger than the few hundred lines of format used here.

use std::collections::BTreeMap;

use base64::Engine as _;
use ring::rand::SystemRandom;
use ring::signature::{
    ECDSA_P256_SHA256_ASN1, ECDSA_P256_SHA256_ASN1_SIGNING, EcdsaKeyPair, KeyPair as _,
    UnparsedPublicKey,
};
use rustls_pki_types::pem::PemObject as _;
use rustls_pki_types::{PrivatePkcs8KeyDer, SubjectPublicKeyInfoDer};
use serde::Deserialize;
use serde_json::json;

use crate::client::{Descriptor, Manifest, RegistryClient};
use crate::{Error, MANIFEST_MEDIA_TYPE, Reference, Result, sha256_digest};

/// Media type of a simple signing payload layer.
pub const SIMPLE_SIGNING_MEDIA_TYPE: &str = "application/vnd.dev.cosign.simplesigning.v1+json";
/// Annotation holding the base64 signature of the payload.
pub const SIGNATURE_ANNOTATION: &str = "dev.cosignproject.cosign/signature";
/// `critical.type` of a cosign payload.
pub const PAYLOAD_TYPE: &str = "cosign container image signature";
/// Media type of the signature manifest's config.
const SIGNATURE_CONFIG_MEDIA_TYPE: &str = "application/vnd.oci.image.config.v1+json";
/// Signatures looked at per artifact: 32. Each costs a blob fetch; a real artifact has
/// one or two.
const MAX_SIGNATURES_CHECKED: usize = 32;

/// DER prefix of a P-256 SubjectPublicKeyInfo (id-ecPublicKey, prime256v1, BIT STRING of
/// 66 bytes): what precedes the 65-byte uncompressed point.
const P256_SPKI_PREFIX: [u8; 26] = [
    0x30, 0x59, 0x30, 0x13, 0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01, 0x06, 0x08, 0x2a,
    0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07, 0x03, 0x42, 0x00,
];

/// An ECDSA P-256 public key.
#[derive(Clone, PartialEq, Eq)]
pub struct PublicKey {
    point: Vec<u8>,
}

impl std::fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "PublicKey({})", self.fingerprint())
    }
}

impl PublicKey {
    /// Parses a `PUBLIC KEY` PEM block (SubjectPublicKeyInfo of a P-256 key).
    pub fn from_pem(pem: &str) -> Result<Self> {
        let der = SubjectPublicKeyInfoDer::from_pem_slice(pem.as_bytes())
            .map_err(|e| Error::InvalidKey(format!("not a PEM PUBLIC KEY: {e}")))?;
        Self::from_der(der.as_ref())
    }

    /// Every `PUBLIC KEY` block of `text` (a key file may hold several); none is an error.
    pub fn all_from_pem(text: &str) -> Result<Vec<Self>> {
        let mut keys = Vec::new();
        for der in SubjectPublicKeyInfoDer::pem_slice_iter(text.as_bytes()) {
            let der = der.map_err(|e| Error::InvalidKey(format!("not a PEM PUBLIC KEY: {e}")))?;
            keys.push(Self::from_der(der.as_ref())?);
        }
        if keys.is_empty() {
            return Err(Error::InvalidKey("no PEM PUBLIC KEY block".to_owned()));
        }
        Ok(keys)
    }

    fn from_der(der: &[u8]) -> Result<Self> {
        let point = der
            .strip_prefix(P256_SPKI_PREFIX.as_slice())
            .filter(|p| p.len() == 65 && p[0] == 4)
            .ok_or_else(|| Error::InvalidKey("not an ECDSA P-256 public key".to_owned()))?;
        Ok(Self {
            point: point.to_vec(),
        })
    }

    /// The key as a `PUBLIC KEY` PEM block.
    pub fn to_pem(&self) -> String {
        let mut der = P256_SPKI_PREFIX.to_vec();
        der.extend_from_slice(&self.point);
        pem("PUBLIC KEY", &der)
    }

    /// `sha256:<first 16 hex>` of the key's DER, to name it in messages.
    pub fn fingerprint(&self) -> String {
        let mut der = P256_SPKI_PREFIX.to_vec();
        der.extend_from_slice(&self.point);
        sha256_digest(&der)[..23].to_owned()
    }

    /// Whether `signature` (ASN.1 DER) is this key's signature of `message`.
    pub fn verify(&self, message: &[u8], signature: &[u8]) -> bool {
        UnparsedPublicKey::new(&ECDSA_P256_SHA256_ASN1, &self.point)
            .verify(message, signature)
            .is_ok()
    }
}

/// An ECDSA P-256 private key.
pub struct SigningKey {
    pair: EcdsaKeyPair,
}

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SigningKey({})", self.public_key().fingerprint())
    }
}

impl SigningKey {
    /// A new random key; returns it and its PKCS#8 `PRIVATE KEY` PEM.
    pub fn generate() -> Result<(Self, String)> {
        let rng = SystemRandom::new();
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, &rng)
            .map_err(|_| Error::InvalidKey("the system random source failed".to_owned()))?;
        let pem = pem("PRIVATE KEY", pkcs8.as_ref());
        Ok((Self::from_pem(&pem)?, pem))
    }

    /// Parses an unencrypted PKCS#8 `PRIVATE KEY` PEM block of a P-256 key.
    pub fn from_pem(pem: &str) -> Result<Self> {
        let der = PrivatePkcs8KeyDer::from_pem_slice(pem.as_bytes()).map_err(|e| {
            Error::InvalidKey(format!(
                "not an unencrypted PKCS#8 PRIVATE KEY PEM ({e}); cosign's encrypted keys are not read"
            ))
        })?;
        let pair = EcdsaKeyPair::from_pkcs8(
            &ECDSA_P256_SHA256_ASN1_SIGNING,
            der.secret_pkcs8_der(),
            &SystemRandom::new(),
        )
        .map_err(|e| Error::InvalidKey(format!("not an ECDSA P-256 key: {e}")))?;
        Ok(Self { pair })
    }

    /// The matching public key.
    pub fn public_key(&self) -> PublicKey {
        PublicKey {
            point: self.pair.public_key().as_ref().to_vec(),
        }
    }

    /// ASN.1 DER signature of `message`.
    pub fn sign(&self, message: &[u8]) -> Result<Vec<u8>> {
        self.pair
            .sign(&SystemRandom::new(), message)
            .map(|s| s.as_ref().to_vec())
            .map_err(|_| Error::InvalidKey("signing failed".to_owned()))
    }
}

fn pem(label: &str, der: &[u8]) -> String {
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    for line in b64.as_bytes().chunks(64) {
        out.push_str(&String::from_utf8_lossy(line));
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

/// The tag cosign stores the signatures of `manifest_digest` under: `sha256-<hex>.sig`.
pub fn signature_tag(manifest_digest: &str) -> String {
    format!("{}.sig", manifest_digest.replacen(':', "-", 1))
}

/// The simple signing payload cosign signs for `reference` at `manifest_digest`.
pub fn payload(reference: &Reference, manifest_digest: &str) -> Vec<u8> {
    let p = json!({
        "critical": {
            "identity": {"docker-reference": reference.repository_path()},
            "image": {"docker-manifest-digest": manifest_digest},
            "type": PAYLOAD_TYPE,
        },
        "optional": null,
    });
    serde_json::to_vec(&p).unwrap_or_default()
}

/// Signs the artifact `reference` (which must be pinned by digest) with `key` and adds
/// the signature to its signature manifest, keeping the signatures already there.
/// Returns the signature tag.
pub async fn sign(
    client: &RegistryClient,
    reference: &Reference,
    key: &SigningKey,
) -> Result<String> {
    let digest = reference
        .digest
        .clone()
        .ok_or_else(|| Error::InvalidReference {
            reference: reference.to_string(),
            problem: "sign a reference pinned by digest (…@sha256:<hex>), as `plugin push` prints"
                .into(),
        })?;
    // The artifact must exist (and be what the digest says) before it is vouched for.
    client.manifest(reference).await?;
    let tag = signature_tag(&digest);
    let payload = payload(reference, &digest);
    let signature = key.sign(&payload)?;
    let mut layer = client
        .push_blob(reference, SIMPLE_SIGNING_MEDIA_TYPE, &payload)
        .await?;
    layer.annotations = Some(BTreeMap::from([(
        SIGNATURE_ANNOTATION.to_owned(),
        base64::engine::general_purpose::STANDARD.encode(&signature),
    )]));
    let mut layers = match client.manifest_if_any(reference, &tag).await? {
        Some(existing) => existing.manifest.layers,
        None => Vec::new(),
    };
    layers.push(layer);
    let diff_ids: Vec<&str> = layers.iter().map(|l| l.digest.as_str()).collect();
    let config = json!({
        "architecture": "",
        "os": "",
        "config": {},
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
    });
    let config = serde_json::to_vec(&config).unwrap_or_default();
    let config = client
        .push_blob(reference, SIGNATURE_CONFIG_MEDIA_TYPE, &config)
        .await?;
    let manifest = Manifest {
        schema_version: 2,
        media_type: Some(MANIFEST_MEDIA_TYPE.to_owned()),
        config,
        layers,
    };
    client
        .push_manifest(reference, Some(&tag), &manifest)
        .await?;
    Ok(tag)
}

#[derive(Deserialize)]
struct Payload {
    critical: Critical,
}

#[derive(Deserialize)]
struct Critical {
    image: Image,
    #[serde(rename = "type")]
    kind: String,
}

#[derive(Deserialize)]
struct Image {
    #[serde(rename = "docker-manifest-digest")]
    docker_manifest_digest: String,
}

/// Checks one signature layer; `Ok(key)` names the key that verified it.
fn check_layer(
    layer: &Descriptor,
    payload_bytes: &[u8],
    manifest_digest: &str,
    keys: &[PublicKey],
) -> Result<PublicKey, String> {
    let sig = layer
        .annotations
        .as_ref()
        .and_then(|a| a.get(SIGNATURE_ANNOTATION))
        .ok_or("a layer without the signature annotation")?;
    let sig = base64::engine::general_purpose::STANDARD
        .decode(sig.trim())
        .map_err(|_| "a signature that is not base64")?;
    let key = keys
        .iter()
        .find(|k| k.verify(payload_bytes, &sig))
        .ok_or("a signature by none of the trusted keys (or of another payload)")?;
    let p: Payload = serde_json::from_slice(payload_bytes)
        .map_err(|e| format!("a signed payload that is not a cosign payload: {e}"))?;
    if p.critical.kind != PAYLOAD_TYPE {
        return Err(format!("a signed payload of type {:?}", p.critical.kind));
    }
    if p.critical.image.docker_manifest_digest != manifest_digest {
        return Err(format!(
            "a valid signature of another artifact ({})",
            p.critical.image.docker_manifest_digest
        ));
    }
    Ok(key.clone())
}

/// Verifies that the artifact with manifest `manifest_digest` in `reference`'s repository
/// has a signature by one of `keys`; returns the key that signed it.
pub async fn verify(
    client: &RegistryClient,
    reference: &Reference,
    manifest_digest: &str,
    keys: &[PublicKey],
) -> Result<PublicKey> {
    let tag = signature_tag(manifest_digest);
    let shown = reference.with_digest(manifest_digest).to_string();
    let Some(sigs) = client.manifest_if_any(reference, &tag).await? else {
        return Err(Error::Unsigned {
            reference: shown,
            signature_tag: tag,
        });
    };
    let mut problems = Vec::new();
    for layer in sigs
        .manifest
        .layers
        .iter()
        .filter(|l| l.media_type == SIMPLE_SIGNING_MEDIA_TYPE)
        .take(MAX_SIGNATURES_CHECKED)
    {
        let payload_bytes = match client
            .blob(reference, layer, crate::client::MAX_SMALL_BLOB_BYTES)
            .await
        {
            Ok(b) => b,
            Err(e) => {
                problems.push(e.to_string());
                continue;
            }
        };
        match check_layer(layer, &payload_bytes, manifest_digest, keys) {
            Ok(key) => return Ok(key),
            Err(p) => problems.push(p),
        }
    }
    if problems.is_empty() {
        return Err(Error::Unsigned {
            reference: shown,
            signature_tag: tag,
        });
    }
    problems.dedup();
    Err(Error::BadSignature {
        reference: shown,
        keys: keys.len(),
        detail: problems.into_iter().take(3).collect::<Vec<_>>().join("; "),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const D: &str = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    fn layer(sig: &[u8]) -> Descriptor {
        Descriptor {
            media_type: SIMPLE_SIGNING_MEDIA_TYPE.into(),
            digest: D.into(),
            size: 0,
            annotations: Some(BTreeMap::from([(
                SIGNATURE_ANNOTATION.into(),
                base64::engine::general_purpose::STANDARD.encode(sig),
            )])),
        }
    }

    #[test]
    fn keys_round_trip_through_pem_and_sign() {
        let (key, private_pem) = SigningKey::generate().expect("key");
        assert!(private_pem.starts_with("-----BEGIN PRIVATE KEY-----\n"));
        let again = SigningKey::from_pem(&private_pem).expect("parses");
        assert_eq!(again.public_key(), key.public_key());
        let public = PublicKey::from_pem(&key.public_key().to_pem()).expect("parses");
        let sig = key.sign(b"m").expect("signs");
        assert!(public.verify(b"m", &sig));
        assert!(!public.verify(b"n", &sig));
        assert!(PublicKey::from_pem(&private_pem).is_err());
        let (second, _) = SigningKey::generate().expect("key");
        let both = format!("{}{}", public.to_pem(), second.public_key().to_pem());
        assert_eq!(
            PublicKey::all_from_pem(&both).expect("two keys"),
            vec![public.clone(), second.public_key()]
        );
        assert!(PublicKey::all_from_pem("no keys here").is_err());
        assert!(SigningKey::from_pem(&public.to_pem()).is_err());
    }

    #[test]
    fn a_signature_counts_only_for_its_key_and_its_digest() {
        let r: Reference = "r.example/p:1".parse().expect("ref");
        let (key, _) = SigningKey::generate().expect("key");
        let (other, _) = SigningKey::generate().expect("key");
        let p = payload(&r, D);
        let sig = key.sign(&p).expect("signs");
        let trusted = [key.public_key()];
        assert_eq!(
            check_layer(&layer(&sig), &p, D, &trusted),
            Ok(key.public_key())
        );
        // Another key, or a payload for another artifact, does not verify.
        let e = check_layer(&layer(&sig), &p, D, &[other.public_key()]).expect_err("other key");
        assert!(e.contains("none of the trusted keys"), "{e}");
        let elsewhere = "sha256:".to_owned() + &"f".repeat(64);
        let e = check_layer(&layer(&sig), &p, &elsewhere, &trusted).expect_err("other digest");
        assert!(e.contains("another artifact"), "{e}");
        assert_eq!(signature_tag(D), format!("sha256-{}.sig", &D[7..]));
    }

    /// The payload has the fields and names of cosign's simple signing format
    /// (sigstore/cosign `pkg/cosign/payload`); no cosign binary is available offline to
    /// cross-check a real signature.
    #[test]
    fn payload_has_cosign_shape() {
        let r: Reference = "127.0.0.1:5000/plugins/x:1".parse().expect("ref");
        let v: serde_json::Value = serde_json::from_slice(&payload(&r, D)).expect("json");
        assert_eq!(
            v["critical"]["identity"]["docker-reference"],
            "127.0.0.1:5000/plugins/x"
        );
        assert_eq!(v["critical"]["image"]["docker-manifest-digest"], D);
        assert_eq!(v["critical"]["type"], PAYLOAD_TYPE);
        assert!(v["optional"].is_null());
    }
}

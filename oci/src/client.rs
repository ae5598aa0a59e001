//! A registry client for the distribution API v2, limited to what plugins need: push and
//! pull of a Wasm artifact (config blob + one `application/wasm` layer) and of cosign
//! signature manifests.
//!
//! Authentication: requests go out anonymously first; a `401` with a `Basic` challenge is
//! retried with the credentials, one with a `Bearer` challenge fetches a token from the
//! realm (with the credentials, if any) and retries. Plain HTTP is used only for a
//! registry the caller marked insecure.
//!
//! Every body a registry sends is read to a cap, never in full on trust: a manifest to
//! [`MAX_MANIFEST_BYTES`], a blob to the caller's limit, a token to 64 KiB (each refused
//! beyond it), an error answer to its first [`MAX_ERROR_BODY_BYTES`] (the rest unread);
//! answers whose body is not needed (a `401` challenge, a failed token request) are
//! dropped unread. A hostile registry therefore cannot make this client buffer more than
//! those caps, whatever it declares or sends.

use std::time::Duration;

use reqwest::header::{ACCEPT, AUTHORIZATION, CONTENT_TYPE, LOCATION, WWW_AUTHENTICATE};
use reqwest::{Method, RequestBuilder, Response, StatusCode, Url};
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::{
    COMPONENT_OS, DOCKER_MANIFEST_MEDIA_TYPE, Error, MANIFEST_MEDIA_TYPE, Reference, Result,
    WASM_ARCHITECTURE, WASM_CONFIG_MEDIA_TYPE, WASM_LAYER_MEDIA_TYPE, sha256_digest,
};

/// Time limit of one registry request: 60 s, enough for a few MiB on a slow link, short
/// enough that a hung registry shows up as a HostPlugin status within a minute.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);
/// Time limit to connect: 10 s; a registry that is down is reported quickly.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Largest manifest read: 256 KiB (a Wasm manifest is under 1 KiB; a signature manifest
/// grows by ~1 KiB per signature).
pub const MAX_MANIFEST_BYTES: u64 = 256 << 10;
/// Largest config or signature payload blob read: 64 KiB.
pub const MAX_SMALL_BLOB_BYTES: u64 = 64 << 10;
/// Largest token response read: 64 KiB.
const MAX_TOKEN_BYTES: u64 = 64 << 10;
/// Most of an error answer's body read: 4 KiB. A registry's JSON error
/// (`{"errors":[{"code":…,"message":…}]}`) is well under 1 KiB, and only its first
/// [`ERROR_BODY_CHARS`] characters go into the message; the rest is never read, so a
/// registry cannot make the client buffer an error body of any size.
pub const MAX_ERROR_BODY_BYTES: usize = 4 << 10;
/// How much of an error body goes into a message: 200 characters, enough for a
/// registry's error code and message, short enough for a status line.
const ERROR_BODY_CHARS: usize = 200;

/// A user name and password (or token) for a registry.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    /// User name.
    pub username: String,
    /// Password or token.
    pub password: String,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("username", &self.username)
            .field("password", &"<redacted>")
            .finish()
    }
}

/// A pulled component.
#[derive(Debug, Clone)]
pub struct Pulled {
    /// The reference, pinned to the manifest digest.
    pub reference: Reference,
    /// `sha256:<hex>` of the manifest (what signatures sign).
    pub manifest_digest: String,
    /// The component's bytes (checked against the layer digest).
    pub bytes: Vec<u8>,
}

/// An OCI content descriptor.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Descriptor {
    /// Media type of the content.
    pub media_type: String,
    /// `sha256:<hex>`.
    pub digest: String,
    /// Size in bytes.
    pub size: u64,
    /// Annotations (cosign puts the signature here).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub annotations: Option<std::collections::BTreeMap<String, String>>,
}

/// An OCI image manifest.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Manifest {
    /// Always 2.
    pub schema_version: u32,
    /// Media type of the manifest.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub media_type: Option<String>,
    /// The config blob.
    pub config: Descriptor,
    /// The layers.
    pub layers: Vec<Descriptor>,
}

/// A client for one registry host.
#[derive(Debug, Clone)]
pub struct RegistryClient {
    http: reqwest::Client,
    registry: String,
    base: Url,
    credentials: Option<Credentials>,
}

/// The answer to a manifest request.
#[derive(Debug)]
pub struct FetchedManifest {
    /// `sha256:<hex>` of the bytes.
    pub digest: String,
    /// The manifest.
    pub manifest: Manifest,
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        let t = c.to_string();
        if !s.contains(&t) {
            s.push_str(": ");
            s.push_str(&t);
        }
        cur = c.source();
    }
    s
}

impl RegistryClient {
    /// A client for `registry` (`host[:port]`); `insecure` means plain HTTP.
    pub fn new(registry: &str, insecure: bool, credentials: Option<Credentials>) -> Result<Self> {
        let scheme = if insecure { "http" } else { "https" };
        let base = Url::parse(&format!("{scheme}://{registry}/")).map_err(|e| {
            Error::InvalidReference {
                reference: registry.to_owned(),
                problem: e.to_string(),
            }
        })?;
        let http = reqwest::Client::builder()
            .timeout(REQUEST_TIMEOUT)
            .connect_timeout(CONNECT_TIMEOUT)
            .https_only(!insecure)
            .build()
            .map_err(|e| Error::Unreachable {
                registry: registry.to_owned(),
                detail: error_chain(&e),
            })?;
        Ok(Self {
            http,
            registry: registry.to_owned(),
            base,
            credentials,
        })
    }

    fn url(&self, path: &str) -> Result<Url> {
        self.base.join(path).map_err(|e| Error::InvalidReference {
            reference: path.to_owned(),
            problem: e.to_string(),
        })
    }

    fn unreachable(&self, e: &reqwest::Error) -> Error {
        Error::Unreachable {
            registry: self.registry.clone(),
            detail: error_chain(e),
        }
    }

    /// Sends `build()`, answering one authentication challenge if the registry makes one.
    async fn send(&self, what: &str, build: impl Fn() -> RequestBuilder) -> Result<Response> {
        let resp = build().send().await.map_err(|e| self.unreachable(&e))?;
        if resp.status() != StatusCode::UNAUTHORIZED {
            return Ok(resp);
        }
        let challenge = resp
            .headers()
            .get(WWW_AUTHENTICATE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        let authorization = if challenge.to_ascii_lowercase().starts_with("bearer") {
            format!("Bearer {}", self.token(&challenge, what).await?)
        } else {
            let c = self
                .credentials
                .as_ref()
                .ok_or_else(|| self.no_credentials(what))?;
            basic(c)
        };
        let resp = build()
            .header(AUTHORIZATION, authorization)
            .send()
            .await
            .map_err(|e| self.unreachable(&e))?;
        if resp.status() == StatusCode::UNAUTHORIZED || resp.status() == StatusCode::FORBIDDEN {
            return Err(Error::Unauthorized {
                registry: self.registry.clone(),
                what: what.to_owned(),
                detail: if self.credentials.is_some() {
                    "the credentials were rejected; check the pull secret's user name and password"
                        .to_owned()
                } else {
                    "it needs credentials".to_owned()
                },
            });
        }
        Ok(resp)
    }

    fn no_credentials(&self, what: &str) -> Error {
        Error::Unauthorized {
            registry: self.registry.clone(),
            what: what.to_owned(),
            detail: "it needs credentials and none were given (set a pull secret)".to_owned(),
        }
    }

    /// A bearer token from the realm of `challenge`.
    async fn token(&self, challenge: &str, what: &str) -> Result<String> {
        let params = parse_challenge(challenge);
        let realm = params
            .iter()
            .find(|(k, _)| k == "realm")
            .map(|(_, v)| v.clone())
            .ok_or_else(|| Error::Registry {
                registry: self.registry.clone(),
                what: what.to_owned(),
                status: 401,
                body: "a Bearer challenge without a realm".to_owned(),
            })?;
        let mut url = Url::parse(&realm).map_err(|e| Error::Registry {
            registry: self.registry.clone(),
            what: what.to_owned(),
            status: 401,
            body: format!("token realm {realm:?}: {e}"),
        })?;
        for (k, v) in &params {
            if k == "service" || k == "scope" {
                url.query_pairs_mut().append_pair(k, v);
            }
        }
        let mut req = self.http.get(url);
        if let Some(c) = &self.credentials {
            req = req.header(AUTHORIZATION, basic(c));
        }
        let resp = req.send().await.map_err(|e| self.unreachable(&e))?;
        if !resp.status().is_success() {
            return Err(Error::Unauthorized {
                registry: self.registry.clone(),
                what: what.to_owned(),
                detail: format!("the token service answered HTTP {}", resp.status().as_u16()),
            });
        }
        let body = read_capped(resp, MAX_TOKEN_BYTES, "token", &self.registry).await?;
        #[derive(Deserialize)]
        struct Token {
            token: Option<String>,
            access_token: Option<String>,
        }
        let t: Token = serde_json::from_slice(&body).map_err(|e| Error::Registry {
            registry: self.registry.clone(),
            what: what.to_owned(),
            status: 200,
            body: format!("token response: {e}"),
        })?;
        t.token
            .or(t.access_token)
            .ok_or_else(|| self.no_credentials(what))
    }

    async fn check(&self, resp: Response, what: &str) -> Result<Response> {
        let status = resp.status();
        if status.is_success() {
            return Ok(resp);
        }
        if status == StatusCode::NOT_FOUND {
            return Err(Error::NotFound {
                registry: self.registry.clone(),
                what: what.to_owned(),
            });
        }
        let body = read_prefix(resp, MAX_ERROR_BODY_BYTES).await;
        Err(Error::Registry {
            registry: self.registry.clone(),
            what: what.to_owned(),
            status: status.as_u16(),
            body: message_text(&body, ERROR_BODY_CHARS),
        })
    }

    /// Fetches the manifest `reference` names (by digest when pinned, else by tag) and
    /// checks it against the pinned digest.
    pub async fn manifest(&self, reference: &Reference) -> Result<FetchedManifest> {
        self.manifest_at(
            reference,
            reference.manifest_ref(),
            reference.digest.as_deref(),
        )
        .await
    }

    async fn manifest_at(
        &self,
        reference: &Reference,
        at: &str,
        expected: Option<&str>,
    ) -> Result<FetchedManifest> {
        let what = format!("manifest {}:{at}", reference.repository_path());
        let url = self.url(&format!("v2/{}/manifests/{at}", reference.repository))?;
        let resp = self
            .send(&what, || {
                self.http.get(url.clone()).header(
                    ACCEPT,
                    format!("{MANIFEST_MEDIA_TYPE}, {DOCKER_MANIFEST_MEDIA_TYPE}"),
                )
            })
            .await?;
        let resp = self.check(resp, &what).await?;
        let bytes = read_capped(resp, MAX_MANIFEST_BYTES, &what, &self.registry).await?;
        let digest = sha256_digest(&bytes);
        if let Some(expected) = expected
            && expected != digest
        {
            return Err(Error::DigestMismatch {
                what,
                expected: expected.to_owned(),
                actual: digest,
            });
        }
        let manifest: Manifest = serde_json::from_slice(&bytes).map_err(|e| Error::NotWasm {
            reference: reference.to_string(),
            problem: format!("the manifest is not an OCI image manifest: {e}"),
        })?;
        Ok(FetchedManifest { digest, manifest })
    }

    /// Reads blob `desc` of `repository`, at most `limit` bytes, checked against its digest.
    pub async fn blob(
        &self,
        reference: &Reference,
        desc: &Descriptor,
        limit: u64,
    ) -> Result<Vec<u8>> {
        let what = format!("blob {}@{}", reference.repository_path(), desc.digest);
        if desc.size > limit {
            return Err(Error::TooLarge {
                what,
                size: desc.size,
                limit,
            });
        }
        if !crate::is_sha256_digest(&desc.digest) {
            return Err(Error::NotWasm {
                reference: reference.to_string(),
                problem: format!("layer digest {:?} is not a sha256 digest", desc.digest),
            });
        }
        let url = self.url(&format!(
            "v2/{}/blobs/{}",
            reference.repository, desc.digest
        ))?;
        let resp = self.send(&what, || self.http.get(url.clone())).await?;
        let resp = self.check(resp, &what).await?;
        let bytes = read_capped(resp, limit, &what, &self.registry).await?;
        let actual = sha256_digest(&bytes);
        if actual != desc.digest {
            return Err(Error::DigestMismatch {
                what,
                expected: desc.digest.clone(),
                actual,
            });
        }
        Ok(bytes)
    }

    /// Pulls the component `reference` names: its manifest (checked against the pinned
    /// digest), which must be a Wasm artifact with exactly one `application/wasm` layer
    /// of at most `max_bytes`, and that layer (checked against its digest).
    pub async fn pull_wasm(&self, reference: &Reference, max_bytes: u64) -> Result<Pulled> {
        let fetched = self.manifest(reference).await?;
        let not_wasm = |problem: String| Error::NotWasm {
            reference: reference.to_string(),
            problem,
        };
        if fetched.manifest.config.media_type != WASM_CONFIG_MEDIA_TYPE {
            return Err(not_wasm(format!(
                "its config has media type {:?}, not {WASM_CONFIG_MEDIA_TYPE:?}",
                fetched.manifest.config.media_type
            )));
        }
        let layers: Vec<&Descriptor> = fetched
            .manifest
            .layers
            .iter()
            .filter(|l| l.media_type == WASM_LAYER_MEDIA_TYPE)
            .collect();
        let [layer] = layers.as_slice() else {
            return Err(not_wasm(format!(
                "it has {} layers of media type {WASM_LAYER_MEDIA_TYPE:?}; exactly one is needed",
                layers.len()
            )));
        };
        let bytes = self.blob(reference, layer, max_bytes).await?;
        Ok(Pulled {
            reference: reference.with_digest(&fetched.digest),
            manifest_digest: fetched.digest,
            bytes,
        })
    }

    /// Uploads `bytes` as a blob of `reference`'s repository unless it is there already;
    /// returns its descriptor.
    pub async fn push_blob(
        &self,
        reference: &Reference,
        media_type: &str,
        bytes: &[u8],
    ) -> Result<Descriptor> {
        let digest = sha256_digest(bytes);
        let desc = Descriptor {
            media_type: media_type.to_owned(),
            digest: digest.clone(),
            size: bytes.len() as u64,
            annotations: None,
        };
        let what = format!("blob upload to {}", reference.repository_path());
        let head = self.url(&format!("v2/{}/blobs/{digest}", reference.repository))?;
        let resp = self.send(&what, || self.http.head(head.clone())).await?;
        if resp.status().is_success() {
            return Ok(desc);
        }
        let start = self.url(&format!("v2/{}/blobs/uploads/", reference.repository))?;
        let resp = self.send(&what, || self.http.post(start.clone())).await?;
        let resp = self.check(resp, &what).await?;
        let location = resp
            .headers()
            .get(LOCATION)
            .and_then(|v| v.to_str().ok())
            .ok_or_else(|| Error::Registry {
                registry: self.registry.clone(),
                what: what.clone(),
                status: resp.status().as_u16(),
                body: "no Location header for the upload".to_owned(),
            })?;
        let mut put = self.base.join(location).map_err(|e| Error::Registry {
            registry: self.registry.clone(),
            what: what.clone(),
            status: 202,
            body: format!("upload location {location:?}: {e}"),
        })?;
        put.query_pairs_mut().append_pair("digest", &digest);
        let body = bytes.to_vec();
        let resp = self
            .send(&what, || {
                self.http
                    .request(Method::PUT, put.clone())
                    .header(CONTENT_TYPE, "application/octet-stream")
                    .body(body.clone())
            })
            .await?;
        self.check(resp, &what).await?;
        Ok(desc)
    }

    /// Puts `manifest` at `tag` (or at its own digest when `tag` is `None`); returns the
    /// manifest's digest.
    pub async fn push_manifest(
        &self,
        reference: &Reference,
        tag: Option<&str>,
        manifest: &Manifest,
    ) -> Result<String> {
        let bytes = serde_json::to_vec(manifest).map_err(|e| Error::Registry {
            registry: self.registry.clone(),
            what: "manifest".to_owned(),
            status: 0,
            body: e.to_string(),
        })?;
        let digest = sha256_digest(&bytes);
        let at = tag.unwrap_or(&digest).to_owned();
        let what = format!("manifest {}:{at}", reference.repository_path());
        let url = self.url(&format!("v2/{}/manifests/{at}", reference.repository))?;
        let resp = self
            .send(&what, || {
                self.http
                    .put(url.clone())
                    .header(CONTENT_TYPE, MANIFEST_MEDIA_TYPE)
                    .body(bytes.clone())
            })
            .await?;
        self.check(resp, &what).await?;
        Ok(digest)
    }

    /// Pushes `component` as a Wasm artifact at `reference`'s tag (or untagged, by digest);
    /// returns the reference pinned to the manifest digest.
    ///
    /// The config's `created` is the Unix epoch, so pushing the same component gives the
    /// same manifest digest every time (a reproducible reference, and a signature that
    /// stays valid for a re-push).
    pub async fn push_wasm(&self, reference: &Reference, component: &[u8]) -> Result<Reference> {
        let layer_digest = sha256_digest(component);
        let config = json!({
            "created": "1970-01-01T00:00:00Z",
            "architecture": WASM_ARCHITECTURE,
            "os": COMPONENT_OS,
            "layerDigests": [layer_digest],
        });
        let config = serde_json::to_vec(&config).unwrap_or_default();
        let config = self
            .push_blob(reference, WASM_CONFIG_MEDIA_TYPE, &config)
            .await?;
        let layer = self
            .push_blob(reference, WASM_LAYER_MEDIA_TYPE, component)
            .await?;
        let manifest = Manifest {
            schema_version: 2,
            media_type: Some(MANIFEST_MEDIA_TYPE.to_owned()),
            config,
            layers: vec![layer],
        };
        let digest = self
            .push_manifest(reference, reference.tag.as_deref(), &manifest)
            .await?;
        Ok(reference.with_digest(&digest))
    }

    /// The manifest at `tag`, or `None` when the tag does not exist.
    pub async fn manifest_if_any(
        &self,
        reference: &Reference,
        tag: &str,
    ) -> Result<Option<FetchedManifest>> {
        match self.manifest_at(reference, tag, None).await {
            Ok(m) => Ok(Some(m)),
            Err(Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }
}

fn basic(c: &Credentials) -> String {
    use base64::Engine as _;
    let raw = format!("{}:{}", c.username, c.password);
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(raw)
    )
}

/// The `key="value"` pairs of a `WWW-Authenticate` challenge.
fn parse_challenge(header: &str) -> Vec<(String, String)> {
    let rest = header.split_once(' ').map(|(_, r)| r).unwrap_or_default();
    let mut out = Vec::new();
    let mut s = rest.trim();
    while let Some((k, v)) = s.split_once('=') {
        let k = k.trim().trim_start_matches(',').trim().to_owned();
        let v = v.trim_start();
        let (value, after) = if let Some(q) = v.strip_prefix('"') {
            match q.split_once('"') {
                Some((val, after)) => (val.to_owned(), after),
                None => (q.to_owned(), ""),
            }
        } else {
            match v.split_once(',') {
                Some((val, after)) => (val.trim().to_owned(), after),
                None => (v.trim().to_owned(), ""),
            }
        };
        out.push((k, value));
        s = after.trim_start_matches(',').trim();
    }
    out
}

/// At most the first `limit` bytes of `resp`'s body; the rest is never read (dropping the
/// response closes the connection). A transport error ends the read with what arrived.
async fn read_prefix(mut resp: Response, limit: usize) -> Vec<u8> {
    let mut out = Vec::new();
    while out.len() < limit {
        let Ok(Some(chunk)) = resp.chunk().await else {
            break;
        };
        let take = chunk.len().min(limit - out.len());
        out.extend_from_slice(&chunk[..take]);
    }
    out
}

/// The first `chars` characters of `bytes` as text for a message: invalid UTF-8
/// replaced, control characters (a registry's newlines, terminal escapes) made spaces.
fn message_text(bytes: &[u8], chars: usize) -> String {
    String::from_utf8_lossy(bytes)
        .chars()
        .take(chars)
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect()
}

/// The whole body of `resp`, refused as [`Error::TooLarge`] once it passes `limit` bytes
/// (by its `Content-Length` before anything is read, else as it arrives).
async fn read_capped(
    mut resp: Response,
    limit: u64,
    what: &str,
    registry: &str,
) -> Result<Vec<u8>> {
    if let Some(len) = resp.content_length()
        && len > limit
    {
        return Err(Error::TooLarge {
            what: what.to_owned(),
            size: len,
            limit,
        });
    }
    let mut out = Vec::new();
    loop {
        let chunk = resp.chunk().await.map_err(|e| Error::Unreachable {
            registry: registry.to_owned(),
            detail: error_chain(&e),
        })?;
        let Some(chunk) = chunk else { break };
        if out.len() as u64 + chunk.len() as u64 > limit {
            return Err(Error::TooLarge {
                what: what.to_owned(),
                size: out.len() as u64 + chunk.len() as u64,
                limit,
            });
        }
        out.extend_from_slice(&chunk);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn challenge_parameters() {
        let p = parse_challenge(
            r#"Bearer realm="https://auth.example/token",service="registry.example",scope="repository:a/b:pull""#,
        );
        assert_eq!(
            p,
            vec![
                ("realm".into(), "https://auth.example/token".into()),
                ("service".into(), "registry.example".into()),
                ("scope".into(), "repository:a/b:pull".into()),
            ]
        );
        assert_eq!(
            parse_challenge(r#"Basic realm="Registry Realm""#),
            vec![("realm".into(), "Registry Realm".into())]
        );
    }

    #[test]
    fn error_text_is_one_short_line() {
        let body = "{\"errors\":[{\"message\":\"bad\nthing\u{1b}]52;c;aGk=\u{7}\"}]}";
        let text = message_text(body.as_bytes(), ERROR_BODY_CHARS);
        assert!(!text.chars().any(char::is_control), "{text:?}");
        assert!(text.contains("bad thing"), "{text:?}");
        let long = "é".repeat(1000);
        assert_eq!(message_text(long.as_bytes(), 200).chars().count(), 200);
        // A cut inside a character is replaced, not an error.
        assert_eq!(message_text(&long.as_bytes()[..3], 200), "é\u{fffd}");
    }

    #[test]
    fn credentials_never_print_the_password() {
        let c = Credentials {
            username: "u".into(),
            password: "hunter2".into(),
        };
        assert!(!format!("{c:?}").contains("hunter2"));
    }
}

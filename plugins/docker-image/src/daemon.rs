//! The image endpoints of the Docker Engine API, typed, over a [`Transport`].
//!
//! In the component the transport is the host's `docker` import ([`HostDocker`]); unit
//! tests plug in an in-memory daemon. [`Daemon`] splits the calls in two: reads, and
//! mutations, which refuse to go out in a dry run. The methods check that themselves, but
//! this is the line that guarantees a dry run never reaches a mutating endpoint.

use std::collections::{BTreeMap, BTreeSet};

use hostplug_sdk::docker::{self, Method, Response};
use hostplug_sdk::registry_auth::{self, Credential};
use hostplug_sdk::{Error, Result};
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Sends one Docker Engine API request (path relative to the API version), and looks
/// up registry credentials.
pub trait Transport {
    /// One request; HTTP error statuses come back as a [`Response`], a refusal or a
    /// transport failure as an [`Error`].
    fn request(&self, method: Method, path: &str, body: Option<&[u8]>) -> Result<Response>;

    /// One request with extra headers (`X-Registry-Auth`, `Content-Type`). Transports
    /// that cannot send headers refuse any.
    fn request_with_headers(
        &self,
        method: Method,
        path: &str,
        headers: &[(&str, &str)],
        body: Option<&[u8]>,
    ) -> Result<Response> {
        if headers.is_empty() {
            self.request(method, path, body)
        } else {
            Err(Error::failed("this transport sends no extra headers"))
        }
    }

    /// The task's credential for `registry`, if any (the host's `registry-auth`).
    fn credential(&self, registry: &str) -> Option<Credential> {
        let _ = registry;
        None
    }

    /// `docker save` of `image` into `file` of the node's image archive directory.
    fn save_archive(&self, image: &str, file: &str) -> Result<docker::Archive> {
        let _ = (image, file);
        Err(Error::denied(
            "this transport has no image archive directory",
        ))
    }

    /// `docker load` of `file` from the node's image archive directory.
    fn load_archive(&self, file: &str) -> Result<String> {
        let _ = file;
        Err(Error::denied(
            "this transport has no image archive directory",
        ))
    }
}

/// The host's `docker` and `registry-auth` imports.
#[derive(Debug, Clone, Copy, Default)]
pub struct HostDocker;

impl Transport for HostDocker {
    fn request(&self, method: Method, path: &str, body: Option<&[u8]>) -> Result<Response> {
        docker::request(method, path, body)
    }

    fn request_with_headers(
        &self,
        method: Method,
        path: &str,
        headers: &[(&str, &str)],
        body: Option<&[u8]>,
    ) -> Result<Response> {
        docker::request_with_headers(method, path, headers, body)
    }

    fn credential(&self, registry: &str) -> Option<Credential> {
        registry_auth::lookup(registry)
    }

    fn save_archive(&self, image: &str, file: &str) -> Result<docker::Archive> {
        docker::save_archive(image, file)
    }

    fn load_archive(&self, file: &str) -> Result<String> {
        docker::load_archive(file)
    }
}

/// The `X-Registry-Auth` header of a request to `registry`, when the task has a
/// credential for it. The value holds the password: it goes to the daemon only.
struct RegistryAuth(Option<String>);

impl RegistryAuth {
    fn headers(&self) -> Vec<(&'static str, &str)> {
        self.0
            .as_deref()
            .map(|v| vec![("X-Registry-Auth", v)])
            .unwrap_or_default()
    }
}

/// An image as `GET /images/json` describes it, in the plugin's output shape.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ImageSummary {
    /// Image ID, `sha256:…`.
    pub id: String,
    /// Names (`repo:tag`); empty for a dangling image.
    pub repo_tags: Vec<String>,
    /// Registry digests (`repo@sha256:…`).
    pub repo_digests: Vec<String>,
    /// Creation time, seconds since the Unix epoch.
    pub created: i64,
    /// Size in bytes.
    pub size: i64,
    /// The image's labels.
    pub labels: BTreeMap<String, String>,
    /// Containers using the image, when the daemon says (-1 or absent: unknown).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub containers: Option<i64>,
}

/// The daemon's JSON for one entry of `GET /images/json`.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct RawSummary {
    id: String,
    #[serde(default)]
    repo_tags: Option<Vec<String>>,
    #[serde(default)]
    repo_digests: Option<Vec<String>>,
    #[serde(default)]
    created: i64,
    #[serde(default)]
    size: i64,
    #[serde(default)]
    labels: Option<BTreeMap<String, String>>,
    #[serde(default)]
    containers: Option<i64>,
}

/// Old daemons spell "no name" as `<none>:<none>`.
fn real_names(names: Option<Vec<String>>) -> Vec<String> {
    names
        .unwrap_or_default()
        .into_iter()
        .filter(|n| !n.starts_with("<none>"))
        .collect()
}

impl From<RawSummary> for ImageSummary {
    fn from(r: RawSummary) -> Self {
        Self {
            id: r.id,
            repo_tags: real_names(r.repo_tags),
            repo_digests: real_names(r.repo_digests),
            created: r.created,
            size: r.size,
            labels: r.labels.unwrap_or_default(),
            containers: r.containers.filter(|c| *c >= 0),
        }
    }
}

/// The parts of `GET /images/{name}/json` the plugin decides on; the whole document is
/// kept in `raw`.
#[derive(Debug, Clone, PartialEq)]
pub struct ImageDetails {
    /// Image ID, `sha256:…`.
    pub id: String,
    /// Names (`repo:tag`).
    pub repo_tags: Vec<String>,
    /// Registry digests.
    pub repo_digests: Vec<String>,
    /// Operating system, e.g. `linux`.
    pub os: String,
    /// CPU architecture, e.g. `amd64`.
    pub architecture: String,
    /// Architecture variant, e.g. `v8`, when there is one.
    pub variant: Option<String>,
    /// The daemon's whole answer.
    pub raw: Value,
}

impl ImageDetails {
    fn from_json(raw: Value) -> Result<Self> {
        let text = |v: &Value| v.as_str().map(str::to_owned);
        let list = |v: &Value| -> Vec<String> {
            v.as_array()
                .map(|a| a.iter().filter_map(text).collect())
                .map(|names| real_names(Some(names)))
                .unwrap_or_default()
        };
        let id = text(&raw["Id"])
            .filter(|id| !id.is_empty())
            .ok_or_else(|| Error::failed("docker: image inspect answered without an Id"))?;
        Ok(Self {
            id,
            repo_tags: list(&raw["RepoTags"]),
            repo_digests: list(&raw["RepoDigests"]),
            os: text(&raw["Os"]).unwrap_or_default(),
            architecture: text(&raw["Architecture"]).unwrap_or_default(),
            variant: text(&raw["Variant"]).filter(|v| !v.is_empty()),
            raw,
        })
    }

    /// Whether the image is for `platform` ("os/arch[/variant]"); `None` matches any.
    pub fn is_for(&self, platform: Option<&str>) -> bool {
        let Some(platform) = platform else {
            return true;
        };
        let mut parts = platform.split('/');
        let os = parts.next().unwrap_or_default();
        let arch = parts.next().unwrap_or_default();
        let variant = parts.next();
        os == self.os
            && arch == self.architecture
            && variant.is_none_or(|v| self.variant.as_deref() == Some(v))
    }
}

/// One line of `DELETE /images/{name}` or of a prune report.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct DeleteItem {
    /// A name that was removed.
    #[serde(default)]
    pub untagged: Option<String>,
    /// An image (or layer) that was deleted.
    #[serde(default)]
    pub deleted: Option<String>,
}

/// An image ID as the API names it elsewhere: `sha256:` and 64 hex digits. Podman's
/// delete reports leave the algorithm out.
pub fn normalize_id(id: &str) -> String {
    if id.len() == 64 && id.bytes().all(|b| b.is_ascii_hexdigit()) {
        format!("sha256:{id}")
    } else {
        id.to_owned()
    }
}

/// `POST /images/prune`'s answer.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct PruneReport {
    /// What went.
    #[serde(default)]
    pub images_deleted: Option<Vec<DeleteItem>>,
    /// Bytes freed.
    #[serde(default)]
    pub space_reclaimed: u64,
}

/// The `filters` query parameter: a JSON map of filter name to values.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Filters(BTreeMap<String, Vec<String>>);

impl Filters {
    /// Adds `value` under `name`.
    pub fn add(&mut self, name: &str, value: impl Into<String>) -> &mut Self {
        self.0
            .entry(name.to_owned())
            .or_default()
            .push(value.into());
        self
    }

    /// `?filters=…` (or nothing when empty), to append to a path.
    pub fn query(&self, first: bool) -> String {
        if self.0.is_empty() {
            return String::new();
        }
        let json = serde_json::to_string(&self.0).unwrap_or_else(|_| "{}".to_owned());
        format!(
            "{}filters={}",
            if first { '?' } else { '&' },
            docker::encode(&json)
        )
    }
}

/// A daemon to talk to, for one invocation.
#[derive(Debug)]
pub struct Daemon<'t, T> {
    transport: &'t T,
    dry_run: bool,
}

impl<'t, T: Transport> Daemon<'t, T> {
    /// Talks through `transport`; in a `dry_run` every mutating call is refused.
    pub fn new(transport: &'t T, dry_run: bool) -> Self {
        Self { transport, dry_run }
    }

    /// Whether this is a dry run.
    pub fn dry_run(&self) -> bool {
        self.dry_run
    }

    fn read(&self, path: &str) -> Result<Response> {
        self.transport.request(Method::Get, path, None)
    }

    /// Sends a mutating request, unless this is a dry run.
    fn mutate(&self, method: Method, path: &str) -> Result<Response> {
        self.mutate_with(method, path, &[], None)
    }

    /// Sends a request that is not a read (a mutation, or a login check), with headers
    /// and a body, unless this is a dry run.
    fn mutate_with(
        &self,
        method: Method,
        path: &str,
        headers: &[(&str, &str)],
        body: Option<&[u8]>,
    ) -> Result<Response> {
        if self.dry_run {
            return Err(Error::failed(format!(
                "internal error: the plugin tried {} {path} in a dry run; nothing was sent",
                method.as_str()
            )));
        }
        self.transport
            .request_with_headers(method, path, headers, body)
    }

    /// `docker save` into the archive directory, unless this is a dry run.
    pub fn save_archive(&self, image: &str, file: &str) -> Result<docker::Archive> {
        if self.dry_run {
            return Err(Error::failed(
                "internal error: the plugin tried save-archive in a dry run; nothing was written",
            ));
        }
        self.transport.save_archive(image, file)
    }

    /// `docker load` from the archive directory, unless this is a dry run; the names
    /// (or IDs) the daemon reports loaded.
    pub fn load_archive(&self, file: &str) -> Result<Vec<String>> {
        if self.dry_run {
            return Err(Error::failed(
                "internal error: the plugin tried load-archive in a dry run; nothing was loaded",
            ));
        }
        let answer = self.transport.load_archive(file)?;
        if let Some(message) = stream_error(answer.as_bytes()) {
            return Err(Error::failed(format!("loading {file}: {message}")));
        }
        Ok(loaded_names(&answer))
    }

    /// The task's credential for `registry` (see [`Transport::credential`]).
    pub fn credential(&self, registry: &str) -> Option<Credential> {
        self.transport.credential(registry)
    }

    /// The `X-Registry-Auth` value for `registry`, when there is a credential.
    fn registry_auth(&self, registry: &str) -> RegistryAuth {
        RegistryAuth(
            self.credential(registry)
                .map(|c| docker::registry_auth_header(&c.username, &c.password, registry)),
        )
    }

    /// `GET /version`: whether the daemon is Podman (whose Docker API differs in prune).
    pub fn is_podman(&self) -> Result<bool> {
        let v: Value = self.read("/version")?.error_for_status()?.json()?;
        let named_podman = |c: &Value| {
            c["Name"]
                .as_str()
                .is_some_and(|n| n.to_ascii_lowercase().contains("podman"))
        };
        Ok(v["Components"]
            .as_array()
            .is_some_and(|cs| cs.iter().any(named_podman)))
    }

    /// `GET /images/json` with `filters`.
    pub fn list(&self, filters: &Filters, all: bool) -> Result<Vec<ImageSummary>> {
        let path = format!("/images/json?all={all}{}", filters.query(false));
        let raw: Vec<RawSummary> = self.read(&path)?.error_for_status()?.json()?;
        Ok(raw.into_iter().map(ImageSummary::from).collect())
    }

    /// The IDs of every image, intermediate ones included.
    pub fn ids(&self) -> Result<BTreeSet<String>> {
        Ok(self
            .list(&Filters::default(), true)?
            .into_iter()
            .map(|i| i.id)
            .collect())
    }

    /// `GET /images/{name}/json`; `None` when the daemon has no such image.
    pub fn inspect(&self, image: &str) -> Result<Option<ImageDetails>> {
        let r = self.read(&format!("/images/{}/json", docker::encode(image)))?;
        if r.status == 404 {
            return Ok(None);
        }
        ImageDetails::from_json(r.error_for_status()?.json()?).map(Some)
    }

    /// `POST /images/create?fromImage=…&tag=…[&platform=…]`. The daemon streams JSON
    /// progress lines and reports a failed pull as an `error` line after a 200 status,
    /// so the stream is read to its end.
    /// With a credential for `registry` it goes along in `X-Registry-Auth`; returns
    /// whether one did.
    pub fn pull(
        &self,
        registry: &str,
        repository: &str,
        tag: &str,
        platform: Option<&str>,
    ) -> Result<bool> {
        let mut path = format!(
            "/images/create?fromImage={}&tag={}",
            docker::encode(repository),
            docker::encode(tag)
        );
        if let Some(p) = platform {
            path.push_str(&format!("&platform={}", docker::encode(p)));
        }
        let reference = format!(
            "{repository}{}{tag}",
            if tag.contains(':') { '@' } else { ':' }
        );
        let auth = self.registry_auth(registry);
        let r = self
            .mutate_with(Method::Post, &path, &auth.headers(), None)?
            .error_for_status()
            .map_err(|e| pull_error(&reference, e.message()))?;
        match stream_error(&r.body) {
            Some(message) => Err(pull_error(&reference, &message)),
            None => Ok(auth.0.is_some()),
        }
    }

    /// `POST /images/{repository}/push?tag=…`, with the task's credential for
    /// `registry` in `X-Registry-Auth` when there is one. Like a pull, a failed push
    /// may answer 200 and report the failure in the stream, so the stream is read to its
    /// end. Returns the manifest digest the daemon reports (when it does) and whether a
    /// credential went along.
    pub fn push(
        &self,
        registry: &str,
        repository: &str,
        tag: &str,
    ) -> Result<(Option<String>, bool)> {
        let path = format!(
            "/images/{}/push?tag={}",
            docker::encode(repository),
            docker::encode(tag)
        );
        let reference = format!("{repository}:{tag}");
        let auth = self.registry_auth(registry);
        let r = self
            .mutate_with(Method::Post, &path, &auth.headers(), None)?
            .error_for_status()
            .map_err(|e| push_error(&reference, e.message()))?;
        if let Some(message) = stream_error(&r.body) {
            return Err(push_error(&reference, &message));
        }
        Ok((stream_digest(&r.body), auth.0.is_some()))
    }

    /// `POST /auth`: asks the daemon to log in to `registry` with `credential` and
    /// answers whether the registry accepted it. Changes nothing on the node (the daemon
    /// keeps no credentials from it), but is a `POST`, so not in a dry run.
    pub fn login(&self, registry: &str, credential: &Credential) -> Result<LoginResult> {
        let body = serde_json::json!({
            "username": credential.username,
            "password": credential.password,
            "serveraddress": registry,
        })
        .to_string();
        let r = self.mutate_with(
            Method::Post,
            "/auth",
            &[("Content-Type", "application/json")],
            Some(body.as_bytes()),
        )?;
        #[derive(Deserialize)]
        struct Answer {
            #[serde(default, rename = "Status")]
            status: Option<String>,
            #[serde(default)]
            message: Option<String>,
        }
        let answer: Answer = serde_json::from_slice(&r.body).unwrap_or(Answer {
            status: None,
            message: Some(r.text()),
        });
        if r.is_success() {
            return Ok(LoginResult::Accepted(
                answer
                    .status
                    .unwrap_or_else(|| "Login Succeeded".to_owned()),
            ));
        }
        let message = answer.message.unwrap_or_default();
        let lower = message.to_ascii_lowercase();
        if r.status == 401
            || [
                "401",
                "unauthorized",
                "denied",
                "incorrect username or password",
            ]
            .iter()
            .any(|w| lower.contains(w))
        {
            Ok(LoginResult::Refused(message))
        } else {
            Err(Error::failed(format!(
                "logging in to {registry}: docker: HTTP {}: {}",
                r.status,
                message.trim()
            )))
        }
    }

    /// `POST /images/{source}/tag?repo=…&tag=…`.
    pub fn tag(&self, source: &str, repository: &str, tag: &str) -> Result<()> {
        let path = format!(
            "/images/{}/tag?repo={}&tag={}",
            docker::encode(source),
            docker::encode(repository),
            docker::encode(tag)
        );
        self.mutate(Method::Post, &path)?.error_for_status()?;
        Ok(())
    }

    /// `DELETE /images/{name}?force=…&noprune=…`.
    pub fn remove(&self, image: &str, force: bool, noprune: bool) -> Result<Vec<DeleteItem>> {
        let path = format!(
            "/images/{}?force={force}&noprune={noprune}",
            docker::encode(image)
        );
        let r = self.mutate(Method::Delete, &path)?.error_for_status()?;
        if r.body.iter().all(u8::is_ascii_whitespace) {
            return Ok(Vec::new());
        }
        let mut items: Vec<DeleteItem> = r.json()?;
        for item in &mut items {
            item.deleted = item.deleted.as_deref().map(normalize_id);
        }
        Ok(items)
    }

    /// `POST /images/prune` with `filters`.
    pub fn prune(&self, filters: &Filters) -> Result<PruneReport> {
        let path = format!("/images/prune{}", filters.query(true));
        self.mutate(Method::Post, &path)?.error_for_status()?.json()
    }
}

/// The images a load reports: `Loaded image: NAME` or `Loaded image ID: sha256:…`
/// lines in `stream` messages (Docker and Podman), or Podman's `Loaded image(s): a,b`.
pub fn loaded_names(answer: &str) -> Vec<String> {
    let mut out = Vec::new();
    for line in serde_json::Deserializer::from_str(answer)
        .into_iter::<Value>()
        .map_while(std::result::Result::ok)
    {
        let Some(stream) = line["stream"].as_str() else {
            continue;
        };
        for text in stream.lines() {
            let rest = text
                .strip_prefix("Loaded image ID: ")
                .or_else(|| text.strip_prefix("Loaded image(s): "))
                .or_else(|| text.strip_prefix("Loaded image: "));
            if let Some(rest) = rest {
                out.extend(
                    rest.split(',')
                        .map(str::trim)
                        .filter(|n| !n.is_empty())
                        .map(str::to_owned),
                );
            }
        }
    }
    out
}

/// What a registry said to a login.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LoginResult {
    /// Accepted, with the daemon's status text.
    Accepted(String),
    /// Refused, with the daemon's message.
    Refused(String),
}

/// The manifest digest a push reports: Docker's `aux.Digest`, or the `…: digest:
/// sha256:… size: N` status line both Docker and Podman write.
fn stream_digest(body: &[u8]) -> Option<String> {
    serde_json::Deserializer::from_slice(body)
        .into_iter::<Value>()
        .map_while(std::result::Result::ok)
        .filter_map(|line| {
            if let Some(d) = line["aux"]["Digest"].as_str() {
                return Some(d.to_owned());
            }
            let status = line["status"].as_str()?;
            let after = status.split("digest: ").nth(1)?;
            let digest = after.split_whitespace().next()?;
            digest.starts_with("sha256:").then(|| digest.to_owned())
        })
        .last()
}

/// Like [`pull_error`], for a push: refused credentials → denied, a registry that is
/// down → failed, saying so.
pub fn push_error(reference: &str, message: &str) -> Error {
    let e = pull_error(reference, message);
    let text = e.message().replacen("pulling ", "pushing ", 1);
    match e.kind() {
        "denied" => Error::denied(text),
        _ => Error::failed(text),
    }
}

/// The first `error` of a pull's progress stream (one JSON object per line).
fn stream_error(body: &[u8]) -> Option<String> {
    #[derive(Deserialize)]
    struct Line {
        #[serde(default)]
        error: Option<String>,
        #[serde(default, rename = "errorDetail")]
        error_detail: Option<Detail>,
    }
    #[derive(Deserialize)]
    struct Detail {
        #[serde(default)]
        message: Option<String>,
    }
    serde_json::Deserializer::from_slice(body)
        .into_iter::<Line>()
        .map_while(std::result::Result::ok)
        .find_map(|l| {
            l.error
                .filter(|e| !e.is_empty())
                .or_else(|| l.error_detail.and_then(|d| d.message))
        })
}

/// Turns a registry's or daemon's complaint about a pull into the error kind an
/// administrator acts on: missing image or tag → not-found, refused credentials →
/// denied, an unreachable registry → failed with that said first.
pub fn pull_error(reference: &str, message: &str) -> Error {
    let lower = message.to_ascii_lowercase();
    let has = |words: &[&str]| words.iter().any(|w| lower.contains(w));
    if has(&[
        "manifest unknown",
        "name unknown",
        "not found",
        "no such image",
        "does not exist",
    ]) {
        Error::not_found(format!(
            "pulling {reference}: no such image in the registry: {message}"
        ))
    } else if has(&[
        "unauthorized",
        "denied",
        "authentication required",
        "forbidden",
    ]) {
        Error::denied(format!(
            "pulling {reference}: the registry refused access: {message}"
        ))
    } else if has(&[
        "connection refused",
        "no such host",
        "i/o timeout",
        "network is unreachable",
        "connection reset",
        "timeout",
        "pinging container registry",
    ]) {
        Error::failed(format!(
            "pulling {reference}: the registry is down or unreachable: {message}"
        ))
    } else {
        Error::failed(format!("pulling {reference}: {message}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stream_errors_are_found_after_progress() {
        let body = br#"{"status":"Pulling fs layer","id":"x"}
{"progressDetail":{},"errorDetail":{"message":"manifest unknown"},"error":"manifest unknown"}
"#;
        assert_eq!(stream_error(body).as_deref(), Some("manifest unknown"));
        assert_eq!(stream_error(br#"{"status":"Download complete"}"#), None);
        assert_eq!(stream_error(b""), None);
    }

    #[test]
    fn pull_errors_get_their_kind() {
        assert_eq!(
            pull_error("a:1", "reading manifest 1 in a: manifest unknown").kind(),
            "not-found"
        );
        assert_eq!(
            pull_error("a:1", "unauthorized: authentication required").kind(),
            "denied"
        );
        let down = pull_error(
            "127.0.0.1:1/a:1",
            "pinging container registry 127.0.0.1:1: dial tcp: connect: connection refused",
        );
        assert_eq!(down.kind(), "failed");
        assert!(down.message().contains("down or unreachable"), "{down}");
    }

    #[test]
    fn load_answers_name_what_was_loaded() {
        assert_eq!(
            loaded_names("{\"stream\":\"Loaded image: localhost/app:1.0\\n\"}\n"),
            ["localhost/app:1.0"]
        );
        assert_eq!(
            loaded_names("{\"stream\":\"Loaded image(s): a:1,b:2\\n\"}"),
            ["a:1", "b:2"]
        );
        assert_eq!(
            loaded_names("{\"stream\":\"Loaded image ID: sha256:ab\\n\"}"),
            ["sha256:ab"]
        );
        assert!(loaded_names("").is_empty());
    }

    #[test]
    fn push_digest_and_errors() {
        let podman = br#"{"status":"The push refers to repository [localhost:5000/t:1]"}
{"status":"1: digest: sha256:7872931534fe851df0f8635e3ea1c8dbaabaa1e805d811e00767edb2df6a3d12 size: 341"}
"#;
        assert_eq!(
            stream_digest(podman).as_deref(),
            Some("sha256:7872931534fe851df0f8635e3ea1c8dbaabaa1e805d811e00767edb2df6a3d12")
        );
        let docker = br#"{"status":"Pushed"}
{"progressDetail":{},"aux":{"Tag":"1","Digest":"sha256:abc","Size":3}}
"#;
        assert_eq!(stream_digest(docker).as_deref(), Some("sha256:abc"));
        assert_eq!(stream_digest(b"{}"), None);
        let e = push_error(
            "localhost:5000/t:1",
            "checking whether a blob exists: unauthorized: authentication required",
        );
        assert_eq!(e.kind(), "denied");
        assert!(e.message().starts_with("pushing localhost:5000/t:1"), "{e}");
    }

    #[test]
    fn filters_are_a_json_query() {
        let mut f = Filters::default();
        assert_eq!(f.query(true), "");
        f.add("dangling", "true").add("label", "a=b");
        assert_eq!(
            f.query(true),
            format!(
                "?filters={}",
                docker::encode(r#"{"dangling":["true"],"label":["a=b"]}"#)
            )
        );
    }

    #[test]
    fn ids_get_their_algorithm() {
        let hex = "ab".repeat(32);
        assert_eq!(normalize_id(&hex), format!("sha256:{hex}"));
        assert_eq!(
            normalize_id(&format!("sha256:{hex}")),
            format!("sha256:{hex}")
        );
        assert_eq!(normalize_id("abc"), "abc");
    }

    #[test]
    fn platform_match() {
        let d = ImageDetails {
            id: "sha256:1".into(),
            repo_tags: vec![],
            repo_digests: vec![],
            os: "linux".into(),
            architecture: "arm64".into(),
            variant: Some("v8".into()),
            raw: Value::Null,
        };
        assert!(d.is_for(None));
        assert!(d.is_for(Some("linux/arm64")));
        assert!(d.is_for(Some("linux/arm64/v8")));
        assert!(!d.is_for(Some("linux/amd64")));
        assert!(!d.is_for(Some("linux/arm64/v7")));
    }
}

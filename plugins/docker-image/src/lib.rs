//! docker-image: the built-in hostplug plugin for container images on a node, through
//! the node's Docker Engine API (Docker, or Podman's Docker-compatible service).
//!
//! Methods: `list`, `inspect`, `pull`, `tag`, `remove`, `prune`, `push`, `login`,
//! `save`, `load` (parameters in [`params`]). `save` and `load` use the node's image
//! archive directory through the host (the plugin names a file, never a path, and never
//! sees the bytes). Registry credentials come from the task's
//! `spec.registryAuth` Secret through the host's `registry-auth` import, one registry at
//! a time; they go to the daemon only (`X-Registry-Auth`, or the body of `/auth`) and
//! never into an output, a log line or an error. Every mutating method:
//!
//! - looks first and acts only when the node is not already as asked, so a repeated
//!   call changes nothing;
//! - computes `changed` by comparing image IDs before and after the call (what a name
//!   points at, or which images exist), never from the daemon's progress messages;
//! - names the image IDs involved in its output;
//! - in a dry run reports what it would do and sends no mutating request: the only
//!   way out to a mutating endpoint is [`daemon::Daemon`], which refuses in a dry run.
//!
//! Errors: a missing image is `not-found`; a registry that refuses credentials is
//! `denied`, like an endpoint the host does not allow-list; a registry that is down is
//! `failed` with a message that says so.
//!
//! The logic is generic over [`daemon::Transport`] and unit-tested natively against an
//! in-memory daemon; the component uses the host's `docker` import.

pub mod daemon;
pub mod params;
pub mod reference;

use std::collections::BTreeSet;

use hostplug_sdk::{Context, Definition, Error, Outcome, Plugin, Result, export_plugin, log};
use serde::Serialize;

use crate::daemon::{Daemon, Filters, HostDocker, ImageSummary, Transport};
use crate::params::{ExistingTag, PullPolicy};
use crate::reference::Reference;

/// The docker-image plugin.
#[derive(Debug)]
pub struct DockerImage;

impl Plugin for DockerImage {
    fn definition() -> Definition {
        fn host<'a>(cx: &Context) -> Daemon<'a, HostDocker> {
            Daemon::new(&HostDocker, cx.dry_run())
        }
        Definition::new(
            "docker-image",
            env!("CARGO_PKG_VERSION"),
            "Lists, inspects, pulls, tags, removes, prunes and pushes container images through \
             the node's Docker Engine API socket, idempotently, with dry runs; registry \
             credentials come from the task's spec.registryAuth Secret.",
        )
        .read_only(
            "list",
            "Lists the node's images, optionally filtered by reference, dangling state and labels.",
            |p, cx| list(&host(cx), &p),
        )
        .read_only(
            "inspect",
            "Shows one image: its ID, names, digests, platform and the daemon's full description.",
            |p, cx| inspect(&host(cx), &p),
        )
        .mutating(
            "pull",
            "Pulls an image from its registry: only when missing (if-not-present) or every time (always).",
            |p, cx| pull(&host(cx), &p),
        )
        .mutating(
            "tag",
            "Gives an image on the node another name (repository:tag), keeping or overwriting an existing one.",
            |p, cx| tag(&host(cx), &p),
        )
        .mutating(
            "remove",
            "Removes an image name, and the image with its last name; nothing to do when it is missing.",
            |p, cx| remove(&host(cx), &p),
        )
        .mutating(
            "prune",
            "Removes dangling images, or every image no container uses, optionally only those with given labels.",
            |p, cx| prune(&host(cx), &p),
        )
        .mutating(
            "push",
            "Pushes an image on the node to its registry, with the task's registry credentials when it has some.",
            |p, cx| push(&host(cx), &p),
        )
        .read_only(
            "login",
            "Checks the task's registry credentials against a registry through the daemon; stores nothing.",
            |p, cx| login(&host(cx), &p),
        )
        .mutating(
            "save",
            "Saves an image as a tar file in the node's image archive directory (/var/lib/hostplug/image-archives).",
            |p, cx| save(&host(cx), &p),
        )
        .mutating(
            "load",
            "Loads images from a tar file in the node's image archive directory into the daemon.",
            |p, cx| load(&host(cx), &p),
        )
    }
}

export_plugin!(DockerImage);

fn invalid(field: &str) -> impl FnOnce(String) -> Error + '_ {
    move |why| Error::invalid_params(format!("{field}: {why}"))
}

/// Checks `key` / `key=value` label filters.
fn check_labels(field: &str, labels: &[String]) -> Result<()> {
    for l in labels {
        let key = l.split_once('=').map_or(l.as_str(), |(k, _)| k);
        if key.is_empty() || key.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(Error::invalid_params(format!(
                "{field}: `{l}` is not a label filter: expected \"key\" or \"key=value\""
            )));
        }
    }
    Ok(())
}

/// Output of `list`.
#[derive(Debug, Serialize)]
struct ListOutput {
    count: usize,
    images: Vec<ImageSummary>,
}

/// `list`: reads only.
pub fn list<T: Transport>(d: &Daemon<'_, T>, p: &params::List) -> Result<Outcome> {
    let mut filters = Filters::default();
    if let Some(r) = &p.reference {
        // A pattern may hold `*`; otherwise the same characters as a reference.
        let plain = r.replace('*', "x");
        reference::check_image(&plain).map_err(invalid("reference"))?;
        filters.add("reference", r.as_str());
    }
    if let Some(dangling) = p.dangling {
        filters.add("dangling", dangling.to_string());
    }
    check_labels("label", &p.label)?;
    for l in &p.label {
        filters.add("label", l.as_str());
    }
    let images = d.list(&filters, p.all)?;
    Ok(Outcome::unchanged(ListOutput {
        count: images.len(),
        images,
    }))
}

/// Output of `inspect`.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct InspectOutput {
    id: String,
    repo_tags: Vec<String>,
    repo_digests: Vec<String>,
    platform: String,
    /// The daemon's whole description of the image.
    details: serde_json::Value,
}

fn missing(image: &str) -> Error {
    Error::not_found(format!("no such image on the node: {image}"))
}

/// `inspect`: reads only; a missing image is `not-found`.
pub fn inspect<T: Transport>(d: &Daemon<'_, T>, p: &params::Inspect) -> Result<Outcome> {
    let image = reference::check_image(&p.image).map_err(invalid("image"))?;
    let found = d.inspect(image)?.ok_or_else(|| missing(image))?;
    let mut platform = format!("{}/{}", found.os, found.architecture);
    if let Some(v) = &found.variant {
        platform.push('/');
        platform.push_str(v);
    }
    Ok(Outcome::unchanged(InspectOutput {
        id: found.id,
        repo_tags: found.repo_tags,
        repo_digests: found.repo_digests,
        platform,
        details: found.raw,
    }))
}

/// Output of `pull`.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct PullOutput {
    /// The reference pulled (or looked at), with its tag or digest.
    image: String,
    /// The image ID the reference names after the call; in a dry run that pulls, the
    /// current one (null when missing).
    id: Option<String>,
    /// The image ID the reference named before the call (null when missing).
    previous_id: Option<String>,
    /// Whether the registry was asked (or, in a dry run, would be).
    pulled: bool,
    /// Whether the task's credentials for the image's registry went along (or, in a dry
    /// run, would).
    authenticated: bool,
}

fn check_platform(platform: &str) -> Result<()> {
    let parts: Vec<&str> = platform.split('/').collect();
    let ok = (2..=3).contains(&parts.len())
        && parts.iter().all(|p| {
            !p.is_empty()
                && p.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
        });
    if ok {
        Ok(())
    } else {
        Err(Error::invalid_params(format!(
            "platform: `{platform}` is not \"os/arch\" or \"os/arch/variant\", e.g. \"linux/arm64\""
        )))
    }
}

/// `pull`: looks first; pulls when the policy says so; `changed` when the ID the
/// reference names is not the one it named before.
pub fn pull<T: Transport>(d: &Daemon<'_, T>, p: &params::Pull) -> Result<Outcome> {
    let mut r = Reference::parse(&p.image).map_err(invalid("image"))?;
    if let Some(tag) = &p.tag {
        reference::check_tag(tag).map_err(invalid("tag"))?;
        match (&r.tag, &r.digest) {
            (None, None) => r.tag = Some(tag.clone()),
            (Some(own), _) if own == tag => {}
            _ => {
                return Err(Error::invalid_params(format!(
                    "tag: `{}` already names a tag or digest; leave `tag` out or drop it from `image`",
                    p.image
                )));
            }
        }
    }
    if let Some(platform) = &p.platform {
        check_platform(platform)?;
    }
    let r = r.or_latest();
    let name = r.to_string();
    let before = d.inspect(&name)?;
    let previous_id = before.as_ref().map(|b| b.id.clone());
    let present = before
        .as_ref()
        .is_some_and(|b| b.is_for(p.platform.as_deref()));
    if p.policy == PullPolicy::IfNotPresent && present {
        log::info(format!(
            "{name} is present ({}); not pulled",
            previous_id.as_deref().unwrap_or("")
        ));
        return Ok(Outcome::unchanged(PullOutput {
            image: name,
            id: previous_id.clone(),
            previous_id,
            pulled: false,
            authenticated: false,
        }));
    }
    if d.dry_run() {
        // Without asking the registry nobody knows whether "always" would bring a new
        // image; a dry run says the pull would run.
        return Ok(Outcome::changed(PullOutput {
            image: name,
            id: previous_id.clone(),
            previous_id,
            pulled: true,
            authenticated: d.credential(r.registry()).is_some(),
        }));
    }
    let tag = r.tag_or_digest().unwrap_or("latest");
    let authenticated = d.pull(r.registry(), &r.repository, tag, p.platform.as_deref())?;
    let after = d.inspect(&name)?.ok_or_else(|| {
        Error::failed(format!(
            "pulling {name}: the daemon reported success but has no such image afterwards"
        ))
    })?;
    let changed = previous_id.as_deref() != Some(after.id.as_str());
    log::info(format!(
        "pulled {name}: {}{}",
        after.id,
        if changed { "" } else { " (unchanged)" }
    ));
    Ok(Outcome::new(
        changed,
        PullOutput {
            image: name,
            id: Some(after.id),
            previous_id,
            pulled: true,
            authenticated,
        },
    ))
}

/// Output of `tag`.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct TagOutput {
    source: String,
    source_id: String,
    /// `repository:tag`.
    target: String,
    /// The image ID the target names after the call (in a dry run: would name).
    id: String,
    /// The image ID the target named before (null when it did not exist).
    previous_id: Option<String>,
    /// True when an existing target was left alone because of `existing: keep`.
    kept: bool,
}

/// `tag`: unchanged when the target already names the source image, or names another
/// image and `existing` is `keep`.
pub fn tag<T: Transport>(d: &Daemon<'_, T>, p: &params::Tag) -> Result<Outcome> {
    let source = reference::check_image(&p.source).map_err(invalid("source"))?;
    reference::check_repository(&p.repository).map_err(invalid("repository"))?;
    reference::check_tag(&p.tag).map_err(invalid("tag"))?;
    let target = format!("{}:{}", p.repository, p.tag);
    let src = d.inspect(source)?.ok_or_else(|| missing(source))?;
    let previous_id = d.inspect(&target)?.map(|t| t.id);
    let output = |id: &str, kept: bool| TagOutput {
        source: p.source.clone(),
        source_id: src.id.clone(),
        target: target.clone(),
        id: id.to_owned(),
        previous_id: previous_id.clone(),
        kept,
    };
    match previous_id.as_deref() {
        Some(id) if id == src.id => return Ok(Outcome::unchanged(output(id, false))),
        Some(id) if p.existing == ExistingTag::Keep => {
            log::info(format!("{target} names {id}, not {}; kept", src.id));
            return Ok(Outcome::unchanged(output(id, true)));
        }
        _ => {}
    }
    if d.dry_run() {
        return Ok(Outcome::changed(output(&src.id, false)));
    }
    d.tag(&src.id, &p.repository, &p.tag)?;
    let now = d.inspect(&target)?.map(|t| t.id).ok_or_else(|| {
        Error::failed(format!(
            "tagging {target}: the daemon has no such name afterwards"
        ))
    })?;
    if now != src.id {
        return Err(Error::failed(format!(
            "tagging {target}: it names {now} afterwards, not {}",
            src.id
        )));
    }
    log::info(format!("tagged {} as {target}", src.id));
    Ok(Outcome::changed(output(&now, false)))
}

/// Output of `remove`.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct RemoveOutput {
    image: String,
    /// The image ID the name pointed at before (null when it was missing).
    id: Option<String>,
    /// Names removed (in a dry run: the image's names now).
    untagged: Vec<String>,
    /// Image IDs deleted.
    deleted: Vec<String>,
    /// Whether the image itself is gone (in a dry run: would be, when known).
    image_removed: bool,
}

/// Whether `image` is `id` itself or a hex prefix of it (rather than a name).
fn is_id_of(image: &str, id: &str) -> bool {
    let hex = id.strip_prefix("sha256:").unwrap_or(id);
    image == id || (!image.is_empty() && hex.starts_with(image))
}

/// `remove`: a missing image is nothing to do; `changed` when the name no longer names
/// the image it named before.
pub fn remove<T: Transport>(d: &Daemon<'_, T>, p: &params::Remove) -> Result<Outcome> {
    let image = reference::check_image(&p.image).map_err(invalid("image"))?;
    let Some(before) = d.inspect(image)? else {
        return Ok(Outcome::unchanged(RemoveOutput {
            image: image.to_owned(),
            id: None,
            untagged: Vec::new(),
            deleted: Vec::new(),
            image_removed: false,
        }));
    };
    if d.dry_run() {
        // By name with other names left, only that name goes; otherwise the image.
        let by_name = !is_id_of(image, &before.id);
        let last_name = before.repo_tags.len() <= 1;
        if !by_name && !last_name && !p.force {
            // What the daemon would answer; a dry run should fail the same way.
            return Err(Error::failed(format!(
                "{image} has several names ({}); removing it by ID needs \"force\": true",
                before.repo_tags.join(", ")
            )));
        }
        let goes = !by_name || last_name || p.force;
        return Ok(Outcome::changed(RemoveOutput {
            image: image.to_owned(),
            id: Some(before.id.clone()),
            untagged: if by_name && !goes {
                vec![image.to_owned()]
            } else {
                before.repo_tags
            },
            deleted: if goes { vec![before.id] } else { Vec::new() },
            image_removed: goes,
        }));
    }
    let items = d.remove(image, p.force, p.noprune)?;
    let now = d.inspect(image)?.map(|i| i.id);
    let changed = now.as_deref() != Some(before.id.as_str());
    let image_removed = !d.ids()?.contains(&before.id);
    log::info(format!(
        "removed {image} ({}){}",
        before.id,
        if image_removed {
            "; the image is gone"
        } else {
            "; the image keeps other names"
        }
    ));
    Ok(Outcome::new(
        changed,
        RemoveOutput {
            image: image.to_owned(),
            id: Some(before.id),
            untagged: items.iter().filter_map(|i| i.untagged.clone()).collect(),
            deleted: items.iter().filter_map(|i| i.deleted.clone()).collect(),
            image_removed,
        },
    ))
}

/// Output of `prune`.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct PruneOutput {
    /// Image IDs deleted (in a dry run: that would be deleted).
    deleted: Vec<String>,
    /// Bytes freed, as the daemon reports (0 in a dry run).
    space_reclaimed: u64,
    /// Images left because a container uses them (only known on some daemons).
    in_use: Vec<String>,
}

/// The images `prune` would remove: dangling ones, or every one no container uses,
/// with the label filters. Images whose use the daemon does not report (`Containers` =
/// -1, as Docker lists them) count as candidates; the daemon keeps used ones anyway.
fn prune_candidates<T: Transport>(
    d: &Daemon<'_, T>,
    p: &params::Prune,
) -> Result<(Vec<ImageSummary>, Vec<String>)> {
    let mut filters = Filters::default();
    if !p.all {
        filters.add("dangling", "true");
    }
    for l in &p.label {
        filters.add("label", l.as_str());
    }
    for l in &p.label_not {
        filters.add("label!", l.as_str());
    }
    let images = d.list(&filters, false)?;
    let (used, unused): (Vec<_>, Vec<_>) = images
        .into_iter()
        .partition(|i| i.containers.is_some_and(|c| c > 0));
    Ok((unused, used.into_iter().map(|i| i.id).collect()))
}

/// `prune`: `changed` when the set of image IDs shrank; the deleted IDs are the
/// difference.
pub fn prune<T: Transport>(d: &Daemon<'_, T>, p: &params::Prune) -> Result<Outcome> {
    check_labels("label", &p.label)?;
    check_labels("labelNot", &p.label_not)?;
    let (candidates, in_use) = prune_candidates(d, p)?;
    if d.dry_run() {
        let deleted: Vec<String> = candidates.into_iter().map(|i| i.id).collect();
        return Ok(Outcome::new(
            !deleted.is_empty(),
            PruneOutput {
                deleted,
                space_reclaimed: 0,
                in_use,
            },
        ));
    }
    let before = d.ids()?;
    let mut space_reclaimed = 0;
    if p.all && d.is_podman()? {
        // Podman's Docker API cannot prune named images (it always adds dangling=true):
        // remove each unused candidate by its names, without force, so the daemon still
        // refuses an image a container took in the meantime.
        for image in &candidates {
            let names: Vec<&str> = if image.repo_tags.is_empty() {
                vec![image.id.as_str()]
            } else {
                image.repo_tags.iter().map(String::as_str).collect()
            };
            for name in names {
                if let Err(e) = d.remove(name, false, false) {
                    log::warn(format!("prune: kept {name} ({}): {e}", image.id));
                    break;
                }
            }
        }
    } else {
        let mut filters = Filters::default();
        filters.add("dangling", if p.all { "false" } else { "true" });
        for l in &p.label {
            filters.add("label", l.as_str());
        }
        for l in &p.label_not {
            filters.add("label!", l.as_str());
        }
        space_reclaimed = d.prune(&filters)?.space_reclaimed;
    }
    let after = d.ids()?;
    let deleted: Vec<String> = before
        .difference(&after)
        .cloned()
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    log::info(format!("prune: {} image(s) deleted", deleted.len()));
    Ok(Outcome::new(
        !deleted.is_empty(),
        PruneOutput {
            deleted,
            space_reclaimed,
            in_use,
        },
    ))
}

/// Output of `push`.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct PushOutput {
    /// The reference pushed, `repository:tag`.
    image: String,
    /// The registry it went to.
    registry: String,
    /// The local image ID pushed.
    id: String,
    /// The manifest digest the registry now holds under that tag (as the daemon
    /// reports; null in a dry run or when the daemon does not say).
    digest: Option<String>,
    /// Whether the task's credentials for that registry went along (in a dry run:
    /// would).
    authenticated: bool,
}

/// `push`: the local image must exist. The registry is asked every time (the Docker
/// API cannot tell beforehand whether it holds the same manifest), so `changed` is
/// true unless the registry's digest for the tag is one the image already carried in
/// its `RepoDigests` for that repository before the push (pushed before, or pulled
/// from there): then the push only confirmed what was there.
pub fn push<T: Transport>(d: &Daemon<'_, T>, p: &params::Push) -> Result<Outcome> {
    let mut r = Reference::parse(&p.image).map_err(invalid("image"))?;
    if r.digest.is_some() {
        return Err(Error::invalid_params(format!(
            "image: `{}` names a digest; a push sends a tag: name the image by repository:tag",
            p.image
        )));
    }
    match (&r.tag, &p.tag) {
        (None, Some(tag)) => {
            reference::check_tag(tag).map_err(invalid("tag"))?;
            r.tag = Some(tag.clone());
        }
        (Some(own), Some(tag)) if own != tag => {
            return Err(Error::invalid_params(format!(
                "tag: `{}` already names a tag; leave `tag` out or drop it from `image`",
                p.image
            )));
        }
        _ => {}
    }
    let r = r.or_latest();
    let registry = r.registry().to_owned();
    if registry == reference::DEFAULT_REGISTRY && !p.image.starts_with("docker.io/") {
        log::info(format!(
            "{} names no registry: it goes to Docker Hub (docker.io)",
            p.image
        ));
    }
    let name = r.to_string();
    let tag = r.tag.clone().unwrap_or_else(|| "latest".to_owned());
    let local = d.inspect(&name)?.ok_or_else(|| missing(&name))?;
    let authenticated = d.credential(&registry).is_some();
    if d.dry_run() {
        return Ok(Outcome::changed(PushOutput {
            image: name,
            registry,
            id: local.id,
            digest: None,
            authenticated,
        }));
    }
    let (digest, authenticated) = d.push(&registry, &r.repository, &tag)?;
    let known = digest.as_deref().is_some_and(|digest| {
        local.repo_digests.iter().any(|rd| {
            rd.split_once('@')
                .is_some_and(|(repo, dg)| repo == r.repository && dg == digest)
        })
    });
    log::info(format!(
        "pushed {name} ({}) to {registry}{}{}",
        local.id,
        digest
            .as_deref()
            .map(|d| format!(" as {d}"))
            .unwrap_or_default(),
        if known { " (already there)" } else { "" }
    ));
    Ok(Outcome::new(
        !known,
        PushOutput {
            image: name,
            registry,
            id: local.id,
            digest,
            authenticated,
        },
    ))
}

/// Output of `login`.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct LoginOutput {
    /// The registry checked.
    registry: String,
    /// The username of the credential (never the password).
    username: String,
    /// Whether the registry was asked (false in a dry run).
    checked: bool,
    /// The daemon's answer, e.g. "Login Succeeded".
    status: Option<String>,
}

/// `login`: asks the daemon to log in to the registry with the task's credential for
/// it; a refusal is `denied` (naming the registry and the username, never the
/// password). In a dry run it only says whether there is a credential.
pub fn login<T: Transport>(d: &Daemon<'_, T>, p: &params::Login) -> Result<Outcome> {
    let registry = p.registry.trim();
    let host_ok = !registry.is_empty()
        && registry.len() <= 253
        && registry
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b':'));
    if !host_ok {
        return Err(Error::invalid_params(format!(
            "registry: `{}` is not host[:port], e.g. \"registry.example:5000\"",
            p.registry.chars().take(100).collect::<String>()
        )));
    }
    let credential = d.credential(registry).ok_or_else(|| {
        Error::invalid_params(format!(
            "registry: the task has no credentials for {registry}: name a Secret with an \
             entry for it in spec.registryAuth.secretName (and use a HostPlugin that \
             declares registryAuth)"
        ))
    })?;
    if d.dry_run() {
        return Ok(Outcome::unchanged(LoginOutput {
            registry: registry.to_owned(),
            username: credential.username,
            checked: false,
            status: None,
        }));
    }
    match d.login(registry, &credential)? {
        daemon::LoginResult::Accepted(status) => {
            log::info(format!(
                "{registry} accepted the credentials of {}",
                credential.username
            ));
            Ok(Outcome::unchanged(LoginOutput {
                registry: registry.to_owned(),
                username: credential.username,
                checked: true,
                status: Some(status),
            }))
        }
        daemon::LoginResult::Refused(message) => Err(Error::denied(format!(
            "{registry} refused the credentials of {} from spec.registryAuth: {}",
            credential.username,
            redact(&message, &credential.password)
        ))),
    }
}

/// Where the node's image archive directory is (for outputs; the plugin never opens it).
const ARCHIVE_DIR: &str = "/var/lib/hostplug/image-archives";

/// Checks an archive file name as the host does, to fail early naming the field.
fn check_archive_file(file: &str) -> Result<()> {
    let ok = file.len() > ".tar".len()
        && file.len() <= 128
        && file.ends_with(".tar")
        && !file.starts_with('.')
        && file
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(Error::invalid_params(format!(
            "file: `{}` is not an archive name: letters, digits, '.', '_' and '-', not \
             starting with '.', ending in .tar, at most 128 bytes (a name in {ARCHIVE_DIR}, \
             not a path)",
            file.chars().take(100).collect::<String>()
        )))
    }
}

/// Output of `save`.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct SaveOutput {
    image: String,
    /// The image ID saved.
    id: String,
    /// The file, in the node's archive directory.
    path: String,
    /// Size of the tar file (null in a dry run).
    bytes: Option<u64>,
    /// `sha256:…` of the tar file (null in a dry run).
    sha256: Option<String>,
}

/// `save`: the image must exist; `changed` when the file did not already hold exactly
/// the bytes the daemon produced (a repeated save of the same image changes nothing).
pub fn save<T: Transport>(d: &Daemon<'_, T>, p: &params::Save) -> Result<Outcome> {
    let image = reference::check_image(&p.image).map_err(invalid("image"))?;
    check_archive_file(&p.file)?;
    let found = d.inspect(image)?.ok_or_else(|| missing(image))?;
    let path = format!("{ARCHIVE_DIR}/{}", p.file);
    if d.dry_run() {
        // Whether the file would change is only known from the bytes; say it would.
        return Ok(Outcome::changed(SaveOutput {
            image: image.to_owned(),
            id: found.id,
            path,
            bytes: None,
            sha256: None,
        }));
    }
    let archive = d.save_archive(image, &p.file)?;
    log::info(format!(
        "saved {image} ({}) as {path}: {} bytes{}",
        found.id,
        archive.bytes,
        if archive.replaced { "" } else { " (unchanged)" }
    ));
    Ok(Outcome::new(
        archive.replaced,
        SaveOutput {
            image: image.to_owned(),
            id: found.id,
            path,
            bytes: Some(archive.bytes),
            sha256: Some(archive.sha256),
        },
    ))
}

/// Output of `load`.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct LoadOutput {
    path: String,
    /// What the daemon reports loaded (names, or IDs of unnamed images); empty in a dry
    /// run.
    loaded: Vec<String>,
    /// The image IDs those names point at afterwards.
    ids: Vec<String>,
    /// Image IDs that were not on the node before.
    new_ids: Vec<String>,
}

/// `load`: `changed` when the node's images (IDs and their names) differ afterwards; a
/// repeated load of the same file changes nothing. A dry run cannot read the file (the
/// host opens the archive directory only for real calls) and reports that it would load.
pub fn load<T: Transport>(d: &Daemon<'_, T>, p: &params::Load) -> Result<Outcome> {
    check_archive_file(&p.file)?;
    let path = format!("{ARCHIVE_DIR}/{}", p.file);
    if d.dry_run() {
        return Ok(Outcome::changed(LoadOutput {
            path,
            loaded: Vec::new(),
            ids: Vec::new(),
            new_ids: Vec::new(),
        }));
    }
    let snapshot = |d: &Daemon<'_, T>| -> Result<BTreeSet<(String, Vec<String>)>> {
        Ok(d.list(&Filters::default(), true)?
            .into_iter()
            .map(|i| {
                let mut tags = i.repo_tags;
                tags.sort();
                (i.id, tags)
            })
            .collect())
    };
    let before = snapshot(d)?;
    let loaded = d.load_archive(&p.file)?;
    let after = snapshot(d)?;
    let mut ids = Vec::new();
    for name in &loaded {
        if let Some(found) = d.inspect(name)? {
            ids.push(found.id);
        }
    }
    let before_ids: BTreeSet<&String> = before.iter().map(|(id, _)| id).collect();
    let new_ids: Vec<String> = after
        .iter()
        .map(|(id, _)| id)
        .filter(|id| !before_ids.contains(id))
        .cloned()
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    let changed = before != after;
    log::info(format!(
        "loaded {path}: {}{}",
        loaded.join(", "),
        if changed { "" } else { " (unchanged)" }
    ));
    Ok(Outcome::new(
        changed,
        LoadOutput {
            path,
            loaded,
            ids,
            new_ids,
        },
    ))
}

/// `message` with every occurrence of `secret` replaced, in case a daemon echoes it.
fn redact(message: &str, secret: &str) -> String {
    if secret.is_empty() {
        message.to_owned()
    } else {
        message.replace(secret, "<redacted>")
    }
}

#[cfg(test)]
mod tests;

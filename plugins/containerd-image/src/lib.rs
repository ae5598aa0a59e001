//! containerd-image: the built-in hostplug plugin for the images of a node's containerd
//! — the images the kubelet runs, in containerd's `k8s.io` namespace — through the CRI
//! image service on the node's containerd socket (the host's `containerd` import).
//!
//! Methods: `list`, `inspect`, `usage`, `pull`, `remove`, `prune` (parameters in
//! [`params`]). Every mutating method:
//!
//! - looks first and acts only when the node is not already as asked, so a repeated call
//!   changes nothing;
//! - computes `changed` from image IDs before and after (what a reference names, or
//!   which images exist), never from what the runtime says it did;
//! - in a dry run reports what it would do and sends no pull or remove: the only way to
//!   one is [`runtime::Node`], which refuses in a dry run (and the host refuses too).
//!
//! `remove` and `prune` never take an image a container on the node uses (any state) or
//! one the runtime pins (the sandbox image); `remove` does with `force`.
//!
//! Pull credentials come from [`credentials::for_image`], the one place that reads the
//! registry credentials the operator hands the invocation (`registry-auth`).

pub mod credentials;
pub mod params;
pub mod runtime;

use std::collections::BTreeSet;

use hostplug_sdk::{Context, Definition, Error, Outcome, Plugin, Result, export_plugin, log};
use serde::Serialize;

use crate::params::PullPolicy;
use crate::runtime::{FilesystemUsage, HostRuntime, Image, ImageUse, Node, Runtime};

/// Longest image reference accepted: 512 bytes, far above any real one (a registry
/// limits a repository name to 255 characters, a digest adds 71).
const MAX_REFERENCE_BYTES: usize = 512;

/// The containerd-image plugin.
#[derive(Debug)]
pub struct ContainerdImage;

impl Plugin for ContainerdImage {
    fn definition() -> Definition {
        fn host<'a>(cx: &Context) -> Node<'a, HostRuntime> {
            Node::new(&HostRuntime, cx.dry_run())
        }
        Definition::new(
            "containerd-image",
            env!("CARGO_PKG_VERSION"),
            "Lists, inspects, pulls, removes and prunes the images of the node's containerd \
             (the kubelet's images) through the CRI image service, idempotently, with dry runs.",
        )
        .read_only(
            "list",
            "Lists the node's images (the kubelet's k8s.io namespace), with the containers using each.",
            |p, cx| list(&host(cx), &p),
        )
        .read_only(
            "inspect",
            "Shows one image: its ID, names, digests, size, whether it is pinned and which containers use it.",
            |p, cx| inspect(&host(cx), &p),
        )
        .read_only(
            "usage",
            "Shows how much of the image file system the images use.",
            |_: hostplug_sdk::NoParams, cx| usage(&host(cx)),
        )
        .mutating(
            "pull",
            "Pulls an image from its registry: only when missing (if-not-present) or every time (always).",
            |p, cx| pull(&host(cx), &p),
        )
        .mutating(
            "remove",
            "Removes an image with all its names; nothing to do when it is missing; refuses one in use unless forced.",
            |p, cx| remove(&host(cx), &p),
        )
        .mutating(
            "prune",
            "Removes every image no container on the node uses, except pinned images and those listed in keep.",
            |p, cx| prune(&host(cx), &p),
        )
    }
}

export_plugin!(ContainerdImage);

/// Checks an image reference or ID enough to give a clear error naming `field`; the
/// runtime parses it properly.
pub fn check_image<'a>(field: &str, image: &'a str) -> Result<&'a str> {
    let bad = |why: &str| Err(Error::invalid_params(format!("{field}: {why}")));
    if image.is_empty() {
        return bad("must not be empty");
    }
    if image.len() > MAX_REFERENCE_BYTES {
        return bad(&format!("longer than {MAX_REFERENCE_BYTES} bytes"));
    }
    if !image
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b"._-/:@".contains(&b))
    {
        return bad(&format!(
            "`{}` is not an image reference or ID: only letters, digits and . _ - / : @ are allowed",
            image.chars().take(80).collect::<String>()
        ));
    }
    if image.starts_with(['/', ':', '@', '.', '-']) || image.ends_with(['/', ':', '@']) {
        return bad(&format!("`{image}` is not an image reference or ID"));
    }
    if image.contains("//") || image.split('/').any(|s| s == ".." || s == ".") {
        return bad(&format!(
            "`{image}` has an empty, '.' or '..' path component"
        ));
    }
    Ok(image)
}

/// Checks a tag: 1–128 of letters, digits, `_`, `.` and `-`, not starting with `.` or `-`.
fn check_tag(tag: &str) -> Result<()> {
    let ok = !tag.is_empty()
        && tag.len() <= 128
        && !tag.starts_with(['.', '-'])
        && tag
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(Error::invalid_params(format!(
            "tag: `{tag}` is not a tag: 1-128 letters, digits, '_', '.' or '-', not starting with '.' or '-'"
        )))
    }
}

/// Whether `image` already carries a tag or a digest (a `:` after the last `/`, or `@`).
fn has_tag_or_digest(image: &str) -> bool {
    image.contains('@')
        || image
            .rsplit('/')
            .next()
            .is_some_and(|last| last.contains(':'))
}

/// The containers (by name, or ID when unnamed) that use `image`.
fn users(image: &Image, uses: &[ImageUse]) -> Vec<String> {
    uses.iter()
        .filter(|u| u.uses(image))
        .map(|u| {
            if u.container_name.is_empty() {
                u.container_id.clone()
            } else {
                u.container_name.clone()
            }
        })
        .collect()
}

/// An image with the containers that use it.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct ImageView {
    #[serde(flatten)]
    image: Image,
    /// Containers (any state) using the image, by name.
    used_by: Vec<String>,
}

/// Output of `list`.
#[derive(Debug, Serialize)]
struct ListOutput {
    count: usize,
    images: Vec<ImageView>,
}

/// `list`: reads only.
pub fn list<R: Runtime>(n: &Node<'_, R>, p: &params::List) -> Result<Outcome> {
    let filter = p
        .reference
        .as_deref()
        .map(|r| check_image("reference", r))
        .transpose()?;
    let mut images = n.list(filter)?;
    images.sort_by(|a, b| a.repo_tags.cmp(&b.repo_tags).then(a.id.cmp(&b.id)));
    let uses = n.in_use()?;
    let images: Vec<ImageView> = images
        .into_iter()
        .map(|image| ImageView {
            used_by: users(&image, &uses),
            image,
        })
        .collect();
    Ok(Outcome::unchanged(ListOutput {
        count: images.len(),
        images,
    }))
}

fn missing(image: &str) -> Error {
    Error::not_found(format!("no such image on the node: {image}"))
}

/// `inspect`: reads only; a missing image is `not-found`.
pub fn inspect<R: Runtime>(n: &Node<'_, R>, p: &params::Inspect) -> Result<Outcome> {
    let image = check_image("image", &p.image)?;
    let found = n.status(image)?.ok_or_else(|| missing(image))?;
    let uses = n.in_use()?;
    Ok(Outcome::unchanged(ImageView {
        used_by: users(&found, &uses),
        image: found,
    }))
}

/// Output of `usage`.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct UsageOutput {
    filesystems: Vec<FilesystemUsage>,
}

/// `usage`: reads only.
pub fn usage<R: Runtime>(n: &Node<'_, R>) -> Result<Outcome> {
    Ok(Outcome::unchanged(UsageOutput {
        filesystems: n.filesystems()?,
    }))
}

/// Output of `pull`.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct PullOutput {
    /// The reference pulled (or looked at).
    image: String,
    /// The image ID the reference names after the call; in a dry run that would pull,
    /// the current one (null when missing).
    id: Option<String>,
    /// The image ID the reference named before the call (null when missing).
    previous_id: Option<String>,
    /// Whether the registry was asked (or, in a dry run, would be).
    pulled: bool,
    /// Whether registry credentials went with the pull.
    authenticated: bool,
}

/// `pull`: looks first; pulls when the policy says so; `changed` when the ID the
/// reference names is not the one it named before.
pub fn pull<R: Runtime>(n: &Node<'_, R>, p: &params::Pull) -> Result<Outcome> {
    let image = check_image("image", &p.image)?;
    let name = match &p.tag {
        Some(tag) => {
            check_tag(tag)?;
            if has_tag_or_digest(image) {
                return Err(Error::invalid_params(format!(
                    "tag: `{image}` already names a tag or digest; leave `tag` out or drop it from `image`"
                )));
            }
            format!("{image}:{tag}")
        }
        None if has_tag_or_digest(image) => image.to_owned(),
        None => format!("{image}:latest"),
    };
    let previous_id = n.status(&name)?.map(|i| i.id);
    if p.policy == PullPolicy::IfNotPresent
        && let Some(id) = &previous_id
    {
        log::info(format!("{name} is present ({id}); not pulled"));
        return Ok(Outcome::unchanged(PullOutput {
            image: name,
            id: previous_id.clone(),
            previous_id,
            pulled: false,
            authenticated: false,
        }));
    }
    let auth = credentials::for_image(&name)?;
    if n.dry_run() {
        // Without asking the registry nobody knows whether "always" would bring a new
        // image; a dry run says the pull would run.
        return Ok(Outcome::changed(PullOutput {
            image: name,
            id: previous_id.clone(),
            previous_id,
            pulled: true,
            authenticated: auth.is_some(),
        }));
    }
    let image_ref = n.pull(&name, auth.as_ref())?;
    let after = n.status(&name)?.ok_or_else(|| {
        Error::failed(format!(
            "pulling {name}: the runtime reported {image_ref} but has no such image afterwards"
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
            authenticated: auth.is_some(),
        },
    ))
}

/// Output of `remove`.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct RemoveOutput {
    image: String,
    /// The image ID the reference named before (null when it was missing).
    id: Option<String>,
    /// The names the image had (all go with it).
    repo_tags: Vec<String>,
    /// Whether the image is gone (in a dry run: would be).
    removed: bool,
}

/// `remove`: a missing image is nothing to do; an image in use or pinned is refused
/// unless `force`; `changed` when the image is gone afterwards.
pub fn remove<R: Runtime>(n: &Node<'_, R>, p: &params::Remove) -> Result<Outcome> {
    let image = check_image("image", &p.image)?;
    let Some(before) = n.status(image)? else {
        return Ok(Outcome::unchanged(RemoveOutput {
            image: image.to_owned(),
            id: None,
            repo_tags: Vec::new(),
            removed: false,
        }));
    };
    if !p.force {
        let used_by = users(&before, &n.in_use()?);
        if !used_by.is_empty() {
            return Err(Error::failed(format!(
                "{image} ({}) is used by container(s) {}; pass \"force\": true to remove it anyway",
                before.id,
                used_by.join(", ")
            )));
        }
        if before.pinned {
            return Err(Error::failed(format!(
                "{image} ({}) is pinned by the runtime (the sandbox image); pass \"force\": true to remove it anyway",
                before.id
            )));
        }
    }
    let output = |removed| RemoveOutput {
        image: image.to_owned(),
        id: Some(before.id.clone()),
        repo_tags: before.repo_tags.clone(),
        removed,
    };
    if n.dry_run() {
        return Ok(Outcome::changed(output(true)));
    }
    // By ID: CRI removes the image with every name, and the ID cannot have moved on.
    n.remove(&before.id)?;
    let gone = !n.list(None)?.iter().any(|i| i.id == before.id);
    if !gone {
        return Err(Error::failed(format!(
            "removing {image}: the runtime reported success but still has {}",
            before.id
        )));
    }
    log::info(format!("removed {image} ({})", before.id));
    Ok(Outcome::changed(output(true)))
}

/// Output of `prune`.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct PruneOutput {
    /// Image IDs removed (in a dry run: that would be).
    deleted: Vec<String>,
    /// Their names.
    deleted_tags: Vec<String>,
    /// Bytes the removed images took (in a dry run: would free), as the runtime sizes
    /// them (shared layers are counted per image).
    space_reclaimed: u64,
    /// Image IDs kept because a container uses them.
    in_use: Vec<String>,
    /// Image IDs kept because the runtime pins them.
    pinned: Vec<String>,
    /// Image IDs kept because of `keep`.
    kept: Vec<String>,
}

/// Whether `image` matches a `keep` entry: an ID, a name, a digest, or a name prefix
/// ending in `*`.
fn keeps(entry: &str, image: &Image) -> bool {
    let names = image.repo_tags.iter().chain(&image.repo_digests);
    match entry.strip_suffix('*') {
        Some(prefix) => names.into_iter().any(|n| n.starts_with(prefix)),
        None => entry == image.id || names.into_iter().any(|n| n == entry),
    }
}

/// `prune`: removes every image that no container uses, that is not pinned and not in
/// `keep`; `changed` when the set of image IDs shrank.
pub fn prune<R: Runtime>(n: &Node<'_, R>, p: &params::Prune) -> Result<Outcome> {
    for (i, k) in p.keep.iter().enumerate() {
        // A prefix may end where a name goes on: "registry/base/*", "app:*".
        let plain = k
            .strip_suffix('*')
            .map_or(k.as_str(), |p| p.trim_end_matches(['/', ':', '@']));
        if !plain.is_empty() {
            check_image(&format!("keep[{i}]"), plain)?;
        } else {
            return Err(Error::invalid_params(format!(
                "keep[{i}]: `{k}` would keep every image; leave prune out instead"
            )));
        }
    }
    let images = n.list(None)?;
    let uses = n.in_use()?;
    let mut out = PruneOutput {
        deleted: Vec::new(),
        deleted_tags: Vec::new(),
        space_reclaimed: 0,
        in_use: Vec::new(),
        pinned: Vec::new(),
        kept: Vec::new(),
    };
    let mut candidates = Vec::new();
    for image in images {
        if uses.iter().any(|u| u.uses(&image)) {
            out.in_use.push(image.id);
        } else if image.pinned {
            out.pinned.push(image.id);
        } else if p.keep.iter().any(|k| keeps(k, &image)) {
            out.kept.push(image.id);
        } else {
            candidates.push(image);
        }
    }
    if n.dry_run() {
        for image in candidates {
            out.space_reclaimed += image.size;
            out.deleted_tags.extend(image.repo_tags);
            out.deleted.push(image.id);
        }
        return Ok(Outcome::new(!out.deleted.is_empty(), out));
    }
    let before: BTreeSet<String> = candidates.iter().map(|i| i.id.clone()).collect();
    for image in &candidates {
        if let Err(e) = n.remove(&image.id) {
            log::warn(format!(
                "prune: kept {} ({}): {e}",
                image.id,
                image.repo_tags.join(", ")
            ));
        }
    }
    let after: BTreeSet<String> = n.list(None)?.into_iter().map(|i| i.id).collect();
    for image in candidates {
        if before.contains(&image.id) && !after.contains(&image.id) {
            out.space_reclaimed += image.size;
            out.deleted_tags.extend(image.repo_tags);
            out.deleted.push(image.id);
        }
    }
    log::info(format!("prune: {} image(s) removed", out.deleted.len()));
    Ok(Outcome::new(!out.deleted.is_empty(), out))
}

#[cfg(test)]
mod tests;

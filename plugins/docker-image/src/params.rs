//! The parameters of each docker-image method. Doc comments here become the descriptions
//! in the methods' JSON Schemas, which the operator validates tasks against and the
//! console shows, so they are written for administrators.

use schemars::JsonSchema;
use serde::Deserialize;

/// Parameters of `list`. Without filters every (top-level) image is listed.
#[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct List {
    /// Only images whose name matches this reference pattern, e.g. "nginx",
    /// "registry.example:5000/team/*" or "app:1.*" (the daemon's `reference` filter).
    #[serde(default)]
    pub reference: Option<String>,
    /// true: only dangling images (no tag, not used as a parent); false: only tagged ones.
    #[serde(default)]
    pub dangling: Option<bool>,
    /// Only images carrying every one of these labels: "key" (any value) or "key=value".
    #[serde(default)]
    pub label: Vec<String>,
    /// Also list intermediate images (layers of built images), like `docker images -a`.
    #[serde(default)]
    pub all: bool,
}

/// Parameters of `inspect`.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Inspect {
    /// The image: a reference such as "nginx:1.27" or "127.0.0.1:5000/app:v1", or an
    /// image ID ("sha256:…" or a unique prefix of its hex digits).
    pub image: String,
}

/// When `pull` contacts the registry.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum PullPolicy {
    /// Pull only when the image is not on the node (or not for the requested platform).
    #[default]
    IfNotPresent,
    /// Always ask the registry; `changed` is true only when the image ID changed. A dry
    /// run does not ask the registry, so it reports `changed: true` for this policy.
    Always,
}

/// Parameters of `pull`.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Pull {
    /// The image to pull, fully qualified with its registry, e.g.
    /// "registry.example:5000/team/app". It may carry a tag (":v1") or a digest
    /// ("@sha256:…"); then leave `tag` out.
    pub image: String,
    /// The tag to pull when `image` has none; default "latest".
    #[serde(default)]
    pub tag: Option<String>,
    /// Platform to pull for, "os/arch" or "os/arch/variant" (e.g. "linux/arm64");
    /// default: the node's own.
    #[serde(default)]
    pub platform: Option<String>,
    /// "if-not-present" (default): pull only when the image is missing; "always": ask
    /// the registry every time.
    #[serde(default)]
    pub policy: PullPolicy,
}

/// What `tag` does when the target name already names another image.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum ExistingTag {
    /// Move the name to the source image (what `docker tag` does).
    #[default]
    Overwrite,
    /// Leave the existing image under that name alone; report it, change nothing.
    Keep,
}

fn latest() -> String {
    "latest".to_owned()
}

/// Parameters of `tag`.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Tag {
    /// The image to tag: a reference or an image ID. It must exist on the node.
    pub source: String,
    /// The new name's repository, e.g. "registry.example:5000/team/app" (no tag).
    pub repository: String,
    /// The new name's tag; default "latest".
    #[serde(default = "latest")]
    pub tag: String,
    /// When `repository:tag` already names a different image: "overwrite" (default)
    /// moves the name to `source`, "keep" leaves it as it is.
    #[serde(default)]
    pub existing: ExistingTag,
}

/// Parameters of `remove`.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Remove {
    /// The image: a reference (removes that name; the image goes when it was its last
    /// name) or an image ID. A missing image is not an error: there is nothing to do.
    pub image: String,
    /// Remove the image even when it has several names or is used by stopped containers
    /// (Podman also removes those containers). Default false.
    #[serde(default)]
    pub force: bool,
    /// Keep untagged parent images. Default false.
    #[serde(default)]
    pub noprune: bool,
}

/// Parameters of `prune`.
#[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Prune {
    /// false (default): remove only dangling images (no name, no child); true: remove
    /// every image that no container uses, named or not.
    #[serde(default)]
    pub all: bool,
    /// Only images carrying every one of these labels: "key" or "key=value".
    #[serde(default)]
    pub label: Vec<String>,
    /// Only images carrying none of these labels: "key" or "key=value".
    #[serde(default)]
    pub label_not: Vec<String>,
}

/// Parameters of `push`.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Push {
    /// The image on the node to push, named with its registry, e.g.
    /// "registry.example:5000/team/app:1.0" (give it that name first with `tag`). It may
    /// carry a tag; otherwise `tag` (default "latest") is pushed. Credentials for its
    /// registry come from the task's `spec.registryAuth` Secret, if it has one.
    pub image: String,
    /// The tag to push when `image` has none; default "latest".
    #[serde(default)]
    pub tag: Option<String>,
}

/// Parameters of `login`.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Login {
    /// The registry to check the task's credentials against, `host[:port]` (e.g.
    /// "registry.example:5000", or "docker.io"). The credentials are the entry for this
    /// registry in the task's `spec.registryAuth` Secret; nothing is stored on the node.
    pub registry: String,
}

/// Parameters of `save`.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Save {
    /// The image on the node to save: a reference or an image ID.
    pub image: String,
    /// The tar file to write in the node's image archive directory
    /// (/var/lib/hostplug/image-archives): a plain name ending in ".tar", e.g.
    /// "app-1.0.tar". An existing file with other content is replaced.
    pub file: String,
}

/// Parameters of `load`.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Load {
    /// The tar file to load from the node's image archive directory
    /// (/var/lib/hostplug/image-archives), e.g. "app-1.0.tar" (what `save` or
    /// `docker save` wrote).
    pub file: String,
}

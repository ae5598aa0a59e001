//! The parameters of each containerd-image method. Doc comments here become the
//! descriptions in the methods' JSON Schemas, which the operator validates tasks against
//! and the console shows, so they are written for administrators.

use schemars::JsonSchema;
use serde::Deserialize;

/// Parameters of `list`. Without a filter every image of the node's `k8s.io` namespace
/// is listed.
#[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct List {
    /// Only the image this reference names, e.g. "registry.example:5000/team/app:1.0" or
    /// "nginx" (the runtime completes it to docker.io/library/nginx:latest).
    #[serde(default)]
    pub reference: Option<String>,
}

/// Parameters of `inspect`.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Inspect {
    /// The image: a reference such as "registry.example:5000/app:v1" or an image ID
    /// ("sha256:…").
    pub image: String,
}

/// When `pull` contacts the registry.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum PullPolicy {
    /// Pull only when the reference names no image on the node.
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
    /// The image to pull, e.g. "registry.example:5000/team/app". It may carry a tag
    /// (":v1") or a digest ("@sha256:…"); then leave `tag` out.
    pub image: String,
    /// The tag to pull when `image` has none; default "latest".
    #[serde(default)]
    pub tag: Option<String>,
    /// "if-not-present" (default): pull only when the image is missing; "always": ask
    /// the registry every time.
    #[serde(default)]
    pub policy: PullPolicy,
}

/// Parameters of `remove`.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Remove {
    /// The image: a reference or an image ID. The runtime removes the image with all its
    /// names. A missing image is not an error: there is nothing to do.
    pub image: String,
    /// Remove the image even when a container on the node uses it or the runtime pins it
    /// (the sandbox image). Default false: such an image is refused with `failed`.
    #[serde(default)]
    pub force: bool,
}

/// Parameters of `prune`.
#[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Prune {
    /// Images to keep even when no container uses them: references ("registry:5000/app:1")
    /// or image IDs. An entry ending in "*" keeps every image with a name that starts
    /// with the rest, e.g. "registry.example:5000/base/*".
    #[serde(default)]
    pub keep: Vec<String>,
}

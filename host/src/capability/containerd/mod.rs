//! The `containerd` capability: the `containerd` import, the CRI image service
//! (`runtime.v1.ImageService`) of the node's containerd over its Unix socket, with its
//! policy and limits.
//!
//! What a plugin can do through it is image management only: `ListImages`,
//! `ImageStatus`, `PullImage`, `RemoveImage`, `ImageFsInfo`, and `ListContainers` read for
//! which images are in use. The CRI messages of exactly those calls are written out in
//! [`cri`] (field numbers from the `runtime.v1` proto); the host holds no client code for
//! any other CRI call — no sandbox, container, exec, attach or port-forward — so no
//! plugin input can reach one.
//!
//! [`ContainerdClient`] opens one gRPC (HTTP/2) connection per call on a thread of its
//! own with a current-thread tokio runtime: the import is synchronous and runs inside the
//! host's runtime, which must not be entered twice. Every call is bounded by the policy's
//! timeout and the invocation's deadline, and its response by the policy's size cap.
//!
//! It must never reach anything but the configured socket, never send a mutating call
//! (pull, remove) in a dry run, and never log or return registry credentials.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Default time limit of one containerd call: 120 s (pulling a large image over a slow
/// link). A call never runs past the invocation's deadline either.
pub const DEFAULT_CONTAINERD_TIMEOUT: Duration = Duration::from_secs(120);

/// Default cap on one decoded gRPC response: 16 MiB. An image list of a busy node (a few
/// hundred images with their names and digests) is well under 1 MiB.
pub const DEFAULT_CONTAINERD_MAX_RESPONSE_BYTES: usize = 16 << 20;

/// The containerd namespace CRI works in. The kubelet's images live there; CRI offers no
/// way to choose another, so a plugin never sees `ctr`'s `default` namespace or others.
pub const CRI_NAMESPACE: &str = "k8s.io";

/// Longest image reference or ID the host sends: 4 KiB (a reference with a digest is
/// under 300 bytes; the registry's own limit on a repository name is 255).
const MAX_IMAGE_BYTES: usize = 4 << 10;

/// Longest credential field the host passes on: 16 KiB (identity tokens are JWTs of a
/// few KiB).
const MAX_AUTH_FIELD_BYTES: usize = 16 << 10;

/// What the containerd import may do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerdPolicy {
    /// Time limit of one call (also bounded by the invocation's deadline).
    pub timeout: Duration,
    /// Cap on a decoded response, in bytes.
    pub max_response_bytes: usize,
}

impl Default for ContainerdPolicy {
    fn default() -> Self {
        Self {
            timeout: DEFAULT_CONTAINERD_TIMEOUT,
            max_response_bytes: DEFAULT_CONTAINERD_MAX_RESPONSE_BYTES,
        }
    }
}

impl ContainerdPolicy {
    /// Checks the policy itself; the error names the field.
    pub fn validate(&self) -> Result<(), String> {
        if self.timeout.is_zero() {
            return Err("containerd policy timeout: must be more than zero".to_owned());
        }
        if self.max_response_bytes < 4096 {
            return Err(format!(
                "containerd policy max_response_bytes {}: at least 4096",
                self.max_response_bytes
            ));
        }
        Ok(())
    }
}

/// An image as the runtime describes it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Image {
    /// Image ID, `sha256:…`.
    pub id: String,
    /// Names (`repo:tag`).
    pub repo_tags: Vec<String>,
    /// Registry digests (`repo@sha256:…`).
    pub repo_digests: Vec<String>,
    /// Size in bytes.
    pub size: u64,
    /// Pinned by the runtime (e.g. the sandbox image).
    pub pinned: bool,
    /// User name the image runs as, when it names one.
    pub username: String,
    /// Uid the image runs as, when it gives a number.
    pub uid: Option<i64>,
}

/// Registry credentials of one pull (CRI's `AuthConfig`). `Debug` shows no secret.
#[derive(Clone, PartialEq, Eq, Default)]
pub struct AuthConfig {
    /// User name.
    pub username: String,
    /// Password.
    pub password: String,
    /// base64 of `username:password`.
    pub auth: String,
    /// The registry these are for.
    pub server_address: String,
    /// An OAuth identity token.
    pub identity_token: String,
    /// A bearer token for the registry.
    pub registry_token: String,
}

impl std::fmt::Debug for AuthConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuthConfig")
            .field("username", &self.username)
            .field("server_address", &self.server_address)
            .finish_non_exhaustive()
    }
}

/// Usage of a file system that holds images.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct FilesystemUsage {
    /// Where it is mounted.
    pub mountpoint: String,
    /// Bytes used by images, when the runtime knows.
    pub used_bytes: Option<u64>,
    /// Inodes used by images, when the runtime knows.
    pub inodes_used: Option<u64>,
    /// Nanoseconds since the Unix epoch.
    pub timestamp: i64,
}

/// A container's use of an image.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ImageUse {
    /// Container ID.
    pub container_id: String,
    /// Container name (from its metadata).
    pub container_name: String,
    /// The image the container was created from.
    pub image: String,
    /// The image the container runs (an ID or a digest reference).
    pub image_ref: String,
}

/// The CRI messages of the calls the import makes, and nothing more. Field numbers are
/// those of `k8s.io/cri-api/pkg/apis/runtime/v1/api.proto`; fields the host does not
/// need are left out (protobuf skips unknown fields when decoding).
pub mod cri {
    #![allow(missing_docs, missing_debug_implementations)]

    use std::collections::HashMap;

    /// `runtime.v1.ImageService` methods.
    pub const LIST_IMAGES: &str = "/runtime.v1.ImageService/ListImages";
    pub const IMAGE_STATUS: &str = "/runtime.v1.ImageService/ImageStatus";
    pub const PULL_IMAGE: &str = "/runtime.v1.ImageService/PullImage";
    pub const REMOVE_IMAGE: &str = "/runtime.v1.ImageService/RemoveImage";
    pub const IMAGE_FS_INFO: &str = "/runtime.v1.ImageService/ImageFsInfo";
    /// `runtime.v1.RuntimeService/ListContainers`: read-only.
    pub const LIST_CONTAINERS: &str = "/runtime.v1.RuntimeService/ListContainers";

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct ImageSpec {
        #[prost(string, tag = "1")]
        pub image: String,
        #[prost(map = "string, string", tag = "2")]
        pub annotations: HashMap<String, String>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct AuthConfig {
        #[prost(string, tag = "1")]
        pub username: String,
        #[prost(string, tag = "2")]
        pub password: String,
        #[prost(string, tag = "3")]
        pub auth: String,
        #[prost(string, tag = "4")]
        pub server_address: String,
        #[prost(string, tag = "5")]
        pub identity_token: String,
        #[prost(string, tag = "6")]
        pub registry_token: String,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct ImageFilter {
        #[prost(message, optional, tag = "1")]
        pub image: Option<ImageSpec>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct ListImagesRequest {
        #[prost(message, optional, tag = "1")]
        pub filter: Option<ImageFilter>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Int64Value {
        #[prost(int64, tag = "1")]
        pub value: i64,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct UInt64Value {
        #[prost(uint64, tag = "1")]
        pub value: u64,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Image {
        #[prost(string, tag = "1")]
        pub id: String,
        #[prost(string, repeated, tag = "2")]
        pub repo_tags: Vec<String>,
        #[prost(string, repeated, tag = "3")]
        pub repo_digests: Vec<String>,
        #[prost(uint64, tag = "4")]
        pub size: u64,
        #[prost(message, optional, tag = "5")]
        pub uid: Option<Int64Value>,
        #[prost(string, tag = "6")]
        pub username: String,
        #[prost(bool, tag = "8")]
        pub pinned: bool,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct ListImagesResponse {
        #[prost(message, repeated, tag = "1")]
        pub images: Vec<Image>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct ImageStatusRequest {
        #[prost(message, optional, tag = "1")]
        pub image: Option<ImageSpec>,
        #[prost(bool, tag = "2")]
        pub verbose: bool,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct ImageStatusResponse {
        #[prost(message, optional, tag = "1")]
        pub image: Option<Image>,
    }

    /// `sandbox_config` (tag 3) is left out: the host never sends one.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct PullImageRequest {
        #[prost(message, optional, tag = "1")]
        pub image: Option<ImageSpec>,
        #[prost(message, optional, tag = "2")]
        pub auth: Option<AuthConfig>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct PullImageResponse {
        #[prost(string, tag = "1")]
        pub image_ref: String,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct RemoveImageRequest {
        #[prost(message, optional, tag = "1")]
        pub image: Option<ImageSpec>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct RemoveImageResponse {}

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct ImageFsInfoRequest {}

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct FilesystemIdentifier {
        #[prost(string, tag = "1")]
        pub mountpoint: String,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct FilesystemUsage {
        #[prost(int64, tag = "1")]
        pub timestamp: i64,
        #[prost(message, optional, tag = "2")]
        pub fs_id: Option<FilesystemIdentifier>,
        #[prost(message, optional, tag = "3")]
        pub used_bytes: Option<UInt64Value>,
        #[prost(message, optional, tag = "4")]
        pub inodes_used: Option<UInt64Value>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct ImageFsInfoResponse {
        #[prost(message, repeated, tag = "1")]
        pub image_filesystems: Vec<FilesystemUsage>,
    }

    /// An empty filter: every container, whatever its state.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct ListContainersRequest {}

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct ContainerMetadata {
        #[prost(string, tag = "1")]
        pub name: String,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Container {
        #[prost(string, tag = "1")]
        pub id: String,
        #[prost(message, optional, tag = "3")]
        pub metadata: Option<ContainerMetadata>,
        #[prost(message, optional, tag = "4")]
        pub image: Option<ImageSpec>,
        #[prost(string, tag = "5")]
        pub image_ref: String,
        #[prost(string, tag = "10")]
        pub image_id: String,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct ListContainersResponse {
        #[prost(message, repeated, tag = "1")]
        pub containers: Vec<Container>,
    }

    pub(crate) fn spec(image: &str) -> ImageSpec {
        ImageSpec {
            image: image.to_owned(),
            annotations: HashMap::new(),
        }
    }
}

impl From<cri::Image> for Image {
    fn from(i: cri::Image) -> Self {
        Self {
            id: i.id,
            repo_tags: i.repo_tags,
            repo_digests: i.repo_digests,
            size: i.size,
            pinned: i.pinned,
            username: i.username,
            uid: i.uid.map(|u| u.value),
        }
    }
}

/// Checks an image reference or ID before it is sent: not empty, not too long, printable
/// ASCII without spaces. The runtime parses it properly; this keeps junk and control
/// characters out of its logs.
fn check_image(image: &str) -> Result<(), String> {
    if image.is_empty() {
        return Err("invalid: the image reference is empty".to_owned());
    }
    if image.len() > MAX_IMAGE_BYTES {
        return Err(format!(
            "invalid: the image reference is longer than {MAX_IMAGE_BYTES} bytes"
        ));
    }
    if !image.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(
            "invalid: the image reference holds a space, a control or a non-ASCII character"
                .to_owned(),
        );
    }
    Ok(())
}

fn check_auth(auth: &AuthConfig) -> Result<(), String> {
    for (field, value) in [
        ("username", &auth.username),
        ("password", &auth.password),
        ("auth", &auth.auth),
        ("server-address", &auth.server_address),
        ("identity-token", &auth.identity_token),
        ("registry-token", &auth.registry_token),
    ] {
        if value.len() > MAX_AUTH_FIELD_BYTES {
            return Err(format!(
                "invalid: auth {field} is longer than {MAX_AUTH_FIELD_BYTES} bytes"
            ));
        }
    }
    Ok(())
}

/// The containerd import's client for one invocation. Public so that tests and tools can
/// drive the capability exactly as a plugin does.
#[derive(Debug, Clone)]
pub struct ContainerdClient {
    socket: PathBuf,
    policy: ContainerdPolicy,
    /// In a dry run pull and remove are refused: the host, not the plugin, keeps a dry
    /// run from changing the node.
    read_only: bool,
}

impl ContainerdClient {
    /// A client of the CRI socket `socket` under `policy`; `read_only` refuses pulls and
    /// removals (a dry run).
    pub fn new(socket: &Path, policy: ContainerdPolicy, read_only: bool) -> Self {
        Self {
            socket: socket.to_path_buf(),
            policy,
            read_only,
        }
    }

    fn refuse_in_dry_run(&self, what: &str) -> Result<(), String> {
        if self.read_only {
            Err(format!(
                "denied: {what} is not allowed in a dry run (only reads are)"
            ))
        } else {
            Ok(())
        }
    }

    /// Every image, or those `filter` (a reference) names.
    pub fn list_images(
        &self,
        filter: Option<&str>,
        deadline: Instant,
    ) -> Result<Vec<Image>, String> {
        if let Some(f) = filter {
            check_image(f)?;
        }
        let req = cri::ListImagesRequest {
            filter: filter.map(|f| cri::ImageFilter {
                image: Some(cri::spec(f)),
            }),
        };
        let resp: cri::ListImagesResponse = self.call(cri::LIST_IMAGES, req, deadline)?;
        Ok(resp.images.into_iter().map(Image::from).collect())
    }

    /// The image `image` names, or `None`.
    pub fn image_status(&self, image: &str, deadline: Instant) -> Result<Option<Image>, String> {
        check_image(image)?;
        let req = cri::ImageStatusRequest {
            image: Some(cri::spec(image)),
            verbose: false,
        };
        let resp: cri::ImageStatusResponse = self.call(cri::IMAGE_STATUS, req, deadline)?;
        Ok(resp.image.map(Image::from))
    }

    /// Pulls `image`; returns the runtime's image reference (its ID).
    pub fn pull_image(
        &self,
        image: &str,
        auth: Option<&AuthConfig>,
        deadline: Instant,
    ) -> Result<String, String> {
        check_image(image)?;
        if let Some(a) = auth {
            check_auth(a)?;
        }
        self.refuse_in_dry_run("pulling an image")?;
        let req = cri::PullImageRequest {
            image: Some(cri::spec(image)),
            auth: auth.map(|a| cri::AuthConfig {
                username: a.username.clone(),
                password: a.password.clone(),
                auth: a.auth.clone(),
                server_address: a.server_address.clone(),
                identity_token: a.identity_token.clone(),
                registry_token: a.registry_token.clone(),
            }),
        };
        let resp: cri::PullImageResponse = self.call(cri::PULL_IMAGE, req, deadline)?;
        Ok(resp.image_ref)
    }

    /// Removes the image `image` names; a missing image is not an error (CRI's contract).
    pub fn remove_image(&self, image: &str, deadline: Instant) -> Result<(), String> {
        check_image(image)?;
        self.refuse_in_dry_run("removing an image")?;
        let req = cri::RemoveImageRequest {
            image: Some(cri::spec(image)),
        };
        let _: cri::RemoveImageResponse = self.call(cri::REMOVE_IMAGE, req, deadline)?;
        Ok(())
    }

    /// The file systems images are stored on.
    pub fn image_fs_info(&self, deadline: Instant) -> Result<Vec<FilesystemUsage>, String> {
        let resp: cri::ImageFsInfoResponse =
            self.call(cri::IMAGE_FS_INFO, cri::ImageFsInfoRequest {}, deadline)?;
        Ok(resp
            .image_filesystems
            .into_iter()
            .map(|f| FilesystemUsage {
                mountpoint: f.fs_id.map(|i| i.mountpoint).unwrap_or_default(),
                used_bytes: f.used_bytes.map(|v| v.value),
                inodes_used: f.inodes_used.map(|v| v.value),
                timestamp: f.timestamp,
            })
            .collect())
    }

    /// Every container and the image it uses.
    pub fn images_in_use(&self, deadline: Instant) -> Result<Vec<ImageUse>, String> {
        let resp: cri::ListContainersResponse = self.call(
            cri::LIST_CONTAINERS,
            cri::ListContainersRequest {},
            deadline,
        )?;
        Ok(resp
            .containers
            .into_iter()
            .map(|c| ImageUse {
                container_id: c.id,
                container_name: c.metadata.map(|m| m.name).unwrap_or_default(),
                image: c.image.map(|i| i.image).unwrap_or_default(),
                image_ref: if c.image_id.is_empty() {
                    c.image_ref
                } else {
                    c.image_id
                },
            })
            .collect())
    }

    /// One unary call on a thread of its own (see the module documentation), no later
    /// than `deadline` and the policy's timeout.
    fn call<Req, Resp>(
        &self,
        path: &'static str,
        req: Req,
        deadline: Instant,
    ) -> Result<Resp, String>
    where
        Req: prost::Message + Send + Sync + 'static,
        Resp: prost::Message + Default + Send + Sync + 'static,
    {
        let left = deadline
            .saturating_duration_since(Instant::now())
            .min(self.policy.timeout);
        if left.is_zero() {
            return Err("containerd call timed out".to_owned());
        }
        let socket = self.socket.clone();
        let max = self.policy.max_response_bytes;
        let worker = std::thread::Builder::new()
            .name("hostplug-cri".into())
            .spawn(move || -> Result<Resp, String> {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .map_err(|e| format!("containerd: starting the client runtime: {e}"))?;
                rt.block_on(async move {
                    match tokio::time::timeout(left, unary(&socket, path, req, max)).await {
                        Ok(r) => r,
                        Err(_) => Err("containerd call timed out".to_owned()),
                    }
                })
            })
            .map_err(|e| format!("containerd: starting the client thread: {e}"))?;
        worker
            .join()
            .map_err(|_| "containerd: the client thread panicked".to_owned())?
    }
}

async fn unary<Req, Resp>(
    socket: &Path,
    path: &'static str,
    req: Req,
    max_response_bytes: usize,
) -> Result<Resp, String>
where
    Req: prost::Message + Send + Sync + 'static,
    Resp: prost::Message + Default + Send + Sync + 'static,
{
    let socket_path = socket.to_path_buf();
    // The URI is a placeholder: the connector always dials the socket.
    let channel = tonic::transport::Endpoint::from_static("http://containerd.invalid")
        .connect_with_connector(tower::service_fn(move |_: http::Uri| {
            let p = socket_path.clone();
            async move {
                tokio::net::UnixStream::connect(p)
                    .await
                    .map(hyper_util::rt::TokioIo::new)
            }
        }))
        .await
        .map_err(|e| {
            let cause =
                std::error::Error::source(&e).map_or_else(|| e.to_string(), |s| s.to_string());
            format!("containerd socket {}: {cause}", socket.display())
        })?;
    let mut grpc = tonic::client::Grpc::new(channel).max_decoding_message_size(max_response_bytes);
    grpc.ready()
        .await
        .map_err(|e| format!("containerd socket {}: {e}", socket.display()))?;
    let request = tonic::Request::new(req);
    let codec = tonic_prost::ProstCodec::<Req, Resp>::default();
    grpc.unary(request, http::uri::PathAndQuery::from_static(path), codec)
        .await
        .map(tonic::Response::into_inner)
        .map_err(status_message)
}

/// The runtime's refusal as the plugin sees it: `not-found:` for a missing object,
/// otherwise the gRPC code and the runtime's message.
fn status_message(s: tonic::Status) -> String {
    let message: String = s.message().chars().take(1000).collect();
    match s.code() {
        tonic::Code::NotFound => format!("not-found: {message}"),
        // containerd answers a pull of a reference the registry does not have with
        // `Unknown` and "…failed to resolve reference …: not found".
        tonic::Code::Unknown
            if message.contains("failed to resolve reference")
                && message.ends_with("not found") =>
        {
            format!("not-found: {message}")
        }
        tonic::Code::Unimplemented => format!(
            "containerd: the runtime does not serve this CRI call (is the CRI plugin enabled?): {message}"
        ),
        code => format!("containerd: {code:?}: {message}"),
    }
}

// The `containerd` import: refused without the capability, otherwise the client of this
// call (policy, dry-run rule, deadline).
use crate::bindings::hostplug::plugin::containerd as wit;

fn denied() -> String {
    "denied: this plugin has no containerd capability".to_owned()
}

impl From<Image> for wit::Image {
    fn from(i: Image) -> Self {
        Self {
            id: i.id,
            repo_tags: i.repo_tags,
            repo_digests: i.repo_digests,
            size: i.size,
            pinned: i.pinned,
            username: i.username,
            uid: i.uid,
        }
    }
}

impl wit::Host for crate::plugin::StoreState {
    fn list_images(&mut self, filter: Option<String>) -> Result<Vec<wit::Image>, String> {
        let client = self.containerd.as_ref().ok_or_else(denied)?;
        client
            .list_images(filter.as_deref(), self.deadline)
            .map(|v| v.into_iter().map(Into::into).collect())
    }

    fn image_status(&mut self, image: String) -> Result<Option<wit::Image>, String> {
        let client = self.containerd.as_ref().ok_or_else(denied)?;
        client
            .image_status(&image, self.deadline)
            .map(|i| i.map(Into::into))
    }

    fn pull_image(
        &mut self,
        image: String,
        auth: Option<wit::AuthConfig>,
    ) -> Result<String, String> {
        let client = self.containerd.as_ref().ok_or_else(denied)?;
        let auth = auth.map(|a| AuthConfig {
            username: a.username,
            password: a.password,
            auth: a.auth,
            server_address: a.server_address,
            identity_token: a.identity_token,
            registry_token: a.registry_token,
        });
        client.pull_image(&image, auth.as_ref(), self.deadline)
    }

    fn remove_image(&mut self, image: String) -> Result<(), String> {
        let client = self.containerd.as_ref().ok_or_else(denied)?;
        client.remove_image(&image, self.deadline)
    }

    fn image_fs_info(&mut self) -> Result<Vec<wit::FilesystemUsage>, String> {
        let client = self.containerd.as_ref().ok_or_else(denied)?;
        client.image_fs_info(self.deadline).map(|v| {
            v.into_iter()
                .map(|f| wit::FilesystemUsage {
                    mountpoint: f.mountpoint,
                    used_bytes: f.used_bytes,
                    inodes_used: f.inodes_used,
                    timestamp: f.timestamp,
                })
                .collect()
        })
    }

    fn images_in_use(&mut self) -> Result<Vec<wit::ImageUse>, String> {
        let client = self.containerd.as_ref().ok_or_else(denied)?;
        client.images_in_use(self.deadline).map(|v| {
            v.into_iter()
                .map(|u| wit::ImageUse {
                    container_id: u.container_id,
                    container_name: u.container_name,
                    image: u.image,
                    image_ref: u.image_ref,
                })
                .collect()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn soon() -> Instant {
        Instant::now() + Duration::from_secs(5)
    }

    /// A dry run refuses pulls and removals before anything is sent: the socket does not
    /// even exist here, so reaching it would fail differently.
    #[test]
    fn dry_runs_refuse_mutations_before_the_socket() {
        let c = ContainerdClient::new(
            Path::new("/nonexistent/containerd.sock"),
            ContainerdPolicy::default(),
            true,
        );
        let e = c
            .pull_image("registry.example/app:1", None, soon())
            .expect_err("pull");
        assert!(e.starts_with("denied:") && e.contains("dry run"), "{e}");
        let e = c
            .remove_image("registry.example/app:1", soon())
            .expect_err("remove");
        assert!(e.starts_with("denied:") && e.contains("dry run"), "{e}");
        let e = c.list_images(None, soon()).expect_err("no socket");
        assert!(e.contains("containerd socket"), "{e}");
    }

    #[test]
    fn junk_references_are_refused() {
        let c = ContainerdClient::new(
            Path::new("/nonexistent/containerd.sock"),
            ContainerdPolicy::default(),
            false,
        );
        for bad in [
            "",
            "app:1\nX",
            "app 1",
            "äpp",
            &"a".repeat(MAX_IMAGE_BYTES + 1),
        ] {
            let e = c.image_status(bad, soon()).expect_err(bad);
            assert!(e.starts_with("invalid:"), "{bad:?}: {e}");
        }
        let auth = AuthConfig {
            password: "x".repeat(MAX_AUTH_FIELD_BYTES + 1),
            ..AuthConfig::default()
        };
        let e = c
            .pull_image("app:1", Some(&auth), soon())
            .expect_err("long password");
        assert!(e.contains("auth password"), "{e}");
        assert!(!format!("{auth:?}").contains("xxxx"), "Debug hides secrets");
    }

    #[test]
    fn policy_validation_names_the_field() {
        let p = ContainerdPolicy {
            timeout: Duration::ZERO,
            ..ContainerdPolicy::default()
        };
        assert!(p.validate().expect_err("zero").contains("timeout"));
        assert_eq!(ContainerdPolicy::default().validate(), Ok(()));
    }
}

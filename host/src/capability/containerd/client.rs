//! [`ContainerdClient`]: the containerd import's client — the values checked and the
//! dry-run rule applied before anything is sent, then one unary gRPC call of the CRI
//! image service over the socket.
//!
//! One gRPC (HTTP/2) connection per call, on a thread of its own with a current-thread
//! tokio runtime: the import is synchronous and runs inside the host's runtime, which
//! must not be entered twice. Every call is bounded by the policy's timeout and the
//! invocation's deadline, and its response by the policy's size cap.
//!
//! It must never send a mutating call (pull, remove) in a dry run, never send a call
//! that is not in [`cri`](super::cri), and never log or return registry credentials.

use std::path::{Path, PathBuf};
use std::time::Instant;

use super::cri;
use super::{AuthConfig, ContainerdPolicy, FilesystemUsage, Image, ImageUse};
use crate::capability::CapabilityError;

/// Longest image reference or ID the host sends: 4 KiB (a reference with a digest is
/// under 300 bytes; the registry's own limit on a repository name is 255).
const MAX_IMAGE_BYTES: usize = 4 << 10;

/// Longest credential field the host passes on: 16 KiB (identity tokens are JWTs of a
/// few KiB).
const MAX_AUTH_FIELD_BYTES: usize = 16 << 10;

/// Most of the runtime's own message quoted in an error: 1000 characters (containerd's
/// messages are a line; a registry's error body can be long).
const MAX_STATUS_MESSAGE_CHARS: usize = 1000;

/// Checks an image reference or ID before it is sent: not empty, not too long, printable
/// ASCII without spaces. The runtime parses it properly; this keeps junk and control
/// characters out of its logs.
fn check_image(image: &str) -> Result<(), CapabilityError> {
    if image.is_empty() {
        return Err(CapabilityError::invalid("the image reference is empty"));
    }
    if image.len() > MAX_IMAGE_BYTES {
        return Err(CapabilityError::invalid(format!(
            "the image reference is longer than {MAX_IMAGE_BYTES} bytes"
        )));
    }
    if !image.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(CapabilityError::invalid(
            "the image reference holds a space, a control or a non-ASCII character",
        ));
    }
    Ok(())
}

fn check_auth(auth: &AuthConfig) -> Result<(), CapabilityError> {
    for (field, value) in [
        ("username", &auth.username),
        ("password", &auth.password),
        ("auth", &auth.auth),
        ("server-address", &auth.server_address),
        ("identity-token", &auth.identity_token),
        ("registry-token", &auth.registry_token),
    ] {
        if value.len() > MAX_AUTH_FIELD_BYTES {
            return Err(CapabilityError::invalid(format!(
                "auth {field} is longer than {MAX_AUTH_FIELD_BYTES} bytes"
            )));
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

    fn refuse_in_dry_run(&self, what: &str) -> Result<(), CapabilityError> {
        if self.read_only {
            Err(CapabilityError::denied(format!(
                "{what} is not allowed in a read-only call (a dry run, or a method that \
                 does not declare itself mutating): only reads are"
            )))
        } else {
            Ok(())
        }
    }

    /// Every image, or those `filter` (a reference) names.
    pub fn list_images(
        &self,
        filter: Option<&str>,
        deadline: Instant,
    ) -> Result<Vec<Image>, CapabilityError> {
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
    pub fn image_status(
        &self,
        image: &str,
        deadline: Instant,
    ) -> Result<Option<Image>, CapabilityError> {
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
    ) -> Result<String, CapabilityError> {
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
    pub fn remove_image(&self, image: &str, deadline: Instant) -> Result<(), CapabilityError> {
        check_image(image)?;
        self.refuse_in_dry_run("removing an image")?;
        let req = cri::RemoveImageRequest {
            image: Some(cri::spec(image)),
        };
        let _: cri::RemoveImageResponse = self.call(cri::REMOVE_IMAGE, req, deadline)?;
        Ok(())
    }

    /// The file systems images are stored on.
    pub fn image_fs_info(
        &self,
        deadline: Instant,
    ) -> Result<Vec<FilesystemUsage>, CapabilityError> {
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
    pub fn images_in_use(&self, deadline: Instant) -> Result<Vec<ImageUse>, CapabilityError> {
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
    ) -> Result<Resp, CapabilityError>
    where
        Req: prost::Message + Send + Sync + 'static,
        Resp: prost::Message + Default + Send + Sync + 'static,
    {
        let left = deadline
            .saturating_duration_since(Instant::now())
            .min(self.policy.timeout);
        if left.is_zero() {
            return Err(CapabilityError::failed("containerd call timed out"));
        }
        let socket = self.socket.clone();
        let max = self.policy.max_response_bytes;
        let worker = std::thread::Builder::new()
            .name("hostplug-cri".into())
            .spawn(move || -> Result<Resp, CapabilityError> {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .map_err(|e| {
                        CapabilityError::failed(format!(
                            "containerd: starting the client runtime: {e}"
                        ))
                    })?;
                rt.block_on(async move {
                    match tokio::time::timeout(left, unary(&socket, path, req, max)).await {
                        Ok(r) => r,
                        Err(_) => Err(CapabilityError::failed("containerd call timed out")),
                    }
                })
            })
            .map_err(|e| {
                CapabilityError::failed(format!("containerd: starting the client thread: {e}"))
            })?;
        worker
            .join()
            .map_err(|_| CapabilityError::failed("containerd: the client thread panicked"))?
    }
}

async fn unary<Req, Resp>(
    socket: &Path,
    path: &'static str,
    req: Req,
    max_response_bytes: usize,
) -> Result<Resp, CapabilityError>
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
            CapabilityError::failed(format!("containerd socket {}: {cause}", socket.display()))
        })?;
    let mut grpc = tonic::client::Grpc::new(channel).max_decoding_message_size(max_response_bytes);
    grpc.ready().await.map_err(|e| {
        CapabilityError::failed(format!("containerd socket {}: {e}", socket.display()))
    })?;
    let request = tonic::Request::new(req);
    let codec = tonic_prost::ProstCodec::<Req, Resp>::default();
    grpc.unary(request, http::uri::PathAndQuery::from_static(path), codec)
        .await
        .map(tonic::Response::into_inner)
        .map_err(status_message)
}

/// The runtime's refusal as the plugin sees it: `not-found` for a missing object,
/// otherwise a failure with the gRPC code and the runtime's message.
fn status_message(s: tonic::Status) -> CapabilityError {
    let message: String = s.message().chars().take(MAX_STATUS_MESSAGE_CHARS).collect();
    match s.code() {
        tonic::Code::NotFound => CapabilityError::NotFound(message),
        // containerd answers a pull of a reference the registry does not have with
        // `Unknown` and "…failed to resolve reference …: not found".
        tonic::Code::Unknown
            if message.contains("failed to resolve reference")
                && message.ends_with("not found") =>
        {
            CapabilityError::NotFound(message)
        }
        tonic::Code::Unimplemented => CapabilityError::failed(format!(
            "containerd: the runtime does not serve this CRI call (is the CRI plugin enabled?): {message}"
        )),
        code => CapabilityError::failed(format!("containerd: {code:?}: {message}")),
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

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
        assert!(
            matches!(&e, CapabilityError::Denied(m) if m.contains("dry run")),
            "{e}"
        );
        let e = c
            .remove_image("registry.example/app:1", soon())
            .expect_err("remove");
        assert!(
            matches!(&e, CapabilityError::Denied(m) if m.contains("dry run")),
            "{e}"
        );
        let e = c.list_images(None, soon()).expect_err("no socket");
        assert!(
            matches!(&e, CapabilityError::Failed(m) if m.contains("containerd socket")),
            "{e}"
        );
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
            assert!(matches!(e, CapabilityError::Invalid(_)), "{bad:?}: {e}");
        }
        let auth = AuthConfig {
            password: "x".repeat(MAX_AUTH_FIELD_BYTES + 1),
            ..AuthConfig::default()
        };
        let e = c
            .pull_image("app:1", Some(&auth), soon())
            .expect_err("long password");
        assert!(e.message().contains("auth password"), "{e}");
        assert!(!format!("{auth:?}").contains("xxxx"), "Debug hides secrets");
    }
}

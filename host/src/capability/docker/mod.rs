//! The `docker` capability: the `docker` import, the Docker Engine API of the node over
//! its Unix socket, allow-listed, with its policy and limits.
//!
//! * `policy.rs`: [`DockerPolicy`] — which methods, paths, query keys and headers a plugin
//!   may send (image endpoints by default), how big requests and responses may be and how
//!   long a call may take.
//! * `http.rs`: a small blocking HTTP/1.1 client over `std::os::unix::net::UnixStream`
//!   (one connection per call, `Connection: close`, chunked and content-length bodies).
//! * `client.rs`: the client of one call — policy, read-only rule (a dry run, or a
//!   method that does not declare itself mutating) and limits, then the request.
//! * `archive.rs`: `save-archive` and `load-archive`, streamed between the daemon and the
//!   node's image archive directory.
//! * here: the import itself.
//!
//! It must never reach anything but the configured socket, never send a path that the
//! policy did not allow (no `..`, no control characters, no header injection), and never
//! read more than the response cap into memory.

mod archive;
mod client;
mod http;
mod policy;

pub use archive::MAX_ARCHIVE_BYTES;
use client::DockerClient;
pub use policy::{
    DEFAULT_DOCKER_API_VERSION, DEFAULT_DOCKER_MAX_REQUEST_BYTES,
    DEFAULT_DOCKER_MAX_RESPONSE_BYTES, DEFAULT_DOCKER_TIMEOUT, DockerPolicy, DockerRoute,
    REGISTRY_AUTH_HEADER,
};

use std::time::Instant;

use wasmtime::component::{HasSelf, Linker};

use super::{Call, CapabilityError};
use crate::bindings::hostplug::plugin::docker as wit;
use crate::{Error, Result};

/// The docker capability's state for one call: the client when the call was granted the
/// socket, and when the call must end.
#[derive(Debug)]
pub(crate) struct DockerState {
    client: Option<DockerClient>,
    deadline: Instant,
}

impl DockerState {
    /// Prepare phase: a client of the granted socket under the host's policy (reads only
    /// in a dry run and when the grant says so), with the granted image archive
    /// directory; none without a grant.
    pub(crate) fn prepare(call: &Call<'_>) -> Self {
        let read_only = call.dry_run || call.grants.image_reads_only;
        let client = call.grants.docker.as_deref().map(|socket| {
            DockerClient::new(socket, call.config.docker.clone(), read_only)
                .with_archives(call.grants.image_archives.as_deref())
        });
        Self {
            client,
            deadline: call.deadline,
        }
    }

    fn client(&self) -> Result<&DockerClient, CapabilityError> {
        self.client
            .as_ref()
            .ok_or_else(|| CapabilityError::denied("this plugin has no docker capability"))
    }
}

/// The `docker` import: refused without the capability, otherwise the client of this
/// call (policy, dry-run rule, deadline).
impl wit::Host for DockerState {
    fn request(
        &mut self,
        method: String,
        path: String,
        body: Option<Vec<u8>>,
    ) -> Result<wit::Response, wit::CapabilityError> {
        self.client()
            .and_then(|c| c.request(&method, &path, body.as_deref(), self.deadline))
            .map(|r| wit::Response {
                status: r.status,
                body: r.body,
            })
            .map_err(Into::into)
    }

    fn request_with_headers(
        &mut self,
        method: String,
        path: String,
        headers: Vec<(String, String)>,
        body: Option<Vec<u8>>,
    ) -> Result<wit::Response, wit::CapabilityError> {
        self.client()
            .and_then(|c| {
                c.request_with_headers(&method, &path, &headers, body.as_deref(), self.deadline)
            })
            .map(|r| wit::Response {
                status: r.status,
                body: r.body,
            })
            .map_err(Into::into)
    }

    fn save_archive(
        &mut self,
        image: String,
        file: String,
    ) -> Result<wit::Archive, wit::CapabilityError> {
        self.client()
            .and_then(|c| c.save_archive(&image, &file, self.deadline))
            .map(|a| wit::Archive {
                bytes: a.bytes,
                sha256: a.sha256,
                replaced: a.replaced,
            })
            .map_err(Into::into)
    }

    fn load_archive(&mut self, file: String) -> Result<String, wit::CapabilityError> {
        self.client()
            .and_then(|c| c.load_archive(&file, self.deadline))
            .map_err(Into::into)
    }
}

/// Link phase: the `docker` import, on the state `state` projects out of the store's
/// data.
pub(crate) fn add_to_linker<T: 'static>(
    linker: &mut Linker<T>,
    state: fn(&mut T) -> &mut DockerState,
) -> Result<()> {
    wit::add_to_linker::<T, HasSelf<DockerState>>(linker, state)
        .map_err(|e| Error::Engine(format!("linking the docker import: {e:#}")))
}

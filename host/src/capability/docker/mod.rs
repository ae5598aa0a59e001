//! The `docker` capability: the `docker` import, the Docker Engine API of the node over
//! its Unix socket, allow-listed, with its policy and limits.
//!
//! * `policy.rs`: [`DockerPolicy`] — which methods, paths, query keys and headers a plugin
//!   may send (image endpoints by default), how big requests and responses may be and how
//!   long a call may take.
//! * `http.rs`: a small blocking HTTP/1.1 client over `std::os::unix::net::UnixStream`
//!   (one connection per call, `Connection: close`, chunked and content-length bodies).
//! * `client.rs`: the client of one call — policy, dry-run rule and limits, then the
//!   request.
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
pub(crate) use client::DockerClient;
pub use policy::{
    DEFAULT_DOCKER_API_VERSION, DEFAULT_DOCKER_MAX_REQUEST_BYTES,
    DEFAULT_DOCKER_MAX_RESPONSE_BYTES, DEFAULT_DOCKER_TIMEOUT, DockerPolicy, DockerRoute,
    REGISTRY_AUTH_HEADER,
};

use crate::capability::CapabilityError;

fn no_capability() -> CapabilityError {
    CapabilityError::denied("this plugin has no docker capability")
}

/// The `docker` import: refused without the capability, otherwise the client of this
/// call (policy, dry-run rule, deadline).
impl crate::bindings::hostplug::plugin::docker::Host for crate::plugin::StoreState {
    fn request(
        &mut self,
        method: String,
        path: String,
        body: Option<Vec<u8>>,
    ) -> Result<crate::bindings::DockerResponse, String> {
        let client = self.docker.as_ref().ok_or_else(no_capability);
        client
            .and_then(|c| c.request(&method, &path, body.as_deref(), self.deadline))
            .map(|r| crate::bindings::DockerResponse {
                status: r.status,
                body: r.body,
            })
            .map_err(|e| e.legacy())
    }

    fn request_with_headers(
        &mut self,
        method: String,
        path: String,
        headers: Vec<(String, String)>,
        body: Option<Vec<u8>>,
    ) -> Result<crate::bindings::DockerResponse, String> {
        let client = self.docker.as_ref().ok_or_else(no_capability);
        client
            .and_then(|c| {
                c.request_with_headers(&method, &path, &headers, body.as_deref(), self.deadline)
            })
            .map(|r| crate::bindings::DockerResponse {
                status: r.status,
                body: r.body,
            })
            .map_err(|e| e.legacy())
    }

    fn save_archive(
        &mut self,
        image: String,
        file: String,
    ) -> Result<crate::bindings::DockerArchive, String> {
        let client = self.docker.as_ref().ok_or_else(no_capability);
        client
            .and_then(|c| c.save_archive(&image, &file, self.deadline))
            .map(|a| crate::bindings::DockerArchive {
                bytes: a.bytes,
                sha256: a.sha256,
                replaced: a.replaced,
            })
            .map_err(|e| e.legacy())
    }

    fn load_archive(&mut self, file: String) -> Result<String, String> {
        let client = self.docker.as_ref().ok_or_else(no_capability);
        client
            .and_then(|c| c.load_archive(&file, self.deadline))
            .map_err(|e| e.legacy())
    }
}

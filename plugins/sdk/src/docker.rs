//! A thin typed wrapper over the host's `docker` import: the Docker Engine API of the
//! node, over its Unix socket.
//!
//! The import only works for plugins whose HostPlugin grants the `docker` capability;
//! otherwise, and for paths the host does not allow-list, every call fails with
//! [`Error::Denied`](crate::Error::Denied). Paths are relative to the API version, e.g.
//! `/images/json`. HTTP error statuses are not errors here: check them with
//! [`Response::error_for_status`].

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::{Error, Result};

/// An HTTP method the Docker Engine API uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    /// `GET`
    Get,
    /// `POST`
    Post,
    /// `PUT`
    Put,
    /// `DELETE`
    Delete,
    /// `HEAD`
    Head,
}

impl Method {
    /// The method as it goes on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Get => "GET",
            Self::Post => "POST",
            Self::Put => "PUT",
            Self::Delete => "DELETE",
            Self::Head => "HEAD",
        }
    }
}

/// The Docker daemon's answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    /// HTTP status code.
    pub status: u16,
    /// Response body, as the daemon sent it.
    pub body: Vec<u8>,
}

impl Response {
    /// Whether the status is 2xx.
    pub fn is_success(&self) -> bool {
        (200..300).contains(&self.status)
    }

    /// The body parsed as JSON.
    pub fn json<T: DeserializeOwned>(&self) -> Result<T> {
        serde_json::from_slice(&self.body)
            .map_err(|e| Error::failed(format!("docker answered with unexpected JSON: {e}")))
    }

    /// The body as text (lossy).
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// `Ok(self)` for 2xx and 304; otherwise an error whose kind follows the status
    /// (404 → not-found, 400 → invalid-params, 401/403 → denied, else failed) and whose
    /// message is the daemon's own `message` when it sent one.
    pub fn error_for_status(self) -> Result<Self> {
        if self.is_success() || self.status == 304 {
            return Ok(self);
        }
        #[derive(serde::Deserialize)]
        struct DaemonError {
            message: String,
        }
        let message = serde_json::from_slice::<DaemonError>(&self.body)
            .map(|e| e.message)
            .unwrap_or_else(|_| self.text());
        let message = format!("docker: HTTP {}: {}", self.status, message.trim());
        Err(match self.status {
            404 => Error::not_found(message),
            400 => Error::invalid_params(message),
            401 | 403 => Error::denied(message),
            _ => Error::failed(message),
        })
    }
}

/// Sends one request. A refusal by the host (no `docker` capability, a path that is not
/// allowed) is [`Error::Denied`]; a transport failure is [`Error::Failed`].
pub fn request(method: Method, path: &str, body: Option<&[u8]>) -> Result<Response> {
    imp(method.as_str(), path, body)
}

/// `GET path`, expecting 2xx and a JSON body.
pub fn get_json<T: DeserializeOwned>(path: &str) -> Result<T> {
    request(Method::Get, path, None)?.error_for_status()?.json()
}

/// `POST path` with an optional JSON body; returns the response after checking its
/// status.
pub fn post_json(path: &str, body: Option<&impl Serialize>) -> Result<Response> {
    let body = body
        .map(serde_json::to_vec)
        .transpose()
        .map_err(|e| Error::failed(format!("cannot serialise the request body: {e}")))?;
    request(Method::Post, path, body.as_deref())?.error_for_status()
}

/// `DELETE path`; returns the response after checking its status.
pub fn delete(path: &str) -> Result<Response> {
    request(Method::Delete, path, None)?.error_for_status()
}

/// Percent-encodes `value` for use in a path segment or query string, e.g. an image
/// reference such as `registry:5000/app:1.0`.
pub fn encode(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for b in value.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(target_arch = "wasm32")]
fn imp(method: &str, path: &str, body: Option<&[u8]>) -> Result<Response> {
    match crate::bindings::hostplug::plugin::docker::request(method, path, body) {
        Ok(r) => Ok(Response {
            status: r.status,
            body: r.body,
        }),
        Err(message) => Err(import_error(&message)),
    }
}

/// The host starts a refusal (no capability, a path outside its allow-list, a body over
/// its limit) with `denied:`; anything else is a transport failure.
fn import_error(message: &str) -> Error {
    match message.strip_prefix("denied:") {
        Some(rest) => Error::denied(format!("docker: {}", rest.trim_start())),
        None => Error::failed(format!("docker: {message}")),
    }
}

#[cfg(not(target_arch = "wasm32"))]
fn imp(method: &str, path: &str, _body: Option<&[u8]>) -> Result<Response> {
    Err(import_error(&format!(
        "denied: {method} {path}: the docker import exists only inside the hostplug host"
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_refusals_are_denied() {
        let e = import_error("denied: this plugin has no docker capability");
        assert_eq!(
            e,
            Error::denied("docker: this plugin has no docker capability")
        );
        assert_eq!(import_error("docker call timed out").kind(), "failed");
    }

    #[test]
    fn encodes_image_references() {
        assert_eq!(
            encode("registry:5000/app:1.0"),
            "registry%3A5000%2Fapp%3A1.0"
        );
    }

    #[test]
    fn status_maps_to_error_kind() {
        let r = Response {
            status: 404,
            body: br#"{"message":"No such image: x"}"#.to_vec(),
        };
        let e = r.error_for_status().unwrap_err();
        assert_eq!(e.kind(), "not-found");
        assert!(e.message().contains("No such image: x"));
    }
}

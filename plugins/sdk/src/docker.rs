//! A thin typed wrapper over the host's `docker` import: the Docker Engine API of the
//! node, over its Unix socket.
//!
//! The import only works for plugins whose HostPlugin grants the `docker` capability;
//! otherwise, and for paths the host does not allow-list, every call fails with
//! [`Error::Denied`](crate::Error::Denied): the host says `denied` and the SDK maps the
//! typed error by its kind, never by its message. Paths are relative to the API version, e.g.
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

/// Sends one request with extra headers: the host allows only `X-Registry-Auth` (see
/// [`registry_auth_header`]) and `Content-Type` (`application/json` or
/// `application/x-tar`); anything else is [`Error::Denied`].
pub fn request_with_headers(
    method: Method,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<&[u8]>,
) -> Result<Response> {
    imp_headers(method.as_str(), path, headers, body)
}

/// What [`save_archive`] wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Archive {
    /// Size of the tar file in bytes.
    pub bytes: u64,
    /// `sha256:<hex>` of the tar file.
    pub sha256: String,
    /// False when the file already held exactly these bytes (nothing was written).
    pub replaced: bool,
}

/// `docker save` into the node's image archive directory: the host streams image `image`
/// into the tar file `file` (a plain name ending in `.tar`). Refused in a dry run, and
/// without the docker capability or the directory ([`Error::Denied`]); a missing image is
/// [`Error::NotFound`].
pub fn save_archive(image: &str, file: &str) -> Result<Archive> {
    imp_save(image, file)
}

/// `docker load` from the node's image archive directory: the host streams the tar
/// file `file` to the daemon; returns the daemon's answer (JSON lines).
pub fn load_archive(file: &str) -> Result<String> {
    imp_load(file)
}

#[cfg(target_arch = "wasm32")]
fn imp_save(image: &str, file: &str) -> Result<Archive> {
    crate::bindings::hostplug::plugin::docker::save_archive(image, file)
        .map(|a| Archive {
            bytes: a.bytes,
            sha256: a.sha256,
            replaced: a.replaced,
        })
        .map_err(import_error)
}

#[cfg(target_arch = "wasm32")]
fn imp_load(file: &str) -> Result<String> {
    crate::bindings::hostplug::plugin::docker::load_archive(file).map_err(import_error)
}

#[cfg(not(target_arch = "wasm32"))]
fn imp_save(_image: &str, _file: &str) -> Result<Archive> {
    Err(outside("save-archive"))
}

#[cfg(not(target_arch = "wasm32"))]
fn imp_load(_file: &str) -> Result<String> {
    Err(outside("load-archive"))
}

/// The `X-Registry-Auth` header value for `username`/`password` at `server` (the
/// registry's `host[:port]`): base64url of the JSON the Docker API expects. The value
/// carries the password: never log it.
pub fn registry_auth_header(username: &str, password: &str, server: &str) -> String {
    let json = serde_json::json!({
        "username": username,
        "password": password,
        "serveraddress": server,
    })
    .to_string();
    base64url(json.as_bytes())
}

/// Base64 with the URL-safe alphabet and padding (Go's `base64.URLEncoding`, which the
/// Docker daemon decodes).
fn base64url(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(char::from(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize]));
            } else {
                out.push('=');
            }
        }
    }
    out
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
        Err(err) => Err(import_error(err)),
    }
}

#[cfg(target_arch = "wasm32")]
fn imp_headers(
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<&[u8]>,
) -> Result<Response> {
    let headers: Vec<(String, String)> = headers
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    match crate::bindings::hostplug::plugin::docker::request_with_headers(
        method, path, &headers, body,
    ) {
        Ok(r) => Ok(Response {
            status: r.status,
            body: r.body,
        }),
        Err(err) => Err(import_error(err)),
    }
}

#[cfg(not(target_arch = "wasm32"))]
fn imp_headers(
    method: &str,
    path: &str,
    _headers: &[(&str, &str)],
    body: Option<&[u8]>,
) -> Result<Response> {
    imp(method, path, body)
}

/// The host's typed refusal (no capability, a path outside its allow-list, a body over
/// its limit: `denied`), a missing image or archive (`not-found`), a bad archive name
/// (`invalid`) or a transport failure (`failed`), by its kind
/// ([`Error::from_capability`]), the message led by `docker:`.
fn import_error(err: crate::CapabilityError) -> Error {
    Error::from_capability("docker", err)
}

/// What every call gets outside the host: `denied`.
#[cfg(not(target_arch = "wasm32"))]
fn outside(what: &str) -> Error {
    import_error(crate::CapabilityError::Denied(format!(
        "{what}: the docker import exists only inside the hostplug host"
    )))
}

#[cfg(not(target_arch = "wasm32"))]
fn imp(method: &str, path: &str, _body: Option<&[u8]>) -> Result<Response> {
    Err(outside(&format!("{method} {path}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_refusals_are_denied() {
        let e = import_error(crate::CapabilityError::Denied(
            "this plugin has no docker capability".into(),
        ));
        assert_eq!(
            e,
            Error::denied("docker: this plugin has no docker capability")
        );
        let e = import_error(crate::CapabilityError::Failed(
            "docker call timed out".into(),
        ));
        assert_eq!(e, Error::failed("docker: docker call timed out"));
        let e = request(Method::Get, "/_ping", None).expect_err("outside the host");
        assert_eq!(e.kind(), "denied");
    }

    #[test]
    fn registry_auth_header_is_base64url_json() {
        assert_eq!(base64url(b""), "");
        assert_eq!(base64url(b"f"), "Zg==");
        assert_eq!(base64url(b"fo"), "Zm8=");
        assert_eq!(base64url(b"foo"), "Zm9v");
        assert_eq!(base64url(&[0xfb, 0xff, 0xfe]), "-__-");
        let h = registry_auth_header("u", "p", "localhost:5000");
        assert!(
            h.bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'=')),
            "{h}"
        );
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

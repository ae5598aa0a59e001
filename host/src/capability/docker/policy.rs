//! The docker capability's policy: which methods, paths, query keys and headers a plugin
//! may send ([`DockerPolicy`], [`DockerRoute`], [`check_headers`]), and its size and
//! time limits.
//!
//! Pure decisions on strings: this module must never open the socket. A refusal is a
//! [`CapabilityError::Denied`] whose message never quotes a header value.

use std::time::Duration;

use crate::capability::CapabilityError;

/// Default request body cap of the docker import: 1 MiB (image endpoints take JSON
/// parameters or nothing).
pub const DEFAULT_DOCKER_MAX_REQUEST_BYTES: usize = 1 << 20;

/// Default response body cap of the docker import: 16 MiB (an image list of a busy node
/// is a few MiB; a pull's progress stream is long but the plugin only needs its end).
pub const DEFAULT_DOCKER_MAX_RESPONSE_BYTES: usize = 16 << 20;

/// Default time limit of one docker call: 120 s (pulling a large image). A call never
/// runs past the invocation's deadline either.
pub const DEFAULT_DOCKER_TIMEOUT: Duration = Duration::from_secs(120);

/// Docker Engine API version prefixed to every path: 1.41 is what Docker 20.10+ and
/// Podman 4 both serve.
pub const DEFAULT_DOCKER_API_VERSION: &str = "v1.41";

/// Cap on a path (with its query) a plugin may send: 8 KiB, the usual server limit.
const MAX_PATH_BYTES: usize = 8 << 10;

/// The header a push or a private pull carries its credentials in.
pub const REGISTRY_AUTH_HEADER: &str = "X-Registry-Auth";

/// Content types a plugin may send: JSON (the default) and a tar archive
/// (`POST /images/load`).
const ALLOWED_CONTENT_TYPES: [&str; 2] = ["application/json", "application/x-tar"];

/// Cap on an `X-Registry-Auth` value: 16 KiB, room for a base64url JSON of a long token.
const MAX_REGISTRY_AUTH_BYTES: usize = 16 << 10;

/// One allowed method, path pattern and set of query keys. In a pattern, `{name}` stands
/// for one or more path segments (image names contain `/`, e.g. `library/nginx:1.27`);
/// every other segment matches literally. A request matches when its method and path
/// match and every key of its query string is one of `query` (values are not checked:
/// they are the route's parameters, e.g. the image to pull). Keys are compared as sent,
/// so a percent-encoded or `+`-spelt key never matches an allowed one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DockerRoute {
    /// HTTP method, upper case.
    pub method: String,
    /// Path pattern relative to the API version, e.g. `/images/{name}/json`.
    pub path: String,
    /// Query keys the route accepts; a request with any other key is refused. Empty:
    /// no query string at all.
    pub query: Vec<String>,
}

impl DockerRoute {
    /// A route for `method` (any case) and `path` that accepts no query keys.
    pub fn new(method: &str, path: &str) -> Self {
        Self {
            method: method.to_ascii_uppercase(),
            path: path.to_owned(),
            query: Vec::new(),
        }
    }

    /// This route, also accepting the query keys `keys`.
    #[must_use]
    pub fn with_query<'k>(mut self, keys: impl IntoIterator<Item = &'k str>) -> Self {
        self.query.extend(keys.into_iter().map(str::to_owned));
        self
    }

    fn matches_path(&self, method: &str, segments: &[&str]) -> bool {
        let pattern: Vec<&str> = self.path.split('/').skip(1).collect();
        self.method == method && segments_match(&pattern, segments)
    }

    /// The first query key this route does not accept, if any.
    fn refused_key<'q>(&self, query: &'q str) -> Option<&'q str> {
        query
            .split('&')
            .map(|pair| pair.split_once('=').map_or(pair, |(k, _)| k))
            .find(|key| !self.query.iter().any(|allowed| allowed == key))
    }
}

/// Whether a request changes nothing on the node, so that a read-only call (a dry run,
/// or a method that does not declare itself mutating) may send it: every `GET`, and
/// `POST /auth`, which only checks credentials against a registry — the daemon keeps no
/// login (a client would store it; here the plugin is the client and has no disk).
/// Everything else (pull, tag, remove, prune, push) changes the daemon's store or
/// sends images away.
pub(crate) fn changes_nothing(method: &str, path: &str) -> bool {
    let path = path.split_once('?').map_or(path, |(p, _)| p);
    method == "GET" || (method == "POST" && path == "/auth")
}

/// What the docker import may do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DockerPolicy {
    /// API version path prefix without slashes, e.g. `v1.41`.
    pub api_version: String,
    /// Allowed method + path patterns; everything else is answered `denied`.
    pub allow: Vec<DockerRoute>,
    /// Cap on a request body, in bytes.
    pub max_request_bytes: usize,
    /// Cap on a response body, in bytes.
    pub max_response_bytes: usize,
    /// Time limit of one call (also bounded by the invocation's deadline).
    pub timeout: Duration,
}

impl DockerPolicy {
    /// The image endpoints: list, inspect, pull, tag, remove, prune, push, plus ping,
    /// version and `/auth` (a login check). No containers, exec, volumes, networks,
    /// build, save, load or system calls.
    ///
    /// Query keys are allow-listed per route too: `POST /images/create` takes only
    /// `fromImage`, `tag` and `platform` (a pull), never `fromSrc`, `repo`, `message` or
    /// `changes`, which make the daemon import a rootfs from an arbitrary URL under any
    /// image name and would poison the node's image cache.
    pub fn images() -> Self {
        let allow = [
            ("GET", "/_ping", &[][..]),
            ("GET", "/version", &[]),
            (
                "GET",
                "/images/json",
                &["all", "filters", "digests", "shared-size"],
            ),
            ("GET", "/images/{name}/json", &[]),
            ("POST", "/images/create", &["fromImage", "tag", "platform"]),
            ("POST", "/images/{name}/tag", &["repo", "tag"]),
            ("DELETE", "/images/{name}", &["force", "noprune"]),
            ("POST", "/images/prune", &["filters"]),
            // Push to a registry (credentials in X-Registry-Auth) and check credentials
            // against a registry (`/auth`, credentials in the body).
            ("POST", "/images/{name}/push", &["tag"]),
            ("POST", "/auth", &[]),
        ]
        .into_iter()
        .map(|(m, p, q)| DockerRoute::new(m, p).with_query(q.iter().copied()))
        .collect();
        Self {
            api_version: DEFAULT_DOCKER_API_VERSION.to_owned(),
            allow,
            max_request_bytes: DEFAULT_DOCKER_MAX_REQUEST_BYTES,
            max_response_bytes: DEFAULT_DOCKER_MAX_RESPONSE_BYTES,
            timeout: DEFAULT_DOCKER_TIMEOUT,
        }
    }

    /// Checks `method` and `path` (with optional query) against the policy. The error is
    /// what the plugin receives: [`CapabilityError::Denied`], naming the route.
    pub fn check(&self, method: &str, path: &str) -> Result<(), CapabilityError> {
        validate_method(method)?;
        validate_path(path)?;
        let (path_only, query) = match path.split_once('?') {
            Some((p, q)) => (p, (!q.is_empty()).then_some(q)),
            None => (path, None),
        };
        let segments: Vec<&str> = path_only.split('/').skip(1).collect();
        let routes: Vec<&DockerRoute> = self
            .allow
            .iter()
            .filter(|r| r.matches_path(method, &segments))
            .collect();
        if routes.is_empty() {
            return Err(CapabilityError::denied(format!(
                "{method} {path_only} is not allowed by the host's docker policy"
            )));
        }
        let Some(query) = query else {
            return Ok(());
        };
        let mut refused = None;
        for route in routes {
            match route.refused_key(query) {
                None => return Ok(()),
                Some(key) => refused = Some(key),
            }
        }
        Err(CapabilityError::denied(format!(
            "query parameter {:?} of {method} {path_only} is not allowed by the host's docker policy",
            refused
                .unwrap_or_default()
                .chars()
                .take(40)
                .collect::<String>()
        )))
    }

    /// Checks the policy itself: an API version without slashes, upper-case methods and
    /// patterns that start with `/`. The error names the field.
    pub fn validate(&self) -> Result<(), String> {
        if self.api_version.is_empty()
            || !self
                .api_version
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'.')
        {
            return Err(format!(
                "docker policy api_version {:?}: expected e.g. v1.41",
                self.api_version
            ));
        }
        for r in &self.allow {
            validate_method(&r.method).map_err(|e| {
                format!(
                    "docker policy allow {} {}: {}",
                    r.method,
                    r.path,
                    e.message()
                )
            })?;
            if !r.path.starts_with('/') || r.path.contains('?') {
                return Err(format!(
                    "docker policy allow {} {}: a path pattern starts with '/' and has no query",
                    r.method, r.path
                ));
            }
        }
        Ok(())
    }
}

impl Default for DockerPolicy {
    fn default() -> Self {
        Self::images()
    }
}

fn validate_method(method: &str) -> Result<(), CapabilityError> {
    if method.is_empty() || method.len() > 16 || !method.bytes().all(|b| b.is_ascii_uppercase()) {
        return Err(CapabilityError::denied(format!(
            "invalid HTTP method {:?}",
            method.chars().take(20).collect::<String>()
        )));
    }
    Ok(())
}

/// Refuses anything that could escape the matched route or the request line: non-ASCII,
/// control characters, spaces, backslashes, fragments, empty or dot segments and
/// percent-encoded dots.
pub(super) fn validate_path(path: &str) -> Result<(), CapabilityError> {
    let deny = |why: &str| Err(CapabilityError::denied(format!("path {why}")));
    if path.len() > MAX_PATH_BYTES {
        return deny("too long");
    }
    if !path.starts_with('/') {
        return deny("must start with '/'");
    }
    if !path
        .bytes()
        .all(|b| b.is_ascii_graphic() && b != b'\\' && b != b'#')
    {
        return deny("contains a character that is not allowed");
    }
    let lower = path.to_ascii_lowercase();
    if lower.contains("%2e") || lower.contains("%00") || lower.contains("%5c") {
        return deny("contains an encoded dot, NUL or backslash");
    }
    let path_only = path.split('?').next().unwrap_or(path);
    if path_only
        .split('/')
        .skip(1)
        .any(|s| s.is_empty() || s == "." || s == "..")
    {
        return deny("contains an empty, '.' or '..' segment");
    }
    Ok(())
}

/// Matches path segments against a pattern where `{…}` matches one or more segments.
fn segments_match(pattern: &[&str], path: &[&str]) -> bool {
    match pattern.split_first() {
        None => path.is_empty(),
        Some((p, rest)) if p.starts_with('{') && p.ends_with('}') => {
            (1..=path.len()).any(|n| segments_match(rest, &path[n..]))
        }
        Some((p, rest)) => path
            .split_first()
            .is_some_and(|(s, path_rest)| s == p && segments_match(rest, path_rest)),
    }
}

/// Checks a plugin's extra headers: at most one `X-Registry-Auth` (base64url characters
/// only, so nothing can end the header line) and at most one `Content-Type` from
/// [`ALLOWED_CONTENT_TYPES`]; names compare case-insensitively. Returns the content
/// type asked for. A refusal is [`CapabilityError::Denied`] and never quotes a value.
pub(crate) fn check_headers(
    headers: &[(String, String)],
) -> Result<Option<&'static str>, CapabilityError> {
    let mut content_type = None;
    let mut auth = false;
    for (name, value) in headers {
        if name.eq_ignore_ascii_case(REGISTRY_AUTH_HEADER) {
            if std::mem::replace(&mut auth, true) {
                return Err(CapabilityError::denied(format!(
                    "header {REGISTRY_AUTH_HEADER} given twice"
                )));
            }
            if value.is_empty()
                || value.len() > MAX_REGISTRY_AUTH_BYTES
                || !value
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'='))
            {
                return Err(CapabilityError::denied(format!(
                    "header {REGISTRY_AUTH_HEADER} must be 1 to {MAX_REGISTRY_AUTH_BYTES} base64url characters"
                )));
            }
        } else if name.eq_ignore_ascii_case("content-type") {
            let allowed = ALLOWED_CONTENT_TYPES
                .into_iter()
                .find(|t| value.eq_ignore_ascii_case(t))
                .ok_or_else(|| {
                    CapabilityError::denied(format!(
                        "Content-Type must be one of {}",
                        ALLOWED_CONTENT_TYPES.join(", ")
                    ))
                })?;
            if content_type.replace(allowed).is_some() {
                return Err(CapabilityError::denied("header Content-Type given twice"));
            }
        } else {
            return Err(CapabilityError::denied(format!(
                "header {:?} is not allowed (only {REGISTRY_AUTH_HEADER} and Content-Type)",
                name.chars().take(40).collect::<String>()
            )));
        }
    }
    Ok(content_type)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn image_routes_are_allowed() {
        let p = DockerPolicy::images();
        for (m, path) in [
            ("GET", "/_ping"),
            ("GET", "/images/json?all=true"),
            ("GET", "/images/nginx/json"),
            ("GET", "/images/library/nginx:1.27/json"),
            ("GET", "/images/localhost:5000/team/app:v1/json"),
            ("POST", "/images/create?fromImage=nginx&tag=latest"),
            ("POST", "/images/nginx:1/tag?repo=mirror/nginx&tag=1"),
            ("DELETE", "/images/sha256:abcd?force=true"),
            ("POST", "/images/prune"),
            ("POST", "/images/prune?filters=%7B%7D"),
            (
                "POST",
                "/images/create?fromImage=nginx&tag=1&platform=linux%2Famd64",
            ),
            (
                "GET",
                "/images/json?all=false&filters=%7B%22dangling%22%3A%5B%22true%22%5D%7D",
            ),
            ("DELETE", "/images/nginx?force=false&noprune=false"),
            ("GET", "/version?"),
            ("POST", "/images/localhost:5000/team/app/push?tag=1.0"),
            ("POST", "/auth"),
        ] {
            assert_eq!(p.check(m, path), Ok(()), "{m} {path}");
        }
    }

    #[test]
    fn everything_else_is_denied() {
        let p = DockerPolicy::images();
        for (m, path) in [
            ("GET", "/containers/json"),
            ("POST", "/containers/create"),
            ("POST", "/images/load"),
            ("POST", "/build"),
            ("GET", "/images/../containers/json"),
            ("GET", "/images/x/../../containers/json"),
            ("GET", "/images/%2e%2e/json"),
            ("GET", "/images//json"),
            ("GET", "/images/json HTTP/1.1\r\nX: y"),
            ("GET", "images/json"),
            ("get", "/images/json"),
            ("DELETE", "/images"),
            ("GET", "/images/{name}/json#x"),
            // Query keys outside the route's list: an import from a URL under any name,
            // and keys spelt so that only the daemon would decode them.
            (
                "POST",
                "/images/create?fromSrc=http://evil.example/rootfs.tar&repo=registry.k8s.io/pause&tag=3.10",
            ),
            ("POST", "/images/create?fromImage=nginx&fromSrc=-"),
            ("POST", "/images/create?fromImage=nginx&tag=1&message=x"),
            ("POST", "/images/create?fromImage=nginx&changes=CMD%20sh"),
            ("POST", "/images/create?from%53rc=http://evil.example/x"),
            ("POST", "/images/create?fromImage=nginx&&fromSrc=x"),
            ("GET", "/_ping?x=1"),
            ("GET", "/images/nginx/json?x=1"),
            ("DELETE", "/images/nginx?force=true&filters=x"),
            ("POST", "/images/nginx/push?tag=1&all=true"),
            ("POST", "/auth?x=1"),
            ("GET", "/images/nginx/get"),
        ] {
            let r = p.check(m, path);
            assert!(
                matches!(r, Err(CapabilityError::Denied(_))),
                "{m} {path}: {r:?}"
            );
        }
    }

    #[test]
    fn only_registry_auth_and_content_type_headers_pass() {
        let h = |pairs: &[(&str, &str)]| -> Vec<(String, String)> {
            pairs
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect()
        };
        assert_eq!(check_headers(&[]), Ok(None));
        assert_eq!(
            check_headers(&h(&[
                ("x-registry-auth", "eyJ1c2VybmFtZSI6InUifQ=="),
                ("Content-Type", "application/x-tar")
            ])),
            Ok(Some("application/x-tar"))
        );
        for bad in [
            h(&[("Authorization", "Bearer x")]),
            h(&[("X-Registry-Auth", "a\r\nX-Injected: 1")]),
            h(&[("X-Registry-Auth", "a b")]),
            h(&[("X-Registry-Auth", "")]),
            h(&[("X-Registry-Auth", "a"), ("x-registry-auth", "b")]),
            h(&[("Content-Type", "text/plain")]),
            h(&[("Host", "evil")]),
        ] {
            let e = check_headers(&bad).expect_err("refused");
            assert!(matches!(e, CapabilityError::Denied(_)), "{e}");
            let m = e.message();
            assert!(!m.contains("X-Injected") && !m.contains("Bearer"), "{e}");
        }
    }

    #[test]
    fn policy_validation_names_the_field() {
        let bad = DockerPolicy {
            api_version: "v1/41".into(),
            ..DockerPolicy::images()
        };
        assert!(bad.validate().expect_err("slash").contains("api_version"));
        let bad = DockerPolicy {
            allow: vec![DockerRoute::new("GET", "images/json")],
            ..DockerPolicy::images()
        };
        assert!(bad.validate().expect_err("no slash").contains("allow"));
        assert_eq!(DockerPolicy::images().validate(), Ok(()));
    }
}

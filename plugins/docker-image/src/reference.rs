//! Image references as administrators write them: `nginx`, `nginx:1.27`,
//! `registry.example:5000/team/app:v1`, `app@sha256:…`, or an image ID.
//!
//! The plugin only checks what it needs to build safe API paths and queries and to
//! split a reference into repository and tag (or digest) for a pull; resolving short
//! names and defaults is the daemon's business. Parsing must never accept a value that
//! could change the meaning of a request path (whitespace, `..`, `?`, `#`, `%`).

use std::fmt;

/// Longest reference accepted, in bytes. Docker caps a repository name at 255 characters
/// and a tag at 128; 512 leaves room for a registry host and a digest.
pub const MAX_REFERENCE_BYTES: usize = 512;

/// The registry of a reference that names none (Docker Hub).
pub const DEFAULT_REGISTRY: &str = "docker.io";

/// Longest tag, as the distribution spec allows.
const MAX_TAG_BYTES: usize = 128;

/// A parsed image reference: `repository[:tag][@digest]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reference {
    /// Registry host (optional) and path, e.g. `127.0.0.1:5000/team/app`.
    pub repository: String,
    /// The tag, if the reference names one.
    pub tag: Option<String>,
    /// The digest (`sha256:…`), if the reference names one.
    pub digest: Option<String>,
}

impl Reference {
    /// Parses `value`; the error says what is wrong, for an `invalid-params` message.
    pub fn parse(value: &str) -> Result<Self, String> {
        check_text(value)?;
        let (name, digest) = match value.split_once('@') {
            Some((name, digest)) => {
                check_digest(digest)?;
                (name, Some(digest.to_owned()))
            }
            None => (value, None),
        };
        let last_slash = name.rfind('/').map_or(0, |i| i + 1);
        let (repository, tag) = match name[last_slash..].rfind(':') {
            Some(i) => {
                let at = last_slash + i;
                (&name[..at], Some(name[at + 1..].to_owned()))
            }
            None => (name, None),
        };
        check_repository(repository)?;
        if let Some(tag) = &tag {
            check_tag(tag)?;
        }
        Ok(Self {
            repository: repository.to_owned(),
            tag,
            digest,
        })
    }

    /// The reference with `latest` as its tag when it names neither a tag nor a digest,
    /// which is what `docker pull` does.
    #[must_use]
    pub fn or_latest(mut self) -> Self {
        if self.tag.is_none() && self.digest.is_none() {
            self.tag = Some("latest".to_owned());
        }
        self
    }

    /// The registry the reference names (`host[:port]`, the first path component when
    /// it looks like a host: it has a `.` or `:` or is `localhost`), or `docker.io` for a
    /// short name, as `docker pull` resolves it. Credentials are looked up by this.
    pub fn registry(&self) -> &str {
        match self.repository.split_once('/') {
            Some((first, _)) if first.contains(['.', ':']) || first == "localhost" => first,
            _ => DEFAULT_REGISTRY,
        }
    }

    /// What the pull's `tag` query parameter carries: the digest when there is one
    /// (the API takes a digest there), else the tag.
    pub fn tag_or_digest(&self) -> Option<&str> {
        self.digest.as_deref().or(self.tag.as_deref())
    }
}

impl fmt::Display for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.repository)?;
        if let Some(tag) = &self.tag {
            write!(f, ":{tag}")?;
        }
        if let Some(digest) = &self.digest {
            write!(f, "@{digest}")?;
        }
        Ok(())
    }
}

/// Checks a value that names a local image: a reference or an image ID (`sha256:…` or
/// a hex prefix of one). Returns it unchanged, ready for [`hostplug_sdk::docker::encode`].
pub fn check_image(value: &str) -> Result<&str, String> {
    if let Some(hex) = value.strip_prefix("sha256:") {
        check_hex(hex, value)?;
        return Ok(value);
    }
    Reference::parse(value).map(|_| value)
}

/// Checks a tag on its own (`tag` parameters).
pub fn check_tag(tag: &str) -> Result<(), String> {
    let ok = !tag.is_empty()
        && tag.len() <= MAX_TAG_BYTES
        && tag
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
        && !tag.starts_with(['.', '-']);
    if ok {
        Ok(())
    } else {
        Err(format!(
            "`{tag}` is not a valid tag: up to {MAX_TAG_BYTES} letters, digits, '_', '.' and \
             '-', not starting with '.' or '-'"
        ))
    }
}

/// Checks a repository on its own (`repository` parameters): registry host and path,
/// without tag or digest.
pub fn check_repository(repository: &str) -> Result<(), String> {
    let bad = |why: &str| Err(format!("`{repository}` is not a valid repository: {why}"));
    if repository.is_empty() {
        return bad("it is empty");
    }
    let mut components = repository.split('/');
    let first = components.next().unwrap_or_default();
    let has_more = repository.contains('/');
    // The first component may be a registry host with a port ("127.0.0.1:5000").
    let host_like = has_more && (first.contains(['.', ':']) || first == "localhost");
    if host_like {
        let (host, port) = first.split_once(':').unwrap_or((first, ""));
        let host_ok = !host.is_empty()
            && host
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-'))
            && !host.split('.').any(str::is_empty);
        let port_ok = first.split_once(':').is_none()
            || (!port.is_empty() && port.len() <= 5 && port.bytes().all(|b| b.is_ascii_digit()));
        if !host_ok || !port_ok {
            return bad("its registry host is not host[:port]");
        }
    } else if !path_component_ok(first) {
        return bad("path components are lower-case letters and digits joined by '.', '_' or '-'");
    }
    for c in components {
        if !path_component_ok(c) {
            return bad(
                "path components are lower-case letters and digits joined by '.', '_' or '-'",
            );
        }
    }
    Ok(())
}

/// `[a-z0-9]+` joined by single `.`, `_`, `__` or `-` runs, as the distribution spec says
/// (slightly more lenient on separators, never allowing `.` or `..` alone).
fn path_component_ok(c: &str) -> bool {
    !c.is_empty()
        && c.bytes().all(|b| {
            b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'.' | b'_' | b'-')
        })
        && c.bytes().next().is_some_and(|b| b.is_ascii_alphanumeric())
        && c.bytes().last().is_some_and(|b| b.is_ascii_alphanumeric())
}

fn check_text(value: &str) -> Result<(), String> {
    if value.is_empty() {
        return Err("the image reference is empty".to_owned());
    }
    if value.len() > MAX_REFERENCE_BYTES {
        return Err(format!(
            "the image reference is longer than {MAX_REFERENCE_BYTES} bytes"
        ));
    }
    if !value
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-' | b'/' | b':' | b'@'))
    {
        return Err(format!(
            "`{value}` is not an image reference: only letters, digits and . _ - / : @ are allowed"
        ));
    }
    Ok(())
}

fn check_digest(digest: &str) -> Result<(), String> {
    match digest.split_once(':') {
        Some(("sha256", hex)) if hex.len() == 64 => check_hex(hex, digest),
        _ => Err(format!(
            "`{digest}` is not a digest: expected sha256: and 64 hex digits"
        )),
    }
}

fn check_hex(hex: &str, whole: &str) -> Result<(), String> {
    if !hex.is_empty() && hex.len() <= 64 && hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        Ok(())
    } else {
        Err(format!(
            "`{whole}` is not an image ID: expected sha256: and up to 64 hex digits"
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Reference {
        Reference::parse(s).unwrap_or_else(|e| panic!("{s}: {e}"))
    }

    #[test]
    fn splits_repository_tag_and_digest() {
        let r = parse("nginx");
        assert_eq!(
            (r.repository.as_str(), r.tag, r.digest),
            ("nginx", None, None)
        );
        let r = parse("127.0.0.1:5000/team/app:v1.2");
        assert_eq!(r.repository, "127.0.0.1:5000/team/app");
        assert_eq!(r.tag.as_deref(), Some("v1.2"));
        let d = format!("sha256:{}", "a".repeat(64));
        let r = parse(&format!("localhost:5000/app@{d}"));
        assert_eq!(r.repository, "localhost:5000/app");
        assert_eq!(r.tag, None);
        assert_eq!(r.tag_or_digest(), Some(d.as_str()));
        assert_eq!(
            parse("localhost/tiny").or_latest().to_string(),
            "localhost/tiny:latest"
        );
        assert_eq!(parse("a/b:c").or_latest().to_string(), "a/b:c");
    }

    #[test]
    fn refuses_what_could_bend_a_path() {
        for bad in [
            "",
            "../containers/json",
            "a/../b",
            "nginx?x=1",
            "nginx#x",
            "nginx latest",
            "a%2e%2e",
            "Upper/case",
            "a//b",
            "a:",
            "a:-x",
            "a@sha256:12",
            "host:port/x",
        ] {
            assert!(Reference::parse(bad).is_err(), "{bad:?} should be refused");
        }
    }

    #[test]
    fn image_ids_and_references_are_images() {
        assert!(check_image("sha256:abc123").is_ok());
        assert!(check_image("sha256:xyz").is_err());
        assert!(check_image("localhost/tiny:1").is_ok());
        assert!(check_image("29b2064bd81a").is_ok());
        assert!(check_tag("v1.0_rc-1").is_ok());
        assert!(check_tag(&"x".repeat(129)).is_err());
        assert!(check_repository("localhost/tiny").is_ok());
        assert!(check_repository("registry.example.com:443/a/b").is_ok());
        assert!(check_repository("tiny:1").is_err());
    }

    #[test]
    fn registry_of_a_reference() {
        for (r, want) in [
            ("nginx", "docker.io"),
            ("library/nginx:1", "docker.io"),
            ("localhost:5000/app", "localhost:5000"),
            ("localhost/app", "localhost"),
            ("registry.example/team/app:v1", "registry.example"),
        ] {
            let parsed = Reference::parse(r).expect(r);
            assert_eq!(parsed.registry(), want, "{r}");
        }
    }
}

//! Image references: `registry[:port]/repository[:tag][@sha256:<hex>]`.
//!
//! The registry is always named: there is no default registry and no search list, so a
//! HostPlugin can only ever pull from the host its author wrote down.

use std::fmt;
use std::str::FromStr;

use crate::{Error, is_sha256_digest};

/// Longest tag the distribution spec allows.
const MAX_TAG_LEN: usize = 128;
/// Longest reference accepted: 512 bytes, well above any real one, so a status message
/// quoting it stays short.
const MAX_REFERENCE_LEN: usize = 512;

/// A parsed image reference.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reference {
    /// `host[:port]`.
    pub registry: String,
    /// Repository path inside the registry.
    pub repository: String,
    /// Tag, if any.
    pub tag: Option<String>,
    /// `sha256:<hex>` manifest digest, if pinned.
    pub digest: Option<String>,
}

impl Reference {
    /// What to ask the registry for: the digest when pinned, else the tag.
    pub fn manifest_ref(&self) -> &str {
        self.digest
            .as_deref()
            .or(self.tag.as_deref())
            .unwrap_or("latest")
    }

    /// The same repository pinned to `digest` (the tag kept for readers).
    pub fn with_digest(&self, digest: &str) -> Self {
        Self {
            digest: Some(digest.to_owned()),
            ..self.clone()
        }
    }

    /// `registry/repository`, the form cosign signs as the docker reference.
    pub fn repository_path(&self) -> String {
        format!("{}/{}", self.registry, self.repository)
    }
}

impl fmt::Display for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.registry, self.repository)?;
        if let Some(t) = &self.tag {
            write!(f, ":{t}")?;
        }
        if let Some(d) = &self.digest {
            write!(f, "@{d}")?;
        }
        Ok(())
    }
}

impl FromStr for Reference {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self, Error> {
        let bad = |problem: &str| Error::InvalidReference {
            reference: s.chars().take(MAX_REFERENCE_LEN).collect(),
            problem: problem.to_owned(),
        };
        if s.len() > MAX_REFERENCE_LEN {
            return Err(bad("longer than 512 bytes"));
        }
        let (rest, digest) = match s.split_once('@') {
            Some((r, d)) => {
                if !is_sha256_digest(d) {
                    return Err(bad(
                        "the digest after @ must be sha256: followed by 64 lowercase hex digits",
                    ));
                }
                (r, Some(d.to_owned()))
            }
            None => (s, None),
        };
        let (registry, path) = rest
            .split_once('/')
            .ok_or_else(|| bad("name the registry: registry[:port]/repository[:tag]"))?;
        if !(registry.contains('.') || registry.contains(':') || registry == "localhost") {
            return Err(bad(
                "the first part must be a registry host (with a dot or a port, or localhost); \
                 there is no default registry",
            ));
        }
        if !registry
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-.:[]".contains(&b))
        {
            return Err(bad(
                "the registry host has characters a host name cannot have",
            ));
        }
        // A tag follows the last ':' of the path (the registry's port is before the '/').
        let (repository, tag) = match path.rsplit_once(':') {
            Some((r, t)) => (r, Some(t.to_owned())),
            None => (path, None),
        };
        if repository.is_empty()
            || repository.starts_with('/')
            || repository.ends_with('/')
            || repository.contains("//")
            || !repository
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-/".contains(&b))
        {
            return Err(bad(
                "the repository must be lowercase letters, digits, '.', '_', '-' and '/'",
            ));
        }
        if let Some(t) = &tag {
            let ok = !t.is_empty()
                && t.len() <= MAX_TAG_LEN
                && !t.starts_with(['.', '-'])
                && t.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b));
            if !ok {
                return Err(bad(
                    "the tag must be 1-128 letters, digits, '.', '_' or '-', not starting with '.' or '-'",
                ));
            }
        }
        Ok(Self {
            registry: registry.to_owned(),
            repository: repository.to_owned(),
            tag,
            digest,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const D: &str = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    #[test]
    fn parses_tag_digest_and_port() {
        let r: Reference = format!("127.0.0.1:5000/team/etc-file:1.0@{D}")
            .parse()
            .expect("parses");
        assert_eq!(r.registry, "127.0.0.1:5000");
        assert_eq!(r.repository, "team/etc-file");
        assert_eq!(r.tag.as_deref(), Some("1.0"));
        assert_eq!(r.digest.as_deref(), Some(D));
        assert_eq!(r.manifest_ref(), D);
        assert_eq!(
            r.to_string(),
            format!("127.0.0.1:5000/team/etc-file:1.0@{D}")
        );
        let r: Reference = "registry.example/p".parse().expect("parses");
        assert_eq!((r.tag, r.digest), (None, None));
    }

    #[test]
    fn refuses_what_it_cannot_pin_to_a_registry() {
        for bad in [
            "etc-file:1.0",
            "library/etc-file",
            "r.example/Upper",
            "r.example/p:",
            "r.example/p:-x",
            "r.example/p@sha256:abc",
            "r.example/p@md5:0123",
            "r.example/",
            "r ex.com/p",
        ] {
            let e = bad.parse::<Reference>().expect_err(bad).to_string();
            assert!(e.contains("is not an image reference"), "{bad}: {e}");
        }
        let e = "etc-file:1".parse::<Reference>().expect_err("no registry");
        assert!(e.to_string().contains("name the registry"), "{e}");
    }
}

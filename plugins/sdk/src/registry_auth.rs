//! The task's registry credentials, over the host's `registry-auth` import.
//!
//! A task names a `kubernetes.io/dockerconfigjson` Secret in `spec.registryAuth`; the
//! host answers [`lookup`] with the entry for one registry. Only plugins whose
//! HostPlugin declares `registryAuth` get anything: for the others, and for tasks
//! without a Secret, every lookup is `None`. Never log, return or store a credential:
//! [`Credential`]'s `Debug` hides the password so that a stray `{:?}` cannot leak it.

use std::fmt;

/// One registry's username and password.
#[derive(Clone, PartialEq, Eq)]
pub struct Credential {
    /// The user name.
    pub username: String,
    /// The password or token.
    pub password: String,
}

impl fmt::Debug for Credential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credential")
            .field("username", &self.username)
            .field("password", &"<redacted>")
            .finish()
    }
}

/// The credential for `registry` (`host[:port]`; Docker Hub by any of its names), if
/// the task has one and the plugin may have it.
pub fn lookup(registry: &str) -> Option<Credential> {
    imp(registry)
}

#[cfg(target_arch = "wasm32")]
fn imp(registry: &str) -> Option<Credential> {
    crate::bindings::hostplug::plugin::registry_auth::lookup(registry).map(|c| Credential {
        username: c.username,
        password: c.password,
    })
}

#[cfg(not(target_arch = "wasm32"))]
fn imp(_registry: &str) -> Option<Credential> {
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_hides_the_password() {
        let c = Credential {
            username: "u".into(),
            password: "s3cr3t".into(),
        };
        let d = format!("{c:?}");
        assert!(d.contains("\"u\"") && !d.contains("s3cr3t"), "{d}");
        assert_eq!(lookup("localhost:5000"), None);
    }
}

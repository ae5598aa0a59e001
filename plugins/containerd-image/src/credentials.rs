//! Registry credentials for `pull`: the one place that decides what goes into CRI's
//! `AuthConfig`.
//!
//! The operator hands an invocation the credentials of the HostTask's
//! `spec.registryAuth.secretName` (a `kubernetes.io/dockerconfigjson` Secret) through the
//! `registry-auth` import, when this plugin's HostPlugin declares `registryAuth`. Without
//! them pulls go out anonymously; a registry that wants credentials then refuses the pull
//! and the error says so.

use hostplug_sdk::Result;
use hostplug_sdk::containerd::AuthConfig;
use hostplug_sdk::registry_auth;

/// The credentials to send with a pull of `image`, if any are known for its registry.
///
/// `server_address` stays empty, as the kubelet leaves it: containerd's CRI uses the
/// credentials only for a host with `url.Parse(server_address).Host == host`, and a bare
/// `host:port` never parses to a host (`127.0.0.1:5000` fails to parse and fails the
/// pull; `registry.example:5000` parses as a scheme and the pull goes out anonymously).
/// Empty, containerd sends them to the hosts it resolves this image's registry to (its
/// hosts.toml mirrors included), which is what the kubelet's pulls do.
pub fn for_image(image: &str) -> Result<Option<AuthConfig>> {
    let registry = registry_of(image);
    Ok(registry_auth::lookup(registry).map(|c| AuthConfig {
        username: c.username,
        password: c.password,
        auth: String::new(),
        server_address: String::new(),
        identity_token: String::new(),
        registry_token: String::new(),
    }))
}

/// The registry host of a reference as the runtime resolves it: the first path component
/// when it looks like a host (has a `.` or a `:`, or is `localhost`), else Docker Hub.
pub fn registry_of(image: &str) -> &str {
    match image.split_once('/') {
        Some((first, _)) if first.contains(['.', ':']) || first == "localhost" => first,
        _ => "docker.io",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registries_of_references() {
        assert_eq!(registry_of("127.0.0.1:5000/team/app:1"), "127.0.0.1:5000");
        assert_eq!(registry_of("registry.example/app"), "registry.example");
        assert_eq!(registry_of("localhost/app"), "localhost");
        assert_eq!(registry_of("library/nginx:1"), "docker.io");
        assert_eq!(registry_of("nginx"), "docker.io");
    }
}

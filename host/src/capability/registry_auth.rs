//! The `registry-auth` capability: a task's registry credentials, one registry at a time.
//!
//! The credentials come with one invocation ([`Grants::registry_auth`], filled by the
//! worker from the invoke request, which the operator fills only for a plugin whose
//! HostPlugin declares `registryAuth` and a task that names a Secret). Without them the
//! import answers `none` for every registry: it is linked for every plugin, like every
//! other import, because one linker serves all plugins and a plugin such as docker-image
//! must run with and without credentials.
//!
//! It must never list the registries, answer for a registry that was not asked for, or
//! log a credential.
//!
//! [`Grants::registry_auth`]: crate::Grants::registry_auth

use crate::bindings::hostplug::plugin::registry_auth::{Credential, Host};

impl Host for crate::plugin::StoreState {
    fn lookup(&mut self, registry: String) -> Option<Credential> {
        let found = self
            .registry_auth
            .as_ref()
            .and_then(|creds| creds.lookup(&registry))
            .map(|c| Credential {
                username: c.username.clone(),
                password: c.password.clone(),
            });
        // The registry name only: never the credential.
        tracing::debug!(registry = %registry.chars().take(253).collect::<String>(), found = found.is_some(), "registry-auth lookup");
        found
    }
}

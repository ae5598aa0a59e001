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

use std::sync::Arc;

use hostplug_api::registry_auth::RegistryCredentials;
use wasmtime::component::{HasSelf, Linker};

use super::Call;
use crate::bindings::hostplug::plugin::registry_auth as wit;
use crate::{Error, Result};

/// The registry-auth capability's state for one call: the task's credentials, or none.
#[derive(Debug)]
pub(crate) struct RegistryAuthState {
    credentials: Option<Arc<RegistryCredentials>>,
}

impl RegistryAuthState {
    /// Prepare phase: the credentials that came with the call, when there are any.
    pub(crate) fn prepare(call: &Call<'_>) -> Self {
        Self {
            credentials: call.grants.registry_auth.clone(),
        }
    }
}

/// The `registry-auth` import: one registry at a time.
impl wit::Host for RegistryAuthState {
    fn lookup(&mut self, registry: String) -> Option<wit::Credential> {
        let found = self
            .credentials
            .as_ref()
            .and_then(|creds| creds.lookup(&registry))
            .map(|c| wit::Credential {
                username: c.username.clone(),
                password: c.password.clone(),
            });
        // The registry name only: never the credential.
        tracing::debug!(registry = %registry.chars().take(253).collect::<String>(), found = found.is_some(), "registry-auth lookup");
        found
    }
}

/// Link phase: the `registry-auth` import, on the state `state` projects out of the
/// store's data.
pub(crate) fn add_to_linker<T: 'static>(
    linker: &mut Linker<T>,
    state: fn(&mut T) -> &mut RegistryAuthState,
) -> Result<()> {
    wit::add_to_linker::<T, HasSelf<RegistryAuthState>>(linker, state)
        .map_err(|e| Error::Engine(format!("linking the registry-auth import: {e:#}")))
}

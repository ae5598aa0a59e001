//! [`CapabilityError`]: why a host import refused or failed one call, as the WIT's
//! `capability-error` says it.
//!
//! Decided where the refusal is decided (a policy, a dry-run rule, the kernel's answer)
//! and carried typed to the plugin: nobody on the way reads the message to find the kind.
//! Messages are for people; this module must never put a secret (a credential, a header
//! value) into one.

/// Why a host import refused or failed a call.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CapabilityError {
    /// The host refused: the capability is not granted, a mutation in a dry run, a path,
    /// route, header or mode its policy does not allow, a size over its limit.
    #[error("denied: {0}")]
    Denied(String),
    /// What the call names does not exist (a file, an image, an archive).
    #[error("not-found: {0}")]
    NotFound(String),
    /// A value the host refuses before acting because it makes no sense (an empty image
    /// reference, a malformed archive name, bits beyond a mode).
    #[error("invalid: {0}")]
    Invalid(String),
    /// The call was allowed and failed: the socket, the daemon, the runtime, I/O, a
    /// timeout.
    #[error("failed: {0}")]
    Failed(String),
}

impl CapabilityError {
    /// [`CapabilityError::Denied`] with `message`.
    pub fn denied(message: impl Into<String>) -> Self {
        Self::Denied(message.into())
    }

    /// [`CapabilityError::NotFound`] with `message`.
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::NotFound(message.into())
    }

    /// [`CapabilityError::Invalid`] with `message`.
    pub fn invalid(message: impl Into<String>) -> Self {
        Self::Invalid(message.into())
    }

    /// [`CapabilityError::Failed`] with `message`.
    pub fn failed(message: impl Into<String>) -> Self {
        Self::Failed(message.into())
    }

    /// The message, without the kind.
    pub fn message(&self) -> &str {
        match self {
            Self::Denied(m) | Self::NotFound(m) | Self::Invalid(m) | Self::Failed(m) => m,
        }
    }

    /// The kind as the WIT spells it: `denied`, `not-found`, `invalid` or `failed`.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Denied(_) => "denied",
            Self::NotFound(_) => "not-found",
            Self::Invalid(_) => "invalid",
            Self::Failed(_) => "failed",
        }
    }
}

/// The WIT's `capability-error`, what an import returns: the same kind, the same
/// message.
impl From<CapabilityError> for crate::bindings::hostplug::plugin::types::CapabilityError {
    fn from(e: CapabilityError) -> Self {
        match e {
            CapabilityError::Denied(m) => Self::Denied(m),
            CapabilityError::NotFound(m) => Self::NotFound(m),
            CapabilityError::Invalid(m) => Self::Invalid(m),
            CapabilityError::Failed(m) => Self::Failed(m),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bindings::hostplug::plugin::types::CapabilityError as Wit;

    /// Each kind crosses into the WIT as the variant of the same name, message intact.
    #[test]
    fn each_kind_maps_to_the_wit_variant_of_the_same_name() {
        for (e, wit) in [
            (CapabilityError::denied("d"), Wit::Denied("d".into())),
            (CapabilityError::not_found("n"), Wit::NotFound("n".into())),
            (CapabilityError::invalid("i"), Wit::Invalid("i".into())),
            (CapabilityError::failed("f"), Wit::Failed("f".into())),
        ] {
            let kind = e.kind();
            let mapped = Wit::from(e);
            assert_eq!(format!("{mapped:?}"), format!("{wit:?}"), "{kind}");
        }
    }
}

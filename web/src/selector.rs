//! Label selectors as people type them: the one parser of `hostplug-api`
//! ([`hostplug_api::selector`]), shared with `kubectl hostplug --selector`.

pub use hostplug_api::selector::{format, parse};

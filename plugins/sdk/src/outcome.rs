//! What a handler reports back: changed or not, a JSON output, and an optional diff.

use serde::Serialize;
use serde_json::Value;

/// The result of one successful operation; becomes the WIT `outcome`.
///
/// ```
/// use hostplug_sdk::Outcome;
/// let done = Outcome::changed(serde_json::json!({"path": "/etc/motd"}))
///     .with_diff(Some("--- a/etc/motd\n+++ b/etc/motd\n".to_string()));
/// assert!(done.is_changed());
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct Outcome {
    changed: bool,
    output: Result<Value, String>,
    diff: Option<String>,
}

impl Outcome {
    /// An outcome with an explicit `changed` flag. `output` is any serialisable value; a
    /// value that cannot be serialised to JSON makes the operation fail with a clear error.
    pub fn new(changed: bool, output: impl Serialize) -> Self {
        Self {
            changed,
            output: serde_json::to_value(output).map_err(|e| e.to_string()),
            diff: None,
        }
    }

    /// The node was changed (or, in a dry run, would have been).
    pub fn changed(output: impl Serialize) -> Self {
        Self::new(true, output)
    }

    /// Nothing needed to change: the node already was as asked.
    pub fn unchanged(output: impl Serialize) -> Self {
        Self::new(false, output)
    }

    /// Attaches a unified diff (see [`crate::diff::unified`]).
    #[must_use]
    pub fn with_diff(mut self, diff: Option<String>) -> Self {
        self.diff = diff;
        self
    }

    /// Whether the operation changed (or would change) the node.
    pub fn is_changed(&self) -> bool {
        self.changed
    }

    /// The output, or the serialisation error that will fail the operation.
    pub fn output(&self) -> Result<&Value, &str> {
        self.output.as_ref().map_err(String::as_str)
    }

    /// The diff, if any.
    pub fn diff(&self) -> Option<&str> {
        self.diff.as_deref()
    }

    pub(crate) fn into_wit(self) -> crate::Result<crate::bindings::Outcome> {
        let output = self
            .output
            .map_err(|e| crate::Error::failed(format!("the plugin's output is not JSON: {e}")))?;
        Ok(crate::bindings::Outcome {
            changed: self.changed,
            output: output.to_string(),
            diff: self.diff,
        })
    }
}

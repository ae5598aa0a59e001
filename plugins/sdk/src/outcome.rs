//! What a handler reports back: changed or not, a JSON output, an optional diff, and
//! whether the change needs a reboot to take effect (a request: only the operator
//! reboots, and only when the task allows it).

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
    reboot_required: Option<String>,
}

/// Longest reason of [`Outcome::requires_reboot`]: 512 bytes, one sentence. The host
/// refuses an outcome whose reason is longer (it goes into Events and the node's status).
pub const MAX_REBOOT_REASON_BYTES: usize = 512;

impl Outcome {
    /// An outcome with an explicit `changed` flag. `output` is any serialisable value; a
    /// value that cannot be serialised to JSON makes the operation fail with a clear error.
    pub fn new(changed: bool, output: impl Serialize) -> Self {
        Self {
            changed,
            output: serde_json::to_value(output).map_err(|e| e.to_string()),
            diff: None,
            reboot_required: None,
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

    /// Says that the change takes effect only after the node reboots, and why (one
    /// sentence, e.g. "kernel argument `mitigations=off` is read at boot"). A request:
    /// the plugin cannot reboot anything. The operator reboots the node after the call
    /// (cordoned and drained first, as the task's `spec.disruption` says) when the
    /// task allows it (`reboot: IfRequested`); otherwise the node's status says that a
    /// reboot is needed. Ask only when the call changed something that needs it: an
    /// unchanged node needs no reboot.
    ///
    /// ```
    /// use hostplug_sdk::Outcome;
    /// let done = Outcome::changed(serde_json::json!({}))
    ///     .requires_reboot("the kernel reads /etc/default/grub.d at boot");
    /// assert_eq!(done.reboot_required(), Some("the kernel reads /etc/default/grub.d at boot"));
    /// ```
    #[must_use]
    pub fn requires_reboot(mut self, reason: impl Into<String>) -> Self {
        self.reboot_required = Some(reason.into());
        self
    }

    /// Why the change needs a reboot, if it does ([`Self::requires_reboot`]).
    pub fn reboot_required(&self) -> Option<&str> {
        self.reboot_required.as_deref()
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
        if let Some(reason) = &self.reboot_required
            && (reason.trim().is_empty() || reason.len() > MAX_REBOOT_REASON_BYTES)
        {
            return Err(crate::Error::failed(format!(
                "the plugin's reboot reason must be one sentence of 1 to \
                 {MAX_REBOOT_REASON_BYTES} bytes, not {} bytes",
                reason.len()
            )));
        }
        Ok(crate::bindings::Outcome {
            changed: self.changed,
            output: output.to_string(),
            diff: self.diff,
            reboot_required: self.reboot_required,
        })
    }
}

//! The hostplug web console.

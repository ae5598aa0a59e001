//! The hostplug worker.

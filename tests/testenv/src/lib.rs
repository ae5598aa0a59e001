//! The hostplug test environment.

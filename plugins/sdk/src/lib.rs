//! The hostplug plugin development kit.

//! The hostplug operator.

//! etc-file plugin.

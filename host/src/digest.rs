//! `Digest`: the sha256 of a plugin module, the one key by which modules are pinned,
//! cached and addressed (HostPlugin `spec.sha256`, worker routes, the on-disk cache).
//!
//! This module only computes, parses and prints digests; it must never decide whether a
//! module is trusted — that is the caller comparing an expected digest (see `Host::load`).

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use sha2::{Digest as _, Sha256};

use crate::Error;

/// The sha256 digest of a module's bytes. Displays as `sha256:<64 lowercase hex>`;
/// parses from that form or from the bare hex (as in HostPlugin `spec.sha256` and the
/// worker's `/v1/plugins/{sha256}` route).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Digest([u8; 32]);

impl Digest {
    /// Prefix of the display form.
    pub const PREFIX: &'static str = "sha256:";

    /// The digest of `bytes`.
    pub fn of(bytes: &[u8]) -> Self {
        Self(Sha256::digest(bytes).into())
    }

    /// The 64 lowercase hex characters, without the `sha256:` prefix.
    pub fn hex(&self) -> String {
        hex::encode(self.0)
    }

    /// The raw 32 bytes.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }
}

impl FromStr for Digest {
    type Err = Error;

    /// Accepts `sha256:<hex>` or `<hex>`, 64 hex digits of either case.
    fn from_str(s: &str) -> Result<Self, Error> {
        let hex_part = s.strip_prefix(Self::PREFIX).unwrap_or(s);
        let invalid = || Error::InvalidDigest {
            input: s.chars().take(80).collect(),
        };
        if hex_part.len() != 64 {
            return Err(invalid());
        }
        let mut out = [0u8; 32];
        hex::decode_to_slice(hex_part, &mut out).map_err(|_| invalid())?;
        Ok(Self(out))
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}{}", Self::PREFIX, self.hex())
    }
}

impl fmt::Debug for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl Serialize for Digest {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Digest {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let s = String::deserialize(deserializer)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_and_parse_round_trip() -> Result<(), Error> {
        let d = Digest::of(b"abc");
        assert_eq!(
            d.to_string(),
            "sha256:ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert_eq!(d.to_string().parse::<Digest>()?, d);
        assert_eq!(d.hex().to_uppercase().parse::<Digest>()?, d);
        Ok(())
    }

    #[test]
    fn rejects_garbage() {
        for bad in [
            "",
            "sha256:",
            "sha256:xyz",
            "md5:00",
            &"0".repeat(63),
            &"g".repeat(64),
        ] {
            assert!(bad.parse::<Digest>().is_err(), "{bad:?} parsed");
        }
    }
}

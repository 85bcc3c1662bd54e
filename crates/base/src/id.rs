//! Typed identifiers.
//!
//! IDs are random 128-bit values rendered as 32 lowercase hex digits. They appear in URLs and
//! object keys, so parsing is strict: anything but exactly 32 hex digits is rejected, which also
//! keeps user-supplied path segments from ever reaching the object store as keys.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("invalid {kind} id {value:?}: expected 32 hex digits")]
pub struct InvalidId {
    pub kind: &'static str,
    pub value: String,
}

macro_rules! typed_id {
    ($name:ident, $kind:literal) => {
        #[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(uuid::Uuid);

        impl $name {
            pub fn new() -> Self {
                Self(uuid::Uuid::new_v4())
            }
        }

        impl Default for $name {
            fn default() -> Self {
                Self::new()
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Display::fmt(&self.0.simple(), f)
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, concat!($kind, ":{}"), self.0.simple())
            }
        }

        impl FromStr for $name {
            type Err = InvalidId;
            fn from_str(s: &str) -> Result<Self, InvalidId> {
                let bad = || InvalidId {
                    kind: $kind,
                    value: s.chars().take(64).collect(),
                };
                if s.len() != 32 || !s.bytes().all(|b| b.is_ascii_hexdigit()) {
                    return Err(bad());
                }
                uuid::Uuid::try_parse(s).map(Self).map_err(|_| bad())
            }
        }

        impl Serialize for $name {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.collect_str(self)
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = String::deserialize(d)?;
                s.parse().map_err(serde::de::Error::custom)
            }
        }
    };
}

typed_id!(VideoId, "video");
typed_id!(UploadId, "upload");
typed_id!(JobId, "job");
typed_id!(StreamId, "stream");
typed_id!(SessionId, "session");

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_through_text() {
        let id = VideoId::new();
        let s = id.to_string();
        assert_eq!(s.len(), 32);
        assert_eq!(s.parse::<VideoId>().unwrap(), id);
    }

    #[test]
    fn rejects_anything_but_32_hex_digits() {
        for bad in [
            "",
            "../etc/passwd",
            "0123",
            &"g".repeat(32),
            &"0".repeat(33),
        ] {
            assert!(bad.parse::<VideoId>().is_err(), "{bad:?}");
        }
        assert!("0123456789abcdef0123456789ABCDEF"
            .parse::<UploadId>()
            .is_ok());
    }

    #[test]
    fn hyphenated_uuid_is_not_accepted() {
        let u = uuid::Uuid::new_v4().hyphenated().to_string();
        assert!(u.parse::<JobId>().is_err());
    }
}

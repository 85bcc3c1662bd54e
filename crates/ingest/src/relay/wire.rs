//! The relay's wire format, between an ingest node and a live encoder, over TCP. Pure: the
//! frame header and the hello are parsed here; `mod.rs` does the I/O.
//!
//! Every frame is a kind byte, a big-endian `u32` length and that many bytes. The ingest sends
//! [`HELLO`] first, then [`MEDIA`] frames (one ingest chunk each) and [`DONE`] when its
//! publisher disconnects. The encoder answers [`ACCEPT`] or [`REFUSE`], then sends [`ALIVE`]
//! every [`ALIVE_EVERY`] while it runs (so that an encoder that stopped, on a machine that
//! froze, is noticed even though its socket stays open) and [`END`] when it ends the stream
//! itself (deleted, key reset, lease lost): the ingest then drops the publisher instead of
//! moving it to another encoder.

use std::time::Duration;

use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;

pub const HELLO: u8 = b'H';
pub const MEDIA: u8 = b'M';
pub const DONE: u8 = b'Z';
pub const ACCEPT: u8 = b'O';
pub const REFUSE: u8 = b'R';
pub const ALIVE: u8 = b'A';
pub const END: u8 = b'E';

/// How often an encoder says it is alive.
pub const ALIVE_EVERY: Duration = Duration::from_millis(250);

/// Bytes before a frame's body.
pub const HEADER: usize = 5;
/// The largest media frame: an FLV tag (24-bit body size, 11-byte header, 4-byte trailer).
pub const MAX_MEDIA: u32 = 0x00FF_FFFF + 15;
/// The largest frame of any other kind.
pub const MAX_CONTROL: u32 = 16 * 1024;
/// A hello older (or newer) than this, by the receiver's clock, is refused: it was replayed.
pub const HELLO_SKEW_MS: i64 = 60_000;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    #[error("unknown relay frame kind {0:#04x}")]
    Kind(u8),
    #[error("relay frame of kind {kind:?} is {len} bytes, over the limit of {max}")]
    TooLong { kind: char, len: u32, max: u32 },
    #[error("relay hello is not valid: {0}")]
    BadHello(String),
    #[error("relay hello is not signed with this deployment's signing key")]
    BadMac,
    #[error("relay hello is {0} ms away from this machine's clock (replayed, or clocks are off)")]
    Stale(i64),
}

/// A frame header: its kind and body length, checked against the kind's limit before anything
/// is allocated.
pub fn parse_header(h: [u8; HEADER]) -> Result<(u8, u32), WireError> {
    let kind = h[0];
    let len = u32::from_be_bytes([h[1], h[2], h[3], h[4]]);
    let max = match kind {
        MEDIA => MAX_MEDIA,
        HELLO | DONE | ACCEPT | REFUSE | ALIVE | END => MAX_CONTROL,
        other => return Err(WireError::Kind(other)),
    };
    if len > max {
        return Err(WireError::TooLong {
            kind: char::from(kind),
            len,
            max,
        });
    }
    Ok((kind, len))
}

pub fn header(kind: u8, len: usize) -> [u8; HEADER] {
    let l = (len as u32).to_be_bytes();
    [kind, l[0], l[1], l[2], l[3]]
}

/// The stream an ingest asks an encoder to take.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hello {
    /// The publisher's stream key.
    pub key: String,
    /// `rtmp` or `srt`.
    pub protocol: String,
    /// The publisher's address.
    pub peer: String,
    /// `flv` or `mpegts`.
    pub container: String,
    /// The encoder this stream is moved from, when the ingest lost it.
    pub takeover: Option<Takeover>,
    /// The sender's clock, ms.
    pub at_ms: i64,
    /// HMAC-SHA256 (hex) of the fields above, with the deployment's signing key.
    #[serde(default)]
    pub mac: String,
}

/// The encoder a stream moves from, and how it was lost.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Takeover {
    /// Its lease holder name (`{node_id}:{pid}`).
    pub holder: String,
    /// Its connection was closed from its side: the process is gone, so its lease can be taken
    /// at once. Otherwise it only went silent and may still be writing.
    pub gone: bool,
}

/// The encoder's acceptance.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Accept {
    /// The encoder's lease holder name, for a later [`Takeover`].
    pub holder: String,
}

impl Hello {
    fn signed_text(&self) -> String {
        let t = self
            .takeover
            .as_ref()
            .map_or(String::new(), |t| format!("{}|{}", t.holder, t.gone));
        // Lengths first, so that no two hellos sign the same text.
        format!(
            "oxcast-relay-1|{}:{}|{}|{}|{}|{}|{}",
            self.key.len(),
            self.key,
            self.protocol,
            self.peer,
            self.container,
            t,
            self.at_ms
        )
    }

    fn mac_of(&self, secret: &[u8]) -> Hmac<Sha256> {
        let mut m = Hmac::<Sha256>::new_from_slice(secret).expect("any key length");
        m.update(self.signed_text().as_bytes());
        m
    }

    pub fn sign(mut self, secret: &[u8]) -> Self {
        let tag = self.mac_of(secret).finalize().into_bytes();
        self.mac = tag.iter().map(|b| format!("{b:02x}")).collect();
        self
    }

    pub fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("plain data")
    }

    /// Parses and checks a hello received at `now_ms`.
    pub fn verify(body: &[u8], secret: &[u8], now_ms: i64) -> Result<Hello, WireError> {
        let hello: Hello =
            serde_json::from_slice(body).map_err(|e| WireError::BadHello(e.to_string()))?;
        let tag = hex(&hello.mac).ok_or(WireError::BadMac)?;
        hello
            .mac_of(secret)
            .verify_slice(&tag)
            .map_err(|_| WireError::BadMac)?;
        let off = now_ms.saturating_sub(hello.at_ms);
        if off.abs() > HELLO_SKEW_MS {
            return Err(WireError::Stale(off));
        }
        Ok(hello)
    }
}

fn hex(s: &str) -> Option<Vec<u8>> {
    if s.len() != 64 {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn hello() -> Hello {
        Hello {
            key: "k3y".into(),
            protocol: "rtmp".into(),
            peer: "10.0.0.9:5000".into(),
            container: "flv".into(),
            takeover: Some(Takeover {
                holder: "enc-a:12".into(),
                gone: false,
            }),
            at_ms: 1_000_000,
            mac: String::new(),
        }
    }

    #[test]
    fn a_signed_hello_verifies_and_any_change_does_not() {
        let signed = hello().sign(b"secret");
        let body = signed.encode();
        assert_eq!(
            Hello::verify(&body, b"secret", 1_000_500),
            Ok(signed.clone())
        );
        assert_eq!(
            Hello::verify(&body, b"other", 1_000_500),
            Err(WireError::BadMac)
        );
        let mut forged = signed.clone();
        forged.takeover.as_mut().unwrap().gone = true;
        assert_eq!(
            Hello::verify(&forged.encode(), b"secret", 1_000_500),
            Err(WireError::BadMac),
            "a takeover cannot be upgraded to 'gone'"
        );
        let mut forged = signed.clone();
        forged.key = "k3".into();
        forged.peer = "y10.0.0.9:5000".into();
        assert_eq!(
            Hello::verify(&forged.encode(), b"secret", 1_000_500),
            Err(WireError::BadMac)
        );
        assert_eq!(
            Hello::verify(&body, b"secret", 1_000_000 + HELLO_SKEW_MS + 1),
            Err(WireError::Stale(HELLO_SKEW_MS + 1)),
            "a replayed hello is refused"
        );
        assert!(matches!(
            Hello::verify(b"{\"key\":1}", b"secret", 0),
            Err(WireError::BadHello(_))
        ));
    }

    #[test]
    fn headers_are_limited_per_kind() {
        assert_eq!(parse_header(header(MEDIA, 100)), Ok((MEDIA, 100)));
        assert_eq!(
            parse_header(header(MEDIA, MAX_MEDIA as usize)),
            Ok((MEDIA, MAX_MEDIA))
        );
        assert!(parse_header(header(MEDIA, MAX_MEDIA as usize + 1)).is_err());
        assert!(parse_header(header(HELLO, MAX_CONTROL as usize + 1)).is_err());
        assert_eq!(parse_header(header(b'?', 0)), Err(WireError::Kind(b'?')));
    }

    proptest! {
        #[test]
        fn any_header_parses_within_its_limit_or_is_refused(h in any::<[u8; HEADER]>()) {
            if let Ok((kind, len)) = parse_header(h) {
                let max = if kind == MEDIA { MAX_MEDIA } else { MAX_CONTROL };
                prop_assert!(len <= max);
            }
        }

        #[test]
        fn any_hello_body_is_refused_without_panicking(body in proptest::collection::vec(any::<u8>(), 0..512)) {
            prop_assert!(Hello::verify(&body, b"secret", 0).is_err());
        }
    }
}

//! The crate's single error type.

use std::fmt;

/// A four-character box type such as `moov`, printed as text (non-printable bytes escaped).
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct FourCc(pub [u8; 4]);

impl FourCc {
    /// The fourcc as a `String`, for codec fallbacks and messages.
    pub fn as_string(&self) -> String {
        self.to_string()
    }
}

impl fmt::Display for FourCc {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for &b in &self.0 {
            if b.is_ascii_graphic() || b == b' ' {
                write!(f, "{}", b as char)?;
            } else {
                write!(f, "\\x{b:02x}")?;
            }
        }
        Ok(())
    }
}

impl fmt::Debug for FourCc {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "FourCc({self})")
    }
}

/// Errors from parsing media bytes. Offsets are absolute byte offsets into the input stream.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A box (or a field inside one) extends past the bytes available.
    #[error("{box_type} box truncated at byte offset {offset}: needed {needed} bytes, {available} available")]
    Truncated {
        box_type: FourCc,
        offset: usize,
        needed: u64,
        available: usize,
    },
    /// A box is structurally invalid.
    #[error("invalid {box_type} box at byte offset {offset}: {reason}")]
    InvalidBox {
        box_type: FourCc,
        offset: usize,
        reason: String,
    },
    /// A required child box is absent.
    #[error("no {box_type} box inside the {parent} box at byte offset {offset}")]
    MissingBox {
        box_type: FourCc,
        parent: FourCc,
        offset: usize,
    },
    /// Boxes arrive in an order fMP4 does not allow (e.g. `moof` before `moov`).
    #[error("unexpected {box_type} box at byte offset {offset}: {reason}")]
    UnexpectedBox {
        box_type: FourCc,
        offset: usize,
        reason: &'static str,
    },
    /// The init segment describes zero or several tracks; only single-track files are supported.
    #[error("expected exactly one trak in the moov box at byte offset {offset}, found {found}")]
    TrackCount { offset: usize, found: usize },
    /// The track's handler is neither video nor audio.
    #[error("unsupported handler {handler} in the hdlr box at byte offset {offset}")]
    UnsupportedHandler { handler: FourCc, offset: usize },
    /// A box declares a size over the splitter's limit (protects live input from garbage sizes).
    #[error(
        "{box_type} box at byte offset {offset} declares {size} bytes, over the {max} byte limit"
    )]
    BoxTooLarge {
        box_type: FourCc,
        offset: usize,
        size: u64,
        max: u64,
    },
    /// The input ended inside a box or a fragment.
    #[error("input ended with {len} unconsumed bytes at byte offset {offset} ({what})")]
    Incomplete {
        offset: usize,
        len: usize,
        what: &'static str,
    },
    /// The input contains no `moov` box.
    #[error("no moov box in {len} bytes of input")]
    MissingInit { len: usize },
}

/// Result alias for this crate.
pub type Result<T> = std::result::Result<T, Error>;

//! ISO BMFF box reading for single-track fragmented MP4 (CMAF), as ffmpeg writes it with
//! `-movflags +frag_keyframe+delay_moov+default_base_moof` (or `+empty_moov…+cmaf` for live):
//! `ftyp` `moov` then repeated `[styp|sidx|prft|emsg]* moof mdat`, optionally ending in `mfra`.
//!
//! This module only reads boxes and reports what is in them; deciding where HLS/DASH segments
//! end is [`crate::cmaf`]'s job. Input is untrusted: every read is bounds-checked and malformed
//! bytes produce an [`Error`] naming the box and byte offset.

mod fragment;
mod init;
mod read;
mod retime;
#[cfg(test)]
mod tests;
#[cfg(test)]
pub(crate) mod testutil;
mod timing;

use std::ops::Range;

use serde::{Deserialize, Serialize};

use crate::{Error, Result};
pub use retime::retime_fragment;
pub use timing::check_dash_timing;

use init::Trex;
use read::{read_header, BoxRef};

/// What a track carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TrackKind {
    Video,
    Audio,
}

/// Description of the single track of an fMP4 file, from its `moov`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TrackInfo {
    pub track_id: u32,
    pub kind: TrackKind,
    /// Units per second of all decode/presentation times of this track (`mdhd`).
    pub timescale: u32,
    /// RFC 6381 codec string (`avc1.64001f`, `mp4a.40.2`, `hvc1.1.6.L93.B0`), or the sample
    /// entry fourcc when the codec is not understood.
    pub codec: String,
    pub width: Option<u32>,
    pub height: Option<u32>,
    pub sample_rate: Option<u32>,
    pub channels: Option<u16>,
}

/// The init segment (`ftyp` + `moov`) of a file and its track.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct InitSegment {
    pub bytes_range: Range<usize>,
    pub track: TrackInfo,
}

impl InitSegment {
    /// Same as [`parse_init`], as a struct.
    pub fn parse(data: &[u8]) -> Result<Self> {
        let (bytes_range, track) = parse_init(data)?;
        Ok(Self { bytes_range, track })
    }
}

/// One movie fragment: `[styp|sidx|prft|emsg]* moof mdat`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Fragment {
    /// Byte range from the first box belonging to the fragment to the end of its `mdat`.
    pub range: Range<usize>,
    /// `mfhd` sequence number.
    pub sequence_number: u32,
    /// `tfdt`, in timescale units.
    pub base_media_decode_time: u64,
    /// Sum of sample durations, in timescale units.
    pub duration: u64,
    pub sample_count: u32,
    /// The first sample is a sync sample (a keyframe), so a segment may start here.
    pub starts_with_sync: bool,
    /// `base_media_decode_time` plus the smallest decode + composition offset of any sample.
    pub earliest_presentation_time: i64,
}

impl Fragment {
    /// Decode time just after the last sample.
    pub fn end(&self) -> u64 {
        self.base_media_decode_time.saturating_add(self.duration)
    }
}

/// Parses the init segment at the start of `data`, returning its byte range (from `ftyp`, or
/// `moov` if there is no `ftyp`, to the end of `moov`) and its track. Single-track files only.
pub fn parse_init(data: &[u8]) -> Result<(Range<usize>, TrackInfo)> {
    let mut scanner = Scanner::default();
    let mut pos = 0;
    while pos < data.len() {
        let (end, event) = scanner
            .step(&data[pos..], pos, None)?
            .ok_or(Error::Incomplete {
                offset: pos,
                len: data.len() - pos,
                what: "truncated box",
            })?;
        if let Some(Raw::Init { range, track }) = event {
            return Ok((range, track));
        }
        pos = end;
    }
    Err(Error::MissingInit { len: data.len() })
}

/// Splits a whole fMP4 file: its track, init segment range and every fragment (ranges into
/// `data`). Fails on truncated boxes, a `moof` without `mdat`, or a missing `moov`.
pub fn split_file(data: &[u8]) -> Result<(TrackInfo, Range<usize>, Vec<Fragment>)> {
    let mut scanner = Scanner::default();
    let mut init = None;
    let mut fragments = Vec::new();
    let mut pos = 0;
    while pos < data.len() {
        let (end, event) = scanner
            .step(&data[pos..], pos, None)?
            .ok_or(Error::Incomplete {
                offset: pos,
                len: data.len() - pos,
                what: "truncated box",
            })?;
        match event {
            Some(Raw::Init { range, track }) => init = Some((track, range)),
            Some(Raw::Fragment(f)) => fragments.push(f),
            None => {}
        }
        pos = end;
    }
    scanner.check_complete(data.len())?;
    let (track, range) = init.ok_or(Error::MissingInit { len: data.len() })?;
    Ok((track, range, fragments))
}

/// Output of [`Fmp4Splitter::push`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SplitEvent {
    /// The init segment (`ftyp` + `moov` and anything between), emitted once.
    Init { bytes: Vec<u8>, track: TrackInfo },
    /// A complete fragment; `fragment.range` is relative to `bytes` (so it is `0..bytes.len()`).
    Fragment { bytes: Vec<u8>, fragment: Fragment },
}

/// Incremental fMP4 splitter: feed bytes as they arrive (a file read in chunks or a live pipe)
/// and get the init segment and each fragment as soon as they are complete.
///
/// Only the bytes of the unit being assembled are buffered; a box declaring more than
/// [`Fmp4Splitter::max_box_size`] bytes is rejected so garbage cannot make it buffer forever.
#[derive(Debug)]
pub struct Fmp4Splitter {
    buf: Vec<u8>,
    /// Absolute stream offset of `buf[0]`.
    base: usize,
    /// Absolute stream offset of the next unread box.
    pos: usize,
    scanner: Scanner,
    max_box_size: u64,
}

impl Default for Fmp4Splitter {
    fn default() -> Self {
        Self::new()
    }
}

impl Fmp4Splitter {
    /// Default limit on one box's declared size: 1 GiB (a long, high-bitrate GOP still fits).
    pub const DEFAULT_MAX_BOX_SIZE: u64 = 1 << 30;

    pub fn new() -> Self {
        Self {
            buf: Vec::new(),
            base: 0,
            pos: 0,
            scanner: Scanner::default(),
            max_box_size: Self::DEFAULT_MAX_BOX_SIZE,
        }
    }

    /// Sets the largest box size accepted.
    pub fn with_max_box_size(mut self, max: u64) -> Self {
        self.max_box_size = max;
        self
    }

    /// The largest box size accepted.
    pub fn max_box_size(&self) -> u64 {
        self.max_box_size
    }

    /// Total bytes pushed so far.
    pub fn stream_offset(&self) -> usize {
        self.base + self.buf.len()
    }

    /// Buffers `data` and returns every init segment / fragment completed by it, in order.
    pub fn push(&mut self, data: &[u8]) -> Result<Vec<SplitEvent>> {
        self.buf.extend_from_slice(data);
        let mut events = Vec::new();
        loop {
            let rel = self.pos - self.base;
            let Some((end, event)) =
                self.scanner
                    .step(&self.buf[rel..], self.pos, Some(self.max_box_size))?
            else {
                break;
            };
            match event {
                Some(Raw::Init { range, track }) => events.push(SplitEvent::Init {
                    bytes: self.slice(range),
                    track,
                }),
                Some(Raw::Fragment(mut fragment)) => {
                    let bytes = self.slice(fragment.range.clone());
                    fragment.range = 0..bytes.len();
                    events.push(SplitEvent::Fragment { bytes, fragment });
                }
                None => {}
            }
            self.pos = end;
        }
        // Drop what no pending unit needs, so memory stays bounded by one fragment.
        let keep = self.scanner.pending_start().unwrap_or(self.pos);
        self.buf.drain(..keep - self.base);
        self.base = keep;
        Ok(events)
    }

    /// Ends the stream. Fails if a box or fragment is incomplete, naming where it started.
    pub fn finish(self) -> Result<()> {
        let end = self.stream_offset();
        if self.pos < end {
            return Err(Error::Incomplete {
                offset: self.pos,
                len: end - self.pos,
                what: "truncated box",
            });
        }
        self.scanner.check_complete(end)
    }

    fn slice(&self, range: Range<usize>) -> Vec<u8> {
        self.buf[range.start - self.base..range.end - self.base].to_vec()
    }
}

/// A unit found by [`Scanner::step`], with absolute ranges.
enum Raw {
    Init {
        range: Range<usize>,
        track: TrackInfo,
    },
    Fragment(Fragment),
}

/// Top-level box state machine shared by [`parse_init`], [`split_file`] and [`Fmp4Splitter`].
#[derive(Debug, Default)]
struct Scanner {
    /// Start of the init segment (`ftyp`) while waiting for `moov`.
    init_start: Option<usize>,
    /// Track id and `trex` defaults, once `moov` has been seen.
    init: Option<(u32, Option<Trex>)>,
    /// Start of the fragment being assembled (its first `styp`/`sidx`/`prft`/`emsg`/`moof`).
    frag_start: Option<usize>,
    /// Parsed `moof` waiting for its `mdat`.
    moof: Option<Fragment>,
}

impl Scanner {
    /// Consumes the top-level box at the start of `buf` (absolute offset `pos`). Returns the end
    /// of the box and any unit it completes, or `None` if `buf` does not yet hold the whole box.
    /// With `max_box_size` unset, `buf` is the whole remaining input: a box running past its
    /// end is an error and a size-0 box extends to the end.
    fn step(
        &mut self,
        buf: &[u8],
        pos: usize,
        max_box_size: Option<u64>,
    ) -> Result<Option<(usize, Option<Raw>)>> {
        let whole = max_box_size.is_none();
        let Some(h) = read_header(buf, pos)? else {
            return Ok(None);
        };
        let size = match h.size {
            Some(size) => size,
            None if whole => buf.len() as u64,
            None => return Ok(None),
        };
        if let Some(max) = max_box_size {
            if size > max {
                return Err(Error::BoxTooLarge {
                    box_type: h.typ,
                    offset: pos,
                    size,
                    max,
                });
            }
        }
        if size > buf.len() as u64 {
            if whole {
                return Err(Error::Truncated {
                    box_type: h.typ,
                    offset: pos,
                    needed: size,
                    available: buf.len(),
                });
            }
            return Ok(None);
        }
        let size = size as usize;
        let end = pos + size;
        let b = BoxRef {
            typ: h.typ,
            offset: pos,
            body_offset: pos + h.header_len,
            body: &buf[h.header_len..size],
        };
        let unexpected = |reason| Error::UnexpectedBox {
            box_type: h.typ,
            offset: pos,
            reason,
        };
        let event = match &h.typ.0 {
            b"ftyp" => {
                if self.init.is_none() && self.init_start.is_none() {
                    self.init_start = Some(pos);
                }
                None
            }
            b"moov" => {
                if self.init.is_some() {
                    return Err(unexpected("a second moov"));
                }
                let (track, trex) = init::parse_moov(&b)?;
                self.init = Some((track.track_id, trex));
                let start = self.init_start.take().unwrap_or(pos);
                Some(Raw::Init {
                    range: start..end,
                    track,
                })
            }
            b"styp" | b"sidx" | b"prft" | b"emsg" => {
                if self.moof.is_none() && self.frag_start.is_none() {
                    self.frag_start = Some(pos);
                }
                None
            }
            b"moof" => {
                let Some((track_id, trex)) = self.init else {
                    return Err(unexpected("moof before moov"));
                };
                if self.moof.is_some() {
                    return Err(unexpected("moof while the previous moof has no mdat"));
                }
                self.moof = Some(fragment::parse_moof(&b, track_id, trex)?);
                self.frag_start.get_or_insert(pos);
                None
            }
            b"mdat" => {
                let Some(mut fragment) = self.moof.take() else {
                    return Err(unexpected(
                        "mdat without a preceding moof (not fragmented?)",
                    ));
                };
                fragment.range = self.frag_start.take().unwrap_or(pos)..end;
                Some(Raw::Fragment(fragment))
            }
            _ => None,
        };
        Ok(Some((end, event)))
    }

    /// Absolute offset from which bytes are still needed for the unit being assembled.
    fn pending_start(&self) -> Option<usize> {
        self.init_start.or(self.frag_start)
    }

    /// Errors if the input (of length `end`) stopped inside a fragment.
    fn check_complete(&self, end: usize) -> Result<()> {
        if let Some(offset) = self.init_start {
            return Err(Error::Incomplete {
                offset,
                len: end - offset,
                what: "ftyp without moov",
            });
        }
        if self.moof.is_some() {
            let offset = self.frag_start.unwrap_or(end);
            return Err(Error::Incomplete {
                offset,
                len: end - offset,
                what: "moof without its mdat",
            });
        }
        Ok(())
    }
}

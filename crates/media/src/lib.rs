//! Pure media logic for oxcast: everything between "ffmpeg wrote some fragmented MP4 bytes" and
//! "here are the playlists a player fetches", with no I/O of any kind.
//!
//! - [`mp4`] reads the ISO BMFF boxes of fragmented MP4 (CMAF) output: the init segment's track
//!   description and, per fragment, its byte range, timing and keyframe flag. [`mp4::Fmp4Splitter`]
//!   works incrementally, so the same code serves whole files (VOD) and a live pipe.
//! - [`cmaf`] decides where segments end, given fragments (kept apart from box reading).
//! - [`hls`] renders RFC 8216 media and master playlists, and Low-Latency HLS live playlists
//!   ([`hls::live`]: parts, preload hints, blocking reload, delta updates).
//! - [`dash`] renders MPDs with `SegmentTimeline`: static (VOD) and dynamic, multi-period live
//!   ([`dash::live`]).
//! - [`ladder`] computes the ABR ladder for a source picture.
//! - [`compress`] gzip/brotli forms of a manifest, negotiated by `Accept-Encoding`, each made once.
//!
//! ```
//! use oxcast_media::{cmaf, hls, mp4};
//!
//! fn playlist(file: &[u8]) -> oxcast_media::Result<String> {
//!     let (track, _init, fragments) = mp4::split_file(file)?;
//!     let ts = u64::from(track.timescale);
//!     let segments = cmaf::plan_segments(&fragments, 4 * ts)
//!         .iter()
//!         .map(|p| hls::MediaSegment {
//!             uri: format!("seg-{}.m4s", p.number),
//!             duration: p.duration as f64 / ts as f64,
//!             discontinuity: false,
//!         })
//!         .collect();
//!     Ok(hls::MediaPlaylist::vod("init.mp4", segments).render())
//! }
//! assert!(playlist(b"garbage").is_err());
//! ```
//!
//! Callers own files, sockets and clocks; this crate only turns bytes and numbers into values and
//! text, which is why it is tested with synthetic inputs and exact expected outputs.

pub mod chunks;
pub mod cmaf;
pub mod compress;
pub mod dash;
mod error;
pub mod hls;
pub mod ladder;
pub mod mp4;

pub use error::{Error, FourCc, Result};

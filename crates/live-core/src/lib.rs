//! The live core: everything about a live stream that is decided rather than done, with no I/O,
//! no tasks and no clock of its own (time is passed in), so every rule is tested exhaustively
//! and quickly.
//!
//! - [`slot`]: a stream's publisher place: who may publish, reconnects within the grace
//!   period, a deleted stream, as events in and actions out.
//! - [`state`]: a session's renditions as CMAF chunks, parts and segments, and the LL-HLS and
//!   DASH manifests they make.
//! - [`recovery`]: what a crashed node's half-written session can still publish.
//! - [`rate`]: the publisher's bitrate limit.
//! - [`health`] and [`viewers`]: the rules behind the stream's health alerts and viewer count.
//!
//! `oxcast-live` drives these: it reads the publisher's media, runs ffmpeg, stores objects
//! and serves requests.

pub mod health;
pub mod rate;
pub mod recovery;
pub mod slot;
pub mod state;
pub mod viewers;

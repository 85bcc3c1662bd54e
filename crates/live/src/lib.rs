//! Live streaming: from a publisher's connection to LL-HLS and DASH, and to a VOD recording.
//!
//! [`LiveManager`] is the ingest's [`PublishHandler`]: it checks the stream key, refuses a
//! second publisher, and runs a session. Each publisher connection is an *epoch* of the
//! session: a real-time ffmpeg ([`encoder`]) turns the media into one fragmented-MP4 stream per
//! rendition, and the live packager ([`state`]) cuts those fragments into LL-HLS parts and
//! segments, stores each as it completes and keeps the playlists current. A publisher that
//! drops and comes back within the grace period continues the same session after a
//! discontinuity (a new DASH period); after the grace period the session ends and its stored
//! segments become an ordinary video, with no re-encoding.

#[cfg(test)]
mod driver_tests;
pub mod encoder;
mod fence;
mod growing;
mod monitor;
mod package;
mod probe;
mod publish;
mod recording;
mod recover;
pub mod rendered;
pub mod replica;
#[cfg(test)]
mod replica_tests;
mod serve;
mod session;
mod slots;
mod stop;
mod takeover;

pub use oxcast_live_core::{health, recovery, slot, state, viewers};

pub use growing::LiveObject;
pub use monitor::{HealthView, LiveState, Publisher};
pub use replica::Replica;
pub use serve::LiveServe;
pub use session::{LatencyStats, LiveError, LiveHandler, LiveManager, LiveStatus, RefusedPublish};

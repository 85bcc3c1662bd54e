//! Domain types shared by every oxcast crate.
//!
//! Nothing here does I/O except [`config::Config::load`], which reads one optional TOML file and
//! the `OXCAST_*` environment. IDs are typed so a video ID can never be passed where an upload ID
//! is expected, and time is read through [`clock::Clock`] so leases and expiries can be tested
//! without sleeping.

pub mod clock;
pub mod config;
pub mod id;
pub mod ratelog;
pub mod roles;

pub use clock::{Clock, SystemClock};
pub use config::Config;
pub use id::{JobId, SessionId, StreamId, UploadId, VideoId};

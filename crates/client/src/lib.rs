//! Upload client for an oxcast server: the library behind `oxcast upload`.
//!
//! The server's upload protocol is multipart: `POST /api/v1/uploads` opens an upload and hands
//! back one signed URL per part, every part is `PUT` (in parallel, in any order) to its URL, and
//! `POST /api/v1/uploads/{id}/complete` lists each part's ETag to close the upload and queue the
//! video for transcoding.
//!
//! - [`Client`] is a thin typed wrapper over that HTTP API (one method per endpoint).
//! - [`upload_file`] drives a whole upload: it splits the file into parts with positioned reads
//!   ([`parts`]), sends them with bounded concurrency and per-part retries, completes the upload
//!   and optionally waits until the video is transcoded. Interrupted uploads resume: a small
//!   state file ([`state`]) remembers the upload ID, and a re-run sends only the parts the
//!   server does not already hold.
//! - [`Progress`] reports what happens; [`BarProgress`] draws terminal bars, [`NoProgress`] is
//!   silent.
//!
//! Errors are one [`Error`] enum whose messages name the step, the part and the server's own
//! error text, so a command-line front end can print them as they are.

mod api;
mod error;
pub mod parts;
mod progress;
pub mod state;
mod upload;

pub use api::{
    resolve_url, Client, CompletePart, CompleteRequest, CreateUploadRequest, CreatedUpload,
    PartUrl, Rendition, StoredPart, UploadState, UploadStatus, VideoInfo, VideoStatus,
};
pub use error::{Error, Result};
pub use progress::{BarProgress, NoProgress, Progress};
pub use upload::{default_state_dir, upload_file, UploadOptions};

//! Live manifests rendered once per change and shared by every request.
//!
//! Thousands of LL-HLS players hold a blocking reload for the next part of the same rendition,
//! and all wake when it is published. Building the playlist model and its text per waiter would
//! cost O(viewers × session length) on every part; instead the first request after a change
//! builds a [`Snapshot`] of the rendition (under the session's lock, once), and everybody else
//! checks its blocking condition against that snapshot and sends the same bytes, compressed at
//! most once per coding.
//!
//! Versions come from the session's change counter: a snapshot is labelled with the counter as
//! read *before* the state was read, so it can only be newer than its label, never older, and
//! the next change always replaces it.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

use bytes::Bytes;
use oxcast_media::compress::Compressible;
use oxcast_media::hls::LivePlaylist;

use crate::state::SessionState;
use crate::LiveError;

/// One rendition's playlist at one version of the session.
#[derive(Debug)]
pub struct Snapshot {
    pub version: u64,
    pub playlist: LivePlaylist,
    /// A publisher was connected: a blocking request may wait for more.
    pub publishing: bool,
    full: OnceLock<Arc<Compressible>>,
    delta: OnceLock<Arc<Compressible>>,
}

impl Snapshot {
    /// The playlist text, whole or as a delta update (`_HLS_skip`).
    pub fn body(&self, skip: bool) -> Arc<Compressible> {
        let cell = if skip { &self.delta } else { &self.full };
        cell.get_or_init(|| {
            let text = self.playlist.render(skip);
            Arc::new(Compressible::new(Bytes::from(text)))
        })
        .clone()
    }
}

impl Snapshot {
    /// A snapshot made elsewhere (another node's published playlist).
    pub(crate) fn new(version: u64, playlist: LivePlaylist, publishing: bool) -> Self {
        Snapshot {
            version,
            playlist,
            publishing,
            full: OnceLock::new(),
            delta: OnceLock::new(),
        }
    }

    /// Whether a request for segment `msn` (part `part`) is answered with this snapshot
    /// (`true`) or held for a later one; `None` for a plain reload.
    pub(crate) fn answers(&self, msn: Option<u64>, part: Option<u64>) -> Result<bool, LiveError> {
        let Some(m) = msn else { return Ok(true) };
        let pl = &self.playlist;
        // With no publisher connected (the reconnect grace period) nothing new is coming:
        // answer now rather than hold the request.
        if pl.ended || pl.has_part(m, part) || !self.publishing {
            return Ok(true);
        }
        let next = pl.next_number();
        if m > next + 2 {
            return Err(LiveError::BadRequest(format!(
                "_HLS_msn={m} is too far ahead of the live edge ({next})"
            )));
        }
        Ok(false)
    }
}

/// A manifest that is the same for every viewer at one version.
type Doc = Mutex<Option<((u64, i64), Arc<Compressible>)>>;

#[derive(Default)]
pub(crate) struct Rendered {
    media: Mutex<HashMap<String, Arc<Snapshot>>>,
    master: Doc,
    mpd: Doc,
}

impl Rendered {
    /// `rendition`'s snapshot at `version` or later; `None` when there is no such rendition
    /// (yet).
    pub(crate) fn media(
        &self,
        state: &Mutex<SessionState>,
        rendition: &str,
        version: u64,
    ) -> Option<Arc<Snapshot>> {
        // Held while building, so that a herd of woken requests builds one snapshot, not one
        // each; the lock order is always this map, then the session state.
        let mut map = self.media.lock().expect("rendered");
        if let Some(s) = map.get(rendition) {
            if s.version >= version {
                return Some(s.clone());
            }
        }
        let snap = {
            let st = state.lock().expect("state");
            let playlist = st.playlist(rendition)?;
            Snapshot::new(version, playlist, st.publishing)
        };
        let snap = Arc::new(snap);
        map.insert(rendition.to_string(), snap.clone());
        Some(snap)
    }

    pub(crate) fn master(
        &self,
        version: u64,
        render: impl FnOnce() -> Option<String>,
    ) -> Option<Arc<Compressible>> {
        doc(&self.master, (version, 0), render)
    }

    /// The MPD also states the time it was published and the DVR depth, so it is kept for one
    /// version and at most one second of the clock (`second`).
    pub(crate) fn mpd(
        &self,
        version: u64,
        second: i64,
        render: impl FnOnce() -> Option<String>,
    ) -> Option<Arc<Compressible>> {
        doc(&self.mpd, (version, second), render)
    }
}

fn doc(
    cell: &Doc,
    version: (u64, i64),
    render: impl FnOnce() -> Option<String>,
) -> Option<Arc<Compressible>> {
    let mut d = cell.lock().expect("rendered");
    if let Some((v, body)) = &*d {
        if *v == version {
            return Some(body.clone());
        }
    }
    let body = Arc::new(Compressible::new(Bytes::from(render()?)));
    *d = Some((version, body.clone()));
    Some(body)
}

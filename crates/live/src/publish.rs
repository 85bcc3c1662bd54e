//! Publishing a session for the other API nodes: every playlist change is written to the bucket
//! (after the objects it lists) and signalled on the database's change channel, so that any
//! node can answer a blocking reload as soon as the encoder's node could ([`crate::replica`]).
//!
//! Under the recording's folder (`videos/{video}/live/`), so they go with it:
//! - `{rendition}.json`: the rendition's [`LivePlaylist`] model, with the change counter and
//!   whether a publisher is connected. Other nodes render it with the same code as this one,
//!   whole or as a delta update, and check blocking conditions against it.
//! - `master.m3u8` and `manifest.mpd` as rendered here.
//!
//! A playlist is queued on the same ordered writer as the parts and segments it lists, after
//! them, so a node that reads it can fetch everything it names.

use bytes::Bytes;
use oxcast_base::{SessionId, StreamId, VideoId};
use oxcast_media::hls::LivePlaylist;
use oxcast_store::{keys, Key};
use serde::{Deserialize, Serialize};

use crate::package::Write;
use crate::session::Session;

/// The change channel's topic.
pub(crate) const TOPIC: &str = "oxcast_live";

/// A rendition's playlist as another node needs it.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct MediaDoc {
    pub version: u64,
    pub publishing: bool,
    pub playlist: LivePlaylist,
}

/// What changed, as signalled.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Signal {
    /// A rendition's playlist (`{rendition}.json`).
    Media(SessionId, String),
    /// The master playlist or the MPD of a session.
    Manifests(SessionId),
    /// A stream's session started or ended.
    Stream(StreamId),
}

impl Signal {
    pub(crate) fn payload(&self) -> String {
        match self {
            Signal::Media(s, r) => format!("m/{s}/{r}"),
            Signal::Manifests(s) => format!("d/{s}"),
            Signal::Stream(s) => format!("s/{s}"),
        }
    }

    /// Anything else (another version's signal, garbage) is `None` and ignored.
    pub(crate) fn parse(p: &str) -> Option<Signal> {
        let mut it = p.splitn(3, '/');
        match (it.next()?, it.next()?, it.next()) {
            ("m", s, Some(r)) if !r.is_empty() && !r.contains('/') => {
                Some(Signal::Media(s.parse().ok()?, r.to_string()))
            }
            ("d", s, None) => Some(Signal::Manifests(s.parse().ok()?)),
            ("s", s, None) => Some(Signal::Stream(s.parse().ok()?)),
            _ => None,
        }
    }
}

pub(crate) fn media_key(video: VideoId, rendition: &str) -> Option<Key> {
    keys::video_object(video, &format!("live/{rendition}.json")).ok()
}

pub(crate) fn manifest_key(video: VideoId, name: &str) -> Option<Key> {
    keys::video_object(video, &format!("live/{name}")).ok()
}

pub(crate) const MASTER: &str = "master.m3u8";
pub(crate) const MPD: &str = "manifest.mpd";
/// The DASH clock every node serves, relative to the origin.
pub(crate) const UTC_TIMING: &str = "/time";

impl Session {
    /// Queues `rendition`'s playlist as it is now, behind the objects already queued.
    pub(crate) async fn publish_media(&self, rendition: &str) {
        let version = *self.changed.borrow();
        let Some(snap) = self.rendered.media(&self.state, rendition, version) else {
            return;
        };
        let (video, session) = self.ids();
        let doc = MediaDoc {
            version: snap.version,
            publishing: snap.publishing,
            playlist: snap.playlist.clone(),
        };
        let (Some(key), Ok(json)) = (media_key(video, rendition), serde_json::to_vec(&doc)) else {
            return;
        };
        let signal = Signal::Media(session, rendition.to_string());
        let _ = self
            .writer
            .send(Write::Publish(key, Bytes::from(json), signal))
            .await;
    }

    /// Queues the master playlist and the MPD, once every rendition has started.
    pub(crate) async fn publish_manifests(&self, now_ms: i64) {
        let (video, session) = self.ids();
        let (master, mpd) = {
            let st = self.state.lock().expect("state");
            let prefix = format!("{session}/");
            (st.master(&prefix), st.mpd(&prefix, UTC_TIMING, now_ms))
        };
        let (Some(master), Some(mpd)) = (master, mpd) else {
            return;
        };
        for (name, text) in [(MASTER, master), (MPD, mpd)] {
            if let Some(key) = manifest_key(video, name) {
                let _ = self.writer.send(Write::Put(key, Bytes::from(text))).await;
            }
        }
        let _ = self
            .writer
            .send(Write::Signal(Signal::Manifests(session)))
            .await;
    }

    /// Every rendition and the manifests: after a publisher comes or goes, and at the end.
    pub(crate) async fn publish_all(&self, now_ms: i64) {
        let names: Vec<String> = {
            let st = self.state.lock().expect("state");
            st.renditions.iter().map(|r| r.name.clone()).collect()
        };
        for n in &names {
            self.publish_media(n).await;
        }
        self.publish_manifests(now_ms).await;
    }

    fn ids(&self) -> (VideoId, SessionId) {
        let st = self.state.lock().expect("state");
        (st.video_id, st.session_id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signals_round_trip_and_garbage_is_ignored() {
        let s = SessionId::new();
        let t = StreamId::new();
        for sig in [
            Signal::Media(s, "720p".into()),
            Signal::Manifests(s),
            Signal::Stream(t),
        ] {
            assert_eq!(Signal::parse(&sig.payload()), Some(sig));
        }
        for bad in [
            "",
            "m",
            "m/",
            &format!("m/{s}"),
            &format!("m/{s}/"),
            &format!("m/{s}/a/b"),
            "m/not-an-id/720p",
            &format!("d/{s}/x"),
            &format!("x/{s}"),
            "s/",
        ] {
            assert_eq!(Signal::parse(bad), None, "{bad:?}");
        }
    }
}

//! Which node's view answers a live request: this node's own session while it runs the
//! stream, else the replica of what another node published.

use std::sync::Arc;

use oxcast_base::{SessionId, StreamId};
use oxcast_media::compress::Compressible;

use crate::publish::UTC_TIMING;
use crate::replica::Replica;
use crate::{LiveError, LiveManager, LiveObject};

pub struct LiveServe {
    pub local: Option<Arc<LiveManager>>,
    pub replica: Option<Arc<Replica>>,
}

impl LiveServe {
    fn local(&self, stream: StreamId, session: Option<SessionId>) -> Option<&LiveManager> {
        self.local.as_deref().filter(|m| m.serves(stream, session))
    }

    fn replica(&self) -> Result<&Replica, LiveError> {
        self.replica.as_deref().ok_or(LiveError::NotLive)
    }

    /// The stream's current session: this node's while it runs it, else the one the database
    /// says is live (wherever it runs), else this node's last one, ended.
    pub async fn master(&self, stream: StreamId) -> Result<Arc<Compressible>, LiveError> {
        if let Some(m) = self.local.as_deref().filter(|m| m.runs(stream)) {
            return m.master(stream);
        }
        if let Some(r) = &self.replica {
            match r.master(stream).await {
                Err(LiveError::NotLive) => {}
                other => return other,
            }
        }
        match self.local(stream, None) {
            Some(m) => m.master(stream),
            None => Err(LiveError::NotLive),
        }
    }

    pub async fn mpd(&self, stream: StreamId) -> Result<Arc<Compressible>, LiveError> {
        if let Some(m) = self.local.as_deref().filter(|m| m.runs(stream)) {
            return m.mpd(stream, UTC_TIMING);
        }
        if let Some(r) = &self.replica {
            match r.mpd(stream).await {
                Err(LiveError::NotLive) => {}
                other => return other,
            }
        }
        match self.local(stream, None) {
            Some(m) => m.mpd(stream, UTC_TIMING),
            None => Err(LiveError::NotLive),
        }
    }

    pub async fn media_playlist(
        &self,
        stream: StreamId,
        session: SessionId,
        rendition: &str,
        msn: Option<u64>,
        part: Option<u64>,
        skip: bool,
    ) -> Result<Arc<Compressible>, LiveError> {
        match self.local(stream, Some(session)) {
            Some(m) => {
                m.media_playlist(stream, session, rendition, msn, part, skip)
                    .await
            }
            None => {
                self.replica()?
                    .media_playlist(stream, session, rendition, msn, part, skip)
                    .await
            }
        }
    }

    pub async fn object(
        &self,
        stream: StreamId,
        session: SessionId,
        rendition: &str,
        file: &str,
    ) -> Result<LiveObject, LiveError> {
        match self.local(stream, Some(session)) {
            Some(m) => m.object(stream, session, rendition, file).await,
            None => {
                self.replica()?
                    .object(stream, session, rendition, file)
                    .await
            }
        }
    }
}

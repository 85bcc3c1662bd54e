//! This node's own sessions, served: the stable manifests, blocking media playlists, and the
//! inits, parts and segments of the current session (from memory while hot, else the store).

use super::*;

impl LiveManager {
    /// The stable master playlist of the stream's current session.
    pub fn master(&self, stream: StreamId) -> Result<Arc<Compressible>, LiveError> {
        let s = self.session(stream).ok_or(LiveError::NotLive)?;
        let version = *s.changed.borrow();
        s.rendered
            .master(version, || {
                let st = s.state.lock().expect("state");
                st.master(&format!("{}/", st.session_id))
            })
            .ok_or(LiveError::Starting)
    }

    pub fn mpd(
        &self,
        stream: StreamId,
        utc_timing_url: &str,
    ) -> Result<Arc<Compressible>, LiveError> {
        let s = self.session(stream).ok_or(LiveError::NotLive)?;
        let version = *s.changed.borrow();
        let now = self.clock.now_ms();
        s.rendered
            .mpd(version, now.div_euclid(1000), || {
                let st = s.state.lock().expect("state");
                st.mpd(&format!("{}/", st.session_id), utc_timing_url, now)
            })
            .ok_or(LiveError::Starting)
    }

    pub(super) fn session_for(
        &self,
        stream: StreamId,
        session: SessionId,
    ) -> Result<Arc<Session>, LiveError> {
        let s = self.session(stream).ok_or(LiveError::NotLive)?;
        if s.state.lock().expect("state").session_id != session {
            return Err(LiveError::NotFound("session".into()));
        }
        Ok(s)
    }

    /// A rendition's media playlist. With `msn` it is a blocking reload: held until segment
    /// `msn` (part `part`) exists, or the session ends, or three target durations pass.
    pub async fn media_playlist(
        &self,
        stream: StreamId,
        session: SessionId,
        rendition: &str,
        msn: Option<u64>,
        part: Option<u64>,
        skip: bool,
    ) -> Result<Arc<Compressible>, LiveError> {
        if part.is_some() && msn.is_none() {
            return Err(LiveError::BadRequest("_HLS_part requires _HLS_msn".into()));
        }
        let s = self.session_for(stream, session)?;
        let mut changed = s.changed.subscribe();
        let deadline = tokio::time::Instant::now()
            + Duration::from_secs_f64(3.0 * self.config.live.segment_s.max(1.0));
        loop {
            // Read before the snapshot: any change after this wakes `changed` below.
            let version = *changed.borrow_and_update();
            let snap = s
                .rendered
                .media(&s.state, rendition, version)
                .ok_or_else(|| LiveError::NotFound(format!("rendition {rendition}")))?;
            if snap.answers(msn, part)? {
                return Ok(snap.body(skip));
            }
            tokio::select! {
                r = changed.changed() => if r.is_err() { return Err(LiveError::NotLive) },
                _ = tokio::time::sleep_until(deadline) => return Err(LiveError::Timeout),
            }
        }
    }

    /// An init, part or segment of the current session: from memory while hot, else the store.
    pub async fn object(
        &self,
        stream: StreamId,
        session: SessionId,
        rendition: &str,
        file: &str,
    ) -> Result<LiveObject, LiveError> {
        let s = self.session_for(stream, session)?;
        // The segment in progress (low-latency DASH) and the part the preload hint names
        // (LL-HLS) are sent as they are written; the next ones are held until they start.
        if let Some(what) = Growing::of(file) {
            let hold = Duration::from_secs_f64(self.config.live.segment_s.max(1.0));
            if let Some(o) = growing::open(s.clone(), rendition.to_string(), what, hold).await {
                return Ok(o);
            }
        }
        let video = {
            let st = s.state.lock().expect("state");
            if let Some(b) = st.hot(rendition, file) {
                return Ok(LiveObject::Whole(b));
            }
            st.video_id
        };
        let key = keys::video_object(video, &format!("{rendition}/{file}"))
            .map_err(|_| LiveError::NotFound(file.into()))?;
        match self.store.get_bytes(&key).await {
            Ok(b) => Ok(LiveObject::Whole(b)),
            Err(oxcast_store::Error::NotFound(_)) => Err(LiveError::NotFound(file.into())),
            Err(e) => Err(e.into()),
        }
    }
}

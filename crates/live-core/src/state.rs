//! The in-memory state of one live session and everything rendered from it.
//!
//! Each rendition's fMP4 fragments arrive as LL-HLS parts; this module groups them into
//! segments (cutting where the encoder put keyframes), remembers what exists, and renders the
//! playlists and MPD on request. It is plain data guarded by the session's lock: no I/O.

use bytes::Bytes;
use oxcast_base::{SessionId, StreamId, VideoId};
use oxcast_media::ladder::Rung;
use oxcast_media::mp4::TrackInfo;

mod manifests;
mod rendition;

pub use rendition::{Added, Completed, RenditionState};

#[derive(Debug, Clone, PartialEq)]
pub struct PartMeta {
    pub duration_s: f64,
    pub independent: bool,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Segment {
    pub number: u64,
    pub epoch: u32,
    /// Decode time of the first sample within its epoch, timescale units.
    pub start_ticks: u64,
    pub ticks: u64,
    pub duration_s: f64,
    pub parts: Vec<PartMeta>,
    /// First segment of an epoch after the first: the publisher reconnected.
    pub discontinuity: bool,
    /// Wall clock of the segment's first sample, epoch ms.
    pub pdt_ms: i64,
    pub bytes: u64,
}

/// A session's epochs: a new one starts each time the publisher (re)connects.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Epoch {
    /// When the ingest received the epoch's first media, epoch ms.
    pub wall_start_ms: i64,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct Health {
    pub ingest_bytes: u64,
    pub fps: f64,
    pub dropped_frames: u64,
    pub encoder_speed: f64,
}

pub struct SessionState {
    pub stream_id: StreamId,
    pub session_id: SessionId,
    pub video_id: VideoId,
    pub started_at_ms: i64,
    pub segment_s: f64,
    pub part_s: f64,
    pub renditions: Vec<RenditionState>,
    pub epochs: Vec<Epoch>,
    pub publishing: bool,
    pub ended: bool,
    pub health: Health,
    /// Seconds from the ingest receiving a part's last media to the part being listed.
    pub part_latency: Vec<f64>,
    pub segment_latency: Vec<f64>,
    /// The publisher's video carried CEA-608/708 captions when probed (the encoder keeps
    /// them). Without them the master says `CLOSED-CAPTIONS=NONE`, which also spares players
    /// that would otherwise probe segments for captions (Shaka's low-latency HLS mode fails on
    /// the segment in progress when it does).
    pub source_captions: bool,
    /// The time-shift window (`live.dvr_window_s`); `None` keeps the whole session listed.
    pub dvr_window_s: Option<f64>,
}

pub const AUDIO: &str = "audio";

/// A segment as it is being written: see [`SessionState::segment_progress`].
#[derive(Debug, PartialEq)]
pub enum Progress {
    /// The segment after the one in progress: not started yet.
    NotYet,
    /// In progress; the bytes written since the offset asked about (maybe none).
    Writing(Bytes),
    /// Complete (the whole segment).
    Done(Bytes),
    /// Not in memory (old, or never written): read it from the store.
    Gone,
}

impl SessionState {
    pub fn new(
        stream_id: StreamId,
        session_id: SessionId,
        video_id: VideoId,
        started_at_ms: i64,
        segment_s: f64,
        part_s: f64,
    ) -> Self {
        Self {
            stream_id,
            session_id,
            video_id,
            started_at_ms,
            segment_s,
            part_s,
            renditions: Vec::new(),
            epochs: Vec::new(),
            publishing: false,
            ended: false,
            health: Health::default(),
            part_latency: Vec::new(),
            segment_latency: Vec::new(),
            source_captions: false,
            dvr_window_s: None,
        }
    }

    /// Fixes the session's renditions (the first epoch's ladder; later epochs reuse it).
    pub fn set_renditions(&mut self, rungs: &[Rung], audio: bool) {
        if !self.renditions.is_empty() {
            return;
        }
        let mut r: Vec<RenditionState> = rungs
            .iter()
            .map(|r| RenditionState::new(&r.name, Some(r.clone())))
            .collect();
        if audio {
            r.push(RenditionState::new(AUDIO, None));
        }
        self.renditions = r;
    }

    pub fn begin_epoch(&mut self, wall_start_ms: i64) -> u32 {
        self.epochs.push(Epoch { wall_start_ms });
        let e = (self.epochs.len() - 1) as u32;
        for r in &mut self.renditions {
            r.begin_epoch(e);
        }
        e
    }

    pub fn rendition(&mut self, name: &str) -> Option<&mut RenditionState> {
        self.renditions.iter_mut().find(|r| r.name == name)
    }

    /// Any object held in memory.
    pub fn hot(&self, rendition: &str, file: &str) -> Option<Bytes> {
        let r = self.renditions.iter().find(|r| r.name == rendition)?;
        r.hot.get(file).or_else(|| r.inits.get(file)).cloned()
    }

    /// Where segment `number` of `rendition` stands, for sending it while it is written
    /// (low-latency DASH): its bytes from `from` on.
    pub fn segment_progress(&self, rendition: &str, number: u64, from: usize) -> Progress {
        let Some(r) = self.renditions.iter().find(|r| r.name == rendition) else {
            return Progress::Gone;
        };
        if number == r.next_number && !r.open.data.is_empty() {
            let data = &r.open.data;
            return Progress::Writing(Bytes::copy_from_slice(&data[from.min(data.len())..]));
        }
        if number == r.next_number || (number == r.next_number + 1 && !self.ended) {
            return if self.ended {
                Progress::Gone
            } else {
                Progress::NotYet
            };
        }
        match r.hot.get(&format!("seg-{number}.m4s")) {
            Some(b) if number < r.next_number => Progress::Done(b.clone()),
            _ => Progress::Gone,
        }
    }

    /// Where part `file` of `rendition` stands, for sending the part a preload hint names
    /// while it is written: its bytes from `from` on. `NotYet` while its first chunk is still
    /// to come; `Gone` for a part that is neither in memory nor the next.
    pub fn part_progress(&self, rendition: &str, file: &str, from: usize) -> Progress {
        let Some(r) = self.renditions.iter().find(|r| r.name == rendition) else {
            return Progress::Gone;
        };
        if let Some(b) = r.hot.get(file) {
            return Progress::Done(b.clone());
        }
        if self.ended || r.next_part_name() != file {
            return Progress::Gone;
        }
        match r.part_bytes(from) {
            Some(b) => Progress::Writing(Bytes::copy_from_slice(b)),
            None if self.publishing => Progress::NotYet,
            None => Progress::Gone,
        }
    }

    pub fn latency_estimate(&self) -> Option<f64> {
        let recent = &self.part_latency[self.part_latency.len().saturating_sub(8)..];
        (!recent.is_empty())
            .then(|| recent.iter().sum::<f64>() / recent.len() as f64 + 3.0 * self.part_target())
    }

    pub fn part_target(&self) -> f64 {
        // AAC parts end on a 1024-sample frame boundary, a little past the nominal duration.
        (self.part_s * 1.05 * 1000.0).ceil() / 1000.0
    }

    fn target_duration(&self) -> u64 {
        let longest = self
            .renditions
            .iter()
            .flat_map(|r| r.segments.iter().map(|s| s.duration_s))
            .fold(0.0, f64::max);
        // RFC 8216: every EXTINF, rounded to the nearest integer, is at most the target.
        (longest.round().max(self.segment_s.ceil())).max(1.0) as u64
    }

    /// The renditions ready to be listed (their init arrived).
    fn ready(&self) -> impl Iterator<Item = &RenditionState> {
        self.renditions.iter().filter(|r| r.track.is_some())
    }
}

impl SessionState {
    /// Continues a session that another encoder ran until it was lost, from the index of its
    /// stored segments: each rendition carries on after its last one. Call after
    /// [`SessionState::set_renditions`] (the same ladder: the same source) and before the next
    /// [`SessionState::begin_epoch`], which then numbers its epoch after every stored one.
    /// Segments of a rendition this ladder does not have are left out.
    pub fn continue_from(&mut self, stored: Vec<(String, Segment)>) {
        let mut walls: Vec<Option<i64>> = Vec::new();
        for (name, seg) in stored {
            let e = seg.epoch as usize;
            if walls.len() <= e {
                walls.resize(e + 1, None);
            }
            // A segment's program date time is its epoch's start plus its media time, and each
            // epoch's media time starts near zero.
            let w = &mut walls[e];
            *w = Some(w.map_or(seg.pdt_ms, |w: i64| w.min(seg.pdt_ms)));
            if let Some(r) = self.rendition(&name) {
                r.segments.push(seg);
            }
        }
        for r in &mut self.renditions {
            r.segments.sort_by_key(|s| s.number);
            r.segments.dedup_by_key(|s| s.number);
            if let Some(last) = r.segments.last() {
                r.next_number = last.number + 1;
                r.epoch = last.epoch;
            }
        }
        self.ensure_epochs(walls.len() as u32);
        for (e, w) in walls.into_iter().enumerate() {
            if let Some(w) = w {
                self.epochs[e].wall_start_ms = w;
            }
        }
    }

    /// Makes sure epochs `0..n` exist (an epoch whose start is unknown gets the one before).
    pub fn ensure_epochs(&mut self, n: u32) {
        while self.epochs.len() < n as usize {
            let wall = self
                .epochs
                .last()
                .map_or(self.started_at_ms, |e| e.wall_start_ms);
            self.epochs.push(Epoch {
                wall_start_ms: wall,
            });
        }
    }
}

/// A rendition rebuilt from stored objects after the process that ran its session died.
#[derive(Debug)]
pub struct RestoredRendition {
    pub name: String,
    pub track: TrackInfo,
    pub segments: Vec<Segment>,
}

impl SessionState {
    /// An ended session made from what was stored, so its recording can still be published.
    pub fn restore(
        stream_id: StreamId,
        session_id: SessionId,
        video_id: VideoId,
        started_at_ms: i64,
        segment_s: f64,
        part_s: f64,
        renditions: Vec<RestoredRendition>,
    ) -> Self {
        let mut st = Self::new(
            stream_id,
            session_id,
            video_id,
            started_at_ms,
            segment_s,
            part_s,
        );
        let epochs = renditions
            .iter()
            .flat_map(|r| r.segments.iter().map(|s| s.epoch))
            .max()
            .map_or(0, |e| e + 1);
        st.epochs = (0..epochs)
            .map(|_| Epoch {
                wall_start_ms: started_at_ms,
            })
            .collect();
        for r in renditions {
            let rung = (r.track.kind == oxcast_media::mp4::TrackKind::Video).then(|| {
                let (w, h) = (r.track.width.unwrap_or(0), r.track.height.unwrap_or(0));
                Rung {
                    name: r.name.clone(),
                    width: w,
                    height: h,
                    video_bitrate: 0,
                    max_bitrate: 0,
                    buffer_size: 0,
                }
            });
            let mut rs = RenditionState::new(&r.name, rung);
            rs.epoch = r.segments.last().map_or(0, |s| s.epoch);
            rs.next_number = r.segments.last().map_or(1, |s| s.number + 1);
            rs.track = Some(r.track);
            rs.segments = r.segments;
            st.renditions.push(rs);
        }
        // Video first, as a live session lists them.
        st.renditions.sort_by_key(|r| {
            (
                r.rung.is_none(),
                std::cmp::Reverse(r.rung.as_ref().map_or(0, |g| g.height.min(g.width))),
            )
        });
        st.ended = true;
        st
    }
}

fn ticks_ms(ticks: u64, timescale: u32) -> i64 {
    (ticks as f64 * 1000.0 / f64::from(timescale.max(1))) as i64
}

pub fn rfc3339_ms(ms: i64) -> String {
    let t = std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms.max(0) as u64);
    humantime::format_rfc3339_millis(t).to_string()
}

#[cfg(test)]
mod tests {
    use super::rendition::tests::{frag, rung_360p, video, whole_part};
    use super::*;
    use oxcast_base::{SessionId, StreamId, VideoId};
    use oxcast_media::mp4::Fragment;

    fn session() -> SessionState {
        let mut st = SessionState::new(
            StreamId::new(),
            SessionId::new(),
            VideoId::new(),
            1_000_000,
            2.0,
            0.5,
        );
        st.set_renditions(&[rung_360p()], false);
        st
    }

    fn feed(st: &mut SessionState, epoch: u32, parts: u64) {
        let wall = st.epochs[epoch as usize].wall_start_ms;
        let r = st.rendition("360p").unwrap();
        if r.track.is_none() || epoch > 0 {
            r.set_init(epoch, video().track.unwrap(), Bytes::new());
        }
        for i in 0..parts {
            whole_part(r, frag(i * 500, 500, i % 4 == 0), b"p", wall);
        }
    }

    #[test]
    fn live_playlist_has_parts_hint_and_a_restated_map_after_a_reconnect() {
        let mut st = session();
        st.begin_epoch(1_000_000);
        feed(&mut st, 0, 6);
        let pl = st.playlist("360p").unwrap().render(false);
        assert!(pl.contains("#EXT-X-MAP:URI=\"init-0.mp4\"\n#EXT-X-PROGRAM-DATE-TIME:1970-01-01T00:16:40.000Z\n"), "{pl}");
        assert!(pl.contains("#EXTINF:2.00000,\nseg-1.m4s\n"), "{pl}");
        assert!(
            pl.contains("#EXT-X-PART:DURATION=0.50000,URI=\"part-2-1.m4s\"\n"),
            "{pl}"
        );
        assert!(
            pl.ends_with("#EXT-X-PRELOAD-HINT:TYPE=PART,URI=\"part-2-2.m4s\"\n"),
            "{pl}"
        );
        assert!(pl.contains("#EXT-X-TARGETDURATION:2\n"), "{pl}");

        // The publisher drops mid-segment and comes back 5 s later.
        st.rendition("360p").unwrap().close(1_000_000);
        st.begin_epoch(1_010_000);
        feed(&mut st, 1, 4);
        let pl = st.playlist("360p").unwrap().render(false);
        assert!(
            pl.contains("seg-2.m4s\n#EXT-X-DISCONTINUITY\n#EXT-X-MAP:URI=\"init-1.mp4\"\n#EXT-X-PROGRAM-DATE-TIME:1970-01-01T00:16:50.000Z\n"),
            "{pl}"
        );
        assert!(
            pl.contains("#EXTINF:1.00000,\nseg-2.m4s"),
            "the cut-short segment keeps its real length: {pl}"
        );
        let p = st.playlist("360p").unwrap();
        assert!(p.has_part(3, Some(3)));
        assert!(!p.has_part(4, Some(0)));
    }

    #[test]
    fn a_session_taken_over_continues_after_the_lost_encoders_last_segment() {
        // Encoder A: two segments stored and indexed, two parts of the third listed.
        let mut a = session();
        a.begin_epoch(1_000_000);
        feed(&mut a, 0, 10);
        let stored: Vec<(String, Segment)> = a.renditions[0]
            .segments
            .iter()
            // The index keeps no parts.
            .map(|s| {
                (
                    "360p".to_string(),
                    Segment {
                        parts: Vec::new(),
                        ..s.clone()
                    },
                )
            })
            .collect();
        assert_eq!(stored.len(), 2);
        let chunks: Vec<(Fragment, Bytes)> = (8..10)
            .map(|i| (frag(i * 500, 500, false), Bytes::from_static(b"q")))
            .collect();

        // Encoder B takes the session over from the index and the open parts.
        let mut b = session();
        b.continue_from(stored);
        assert_eq!(
            b.epochs, a.epochs,
            "the epoch's start comes from its first segment"
        );
        let r = b.rendition("360p").unwrap();
        let done = r.complete_open(
            0,
            video().track.unwrap(),
            Bytes::new(),
            &chunks,
            2.0,
            0.525,
            1_000_000,
        );
        assert_eq!(done.len(), 1);
        let third = &done[0].segment;
        assert_eq!((third.number, third.epoch, third.start_ticks), (3, 0, 4000));
        assert_eq!(third.duration_s, 1.0);
        assert!(!third.discontinuity);
        assert_eq!(&done[0].data[..], b"qq");
        assert_eq!(
            b.begin_epoch(1_020_000),
            1,
            "numbered after the stored epochs"
        );
        feed(&mut b, 1, 4);
        let pl = b.playlist("360p").unwrap().render(false);
        assert!(
            pl.contains("#EXTINF:2.00000,\nseg-2.m4s\n#EXT-X-PART:DURATION=0.50000,URI=\"part-3-0.m4s\"\n#EXT-X-PART:DURATION=0.50000,URI=\"part-3-1.m4s\"\n#EXTINF:1.00000,\nseg-3.m4s\n#EXT-X-DISCONTINUITY\n#EXT-X-MAP:URI=\"init-1.mp4\"\n"),
            "{pl}"
        );
        assert!(pl.contains("seg-4.m4s\n"), "{pl}");
        assert!(b.playlist("360p").unwrap().has_part(4, Some(3)));
        let mpd = b.mpd("s/", "/time", 1_030_000).unwrap();
        assert!(
            mpd.contains("<Period id=\"p1\" start=\"PT20.000S\">"),
            "{mpd}"
        );
    }

    #[test]
    fn continuing_from_nothing_changes_nothing_and_unknown_renditions_are_left_out() {
        let mut st = session();
        st.continue_from(Vec::new());
        assert!(st.epochs.is_empty());
        assert_eq!(st.begin_epoch(5), 0);
        let mut st = session();
        let seg = Segment {
            number: 7,
            epoch: 2,
            start_ticks: 0,
            ticks: 2000,
            duration_s: 2.0,
            parts: Vec::new(),
            discontinuity: true,
            pdt_ms: 1_050_000,
            bytes: 10,
        };
        st.continue_from(vec![("1080p".into(), seg.clone()), ("360p".into(), seg)]);
        assert_eq!(st.renditions.len(), 1);
        assert_eq!(st.renditions[0].next_number, 8);
        let walls: Vec<i64> = st.epochs.iter().map(|e| e.wall_start_ms).collect();
        assert_eq!(walls, [1_000_000, 1_000_000, 1_050_000]);
        assert_eq!(st.begin_epoch(1_060_000), 3);
    }

    #[test]
    fn mpd_has_a_period_per_connection_on_the_wall_clock_then_back_to_back_when_ended() {
        let mut st = session();
        st.begin_epoch(1_000_000);
        feed(&mut st, 0, 4);
        st.begin_epoch(1_010_000);
        feed(&mut st, 1, 4);
        let live = st.mpd("s/", "/time", 1_020_000).unwrap();
        assert!(live.contains("type=\"dynamic\""), "{live}");
        assert!(
            live.contains("<Period id=\"p0\" start=\"PT0.000S\">"),
            "{live}"
        );
        assert!(
            live.contains("<Period id=\"p1\" start=\"PT10.000S\">"),
            "{live}"
        );
        assert!(
            live.contains("initialization=\"s/360p/init-1.mp4\""),
            "{live}"
        );
        assert!(live.contains("startNumber=\"2\""), "{live}");
        st.ended = true;
        let done = st.mpd("", "/time", 1_030_000).unwrap();
        assert!(
            done.contains("type=\"static\"")
                && done.contains("mediaPresentationDuration=\"PT4.000S\""),
            "{done}"
        );
        assert!(
            done.contains("<Period id=\"p1\" start=\"PT2.000S\">"),
            "{done}"
        );
    }

    #[test]
    fn a_dvr_window_slides_the_playlist_and_counts_what_left() {
        let mut st = session();
        st.dvr_window_s = Some(8.0);
        st.begin_epoch(1_000_000);
        feed(&mut st, 0, 16); // 8 s: four segments, all inside the window
        let pl = st.playlist("360p").unwrap();
        assert_eq!(pl.first_number, 1);
        assert!(
            !pl.playlist_type_event,
            "EVENT would promise to keep everything"
        );
        st.rendition("360p").unwrap().close(1_000_000);
        st.begin_epoch(1_010_000);
        feed(&mut st, 1, 24); // 12 s more after a reconnect
        let pl = st.playlist("360p").unwrap();
        let listed: f64 = pl.segments.iter().map(|s| s.duration).sum();
        assert!(pl.first_number > 4, "epoch 0 slid out: {}", pl.first_number);
        assert!((6.0..=8.0).contains(&listed), "{listed} s listed");
        let text = pl.render(false);
        assert!(text.contains("#EXT-X-DISCONTINUITY-SEQUENCE:1\n"), "{text}");
        assert!(!text.contains("#EXT-X-DISCONTINUITY\n"), "{text}");
        assert!(text.contains("#EXT-X-MAP:URI=\"init-1.mp4\""), "{text}");
        assert!(!text.contains("PLAYLIST-TYPE"), "{text}");

        // The MPD: its depth is the window; segments of one length keep their numbering from
        // the period start (the template computes them), so nothing needs listing.
        let mpd = st.mpd("", "/time", 1_022_000).unwrap();
        assert!(mpd.contains("timeShiftBufferDepth=\"PT12.000S\""), "{mpd}");
        assert!(!mpd.contains("<Period id=\"p0\""), "{mpd}");
        assert!(
            mpd.contains("startNumber=\"5\" availabilityTimeOffset=\"1.5\" availabilityTimeComplete=\"false\" duration=\"2000\"/>"),
            "{mpd}"
        );
        // Without a window everything stays listed.
        st.dvr_window_s = None;
        let pl = st.playlist("360p").unwrap();
        assert_eq!(pl.first_number, 1);
        assert!(pl.playlist_type_event);
    }

    #[test]
    fn master_waits_for_every_rendition_then_lists_them() {
        let mut st = session();
        st.begin_epoch(1_000_000);
        assert!(st.master("s/").is_none(), "no init yet");
        feed(&mut st, 0, 4);
        let m = st.master("s/").unwrap();
        assert!(
            m.contains("RESOLUTION=640x360") && m.contains("\ns/360p/index.m3u8\n"),
            "{m}"
        );
    }
}

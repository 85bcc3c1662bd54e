//! How many manifest bytes a live viewer fetches per minute, at 10 minutes and at 4 hours of
//! session, with and without a DVR window, compressed and not, full reloads and delta updates.
//! The session history is injected (two renditions and audio, 2 s segments of four 0.5 s
//! parts), so no encoder has to run for four hours. Run by `bench/manifests.sh`.

use bytes::Bytes;
use oxcast_base::{SessionId, StreamId, VideoId};
use oxcast_live::state::SessionState;
use oxcast_media::compress::{Coding, Compressible};
use oxcast_media::ladder::Rung;
use oxcast_media::mp4::{Fragment, TrackInfo, TrackKind};

const PART_S: f64 = 0.5;
const SEGMENT_S: f64 = 2.0;
/// An LL-HLS player reloads its media playlist once per part (blocking), for video and audio.
const PLAYLIST_FETCHES_PER_MIN: f64 = 2.0 * 60.0 / PART_S;
/// A DASH player reloads the MPD every minimumUpdatePeriod (one segment).
const MPD_FETCHES_PER_MIN: f64 = 60.0 / SEGMENT_S;

fn rung(h: u32) -> Rung {
    Rung {
        name: format!("{h}p"),
        width: h * 16 / 9,
        height: h,
        video_bitrate: 1_000_000,
        max_bitrate: 1_500_000,
        buffer_size: 2_000_000,
    }
}

fn session(seconds: u64, window: Option<f64>) -> SessionState {
    let start = 1_800_000_000_000;
    let mut st = SessionState::new(
        StreamId::new(),
        SessionId::new(),
        VideoId::new(),
        start,
        SEGMENT_S,
        PART_S,
    );
    st.dvr_window_s = window;
    st.set_renditions(&[rung(720), rung(360)], true);
    st.begin_epoch(start);
    for name in ["720p", "360p", "audio"] {
        let audio = name == "audio";
        let r = st.rendition(name).expect("rendition");
        r.set_init(
            0,
            TrackInfo {
                track_id: 1,
                kind: if audio {
                    TrackKind::Audio
                } else {
                    TrackKind::Video
                },
                timescale: if audio { 48_000 } else { 15_360 },
                codec: if audio { "mp4a.40.2" } else { "avc1.64001f" }.into(),
                width: (!audio).then_some(1280),
                height: (!audio).then_some(720),
                sample_rate: audio.then_some(48_000),
                channels: audio.then_some(2),
            },
            Bytes::new(),
        );
        let ts: u64 = if audio { 48_000 } else { 15_360 };
        let part = (PART_S * ts as f64) as u64;
        for i in 0..(seconds as f64 / PART_S) as u64 {
            let f = Fragment {
                range: 0..0,
                sequence_number: i as u32,
                base_media_decode_time: i * part,
                duration: part,
                sample_count: 15,
                starts_with_sync: audio || i % 4 == 0,
                earliest_presentation_time: (i * part) as i64,
            };
            // One chunk per part, as from an encoder writing whole parts.
            r.add_chunk(&f, b"x", SEGMENT_S, PART_S * 1.05, start);
        }
    }
    st.publishing = true;
    st
}

fn sizes(text: String) -> (usize, usize) {
    let c = Compressible::new(Bytes::from(text));
    (c.get(Coding::Identity).0.len(), c.get(Coding::Br).0.len())
}

fn main() {
    println!(
        "live manifest bytes per viewer per minute ({PLAYLIST_FETCHES_PER_MIN} media playlist \
         fetches, video + audio; {MPD_FETCHES_PER_MIN} MPD fetches)"
    );
    println!(
        "{:<9} {:<10} {:>12} {:>12} {:>12} {:>12} {:>12} {:>12}",
        "session", "window", "full KB/min", "full+br", "delta", "delta+br", "MPD KB/min", "MPD+br"
    );
    for (label, secs) in [("10 min", 600u64), ("4 h", 4 * 3600)] {
        for (wlabel, window) in [("whole", None), ("10 min", Some(600.0))] {
            let st = session(secs, window);
            let pl = st.playlist("720p").expect("playlist");
            let (full, full_br) = sizes(pl.render(false));
            let (delta, delta_br) = sizes(pl.render(true));
            let (mpd, mpd_br) = sizes(
                st.mpd("s/", "/time", st.started_at_ms + secs as i64 * 1000)
                    .expect("mpd"),
            );
            let per_min = |b: usize, n: f64| b as f64 * n / 1024.0;
            println!(
                "{label:<9} {wlabel:<10} {:>12.0} {:>12.0} {:>12.0} {:>12.0} {:>12.1} {:>12.1}",
                per_min(full, PLAYLIST_FETCHES_PER_MIN),
                per_min(full_br, PLAYLIST_FETCHES_PER_MIN),
                per_min(delta, PLAYLIST_FETCHES_PER_MIN),
                per_min(delta_br, PLAYLIST_FETCHES_PER_MIN),
                per_min(mpd, MPD_FETCHES_PER_MIN),
                per_min(mpd_br, MPD_FETCHES_PER_MIN),
            );
        }
    }
    println!(
        "before this change a viewer got the full playlist uncompressed (\"full\", whole session) \
         and a SegmentTimeline MPD; hls.js asks for delta updates (_HLS_skip=YES) and sends \
         Accept-Encoding, so \"delta+br\" is what it fetches now"
    );
}

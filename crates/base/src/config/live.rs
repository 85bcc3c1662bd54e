//! Live streaming: ingest listeners, segment and part lengths, the reconnect grace, the live
//! ladder and the DVR window.

use std::net::SocketAddr;

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct LiveConfig {
    /// RTMP ingest (`rtmp://host:port/live/<key>`); unset disables RTMP.
    pub rtmp_listen: Option<SocketAddr>,
    /// SRT ingest (`srt://host:port?streamid=<key>`); unset disables SRT.
    pub srt_listen: Option<SocketAddr>,
    /// Host name put into the RTMP/SRT URLs shown to streamers; default: the listen address.
    pub public_host: Option<String>,
    /// Segment duration and keyframe interval, seconds.
    pub segment_s: f64,
    /// LL-HLS part (fMP4 fragment) duration, seconds.
    pub part_s: f64,
    /// How long a dropped publisher may take to reconnect into the same session.
    pub grace_s: f64,
    /// Candidate rungs as short-side heights; those above the source are dropped.
    pub rungs: Vec<u32>,
    /// Also offer the source video itself, copied without re-encoding.
    pub passthrough: bool,
    /// x264 preset for live renditions (always with `-tune zerolatency`).
    pub preset: String,
    /// How far back live viewers may seek (the time-shift window), seconds; unset: the whole
    /// session. With a window, live playlists and MPDs slide and stay small however long the
    /// stream runs; the whole session is still recorded and replayable once it ends.
    pub dvr_window_s: Option<f64>,
    /// Where a `live` node takes publishers relayed by `ingest` nodes of other processes
    /// (`oxcast serve --roles ingest` on the machines streamers reach, `--roles live` on the
    /// machines with CPU to encode); unset: none, which is all a process that runs both roles
    /// needs. The relay is authenticated with `signing_key`, so every process of the deployment
    /// must share it; bind an address only the ingest nodes can reach.
    pub relay_listen: Option<SocketAddr>,
    /// `host:port` the ingest nodes connect to for `relay_listen`, as this node announces it in
    /// its heartbeat; default: `relay_listen` itself, which must then be an address the ingest
    /// nodes can reach (not `0.0.0.0`). Set it behind NAT, or to a name instead of an address.
    pub relay_advertise: Option<String>,
    /// The most a publisher may send, kbit/s averaged over 5 s; one over it is disconnected
    /// with the reason on the stream's status. 0: no limit. The default leaves room for
    /// 1080p60 and 4K from OBS's usual settings.
    pub max_ingest_kbps: u32,
}

impl Default for LiveConfig {
    fn default() -> Self {
        Self {
            rtmp_listen: Some(SocketAddr::from(([127, 0, 0, 1], 1935))),
            srt_listen: Some(SocketAddr::from(([127, 0, 0, 1], 9000))),
            public_host: None,
            segment_s: 2.0,
            part_s: 0.5,
            grace_s: 10.0,
            rungs: vec![1080, 720, 360],
            passthrough: false,
            preset: "veryfast".into(),
            dvr_window_s: None,
            relay_listen: None,
            relay_advertise: None,
            max_ingest_kbps: 40_000,
        }
    }
}

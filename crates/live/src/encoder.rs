//! The real-time encoder: one ffmpeg process per publisher connection.
//!
//! It reads the publisher's container from stdin, decodes once, and writes one fragmented-MP4
//! stream per rendition into a named pipe, as CMAF chunks a fraction of `part_s` long (LL-HLS
//! parts are made of them, see `state::rendition`), with a forced, closed GOP every
//! `segment_s` so every rung cuts segments at the same instants.
//! x264 runs with `-tune zerolatency` (no lookahead, no B-frames) so a frame leaves the encoder
//! as soon as it is coded.

use std::path::{Path, PathBuf};
use std::process::Stdio;

use oxcast_ingest::Container;
use oxcast_media::ladder::Rung;

/// One output of the live encoder.
#[derive(Debug, Clone, PartialEq)]
pub struct LiveOutput {
    pub name: String,
    /// `None` for audio.
    pub rung: Option<Rung>,
    /// Copy the source video instead of encoding it.
    pub passthrough: bool,
    pub fifo: PathBuf,
}

#[derive(Debug, Clone)]
pub struct EncoderPlan {
    pub container: Container,
    pub outputs: Vec<LiveOutput>,
    pub has_audio: bool,
    pub preset: String,
    pub segment_s: f64,
    pub part_s: f64,
    pub frame_rate: f64,
}

impl EncoderPlan {
    pub fn args(&self) -> Vec<String> {
        let s = |v: &str| v.to_string();
        let mut a: Vec<String> = [
            "-hide_banner",
            "-nostdin",
            "-y",
            "-v",
            "error",
            "-nostats",
            "-progress",
            "pipe:2",
            // The input is our own pipe in a known container, already probed: probe little so
            // the first frames are not held back. Not `+nobuffer`, which throws away what the
            // probe read: the decoder then starts at the publisher's second keyframe, a GOP
            // late, and the encoder fills the time before it with copies of one frame.
            "-fflags",
            "+genpts",
            "-probesize",
            "500000",
            "-analyzeduration",
            "500000",
        ]
        .map(s)
        .to_vec();
        a.extend(["-protocol_whitelist".into(), "pipe".into()]);
        a.extend([
            "-f".into(),
            match self.container {
                Container::Flv => "flv".into(),
                Container::MpegTs => "mpegts".into(),
            },
        ]);
        a.extend(["-i".into(), "pipe:0".into()]);

        let encoded: Vec<(usize, &LiveOutput)> = self
            .outputs
            .iter()
            .enumerate()
            .filter(|(_, o)| o.rung.is_some() && !o.passthrough)
            .collect();
        if !encoded.is_empty() {
            let mut graph = format!("[0:v:0]format=yuv420p,split={}", encoded.len());
            for (i, _) in &encoded {
                graph.push_str(&format!("[s{i}]"));
            }
            for (i, o) in &encoded {
                let r = o.rung.as_ref().expect("video rung");
                graph.push_str(&format!(
                    ";[s{i}]scale={}:{},setsar=1[v{i}]",
                    r.width, r.height
                ));
            }
            a.extend(["-filter_complex".into(), graph]);
        }
        let gop = ((self.frame_rate * self.segment_s).round() as u32)
            .max(1)
            .to_string();
        let (video_chunk_us, audio_chunk_us) = self.chunk_us();
        let fmp4 = |a: &mut Vec<String>, fifo: &Path, chunk_us: u64| {
            a.extend(
                [
                    "-f",
                    "mp4",
                    "-movflags",
                    "+frag_keyframe+empty_moov+default_base_moof+cmaf+skip_trailer",
                    "-frag_duration",
                ]
                .map(s),
            );
            a.push(chunk_us.to_string());
            a.extend(["-flush_packets".into(), "1".into()]);
            a.push(format!("file:{}", fifo.display()));
        };
        for (i, o) in self.outputs.iter().enumerate() {
            match (&o.rung, o.passthrough) {
                (Some(_), true) => {
                    a.extend(["-map", "0:v:0", "-an", "-c:v", "copy"].map(s));
                }
                (Some(r), false) => {
                    a.extend(["-map".into(), format!("[v{i}]"), "-an".into()]);
                    a.extend(
                        [
                            "-c:v",
                            "libx264",
                            "-tune",
                            "zerolatency",
                            "-profile:v",
                            "high",
                        ]
                        .map(s),
                    );
                    a.extend(["-preset".into(), self.preset.clone()]);
                    a.extend(["-b:v".into(), r.video_bitrate.to_string()]);
                    a.extend(["-maxrate".into(), r.max_bitrate.to_string()]);
                    a.extend(["-bufsize".into(), r.buffer_size.to_string()]);
                    a.extend(["-g".into(), gop.clone(), "-keyint_min".into(), gop.clone()]);
                    a.extend(["-sc_threshold", "0", "-flags", "+cgop"].map(s));
                    a.extend([
                        "-force_key_frames".into(),
                        format!("expr:gte(t,n_forced*{})", self.segment_s),
                    ]);
                }
                (None, _) => {
                    a.extend(
                        [
                            "-map", "0:a:0", "-vn", "-c:a", "aac", "-b:a", "128k", "-ac", "2",
                            "-ar", "48000",
                        ]
                        .map(s),
                    );
                }
            }
            let chunk_us = if o.rung.is_some() {
                video_chunk_us
            } else {
                audio_chunk_us
            };
            fmp4(&mut a, &o.fifo, chunk_us);
        }
        a
    }

    /// `-frag_duration` for video and audio: CMAF chunks of about a fifth of a part (video) and
    /// a quarter (audio), so that a part can be sent while it is written.
    ///
    /// ffmpeg starts a new fragment with the first packet at or past the duration, so video's
    /// is half a frame short of a fifth: at 30 fps a 100 ms chunk of exactly 3 frames, whatever
    /// the timestamps' rounding. Audio's is a quarter part: at 48 kHz six AAC frames (128 ms),
    /// four to a 512 ms part, within the part target (`part_s` + 5 %).
    fn chunk_us(&self) -> (u64, u64) {
        let frame = 1.0 / self.frame_rate.max(1.0);
        let video = (self.part_s / 5.0 - frame / 2.0).max(frame / 2.0);
        ((video * 1e6) as u64, (self.part_s / 4.0 * 1e6) as u64)
    }
}

/// Creates a named pipe (mode 0600).
pub fn mkfifo(path: &Path) -> std::io::Result<()> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(path.as_os_str().as_bytes())
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::InvalidInput, "nul in path"))?;
    // SAFETY: `c` is a valid NUL-terminated path for the duration of the call.
    if unsafe { libc::mkfifo(c.as_ptr(), 0o600) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// Spawns ffmpeg for `plan`: stdin is the publisher's container, stderr carries `-progress`.
pub fn spawn(ffmpeg: &Path, plan: &EncoderPlan) -> std::io::Result<tokio::process::Child> {
    let mut cmd = oxcast_transcode::command(ffmpeg);
    cmd.args(plan.args())
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    cmd.spawn()
}

/// What ffmpeg's `-progress` reports, for the health view.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct EncoderStats {
    pub frames: u64,
    pub fps: f64,
    pub dropped_frames: u64,
    pub speed: f64,
    pub out_time_s: f64,
}

impl EncoderStats {
    /// Applies one `key=value` line of `-progress` output; returns true at the end of a block.
    pub fn apply(&mut self, line: &str) -> bool {
        let Some((k, v)) = line.split_once('=') else {
            return false;
        };
        let v = v.trim();
        match k {
            "frame" => self.frames = v.parse().unwrap_or(self.frames),
            "fps" => self.fps = v.parse().unwrap_or(self.fps),
            "drop_frames" => self.dropped_frames = v.parse().unwrap_or(self.dropped_frames),
            "speed" => self.speed = v.trim_end_matches('x').parse().unwrap_or(self.speed),
            "out_time_us" => {
                if let Ok(us) = v.parse::<f64>() {
                    self.out_time_s = us / 1e6;
                }
            }
            "progress" => return true,
            _ => {}
        }
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rung(name: &str, w: u32, h: u32, br: u32) -> Rung {
        Rung {
            name: name.into(),
            width: w,
            height: h,
            video_bitrate: br,
            max_bitrate: br * 3 / 2,
            buffer_size: br * 2,
        }
    }

    fn plan() -> EncoderPlan {
        EncoderPlan {
            container: Container::Flv,
            outputs: vec![
                LiveOutput {
                    name: "720p".into(),
                    rung: Some(rung("720p", 1280, 720, 2_800_000)),
                    passthrough: false,
                    fifo: "/w/720p".into(),
                },
                LiveOutput {
                    name: "360p".into(),
                    rung: Some(rung("360p", 640, 360, 800_000)),
                    passthrough: false,
                    fifo: "/w/360p".into(),
                },
                LiveOutput {
                    name: "audio".into(),
                    rung: None,
                    passthrough: false,
                    fifo: "/w/audio".into(),
                },
            ],
            has_audio: true,
            preset: "veryfast".into(),
            segment_s: 2.0,
            part_s: 0.5,
            frame_rate: 30.0,
        }
    }

    #[test]
    fn decodes_once_and_writes_short_fragments_per_rendition() {
        let a = plan().args();
        assert_eq!(a.iter().filter(|x| *x == "-i").count(), 1);
        let graph = &a[a.iter().position(|x| x == "-filter_complex").unwrap() + 1];
        assert_eq!(graph, "[0:v:0]format=yuv420p,split=2[s0][s1];[s0]scale=1280:720,setsar=1[v0];[s1]scale=640:360,setsar=1[v1]");
        let after = |flag: &str| -> Vec<&String> {
            a.windows(2)
                .filter(|w| w[0] == flag)
                .map(|w| &w[1])
                .collect()
        };
        // Chunks: 3 frames of video (100 ms, half a frame of slack), 6 AAC frames of audio.
        assert_eq!(after("-frag_duration"), ["83333", "83333", "125000"]);
        assert_eq!(after("-g"), ["60", "60"]);
        assert_eq!(after("-tune"), ["zerolatency", "zerolatency"]);
        assert_eq!(
            after("-force_key_frames"),
            ["expr:gte(t,n_forced*2)", "expr:gte(t,n_forced*2)"]
        );
        assert!(a.contains(&"file:/w/audio".to_string()));
        assert_eq!(after("-protocol_whitelist"), ["pipe"]);
    }

    #[test]
    fn passthrough_copies_the_source() {
        let mut p = plan();
        p.outputs.insert(
            0,
            LiveOutput {
                name: "source".into(),
                rung: Some(rung("source", 1920, 1080, 0)),
                passthrough: true,
                fifo: "/w/src".into(),
            },
        );
        let a = p.args();
        let graph = &a[a.iter().position(|x| x == "-filter_complex").unwrap() + 1];
        assert!(
            graph.contains("split=2"),
            "the copied rung is not decoded for: {graph}"
        );
        assert!(a.windows(2).any(|w| w[0] == "-c:v" && w[1] == "copy"));
    }

    #[test]
    fn progress_lines_update_stats() {
        let mut s = EncoderStats::default();
        for l in [
            "frame=75",
            "fps=29.97",
            "drop_frames=3",
            "speed=1.01x",
            "out_time_us=2500000",
        ] {
            assert!(!s.apply(l));
        }
        assert!(s.apply("progress=continue"));
        assert_eq!(
            s,
            EncoderStats {
                frames: 75,
                fps: 29.97,
                dropped_frames: 3,
                speed: 1.01,
                out_time_s: 2.5
            }
        );
        s.apply("speed=N/A");
        assert_eq!(s.speed, 1.01);
    }
}

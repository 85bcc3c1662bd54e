//! Ladder encodes: decode once, encode every rung in one ffmpeg process.
//!
//! The source is decoded a single time and fanned out with a `split` filter to one x264 encoder
//! per rung. Every encoder gets the same fixed, closed GOP with keyframes forced at multiples of
//! the segment duration and scene-cut keyframes off, so all rungs share segment boundaries and a
//! player can switch at any segment. Audio is encoded once, into its own rendition. Each output
//! is fragmented MP4 (CMAF) that our packager cuts into segments.

use std::path::{Path, PathBuf};
use std::process::Stdio;

use oxcast_media::ladder::Rung;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader};

use crate::{tail, Error, Input, Result};

#[derive(Debug, Clone)]
pub struct EncodePlan {
    pub source: Input,
    pub out_dir: PathBuf,
    pub rungs: Vec<Rung>,
    pub audio: bool,
    pub preset: String,
    pub segment_s: f64,
    /// Output frame rate, an exact rational (see [`output_frame_rate`]).
    pub frame_rate: (u32, u32),
    /// The source is stored as fields: deinterlace it (one frame per frame).
    pub deinterlace: bool,
    /// HDR transfer of the source (`smpte2084` or `arib-std-b67`) to tone-map to SDR BT.709.
    pub tone_map: Option<String>,
    /// Which audio stream (`0:a:N`) to encode: the default track.
    pub audio_stream: usize,
    pub audio_bitrate: u32,
    /// Source duration, to turn ffmpeg's position into a fraction.
    pub duration_s: f64,
    /// Length of the video stream: the audio rendition is padded or trimmed to exactly this, so
    /// audio that starts late, ends early or runs on still lines up with the picture.
    pub video_duration_s: f64,
    /// Where the video starts after ffmpeg's time zero (the file's first timestamp): the
    /// picture is moved to zero and the audio by as much, so they stay in sync.
    pub video_start_s: f64,
    /// A still taken in the same pass (no second decode).
    pub poster: Option<Poster>,
    /// Encode only these frames (one chunk of a long video); `None` encodes the whole file.
    pub window: Option<Window>,
}

/// The frames of one chunk, in frames of the output rate counted from the video's first
/// frame. The encode starts from zero as a whole-file encode does (the packager moves it to
/// where it belongs), with its first frame a closed-GOP keyframe and `keyframes` forced at the
/// same frames a whole-file encode would force them.
#[derive(Debug, Clone, PartialEq)]
pub struct Window {
    pub first_frame: u64,
    /// Exclusive; `None`: to the end of the source.
    pub end_frame: Option<u64>,
    /// Frame offsets from `first_frame` that must start a segment.
    pub keyframes: Vec<u64>,
}

/// How far before a chunk its decode starts: the frame-rate filter and the deinterlacer look
/// at neighbouring frames, so a chunk's first frames are made from the same input frames as in
/// a whole-file decode. Seeking lands on the keyframe before, so this is a floor.
const LEAD_IN_S: f64 = 2.0;

/// A JPEG of one frame, at most `max_width` wide.
#[derive(Debug, Clone, PartialEq)]
pub struct Poster {
    pub at_s: f64,
    pub max_width: u32,
    pub path: PathBuf,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RenditionKind {
    Video,
    Audio,
}

/// One encoded output file.
#[derive(Debug, Clone, PartialEq)]
pub struct Rendition {
    pub name: String,
    pub kind: RenditionKind,
    pub path: PathBuf,
    pub rung: Option<Rung>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct EncodeOutput {
    pub renditions: Vec<Rendition>,
}

/// The name of the audio rendition (its folder next to the video rungs).
pub const AUDIO_NAME: &str = "audio";

/// Highest frame rate we deliver. Above it (100, 120 fps game or slow-motion captures) the rate
/// is halved until it fits (120 -> 60, 100 -> 50, 119.88 -> 59.94): players and most displays
/// do not show more, and a whole divisor keeps motion even. Every other rate (23.976, 25, 29.97,
/// 50, 59.94...) is kept exactly; a variable-frame-rate source becomes constant at its nominal
/// rate.
pub const MAX_FRAME_RATE: f64 = 60.0;

/// The frame rate renditions are encoded at, given the source's (see [`MAX_FRAME_RATE`]).
pub fn output_frame_rate(source: (u32, u32)) -> (u32, u32) {
    let (mut num, mut den) = source;
    if num == 0 || den == 0 {
        return (30, 1);
    }
    while f64::from(num) / f64::from(den) > MAX_FRAME_RATE + 0.01 {
        if num % 2 == 0 {
            num /= 2;
        } else {
            den = den.saturating_mul(2);
        }
    }
    (num, den)
}

impl EncodePlan {
    fn fps(&self) -> f64 {
        f64::from(self.frame_rate.0) / f64::from(self.frame_rate.1.max(1))
    }

    /// Keyframe interval in frames; forced keyframes by time keep fractional rates aligned too.
    fn gop(&self) -> u32 {
        ((self.fps() * self.segment_s).round() as u32).max(1)
    }

    /// Filters before the split, applied once: deinterlace, tone-map, constant frame rate and
    /// 8-bit 4:2:0.
    fn prelude(&self) -> String {
        let mut f = Vec::new();
        if self.deinterlace {
            // bwdif in frame mode: 25i becomes 25p (no field doubling, so the rate policy holds).
            f.push("bwdif=mode=send_frame:parity=auto:deint=all".to_string());
        }
        if let Some(transfer) = &self.tone_map {
            // PQ/HLG BT.2020 to SDR BT.709: linearise at 100 nits, convert primaries, compress
            // highlights with Hable's curve (desaturated less than the default, so skin and
            // sky keep their colour), then back to BT.709 gamma. Never left as washed-out
            // BT.2020 pixels in a BT.709 stream.
            f.push(format!(
                "zscale=tin={transfer}:min=bt2020nc:pin=bt2020:rin=tv:t=linear:npl=100,\
                 format=gbrpf32le,zscale=p=bt709,tonemap=tonemap=hable:desat=0,\
                 zscale=t=bt709:m=bt709:r=tv"
            ));
        }
        match &self.window {
            // The picture defines time zero (the audio is moved with it, see `args`); then a
            // constant frame rate: VFR becomes CFR at the nominal rate, and 120 fps becomes 60.
            None => {
                f.push("setpts=PTS-STARTPTS".to_string());
                f.push(format!("fps={}/{}", self.frame_rate.0, self.frame_rate.1));
            }
            // A chunk: the same clock from the decode's seek point (the video's own start is
            // time zero, as for the whole file and the audio), the same frame slots, then only
            // the chunk's frames, counted from zero.
            Some(w) => {
                let seek = self.seek_s();
                let start = (seek - self.video_start_s).max(0.0);
                f.push(format!("setpts=PTS+({:.6})/TB", seek - self.video_start_s));
                f.push(format!(
                    "fps={}/{}:start_time={start:.6}",
                    self.frame_rate.0, self.frame_rate.1
                ));
                let mut trim = format!("trim=start_pts={}", w.first_frame);
                if let Some(end) = w.end_frame {
                    trim.push_str(&format!(":end_pts={end}"));
                }
                f.push(trim);
                f.push("setpts=PTS-STARTPTS".to_string());
            }
        }
        // 10-bit, 4:2:2 and 4:4:4 sources become the 8-bit 4:2:0 every player decodes.
        f.push("format=yuv420p".to_string());
        f.join(",")
    }

    /// Where a chunk's decode starts in the file (ffmpeg's `-ss`, from the file's first
    /// timestamp): [`LEAD_IN_S`] before the chunk's first frame; 0 for a whole file.
    fn seek_s(&self) -> f64 {
        match &self.window {
            Some(w) if w.first_frame > 0 => {
                let t = w.first_frame as f64 * f64::from(self.frame_rate.1)
                    / f64::from(self.frame_rate.0.max(1));
                (t + self.video_start_s - LEAD_IN_S).max(0.0)
            }
            _ => 0.0,
        }
    }

    /// `-force_key_frames` for a chunk: a quarter frame before each forced frame, so the
    /// rounding of times to frames cannot pick the frame before.
    fn chunk_keyframes(&self, w: &Window) -> Option<String> {
        let fps = self.fps();
        let times: Vec<String> = w
            .keyframes
            .iter()
            .map(|&k| format!("{:.6}", (k as f64 - 0.25) / fps))
            .collect();
        (!times.is_empty()).then(|| times.join(","))
    }

    pub fn args(&self) -> Vec<String> {
        let mut a: Vec<String> = ["-hide_banner", "-nostdin", "-y", "-v", "error", "-nostats"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        a.extend(["-progress".into(), "pipe:1".into()]);
        let seek = self.seek_s();
        if seek > 0.0 {
            a.extend(["-ss".into(), format!("{seek:.6}")]);
        }
        a.extend(self.source.args());
        if !self.rungs.is_empty() {
            self.video_args(&mut a);
        }
        if self.audio {
            self.audio_args(&mut a);
        }
        if let Some(p) = &self.poster {
            a.extend(
                [
                    "-map",
                    "[poster]",
                    "-frames:v",
                    "1",
                    "-q:v",
                    "3",
                    "-update",
                    "1",
                    "-f",
                    "image2",
                ]
                .iter()
                .map(|s| s.to_string()),
            );
            a.push(p.path.display().to_string());
        }
        a
    }

    fn video_args(&self, a: &mut Vec<String>) {
        let n = self.rungs.len();
        let branches = n + usize::from(self.poster.is_some());
        let mut graph = format!("[0:v:0]{},split={branches}", self.prelude());
        for i in 0..branches {
            graph.push_str(&format!("[s{i}]"));
        }
        for (i, r) in self.rungs.iter().enumerate() {
            graph.push_str(&format!(
                ";[s{i}]scale={}:{}:flags=bicubic:out_color_matrix=bt709:out_range=tv,setsar=1[v{i}]",
                r.width, r.height
            ));
        }
        if let Some(p) = &self.poster {
            // Only the chosen frame passes `select`, so the poster branch scales one frame.
            let frame = (p.at_s * self.fps()).floor().max(0.0) as u64;
            graph.push_str(&format!(
                ";[s{n}]select='eq(n\\,{frame})',scale='min({},iw)':-2,setsar=1[poster]",
                p.max_width
            ));
        }
        a.extend(["-filter_complex".into(), graph]);

        let gop = self.gop().to_string();
        let force = match &self.window {
            None => Some(format!("expr:gte(t,n_forced*{})", self.segment_s)),
            Some(w) => self.chunk_keyframes(w),
        };
        // Not `+cmaf`: it writes signed (version 1 `trun`) composition offsets so each
        // fragment's first frame has offset 0, and ffmpeg's DASH reader, which reopens its MP4
        // demuxer for every segment, then shifts each segment by that segment's own most
        // negative offset: a segment with a shallower B-frame pyramid lands one frame early and
        // timestamps go backwards. Like ffmpeg's own `-f dash`, we write positive offsets and
        // one edit list in the init segment (which `delay_moov` can compute from the first
        // fragment) that moves the first frame to time zero. The packager refuses signed
        // offsets (`oxcast_media::mp4::check_dash_timing`).
        let fmp4 = "+frag_keyframe+delay_moov+default_base_moof";
        let colour = [
            "-colorspace",
            "bt709",
            "-color_primaries",
            "bt709",
            "-color_trc",
            "bt709",
            "-color_range",
            "tv",
        ];
        for (i, r) in self.rungs.iter().enumerate() {
            a.extend([
                "-map".into(),
                format!("[v{i}]"),
                "-an".into(),
                "-sn".into(),
                "-dn".into(),
                "-map_metadata".into(),
                "-1".into(),
                "-c:v".into(),
                "libx264".into(),
                "-preset".into(),
                self.preset.clone(),
                "-profile:v".into(),
                "high".into(),
                "-b:v".into(),
                r.video_bitrate.to_string(),
                "-maxrate".into(),
                r.max_bitrate.to_string(),
                "-bufsize".into(),
                r.buffer_size.to_string(),
                "-g".into(),
                gop.clone(),
                "-keyint_min".into(),
                gop.clone(),
                "-sc_threshold".into(),
                "0".into(),
                "-flags".into(),
                "+cgop".into(),
                "-pix_fmt".into(),
                "yuv420p".into(),
            ]);
            if let Some(force) = &force {
                a.extend(["-force_key_frames".into(), force.clone()]);
            }
            a.extend([
                "-movflags".into(),
                fmp4.into(),
                "-use_editlist".into(),
                "1".into(),
                "-f".into(),
                "mp4".into(),
                self.out_path(&r.name).display().to_string(),
            ]);
            // Tags go before the output name they apply to.
            let at = a.len() - 1;
            a.splice(at..at, colour.iter().map(|s| s.to_string()));
        }
    }

    fn audio_args(&self, a: &mut Vec<String>) {
        // Fragments a quarter of a segment long, so the packager can cut the audio within
        // an eighth of a segment of where the video's segments start.
        let frag_us = ((self.segment_s * 250_000.0) as u64).max(1).to_string();
        // Silence before audio that starts late and after audio that ends early; audio that
        // runs on is cut at the end of the picture.
        let d = format!("{:.6}", self.video_duration_s.max(0.001));
        let af = format!(
            "asetpts=PTS-{:.6}/TB,aresample=async=1:first_pts=0,apad=whole_dur={d},atrim=end={d}",
            self.video_start_s
        );
        a.extend([
            "-map".into(),
            format!("0:a:{}", self.audio_stream),
            "-af".into(),
            af,
            "-vn".into(),
            "-sn".into(),
            "-dn".into(),
            "-map_metadata".into(),
            "-1".into(),
            "-c:a".into(),
            "aac".into(),
            "-b:a".into(),
            self.audio_bitrate.to_string(),
            "-ac".into(),
            "2".into(),
            "-ar".into(),
            "48000".into(),
            "-movflags".into(),
            "+delay_moov+default_base_moof".into(),
            "-use_editlist".into(),
            "1".into(),
            "-frag_duration".into(),
            frag_us,
            "-f".into(),
            "mp4".into(),
            self.out_path(AUDIO_NAME).display().to_string(),
        ]);
    }

    fn out_path(&self, name: &str) -> PathBuf {
        self.out_dir.join(format!("{name}.mp4"))
    }
}

/// Runs the ladder encode, reporting progress in 0..=1 as ffmpeg advances.
pub async fn encode_ladder(
    ffmpeg: &Path,
    plan: &EncodePlan,
    progress: &(dyn Fn(f64) + Send + Sync),
) -> Result<EncodeOutput> {
    if plan.rungs.is_empty() && !plan.audio {
        return Err(Error::Rejected("no rendition fits this source".into()));
    }
    tokio::fs::create_dir_all(&plan.out_dir).await?;
    let args = plan.args();
    tracing::debug!(?args, "ffmpeg ladder");
    let mut child = crate::command(ffmpeg)
        .args(&args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|source| Error::Spawn {
            program: ffmpeg.display().to_string(),
            source,
        })?;
    let mut stderr = child.stderr.take().expect("piped");
    let err_task = tokio::spawn(async move {
        let mut buf = Vec::new();
        let _ = stderr.read_to_end(&mut buf).await;
        buf
    });
    let mut lines = BufReader::new(child.stdout.take().expect("piped")).lines();
    let total_us = (plan.duration_s * 1e6).max(1.0);
    while let Some(line) = lines.next_line().await? {
        if let Some(us) = line
            .strip_prefix("out_time_us=")
            .and_then(|v| v.parse::<f64>().ok())
        {
            progress((us / total_us).clamp(0.0, 1.0));
        }
    }
    let status = child.wait().await?;
    let stderr = err_task.await.unwrap_or_default();
    if !status.success() {
        return Err(Error::Failed {
            program: "ffmpeg".into(),
            status: status.to_string(),
            stderr: tail(&stderr, 2000),
        });
    }
    progress(1.0);
    let mut renditions: Vec<Rendition> = plan
        .rungs
        .iter()
        .map(|r| Rendition {
            name: r.name.clone(),
            kind: RenditionKind::Video,
            path: plan.out_path(&r.name),
            rung: Some(r.clone()),
        })
        .collect();
    if plan.audio {
        renditions.push(Rendition {
            name: AUDIO_NAME.into(),
            kind: RenditionKind::Audio,
            path: plan.out_path(AUDIO_NAME),
            rung: None,
        });
    }
    Ok(EncodeOutput { renditions })
}

#[cfg(test)]
mod tests;

//! The ffmpeg driver.
//!
//! Codec work belongs to Debian's `ffmpeg` and `ffprobe`, run as supervised subprocesses: this
//! crate builds their command lines, reads their progress and turns their failures into errors a
//! user can act on. Every invocation is locked down the same way (see [`Input::args`]): input
//! only through the `file` (and `concat`) protocol and only through demuxers that cannot open other resources,
//! so a crafted upload (an HLS or concat playlist naming `/etc/passwd` or a URL) is refused
//! before anything but the upload itself is opened.
//!
//! A child is killed when its future is dropped, so a cancelled job never leaves ffmpeg running.

mod encode;
mod probe;

pub use encode::{
    encode_ladder, output_frame_rate, EncodeOutput, EncodePlan, Poster, Rendition, RenditionKind,
    Window, AUDIO_NAME, MAX_FRAME_RATE,
};
pub use probe::{parse_streams, probe, Probe, StreamsProbe, VideoStream};

use std::path::{Path, PathBuf};
use std::process::Stdio;

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    #[error("could not run {program}: {source} (is ffmpeg installed?)")]
    Spawn {
        program: String,
        #[source]
        source: std::io::Error,
    },
    /// The input is not something we can process; retrying will not help.
    #[error("{0}")]
    Rejected(String),
    #[error("{program} failed ({status}): {stderr}")]
    Failed {
        program: String,
        status: String,
        stderr: String,
    },
    #[error("unexpected ffprobe output: {0}")]
    BadProbe(String),
    #[error("io: {0}")]
    Io(#[from] std::io::Error),
}

impl Error {
    /// Whether the same input could succeed on another attempt.
    pub fn is_retryable(&self) -> bool {
        !matches!(self, Error::Rejected(_))
    }
}

pub type Result<T> = std::result::Result<T, Error>;

/// Demuxers we accept input through. Playlist-like formats (hls, concat, image2 patterns, sdp,
/// …) are deliberately absent: they open further files or URLs named inside the input.
pub const INPUT_FORMATS: &str =
    "mov,mp4,m4a,3gp,matroska,webm,avi,flv,mpegts,mpeg,asf,ogg,mxf,dv,h264,hevc,m4v,wav,mp3,aac";

/// What ffmpeg reads: one local file, or several read back to back as one file (an upload's
/// parts in place, through the `concat` protocol, which saves copying them).
#[derive(Debug, Clone, PartialEq)]
pub enum Input {
    File(PathBuf),
    Parts(Vec<PathBuf>),
}

impl Input {
    /// Parts that can be named in a `concat:` URL (no `|` in any path), else `None`.
    pub fn parts(paths: Vec<PathBuf>) -> Option<Input> {
        let ok = !paths.is_empty()
            && paths
                .iter()
                .all(|p| p.to_str().is_some_and(|s| !s.contains('|')));
        ok.then_some(Input::Parts(paths))
    }

    fn url(&self) -> String {
        match self {
            // "file:" so a name can never be read as another protocol.
            Input::File(p) => format!("file:{}", p.display()),
            Input::Parts(ps) => {
                let joined: Vec<String> = ps.iter().map(|p| p.display().to_string()).collect();
                format!("concat:{}", joined.join("|"))
            }
        }
    }

    /// `-protocol_whitelist`, `-format_whitelist` and `-i`: only our own files, only demuxers
    /// that cannot open further resources.
    pub fn args(&self) -> Vec<String> {
        let protocols = match self {
            Input::File(_) => "file",
            Input::Parts(_) => "concat,file",
        };
        vec![
            "-protocol_whitelist".into(),
            protocols.into(),
            "-format_whitelist".into(),
            INPUT_FORMATS.into(),
            "-i".into(),
            self.url(),
        ]
    }
}

/// Runs a program to completion, capturing stdout; stderr's tail goes into the error.
pub(crate) async fn run(program: &Path, args: &[String]) -> Result<Vec<u8>> {
    let out = command(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .output()
        .await
        .map_err(|source| Error::Spawn {
            program: program.display().to_string(),
            source,
        })?;
    if !out.status.success() {
        return Err(Error::Failed {
            program: program.display().to_string(),
            status: out.status.to_string(),
            stderr: tail(&out.stderr, 2000),
        });
    }
    Ok(out.stdout)
}

/// A child process that cannot outlive us: killed when its future is dropped, and (on Linux)
/// when our process dies, even by SIGKILL, so a crashed worker never leaves ffmpeg burning CPU.
pub fn command(program: &Path) -> tokio::process::Command {
    let mut cmd = tokio::process::Command::new(program);
    cmd.kill_on_drop(true);
    #[cfg(target_os = "linux")]
    // SAFETY: prctl is async-signal-safe and touches no memory of the parent.
    unsafe {
        cmd.pre_exec(|| {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    cmd
}

/// The last `max` bytes of a program's output, trimmed, as text.
pub(crate) fn tail(bytes: &[u8], max: usize) -> String {
    let s = String::from_utf8_lossy(&bytes[bytes.len().saturating_sub(max)..]);
    s.trim().to_string()
}

/// `ffmpeg -version`'s first line, to fail early and clearly when ffmpeg is missing.
pub async fn ffmpeg_version(ffmpeg: &Path) -> Result<String> {
    let out = run(ffmpeg, &["-hide_banner".into(), "-version".into()]).await?;
    Ok(String::from_utf8_lossy(&out)
        .lines()
        .next()
        .unwrap_or_default()
        .to_string())
}

//! `oxcast`: the whole platform in one binary.
//!
//! - `oxcast serve`: API, origin, web UI and in-process workers on embedded defaults.
//! - `oxcast upload FILE`: resumable parallel upload from a terminal, with progress.

// mimalloc: the origin answers tens of thousands of small requests a second, each a handful of
// short-lived allocations (headers, paths, futures); glibc's malloc cost ~12 % of the CPU of a
// cached playlist (perf), and per-thread caches that free to their own thread suit tokio.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

mod encoders;
mod gauges;
mod heartbeat;
mod host;
mod serve;

use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "oxcast",
    version,
    about = "Self-hostable video platform: VOD and live, HLS and DASH"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the server: API, playback origin, web UI and processing workers.
    Serve(serve::ServeArgs),
    /// Upload a video file to a server and wait until it is playable.
    Upload(UploadArgs),
}

#[derive(clap::Args)]
struct UploadArgs {
    /// The video file to upload.
    file: PathBuf,
    /// Server base URL.
    #[arg(long, env = "OXCAST_SERVER", default_value = "http://127.0.0.1:8080")]
    server: String,
    /// API token, when the server requires one.
    #[arg(long, env = "OXCAST_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// Parts sent at once.
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u16).range(1..=64))]
    parallel: u16,
    /// Title shown in the library (default: the file name).
    #[arg(long)]
    title: Option<String>,
    /// Return once the upload is complete instead of waiting for processing.
    #[arg(long)]
    no_wait: bool,
    /// Where resumable upload state is kept.
    #[arg(long)]
    state_dir: Option<PathBuf>,
    /// Cap the upload rate, in bytes per second (suffixes K, M, G: 500K, 2M).
    #[arg(long, value_parser = parse_rate)]
    limit_rate: Option<u64>,
}

fn parse_rate(s: &str) -> Result<u64, String> {
    let s = s.trim();
    let (num, mult) = match s.char_indices().last() {
        Some((i, c)) if c.is_ascii_alphabetic() => {
            let m = match c.to_ascii_uppercase() {
                'K' => 1u64 << 10,
                'M' => 1 << 20,
                'G' => 1 << 30,
                _ => return Err(format!("unknown suffix {c:?}: use K, M or G")),
            };
            (&s[..i], m)
        }
        _ => (s, 1),
    };
    let n: f64 = num
        .parse()
        .map_err(|_| format!("{s:?} is not a rate like 500K or 2M"))?;
    if !n.is_finite() || n <= 0.0 {
        return Err("the rate must be positive".into());
    }
    Ok((n * mult as f64) as u64)
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    match cli.command {
        Command::Serve(args) => rt.block_on(serve::run(args)),
        Command::Upload(args) => rt.block_on(upload(args)),
    }
}

async fn upload(a: UploadArgs) -> anyhow::Result<()> {
    let mut client = oxcast_client::Client::new(&a.server, a.token)?;
    if let Some(rate) = a.limit_rate {
        client = client.with_rate_limit(rate);
    }
    let opts = oxcast_client::UploadOptions {
        title: a.title,
        parallel: a.parallel as usize,
        wait: !a.no_wait,
        state_dir: a.state_dir.unwrap_or_else(oxcast_client::default_state_dir),
        ..Default::default()
    };
    let progress = oxcast_client::BarProgress::new();
    let video = oxcast_client::upload_file(&client, &a.file, &opts, &progress)
        .await
        .with_context(|| format!("uploading {}", a.file.display()))?;
    println!("video {} {}", video.id, video.status.as_str());
    if video.status == oxcast_client::VideoStatus::Ready {
        println!(
            "watch: {}",
            client.resolve(&format!("/watch/{}", video.id))?
        );
        println!("hls:   {}", client.resolve(&video.hls_url)?);
        println!("dash:  {}", client.resolve(&video.dash_url)?);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::parse_rate;

    #[test]
    fn rates() {
        assert_eq!(parse_rate("500"), Ok(500));
        assert_eq!(parse_rate("2M"), Ok(2 << 20));
        assert_eq!(parse_rate("1.5k"), Ok(1536));
        assert!(parse_rate("0").is_err());
        assert!(parse_rate("2X").is_err());
        assert!(parse_rate("fast").is_err());
    }
}

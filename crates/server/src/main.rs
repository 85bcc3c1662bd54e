//! `oxcast`: the whole platform in one binary.
//!
//! - `oxcast serve`: API, origin, web UI and in-process workers on embedded defaults.
//! - `oxcast upload FILE`: resumable parallel upload from a terminal, with progress.

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
    let client = oxcast_client::Client::new(&a.server, a.token)?;
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

//! `oxcast serve`: builds the pieces from the config, runs them, stops them on one signal.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context;
use oxcast_api::{AppState, Inner, Signer};
use oxcast_base::clock::SharedClock;
use oxcast_base::{Config, SystemClock};
use oxcast_db::Db;
use oxcast_store::Store;
use oxcast_worker::WorkerContext;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

#[derive(clap::Args)]
pub struct ServeArgs {
    /// Address to listen on [default: 127.0.0.1:8080].
    #[arg(long)]
    listen: Option<std::net::SocketAddr>,
    /// Where the database, objects and scratch space live [default: ./oxcast-data].
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// A TOML config file; `OXCAST_*` environment variables override it.
    #[arg(long, env = "OXCAST_CONFIG")]
    config: Option<PathBuf>,
}

pub async fn run(args: ServeArgs) -> anyhow::Result<()> {
    let mut config = Config::load(args.config.as_deref())?;
    if let Some(l) = args.listen {
        config.listen = l;
    }
    if let Some(d) = args.data_dir {
        config.data_dir = d;
    }
    init_tracing();
    let config = Arc::new(config);
    let data = &config.data_dir;
    std::fs::create_dir_all(data)
        .with_context(|| format!("creating data dir {}", data.display()))?;

    let metrics = metrics_exporter_prometheus::PrometheusBuilder::new()
        .install_recorder()
        .context("installing the metrics recorder")?;

    let ffmpeg = oxcast_transcode::ffmpeg_version(&config.transcode.ffmpeg)
        .await
        .context(
            "ffmpeg is required: install it (scripts/install.sh does) or set transcode.ffmpeg",
        )?;
    tracing::info!(%ffmpeg, "found ffmpeg");

    let db = Db::connect(&config.database_url())
        .await
        .with_context(|| format!("opening database {}", config.database_url()))?;
    let store = Store::local(&data.join("objects"))?;
    let clock: SharedClock = Arc::new(SystemClock);
    let node_id = read_or_create(&data.join("node-id"), 8)?;
    let signing_key = match &config.upload.signing_key {
        Some(k) => k.clone(),
        None => read_or_create(&data.join("signing-key"), 32)?,
    };

    // This node's previous incarnation is gone: its leases can be retried now.
    let released = db
        .release_leases_of(&format!("{node_id}:"), clock.now_ms())
        .await?;
    if released > 0 {
        tracing::warn!(
            released,
            "re-queued jobs interrupted by the last shutdown or crash"
        );
    }
    let scratch = data.join("work");
    let _ = std::fs::remove_dir_all(&scratch);
    std::fs::create_dir_all(&scratch)?;

    let wake = Arc::new(Notify::new());
    let shutdown = CancellationToken::new();
    let workers = oxcast_worker::run_workers(
        Arc::new(WorkerContext {
            db: db.clone(),
            store: store.clone(),
            config: config.clone(),
            clock: clock.clone(),
            node_id,
            scratch,
            wake: wake.clone(),
        }),
        shutdown.clone(),
    );

    let live = oxcast_live::LiveManager::new(
        db.clone(),
        store.clone(),
        config.clone(),
        clock.clone(),
        data.join("live-work"),
        shutdown.clone(),
    );
    live.recover_orphans().await?;
    // Named pipes of a previous process's encoders are of no use now.
    let _ = std::fs::remove_dir_all(data.join("live-work"));
    std::fs::create_dir_all(data.join("live-work"))?;
    if let Some(addr) = config.live.rtmp_listen {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .with_context(|| format!("binding RTMP ingest {addr}"))?;
        tracing::info!(%addr, "RTMP ingest listening");
        tokio::spawn(oxcast_ingest::serve_rtmp(
            listener,
            live.handler(),
            shutdown.clone(),
        ));
    }
    if let Some(addr) = config.live.srt_listen {
        let socket = tokio::net::UdpSocket::bind(addr)
            .await
            .with_context(|| format!("binding SRT ingest {addr}"))?;
        tracing::info!(%addr, "SRT ingest listening");
        let (handler, token) = (live.handler(), shutdown.clone());
        tokio::spawn(async move {
            let cfg = oxcast_ingest::IngestConfig::default();
            if let Err(e) = oxcast_ingest::serve_srt_socket(socket, handler, token, cfg).await {
                tracing::error!(error = %e, "SRT ingest stopped");
            }
        });
    }

    let state = AppState::new(Inner {
        db,
        store,
        config: config.clone(),
        clock,
        signer: Signer::new(signing_key.into_bytes()),
        wake,
        metrics: Some(metrics),
        live: Some(live.clone()),
    });
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("binding {}", config.listen))?;
    let addr = listener.local_addr()?;
    tracing::info!(%addr, data_dir = %data.display(), "oxcast serving on http://{addr}/");
    println!("oxcast listening on http://{addr}/");

    let signal = shutdown.clone();
    tokio::spawn(async move {
        wait_for_signal().await;
        tracing::info!("shutting down");
        signal.cancel();
    });
    let http_shutdown = shutdown.clone();
    axum::serve(listener, oxcast_api::router(state))
        .with_graceful_shutdown(async move { http_shutdown.cancelled().await })
        .await
        .context("http server")?;
    shutdown.cancel();
    live.shutdown().await;
    workers.join_all().await;
    tracing::info!("stopped");
    Ok(())
}

async fn wait_for_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}

fn init_tracing() {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new("info,tower_http=warn,sqlx=warn"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false)
        .try_init();
}

/// A random hex secret kept in `path`, created on first start.
fn read_or_create(path: &Path, bytes: usize) -> anyhow::Result<String> {
    if let Ok(s) = std::fs::read_to_string(path) {
        let s = s.trim().to_string();
        if !s.is_empty() {
            return Ok(s);
        }
    }
    let v: Vec<u8> = (0..bytes).map(|_| rand::random::<u8>()).collect();
    let s = hex::encode(v);
    std::fs::write(path, &s).with_context(|| format!("writing {}", path.display()))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let _ = std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600));
    }
    Ok(s)
}

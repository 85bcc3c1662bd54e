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
    create_private_dir(data)?;
    let nofile = raise_nofile_limit();

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
    let store = Store::open(&config).await?;
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
    let worker_ctx = Arc::new(WorkerContext {
        db: db.clone(),
        store: store.clone(),
        config: config.clone(),
        clock: clock.clone(),
        node_id,
        scratch,
        wake: wake.clone(),
    });
    let mut workers = oxcast_worker::run_workers(worker_ctx.clone(), shutdown.clone());
    workers.spawn(oxcast_worker::run_reconciler(worker_ctx, shutdown.clone()));

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
        part_gate: oxcast_api::limits::Gate::new(
            config.http.max_part_uploads,
            config.http.max_part_uploads_per_addr,
        ),
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
    // Descriptors beyond the connections: database, objects, ffmpeg pipes, live ingest.
    const RESERVED_FDS: u64 = 256;
    const OVERFLOW: usize = 32;
    let max_connections = config.http.max_connections.min(
        nofile
            .saturating_sub(RESERVED_FDS + OVERFLOW as u64)
            .max(16) as usize,
    );
    tracing::info!(max_connections, "connection cap");
    let limits = oxcast_api::serve::ServeLimits {
        header_timeout: std::time::Duration::from_secs_f64(config.http.header_timeout_s.max(0.1)),
        max_connections,
        overflow: OVERFLOW,
    };
    oxcast_api::serve::serve(
        listener,
        oxcast_api::router(state.clone()),
        oxcast_api::health_router(state),
        limits,
        shutdown.clone(),
    )
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

/// A random hex secret kept in `path`, created on first start, readable by the owner only from
/// the moment it exists.
fn read_or_create(path: &Path, bytes: usize) -> anyhow::Result<String> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    if let Ok(s) = std::fs::read_to_string(path) {
        let s = s.trim().to_string();
        if !s.is_empty() {
            return Ok(s);
        }
    }
    let v: Vec<u8> = (0..bytes).map(|_| rand::random::<u8>()).collect();
    let s = hex::encode(v);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("creating {}", path.display()))?;
    f.write_all(s.as_bytes())
        .with_context(|| format!("writing {}", path.display()))?;
    Ok(s)
}

/// The data dir holds uploads, outputs and secrets: owner only.
fn create_private_dir(dir: &Path) -> anyhow::Result<()> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .with_context(|| format!("creating data dir {}", dir.display()))?;
    // An existing dir made by an older version, or by hand.
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
        .with_context(|| format!("restricting data dir {} to its owner", dir.display()))?;
    Ok(())
}

/// Raises the soft descriptor limit to the hard one (each connection is one) and returns the
/// limit in force.
fn raise_nofile_limit() -> u64 {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit only read and write the struct we pass.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 {
            tracing::warn!("could not read the descriptor limit");
            return 1024;
        }
        let soft = lim.rlim_cur;
        if lim.rlim_cur < lim.rlim_max {
            let raised = libc::rlimit {
                rlim_cur: lim.rlim_max,
                rlim_max: lim.rlim_max,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
                lim = raised;
            }
        }
        tracing::info!(
            soft_was = soft,
            soft = lim.rlim_cur,
            hard = lim.rlim_max,
            "descriptor limit"
        );
    }
    lim.rlim_cur
}

//! `oxcast serve`: builds the pieces this process's roles need, runs them, stops them on one
//! signal.
//!
//! Every process listens on `listen` for `/healthz` and `/metrics`; the `api` role adds the API,
//! the signed part uploads, the VOD origin and the web UI, the `live` role the live origin. The
//! `worker` role runs VOD jobs and the reconciler; `ingest` the RTMP/SRT servers and `live` the
//! real-time encoders. In one process the ingest hands publishers to the local encoders; an
//! ingest without the live role relays them to the live nodes that listen on
//! `live.relay_listen` (`oxcast_ingest::relay`, chosen by [`crate::encoders`]).

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use oxcast_api::{AppState, Inner, Routes, Signer};
use oxcast_base::clock::SharedClock;
use oxcast_base::config::{Role, Roles};
use oxcast_base::{Config, SystemClock};
use oxcast_db::Db;
use oxcast_ingest::PublishHandler;
use oxcast_store::Store;
use oxcast_worker::WorkerContext;
use tokio::sync::Notify;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::host;

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
    /// What this process does: a comma list of api, worker, ingest, live [default: all].
    #[arg(long, value_parser = parse_roles)]
    roles: Option<Roles>,
}

fn parse_roles(s: &str) -> Result<Roles, String> {
    s.parse()
}

pub async fn run(args: ServeArgs) -> anyhow::Result<()> {
    let mut config = Config::load(args.config.as_deref())?;
    if let Some(l) = args.listen {
        config.listen = l;
    }
    if let Some(d) = args.data_dir {
        config.data_dir = d;
    }
    if let Some(r) = args.roles {
        config.roles = r;
    }
    config.validate().map_err(anyhow::Error::msg)?;
    host::init_tracing();
    let config = Arc::new(config);
    let roles = config.roles.clone();
    let data = &config.data_dir;
    host::create_private_dir(data)?;
    let nofile = host::raise_nofile_limit();
    tracing::info!(%roles, "starting");

    let metrics = metrics_exporter_prometheus::PrometheusBuilder::new()
        .install_recorder()
        .context("installing the metrics recorder")?;
    if roles.has(Role::Worker) || roles.has(Role::Live) {
        let ffmpeg = oxcast_transcode::ffmpeg_version(&config.transcode.ffmpeg)
            .await
            .context(
                "ffmpeg is required: install it (scripts/deps.sh does) or set transcode.ffmpeg",
            )?;
        tracing::info!(%ffmpeg, "found ffmpeg");
    }

    let db_name = oxcast_db::redact_url(&config.database_url());
    // The error names the database (without its password).
    let db = Db::connect(&config.database_url()).await?;
    let store = Store::open(&config).await?;
    tracing::info!(database = %db_name, store = ?store, "engines ready");
    let clock: SharedClock = Arc::new(SystemClock);
    let node_id = host::read_or_create(&data.join("node-id"), 8)?;
    // This process in the nodes list, and as it holds live streams' leases: the relay's load
    // balancer matches the two.
    let holder = format!("{node_id}:{}", std::process::id());
    let signing_key = match config.signing_key() {
        Some(k) => k.to_string(),
        None => host::read_or_create(&data.join("signing-key"), 32)?,
    };

    let wake = Arc::new(Notify::new());
    let shutdown = CancellationToken::new();
    // Relayed streams stop only once this node's sessions are handed off (see below), so that
    // their ingest moves them to another encoder rather than dropping their publishers.
    let relay_stop = CancellationToken::new();
    let mut tasks: JoinSet<()> = JoinSet::new();
    tasks.spawn(crate::gauges::sample_queue(
        db.clone(),
        clock.clone(),
        std::time::Duration::from_secs(5),
        shutdown.clone(),
    ));

    if roles.has(Role::Worker) {
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
        let ctx = Arc::new(WorkerContext {
            db: db.clone(),
            store: store.clone(),
            config: config.clone(),
            clock: clock.clone(),
            node_id: node_id.clone(),
            scratch,
            wake: wake.clone(),
        });
        let workers = oxcast_worker::run_workers(ctx.clone(), shutdown.clone());
        tasks.spawn(async move {
            workers.join_all().await;
        });
        tasks.spawn(oxcast_worker::run_reconciler(ctx, shutdown.clone()));
    }

    let live = if roles.has(Role::Live) {
        let live = oxcast_live::LiveManager::new(
            db.clone(),
            store.clone(),
            config.clone(),
            clock.clone(),
            data.join("live-work"),
            shutdown.clone(),
            holder.clone(),
        );
        live.recover_orphans().await?;
        live.start_sweeper();
        // Named pipes of a previous process's encoders are of no use now.
        let _ = std::fs::remove_dir_all(data.join("live-work"));
        std::fs::create_dir_all(data.join("live-work"))?;
        Some(live)
    } else {
        None
    };

    // Publishers relayed by ingest nodes of other processes; the address goes into the
    // heartbeat, where those find it.
    let relay_addr = match (&live, config.live.relay_listen) {
        (Some(live), Some(listen)) => {
            let server = oxcast_ingest::relay::RelayServer {
                secret: signing_key.as_bytes().to_vec(),
                holder: holder.clone(),
                clock: clock.clone(),
                handshake_timeout: std::time::Duration::from_secs(10),
                stall_timeout: std::time::Duration::from_secs(10),
                channel_capacity: 256,
            };
            start_relay_listener(&config, listen, live, server, &relay_stop, &mut tasks).await?
        }
        (Some(_), None) => {
            if !roles.has(Role::Ingest) {
                tracing::warn!(
                    "this live node has neither the ingest role nor live.relay_listen: no \
                     publisher can reach it"
                );
            }
            String::new()
        }
        (None, Some(_)) => {
            tracing::warn!("live.relay_listen is ignored: this process has no live role");
            String::new()
        }
        (None, None) => String::new(),
    };

    // RTMP and SRT: to this process's encoders, else relayed to a live node's.
    let relay = if roles.has(Role::Ingest) {
        let (handler, relay): (Arc<dyn PublishHandler>, _) = match &live {
            Some(live) => (live.handler(), None),
            None => {
                let relay = oxcast_ingest::relay::Relay::new(
                    Arc::new(crate::encoders::DbEncoders {
                        db: db.clone(),
                        clock: clock.clone(),
                    }),
                    oxcast_ingest::relay::RelayConfig::new(signing_key.as_bytes().to_vec()),
                    clock.clone(),
                    shutdown.clone(),
                );
                tracing::info!("publishers are relayed to the live nodes");
                (Arc::new(relay.clone()), Some(relay))
            }
        };
        start_ingest(&config, handler, &shutdown, &mut tasks).await?;
        relay
    } else {
        None
    };

    tasks.spawn(
        crate::heartbeat::Heartbeat {
            db: db.clone(),
            clock: clock.clone(),
            beat: oxcast_db::NodeBeat {
                id: holder.clone(),
                roles: roles.to_string(),
                host: crate::heartbeat::hostname(),
                pid: std::process::id(),
                version: env!("CARGO_PKG_VERSION").into(),
                started_at: clock.now_ms(),
                job_slots: if roles.has(Role::Worker) {
                    config.worker.concurrency as u32
                } else {
                    0
                },
                live_sessions: 0,
                live_viewers: 0,
                load1: 0.0,
                relay_addr: relay_addr.clone(),
            },
            live: live.clone(),
            every: if relay_addr.is_empty() {
                crate::heartbeat::EVERY
            } else {
                crate::heartbeat::RELAY_EVERY
            },
        }
        .run(shutdown.clone()),
    );

    // Streams encoded elsewhere, for the live origin of an API node.
    let replica = if roles.has(Role::Api) {
        let (replica, task) = oxcast_live::Replica::start(
            db.clone(),
            store.clone(),
            &config.live,
            clock.clone(),
            holder.clone(),
            shutdown.clone(),
        );
        tasks.spawn(async move {
            let _ = task.await;
        });
        Some(replica)
    } else {
        None
    };
    let state = AppState::new(Inner {
        db,
        store,
        config: config.clone(),
        clock,
        signer: Signer::new(signing_key.into_bytes()),
        wake,
        metrics: Some(metrics),
        live: live.clone(),
        live_serve: Arc::new(oxcast_live::LiveServe {
            local: live.clone(),
            replica,
        }),
        part_gate: oxcast_api::limits::Gate::new(
            config.http.max_part_uploads,
            config.http.max_part_uploads_per_addr,
        ),
        blocking_gate: oxcast_api::limits::Gate::new(
            config.origin.max_blocking,
            config.origin.max_blocking_per_addr,
        ),
        origin: oxcast_api::origin::OriginCache::new(
            config.origin.memory_cache_mb << 20,
            config.origin.small_object_kb << 10,
        ),
    });
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("binding {}", config.listen))?;
    let addr = listener.local_addr()?;
    tracing::info!(%addr, %roles, data_dir = %data.display(), "oxcast serving on http://{addr}/");
    println!("oxcast listening on http://{addr}/ (roles: {roles})");

    let signal = shutdown.clone();
    tasks.spawn(async move {
        tokio::select! {
            _ = host::wait_for_signal() => tracing::info!("shutting down"),
            _ = signal.cancelled() => {}
        }
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
    let routes = Routes {
        api: roles.has(Role::Api),
        live: roles.has(Role::Live) || roles.has(Role::Api),
    };
    let fast = routes
        .api
        .then(|| oxcast_api::origin::fast::FastPlayback::new(state.clone()));
    oxcast_api::serve::serve(
        listener,
        oxcast_api::router(state.clone(), routes),
        fast,
        oxcast_api::health_router(state),
        limits,
        shutdown.clone(),
    )
    .await
    .context("http server")?;
    shutdown.cancel();
    if let Some(relay) = relay {
        relay.wait().await;
    }
    if let Some(live) = &live {
        live.hand_off().await;
    }
    relay_stop.cancel();
    if let Some(live) = live {
        live.shutdown().await;
    }
    tasks.join_all().await;
    tracing::info!("stopped");
    Ok(())
}

/// The RTMP and SRT servers, handing publishers to `handler`: this process's live manager, or
/// the relay to other processes' encoders.
async fn start_ingest(
    config: &Config,
    handler: Arc<dyn PublishHandler>,
    shutdown: &CancellationToken,
    tasks: &mut JoinSet<()>,
) -> anyhow::Result<()> {
    if let Some(addr) = config.live.rtmp_listen {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .with_context(|| format!("binding RTMP ingest {addr}"))?;
        tasks.spawn(oxcast_ingest::serve_rtmp(
            listener,
            handler.clone(),
            shutdown.clone(),
        ));
    }
    if let Some(addr) = config.live.srt_listen {
        let socket = tokio::net::UdpSocket::bind(addr)
            .await
            .with_context(|| format!("binding SRT ingest {addr}"))?;
        let token = shutdown.clone();
        tasks.spawn(async move {
            let cfg = oxcast_ingest::IngestConfig::default();
            if let Err(e) = oxcast_ingest::serve_srt_socket(socket, handler, token, cfg).await {
                tracing::error!(error = %e, "SRT ingest stopped");
            }
        });
    }
    Ok(())
}

/// The listener for publishers relayed by ingest nodes, into this process's live manager; the
/// address the ingest nodes are told (`live.relay_advertise`, else the bound address).
async fn start_relay_listener(
    config: &Config,
    listen: std::net::SocketAddr,
    live: &Arc<oxcast_live::LiveManager>,
    server: oxcast_ingest::relay::RelayServer,
    shutdown: &CancellationToken,
    tasks: &mut JoinSet<()>,
) -> anyhow::Result<String> {
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("binding the live relay listener {listen}"))?;
    let bound = listener.local_addr()?;
    let advertise = match &config.live.relay_advertise {
        Some(a) => a.clone(),
        None => {
            if bound.ip().is_unspecified() {
                tracing::warn!(
                    %bound,
                    "live.relay_listen is a wildcard address, which ingest nodes cannot connect \
                     to: set live.relay_advertise to this node's host:port"
                );
            }
            bound.to_string()
        }
    };
    tracing::info!(%bound, %advertise, "taking relayed publishers from ingest nodes");
    tasks.spawn(oxcast_ingest::relay::serve_relay(
        listener,
        live.handler(),
        server,
        shutdown.clone(),
    ));
    Ok(advertise)
}

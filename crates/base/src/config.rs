//! The one typed configuration.
//!
//! Sources merge in this order, later winning: built-in defaults, an optional TOML file, then
//! `OXCAST_*` environment variables (nested keys with `__`, e.g. `OXCAST_WORKER__CONCURRENCY=2`),
//! then command-line flags applied by the binary. Unknown keys are errors so a typo in a config
//! file is reported instead of silently falling back to a default.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use figment::providers::{Env, Format, Serialized, Toml};
use figment::Figment;
use serde::{Deserialize, Serialize};

mod live;
mod origin;
pub use live::LiveConfig;
pub use origin::OriginConfig;

pub use crate::roles::{Role, Roles};

#[derive(Debug, thiserror::Error)]
#[error("configuration: {0}")]
pub struct ConfigError(#[from] Box<figment::Error>);

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Address the HTTP server binds.
    pub listen: SocketAddr,
    /// Where the embedded database, object store and scratch space live.
    pub data_dir: PathBuf,
    /// Database URL; `sqlite://<data_dir>/oxcast.db` when unset. `postgres://…` for scale-out.
    pub database_url: Option<String>,
    /// When set, every `/api/v1` call needs `Authorization: Bearer <token>`.
    pub api_token: Option<String>,
    /// What this process does (`--roles api,worker`); every role by default.
    pub roles: Roles,
    /// HMAC key for signed part URLs. Required once roles are split or the database is shared,
    /// so that any API node verifies what another signed; otherwise a random key is created once
    /// and kept in the data dir.
    pub signing_key: Option<String>,
    pub http: HttpConfig,
    pub origin: OriginConfig,
    pub upload: UploadConfig,
    pub limits: Limits,
    pub worker: WorkerConfig,
    pub reconcile: ReconcileConfig,
    pub transcode: TranscodeConfig,
    pub live: LiveConfig,
    pub storage: StorageConfig,
    /// Where viewers (or a CDN) read published videos directly, e.g.
    /// `https://cdn.example.com/oxcast-media`: the API's `hls_url`/`dash_url` then point there
    /// instead of at this server's origin. Unset: the origin (`/v/…`).
    pub public_base_url: Option<String>,
}

/// Where objects live: the local folder `<data_dir>/objects` by default, or an S3-compatible
/// bucket (`url = "s3://bucket"`).
#[derive(Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct StorageConfig {
    /// `s3://BUCKET`; unset keeps objects in `<data_dir>/objects`.
    pub url: Option<String>,
    /// The S3 endpoint, e.g. `http://127.0.0.1:8333`; unset means AWS.
    pub endpoint: Option<String>,
    /// Region for signing; `AWS_REGION`/`AWS_DEFAULT_REGION`, else `us-east-1`, when unset.
    pub region: Option<String>,
    /// Path-style URLs (`endpoint/bucket/key`), which most self-hosted servers need; else
    /// virtual-hosted style (`bucket.endpoint/key`).
    pub path_style: bool,
    /// Static credentials; when unset the standard `AWS_*` environment variables are used.
    pub access_key_id: Option<String>,
    pub secret_access_key: Option<String>,
}

// Hand-written so that logging a Config never prints the secret.
impl std::fmt::Debug for StorageConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StorageConfig")
            .field("url", &self.url)
            .field("endpoint", &self.endpoint)
            .field("region", &self.region)
            .field("path_style", &self.path_style)
            .field("access_key_id", &self.access_key_id)
            .field(
                "secret_access_key",
                &self.secret_access_key.as_ref().map(|_| "<redacted>"),
            )
            .finish()
    }
}

/// Which backend [`StorageConfig::url`] names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StorageTarget {
    /// A folder on this machine.
    Local(PathBuf),
    /// An S3 bucket.
    S3 { bucket: String },
}

impl StorageConfig {
    /// Parses `url`; `data_dir` gives the default folder.
    pub fn target(&self, data_dir: &Path) -> Result<StorageTarget, String> {
        let Some(url) = self.url.as_deref().map(str::trim).filter(|u| !u.is_empty()) else {
            return Ok(StorageTarget::Local(data_dir.join("objects")));
        };
        if let Some(bucket) = url.strip_prefix("s3://") {
            let bucket = bucket.trim_end_matches('/');
            let valid = (3..=63).contains(&bucket.len())
                && bucket.bytes().all(|b| {
                    b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.'
                })
                && !bucket.starts_with(['-', '.'])
                && !bucket.ends_with(['-', '.']);
            if !valid {
                return Err(format!(
                    "storage.url {url:?}: the bucket name must be 3 to 63 lowercase letters, digits, '-' or '.' (no key prefix)"
                ));
            }
            return Ok(StorageTarget::S3 {
                bucket: bucket.to_string(),
            });
        }
        if let Some(path) = url.strip_prefix("file://") {
            return Ok(StorageTarget::Local(PathBuf::from(path)));
        }
        Err(format!(
            "storage.url {url:?}: expected s3://BUCKET or file:///PATH"
        ))
    }
}

/// What the HTTP server allows a connection, so that idle, slow or stalled clients cannot hold
/// memory or descriptors for long.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct HttpConfig {
    /// A request's headers must arrive within this many seconds of the server being ready for
    /// them; this also closes a kept-alive connection that sits idle that long.
    pub header_timeout_s: f64,
    /// A request body that sends nothing for this many seconds is dropped (408).
    pub body_idle_timeout_s: f64,
    /// Connections served at once; further ones get only `/healthz` and `/metrics` (a few, with
    /// a short header timeout), and beyond that are closed at once. Also capped by the process's
    /// descriptor limit.
    pub max_connections: usize,
    /// Part uploads in flight at once, in total and from one address (429 beyond).
    pub max_part_uploads: usize,
    pub max_part_uploads_per_addr: usize,
}

impl Default for HttpConfig {
    fn default() -> Self {
        Self {
            header_timeout_s: 10.0,
            body_idle_timeout_s: 10.0,
            max_connections: 10_000,
            max_part_uploads: 128,
            max_part_uploads_per_addr: 16,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct UploadConfig {
    /// Size of every part but the last, in bytes.
    pub part_size: u64,
    /// Largest accepted upload, in bytes; checked when the upload is created.
    pub max_size: u64,
    /// How long a signed part URL stays valid.
    pub url_ttl_s: u64,
    /// Deprecated: use the top-level `signing_key`, which wins when both are set.
    pub signing_key: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct Limits {
    pub max_duration_s: f64,
    pub max_width: u32,
    pub max_height: u32,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct WorkerConfig {
    /// Jobs processed at once by this process; 0 runs no in-process workers.
    pub concurrency: usize,
    /// Visibility timeout of a leased job; a heartbeat renews it every third of this.
    pub lease_s: u64,
    /// Attempts before a job is marked failed.
    pub max_attempts: u32,
    /// How often an idle worker looks for work.
    pub poll_ms: u64,
}

/// The reconciler: removes stored bytes that nothing in the database owns any more.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct ReconcileConfig {
    /// Seconds between passes (one also runs at start); 0 disables it.
    pub interval_s: f64,
    /// Objects and staging files younger than this are never removed: they may belong to a
    /// write whose database record is about to land.
    pub grace_s: f64,
    /// An upload never completed is removed this long after its part URLs expired.
    pub upload_expiry_margin_s: f64,
}

impl Default for ReconcileConfig {
    fn default() -> Self {
        Self {
            interval_s: 600.0,
            grace_s: 3600.0,
            upload_expiry_margin_s: 3600.0,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct TranscodeConfig {
    pub ffmpeg: PathBuf,
    pub ffprobe: PathBuf,
    /// x264 preset for VOD renditions.
    pub preset: String,
    /// Segment duration and keyframe interval, in seconds.
    pub segment_s: f64,
    pub audio_bitrate: u32,
    /// A video longer than this (rounded to whole segments) is encoded in chunks of this
    /// length, each a job any worker may lease, plus one audio job; shorter ones are one job.
    pub chunk_s: f64,
    /// The VOD ladder's candidate rungs; those taller than the source are dropped (never an
    /// upscale), and the smallest is kept only when fewer than two would remain.
    pub ladder: Vec<LadderRung>,
}

/// One candidate VOD rendition: `{ short_side = 720, kbps = 2800 }` is "720p" at 2.8 Mbit/s.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct LadderRung {
    /// The short side of the displayed picture, in pixels: 720 for 1280x720 and 720x1280.
    pub short_side: u32,
    /// Target video bitrate, kbit/s (the VBV caps are derived from it).
    pub kbps: u32,
}

impl LadderRung {
    /// The default ladder: 1080p down to 240p.
    pub fn defaults() -> Vec<LadderRung> {
        [
            (1080, 4500),
            (720, 2800),
            (480, 1400),
            (360, 800),
            (240, 400),
        ]
        .into_iter()
        .map(|(short_side, kbps)| LadderRung { short_side, kbps })
        .collect()
    }
}

impl Default for Config {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            data_dir: PathBuf::from("oxcast-data"),
            database_url: None,
            api_token: None,
            roles: Roles::all(),
            signing_key: None,
            http: HttpConfig::default(),
            origin: OriginConfig::default(),
            upload: UploadConfig::default(),
            limits: Limits::default(),
            worker: WorkerConfig::default(),
            reconcile: ReconcileConfig::default(),
            transcode: TranscodeConfig::default(),
            live: LiveConfig::default(),
            storage: StorageConfig::default(),
            public_base_url: None,
        }
    }
}

impl Default for UploadConfig {
    fn default() -> Self {
        Self {
            part_size: 8 * 1024 * 1024,
            max_size: 32 * 1024 * 1024 * 1024,
            url_ttl_s: 24 * 3600,
            signing_key: None,
        }
    }
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_duration_s: 12.0 * 3600.0,
            max_width: 7680,
            max_height: 4320,
        }
    }
}

impl Default for WorkerConfig {
    fn default() -> Self {
        Self {
            concurrency: 1,
            lease_s: 60,
            max_attempts: 3,
            poll_ms: 250,
        }
    }
}

impl Default for TranscodeConfig {
    fn default() -> Self {
        Self {
            ffmpeg: PathBuf::from("ffmpeg"),
            ffprobe: PathBuf::from("ffprobe"),
            preset: "veryfast".into(),
            segment_s: 4.0,
            audio_bitrate: 128_000,
            chunk_s: 60.0,
            ladder: LadderRung::defaults(),
        }
    }
}

const TOP_LEVEL_KEYS: &[&str] = &[
    "listen",
    "data_dir",
    "database_url",
    "api_token",
    "roles",
    "signing_key",
    "http",
    "origin",
    "upload",
    "limits",
    "worker",
    "reconcile",
    "transcode",
    "live",
    "storage",
    "public_base_url",
];

impl Config {
    /// Defaults, then `file` (if given; a missing explicit file is an error), then `OXCAST_*`.
    pub fn load(file: Option<&Path>) -> Result<Self, ConfigError> {
        Self::figment(file)
            .extract()
            .map_err(|e| ConfigError(Box::new(e)))
    }

    fn figment(file: Option<&Path>) -> Figment {
        let mut f = Figment::from(Serialized::defaults(Config::default()));
        if let Some(path) = file {
            f = f.merge(Toml::file_exact(path));
        }
        // Only keys of this struct: other OXCAST_* variables (the CLI's OXCAST_SERVER, a bench
        // script's settings) belong to other programs and must not make `serve` fail.
        f.merge(
            Env::prefixed("OXCAST_")
                .filter(|k| {
                    let top = k.as_str().split("__").next().unwrap_or_default();
                    TOP_LEVEL_KEYS.iter().any(|t| t.eq_ignore_ascii_case(top))
                })
                .split("__"),
        )
    }

    pub fn database_url(&self) -> String {
        match &self.database_url {
            Some(u) => u.clone(),
            None => format!(
                "sqlite://{}?mode=rwc",
                self.data_dir.join("oxcast.db").display()
            ),
        }
    }
}

impl Config {
    /// Checks what no single field can: settings that must agree once a deployment has more
    /// than one process.
    pub fn validate(&self) -> Result<(), String> {
        let shared_db = self
            .database_url
            .as_deref()
            .is_some_and(|u| u.starts_with("postgres"));
        if self.signing_key.is_none()
            && self.upload.signing_key.is_none()
            && (!self.roles.is_all() || shared_db)
        {
            return Err(format!(
                "signing_key must be set when roles are split (roles: {}) or the database is shared \
                 (PostgreSQL): every API node must verify the part URLs another signed. Generate \
                 one with `openssl rand -hex 32` and give every process the same value \
                 (OXCAST_SIGNING_KEY)",
                self.roles
            ));
        }
        let t = &self.transcode;
        if !(t.segment_s.is_finite() && t.segment_s > 0.0) {
            return Err(format!(
                "transcode.segment_s must be a positive number of seconds, not {}",
                t.segment_s
            ));
        }
        if !(t.chunk_s.is_finite() && t.chunk_s >= t.segment_s) {
            return Err(format!(
                "transcode.chunk_s must be at least one segment (transcode.segment_s = {} s), not {}",
                t.segment_s, t.chunk_s
            ));
        }
        validate_ladder(&t.ladder)?;
        self.origin.validate()?;
        if let Some(w) = self.live.dvr_window_s {
            // A delta update may skip all but the last six target durations: the window must
            // hold more than that, with room for the segment in progress.
            let min = 8.0 * self.live.segment_s;
            if !(w.is_finite() && w >= min) {
                return Err(format!(
                    "live.dvr_window_s must be at least 8 segments ({min} s with live.segment_s = \
                     {} s), not {w}; leave it unset to keep the whole session",
                    self.live.segment_s
                ));
            }
        }
        if let Some(a) = &self.live.relay_advertise {
            if self.live.relay_listen.is_none() {
                return Err(
                    "live.relay_advertise is set but live.relay_listen is not: set where this \
                     live node listens for relayed publishers too"
                        .into(),
                );
            }
            let port = a
                .rsplit_once(':')
                .map(|(host, port)| (host, port.parse::<u16>()));
            if !matches!(port, Some((host, Ok(p))) if !host.is_empty() && p != 0) {
                return Err(format!(
                    "live.relay_advertise must be host:port (e.g. \"10.0.0.5:1940\"), not {a:?}"
                ));
            }
        }
        Ok(())
    }

    /// The URL-signing key in force: `signing_key`, else the deprecated `upload.signing_key`.
    pub fn signing_key(&self) -> Option<&str> {
        self.signing_key
            .as_deref()
            .or(self.upload.signing_key.as_deref())
    }
}

/// Every rung a real picture size and bitrate, each short side once.
fn validate_ladder(ladder: &[LadderRung]) -> Result<(), String> {
    if ladder.is_empty() {
        return Err(
            "transcode.ladder needs at least one rung, e.g. [{ short_side = 720, kbps = 2800 }]"
                .into(),
        );
    }
    let mut seen = std::collections::BTreeSet::new();
    for r in ladder {
        if !(2..=8640).contains(&r.short_side) {
            return Err(format!(
                "transcode.ladder: short_side {} is not a picture size (2 to 8640 pixels)",
                r.short_side
            ));
        }
        if !(16..=500_000).contains(&r.kbps) {
            return Err(format!(
                "transcode.ladder: the {}p rung's kbps {} is not a video bitrate (16 to 500000 kbit/s)",
                r.short_side, r.kbps
            ));
        }
        if !seen.insert(r.short_side) {
            return Err(format!(
                "transcode.ladder: {}p is listed twice",
                r.short_side
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
// figment's Jail closures return figment's (large) error type; that is its API, not ours.
#[allow(clippy::result_large_err)]
#[path = "config_tests.rs"]
mod tests;

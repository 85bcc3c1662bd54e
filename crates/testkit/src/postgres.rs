//! A real PostgreSQL for tests.
//!
//! One cluster per test binary, started on first use: a copy of an `initdb` template (made once
//! per machine) in a temp dir, then `postgres` on 127.0.0.1 at a free port with its unix socket
//! in that dir and fsync off. Each
//! [`database()`] call creates a fresh, empty database on it, so tests stay independent.
//!
//! Tests run as root and PostgreSQL refuses to, so under root both programs run as the
//! `postgres` system user, which owns the temp dir. The server is our direct child with
//! `PR_SET_PDEATHSIG`, so it dies with the test process even on SIGKILL; it is stopped and its
//! dir removed at exit, and dirs left by a killed process are removed by the next start.
//!
//! [`private()`] starts a separate server that a test may stop and start (outage tests).

use std::ffi::CString;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Mutex, OnceLock};
use std::time::{Duration, Instant};

/// The URL of a fresh, empty database on this test binary's shared server.
///
/// Panics with what to do if PostgreSQL is not installed or does not start.
pub fn database() -> String {
    static SHARED: OnceLock<PgServer> = OnceLock::new();
    let server = SHARED.get_or_init(|| {
        let s = PgServer::start_new();
        let _ = SHARED_STOP.set((s.child, s.root.clone()));
        // SAFETY: registers a plain `extern "C"` function; it only touches `SHARED_STOP`.
        unsafe { libc::atexit(stop_shared_at_exit) };
        s
    });
    server.database()
}

/// A server of its own, for a test that stops and restarts it; dropped, it stops and its
/// files are removed.
pub fn private() -> PgServer {
    PgServer::start_new()
}

/// One PostgreSQL cluster on loopback.
#[derive(Debug)]
pub struct PgServer {
    bin: PathBuf,
    /// Removed on drop; holds `data/` and the unix socket.
    root: PathBuf,
    port: u16,
    child: &'static Mutex<Option<Child>>,
}

static SHARED_STOP: OnceLock<(&'static Mutex<Option<Child>>, PathBuf)> = OnceLock::new();

extern "C" fn stop_shared_at_exit() {
    if let Some((child, root)) = SHARED_STOP.get() {
        // try_lock: a thread still starting the server must not hang the exit (the death
        // signal stops it then); a panic elsewhere must not keep it running.
        let slot = match child.try_lock() {
            Ok(g) => Some(g),
            Err(std::sync::TryLockError::Poisoned(p)) => Some(p.into_inner()),
            Err(std::sync::TryLockError::WouldBlock) => None,
        };
        if let Some(c) = slot.and_then(|mut g| g.take()) {
            terminate(c);
        }
        let _ = std::fs::remove_dir_all(root);
    }
}

impl PgServer {
    fn start_new() -> Self {
        let bin = bin_dir();
        let user = run_as();
        // Under root the server user must reach the dir: /tmp, not a TMPDIR that may sit
        // under a private home.
        let tmp = match user {
            Some(_) => PathBuf::from("/tmp"),
            None => std::env::temp_dir(),
        };
        let base = tmp.join("oxcast-testkit-pg");
        std::fs::create_dir_all(&base).expect("create the PostgreSQL temp base dir");
        remove_stale(&base);
        static SEQ: AtomicU64 = AtomicU64::new(0);
        let root = base.join(format!(
            "{}-{}",
            std::process::id(),
            SEQ.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&root);
        std::fs::create_dir_all(&root).expect("create the PostgreSQL temp dir");
        if let Some((uid, gid)) = user {
            // Our temp base may be private to root: let the server user reach its own dir.
            use std::os::unix::fs::PermissionsExt;
            let _ = std::fs::set_permissions(&base, std::fs::Permissions::from_mode(0o1777));
            std::os::unix::fs::chown(&root, Some(uid), Some(gid)).expect("chown the temp dir");
        }
        // A copy of a cluster made once per machine (and PostgreSQL build) costs a tenth of
        // an initdb; the template appears by an atomic rename, so it is whole or absent.
        let key = format!("{}{INITDB_ARGS:?}", bin.display());
        let template = base.join(format!("template-{:x}", hash(key.as_bytes())));
        if !template.join("PG_VERSION").exists() {
            let scratch = root.join("template");
            initdb(&bin, &scratch, user);
            if std::fs::rename(&scratch, &template).is_err() {
                let _ = std::fs::remove_dir_all(&scratch); // another process made it first
            }
        }
        let out = Command::new("cp")
            .arg("-a")
            .arg(&template)
            .arg(root.join("data"))
            .output()
            .expect("run cp");
        assert!(
            out.status.success(),
            "copying the PostgreSQL template {} failed: {}",
            template.display(),
            String::from_utf8_lossy(&out.stderr)
        );
        let child: &'static Mutex<Option<Child>> = Box::leak(Box::new(Mutex::new(None)));
        let server = Self {
            bin,
            root,
            port: 0,
            child,
        };
        // Another process may take the free port before the server binds it: try a few.
        let mut server = server;
        for attempt in 0.. {
            server.port = free_port();
            match server.try_start() {
                Ok(()) => return server,
                Err(e) if attempt < 4 => {
                    eprintln!("testkit: PostgreSQL start failed, retrying: {e}")
                }
                Err(e) => panic!("PostgreSQL did not start: {e}"),
            }
        }
        unreachable!()
    }

    /// `postgres://postgres@127.0.0.1:PORT/NAME`.
    pub fn url(&self, name: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{name}", self.port)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// Creates a database with a unique name and returns its URL.
    pub fn database(&self) -> String {
        static SEQ: AtomicU64 = AtomicU64::new(0);
        let name = format!(
            "t{}_{}",
            std::process::id(),
            SEQ.fetch_add(1, Ordering::Relaxed)
        );
        self.psql(&format!("CREATE DATABASE {name}"));
        self.url(&name)
    }

    /// Runs one SQL command as the superuser on the `postgres` database; panics on failure.
    pub fn psql(&self, sql: &str) {
        let out = Command::new(self.bin.join("psql"))
            .args(["-X", "-q", "-v", "ON_ERROR_STOP=1", "-h", "127.0.0.1", "-U"])
            .args([
                "postgres",
                "-d",
                "postgres",
                "-p",
                &self.port.to_string(),
                "-c",
                sql,
            ])
            .stdin(Stdio::null())
            .output()
            .expect("run psql");
        assert!(
            out.status.success(),
            "psql {sql:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Stops the server at once (an immediate shutdown, as a crash would); the data stays.
    pub fn stop(&self) {
        if let Some(c) = self.child.lock().unwrap().take() {
            terminate(c);
        }
    }

    /// Starts it again on the same port and data; returns once it accepts connections.
    pub fn start(&self) {
        self.try_start().expect("restart PostgreSQL");
    }

    fn try_start(&self) -> Result<(), String> {
        let mut slot = self.child.lock().unwrap();
        if slot.is_some() {
            return Ok(());
        }
        let log_path = self.root.join("postgres.log");
        let log = std::fs::File::create(&log_path).map_err(|e| format!("create the log: {e}"))?;
        let mut cmd = Command::new(self.bin.join("postgres"));
        cmd.arg("-D")
            .arg(self.root.join("data"))
            .args(["-h", "127.0.0.1", "-p", &self.port.to_string(), "-k"])
            .arg(&self.root)
            // fsync off: the OS keeps what a killed server wrote. synchronous_commit stays
            // on, or a crash test would lose commits the server had already acknowledged.
            .args(["-c", "fsync=off", "-c", "full_page_writes=off"])
            .args(["-c", "max_connections=400"])
            .args([
                "-c",
                "shared_buffers=16MB",
                "-c",
                "log_min_messages=warning",
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log);
        as_user(&mut cmd, run_as());
        let parent = std::process::id() as libc::pid_t;
        // SAFETY: prctl and getppid are async-signal-safe; nothing here allocates.
        unsafe {
            cmd.pre_exec(move || {
                // Set after the uid change (which clears it). SIGQUIT: immediate shutdown,
                // which also ends the backends.
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGQUIT) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                if libc::getppid() != parent {
                    return Err(std::io::Error::other("the test process already exited"));
                }
                Ok(())
            });
        }
        let mut child = spawn_from_long_lived_thread(cmd).map_err(|e| format!("spawn: {e}"))?;
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = child.try_wait().map_err(|e| e.to_string())? {
                let log = std::fs::read_to_string(&log_path).unwrap_or_default();
                return Err(format!("postgres exited ({status}): {log}"));
            }
            if self.ready() {
                *slot = Some(child);
                return Ok(());
            }
            if Instant::now() > deadline {
                terminate(child);
                return Err("not accepting connections after 30 s".into());
            }
            std::thread::sleep(Duration::from_millis(25));
        }
    }

    fn ready(&self) -> bool {
        Command::new(self.bin.join("pg_isready"))
            .args(["-q", "-h", "127.0.0.1", "-p", &self.port.to_string()])
            .stdin(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    }
}

impl Drop for PgServer {
    fn drop(&mut self) {
        self.stop();
        let _ = std::fs::remove_dir_all(&self.root);
    }
}

const INITDB_ARGS: [&str; 10] = [
    "-A",
    "trust",
    "-U",
    "postgres",
    "-E",
    "UTF8",
    "--locale=C",
    "--no-sync",
    "--no-instructions",
    "--wal-segsize=1",
];

fn initdb(bin: &Path, data: &Path, user: Option<(u32, u32)>) {
    let mut cmd = Command::new(bin.join("initdb"));
    cmd.args(INITDB_ARGS).arg("-D").arg(data);
    as_user(&mut cmd, user);
    let out = cmd.stdin(Stdio::null()).output().expect("run initdb");
    assert!(
        out.status.success(),
        "initdb failed ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
}

/// FNV-1a: a stable name for the template of one PostgreSQL build.
fn hash(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

fn terminate(mut c: Child) {
    // SAFETY: signals our own child, which has not been reaped yet.
    unsafe { libc::kill(c.id() as libc::pid_t, libc::SIGQUIT) };
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline {
        if let Ok(Some(_)) = c.try_wait() {
            return;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let _ = c.kill();
    let _ = c.wait();
}

/// `PR_SET_PDEATHSIG` fires when the spawning *thread* exits, and each test runs on its own
/// thread: spawn from one thread that lives as long as the process.
fn spawn_from_long_lived_thread(cmd: Command) -> std::io::Result<Child> {
    type Req = (Command, mpsc::Sender<std::io::Result<Child>>);
    static SPAWNER: OnceLock<Mutex<mpsc::Sender<Req>>> = OnceLock::new();
    let tx = SPAWNER.get_or_init(|| {
        let (tx, rx) = mpsc::channel::<Req>();
        std::thread::Builder::new()
            .name("testkit-pg-spawner".into())
            .spawn(move || {
                for (mut cmd, reply) in rx {
                    let _ = reply.send(cmd.spawn());
                }
            })
            .expect("spawn the PostgreSQL spawner thread");
        Mutex::new(tx)
    });
    let (reply, answer) = mpsc::channel();
    tx.lock()
        .unwrap()
        .send((cmd, reply))
        .expect("spawner thread alive");
    answer.recv().expect("spawner thread answers")
}

/// Where the server programs are: `OXCAST_PG_BIN`, the newest Debian
/// `/usr/lib/postgresql/N/bin`, or `postgres` on PATH.
fn bin_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("OXCAST_PG_BIN") {
        return PathBuf::from(dir);
    }
    let debian = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let v: u32 = e.file_name().to_str()?.parse().ok()?;
            let bin = e.path().join("bin");
            bin.join("postgres").exists().then_some((v, bin))
        })
        .max();
    if let Some((_, bin)) = debian {
        return bin;
    }
    if let Some(dir) = std::env::var_os("PATH").and_then(|p| {
        std::env::split_paths(&p).find(|d| d.join("postgres").exists() && d.join("initdb").exists())
    }) {
        return dir;
    }
    panic!(
        "PostgreSQL is not installed (no /usr/lib/postgresql/*/bin/postgres, no postgres and \
         initdb on PATH): run scripts/deps.sh --test, or set OXCAST_PG_BIN"
    )
}

/// Under root, the `postgres` system user's uid and gid; otherwise run as ourselves.
fn run_as() -> Option<(u32, u32)> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return None;
    }
    let name = CString::new("postgres").unwrap();
    // SAFETY: getpwnam returns null or a pointer valid until the next call; we copy at once.
    let pw = unsafe { libc::getpwnam(name.as_ptr()) };
    assert!(
        !pw.is_null(),
        "running as root and there is no `postgres` user to run PostgreSQL as: \
         run scripts/deps.sh --test (the Debian package creates it)"
    );
    // SAFETY: checked non-null above.
    Some(unsafe { ((*pw).pw_uid, (*pw).pw_gid) })
}

fn as_user(cmd: &mut Command, user: Option<(u32, u32)>) {
    if let Some((uid, gid)) = user {
        cmd.uid(uid).gid(gid).env("HOME", "/tmp");
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("bind a free port")
        .port()
}

/// Removes dirs of earlier test processes that are gone (killed before their exit hook ran).
fn remove_stale(base: &Path) {
    for entry in std::fs::read_dir(base).into_iter().flatten().flatten() {
        let name = entry.file_name();
        let Some(pid) = name
            .to_str()
            .and_then(|n| n.split('-').next())
            .and_then(|p| p.parse::<libc::pid_t>().ok())
        else {
            continue;
        };
        // SAFETY: signal 0 only checks that the process exists.
        let gone = unsafe { libc::kill(pid, 0) } != 0
            && std::io::Error::last_os_error().raw_os_error() == Some(libc::ESRCH);
        if gone {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn databases_are_fresh_and_distinct() {
        let a = database();
        let b = database();
        assert_ne!(a, b);
        assert!(a.starts_with("postgres://postgres@127.0.0.1:"));
    }

    #[test]
    fn a_private_server_stops_and_starts_on_the_same_port() {
        let s = private();
        let url = s.database();
        let port = s.port();
        s.stop();
        assert!(!s.ready());
        s.start();
        assert_eq!(s.port(), port);
        assert!(s.ready());
        assert!(url.contains(&format!(":{port}/")));
        let root = s.root.clone();
        drop(s);
        assert!(!root.exists(), "dir removed on drop");
    }
}

//! Hostile clients and crashes at the HTTP edge: stalled bodies, idle and slowloris
//! connections under a low descriptor limit, racing part PUTs under a busy database, deletes and
//! crashes that must not orphan bytes, and the small correctness rules around them.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use common::*;
use md5::{Digest, Md5};
use serde_json::Value;

/// A raw HTTP/1.1 request head, for clients that misbehave after it.
fn head(method: &str, port: u16, path: &str, extra: &str) -> String {
    format!("{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n{extra}\r\n")
}

/// Whether the server closed `s` (EOF or reset) within `within`; a response before the close
/// counts as closed too, since what matters is that the connection is released.
fn closed_within(s: &TcpStream, within: Duration) -> bool {
    let mut s = s;
    let deadline = Instant::now() + within;
    let mut buf = [0u8; 4096];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return false;
        }
        s.set_read_timeout(Some(left)).unwrap();
        match s.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => continue,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return false,
            Err(e) if e.kind() == std::io::ErrorKind::TimedOut => return false,
            Err(_) => return true,
        }
    }
}

/// Whether the server has closed `s` already, without waiting.
fn is_closed_now(s: &TcpStream) -> bool {
    let mut buf = [0u8; 1];
    s.set_nonblocking(true).unwrap();
    let closed = match s.peek(&mut buf) {
        Ok(0) => true,
        Ok(_) => false,
        Err(e) => e.kind() != std::io::ErrorKind::WouldBlock,
    };
    s.set_nonblocking(false).unwrap();
    closed
}

fn part_urls(up: &Value) -> Vec<String> {
    up["parts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["url"].as_str().unwrap().to_string())
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn stalled_part_bodies_are_dropped_and_their_memory_returned() {
    const PART: u64 = 4 << 20;
    const CLIENTS: usize = 200;
    let server = Server::start(&[
        ("OXCAST_UPLOAD__PART_SIZE", &PART.to_string()),
        ("OXCAST_HTTP__BODY_IDLE_TIMEOUT_S", "2"),
        ("OXCAST_HTTP__MAX_PART_UPLOADS", "1000"),
        ("OXCAST_HTTP__MAX_PART_UPLOADS_PER_ADDR", "1000"),
    ]);
    let base = server.base.clone();
    let up = create_upload(&base, "big.mp4", PART * CLIENTS as u64, "stalled").await;
    let urls = part_urls(&up);
    let rss_start = server.rss();

    // Every client declares a whole part, sends all of it but one byte, and stops.
    let port = server.port;
    let clients: Vec<TcpStream> = tokio::task::spawn_blocking(move || {
        let body = vec![7u8; PART as usize - 1];
        urls.iter()
            .map(|url| {
                let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
                s.write_all(
                    head("PUT", port, url, &format!("Content-Length: {PART}\r\n")).as_bytes(),
                )
                .unwrap();
                s.write_all(&body).unwrap();
                s
            })
            .collect()
    })
    .await
    .unwrap();
    let sent_at = Instant::now();
    let rss_peak = server.rss();

    // Each is closed within the body idle timeout (2 s, plus slack for a loaded machine).
    let clients = tokio::task::spawn_blocking(move || {
        let mut open = 0;
        let mut clients = clients;
        for s in &mut clients {
            if !closed_within(s, Duration::from_secs(8).saturating_sub(sent_at.elapsed())) {
                open += 1;
            }
        }
        (open, clients)
    })
    .await
    .unwrap();
    assert_eq!(
        clients.0, 0,
        "stalled part PUTs still open after the body timeout"
    );
    drop(clients.1);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let rss_end = server.rss();
    let mb = |b: u64| b as f64 / (1 << 20) as f64;
    eprintln!(
        "RSS start {:.0} MB, with {CLIENTS} stalled parts {:.0} MB, after {:.0} MB",
        mb(rss_start),
        mb(rss_peak),
        mb(rss_end)
    );
    // 200 parts of 4 MiB held in memory would be 800 MB; streamed, each holds under 1 MiB.
    assert!(
        rss_peak < rss_start + (100 << 20),
        "RSS grew from {:.0} MB to {:.0} MB",
        mb(rss_start),
        mb(rss_peak)
    );
    assert!(
        rss_end < rss_start + (40 << 20),
        "RSS {:.0} MB after the clients left (start {:.0} MB)",
        mb(rss_end),
        mb(rss_start)
    );
    // Nothing was stored or half-stored: no parts, no staging files.
    let status = json(
        http()
            .get(format!(
                "{base}/api/v1/uploads/{}",
                up["upload_id"].as_str().unwrap()
            ))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status["parts"].as_array().unwrap().len(), 0);
    assert_eq!(server.files("uploads"), Default::default());
    assert!(metrics(&base).await.contains("status=\"408\""));
}

#[tokio::test(flavor = "multi_thread")]
async fn idle_and_slow_clients_cannot_starve_the_server_under_a_low_descriptor_limit() {
    // 512 descriptors: 256 kept for the server's own files, 32 overflow slots, so 224
    // connections are served and the rest refused.
    raise_own_nofile(4096);
    // Long enough that opening 620 connections on a busy 2-core machine fits well inside it
    // (the counts below are only right before the header timer starts closing them).
    const HEADER_TIMEOUT_S: u64 = 5;
    let server = Server::start_limited(
        &[(
            "OXCAST_HTTP__HEADER_TIMEOUT_S",
            &HEADER_TIMEOUT_S.to_string(),
        )],
        512,
    );
    let port = server.port;
    assert!(server.log().contains("connection cap"), "{}", server.log());

    let (idle, slow, refused) = tokio::task::spawn_blocking(move || {
        let started = Instant::now();
        let idle: Vec<TcpStream> = (0..600)
            .map(|_| TcpStream::connect(("127.0.0.1", port)).unwrap())
            .collect();
        // Slowloris: a header line started, one more byte now and then.
        let slow: Vec<TcpStream> = (0..20)
            .map(|_| {
                let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
                let _ = s.write_all(b"GET /healthz HTTP/1.1\r\nX-Slow: ");
                s
            })
            .collect();
        // Connections past the cap and the overflow slots are closed at once.
        std::thread::sleep(Duration::from_millis(300));
        let refused = idle.iter().filter(|s| is_closed_now(s)).count();
        assert!(
            started.elapsed() < Duration::from_secs(HEADER_TIMEOUT_S),
            "setup took longer than the header timeout: {:?}",
            started.elapsed()
        );
        (idle, slow, refused)
    })
    .await
    .unwrap();
    assert!(
        refused >= 300,
        "only {refused} of 600 idle connections were refused at the cap"
    );

    // Another client's health check answers, and quickly, while all those are held. Overflow
    // slots taken by idle clients free up after one second.
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let t = Instant::now();
    let r = http()
        .get(format!("{}/healthz", server.base))
        .timeout(Duration::from_secs(1))
        .send()
        .await
        .expect("healthz while the connection cap is reached");
    assert_eq!(r.status(), 200);
    assert!(t.elapsed() < Duration::from_secs(1));

    // The held connections, idle or dripping bytes, are closed within the header timeout.
    let (open_idle, open_slow) = tokio::task::spawn_blocking(move || {
        let mut slow = slow;
        for s in &mut slow {
            let _ = s.write_all(b"x");
        }
        let deadline = Instant::now() + Duration::from_secs(HEADER_TIMEOUT_S + 3);
        let idle = idle;
        let open_idle = idle
            .iter()
            .filter(|s| !closed_within(s, deadline.saturating_duration_since(Instant::now())))
            .count();
        let open_slow = slow
            .iter()
            .filter(|s| !closed_within(s, deadline.saturating_duration_since(Instant::now())))
            .count();
        (open_idle, open_slow)
    })
    .await
    .unwrap();
    assert_eq!(open_idle, 0, "idle connections outlived the header timeout");
    assert_eq!(
        open_slow, 0,
        "slowloris connections outlived the header timeout"
    );

    // The server is fine afterwards, and said so without flooding its log.
    let r = http()
        .get(format!("{}/api/v1/videos", server.base))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let log = server.log();
    assert!(!log.contains("Too many open files"), "{log}");
    assert!(
        log.lines().count() < 100,
        "log flooded: {} lines",
        log.lines().count()
    );
    let m = metrics(&server.base).await;
    assert!(m.contains("oxcast_http_connections_refused_total"), "{m}");
}

/// The test itself holds hundreds of sockets: make sure its own limit allows them.
fn raise_own_nofile(want: u64) {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: plain getrlimit/setrlimit on a struct we own.
    unsafe {
        libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim);
        if lim.rlim_cur < want {
            lim.rlim_cur = want.min(lim.rlim_max);
            libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
        }
    }
}

/// Holds SQLite's write lock for `hold` while `during` runs: the database as busy as under load.
async fn with_busy_db<F: std::future::Future>(
    server: &Server,
    hold: Duration,
    during: F,
) -> F::Output {
    use sqlx::Connection;
    let url = format!("sqlite://{}", server.data.join("oxcast.db").display());
    let mut conn = sqlx::SqliteConnection::connect(&url).await.unwrap();
    sqlx::query("BEGIN IMMEDIATE")
        .execute(&mut conn)
        .await
        .unwrap();
    let release = async {
        tokio::time::sleep(hold).await;
        sqlx::query("COMMIT").execute(&mut conn).await.unwrap();
    };
    let (out, ()) = tokio::join!(during, release);
    out
}

#[tokio::test(flavor = "multi_thread")]
async fn racing_puts_of_one_part_leave_bytes_and_etag_that_agree() {
    let server = Server::start(&[]);
    let base = server.base.clone();
    let dir = tempfile::tempdir().unwrap();
    let good = std::fs::read(make_video(dir.path(), "race.mp4", 320, 180, 2, true)).unwrap();
    let size = good.len();
    let up = create_upload(&base, "race.mp4", size as u64, "race").await;
    let upload_id = up["upload_id"].as_str().unwrap().to_string();
    let url = part_urls(&up).remove(0);

    for round in 0..8 {
        let bodies: Vec<Vec<u8>> = (0..3u8)
            .map(|i| {
                let mut b = good.clone();
                if i > 0 {
                    b[size / 2] ^= i; // same size, different bytes
                }
                b
            })
            .collect();
        let puts = bodies.iter().map(|b| put(&base, &url, b.clone()));
        let responses = with_busy_db(
            &server,
            Duration::from_millis(600),
            futures::future::join_all(puts),
        )
        .await;
        let mut etags = Vec::new();
        for r in responses {
            assert_eq!(r.status(), 200, "round {round}");
            etags.push(r.headers()["etag"].to_str().unwrap().to_string());
        }
        let status = upload_status(&base, &upload_id).await;
        let recorded = status["parts"][0]["etag"].as_str().unwrap().to_string();
        // Exactly one stored object for the part, and it is what the record says.
        let files = server.files(&format!("uploads/{upload_id}"));
        assert_eq!(files.len(), 1, "round {round}: {files:?}");
        let stored = std::fs::read(
            server
                .data
                .join("objects/uploads")
                .join(&upload_id)
                .join(files.iter().next().unwrap()),
        )
        .unwrap();
        let md5 = format!("\"{}\"", hex::encode(Md5::digest(&stored)));
        assert_eq!(
            recorded, md5,
            "round {round}: recorded ETag is not the stored bytes'"
        );
        assert!(etags.contains(&recorded));
    }

    // A losing body's ETag cannot complete the upload; the stored one can, and it processes.
    let status = upload_status(&base, &upload_id).await;
    let recorded = status["parts"][0]["etag"].as_str().unwrap().to_string();
    let complete = |etag: String| {
        http()
            .post(format!("{base}/api/v1/uploads/{upload_id}/complete"))
            .json(&serde_json::json!({"parts": [{"part_number": 1, "etag": etag}]}))
            .send()
    };
    let stale = format!("\"{}\"", hex::encode(Md5::digest(b"not it")));
    assert_eq!(complete(stale.clone()).await.unwrap().status(), 400);
    assert_eq!(complete(recorded.clone()).await.unwrap().status(), 202);
    // Repeating complete: same parts, same answer; other ETags, 409.
    assert_eq!(complete(recorded.clone()).await.unwrap().status(), 202);
    let r = complete(stale).await.unwrap();
    assert_eq!(r.status(), 409);
    let v = wait_done(
        &base,
        up["video_id"].as_str().unwrap(),
        Duration::from_secs(120),
    )
    .await;
    // The stored body is one of the three; only the unmodified one is a valid video, the
    // others still decode (a flipped byte in the media data) or fail with a reason.
    assert!(v["status"] == "ready" || v["error"].is_string(), "{v}");
}

/// Every file of the object folder belongs to a video or an open upload that exists, and is a
/// finished object (no staging file); no empty folders.
async fn assert_store_matches_database(server: &Server) {
    let base = &server.base;
    let videos = json(
        http()
            .get(format!("{base}/api/v1/videos"))
            .send()
            .await
            .unwrap(),
    )
    .await;
    let ids: std::collections::BTreeSet<String> = videos["videos"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["id"].as_str().unwrap().to_string())
        .collect();
    for f in server.files("videos") {
        let id = f.split('/').next().unwrap();
        assert!(ids.contains(id), "videos/{f} belongs to no video");
        assert!(!f.contains('#'), "staging file videos/{f}");
    }
    for f in server.files("uploads") {
        assert!(!f.contains('#'), "staging file uploads/{f}");
        let upload = f.split('/').next().unwrap();
        let r = http()
            .get(format!("{base}/api/v1/uploads/{upload}"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "uploads/{f} belongs to no upload");
        let status = json(r).await;
        assert_eq!(
            server.files(&format!("uploads/{upload}")).len(),
            status["parts"].as_array().unwrap().len(),
            "upload {upload} holds other objects than its parts"
        );
    }
    let mut stack = vec![server.data.join("objects")];
    while let Some(d) = stack.pop() {
        let entries: Vec<_> = std::fs::read_dir(&d).unwrap().flatten().collect();
        if d != server.data.join("objects") {
            assert!(!entries.is_empty(), "empty folder {}", d.display());
        }
        stack.extend(entries.iter().map(|e| e.path()).filter(|p| p.is_dir()));
    }
}

async fn wait_for_progress(base: &str, id: &str, at_least: f64) {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let v = video(base, id).await;
        let p = v["progress"].as_f64().unwrap_or(0.0);
        if v["status"] == "processing" && p >= at_least {
            return;
        }
        assert!(
            v["status"] != "ready",
            "{id} finished before progress {at_least}"
        );
        assert!(
            Instant::now() < deadline,
            "{id} never reached {at_least}: {v}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn ffmpeg_children(pid: i32) -> usize {
    let out = std::process::Command::new("pgrep")
        .args(["-P", &pid.to_string(), "ffmpeg"])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).lines().count()
}

#[tokio::test(flavor = "multi_thread")]
async fn deletes_races_and_crashes_leave_no_orphaned_bytes() {
    let env = [
        ("OXCAST_RECONCILE__INTERVAL_S", "1"),
        ("OXCAST_RECONCILE__GRACE_S", "2"),
        ("OXCAST_UPLOAD__PART_SIZE", "1048576"),
    ];
    let mut server = Server::start(&env);
    let base = server.base.clone();
    let dir = tempfile::tempdir().unwrap();
    // Long enough that progress can be caught at each point on a fast machine.
    let src = make_video(dir.path(), "long.mp4", 854, 480, 30, true);

    // A video that stays: its objects must all survive every pass.
    let keep = upload(
        &base,
        &make_video(dir.path(), "keep.mp4", 320, 180, 3, true),
        "keep",
        4,
    )
    .await;
    wait_ready(&base, &keep).await;
    let kept = server.objects(&format!("videos/{keep}"));

    // Deleted at three points of its encode: the encode stops within a second (no ffmpeg
    // left) and what it wrote goes.
    for at in [0.05, 0.45, 0.8] {
        let id = upload(&base, &src, &format!("doomed at {at}"), 4).await;
        wait_for_progress(&base, &id, at).await;
        let r = http()
            .delete(format!("{base}/api/v1/videos/{id}"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 204);
        let deleted = Instant::now();
        while ffmpeg_children(server.pid()) > 0 {
            assert!(
                deleted.elapsed() < Duration::from_secs(1),
                "ffmpeg still running 1 s after the video (at {at}) was deleted"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    let log = server.log();
    assert!(!log.contains("another worker"), "{log}");

    // A part PUT racing a delete: a clear 404, not a 500 with the database's words.
    let up = create_upload(&base, "racer.mp4", 1 << 20, "racer").await;
    let url = part_urls(&up).remove(0);
    let port = server.port;
    let writer = std::thread::spawn(move || {
        let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
        s.write_all(head("PUT", port, &url, "Content-Length: 1048576\r\n").as_bytes())
            .unwrap();
        s.write_all(&vec![1u8; 512 << 10]).unwrap();
        std::thread::sleep(Duration::from_millis(700));
        s.write_all(&vec![1u8; 512 << 10]).unwrap();
        let mut resp = String::new();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let _ = s.read_to_string(&mut resp);
        resp
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    let r = http()
        .delete(format!(
            "{base}/api/v1/videos/{}",
            up["video_id"].as_str().unwrap()
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    let resp = writer.join().unwrap();
    assert!(resp.starts_with("HTTP/1.1 404"), "{resp}");
    for word in ["FOREIGN", "sqlite", "constraint", "database"] {
        assert!(
            !resp.to_lowercase().contains(&word.to_lowercase()),
            "{resp}"
        );
    }

    // kill -9 in the middle of a part write leaves a staging file behind; after a restart the
    // reconciler removes it (the upload stays open and valid).
    let up = create_upload(&base, "crash.mp4", 8 << 20, "crash").await;
    let url = part_urls(&up).remove(0);
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.write_all(head("PUT", port, &url, "Content-Length: 1048576\r\n").as_bytes())
        .unwrap();
    s.write_all(&vec![3u8; 700 << 10]).unwrap();
    let t = Instant::now();
    while !server.files("uploads").iter().any(|f| f.contains('#')) {
        assert!(
            t.elapsed() < Duration::from_secs(5),
            "no staging file appeared"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    server.kill9();
    drop(s);
    server.restart();
    assert!(
        server.files("uploads").iter().any(|f| f.contains('#')),
        "the crash left no staging file to clean up"
    );

    // The reconciler's passes bring the store back to exactly what the database owns.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let clean = tokio::spawn({
            let base = server.base.clone();
            let data = server.data.clone();
            async move { store_is_clean(&base, &data).await }
        })
        .await
        .unwrap();
        if clean {
            break;
        }
        assert!(Instant::now() < deadline, "store still has unowned bytes");
    }
    assert_store_matches_database(&server).await;
    assert_eq!(server.objects(&format!("videos/{keep}")), kept);
    let m = metrics(&server.base).await;
    assert!(m.contains("oxcast_reconcile_removed_objects_total"), "{m}");
}

/// A quick look used while polling: no staging files, no folders of deleted videos, no empty
/// folders.
async fn store_is_clean(base: &str, data: &std::path::Path) -> bool {
    let videos = json(
        http()
            .get(format!("{base}/api/v1/videos"))
            .send()
            .await
            .unwrap(),
    )
    .await;
    let ids: Vec<String> = videos["videos"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["id"].as_str().unwrap().to_string())
        .collect();
    let listed = |p: &str| -> Vec<std::path::PathBuf> {
        std::fs::read_dir(data.join("objects").join(p))
            .map(|rd| rd.flatten().map(|e| e.path()).collect())
            .unwrap_or_default()
    };
    let stray_video = listed("videos")
        .iter()
        .any(|p| !ids.contains(&p.file_name().unwrap().to_string_lossy().into_owned()));
    let staging = listed("uploads")
        .iter()
        .flat_map(|d| std::fs::read_dir(d).into_iter().flatten().flatten())
        .any(|e| e.file_name().to_string_lossy().contains('#'));
    let empty = listed("uploads")
        .iter()
        .chain(listed("videos").iter())
        .any(|d| std::fs::read_dir(d).is_ok_and(|mut rd| rd.next().is_none()));
    !stray_video && !staging && !empty
}

#[tokio::test(flavor = "multi_thread")]
async fn small_rules_titles_weak_etags_and_private_secrets() {
    use std::os::unix::fs::PermissionsExt;
    let server = Server::start(&[]);
    let base = server.base.clone();

    for title in ["nul\u{0}in it", "escape \u{1b}[31m red", "two\nlines"] {
        let r = http()
            .post(format!("{base}/api/v1/uploads"))
            .json(&serde_json::json!({"filename": "a.mp4", "size": 10, "title": title}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 400, "{title:?}");
        let body = json(r).await;
        assert!(
            body["error"].as_str().unwrap().contains("control"),
            "{body}"
        );
    }

    let dir = tempfile::tempdir().unwrap();
    let id = upload(
        &base,
        &make_video(dir.path(), "e.mp4", 320, 180, 2, true),
        "etag",
        2,
    )
    .await;
    wait_ready(&base, &id).await;
    let url = format!("{base}/v/{id}/master.m3u8");
    let r = http().get(&url).send().await.unwrap();
    let etag = r.headers()["etag"].to_str().unwrap().to_string();
    let opaque = etag.trim_start_matches("W/");
    for inm in [
        etag.clone(),
        format!("W/{opaque}"),
        format!("\"x\", W/{opaque}"),
    ] {
        let r = http()
            .get(&url)
            .header("if-none-match", &inm)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 304, "If-None-Match: {inm}");
    }
    let r = http()
        .get(&url)
        .header("if-none-match", "W/\"other\"")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);

    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&server.data), 0o700, "data dir");
    assert_eq!(mode(&server.data.join("signing-key")), 0o600, "signing key");
}

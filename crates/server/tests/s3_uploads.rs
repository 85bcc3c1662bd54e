//! Uploads straight to an S3 bucket (a real SeaweedFS from oxcast-testkit): presigned part URLs
//! that the S3 server itself checks, an API process that carries none of the part bytes, a
//! video that becomes ready and plays from the bucket, a killed CLI upload that resumes sending
//! only the missing parts, and a clear failure when the bucket cannot be reached at start.

mod common;

use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use oxcast_store::{Key, Store};
use oxcast_testkit::s3::S3Bucket;

const PART: u64 = 5 << 20;

fn env_of(b: &S3Bucket, extra: &[(&str, &str)]) -> Vec<(String, String)> {
    let mut env = b.env();
    env.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    env
}

fn start(env: &[(String, String)]) -> Server {
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    Server::start(&env)
}

/// The bucket as the test sees it, through the same Store the server uses.
async fn bucket_store(b: &S3Bucket) -> Store {
    let mut config = oxcast_base::Config::default();
    config.storage.url = Some(format!("s3://{}", b.bucket));
    config.storage.endpoint = Some(b.endpoint.clone());
    config.storage.region = Some(b.region.clone());
    config.storage.path_style = true;
    config.storage.access_key_id = Some(b.access_key_id.clone());
    config.storage.secret_access_key = Some(b.secret_access_key.clone());
    Store::open(&config).await.unwrap()
}

/// Bytes the process has read from any descriptor (sockets included): /proc/PID/io `rchar`.
fn rchar(pid: i32) -> u64 {
    let io = std::fs::read_to_string(format!("/proc/{pid}/io")).unwrap();
    io.lines()
        .find_map(|l| l.strip_prefix("rchar: "))
        .unwrap()
        .trim()
        .parse()
        .unwrap()
}

/// A video of about `mib` MiB: noise does not compress, so the size is the bitrate's.
fn noisy_video(dir: &std::path::Path, mib: u64) -> std::path::PathBuf {
    let out = dir.join("noisy.mp4");
    let secs = 4;
    let rate = format!("{}k", mib * 8 * 1024 / secs);
    ffmpeg(&[
        "-f",
        "lavfi",
        "-i",
        &format!("testsrc2=size=320x240:rate=25:duration={secs},noise=alls=100:allf=t"),
        "-c:v",
        "libx264",
        "-preset",
        "ultrafast",
        "-pix_fmt",
        "yuv420p",
        "-b:v",
        &rate,
        "-minrate",
        &rate,
        "-maxrate",
        &rate,
        "-bufsize",
        "1M",
        out.to_str().unwrap(),
    ]);
    out
}

async fn put_part(url: &str, body: Vec<u8>) -> reqwest::Response {
    http().put(url).body(body).send().await.unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_presigned_upload_lands_in_the_bucket_and_plays_without_passing_the_api() {
    let b = oxcast_testkit::s3::bucket();
    let server = start(&env_of(&b, &[]));
    let base = server.base.clone();
    let dir = tempfile::tempdir().unwrap();
    let src = make_video(dir.path(), "clip.mp4", 320, 240, 4, true);
    let data = std::fs::read(&src).unwrap();

    let up = create_upload(&base, "clip.mp4", data.len() as u64, "straight").await;
    let parts = up["parts"].as_array().unwrap();
    assert_eq!(up["part_size"].as_u64().unwrap(), 8 << 20);
    assert_eq!(parts.len(), 1);
    let url = parts[0]["url"].as_str().unwrap().to_string();
    assert!(url.starts_with(&b.endpoint), "{url}");
    assert!(url.contains("X-Amz-Signature=") && url.contains("partNumber=1"));

    // The S3 server itself refuses a tampered signature and a URL moved to another part.
    let tampered = {
        let (head, sig) = url.rsplit_once("X-Amz-Signature=").unwrap();
        let flipped = if sig.starts_with('0') { "1" } else { "0" };
        format!("{head}X-Amz-Signature={flipped}{}", &sig[1..])
    };
    assert_eq!(put_part(&tampered, data.clone()).await.status(), 403);
    let other_part = url.replace("partNumber=1", "partNumber=2");
    assert_ne!(other_part, url);
    assert_eq!(put_part(&other_part, data.clone()).await.status(), 403);

    let read_before = rchar(server.pid());
    let r = put_part(&url, data.clone()).await;
    assert_eq!(r.status(), 200);
    let etag = r.headers()["etag"].to_str().unwrap().to_string();
    let read_during = rchar(server.pid()) - read_before;
    assert!(
        read_during < data.len() as u64 / 4,
        "the API process read {read_during} bytes while {} went to the bucket",
        data.len()
    );

    // Status lists the part from the bucket, with nothing missing.
    let upload_id = up["upload_id"].as_str().unwrap();
    let st = upload_status(&base, upload_id).await;
    assert_eq!(st["parts"][0]["etag"], etag.as_str());
    assert_eq!(st["parts"][0]["size"], data.len() as u64);
    assert!(st["missing"].as_array().unwrap().is_empty());

    // A wrong ETag is named; then the right one completes. Twice at once enqueues once.
    let complete = |etag: String| {
        let base = base.clone();
        async move {
            http()
                .post(format!("{base}/api/v1/uploads/{upload_id}/complete"))
                .json(&serde_json::json!({"parts": [{"part_number": 1, "etag": etag}]}))
                .send()
                .await
                .unwrap()
        }
    };
    let wrong = complete("\"00000000000000000000000000000000\"".into()).await;
    assert_eq!(wrong.status(), 400);
    assert!(json(wrong).await["error"]
        .as_str()
        .unwrap()
        .contains("ETag"));
    let (a, c) = tokio::join!(complete(etag.clone()), complete(etag.clone()));
    assert_eq!((a.status().as_u16(), c.status().as_u16()), (202, 202));
    assert_eq!(complete(etag.clone()).await.status(), 202);

    let video_id = up["video_id"].as_str().unwrap();
    let v = wait_ready(&base, video_id).await;
    let m = metrics(&base).await;
    let bytes_in = m
        .lines()
        .find(|l| l.starts_with("oxcast_upload_bytes_total"))
        .map(|l| l.rsplit(' ').next().unwrap().parse::<f64>().unwrap())
        .unwrap_or(0.0);
    assert_eq!(bytes_in, 0.0, "part bytes counted by the API");
    let db = oxcast_db::Db::connect(&format!(
        "sqlite://{}?mode=rw",
        server.data.join("oxcast.db").display()
    ))
    .await
    .unwrap();
    let jobs: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM jobs")
        .fetch_one(db.pool())
        .await
        .unwrap();
    assert_eq!(jobs, 1, "one job for one upload completed three times");

    // The bucket holds the source as one object and the published video.
    let store = bucket_store(&b).await;
    let source = store
        .head(&Key::from(format!("sources/{upload_id}")))
        .await
        .unwrap()
        .expect("the source object");
    assert_eq!(source.size, data.len() as u64);
    let published = store
        .list(&Key::from(format!("videos/{video_id}")))
        .await
        .unwrap();
    assert!(published.iter().any(|o| o.key.ends_with("master.m3u8")));
    assert!(published.iter().any(|o| o.key.ends_with(".m4s")));

    // It plays from the origin, which reads the bucket.
    for u in [&v["hls_url"], &v["dash_url"]] {
        let url = format!("{base}{}", u.as_str().unwrap());
        assert_eq!(decode_errors(&url), "", "{url}");
    }

    // An expired presigned URL: the server signs with its clock; sign one an hour in the past.
    let mut config = oxcast_base::Config::default();
    config.storage.url = Some(format!("s3://{}", b.bucket));
    config.storage.endpoint = Some(b.endpoint.clone());
    config.storage.path_style = true;
    config.storage.access_key_id = Some(b.access_key_id.clone());
    config.storage.secret_access_key = Some(b.secret_access_key.clone());
    let mp_store = Store::open(&config).await.unwrap();
    let mp = mp_store.multipart().unwrap();
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    let id = mp.create("sources/expiry-probe", now_ms).await.unwrap();
    let old = mp
        .presign_part(
            "sources/expiry-probe",
            &id,
            1,
            now_ms - 3_600_000,
            Duration::from_secs(60),
        )
        .unwrap();
    assert_eq!(put_part(old.as_str(), b"x".to_vec()).await.status(), 403);
    let fresh = mp
        .presign_part(
            "sources/expiry-probe",
            &id,
            1,
            now_ms,
            Duration::from_secs(60),
        )
        .unwrap();
    assert_eq!(put_part(fresh.as_str(), b"x".to_vec()).await.status(), 200);
    mp.abort("sources/expiry-probe", &id, now_ms).await.unwrap();

    // Deleting the video removes its source and outputs from the bucket.
    let r = http()
        .delete(format!("{base}/api/v1/videos/{video_id}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    assert!(store.list(&Key::from("sources")).await.unwrap().is_empty());
    assert!(store
        .list(&Key::from(format!("videos/{video_id}")))
        .await
        .unwrap()
        .is_empty());
}

/// A TCP relay in front of the S3 server that counts the bytes clients send through it.
async fn counting_relay(upstream: String) -> (String, Arc<AtomicU64>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let sent = Arc::new(AtomicU64::new(0));
    let counter = sent.clone();
    // Owned by the test's runtime: it ends with the test.
    tokio::spawn(async move {
        loop {
            let Ok((mut client, _)) = listener.accept().await else {
                return;
            };
            let upstream = upstream.clone();
            let counter = counter.clone();
            tokio::spawn(async move {
                use tokio::io::{AsyncReadExt, AsyncWriteExt};
                let Ok(server) = tokio::net::TcpStream::connect(&upstream).await else {
                    return;
                };
                let (mut cr, mut cw) = client.split();
                let (mut sr, mut sw) = server.into_split();
                // Counted as the bytes pass, not when the connection ends: a killed client's
                // kept-alive connection may only end after the test has read the count.
                let up = async {
                    let mut buf = vec![0u8; 64 * 1024];
                    loop {
                        let n = cr.read(&mut buf).await?;
                        if n == 0 {
                            return sw.shutdown().await;
                        }
                        counter.fetch_add(n as u64, Ordering::Relaxed);
                        sw.write_all(&buf[..n]).await?;
                    }
                };
                let down = tokio::io::copy(&mut sr, &mut cw);
                let _ = tokio::join!(up, down);
            });
        }
    });
    (format!("http://{addr}"), sent)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_killed_cli_upload_resumes_against_s3_sending_only_missing_parts() {
    let b = oxcast_testkit::s3::bucket();
    // Clients and server reach the bucket through the relay, which counts what they send (the
    // signature covers the relay's host, which it forwards unchanged).
    let upstream = b.endpoint.trim_start_matches("http://").to_string();
    let (relay, sent) = counting_relay(upstream).await;
    let mut via_relay = b.clone();
    via_relay.endpoint = relay;
    let server = start(&env_of(
        &via_relay,
        &[
            ("OXCAST_UPLOAD__PART_SIZE", "5242880"),
            ("OXCAST_WORKER__CONCURRENCY", "0"),
        ],
    ));
    let base = server.base.clone();
    let dir = tempfile::tempdir().unwrap();
    let src = noisy_video(dir.path(), 18);
    let size = std::fs::metadata(&src).unwrap().len();
    let total_parts = size.div_ceil(PART);
    assert!(total_parts >= 3, "{size} bytes");
    let state_dir = dir.path().join("state");
    let cli = |extra: &[&str]| {
        let mut c = Command::new(BIN);
        c.arg("upload")
            .arg(&src)
            .args(["--server", &base, "--parallel", "1", "--no-wait"])
            .arg("--state-dir")
            .arg(&state_dir)
            .args(extra);
        c
    };

    // Throttled so that it is mid-way when killed: one part stored, the next in flight.
    let mut first = cli(&["--limit-rate", "4M"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    let (upload_id, stored) = loop {
        assert!(Instant::now() < deadline, "the CLI stored no part");
        assert!(
            first.try_wait().unwrap().is_none(),
            "the CLI finished before it was killed"
        );
        let saved: Vec<_> = std::fs::read_dir(&state_dir)
            .map(|d| d.flatten().collect())
            .unwrap_or_default();
        if let Some(f) = saved.first() {
            let state: serde_json::Value =
                serde_json::from_slice(&std::fs::read(f.path()).unwrap()).unwrap_or_default();
            if let Some(id) = state["upload_id"].as_str() {
                let st = upload_status(&base, id).await;
                let n = st["parts"].as_array().unwrap().len() as u64;
                if n >= 1 {
                    break (id.to_string(), n);
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    first.kill().unwrap();
    first.wait().unwrap();
    // What the dead CLI left in socket buffers still drains through the relay (and may store
    // a part): wait until nothing has moved for half a second before looking.
    let mut drained = sent.load(Ordering::Relaxed);
    loop {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let now = sent.load(Ordering::Relaxed);
        if now == drained {
            break;
        }
        drained = now;
    }
    // A part may have landed between that look and the kill: ask again now that it is dead.
    let st = upload_status(&base, &upload_id).await;
    let parts = st["parts"].as_array().unwrap();
    let stored_bytes: u64 = parts.iter().map(|p| p["size"].as_u64().unwrap()).sum();
    assert!(stored <= parts.len() as u64 && (parts.len() as u64) < total_parts);

    let before = sent.load(Ordering::Relaxed);
    let out = cli(&[]).output().unwrap();
    assert!(
        out.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let resent = sent.load(Ordering::Relaxed) - before;
    let missing = size - stored_bytes;
    assert!(
        resent >= missing && resent < missing + PART / 2,
        "sent {resent} bytes to the bucket on resume; {missing} were missing"
    );

    let st = upload_status(&base, &upload_id).await;
    assert_eq!(st["state"], "completed");
    let store = bucket_store(&b).await;
    let src_obj = store
        .get_bytes(&Key::from(format!("sources/{upload_id}")))
        .await
        .unwrap();
    assert!(
        src_obj == std::fs::read(&src).unwrap(),
        "the assembled source differs"
    );
}

#[test]
fn an_unreachable_bucket_stops_serve_with_a_clear_error() {
    let port = free_port(); // nothing listens there
    let dir = tempfile::tempdir().unwrap();
    let t = Instant::now();
    let out = Command::new(BIN)
        .args([
            "serve",
            "--listen",
            &format!("127.0.0.1:{}", free_port()),
            "--data-dir",
        ])
        .arg(dir.path())
        .env("OXCAST_STORAGE__URL", "s3://missing-media")
        .env(
            "OXCAST_STORAGE__ENDPOINT",
            format!("http://127.0.0.1:{port}"),
        )
        .env("OXCAST_STORAGE__PATH_STYLE", "true")
        .env("OXCAST_STORAGE__ACCESS_KEY_ID", "key")
        .env("OXCAST_STORAGE__SECRET_ACCESS_KEY", "do-not-print-me")
        .env(
            "OXCAST_LIVE__RTMP_LISTEN",
            format!("127.0.0.1:{}", free_port()),
        )
        .env(
            "OXCAST_LIVE__SRT_LISTEN",
            format!("127.0.0.1:{}", free_udp_port()),
        )
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(
        t.elapsed() < Duration::from_secs(20),
        "took {:?}",
        t.elapsed()
    );
    assert!(err.contains("s3://missing-media"), "{err}");
    assert!(err.contains(&format!("127.0.0.1:{port}")), "{err}");
    assert!(!err.contains("do-not-print-me"), "{err}");
    assert!(!err.contains("panicked"), "{err}");
}

/// The upload page, unchanged, in Chromium: it PUTs parts cross-origin to the bucket's
/// presigned URLs (SeaweedFS answers the CORS preflight and exposes ETag by default) and reads
/// each ETag from the response.
#[tokio::test(flavor = "multi_thread")]
async fn the_upload_page_sends_parts_straight_to_the_bucket() {
    let b = oxcast_testkit::s3::bucket();
    let server = start(&env_of(&b, &[]));
    let dir = tempfile::tempdir().unwrap();
    let src = make_video(dir.path(), "page.mp4", 320, 240, 3, true);
    let (base, file) = (server.base.clone(), src.display().to_string());
    let out = tokio::task::spawn_blocking(move || {
        node_script(
            "upload.mjs",
            &["--base", &base, "--file", &file, "--title", "from the page"],
        )
    })
    .await
    .unwrap();
    let id = out
        .lines()
        .rev()
        .find_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .unwrap()["video_id"]
        .as_str()
        .unwrap()
        .to_string();
    let v = wait_done(&server.base, &id, Duration::from_secs(60)).await;
    assert_eq!(v["status"], "ready", "{v}");
    let store = bucket_store(&b).await;
    let sources = store.list(&Key::from("sources")).await.unwrap();
    assert_eq!(sources.len(), 1);
    assert_eq!(sources[0].size, std::fs::metadata(&src).unwrap().len());
    assert!(
        !metrics(&server.base)
            .await
            .lines()
            .any(|l| l.starts_with("oxcast_upload_bytes_total") && !l.ends_with(" 0")),
        "part bytes went through the API"
    );
}

/// Two API processes on one database and one bucket: created on one, completed on both at
/// once; the bucket completes the object once and exactly one job is queued.
#[tokio::test(flavor = "multi_thread")]
async fn two_api_nodes_completing_at_once_enqueue_once() {
    let b = oxcast_testkit::s3::bucket();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let env = env_of(&b, &[("OXCAST_WORKER__CONCURRENCY", "0")]);
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let one = Server::start_in(&data, &env);
    let two = Server::start_in(&data, &env);
    let body = vec![7u8; 1000];
    let up = create_upload(&one.base, "x.mp4", body.len() as u64, "two nodes").await;
    let r = put_part(up["parts"][0]["url"].as_str().unwrap(), body).await;
    assert_eq!(r.status(), 200);
    let etag = r.headers()["etag"].to_str().unwrap().to_string();
    let upload_id = up["upload_id"].as_str().unwrap();
    let complete = |base: String| {
        let etag = etag.clone();
        async move {
            http()
                .post(format!("{base}/api/v1/uploads/{upload_id}/complete"))
                .json(&serde_json::json!({"parts": [{"part_number": 1, "etag": etag}]}))
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        }
    };
    let (a, c) = tokio::join!(complete(one.base.clone()), complete(two.base.clone()));
    assert_eq!((a, c), (202, 202));
    let db = oxcast_db::Db::connect(&format!(
        "sqlite://{}?mode=rw",
        data.join("oxcast.db").display()
    ))
    .await
    .unwrap();
    let jobs: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM jobs")
        .fetch_one(db.pool())
        .await
        .unwrap();
    assert_eq!(jobs, 1);
    let store = bucket_store(&b).await;
    let src = store
        .get_bytes(&Key::from(format!("sources/{upload_id}")))
        .await
        .unwrap();
    assert_eq!(src.len(), 1000);
}

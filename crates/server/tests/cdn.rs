//! oxcast behind a real CDN cache: Debian's nginx running `deploy/nginx/oxcast-cache.conf`, on
//! loopback in front of the server. What is checked is what a CDN operator relies on: VOD
//! objects are hits once fetched, 200 live viewers on blocking reloads cost the origin about one
//! request per distinct playlist question and one per part, cached live playlists are never
//! stale by more than a part, and hls.js, Shaka (HLS and DASH) and dash.js play at low latency
//! through it.

mod common;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;

/// The server's live part duration (`live.part_s`, the default).
const PART_S: f64 = 0.5;
const VIEWERS: usize = 200;

/// nginx with the shipped cache config, its log and cache in a temp dir; killed on drop.
struct Cdn {
    child: Child,
    port: u16,
    dir: PathBuf,
}

impl Drop for Cdn {
    /// SIGTERM, so that the master stops its workers too (a killed master leaves them
    /// running); SIGKILL if it takes more than 5 s.
    fn drop(&mut self) {
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn nginx_bin() -> &'static str {
    ["/usr/sbin/nginx", "/usr/local/sbin/nginx", "nginx"]
        .into_iter()
        .find(|p| Path::new(p).exists())
        .unwrap_or("nginx")
}

impl Cdn {
    fn start(origin_port: u16, dir: &Path) -> Cdn {
        let port = free_port();
        let shipped =
            std::fs::read_to_string(repo_root().join("deploy/nginx/oxcast-cache.conf")).unwrap();
        // The shipped file with this test's addresses; everything else as users get it.
        let conf = shipped
            .replace(
                "server 127.0.0.1:8080;",
                &format!("server 127.0.0.1:{origin_port};"),
            )
            .replace("listen 8081;", &format!("listen 127.0.0.1:{port};"))
            .replace(
                "/var/cache/nginx/oxcast",
                &dir.join("cache").display().to_string(),
            );
        assert_ne!(conf, shipped, "the shipped config changed shape");
        std::fs::write(dir.join("oxcast-cache.conf"), conf).unwrap();
        let d = dir.display();
        // Root runs workers as `nobody` unless told otherwise, and they could not write here.
        let user = if unsafe { libc::geteuid() } == 0 {
            "user root;"
        } else {
            ""
        };
        let main = format!(
            "{user}
daemon off;
worker_processes 1;
pid {d}/nginx.pid;
error_log {d}/error.log warn;
events {{ worker_connections 4096; }}
http {{
    log_format up '$upstream_addr|$upstream_cache_status|$status|$request_uri';
    access_log {d}/access.log up;
    client_body_temp_path {d}/body;
    proxy_temp_path {d}/proxy;
    fastcgi_temp_path {d}/fastcgi;
    uwsgi_temp_path {d}/uwsgi;
    scgi_temp_path {d}/scgi;
    include {d}/oxcast-cache.conf;
}}
"
        );
        std::fs::write(dir.join("nginx.conf"), main).unwrap();
        let child = Command::new(nginx_bin())
            .args(["-p", &d.to_string(), "-c"])
            .arg(dir.join("nginx.conf"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("nginx must be installed (scripts/deps.sh --test)");
        let cdn = Cdn {
            child,
            port,
            dir: dir.to_path_buf(),
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "nginx did not start: {}",
                std::fs::read_to_string(dir.join("error.log")).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        cdn
    }

    fn base(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Requests nginx passed to the origin, by request URI.
    fn origin_requests(&self) -> BTreeMap<String, usize> {
        let log = std::fs::read_to_string(self.dir.join("access.log")).unwrap_or_default();
        let mut by_uri = BTreeMap::new();
        for line in log.lines() {
            let f: Vec<&str> = line.splitn(4, '|').collect();
            if f.len() == 4 && f[0] != "-" && !f[0].is_empty() {
                *by_uri.entry(f[3].to_string()).or_default() += 1;
            }
        }
        by_uri
    }
}

/// Part and segment file names a playlist lists.
fn media_names(playlist: &str) -> Vec<String> {
    playlist
        .lines()
        .filter_map(|l| {
            if let Some(rest) = l.strip_prefix("#EXT-X-PART:") {
                return rest
                    .split("URI=\"")
                    .nth(1)
                    .and_then(|u| u.split('"').next())
                    .map(str::to_string);
            }
            (l.starts_with("seg-") && l.ends_with(".m4s")).then(|| l.to_string())
        })
        .collect()
}

/// When the origin itself first listed each hinted part, followed with direct blocking
/// reloads: the reference for how stale a cached answer is.
async fn follow_origin(
    url: String,
    until: Instant,
    seen: Arc<Mutex<HashMap<(u64, u64), Instant>>>,
) {
    let client = http();
    let mut hint = preload_hint(&client.get(&url).send().await.unwrap().text().await.unwrap());
    while Instant::now() < until {
        let Some((m, p)) = hint else { break };
        let r = client
            .get(format!("{url}?_HLS_msn={m}&_HLS_part={p}"))
            .send()
            .await
            .unwrap();
        let at = Instant::now();
        let body = r.text().await.unwrap();
        seen.lock().unwrap().entry((m, p)).or_insert(at);
        hint = preload_hint(&body);
    }
}

/// One viewer through the cache: blocking reload for the next part, then the new parts and
/// segments, as a player does. Returns (answers, (hint asked for, when answered, hint in the
/// answer) per answer).
async fn viewer(url: String, until: Instant) -> (usize, Vec<((u64, u64), Instant, (u64, u64))>) {
    let client = http();
    let folder = url.trim_end_matches("index.m3u8").to_string();
    let first = client.get(&url).send().await.unwrap().text().await.unwrap();
    let mut fetched: HashSet<String> = media_names(&first).into_iter().collect();
    let mut hint = preload_hint(&first).expect("preload hint");
    let mut log = Vec::new();
    while Instant::now() < until {
        let (m, p) = hint;
        let r = client
            .get(format!("{url}?_HLS_msn={m}&_HLS_part={p}"))
            .send()
            .await
            .unwrap();
        assert_eq!(
            r.status(),
            200,
            "blocking reload for {m}.{p} through the cache"
        );
        let body = r.text().await.unwrap();
        let at = Instant::now();
        hls_rules::assert_valid_live_playlist(&body);
        let Some(next) = preload_hint(&body) else {
            break; // ended
        };
        log.push(((m, p), at, next));
        for name in media_names(&body) {
            if fetched.insert(name.clone()) {
                let r = client.get(format!("{folder}{name}")).send().await.unwrap();
                assert_eq!(r.status(), 200, "{name} through the cache");
                r.bytes().await.unwrap();
            }
        }
        hint = next;
    }
    (log.len(), log)
}

#[tokio::test(flavor = "multi_thread")]
async fn vod_and_live_through_an_nginx_cache() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&[
        ("OXCAST_LIVE__RUNGS", "[360]"),
        ("OXCAST_LIVE__GRACE_S", "1"),
        ("OXCAST_LIVE__DVR_WINDOW_S", "20"),
        (
            "OXCAST_TRANSCODE__LADDER",
            "[{ short_side = 240, kbps = 400 }]",
        ),
    ]);
    let cdn_dir = dir.path().join("cdn");
    std::fs::create_dir_all(&cdn_dir).unwrap();
    let cdn = Cdn::start(server.port, &cdn_dir);
    let edge = cdn.base();

    // VOD: uploaded through the CDN (the API passes through uncached), then played through it.
    let clip = make_video(dir.path(), "clip.mp4", 426, 240, 3, true);
    let vid = upload(&edge, &clip, "through the cache", 2).await;
    wait_ready(&server.base, &vid).await;
    let master = get_text(&format!("{edge}/v/{vid}/master.m3u8")).await;
    let (rendition, _) = variants(&master)[0].clone();
    let playlist_url = format!("{edge}/v/{vid}/{rendition}");
    let playlist = get_text(&playlist_url).await;
    let seg = segments(&playlist)[0].0.clone();
    let seg_url = format!("{}/{seg}", playlist_url.rsplit_once('/').unwrap().0);
    let status =
        |r: &reqwest::Response| r.headers()["x-cache-status"].to_str().unwrap().to_string();
    let first = http().get(&seg_url).send().await.unwrap();
    assert_eq!(first.status(), 200);
    assert_eq!(status(&first), "MISS");
    let body = first.bytes().await.unwrap();
    let second = http().get(&seg_url).send().await.unwrap();
    assert_eq!(
        status(&second),
        "HIT",
        "a VOD segment is a hit the second time"
    );
    assert_eq!(second.bytes().await.unwrap(), body);
    let r = http()
        .get(&seg_url)
        .header("range", "bytes=10-19")
        .send()
        .await
        .unwrap();
    assert_eq!((r.status().as_u16(), status(&r)), (206, "HIT".into()));
    assert_eq!(r.bytes().await.unwrap(), body[10..20]);
    let r = http()
        .get(format!("{edge}/v/{vid}/master.m3u8"))
        .send()
        .await
        .unwrap();
    assert_eq!(status(&r), "HIT", "playlists too");
    // The API is never cached.
    for _ in 0..2 {
        let r = http()
            .get(format!("{edge}/api/v1/videos/{vid}"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        assert!(
            r.headers().get("x-cache-status").is_none(),
            "the API passed through"
        );
    }

    // Live: one publisher, 200 viewers on blocking reloads through the cache.
    let src = live_source(dir.path(), "640x360", 60);
    let s = create_stream(&edge, "through the cache").await;
    let id = s["id"].as_str().unwrap().to_string();
    let key = s["stream_key"].as_str().unwrap().to_string();
    let mut publisher = publish_file(&rtmp_url(&server, &key), &src);
    let deadline = Instant::now() + Duration::from_secs(20);
    let master = loop {
        let r = http()
            .get(format!("{edge}/live/{id}/master.m3u8"))
            .send()
            .await
            .unwrap();
        if r.status() == 200 {
            break r.text().await.unwrap();
        }
        assert!(
            Instant::now() < deadline,
            "live master not served: {}",
            r.status()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let rel = master
        .lines()
        .find(|l| !l.starts_with('#') && l.ends_with("index.m3u8") && !l.contains("audio"))
        .unwrap()
        .to_string();
    let via_cdn = format!("{edge}/live/{id}/{rel}");
    let direct = format!("{}/live/{id}/{rel}", server.base);
    // Wait for a couple of parts, so that every viewer starts on a live playlist.
    wait_for_part(&direct).await;

    let until = Instant::now() + Duration::from_secs(10);
    let seen = Arc::new(Mutex::new(HashMap::new()));
    let follower = tokio::spawn(follow_origin(
        direct.clone(),
        until + Duration::from_secs(2),
        seen.clone(),
    ));
    let viewers: Vec<_> = (0..VIEWERS)
        .map(|_| tokio::spawn(viewer(via_cdn.clone(), until)))
        .collect();
    let mut answers = Vec::new();
    for v in viewers {
        let (n, log) = v.await.unwrap();
        assert!(n >= 10, "a viewer got only {n} blocking answers in 10 s");
        answers.extend(log);
    }
    follower.await.unwrap();

    // The origin saw about one request per distinct question and one per object.
    let requests = cdn.origin_requests();
    let mut blocking = 0;
    for (uri, n) in &requests {
        if uri.contains("_HLS_msn=") {
            blocking += 1;
            assert!(*n <= 2, "{uri} reached the origin {n} times");
        } else if uri.ends_with(".m4s") || uri.ends_with(".mp4") {
            assert_eq!(*n, 1, "{uri} reached the origin {n} times");
        }
    }
    assert!(
        blocking >= 15,
        "only {blocking} distinct blocking reloads: {requests:?}"
    );

    // A cached answer is never older than a part plus the wait: it lists the part asked for,
    // and the origin had not yet moved more than a part past it when the viewer got it.
    let seen = seen.lock().unwrap().clone();
    let mut worst = 0.0f64;
    for (asked, at, got) in &answers {
        assert!(got > asked, "the answer to {asked:?} lists up to {got:?}");
        // When the origin first listed a hint beyond `got`: the answer was stale from then.
        if let Some(outdated) = seen.iter().filter(|(h, _)| *h > got).map(|(_, t)| *t).min() {
            worst = worst.max(at.saturating_duration_since(outdated).as_secs_f64());
        }
    }
    eprintln!(
        "cdn: {} blocking answers to {VIEWERS} viewers, {blocking} distinct blocking reloads at \
         the origin, worst staleness {worst:.3} s",
        answers.len()
    );
    assert!(
        worst <= PART_S + 0.5,
        "a cached playlist was {worst:.2} s out of date (part {PART_S} s)"
    );

    // hls.js in Chromium, through the cache, stays under 4 s of latency.
    browser_check(
        "live.mjs",
        &[
            "--base",
            &edge,
            "--stream",
            &id,
            "--seconds",
            "6",
            "--max-latency",
            "4",
        ],
    )
    .await;

    // Shaka (HLS and DASH) and dash.js in their low-latency modes, through the cache too:
    // under 3.5 s (DASH segments reach them as they are written, in chunks).
    let summary = browser_check(
        "players.mjs",
        &[
            "--base",
            &edge,
            "--stream",
            &id,
            "--players",
            "shaka-hls,shaka-dash,dashjs",
            "--seconds",
            "5",
            "--max-latency",
            "3.5",
        ],
    )
    .await;
    eprintln!("cdn: players {}", summary["players"]);

    // The 20 s DVR window: the playlist slides (the session is longer than that by now) and
    // delta updates work through the cache.
    let pl = get_text(&direct).await;
    let first: u64 = pl
        .lines()
        .find_map(|l| l.strip_prefix("#EXT-X-MEDIA-SEQUENCE:"))
        .unwrap()
        .parse()
        .unwrap();
    let listed: f64 = segments(&pl).iter().map(|(_, d)| d).sum();
    assert!(
        first > 5 && listed <= 20.0,
        "first {first}, {listed} s listed:\n{pl}"
    );
    assert!(
        !pl.contains("PLAYLIST-TYPE"),
        "a sliding playlist is not an EVENT:\n{pl}"
    );
    let (m, p) = preload_hint(&pl).unwrap();
    let delta_url = format!("{via_cdn}?_HLS_msn={m}&_HLS_part={p}&_HLS_skip=YES");
    let a = http().get(&delta_url).send().await.unwrap();
    let b = http().get(&delta_url).send().await.unwrap();
    assert_eq!(
        (status(&a), status(&b)),
        ("MISS".to_string(), "HIT".to_string())
    );
    let delta = b.text().await.unwrap();
    assert!(delta.contains("#EXT-X-SKIP:SKIPPED-SEGMENTS="), "{delta}");
    hls_rules::assert_valid_live_playlist(&delta);
    hls_rules::assert_valid_live_playlist(&pl);
    // The rules can fail: broken copies of a real playlist are caught.
    for (what, broken) in [
        ("no PART-INF", pl.replace("#EXT-X-PART-INF", "#EXT-X-NOPE")),
        (
            "two hints",
            format!(
                "{pl}{}\n",
                pl.lines()
                    .find(|l| l.starts_with("#EXT-X-PRELOAD-HINT"))
                    .unwrap()
            ),
        ),
        (
            "URI without EXTINF",
            pl.replacen("#EXTINF:", "#EXT-X-NOTINF:", 1),
        ),
        (
            "segment too long",
            pl.replacen("#EXTINF:2.", "#EXTINF:9.", 1),
        ),
        (
            "hold back too short",
            pl.replace("PART-HOLD-BACK=1.5", "PART-HOLD-BACK=0.5"),
        ),
    ] {
        assert!(
            hls_rules::check_live_media_playlist(&broken).is_err(),
            "{what} passed:\n{broken}"
        );
    }
    assert!(delta.len() < pl.len(), "a delta update is smaller");
    let _ = publisher.kill();
    let _ = publisher.wait();
}

/// Waits until the playlist at `url` lists a few parts.
async fn wait_for_part(url: &str) {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let r = http().get(url).send().await.unwrap();
        if r.status() == 200 {
            let pl = r.text().await.unwrap();
            if pl.matches("#EXT-X-PART:").count() >= 3 {
                return;
            }
        }
        assert!(Instant::now() < deadline, "no parts at {url}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

//! Live streaming end to end: real ffmpeg publishers over RTMP and SRT, LL-HLS and DASH out,
//! blocking reloads, DVR, reconnects, the recording, and Chromium with hls.js in low-latency
//! mode. The tests in this file run one at a time: each keeps a real-time encoder busy, and
//! two at once would starve each other on a 2-core machine.

mod common;

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// At most this many held requests from one address (the origin's cap, checked below).
const HELD_PER_ADDR: usize = 24;

fn live_server() -> Server {
    Server::start(&[
        ("OXCAST_LIVE__GRACE_S", "4"),
        ("OXCAST_LIVE__RUNGS", "[720, 360]"),
        ("OXCAST_ORIGIN__MAX_BLOCKING_PER_ADDR", "24"),
    ])
}

/// The body of `r`, decoded from the `Content-Encoding` the server chose.
async fn decoded(r: reqwest::Response) -> (Option<String>, String) {
    use std::io::Read;
    let coding = r
        .headers()
        .get("content-encoding")
        .map(|v| v.to_str().unwrap().to_string());
    let raw = r.bytes().await.unwrap();
    let mut text = String::new();
    match coding.as_deref() {
        None => text = String::from_utf8(raw.to_vec()).unwrap(),
        Some("gzip") => {
            flate2::read::GzDecoder::new(&raw[..])
                .read_to_string(&mut text)
                .unwrap();
        }
        Some("br") => {
            brotli::Decompressor::new(&raw[..], 4096)
                .read_to_string(&mut text)
                .unwrap();
        }
        Some(other) => panic!("unexpected content-encoding {other}"),
    }
    (coding, text)
}

/// `ffmpeg -re` pushing a test pattern and tone for `secs` to `url` (`flv` or `mpegts`).
fn publish(url: &str, format: &str, size: &str, secs: u32) -> Child {
    Command::new("ffmpeg")
        .args(["-hide_banner", "-nostdin", "-v", "error", "-re"])
        .args([
            "-f",
            "lavfi",
            "-i",
            &format!("testsrc2=size={size}:rate=30"),
        ])
        .args(["-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000"])
        .args([
            "-t",
            &secs.to_string(),
            "-c:v",
            "libx264",
            "-preset",
            "veryfast",
            "-tune",
            "zerolatency",
        ])
        .args([
            "-g", "30", "-pix_fmt", "yuv420p", "-c:a", "aac", "-b:a", "96k", "-f", format, url,
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("ffmpeg")
}

/// Waits for a publisher to exit by itself; returns whether it succeeded and its stderr.
fn wait_exit(mut child: Child, timeout: Duration) -> (bool, String) {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            let mut err = String::new();
            use std::io::Read;
            let _ = child.stderr.take().unwrap().read_to_string(&mut err);
            return (status.success(), err);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            return (false, "still running at the deadline".into());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A new stream with a 640x360 RTMP publisher of `secs` seconds, once its first rendition lists
/// `segments` segments: the stream's id and key, the publisher, that rendition's playlist URL.
async fn publishing(
    server: &Server,
    title: &str,
    secs: u32,
    segments_listed: usize,
) -> (String, String, Child, String) {
    let base = &server.base;
    let s = create_stream(base, title).await;
    let (id, key) = (
        s["id"].as_str().unwrap().to_string(),
        s["stream_key"].as_str().unwrap().to_string(),
    );
    let publisher = publish(&rtmp_url(server, &key), "flv", "640x360", secs);
    let master = wait_for(
        &format!("{base}/live/{id}/master.m3u8"),
        Duration::from_secs(10),
    )
    .await;
    let video = media_urls(base, &id, &master).remove(0);
    let deadline = Instant::now() + Duration::from_secs(20);
    while segments(&get_text(&video).await).len() < segments_listed {
        assert!(Instant::now() < deadline, "segments not arriving");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    (id, key, publisher, video)
}

/// The types of an MP4's top-level boxes (stops at a malformed one).
fn top_level_boxes(data: &[u8]) -> impl Iterator<Item = [u8; 4]> + '_ {
    let mut pos = 0usize;
    std::iter::from_fn(move || {
        let head = data.get(pos..pos + 8)?;
        let size = u32::from_be_bytes(head[..4].try_into().unwrap()) as usize;
        if size < 8 {
            return None;
        }
        pos += size;
        Some(head[4..8].try_into().unwrap())
    })
}

/// The media playlist URLs listed by a live master playlist, absolute.
fn media_urls(base: &str, stream: &str, master: &str) -> Vec<String> {
    let mut out: Vec<String> = variants(master)
        .into_iter()
        .map(|(u, _)| format!("{base}/live/{stream}/{u}"))
        .collect();
    out.extend(
        master
            .lines()
            .filter_map(|l| l.split("URI=\"").nth(1))
            .map(|u| format!("{base}/live/{stream}/{}", u.trim_end_matches('"'))),
    );
    out
}

/// Decodes init + media with ffmpeg; returns its complaints (empty when clean).
fn decode(dir: &std::path::Path, name: &str, init: &[u8], media: &[u8]) -> String {
    let p = dir.join(name);
    std::fs::write(&p, [init, media].concat()).unwrap();
    decode_errors(&p.display().to_string())
}

#[tokio::test(flavor = "multi_thread")]
async fn rtmp_live_with_ll_hls_dvr_browser_and_recording() {
    let _one = ONE_AT_A_TIME.lock().await;
    let dir = tempfile::tempdir().unwrap();
    let server = live_server();
    let base = server.base.clone();
    let s = create_stream(&base, "RTMP show").await;
    let (id, key) = (
        s["id"].as_str().unwrap().to_string(),
        s["stream_key"].as_str().unwrap().to_string(),
    );
    assert_eq!(s["rtmp_url"], rtmp_url(&server, &key).as_str());
    assert_eq!(s["status"], "idle");
    assert_eq!(
        http()
            .get(format!("{base}/live/{id}/master.m3u8"))
            .send()
            .await
            .unwrap()
            .status(),
        404
    );

    let pushed_s = 36;
    let src = live_source(dir.path(), "1280x720", pushed_s);
    let started = Instant::now();
    let publisher = publish_file(&rtmp_url(&server, &key), &src);

    // The master playlist is served within 10 s.
    let master = wait_for(
        &format!("{base}/live/{id}/master.m3u8"),
        Duration::from_secs(10),
    )
    .await;
    assert!(started.elapsed() < Duration::from_secs(10));
    let res: Vec<String> = variants(&master).into_iter().map(|(_, r)| r).collect();
    assert_eq!(res, ["1280x720", "640x360"], "{master}");
    let urls = media_urls(&base, &id, &master);
    assert_eq!(urls.len(), 3, "two video rungs and audio: {master}");
    let r = http()
        .get(format!("{base}/live/{id}/master.m3u8"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.headers()["cache-control"], "public, max-age=1");

    // A second publisher on a live key is refused and changes nothing.
    let (ok, err) = wait_exit(
        publish(&rtmp_url(&server, &key), "flv", "320x240", 3),
        Duration::from_secs(15),
    );
    assert!(!ok, "second publisher accepted");
    assert!(
        err.contains("already has a live publisher") || !err.is_empty(),
        "{err}"
    );
    // Garbage on both ingest ports, and a wrong key, do not disturb the session.
    {
        use std::io::Write;
        let mut tcp = std::net::TcpStream::connect(("127.0.0.1", server.rtmp_port)).unwrap();
        let _ = tcp.write_all(
            &(0..5000u32)
                .map(|i| (i * 7919 % 251) as u8)
                .collect::<Vec<_>>(),
        );
        let udp = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        for i in 0..200u32 {
            let _ = udp.send_to(&i.to_be_bytes().repeat(50), ("127.0.0.1", server.srt_port));
        }
    }
    let (ok, _) = wait_exit(
        publish(&rtmp_url(&server, "wrong-key"), "flv", "320x240", 3),
        Duration::from_secs(15),
    );
    assert!(!ok, "wrong key accepted");

    // LL-HLS tags, and parts and segments that decode cleanly.
    let video = &urls[0];
    let deadline = Instant::now() + Duration::from_secs(10);
    let pl = loop {
        let pl = wait_for(video, Duration::from_secs(5)).await;
        if pl.contains("\nseg-2.m4s\n") {
            break pl;
        }
        assert!(Instant::now() < deadline, "segments not arriving:\n{pl}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    hls_rules::assert_valid_live_playlist(&pl);
    for tag in [
        "#EXT-X-VERSION:9",
        "#EXT-X-PART-INF:PART-TARGET=",
        "CAN-BLOCK-RELOAD=YES",
        "PART-HOLD-BACK=",
        "CAN-SKIP-UNTIL=",
        "#EXT-X-PROGRAM-DATE-TIME:",
        "#EXT-X-PART:DURATION=",
        "#EXT-X-PRELOAD-HINT:TYPE=PART",
        "#EXT-X-PLAYLIST-TYPE:EVENT",
        "#EXT-X-MAP:URI=\"init-0.mp4\"",
    ] {
        assert!(pl.contains(tag), "media playlist lacks {tag}:\n{pl}");
    }
    let folder = video.trim_end_matches("index.m3u8");
    let init = get_bytes(&format!("{folder}init-0.mp4")).await;
    let seg1 = get_bytes(&format!("{folder}seg-1.m4s")).await;
    let part = get_bytes(&format!("{folder}part-2-0.m4s")).await;
    let r = http()
        .get(format!("{folder}seg-1.m4s"))
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.headers()["cache-control"],
        "public, max-age=31536000, immutable"
    );
    let d = dir.path().to_path_buf();
    let (e1, e2) = tokio::task::spawn_blocking(move || {
        (
            decode(&d, "s.mp4", &init, &seg1),
            decode(&d, "p.mp4", &init, &part),
        )
    })
    .await
    .unwrap();
    assert_eq!(
        (e1.as_str(), e2.as_str()),
        ("", ""),
        "segment / part decode"
    );

    // Blocking reload: a request for the next part returns once that part exists; one for a
    // published part returns the playlist as it is.
    let now = get_text(video).await;
    let (msn, part) = preload_hint(&now).expect("preload hint");
    let next = format!("part-{msn}-{part}.m4s");
    let lists = |pl: &str| {
        pl.lines()
            .any(|l| l.starts_with("#EXT-X-PART:") && l.contains(&format!("URI=\"{next}\"")))
    };
    assert!(!lists(&now), "the hinted part is not listed yet");
    // The hinted part itself, asked for before it exists, is held until it starts and then
    // sent as it is written, a CMAF chunk at a time: its first bytes arrive before the part is
    // complete, which is when the blocking reload lists it.
    let hinted = {
        let url = format!("{folder}{next}");
        tokio::spawn(async move {
            let mut r = http().get(url).send().await.unwrap();
            let status = r.status();
            let (mut body, mut first, mut reads) = (Vec::new(), None, 0);
            while let Some(c) = r.chunk().await.unwrap() {
                first.get_or_insert_with(Instant::now);
                reads += 1;
                body.extend_from_slice(&c);
            }
            (status, body, first, reads)
        })
    };
    let blocked = get_text(&format!("{video}?_HLS_msn={msn}&_HLS_part={part}")).await;
    let listed_at = Instant::now();
    assert!(
        lists(&blocked),
        "the blocking answer lists the part it waited for:\n{blocked}"
    );
    hls_rules::assert_valid_live_playlist(&blocked);
    let (status, body, first, reads) = hinted.await.unwrap();
    assert_eq!(status, 200, "the preload hint is served");
    assert_eq!(
        body,
        get_bytes(&format!("{folder}{next}")).await,
        "and it is the part"
    );
    let moofs = top_level_boxes(&body).filter(|b| b == b"moof").count();
    assert!(moofs >= 3, "a part is several CMAF chunks, not {moofs}");
    assert!(
        reads >= 2,
        "the part came in {reads} read(s), not as it was written"
    );
    assert!(
        first.expect("a body") < listed_at,
        "the part's first chunk was sent before the part was complete"
    );
    // Every other rendition's live edge is reported, for players that switch.
    let reports: Vec<&str> = blocked
        .lines()
        .filter(|l| l.starts_with("#EXT-X-RENDITION-REPORT:"))
        .collect();
    assert_eq!(reports.len(), 2, "{blocked}");
    for u in &urls[1..] {
        let name = u.rsplit('/').nth(1).unwrap();
        let want = format!("#EXT-X-RENDITION-REPORT:URI=\"../{name}/index.m3u8\",LAST-MSN=");
        assert!(
            reports.iter().any(|r| r.starts_with(&want)),
            "no report for {name}: {blocked}"
        );
    }
    let before = get_text(video).await;
    let old = get_text(&format!("{video}?_HLS_msn=1&_HLS_part=0")).await;
    assert_eq!(
        preload_hint(&old).unwrap().0,
        preload_hint(&before).unwrap().0,
        "an already published part is answered at once"
    );
    let r = http()
        .get(format!("{video}?_HLS_msn={}", msn + 50))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400, "too far ahead");
    let r = http()
        .get(format!("{video}?_HLS_msn={msn}&_HLS_part=0"))
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.headers()["cache-control"],
        "public, max-age=1",
        "blocking answers are cacheable by query, for about a part"
    );

    // Playlists are compressed when the client takes it, and say so to caches.
    for (accept, want) in [
        ("gzip", Some("gzip")),
        ("gzip, br", Some("br")),
        ("identity", None),
    ] {
        let r = http()
            .get(video)
            .header("accept-encoding", accept)
            .send()
            .await
            .unwrap();
        assert_eq!(r.headers()["vary"], "Accept-Encoding");
        let (coding, text) = decoded(r).await;
        assert_eq!(coding.as_deref(), want, "Accept-Encoding: {accept}");
        assert!(
            text.starts_with("#EXTM3U\n") && text.contains("#EXT-X-PRELOAD-HINT"),
            "{text}"
        );
    }

    // Held requests are capped per address: beyond the cap, 503 with Retry-After at once,
    // and the held ones are still answered.
    let (edge, _) = preload_hint(&get_text(video).await).unwrap();
    let ahead = format!("{video}?_HLS_msn={}&_HLS_part=1", edge + 1);
    let held: Vec<_> = (0..HELD_PER_ADDR + 6)
        .map(|_| tokio::spawn(http().get(&ahead).send()))
        .collect();
    let mut statuses = Vec::new();
    for h in held {
        let r = h.await.unwrap().unwrap();
        if r.status() == 503 {
            assert_eq!(r.headers()["retry-after"], "1");
        }
        statuses.push(r.status().as_u16());
    }
    let refused = statuses.iter().filter(|&&s| s == 503).count();
    assert!(
        refused >= 6 && statuses.iter().all(|&s| s == 200 || s == 503),
        "{statuses:?}"
    );
    let delta = get_text(&format!("{video}?_HLS_skip=YES")).await;
    assert!(delta.contains("#EXT-X-VERSION:9"));
    hls_rules::assert_valid_live_playlist(&delta);

    // Dynamic MPD.
    let mpd = get_text(&format!("{base}/live/{id}/manifest.mpd")).await;
    for a in [
        "type=\"dynamic\"",
        "availabilityStartTime=",
        "timeShiftBufferDepth=",
        "minimumUpdatePeriod=",
        "UTCTiming",
        "$Number$",
    ] {
        assert!(mpd.contains(a), "MPD lacks {a}:\n{mpd}");
    }
    let t = get_text(&format!("{base}/time")).await;
    assert!(t.starts_with("20") && t.ends_with('Z'), "{t}");

    // Health.
    let info = stream_info(&base, &id).await;
    assert_eq!(info["status"], "live");
    let h = &info["current_session"]["health"];
    assert!(h["ingest_kbps"].as_f64().unwrap() > 100.0, "{info}");
    assert!(h["fps"].as_f64().unwrap() > 0.0, "{info}");

    // Chromium with hls.js in low-latency mode: plays, latency under 4 s; after 30 s of session
    // the first segment is still listed and seeking to the start plays from there.
    while started.elapsed() < Duration::from_secs(14) {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let summary = browser_check(
        "live.mjs",
        &[
            "--base",
            &base,
            "--stream",
            &id,
            "--seconds",
            "8",
            "--max-latency",
            "4",
            "--dvr",
        ],
    )
    .await;
    assert!(
        summary["latency_s"]["max"].as_f64().unwrap() < 4.0,
        "{summary}"
    );
    assert!(
        summary["dvr"]["time_after_play_s"].as_f64().unwrap() < 8.0,
        "DVR played from the start: {summary}"
    );
    while started.elapsed() < Duration::from_secs(31) {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let pl = get_text(video).await;
    assert!(
        pl.contains("#EXT-X-MEDIA-SEQUENCE:1\n") && pl.contains("\nseg-1.m4s\n"),
        "DVR keeps the first segment:\n{pl}"
    );
    assert!(segments(&pl).len() >= 13, "{pl}");

    // The publisher stops; after the grace period the playlists end and the recording plays.
    let (ok, err) =
        tokio::task::spawn_blocking(move || wait_exit(publisher, Duration::from_secs(30)))
            .await
            .unwrap();
    assert!(ok, "publisher: {err}");
    let deadline = Instant::now() + Duration::from_secs(20);
    let ended = loop {
        let pl = get_text(video).await;
        if pl.contains("#EXT-X-ENDLIST") {
            break pl;
        }
        assert!(
            Instant::now() < deadline,
            "no ENDLIST after the grace period"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    };
    assert!(!ended.contains("PRELOAD-HINT"));
    hls_rules::assert_valid_live_playlist(&ended);
    let mpd = get_text(&format!("{base}/live/{id}/manifest.mpd")).await;
    assert!(mpd.contains("type=\"static\""), "{mpd}");
    let info = stream_info(&base, &id).await;
    assert_eq!(info["status"], "idle");
    assert_eq!(
        info["sessions"].as_array().unwrap().len(),
        1,
        "refused publishers created no session: {info}"
    );
    let vid = info["sessions"][0]["video_id"]
        .as_str()
        .unwrap()
        .to_string();
    let v = wait_ready(&base, &vid).await;
    let dur = v["duration_s"].as_f64().unwrap();
    assert!(
        (dur - f64::from(pushed_s)).abs() <= 1.0,
        "recording is {dur} s, pushed {pushed_s} s"
    );
    let url = format!("{base}/v/{vid}/master.m3u8");
    let mpd_url = format!("{base}/v/{vid}/manifest.mpd");
    let (e1, e2) =
        tokio::task::spawn_blocking(move || (decode_errors(&url), decode_errors(&mpd_url)))
            .await
            .unwrap();
    assert_eq!(
        (e1.as_str(), e2.as_str()),
        ("", ""),
        "recording decodes as HLS and DASH"
    );
    assert!(
        !server
            .objects(&format!("videos/{vid}"))
            .iter()
            .any(|k| k.contains("part-")),
        "parts are not kept in the recording"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn srt_reconnect_within_grace_is_one_session_and_streams_are_isolated() {
    let _one = ONE_AT_A_TIME.lock().await;
    let server = live_server();
    let base = server.base.clone();
    let a = create_stream(&base, "SRT show").await;
    let b = create_stream(&base, "Other show").await;
    let (aid, akey) = (
        a["id"].as_str().unwrap().to_string(),
        a["stream_key"].as_str().unwrap().to_string(),
    );
    let (bid, bkey) = (
        b["id"].as_str().unwrap().to_string(),
        b["stream_key"].as_str().unwrap().to_string(),
    );
    assert_eq!(a["srt_url"], srt_url(&server, &akey).as_str());

    // A wrong key over SRT is refused at the handshake.
    let (ok, _) = wait_exit(
        publish(&srt_url(&server, "nope"), "mpegts", "320x240", 3),
        Duration::from_secs(15),
    );
    assert!(!ok, "wrong SRT key accepted");

    // Stream A over SRT, stream B over RTMP at the same time.
    let first = publish(&srt_url(&server, &akey), "mpegts", "640x360", 8);
    let other = publish(&rtmp_url(&server, &bkey), "flv", "640x360", 16);
    let ma = wait_for(
        &format!("{base}/live/{aid}/master.m3u8"),
        Duration::from_secs(10),
    )
    .await;
    let mb = wait_for(
        &format!("{base}/live/{bid}/master.m3u8"),
        Duration::from_secs(10),
    )
    .await;
    let (ua, ub) = (media_urls(&base, &aid, &ma), media_urls(&base, &bid, &mb));
    assert_ne!(
        ua[0].split('/').nth(5),
        ub[0].split('/').nth(5),
        "separate sessions"
    );
    let (ok, err) = tokio::task::spawn_blocking(move || wait_exit(first, Duration::from_secs(30)))
        .await
        .unwrap();
    assert!(ok, "{err}");

    // Reconnect within the 4 s grace period: same session, a discontinuity, a new period.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let second = publish(&srt_url(&server, &akey), "mpegts", "640x360", 6);
    let deadline = Instant::now() + Duration::from_secs(15);
    let pl = loop {
        let pl = get_text(&ua[0]).await;
        if pl.contains("#EXT-X-DISCONTINUITY") && pl.matches("#EXTINF").count() >= 6 {
            break pl;
        }
        assert!(
            Instant::now() < deadline,
            "no discontinuity after the reconnect:\n{pl}"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    };
    assert!(pl.contains("#EXT-X-MAP:URI=\"init-1.mp4\""), "{pl}");
    let mpd = get_text(&format!("{base}/live/{aid}/manifest.mpd")).await;
    assert_eq!(mpd.matches("<Period").count(), 2, "{mpd}");
    let (ok, err) = tokio::task::spawn_blocking(move || wait_exit(second, Duration::from_secs(30)))
        .await
        .unwrap();
    assert!(ok, "{err}");
    let (ok, err) = tokio::task::spawn_blocking(move || wait_exit(other, Duration::from_secs(30)))
        .await
        .unwrap();
    assert!(ok, "{err}");

    // Both end: one recording each; A's spans both connections and plays through the break.
    for (sid, want_min) in [(&aid, 12.0), (&bid, 14.0)] {
        let deadline = Instant::now() + Duration::from_secs(30);
        let info = loop {
            let info = stream_info(&base, sid).await;
            if info["status"] == "idle" && info["sessions"][0]["status"] == "ended" {
                break info;
            }
            assert!(Instant::now() < deadline, "{info}");
            tokio::time::sleep(Duration::from_millis(300)).await;
        };
        assert_eq!(info["sessions"].as_array().unwrap().len(), 1, "{info}");
        let vid = info["sessions"][0]["video_id"]
            .as_str()
            .unwrap()
            .to_string();
        let v = wait_ready(&base, &vid).await;
        assert!(v["duration_s"].as_f64().unwrap() >= want_min, "{v}");
        let url = format!("{base}/v/{vid}/master.m3u8");
        let errs = tokio::task::spawn_blocking(move || decode_errors(&url))
            .await
            .unwrap();
        assert_eq!(errs, "", "recording of {sid} decodes");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_server_killed_mid_session_still_publishes_what_was_recorded() {
    let _one = ONE_AT_A_TIME.lock().await;
    let mut server = live_server();
    let base = server.base.clone();
    let (id, _, publisher, _) = publishing(&server, "crashy", 30, 4).await;
    let info = stream_info(&base, &id).await;
    let vid = info["current_session"]["video_id"]
        .as_str()
        .unwrap()
        .to_string();
    server.kill9();
    let (ok, _) =
        tokio::task::spawn_blocking(move || wait_exit(publisher, Duration::from_secs(30)))
            .await
            .unwrap();
    assert!(!ok, "the publisher saw the server go away");

    server.restart();
    let base = server.base.clone();
    let v = wait_ready(&base, &vid).await;
    let dur = v["duration_s"].as_f64().unwrap();
    assert!(dur >= 7.5, "the recording keeps the stored segments: {v}");
    assert_eq!(v["renditions"].as_array().unwrap().len(), 1, "{v}");
    let info = stream_info(&base, &id).await;
    assert_eq!(info["status"], "idle");
    assert_eq!(info["sessions"][0]["status"], "ended");
    let url = format!("{base}/v/{vid}/master.m3u8");
    assert_eq!(
        tokio::task::spawn_blocking(move || decode_errors(&url))
            .await
            .unwrap(),
        ""
    );
    assert!(server
        .log()
        .contains("recording of the interrupted session published"));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_reset_key_disconnects_the_publisher_and_deleting_a_live_stream_ends_its_session() {
    let _one = ONE_AT_A_TIME.lock().await;
    let server = live_server();
    let base = server.base.clone();
    let (id, key, publisher, video) = publishing(&server, "to be deleted", 60, 2).await;
    let info = stream_info(&base, &id).await;
    let session = info["current_session"]["id"].as_str().unwrap().to_string();
    let recording = info["current_session"]["video_id"]
        .as_str()
        .unwrap()
        .to_string();

    // A reset key (the old one leaked): its publisher goes at once, long before its 60 s end.
    let new_key = reset_key(&base, &id).await;
    assert_ne!(new_key, key);
    let (_, err) =
        tokio::task::spawn_blocking(move || wait_exit(publisher, Duration::from_secs(10)))
            .await
            .unwrap();
    assert_ne!(
        err, "still running at the deadline",
        "the old key's publisher was not disconnected"
    );
    let (ok, _) = tokio::task::spawn_blocking({
        let url = rtmp_url(&server, &key);
        move || wait_exit(publish(&url, "flv", "320x240", 3), Duration::from_secs(15))
    })
    .await
    .unwrap();
    assert!(!ok, "the old key is refused");

    // The new key, within the grace period, continues the same session.
    let before = segments(&get_text(&video).await).len();
    let publisher = publish(&rtmp_url(&server, &new_key), "flv", "640x360", 60);
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let info = stream_info(&base, &id).await;
        let grown = segments(&get_text(&video).await).len() >= before + 2;
        if info["status"] == "live" && grown {
            assert_eq!(info["current_session"]["id"], session.as_str(), "{info}");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the new key did not resume: {info}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // Deleting the stream while it is live ends the session now: the publisher is
    // disconnected, the stream and its playback are gone, and the recording is published.
    let started = Instant::now();
    let r = http()
        .delete(format!("{base}/api/v1/live-streams/{id}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    let (_, err) =
        tokio::task::spawn_blocking(move || wait_exit(publisher, Duration::from_secs(10)))
            .await
            .unwrap();
    assert_ne!(err, "still running at the deadline", "the publisher stayed");
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "ending took {:?}",
        started.elapsed()
    );
    for url in [
        format!("{base}/api/v1/live-streams/{id}"),
        format!("{base}/live/{id}/master.m3u8"),
    ] {
        let r = http().get(&url).send().await.unwrap();
        assert_eq!(r.status(), 404, "{url}");
    }
    let v = wait_ready(&base, &recording).await;
    assert!(
        v["duration_s"].as_f64().unwrap() >= 4.0,
        "the recording keeps both connections: {v}"
    );
    let url = format!("{base}/v/{recording}/master.m3u8");
    assert_eq!(
        tokio::task::spawn_blocking(move || decode_errors(&url))
            .await
            .unwrap(),
        ""
    );
}

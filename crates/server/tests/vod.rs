//! The VOD path end to end on embedded defaults: upload in shuffled parallel parts, process,
//! check the ladder, the segments and the manifests, decode with ffmpeg, play in Chromium with
//! hls.js and dash.js, exercise the origin's HTTP semantics, delete.

mod common;

use std::process::Command;
use std::time::Duration;

use common::*;

const MIB: &str = "1048576";

/// The first video frame of init + segment, as `key_frame,pict_type`.
fn first_frame(init: &[u8], seg: &[u8], dir: &std::path::Path) -> String {
    let p = dir.join("probe.mp4");
    std::fs::write(&p, [init, seg].concat()).unwrap();
    let out = Command::new("ffprobe")
        .args([
            "-v",
            "error",
            "-select_streams",
            "v:0",
            "-show_frames",
            "-read_intervals",
            "%+#1",
            "-show_entries",
            "frame=key_frame,pict_type",
            "-of",
            "csv=p=0",
        ])
        .arg(&p)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    // Side data (SEI) may follow the two fields on the same line.
    let line = text.lines().next().unwrap_or_default();
    line.split(',').take(2).collect::<Vec<_>>().join(",")
}

#[tokio::test(flavor = "multi_thread")]
async fn upload_process_and_play_a_720p_video() {
    let dir = tempfile::tempdir().unwrap();
    let src = make_video(dir.path(), "clip.mp4", 1280, 720, 20, true);
    let server = Server::start(&[("OXCAST_UPLOAD__PART_SIZE", MIB)]);
    let base = server.base.clone();

    let id = upload(&base, &src, "A 720p clip", 4).await;
    let v = wait_ready(&base, &id).await;
    assert_eq!(v["title"], "A 720p clip");
    assert_eq!(
        (v["width"].as_u64(), v["height"].as_u64()),
        (Some(1280), Some(720))
    );
    assert!(
        (v["duration_s"].as_f64().unwrap() - 20.0).abs() <= 1.0 / 30.0 + 1e-6,
        "{v}"
    );
    let names: Vec<&str> = v["renditions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["720p", "480p", "360p"]);

    // Master: exactly 720p, 480p, 360p; audio in its own group.
    let vbase = format!("{base}/v/{id}");
    let master = get_text(&format!("{vbase}/master.m3u8")).await;
    let vars = variants(&master);
    let res: Vec<&str> = vars.iter().map(|(_, r)| r.as_str()).collect();
    assert_eq!(res, ["1280x720", "854x480", "640x360"], "{master}");
    assert!(!master.contains("1920x1080"));
    assert!(
        master.contains("#EXT-X-MEDIA:TYPE=AUDIO,GROUP-ID=\"aud\""),
        "{master}"
    );
    for attr in [
        "BANDWIDTH=",
        "AVERAGE-BANDWIDTH=",
        "CODECS=\"avc1.",
        "mp4a.40.2\"",
        "FRAME-RATE=30.000",
        "AUDIO=\"aud\"",
    ] {
        assert!(master.contains(attr), "master lacks {attr}: {master}");
    }

    // Every rendition: same segment boundaries; EXTINFs add up to the source within a frame;
    // every segment starts with a keyframe (checked by ffprobe, not by our own parser).
    let mut durations = Vec::new();
    for (uri, _) in &vars {
        let folder = uri.trim_end_matches("/index.m3u8");
        let pl = get_text(&format!("{vbase}/{uri}")).await;
        for tag in [
            "#EXT-X-MAP:URI=\"init.mp4\"",
            "#EXT-X-INDEPENDENT-SEGMENTS",
            "#EXT-X-PLAYLIST-TYPE:VOD",
            "#EXT-X-ENDLIST",
        ] {
            assert!(pl.contains(tag), "{uri} lacks {tag}");
        }
        let segs = segments(&pl);
        let total: f64 = segs.iter().map(|s| s.1).sum();
        assert!(
            (total - 20.0).abs() <= 1.0 / 30.0 + 1e-6,
            "{uri}: EXTINF sum {total}"
        );
        let init = get_bytes(&format!("{vbase}/{folder}/init.mp4")).await;
        for (seg, _) in &segs {
            let data = get_bytes(&format!("{vbase}/{folder}/{seg}")).await;
            assert_eq!(
                first_frame(&init, &data, dir.path()),
                "1,I",
                "{folder}/{seg} does not start on a keyframe"
            );
        }
        durations.push(
            segs.iter()
                .map(|s| format!("{:.5}", s.1))
                .collect::<Vec<_>>(),
        );
    }
    assert!(
        durations.len() == 3 && durations.windows(2).all(|w| w[0] == w[1]),
        "{durations:?}"
    );
    assert_eq!(durations[0].len(), 5, "20 s in 4 s segments");

    // The DASH manifest points at the same files.
    let mpd = get_text(&format!("{vbase}/manifest.mpd")).await;
    assert!(
        mpd.contains("type=\"static\"") && mpd.contains("media=\"720p/seg-$Number$.m4s\""),
        "{mpd}"
    );
    assert!(mpd.contains("contentType=\"audio\""));

    // ffmpeg decodes every rendition of both without a word of complaint.
    let hls_url = format!("{vbase}/master.m3u8");
    let dash_url = format!("{vbase}/manifest.mpd");
    let (hls_err, dash_err) =
        tokio::task::spawn_blocking(move || (decode_errors(&hls_url), decode_errors(&dash_url)))
            .await
            .unwrap();
    assert_eq!(hls_err, "", "HLS decode");
    assert_eq!(dash_err, "", "DASH decode");

    // Poster.
    let poster = get_bytes(&format!("{vbase}/poster.jpg")).await;
    assert_eq!(&poster[..3], &[0xFF, 0xD8, 0xFF], "poster is a JPEG");

    // Real Chromium: hls.js and dash.js play past 5 s and keep playing at the lowest quality.
    for protocol in ["hls", "dash"] {
        let (b, i) = (base.clone(), id.clone());
        let out = tokio::task::spawn_blocking(move || {
            node_script(
                "play.mjs",
                &["--base", &b, "--video", &i, "--protocol", protocol],
            )
        })
        .await
        .unwrap();
        let summary: serde_json::Value =
            serde_json::from_str(out.lines().last().unwrap_or_default()).expect("play.mjs summary");
        assert_eq!(summary["ok"], true, "{protocol}: {out}");
        assert_eq!(
            summary["levels"].as_array().map(Vec::len),
            Some(3),
            "{protocol}: {out}"
        );
        assert_eq!(
            summary["video_height"], 360,
            "{protocol} switched to the lowest rung: {out}"
        );
        assert!(
            summary["final_time_s"].as_f64().unwrap() > 5.0,
            "{protocol}: {out}"
        );
    }

    origin_semantics(&server, &id).await;

    // Delete removes the rows and every object.
    assert!(!server.objects(&format!("videos/{id}")).is_empty());
    let r = http()
        .delete(format!("{base}/api/v1/videos/{id}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    assert!(server.objects(&format!("videos/{id}")).is_empty());
    assert!(server.objects("uploads").is_empty(), "upload parts removed");
    assert_eq!(
        http()
            .get(format!("{vbase}/master.m3u8"))
            .send()
            .await
            .unwrap()
            .status(),
        404
    );
    assert_eq!(
        http()
            .get(format!("{base}/api/v1/videos/{id}"))
            .send()
            .await
            .unwrap()
            .status(),
        404
    );
}

async fn origin_semantics(server: &Server, id: &str) {
    let base = &server.base;
    let seg = format!("{base}/v/{id}/720p/seg-1.m4s");
    let c = http();

    let r = c
        .get(&seg)
        .header("Origin", "https://player.example")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let h = r.headers().clone();
    assert_eq!(h["content-type"], "video/iso.segment");
    assert_eq!(h["cache-control"], "public, max-age=31536000, immutable");
    assert_eq!(h["access-control-allow-origin"], "*");
    assert!(h.contains_key("last-modified"));
    let etag = h["etag"].to_str().unwrap().to_string();
    let full = r.bytes().await.unwrap();

    for (name, ctype) in [
        ("master.m3u8", "application/vnd.apple.mpegurl"),
        ("manifest.mpd", "application/dash+xml"),
        ("720p/init.mp4", "video/mp4"),
        ("poster.jpg", "image/jpeg"),
    ] {
        let r = c
            .head(format!("{base}/v/{id}/{name}"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "{name}");
        assert_eq!(r.headers()["content-type"], ctype, "{name}");
        assert_eq!(
            r.headers()["cache-control"],
            "public, max-age=31536000, immutable",
            "{name}"
        );
    }

    let r = c
        .get(&seg)
        .header("Range", "bytes=100-199")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 206);
    assert_eq!(
        r.headers()["content-range"],
        format!("bytes 100-199/{}", full.len()).as_str()
    );
    assert_eq!(r.bytes().await.unwrap(), full.slice(100..200));
    let r = c
        .get(&seg)
        .header("Range", "bytes=-10")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 206);
    assert_eq!(r.bytes().await.unwrap(), full.slice(full.len() - 10..));
    let r = c
        .get(&seg)
        .header("Range", format!("bytes={}-", full.len() + 5))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 416);

    let r = c
        .get(&seg)
        .header("If-None-Match", &etag)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 304);

    let r = c
        .request(reqwest::Method::OPTIONS, &seg)
        .header("Origin", "https://player.example")
        .header("Access-Control-Request-Method", "GET")
        .header("Access-Control-Request-Headers", "range")
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success());
    assert_eq!(r.headers()["access-control-allow-origin"], "*");

    // Nothing outside the video's prefix, nothing of unknown shape, nothing of unknown videos.
    for path in [
        format!("/v/{id}/../../signing-key"),
        format!("/v/{id}/%2e%2e/%2e%2e/signing-key"),
        format!("/v/{id}/..%2f..%2fsigning-key"),
        format!("/v/{id}/720p/../../../oxcast.db"),
        format!("/v/{id}/source"),
        format!("/v/{id}/.hidden.m3u8"),
        "/v/00000000000000000000000000000000/master.m3u8".to_string(),
        "/v/not-an-id/master.m3u8".to_string(),
        "/v/../oxcast.db".to_string(),
    ] {
        let r = c.get(format!("{base}{path}")).send().await.unwrap();
        assert_eq!(r.status(), 404, "{path}");
    }

    // VOD playback is answered ahead of the router (origin::fast); a path with a
    // percent-escape still goes through the router. Both answer alike, miss included.
    let headers = |r: &reqwest::Response| {
        let mut v: Vec<(String, String)> = r
            .headers()
            .iter()
            .filter(|(n, _)| *n != "date")
            .map(|(n, v)| (n.to_string(), v.to_str().unwrap().to_string()))
            .collect();
        v.sort();
        v
    };
    for (fast, routed) in [
        ("master.m3u8", "master%2Em3u8"),
        ("720p/seg-1.m4s", "720p/seg%2D1.m4s"),
        ("720p/seg-999.m4s", "720p/seg%2D999.m4s"),
    ] {
        let get = |name: &str| {
            c.get(format!("{base}/v/{id}/{name}"))
                .header("Origin", "https://player.example")
                .header("Accept-Encoding", "br")
                .send()
        };
        let (a, b) = (get(fast).await.unwrap(), get(routed).await.unwrap());
        assert_eq!(a.status(), b.status(), "{fast}");
        assert_eq!(headers(&a), headers(&b), "{fast}");
        assert_eq!(a.bytes().await.unwrap(), b.bytes().await.unwrap(), "{fast}");
    }

    // The API describes itself and the metrics saw the job.
    let doc = json(
        c.get(format!("{base}/api/v1/openapi.json"))
            .send()
            .await
            .unwrap(),
    )
    .await;
    for p in [
        "/api/v1/uploads",
        "/api/v1/uploads/{upload_id}/complete",
        "/api/v1/videos/{video_id}",
    ] {
        assert!(doc["paths"].get(p).is_some(), "openapi lacks {p}");
    }
    let metrics = metrics(base).await;
    assert!(
        metrics.contains("oxcast_jobs_total{outcome=\"done\"} 1"),
        "{metrics}"
    );
    // Playback is counted by route, method and status, on the fast path and the router alike.
    let count = |method: &str, status: &str| -> f64 {
        metrics
            .lines()
            .filter(|l| {
                l.starts_with("oxcast_http_requests_total{")
                    && l.contains("route=\"/v/{video_id}/{*path}\"")
                    && l.contains(&format!("method=\"{method}\""))
                    && l.contains(&format!("status=\"{status}\""))
            })
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    };
    assert!(count("HEAD", "200") >= 4.0, "{metrics}");
    assert!(count("GET", "206") >= 1.0, "{metrics}");
    // The four misses above with names of the wrong shape or of unknown videos (the client
    // resolves the dot segments of the others before sending), and the two of the comparison.
    assert!(count("GET", "404") >= 6.0, "{metrics}");
    assert!(count("GET", "200") >= 5.0, "{metrics}");
}

/// The upload page in Chromium: pick a file, watch the progress bar, see it become ready.
#[tokio::test(flavor = "multi_thread")]
async fn upload_page_uploads_and_the_library_shows_the_video() {
    let dir = tempfile::tempdir().unwrap();
    let src = make_video(dir.path(), "page.mp4", 640, 360, 6, true);
    let server = Server::start(&[("OXCAST_UPLOAD__PART_SIZE", MIB)]);
    let (base, file) = (server.base.clone(), src.display().to_string());
    let out = tokio::task::spawn_blocking(move || {
        node_script(
            "upload.mjs",
            &[
                "--base",
                &base,
                "--file",
                &file,
                "--title",
                "From the page <b>",
            ],
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
    assert_eq!(v["status"], "ready");
    assert_eq!(v["title"], "From the page <b>");
    assert_eq!(
        v["renditions"].as_array().unwrap().len(),
        2,
        "360p + 240p for a 360p source: {v}"
    );
}

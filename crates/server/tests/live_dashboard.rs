//! The streamer's live dashboard, driven as a streamer and viewers would: ffmpeg publishes,
//! Chromium shows the charts, real players watch and are counted, and a live encoder that
//! cannot keep up raises the alert.

mod common;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::*;
use serde_json::Value;

/// A `secs`-long test pattern with a tone, keyframes every `gop` frames at 30 fps, about
/// `kbps`: encoded once, then published in real time without re-encoding (the publisher costs
/// no CPU).
fn clip(dir: &Path, name: &str, size: &str, secs: u32, gop: u32, kbps: u32) -> PathBuf {
    let out = dir.join(name);
    ffmpeg(&[
        "-f",
        "lavfi",
        "-i",
        &format!("testsrc2=size={size}:rate=30:duration={secs}"),
        "-f",
        "lavfi",
        "-i",
        &format!("sine=frequency=440:sample_rate=48000:duration={secs}"),
        "-c:v",
        "libx264",
        "-preset",
        "ultrafast",
        "-g",
        &gop.to_string(),
        "-b:v",
        &format!("{kbps}k"),
        "-maxrate",
        &format!("{}k", kbps * 3 / 2),
        "-bufsize",
        &format!("{}k", kbps * 2),
        "-pix_fmt",
        "yuv420p",
        "-c:a",
        "aac",
        "-shortest",
        out.to_str().unwrap(),
    ]);
    out
}

async fn health(base: &str, id: &str) -> Value {
    let r = http()
        .get(format!("{base}/api/v1/live-streams/{id}/health"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    json(r).await
}

/// Polls the health until `pred` holds; returns it.
async fn wait_health(
    base: &str,
    id: &str,
    what: &str,
    timeout: Duration,
    pred: impl Fn(&Value) -> bool,
) -> Value {
    let deadline = Instant::now() + timeout;
    loop {
        let h = health(base, id).await;
        if pred(&h) {
            return h;
        }
        assert!(Instant::now() < deadline, "{what} within {timeout:?}: {h}");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// The two tests take turns: the slow encoder takes every core it can get, which would starve
/// the players and the pages of the other.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn viewers(h: &Value) -> u64 {
    h["current"]["viewers"].as_u64().unwrap_or(u64::MAX)
}

async fn beat(base: &str, id: &str, body: &str) -> u16 {
    http()
        .post(format!("{base}/live/{id}/watching"))
        .header("content-type", "text/plain")
        .body(body.to_string())
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

/// A healthy stream: one sample a second in the API and on the page, the publisher named,
/// no alerts; two real players count two viewers, and none once they have gone.
#[tokio::test(flavor = "multi_thread")]
async fn the_dashboard_charts_a_live_stream_and_counts_its_viewers() {
    let _turn = ONE_AT_A_TIME.lock().await;
    let dir = tempfile::tempdir().unwrap();
    let src = clip(dir.path(), "ok.mp4", "320x240", 90, 60, 300);
    let server = Server::start(&[("OXCAST_LIVE__RUNGS", "[240]")]);
    let base = server.base.clone();
    let stream = create_stream(&base, "dashboard").await;
    let id = stream["id"].as_str().unwrap().to_string();
    let key = stream["stream_key"].as_str().unwrap();

    let idle = health(&base, &id).await;
    assert_eq!(idle["state"], "idle", "{idle}");
    assert_eq!(idle["samples"].as_array().unwrap().len(), 0);

    // Bad heartbeats: named, and never counted.
    assert_eq!(
        beat(&base, &id, r#"{"session":"0123456789abcdef"}"#).await,
        404
    );
    let mut publisher = publish_file(&rtmp_url(&server, key), &src);
    let live = wait_health(&base, &id, "live", Duration::from_secs(30), |h| {
        h["state"] == "live" && !h["current"].is_null()
    })
    .await;
    let went_live = Instant::now();
    let p = &live["publisher"];
    assert_eq!(
        (p["protocol"].as_str(), p["video_codec"].as_str()),
        (Some("rtmp"), Some("h264")),
        "{live}"
    );
    assert_eq!(
        (p["width"].as_u64(), p["height"].as_u64()),
        (Some(320), Some(240))
    );
    assert!(
        p["address"].as_str().unwrap().starts_with("127.0.0.1:"),
        "{p}"
    );
    for bad in [
        "",
        "{}",
        r#"{"session":"short"}"#,
        r#"{"session":"has spaces in it"}"#,
    ] {
        assert_eq!(beat(&base, &id, bad).await, 400, "{bad:?}");
    }
    assert_eq!(viewers(&health(&base, &id).await), 0);

    // The page: every chart holds at least as many points as seconds went by (less two for
    // the first tick and the page's poll).
    let (b, i) = (base.clone(), id.clone());
    let out = tokio::task::spawn_blocking(move || {
        std::thread::sleep(Duration::from_secs(8));
        node_script(
            "dashboard.mjs",
            &[
                "--base",
                &b,
                "--stream",
                &i,
                "--points",
                "6",
                "--viewers",
                "0",
            ],
        )
    })
    .await
    .unwrap();
    let page: Value = serde_json::from_str(out.lines().last().unwrap()).unwrap();
    assert_eq!(
        (page["ok"].as_bool(), page["state"].as_str()),
        (Some(true), Some("live")),
        "{out}"
    );
    let h = health(&base, &id).await;
    let secs = went_live.elapsed().as_secs();
    let samples = h["samples"].as_array().unwrap();
    assert!(
        samples.len() as u64 + 2 >= secs,
        "{} samples after {secs} s live",
        samples.len()
    );
    let last = samples.last().unwrap();
    assert!(last["ingest_kbps"].as_f64().unwrap() > 20.0, "{last}");
    assert!(last["fps"].as_f64().unwrap() > 20.0, "{last}");
    assert!(
        (last["keyframe_interval_s"].as_f64().unwrap() - 2.0).abs() < 0.6,
        "{last}"
    );
    assert!(h["alerts"].as_array().unwrap().is_empty(), "healthy: {h}");
    let t = last["t"].as_i64().unwrap();
    let since = json(
        http()
            .get(format!("{base}/api/v1/live-streams/{id}/health?since={t}"))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert!(since["samples"].as_array().unwrap().len() <= 1, "{since}");

    // Two players watch: the count goes to 2, on the page too; when they close, back to 0.
    let players: Vec<_> = (0..2)
        .map(|_| {
            let (b, i) = (base.clone(), id.clone());
            tokio::task::spawn_blocking(move || {
                node_script(
                    "live.mjs",
                    &[
                        "--base",
                        &b,
                        "--stream",
                        &i,
                        "--seconds",
                        "14",
                        "--max-latency",
                        "8",
                    ],
                )
            })
        })
        .collect();
    wait_health(&base, &id, "two viewers", Duration::from_secs(45), |h| {
        viewers(h) == 2
    })
    .await;
    let (b, i) = (base.clone(), id.clone());
    let out = tokio::task::spawn_blocking(move || {
        node_script(
            "dashboard.mjs",
            &[
                "--base",
                &b,
                "--stream",
                &i,
                "--viewers",
                "2",
                "--timeout",
                "20",
            ],
        )
    })
    .await
    .unwrap();
    assert!(out.contains(r#""viewers":2"#), "{out}");
    for p in players {
        p.await.unwrap();
    }
    // The pages said they were leaving: no need to wait out the 15 s window.
    let gone = Instant::now();
    wait_health(&base, &id, "no viewers", Duration::from_secs(20), |h| {
        viewers(h) == 0
    })
    .await;
    eprintln!(
        "viewers back to 0 {:?} after the players closed",
        gone.elapsed()
    );
    // A heartbeat that never says goodbye counts for the window, then expires.
    assert_eq!(
        beat(&base, &id, r#"{"session":"curl-viewer-0001"}"#).await,
        204
    );
    wait_health(&base, &id, "one viewer", Duration::from_secs(3), |h| {
        viewers(h) == 1
    })
    .await;

    let _ = publisher.kill();
    let _ = publisher.wait();
    wait_health(&base, &id, "reconnecting", Duration::from_secs(10), |h| {
        h["state"] == "reconnecting" && h["current"].is_null()
    })
    .await;
}

/// A publisher with keyframes 10 s apart, into a live encoder too slow for the source: both
/// alerts, in the API and on the page.
#[tokio::test(flavor = "multi_thread")]
async fn a_slow_encoder_and_rare_keyframes_raise_alerts() {
    let _turn = ONE_AT_A_TIME.lock().await;
    let dir = tempfile::tempdir().unwrap();
    let src = clip(dir.path(), "slow.mp4", "1280x720", 40, 300, 2000);
    let server = Server::start(&[
        ("OXCAST_LIVE__RUNGS", "[720]"),
        ("OXCAST_LIVE__PRESET", "veryslow"),
    ]);
    let base = server.base.clone();
    let stream = create_stream(&base, "slow").await;
    let id = stream["id"].as_str().unwrap().to_string();
    let mut publisher = publish_file(
        &rtmp_url(&server, stream["stream_key"].as_str().unwrap()),
        &src,
    );
    let kinds = |h: &Value| -> Vec<String> {
        h["alerts"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| a["kind"].as_str().unwrap().to_string())
            .collect()
    };
    let h = wait_health(&base, &id, "both alerts", Duration::from_secs(40), |h| {
        let k = kinds(h);
        k.contains(&"encoder_slow".into()) && k.contains(&"no_keyframe".into())
    })
    .await;
    let slow = h["alerts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["kind"] == "encoder_slow")
        .unwrap();
    assert!(
        slow["message"].as_str().unwrap().contains("real time"),
        "{slow}"
    );
    assert!(h["current"]["encoder_speed"].as_f64().unwrap() < 0.9, "{h}");
    let (b, i) = (base.clone(), id.clone());
    let out = tokio::task::spawn_blocking(move || {
        node_script(
            "dashboard.mjs",
            &[
                "--base",
                &b,
                "--stream",
                &i,
                "--alert",
                "encoder_slow",
                "--timeout",
                "20",
            ],
        )
    })
    .await
    .unwrap();
    assert!(out.contains("encoder_slow"), "{out}");
    let _ = publisher.kill();
    let _ = publisher.wait();
}

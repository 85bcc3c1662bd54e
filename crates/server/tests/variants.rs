//! Sources of awkward shapes: portrait, odd sizes, rotation metadata, no audio.

mod common;

use common::*;

fn resolutions(master: &str) -> Vec<String> {
    variants(master).into_iter().map(|(_, r)| r).collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn ladder_follows_the_source_shape() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&[]);
    let base = server.base.clone();

    let portrait = make_video(dir.path(), "portrait.mp4", 720, 1280, 5, true);
    let odd = make_video(dir.path(), "odd.mp4", 853, 479, 5, true);
    let silent = make_video(dir.path(), "silent.mp4", 640, 360, 14, false);
    // A phone-style recording: coded landscape, displayed portrait.
    let rotated = dir.path().join("rotated.mp4");
    ffmpeg(&[
        "-i",
        &make_video(dir.path(), "land.mp4", 640, 360, 4, true)
            .display()
            .to_string(),
        "-c",
        "copy",
        "-metadata:s:v:0",
        "rotate=90",
        &rotated.display().to_string(),
    ]);

    let ids = [
        upload(&base, &portrait, "portrait", 4).await,
        upload(&base, &odd, "odd", 4).await,
        upload(&base, &silent, "silent", 4).await,
        upload(&base, &rotated, "rotated", 4).await,
    ];
    for id in &ids {
        wait_ready(&base, id).await;
    }
    let master = |i: usize| get_text_owned(format!("{base}/v/{}/master.m3u8", ids[i]));

    // Portrait stays portrait, named by the short side.
    let m = master(0).await;
    assert_eq!(resolutions(&m), ["720x1280", "480x854", "360x640"], "{m}");
    let v = video(&base, &ids[0]).await;
    assert_eq!(
        (v["width"].as_u64(), v["height"].as_u64()),
        (Some(720), Some(1280))
    );

    // 853x479: no upscaling to 480p, every dimension even.
    let m = master(1).await;
    let res = resolutions(&m);
    assert_eq!(res, ["642x360", "428x240"], "{m}");
    for r in &res {
        let (w, h) = r.split_once('x').unwrap();
        assert!(
            w.parse::<u32>().unwrap() % 2 == 0 && h.parse::<u32>().unwrap() % 2 == 0,
            "{r}"
        );
    }

    // No audio: video-only variants, no audio group, and it decodes and plays.
    let m = master(2).await;
    assert!(
        !m.contains("EXT-X-MEDIA") && !m.contains("mp4a") && !m.contains("AUDIO="),
        "{m}"
    );
    let mpd = get_text_owned(format!("{base}/v/{}/manifest.mpd", ids[2])).await;
    assert!(!mpd.contains("contentType=\"audio\""), "{mpd}");
    let url = format!("{base}/v/{}/master.m3u8", ids[2]);
    let errs = tokio::task::spawn_blocking(move || decode_errors(&url))
        .await
        .unwrap();
    assert_eq!(errs, "");
    let (b, i) = (base.clone(), ids[2].clone());
    tokio::task::spawn_blocking(move || {
        node_script(
            "play.mjs",
            &["--base", &b, "--video", &i, "--protocol", "hls"],
        )
    })
    .await
    .unwrap();

    // Rotation metadata is honoured: displayed portrait, portrait rungs.
    let m = master(3).await;
    assert_eq!(resolutions(&m), ["360x640", "240x426"], "{m}");
}

async fn get_text_owned(url: String) -> String {
    get_text(&url).await
}

//! Bad input gets a clear error and loses nothing else.

mod common;

use std::time::Duration;

use common::*;
use serde_json::json;

/// PUTs `body` to `url` over a raw socket: the headers, a pause long enough for the server to
/// answer early, then the body; returns the response's status line and headers.
async fn raw_put_slow(base: &str, url: &str, body: &[u8]) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let addr = base.trim_start_matches("http://").trim_end_matches('/');
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let head = format!(
        "PUT {url} HTTP/1.1\r\nHost: {addr}\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    s.write_all(head.as_bytes()).await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    s.write_all(body)
        .await
        .expect("the server cut the refused body off instead of draining it");
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    while !got.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = s.read(&mut buf).await.unwrap();
        assert!(n > 0, "connection closed before a response");
        got.extend_from_slice(&buf[..n]);
    }
    String::from_utf8_lossy(&got).into_owned()
}

/// A part URL for `upload`/`part` signed with the server's own key, expiring at `expires`.
fn sign(server: &Server, upload: &str, part: u32, expires: i64) -> String {
    use hmac_sha256::mac;
    let key = std::fs::read_to_string(server.data.join("signing-key")).unwrap();
    let sig = mac(
        key.trim().as_bytes(),
        format!("oxcast-part:{upload}:{part}:{expires}").as_bytes(),
    );
    format!(
        "/upload/{upload}/{part}?expires={expires}&sig={}",
        hex::encode(sig)
    )
}

/// HMAC-SHA256 from the md-5/sha2 family is not a dev-dependency; a tiny RFC 2104 version
/// keeps the test independent of the server's implementation.
mod hmac_sha256 {
    pub fn mac(key: &[u8], msg: &[u8]) -> Vec<u8> {
        use sha2::{Digest, Sha256};
        let mut k = [0u8; 64];
        if key.len() > 64 {
            k[..32].copy_from_slice(&Sha256::digest(key));
        } else {
            k[..key.len()].copy_from_slice(key);
        }
        let ipad: Vec<u8> = k.iter().map(|b| b ^ 0x36).collect();
        let opad: Vec<u8> = k.iter().map(|b| b ^ 0x5c).collect();
        let inner = Sha256::new()
            .chain_update(&ipad)
            .chain_update(msg)
            .finalize();
        Sha256::new()
            .chain_update(&opad)
            .chain_update(inner)
            .finalize()
            .to_vec()
    }
}

async fn error_of(resp: reqwest::Response) -> (u16, String) {
    let status = resp.status().as_u16();
    let v = json(resp).await;
    (status, v["error"].as_str().unwrap_or_default().to_string())
}

async fn upload_bytes(server: &Server, name: &str, data: Vec<u8>) -> String {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join(name);
    std::fs::write(&p, data).unwrap();
    upload(&server.base, &p, name, 2).await
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_files_fail_with_a_reason_and_nothing_else_is_lost() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&[
        ("OXCAST_UPLOAD__PART_SIZE", "1048576"),
        ("OXCAST_LIMITS__MAX_DURATION_S", "10"),
    ]);
    let base = server.base.clone();

    // A good video processed alongside the bad ones must come out fine.
    let good = make_video(dir.path(), "good.mp4", 640, 360, 4, true);
    let good_id = upload(&base, &good, "good", 2).await;

    // Text named .mp4.
    let text_id = upload_bytes(
        &server,
        "notes.mp4",
        b"these are my notes, not a video\n".repeat(100),
    )
    .await;

    // A truncated MP4 (the moov, at the end, is cut off).
    let whole = std::fs::read(&good).unwrap();
    let trunc_id = upload_bytes(&server, "cut.mp4", whole[..whole.len() * 6 / 10].to_vec()).await;

    // An HLS playlist in disguise naming a local file and a canary we watch for opens.
    let canary = dir.path().join("canary.ts");
    ffmpeg(&[
        "-f",
        "lavfi",
        "-i",
        "testsrc2=size=64x64:rate=10:duration=1",
        "-f",
        "mpegts",
        &canary.display().to_string(),
    ]);
    let mut inotify = inotify::Inotify::init().unwrap();
    inotify
        .watches()
        .add(
            &canary,
            inotify::WatchMask::OPEN | inotify::WatchMask::ACCESS,
        )
        .unwrap();
    let playlist = format!(
        "#EXTM3U\n#EXT-X-TARGETDURATION:10\n#EXTINF:10,\nfile:///etc/passwd\n#EXTINF:1,\n{}\n#EXTINF:1,\nhttp://127.0.0.1:{}/healthz\n#EXT-X-ENDLIST\n",
        canary.display(),
        server.port
    );
    let hls_id = upload_bytes(&server, "trick.mp4", playlist.into_bytes()).await;

    // Too long for the configured limit.
    let long = make_video(dir.path(), "long.mp4", 160, 120, 12, false);
    let long_id = upload(&base, &long, "long", 2).await;

    let timeout = Duration::from_secs(120);
    let text = wait_done(&base, &text_id, timeout).await;
    let trunc = wait_done(&base, &trunc_id, timeout).await;
    let hls = wait_done(&base, &hls_id, timeout).await;
    let long = wait_done(&base, &long_id, timeout).await;
    for (v, want) in [
        (&text, "not a video"),
        (&trunc, "not a video"),
        (&hls, "not a video"),
        (&long, "limit is 10 s"),
    ] {
        assert_eq!(v["status"], "failed", "{v}");
        let err = v["error"].as_str().unwrap();
        assert!(err.contains(want), "error {err:?} should say {want:?}");
        // No half-made outputs behind a failed video, and no playback.
        let id = v["id"].as_str().unwrap();
        assert!(
            server.objects(&format!("videos/{id}")).is_empty(),
            "{id} left outputs"
        );
        let r = http()
            .get(format!("{base}/v/{id}/master.m3u8"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 404);
    }
    // Nothing opened the canary (and the error does not leak the server's paths).
    let mut buf = [0u8; 4096];
    match inotify.read_events(&mut buf) {
        Ok(events) => assert_eq!(
            events.count(),
            0,
            "ffmpeg opened a file named inside the upload"
        ),
        Err(e) => assert_eq!(e.kind(), std::io::ErrorKind::WouldBlock),
    }
    assert!(
        !hls["error"]
            .as_str()
            .unwrap()
            .contains(&server.data.display().to_string()),
        "{hls}"
    );
    // Rejections are final: one attempt, no retries.
    let metrics = metrics(&base).await;
    assert!(
        metrics.contains("oxcast_jobs_total{outcome=\"failed\"} 4"),
        "{metrics}"
    );
    assert!(!metrics.contains("outcome=\"retry\""), "{metrics}");

    wait_ready(&base, &good_id).await;
    let list = json(
        http()
            .get(format!("{base}/api/v1/videos"))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(list["videos"].as_array().unwrap().len(), 5);
}

#[tokio::test(flavor = "multi_thread")]
async fn upload_protocol_errors_are_clear_and_recoverable() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&[
        ("OXCAST_UPLOAD__PART_SIZE", "1048576"),
        ("OXCAST_UPLOAD__MAX_SIZE", "30000000"),
    ]);
    let base = server.base.clone();
    let c = http();

    // Larger than the maximum: refused at create, nothing created.
    let r = c
        .post(format!("{base}/api/v1/uploads"))
        .json(&json!({"filename": "huge.mp4", "size": 30_000_001u64}))
        .send()
        .await
        .unwrap();
    let (status, err) = error_of(r).await;
    assert_eq!(status, 413);
    assert!(err.contains("30000000"), "{err}");
    for bad in [
        json!({"filename": "", "size": 10}),
        json!({"filename": "a.mp4", "size": 0}),
    ] {
        let r = c
            .post(format!("{base}/api/v1/uploads"))
            .json(&bad)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 400, "{bad}");
    }
    let list = json(c.get(format!("{base}/api/v1/videos")).send().await.unwrap()).await;
    assert_eq!(list["videos"].as_array().unwrap().len(), 0);

    let src = make_video(dir.path(), "v.mp4", 1280, 720, 4, true);
    let data = std::fs::read(&src).unwrap();
    assert!(data.len() > 2 * 1048576, "need at least three parts");
    let up = create_upload(&base, "v.mp4", data.len() as u64, "recovering").await;
    let upload_id = up["upload_id"].as_str().unwrap().to_string();
    let urls: Vec<String> = up["parts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["url"].as_str().unwrap().to_string())
        .collect();
    let n = urls.len();
    let part = |i: usize| data[(i - 1) * 1048576..(i * 1048576).min(data.len())].to_vec();

    // Wrong signature, a signature for another part, expired: 403, nothing stored.
    let tampered = urls[0].replace("sig=", "sig=00");
    let (s, e) = error_of(put(&base, &tampered, part(1)).await).await;
    assert_eq!((s, e.contains("signature")), (403, true), "{e}");
    // A URL authorises a part number, not content: wrong bytes of the right size are stored,
    // and replaced when the right bytes are re-sent below.
    assert_eq!(put(&base, &urls[1], part(1)).await.status(), 200);
    let swapped = urls[0].replace(&format!("/{upload_id}/1?"), &format!("/{upload_id}/2?"));
    let (s, _) = error_of(put(&base, &swapped, part(2)).await).await;
    assert_eq!(s, 403);
    let expired = sign(&server, &upload_id, 1, 1_000_000_000);
    let (s, e) = error_of(put(&base, &expired, part(1)).await).await;
    assert_eq!((s, e.contains("expired")), (403, true), "{e}");

    // Larger than part_size: 413 while streaming.
    let mut big = part(1);
    big.extend_from_slice(&[0u8; 4096]);
    let (s, e) = error_of(put(&base, &urls[0], big).await).await;
    assert_eq!(s, 413, "{e}");

    let status = json(
        c.get(format!("{base}/api/v1/uploads/{upload_id}"))
            .send()
            .await
            .unwrap(),
    )
    .await;
    let stored: Vec<u64> = status["parts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["part_number"].as_u64().unwrap())
        .collect();
    assert!(
        !stored.contains(&1),
        "rejected bodies must not be stored: {status}"
    );

    // Send every part but the last; completing names the missing one.
    let mut etags = Vec::new();
    for i in 1..n {
        let r = put(&base, &urls[i - 1], part(i)).await;
        assert_eq!(r.status(), 200);
        etags.push(json!({"part_number": i, "etag": r.headers()["etag"].to_str().unwrap()}));
    }
    let complete = |parts: Vec<serde_json::Value>| {
        let c = c.clone();
        let url = format!("{base}/api/v1/uploads/{upload_id}/complete");
        async move {
            c.post(url)
                .json(&json!({ "parts": parts }))
                .send()
                .await
                .unwrap()
        }
    };
    let (s, e) = error_of(complete(etags.clone()).await).await;
    assert_eq!(s, 400);
    assert!(e.contains("missing") && e.contains(&n.to_string()), "{e}");

    // The status lists exactly the missing part, with a fresh URL.
    let status = json(
        c.get(format!("{base}/api/v1/uploads/{upload_id}"))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status["missing"].as_array().unwrap().len(), 1);
    let last_url = status["missing"][0]["url"].as_str().unwrap().to_string();
    let r = put(&base, &last_url, part(n)).await;
    assert_eq!(r.status(), 200);
    let last_etag = r.headers()["etag"].to_str().unwrap().to_string();

    // A wrong ETag is named.
    let mut wrong = etags.clone();
    wrong.push(json!({"part_number": n, "etag": "\"0000\""}));
    let (s, e) = error_of(complete(wrong).await).await;
    assert_eq!(s, 400);
    assert!(e.contains("ETag") && e.contains(&format!("[{n}]")), "{e}");

    // Re-sending a part replaces it; then the upload completes (twice: idempotent) and plays.
    let r = put(&base, &urls[0], part(1)).await;
    assert_eq!(r.status(), 200);
    etags.push(json!({"part_number": n, "etag": last_etag}));
    let r = complete(etags.clone()).await;
    assert_eq!(r.status(), 202);
    let r = complete(etags.clone()).await;
    assert_eq!(r.status(), 202);
    let id = up["video_id"].as_str().unwrap();
    wait_ready(&base, id).await;
    let metrics = metrics(&base).await;
    assert!(
        metrics.contains("oxcast_jobs_total{outcome=\"done\"} 1"),
        "processed once: {metrics}"
    );

    // After completion the part URLs are closed; the client reads why (the refused body is
    // drained, not cut off with a broken pipe), however often it tries.
    for _ in 0..5 {
        let (s, e) = error_of(put(&base, &urls[0], part(1)).await).await;
        assert_eq!((s, e.contains("already complete")), (409, true), "{e}");
    }
    // The same from a slow client, deterministically: the headers first, the body only after
    // the server has had time to answer. Cut off, the body's write fails; drained, it gets 409.
    let head = raw_put_slow(&base, &urls[0], &part(1)).await;
    assert!(head.starts_with("HTTP/1.1 409"), "{head}");
}

#[tokio::test(flavor = "multi_thread")]
async fn api_token_guards_the_api_but_not_signed_urls_or_playback() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&[("OXCAST_API_TOKEN", "s3cret")]);
    let base = server.base.clone();
    let c = http();
    for (auth, want) in [
        (None, 401),
        (Some("Bearer nope"), 401),
        (Some("Bearer s3cret"), 200),
    ] {
        let mut req = c.get(format!("{base}/api/v1/videos"));
        if let Some(a) = auth {
            req = req.header("Authorization", a);
        }
        assert_eq!(req.send().await.unwrap().status(), want, "{auth:?}");
    }
    let src = make_video(dir.path(), "t.mp4", 320, 240, 2, true);
    let data = std::fs::read(&src).unwrap();
    let up = json(
        c.post(format!("{base}/api/v1/uploads"))
            .bearer_auth("s3cret")
            .json(&json!({"filename": "t.mp4", "size": data.len()}))
            .send()
            .await
            .unwrap(),
    )
    .await;
    let r = put(&base, up["parts"][0]["url"].as_str().unwrap(), data).await;
    assert_eq!(r.status(), 200, "part URLs need only their signature");
    let etag = r.headers()["etag"].to_str().unwrap().to_string();
    let upload_id = up["upload_id"].as_str().unwrap();
    let r = c
        .post(format!("{base}/api/v1/uploads/{upload_id}/complete"))
        .json(&json!({"parts": [{"part_number": 1, "etag": etag}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let r = c
        .post(format!("{base}/api/v1/uploads/{upload_id}/complete"))
        .bearer_auth("s3cret")
        .json(&json!({"parts": [{"part_number": 1, "etag": etag}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    let id = up["video_id"].as_str().unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let v = json(
            c.get(format!("{base}/api/v1/videos/{id}"))
                .bearer_auth("s3cret")
                .send()
                .await
                .unwrap(),
        )
        .await;
        if v["status"] == "ready" {
            break;
        }
        assert!(
            v["status"] != "failed" && std::time::Instant::now() < deadline,
            "{v}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let r = c
        .get(format!("{base}/v/{id}/master.m3u8"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "playback needs no token");
}

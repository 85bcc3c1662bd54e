//! Interruptions lose nothing: a CLI upload killed midway resumes, a server killed mid-job
//! retries it on restart with no duplicate or partial outputs, SIGTERM shuts down cleanly.

mod common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

/// Successful part PUTs the server has answered, from its Prometheus metrics.
async fn part_puts(base: &str) -> u64 {
    let text = metrics(base).await;
    text.lines()
        .filter(|l| {
            l.starts_with("oxcast_http_requests_total{")
                && l.contains("route=\"/upload/{upload_id}/{part_number}\"")
                && l.contains("method=\"PUT\"")
                && l.contains("status=\"200\"")
        })
        .map(|l| l.rsplit(' ').next().unwrap().parse::<u64>().unwrap())
        .sum()
}

#[tokio::test(flavor = "multi_thread")]
async fn an_interrupted_cli_upload_resumes_sending_only_missing_parts() {
    let dir = tempfile::tempdir().unwrap();
    let src = make_video(dir.path(), "cli.mp4", 1280, 720, 20, true);
    let size = std::fs::metadata(&src).unwrap().len();
    let server = Server::start(&[("OXCAST_UPLOAD__PART_SIZE", "1048576")]);
    let base = server.base.clone();
    let total_parts = size.div_ceil(1048576);
    let state_dir = dir.path().join("state");
    let cli = {
        let (src, base, state_dir) = (src.clone(), base.clone(), state_dir.clone());
        move |extra: &[&str]| {
            let mut c = Command::new(BIN);
            c.arg("upload")
                .arg(&src)
                .args([
                    "--server",
                    &base,
                    "--title",
                    "from the cli",
                    "--parallel",
                    "2",
                ])
                .arg("--state-dir")
                .arg(&state_dir)
                .args(extra);
            c
        }
    };

    // First run, throttled so it is still sending when killed.
    let mut first = cli(&["--limit-rate", "3M"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // Parts answered 200, not objects in the store: a part's object appears as its body
    // streams in, before the part is recorded, and one cut off by the kill is not stored.
    let deadline = Instant::now() + Duration::from_secs(60);
    while part_puts(&base).await < 4 {
        assert!(Instant::now() < deadline, "the CLI stored no parts");
        assert!(
            first.try_wait().unwrap().is_none(),
            "the CLI finished before it was interrupted"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    first.kill().unwrap();
    first.wait().unwrap();

    let saved: Vec<_> = std::fs::read_dir(&state_dir).unwrap().flatten().collect();
    assert_eq!(saved.len(), 1, "one resume state file");
    let state: serde_json::Value =
        serde_json::from_slice(&std::fs::read(saved[0].path()).unwrap()).unwrap();
    let upload_id = state["upload_id"].as_str().unwrap();
    // A part whose body had all arrived may still be stored after the kill: wait until every
    // 200 answered is a stored part, so the count below is of the second run's PUTs alone.
    let deadline = Instant::now() + Duration::from_secs(10);
    let (stored, puts_before) = loop {
        let puts = part_puts(&base).await;
        let status = upload_status(&base, upload_id).await;
        let stored = status["parts"].as_array().unwrap().len() as u64;
        if stored == puts {
            break (stored, puts);
        }
        assert!(
            Instant::now() < deadline,
            "{puts} parts answered, {stored} stored"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(
        stored >= 4 && stored < total_parts,
        "stored {stored} of {total_parts}"
    );

    // Second run: resumes, sends only what is missing, waits until ready, prints the URLs.
    let second = cli.clone();
    let out = tokio::task::spawn_blocking(move || second(&[]).output().unwrap())
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let video_id = state["video_id"].as_str().unwrap();
    assert!(
        stdout.contains(&format!("video {video_id} ready")),
        "{stdout}"
    );
    assert!(
        stdout.contains(&format!("{base}/v/{video_id}/master.m3u8")),
        "{stdout}"
    );
    assert!(
        stdout.contains(&format!("{base}/v/{video_id}/manifest.mpd")),
        "{stdout}"
    );
    assert_eq!(
        part_puts(&base).await - puts_before,
        total_parts - stored,
        "re-sent stored parts"
    );

    let list = json(
        http()
            .get(format!("{base}/api/v1/videos"))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(
        list["videos"].as_array().unwrap().len(),
        1,
        "no second upload was created"
    );
    assert_eq!(list["videos"][0]["status"], "ready");
    assert!(
        std::fs::read_dir(&state_dir).unwrap().next().is_none(),
        "state removed once ready"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_server_killed_mid_job_retries_it_on_restart_with_clean_outputs() {
    let dir = tempfile::tempdir().unwrap();
    let src = make_video(dir.path(), "crash.mp4", 1280, 720, 30, true);
    let mut server = Server::start(&[]);
    let id = upload(&server.base, &src, "crash", 4).await;

    // Kill it once processing is well under way (and packaging may have begun).
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let v = video(&server.base, &id).await;
        assert_ne!(
            v["status"], "ready",
            "finished before it could be interrupted"
        );
        if v["status"] == "processing" && v["progress"].as_f64().unwrap() >= 0.3 {
            break;
        }
        assert!(Instant::now() < deadline, "{v}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let scratch = server.data.join("work");
    server.kill9();
    // ffmpeg dies with its parent instead of encoding on as an orphan.
    std::thread::sleep(Duration::from_millis(500));
    let orphans = Command::new("pgrep")
        .args(["-f", &scratch.display().to_string()])
        .output()
        .unwrap();
    assert!(
        orphans.stdout.is_empty(),
        "ffmpeg outlived the server: {}",
        String::from_utf8_lossy(&orphans.stdout)
    );

    server.restart();
    let v = wait_ready(&server.base, &id).await;
    assert_eq!(v["renditions"].as_array().unwrap().len(), 3);
    assert!(
        server.log().contains("re-queued jobs interrupted"),
        "restart released the lease at once"
    );

    let stored = server.objects(&format!("videos/{id}"));
    let wanted = referenced(&server.base, &id).await;
    assert_eq!(
        stored, wanted,
        "exactly the published objects, no leftovers of the killed attempt"
    );
    let url = format!("{}/v/{id}/master.m3u8", server.base);
    assert_eq!(
        tokio::task::spawn_blocking(move || decode_errors(&url))
            .await
            .unwrap(),
        ""
    );
    let leftovers: Vec<_> = std::fs::read_dir(&scratch).unwrap().flatten().collect();
    assert!(leftovers.is_empty(), "scratch space cleaned: {leftovers:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_stops_the_server_cleanly() {
    let mut server = Server::start(&[]);
    let status = server.terminate();
    assert!(status.success(), "{status}");
    assert!(server.log().contains("stopped"), "{}", server.log());
}

//! Dashboards: the shipped Grafana dashboard only queries metrics (and labels) that a real
//! server exports, checked against its `/metrics` after a workload that touches every one.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use serde_json::Value;

/// Metric name → every label name seen on its series, from Prometheus text exposition.
fn exported(text: &str) -> BTreeMap<String, BTreeSet<String>> {
    let mut out: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let end = line.find(['{', ' ']).unwrap_or(line.len());
        let labels = out.entry(line[..end].to_string()).or_default();
        if line[end..].starts_with('{') {
            labels.extend(label_keys(&line[end + 1..]));
        }
    }
    out
}

/// The label names of a `key="value",…}` list (values may hold `{`, `}`, `,` and escapes).
fn label_keys(s: &str) -> Vec<String> {
    let mut keys = Vec::new();
    let mut chars = s.chars().peekable();
    loop {
        while chars.peek().is_some_and(|c| *c == ',' || c.is_whitespace()) {
            chars.next();
        }
        let key: String = chars
            .by_ref()
            .take_while(|c| *c != '=' && *c != '!' && *c != '}')
            .collect();
        let key = key.trim().to_string();
        if key.is_empty() {
            return keys;
        }
        keys.push(key);
        // Skip the rest of the operator (`=~`, `!=`, `!~`), then the quoted value.
        while chars.peek().is_some_and(|c| *c != '"') {
            chars.next();
        }
        chars.next();
        let mut escaped = false;
        for c in chars.by_ref() {
            match (escaped, c) {
                (false, '\\') => escaped = true,
                (false, '"') => break,
                _ => escaped = false,
            }
        }
    }
}

/// The length of the `{…}` label matchers at the start of `s`, quoted values skipped whole.
fn matchers_end(s: &str) -> usize {
    let (mut quoted, mut escaped) = (false, false);
    for (i, c) in s.char_indices() {
        match (quoted, escaped, c) {
            (true, false, '\\') => escaped = true,
            (true, false, '"') => quoted = false,
            (true, _, _) => escaped = false,
            (false, _, '"') => quoted = true,
            (false, _, '}') => return i + 1,
            _ => {}
        }
    }
    s.len()
}

/// What one PromQL expression uses: `(metric, labels matched on it)` and the `by (…)` labels.
fn promql_uses(expr: &str) -> (Vec<(String, Vec<String>)>, Vec<String>) {
    let is_ident = |c: char| c.is_ascii_alphanumeric() || c == '_' || c == ':';
    let mut metrics = Vec::new();
    let mut grouping = Vec::new();
    let mut rest = expr;
    while let Some(start) = rest.find(|c: char| c.is_ascii_alphabetic() || c == '_') {
        let after = &rest[start..];
        let len = after.find(|c: char| !is_ident(c)).unwrap_or(after.len());
        let word = &after[..len];
        let tail = after[len..].trim_start();
        // An identifier glued to what precedes it (`5..`, `$__rate_interval`) is no name.
        let glued = start > 0 && rest[..start].ends_with(['$', '.']);
        if word.starts_with("oxcast_") && !glued {
            let labels = tail.strip_prefix('{').map(label_keys).unwrap_or_default();
            metrics.push((word.to_string(), labels));
        } else if (word == "by" || word == "without") && tail.starts_with('(') {
            let list = &tail[1..tail.find(')').expect("closing parenthesis")];
            grouping.extend(list.split(',').map(|l| l.trim().to_string()));
        }
        // Skip quoted strings whole: a label value is never a name.
        let consumed = start + len;
        rest = &rest[consumed..];
        if rest.starts_with('{') {
            rest = &rest[matchers_end(rest)..];
        }
    }
    (metrics, grouping)
}

/// Every `expr` in the dashboard, with its panel's title.
fn dashboard_queries() -> Vec<(String, String)> {
    let path = repo_root().join("deploy/grafana/oxcast.json");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path:?}: {e}"));
    let dash: Value = serde_json::from_str(&text).expect("the dashboard is valid JSON");
    let mut out = Vec::new();
    let mut ids = BTreeSet::new();
    for panel in dash["panels"].as_array().expect("panels") {
        assert!(
            ids.insert(panel["id"].as_u64().expect("panel id")),
            "duplicate panel id: {panel}"
        );
        let title = panel["title"].as_str().unwrap_or_default().to_string();
        for target in panel["targets"].as_array().into_iter().flatten() {
            assert_eq!(
                target["datasource"]["uid"], "${datasource}",
                "{title}: every query uses the dashboard's data source variable"
            );
            out.push((title.clone(), target["expr"].as_str().unwrap().to_string()));
        }
    }
    out
}

#[test]
fn promql_names_and_labels_are_extracted() {
    let (m, by) = promql_uses(
        r#"sum by (route, status) (rate(oxcast_http_requests_total{status=~"5..",route!="/x{y}"}[$__rate_interval])) / sum(rate(oxcast_origin_bytes_total[5m]))"#,
    );
    assert_eq!(
        m,
        vec![
            (
                "oxcast_http_requests_total".to_string(),
                vec!["status".to_string(), "route".to_string()]
            ),
            ("oxcast_origin_bytes_total".to_string(), vec![]),
        ]
    );
    assert_eq!(by, ["route", "status"]);
    let text = "# TYPE a counter\na_total{route=\"/v/{id}/{*p}\",method=\"GET\"} 3\nb 1\n";
    let e = exported(text);
    assert_eq!(e["a_total"].iter().collect::<Vec<_>>(), ["method", "route"]);
    assert!(e["b"].is_empty());
}

/// `ffmpeg -re` pushing a small test pattern with a tone to `url` over RTMP for `secs`.
fn publish(url: &str, secs: u32) -> Child {
    Command::new("ffmpeg")
        .args(["-hide_banner", "-nostdin", "-v", "error", "-re"])
        .args(["-f", "lavfi", "-i", "testsrc2=size=320x240:rate=25"])
        .args(["-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000"])
        .args(["-t", &secs.to_string(), "-c:v", "libx264", "-preset"])
        .args(["ultrafast", "-tune", "zerolatency", "-g", "25"])
        .args(["-pix_fmt", "yuv420p", "-c:a", "aac", "-f", "flv", url])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("ffmpeg")
}

/// Polls `/metrics` until it names `metric`.
async fn wait_metric(base: &str, metric: &str, timeout: Duration) {
    let deadline = Instant::now() + timeout;
    while !exported(&metrics(base).await).contains_key(metric) {
        assert!(Instant::now() < deadline, "no {metric} within {timeout:?}");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// One workload that makes the server export every metric the dashboard names: a video
/// processed, an upload that fails, origin reads, a live stream (and a publisher with a wrong
/// key), and connections past the cap.
#[tokio::test(flavor = "multi_thread")]
async fn every_dashboard_query_names_an_exported_metric() {
    let queries = dashboard_queries();
    assert!(queries.len() >= 20, "{queries:?}");
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&[
        ("OXCAST_LIVE__RUNGS", "[240]"),
        ("OXCAST_HTTP__MAX_CONNECTIONS", "8"),
    ]);
    let base = server.base.clone();

    let src = make_video(dir.path(), "m.mp4", 320, 240, 2, true);
    let id = upload(&base, &src, "metrics", 2).await;
    wait_ready(&base, &id).await;
    get_text(&format!("{base}/v/{id}/master.m3u8")).await;
    let bad = dir.path().join("notes.mp4");
    std::fs::write(&bad, b"these are notes, not a video\n".repeat(100)).unwrap();
    let bad_id = upload(&base, &bad, "not a video", 1).await;
    let v = wait_done(&base, &bad_id, Duration::from_secs(60)).await;
    assert_eq!(v["status"], "failed", "{v}");

    let r = http()
        .post(format!("{base}/api/v1/live-streams"))
        .json(&serde_json::json!({ "title": "metrics" }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let key = json(r).await["stream_key"].as_str().unwrap().to_string();
    let rtmp = format!("rtmp://127.0.0.1:{}/live", server.rtmp_port);
    let mut wrong = publish(&format!("{rtmp}/not-the-key"), 2);
    let mut live = publish(&format!("{rtmp}/{key}"), 20);
    wait_metric(
        &base,
        "oxcast_live_part_latency_seconds",
        Duration::from_secs(30),
    )
    .await;
    wait_metric(&base, "oxcast_live_encoder_speed", Duration::from_secs(10)).await;
    let _ = live.kill();
    let _ = live.wait();
    let _ = wrong.wait();

    // Past the 8 full slots and the 32 overflow ones, connections are refused at accept.
    let port = server.port;
    tokio::task::spawn_blocking(move || {
        let held: Vec<_> = (0..48)
            .filter_map(|_| std::net::TcpStream::connect(("127.0.0.1", port)).ok())
            .collect();
        std::thread::sleep(Duration::from_millis(300));
        drop(held);
    })
    .await
    .unwrap();
    tokio::time::sleep(Duration::from_millis(1500)).await;

    let text = metrics(&base).await;
    let have = exported(&text);
    let mut missing = Vec::new();
    for (title, expr) in &queries {
        let (used, grouping) = promql_uses(expr);
        assert!(!used.is_empty(), "{title}: {expr} names no oxcast metric");
        for (metric, labels) in &used {
            let Some(known) = have.get(metric) else {
                missing.push(format!("{title}: {metric} is not exported"));
                continue;
            };
            for l in labels.iter().filter(|l| !known.contains(*l)) {
                missing.push(format!("{title}: {metric} has no label {l}"));
            }
        }
        for l in &grouping {
            if !used
                .iter()
                .any(|(m, _)| have.get(m).is_some_and(|k| k.contains(l)))
            {
                missing.push(format!("{title}: no metric of {expr} has the label {l}"));
            }
        }
    }
    assert!(
        missing.is_empty(),
        "the dashboard queries what the server does not export:\n{}\n\n/metrics:\n{text}",
        missing.join("\n")
    );
}

/// The admin jobs of one state, from the API.
async fn admin_jobs(base: &str, state: &str) -> Vec<Value> {
    let r = http()
        .get(format!("{base}/api/v1/admin/jobs?state={state}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    json(r).await["jobs"].as_array().unwrap().clone()
}

fn job_of<'a>(jobs: &'a [Value], video: &str) -> Option<&'a Value> {
    jobs.iter().find(|j| j["video_id"] == video)
}

async fn post_status(url: &str) -> u16 {
    http().post(url).send().await.unwrap().status().as_u16()
}

/// The admin page in Chromium lists a running job with its progress and worker and a failed
/// job with its reason; Retry puts the failed job back in the queue with its attempts reset.
/// One worker, kept busy by a slow encode, so the retried job stays queued while we look.
#[tokio::test(flavor = "multi_thread")]
async fn admin_page_shows_the_queue_and_retry_requeues_a_failed_job() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&[
        ("OXCAST_WORKER__CONCURRENCY", "1"),
        ("OXCAST_TRANSCODE__PRESET", "veryslow"),
    ]);
    let base = server.base.clone();

    let bad = dir.path().join("notes.mp4");
    std::fs::write(&bad, b"these are notes, not a video\n".repeat(100)).unwrap();
    let bad_title = "Notes <b>not</b> a video";
    let failed = upload(&base, &bad, bad_title, 1).await;
    let v = wait_done(&base, &failed, Duration::from_secs(60)).await;
    assert_eq!(v["status"], "failed", "{v}");
    let src = make_video(dir.path(), "slow.mp4", 640, 360, 12, false);
    let running = upload(&base, &src, "slow encode", 2).await;

    // The API first: the failed job with its reason, the running one with its worker.
    let deadline = Instant::now() + Duration::from_secs(30);
    let job = loop {
        let jobs = admin_jobs(&base, "running").await;
        if let Some(j) = job_of(&jobs, &running).filter(|j| j["worker"].is_string()) {
            break j.clone();
        }
        assert!(Instant::now() < deadline, "no running job: {jobs:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(
        (job["title"].as_str(), job["attempts"].as_u64()),
        (Some("slow encode"), Some(1))
    );
    let fails = admin_jobs(&base, "failed").await;
    let fail = job_of(&fails, &failed).expect("the failed job is listed");
    assert_eq!(fail["title"], bad_title);
    assert!(
        fail["last_error"].as_str().unwrap().contains("not a video"),
        "{fail}"
    );
    let all = json(
        http()
            .get(format!("{base}/api/v1/admin/jobs"))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(all["jobs"].as_array().unwrap().len(), 2, "{all}");
    let r = http()
        .get(format!("{base}/api/v1/admin/jobs?state=lost"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let running_job = job["id"].as_str().unwrap();
    assert_eq!(
        post_status(&format!("{base}/api/v1/admin/jobs/{running_job}/retry")).await,
        409
    );
    let unknown = "0123456789abcdef0123456789abcdef";
    assert_eq!(
        post_status(&format!("{base}/api/v1/admin/jobs/{unknown}/retry")).await,
        404
    );
    assert_eq!(
        post_status(&format!("{base}/api/v1/admin/jobs/nonsense/retry")).await,
        404
    );

    let (b, r, f) = (base.clone(), running.clone(), failed.clone());
    let out = tokio::task::spawn_blocking(move || {
        node_script(
            "admin.mjs",
            &[
                "--base",
                &b,
                "--running",
                &r,
                "--failed",
                &f,
                "--failed-title",
                bad_title,
            ],
        )
    })
    .await
    .unwrap();
    eprintln!("{out}");

    // Queued behind the slow job, attempts reset, its video queued again.
    let queued = admin_jobs(&base, "queued").await;
    let again = job_of(&queued, &failed).unwrap_or_else(|| panic!("not queued: {queued:?}"));
    assert_eq!(
        (again["attempts"].as_u64(), &again["last_error"]),
        (Some(0), &Value::Null)
    );
    let v = video(&base, &failed).await;
    assert_eq!(
        (v["status"].as_str(), &v["error"]),
        (Some("queued"), &Value::Null),
        "{v}"
    );
    assert_eq!(
        post_status(&format!(
            "{base}/api/v1/admin/jobs/{}/retry",
            again["id"].as_str().unwrap()
        ))
        .await,
        409
    );

    // Deleting the slow video frees the worker; the retried job runs, with a fresh attempt.
    let r = http()
        .delete(format!("{base}/api/v1/videos/{running}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    let v = wait_done(&base, &failed, Duration::from_secs(60)).await;
    assert_eq!(v["status"], "failed", "{v}");
    let fails = admin_jobs(&base, "failed").await;
    let fail = job_of(&fails, &failed).expect("failed again");
    assert_eq!(fail["attempts"].as_u64(), Some(1), "{fail}");

    // The admin API sits behind the API token like the rest of the API.
    let guarded = Server::start(&[("OXCAST_API_TOKEN", "s3cret")]);
    let url = format!("{}/api/v1/admin/jobs", guarded.base);
    assert_eq!(http().get(&url).send().await.unwrap().status(), 401);
    let r = http().get(&url).bearer_auth("s3cret").send().await.unwrap();
    assert_eq!(r.status(), 200);
    let url = format!("{}/api/v1/admin/jobs/{unknown}/retry", guarded.base);
    assert_eq!(post_status(&url).await, 401);
}

//! Scale-out on real engines: several processes of each role on one PostgreSQL and one bucket
//! (SeaweedFS), workers that are killed or stopped mid-encode, and the database and the bucket
//! going away for a while.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::*;
use oxcast_testkit::{postgres, s3};

/// Which of `workers` runs the job of `video`, from their logs.
fn owner(workers: &[Server], video: &str) -> Option<usize> {
    workers.iter().position(|w| {
        w.log()
            .lines()
            .any(|l| l.contains(video) && l.contains("processing"))
    })
}

async fn wait_progress(base: &str, id: &str, at_least: f64) {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let v = video(base, id).await;
        if v["status"] == "processing" && v["progress"].as_f64().unwrap_or(0.0) >= at_least {
            return;
        }
        assert!(v["status"] != "ready", "{id} finished before {at_least}");
        assert!(Instant::now() < deadline, "{id} stuck: {v}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn decodes(base: &str, id: &str) {
    for m in ["master.m3u8", "manifest.mpd"] {
        let url = format!("{base}/v/{id}/{m}");
        let errs = tokio::task::spawn_blocking(move || decode_errors(&url))
            .await
            .unwrap();
        assert_eq!(errs, "", "{m} of {id}");
    }
}

async fn upload_bytes_received(base: &str) -> u64 {
    metrics(base)
        .await
        .lines()
        .find(|l| l.starts_with("oxcast_upload_bytes_total"))
        .and_then(|l| l.split_whitespace().last())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread")]
async fn two_apis_and_two_workers_share_one_database_and_one_bucket() {
    let bucket = s3::bucket();
    let db = postgres::database();
    let env = deployment(db.clone(), &bucket);
    let api1 = start_roles(&env, "api");
    let api2 = start_roles(&env, "api");
    let _w1 = start_roles(&env, "worker");
    let _w2 = start_roles(&env, "worker");
    let dir = tempfile::tempdir().unwrap();

    // Created on one API node, completed on the other; the bytes go straight to the bucket.
    let src = make_video(dir.path(), "a.mp4", 640, 360, 4, true);
    let id = upload_via(&api1.base, &api2.base, &src, "across nodes").await;
    wait_ready(&api1.base, &id).await;
    decodes(&api2.base, &id).await;

    // Ten uploads completed at once, half on each node: ten jobs, each run once.
    let small = make_video(dir.path(), "b.mp4", 320, 180, 2, true);
    let mut set = tokio::task::JoinSet::new();
    for i in 0..10 {
        let (a, b) = if i % 2 == 0 {
            (api1.base.clone(), api2.base.clone())
        } else {
            (api2.base.clone(), api1.base.clone())
        };
        let small = small.clone();
        set.spawn(async move { upload_via(&a, &b, &small, &format!("burst {i}")).await });
    }
    let ids: Vec<String> = set.join_all().await;
    for id in &ids {
        wait_ready(&api1.base, id).await;
    }
    let jobs = postgres_rows(&db, "SELECT COUNT(*), MAX(attempts) FROM jobs").await;
    assert_eq!(jobs, (11, 1), "(jobs, most attempts of one job)");
    for api in [&api1, &api2] {
        assert_eq!(
            upload_bytes_received(&api.base).await,
            0,
            "an API node carried part bytes"
        );
    }

    // Deleted through one API node, the other stops playing it within its cache's second
    // (origin::cache::READY_TTL); its cached playlist is not served past that.
    let master = format!("{}/v/{id}/master.m3u8", api2.base);
    assert_eq!(http().get(&master).send().await.unwrap().status(), 200);
    let r = http()
        .delete(format!("{}/api/v1/videos/{id}", api1.base))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    let deleted = Instant::now();
    loop {
        let status = http().get(&master).send().await.unwrap().status();
        if status == 404 {
            break;
        }
        assert_eq!(status, 200, "before it stops, it plays");
        assert!(
            deleted.elapsed() < Duration::from_millis(2500),
            "the other API node still serves a deleted video"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// `SELECT COUNT(*), MAX(x)`-style pair from the deployment's database.
async fn postgres_rows(url: &str, sql: &str) -> (i64, i64) {
    use sqlx::Connection;
    let mut conn = sqlx::PgConnection::connect(url).await.unwrap();
    sqlx::query_as(sql).fetch_one(&mut conn).await.unwrap()
}

/// Like `upload`, but created on `create_on` and completed on `complete_on`.
async fn upload_via(create_on: &str, complete_on: &str, file: &Path, title: &str) -> String {
    let data = std::fs::read(file).unwrap();
    let up = create_upload(create_on, "v.mp4", data.len() as u64, title).await;
    let part_size = up["part_size"].as_u64().unwrap() as usize;
    let mut parts = Vec::new();
    for p in up["parts"].as_array().unwrap() {
        let n = p["part_number"].as_u64().unwrap() as usize;
        let url = p["url"].as_str().unwrap();
        assert!(url.starts_with("http"), "not a presigned bucket URL: {url}");
        let chunk = data[(n - 1) * part_size..(n * part_size).min(data.len())].to_vec();
        let r = put(create_on, url, chunk).await;
        assert_eq!(r.status(), 200, "part {n}");
        let etag = r.headers()["etag"].to_str().unwrap().to_string();
        parts.push(serde_json::json!({"part_number": n, "etag": etag}));
    }
    let upload_id = up["upload_id"].as_str().unwrap();
    let r = http()
        .post(format!("{complete_on}/api/v1/uploads/{upload_id}/complete"))
        .json(&serde_json::json!({ "parts": parts }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202, "complete");
    up["video_id"].as_str().unwrap().to_string()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_worker_killed_or_stopped_mid_encode_costs_only_its_lease() {
    let bucket = s3::bucket();
    let env = deployment(postgres::database(), &bucket);
    let api = start_roles(&env, "api");
    let mut workers = vec![
        start_roles(&env, "worker"),
        start_roles(&env, "worker"),
        start_roles(&env, "worker"),
    ];
    let pids: Vec<i32> = workers.iter().map(Server::pid).collect();
    let dir = tempfile::tempdir().unwrap();
    let src = make_video(dir.path(), "long.mp4", 854, 480, 20, true);

    // SIGKILL: another worker retries after the visibility timeout; the bucket ends up holding
    // exactly the published objects, nothing of the dead attempt.
    let id = upload(&api.base, &src, "killed", 4).await;
    wait_progress(&api.base, &id, 0.3).await;
    let victim = owner(&workers, &id).expect("a worker runs the job");
    let killed = workers[victim].pid();
    workers[victim].kill9();
    wait_ready(&api.base, &id).await;
    decodes(&api.base, &id).await;
    let stored = list_bucket(&bucket, &format!("videos/{id}/"));
    let published = referenced(&api.base, &id).await;
    assert_eq!(
        stored, published,
        "the bucket holds other objects than the published ones"
    );

    // SIGTERM (a spot reclaim notice): the job is handed back and another worker has it within
    // two seconds, long before the lease would have run out; the stopped one exits cleanly.
    let id = upload(&api.base, &src, "stopped", 4).await;
    wait_progress(&api.base, &id, 0.3).await;
    let victim = owner(&workers, &id).expect("a worker runs the job");
    let others: Vec<usize> = (0..workers.len())
        .filter(|&i| i != victim && workers[i].running())
        .collect();
    let stopped_at = Instant::now();
    let stopped = workers[victim].pid();
    let status = workers[victim].terminate();
    assert!(status.success(), "worker exit on SIGTERM: {status}");
    assert!(
        stopped_at.elapsed() < Duration::from_secs(5),
        "SIGTERM took {:?}",
        stopped_at.elapsed()
    );
    loop {
        let taken = others.iter().any(|&i| {
            workers[i]
                .log()
                .lines()
                .any(|l| l.contains(&id) && l.contains("processing"))
        });
        if taken {
            break;
        }
        assert!(
            stopped_at.elapsed() < Duration::from_secs(2),
            "no worker took the handed-back job within 2 s"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let v = wait_ready(&api.base, &id).await;
    assert!(v["error"].is_null(), "{v}");

    // The admin's process list: the killed worker falls silent (its heartbeat ages past 15 s),
    // the stopped one said goodbye and is gone, the others and the API node are up.
    let pid_of = |n: &serde_json::Value| n["pid"].as_i64().unwrap() as i32;
    let deadline = Instant::now() + Duration::from_secs(30);
    let nodes = loop {
        let list = json(
            http()
                .get(format!("{}/api/v1/admin/nodes", api.base))
                .send()
                .await
                .unwrap(),
        )
        .await;
        let nodes = list["nodes"].as_array().unwrap().clone();
        if nodes
            .iter()
            .any(|n| pid_of(n) == killed && n["status"] == "silent")
        {
            break nodes;
        }
        assert!(
            Instant::now() < deadline,
            "the killed worker never fell silent: {list}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    let status = |pid: i32| {
        nodes.iter().find(|n| pid_of(n) == pid).map(|n| {
            (
                n["roles"].as_str().unwrap().to_string(),
                n["status"].as_str().unwrap().to_string(),
            )
        })
    };
    assert_eq!(
        status(api.pid()),
        Some(("api".into(), "up".into())),
        "{nodes:?}"
    );
    for &pid in &pids {
        let want = if pid == killed {
            Some(("worker".into(), "silent".into()))
        } else if pid == stopped {
            None
        } else {
            Some(("worker".into(), "up".into()))
        };
        assert_eq!(status(pid), want, "worker {pid}: {nodes:?}");
    }
}

fn list_bucket(bucket: &s3::S3Bucket, prefix: &str) -> std::collections::BTreeSet<String> {
    bucket
        .list(prefix)
        .into_iter()
        .map(|k| k.strip_prefix(prefix).unwrap_or(&k).to_string())
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn the_database_restarting_and_the_bucket_stopping_for_20_s_lose_nothing() {
    let pg = postgres::private();
    let s3server = s3::private();
    let bucket = s3server.bucket();
    let env = deployment(pg.database(), &bucket);
    let api = start_roles(&env, "api");
    let worker = start_roles(&env, "worker");
    let dir = tempfile::tempdir().unwrap();
    let src = make_video(dir.path(), "outage.mp4", 854, 480, 16, true);

    let id = upload(&api.base, &src, "db restart", 4).await;
    wait_progress(&api.base, &id, 0.2).await;
    pg.stop();
    tokio::time::sleep(Duration::from_secs(3)).await;
    pg.start();
    wait_ready(&api.base, &id).await;
    decodes(&api.base, &id).await;

    // The bucket goes away as soon as the upload is complete: the worker cannot even fetch the
    // source for 20 s, far longer than its retries; the job must wait, not use up its attempts.
    let id = upload(&api.base, &src, "bucket outage", 4).await;
    s3server.stop();
    tokio::time::sleep(Duration::from_secs(20)).await;
    s3server.start();
    wait_ready(&api.base, &id).await;
    decodes(&api.base, &id).await;
    assert!(
        api.running() && worker.running(),
        "a process died during the outages"
    );
    assert!(!worker.log().contains("panicked"), "{}", worker.log());
    let v = video(&api.base, &id).await;
    assert!(v["error"].is_null(), "{v}");
}

#[tokio::test(flavor = "multi_thread")]
async fn unreachable_engines_and_unknown_roles_are_clear_errors() {
    let run = |env: &[(&str, &str)], args: &[&str]| {
        let dir = tempfile::tempdir().unwrap();
        let out = std::process::Command::new(BIN)
            .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
            .arg(dir.path())
            .args(args)
            .envs(env.iter().copied())
            .env("RUST_BACKTRACE", "0")
            .output()
            .unwrap();
        (
            out.status,
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (status, err) = run(
        &[
            (
                "OXCAST_DATABASE_URL",
                "postgres://ox:hunter2@127.0.0.1:1/ox",
            ),
            ("OXCAST_SIGNING_KEY", "k"),
        ],
        &[],
    );
    assert!(!status.success());
    assert!(
        err.contains("127.0.0.1:1") && !err.contains("hunter2"),
        "{err}"
    );
    assert!(!err.contains("panicked"), "{err}");

    let (status, err) = run(&[], &["--roles", "api,encoder"]);
    assert!(!status.success());
    assert!(err.contains("unknown role \"encoder\""), "{err}");

    let (status, err) = run(&[], &["--roles", "api"]);
    assert!(!status.success());
    assert!(err.contains("signing_key"), "{err}");
}

//! Races between nodes sharing one database: several workers claiming, several API nodes
//! completing the same or different uploads, parts re-sent at once. Each runs on SQLite and on
//! PostgreSQL, with real parallel connections.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use oxcast_base::{JobId, UploadId};
use tokio::task::JoinSet;

use crate::testing::each_backend;
use crate::{Backend, Db, JobOutcome, NewUpload, PartRecorded, UploadPart, Video, VideoStatus};

/// An open upload of one 1-byte part, stored with ETag "e".
async fn uploaded(db: &Db) -> (Video, UploadId) {
    let (video, up) = db
        .create_upload(
            &NewUpload {
                title: "t",
                filename: "f",
                size: 1,
                part_size: 1,
                expires_at: 1_000_000,
            },
            0,
        )
        .await
        .unwrap();
    db.put_part(up.id, &part("e", None), 0).await.unwrap();
    (video, up.id)
}

fn part(etag: &str, object: Option<String>) -> UploadPart {
    UploadPart {
        part_number: 1,
        size: 1,
        etag: etag.into(),
        object,
    }
}

async fn complete(db: &Db, up: UploadId) -> Video {
    db.complete_upload(up, &[(1, "e".into())], 3, 1)
        .await
        .unwrap()
        .unwrap()
}

async fn count(db: &Db, sql: &str) -> i64 {
    sqlx::query_scalar(sql).fetch_one(db.pool()).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_claimers_never_lease_the_same_job() {
    each_backend(|db| async move {
        const JOBS: usize = 40;
        for _ in 0..JOBS {
            let (_, up) = uploaded(&db).await;
            complete(&db, up).await;
        }
        let mut workers = JoinSet::new();
        for w in 0..6 {
            let db = db.clone();
            workers.spawn(async move {
                let mut mine = Vec::new();
                while let Some(job) = db.claim_job(&format!("w{w}"), 10, 60_000).await.unwrap() {
                    assert!(db.finish_job(&job, &JobOutcome::Done, 11).await.unwrap());
                    mine.push(job.id);
                }
                mine
            });
        }
        let mut seen: HashMap<JobId, usize> = HashMap::new();
        let mut busy_workers = 0;
        while let Some(mine) = workers.join_next().await {
            let mine = mine.unwrap();
            busy_workers += usize::from(!mine.is_empty());
            for id in mine {
                *seen.entry(id).or_default() += 1;
            }
        }
        assert_eq!(seen.len(), JOBS, "every job claimed");
        assert!(seen.values().all(|&n| n == 1), "claimed twice: {seen:?}");
        assert!(busy_workers > 1, "the claims did not overlap at all");
        let done = count(
            &db,
            "SELECT COUNT(*) FROM jobs WHERE state = 'done' AND attempts = 1",
        );
        assert_eq!(done.await, JOBS as i64);
    })
    .await;
}

/// A claimer skips a job whose row another transaction holds, rather than waiting for it.
#[tokio::test]
async fn postgres_claims_skip_locked_rows() {
    let db = crate::testing::postgres().await;
    assert_eq!(db.backend(), Backend::Postgres);
    for _ in 0..2 {
        let (_, up) = uploaded(&db).await;
        complete(&db, up).await;
    }
    let mut holder = db.pool().begin().await.unwrap();
    let held: String =
        sqlx::query_scalar("SELECT id FROM jobs ORDER BY run_at, created_at LIMIT 1 FOR UPDATE")
            .fetch_one(&mut *holder)
            .await
            .unwrap();
    let claimed = tokio::time::timeout(Duration::from_secs(3), db.claim_job("w", 10, 60_000))
        .await
        .expect("the claim waited on a locked row instead of skipping it")
        .unwrap()
        .expect("the unlocked job");
    assert_ne!(claimed.id.to_string(), held);
    holder.rollback().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn ten_uploads_completed_at_once_enqueue_ten_jobs() {
    each_backend(|db| async move {
        let mut ups = Vec::new();
        for _ in 0..10 {
            ups.push(uploaded(&db).await.1);
        }
        let mut api_nodes = JoinSet::new();
        for up in ups {
            let db = db.clone();
            api_nodes.spawn(async move { complete(&db, up).await });
        }
        while let Some(video) = api_nodes.join_next().await {
            assert_eq!(video.unwrap().status, VideoStatus::Queued);
        }
        assert_eq!(count(&db, "SELECT COUNT(*) FROM jobs").await, 10);
        let queued = count(&db, "SELECT COUNT(*) FROM jobs WHERE state = 'queued'");
        assert_eq!(queued.await, 10);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn one_upload_completed_at_once_by_many_nodes_enqueues_one_job() {
    each_backend(|db| async move {
        let (video, up) = uploaded(&db).await;
        let mut api_nodes = JoinSet::new();
        for _ in 0..8 {
            let db = db.clone();
            api_nodes.spawn(async move { complete(&db, up).await });
        }
        while let Some(v) = api_nodes.join_next().await {
            let v = v.unwrap();
            assert_eq!((v.id, v.status), (video.id, VideoStatus::Queued));
        }
        assert_eq!(count(&db, "SELECT COUNT(*) FROM jobs").await, 1);
    })
    .await;
}

/// Clients retrying one part at once: one record wins, and every other PUT's object is named as
/// replaced exactly once, so none is leaked or removed twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn one_part_recorded_at_once_keeps_one_record_and_names_each_replaced_object() {
    each_backend(|db| async move {
        let (_, up) = uploaded(&db).await;
        let mut clients = JoinSet::new();
        for i in 0..8 {
            let db = db.clone();
            clients.spawn(async move {
                let p = part(&format!("e{i}"), Some(format!("obj{i}")));
                db.put_part(up, &p, 2).await.unwrap()
            });
        }
        let mut replaced = Vec::new();
        while let Some(r) = clients.join_next().await {
            match r.unwrap() {
                PartRecorded::Stored {
                    replaced: Some(old),
                } => replaced.push(old.object),
                other => panic!("every PUT replaces an earlier record: {other:?}"),
            }
        }
        let parts = db.parts(up).await.unwrap();
        assert_eq!(parts.len(), 1);
        let mut objects: Vec<Option<String>> = replaced;
        objects.push(parts[0].object.clone());
        let distinct: HashSet<_> = objects.iter().collect();
        assert_eq!(distinct.len(), objects.len(), "replaced twice: {objects:?}");
        let expected: HashSet<Option<String>> = (0..8)
            .map(|i| Some(format!("obj{i}")))
            .chain([None])
            .collect();
        assert_eq!(objects.into_iter().collect::<HashSet<_>>(), expected);
    })
    .await;
}

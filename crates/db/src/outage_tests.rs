//! PostgreSQL that is unreachable at start, or restarts under a running node.

use std::time::{Duration, Instant};

use crate::{Db, Error, NewUpload, CONNECT_TIMEOUT};

#[tokio::test]
async fn an_unreachable_server_fails_fast_naming_the_address_but_not_the_password() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("postgres://ox:hunter2@127.0.0.1:{port}/oxcast?password=hunter2");
    let started = Instant::now();
    let err = Db::connect(&url).await.unwrap_err();
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "took {:?}",
        started.elapsed()
    );
    assert!(matches!(err, Error::Connect { .. }), "{err:?}");
    let msg = err.to_string();
    assert!(msg.contains(&format!("127.0.0.1:{port}")), "{msg}");
    assert!(!format!("{msg} {err:?}").contains("hunter2"), "{msg}");
}

/// A server that accepts the TCP connection and never answers (a hung host, a black hole
/// behind a proxy) costs `CONNECT_TIMEOUT`, not the minutes TCP would wait.
#[tokio::test]
async fn a_silent_server_times_out() {
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = silent.local_addr().unwrap();
    let url = format!("postgres://ox:hunter2@{addr}/oxcast");
    let started = Instant::now();
    let err = Db::connect(&url).await.unwrap_err();
    let took = started.elapsed();
    assert!(took >= CONNECT_TIMEOUT && took < CONNECT_TIMEOUT + Duration::from_secs(3));
    let msg = err.to_string();
    assert!(
        msg.contains(&addr.to_string()) && !msg.contains("hunter2"),
        "{msg}"
    );
    drop(silent);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_pool_recovers_when_postgres_restarts() {
    let server = oxcast_testkit::postgres::private();
    let db = Db::connect(&server.database()).await.unwrap();
    let new = NewUpload {
        title: "before",
        filename: "f",
        size: 1,
        part_size: 1,
        expires_at: 9,
    };
    let (video, _) = db.create_upload(&new, 0).await.unwrap();

    // A crash-like stop kills every pooled connection; a query issued while the server is
    // down waits for it (the pool retries refused connections) and succeeds once it is back.
    server.stop();
    let during = tokio::spawn({
        let db = db.clone();
        async move { db.video(video.id).await }
    });
    tokio::time::sleep(Duration::from_millis(500)).await;
    server.start();
    let seen = during.await.unwrap().expect("query across the restart");
    assert_eq!(seen.map(|v| v.title).as_deref(), Some("before"));

    // Connections that died while idle are replaced, not handed out.
    for _ in 0..20 {
        db.ping().await.expect("query after the restart");
    }
    let (after, _) = db.create_upload(&new, 1).await.unwrap();
    assert!(db.video(after.id).await.unwrap().is_some());

    // Down for longer than the timeout: queries fail with an error, and work again after.
    server.stop();
    assert!(db.ping().await.is_err());
    server.start();
    db.ping().await.expect("query after the second restart");
}

//! A change signal between processes: PostgreSQL `LISTEN`/`NOTIFY` when the metadata lives
//! there, an in-process broadcast on the embedded default (where every role is one process).
//!
//! Signals are hints, never the data: a listener that may have missed some (it lagged, or its
//! connection to the server was lost and re-made) gets [`Received::Missed`] and re-reads what it
//! watches. That is why no new infrastructure is needed: the objects themselves are in the
//! bucket, and the signal only says when to look.

use std::time::Duration;

use sqlx::postgres::PgListener;
use tokio::sync::broadcast;

use crate::{Backend, Db, Error, Result};

/// `NOTIFY` payloads are limited to 8000 bytes by PostgreSQL; ours are short keys.
pub const MAX_PAYLOAD: usize = 1000;

/// One signal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    pub topic: String,
    pub payload: String,
}

/// What a listener got.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Received {
    Change(Change),
    /// Some signals may have been lost since the last one: re-read everything watched.
    Missed,
}

/// The in-process side, shared by every clone of a [`Db`].
#[derive(Debug, Clone)]
pub(crate) struct LocalChanges(broadcast::Sender<Change>);

impl Default for LocalChanges {
    fn default() -> Self {
        // Listeners read promptly; one that falls this far behind gets `Missed`.
        Self(broadcast::channel(1024).0)
    }
}

/// A subscription to some topics.
pub struct Changes {
    topics: Vec<String>,
    inner: Inner,
}

enum Inner {
    Local(broadcast::Receiver<Change>),
    Pg {
        url: String,
        listener: Option<PgListener>,
    },
}

fn valid_topic(t: &str) -> bool {
    !t.is_empty() && t.len() <= 63 && t.bytes().all(|b| b.is_ascii_lowercase() || b == b'_')
}

impl Db {
    /// Signals `payload` on `topic` to every listener, in this process and (on PostgreSQL) in
    /// every other. Topics are lower-case identifiers.
    pub async fn notify(&self, topic: &str, payload: &str) -> Result<()> {
        if !valid_topic(topic) || payload.len() > MAX_PAYLOAD {
            return Err(Error::Invalid(format!(
                "notify: topic {topic:?} must be a lower-case identifier and the payload at \
                 most {MAX_PAYLOAD} bytes ({} given)",
                payload.len()
            )));
        }
        match self.backend {
            Backend::Sqlite => {
                // No receiver is not an error: nobody is watching.
                let _ = self.changes.0.send(Change {
                    topic: topic.into(),
                    payload: payload.into(),
                });
            }
            Backend::Postgres => {
                sqlx::query("SELECT pg_notify($1, $2)")
                    .bind(topic)
                    .bind(payload)
                    .execute(&self.pool)
                    .await?;
            }
        }
        Ok(())
    }

    /// Listens on `topics`. On PostgreSQL this holds one connection of its own (outside the
    /// pool), made on the first [`Changes::recv`].
    pub fn changes(&self, topics: &[&str]) -> Changes {
        let topics = topics
            .iter()
            .filter(|t| valid_topic(t))
            .map(|t| t.to_string())
            .collect();
        let inner = match self.backend {
            Backend::Sqlite => Inner::Local(self.changes.0.subscribe()),
            Backend::Postgres => Inner::Pg {
                url: self.url.to_string(),
                listener: None,
            },
        };
        Changes { topics, inner }
    }
}

impl Changes {
    /// The next signal. Never fails: a lost or unreachable server is reported as
    /// [`Received::Missed`] (after a pause, so a down server is not hammered), and the
    /// connection is made again on the next call.
    pub async fn recv(&mut self) -> Received {
        match &mut self.inner {
            Inner::Local(rx) => loop {
                match rx.recv().await {
                    Ok(c) if self.topics.contains(&c.topic) => return Received::Change(c),
                    Ok(_) => continue,
                    Err(broadcast::error::RecvError::Lagged(_)) => return Received::Missed,
                    // The sender lives in the Db this came from; gone means shutting down.
                    Err(broadcast::error::RecvError::Closed) => {
                        std::future::pending::<()>().await;
                    }
                }
            },
            Inner::Pg { url, listener } => {
                if listener.is_none() {
                    match connect(url, &self.topics).await {
                        Ok(l) => {
                            *listener = Some(l);
                            // Whatever was signalled before this connection is unknown.
                            return Received::Missed;
                        }
                        Err(e) => {
                            tracing::warn!(error = %e, "cannot listen for changes; retrying");
                            tokio::time::sleep(Duration::from_secs(1)).await;
                            return Received::Missed;
                        }
                    }
                }
                let l = listener.as_mut().expect("connected above");
                match l.try_recv().await {
                    Ok(Some(n)) => Received::Change(Change {
                        topic: n.channel().to_string(),
                        payload: n.payload().to_string(),
                    }),
                    // The connection was lost; sqlx re-makes it on the next call.
                    Ok(None) => Received::Missed,
                    Err(e) => {
                        tracing::warn!(error = %e, "lost the change listener; reconnecting");
                        *listener = None;
                        tokio::time::sleep(Duration::from_millis(500)).await;
                        Received::Missed
                    }
                }
            }
        }
    }
}

async fn connect(url: &str, topics: &[String]) -> std::result::Result<PgListener, sqlx::Error> {
    let connecting = async {
        let mut l = PgListener::connect(url).await?;
        let names: Vec<&str> = topics.iter().map(String::as_str).collect();
        l.listen_all(names).await?;
        Ok(l)
    };
    match tokio::time::timeout(crate::CONNECT_TIMEOUT, connecting).await {
        Ok(r) => r,
        Err(_) => Err(sqlx::Error::PoolTimedOut),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn next_change(c: &mut Changes) -> Change {
        loop {
            match tokio::time::timeout(Duration::from_secs(10), c.recv())
                .await
                .expect("a signal within 10 s")
            {
                Received::Change(c) => return c,
                Received::Missed => continue,
            }
        }
    }

    async fn signals_reach_listeners_of_their_topic_only(db: Db, other: Db) {
        let mut a = other.changes(&["live_parts"]);
        let mut b = other.changes(&["something_else"]);
        // The PostgreSQL listener connects on its first recv: wait until it reports that.
        if db.backend() == Backend::Postgres {
            assert_eq!(a.recv().await, Received::Missed);
            assert_eq!(b.recv().await, Received::Missed);
        }
        db.notify("live_parts", "s1/720p").await.unwrap();
        db.notify("something_else", "x").await.unwrap();
        db.notify("live_parts", "s1/360p").await.unwrap();
        assert_eq!(next_change(&mut a).await.payload, "s1/720p");
        assert_eq!(next_change(&mut a).await.payload, "s1/360p");
        let c = next_change(&mut b).await;
        assert_eq!(
            (c.topic.as_str(), c.payload.as_str()),
            ("something_else", "x")
        );
    }

    #[tokio::test]
    async fn in_process_on_sqlite() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}/db.sqlite?mode=rwc", dir.path().display());
        let db = Db::connect(&url).await.unwrap();
        signals_reach_listeners_of_their_topic_only(db.clone(), db).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn across_connections_on_postgres() {
        let url = oxcast_testkit::postgres::database();
        // Two handles, as two processes would have.
        let db = Db::connect(&url).await.unwrap();
        let other = Db::connect(&url).await.unwrap();
        signals_reach_listeners_of_their_topic_only(db, other).await;
    }

    #[tokio::test]
    async fn bad_topics_and_oversized_payloads_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}/db.sqlite?mode=rwc", dir.path().display());
        let db = Db::connect(&url).await.unwrap();
        for topic in ["", "Live", "live;drop", &"x".repeat(64)] {
            assert!(db.notify(topic, "p").await.is_err(), "{topic:?}");
        }
        let err = db
            .notify("live", &"p".repeat(MAX_PAYLOAD + 1))
            .await
            .unwrap_err();
        assert!(err.to_string().contains("at most 1000 bytes"), "{err}");
    }
}

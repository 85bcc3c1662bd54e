//! The processes of a deployment, from their heartbeats: which roles run where, how loaded they
//! are, and which have gone quiet. Running jobs are not reported but counted from the queue's
//! leases (`{node_id}:{pid}:{slot}`), so the two can never disagree.

use oxcast_base::clock::Millis;
use sqlx::any::AnyRow;
use sqlx::Row;

use crate::{Db, Result};

/// What a process says about itself every few seconds.
#[derive(Debug, Clone, PartialEq)]
pub struct NodeBeat {
    /// `{node_id}:{pid}`: the prefix of the leases its workers hold.
    pub id: String,
    pub roles: String,
    pub host: String,
    pub pid: u32,
    pub version: String,
    pub started_at: Millis,
    /// Worker slots (0 without the worker role).
    pub job_slots: u32,
    pub live_sessions: u32,
    pub live_viewers: u64,
    /// The machine's 1-minute load average.
    pub load1: f64,
    /// Where this live encoder takes relayed publishers (`host:port`); empty when it does not.
    pub relay_addr: String,
}

/// A process as the admin page lists it.
#[derive(Debug, Clone, PartialEq)]
pub struct Node {
    pub beat: NodeBeat,
    pub last_seen: Millis,
    /// Jobs leased by its workers right now.
    pub jobs_running: u64,
}

/// Nodes silent for longer than this are forgotten.
const FORGET_MS: Millis = 24 * 3600 * 1000;

impl Db {
    /// Records a heartbeat (and forgets processes silent for a day).
    pub async fn node_beat(&self, b: &NodeBeat, now: Millis) -> Result<()> {
        sqlx::query(
            "INSERT INTO nodes (id, roles, host, pid, version, started_at, last_seen, job_slots, \
             live_sessions, live_viewers, load1, relay_addr) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12) \
             ON CONFLICT (id) DO UPDATE SET roles = $2, host = $3, version = $5, last_seen = $7, \
             job_slots = $8, live_sessions = $9, live_viewers = $10, load1 = $11, relay_addr = $12",
        )
        .bind(&b.id)
        .bind(&b.roles)
        .bind(&b.host)
        .bind(i64::from(b.pid))
        .bind(&b.version)
        .bind(b.started_at)
        .bind(now)
        .bind(i64::from(b.job_slots))
        .bind(i64::from(b.live_sessions))
        .bind(b.live_viewers as i64)
        .bind(b.load1)
        .bind(&b.relay_addr)
        .execute(&self.pool)
        .await?;
        sqlx::query("DELETE FROM nodes WHERE last_seen < $1")
            .bind(now - FORGET_MS)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// A process that stopped cleanly says so, and leaves the list at once.
    pub async fn node_gone(&self, id: &str) -> Result<()> {
        sqlx::query("DELETE FROM nodes WHERE id = $1")
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Every known process, the most recently seen first, with its running jobs.
    pub async fn nodes(&self) -> Result<Vec<Node>> {
        let rows = sqlx::query(
            "SELECT id, roles, host, pid, version, started_at, last_seen, job_slots, \
             live_sessions, live_viewers, load1, relay_addr FROM nodes ORDER BY last_seen DESC, id",
        )
        .fetch_all(&self.pool)
        .await?;
        let owners: Vec<String> =
            sqlx::query_scalar("SELECT lease_owner FROM jobs WHERE state = 'running'")
                .fetch_all(&self.pool)
                .await?;
        rows.iter()
            .map(|r| {
                let beat = beat(r)?;
                let prefix = format!("{}:", beat.id);
                let jobs_running = owners.iter().filter(|o| o.starts_with(&prefix)).count() as u64;
                Ok(Node {
                    last_seen: r.try_get("last_seen")?,
                    beat,
                    jobs_running,
                })
            })
            .collect()
    }
}

/// A live encoder that takes relayed publishers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LiveEncoder {
    /// `{node_id}:{pid}`, as it holds stream leases.
    pub id: String,
    pub relay_addr: String,
    pub live_sessions: u32,
}

impl Db {
    /// Encoders heard from since `now - fresh_ms`, the least loaded first (ties: the most
    /// recently seen).
    pub async fn live_encoders(&self, now: Millis, fresh_ms: Millis) -> Result<Vec<LiveEncoder>> {
        let rows = sqlx::query(
            "SELECT id, relay_addr, live_sessions FROM nodes \
             WHERE relay_addr <> '' AND last_seen >= $1 \
             ORDER BY live_sessions, load1, last_seen DESC, id",
        )
        .bind(now - fresh_ms)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(LiveEncoder {
                    id: r.try_get("id")?,
                    relay_addr: r.try_get("relay_addr")?,
                    live_sessions: r.try_get::<i64, _>("live_sessions")?.clamp(0, 1 << 20) as u32,
                })
            })
            .collect()
    }
}

fn beat(r: &AnyRow) -> Result<NodeBeat> {
    let int = |c: &str| -> Result<i64> { Ok(r.try_get::<i64, _>(c)?) };
    Ok(NodeBeat {
        id: r.try_get("id")?,
        roles: r.try_get("roles")?,
        host: r.try_get("host")?,
        pid: int("pid")?.clamp(0, i64::from(u32::MAX)) as u32,
        version: r.try_get("version")?,
        started_at: int("started_at")?,
        job_slots: int("job_slots")?.clamp(0, i64::from(u32::MAX)) as u32,
        live_sessions: int("live_sessions")?.clamp(0, i64::from(u32::MAX)) as u32,
        live_viewers: int("live_viewers")?.max(0) as u64,
        load1: r.try_get("load1")?,
        relay_addr: r.try_get("relay_addr")?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing;

    fn beat(id: &str, roles: &str) -> NodeBeat {
        NodeBeat {
            id: id.into(),
            roles: roles.into(),
            host: "box-1".into(),
            pid: 4242,
            version: "0.1.0".into(),
            started_at: 1_000,
            job_slots: 2,
            live_sessions: 0,
            live_viewers: 0,
            load1: 0.5,
            relay_addr: String::new(),
        }
    }

    #[tokio::test]
    async fn heartbeats_list_processes_with_the_jobs_their_workers_lease() {
        testing::each_backend(|db| async move {
            db.node_beat(&beat("aaaa:1", "worker"), 10_000)
                .await
                .unwrap();
            db.node_beat(&beat("bbbb:2", "api,live"), 11_000)
                .await
                .unwrap();
            let mut again = beat("aaaa:1", "worker");
            again.load1 = 1.75;
            db.node_beat(&again, 12_000).await.unwrap();
            testing::queued_video(&db, 3).await;
            let job = db.claim_job("aaaa:1:0", 12_500, 30_000).await.unwrap();
            assert!(job.is_some());
            let nodes = db.nodes().await.unwrap();
            let ids: Vec<&str> = nodes.iter().map(|n| n.beat.id.as_str()).collect();
            assert_eq!(ids, ["aaaa:1", "bbbb:2"], "most recently seen first");
            assert_eq!((nodes[0].last_seen, nodes[0].beat.load1), (12_000, 1.75));
            assert_eq!((nodes[0].jobs_running, nodes[1].jobs_running), (1, 0));
            assert_eq!(nodes[1].beat.roles, "api,live");
            // A clean stop leaves at once; a silent node is forgotten after a day.
            db.node_gone("bbbb:2").await.unwrap();
            db.node_beat(&beat("cccc:3", "worker"), 12_000 + FORGET_MS + 1)
                .await
                .unwrap();
            let ids: Vec<String> = db
                .nodes()
                .await
                .unwrap()
                .into_iter()
                .map(|n| n.beat.id)
                .collect();
            assert_eq!(ids, ["cccc:3"]);
        })
        .await;
    }

    #[tokio::test]
    async fn encoders_are_the_fresh_relay_nodes_least_loaded_first() {
        testing::each_backend(|db| async move {
            let enc = |id: &str, addr: &str, sessions: u32| {
                let mut b = beat(id, "live");
                b.relay_addr = addr.into();
                b.live_sessions = sessions;
                b
            };
            db.node_beat(&enc("a:1", "10.0.0.1:1", 3), 10_000)
                .await
                .unwrap();
            db.node_beat(&enc("b:2", "10.0.0.2:1", 1), 10_000)
                .await
                .unwrap();
            db.node_beat(&enc("c:3", "10.0.0.3:1", 0), 4_000)
                .await
                .unwrap();
            db.node_beat(&beat("d:4", "api"), 10_000).await.unwrap();
            let list = db.live_encoders(11_000, 5_000).await.unwrap();
            let ids: Vec<&str> = list.iter().map(|e| e.id.as_str()).collect();
            assert_eq!(ids, ["b:2", "a:1"], "c is stale, d is no encoder");
            assert_eq!(list[0].relay_addr, "10.0.0.2:1");
            assert_eq!(list[0].live_sessions, 1);
        })
        .await;
    }
}

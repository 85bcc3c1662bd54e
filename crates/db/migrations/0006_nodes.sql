-- Every process of a deployment, as its last heartbeat described it: the admin page's view of
-- workers and live encoders. A row is the process (`{node_id}:{pid}`), so a restart is a new row
-- and the old one ages out.
CREATE TABLE nodes (
    id TEXT PRIMARY KEY,
    roles TEXT NOT NULL,
    host TEXT NOT NULL,
    pid BIGINT NOT NULL,
    version TEXT NOT NULL,
    started_at BIGINT NOT NULL,
    last_seen BIGINT NOT NULL,
    job_slots BIGINT NOT NULL,
    live_sessions BIGINT NOT NULL,
    live_viewers BIGINT NOT NULL,
    load1 DOUBLE PRECISION NOT NULL
);

-- Which live node runs a stream now: one at a time. A lease expires unless renewed, and each
-- change of hands bumps the epoch, so a node that was paused past its lease can tell it lost it.
CREATE TABLE live_leases (
    stream_id TEXT PRIMARY KEY REFERENCES live_streams(id) ON DELETE CASCADE,
    holder TEXT NOT NULL,
    epoch BIGINT NOT NULL,
    expires_at BIGINT NOT NULL
);

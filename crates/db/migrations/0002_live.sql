-- Live streams and their sessions. A session's recording is an ordinary video row.
CREATE TABLE live_streams (
    id         TEXT PRIMARY KEY,
    title      TEXT NOT NULL,
    stream_key TEXT NOT NULL,
    created_at BIGINT NOT NULL
);
CREATE UNIQUE INDEX live_streams_key ON live_streams (stream_key);

CREATE TABLE live_sessions (
    id         TEXT PRIMARY KEY,
    stream_id  TEXT NOT NULL REFERENCES live_streams (id) ON DELETE CASCADE,
    video_id   TEXT NOT NULL REFERENCES videos (id) ON DELETE CASCADE,
    status     TEXT NOT NULL,
    started_at BIGINT NOT NULL,
    ended_at   BIGINT
);
CREATE INDEX live_sessions_stream ON live_sessions (stream_id, started_at);

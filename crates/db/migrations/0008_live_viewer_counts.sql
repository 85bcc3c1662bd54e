-- Viewers of a live stream counted by API nodes other than the one encoding it: each reports
-- its count every few seconds, and the encoder's node adds the fresh ones to its own.
CREATE TABLE live_viewer_counts (
    node TEXT NOT NULL,
    stream_id TEXT NOT NULL REFERENCES live_streams(id) ON DELETE CASCADE,
    viewers BIGINT NOT NULL,
    at BIGINT NOT NULL,
    PRIMARY KEY (node, stream_id)
);

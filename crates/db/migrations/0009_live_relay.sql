-- Live across machines: ingest nodes relay publishers to live encoders, and a stream moves to
-- another encoder when its encoder is lost.
--
-- Where a live encoder takes relayed publishers (host:port; empty: not an encoder).
ALTER TABLE nodes ADD COLUMN relay_addr TEXT NOT NULL DEFAULT '';
-- When the holder last renewed, by its own clock: a lease may be taken over from a holder that
-- stopped answering only once the holder has stopped writing (it renews, or stops, well within
-- that time).
ALTER TABLE live_leases ADD COLUMN renewed_at BIGINT NOT NULL DEFAULT 0;
-- Every completed segment of a live session, written after its object is stored, so that the
-- encoder that takes a session over knows what exists without reading the segments back.
CREATE TABLE live_segments (
    session_id TEXT NOT NULL REFERENCES live_sessions(id) ON DELETE CASCADE,
    rendition TEXT NOT NULL,
    number BIGINT NOT NULL,
    epoch BIGINT NOT NULL,
    start_ticks BIGINT NOT NULL,
    ticks BIGINT NOT NULL,
    duration_s DOUBLE PRECISION NOT NULL,
    discontinuity BIGINT NOT NULL,
    pdt_ms BIGINT NOT NULL,
    bytes BIGINT NOT NULL,
    PRIMARY KEY (session_id, rendition, number)
);

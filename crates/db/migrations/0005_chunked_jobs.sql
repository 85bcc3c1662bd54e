-- Chunked encoding: a video may have several jobs of one kind (a chunk each), carrying what the
-- job must do (payload), what it made once accepted (result) and how far it is (progress).
ALTER TABLE jobs ADD COLUMN chunk BIGINT NOT NULL DEFAULT -1;
ALTER TABLE jobs ADD COLUMN payload TEXT;
ALTER TABLE jobs ADD COLUMN result TEXT;
ALTER TABLE jobs ADD COLUMN progress DOUBLE PRECISION NOT NULL DEFAULT 0;
DROP INDEX jobs_video_kind;
-- Still one job per video, kind and chunk: a retried step can never enqueue twice.
CREATE UNIQUE INDEX jobs_video_kind_chunk ON jobs (video_id, kind, chunk);

-- Uploads that go straight to an S3 bucket: the bucket's multipart upload behind each upload,
-- and the key of the object it becomes.
CREATE TABLE s3_uploads (
    upload_id    TEXT PRIMARY KEY REFERENCES uploads (id) ON DELETE CASCADE,
    object_key   TEXT NOT NULL,
    multipart_id TEXT NOT NULL
);

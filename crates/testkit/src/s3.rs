//! An S3 server (SeaweedFS) for tests (to be written).

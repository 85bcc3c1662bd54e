//! Real engines for tests, started once per test binary and shared by its tests: a PostgreSQL
//! cluster on loopback ([`postgres`]) and an S3 server, SeaweedFS ([`s3`]). Each test gets its
//! own database or bucket, so tests stay independent while paying the start-up cost once.
//!
//! `OXCAST_TEST_BACKEND=scaleout` makes the end-to-end suites run on these engines instead of
//! the embedded defaults ([`backend`]).

pub mod postgres;
pub mod s3;

/// Which engines the end-to-end suites run on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// SQLite and the local object folder: what `oxcast serve` uses with no configuration.
    Embedded,
    /// PostgreSQL and an S3 bucket.
    Scaleout,
}

/// `OXCAST_TEST_BACKEND`: `embedded` (default) or `scaleout`.
pub fn backend() -> Backend {
    match std::env::var("OXCAST_TEST_BACKEND").as_deref() {
        Ok("scaleout") => Backend::Scaleout,
        _ => Backend::Embedded,
    }
}

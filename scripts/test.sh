#!/usr/bin/env bash
# Runs every check: formatting, clippy, and the whole test suite (unit tests, and end-to-end
# tests that start the real server, ffmpeg and Chromium). Installs what is missing first.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/deps.sh --test
export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"
echo "== cargo fmt --check"
cargo fmt --all -- --check
echo "== cargo clippy"
cargo clippy --workspace --all-targets --quiet -- -D warnings
echo "== cargo test"
# End-to-end tests each start their own server and encode video; two at a time fit 2 cores.
# PostgreSQL and SeaweedFS are started by the tests themselves (crates/testkit), once per test
# binary, on free loopback ports, and stop with them.
threads=${OXCAST_TEST_THREADS:-2}
status=0
cargo test --workspace --no-fail-fast -- --test-threads "$threads" || status=$?
echo "== cargo test: the VOD and live suites again on PostgreSQL + S3"
# `--workspace`, as above, so that features resolve as they did and nothing is rebuilt.
OXCAST_TEST_BACKEND=scaleout cargo test --workspace --no-fail-fast --test vod --test live \
  -- --test-threads "$threads" || status=$?
exit "$status"

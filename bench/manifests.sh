#!/usr/bin/env bash
# Live manifest size: how many playlist and MPD bytes one live viewer fetches per minute, at
# 10 minutes and at 4 hours of session, with the whole session listed and with a 10-minute
# DVR window (live.dvr_window_s), full reloads against delta updates (_HLS_skip), identity
# against brotli. The session history is injected by crates/live/examples/manifest_sizes.rs
# (two video renditions and audio, 2 s segments of 0.5 s parts), so no four-hour stream has to
# run; the manifests are rendered by the same code the live origin uses.
#
# Usage: bench/manifests.sh
#
# The table is printed and written to bench/out/manifests-<timestamp>.txt.
set -euo pipefail
BENCH_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$BENCH_DIR/.." && pwd)
mkdir -p "$BENCH_DIR/out"
out="$BENCH_DIR/out/manifests-$(date -u +%Y%m%dT%H%M%SZ).txt"
(cd "$ROOT" && cargo run --release -q -p oxcast-live --example manifest_sizes) | tee "$out"
echo "written to $out"

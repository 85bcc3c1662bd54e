#!/usr/bin/env bash
# Installs what is missing, builds, and starts oxcast on embedded defaults:
# http://127.0.0.1:8080, data in ./oxcast-data. Extra arguments go to `oxcast serve`.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/deps.sh
cargo build --release --quiet -p oxcast
exec target/release/oxcast serve "$@"

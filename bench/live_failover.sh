#!/usr/bin/env bash
# Live encoder failover: when the encoder running a stream is SIGKILLed, how long is the hole a
# viewer sees on the api node, against the floor of a fresh publish (probe + encoder start)?
#
#   One deployment on loopback, in a scratch dir: PostgreSQL, SeaweedFS (one bucket), an `api`
#   node, an `ingest` node (RTMP) and two `live` encoders (live.relay_listen; rungs [720, 360])
#   on the same database, bucket and signing key, OXCAST_LIVE__GRACE_S=10. A live stream is
#   created through the api node and a real-time (-re) ffmpeg test pattern is published to the
#   ingest node. bench/live_failover.py then:
#   - baseline: --baselines times, a fresh publish (stream idle before) until the first part is
#     listed on the api node's first variant; the publisher is stopped and the session let end
#     between them, the last publisher stays on for the failover phase;
#   - --kills times: waits until the stream is steady (>= 4 s of parts, and of wall time, since
#     the last discontinuity), then a random 0-2 s more (a random point of the 2 s segment and
#     GOP; --seed), finds the encoder running it (/metrics oxcast_live_sessions_active),
#     SIGKILLs it and times, on the api node's first variant (LL-HLS blocking reloads and a
#     plain reload every 30 ms, both at once), the last part listed before the kill and the
#     first part after the new #EXT-X-DISCONTINUITY; checks that the publisher still runs and
#     the session is the same; then starts a replacement encoder (new data dir and ports) so
#     that two are available at the next kill.
#   Printed: n, gap p50/max, kill->first part p50/max, longest pause p50/max, baseline p50,
#   gap/baseline, publisher stayed connected, non-200 answers during the failover phase.
#
# Usage: bench/live_failover.sh [--kills N] [--baselines B] [--rungs LIST] [--seed N] [--keep]
#
#   --kills N      encoder kills (default 5, 1..20)
#   --baselines B  fresh publishes timed first (default 3, 1..5)
#   --rungs LIST   the live ladder, OXCAST_LIVE__RUNGS (default '[720, 360]'; '[360]' is
#                  lighter on a small machine)
#   --seed N       seed of the random delay before each kill (default 1)
#   --keep         keep the scratch dir (logs of every node, PostgreSQL, SeaweedFS and each
#                  publisher) and say where
#
# Environment:
#   OXCAST_BIN       oxcast binary to use as is. Unset: `cargo build --release -p oxcast` runs
#                    first (a no-op when up to date) and <repo>/target/release/oxcast is used.
#                    It is removed from the nodes' environment (it is not server config).
#   OXCAST_API_TOKEN if set, passed to every node (their own config) and sent as a bearer token.
#   OXCAST_PG_BIN    PostgreSQL's server binaries (default: the newest /usr/lib/postgresql/*/bin,
#                    else postgres on PATH). Under root PostgreSQL runs as the `postgres` user.
#   OXCAST_WEED      SeaweedFS's `weed` (default: on PATH, else /opt/oxcast/test-venv/bin/weed;
#                    scripts/deps.sh --test installs it).
#
# Results are printed and written to bench/out/live_failover-<timestamp>.json (every node's log
# is copied next to it as live_failover-<timestamp>-<node>.log). Any failing step exits non-zero.
set -euo pipefail

BENCH_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$BENCH_DIR/.." && pwd)
DRIVER="$BENCH_DIR/live_failover.py"

KILLS=5
BASELINES=3
KEEP=0
SIZE=1280x720
FPS=30
RUNGS="[720, 360]"
SEED=1
GRACE_S=10
BUCKET=oxcast-live-failover
S3_KEY=bench-key
S3_SECRET=bench-secret-0123456789

# shellcheck source=bench/lib.sh
source "$BENCH_DIR/lib.sh"

while (($#)); do
    case "$1" in
        --kills) KILLS=${2:?--kills needs a value}; shift 2 ;;
        --kills=*) KILLS=${1#*=}; shift ;;
        --baselines) BASELINES=${2:?--baselines needs a value}; shift 2 ;;
        --baselines=*) BASELINES=${1#*=}; shift ;;
        --rungs) RUNGS=${2:?--rungs needs a value}; shift 2 ;;
        --rungs=*) RUNGS=${1#*=}; shift ;;
        --seed) SEED=${2:?--seed needs a value}; shift 2 ;;
        --seed=*) SEED=${1#*=}; shift ;;
        --keep) KEEP=1; shift ;;
        -h|--help) usage; exit 0 ;;
        *) echo "unknown argument: $1 (try --help)" >&2; exit 2 ;;
    esac
done
if ! [[ $KILLS =~ ^[0-9]+$ ]] || ((KILLS < 1 || KILLS > 20)); then
    echo "--kills must be a whole number from 1 to 20" >&2
    exit 2
fi
if ! [[ $BASELINES =~ ^[0-9]+$ ]] || ((BASELINES < 1 || BASELINES > 5)); then
    echo "--baselines must be a whole number from 1 to 5" >&2
    exit 2
fi
[[ $RUNGS =~ ^\[[0-9,\ ]+\]$ ]] || { echo "--rungs must look like '[720, 360]'" >&2; exit 2; }
[[ $SEED =~ ^[0-9]+$ ]] || { echo "--seed must be a whole number" >&2; exit 2; }
# The whole measurement is bounded: each baseline (publish, first part, grace, end) and each
# kill (steady, failover, replacement) well within these.
MAX_S=$((90 + 45 * BASELINES + 40 * KILLS))

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
[[ -f $DRIVER ]] || { echo "missing $DRIVER" >&2; exit 1; }
# psql tells when an encoder has registered (its first heartbeat); without it the driver waits
# 2.5 s instead.
PSQL=$(command -v psql || true)
[[ -z $PSQL && -x $PG_BIN/psql ]] && PSQL=$PG_BIN/psql

SCRATCH=$(mktemp -d "${TMPDIR:-/tmp}/oxcast-live-failover.XXXXXX")
PIDS=()        # the driver
NODE_PIDS=()   # started here: encoders, ingest, api (newest first), stopped before the engines
WEED_PID="" PG_PID=""
STAMP=$(date -u +%Y%m%dT%H%M%SZ)
OUT_DIR="$BENCH_DIR/out"
OUT_JSON="$OUT_DIR/live_failover-$STAMP.json"
CHILD_PIDS="$SCRATCH/driver.pids" # publishers and replacement encoders the driver started

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
    local rc=$? pid log name
    for pid in "${PIDS[@]}"; do [[ -n $pid ]] && stop_pid "$pid"; done
    # What the driver started and did not stop (it stops them itself unless it was killed).
    if [[ -f $CHILD_PIDS ]]; then
        while read -r pid; do [[ -n $pid ]] && stop_pid "$pid"; done <"$CHILD_PIDS"
    fi
    for pid in "${NODE_PIDS[@]}" "$WEED_PID"; do [[ -n $pid ]] && stop_pid "$pid"; done
    if [[ -n $PG_PID ]]; then
        kill -INT "$PG_PID" 2>/dev/null || true # fast shutdown
        stop_pid "$PG_PID"
    fi
    echo
    for log in "$SCRATCH"/node-*.log; do
        [[ -f $log ]] || continue
        name=$(basename "$log" .log)
        name=${name#node-}
        node_warnings "$name" "$log"
        mkdir -p "$OUT_DIR"
        cp "$log" "$OUT_DIR/live_failover-$STAMP-$name.log" 2>/dev/null \
            && echo "node $name log copied to bench/out/live_failover-$STAMP-$name.log"
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
echo "== oxcast live encoder failover benchmark =="
echo "ffmpeg:     $FFMPEG_VERSION"
echo "postgres:   $PG_VERSION"
echo "seaweedfs:  $WEED_VERSION"
echo "nproc:      $NPROC"
echo "source:     testsrc2 ${SIZE}@${FPS} + sine 440 Hz, real time; rungs $RUNGS; grace ${GRACE_S}s"
echo "plan:       $BASELINES fresh publish(es), then $KILLS encoder kill(s); at most ${MAX_S}s"
echo "scratch:    $SCRATCH"
echo

oxcast_bin ""
echo "binary:     $BIN"

mapfile -t TCP < <(free_ports tcp 27)
mapfile -t UDP < <(free_ports udp 4)
PG_PORT=${TCP[0]} S3_PORT=${TCP[1]}
WEED_PORTS=("${TCP[@]:2:13}")
API_PORT=${TCP[15]} API_RTMP=${TCP[16]}
ING_PORT=${TCP[17]} ING_RTMP=${TCP[18]}
E1_PORT=${TCP[19]} E1_RTMP=${TCP[20]} E1_RELAY=${TCP[21]}
E2_PORT=${TCP[22]} E2_RTMP=${TCP[23]} E2_RELAY=${TCP[24]}
API_SRT=${UDP[0]} ING_SRT=${UDP[1]} E1_SRT=${UDP[2]} E2_SRT=${UDP[3]}
CURL=(curl -sS --max-time 10)
[[ -n ${OXCAST_API_TOKEN:-} ]] && CURL+=(-H "Authorization: Bearer $OXCAST_API_TOKEN")

# ---------------------------------------------------------------- PostgreSQL, SeaweedFS
start_postgres 300
start_seaweedfs

# ---------------------------------------------------------------- launchers
# One script starts every node, here and (the replacement encoders) in the driver:
#   node.sh NAME ROLES HTTP RTMP SRT [RELAY] -> execs `oxcast serve` (so its pid is the node's)
SIGNING_KEY=$(head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n')
NODE_SH="$SCRATCH/node.sh"
{
    echo '#!/usr/bin/env bash'
    echo 'set -eu'
    printf 'SCRATCH=%q BIN=%q DB_URL=%q SIGNING_KEY=%q BUCKET=%q S3=%q S3_KEY=%q S3_SECRET=%q RUNGS=%q GRACE_S=%q\n' \
        "$SCRATCH" "$BIN" "$DB_URL" "$SIGNING_KEY" "$BUCKET" "$S3" "$S3_KEY" "$S3_SECRET" "$RUNGS" "$GRACE_S"
    cat <<'EOF'
name=$1 roles=$2 port=$3 rtmp=$4 srt=$5 relay=${6:-}
mkdir -p "$SCRATCH/data-$name"
extra=()
[[ -n $relay ]] && extra=(OXCAST_LIVE__RELAY_LISTEN="127.0.0.1:$relay")
exec env -u OXCAST_BIN \
    OXCAST_ROLES="$roles" \
    OXCAST_DATABASE_URL="$DB_URL" \
    OXCAST_SIGNING_KEY="$SIGNING_KEY" \
    OXCAST_STORAGE__URL="s3://$BUCKET" OXCAST_STORAGE__ENDPOINT="$S3" \
    OXCAST_STORAGE__REGION=us-east-1 OXCAST_STORAGE__PATH_STYLE=true \
    OXCAST_STORAGE__ACCESS_KEY_ID="$S3_KEY" OXCAST_STORAGE__SECRET_ACCESS_KEY="$S3_SECRET" \
    OXCAST_LIVE__RTMP_LISTEN="127.0.0.1:$rtmp" OXCAST_LIVE__SRT_LISTEN="127.0.0.1:$srt" \
    OXCAST_LIVE__RUNGS="$RUNGS" OXCAST_LIVE__GRACE_S="$GRACE_S" \
    "${extra[@]}" \
    "$BIN" serve --listen "127.0.0.1:$port" --data-dir "$SCRATCH/data-$name"
EOF
} >"$NODE_SH"

start_node() { # name roles http-port rtmp-port srt-port [relay-port] -> NODE_PIDS+=, waits for /healthz
    local name=$1 port=$3 log="$SCRATCH/node-$1.log" pid rc deadline
    bash "$NODE_SH" "$@" >"$log" 2>&1 &
    pid=$!
    NODE_PIDS=("$pid" "${NODE_PIDS[@]}")
    deadline=$(calc "$(now) + 60")
    until [[ $("${CURL[@]}" -o /dev/null -w '%{http_code}' "http://127.0.0.1:$port/healthz" 2>/dev/null || true) == 200 ]]; do
        if ! kill -0 "$pid" 2>/dev/null; then
            wait "$pid" && rc=0 || rc=$?
            forget "$pid"
            log_tail "$log"
            fail "node $name exited (status $rc) before GET /healthz answered 200"
        fi
        past "$deadline" && { log_tail "$log"; fail "node $name: /healthz not 200 within 60 s"; }
        sleep 0.1
    done
    # Out of the job table: no "Killed" notice when the driver SIGKILLs an encoder on purpose.
    disown "$pid"
    printf '%-11s pid %s, --roles %s, http://127.0.0.1:%s%s\n' "$name:" "$pid" "$2" "$port" \
        "${6:+ (relay :$6)}"
}
start_node api api "$API_PORT" "$API_RTMP" "$API_SRT"
start_node enc1 live "$E1_PORT" "$E1_RTMP" "$E1_SRT" "$E1_RELAY"
ENC1_PID=${NODE_PIDS[0]}
start_node enc2 live "$E2_PORT" "$E2_RTMP" "$E2_SRT" "$E2_RELAY"
ENC2_PID=${NODE_PIDS[0]}
start_node ingest ingest "$ING_PORT" "$ING_RTMP" "$ING_SRT"
echo "            (ingest rtmp :$ING_RTMP)"
API_URL="http://127.0.0.1:$API_PORT"
echo

# ---------------------------------------------------------------- stream, publisher, driver
body=$("${CURL[@]}" -f -X POST -H 'Content-Type: application/json' \
    -d '{"title":"bench-live-failover"}' "$API_URL/api/v1/live-streams") \
    || fail "POST $API_URL/api/v1/live-streams failed"
SID=$(json_field id <<<"$body")
KEY=$(json_field stream_key <<<"$body")
[[ -n $SID && -n $KEY ]] || fail "no id / stream_key in: $body"
TARGET="rtmp://127.0.0.1:$ING_RTMP/live/$KEY"
# The publisher runs until the driver stops it; -t bounds it should the driver not.
PUBLISH_SH="$SCRATCH/publish.sh"
{
    echo '#!/usr/bin/env bash'
    printf 'exec ffmpeg -hide_banner -nostdin -loglevel warning -y -re -f lavfi -i %q -f lavfi -i %q -t %q -c:v libx264 -preset veryfast -tune zerolatency -g 60 -pix_fmt yuv420p -c:a aac -b:a 96k -f flv %q\n' \
        "testsrc2=size=$SIZE:rate=$FPS" "sine=frequency=440:sample_rate=48000" "$MAX_S" "$TARGET"
} >"$PUBLISH_SH"
echo "-- stream $SID created through the api node; publisher: ffmpeg -re testsrc2 to $TARGET"

META=$(python3 -c '
import json, sys
a = sys.argv[1:]
print(json.dumps({
    "timestamp": a[0], "ffmpeg": a[1], "nproc": int(a[2]), "uname": a[3], "postgres": a[4],
    "seaweedfs": a[5], "binary": a[6], "size": a[7], "fps": int(a[8]), "rungs": a[9],
    "grace_s": float(a[10]), "kills": int(a[11]), "baselines": int(a[12]), "seed": int(a[13]),
    "publisher": "ffmpeg -re lavfi testsrc2 + sine 440, libx264 veryfast zerolatency -g 60, aac 96k, RTMP to the ingest node",
    "nodes": {"api": "api", "ingest": "ingest", "enc1": "live", "enc2": "live",
              "enc3..": "live, replacements started by the driver after each kill"},
    "notes": {
        "baseline": "publisher launched (stream idle) -> first part listed on the api node'"'"'s first variant (plain reload every 30 ms)",
        "gap": "first part after the new EXT-X-DISCONTINUITY listed - last part listed before the SIGKILL, on the api node'"'"'s first variant (earlier of blocking reloads and 30 ms polls)",
        "longest_pause": "the longest time between two part listings within that gap (parts the killed encoder stored before dying can be listed after the kill)",
        "kill_to_first_part": "SIGKILL of the encoder running the stream -> that first part listed",
        "kill_phase": "each kill comes a random 0-2 s (one segment) after the stream is steady",
    },
}))' "$STAMP" "$FFMPEG_VERSION" "$NPROC" "$(uname -srm)" "$PG_VERSION" "$WEED_VERSION" "$BIN" \
    "$SIZE" "$FPS" "$RUNGS" "$GRACE_S" "$KILLS" "$BASELINES" "$SEED")

mkdir -p "$OUT_DIR"
python3 "$DRIVER" --api "$API_URL" --stream "$SID" --scratch "$SCRATCH" \
    --node-launcher "$NODE_SH" --publish-launcher "$PUBLISH_SH" \
    --encoder "enc1,$ENC1_PID,$E1_PORT,$E1_RELAY" --encoder "enc2,$ENC2_PID,$E2_PORT,$E2_RELAY" \
    --pids-file "$CHILD_PIDS" --kills "$KILLS" --baselines "$BASELINES" --grace-s "$GRACE_S" \
    --max-s "$MAX_S" --seed "$SEED" --psql "$PSQL" --db-url "$DB_URL" --token "${OXCAST_API_TOKEN:-}" \
    --meta "$META" --out "$OUT_JSON" 2>"$SCRATCH/driver.log" &
drv_pid=$!
PIDS+=("$drv_pid")
wait "$drv_pid" && drc=0 || drc=$?
forget "$drv_pid"
if ((drc != 0)); then
    log_tail "$SCRATCH/driver.log"
    [[ -f $OUT_JSON ]] && echo "partial results written to ${OUT_JSON#"$ROOT"/}"
    fail "the failover measurement failed (status $drc)"
fi
[[ -s $SCRATCH/driver.log ]] && cat "$SCRATCH/driver.log" >&2
for pid in "${NODE_PIDS[@]}"; do
    [[ -z $pid || $pid == "$ENC1_PID" || $pid == "$ENC2_PID" ]] && continue # killed on purpose
    kill -0 "$pid" 2>/dev/null || fail "a node died during the run (see its log)"
done
echo "results written to ${OUT_JSON#"$ROOT"/}"

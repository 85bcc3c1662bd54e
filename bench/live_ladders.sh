#!/usr/bin/env bash
# Live ladders per core: how many concurrent 720p -> (720p, 360p) live ladders one core sustains
# in real time, with oxcast and with plain ffmpeg doing the same encode (issue 10).
#
#   `oxcast serve` (embedded defaults: SQLite and local objects in a scratch data dir, its own
#   free loopback HTTP/RTMP/SRT ports, OXCAST_LIVE__RUNGS="[720, 360]") runs pinned to core 1
#   with `taskset -c 1`, so the server and every live encoder it starts share that one core.
#   Publishers run on core 0: `ffmpeg -re -stream_loop -1 -i <file> -c copy -f flv <rtmp_url>`
#   of one pre-generated 1280x720 30 fps test pattern + tone, so they cost almost nothing.
#   For N = 1, 2, 3, ... (up to --max, stopping at the first N that fails): N new streams
#   publish at once for --run seconds; over the last --window seconds each stream's
#   current_session.health (encoder_speed, fps, dropped_frames) is read once a second. N is
#   sustained when every stream's median encoder_speed is >= 0.98 and its dropped frames do not
#   grow. The publishers are stopped and the streams deleted before the next N.
#   Baseline, interleaved (for each N, right after oxcast's step): N plain ffmpeg processes on
#   core 1, each the same ladder encode from the same file in real time (-re), with the live
#   encoder's arguments (crates/live/src/encoder.rs: x264 preset, zerolatency, bitrates, VBV,
#   GOP, scaling, AAC, fragmented MP4 outputs); the same windowed speed is derived from their
#   -progress output and judged the same way.
#
# Usage: bench/live_ladders.sh [--max N] [--run S] [--window S] [--keep]
#
#   --max N      the largest N tried (default 6)
#   --run S      seconds each step runs (default 25)
#   --window S   the last S seconds of each step are sampled, once a second (default 15)
#   --keep       keep the scratch dir (server log, publisher and baseline logs, step JSON)
#
# Environment:
#   OXCAST_BIN       oxcast binary to use as is. Unset: `cargo build --release -p oxcast` runs
#                    first (a no-op when up to date) and <repo>/target/release/oxcast is used.
#                    It is removed from the server's environment (not a config key).
#   OXCAST_API_TOKEN if set, passed to the server (its own config) and sent as a bearer token.
#
# Needs cores 0 and 1 (taskset), ffmpeg with libx264, curl, python3 (stdlib; the sampler,
# baseline runner and summary are bench/live_ladders.py).
#
# Results are printed and written to bench/out/live_ladders-<timestamp>.json (the server log is
# copied next to it as live_ladders-<timestamp>-server.log). A missed goal is reported, not an
# error; any failing step exits non-zero.
set -euo pipefail

BENCH_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$BENCH_DIR/.." && pwd)
HELPER="$BENCH_DIR/live_ladders.py"

MAX_N=6
RUN_S=25
WINDOW_S=15
KEEP=0
SERVER_CORE=1   # the core measured: the server, its encoders, the baseline
PUB_CORE=0      # publishers, the sampler, curl
SRC_S=40        # length of the published file (longer than a step: no loop seam inside one)
FPS=30
PRESET=veryfast # = oxcast's default live.preset, set explicitly for the server too
SEGMENT_S=2     # = oxcast's default live.segment_s (keyframe interval)
PART_S=0.5      # = oxcast's default live.part_s (CMAF chunk length derives from it)
# The live ladder of a 1280x720 source with rungs [720, 360] (crates/live/src/session.rs):
# width:height:bits/s.
RUNGS=("1280:720:2800000" "640:360:800000")

# shellcheck source=bench/lib.sh
source "$BENCH_DIR/lib.sh"

while (($#)); do
    case "$1" in
        --max) MAX_N=${2:?--max needs a value}; shift 2 ;;
        --max=*) MAX_N=${1#*=}; shift ;;
        --run) RUN_S=${2:?--run needs a value}; shift 2 ;;
        --run=*) RUN_S=${1#*=}; shift ;;
        --window) WINDOW_S=${2:?--window needs a value}; shift 2 ;;
        --window=*) WINDOW_S=${1#*=}; shift ;;
        --keep) KEEP=1; shift ;;
        -h|--help) usage; exit 0 ;;
        *) echo "unknown argument: $1 (try --help)" >&2; exit 2 ;;
    esac
done
if ! [[ $MAX_N =~ ^[0-9]+$ ]] || ((MAX_N < 1 || MAX_N > 32)); then
    echo "--max must be a whole number from 1 to 32" >&2; exit 2
fi
if ! [[ $RUN_S =~ ^[0-9]+$ && $WINDOW_S =~ ^[0-9]+$ ]] || ((WINDOW_S < 3 || RUN_S < WINDOW_S + 6)); then
    echo "--run and --window must be whole seconds, --window at least 3, --run at least --window + 6" >&2; exit 2
fi
((RUN_S <= SRC_S - 5)) || SRC_S=$((RUN_S + 5))
FROM_S=$((RUN_S - WINDOW_S))

for tool in ffmpeg curl python3 taskset; do
    command -v "$tool" >/dev/null || { echo "missing required tool: $tool" >&2; exit 1; }
done
[[ -f $HELPER ]] || { echo "missing $HELPER" >&2; exit 1; }
taskset -c "$PUB_CORE,$SERVER_CORE" true 2>/dev/null \
    || { echo "needs cores $PUB_CORE and $SERVER_CORE (taskset -c $PUB_CORE,$SERVER_CORE failed)" >&2; exit 1; }

SCRATCH=$(mktemp -d "${TMPDIR:-/tmp}/oxcast-ladders-bench.XXXXXX")
SERVER_PID=""
PIDS=()          # publishers, sampler, baseline runner: stopped on exit
STAMP=$(date -u +%Y%m%dT%H%M%SZ)
OUT_DIR="$BENCH_DIR/out"
OUT_JSON="$OUT_DIR/live_ladders-$STAMP.json"
SERVER_LOG="$SCRATCH/server.log"

server_warnings() { # WARN/ERROR lines of the server log, colour codes stripped
    [[ -f $SERVER_LOG ]] || return 0
    local lines
    lines=$(sed 's/\x1b\[[0-9;]*m//g' "$SERVER_LOG" | grep -E '\b(WARN|ERROR)\b' || true)
    echo
    if [[ -z $lines ]]; then
        echo "== server log: no WARN/ERROR lines =="
        return 0
    fi
    echo "== server log: WARN/ERROR lines ($(wc -l <<<"$lines")) =="
    head -n 40 <<<"$lines"
    (($(wc -l <<<"$lines") > 40)) && echo "... (more in the server log)"
    return 0
}

cleanup() {
    local rc=$? pid
    for pid in "${PIDS[@]}"; do [[ -n $pid ]] && stop_pid "$pid"; done
    [[ -n $SERVER_PID ]] && stop_pid "$SERVER_PID"
    server_warnings
    if [[ -f $SERVER_LOG ]]; then
        mkdir -p "$OUT_DIR"
        cp "$SERVER_LOG" "$OUT_DIR/live_ladders-$STAMP-server.log" 2>/dev/null \
            && echo "server log copied to bench/out/live_ladders-$STAMP-server.log"
    fi
    if ((KEEP)); then
        echo "scratch kept in $SCRATCH" >&2
    else
        rm -rf "$SCRATCH"
    fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

server_alive() {
    kill -0 "$SERVER_PID" 2>/dev/null && return 0
    log_tail "$SERVER_LOG"
    SERVER_PID=""
    fail "oxcast serve died ($1)"
}

# ---------------------------------------------------------------- header
FFMPEG_VERSION=$(ffmpeg -hide_banner -version | head -n1)
NPROC=$(nproc)
CPU_MODEL=$(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -n1)
echo "== oxcast live ladders per core =="
echo "ffmpeg:  $FFMPEG_VERSION"
echo "nproc:   $NPROC (${CPU_MODEL:-unknown CPU})"
echo "cores:   server + encoders + baseline on core $SERVER_CORE; publishers and sampler on core $PUB_CORE"
echo "steps:   N = 1..$MAX_N, ${RUN_S}s each, sampled over the last ${WINDOW_S}s; ladder 720p + 360p, x264 $PRESET"
echo "scratch: $SCRATCH"
echo "note:    anything else running (builds) on core $SERVER_CORE lowers the figures; it is shown as 'other'"
echo

# ---------------------------------------------------------------- binary
oxcast_bin ""
echo "binary:  $BIN"

# ---------------------------------------------------------------- source
# One file for every publisher and the baseline, as a streaming encoder would send it: x264
# veryfast zerolatency, 2 s GOP, ~3 Mbit/s CBR-like, AAC stereo.
SRC="$SCRATCH/source.mp4"
echo "-- source: testsrc2 1280x720@$FPS + sine 440 Hz, ${SRC_S}s, x264 veryfast 3000k -g $((FPS * SEGMENT_S)) ..."
ffmpeg -hide_banner -nostdin -loglevel error -y \
    -f lavfi -i "testsrc2=size=1280x720:rate=$FPS" \
    -f lavfi -i "sine=frequency=440:sample_rate=48000" -t "$SRC_S" \
    -c:v libx264 -preset veryfast -tune zerolatency -pix_fmt yuv420p \
    -b:v 3000k -maxrate 3000k -bufsize 3000k \
    -g $((FPS * SEGMENT_S)) -keyint_min $((FPS * SEGMENT_S)) -sc_threshold 0 \
    -c:a aac -b:a 128k -ac 2 -ar 48000 -movflags +faststart "$SRC" 2>"$SCRATCH/source.log" \
    || { log_tail "$SCRATCH/source.log"; fail "making the source failed"; }
echo "   $(du -h "$SRC" | cut -f1)"

# ---------------------------------------------------------------- server
read -r PORT RTMP_PORT SRT_PORT < <(python3 -c '
import socket
held = []
def free(kind):
    s = socket.socket(socket.AF_INET, kind); s.bind(("127.0.0.1", 0)); held.append(s)
    return s.getsockname()[1]
print(free(socket.SOCK_STREAM), free(socket.SOCK_STREAM), free(socket.SOCK_DGRAM))')
URL="http://127.0.0.1:$PORT"
CURL=(curl -sS --max-time 10)
[[ -n ${OXCAST_API_TOKEN:-} ]] && CURL+=(-H "Authorization: Bearer $OXCAST_API_TOKEN")
mkdir -p "$SCRATCH/data"
rungs_json="[720, 360]"

# Every OXCAST_* variable is server config: drop OXCAST_BIN. taskset execs the server, so $!
# is its pid; its ffmpeg children inherit the affinity.
env -u OXCAST_BIN \
    OXCAST_LISTEN="127.0.0.1:$PORT" \
    OXCAST_DATA_DIR="$SCRATCH/data" \
    OXCAST_LIVE__RTMP_LISTEN="127.0.0.1:$RTMP_PORT" \
    OXCAST_LIVE__SRT_LISTEN="127.0.0.1:$SRT_PORT" \
    OXCAST_LIVE__RUNGS="$rungs_json" \
    OXCAST_LIVE__PRESET="$PRESET" \
    OXCAST_LIVE__GRACE_S=2 \
    taskset -c "$SERVER_CORE" "$BIN" serve >"$SERVER_LOG" 2>&1 &
SERVER_PID=$!
echo "server:  pid $SERVER_PID on core $SERVER_CORE, http $URL, rtmp :$RTMP_PORT, srt :$SRT_PORT/udp, rungs $rungs_json"

deadline=$(calc "$(now) + 60")
until [[ $("${CURL[@]}" -o /dev/null -w '%{http_code}' "$URL/healthz" 2>/dev/null || true) == 200 ]]; do
    if ! kill -0 "$SERVER_PID" 2>/dev/null; then
        wait "$SERVER_PID" && rc=0 || rc=$?
        SERVER_PID=""
        log_tail "$SERVER_LOG"
        fail "oxcast serve exited (status $rc) before GET /healthz answered 200"
    fi
    past "$deadline" && { log_tail "$SERVER_LOG"; fail "GET $URL/healthz did not answer 200 within 60 s"; }
    sleep 0.1
done
affinity=$(taskset -pc "$SERVER_PID" | sed 's/.*: //')
[[ $affinity == "$SERVER_CORE" ]] || fail "server affinity is '$affinity', not core $SERVER_CORE"
echo "healthz: 200"
echo

# ---------------------------------------------------------------- the baseline's command
# The live encoder's arguments (crates/live/src/encoder.rs), reading the file in real time
# instead of a pipe, and writing its fragmented MP4 outputs into files ({dir} is replaced per
# process by the helper).
GOP=$(python3 -c "print(round($FPS * $SEGMENT_S))")
VIDEO_CHUNK_US=$(python3 -c "f = 1 / $FPS; print(int(max($PART_S / 5 - f / 2, f / 2) * 1e6))")
AUDIO_CHUNK_US=$(python3 -c "print(int($PART_S / 4 * 1e6))")
FMP4=(-movflags +frag_keyframe+empty_moov+default_base_moof+cmaf+skip_trailer)
graph="[0:v:0]format=yuv420p,split=${#RUNGS[@]}"
for i in "${!RUNGS[@]}"; do graph+="[s$i]"; done
outs=()
for i in "${!RUNGS[@]}"; do
    IFS=: read -r w h bps <<<"${RUNGS[$i]}"
    graph+=";[s$i]scale=$w:$h,setsar=1[v$i]"
    outs+=(-map "[v$i]" -an -c:v libx264 -tune zerolatency -profile:v high -preset "$PRESET"
        -b:v "$bps" -maxrate $(((bps * 3 + 1) / 2)) -bufsize $((bps * 2))
        -g "$GOP" -keyint_min "$GOP" -sc_threshold 0 -flags +cgop
        -force_key_frames "expr:gte(t,n_forced*$SEGMENT_S)"
        -f mp4 "${FMP4[@]}" -frag_duration "$VIDEO_CHUNK_US" -flush_packets 1 "file:{dir}/${h}p.mp4")
done
outs+=(-map 0:a:0 -vn -c:a aac -b:a 128k -ac 2 -ar 48000
    -f mp4 "${FMP4[@]}" -frag_duration "$AUDIO_CHUNK_US" -flush_packets 1 "file:{dir}/audio.mp4")
BASELINE_CMD=(ffmpeg -hide_banner -nostdin -y -v error -nostats -progress pipe:1
    -fflags +nobuffer+genpts -probesize 500000 -analyzeduration 1000000
    -re -i "$SRC" -filter_complex "$graph" "${outs[@]}")

# ---------------------------------------------------------------- steps
run_helper() { # log, args...: the helper on the publishers' core, stoppable by cleanup
    local log=$1 pid rc
    shift
    taskset -c "$PUB_CORE" python3 "$HELPER" "$@" >"$log" 2>&1 &
    pid=$!
    PIDS+=("$pid")
    wait "$pid" && rc=0 || rc=$?
    forget "$pid"
    ((rc == 0)) || { log_tail "$log"; fail "bench/live_ladders.py $1 failed (status $rc)"; }
    cat "$log"
}

oxcast_step() { # n -> $SCRATCH/oxcast-n.json
    local n=$1 i body sid target t0 pid ids=() targets=() pubs=() deadline
    echo "-- oxcast, N=$n: new streams, their publishers started at once, ${RUN_S}s ..."
    for ((i = 1; i <= n; i++)); do
        body=$("${CURL[@]}" -f -X POST -H 'Content-Type: application/json' \
            -d "{\"title\":\"ladders-$n-$i\"}" "$URL/api/v1/live-streams") \
            || fail "N=$n: POST /api/v1/live-streams failed"
        sid=$(json_field id <<<"$body")
        target=$(json_field rtmp_url <<<"$body")
        [[ -n $sid && -n $target ]] || fail "N=$n: no id or rtmp_url in: $body"
        ids+=("$sid")
        targets+=("$target")
    done
    t0=$(now)
    for i in "${!targets[@]}"; do
        taskset -c "$PUB_CORE" ffmpeg -hide_banner -nostdin -loglevel warning \
            -re -stream_loop -1 -i "$SRC" -c copy -f flv "${targets[$i]}" \
            >"$SCRATCH/publish-$n-$((i + 1)).log" 2>&1 &
        pubs+=("$!")
        PIDS+=("$!")
    done
    run_helper "$SCRATCH/sample-$n.log" sample --base "$URL" --ids "$(IFS=,; echo "${ids[*]}")" \
        --t0 "$t0" --from "$FROM_S" --to "$RUN_S" --server-pid "$SERVER_PID" \
        --core "$SERVER_CORE" --other-core "$PUB_CORE" --out "$SCRATCH/oxcast-$n.json"
    for i in "${!pubs[@]}"; do
        pid=${pubs[$i]}
        if ! kill -0 "$pid" 2>/dev/null; then
            echo "   note: publisher $((i + 1)) exited before the end of the step:"
            tail -n 3 "$SCRATCH/publish-$n-$((i + 1)).log" | sed 's/^/     /'
        fi
        stop_pid "$pid"
        forget "$pid"
    done
    server_alive "during oxcast step N=$n"
    # End the sessions now (DELETE ends a live session first), and wait until the server has
    # no encoder (or any other child) left, so the next step starts on an idle core.
    for sid in "${ids[@]}"; do
        "${CURL[@]}" -f -o /dev/null -X DELETE "$URL/api/v1/live-streams/$sid" \
            || echo "   note: DELETE /api/v1/live-streams/$sid failed"
    done
    deadline=$(calc "$(now) + 30")
    while pgrep -P "$SERVER_PID" >/dev/null; do
        past "$deadline" && { echo "   note: the server still has child processes 30 s after the step"; break; }
        sleep 0.2
    done
    server_alive "ending the sessions of step N=$n"
    sleep 1
}

baseline_step() { # n -> $SCRATCH/ffmpeg-n.json
    local n=$1 dir="$SCRATCH/baseline-$1"
    echo "-- plain ffmpeg, N=$n: ladder encodes of the file in real time (-re), started at once, ${RUN_S}s ..."
    mkdir -p "$dir"
    run_helper "$SCRATCH/baseline-$n.log" baseline --n "$n" --scratch "$dir" \
        --from "$FROM_S" --to "$RUN_S" --core "$SERVER_CORE" --other-core "$PUB_CORE" \
        --out "$SCRATCH/ffmpeg-$n.json" -- "${BASELINE_CMD[@]}"
    ((KEEP)) || rm -f "$dir"/b*/*.mp4
    sleep 1
}

step_ok() { [[ $(json_field ok <"$1") == True ]]; }

read -r BUSY_SERVER BUSY_PUB < <(python3 "$HELPER" busy --cores "$SERVER_CORE,$PUB_CORE" --seconds 2)
pct() { awk -v v="$1" 'BEGIN { printf "%.0f", v * 100 }'; }
echo "-- before the steps, with the server idle: core $SERVER_CORE busy $(pct "$BUSY_SERVER")%, core $PUB_CORE $(pct "$BUSY_PUB")%"
awk -v b="$BUSY_SERVER" 'BEGIN { exit !(b > 0.1) }' \
    && echo "   warning: something else is using core $SERVER_CORE: the figures will read low"
echo

STEP_ARGS=()
ox_done=0 ff_done=0
started=$(now)
for ((n = 1; n <= MAX_N; n++)); do
    if ((!ox_done)); then
        oxcast_step "$n"
        STEP_ARGS+=(--step "$SCRATCH/oxcast-$n.json")
        step_ok "$SCRATCH/oxcast-$n.json" || ox_done=1
    fi
    if ((!ff_done)); then
        baseline_step "$n"
        STEP_ARGS+=(--step "$SCRATCH/ffmpeg-$n.json")
        step_ok "$SCRATCH/ffmpeg-$n.json" || ff_done=1
    fi
    ((ox_done && ff_done)) && break
done
echo
echo "steps took $(calc "$(now) - $started") s"

# ---------------------------------------------------------------- summary
mkdir -p "$OUT_DIR"
meta=$(python3 -c '
import json, sys
a = sys.argv[1:]
print(json.dumps({
    "timestamp": a[0], "ffmpeg": a[1], "nproc": int(a[2]), "uname": a[3], "cpu": a[4],
    "binary": a[5], "core": int(a[6]), "publisher_core": int(a[7]),
    "max_n": int(a[8]), "run_s": int(a[9]), "window_s": int(a[10]),
    "source": "testsrc2 1280x720@30 + sine 440 Hz, " + a[11] + " s, libx264 veryfast zerolatency 3000k -g 60, aac 128k",
    "publisher": "taskset -c " + a[7] + " ffmpeg -re -stream_loop -1 -i source.mp4 -c copy -f flv <rtmp_url>",
    "server_env": {"OXCAST_LIVE__RUNGS": a[12], "OXCAST_LIVE__PRESET": a[13], "OXCAST_LIVE__GRACE_S": "2"},
    "baseline_command": ["taskset", "-c", a[6]] + json.loads(a[14]),
    "busy_before": {"core": float(a[15]), "publisher_core": float(a[16])},
}))' "$STAMP" "$FFMPEG_VERSION" "$NPROC" "$(uname -srm)" "$CPU_MODEL" "$BIN" "$SERVER_CORE" \
    "$PUB_CORE" "$MAX_N" "$RUN_S" "$WINDOW_S" "$SRC_S" "$rungs_json" "$PRESET" \
    "$(python3 -c 'import json, sys; print(json.dumps(sys.argv[1:]))' "${BASELINE_CMD[@]}")" \
    "$BUSY_SERVER" "$BUSY_PUB")
python3 "$HELPER" summary "${STEP_ARGS[@]}" --meta "$meta" --out "$OUT_JSON"
echo "results written to ${OUT_JSON#"$ROOT"/}"

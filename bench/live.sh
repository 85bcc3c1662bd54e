#!/usr/bin/env bash
# Live latency benchmark: how long after the ingest receives media is it listed in oxcast's
# LL-HLS playlists, and how does that compare with ffmpeg's own HLS muxer used as a naive live
# packager?
#
#   For each ingest protocol (rtmp, srt): `oxcast serve` with a two-rung live ladder (720p +
#   360p), a new live stream, and a real-time (-re) ffmpeg test pattern published to it. While it
#   runs, bench/live_watch.py follows the first variant with LL-HLS blocking reloads (client-
#   observed delays), samples the stream's health, and reads the server's own latency stats
#   (GET /api/v1/live-streams/{id}/latency) in the last 2 s of publishing.
#   Baseline: one ffmpeg process, same source, same two-rung load, `-f hls` with 2 s fMP4
#   segments and no parts, its 720p playlist file polled every 50 ms.
#
# Usage: bench/live.sh [--duration S] [--size WxH] [--keep]
#
#   --duration S  seconds each publisher (and the baseline) runs (default 30)
#   --size WxH    test pattern size (default 1280x720)
#   --keep        keep the scratch dir (server log, ffmpeg logs, playlists) and say where
#
# Environment:
#   OXCAST_BIN       oxcast binary to use as is. Unset: `cargo build --release -p oxcast` runs
#                    first (a no-op when up to date) and <repo>/target/release/oxcast is used.
#                    It is removed from the server's environment, because every OXCAST_* variable
#                    is read as server configuration and `bin` is not a config key.
#   OXCAST_API_TOKEN if set, passed to the server (its own config) and sent as a bearer token.
#
# Results are printed and written to bench/out/live-<timestamp>.json (the server log is copied
# next to it as live-<timestamp>-server.log). A missed goal is reported, not an error; any
# failing step exits non-zero.
set -euo pipefail

BENCH_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$BENCH_DIR/.." && pwd)
WATCH="$BENCH_DIR/live_watch.py"

DURATION=30
SIZE=1280x720
KEEP=0
FPS=30
SEGMENT_S=2     # = oxcast's default live.segment_s (keyframe interval)
PART_S=0.5      # = oxcast's default live.part_s
LADDER=(720 360) # OXCAST_LIVE__RUNGS; short-side heights, those above the source are dropped

# shellcheck source=bench/lib.sh
source "$BENCH_DIR/lib.sh"

while (($#)); do
    case "$1" in
        --duration) DURATION=${2:?--duration needs a value}; shift 2 ;;
        --duration=*) DURATION=${1#*=}; shift ;;
        --size) SIZE=${2:?--size needs a value}; shift 2 ;;
        --size=*) SIZE=${1#*=}; shift ;;
        --keep) KEEP=1; shift ;;
        -h|--help) usage; exit 0 ;;
        *) echo "unknown argument: $1 (try --help)" >&2; exit 2 ;;
    esac
done
[[ $DURATION =~ ^[0-9]+$ ]] && ((DURATION >= 6)) \
    || { echo "--duration must be a whole number of seconds, at least 6" >&2; exit 2; }
[[ $SIZE =~ ^([0-9]+)x([0-9]+)$ ]] \
    || { echo "--size must look like 1280x720" >&2; exit 2; }
SRC_W=${BASH_REMATCH[1]} SRC_H=${BASH_REMATCH[2]}
((SRC_W >= 64 && SRC_H >= 64 && SRC_W % 2 == 0 && SRC_H % 2 == 0)) \
    || { echo "--size: width and height must be even and at least 64" >&2; exit 2; }

for tool in ffmpeg curl python3; do
    command -v "$tool" >/dev/null || { echo "missing required tool: $tool" >&2; exit 1; }
done
[[ -f $WATCH ]] || { echo "missing $WATCH" >&2; exit 1; }

SCRATCH=$(mktemp -d "${TMPDIR:-/tmp}/oxcast-live-bench.XXXXXX")
SERVER_PID=""
PIDS=()          # publishers, followers, baseline: stopped on exit
STAMP=$(date -u +%Y%m%dT%H%M%SZ)
OUT_DIR="$BENCH_DIR/out"
OUT_JSON="$OUT_DIR/live-$STAMP.json"
SERVER_LOG="$SCRATCH/server.log"

server_warnings() { # WARN/ERROR lines of the server log, colour codes stripped
    [[ -f $SERVER_LOG ]] || return 0
    local lines failed other
    lines=$(sed 's/\x1b\[[0-9;]*m//g' "$SERVER_LOG" | grep -E '\b(WARN|ERROR)\b' || true)
    echo
    if [[ -z $lines ]]; then
        echo "== server log: no WARN/ERROR lines =="
        return 0
    fi
    echo "== server log: WARN/ERROR lines ($(wc -l <<<"$lines")) =="
    # tower-http logs every 5xx answer as ERROR "response failed": mostly this script's own
    # master.m3u8 retries while a stream starts (503) and blocking reloads that timed out.
    failed=$(grep 'response failed' <<<"$lines" || true)
    if [[ -n $failed ]]; then
        echo "'response failed' (5xx answers), by status:"
        sed -E 's/.*classification=Status code: ([0-9]+[^=]*) latency=.*/\1/' <<<"$failed" \
            | sort | uniq -c | sed 's/^/  /'
    fi
    other=$(grep -v 'response failed' <<<"$lines" || true)
    if [[ -n $other ]]; then
        head -n 60 <<<"$other"
        (($(wc -l <<<"$other") > 60)) && echo "... (more in the server log)"
    fi
    return 0
}

cleanup() {
    local rc=$? pid
    for pid in "${PIDS[@]}"; do [[ -n $pid ]] && stop_pid "$pid"; done
    [[ -n $SERVER_PID ]] && stop_pid "$SERVER_PID"
    server_warnings
    if [[ -f $SERVER_LOG ]]; then
        mkdir -p "$OUT_DIR"
        cp "$SERVER_LOG" "$OUT_DIR/live-$STAMP-server.log" 2>/dev/null \
            && echo "server log copied to bench/out/live-$STAMP-server.log"
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


# ---------------------------------------------------------------- header
FFMPEG_VERSION=$(ffmpeg -hide_banner -version | head -n1)
NPROC=$(nproc)
echo "== oxcast live latency benchmark =="
echo "ffmpeg:  $FFMPEG_VERSION"
echo "nproc:   $NPROC"
echo "source:  testsrc2 ${SIZE}@${FPS} + sine 440 Hz, ${DURATION}s per run; ladder ${LADDER[*]}"
echo "scratch: $SCRATCH"
echo

# Rungs of both oxcast and the baseline: the ladder heights not above the source's short side.
SHORT=$((SRC_W < SRC_H ? SRC_W : SRC_H))
RUNG_H=()
for h in "${LADDER[@]}"; do ((h <= SHORT)) && RUNG_H+=("$h"); done
((${#RUNG_H[@]})) || fail "--size $SIZE is below the smallest rung (${LADDER[-1]}p)"
rate_k() { # height -> kbit/s, as oxcast's live ladder
    if (($1 >= 1080)); then echo 4500; elif (($1 >= 720)); then echo 2800
    elif (($1 >= 480)); then echo 1400; elif (($1 >= 360)); then echo 800; else echo 400; fi
}

# ---------------------------------------------------------------- binary
oxcast_bin ""
echo "binary:  $BIN"

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
rungs_json="[$(IFS=,; echo "${LADDER[*]}" | sed 's/,/, /g')]"

# Every OXCAST_* variable is server config (unknown keys are errors): drop OXCAST_BIN.
env -u OXCAST_BIN \
    OXCAST_LIVE__RTMP_LISTEN="127.0.0.1:$RTMP_PORT" \
    OXCAST_LIVE__SRT_LISTEN="127.0.0.1:$SRT_PORT" \
    OXCAST_LIVE__RUNGS="$rungs_json" \
    OXCAST_LIVE__GRACE_S=2 \
    "$BIN" serve --listen "127.0.0.1:$PORT" --data-dir "$SCRATCH/data" \
    >"$SERVER_LOG" 2>&1 &
SERVER_PID=$!
echo "server:  pid $SERVER_PID, http $URL, rtmp :$RTMP_PORT, srt :$SRT_PORT/udp, rungs $rungs_json"

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
echo "healthz: 200"
echo

# ---------------------------------------------------------------- oxcast runs
# The publisher, exactly as a streamer would run it (x264 veryfast zerolatency, 1 s GOP).
publish_args() { # -> the common part of the publisher command line
    PUB=(ffmpeg -hide_banner -nostdin -loglevel warning -y
        -re -f lavfi -i "testsrc2=size=$SIZE:rate=$FPS"
        -f lavfi -i "sine=frequency=440:sample_rate=48000"
        -t "$DURATION"
        -c:v libx264 -preset veryfast -tune zerolatency -g 30 -pix_fmt yuv420p
        -c:a aac -b:a 96k)
}

RUN_ARGS=()
for proto in rtmp srt; do
    echo "-- $proto: create stream, publish ${DURATION}s in real time, follow the playlist ..."
    body=$("${CURL[@]}" -f -X POST -H 'Content-Type: application/json' \
        -d "{\"title\":\"bench-$proto\"}" "$URL/api/v1/live-streams") \
        || fail "$proto: POST /api/v1/live-streams failed"
    SID=$(json_field id <<<"$body")
    [[ -n $SID ]] || fail "$proto: no id in: $body"
    if [[ $proto == rtmp ]]; then
        target=$(json_field rtmp_url <<<"$body"); fmt=flv
    else
        target=$(json_field srt_url <<<"$body"); fmt=mpegts
    fi
    [[ -n $target ]] || fail "$proto: no ${proto}_url in: $body (ingest not enabled?)"
    echo "   stream $SID -> $target"

    publish_args
    t0=$(now)
    "${PUB[@]}" -f "$fmt" "$target" >"$SCRATCH/publish-$proto.log" 2>&1 &
    pub_pid=$!
    PIDS+=("$pub_pid")
    python3 "$WATCH" follow --base "$URL" --stream "$SID" --t0 "$t0" --duration "$DURATION" \
        --pub-end-file "$SCRATCH/$proto.pubend" --out "$SCRATCH/$proto.json" >"$SCRATCH/follow-$proto.log" 2>&1 &
    fol_pid=$!
    PIDS+=("$fol_pid")

    wait "$pub_pid" && prc=0 || prc=$?
    forget "$pub_pid"
    now >"$SCRATCH/$proto.pubend"
    echo "   publisher done after $(calc "$(now) - $t0") s (status $prc)"
    if ((prc != 0)); then
        log_tail "$SCRATCH/publish-$proto.log"
        fail "$proto: the publisher ffmpeg exited with status $prc"
    fi
    wait "$fol_pid" && frc=0 || frc=$?
    forget "$fol_pid"
    if ((frc != 0)); then
        log_tail "$SCRATCH/follow-$proto.log"
        log_tail "$SERVER_LOG"
        fail "$proto: following the stream failed"
    fi
    kill -0 "$SERVER_PID" 2>/dev/null || { log_tail "$SERVER_LOG"; SERVER_PID=""; fail "oxcast serve died during the $proto run"; }
    RUN_ARGS+=(--run "$proto=$SCRATCH/$proto.json")

    # Let the session end (grace period + the recording being published) before the next run,
    # so the two never share the CPU.
    deadline=$(calc "$(now) + 30")
    while :; do
        st=$("${CURL[@]}" -f "$URL/api/v1/live-streams/$SID" | json_field status) || st="?"
        [[ $st == idle ]] && break
        past "$deadline" && { echo "   note: stream still '$st' 30 s after the publisher ended"; break; }
        sleep 0.5
    done
    echo "   session ended (status $st)"
    echo
done

stop_pid "$SERVER_PID"; SERVER_PID=""

# ---------------------------------------------------------------- baseline
echo "-- baseline: ffmpeg -f hls (fMP4, ${SEGMENT_S}s segments), same source, ${#RUNG_H[@]} rungs, ${DURATION}s ..."
B="$SCRATCH/baseline"
mkdir -p "$B"
GOP=$((FPS * SEGMENT_S))
graph="[0:v]split=${#RUNG_H[@]}"
for i in "${!RUNG_H[@]}"; do graph+="[s$i]"; done
maps=() enc=() vsm=""
for i in "${!RUNG_H[@]}"; do
    h=${RUNG_H[$i]} k=$(rate_k "${RUNG_H[$i]}")
    if ((SRC_W >= SRC_H)); then graph+=";[s$i]scale=-2:$h,setsar=1[v$i]"
    else graph+=";[s$i]scale=$h:-2,setsar=1[v$i]"; fi
    maps+=(-map "[v$i]")
    enc+=("-b:v:$i" "${k}k" "-maxrate:v:$i" "$(( (k * 3 + 1) / 2 ))k" "-bufsize:v:$i" "$((k * 2))k")
    vsm+="v:$i,agroup:aud,name:${h}p "
done
vsm+="a:0,agroup:aud,name:audio"
bt0=$(now)
ffmpeg -hide_banner -nostdin -loglevel warning -y \
    -re -f lavfi -i "testsrc2=size=$SIZE:rate=$FPS" \
    -f lavfi -i "sine=frequency=440:sample_rate=48000" \
    -t "$DURATION" \
    -filter_complex "$graph" "${maps[@]}" -map 1:a \
    -c:v libx264 -preset veryfast -tune zerolatency -profile:v high -pix_fmt yuv420p "${enc[@]}" \
    -g "$GOP" -keyint_min "$GOP" -sc_threshold 0 -flags +cgop \
    -force_key_frames "expr:gte(t,n_forced*$SEGMENT_S)" \
    -c:a aac -b:a 128k -ac 2 -ar 48000 \
    -f hls -hls_time "$SEGMENT_S" -hls_list_size 0 -hls_playlist_type event \
    -hls_flags independent_segments -hls_segment_type fmp4 \
    -hls_segment_filename "$B/%v/seg-%d.m4s" -var_stream_map "$vsm" \
    -master_pl_name master.m3u8 "$B/%v/index.m3u8" >"$B/ffmpeg.log" 2>&1 &
b_pid=$!
PIDS+=("$b_pid")
python3 "$WATCH" watch-file --playlist "$B/${RUNG_H[0]}p/index.m3u8" --t0 "$bt0" \
    --stop-file "$B/.done" --out "$SCRATCH/baseline.json" >"$B/watch.log" 2>&1 &
w_pid=$!
PIDS+=("$w_pid")
wait "$b_pid" && brc=0 || brc=$?
forget "$b_pid"
touch "$B/.done"
echo "   ffmpeg done after $(calc "$(now) - $bt0") s (status $brc)"
((brc == 0)) || { log_tail "$B/ffmpeg.log"; fail "baseline ffmpeg exited with status $brc"; }
wait "$w_pid" && wrc=0 || wrc=$?
forget "$w_pid"
((wrc == 0)) || { log_tail "$B/watch.log"; fail "baseline playlist watcher failed"; }
echo

# ---------------------------------------------------------------- encoder capacity
# The live encoder's own work (decode what a publisher sends once, scale and encode both rungs
# with the same x264 settings) on a file, as fast as it can go: the headroom behind
# "encoder >= 1.0x real time". While live, the encoder is fed in real time and so reports ~1.0x
# whenever it keeps up; this shows how far above that it could go.
echo "-- encoder capacity: the live ladder encode of ${DURATION}s of published media, not real-time paced ..."
C="$SCRATCH/capacity"
mkdir -p "$C"
ffmpeg -hide_banner -nostdin -loglevel error -y \
    -f lavfi -i "testsrc2=size=$SIZE:rate=$FPS" -f lavfi -i "sine=frequency=440:sample_rate=48000" \
    -t "$DURATION" -c:v libx264 -preset veryfast -tune zerolatency -g 30 -pix_fmt yuv420p \
    -c:a aac -b:a 96k -f flv "$C/published.flv"
ct0=$(now)
ffmpeg -hide_banner -nostdin -loglevel error -y -f flv -i "$C/published.flv" \
    -filter_complex "$graph" "${maps[@]}" -map 0:a \
    -c:v libx264 -preset veryfast -tune zerolatency -profile:v high -pix_fmt yuv420p "${enc[@]}" \
    -g "$GOP" -keyint_min "$GOP" -sc_threshold 0 -flags +cgop \
    -force_key_frames "expr:gte(t,n_forced*$SEGMENT_S)" \
    -c:a aac -b:a 128k -ac 2 -ar 48000 -f null - 2>"$C/ffmpeg.log" \
    || { log_tail "$C/ffmpeg.log"; fail "capacity ffmpeg failed"; }
CAPACITY=$(calc "$DURATION / ($(now) - $ct0)")
echo "   ${DURATION}s encoded in $(calc "$(now) - $ct0") s: capacity ${CAPACITY}x real time"
echo

# ---------------------------------------------------------------- summary
mkdir -p "$OUT_DIR"
meta=$(python3 -c '
import json, sys
a = sys.argv[1:]
print(json.dumps({
    "timestamp": a[0], "ffmpeg": a[1], "nproc": int(a[2]), "uname": a[3],
    "duration_s": int(a[4]), "size": a[5], "fps": int(a[6]),
    "ladder": a[7], "segment_s": float(a[8]), "part_s": float(a[9]),
    "publisher": "ffmpeg -re lavfi testsrc2 + sine 440, libx264 veryfast zerolatency -g 30, aac 96k",
    "server_env": {"OXCAST_LIVE__RUNGS": a[10], "OXCAST_LIVE__GRACE_S": "2"},
    "notes": {
        "server": "parts/segments: server-side listing delay, ingest received media at the part end -> part listed; pooled over both video rungs",
        "client": "client-observed (includes publisher start-up and HTTP): wall time a part/segment first appeared in a blocking reload of the first variant - (publisher launch + media end)",
        "baseline": "ffmpeg -f hls, same source and load, no network: wall time a segment appeared in the 720p playlist file (50 ms polls) - (ffmpeg launch + media end)",
    },
}))' "$STAMP" "$FFMPEG_VERSION" "$NPROC" "$(uname -srm)" "$DURATION" "$SIZE" "$FPS" \
    "$(printf '%sp ' "${RUNG_H[@]}" | sed 's/ $//')" "$SEGMENT_S" "$PART_S" "$rungs_json")
python3 "$WATCH" summary "${RUN_ARGS[@]}" --baseline "$SCRATCH/baseline.json" \
    --capacity "$CAPACITY" --meta "$meta" --out "$OUT_JSON"
echo "results written to ${OUT_JSON#"$ROOT"/}"

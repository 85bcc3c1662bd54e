#!/usr/bin/env bash
# VOD benchmark: how fast does oxcast turn a finished upload into a playable ABR ladder, compared
# with the two obvious ways of driving ffmpeg by hand?
#
#   (a) four sequential ffmpeg processes, one per rung (each decodes the source again);
#   (b) one ffmpeg process that decodes once and feeds four x264 encoders through split=4;
#   (c) oxcast itself: `oxcast serve` + `oxcast upload`, timed from the moment the upload is
#       complete (status leaves `uploading`) until the video is `ready`.
#
# Usage: bench/vod.sh [--duration S] [--preset P] [--keep]
#
# Environment:
#   OXCAST_BIN       oxcast binary to use as is. Unset: `cargo build --release -p oxcast` runs
#                    first (a no-op when up to date) and <repo>/target/release/oxcast is used.
#                    It is removed from the server's environment, because every OXCAST_* variable
#                    is read as server configuration and `bin` is not a config key.
#   OXCAST_API_TOKEN if set, passed to the server (its own config) and sent as a bearer token.
#   BENCH_TIMEOUT_S  give up on (c) after this many seconds (default 60 x duration, min 600).
#
# Results are printed and written to bench/out/vod-<timestamp>.json. A missed goal is reported,
# not an error; any failing step exits non-zero.
set -euo pipefail

BENCH_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$BENCH_DIR/.." && pwd)

DURATION=60
PRESET=veryfast
KEEP=0
FPS=30
SEGMENT_S=4          # keyframe interval = oxcast's default transcode.segment_s
AUDIO_BITRATE=128k   # = oxcast's default transcode.audio_bitrate

# shellcheck source=bench/lib.sh
source "$BENCH_DIR/lib.sh"

while (($#)); do
    case "$1" in
        --duration) DURATION=${2:?--duration needs a value}; shift 2 ;;
        --duration=*) DURATION=${1#*=}; shift ;;
        --preset) PRESET=${2:?--preset needs a value}; shift 2 ;;
        --preset=*) PRESET=${1#*=}; shift ;;
        --keep) KEEP=1; shift ;;
        -h|--help) usage; exit 0 ;;
        *) echo "unknown argument: $1 (try --help)" >&2; exit 2 ;;
    esac
done
[[ $DURATION =~ ^[0-9]+([.][0-9]+)?$ ]] && awk -v d="$DURATION" 'BEGIN{exit !(d>0)}' \
    || { echo "--duration must be a positive number of seconds" >&2; exit 2; }
[[ $PRESET =~ ^(ultrafast|superfast|veryfast|faster|fast|medium|slow|slower|veryslow|placebo)$ ]] \
    || { echo "--preset must be an x264 preset name" >&2; exit 2; }

for tool in ffmpeg ffprobe curl python3; do
    command -v "$tool" >/dev/null || { echo "missing required tool: $tool" >&2; exit 1; }
done
HAVE_JQ=0
command -v jq >/dev/null && HAVE_JQ=1

# The ladder for a 1080p source: name width height bitrate(kbit/s). Same as oxcast-media's
# default LadderSpec (240p is only a fallback rung and is not used for a 1080p source).
RUNGS=(
    "1080p 1920 1080 4500"
    "720p 1280 720 2800"
    "480p 854 480 1400"
    "360p 640 360 800"
)
GOP=$((FPS * SEGMENT_S))

SCRATCH=$(mktemp -d "${TMPDIR:-/tmp}/oxcast-bench.XXXXXX")
SERVER_PID=""
UPLOAD_PID=""
STAMP=$(date -u +%Y%m%dT%H%M%SZ)
OUT_DIR="$BENCH_DIR/out"
OUT_JSON="$OUT_DIR/vod-$STAMP.json"

cleanup() {
    local rc=$?
    [[ -n $UPLOAD_PID ]] && stop_pid "$UPLOAD_PID"
    [[ -n $SERVER_PID ]] && stop_pid "$SERVER_PID"
    if ((KEEP)); then
        echo "scratch kept in $SCRATCH" >&2
    else
        rm -rf "$SCRATCH"
    fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM


# ---------------------------------------------------------------- results / JSON
A_WALL="" B_WALL="" C_WALL="" C_UPLOAD_WALL="" C_QUEUE_WAIT="" C_ERROR="" VIDEO_ID=""
SRC_DURATION="" SRC_SIZE=""
FFMPEG_VERSION=$(ffmpeg -hide_banner -version | head -n1)
NPROC=$(nproc)

xrt() { [[ -n $1 ]] && calc "$SRC_DURATION / $1" || echo ""; }

write_json() {
    mkdir -p "$OUT_DIR"
    local a_xrt b_xrt c_xrt
    a_xrt=$(xrt "$A_WALL"); b_xrt=$(xrt "$B_WALL"); c_xrt=$(xrt "$C_WALL")
    # Numbers go in as strings ("" = null) and are converted inside jq / python.
    local args=(
        "$STAMP" "$FFMPEG_VERSION" "$NPROC" "$PRESET" "$DURATION" "$SRC_DURATION" "$SRC_SIZE"
        "$A_WALL" "$a_xrt" "$B_WALL" "$b_xrt" "$C_WALL" "$c_xrt" "$C_UPLOAD_WALL"
        "$C_QUEUE_WAIT" "$VIDEO_ID" "$C_ERROR" "$(uname -srm)"
    )
    if ((HAVE_JQ)); then
        jq -n --args '
          def num: if . == "" then null else tonumber end;
          def str: if . == "" then null else . end;
          $ARGS.positional as $p
          | {timestamp: $p[0], ffmpeg: $p[1], nproc: ($p[2]|num), uname: $p[17],
             preset: $p[3], requested_duration_s: ($p[4]|num),
             source: {duration_s: ($p[5]|num), size_bytes: ($p[6]|num),
                      video: "testsrc2 1920x1080 30fps, x264 ultrafast crf 18", audio: "sine 1 kHz AAC"},
             ladder: ["1080p 4500k", "720p 2800k", "480p 1400k", "360p 800k"],
             a_sequential: {wall_s: ($p[7]|num), x_realtime: ($p[8]|num)},
             b_split4:     {wall_s: ($p[9]|num), x_realtime: ($p[10]|num)},
             c_oxcast:     {wall_s: ($p[11]|num), x_realtime: ($p[12]|num),
                            upload_wall_s: ($p[13]|num), queue_wait_s: ($p[14]|num),
                            video_id: ($p[15]|str), error: ($p[16]|str)}}
          | .speedup_c_over_a = (if .c_oxcast.x_realtime and .a_sequential.x_realtime
                                 then .c_oxcast.x_realtime / .a_sequential.x_realtime else null end)
          | .speedup_c_over_b = (if .c_oxcast.x_realtime and .b_split4.x_realtime
                                 then .c_oxcast.x_realtime / .b_split4.x_realtime else null end)
          | .goal_c_ge_095_b = (if .speedup_c_over_b then .speedup_c_over_b >= 0.95 else null end)
          | .goal_c_ge_13_a = (if .speedup_c_over_a then .speedup_c_over_a >= 1.3 else null end)
        ' "${args[@]}" >"$OUT_JSON"
    else
        python3 -c '
import json, sys
p = sys.argv[1:]
num = lambda s: float(s) if s else None
st = lambda s: s or None
d = {"timestamp": p[0], "ffmpeg": p[1], "nproc": num(p[2]), "uname": p[17],
     "preset": p[3], "requested_duration_s": num(p[4]),
     "source": {"duration_s": num(p[5]), "size_bytes": num(p[6]),
                "video": "testsrc2 1920x1080 30fps, x264 ultrafast crf 18", "audio": "sine 1 kHz AAC"},
     "ladder": ["1080p 4500k", "720p 2800k", "480p 1400k", "360p 800k"],
     "a_sequential": {"wall_s": num(p[7]), "x_realtime": num(p[8])},
     "b_split4": {"wall_s": num(p[9]), "x_realtime": num(p[10])},
     "c_oxcast": {"wall_s": num(p[11]), "x_realtime": num(p[12]), "upload_wall_s": num(p[13]),
                  "queue_wait_s": num(p[14]), "video_id": st(p[15]), "error": st(p[16])}}
a, b, c = (d[k]["x_realtime"] for k in ("a_sequential", "b_split4", "c_oxcast"))
d["speedup_c_over_a"] = c / a if a and c else None
d["speedup_c_over_b"] = c / b if b and c else None
d["goal_c_ge_095_b"] = d["speedup_c_over_b"] >= 0.95 if d["speedup_c_over_b"] else None
d["goal_c_ge_13_a"] = d["speedup_c_over_a"] >= 1.3 if d["speedup_c_over_a"] else None
json.dump(d, sys.stdout, indent=2)
print()
' "${args[@]}" >"$OUT_JSON"
    fi
    echo "results written to ${OUT_JSON#"$ROOT"/}"
}

# Fails the run: the figures measured so far are still written (with the error), exit 1.
fail() {
    echo >&2
    echo "ERROR: $*" >&2
    C_ERROR=${C_ERROR:-$*}
    if [[ -n $A_WALL || -n $B_WALL ]]; then write_json || true; fi
    exit 1
}

# JSON field access: jq when present, else python3.
json_first_video_id() { # stdin: {"videos":[...]} newest first
    if ((HAVE_JQ)); then jq -r '.videos[0].id // empty'
    else python3 -c 'import json,sys; v=json.load(sys.stdin).get("videos") or []; print(v[0]["id"] if v else "")'
    fi
}
json_video_fields() { # stdin: a video (bare or under "video"); prints "status<TAB>progress<TAB>error"
    if ((HAVE_JQ)); then jq -r '(.video // .) | [.status // "", (.progress // "" | tostring), .error // ""] | @tsv'
    else python3 -c '
import json, sys
d = json.load(sys.stdin); d = d.get("video", d)
f = lambda k: "" if d.get(k) is None else str(d.get(k))
print("\t".join((f("status"), f("progress"), f("error").replace("\t", " ").replace("\n", " "))))'
    fi
}

# ---------------------------------------------------------------- header
echo "== oxcast VOD benchmark =="
echo "ffmpeg:  $FFMPEG_VERSION"
echo "nproc:   $NPROC"
echo "preset:  $PRESET   duration: ${DURATION}s   scratch: $SCRATCH"
echo

# ---------------------------------------------------------------- source
FF=(ffmpeg -hide_banner -nostdin -loglevel error -y)
SRC="$SCRATCH/source.mp4"
echo "making source: testsrc2 1920x1080@${FPS} + sine, ${DURATION}s, x264 ultrafast crf 18 ..."
"${FF[@]}" \
    -f lavfi -i "testsrc2=size=1920x1080:rate=$FPS:duration=$DURATION" \
    -f lavfi -i "sine=frequency=1000:sample_rate=48000:duration=$DURATION" \
    -map 0:v -map 1:a \
    -c:v libx264 -preset ultrafast -crf 18 -pix_fmt yuv420p \
    -c:a aac -b:a 192k -ac 2 \
    -shortest -movflags +faststart "$SRC" 2>"$SCRATCH/source.log" \
    || { log_tail "$SCRATCH/source.log"; fail "could not make the source"; }
SRC_DURATION=$(ffprobe -v error -show_entries format=duration -of default=nw=1:nk=1 "$SRC")
SRC_SIZE=$(stat -c %s "$SRC")
echo "source:  $(calc "$SRC_DURATION") s, $(calc "$SRC_SIZE / 1048576") MiB"
echo

# Encoder settings shared by (a) and (b): same preset, CBR-ish VBV (maxrate 1.5x, bufsize 2x),
# a closed GOP of exactly SEGMENT_S seconds with scene-cut keyframes off, yuv420p.
x264_args() { # kbit/s
    local k=$1
    echo "-c:v libx264 -preset $PRESET -pix_fmt yuv420p -b:v ${k}k -maxrate $((k * 3 / 2))k" \
        "-bufsize $((k * 2))k -g $GOP -keyint_min $GOP -sc_threshold 0 -flags +cgop"
}
# Fragmented MP4 (CMAF-style) into the scratch dir; the files are only there to be thrown away.
FRAG=(-f mp4 -movflags +frag_keyframe+empty_moov+default_base_moof)
# Audio is encoded ONCE per run, as its own audio-only output (like a CMAF audio track):
# in (a) by the first (1080p) process, in (b) by the single process.
AUDIO=(-map 0:a -vn -c:a aac -b:a "$AUDIO_BITRATE" -ac 2)

print_result() { # label wall
    printf '%-34s wall %8.2f s   %6.2f x realtime\n' "$1" "$2" "$(xrt "$2")"
}

# ---------------------------------------------------------------- (a) four processes
echo "(a) four sequential ffmpeg processes, one per rung ..."
mkdir -p "$SCRATCH/a"
t0=$(now)
first=1
for r in "${RUNGS[@]}"; do
    read -r name w h k <<<"$r"
    extra=()
    if ((first)); then extra=("${AUDIO[@]}" "${FRAG[@]}" "$SCRATCH/a/audio.mp4"); first=0; fi
    # shellcheck disable=SC2046 # x264_args is split on purpose
    "${FF[@]}" -i "$SRC" \
        -map 0:v -an -vf "scale=$w:$h" $(x264_args "$k") "${FRAG[@]}" "$SCRATCH/a/$name.mp4" \
        "${extra[@]}" 2>"$SCRATCH/a/$name.log" \
        || { log_tail "$SCRATCH/a/$name.log"; fail "(a) ffmpeg failed for $name"; }
    echo "    $name done ($(calc "$(now) - $t0") s)"
done
A_WALL=$(calc "$(now) - $t0")
print_result "(a) 4 x ffmpeg, sequential" "$A_WALL"
echo

# ---------------------------------------------------------------- (b) one process, split=4
echo "(b) one ffmpeg process, decode once, split=4 -> four x264 encoders ..."
mkdir -p "$SCRATCH/b"
graph="[0:v]split=${#RUNGS[@]}"
for i in "${!RUNGS[@]}"; do graph+="[s$i]"; done
outs=()
for i in "${!RUNGS[@]}"; do
    read -r name w h k <<<"${RUNGS[$i]}"
    graph+=";[s$i]scale=$w:$h[v$i]"
    # shellcheck disable=SC2207
    outs+=(-map "[v$i]" -an $(x264_args "$k") "${FRAG[@]}" "$SCRATCH/b/$name.mp4")
done
t0=$(now)
"${FF[@]}" -i "$SRC" -filter_complex "$graph" "${outs[@]}" \
    "${AUDIO[@]}" "${FRAG[@]}" "$SCRATCH/b/audio.mp4" 2>"$SCRATCH/b/ffmpeg.log" \
    || { log_tail "$SCRATCH/b/ffmpeg.log"; fail "(b) ffmpeg failed"; }
B_WALL=$(calc "$(now) - $t0")
print_result "(b) 1 x ffmpeg, split=4" "$B_WALL"
echo

# ---------------------------------------------------------------- (c) oxcast
echo "(c) oxcast: upload complete -> ready ..."
oxcast_bin "(c) "
echo "    binary: $BIN"

PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()')
URL="http://127.0.0.1:$PORT"
CURL=(curl -sS --max-time 10)
[[ -n ${OXCAST_API_TOKEN:-} ]] && CURL+=(-H "Authorization: Bearer $OXCAST_API_TOKEN")
mkdir -p "$SCRATCH/data"

# Every OXCAST_* variable is server config (unknown keys are errors): drop OXCAST_BIN.
env -u OXCAST_BIN OXCAST_TRANSCODE__PRESET="$PRESET" \
    "$BIN" serve --listen "127.0.0.1:$PORT" --data-dir "$SCRATCH/data" \
    >"$SCRATCH/server.log" 2>&1 &
SERVER_PID=$!
echo "    server pid $SERVER_PID on $URL (log: server.log in scratch)"

deadline=$(calc "$(now) + 60")
until [[ $("${CURL[@]}" -o /dev/null -w '%{http_code}' "$URL/healthz" 2>/dev/null || true) == 200 ]]; do
    if ! kill -0 "$SERVER_PID" 2>/dev/null; then
        wait "$SERVER_PID" && rc=0 || rc=$?
        SERVER_PID=""
        log_tail "$SCRATCH/server.log"
        fail "(c) oxcast serve exited (status $rc) before GET /healthz answered 200"
    fi
    awk -v n="$(now)" -v d="$deadline" 'BEGIN{exit !(n>d)}' \
        && { log_tail "$SCRATCH/server.log"; fail "(c) GET $URL/healthz did not answer 200 within 60 s"; }
    sleep 0.1
done
echo "    healthz 200"

# The upload runs in the background while this shell watches the API, so the measurement works
# whether or not the CLI itself waits for processing to finish.
t_up=$(now)
env -u OXCAST_BIN "$BIN" upload "$SRC" --server "$URL" --title bench \
    >"$SCRATCH/upload.log" 2>&1 &
UPLOAD_PID=$!

TIMEOUT_S=${BENCH_TIMEOUT_S:-$(awk -v d="$DURATION" 'BEGIN{t=60*d; if (t<600) t=600; printf "%d", t}')}
deadline=$(calc "$(now) + $TIMEOUT_S")
upload_rc=""
t_queued="" t_processing="" t_ready=""
last_status=""
while :; do
    t=$(now)
    awk -v n="$t" -v d="$deadline" 'BEGIN{exit !(n>d)}' \
        && fail "(c) video ${VIDEO_ID:-?} not ready after ${TIMEOUT_S}s (last status: ${last_status:-none})"
    kill -0 "$SERVER_PID" 2>/dev/null \
        || { log_tail "$SCRATCH/server.log"; SERVER_PID=""; fail "(c) oxcast serve died during the run"; }
    if [[ -z $upload_rc && -n $UPLOAD_PID ]] && ! kill -0 "$UPLOAD_PID" 2>/dev/null; then
        wait "$UPLOAD_PID" && upload_rc=0 || upload_rc=$?
        UPLOAD_PID=""
        if ((upload_rc != 0)); then
            log_tail "$SCRATCH/upload.log"
            fail "(c) oxcast upload exited with status $upload_rc"
        fi
    fi
    if [[ -z $VIDEO_ID ]]; then
        # Fresh data dir: the newest video is ours.
        VIDEO_ID=$("${CURL[@]}" -f "$URL/api/v1/videos" 2>/dev/null | json_first_video_id || true)
        [[ -n $VIDEO_ID ]] && echo "    video id $VIDEO_ID"
    fi
    if [[ -n $VIDEO_ID ]]; then
        body=$("${CURL[@]}" -f "$URL/api/v1/videos/$VIDEO_ID") \
            || fail "(c) GET /api/v1/videos/$VIDEO_ID failed"
        IFS=$'\t' read -r status progress verror < <(json_video_fields <<<"$body") || true
        [[ -n $status ]] || fail "(c) GET /api/v1/videos/$VIDEO_ID: no status in: $body"
        if [[ $status != uploading && -z $t_queued ]]; then
            t_queued=$t
            C_UPLOAD_WALL=$(calc "$t - $t_up")
            printf '\n    upload complete after %s s, status %s\n' "$C_UPLOAD_WALL" "$status"
        fi
        [[ $status == processing && -z $t_processing ]] && t_processing=$t
        case "$status" in
            ready) t_ready=$t; break ;;
            failed) echo; fail "(c) video $VIDEO_ID failed: ${verror:-<no error given>}" ;;
            uploading|queued|processing) ;;
            *) fail "(c) unexpected status '$status' for video $VIDEO_ID" ;;
        esac
        if [[ -t 1 ]]; then
            printf '\r    %-10s progress %-8s %6.1f s' "$status" "${progress:-?}" "$(calc "$t - $t_up")"
        elif [[ $status != "$last_status" ]]; then
            printf '    %-10s at %6.1f s\n' "$status" "$(calc "$t - $t_up")"
        fi
        last_status=$status
    elif [[ $upload_rc == 0 ]]; then
        log_tail "$SCRATCH/upload.log"
        fail "(c) upload finished but GET /api/v1/videos lists no video"
    fi
    sleep 0.2
done
echo
C_WALL=$(calc "$t_ready - $t_queued")
[[ -n $t_processing ]] && C_QUEUE_WAIT=$(calc "$t_processing - $t_queued")
if [[ -n $UPLOAD_PID ]]; then
    # The CLI may still be printing its final lines; give it a moment, it must succeed.
    for _ in $(seq 100); do kill -0 "$UPLOAD_PID" 2>/dev/null || break; sleep 0.1; done
    if kill -0 "$UPLOAD_PID" 2>/dev/null; then
        echo "    note: oxcast upload still running 10 s after ready; stopping it"
        stop_pid "$UPLOAD_PID"
    else
        wait "$UPLOAD_PID" && upload_rc=0 || upload_rc=$?
        ((upload_rc == 0)) || { log_tail "$SCRATCH/upload.log"; UPLOAD_PID=""; fail "(c) oxcast upload exited with status $upload_rc"; }
    fi
    UPLOAD_PID=""
fi
print_result "(c) oxcast upload-complete->ready" "$C_WALL"
echo "    (not in (c): the upload itself, ${C_UPLOAD_WALL:-?} s; in (c): queue wait before processing, ${C_QUEUE_WAIT:-?} s)"
stop_pid "$SERVER_PID"; SERVER_PID=""
echo

# ---------------------------------------------------------------- summary
A_XRT=$(xrt "$A_WALL"); B_XRT=$(xrt "$B_WALL"); C_XRT=$(xrt "$C_WALL")
C_OVER_A=$(calc "$C_XRT / $A_XRT"); C_OVER_B=$(calc "$C_XRT / $B_XRT")
passfail() { awk -v x="$1" -v y="$2" 'BEGIN { print (x >= y ? "PASS" : "FAIL") }'; }
echo "== summary (source $(calc "$SRC_DURATION") s, preset $PRESET, nproc $NPROC) =="
print_result "(a) 4 x ffmpeg, sequential" "$A_WALL"
print_result "(b) 1 x ffmpeg, split=4" "$B_WALL"
print_result "(c) oxcast upload-complete->ready" "$C_WALL"
printf 'speedup c/a: %.2fx   speedup c/b: %.2fx\n' "$C_OVER_A" "$C_OVER_B"
echo "goal c >= 0.95*b: $(passfail "$C_OVER_B" 0.95)"
echo "goal c >= 1.3*a: $(passfail "$C_OVER_A" 1.3)"
write_json

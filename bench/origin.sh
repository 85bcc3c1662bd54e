#!/usr/bin/env bash
# Origin benchmark: oxcast's VOD playback origin (`GET /v/{id}/...`) against nginx serving the
# same published files as static files, on this machine, in one run.
#
#   One `oxcast serve` (all roles, fresh data dir) gets a ~12 s 1080p30 test pattern uploaded with
#   `oxcast upload` and processes it to `ready`. One nginx (a non-daemon child of this script:
#   master + 2 workers, sendfile, open_file_cache, access log off) serves that data dir's
#   objects/videos/ under `location /v/`, so both servers answer the same URL paths from the same
#   files. wrk then measures the two in turn (alternating which goes first) on four requests:
#
#     1. master.m3u8                            goal: oxcast >= 0.8x nginx req/s
#     2. the 1080p (else first) media playlist  goal: oxcast >= 0.8x nginx req/s
#     3. the largest 1080p segment (~2 MB)      goal: oxcast >= 0.8x nginx req/s
#     4. a 64 KiB Range of that segment         goal: oxcast >= 0.8x nginx bytes/s
#        (Range: bytes=65536-131071; both must answer 206 with 65536 bytes)
#
#   Before measuring, curl fetches each URL from both servers and checks status, length, content
#   type and that the bytes are the file's; wrong answers stop the script, missing headers are
#   reported. wrk, nginx and oxcast all share the same cores (printed), so each figure is what a
#   server does with the CPU that wrk leaves it.
#
# Usage: bench/origin.sh [--seconds S] [--connections C] [--keep]
#
#   --seconds S      length of each wrk run (default 10); 8 runs in all
#   --connections C  wrk connections, over 2 threads (default 100)
#   --keep           keep the scratch dir (source, data dir, nginx.conf, logs, wrk outputs)
#
# Environment:
#   OXCAST_BIN       oxcast binary to use as is. Unset: `cargo build --release -p oxcast` runs
#                    first (a no-op when up to date) and <repo>/target/release/oxcast is used.
#                    It is removed from the server's environment, because every OXCAST_* variable
#                    is read as server configuration and `bin` is not a config key.
#   OXCAST_API_TOKEN if set, passed to the server (its own config) and to `oxcast upload`/curl.
#   BENCH_TIMEOUT_S  give up when the video is not ready after this many seconds (default 600).
#
# Requires ffmpeg/ffprobe (libx264), curl, python3; nginx and wrk are installed with apt-get
# when missing. Results are printed and written to bench/out/origin-<timestamp>.json (the server
# log is copied next to it). A missed goal is reported, not an error; any failing step exits
# non-zero.
set -euo pipefail

BENCH_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$BENCH_DIR/.." && pwd)

RUN_S=10          # not SECONDS: that one is bash's own clock
CONNECTIONS=100
THREADS=2
KEEP=0
SRC_S=12          # three 4 s segments at oxcast's default transcode.segment_s
FPS=30
RANGE_SPEC="bytes=65536-131071"
RANGE_OFF=65536
RANGE_LEN=65536
GOAL=0.8

# shellcheck source=bench/lib.sh
source "$BENCH_DIR/lib.sh"

while (($#)); do
    case "$1" in
        --seconds) RUN_S=${2:?--seconds needs a value}; shift 2 ;;
        --seconds=*) RUN_S=${1#*=}; shift ;;
        --connections) CONNECTIONS=${2:?--connections needs a value}; shift 2 ;;
        --connections=*) CONNECTIONS=${1#*=}; shift ;;
        --keep) KEEP=1; shift ;;
        -h|--help) usage; exit 0 ;;
        *) echo "unknown argument: $1 (try --help)" >&2; exit 2 ;;
    esac
done
if ! [[ $RUN_S =~ ^[0-9]+$ ]] || ((RUN_S < 1)); then
    echo "--seconds must be a whole number of seconds, at least 1" >&2; exit 2
fi
if ! [[ $CONNECTIONS =~ ^[0-9]+$ ]] || ((CONNECTIONS < THREADS)); then
    echo "--connections must be a whole number, at least $THREADS (wrk's threads)" >&2; exit 2
fi
RUN_S=$((10#$RUN_S)) CONNECTIONS=$((10#$CONNECTIONS))

for tool in ffmpeg ffprobe curl python3; do
    command -v "$tool" >/dev/null || { echo "missing required tool: $tool" >&2; exit 1; }
done

# ---------------------------------------------------------------- nginx and wrk
find_nginx() { # Debian keeps nginx in /usr/sbin, which a user's PATH may lack
    NGINX=$(command -v nginx 2>/dev/null || true)
    [[ -z $NGINX && -x /usr/sbin/nginx ]] && NGINX=/usr/sbin/nginx
    return 0
}
find_nginx
missing=()
[[ -n $NGINX ]] || missing+=(nginx)
command -v wrk >/dev/null || missing+=(wrk)
if ((${#missing[@]})); then
    command -v apt-get >/dev/null \
        || { echo "missing ${missing[*]} and no apt-get to install them with" >&2; exit 1; }
    sudo_cmd=()
    if [[ $(id -u) -ne 0 ]]; then
        command -v sudo >/dev/null \
            || { echo "missing ${missing[*]}: need root or sudo to install them" >&2; exit 1; }
        sudo_cmd=(sudo)
    fi
    "${sudo_cmd[@]}" apt-get update -qq
    pkgs=()
    for p in "${missing[@]}"; do
        # nginx-light (Debian 12 and older) is the small build; newer releases only have nginx.
        if [[ $p == nginx ]] && apt-cache show nginx-light >/dev/null 2>&1; then p=nginx-light; fi
        pkgs+=("$p")
    done
    echo "installing ${pkgs[*]} ..."
    # env after sudo: sudo would drop a DEBIAN_FRONTEND set in front of it.
    "${sudo_cmd[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
        --no-install-recommends "${pkgs[@]}" >/dev/null
    find_nginx
    [[ -n $NGINX ]] || { echo "nginx still not found after installing ${pkgs[*]}" >&2; exit 1; }
    command -v wrk >/dev/null || { echo "wrk still not found after installing it" >&2; exit 1; }
fi

# ---------------------------------------------------------------- scratch, cleanup
SCRATCH=$(mktemp -d "${TMPDIR:-/tmp}/oxcast-origin-bench.XXXXXX")
SERVER_PID=""
NGINX_PID=""
STAMP=$(date -u +%Y%m%dT%H%M%SZ)
OUT_DIR="$BENCH_DIR/out"
OUT_JSON="$OUT_DIR/origin-$STAMP.json"
SERVER_LOG="$SCRATCH/server.log"
NGINX_DIR="$SCRATCH/nginx"
NGINX_LOG="$NGINX_DIR/error.log"
RESULTS="$SCRATCH/results.tsv"   # test <TAB> server <TAB> field <TAB> value
PROBLEMS=()
ERROR=""
: >"$RESULTS"

log_lines() { # WARN/ERROR lines of the oxcast log (colour codes stripped), the nginx error log
    if [[ $1 == oxcast ]]; then
        [[ ! -f $SERVER_LOG ]] || sed 's/\x1b\[[0-9;]*m//g' "$SERVER_LOG" | grep -E '\b(WARN|ERROR)\b' || true
    else
        [[ ! -f $NGINX_LOG ]] || grep -v '^$' "$NGINX_LOG" || true
    fi
}

report_logs() {
    local who lines
    for who in oxcast nginx; do
        lines=$(log_lines "$who")
        if [[ -z $lines ]]; then
            echo "$who log: no warnings or errors"
        else
            echo "$who log: $(wc -l <<<"$lines") warning/error lines:"
            head -n 40 <<<"$lines" | sed 's/^/  /'
            (($(wc -l <<<"$lines") > 40)) && echo "  ... (more in the log)"
        fi
    done
    return 0
}

cleanup() {
    local rc=$?
    [[ -n $NGINX_PID ]] && stop_pid "$NGINX_PID"
    [[ -n $SERVER_PID ]] && stop_pid "$SERVER_PID"
    if [[ -f $SERVER_LOG ]]; then
        mkdir -p "$OUT_DIR"
        cp "$SERVER_LOG" "$OUT_DIR/origin-$STAMP-server.log" 2>/dev/null || true
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

put() { printf '%s\t%s\t%s\t%s\n' "$1" "$2" "$3" "$4" >>"$RESULTS"; } # test server field value
get() { awk -F'\t' -v t="$1" -v s="$2" -v f="$3" '$1==t && $2==s && $3==f { v=$4 } END { print v }' "$RESULTS"; }
problem() { PROBLEMS+=("$*"); echo "    PROBLEM: $*"; }

# ---------------------------------------------------------------- JSON
meta() { put meta - "$1" "$2"; } # key value

write_json() {
    mkdir -p "$OUT_DIR"
    local problems_file="$SCRATCH/problems.txt" logs_file="$SCRATCH/loglines.txt"
    meta error "$ERROR"
    printf '%s\n' "${PROBLEMS[@]}" >"$problems_file"
    { log_lines oxcast | sed 's/^/oxcast\t/'; log_lines nginx | sed 's/^/nginx\t/'; } >"$logs_file"
    python3 - "$RESULTS" "$problems_file" "$logs_file" "$OUT_JSON" <<'PY'
import json, sys
results, problems, logs, out = sys.argv[1:5]
TEXT = {"path", "range", "request", "goal", "result", "first", "socket_errors_detail"}
def num(s):
    if s == "":
        return None
    try:
        return int(s)
    except ValueError:
        pass
    try:
        return float(s)
    except ValueError:
        return s
meta, tests = {}, {}
for line in open(results):
    t, s, f, v = line.rstrip("\n").split("\t", 3)
    if t == "meta":
        meta[f] = v if v != "" else None
        continue
    d = tests.setdefault(t, {"id": int(t)})
    if s != "-":
        d = d.setdefault(s, {})
    d[f] = v if f in TEXT else num(v)
for k in ("nproc", "seconds", "connections", "threads", "goal_ratio", "busy_cores_before",
          "segment_bytes", "ready_after_s"):
    if k in meta:
        meta[k] = num(meta[k] or "")
log_lines = {"oxcast": [], "nginx": []}
for line in open(logs):
    who, text = line.rstrip("\n").split("\t", 1)
    log_lines[who].append(text)
doc = dict(meta)
doc["tests"] = [tests[k] for k in sorted(tests, key=int)]
doc["problems"] = [p for p in open(problems).read().splitlines() if p]
doc["log_lines"] = log_lines
with open(out, "w") as f:
    json.dump(doc, f, indent=2)
    f.write("\n")
PY
    echo "results written to ${OUT_JSON#"$ROOT"/}"
}

fail() {
    echo >&2
    echo "ERROR: $*" >&2
    ERROR=${ERROR:-$*}
    if [[ -s $RESULTS ]]; then write_json || true; fi
    exit 1
}

# ---------------------------------------------------------------- header
NPROC=$(nproc)
CPU_MODEL=$(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo 2>/dev/null || true)
NGINX_VERSION=$("$NGINX" -v 2>&1 | sed 's/^nginx version: //')
WRK_VERSION=$(wrk --version 2>&1 | head -n1 | sed 's/ *Copyright.*//' || true)
FFMPEG_VERSION=$(ffmpeg -hide_banner -version | head -n1)
CLK_TCK=$(getconf CLK_TCK)
echo "== oxcast origin vs nginx =="
echo "nproc:   $NPROC (${CPU_MODEL:-unknown CPU})"
echo "nginx:   $NGINX_VERSION ($NGINX)"
echo "wrk:     $WRK_VERSION"
echo "ffmpeg:  $FFMPEG_VERSION"
echo "runs:    wrk -t$THREADS -c$CONNECTIONS -d${RUN_S}s --latency, 4 requests x 2 servers"
echo "note:    wrk and both servers share the same $NPROC cores (the server not being measured idles)"
echo "scratch: $SCRATCH"
echo
meta timestamp "$STAMP"; meta uname "$(uname -srm)"; meta nproc "$NPROC"; meta cpu "$CPU_MODEL"
meta nginx "$NGINX_VERSION"; meta wrk "$WRK_VERSION"; meta ffmpeg "$FFMPEG_VERSION"
meta seconds "$RUN_S"; meta connections "$CONNECTIONS"; meta threads "$THREADS"; meta goal_ratio "$GOAL"
meta shared_cores "wrk, nginx and oxcast run on the same $NPROC cores"
meta source "testsrc2 1920x1080 ${FPS}fps + 1 kHz sine, ${SRC_S}s, x264 ultrafast crf 18, AAC"

# ---------------------------------------------------------------- source
SRC="$SCRATCH/source.mp4"
echo "making source: testsrc2 1920x1080@$FPS + sine, ${SRC_S}s, x264 ultrafast crf 18 ..."
ffmpeg -hide_banner -nostdin -loglevel error -y \
    -f lavfi -i "testsrc2=size=1920x1080:rate=$FPS:duration=$SRC_S" \
    -f lavfi -i "sine=frequency=1000:sample_rate=48000:duration=$SRC_S" \
    -map 0:v -map 1:a \
    -c:v libx264 -preset ultrafast -crf 18 -pix_fmt yuv420p \
    -c:a aac -b:a 192k -ac 2 \
    -shortest -movflags +faststart "$SRC" 2>"$SCRATCH/source.log" \
    || { log_tail "$SCRATCH/source.log"; fail "could not make the source"; }
echo "source:  $(calc "$(stat -c %s "$SRC") / 1048576") MiB"

# ---------------------------------------------------------------- oxcast
oxcast_bin ""
echo "binary:  $BIN"
meta oxcast_bin "$BIN"

read -r PORT RTMP_PORT SRT_PORT NGINX_PORT < <(python3 -c '
import socket
held = []
def free(kind):
    s = socket.socket(socket.AF_INET, kind); s.bind(("127.0.0.1", 0)); held.append(s)
    return s.getsockname()[1]
print(free(socket.SOCK_STREAM), free(socket.SOCK_STREAM), free(socket.SOCK_DGRAM),
      free(socket.SOCK_STREAM))')
OX_URL="http://127.0.0.1:$PORT"
NG_URL="http://127.0.0.1:$NGINX_PORT"
CURL=(curl -sS --max-time 10)
API=("${CURL[@]}")
[[ -n ${OXCAST_API_TOKEN:-} ]] && API+=(-H "Authorization: Bearer $OXCAST_API_TOKEN")
DATA="$SCRATCH/data"
mkdir -p "$DATA"

# Every OXCAST_* variable is server config (unknown keys are errors): drop OXCAST_BIN. The
# ultrafast preset only makes processing quick: segment sizes come from the ladder's bitrates.
env -u OXCAST_BIN \
    OXCAST_TRANSCODE__PRESET=ultrafast \
    OXCAST_LIVE__RTMP_LISTEN="127.0.0.1:$RTMP_PORT" \
    OXCAST_LIVE__SRT_LISTEN="127.0.0.1:$SRT_PORT" \
    "$BIN" serve --listen "127.0.0.1:$PORT" --data-dir "$DATA" >"$SERVER_LOG" 2>&1 &
SERVER_PID=$!
echo "oxcast:  pid $SERVER_PID on $OX_URL (log: server.log in scratch)"

server_alive() {
    kill -0 "$SERVER_PID" 2>/dev/null && return 0
    local rc
    wait "$SERVER_PID" && rc=0 || rc=$?
    SERVER_PID=""
    log_tail "$SERVER_LOG"
    fail "oxcast serve exited (status $rc) $1"
}

deadline=$(calc "$(now) + 60")
until [[ $("${CURL[@]}" -o /dev/null -w '%{http_code}' "$OX_URL/healthz" 2>/dev/null || true) == 200 ]]; do
    server_alive "before GET /healthz answered 200"
    past "$deadline" && { log_tail "$SERVER_LOG"; fail "GET $OX_URL/healthz did not answer 200 within 60 s"; }
    sleep 0.1
done

echo "uploading with oxcast upload --no-wait ..."
up_args=(--server "$OX_URL" --title bench-origin --no-wait)
[[ -n ${OXCAST_API_TOKEN:-} ]] && up_args+=(--token "$OXCAST_API_TOKEN")
t0=$(now)
env -u OXCAST_BIN timeout 300 "$BIN" upload "$SRC" "${up_args[@]}" >"$SCRATCH/upload.log" 2>&1 \
    || { log_tail "$SCRATCH/upload.log"; fail "oxcast upload failed (or took over 300 s)"; }

TIMEOUT_S=${BENCH_TIMEOUT_S:-600}
deadline=$(calc "$(now) + $TIMEOUT_S")
VIDEO_ID=""
status=""
while :; do
    server_alive "while the video was processed"
    past "$deadline" && fail "video ${VIDEO_ID:-?} not ready after ${TIMEOUT_S}s (last status: ${status:-none})"
    if [[ -z $VIDEO_ID ]]; then
        # Fresh data dir: the only video is ours.
        VIDEO_ID=$("${API[@]}" -f "$OX_URL/api/v1/videos" 2>/dev/null \
            | python3 -c 'import json,sys; v=json.load(sys.stdin).get("videos") or []; print(v[0]["id"] if v else "")' \
            || true)
    fi
    if [[ -n $VIDEO_ID ]]; then
        body=$("${API[@]}" -f "$OX_URL/api/v1/videos/$VIDEO_ID") \
            || fail "GET /api/v1/videos/$VIDEO_ID failed"
        status=$(json_field status <<<"$body")
        case "$status" in
            ready) break ;;
            failed) fail "video $VIDEO_ID failed: $(json_field error <<<"$body")" ;;
            uploading|queued|processing) ;;
            *) fail "unexpected status '$status' for video $VIDEO_ID" ;;
        esac
    fi
    sleep 0.5
done
READY_AFTER=$(calc "$(now) - $t0")
echo "video:   $VIDEO_ID ready $READY_AFTER s after the upload started"
meta video_id "$VIDEO_ID"; meta ready_after_s "$READY_AFTER"

# ---------------------------------------------------------------- the objects
VDIR="$DATA/objects/videos/$VIDEO_ID"
[[ -f $VDIR/master.m3u8 ]] || fail "no $VDIR/master.m3u8: the published objects are not where expected"
echo "published objects (objects/videos/$VIDEO_ID/):"
(cd "$VDIR" && find . -type f -printf '%P %s\n' | sort | awk '{ printf "  %-22s %9d B\n", $1, $2 }')
if [[ -f $VDIR/1080p/index.m3u8 ]]; then
    REND=1080p
else
    # The first variant of the master playlist.
    first=$(grep -v '^#' "$VDIR/master.m3u8" | grep -m1 . || true)
    REND=${first%/index.m3u8}
    [[ -n $first && $REND != "$first" && -f $VDIR/$REND/index.m3u8 ]] \
        || fail "no 1080p rendition and no <rendition>/index.m3u8 as master.m3u8's first variant"
    echo "note: no 1080p rendition; using the first variant, $REND"
fi
read -r SEG_SIZE SEG < <(find "$VDIR/$REND" -maxdepth 1 -name 'seg-*.m4s' -printf '%s %f\n' | sort -nr | head -n1) \
    || fail "no seg-*.m4s in $VDIR/$REND"
((SEG_SIZE >= RANGE_OFF + RANGE_LEN)) || fail "$REND/$SEG is only $SEG_SIZE bytes: too small for $RANGE_SPEC"
echo "segment: $REND/$SEG, $SEG_SIZE B (the largest of $REND)"
meta rendition "$REND"; meta segment "$REND/$SEG"; meta segment_bytes "$SEG_SIZE"

TEST_NAME=("" "master playlist" "media playlist" "segment" "segment, 64 KiB range")
TEST_PATH=("" master.m3u8 "$REND/index.m3u8" "$REND/$SEG" "$REND/$SEG")
TEST_RANGE=("" "" "" "" "$RANGE_SPEC")
TEST_GOAL=("" req_s req_s req_s bytes_s)
for t in 1 2 3 4; do
    put "$t" - request "${TEST_NAME[$t]}"
    put "$t" - path "/v/$VIDEO_ID/${TEST_PATH[$t]}"
    put "$t" - range "${TEST_RANGE[$t]}"
    put "$t" - file_bytes "$(stat -c %s "$VDIR/${TEST_PATH[$t]}")"
    put "$t" - goal "oxcast >= ${GOAL}x nginx ${TEST_GOAL[$t]/_s//s}"
done

# ---------------------------------------------------------------- nginx
mkdir -p "$NGINX_DIR/tmp"
user_line=""
# As root the workers would run as nobody, who cannot enter the (0700) scratch dir.
[[ $(id -u) -eq 0 ]] && user_line="user root;"
cat >"$NGINX_DIR/nginx.conf" <<EOF
# Written by bench/origin.sh; nginx runs in the foreground as the script's child.
daemon off;
master_process on;
worker_processes 2;
$user_line
pid $NGINX_DIR/nginx.pid;
error_log $NGINX_LOG warn;
events { worker_connections 4096; }
http {
    # The content types oxcast's origin sends (crates/api/src/origin).
    types {
        application/vnd.apple.mpegurl m3u8;
        application/dash+xml mpd;
        video/mp4 mp4;
        video/iso.segment m4s;
        image/jpeg jpg;
    }
    default_type application/octet-stream;
    access_log off;
    sendfile on;
    tcp_nopush on;
    tcp_nodelay on;
    # hyper (oxcast) has no limit on requests per connection; nginx's default is 1000.
    keepalive_requests 1000000;
    open_file_cache max=1000 inactive=60s;
    open_file_cache_valid 60s;
    open_file_cache_errors on;
    client_body_temp_path $NGINX_DIR/tmp/body;
    proxy_temp_path $NGINX_DIR/tmp/proxy;
    fastcgi_temp_path $NGINX_DIR/tmp/fastcgi;
    uwsgi_temp_path $NGINX_DIR/tmp/uwsgi;
    scgi_temp_path $NGINX_DIR/tmp/scgi;
    server {
        listen 127.0.0.1:$NGINX_PORT;
        server_tokens off;
        location /v/ {
            alias $DATA/objects/videos/;
            # What an origin for browsers sends, as oxcast does.
            add_header Cache-Control "public, max-age=31536000, immutable";
            add_header Access-Control-Allow-Origin "*";
        }
    }
}
EOF
"$NGINX" -p "$NGINX_DIR" -e "$NGINX_LOG" -c "$NGINX_DIR/nginx.conf" -t >"$NGINX_DIR/test.log" 2>&1 \
    || { log_tail "$NGINX_DIR/test.log"; fail "nginx -t rejected $NGINX_DIR/nginx.conf"; }
"$NGINX" -p "$NGINX_DIR" -e "$NGINX_LOG" -c "$NGINX_DIR/nginx.conf" >"$NGINX_DIR/stdout.log" 2>&1 &
NGINX_PID=$!
deadline=$(calc "$(now) + 10")
until [[ $("${CURL[@]}" -o /dev/null -w '%{http_code}' "$NG_URL/v/$VIDEO_ID/master.m3u8" 2>/dev/null || true) == 200 ]]; do
    if ! kill -0 "$NGINX_PID" 2>/dev/null; then
        NGINX_PID=""
        log_tail "$NGINX_LOG"
        fail "nginx exited before it answered GET /v/$VIDEO_ID/master.m3u8 with 200"
    fi
    past "$deadline" && { log_tail "$NGINX_LOG"; fail "nginx did not answer GET /v/$VIDEO_ID/master.m3u8 with 200 within 10 s"; }
    sleep 0.1
done
echo "nginx:   pid $NGINX_PID on $NG_URL, location /v/ -> objects/videos/"
echo

# ---------------------------------------------------------------- checks
hdr() { # headers-file name -> the first such header's value
    tr -d '\r' <"$1" | awk -v k="$2" 'index(tolower($0), tolower(k) ":") == 1 { sub(/^[^:]*:[ \t]*/, ""); print; exit }'
}
url_of() { # server path -> URL
    if [[ $1 == oxcast ]]; then echo "$OX_URL/v/$VIDEO_ID/$2"; else echo "$NG_URL/v/$VIDEO_ID/$2"; fi
}

echo "checking every response with curl (no Accept-Encoding, as wrk):"
for t in 1 2 3 4; do
    path=${TEST_PATH[$t]} range=${TEST_RANGE[$t]} file="$VDIR/${TEST_PATH[$t]}"
    case ${path##*.} in
        m3u8) ctype_want=application/vnd.apple.mpegurl ;;
        m4s) ctype_want=video/iso.segment ;;
        *) ctype_want=unknown ;;
    esac
    if [[ -n $range ]]; then want_status=206 want_len=$RANGE_LEN; else want_status=200 want_len=$(stat -c %s "$file"); fi
    for srv in oxcast nginx; do
        rargs=()
        [[ -n $range ]] && rargs=(-H "Range: $range")
        out=$("${CURL[@]}" -o "$SCRATCH/body" -D "$SCRATCH/headers" -w '%{http_code} %{size_download} %{size_header}' \
            "${rargs[@]}" "$(url_of "$srv" "$path")") || fail "$srv: GET /v/$VIDEO_ID/$path failed"
        read -r code got hsize <<<"$out"
        [[ $code == "$want_status" ]] || fail "$srv: GET $path${range:+ ($range)} answered $code, not $want_status"
        [[ $got == "$want_len" ]] || fail "$srv: GET $path${range:+ ($range)}: $got bytes, not $want_len"
        if [[ -n $range ]]; then
            cmp -s "$SCRATCH/body" <(tail -c +$((RANGE_OFF + 1)) "$file" | head -c "$RANGE_LEN") \
                || fail "$srv: GET $path ($range): the bytes are not the file's"
        else
            cmp -s "$SCRATCH/body" "$file" || fail "$srv: GET $path: the bytes are not the file's"
        fi
        clen=$(hdr "$SCRATCH/headers" content-length)
        ctype=$(hdr "$SCRATCH/headers" content-type)
        [[ $clen == "$want_len" ]] || problem "$srv: $path${range:+ ($range)}: Content-Length '${clen}', expected $want_len"
        [[ $ctype == "$ctype_want" ]] || problem "$srv: $path: Content-Type '$ctype', expected $ctype_want"
        if [[ -n $range ]]; then
            crange=$(hdr "$SCRATCH/headers" content-range)
            [[ $crange == "bytes $RANGE_OFF-$((RANGE_OFF + RANGE_LEN - 1))/$SEG_SIZE" ]] \
                || problem "$srv: $path ($range): Content-Range '$crange'"
        fi
        if [[ $srv == oxcast ]]; then
            for h in etag last-modified cache-control; do
                [[ -n $(hdr "$SCRATCH/headers" "$h") ]] || problem "oxcast: $path: no $h header"
            done
            [[ $(hdr "$SCRATCH/headers" accept-ranges) == bytes ]] || problem "oxcast: $path: no 'Accept-Ranges: bytes'"
        fi
        put "$t" "$srv" header_bytes "$hsize"
        printf '  %d %-30s %-6s %s, %7d B body, %4d B headers, %s\n' "$t" "$path" "$srv" "$code" "$got" "$hsize" "$ctype"
    done
done
echo

# ---------------------------------------------------------------- measurements
proc_ticks() { # pids... -> their utime + stime, summed (all threads), in clock ticks
    local pid s sum=0 f
    for pid in "$@"; do
        s=$(cat "/proc/$pid/stat" 2>/dev/null) || continue
        s=${s##*) }
        read -ra f <<<"$s"
        sum=$((sum + f[11] + f[12]))
    done
    echo "$sum"
}
machine_ticks() { # -> busy and total ticks of all cores since boot
    local _cpu u n s i w q sq st
    read -r _cpu u n s i w q sq st _ </proc/stat
    echo "$((u + n + s + q + sq + st)) $((u + n + s + i + w + q + sq + st))"
}
server_pids() { # server -> the processes serving it
    if [[ $1 == oxcast ]]; then echo "$SERVER_PID"
    else echo "$NGINX_PID" "$(ps -o pid= --ppid "$NGINX_PID" | tr '\n' ' ')"
    fi
}

# wrk's units: latency us/ms/s/m/h, Transfer/sec in binary multiples (its "MB" is 2^20 bytes).
parse_wrk() { # file -> req_s bytes_s p50 p75 p90 p99 (ms) requests non2xx connect read write timeout
    awk '
    function val(v, mult,   n, u) { n = v + 0; u = v; sub(/^[0-9.]+/, "", u); return (u in mult) ? n * mult[u] : -1 }
    BEGIN {
        t["us"] = 0.001; t["ms"] = 1; t["s"] = 1000; t["m"] = 60000; t["h"] = 3600000
        b["B"] = 1; b["KB"] = 1024; b["MB"] = 1048576; b["GB"] = 1073741824; b["TB"] = 1099511627776
        rps = ""; bps = ""; reqs = ""; non = 0; sc = sr = sw = st = 0
    }
    $1 == "50%" { p50 = val($2, t) } $1 == "75%" { p75 = val($2, t) }
    $1 == "90%" { p90 = val($2, t) } $1 == "99%" { p99 = val($2, t) }
    / requests in / { reqs = $1 }
    $1 == "Requests/sec:" { rps = $2 }
    $1 == "Transfer/sec:" { bps = val($2, b) }
    /Socket errors:/ { gsub(/,/, ""); sc = $4; sr = $6; sw = $8; st = $10 }
    /Non-2xx or 3xx responses:/ { non = $NF }
    END {
        if (rps == "" || bps == "" || bps < 0 || p99 == "" || p99 < 0) exit 1
        printf "%s %.0f %.3f %.3f %.3f %.3f %s %s %s %s %s %s\n", rps, bps, p50, p75, p90, p99, reqs, non, sc, sr, sw, st
    }' "$1"
}

measure() { # test server
    local t=$1 srv=$2 url code pids p0 m0 p1 m1 t0 t1 wall out cpu all errs=""
    local rps bps p50 p75 p90 p99 reqs non sc sr sw st
    local rargs=()
    [[ -n ${TEST_RANGE[$t]} ]] && rargs=(-H "Range: ${TEST_RANGE[$t]}")
    url=$(url_of "$srv" "${TEST_PATH[$t]}")
    # Warm-up: one request (caches, open_file_cache), which must succeed.
    code=$("${CURL[@]}" -o /dev/null -w '%{http_code}' "${rargs[@]}" "$url" || true)
    [[ $code == 200 || $code == 206 ]] || fail "$srv: warm-up GET ${TEST_PATH[$t]} answered ${code:-nothing}"
    read -ra pids <<<"$(server_pids "$srv")"
    p0=$(proc_ticks "${pids[@]}"); read -r m0 _ <<<"$(machine_ticks)"; t0=$(now)
    wrk -t"$THREADS" -c"$CONNECTIONS" -d"${RUN_S}s" --latency "${rargs[@]}" "$url" \
        >"$SCRATCH/wrk-$t-$srv.txt" 2>&1 || { log_tail "$SCRATCH/wrk-$t-$srv.txt"; fail "wrk failed against $srv"; }
    t1=$(now); p1=$(proc_ticks "${pids[@]}"); read -r m1 _ <<<"$(machine_ticks)"
    wall=$(calc "$t1 - $t0")
    out=$(parse_wrk "$SCRATCH/wrk-$t-$srv.txt") || { log_tail "$SCRATCH/wrk-$t-$srv.txt"; fail "could not read wrk's output ($srv, test $t)"; }
    read -r rps bps p50 p75 p90 p99 reqs non sc sr sw st <<<"$out"
    put "$t" "$srv" req_s "$rps"; put "$t" "$srv" bytes_s "$bps"
    put "$t" "$srv" mib_s "$(calc "$bps / 1048576")"
    put "$t" "$srv" p50_ms "$p50"; put "$t" "$srv" p75_ms "$p75"
    put "$t" "$srv" p90_ms "$p90"; put "$t" "$srv" p99_ms "$p99"
    put "$t" "$srv" requests "$reqs"; put "$t" "$srv" non_2xx_3xx "$non"
    put "$t" "$srv" socket_errors "$((sc + sr + sw + st))"
    put "$t" "$srv" socket_errors_detail "connect $sc, read $sr, write $sw, timeout $st"
    cpu=$(calc "($p1 - $p0) / $CLK_TCK / $wall"); all=$(calc "($m1 - $m0) / $CLK_TCK / $wall")
    put "$t" "$srv" server_cpu_cores "$cpu"; put "$t" "$srv" machine_busy_cores "$all"
    ((non + sc + sr + sw + st == 0)) \
        || errs="  non-2xx/3xx $non, socket errors: connect $sc read $sr write $sw timeout $st"
    printf '  %d %-22s %-6s %9.0f req/s %8.1f MiB/s  p50 %7.2f ms  p99 %7.2f ms  CPU %.2f, all %.2f%s\n' \
        "$t" "${TEST_NAME[$t]}" "$srv" "$rps" "$(calc "$bps / 1048576")" "$p50" "$p99" "$cpu" "$all" "$errs"
    ((non == 0)) || problem "$srv: ${TEST_NAME[$t]}: $non responses were not 2xx/3xx"
    ((sc + sr + sw + st == 0)) || problem "$srv: ${TEST_NAME[$t]}: socket errors (connect $sc, read $sr, write $sw, timeout $st)"
    kill -0 "$NGINX_PID" 2>/dev/null || { log_tail "$NGINX_LOG"; NGINX_PID=""; fail "nginx died during test $t"; }
    server_alive "during test $t"
}

# Whatever else runs now (a build, say) takes CPU from both servers alike; say so.
read -r m0 _ <<<"$(machine_ticks)"; sleep 1; read -r m1 _ <<<"$(machine_ticks)"
BUSY_BEFORE=$(calc "($m1 - $m0) / $CLK_TCK")
meta busy_cores_before "$BUSY_BEFORE"
echo "CPU busy before the runs: $BUSY_BEFORE of $NPROC cores (the two servers idle)"
awk -v b="$BUSY_BEFORE" 'BEGIN { exit !(b > 0.2) }' \
    && echo "WARNING: something else is using the CPU; the figures will be low and noisy"
echo
echo "measuring (wrk -t$THREADS -c$CONNECTIONS -d${RUN_S}s --latency; CPU = the server's processes, all = every core, in cores):"
for t in 1 2 3 4; do
    if ((t % 2)); then order=(oxcast nginx); else order=(nginx oxcast); fi
    put "$t" - first "${order[0]}"
    for srv in "${order[@]}"; do
        measure "$t" "$srv"
        sleep 1
    done
done
echo

# ---------------------------------------------------------------- summary
met_count=0
{
    echo "| # | request | bytes | oxcast req/s | nginx req/s | ratio | oxcast MiB/s | nginx MiB/s | ratio | oxcast p99 ms | nginx p99 ms | goal (oxcast/nginx) | |"
    echo "|---|---------|------:|-------------:|------------:|------:|-------------:|------------:|------:|--------------:|-------------:|------|---|"
} >"$SCRATCH/table.md"
for t in 1 2 3 4; do
    orps=$(get "$t" oxcast req_s); nrps=$(get "$t" nginx req_s)
    obps=$(get "$t" oxcast bytes_s); nbps=$(get "$t" nginx bytes_s)
    rr=$(calc "$orps / $nrps"); br=$(calc "$obps / $nbps")
    put "$t" - ratio_req_s "$rr"; put "$t" - ratio_bytes_s "$br"
    if [[ ${TEST_GOAL[$t]} == req_s ]]; then gv=$rr; gname="req/s"; else gv=$br; gname="bytes/s"; fi
    if awk -v x="$gv" -v g="$GOAL" 'BEGIN { exit !(x >= g) }'; then result=MET; met_count=$((met_count + 1)); else result=MISSED; fi
    put "$t" - result "$result"
    bytes=$(get "$t" - file_bytes)
    [[ -n ${TEST_RANGE[$t]} ]] && bytes="$RANGE_LEN of $bytes"
    # shellcheck disable=SC2016 # the backquotes are Markdown
    printf '| %d | %s `%s` | %s | %.0f | %.0f | %.2fx | %.1f | %.1f | %.2fx | %.2f | %.2f | %s >= %sx | %s |\n' \
        "$t" "${TEST_NAME[$t]}" "${TEST_PATH[$t]}" "$bytes" "$orps" "$nrps" "$rr" \
        "$(get "$t" oxcast mib_s)" "$(get "$t" nginx mib_s)" "$br" \
        "$(get "$t" oxcast p99_ms)" "$(get "$t" nginx p99_ms)" "$gname" "$GOAL" "$result" >>"$SCRATCH/table.md"
done
echo "== results (nproc $NPROC, wrk -t$THREADS -c$CONNECTIONS -d${RUN_S}s; wrk and both servers share the $NPROC cores) =="
cat "$SCRATCH/table.md"
echo
{
    echo "| # | server | CPU cores (server) | CPU cores (all) | p50 ms | p90 ms | header B | errors |"
    echo "|---|--------|-------------------:|----------------:|-------:|-------:|---------:|-------:|"
    for t in 1 2 3 4; do
        for srv in oxcast nginx; do
            printf '| %d | %s | %.2f | %.2f | %.2f | %.2f | %s | %s |\n' "$t" "$srv" \
                "$(get "$t" "$srv" server_cpu_cores)" "$(get "$t" "$srv" machine_busy_cores)" \
                "$(get "$t" "$srv" p50_ms)" "$(get "$t" "$srv" p90_ms)" "$(get "$t" "$srv" header_bytes)" \
                "$(( $(get "$t" "$srv" non_2xx_3xx | cut -d. -f1) + $(get "$t" "$srv" socket_errors | cut -d. -f1) ))"
        done
    done
} >"$SCRATCH/cpu.md"
cat "$SCRATCH/cpu.md"
echo
echo "goals: oxcast >= ${GOAL}x nginx req/s for 1-3, >= ${GOAL}x nginx bytes/s for 4: $met_count of 4 met"
echo "MiB/s is wrk's Transfer/sec (bytes read, headers included; 1 MiB = 2^20 B). CPU cores: the"
echo "server's processes (all) and every core, averaged over the run; wrk takes most of the rest."
echo
if ((${#PROBLEMS[@]})); then
    echo "problems seen (${#PROBLEMS[@]}):"
    printf '  %s\n' "${PROBLEMS[@]}"
else
    echo "problems seen: none (statuses, lengths, bytes, content types, headers as expected)"
fi
report_logs
stop_pid "$NGINX_PID"; NGINX_PID=""
stop_pid "$SERVER_PID"; SERVER_PID=""
write_json

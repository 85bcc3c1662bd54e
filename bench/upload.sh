#!/usr/bin/env bash
# Upload benchmark: uploads straight to an S3 bucket through presigned part URLs.
#
#   (a) one connection: every part PUT one after another;
#   (b) 8 parallel parts: 8 PUTs in flight at once;
#   each PUT capped with curl --limit-rate to model a per-connection bottleneck (a long,
#   lossy path where one TCP stream cannot fill the pipe). Goal: (b) >= 3x faster than (a).
#   (c) the API process's CPU time per GiB uploaded (utime+stime from /proc/PID/stat, create to
#   complete) in S3 mode, side by side with embedded mode, where the parts go through the API.
#
# The bucket is a local SeaweedFS (`weed mini`, from scripts/deps.sh --test) on loopback ports;
# the payload is random bytes (processing is switched off: this measures uploads only).
#
# Usage: bench/upload.sh [--size-mib N] [--rate R] [--keep]
#   --size-mib N  payload size in MiB (default 1024)
#   --rate R      per-connection cap, curl --limit-rate syntax (default 16M; 8x it must stay
#                 below what the bucket absorbs, ~80 MiB/s for SeaweedFS on 2 cores, or (b)
#                 measures the server rather than the per-connection cap)
#   --keep        keep the scratch directory and print where it is
#
# Environment: OXCAST_BIN as for vod.sh (unset: cargo build --release -p oxcast first).
# Results are printed and written to bench/out/upload-<timestamp>.json.
set -euo pipefail

BENCH_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$BENCH_DIR/.." && pwd)
# shellcheck source=bench/lib.sh
source "$BENCH_DIR/lib.sh"

SIZE_MIB=1024
RATE=16M
KEEP=0
PARTS=8
while (($#)); do
    case "$1" in
        --size-mib) SIZE_MIB=${2:?--size-mib needs a value}; shift 2 ;;
        --rate) RATE=${2:?--rate needs a value}; shift 2 ;;
        --keep) KEEP=1; shift ;;
        -h|--help) usage; exit 0 ;;
        *) echo "unknown argument: $1 (try --help)" >&2; exit 2 ;;
    esac
done
[[ $SIZE_MIB =~ ^[0-9]+$ && $SIZE_MIB -ge 40 ]] || { echo "--size-mib must be >= 40" >&2; exit 2; }
for tool in curl python3 weed; do
    command -v "$tool" >/dev/null || { echo "missing required tool: $tool (weed: scripts/deps.sh --test)" >&2; exit 1; }
done

fail() { echo "FAIL: $*" >&2; exit 1; }
SCRATCH=$(mktemp -d "${TMPDIR:-/tmp}/oxcast-bench-upload.XXXXXX")
PIDS=()
cleanup() {
    local p
    for p in "${PIDS[@]}"; do stop_pid "$p"; done
    if ((KEEP)); then echo "scratch kept: $SCRATCH"; else rm -rf "$SCRATCH"; fi
}
trap cleanup EXIT
oxcast_bin ""
unset OXCAST_BIN

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
json_get() { python3 -c 'import json,sys; d=json.load(sys.stdin); print(eval("d"+sys.argv[1]))' "$1"; }
cpu_s() { # pid -> utime+stime seconds
    awk -v t="$(getconf CLK_TCK)" '{ sub(/^.*\) /, ""); print ($12 + $13) / t }' "/proc/$1/stat"
}

echo "== oxcast upload benchmark: ${SIZE_MIB} MiB, per-connection cap $RATE, nproc $(nproc)"

# --- the bucket -----------------------------------------------------------------------------
KEY=bench-key; SECRET=bench-secret-0123456789; BUCKET=oxcast-bench
S3_PORT=$(free_port)
mkdir -p "$SCRATCH/weed"
cat >"$SCRATCH/s3.json" <<EOF
{"identities":[{"name":"bench","credentials":[{"accessKey":"$KEY","secretKey":"$SECRET"}],"actions":["Admin","Read","Write","List","Tagging"]}]}
EOF
ports=()
for _ in $(seq 13); do ports+=("$(free_port)"); done
weed mini -dir="$SCRATCH/weed" -ip=127.0.0.1 -ip.bind=127.0.0.1 -s3.config="$SCRATCH/s3.json" \
    -s3.port="$S3_PORT" -s3.port.grpc="${ports[0]}" -master.port="${ports[1]}" \
    -master.port.grpc="${ports[2]}" -volume.port="${ports[3]}" -volume.port.grpc="${ports[4]}" \
    -filer.port="${ports[5]}" -filer.port.grpc="${ports[6]}" -admin.port="${ports[7]}" \
    -admin.port.grpc="${ports[8]}" -s3.port.iceberg="${ports[9]}" -s3.port.lance="${ports[10]}" \
    -webdav.port="${ports[11]}" -debug.port="${ports[12]}" -admin.ui=false -webdav=false \
    -master.volumeSizeLimitMB=1024 >"$SCRATCH/weed.log" 2>&1 &
PIDS+=($!)
S3="http://127.0.0.1:$S3_PORT"
for i in $(seq 300); do
    code=$(curl -s -o /dev/null -w '%{http_code}' --aws-sigv4 "aws:amz:us-east-1:s3" \
        --user "$KEY:$SECRET" -X PUT "$S3/$BUCKET" || true)
    [[ $code == 200 ]] && break
    ((i < 300)) || { log_tail "$SCRATCH/weed.log"; fail "SeaweedFS did not start"; }
    sleep 0.2
done
echo "    SeaweedFS on $S3, bucket $BUCKET"

# --- payload: random bytes, kept as its part files so each PUT reads its own file --------------
SIZE=$((SIZE_MIB << 20))
PART_SIZE=$(((SIZE + PARTS - 1) / PARTS))
mkdir -p "$SCRATCH/parts"
head -c "$SIZE" /dev/urandom | (cd "$SCRATCH/parts" && split -b "$PART_SIZE" -d -a 2 - part-)

start_server() { # name [env...] -> sets BASE, SERVER_PID
    local name=$1; shift
    local port; port=$(free_port)
    env "$@" OXCAST_WORKER__CONCURRENCY=0 OXCAST_UPLOAD__PART_SIZE="$PART_SIZE" \
        OXCAST_LIVE__RTMP_LISTEN="127.0.0.1:$(free_port)" OXCAST_LIVE__SRT_LISTEN="127.0.0.1:$(free_port)" \
        RUST_LOG=warn "$BIN" serve --listen "127.0.0.1:$port" --data-dir "$SCRATCH/data-$name" \
        >"$SCRATCH/server-$name.log" 2>&1 &
    SERVER_PID=$!
    PIDS+=("$SERVER_PID")
    BASE="http://127.0.0.1:$port"
    for i in $(seq 150); do
        [[ $(curl -s -o /dev/null -w '%{http_code}' "$BASE/healthz" || true) == 200 ]] && return
        kill -0 "$SERVER_PID" 2>/dev/null || { log_tail "$SCRATCH/server-$name.log"; fail "server $name exited"; }
        sleep 0.2
    done
    fail "server $name not healthy"
}

# One upload with `parallel` PUTs in flight; prints "wall_s cpu_s".
upload() { # parallel
    local parallel=$1 cpu0 cpu1 t0 t1 created id n url
    cpu0=$(cpu_s "$SERVER_PID")
    created=$(curl -sf -X POST "$BASE/api/v1/uploads" -H 'content-type: application/json' \
        -d "{\"filename\":\"payload.bin\",\"size\":$SIZE}")
    id=$(json_get '["upload_id"]' <<<"$created")
    python3 -c 'import json,sys
for p in json.load(sys.stdin)["parts"]: print(p["part_number"], p["url"])' <<<"$created" \
        >"$SCRATCH/parts-$id"
    t0=$(now)
    # Each line: part number and URL (relative ones are the embedded server's own).
    while read -r n url; do
        [[ $url == http* ]] || url="$BASE$url"
        printf '%s %s\n' "$n" "$url"
    done <"$SCRATCH/parts-$id" | xargs -P "$parallel" -L 1 bash -c '
        dir=$0 rate=$1 n=$2 url=$3
        f=$(printf "%s/part-%02d" "$dir" $((n - 1)))
        curl -sf --limit-rate "$rate" -T "$f" -D - -o /dev/null "$url" |
          tr -d "\r" | awk -v n="$n" "tolower(\$1)==\"etag:\" {print n, \$2}"
    ' "$SCRATCH/parts" "$RATE" >"$SCRATCH/etags-$id" || fail "a part PUT failed"
    t1=$(now)
    [[ $(wc -l <"$SCRATCH/etags-$id") -eq $PARTS ]] || fail "missing ETags: $(cat "$SCRATCH/etags-$id")"
    body=$(python3 -c 'import json,sys
print(json.dumps({"parts":[{"part_number":int(n),"etag":e} for n,e in (l.split() for l in sys.stdin)]}))' <"$SCRATCH/etags-$id")
    curl -sf -X POST "$BASE/api/v1/uploads/$id/complete" -H 'content-type: application/json' -d "$body" >/dev/null \
        || fail "complete failed"
    cpu1=$(cpu_s "$SERVER_PID")
    echo "$(calc "$t1 - $t0") $(calc "$cpu1 - $cpu0")"
}

echo "== S3 mode (presigned part URLs, $PARTS parts of $PART_SIZE bytes)"
start_server s3 OXCAST_STORAGE__URL="s3://$BUCKET" OXCAST_STORAGE__ENDPOINT="$S3" \
    OXCAST_STORAGE__PATH_STYLE=true OXCAST_STORAGE__ACCESS_KEY_ID="$KEY" \
    OXCAST_STORAGE__SECRET_ACCESS_KEY="$SECRET"
read -r A_WALL A_CPU < <(upload 1)
echo "    (a) 1 connection:        ${A_WALL} s   API CPU ${A_CPU} s"
read -r B_WALL B_CPU < <(upload "$PARTS")
echo "    (b) $PARTS parallel parts:    ${B_WALL} s   API CPU ${B_CPU} s"
stop_pid "$SERVER_PID"

echo "== embedded mode (parts through the API into the local folder), $PARTS parallel"
start_server embedded
read -r E_WALL E_CPU < <(upload "$PARTS")
echo "    (e) $PARTS parallel parts:    ${E_WALL} s   API CPU ${E_CPU} s"
stop_pid "$SERVER_PID"

GIB=$(calc "$SIZE / 1073741824")
RATIO=$(calc "$A_WALL / $B_WALL")
S3_CPU_GIB=$(calc "($A_CPU + $B_CPU) / 2 / $GIB")
E_CPU_GIB=$(calc "$E_CPU / $GIB")
GOAL=$(awk -v r="$RATIO" 'BEGIN { print (r >= 3) ? "PASS" : "FAIL" }')
echo
echo "speedup 8 parts / 1 connection: ${RATIO}x   goal >= 3x: $GOAL"
echo "API CPU per GiB: S3 mode ${S3_CPU_GIB} s, embedded ${E_CPU_GIB} s"

mkdir -p "$BENCH_DIR/out"
OUT="$BENCH_DIR/out/upload-$(date -u +%Y%m%dT%H%M%SZ).json"
cat >"$OUT" <<EOF
{"size_bytes": $SIZE, "parts": $PARTS, "rate": "$RATE", "nproc": $(nproc),
 "a_one_connection_wall_s": $A_WALL, "b_parallel_wall_s": $B_WALL, "speedup": $RATIO,
 "goal_3x": $( [[ $GOAL == PASS ]] && echo true || echo false ),
 "api_cpu_s": {"s3_one": $A_CPU, "s3_parallel": $B_CPU, "embedded_parallel": $E_CPU},
 "api_cpu_s_per_gib": {"s3": $S3_CPU_GIB, "embedded": $E_CPU_GIB}}
EOF
echo "results: $OUT"

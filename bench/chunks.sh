#!/usr/bin/env bash
# Chunked VOD encoding benchmark: how much sooner is a video ready when its chunks are encoded by
# two workers at once, what does chunking cost in CPU, and what does losing a worker mid-encode
# cost?
#
#   (a) one worker on core 0, one job (transcode.chunk_s above the video's length);
#   (b) one worker on core 0, chunked (transcode.chunk_s = --chunk-s);
#   (c) two workers, on cores 0 and 1, chunked;
#   (d) as (c), and at a random moment (seeded) between 20 % and 80 % of (c)'s wall time one of
#       the two workers is SIGKILLed with its ffmpeg children (a reclaimed spot machine) and a
#       fresh worker (its own new data dir: a new machine) starts on the same core at once.
#   Every process is `oxcast serve --roles api` or `--roles worker` on one SQLite database and one
#   object folder. Each worker is pinned to its own core (taskset; ffmpeg inherits it), so "two
#   workers" means two machines, not two threads. Timed as bench/vod.sh's (c): from the upload
#   being complete (status leaves `uploading`) until `ready`.
#
# Goals (reported, not errors): wall (b) / wall (c) >= 1.8; worker CPU s (b) / (a) <= 1.05;
# reclaim loss wall (d) - wall (c) <= one chunk's encode time + the lease timeout.
#
# Usage: bench/chunks.sh [--duration S] [--chunk-s S] [--lease-s S] [--preset P] [--seed N]
#                        [--api-core C|none] [--keep]
#   --duration S    length of the generated 1080p30 source in seconds (default 300)
#   --chunk-s S     transcode.chunk_s of (b), (c) and (d), whole seconds (default 30)
#   --lease-s S     worker.lease_s (visibility timeout) of every run, whole seconds (default 10)
#   --preset P      x264 preset, transcode.preset (default veryfast)
#   --seed N        seed of the kill moment and of which worker is killed (default: random;
#                   printed, pass it again to repeat a run)
#   --api-core C    the core the API process, the poller and the upload CLI run on (default 1;
#                   `none`: unpinned)
#   --keep          keep the scratch dir (source, every process's log and data dir)
#
# Environment:
#   OXCAST_BIN       oxcast binary to use as is. Unset: `cargo build --release -p oxcast` runs
#                    first (a no-op when up to date) and <repo>/target/release/oxcast is used.
#                    It is removed from the servers' environment.
#   OXCAST_API_TOKEN if set, passed to the servers and sent as a bearer token.
#   BENCH_TIMEOUT_S  give up on one run after this many seconds (default 20 x duration, min 600).
#
# Needs cores 0 and 1, ffmpeg/ffprobe with libx264, curl, python3, taskset, setsid. Results are
# printed and written to bench/out/chunks-<timestamp>.json; at the end bench/chunks_sim.py runs
# with the measured chunk time and writes bench/out/chunks-<timestamp>-sim.json. A missed goal is
# reported, not an error; any failing step exits non-zero.
set -euo pipefail

BENCH_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$BENCH_DIR/.." && pwd)

DURATION=300
CHUNK_S=30
LEASE_S=10
PRESET=veryfast
SEED=""
API_CORE=1
KEEP=0
FPS=30
# Every process of one deployment needs the same key once roles are split (config.signing_key).
SIGNING_KEY=0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef

# shellcheck source=bench/lib.sh
source "$BENCH_DIR/lib.sh"

while (($#)); do
    case "$1" in
        --duration) DURATION=${2:?--duration needs a value}; shift 2 ;;
        --duration=*) DURATION=${1#*=}; shift ;;
        --chunk-s) CHUNK_S=${2:?--chunk-s needs a value}; shift 2 ;;
        --chunk-s=*) CHUNK_S=${1#*=}; shift ;;
        --lease-s) LEASE_S=${2:?--lease-s needs a value}; shift 2 ;;
        --lease-s=*) LEASE_S=${1#*=}; shift ;;
        --preset) PRESET=${2:?--preset needs a value}; shift 2 ;;
        --preset=*) PRESET=${1#*=}; shift ;;
        --seed) SEED=${2:?--seed needs a value}; shift 2 ;;
        --seed=*) SEED=${1#*=}; shift ;;
        --api-core) API_CORE=${2:?--api-core needs a value}; shift 2 ;;
        --api-core=*) API_CORE=${1#*=}; shift ;;
        --keep) KEEP=1; shift ;;
        -h|--help) usage; exit 0 ;;
        *) echo "unknown argument: $1 (try --help)" >&2; exit 2 ;;
    esac
done
bad() { echo "$*" >&2; exit 2; }
if ! [[ $DURATION =~ ^[0-9]+([.][0-9]+)?$ ]] || ! awk -v d="$DURATION" 'BEGIN{exit !(d>0)}'; then
    bad "--duration must be a positive number of seconds"
fi
[[ $CHUNK_S =~ ^[1-9][0-9]*$ ]] || bad "--chunk-s must be a whole number of seconds, at least 1"
[[ $LEASE_S =~ ^[1-9][0-9]*$ ]] || bad "--lease-s must be a whole number of seconds, at least 1"
[[ $PRESET =~ ^(ultrafast|superfast|veryfast|faster|fast|medium|slow|slower|veryslow|placebo)$ ]] \
    || bad "--preset must be an x264 preset name"
[[ -z $SEED || $SEED =~ ^[0-9]+$ ]] || bad "--seed must be a non-negative integer"
[[ $API_CORE == none || $API_CORE =~ ^[0-9]+$ ]] || bad "--api-core must be a core number or none"
awk -v d="$DURATION" -v c="$CHUNK_S" 'BEGIN{exit !(d>c)}' \
    || bad "--chunk-s ($CHUNK_S) must be below --duration ($DURATION), or nothing is chunked"

for tool in ffmpeg ffprobe curl python3 taskset setsid getconf; do
    command -v "$tool" >/dev/null || { echo "missing required tool: $tool" >&2; exit 1; }
done
taskset -c 0,1 true 2>/dev/null \
    || { echo "needs cores 0 and 1 (one per worker); this machine allows: $(taskset -cp $$ 2>/dev/null | sed 's/.*: //')" >&2; exit 1; }
API_PIN=()
if [[ $API_CORE != none ]]; then
    taskset -c "$API_CORE" true 2>/dev/null || bad "--api-core $API_CORE: no such core here"
    API_PIN=(taskset -c "$API_CORE")
fi
API_WHERE=$([[ $API_CORE == none ]] && echo "unpinned" || echo "pinned to core $API_CORE")
[[ -n $SEED ]] || SEED=$(((RANDOM << 15) | RANDOM))
# From the seed: when (fraction of (c)'s wall time, 0.2-0.8) and which worker (0 or 1) dies.
read -r KILL_FRAC KILL_IDX < <(python3 -c '
import random, sys
r = random.Random(int(sys.argv[1]))
print(f"{r.uniform(0.2, 0.8):.4f}", r.randrange(2))' "$SEED")
# "One job": a chunk length no video of this run reaches.
ONE_JOB_CHUNK_S=$(awk -v d="$DURATION" 'BEGIN{c=100000; if (2*d > c) c=int(2*d)+1; print c}')
CLK_TCK=$(getconf CLK_TCK)
TIMEOUT_S=${BENCH_TIMEOUT_S:-$(awk -v d="$DURATION" 'BEGIN{t=20*d; if (t<600) t=600; printf "%d", t}')}
TOKEN_ARGS=()
[[ -n ${OXCAST_API_TOKEN:-} ]] && TOKEN_ARGS=(--token "$OXCAST_API_TOKEN")

SCRATCH=$(mktemp -d "${TMPDIR:-/tmp}/oxcast-bench-chunks.XXXXXX")
STAMP=$(date -u +%Y%m%dT%H%M%SZ)
OUT_DIR="$BENCH_DIR/out"
OUT_JSON="$OUT_DIR/chunks-$STAMP.json"
OUT_SIM_JSON="$OUT_DIR/chunks-$STAMP-sim.json"
PIDS=()     # API, poller, upload CLI of the current run
WORKERS=()  # workers of the current run: each leads its own process group (setsid)

stop_worker() { # pid: SIGTERM (the worker hands its job back), then whatever is left of its group
    stop_pid "$1"
    kill -KILL -- "-$1" 2>/dev/null || true
}
stop_all() {
    local p
    for p in "${WORKERS[@]}"; do stop_worker "$p"; done
    for p in "${PIDS[@]}"; do stop_pid "$p"; done
    WORKERS=() PIDS=()
}
forget() { # pid: waited for already, so no longer ours to stop (its number may be reused)
    local p keep=()
    for p in "${PIDS[@]}"; do [[ $p == "$1" ]] || keep+=("$p"); done
    PIDS=("${keep[@]}")
}
cleanup() {
    local rc=$?
    stop_all
    if ((KEEP)); then echo "scratch kept in $SCRATCH" >&2; else rm -rf "$SCRATCH"; fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# A read with a timeout on a pipe nobody writes: a 0.1 s sleep without starting a process, so
# the watch loop takes no CPU from the workers.
mkfifo "$SCRATCH/tick"
exec {TICK_FD}<>"$SCRATCH/tick"
tick() { read -r -t 0.1 -u "$TICK_FD" _ || true; }

# ---------------------------------------------------------------- results / JSON
RESULT_KV=()   # dotted.key=value; "" is null, @FILE is that JSON file; see write_json
kv() { RESULT_KV+=("$1=$2"); }
FFMPEG_VERSION=$(ffmpeg -hide_banner -version | head -n1)
NPROC=$(nproc)
kv timestamp "$STAMP"; kv ffmpeg "$FFMPEG_VERSION"; kv nproc "$NPROC"; kv uname "$(uname -srm)"
kv preset "$PRESET"; kv requested_duration_s "$DURATION"; kv chunk_s "$CHUNK_S"
kv one_job_chunk_s "$ONE_JOB_CHUNK_S"; kv lease_s "$LEASE_S"; kv seed "$SEED"
kv api_core "$API_CORE"; kv kill.fraction_of_c "$KILL_FRAC"; kv kill.worker "w$KILL_IDX"

write_json() {
    mkdir -p "$OUT_DIR"
    python3 - "$OUT_JSON" "${RESULT_KV[@]}" <<'PY'
import json, os, re, sys
out = {}
for item in sys.argv[2:]:
    key, _, v = item.partition("=")
    if v == "":
        val = None
    elif v.startswith("@"):
        val = json.load(open(v[1:])) if os.path.exists(v[1:]) else None
    elif re.fullmatch(r"-?[0-9]+(\.[0-9]+)?", v) and key != "ffmpeg":
        val = float(v) if "." in v else int(v)
    elif v in ("true", "false"):
        val = v == "true"
    else:
        val = v
    d = out
    *parents, last = key.split(".")
    for p in parents:
        d = d.setdefault(p, {})
    d[last] = val
with open(sys.argv[1], "w") as f:
    json.dump(out, f, indent=2)
    f.write("\n")
PY
    echo "results written to ${OUT_JSON#"$ROOT"/}"
}

FAILED=0
fail() {
    echo >&2
    echo "ERROR: $*" >&2
    if ((FAILED == 0)); then
        FAILED=1
        kv error "$*"
        write_json || true
    fi
    exit 1
}

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()'; }

tree_cpu_s() { # pid -> CPU seconds (utime+stime+cutime+cstime) of it and its live descendants
    python3 - "$1" "$CLK_TCK" <<'PY'
import os, sys
root, tck = int(sys.argv[1]), float(sys.argv[2])
procs = {}
for d in os.listdir("/proc"):
    if d.isdigit():
        try:
            with open(f"/proc/{d}/stat") as f:
                s = f.read()
        except OSError:
            continue
        fields = s[s.rindex(")") + 2:].split()  # state ppid ... utime(11) stime cutime cstime
        procs[int(d)] = (int(fields[1]), sum(int(x) for x in fields[11:15]))
if root not in procs:
    sys.exit(f"no process {root}")
total, todo = 0, [root]
while todo:
    p = todo.pop()
    total += procs[p][1]
    todo += [c for c, (ppid, _) in procs.items() if ppid == p]
print(f"{total / tck:.3f}")
PY
}

# Polls the API (one long-lived process, ~1 ms of CPU a poll, where curl + jq would take tens),
# every 0.2 s: finds the video (fresh database: the newest is ours), writes the wall time the
# status first leaves `uploading` to poll.tq (microseconds), the latest status and chunk counts
# to poll.state, and at the end everything to poll.json. Exit 0 when ready, 1 otherwise.
POLLER=$(cat <<'PY'
import json, os, sys, time, urllib.request
url, timeout_s, rundir, label = sys.argv[1], float(sys.argv[2]), sys.argv[3], sys.argv[4]
opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
hdrs = {}
if os.environ.get("OXCAST_API_TOKEN"):
    hdrs["Authorization"] = "Bearer " + os.environ["OXCAST_API_TOKEN"]

def get(path):
    with opener.open(urllib.request.Request(url + path, headers=hdrs), timeout=10) as r:
        return json.load(r)

def put(name, text):  # whole or not at all: the shell reads these files meanwhile
    with open(os.path.join(rundir, name + ".tmp"), "w") as f:
        f.write(text)
    os.replace(os.path.join(rundir, name + ".tmp"), os.path.join(rundir, name))

res = {"video_id": None, "error": None}
def finish(rc, err=None):
    if err:
        res["error"] = err
        print(f"\n    ({label}) {err}", file=sys.stderr)
    put("poll.json", json.dumps(res))
    sys.exit(rc)

t0 = time.time()
vid, errors, polls, last = None, 0, 0, None
t_q = t_p = t_cd = None
max_running = 0
while True:
    polls += 1
    t = time.time()
    if t > t0 + timeout_s:
        finish(1, f"video {vid or '?'} not ready after {timeout_s:g} s (last: {last or 'none'})")
    v = None
    try:
        if vid is None:
            videos = get("/api/v1/videos").get("videos") or []
            if videos:
                vid = res["video_id"] = videos[0]["id"]
                print(f"    video id {vid}", flush=True)
        else:
            v = get(f"/api/v1/videos/{vid}")
            v = v.get("video", v)
        errors = 0
    except (OSError, ValueError) as e:  # URLError and HTTPError are OSErrors
        errors += 1
        if errors >= 25:
            finish(1, f"GET {url} failed 25 times in a row: {e}")
    if v is not None:
        st = v.get("status") or ""
        ch = v.get("chunks") or {}
        total, done, running, queued = (ch.get(k) for k in ("total", "done", "running", "queued"))
        max_running = max(max_running, running or 0)
        if st != "uploading" and t_q is None:
            t_q = t
            res["upload_wall_s"] = t - t0
            put("poll.tq", f"{int(t * 1e6)}\n")
        if st == "processing" and t_p is None:
            t_p = t
        if total and done == total and t_cd is None:
            t_cd = t
        put("poll.state", "\t".join("-" if x is None else str(x)
                                     for x in (st, v.get("progress"), total, done, running, queued)) + "\n")
        now = (st, total, done, running)
        if now != last:
            since = f"{t - t_q:6.1f} s after upload" if t_q else f"{t - t0:6.1f} s"
            chunks = f"  chunks {done}/{total} done, {running} running, {queued} queued" if ch else ""
            prog = v.get("progress")
            prog = f"{prog:.3f}" if isinstance(prog, (int, float)) else prog
            print(f"    {st:<10} {since}  progress {prog}{chunks}", flush=True)
            last = now
        if st == "ready":
            res.update(
                wall_s=t - t_q, queue_wait_s=(t_p - t_q) if t_p else None,
                chunks_total=total, chunks_max_running=max_running,
                chunks_done_s=(t_cd - t_q) if t_cd else None,
                stitch_tail_s=(t - t_cd) if t_cd else None,
                duration_s=v.get("duration_s"),
                renditions=[r.get("name") for r in v.get("renditions") or []],
                t_queued_us=int(t_q * 1e6), t_ready_us=int(t * 1e6), polls=polls)
            finish(0)
        if st == "failed":
            finish(1, f"video {vid} failed: {v.get('error') or '<no error given>'}")
        if st not in ("uploading", "queued", "processing"):
            finish(1, f"unexpected status {st!r} of video {vid}")
    time.sleep(max(0.0, t0 + polls * 0.2 - time.time()))
PY
)

# ---------------------------------------------------------------- header
echo "== oxcast chunked encoding benchmark =="
echo "ffmpeg:  $FFMPEG_VERSION"
echo "nproc:   $NPROC   workers pinned to cores 0 and 1; API, poller and upload CLI $API_WHERE"
echo "preset:  $PRESET   duration: ${DURATION}s   chunk_s: ${CHUNK_S}   lease_s: ${LEASE_S}"
echo "seed:    $SEED (kill at $(calc "$KILL_FRAC * 100") % of (c)'s wall time, worker w$KILL_IDX)"
echo "scratch: $SCRATCH"
echo

oxcast_bin ""
echo "    binary: $BIN"
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
kv source.duration_s "$SRC_DURATION"; kv source.size_bytes "$SRC_SIZE"
kv source.video "testsrc2 1920x1080 ${FPS}fps, x264 ultrafast crf 18"; kv source.audio "sine 1 kHz AAC"
echo "source:  $(calc "$SRC_DURATION") s, $(calc "$SRC_SIZE / 1048576") MiB"
echo

# ---------------------------------------------------------------- processes
RUN_ENV=()  # set per run by run_case: one deployment's settings, the same for every process

wait_healthy() { # pid port log label
    local pid=$1 port=$2 log=$3 label=$4 rc deadline
    deadline=$(calc "$(now) + 60")
    until [[ $(curl -s --max-time 5 -o /dev/null -w '%{http_code}' "http://127.0.0.1:$port/healthz" || true) == 200 ]]; do
        if ! kill -0 "$pid" 2>/dev/null; then
            wait "$pid" && rc=0 || rc=$?
            log_tail "$log"
            if grep -qi "unknown field" "$log"; then
                echo "hint: this oxcast does not know a setting this benchmark uses" \
                    "(transcode.chunk_s): build it with chunked encoding" >&2
            fi
            fail "$label exited (status $rc) before GET /healthz answered 200"
        fi
        awk -v n="$(now)" -v d="$deadline" 'BEGIN{exit !(n>d)}' \
            && { log_tail "$log"; fail "$label: GET /healthz did not answer 200 within 60 s"; }
        sleep 0.1
    done
}

start_api() { # rundir -> API_PID, API_PORT, URL
    API_PORT=$(free_port)
    URL="http://127.0.0.1:$API_PORT"
    "${API_PIN[@]}" env -u OXCAST_BIN "${RUN_ENV[@]}" \
        "$BIN" serve --roles api --listen "127.0.0.1:$API_PORT" --data-dir "$1/api" \
        >"$1/api.log" 2>&1 &
    API_PID=$!
    PIDS+=("$API_PID")
}

declare -A W_CORE=() W_NAME=() W_PORT=()
start_worker() { # rundir core name -> WORKER_PID. Its own data dir (node id, scratch): a machine.
    local port
    port=$(free_port)
    # setsid: the worker leads a process group of its own, so a SIGKILL to the group takes its
    # ffmpeg children with it, as a reclaimed machine would. (Not a group leader here, setsid
    # does not fork: $! is the worker.)
    setsid taskset -c "$2" env -u OXCAST_BIN "${RUN_ENV[@]}" \
        "$BIN" serve --roles worker --listen "127.0.0.1:$port" --data-dir "$1/$3" \
        >"$1/$3.log" 2>&1 &
    WORKER_PID=$!
    WORKERS+=("$WORKER_PID")
    W_CORE[$WORKER_PID]=$2 W_NAME[$WORKER_PID]=$3 W_PORT[$WORKER_PID]=$port
}

check_worker() { # pid: a group leader on the core it was given
    local pid=$1 pgrp
    pgrp=$(awk '{ sub(/^.*\) /, ""); print $3 }' "/proc/$pid/stat")
    [[ $pgrp == "$pid" ]] || fail "worker ${W_NAME[$pid]} (pid $pid) is not its own process group leader"
    echo "    worker ${W_NAME[$pid]}: pid $pid, $(taskset -cp "$pid" | sed 's/.*: /cores /')"
}

# ---------------------------------------------------------------- one run
declare -A WALL=() CPU=() NCHUNKS=() CHUNKS_DONE=() TAIL=() REND=()
KILL_AT_S="" KILL_STATE=""

run_case() { # key label workers chunk_s [kill_after_s]
    local key=$1 label=$2 nworkers=$3 chunk=$4 kill_after=${5:-}
    local dir="$SCRATCH/run-$key" i pid cpu sum prc upload_rc="" tq_us="" kill_us="" now_us
    local run_w=() killed=0
    mkdir -p "$dir/shared/objects"
    RUN_ENV=(
        OXCAST_SIGNING_KEY="$SIGNING_KEY"
        OXCAST_DATABASE_URL="sqlite://$dir/shared/oxcast.db?mode=rwc"
        OXCAST_STORAGE__URL="file://$dir/shared/objects"
        OXCAST_TRANSCODE__PRESET="$PRESET"
        OXCAST_TRANSCODE__CHUNK_S="$chunk"
        OXCAST_WORKER__LEASE_S="$LEASE_S"
        OXCAST_WORKER__CONCURRENCY=1
        OXCAST_RECONCILE__INTERVAL_S=0
    )
    echo "$label ..."
    echo "    transcode.chunk_s=$chunk worker.lease_s=$LEASE_S worker.concurrency=1 (log and data: run-$key in scratch)"
    start_api "$dir"
    wait_healthy "$API_PID" "$API_PORT" "$dir/api.log" "($key) API"
    for ((i = 0; i < nworkers; i++)); do
        start_worker "$dir" "$i" "w$i"
        run_w+=("$WORKER_PID")
    done
    for pid in "${run_w[@]}"; do
        wait_healthy "$pid" "${W_PORT[$pid]}" "$dir/${W_NAME[$pid]}.log" "($key) worker ${W_NAME[$pid]}"
        check_worker "$pid"
    done

    "${API_PIN[@]}" python3 -c "$POLLER" "$URL" "$TIMEOUT_S" "$dir" "$key" &
    local poll_pid=$!
    PIDS+=("$poll_pid")
    "${API_PIN[@]}" env -u OXCAST_BIN "$BIN" upload "$SRC" --server "$URL" --title "bench-chunks-$key" \
        --no-wait "${TOKEN_ARGS[@]}" >"$dir/upload.log" 2>&1 &
    local upload_pid=$!
    PIDS+=("$upload_pid")

    while kill -0 "$poll_pid" 2>/dev/null; do
        if [[ -n $kill_after ]] && ((killed == 0)); then
            if [[ -z $tq_us && -s $dir/poll.tq ]]; then
                read -r tq_us <"$dir/poll.tq"
                kill_us=$((tq_us + $(awk -v s="$kill_after" 'BEGIN{printf "%d", s * 1e6}')))
            fi
            now_us=${EPOCHREALTIME//[!0-9]/}
            if [[ -n $kill_us ]] && ((now_us >= kill_us)); then
                reclaim "$dir" "${run_w[$KILL_IDX]}" "$tq_us"
                run_w[KILL_IDX]=$WORKER_PID
                killed=1
            fi
        fi
        for pid in "${run_w[@]}"; do
            kill -0 "$pid" 2>/dev/null \
                || { log_tail "$dir/${W_NAME[$pid]}.log"; fail "($key) worker ${W_NAME[$pid]} died"; }
        done
        kill -0 "$API_PID" 2>/dev/null || { log_tail "$dir/api.log"; fail "($key) the API process died"; }
        if [[ -z $upload_rc ]] && ! kill -0 "$upload_pid" 2>/dev/null; then
            wait "$upload_pid" && upload_rc=0 || upload_rc=$?
            forget "$upload_pid"
            ((upload_rc == 0)) || { log_tail "$dir/upload.log"; fail "($key) oxcast upload exited with status $upload_rc"; }
        fi
        tick
    done
    wait "$poll_pid" && prc=0 || prc=$?
    forget "$poll_pid"
    ((prc == 0)) || { log_tail "$dir/api.log"; fail "($key) the video did not become ready (see above)"; }
    if [[ -n $kill_after ]] && ((killed == 0)); then
        echo "    note: ready before the kill moment ($(calc "$kill_after") s): nothing was killed"
    fi

    # CPU of every worker still running, read just before it is stopped.
    sum=0
    for pid in "${run_w[@]}"; do
        cpu=$(tree_cpu_s "$pid") || fail "($key) no /proc entry for worker ${W_NAME[$pid]}"
        kv "runs.$key.workers.${W_NAME[$pid]}.cpu_s" "$cpu"
        kv "runs.$key.workers.${W_NAME[$pid]}.core" "${W_CORE[$pid]}"
        sum=$(calc "$sum + $cpu")
        stop_worker "$pid"
    done
    WORKERS=()
    if ((killed)); then sum=$(calc "$sum + $KILLED_CPU"); fi
    cpu=$(tree_cpu_s "$API_PID") || cpu=""
    kv "runs.$key.api_cpu_s" "$cpu"
    if [[ -z $upload_rc ]]; then
        for _ in $(seq 100); do kill -0 "$upload_pid" 2>/dev/null || break; sleep 0.1; done
        wait "$upload_pid" && upload_rc=0 || upload_rc=$?
        forget "$upload_pid"
        ((upload_rc == 0)) || { log_tail "$dir/upload.log"; fail "($key) oxcast upload exited with status $upload_rc"; }
    fi
    stop_all
    # Data dirs (the uploaded source, the outputs, the workers' scratch) are GBs at 1080p; the
    # logs and the poller's files stay until the end.
    ((KEEP)) || rm -rf "$dir/shared" "$dir/api" "$dir"/w*/

    local wall nchunks cdone tail rend
    # \x1f, not a tab: bash merges runs of tabs (IFS white space), and fields may be empty.
    IFS=$'\x1f' read -r wall nchunks cdone tail rend < <(python3 -c '
import json, sys
d = json.load(open(sys.argv[1]))
f = lambda k: "" if d.get(k) is None else str(d[k])
print("\x1f".join([f("wall_s"), f("chunks_total"), f("chunks_done_s"), f("stitch_tail_s"),
                 " ".join(map(str, d.get("renditions") or [])) + " / " + f("duration_s")]))' "$dir/poll.json")
    wall=$(calc "$wall")
    WALL[$key]=$wall CPU[$key]=$sum NCHUNKS[$key]=$nchunks CHUNKS_DONE[$key]=$cdone TAIL[$key]=$tail
    REND[$key]=$rend
    kv "runs.$key.label" "$label"; kv "runs.$key.wall_s" "$wall"; kv "runs.$key.worker_cpu_s" "$sum"
    kv "runs.$key.x_realtime" "$(calc "$SRC_DURATION / $wall")"; kv "runs.$key.poll" "@$dir/poll.json"
    printf '%-36s wall %8.2f s   worker CPU %8.2f s   chunks %s\n' "($key)" "$wall" "$sum" "${nchunks:-none}"
    if [[ $chunk == "$ONE_JOB_CHUNK_S" ]]; then
        [[ -z $nchunks || $nchunks -le 1 ]] || echo "    warning: ($key) should be one job but the API reported $nchunks chunks"
    elif [[ -z $nchunks || $nchunks -le 1 ]]; then
        echo "    warning: ($key) the API reported no chunks (chunks: ${nchunks:-null}); is chunked encoding built?"
    fi
    echo
}

reclaim() { # rundir victim_pid t_queued_us -> WORKER_PID (the replacement), KILLED_CPU
    local dir=$1 victim=$2 tq_us=$3 core name t_kill_us state=""
    core=${W_CORE[$victim]} name=${W_NAME[$victim]}
    [[ -s $dir/poll.state ]] && IFS= read -r state <"$dir/poll.state"
    # SIGSTOP first: the group stops at once (the moment of the "reclaim"), the replacement starts
    # right away, and the dead machine's CPU time can still be read before the SIGKILL.
    kill -STOP -- "-$victim" || fail "could not stop worker $name's process group $victim"
    t_kill_us=${EPOCHREALTIME//[!0-9]/}
    start_worker "$dir" "$core" "$name-replacement"
    KILLED_CPU=$(tree_cpu_s "$victim") || KILLED_CPU=0
    kill -KILL -- "-$victim" || fail "could not SIGKILL worker $name's process group $victim"
    wait "$victim" 2>/dev/null || true
    local w keep=()
    for w in "${WORKERS[@]}"; do [[ $w == "$victim" ]] || keep+=("$w"); done
    WORKERS=("${keep[@]}")
    KILL_AT_S=$(awk -v k="$t_kill_us" -v q="$tq_us" 'BEGIN{printf "%.3f", (k - q) / 1e6}')
    # status progress total done running queued, as the poller saw them last
    KILL_STATE=$(awk -F'\t' '{p = ($2 ~ /^[0-9.]+$/) ? sprintf("%.3f", $2) : $2
        printf "status %s, progress %s", $1, p
        if ($3 != "-") printf ", chunks %s/%s done, %s running, %s queued", $4, $3, $5, $6}' <<<"$state")
    echo "    SIGSTOP+SIGKILL to worker $name (pid $victim, core $core, its whole process group) ${KILL_AT_S} s after upload complete"
    echo "    at that moment: $KILL_STATE; worker CPU so far $KILLED_CPU s"
    echo "    replacement $name-replacement (pid $WORKER_PID, fresh data dir) started on core $core"
    kv kill.at_s "$KILL_AT_S"; kv kill.core "$core"; kv kill.state "$KILL_STATE"
    kv kill.killed_worker_cpu_s "$KILLED_CPU"
}

# ---------------------------------------------------------------- the runs
run_case a "(a) 1 worker (core 0), one job" 1 "$ONE_JOB_CHUNK_S"
run_case b "(b) 1 worker (core 0), chunked" 1 "$CHUNK_S"
run_case c "(c) 2 workers (cores 0, 1), chunked" 2 "$CHUNK_S"
KILL_AFTER_S=$(calc "$KILL_FRAC * ${WALL[c]}")
run_case d "(d) as (c), SIGKILL one at ${KILL_AFTER_S} s" 2 "$CHUNK_S" "$KILL_AFTER_S"

for k in b c d; do
    [[ ${REND[$k]} == "${REND[a]}" ]] \
        || echo "warning: ($k) output differs from (a): renditions / duration ${REND[$k]} vs ${REND[a]}"
done

# ---------------------------------------------------------------- summary
passfail() { awk -v x="$1" -v y="$2" -v op="$3" 'BEGIN { ok = (op == "ge") ? x >= y : x <= y; print (ok ? "PASS" : "FAIL") }'; }
json_bool() { [[ $1 == PASS ]] && echo true || echo false; }

N_EXPECTED=$(awk -v d="$SRC_DURATION" -v c="$CHUNK_S" 'BEGIN{n=int(d/c); if (n*c < d - 1e-6) n++; print n}')
N_CHUNKS=${NCHUNKS[b]:-$N_EXPECTED}
if [[ -n ${CHUNKS_DONE[b]} ]]; then
    PER_CHUNK=$(calc "${CHUNKS_DONE[b]} / $N_CHUNKS")
    PER_CHUNK_HOW="(b)'s time until its last chunk was done / $N_CHUNKS chunks"
else
    PER_CHUNK=$(calc "${WALL[b]} / $N_CHUNKS")
    PER_CHUNK_HOW="(b)'s wall time / $N_CHUNKS chunks"
fi
SPEEDUP=$(calc "${WALL[b]} / ${WALL[c]}")
SPEEDUP_A=$(calc "${WALL[a]} / ${WALL[c]}")
CPU_BA=$(calc "${CPU[b]} / ${CPU[a]}")
CPU_CA=$(calc "${CPU[c]} / ${CPU[a]}")
BUDGET=$(calc "$PER_CHUNK + $LEASE_S")
G_SPEED=$(passfail "$SPEEDUP" 1.8 ge)
G_CPU=$(passfail "$CPU_BA" 1.05 le)
G_CPU_C=$(passfail "$CPU_CA" 1.05 le)
if [[ -n $KILL_AT_S ]]; then
    LOSS=$(calc "${WALL[d]} - ${WALL[c]}")
    G_RECLAIM=$(passfail "$LOSS" "$BUDGET" le)
else
    LOSS="" G_RECLAIM="n/a (nothing was killed)"
fi

echo "== summary (source $(calc "$SRC_DURATION") s 1080p30, preset $PRESET, chunk_s $CHUNK_S, lease_s $LEASE_S, nproc $NPROC) =="
echo "workers pinned one per core (0, 1); API, poller and upload CLI $API_WHERE"
printf '%-40s %9s %9s %11s %8s %7s\n' "run" "wall s" "x realt." "worker CPU s" "CPU/(a)" "chunks"
for k in a b c d; do
    label=$(case $k in
        a) echo "(a) 1 worker, one job" ;;
        b) echo "(b) 1 worker, chunked" ;;
        c) echo "(c) 2 workers, chunked" ;;
        d) echo "(d) 2 workers, chunked, 1 SIGKILLed" ;;
    esac)
    printf '%-40s %9.2f %8.2fx %12.2f %8.3f %7s\n' "$label" "${WALL[$k]}" \
        "$(calc "$SRC_DURATION / ${WALL[$k]}")" "${CPU[$k]}" "$(calc "${CPU[$k]} / ${CPU[a]}")" "${NCHUNKS[$k]:--}"
done
echo
echo "speed-up, 2 workers vs 1, wall (b)/(c): ${SPEEDUP}x   goal >= 1.8x: $G_SPEED"
echo "    (vs one job on one worker, (a)/(c): ${SPEEDUP_A}x)"
echo "chunked CPU, worker CPU s (b)/(a): $CPU_BA   goal <= 1.05: $G_CPU"
echo "    (two workers, (c)/(a): $CPU_CA, <= 1.05: $G_CPU_C)"
echo "per-chunk encode time: $PER_CHUNK s ($PER_CHUNK_HOW)"
if [[ -n $LOSS ]]; then
    echo "reclaim loss, wall (d)-(c): $LOSS s (killed at $KILL_AT_S s: $KILL_STATE)"
    echo "    goal <= one chunk + lease = $PER_CHUNK + $LEASE_S = $BUDGET s: $G_RECLAIM"
else
    echo "reclaim loss: $G_RECLAIM"
fi
kv speedup_b_over_c "$SPEEDUP"; kv speedup_a_over_c "$SPEEDUP_A"
kv cpu_ratio_b_over_a "$CPU_BA"; kv cpu_ratio_c_over_a "$CPU_CA"
kv per_chunk_encode_s "$PER_CHUNK"; kv per_chunk_encode_how "$PER_CHUNK_HOW"
kv reclaim_loss_s "$LOSS"; kv reclaim_budget_s "$BUDGET"
kv goals.speedup_ge_1_8 "$(json_bool "$G_SPEED")"; kv goals.cpu_b_over_a_le_1_05 "$(json_bool "$G_CPU")"
kv goals.cpu_c_over_a_le_1_05 "$(json_bool "$G_CPU_C")"
kv goals.reclaim_loss_le_chunk_plus_lease "$([[ -n $LOSS ]] && json_bool "$G_RECLAIM")"

# ---------------------------------------------------------------- the simulation, fed with this
# Per-chunk overhead: what chunking added to one worker's wall time, per chunk. The stitch tail
# (last chunk done -> ready) is scaled to the simulation's 2-hour video, as if it grows with it.
OVERHEAD=$(awk -v b="${WALL[b]}" -v a="${WALL[a]}" -v n="$N_CHUNKS" -v c="$PER_CHUNK" \
    'BEGIN{o=(b-a)/n; if (o<0) o=0; if (o>0.9*c) o=0.9*c; printf "%.2f", o}')
SIM=(python3 "$BENCH_DIR/chunks_sim.py" --chunk-encode-s "$PER_CHUNK" --chunk-s "$CHUNK_S"
     --per-chunk-overhead-s "$OVERHEAD")
[[ -n ${TAIL[b]} ]] && SIM+=(--stitch-s "$(calc "${TAIL[b]} * 7200 / $SRC_DURATION")")
kv simulation.command "${SIM[*]}"; kv simulation.results "@$OUT_SIM_JSON"
echo
STITCH_SEEN=$([[ -n ${TAIL[b]} ]] && echo "$(calc "${TAIL[b]}") s, scaled to 7200 s" || echo "not seen")
echo "per-chunk overhead, (wall (b) - wall (a)) / $N_CHUNKS: $OVERHEAD s; stitch, (b)'s last chunk -> ready: $STITCH_SEEN"
echo "feed the measured chunk time into the fleet simulation:"
echo "    ${SIM[*]#"$ROOT"/}"
echo
mkdir -p "$OUT_DIR"
"${SIM[@]}" --json "$OUT_SIM_JSON" || echo "warning: the simulation failed" >&2
echo
write_json

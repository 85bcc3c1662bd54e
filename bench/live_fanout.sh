#!/usr/bin/env bash
# Live fan-out benchmark: one live stream, N concurrent LL-HLS viewers each holding a blocking
# playlist reload (index.m3u8?_HLS_msn=M&_HLS_part=P) for the next part. How long after a part
# appears does every viewer have it, and what does holding N requests cost the server?
#
#   `oxcast serve` with a one-rung live ladder (360p), caps on connections and held requests
#   raised to 25000, a new live stream and a real-time (-re) ffmpeg 360p test pattern + sine
#   published to it over RTMP for the whole run. For each N: bench/live_fanout (a Rust load
#   client, built here) opens N keep-alive connections to the stream's first video variant
#   (ramped, --ramp-rate per second), and once all hold a request counts --seconds of parts:
#   parts that reached every client, delay from a part's first completion (≈ its publish time)
#   to each client's response complete p50/p99/max, errors by kind, the server's RSS and CPU
#   (read from /proc by the client), the live encoder's CPU and the stream's health (dropped
#   frames, encoder speed) before and after.
#
# Usage: bench/live_fanout.sh [--clients "1000 5000 10000"] [--seconds S] [--ramp-rate R]
#                             [--threads T] [--keep]
#
#   --clients "N…"  client counts, run one after another on the same stream (default
#                   "1000 5000 10000"; each 1..20000)
#   --seconds S     seconds counted per N once all clients wait (default 20, at most 300)
#   --ramp-rate R   new connections per second while ramping up (default 2000)
#   --threads T     the load client's tokio worker threads (default 1: a current-thread runtime)
#   --keep          keep the scratch dir (server, publisher and client logs) and say where
#
# Environment:
#   OXCAST_BIN       oxcast binary to use as is. Unset: `cargo build --release -p oxcast` runs
#                    first (a no-op when up to date) and <repo>/target/release/oxcast is used.
#                    It is removed from the server's environment (every OXCAST_* variable is
#                    server configuration).
#   LIVE_FANOUT_BIN  load client to use as is. Unset: `cargo build --release --manifest-path
#                    bench/live_fanout/Cargo.toml` with CARGO_TARGET_DIR=<repo>/target/bench.
#   OXCAST_API_TOKEN if set, passed to the server (its own config) and sent as a bearer token.
#
# The server, its live encoder, the publisher and the load client all share this machine's
# cores. Results are printed and written to bench/out/live_fanout-<timestamp>.json (the server
# log is copied next to it). A missed goal is reported, not an error; a failing step exits
# non-zero.
set -euo pipefail

BENCH_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$BENCH_DIR/.." && pwd)

CLIENTS="1000 5000 10000"
SECONDS_PER_N=20
RAMP_RATE=2000
THREADS=1
KEEP=0
SIZE=640x360
FPS=30
PART_S=0.5      # = oxcast's default live.part_s
MAX_N=20000
GOAL_KIB=30     # server RSS per waiting client

# shellcheck source=bench/lib.sh
source "$BENCH_DIR/lib.sh"

while (($#)); do
    case "$1" in
        --clients) CLIENTS=${2:?--clients needs a value}; shift 2 ;;
        --clients=*) CLIENTS=${1#*=}; shift ;;
        --seconds) SECONDS_PER_N=${2:?--seconds needs a value}; shift 2 ;;
        --seconds=*) SECONDS_PER_N=${1#*=}; shift ;;
        --ramp-rate) RAMP_RATE=${2:?--ramp-rate needs a value}; shift 2 ;;
        --ramp-rate=*) RAMP_RATE=${1#*=}; shift ;;
        --threads) THREADS=${2:?--threads needs a value}; shift 2 ;;
        --threads=*) THREADS=${1#*=}; shift ;;
        --keep) KEEP=1; shift ;;
        -h|--help) usage; exit 0 ;;
        *) echo "unknown argument: $1 (try --help)" >&2; exit 2 ;;
    esac
done
read -r -a NS <<<"$CLIENTS"
((${#NS[@]})) || { echo "--clients needs at least one number" >&2; exit 2; }
BIGGEST=0
for n in "${NS[@]}"; do
    if ! [[ $n =~ ^[0-9]+$ ]] || ((n < 1 || n > MAX_N)); then
        echo "--clients: each count must be 1..$MAX_N, got '$n'" >&2; exit 2
    fi
    ((n > BIGGEST)) && BIGGEST=$n
done
if ! [[ $SECONDS_PER_N =~ ^[0-9]+$ ]] || ((SECONDS_PER_N < 1 || SECONDS_PER_N > 300)); then
    echo "--seconds must be a whole number 1..300" >&2; exit 2
fi
if ! [[ $RAMP_RATE =~ ^[0-9]+$ ]] || ((RAMP_RATE < 1 || RAMP_RATE > 100000)); then
    echo "--ramp-rate must be a whole number of connections per second, 1..100000" >&2; exit 2
fi
if ! [[ $THREADS =~ ^[0-9]+$ ]] || ((THREADS < 1 || THREADS > 16)); then
    echo "--threads must be 1..16" >&2; exit 2
fi

for tool in ffmpeg curl python3; do
    command -v "$tool" >/dev/null || { echo "missing required tool: $tool" >&2; exit 1; }
done

SCRATCH=$(mktemp -d "${TMPDIR:-/tmp}/oxcast-fanout-bench.XXXXXX")
SERVER_PID=""
PUB_PID=""
PIDS=()          # load clients: stopped on exit
STAMP=$(date -u +%Y%m%dT%H%M%SZ)
OUT_DIR="$BENCH_DIR/out"
OUT_JSON="$OUT_DIR/live_fanout-$STAMP.json"
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
    # tower-http logs every 5xx answer as ERROR "response failed": this script's own
    # master.m3u8 retries while the stream starts (503), held requests over the cap (503) and
    # blocking reloads that timed out.
    failed=$(grep 'response failed' <<<"$lines" || true)
    if [[ -n $failed ]]; then
        echo "'response failed' (5xx answers), by status:"
        sed -E 's/.*classification=Status code: ([0-9]+[^=]*) latency=.*/\1/' <<<"$failed" \
            | sort | uniq -c | sed 's/^/  /'
    fi
    other=$(grep -v 'response failed' <<<"$lines" || true)
    if [[ -n $other ]]; then
        head -n 40 <<<"$other"
        (($(wc -l <<<"$other") > 40)) && echo "... (more in the server log)"
    fi
    return 0
}

cleanup() {
    local rc=$? pid
    for pid in "${PIDS[@]}"; do [[ -n $pid ]] && stop_pid "$pid"; done
    [[ -n $PUB_PID ]] && stop_pid "$PUB_PID"
    [[ -n $SERVER_PID ]] && stop_pid "$SERVER_PID"
    server_warnings
    if [[ -f $SERVER_LOG ]]; then
        mkdir -p "$OUT_DIR"
        cp "$SERVER_LOG" "$OUT_DIR/live_fanout-$STAMP-server.log" 2>/dev/null \
            && echo "server log copied to bench/out/live_fanout-$STAMP-server.log"
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

epoch_ms() { date +%s%3N; }

# ---------------------------------------------------------------- descriptors
# Every client is a connection on both sides: the server and the client each need one
# descriptor per client plus their own. Raise the soft limit to the hard one (and the hard one
# too where allowed: root with CAP_SYS_RESOURCE); children inherit it.
NEED_FDS=$((BIGGEST + 512))
HARD=$(ulimit -Hn)
if [[ $HARD != unlimited ]] && ((HARD < NEED_FDS)); then
    ulimit -Hn "$NEED_FDS" 2>/dev/null || true
    HARD=$(ulimit -Hn)
fi
ulimit -n "$HARD" 2>/dev/null || true
NOFILE=$(ulimit -n)
[[ $NOFILE == unlimited ]] || ((NOFILE >= NEED_FDS)) \
    || fail "the descriptor limit is $NOFILE (hard $HARD); $BIGGEST clients need about $NEED_FDS: lower --clients or raise ulimit -Hn"

machine_busy() { # seconds -> % of one core the whole machine was busy over that long (/proc/stat)
    local a b
    a=$(head -n1 /proc/stat)
    sleep "$1"
    b=$(head -n1 /proc/stat)
    awk -v a="$a" -v b="$b" -v n="$(nproc)" 'BEGIN {
        split(a, x); split(b, y); t = 0; idle = (y[5] + y[6]) - (x[5] + x[6])
        for (i = 2; i <= 9; i++) t += y[i] - x[i]
        printf "%.0f", (t > 0 ? 100 * n * (t - idle) / t : 0) }'
}

# ---------------------------------------------------------------- header
FFMPEG_VERSION=$(ffmpeg -hide_banner -version | head -n1)
NPROC=$(nproc)
echo "== oxcast live fan-out benchmark =="
echo "ffmpeg:  $FFMPEG_VERSION"
echo "nproc:   $NPROC (shared by the server, its live encoder, the publisher and the load client)"
echo "clients: ${NS[*]}, ${SECONDS_PER_N}s counted each, ramp ${RAMP_RATE}/s, client threads $THREADS"
echo "ulimit:  -n $NOFILE (hard $HARD)"
echo "scratch: $SCRATCH"
IDLE_BUSY=$(machine_busy 2)
echo "load:    machine ${IDLE_BUSY}% busy (of $((NPROC * 100))%) over 2 s before anything starts"
((IDLE_BUSY <= 25)) || echo "note:    something else is using the CPU: the figures below are shared with it"
echo

# ---------------------------------------------------------------- binaries
oxcast_bin ""
echo "binary:  $BIN"
if [[ -n ${LIVE_FANOUT_BIN:-} ]]; then
    FANOUT=$LIVE_FANOUT_BIN
    [[ -x $FANOUT ]] || fail "LIVE_FANOUT_BIN=$FANOUT is not an executable"
else
    command -v cargo >/dev/null || fail "cargo is needed to build the load client (or set LIVE_FANOUT_BIN)"
    echo "    cargo build --release --manifest-path bench/live_fanout/Cargo.toml (target/bench) ..."
    CARGO_TARGET_DIR="$ROOT/target/bench" \
        cargo build --release --manifest-path "$BENCH_DIR/live_fanout/Cargo.toml" \
        >"$SCRATCH/build-client.log" 2>&1 \
        || { log_tail "$SCRATCH/build-client.log"; fail "building the load client failed"; }
    FANOUT="$ROOT/target/bench/release/live_fanout"
fi
echo "client:  $FANOUT"

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
SERVER_ENV=(
    OXCAST_LIVE__RUNGS="[360]"
    OXCAST_LIVE__RTMP_LISTEN="127.0.0.1:$RTMP_PORT"
    OXCAST_LIVE__SRT_LISTEN="127.0.0.1:$SRT_PORT"
    OXCAST_HTTP__MAX_CONNECTIONS=25000
    OXCAST_ORIGIN__MAX_BLOCKING=25000
    OXCAST_ORIGIN__MAX_BLOCKING_PER_ADDR=25000
)
env -u OXCAST_BIN "${SERVER_ENV[@]}" \
    "$BIN" serve --listen "127.0.0.1:$PORT" --data-dir "$SCRATCH/data" \
    >"$SERVER_LOG" 2>&1 &
SERVER_PID=$!
echo "server:  pid $SERVER_PID, http $URL, rtmp :$RTMP_PORT, srt :$SRT_PORT/udp"
echo "         ${SERVER_ENV[*]:0:1} ${SERVER_ENV[*]:3}"

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
CONN_CAP=$(sed 's/\x1b\[[0-9;]*m//g' "$SERVER_LOG" | grep -m1 'connection cap' \
    | sed -nE 's/.*max_connections=([0-9]+).*/\1/p' || true)
echo "healthz: 200 (server connection cap ${CONN_CAP:-?})"
if [[ -n $CONN_CAP ]] && ((CONN_CAP < BIGGEST)); then
    echo "note: the server serves at most $CONN_CAP connections (its descriptor limit): above that clients are refused"
fi

# ---------------------------------------------------------------- stream + publisher
body=$("${CURL[@]}" -f -X POST -H 'Content-Type: application/json' \
    -d '{"title":"fanout"}' "$URL/api/v1/live-streams") \
    || fail "POST /api/v1/live-streams failed"
SID=$(json_field id <<<"$body")
RTMP_URL=$(json_field rtmp_url <<<"$body")
[[ -n $SID && -n $RTMP_URL ]] || fail "no id / rtmp_url in: $body"
echo "stream:  $SID -> $RTMP_URL"

# The publisher runs for the whole benchmark; cleanup stops it.
ffmpeg -hide_banner -nostdin -loglevel warning -y \
    -re -f lavfi -i "testsrc2=size=$SIZE:rate=$FPS" \
    -f lavfi -i "sine=frequency=440:sample_rate=48000" \
    -c:v libx264 -preset veryfast -tune zerolatency -g 60 -keyint_min 60 -sc_threshold 0 \
    -pix_fmt yuv420p -c:a aac -b:a 96k -f flv "$RTMP_URL" >"$SCRATCH/publish.log" 2>&1 &
PUB_PID=$!
echo "publish: pid $PUB_PID, ffmpeg -re testsrc2 ${SIZE}@${FPS} + sine 440 Hz, x264 veryfast zerolatency, -g 60 (2 s keyframes)"

deadline=$(calc "$(now) + 30")
until master=$("${CURL[@]}" -f "$URL/live/$SID/master.m3u8" 2>/dev/null); do
    kill -0 "$PUB_PID" 2>/dev/null || { log_tail "$SCRATCH/publish.log"; PUB_PID=""; fail "the publisher exited before the stream went live"; }
    past "$deadline" && { log_tail "$SERVER_LOG"; fail "/live/$SID/master.m3u8 did not answer 200 within 30 s"; }
    sleep 0.2
done
VARIANT=$(awk '/^#EXT-X-STREAM-INF/ { getline; print; exit }' <<<"$master")
[[ -n $VARIANT ]] || fail "no variant in master.m3u8: $master"
MEDIA_URL="$URL/live/$SID/$VARIANT"
echo "variant: $MEDIA_URL"
# Wait until the media playlist announces parts, then give the encoder a few seconds to settle.
deadline=$(calc "$(now) + 20")
until "${CURL[@]}" -f "$MEDIA_URL" 2>/dev/null | grep -q '^#EXT-X-PRELOAD-HINT:TYPE=PART'; do
    past "$deadline" && fail "the media playlist has no part preload hint after 20 s"
    sleep 0.2
done
sleep 4
echo

# ---------------------------------------------------------------- runs
stream_health() { # -> one JSON object: current_session.health and the /health view
    local view hist
    view=$("${CURL[@]}" -f "$URL/api/v1/live-streams/$SID" 2>/dev/null || echo '{}')
    hist=$("${CURL[@]}" -f "$URL/api/v1/live-streams/$SID/health?since=${1:-0}" 2>/dev/null || echo '{}')
    python3 -c '
import json, sys
view, hist = json.loads(sys.argv[1] or "{}"), json.loads(sys.argv[2] or "{}")
cs = view.get("current_session") or {}
samples = hist.get("samples") or []
speeds = [s["encoder_speed"] for s in samples if s.get("encoder_speed")]
print(json.dumps({
    "status": view.get("status"),
    "publishing": cs.get("publishing"),
    "health": cs.get("health"),
    "state": hist.get("state"),
    "current": hist.get("current"),
    "alerts": hist.get("alerts"),
    "samples": len(samples),
    "encoder_speed_min": min(speeds) if speeds else None,
    "encoder_speed_median": sorted(speeds)[(len(speeds) - 1) // 2] if speeds else None,
    "speeds": [[s.get("t"), s.get("encoder_speed"), s.get("fps"), s.get("dropped_frames")] for s in samples],
    "fps_min": min((s["fps"] for s in samples), default=None),
    "dropped_frames_max": max((s["dropped_frames"] for s in samples), default=None),
}))' "$view" "$hist"
}

RUN_FILES=()
for n in "${NS[@]}"; do
    echo "-- $n clients: ramp at ${RAMP_RATE}/s, then ${SECONDS_PER_N}s counted ..."
    kill -0 "$PUB_PID" 2>/dev/null || { log_tail "$SCRATCH/publish.log"; PUB_PID=""; fail "the publisher died"; }
    kill -0 "$SERVER_PID" 2>/dev/null || { log_tail "$SERVER_LOG"; SERVER_PID=""; fail "oxcast serve died"; }
    t_ms=$(epoch_ms)
    before=$(stream_health "$t_ms")
    "$FANOUT" --url "$MEDIA_URL" --clients "$n" --seconds "$SECONDS_PER_N" \
        --ramp-rate "$RAMP_RATE" --threads "$THREADS" \
        --server-pid "$SERVER_PID" --publisher-pid "$PUB_PID" \
        >"$SCRATCH/client-$n.out" 2>"$SCRATCH/client-$n.err" &
    cpid=$!
    PIDS+=("$cpid")
    wait "$cpid" && crc=0 || crc=$?
    forget "$cpid"
    sed 's/^/   /' "$SCRATCH/client-$n.err"
    if ((crc != 0)); then
        log_tail "$SCRATCH/client-$n.out"
        fail "the load client exited with status $crc for $n clients"
    fi
    sed '$d' "$SCRATCH/client-$n.out" | sed 's/^/   /'
    after=$(stream_health "$t_ms")
    kill -0 "$SERVER_PID" 2>/dev/null || { log_tail "$SERVER_LOG"; SERVER_PID=""; fail "oxcast serve died during the $n-client run"; }
    python3 -c '
import json, sys
client = json.loads(sys.argv[1])
print(json.dumps({"clients": int(sys.argv[2]), "client": client,
                  "health_before": json.loads(sys.argv[3]), "health_after": json.loads(sys.argv[4])}))' \
        "$(tail -n1 "$SCRATCH/client-$n.out")" "$n" "$before" "$after" >"$SCRATCH/run-$n.json"
    RUN_FILES+=("$SCRATCH/run-$n.json")
    echo
    # Let the previous clients' connections close before the next ramp.
    sleep 3
done

# ---------------------------------------------------------------- summary
mkdir -p "$OUT_DIR"
python3 - "$OUT_JSON" "$STAMP" "$FFMPEG_VERSION" "$NPROC" "$(uname -srm)" "$SECONDS_PER_N" \
    "$RAMP_RATE" "$THREADS" "$NOFILE" "${CONN_CAP:-}" "$PART_S" "$GOAL_KIB" "$MEDIA_URL" \
    "${SERVER_ENV[*]}" "$IDLE_BUSY" "${RUN_FILES[@]}" <<'PY'
import json, sys
(out, stamp, ffmpeg, nproc, uname, seconds, ramp, threads, nofile, cap, part_s, goal_kib,
 media_url, server_env, idle_busy), files = sys.argv[1:16], sys.argv[16:]
runs = [json.load(open(f)) for f in files]
expected = round(float(seconds) / float(part_s))

def f(v, spec=".1f"):
    return "-" if v is None else format(v, spec)

def realtime(r):
    hb, ha = r["health_before"].get("health") or {}, r["health_after"].get("health") or {}
    d0, d1 = hb.get("dropped_frames"), ha.get("dropped_frames")
    dropped = None if d0 is None or d1 is None else d1 - d0
    smin = r["health_after"].get("encoder_speed_min")
    smed = r["health_after"].get("encoder_speed_median")
    slow = any(a.get("kind") == "encoder_slow" for a in (r["health_after"].get("alerts") or []))
    l0, l1 = hb.get("latency_s"), ha.get("latency_s")
    lag = None if l0 is None or l1 is None else l1 - l0
    ok = (dropped == 0 and smed is not None and smed >= 0.95 and not slow
          and lag is not None and lag <= 1.0)
    return dropped, smin, smed, slow, (l0, l1, lag), ok

rows = []
head = ("clients", "parts reached all", "delay p50 / p99 / max ms", "server RSS before→waiting MiB",
        "KiB/client (at connect)", "server CPU", "encoder CPU", "publisher CPU", "client CPU",
        "machine busy (other)", "dropped Δ", "enc speed min / median", "latency s", "real time", "errors")
for r in runs:
    c = r["client"]
    d = c["delay_ms"]
    rss = c["server_rss_kib"]
    cpu = c["cpu_pct_of_core"]
    dropped, smin, smed, slow, (l0, l1, lag), ok = realtime(r)
    r["encoder"] = {"dropped_frames_delta": dropped, "encoder_speed_min": smin,
                    "encoder_speed_median": smed, "encoder_slow_alert": slow,
                    "latency_s_before": l0, "latency_s_after": l1, "kept_real_time": ok}
    mach = (c.get("machine_cpu_pct_of_core") or {}).get("busy")
    other = (c.get("machine_cpu_pct_of_core") or {}).get("other")
    per = c.get("server_rss_per_client_kib")
    r["goal_rss_per_client"] = None if per is None else per <= float(goal_kib)
    errs = ", ".join(f"{k} {v}" for k, v in c["errors"]) or "none"
    mib = lambda k: "-" if k is None else f"{k / 1024:.1f}"
    rows.append((
        str(r["clients"]),
        f'{c["parts_reached_all"]} of {c["parts_counted"]} (~{expected} expected)',
        f'{f(d["p50"])} / {f(d["p99"])} / {f(d["max"])}',
        f'{mib(rss["before"])} → {mib(rss["waiting_max"])}',
        f(per) + ("" if per is None else (" ok" if per <= float(goal_kib) else " OVER"))
        + f' ({f(c.get("server_rss_per_client_at_connect_kib"))})',
        f(cpu["server"], ".0f") + "%", f(cpu["encoder"], ".0f") + "%",
        f(cpu["publisher"], ".0f") + "%", f(cpu["client"], ".0f") + "%",
        f(mach, ".0f") + "% (" + f(other, ".0f") + "%)",
        f(dropped, "d"), f"{f(smin, '.2f')} / {f(smed, '.2f')}", f"{f(l0, '.2f')} → {f(l1, '.2f')}",
        "yes" if ok else "NO", errs,
    ))

widths = [max(len(h), *(len(row[i]) for row in rows)) for i, h in enumerate(head)]
line = lambda cells: "| " + " | ".join(c.ljust(w) for c, w in zip(cells, widths)) + " |"
print(f"== live fan-out: one 360p live stream, {seconds}s counted per N ==")
print(line(head))
print("|" + "|".join("-" * (w + 2) for w in widths) + "|")
for row in rows:
    print(line(row))
print()
print("- parts: the parts whose first completion fell in the counted window, from the newest")
print("  first hint any client got; 'reached all' = every one of the N clients received it.")
print("- delay: a client's response complete minus the earliest completion of the same part across")
print("  all clients (the first waiter is woken when the part is published, so that approximates")
print("  the publish time); pooled over every (client, part).")
print("- RSS: VmRSS before the first connection, and the max while all wait (sampled every 250 ms);")
print(f"  KiB/client = (waiting - before) / N, goal <= {goal_kib} KiB; in brackets the same just after")
print("  all had connected. Both include the session's own growth meanwhile (its parts in memory);")
print("  memory the allocator kept from an earlier, smaller N is reused, so later rows can read low.")
print("- CPU: % of one core over the counted window; encoder = the server's child processes;")
print(f"  machine busy = all processes and the kernel, out of {int(nproc) * 100}%; (other) = machine busy")
print("  minus the four processes: anything else running, and kernel work charged to none of them.")
print("- real time: no frames dropped during the run, median encoder_speed >= 0.95 over the run's")
print("  health samples (min shown too), no encoder_slow alert, and the server's latency estimate")
print("  (current_session.health.latency_s, before → after) grew by at most 1 s: an encoder or")
print("  packager that falls behind shows there, and as fewer parts than expected in the window.")
print(f"- all on {nproc} shared cores: server, live encoder, publisher and load client.")

meta = {
    "timestamp": stamp, "ffmpeg": ffmpeg, "nproc": int(nproc), "uname": uname,
    "seconds_per_n": int(seconds), "ramp_rate": int(ramp), "client_threads": int(threads),
    "nofile": nofile, "server_connection_cap": int(cap) if cap else None,
    "machine_busy_pct_before_start": float(idle_busy) if idle_busy else None,
    "part_s": float(part_s), "goal_rss_per_client_kib": float(goal_kib),
    "media_url": media_url, "server_env": server_env.split(" "),
    "publisher": "ffmpeg -re lavfi testsrc2 640x360@30 + sine 440, libx264 veryfast zerolatency -g 60 -keyint_min 60 -sc_threshold 0, aac 96k, RTMP",
    "notes": {
        "publish_time": "approximated by the earliest completion of the part across all clients",
        "cpu": "server, live encoder, publisher and load client share the machine's cores",
    },
}
json.dump({"meta": meta, "runs": runs}, open(out, "w"), indent=1)
PY
echo "results written to ${OUT_JSON#"$ROOT"/}"

# Helpers shared by the benchmark scripts; sourced, not run.

usage() { # prints the calling script's header comment
    awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"
}

stop_pid() { # pid: TERM, wait up to 5 s, then KILL
    local pid=$1 i
    kill -0 "$pid" 2>/dev/null || { wait "$pid" 2>/dev/null || true; return 0; }
    kill -TERM "$pid" 2>/dev/null || true
    for i in $(seq 50); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
}

now() { echo "$EPOCHREALTIME"; }
calc() { awk "BEGIN { printf \"%.3f\", $* }"; }

log_tail() { # file
    echo "---- last lines of $1 ----" >&2
    tail -n 25 "$1" >&2 || true
    echo "----" >&2
}

oxcast_bin() { # prefix -> sets BIN: $OXCAST_BIN as is, else (re)builds target/release/oxcast
    # Always (re)build: a no-op when up to date, and never benchmarks a stale binary.
    local p=$1
    if [[ -n ${OXCAST_BIN:-} ]]; then
        BIN=$OXCAST_BIN
        [[ -x $BIN ]] || fail "${p}oxcast binary not found: OXCAST_BIN=$BIN is not an executable"
        return
    fi
    BIN="$ROOT/target/release/oxcast"
    if command -v cargo >/dev/null; then
        echo "    cargo build --release -p oxcast (log: build.log in scratch) ..."
        (cd "$ROOT" && cargo build --release -p oxcast) >"$SCRATCH/build.log" 2>&1 \
            || { log_tail "$SCRATCH/build.log"; fail "${p}oxcast binary not found / build failed"; }
    elif [[ -x $BIN ]]; then
        echo "    note: cargo not installed; using the existing $BIN"
    fi
    [[ -x $BIN ]] || fail "${p}oxcast binary not found / build failed: no $BIN"
}

forget() { # pid: waited for, so the caller's cleanup must not signal it (the number may be reused)
    local i
    for i in "${!PIDS[@]}"; do [[ ${PIDS[i]} == "$1" ]] && PIDS[i]=""; done
    return 0
}

past() { awk -v n="$(now)" -v d="$1" 'BEGIN{exit !(n>d)}'; } # epoch seconds: is it later?

fail() { # message: printed, and the script exits 1 (its EXIT trap cleans up)
    echo >&2
    echo "ERROR: $*" >&2
    exit 1
}

# The engines of the multi-node benches, on loopback in $SCRATCH; their logs stay there.
start_postgres() { # max_connections -> PG_PID, DB_URL (needs SCRATCH, ROOT, PG_BIN, PG_PORT)
    local as_pg deadline
    # PostgreSQL refuses to run as root: then it runs as `postgres`, through setpriv (which execs,
    # so $! is the postmaster itself).
    as_pg=()
    if (($(id -u) == 0)); then
        id postgres >/dev/null 2>&1 || fail "running as root and there is no postgres user to run PostgreSQL as"
        as_pg=(setpriv --reuid=postgres --regid=postgres --init-groups --)
        chmod 711 "$SCRATCH"
        mkdir -p "$SCRATCH/pg"
        chown postgres: "$SCRATCH/pg"
        "${as_pg[@]}" test -w "$SCRATCH/pg" \
            || fail "the postgres user cannot reach $SCRATCH: set TMPDIR to a dir it can (e.g. /tmp)"
    fi
    (cd "$SCRATCH" && "${as_pg[@]}" "$PG_BIN/initdb" -D "$SCRATCH/pg/data" -A trust -U postgres \
        -E UTF8 --locale=C --no-sync >"$SCRATCH/initdb.log" 2>&1) \
        || { log_tail "$SCRATCH/initdb.log"; fail "initdb failed"; }
    cd "$SCRATCH"
    "${as_pg[@]}" "$PG_BIN/postgres" -D "$SCRATCH/pg/data" -h 127.0.0.1 -p "$PG_PORT" \
        -k "$SCRATCH/pg" -c max_connections="$1" >"$SCRATCH/postgres.log" 2>&1 &
    PG_PID=$!
    cd "$ROOT"
    deadline=$(calc "$(now) + 30")
    until "$PG_BIN/pg_isready" -q -h 127.0.0.1 -p "$PG_PORT"; do
        kill -0 "$PG_PID" 2>/dev/null || { PG_PID=""; log_tail "$SCRATCH/postgres.log"; fail "PostgreSQL exited"; }
        past "$deadline" && { log_tail "$SCRATCH/postgres.log"; fail "PostgreSQL not ready within 30 s"; }
        sleep 0.1
    done
    "$PG_BIN/createdb" -h 127.0.0.1 -p "$PG_PORT" -U postgres oxcast || fail "createdb failed"
    DB_URL="postgres://postgres@127.0.0.1:$PG_PORT/oxcast"
    echo "postgres:   pid $PG_PID, $DB_URL"
}

start_seaweedfs() { # -> WEED_PID, S3 with $BUCKET made (needs SCRATCH, WEED, S3_PORT, WEED_PORTS, S3_KEY, S3_SECRET)
    local p deadline
    mkdir -p "$SCRATCH/weed"
    printf '{"identities":[{"name":"bench","credentials":[{"accessKey":"%s","secretKey":"%s"}],"actions":["Admin","Read","Write","List","Tagging"]}]}\n' \
        "$S3_KEY" "$S3_SECRET" >"$SCRATCH/s3.json"
    p=("${WEED_PORTS[@]}")
    # Every port named: SeaweedFS's defaults (8080, 8888, 9333, ...) may be taken.
    "$WEED" mini -dir="$SCRATCH/weed" -ip=127.0.0.1 -ip.bind=127.0.0.1 -s3.config="$SCRATCH/s3.json" \
        -s3.port="$S3_PORT" -s3.port.grpc="${p[0]}" -master.port="${p[1]}" \
        -master.port.grpc="${p[2]}" -volume.port="${p[3]}" -volume.port.grpc="${p[4]}" \
        -filer.port="${p[5]}" -filer.port.grpc="${p[6]}" -admin.port="${p[7]}" \
        -admin.port.grpc="${p[8]}" -s3.port.iceberg="${p[9]}" -s3.port.lance="${p[10]}" \
        -webdav.port="${p[11]}" -debug.port="${p[12]}" -admin.ui=false -webdav=false \
        -master.volumeSizeLimitMB=256 -filer.localSocket="$SCRATCH/weed/filer.sock" \
        -s3.localSocket="$SCRATCH/weed/s3.sock" >"$SCRATCH/weed.log" 2>&1 &
    WEED_PID=$!
    S3="http://127.0.0.1:$S3_PORT"
    deadline=$(calc "$(now) + 60")
    until [[ $(curl -s -o /dev/null -w '%{http_code}' --aws-sigv4 "aws:amz:us-east-1:s3" \
        --user "$S3_KEY:$S3_SECRET" -X PUT "$S3/$BUCKET" || true) == 200 ]]; do
        kill -0 "$WEED_PID" 2>/dev/null || { WEED_PID=""; log_tail "$SCRATCH/weed.log"; fail "SeaweedFS exited"; }
        past "$deadline" && { log_tail "$SCRATCH/weed.log"; fail "SeaweedFS: no bucket within 60 s"; }
        sleep 0.2
    done
    echo "seaweedfs:  pid $WEED_PID, $S3, bucket $BUCKET"
}

json_field() { # field; stdin: JSON object. Prints the (top-level or dotted) field, "" if absent.
    python3 -c '
import json, sys
v = json.load(sys.stdin)
for k in sys.argv[1].split("."):
    v = v.get(k) if isinstance(v, dict) else None
print("" if v is None else v)' "$1"
}

free_ports() { # tcp|udp n -> n distinct free loopback ports, one a line
    python3 -c '
import socket, sys
kind = socket.SOCK_STREAM if sys.argv[1] == "tcp" else socket.SOCK_DGRAM
held = [socket.socket(socket.AF_INET, kind) for _ in range(int(sys.argv[2]))]
for s in held:
    s.bind(("127.0.0.1", 0))
    print(s.getsockname()[1])' "$1" "$2"
}

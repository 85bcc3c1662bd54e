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

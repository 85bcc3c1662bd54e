#!/usr/bin/env bash
# A scale-out oxcast on one machine, for a person to try: PostgreSQL, an S3 server (SeaweedFS),
# two API processes, two workers, one ingest process and two live encoders (the ingest relays
# each publisher to one of them, and moves it to the other if that one dies), all on loopback.
# Prints the URLs; Ctrl-C stops everything. Data lives in ./oxcast-cluster (kept between runs).
#   scripts/cluster.sh [BASE_PORT]     API on BASE_PORT and BASE_PORT+1 (default 8080)
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/deps.sh --scaleout
cargo build --release --quiet -p oxcast
bin=$PWD/target/release/oxcast

base_port=${1:-8080}
root=$PWD/oxcast-cluster
mkdir -p "$root"
pids=()
cleanup() {
  trap - INT TERM EXIT
  echo
  echo "cluster: stopping"
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
}
trap 'cleanup; exit 0' INT TERM
trap cleanup EXIT

pg_bin=$(dirname "$(compgen -G '/usr/lib/postgresql/*/bin/postgres' | sort -V | tail -1)")
pg_port=$((base_port + 10))
s3_port=$((base_port + 11))
master_port=$((base_port + 12)) volume_port=$((base_port + 13)) filer_port=$((base_port + 14))
as_pg=()
if [[ $(id -u) -eq 0 ]]; then
  # PostgreSQL refuses to run as root.
  as_pg=(runuser -u postgres --)
  chown -R postgres "$root" 2>/dev/null || true
fi

# PostgreSQL: its own cluster in $root/pg, on loopback only.
if [[ ! -f $root/pg/PG_VERSION ]]; then
  mkdir -p "$root/pg" && [[ ${#as_pg[@]} -eq 0 ]] || chown postgres "$root/pg"
  "${as_pg[@]}" "$pg_bin/initdb" -D "$root/pg" -U oxcast --auth=trust >/dev/null
fi
"${as_pg[@]}" "$pg_bin/postgres" -D "$root/pg" -p "$pg_port" -k "$root/pg" \
  -c listen_addresses=127.0.0.1 >"$root/postgres.log" 2>&1 &
pids+=($!)
until "$pg_bin/pg_isready" -q -h 127.0.0.1 -p "$pg_port"; do sleep 0.2; done
"$pg_bin/psql" -q -h 127.0.0.1 -p "$pg_port" -U oxcast -d postgres -tc \
  "SELECT 1 FROM pg_database WHERE datname = 'oxcast'" | grep -q 1 ||
  "$pg_bin/createdb" -h 127.0.0.1 -p "$pg_port" -U oxcast oxcast

# SeaweedFS with one S3 identity; the bucket is created once.
key=oxcast-cluster secret=oxcast-cluster-secret
cat >"$root/s3.json" <<JSON
{"identities":[{"name":"oxcast","credentials":[{"accessKey":"$key","secretKey":"$secret"}],
  "actions":["Admin","Read","Write","List","Tagging"]}]}
JSON
mkdir -p "$root/s3"
# Every port named: SeaweedFS's defaults (8080 for volumes, 8888, 9333) collide with ours.
weed mini -dir="$root/s3" -ip=127.0.0.1 -ip.bind=127.0.0.1 -s3.config="$root/s3.json" \
  -s3.port="$s3_port" -s3.port.grpc=$((s3_port + 10000)) \
  -master.port="$master_port" -master.port.grpc=$((master_port + 10000)) \
  -volume.port="$volume_port" -volume.port.grpc=$((volume_port + 10000)) \
  -filer.port="$filer_port" -filer.port.grpc=$((filer_port + 10000)) \
  -admin.ui=false -webdav=false >"$root/weed.log" 2>&1 &
pids+=($!)
until curl -s -o /dev/null "http://127.0.0.1:$s3_port/"; do sleep 0.3; done
shell() { weed shell -master="127.0.0.1:$master_port" 2>/dev/null; }
until echo "s3.bucket.list" | shell | grep -q oxcast-media; do
  echo "s3.bucket.create -name oxcast-media" | shell >/dev/null || true
  sleep 0.5
done

[[ -f $root/signing-key ]] || head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n' >"$root/signing-key"
export OXCAST_DATABASE_URL="postgres://oxcast@127.0.0.1:$pg_port/oxcast"
export OXCAST_SIGNING_KEY=$(cat "$root/signing-key")
export OXCAST_STORAGE__URL=s3://oxcast-media OXCAST_STORAGE__ENDPOINT=http://127.0.0.1:$s3_port
export OXCAST_STORAGE__REGION=us-east-1 OXCAST_STORAGE__PATH_STYLE=true
export OXCAST_STORAGE__ACCESS_KEY_ID=$key OXCAST_STORAGE__SECRET_ACCESS_KEY=$secret

node() { # name roles port [env...]
  local name=$1 roles=$2 port=$3
  shift 3
  env "$@" "$bin" serve --roles "$roles" --listen "127.0.0.1:$port" --data-dir "$root/$name" \
    >"$root/$name.log" 2>&1 &
  pids+=($!)
}
node api1 api "$base_port"
node api2 api $((base_port + 1))
node worker1 worker $((base_port + 2))
node worker2 worker $((base_port + 3))
node ingest1 ingest $((base_port + 4))
node live1 live $((base_port + 5)) OXCAST_LIVE__RELAY_LISTEN=127.0.0.1:$((base_port + 20))
node live2 live $((base_port + 6)) OXCAST_LIVE__RELAY_LISTEN=127.0.0.1:$((base_port + 21))
for port in "$base_port" $((base_port + 1)) $((base_port + 2)) $((base_port + 3)) \
  $((base_port + 4)) $((base_port + 5)) $((base_port + 6)); do
  until curl -sf -o /dev/null "http://127.0.0.1:$port/healthz"; do sleep 0.2; done
done

cat <<TXT
oxcast cluster up (logs in $root/*.log):
  API + web UI   http://127.0.0.1:$base_port/  and  http://127.0.0.1:$((base_port + 1))/
  workers        http://127.0.0.1:$((base_port + 2))/metrics  http://127.0.0.1:$((base_port + 3))/metrics
  live           http://127.0.0.1:$base_port/live/{stream}/master.m3u8 (any API node)
  RTMP / SRT     rtmp://127.0.0.1:1935/live/KEY   srt://127.0.0.1:9000?streamid=KEY (ingest1)
  encoders       live1, live2: kill -9 the one in use and the stream moves to the other
  PostgreSQL     $OXCAST_DATABASE_URL
  S3 bucket      s3://oxcast-media at http://127.0.0.1:$s3_port
Ctrl-C stops everything.
TXT
wait -n "${pids[@]}" || true
echo "cluster: a process exited; see $root/*.log"

#!/usr/bin/env bash
# The queue's speed, on 127.0.0.1 only, in one run:
#
# 1. Ack path: the `queue` example (ack fast, SQLite, a handler that sleeps 2 s, workers in
#    process) against the classic Express + stripe-node handler (trivial handler), with
#    wrk at concurrency 64 for 15 s each: requests/s and p99 of the acknowledgement.
# 2. Drain on PostgreSQL: 20,000 queued jobs, a no-op handler, 4 workers (the
#    `queue_drain` bench), against pgbench with 4 clients running the same take-and-
#    complete statements the workers run (copied below from src/queue/sql.rs's
#    PostgreSQL statements, a take of one job; pgbench puts the values in as literals)
#    on the same number of jobs.
# 3. Drain on Redis (Redis Streams): the `queue_drain` bench against a raw client (4
#    connections each looping on the queue's own take and complete scripts, no worker,
#    no parse, no handler: `RAW=1`), on the same number of jobs.
#
# Run with: bash benches/load/queue.sh  (DURATION=15s, N=20000, PARTS="ack drain" to change). It starts
# throwaway PostgreSQL and Redis servers with scripts/services.sh unless DATABASE_URL and
# REDIS_URL are set.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
duration="${DURATION:-15s}"
n="${N:-20000}"
secret="whsec_load_test_secret"
work="$(mktemp -d)"
pids=()
started_services=0
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  rm -rf "$work"
  [ "$started_services" = 1 ] && "$root/scripts/services.sh" stop || true
}
trap cleanup EXIT

command -v wrk >/dev/null || { DEBIAN_FRONTEND=noninteractive apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk; }
(cd "$here" && { [ -d node_modules/express ] || npm install --no-audit --no-fund --silent; })
(cd "$root" && cargo build --release --example queue --features axum,sqlite,postgres,redis,tracing -q)
(cd "$root" && cargo build --release --bench queue_drain --features postgres,redis,sqlite,testing -q)
drain_bin="$(ls -t "$root"/target/release/deps/queue_drain-* | grep -v '\.d$' | head -1)"

if [ -z "${DATABASE_URL:-}" ] || [ -z "${REDIS_URL:-}" ]; then
  started_services=1
  services="$("$root/scripts/services.sh" start)"
  eval "$services"
  export DATABASE_URL="$DATABASE_URL_TEST" REDIS_URL="$REDIS_URL_TEST"
fi

wait_up() { for _ in $(seq 200); do curl -fs "http://127.0.0.1:$1/healthz" >/dev/null 2>&1 && return 0; sleep 0.1; done; echo "server on $1 did not start" >&2; return 1; }

results="$work/results.tsv"
ack() { # name port max-req/s
  local name=$1 port=$2 rate=$3 secs="${duration%s}" out
  node "$here/gen.js" "$root/data/stripe/fixtures" "$secret" $(( rate * secs )) 0.1 > "$work/requests.tsv"
  out="$(wrk -t1 -c64 -d"$duration" --latency -s "$here/wrk.lua" "http://127.0.0.1:$port/webhook" -- "$work/requests.tsv")"
  if grep -q WRAPPED <<<"$out"; then echo "$name: $(grep WRAPPED <<<"$out"); raise its max-req/s" >&2; exit 1; fi
  local rps p99 non2xx
  rps="$(awk '/Requests\/sec/ {print $2}' <<<"$out")"
  p99="$(awk '$1=="99%" {print $2}' <<<"$out")"
  non2xx="$(awk '/Non-2xx/ {print $NF}' <<<"$out")"
  printf '%s\t%s\t%s\t%s\n' "$name" "$rps" "$p99" "${non2xx:-0}" | tee -a "$results"
}

parts="${PARTS:-ack drain}"
if [[ " $parts " == *" ack "* ]]; then
echo "== 1. ack path, c=64 =="
echo -e "server\treq/s\tp99\tnon-2xx"
# Without DATABASE_URL and REDIS_URL, or the example would queue there instead.
env -u DATABASE_URL -u REDIS_URL STRIPE_WEBHOOK_SECRET="$secret" SQLITE_PATH="$work/queue.db" PORT=4311 \
  RUST_LOG=warn DEMO_HANDLER_SLEEP_MS=2000 QUEUE_WORKERS=4 "$root/target/release/examples/queue" &
pids+=($!); wait_up 4311
ack "queue+sqlite (handler sleeps 2 s)" 4311 25000
STRIPE_WEBHOOK_SECRET="$secret" PORT=4313 node "$here/express_server.js" &
pids+=($!); sleep 1
ack "express+stripe-node (trivial handler)" 4313 15000
awk -F'\t' 'NR==1 {q=$2; qp=$3} NR==2 {printf "ack: queue %.1fx Express req/s; queue p99 %s (Express %s)\n", q/$2, qp, $3}' "$results"
fi
[[ " $parts " == *" drain "* ]] || exit 0

echo
echo "== 2. drain on PostgreSQL, $n jobs, 4 workers =="
table="pgdrain_$$"
N="$n" "$drain_bin" >"$work/drain_pg.txt" 2>&1 || { cat "$work/drain_pg.txt"; exit 1; }
cat "$work/drain_pg.txt"
QUEUE_TABLE="$table" FILL_ONLY=1 N="$n" "$drain_bin" >/dev/null
now="(SELECT (extract(epoch FROM clock_timestamp()) * 1000)::bigint)"
jobs="${table}_jobs"
cat > "$work/drain.sql" <<SQL
WITH picked AS (SELECT seq FROM $jobs j WHERE j.state IN ('queued', 'retrying', 'running') AND j.run_at <= $now ORDER BY j.run_at, j.seq LIMIT 1 FOR UPDATE SKIP LOCKED) UPDATE $jobs t SET state = 'running', attempts = t.attempts + 1, fence = 'pgbench', run_at = $now + 120000 FROM picked WHERE t.seq = picked.seq RETURNING t.seq, t.job_key, t.event_id, t.event_type, t.kind, t.body, t.attempts, t.created \gset
UPDATE $jobs SET state = 'completed', finished_at = $now, run_at = $now WHERE job_key = ':job_key' AND fence = 'pgbench' AND state = 'running';
SQL
pgbench_out="$(pgbench -n -c 4 -j 2 -t $(( n / 4 )) -f "$work/drain.sql" "$DATABASE_URL" 2>&1)" || { echo "$pgbench_out"; exit 1; }
pg_tps="$(awk '/^tps/ {print $3; exit}' <<<"$pgbench_out")"
echo "pgbench: same statements, 4 clients: $pg_tps jobs/s"
ours="$(awk '{print $(NF-1)}' "$work/drain_pg.txt")"
awk -v o="$ours" -v p="$pg_tps" 'BEGIN {printf "drain postgres: workers %.0f jobs/s = %.0f%% of pgbench (%.0f jobs/s)\n", o, 100*o/p, p}'
psql "$DATABASE_URL" -qc "DROP TABLE IF EXISTS ${table}_jobs, ${table}_objects, ${table}" >/dev/null 2>&1 || true

echo
echo "== 3. drain on Redis, $n jobs, 4 workers =="
QUEUE_BACKEND=redis N="$n" "$drain_bin" >"$work/drain_redis.txt" 2>&1 || { cat "$work/drain_redis.txt"; exit 1; }
cat "$work/drain_redis.txt"
QUEUE_BACKEND=redis N="$n" RAW=1 "$drain_bin" >"$work/raw_redis.txt" 2>&1 || { cat "$work/raw_redis.txt"; exit 1; }
cat "$work/raw_redis.txt"
ours="$(awk '{print $(NF-1)}' "$work/drain_redis.txt")"
raw="$(awk '{print $(NF-1)}' "$work/raw_redis.txt")"
awk -v o="$ours" -v r="$raw" 'BEGIN {printf "drain redis: workers %.0f jobs/s = %.0f%% of the raw client (%.0f jobs/s)\n", o, 100*o/r, r}'

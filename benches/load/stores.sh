#!/usr/bin/env bash
# Store throughput on 127.0.0.1 only: claim+complete pairs per second and p50/p99 latency
# for each store (memory, SQLite, PostgreSQL, Redis) at concurrency 1 and 16, next to the
# database's own floor for the same work, measured in the same run (pgbench running the
# store's two statements; the store's two Lua scripts as raw EVALSHA; the SQLite store's
# SQL through sqlx without the store). See benches/stores/ for what each floor is.
# Target: every store reaches 60% of its floor at concurrency 16; the script ends with
# the Markdown table and exits 1 when a store misses (or has no floor).
#
# Run with: bash benches/load/stores.sh   (STORES_BENCH_SECS=5 per run, STORES_BENCH_ROUNDS=3
# interleaved rounds, best kept; TARGET=60)
#
# Uses DATABASE_URL_TEST and REDIS_URL_TEST when set. When either is unset it uses servers
# already answering on scripts/services.sh's ports, and only when none answer runs
# scripts/services.sh start (which wipes and restarts both).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
target="${TARGET:-60}"
export STORES_BENCH_SECS="${STORES_BENCH_SECS:-5}"

find_pg_bin() {
  if [ -n "${PG_BIN:-}" ] && [ -x "$PG_BIN/pgbench" ]; then return; fi
  for d in /usr/lib/postgresql/*/bin; do [ -x "$d/pgbench" ] && PG_BIN="$d"; done
  if [ -z "${PG_BIN:-}" ] || [ ! -x "$PG_BIN/pgbench" ]; then
    p="$(command -v pgbench || true)"
    [ -n "$p" ] && PG_BIN="$(dirname "$p")"
  fi
  return 0
}

log="$(mktemp)"
# Set before the servers may start, so that every exit below stops those it started.
trap 'rm -f "$log"; [ -z "${started_services:-}" ] || "$root/scripts/services.sh" stop' EXIT

if [ -z "${DATABASE_URL_TEST:-}" ] || [ -z "${REDIS_URL_TEST:-}" ]; then
  # Servers already answering on services.sh's ports are used as they are: never restart
  # servers someone else may be using.
  pg_url="postgres://postgres@127.0.0.1:${PG_PORT:-54329}/postgres"
  redis_url="redis://127.0.0.1:${REDIS_PORT:-63799}"
  find_pg_bin
  if [ -n "${PG_BIN:-}" ] && "$PG_BIN/pg_isready" -q -d "$pg_url" 2>/dev/null \
    && redis-cli -u "$redis_url" ping >/dev/null 2>&1; then
    echo "stores.sh: using the servers already running at $pg_url and $redis_url" >&2
    export DATABASE_URL_TEST="${DATABASE_URL_TEST:-$pg_url}" REDIS_URL_TEST="${REDIS_URL_TEST:-$redis_url}"
  else
    echo "stores.sh: DATABASE_URL_TEST or REDIS_URL_TEST unset and no servers running: starting them with scripts/services.sh start" >&2
    started_services=1
    services="$("$root/scripts/services.sh" start)"
    eval "$services"
  fi
fi

find_pg_bin
if [ -z "${PG_BIN:-}" ] || [ ! -x "$PG_BIN/pgbench" ]; then
  echo "stores.sh: pgbench not found (apt-get install postgresql-client, or set PG_BIN)" >&2; exit 1
fi
export PG_BIN
"$PG_BIN/pgbench" --version >&2
redis-cli -u "$REDIS_URL_TEST" ping >/dev/null || { echo "stores.sh: no Redis at $REDIS_URL_TEST" >&2; exit 1; }
"$PG_BIN/pg_isready" -q -d "$DATABASE_URL_TEST" || { echo "stores.sh: no PostgreSQL at $DATABASE_URL_TEST" >&2; exit 1; }

(cd "$root" && cargo bench --bench stores --all-features) | tee "$log"

echo
echo "## Idempotency stores: claim+complete pairs, 127.0.0.1, $(nproc) CPUs, ${STORES_BENCH_SECS}s per run, best of ${STORES_BENCH_ROUNDS:-3} rounds"
echo
awk -F'\t' -v target="$target" '
  $1 == "RESULT" {
    n++; store[n]=$2; c[n]=$3; rate[n]=$4; p50[n]=$5; p99[n]=$6; floor[n]=$7; what[n]=$9; err[n]=$10; skip[n]=$11
  }
  END {
    print "| store | concurrency | pairs/s | p50 | p99 | floor pairs/s | % of floor |"
    print "|---|---:|---:|---:|---:|---:|---:|"
    for (i = 1; i <= n; i++) {
      if (skip[i] != "") { printf "| %s | %s | skipped: %s | | | | |\n", store[i], c[i], skip[i]; continue }
      if (floor[i] != "" && floor[i] > 0) { f = floor[i]; pct = sprintf("%.0f%%", 100 * rate[i] / floor[i]) }
      else if (store[i] == "memory") { f = "n/a"; pct = "n/a" }
      else { f = "not measured"; pct = "?" }
      printf "| %s | %s | %s | %s | %s | %s | %s |\n", store[i], c[i], rate[i], p50[i], p99[i], f, pct
    }
    print ""
    print "Floors: sqlite = the store'"'"'s two statements through sqlx on a pool opened like the store'"'"'s, without the store;"
    print "postgres = pgbench -M prepared running the store'"'"'s two statements (one transaction = one pair);"
    print "redis = the store'"'"'s two Lua scripts as raw EVALSHA, one request at a time per task (best of one connection per task / one shared connection)."
    print ""
    status = 0
    for (i = 1; i <= n; i++) {
      if (c[i] != 16 || store[i] == "memory") continue
      if (skip[i] != "") { printf "%s c=16: skipped (%s)\n", store[i], skip[i]; status = 1; continue }
      if (floor[i] == "" || floor[i] <= 0) { printf "%s c=16: no floor measured\n", store[i]; status = 1; continue }
      pct = 100 * rate[i] / floor[i]
      printf "%s c=16: %.0f%% of its floor (%s): %s (target %s%%)\n", store[i], pct, what[i], (pct >= target ? "MET" : "MISSED"), target
      if (pct < target) status = 1
      if (err[i] > 0) { printf "%s c=16: %s pairs failed\n", store[i], err[i]; status = 1 }
    }
    exit status
  }' "$log"

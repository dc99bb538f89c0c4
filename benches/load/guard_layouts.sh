#!/usr/bin/env bash
# The ordering guard's cost on PostgreSQL, in server instructions, for the shipped layout
# and others prototyped against it (benches/README.md, "2026-12-04, second session",
# "2026-12-05" and "eighteenth session").
#
#   bash benches/load/guard_layouts.sh            # every script under guard_layouts/
#   LAYOUTS="unguarded seq_rows" bash benches/load/guard_layouts.sh
#   LOCALE=en_US.UTF-8 LAYOUTS="unguarded unguarded_collated" bash benches/load/guard_layouts.sh
#
# A throwaway server (its own data directory under /tmp, a Unix socket only, fsync off)
# runs under `valgrind --tool=cachegrind --cache-sim=no`, which writes each backend's
# instruction count when it exits. Each layout's script (one pgbench transaction = one
# event claimed and completed, a random event id, 2,000 objects) runs for 200 and then
# 1,200 transactions on one connection; the difference over 1,000 is the server's cost of
# one event, less connection set-up. Each layout runs twice, the second after the first
# filled its tables, as the crate's tables fill.
#
# guard_layouts/unguarded.sql and guarded.sql copy the statements of
# src/idempotency/sql/statements.rs (POSTGRES: claim + complete; lock_and_claim +
# complete_applied) over tables of their own, and unguarded_collated.sql and
# guarded_collated.sql the same statements over tables whose keys compare in the database's
# collation, as on a database created before the keys compared bytewise (`LOCALE` sets that collation: initdb's --locale, by
# default the environment's); guarded_before.sql is the guard as shipped
# until 2026-12-05, and merged_rows.sql, seq_rows.sql, update_first.sql, pending.sql and
# pending_seen.sql are prototypes, not shipped. Needs valgrind and PostgreSQL's server binaries (PG_BIN, or
# found under /usr/lib/postgresql). Takes about ten minutes.
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)/guard_layouts"
layouts="${LAYOUTS:-unguarded guarded unguarded_collated guarded_collated guarded_before merged_rows seq_rows update_first pending pending_seen}"
bin="${PG_BIN:-}"
if [ -z "$bin" ]; then
  for d in /usr/lib/postgresql/*/bin; do [ -x "$d/initdb" ] && bin="$d"; done
fi
[ -x "$bin/postgres" ] || { echo "PostgreSQL's server binaries not found: set PG_BIN" >&2; exit 1; }
command -v valgrind >/dev/null || { echo "valgrind not found (apt-get install valgrind)" >&2; exit 1; }
pgbench="$bin/pgbench"; [ -x "$pgbench" ] || pgbench=pgbench
psql="$bin/psql"; [ -x "$psql" ] || psql=psql

work="$(mktemp -d /tmp/guard-layouts.XXXXXX)"
chmod 755 "$work"
mkdir -p "$work/pg" "$work/sock" "$work/cg"
chmod 777 "$work/cg"
as_pg() {
  if [ "$(id -u)" = 0 ]; then
    id pgtest >/dev/null 2>&1 || useradd --system --no-create-home pgtest
    chown -R pgtest "$work/pg" "$work/sock"
    su pgtest -s /bin/sh -c "$*"
  else
    sh -c "$*"
  fi
}
server_pid=""
cleanup() {
  if [ -f "$work/pg/postmaster.pid" ]; then
    as_pg "'$bin/pg_ctl' -D '$work/pg' -m fast -w stop >/dev/null" || true
  fi
  rm -rf "$work"
}
trap cleanup EXIT

as_pg "'$bin/initdb' -D '$work/pg' -U postgres -A trust --no-sync ${LOCALE:+--locale=$LOCALE} >/dev/null"
as_pg "nohup valgrind --tool=cachegrind --cache-sim=no --trace-children=yes \
  --cachegrind-out-file='$work/cg/cg.%p' '$bin/postgres' -D '$work/pg' -k '$work/sock' \
  -p 5499 -c listen_addresses= -c fsync=off -c synchronous_commit=off \
  -c autovacuum=off > '$work/sock/server.log' 2>&1 &"
for _ in $(seq 120); do
  "$bin/pg_isready" -q -h "$work/sock" -p 5499 && break
  sleep 1
done
"$bin/pg_isready" -q -h "$work/sock" -p 5499 || { cat "$work/sock/server.log" >&2; exit 1; }
"$psql" -q -h "$work/sock" -p 5499 -U postgres -f "$here/schema.sql"

# The instructions of the backend that served one pgbench run: the largest new count
# file (any other new one is a short-lived helper process).
count() {
  local before after
  before="$(ls "$work/cg" | sort)"
  "$pgbench" -h "$work/sock" -p 5499 -U postgres -n -M prepared -c 1 -t "$2" \
    -f "$here/$1.sql" postgres >/dev/null
  sleep 2
  after="$(ls "$work/cg" | sort)"
  comm -13 <(echo "$before") <(echo "$after") | while read -r f; do
    grep -h '^summary' "$work/cg/$f"
  done | awk '{ if ($2 > m) m = $2 } END { print m + 0 }'
}

printf '%-20s %s\n' layout "server instructions per event (run 1, run 2)"
for layout in $layouts; do
  per=()
  for _ in 1 2; do
    a="$(count "$layout" 200)"
    b="$(count "$layout" 1200)"
    per+=("$(( (b - a) / 1000 ))")
  done
  printf '%-20s %s\n' "$layout" "${per[*]}"
done

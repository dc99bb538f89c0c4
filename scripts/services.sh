#!/usr/bin/env bash
# Start (or stop) throwaway PostgreSQL and Redis servers on 127.0.0.1 for the store tests.
#
#   eval "$(scripts/services.sh start)"   # prints export lines for DATABASE_URL_TEST / REDIS_URL_TEST
#   scripts/services.sh stop
#   scripts/services.sh restart-pg        # as after a crash; tests/queue_restart.rs uses it
#   scripts/services.sh logs              # the servers' last log lines (scripts/test.sh, on a failure)
#
# Data lives under target/services/ (PostgreSQL's under /tmp when run as root) and is
# wiped at each start. Missing servers are
# installed from Debian's packages when running as root.
set -euo pipefail

root="$(cd "$(dirname "$0")/.." && pwd)"
dir="$root/target/services"
# PostgreSQL's data: under target/services, except as root, where the server runs as the
# user pgtest, who may not be able to reach a clone under a private home (/root is
# 0700): then in a fresh directory under /tmp (made by mktemp, so no one else's), whose
# name start writes to target/services/pg_dir for stop and restart-pg.
pg_dir="$dir"
if [ "$(id -u)" = 0 ] && [ -f "$dir/pg_dir" ]; then
  pg_dir="$(cat "$dir/pg_dir")"
fi
new_pg_dir() {
  if [ "$(id -u)" = 0 ]; then
    pg_dir="$(mktemp -d /tmp/stripe-webhooks-pg.XXXXXX)"
    chmod 755 "$pg_dir"
    echo "$pg_dir" > "$dir/pg_dir"
  fi
}
pg_port="${PG_PORT:-54329}"
redis_port="${REDIS_PORT:-63799}"
redis_tls_port="${REDIS_TLS_PORT:-63800}"

log() { echo "services: $*" >&2; }

find_pg_bin() {
  local d
  for d in /usr/lib/postgresql/*/bin; do
    [ -x "$d/initdb" ] && { echo "$d"; return 0; }
  done
  command -v pg_config >/dev/null 2>&1 && [ -x "$(pg_config --bindir)/initdb" ] && { pg_config --bindir; return 0; }
  return 1
}

apt_install() {
  if [ "$(id -u)" != 0 ]; then
    log "need $* but not root: install it (apt-get install $*) and run again"; exit 1
  fi
  log "installing $*"
  DEBIAN_FRONTEND=noninteractive apt-get update -qq >&2
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >&2
}

run_as_pg() {
  if [ "$(id -u)" = 0 ]; then
    id pgtest >/dev/null 2>&1 || useradd --system --no-create-home pgtest
    # A running server's files come and go under a recursive chown (restart-pg), so a
    # file gone meanwhile is no failure; a real one shows in the command that follows.
    chown -R pgtest "$pg_dir/pg" "$pg_dir/pgsock" 2>/dev/null || true
    su pgtest -s /bin/sh -c "$*"
  else
    sh -c "$*"
  fi
}

# A self-signed certificate for 127.0.0.1, so the TLS tests (features postgres-tls and
# redis-tls) have servers that speak TLS. openssl comes with the postgresql package.
make_cert() {
  command -v openssl >/dev/null 2>&1 || apt_install openssl
  rm -rf "$dir/tls"; mkdir -p "$dir/tls"
  openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj "/CN=127.0.0.1" \
    -addext "subjectAltName=IP:127.0.0.1" -addext "basicConstraints=critical,CA:FALSE" \
    -keyout "$dir/tls/server.key" -out "$dir/tls/server.crt" >/dev/null 2>&1
  chmod 600 "$dir/tls/server.key"
}

start_pg() {
  local bin
  bin="$(find_pg_bin)" || { apt_install postgresql; bin="$(find_pg_bin)"; }
  rm -rf "$pg_dir/pg" "$pg_dir/pgsock"; mkdir -p "$pg_dir/pg" "$pg_dir/pgsock"
  run_as_pg "'$bin/initdb' -D '$pg_dir/pg' -A trust -U postgres --no-sync >/dev/null"
  cp "$dir/tls/server.crt" "$dir/tls/server.key" "$pg_dir/pg/"
  [ "$(id -u)" = 0 ] && chown pgtest "$pg_dir/pg/server.crt" "$pg_dir/pg/server.key"
  run_as_pg "'$bin/pg_ctl' -D '$pg_dir/pg' -l '$pg_dir/pg/log' -w -o \"-p $pg_port -k $pg_dir/pgsock -c listen_addresses=127.0.0.1 -c max_connections=300 -c fsync=off -c ssl=on -c ssl_cert_file=server.crt -c ssl_key_file=server.key\" start >/dev/null"
  echo "export DATABASE_URL_TEST=postgres://postgres@127.0.0.1:$pg_port/postgres"
  echo "export PG_BIN=$bin"
  # How tests/queue_restart.rs restarts this server (and only this one).
  printf 'export PG_RESTART_TEST=%q\n' "bash $(printf '%q' "$root/scripts/services.sh") restart-pg"
}

start_redis() {
  command -v redis-server >/dev/null 2>&1 || apt_install redis-server
  rm -rf "$dir/redis"; mkdir -p "$dir/redis"
  redis-server --port "$redis_port" --bind 127.0.0.1 --daemonize yes --dir "$dir/redis" \
    --pidfile "$dir/redis/redis.pid" --logfile "$dir/redis/log" --save '' --appendonly yes \
    --maxmemory-policy noeviction \
    --tls-port "$redis_tls_port" --tls-cert-file "$dir/tls/server.crt" --tls-key-file "$dir/tls/server.key" \
    --tls-ca-cert-file "$dir/tls/server.crt" --tls-auth-clients no >/dev/null
  for _ in $(seq 50); do redis-cli -p "$redis_port" ping >/dev/null 2>&1 && break; sleep 0.1; done
  echo "export REDIS_URL_TEST=redis://127.0.0.1:$redis_port"
  # The server's certificate is self-signed: tests trust it as their root.
  echo "export REDIS_TLS_URL_TEST=rediss://127.0.0.1:$redis_tls_port"
  echo "export TLS_CA_TEST=$dir/tls/server.crt"
}

stop_all() {
  local bin
  local d
  # The current data directory, and the one under target/services (an older layout).
  for d in "$pg_dir" "$dir"; do
    if [ -f "$d/pg/postmaster.pid" ] && bin="$(find_pg_bin)"; then
      run_as_pg "'$bin/pg_ctl' -D '$d/pg' -m immediate stop >/dev/null" || true
    fi
  done
  if [ "$pg_dir" != "$dir" ]; then rm -rf "$pg_dir"; rm -f "$dir/pg_dir"; pg_dir="$dir"; fi
  if command -v redis-cli >/dev/null 2>&1; then redis-cli -p "$redis_port" shutdown nosave >/dev/null 2>&1 || true; fi
}

# Restarts PostgreSQL as after a crash (`-m immediate`), with the options it was started
# with: for the tests that check the queue survives it.
restart_pg() {
  local bin
  if [ ! -f "$pg_dir/pg/postmaster.pid" ]; then
    log "no PostgreSQL started by 'scripts/services.sh start' is running (under $pg_dir/pg): nothing to restart"
    exit 1
  fi
  bin="$(find_pg_bin)"
  run_as_pg "'$bin/pg_ctl' -D '$pg_dir/pg' -m immediate -w restart -l '$pg_dir/pg/log' >/dev/null"
}

# Each server's fatal lines and last lines, for a failed run to show before stop wipes
# them.
show_logs() {
  local f
  for f in "$pg_dir/pg/log" "$dir/redis/log"; do
    [ -f "$f" ] || continue
    echo "--- $f: the last 40 FATAL or PANIC lines"
    grep -E 'FATAL|PANIC' "$f" | tail -n 40 || true
    echo "--- $f: the last 40 lines"
    tail -n 40 "$f"
  done
}

case "${1:-}" in
  start) stop_all; mkdir -p "$dir"; new_pg_dir; make_cert; start_pg; start_redis ;;
  stop) stop_all ;;
  restart-pg) restart_pg ;;
  logs) show_logs ;;
  *) echo "usage: $0 start|stop|restart-pg|logs" >&2; exit 2 ;;
esac

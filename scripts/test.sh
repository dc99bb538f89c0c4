#!/usr/bin/env bash
# The project's test command: every unit, integration and doc test, on every feature,
# with the store tests run against real PostgreSQL and Redis servers on 127.0.0.1.
# Unless DATABASE_URL_TEST, REDIS_URL_TEST, REDIS_TLS_URL_TEST and TLS_CA_TEST are all
# set, it starts throwaway servers (installing them from Debian's packages when run as
# root) and stops them afterwards.
set -euo pipefail
cd "$(dirname "$0")/.."

started=0
if [ -z "${DATABASE_URL_TEST:-}" ] || [ -z "${REDIS_URL_TEST:-}" ] || [ -z "${REDIS_TLS_URL_TEST:-}" ] || [ -z "${TLS_CA_TEST:-}" ]; then
  # A failed run shows the servers' logs first: stop wipes them with their data (a
  # connect that timed out in CI once could not be explained afterwards).
  trap 'rc=$?; [ "$rc" -eq 0 ] || scripts/services.sh logs || true; scripts/services.sh stop' EXIT
  # Assigned first, so that a server that fails to start stops the script here (an
  # `eval "$(…)"` would go on).
  services="$(scripts/services.sh start)"
  eval "$services"
  started=1
fi
export DATABASE_URL_TEST REDIS_URL_TEST REDIS_TLS_URL_TEST TLS_CA_TEST
# How tests/queue_restart.rs restarts PostgreSQL: set by `services.sh start` for the server
# it started; with servers of your own, set it to a command that restarts yours.
export PG_RESTART_TEST="${PG_RESTART_TEST:-}"
# The example services run as processes in tests/examples.rs: build their binaries first
# (`cargo test` builds examples with `test = true` as test harnesses only).
cargo build --all-features --examples
cargo test --all-features "$@"
# The core without an async runtime (no default features: no tokio), on a minimal
# executor: a crate of its own, so that the dev-dependencies above do not turn tokio on.
CARGO_TARGET_DIR=target cargo test --locked --manifest-path tests/no_runtime/Cargo.toml

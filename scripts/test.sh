#!/usr/bin/env bash
# The project's test command: every unit, integration and doc test, on every feature,
# with the store tests run against real PostgreSQL and Redis servers on 127.0.0.1.
# If DATABASE_URL_TEST and REDIS_URL_TEST are not set, it starts throwaway servers
# (installing them from Debian's packages when run as root) and stops them afterwards.
set -euo pipefail
cd "$(dirname "$0")/.."

started=0
if [ -z "${DATABASE_URL_TEST:-}" ] || [ -z "${REDIS_URL_TEST:-}" ] || [ -z "${REDIS_TLS_URL_TEST:-}" ] || [ -z "${TLS_CA_TEST:-}" ]; then
  eval "$(scripts/services.sh start)"
  started=1
  trap 'scripts/services.sh stop' EXIT
fi
export DATABASE_URL_TEST REDIS_URL_TEST REDIS_TLS_URL_TEST TLS_CA_TEST
# The example services run as processes in tests/examples.rs: build their binaries first
# (`cargo test` builds examples with `test = true` as test harnesses only).
cargo build --all-features --examples
cargo test --all-features "$@"

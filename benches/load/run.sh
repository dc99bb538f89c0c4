#!/usr/bin/env bash
# Load test on 127.0.0.1 only: the axum example (memory store, then SQLite) against the
# classic Express handler, with wrk, at concurrency 1, 16 and 64, 15 s each. Realistic
# bodies (a checkout.session.completed event, 3.3 KiB), distinct event ids plus 10%
# duplicates: each run gets a fresh list long enough that wrk never wraps around it (it
# stops with an error if it does). Prints requests/s and p50/p99 per run and a summary.
#
# Run with: bash benches/load/run.sh            (DURATION=15s CONNS="1 16 64" to change)
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
duration="${DURATION:-15s}"
conns="${CONNS:-1 16 64}"
secret="whsec_load_test_secret"
work="$(mktemp -d)"
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$work"; }
trap cleanup EXIT

command -v wrk >/dev/null || { DEBIAN_FRONTEND=noninteractive apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk; }
(cd "$here" && { [ -d node_modules/express ] || npm install --no-audit --no-fund --silent; })
(cd "$root" && cargo build --release --example axum --all-features -q)

wait_up() { for _ in $(seq 200); do curl -fs "http://127.0.0.1:$1/healthz" >/dev/null 2>&1 && return 0; sleep 0.1; done; echo "server on $1 did not start" >&2; return 1; }

results="$work/results.tsv"
bench() { # name port max-req/s
  local name=$1 port=$2 rate=$3 c
  local secs="${duration%s}"
  for c in $conns; do
    # Fresh signatures and ids for every run, so none is stale and the only duplicates
    # are the generator's 10%; sized for the fastest rate this server can reach.
    node "$here/gen.js" "$root/data/stripe/fixtures" "$secret" $(( rate * secs )) 0.1 > "$work/requests.tsv"
    local out
    # One wrk thread (see wrk.lua): it also leaves the server more of the 2 cores.
    out="$(wrk -t1 -c"$c" -d"$duration" --latency -s "$here/wrk.lua" "http://127.0.0.1:$port/webhook" -- "$work/requests.tsv")"
    if grep -q WRAPPED <<<"$out"; then
      echo "$name c=$c: $(grep WRAPPED <<<"$out"); raise its max-req/s in run.sh" >&2
      exit 1
    fi
    local rps p50 p99 non2xx
    rps="$(awk '/Requests\/sec/ {print $2}' <<<"$out")"
    p50="$(awk '$1=="50%" {print $2}' <<<"$out")"
    p99="$(awk '$1=="99%" {print $2}' <<<"$out")"
    non2xx="$(awk '/Non-2xx/ {print $NF}' <<<"$out")"
    printf '%s\t%s\t%s\t%s\t%s\t%s\n' "$name" "$c" "$rps" "$p50" "$p99" "${non2xx:-0}" | tee -a "$results"
  done
}

start_axum() { # store port
  # Without DATABASE_URL and REDIS_URL, which the example would take over SQLite.
  env -u DATABASE_URL -u REDIS_URL STRIPE_WEBHOOK_SECRET="$secret" STRIPE_WEBHOOKS_STORE="$1" SQLITE_PATH="$work/load.db" PORT="$2" RUST_LOG=warn \
    "$root/target/release/examples/axum" &
  pids+=($!)
  wait_up "$2"
}

echo -e "server\tconcurrency\treq/s\tp50\tp99\tnon-2xx"
start_axum memory 4301; bench "axum+memory" 4301 30000
start_axum sqlite 4302; bench "axum+sqlite" 4302 12000
STRIPE_WEBHOOK_SECRET="$secret" PORT=4303 node "$here/express_server.js" &
pids+=($!); sleep 1
bench "express" 4303 6000

echo
echo "ratios against Express at each concurrency (req/s):"
awk -F'\t' '{rps[$1" "$2]=$3; p99[$1" "$2]=$5} END {
  split("'"$conns"'", cs, " ");
  for (i in cs) { c=cs[i]; e=rps["express " c];
    if (e > 0) printf "c=%s  axum+memory %.1fx  axum+sqlite %.1fx  (express %s req/s, p99 express %s vs axum+memory %s)\n", c, rps["axum+memory " c]/e, rps["axum+sqlite " c]/e, e, p99["express " c], p99["axum+memory " c] }
}' "$results"

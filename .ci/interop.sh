#!/usr/bin/env bash
# Interop check against Stripe's official SDKs, in all four directions:
#   stripe-node signs   -> Rust verifies      stripe-python signs -> Rust verifies
#   Rust signs          -> stripe-node verifies (constructEvent)
#   Rust signs          -> stripe-python verifies (Webhook.construct_event)
# The SDK versions are pinned in interop/package.json (+ package-lock.json) and
# interop/requirements.txt. Installs what is missing (npm ci in interop/, a venv in
# interop/.venv), never skips: a missing node, npm or python3 is an error.
#
# Run from anywhere:  bash .ci/interop.sh
# Ends with `interop: N passed, M failed` (cases over all four directions); exits
# non-zero if any direction failed.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
interop="$root/interop"
# Another copy of the crate (with examples/interop.rs) can be checked with
# INTEROP_MANIFEST_PATH=/path/to/Cargo.toml.
manifest="${INTEROP_MANIFEST_PATH:-$root/Cargo.toml}"

die() { echo "interop: $*" >&2; exit 1; }

for tool in node npm python3 cargo; do
  command -v "$tool" >/dev/null 2>&1 || die "$tool is required but not installed (this check never skips)"
done
node_major="$(node -p 'process.versions.node.split(".")[0]')"
[ "$node_major" -ge 20 ] || die "node >= 20 is required by the pinned stripe package, found $(node --version)"

# --- stripe-node, from the lockfile -----------------------------------------------------
want_node="$(node -p "require('$interop/package-lock.json').packages['node_modules/stripe'].version")"
installed_version() {
  node -p "try { require('$interop/node_modules/stripe/package.json').version } catch (e) { '' }"
}
have_node="$(installed_version)"
if [ "$have_node" != "$want_node" ]; then
  echo "interop: installing stripe@$want_node for Node.js (npm ci)"
  (cd "$interop" && npm ci --no-audit --no-fund --loglevel=error)
fi
have_node="$(installed_version)"
[ "$have_node" = "$want_node" ] || die "stripe-node is $have_node after npm ci, expected $want_node"

# --- stripe-python, in interop/.venv ----------------------------------------------------
want_py="$(sed -n 's/^stripe==\([^[:space:]]*\).*/\1/p' "$interop/requirements.txt")"
[ -n "$want_py" ] || die "interop/requirements.txt does not pin stripe==VERSION"
venv="$interop/.venv"
py="$venv/bin/python"
if ! "$py" -c 'import sys' >/dev/null 2>&1; then
  echo "interop: creating $venv"
  rm -rf "$venv"
  if ! python3 -m venv "$venv"; then
    rm -rf "$venv"
    # Debian's python3 needs python3-venv for this; install it when we can, else fail.
    if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null 2>&1; then
      echo "interop: python3 -m venv failed; installing python3-venv"
      DEBIAN_FRONTEND=noninteractive apt-get update -qq
      DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv
      python3 -m venv "$venv" || die "python3 -m venv failed even with python3-venv installed"
    else
      die "python3 -m venv failed (on Debian's python3: apt-get install python3-venv)"
    fi
  fi
fi
if ! "$py" -c "import stripe, sys; sys.exit(stripe.VERSION != '$want_py')" >/dev/null 2>&1; then
  echo "interop: installing stripe==$want_py for Python (pip)"
  "$py" -m pip install --quiet --disable-pip-version-check -r "$interop/requirements.txt"
fi
"$py" -c "import stripe, sys; sys.exit(stripe.VERSION != '$want_py')" \
  || die "stripe-python is not $want_py after pip install"

echo "interop: node $(node --version), stripe-node $have_node; $("$py" --version), stripe-python $want_py"

# --- the Rust side ----------------------------------------------------------------------
echo "interop: building examples/interop.rs"
# Build once (warnings shown here, once) and run the binary itself afterwards.
rust_bin="$(
  cargo build --manifest-path "$manifest" --example interop --features testing \
    --message-format=json-render-diagnostics \
    | python3 -c '
import json, sys
exe = ""
for line in sys.stdin:
    msg = json.loads(line)
    if msg.get("reason") == "compiler-artifact" and msg["target"]["name"] == "interop" and msg.get("executable"):
        exe = msg["executable"]
print(exe)
'
)"
[ -n "$rust_bin" ] && [ -x "$rust_bin" ] || die "could not build examples/interop.rs"
rust() { "$rust_bin" "$@"; }

tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT

total_passed=0
total_failed=0
failed_directions=()

# direction NAME LOG CMD...: runs a verifier, keeps its output, adds up its summary line.
direction() {
  local name="$1" log="$2"
  shift 2
  echo
  echo "=== $name"
  local rc=0
  "$@" >"$log" 2>&1 || rc=$?
  cat "$log"
  local summary
  summary="$(grep -E '^[0-9]+ passed, [0-9]+ failed$' "$log" | tail -n 1 || true)"
  if [ -n "$summary" ]; then
    local p f
    p="${summary%% passed*}"
    f="${summary#*passed, }"
    f="${f%% failed}"
    total_passed=$((total_passed + p))
    total_failed=$((total_failed + f))
  fi
  if [ "$rc" -ne 0 ] || [ -z "$summary" ]; then
    # A verifier that crashed before its summary still counts as a failure.
    [ -n "$summary" ] || total_failed=$((total_failed + 1))
    failed_directions+=("$name")
  fi
}

# sign NAME OUT CMD...: makes a cases file; a signer that fails fails its direction.
sign() {
  local name="$1" out="$2"
  shift 2
  if ! "$@" >"$tmp/$name.sign.log" 2>&1; then
    cat "$tmp/$name.sign.log"
    echo "interop: signing for '$name' failed"
    total_failed=$((total_failed + 1))
    failed_directions+=("$name")
    return 1
  fi
  tail -n 1 "$tmp/$name.sign.log"
}

if sign "node -> rust" "$tmp/node.json" node "$interop/node_sign.js" "$tmp/node.json"; then
  direction "node -> rust" "$tmp/node-rust.log" rust verify "$tmp/node.json"
fi
if sign "python -> rust" "$tmp/python.json" "$py" "$interop/python_sign.py" "$tmp/python.json"; then
  direction "python -> rust" "$tmp/python-rust.log" rust verify "$tmp/python.json"
fi
if sign "rust -> sdks" "$tmp/rust.json" rust sign "$tmp/rust.json"; then
  direction "rust -> node" "$tmp/rust-node.log" node "$interop/node_verify.js" "$tmp/rust.json"
  direction "rust -> python" "$tmp/rust-python.log" "$py" "$interop/python_verify.py" "$tmp/rust.json"
fi

echo
if [ "${#failed_directions[@]}" -ne 0 ]; then
  echo "interop: FAILED: ${failed_directions[*]}"
fi
echo "interop: $total_passed passed, $total_failed failed"
[ "${#failed_directions[@]}" -eq 0 ] && [ "$total_passed" -gt 0 ]

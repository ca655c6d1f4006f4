#!/usr/bin/env bash
# Property-based API fuzzing: schemathesis (PyPI, in a venv) generates requests from the server's
# own OpenAPI document and sends them to the real server on loopback, as the head office. It
# fails on any 5xx and on any response that the document does not describe. Bounded in examples
# per operation and in time, with a fixed seed so a failure reproduces. (The coverage phase is
# left out: schemathesis 4.32.5's coverage generator fails inside itself now and then, a flaky
# hypothesis error about its own lambdas, not about this server.)
#   KPILENS_BIN   the kpilens binary (default: the debug build in the cargo target dir)
#   KPILENS_VENV  where schemathesis is installed (default: ~/.cache/kpilens-venv)
set -euo pipefail
cd "$(dirname "$0")/.."

target="${CARGO_TARGET_DIR:-$HOME/.cache/kpilens-target}"
bin="${KPILENS_BIN:-$target/debug/kpilens}"
venv="${KPILENS_VENV:-$HOME/.cache/kpilens-venv}"
schemathesis_version="4.32.5"

if ! "$venv/bin/schemathesis" --version 2>/dev/null | grep -q "$schemathesis_version"; then
  echo "== installing schemathesis $schemathesis_version into $venv"
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check "schemathesis==$schemathesis_version"
fi

tmp="$(mktemp -d)"
pid=""
cleanup() {
  if [ -n "$pid" ]; then kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; fi
  rm -rf "$tmp"
}
trap cleanup EXIT

"$bin" generate --out "$tmp/demo" >/dev/null
# The fuzzer is one principal sending thousands of requests: lift the rate limit for it.
"$bin" demo --addr 127.0.0.1:0 --project . --data "$tmp/demo" --audit-log "$tmp/audit.log" \
  --rate-per-second 1000000 --rate-burst 1000000 >"$tmp/out" 2>"$tmp/err" &
pid=$!
base=""
for _ in $(seq 1 600); do
  # The "serving" line: the first ("at ...: opening") comes while the catalog still opens.
  base="$(grep serving "$tmp/out" | grep -o 'http://127\.0\.0\.1:[0-9]*' | head -1 || true)"
  [ -n "$base" ] && break
  kill -0 "$pid" 2>/dev/null || { cat "$tmp/err" >&2; exit 1; }
  sleep 0.1
done
[ -n "$base" ] || { echo "kpilens did not start" >&2; exit 1; }
token="$(python3 -c 'import json,sys,urllib.request; print(json.load(urllib.request.urlopen(sys.argv[1]))[0]["token"])' "$base/api/v1/demo/users")"

# The event streams never end by design: tested in tests/it/alerts.rs and tests/it/events.rs, not fuzzed.
# /mcp speaks JSON-RPC (MCP), not the REST shapes: tested with the MCP SDK (tests/mcp_client.py).
echo "== schemathesis against $base (seed 42, ${KPILENS_FUZZ_EXAMPLES:-30} examples per operation)"
"$venv/bin/schemathesis" run "$base/api/v1/openapi.json" \
  --header "Authorization: Bearer $token" \
  --checks not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance \
  --max-examples "${KPILENS_FUZZ_EXAMPLES:-30}" \
  --max-time "${KPILENS_FUZZ_SECONDS:-240}" \
  --seed 42 \
  --phases examples,fuzzing \
  --exclude-path /api/v1/alerts/stream \
  --exclude-path /api/v1/events \
  --exclude-path /mcp \
  --request-timeout 30 \
  --workers 2
lines="$(wc -l <"$tmp/audit.log")"
echo "== the server audited $lines requests and is still serving: $(python3 -c 'import sys,urllib.request; print(urllib.request.urlopen(sys.argv[1]).status)' "$base/healthz")"

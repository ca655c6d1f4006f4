#!/usr/bin/env bash
# One command for the whole benchmark at a chosen scale (1 = ~88k loan_month rows; 11 = ~1M;
# 113 = ~10M; 1130 = ~100M): builds kpilens, generates the demo bank into data/bench-<scale> if
# absent, installs DuckDB and Polars (PyPI) into a venv, then runs benches/bench.py, which prints
# the table. Usage: bash benches/run.sh [SCALE] [--repeat N]
set -euo pipefail
cd "$(dirname "$0")/.."
scale="${1:-1}"
shift || true

export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/kpilens-target}"
profile="${KPILENS_BENCH_PROFILE:-dev}"
# Every step has a deadline (a cold release build of DataFusion takes about 21 min here); the
# bench's own phases have theirs in bench.py, derived from the scale.
if [ "$profile" = release ]; then timeout 3600 cargo build --release --quiet; bin="$CARGO_TARGET_DIR/release/kpilens"
else timeout 3600 cargo build --quiet; bin="$CARGO_TARGET_DIR/debug/kpilens"; fi

venv="${KPILENS_BENCH_VENV:-$HOME/.cache/kpilens-bench-venv}"
if ! "$venv/bin/python" -c 'import duckdb, polars' 2>/dev/null; then
  python3 -m venv "$venv"
  timeout 900 "$venv/bin/pip" install --quiet --disable-pip-version-check duckdb polars
fi

# The load generator has no dependencies: plain rustc, seconds to build.
load_bin="$CARGO_TARGET_DIR/http_load"
if [ ! -x "$load_bin" ] || [ benches/http_load.rs -nt "$load_bin" ]; then
  rustc -O --edition 2024 benches/http_load.rs -o "$load_bin"
fi

data="data/bench-$scale"
# Daily deposit balances for a quarter would be a billion rows at bench scale: the bench writes
# the table empty from scale 100 up (日均 is measured at the demo's scale).
daily=92
if [ "${scale%%.*}" -ge 100 ] 2>/dev/null; then daily=0; fi
# Regenerate data from older generators: snapshot tables are now one file set per month, and
# `targets` is the newest table.
if ! ls "$data"/loan_month/2024-01-*.parquet >/dev/null 2>&1 || [ ! -d "$data/targets" ]; then
  timeout $((600 + ${scale%%.*} * 3)) "$bin" generate --out "$data" --scale "$scale" --daily-days "$daily"
fi
echo "kpilens $profile build; DuckDB $("$venv/bin/python" -c 'import duckdb; print(duckdb.__version__)'), Polars $("$venv/bin/python" -c 'import polars; print(polars.__version__)'); $(nproc) cores"
# The whole run's backstop, past every phase's own deadline.
timeout --kill-after=60 $((5400 + ${scale%%.*} * 10)) "$venv/bin/python" benches/bench.py --bin "$bin" \
  --data "$data" --project . --load-bin "$load_bin" --scale "$scale" --profile "$profile" "$@"

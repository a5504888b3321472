#!/usr/bin/env bash
# The whole cmtp pipeline on the bundled sample data (examples/data/), on the embedded default model.
# Run it through `make demo`, which installs cmtp first. Outputs land in demo-out/ (override with OUT=...).
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-demo-out}
rm -rf "$OUT" && mkdir -p "$OUT"

echo "== model: prepare builtin:me5-small (once; cached afterwards)"
cmtp models prepare builtin:me5-small

echo "== schemas the stages exchange"
cmtp schema list

echo "demo finished: outputs in $OUT/"

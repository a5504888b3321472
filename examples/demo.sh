#!/usr/bin/env bash
# The whole cmtp pipeline on the bundled sample data (examples/data/), on the embedded default model, as one
# build file (examples/pipeline.yaml): extract -> dedup -> score -> mine -> train stages 1, 2, 3 -> eval.
# Run it through `make demo`, which installs cmtp first. Outputs land in demo-out/ (override with OUT=...) and
# are kept: a second run reuses every finished stage (the build's fingerprints) and ends in seconds.
# `make demo-clean` removes them.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-demo-out}
mkdir -p "$OUT"

echo "== model: prepare builtin:me5-small (once; cached afterwards)"
cmtp models prepare builtin:me5-small

echo "== schemas the stages exchange"
cmtp schema list

echo "== the build: every stage that is not already finished, each committed only when it succeeded"
cmtp build examples/pipeline.yaml --work "$OUT"

echo "== audit: keep rate by threshold, per source, with an HTML report (and the command for a 70% cut)"
cmtp audit "$OUT/score" --thresholds 0.80:0.95:0.01 --report "$OUT/audit.html" --plot "$OUT/audit.png" \
  --target-keep-rate 0.7

echo "== export: mine's examples for FlagEmbedding's and sentence-transformers' trainers"
cmtp export "$OUT/mine" --format flagembedding --out "$OUT/export/train.jsonl"
cmtp export "$OUT/mine" --format sentence-transformers --out "$OUT/export/train.parquet"

echo "demo finished: outputs in $OUT/ (funnel: $OUT/funnel.html; the trained model and its card: $OUT/stage3/model)"
echo "note: each training stage ran 3 CPU steps to run every path end to end; that is not a recipe, so the eval table"
echo "      above may show the trained model below builtin:me5-small. The measured recipe is in docs/recipes.md."

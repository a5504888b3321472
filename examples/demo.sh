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

echo "== extract: raw dumps -> clean title-passage pairs (Apache Beam, 2 local workers)"
cmtp extract \
  wudao=examples/data/wudao/flagai_jinrong_data.json \
  csl=examples/data/csl/ts_dev_head300.tsv \
  news=examples/data/news/inews_train_head300.jsonl \
  --out "$OUT/extract" --workers 2

echo "== dedup: MinHash near-duplicate clusters, one representative each"
cmtp dedup "$OUT/extract" --out "$OUT/dedup" --workers 2

echo "demo finished: outputs in $OUT/"

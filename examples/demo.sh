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

echo "== score: title-passage cosine with builtin:me5-small (Beam RunInference); keep the best 80%"
# C-MTP's 0.43 is for Text2Vec-Chinese; multilingual-e5 puts almost every pair between 0.80 and 0.97, so the cut
# is taken by keep rate: scored once, then the threshold that keeps 80% is replayed on the stored scores.
cmtp score "$OUT/dedup" --out "$OUT/score" --model builtin:me5-small --target-keep-rate 0.8 --max-seq-length 128

echo "== audit: keep rate by threshold, per source, with an HTML report (and the command for a 70% cut)"
cmtp audit "$OUT/score" --thresholds 0.80:0.95:0.01 --report "$OUT/audit.html" --plot "$OUT/audit.png" \
  --target-keep-rate 0.7

echo "== mine: hard negatives by nearest-neighbour search (faiss), with false-negative guards"
# the false-negative guard measures scores above the pool's random-pair median, so its 0.95 suits e5 too
cmtp mine "$OUT/score" --out "$OUT/mine" --negatives 7 --range 3-60 --max-seq-length 128 \
  --train-instruction "为这个句子生成表示以用于检索相关文章："

echo "== train stage 1: RetroMAE on extract's plain passages (two CPU steps, to run the path end to end)"
# --freeze-embeddings keeps e5's 96M-parameter token table fixed, so a CPU step takes seconds; --save-steps 0 writes
# the model only (no optimizer checkpoint). Real runs: bigger batches, longer texts, torchrun on GPUs.
cmtp train --stage retromae --model builtin:me5-small --data "$OUT/extract/pretrain" --out "$OUT/train-stage1" \
  --max-steps 2 --batch-size 4 --passage-max-len 64 --freeze-embeddings --save-steps 0

echo "== train stage 2: contrastive on the kept title-passage pairs, from the stage-1 encoder (a few CPU steps)"
cmtp train --stage contrastive --model "$OUT/train-stage1/model" --data "$OUT/score/kept" --out "$OUT/train-stage2" \
  --max-steps 3 --batch-size 8 --query-max-len 48 --passage-max-len 128 --freeze-embeddings --save-steps 0

echo "== train stage 3: instructions + mined hard negatives, from the stage-2 model"
cmtp train --stage finetune --model "$OUT/train-stage2/model" --data "$OUT/mine/examples" --out "$OUT/train-stage3" \
  --max-steps 3 --batch-size 4 --group-size 4 --query-max-len 48 --passage-max-len 128 --freeze-embeddings \
  --save-steps 0

echo "== eval: the trained model against the base model on the bundled dev suite (subsampled for the demo)"
# a few CPU steps do not make a better model: the point is the side-by-side check every training run should get
cmtp eval "$OUT/train-stage3/model" --compare builtin:me5-small --suite dev --max-per-task 40 --quiet \
  --output "$OUT/eval.json"

echo "demo finished: outputs in $OUT/ (the trained model: $OUT/train-stage3/model, a sentence-transformers directory)"

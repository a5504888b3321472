"""Score throughput: ``run_score`` (Beam RunInference) against a plain torch fp32 ``SentenceTransformer.encode``
loop over the same pairs, same model, same batch size: default ``cmtp score`` (torch) and ``cmtp score --engine
onnx-int8``. Runs are interleaved (loop, cmtp, cmtp int8, loop, ...) and the medians compared, so a busy moment
of the machine does not decide the result. Then int8's agreement with torch fp32 on the same pairs (Spearman,
kept set at the 80% keep-rate cut, recall@210) is printed beside it (benchmarks/engines.py measures every
engine on a wider sample).

    python benchmarks/score.py [--pairs 500] [--model builtin:me5-small] [--batch-size 64] [--rounds 3]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import pyarrow.parquet as pq
from common import lcsts_pairs
from engines import agreement

from cmtp.pipelines.score import run_score
from cmtp.schemas import PAIR, rows_to_table
from cmtp.transforms.embedding import encode, load_embedding_model, resolve_prompts
from cmtp.transforms.score.config import ScoreConfig
from cmtp.transforms.score.scoring import PairScorer, score_pairs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pairs", type=int, default=500)
    parser.add_argument("--model", default="builtin:me5-small")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--max-seq-length", type=int, default=128)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    data = lcsts_pairs(args.pairs)
    config = ScoreConfig(model=args.model, batch_size=args.batch_size, max_seq_length=args.max_seq_length)
    torch_config = replace(config, engine="torch")
    PairScorer(replace(config, engine="onnx-int8"))  # warm the file cache (and the ONNX export) for every variant

    def loop() -> None:
        model = load_embedding_model(args.model, "cpu", args.max_seq_length)
        score_pairs(model, [t for t, _ in data], [p for _, p in data], torch_config)

    def cmtp(config: ScoreConfig) -> None:
        with tempfile.TemporaryDirectory() as tmp:
            rows = [{"pair_id": f"p{i:06d}", "source": "lcsts", "source_file": "f", "record_key": str(i),
                     "title": t, "passage": p, "meta": "{}"} for i, (t, p) in enumerate(data)]
            (Path(tmp) / "in").mkdir()
            pq.write_table(rows_to_table(rows, PAIR), Path(tmp) / "in" / "pairs.parquet")
            run_score(str(Path(tmp) / "in"), str(Path(tmp) / "out"), config)

    int8_config = replace(config, engine="onnx-int8")
    variants = {"plain encode loop": loop, "cmtp score": lambda: cmtp(config),
                "cmtp score --engine onnx-int8": lambda: cmtp(int8_config)}
    times: dict[str, list[float]] = {name: [] for name in variants}
    for _ in range(args.rounds):
        for name, run in variants.items():
            started = time.perf_counter()
            run()
            times[name].append(time.perf_counter() - started)
    base = statistics.median(times["plain encode loop"])
    print(f"pairs {len(data)}, model {args.model}, batch {args.batch_size}, {args.max_seq_length} tokens, "
          f"medians of {args.rounds} interleaved runs (model load included everywhere)")
    for name, values in times.items():
        median = statistics.median(values)
        print(f"{name:26s}: {median:7.1f} s  {len(data) / median:6.1f} pairs/s  {median / base:5.2f}x the loop")
    titles, passages = [t for t, _ in data], [p for _, p in data]
    vectors = []
    for variant in (torch_config, int8_config):
        model = load_embedding_model(args.model, "cpu", args.max_seq_length, engine=variant.engine)
        query, passage = resolve_prompts(model)
        batch = args.batch_size
        vectors.append((encode(model, titles, query, batch), encode(model, passages, passage, batch)))
    agree = agreement(*vectors)
    print("onnx-int8 vs torch fp32: spearman "
          f"{agree['spearman']:.4f}, kept at the cut {agree['kept_agreement']:.4f}, "
          f"recall@210 {agree['recall_at_k']:.4f}")


if __name__ == "__main__":
    main()

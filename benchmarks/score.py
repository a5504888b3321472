"""Score throughput: ``run_score`` (Beam RunInference) against a plain ``SentenceTransformer.encode`` loop over
the same pairs, same model, same batch size; and the former fixed 64 hash groups (forward passes of ~8 pairs on
a small input) against today's groups sized from the data. Runs are interleaved (loop, cmtp, cmtp-64, loop, ...)
and the medians compared, so a busy moment of the machine does not decide the result. Target: cmtp <= 1.1x the
loop.

    python benchmarks/score.py [--pairs 500] [--model builtin:me5-small] [--batch-size 64] [--rounds 3]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path
from unittest import mock

import pyarrow.parquet as pq
from common import lcsts_pairs

import cmtp.pipelines.score as score_pipeline
from cmtp.pipelines.score import run_score
from cmtp.schemas import PAIR, rows_to_table
from cmtp.transforms.score.config import ScoreConfig
from cmtp.transforms.score.scoring import load_scoring_model, score_pairs


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
    load_scoring_model(config)  # warm the file cache for every variant

    def loop() -> None:
        model = load_scoring_model(config)
        score_pairs(model, [t for t, _ in data], [p for _, p in data], config)

    def cmtp(groups: int | None) -> None:
        with tempfile.TemporaryDirectory() as tmp:
            rows = [{"pair_id": f"p{i:06d}", "source": "lcsts", "source_file": "f", "record_key": str(i),
                     "title": t, "passage": p, "meta": "{}"} for i, (t, p) in enumerate(data)]
            (Path(tmp) / "in").mkdir()
            pq.write_table(rows_to_table(rows, PAIR), Path(tmp) / "in" / "pairs.parquet")
            fixed = mock.patch.object(score_pipeline, "group_count", lambda rows, batch: groups) if groups else \
                mock.patch.object(score_pipeline, "group_count", score_pipeline.group_count)
            with fixed:
                run_score(str(Path(tmp) / "in"), str(Path(tmp) / "out"), config)

    variants = {"plain encode loop": loop, "cmtp score": lambda: cmtp(None), "cmtp score, 64 groups": lambda: cmtp(64)}
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
        print(f"{name:24s}: {median:7.1f} s  {len(data) / median:6.1f} pairs/s  {median / base:5.2f}x the loop")


if __name__ == "__main__":
    main()

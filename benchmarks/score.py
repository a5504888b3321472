"""Score throughput: the Beam pipeline (RunInference) against a plain ``SentenceTransformer.encode`` loop over
the same pairs, same model, same batch size, one run. Target: overhead <= 10%.

    python benchmarks/score.py [--pairs 512] [--model builtin:me5-small] [--batch-size 64]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import pyarrow.parquet as pq
from common import lcsts_pairs

from cmtp.pipelines.score import run_score
from cmtp.schemas import PAIR, rows_to_table
from cmtp.transforms.score.config import ScoreConfig
from cmtp.transforms.score.scoring import load_scoring_model, score_pairs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pairs", type=int, default=512)
    parser.add_argument("--model", default="builtin:me5-small")
    parser.add_argument("--batch-size", type=int, default=64)
    args = parser.parse_args()
    data = lcsts_pairs(args.pairs)
    config = ScoreConfig(model=args.model, batch_size=args.batch_size, inference_batch=1024, max_seq_length=256,
                         share_model=False)

    load_scoring_model(config)  # warm the file cache for both sides
    started = time.perf_counter()
    model = load_scoring_model(config)
    score_pairs(model, [t for t, _ in data], [p for _, p in data], config)
    loop_s = time.perf_counter() - started
    del model

    with tempfile.TemporaryDirectory() as tmp:
        rows = [{"pair_id": f"p{i:06d}", "source": "lcsts", "source_file": "f", "record_key": str(i), "title": t,
                 "passage": p, "meta": "{}"} for i, (t, p) in enumerate(data)]
        (Path(tmp) / "in").mkdir()
        pq.write_table(rows_to_table(rows, PAIR), Path(tmp) / "in" / "pairs.parquet")
        started = time.perf_counter()
        run_score(str(Path(tmp) / "in"), str(Path(tmp) / "out"), config)
        beam_s = time.perf_counter() - started
    print(f"pairs {len(data)}, model {args.model}, batch {args.batch_size}")
    print(f"plain encode loop : {loop_s:7.1f} s  {len(data) / loop_s:7.1f} pairs/s (model load included)")
    print(f"beam RunInference : {beam_s:7.1f} s  {len(data) / beam_s:7.1f} pairs/s (model load, Parquet in/out)")
    print(f"overhead          : {beam_s / loop_s - 1:+.1%} (target <= 10%)")


if __name__ == "__main__":
    main()

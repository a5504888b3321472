"""Mining's scale-out, one run: embedding throughput with 1 and 2 local Beam workers (the built-in me5-small,
real LCSTS pairs), and search + sampling queries/s with 1 and 2 query partitions (a pool of real passages;
there the encoder is a tiny random model built here, so the pool can be large on a CPU and the figure measures
search and sampling, not the encoder). Every setting must give byte-identical examples; the script checks.

    python benchmarks/mine_scale.py [--embed-pairs 600] [--search-pairs 17000]
"""

from __future__ import annotations

import argparse
import hashlib
import tempfile
from pathlib import Path

import pyarrow.parquet as pq
from common import chinese_passages, lcsts_pairs

from cmtp.pipelines.mine.run import run_mine
from cmtp.schemas import PAIR, rows_to_table
from cmtp.transforms.mine.config import MineConfig, MineRunOptions


def write_pairs(pairs: list[tuple[str, str]], directory: Path) -> str:
    rows = [{"pair_id": f"p{i:06d}", "source": "bench", "source_file": "f", "record_key": str(i), "title": t,
             "passage": p, "meta": "{}"} for i, (t, p) in enumerate(pairs)]
    (directory / "pairs").mkdir(parents=True)
    pq.write_table(rows_to_table(rows, PAIR), directory / "pairs" / "part-00000-of-00001.parquet")
    return str(directory)


def digest(out: Path) -> str:
    return hashlib.sha256(b"".join(p.read_bytes() for p in sorted((out / "examples").glob("*.parquet")))).hexdigest()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--embed-pairs", type=int, default=600)
    parser.add_argument("--search-pairs", type=int, default=17000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        source = write_pairs(lcsts_pairs(args.embed_pairs), tmp / "embed-in")
        base = dict(model="builtin:me5-small", embed_shard_rows=128, search_batch=128, range_start=2, range_end=50,
                    negatives=7)
        print(f"embedding: {args.embed_pairs} pairs, builtin:me5-small (pool passages float16, queries float32)")
        embed = {}
        for workers in (1, 2):
            m = run_mine(source, str(tmp / f"embed{workers}"), MineConfig(**base), run=MineRunOptions(workers=workers))
            embed[workers] = (m.extra["texts_embedded_per_second"], digest(tmp / f"embed{workers}"))
            print(f"  {workers} worker(s): {m.extra['pool_size'] + m.count_out} texts in {m.extra['embed_seconds']} s,"
                  f" {embed[workers][0]:.1f} texts/s")
        print(f"  ratio 2 / 1 workers: {embed[2][0] / embed[1][0]:.2f}x; "
              f"identical examples: {embed[1][1] == embed[2][1]}")

        import sys

        sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
        from tests.tiny_models import build_tiny_model

        texts = chinese_passages(args.search_pairs, min_chars=40, max_chars=400)
        model = build_tiny_model(tmp / "tiny", texts[:2000])
        source = write_pairs([(t[:20], t) for t in texts], tmp / "search-in")
        base = dict(model=str(model), range_start=10, range_end=210, negatives=15, search_batch=1024)
        print(f"search + sampling: {len(texts)} queries against a pool of {len(texts)} passages, flat index, k=210")
        search = {}
        for partitions in (1, 2):
            m = run_mine(source, str(tmp / f"search{partitions}"),
                         MineConfig(**base), run=MineRunOptions(workers=partitions, search_partitions=partitions))
            search[partitions] = (m.extra["queries_per_second"], digest(tmp / f"search{partitions}"))
            print(f"  {partitions} partition(s): {m.extra['search_and_sample_seconds']} s, "
                  f"{search[partitions][0]:.0f} queries/s")
        print(f"  ratio 2 / 1 partitions: {search[2][0] / search[1][0]:.2f}x; "
              f"identical examples: {search[1][1] == search[2][1]}")


if __name__ == "__main__":
    main()

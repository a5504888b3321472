"""``cmtp dedup`` against the script a user would write instead: datasketch's ``MinHash.bulk`` signatures of
character 5-grams, a ``MinHashLSH`` index at the same threshold, every document queried, union-find over the
hits, the longest passage of each cluster kept, Parquet out. Same documents as ``dedup_workers.py`` (real
passages, a fifth followed by a near copy); wall time of both, interleaved (script, cmtp, script, ...), medians,
and the kept counts of both.

    python benchmarks/dedup_datasketch.py [--docs 20000] [--rounds 3] [--workers 1]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import pyarrow.parquet as pq
from dedup_workers import make_pairs

from cmtp.pipelines.dedup import run_dedup
from cmtp.schemas import PAIR, rows_to_table
from cmtp.transforms.dedup.config import DedupConfig


def datasketch_script(pairs: list[dict], config: DedupConfig, out: Path) -> int:
    """The plain script: no verification of candidates (datasketch's LSH answers are taken as they are)."""
    from datasketch import MinHash, MinHashLSH

    texts = [p["passage"] for p in pairs]
    shingles = [{t[i:i + config.ngram].encode("utf-8") for i in range(max(1, len(t) - config.ngram + 1))}
                for t in texts]
    signatures = MinHash.bulk(shingles, num_perm=config.num_perm, seed=config.seed)
    lsh = MinHashLSH(threshold=config.threshold, num_perm=config.num_perm)
    with lsh.insertion_session() as session:
        for i, signature in enumerate(signatures):
            session.insert(i, signature)
    parent = list(range(len(pairs)))

    def find(x: int) -> int:
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for i, signature in enumerate(signatures):
        for j in lsh.query(signature):
            a, b = find(i), find(j)
            parent[max(a, b)] = min(a, b)
    best: dict[int, int] = {}
    for i in range(len(pairs)):
        root = find(i)
        if root not in best or len(texts[i]) > len(texts[best[root]]):
            best[root] = i
    kept = [pairs[i] for i in sorted(best.values())]
    pq.write_table(rows_to_table(kept, PAIR), out / "kept.parquet")
    return len(kept)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--docs", type=int, default=20000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--workers", type=int, default=1)
    args = parser.parse_args()
    pairs = make_pairs(args.docs)
    config = DedupConfig()
    times: dict[str, list[float]] = {"datasketch script": [], f"cmtp dedup, {args.workers} worker(s)": []}
    kept = {}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        (tmp / "in" / "pairs").mkdir(parents=True)
        pq.write_table(rows_to_table(pairs, PAIR), tmp / "in" / "pairs" / "part-00000-of-00001.parquet")
        for r in range(args.rounds):
            (tmp / f"script{r}").mkdir()
            runs = {"datasketch script": lambda r=r: datasketch_script(pairs, config, tmp / f"script{r}"),
                    f"cmtp dedup, {args.workers} worker(s)": lambda r=r: run_dedup(
                        str(tmp / "in"), str(tmp / f"cmtp{r}"), config, workers=args.workers).count_out}
            for name, run in runs.items():
                started = time.perf_counter()
                kept[name] = run()
                times[name].append(time.perf_counter() - started)
    base = statistics.median(times["datasketch script"])
    print(f"documents {len(pairs)}, medians of {args.rounds} interleaved rounds")
    for name, values in times.items():
        median = statistics.median(values)
        print(f"{name:26s}: {median:7.1f} s  {len(pairs) / median:7.0f} docs/s  {median / base:5.2f}x the script's "
              f"time  (kept {kept[name]:,})")


if __name__ == "__main__":
    main()

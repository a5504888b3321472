"""Near-dedup throughput: ``cmtp dedup`` (Beam) with 1 and 2 local workers against a plain single-process
Python loop doing the same work with the same pieces (vectorised MinHash signatures, LSH band hashes, the same
bucket edges, exact Jaccard checks, union-find instead of the Beam star rounds, the same representative rule,
Parquet out). Prints documents/s of each and the ratios to the loop, from one run.

    python benchmarks/dedup_workers.py [--docs 20000] [--workers 1,2]
"""

from __future__ import annotations

import argparse
import random
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
from common import chinese_passages, print_against_loop, time_workers

from cmtp.pipelines.dedup import run_dedup
from cmtp.schemas import PAIR, rows_to_table
from cmtp.transforms.dedup.config import DedupConfig
from cmtp.transforms.dedup.dofns import bucket_edges, compared_texts
from cmtp.transforms.dedup.lsh import band_hashes
from cmtp.transforms.dedup.minhash import text_signatures
from cmtp.transforms.dedup.shingles import jaccard, shingle_hashes


def make_pairs(count: int, seed: int = 0) -> list[dict]:
    """Real passages, a fifth of them followed by a near copy (a few characters changed)."""
    rng = random.Random(seed)
    texts = chinese_passages(count, min_chars=60, max_chars=800)
    rows = []
    for i, text in enumerate(texts):
        variants = [text]
        if i % 5 == 0:
            chars = list(text)
            for _ in range(max(1, len(chars) // 50)):
                chars[rng.randrange(len(chars))] = "的"
            variants.append("".join(chars))
        for v, passage in enumerate(variants):
            rows.append({"pair_id": f"{i:06d}-{v}", "source": "bench", "source_file": "f", "record_key": str(i),
                         "title": passage[:12], "passage": passage, "meta": "{}"})
    return rows


def plain_loop(pairs: list[dict], config: DedupConfig, out: Path) -> tuple[int, int]:
    bands, rows = config.lsh_params()
    texts = compared_texts(rows_to_table(pairs, PAIR), config.field).to_pylist()
    sigs = np.concatenate([text_signatures(texts[start:start + 1024], config.ngram, config.num_perm, config.seed)
                           for start in range(0, len(texts), 1024)])
    keys = band_hashes(sigs, bands, rows).ravel()
    edges = bucket_edges(keys, np.repeat(np.arange(len(texts)), bands), config.max_bucket_all_pairs)
    shingles: dict = {}

    def hashes(node):
        if node not in shingles:
            shingles[node] = shingle_hashes(texts[node], config.ngram, config.shingle)
        return shingles[node]

    parent = list(range(len(pairs)))

    def find(x):
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for a, b in zip(*edges, strict=True):
        if jaccard(hashes(a), hashes(b)) >= config.threshold:
            ra, rb = find(a), find(b)
            parent[max(ra, rb)] = min(ra, rb)
    clusters: dict = defaultdict(list)
    for node, pair in enumerate(pairs):
        clusters[find(node)].append(pair)
    kept, dead = [], []
    for members in clusters.values():
        members.sort(key=lambda r: (-len(r["passage"]), r["pair_id"]) if config.policy == "longest" else r["pair_id"])
        kept.append({**members[0], "cluster_id": min(m["pair_id"] for m in members), "cluster_size": len(members)})
        dead += members[1:]
    pq.write_table(rows_to_table([{k: v for k, v in r.items() if k in PAIR.names} for r in kept], PAIR),
                   out / "kept.parquet")
    return len(kept), len(dead)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--docs", type=int, default=20000)
    parser.add_argument("--workers", default="1,2")
    parser.add_argument("--cc-rounds", type=int, default=DedupConfig.cc_rounds)
    args = parser.parse_args()
    pairs = make_pairs(args.docs)
    config = DedupConfig(cc_rounds=args.cc_rounds)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        (tmp / "in" / "pairs").mkdir(parents=True)
        pq.write_table(rows_to_table(pairs, PAIR), tmp / "in" / "pairs" / "part-00000-of-00001.parquet")
        (tmp / "loop").mkdir()
        started = time.perf_counter()
        kept, removed = plain_loop(pairs, config, tmp / "loop")
        loop_s = time.perf_counter() - started
        runs = time_workers(args.workers, lambda workers: run_dedup(str(tmp / "in"), str(tmp / f"beam{workers}"),
                                                                    config, workers=workers))
    print(f"documents {len(pairs)}; loop kept {kept}, removed {removed}")
    print_against_loop(len(pairs), loop_s, [(w, len(pairs), seconds, f"  (kept {m.count_out})")
                                            for w, m, seconds in runs])


if __name__ == "__main__":
    main()

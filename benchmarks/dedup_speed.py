"""Dedup speed on the same real Chinese documents, one run:

1. MinHash signatures per second on one core: cmtp's vectorised ``text_signatures`` against datasketch's
   ``MinHash.bulk`` over the same character 5-gram sets (128 permutations). Target: >= 4x.
2. The whole near-dedup: ``cmtp dedup`` (Beam, one local worker) against datatrove's four MinHash stages
   (signatures, buckets, cluster, filter; 16 x 8 bands, 5-grams), when a Python with datatrove is given
   (``--datatrove-python``; datatrove is not a cmtp dependency, install it in its own venv).

    python benchmarks/dedup_speed.py [--docs 20000] [--datatrove-python /path/to/venv/bin/python]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
from common import ROOT, chinese_passages

from cmtp.pipelines.dedup import run_dedup
from cmtp.schemas import PAIR, rows_to_table
from cmtp.transforms.dedup.config import DedupConfig
from cmtp.transforms.dedup.minhash import text_signatures
from cmtp.transforms.dedup.shingles import char_shingles


def one_core() -> None:
    for var in ["OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"]:
        os.environ[var] = "1"
    try:
        os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})
    except (AttributeError, OSError):
        pass


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--docs", type=int, default=20000)
    parser.add_argument("--datatrove-python", default=None)
    args = parser.parse_args()
    docs = chinese_passages(args.docs, min_chars=40, max_chars=2000)
    chars = sum(map(len, docs))
    print(f"documents {len(docs)}, mean {chars / len(docs):.0f} characters")

    one_core()
    from datasketch import MinHash

    started = time.perf_counter()
    ours = np.concatenate([text_signatures(docs[i : i + 1024]) for i in range(0, len(docs), 1024)])
    ours_s = time.perf_counter() - started
    started = time.perf_counter()
    theirs = MinHash.bulk([[s.encode("utf-8") for s in set(char_shingles(d))] for d in docs], num_perm=128)
    theirs_s = time.perf_counter() - started
    assert ours.shape == (len(docs), 128) and len(theirs) == len(docs)
    print(f"signatures/s, one core: cmtp {len(docs) / ours_s:8.0f}   "
          f"datasketch MinHash.bulk {len(docs) / theirs_s:8.0f}   ratio {theirs_s / ours_s:.2f}x (target >= 4x)")

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        rows = [{"pair_id": f"d{i:07d}", "source": "bench", "source_file": "bench", "record_key": str(i),
                 "title": "t", "passage": d, "meta": "{}"} for i, d in enumerate(docs)]
        (tmp / "in").mkdir()
        pq.write_table(rows_to_table(rows, PAIR), tmp / "in" / "pairs.parquet")
        started = time.perf_counter()
        manifest = run_dedup(str(tmp / "in"), str(tmp / "out"), DedupConfig(), workers=1)
        cmtp_s = time.perf_counter() - started
        print(f"whole dedup: cmtp (Beam, 1 worker) {cmtp_s:.1f} s, removed {manifest.dropped.get('near_duplicate', 0)}")
        if args.datatrove_python:
            (tmp / "dt").mkdir()
            with open(tmp / "dt" / "docs.jsonl", "w", encoding="utf-8") as fh:
                for i, d in enumerate(docs):
                    fh.write(json.dumps({"id": str(i), "text": d}, ensure_ascii=False) + "\n")
            proc = subprocess.run([args.datatrove_python, str(ROOT / "benchmarks" / "_datatrove_minhash.py"),
                                   str(tmp / "dt"), str(tmp / "dtwork")], capture_output=True, text=True)
            found = re.search(r"DATATROVE_SECONDS ([0-9.]+)", proc.stdout)
            if not found:
                print("datatrove failed:", proc.stderr[-2000:])
                return
            dt_s = float(found.group(1))
            print(f"whole dedup: datatrove MinHash stages {dt_s:.1f} s   ratio datatrove/cmtp {dt_s / cmtp_s:.2f}x")
        else:
            print("whole dedup vs datatrove: pass --datatrove-python (a venv with `pip install datatrove`)")


if __name__ == "__main__":
    main()

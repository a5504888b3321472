"""Audit at scale: rows/s and peak memory of ``cmtp audit`` on generated scored files of 1M, 10M and N rows.

Memory must not grow with the row count (the files are streamed in record batches): the working set fills up
within the first ~10M rows and then stays flat. Each audit runs in its own process and reports its peak RSS;
the large file defaults to 100M rows (0.6 GB of Parquet).

    python benchmarks/audit_memory.py [--rows 100000000] [--keep-files DIR]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from common import ROOT

from cmtp.schemas import SCORED_PAIR

SOURCES = ["wudao", "zhihu", "csl", "news", "baike"]
CHILD = """
import resource, sys, time
sys.path.insert(0, {root!r})
from cmtp.pipelines.app import app
started = time.perf_counter()
try:
    app(["audit", {path!r}, "--thresholds", "0.30:0.60:0.01", "--format", "json"], standalone_mode=False)
finally:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    sys.stderr.write(f"AUDIT {{time.perf_counter() - started:.3f}} {{peak}}\\n")
"""


def generate(path: Path, rows: int, batch: int = 2_000_000) -> None:
    """Scored pairs with the full schema; texts are short and repeated (dictionary-encoded) to keep the file
    small, the score and source columns are realistic."""
    rng = np.random.default_rng(0)
    path.mkdir(parents=True, exist_ok=True)
    with pq.ParquetWriter(path / "part-00000-of-00001.parquet", SCORED_PAIR, compression="zstd") as writer:
        for start in range(0, rows, batch):
            n = min(batch, rows - start)
            scores = np.clip(rng.normal(0.5, 0.12, n), -1, 1).astype(np.float32)
            src = rng.integers(len(SOURCES), size=n)
            ids = pa.array(np.char.mod("%016x", np.arange(start, start + n)))

            def const(value, n=n):
                return pa.array(np.full(n, value), pa.string())

            table = pa.table({
                "pair_id": ids, "source": pa.array(np.array(SOURCES)[src]), "source_file": const("gen"),
                "record_key": ids, "title": const("标题"), "passage": const("正文"), "meta": const("{}"),
                "cluster_id": pa.nulls(n, pa.string()), "cluster_size": pa.nulls(n, pa.int32()),
                "score": scores, "scorer": const("m"), "scorer_hash": const("h"),
                "threshold": pa.array(np.full(n, 0.43, np.float32)), "kept": pa.array(scores >= np.float32(0.43)),
            }, schema=SCORED_PAIR)
            writer.write_table(table, row_group_size=1 << 20)


def audit(path: Path) -> tuple[float, int]:
    proc = subprocess.run([sys.executable, "-c", CHILD.format(root=str(ROOT), path=str(path))],
                          capture_output=True, text=True)
    line = [x for x in proc.stderr.splitlines() if x.startswith("AUDIT ")]
    if proc.returncode or not line:
        raise SystemExit(proc.stderr[-3000:])
    seconds, rss_kb = line[-1].split()[1:]
    return float(seconds), int(rss_kb)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=100_000_000)
    parser.add_argument("--keep-files", default=None)
    args = parser.parse_args()
    base = Path(args.keep_files or tempfile.mkdtemp())
    results = []
    for rows in [1_000_000, 10_000_000, args.rows]:
        path = base / f"scored-{rows}"
        if not path.exists():
            started = time.perf_counter()
            generate(path, rows)
            print(f"generated {rows:,} rows in {time.perf_counter() - started:.0f} s "
                  f"({sum(f.stat().st_size for f in path.iterdir()) / 1e9:.2f} GB)")
        seconds, rss = audit(path)
        results.append((rows, seconds, rss))
        print(f"audit {rows:>12,} rows: {seconds:7.1f} s  {rows / seconds:12,.0f} rows/s  "
              f"peak RSS {rss / 1024:7.0f} MiB")
    (_, _, _), (mid_rows, _, mid_rss), (big_rows, _, big_rss) = results
    print(f"peak memory, {big_rows // mid_rows}x the rows ({mid_rows:,} -> {big_rows:,}): {big_rss / mid_rss:.2f}x")


if __name__ == "__main__":
    main()
